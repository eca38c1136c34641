//! The response side: the request methods that build the response. Output accumulates in
//! the response's buffer; the driver writes it when a method answers [`Push`].

use super::{Body, Clock, Connection, Fail, DRAIN_LIMIT};
use crate::http::response::Phase;

/// When the output should go to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Once enough has gathered (the driver's buffer limit).
    WhenLarge,
    /// Now, all of it.
    Flush,
}

impl Connection {
    /// Announces `Connection: close` while the head is held back if the connection cannot
    /// carry another request after this response.
    fn before_head(&mut self) {
        if self.resp.started() {
            return;
        }
        let unread = match &self.body {
            Body::Done => false,
            Body::Length(n) => self.expect_continue || *n > DRAIN_LIMIT,
            Body::Chunked { .. } => self.expect_continue,
        };
        if unread || self.shutdown || self.discard_input {
            self.resp.force_close();
        }
    }

    pub fn send_status(&mut self, status: &[u8], clock: &mut impl Clock) -> Result<(), Fail> {
        self.usable()?;
        self.used = true;
        let date = self.date.line(clock.unix_secs());
        self.resp
            .status(status, &[date, &self.cfg.static_headers])?;
        if self.resp.status_code() == 100 {
            self.expect_continue = false;
        }
        Ok(())
    }

    pub fn send_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), Fail> {
        self.usable()?;
        self.resp.header(name, value)?;
        Ok(())
    }

    pub fn finish_headers(&mut self) -> Result<Push, Fail> {
        self.usable()?;
        self.before_head();
        self.resp.finish_headers()?;
        self.resp.flush()?;
        Ok(Push::Flush)
    }

    /// The start of `send_data`: then [`data`](Self::data) or
    /// [`data_direct`](Self::data_direct) for each piece.
    pub fn begin_data(&mut self) -> Result<(), Fail> {
        self.usable()?;
        self.before_head();
        Ok(())
    }

    /// A piece of body, copied into the output.
    pub fn data(&mut self, piece: &[u8]) -> Result<Push, Fail> {
        self.resp.data(piece)?;
        Ok(Push::WhenLarge)
    }

    /// A large piece of body that the driver writes itself, right after the output:
    /// `Some(suffix)` to write after it, or `None` (use [`data`](Self::data)).
    pub fn data_direct(&mut self, len: usize) -> Result<Option<&'static [u8]>, Fail> {
        Ok(self.resp.data_direct(len)?)
    }

    pub fn flush(&mut self) -> Result<Push, Fail> {
        self.usable()?;
        self.before_head();
        self.resp.flush()?;
        Ok(Push::Flush)
    }

    /// `finish()`: idempotent; `None` when there is nothing to do.
    pub fn finish(&mut self) -> Result<Option<Push>, Fail> {
        if self.resp.phase() == Phase::Finished || (self.is_closed() && !self.faulty) {
            return Ok(None);
        }
        self.usable()?;
        self.before_head();
        self.resp.finish()?;
        Ok(Some(Push::Flush))
    }

    /// `close_after_finish()`.
    pub fn close_after_finish(&mut self) -> Result<(), Fail> {
        self.usable()?;
        self.resp.set_close()?;
        Ok(())
    }

    /// `monologue()`: close after the response and never read the input.
    pub fn monologue(&mut self) -> Result<(), Fail> {
        self.usable()?;
        self.resp.set_close()?;
        self.used = true;
        self.discard_input = true;
        self.expect_continue = false;
        Ok(())
    }
}
