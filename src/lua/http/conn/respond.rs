//! The response side of a connection: the request methods that build the response, and
//! writing it to the socket with `stall_timeout` bounds (a failed or stalled write resets
//! the connection and makes the request faulty).

use super::wait::{io_fail, wait};
use super::{deadline, unix_secs, Body, Connection, Fail, State, DRAIN_LIMIT};
use crate::http::response::{Phase, ResponseError};
use crate::io::handle::WRITE_BUFFER_LIMIT;
use crate::io::poll::{Interest, Outcome};
use crate::io::{signal, Handle};

/// Pieces of response body at least this long are written from the application's string
/// (framed around it) instead of being copied into the output buffer first.
const DIRECT_WRITE: usize = 64 << 10;

impl Connection {
    /// Writes `bytes` after anything pending; with `flush`, waits until all is sent,
    /// otherwise only until less than the handle's buffer limit is pending. Waits are
    /// bounded by `stall_timeout`; a failure resets the connection and marks it faulty.
    pub(super) fn write_out(
        &mut self,
        h: &mut Handle,
        parts: &[&[u8]],
        flush: bool,
    ) -> Result<(), Fail> {
        let step = |h: &mut Handle, parts: &[&[u8]]| {
            if flush {
                h.flush_nb(parts)
            } else {
                h.write_nb(parts)
            }
        };
        let mut pending = match step(h, parts) {
            Ok(n) => n,
            Err(e) => return Err(self.broken(h, &io_fail(e))),
        };
        while pending > 0 {
            let until = deadline(self.cfg.stall_timeout);
            // A client that sends a body we discard must not block our sending.
            let interests: &[Interest] = if self.discard_input {
                &[Interest::Write, Interest::Read]
            } else {
                &[Interest::Write]
            };
            match wait(h, interests, until) {
                Ok(Outcome::Ready) => {}
                Ok(_) => return Err(self.broken(h, "Client connection stalled")),
                Err(e) => return Err(self.broken(h, &crate::io::sys::error_text(&e))),
            }
            if self.discard_input && !h.is_finished() {
                let _ = h.drain_step(None, None);
            }
            pending = match step(h, &[]) {
                Ok(n) => n,
                Err(e) => return Err(self.broken(h, &io_fail(e))),
            };
        }
        Ok(())
    }

    /// A write failed: reset, faulty, closed.
    pub(super) fn broken(&mut self, h: &mut Handle, why: &str) -> Fail {
        if !h.is_closed() {
            let _ = h.reset();
        }
        self.faulty = true;
        self.state = State::Closed;
        Fail::Io(format!("Could not send data to client: {why}"))
    }

    /// Checks that the request can still be used for the response.
    pub(super) fn usable(&self) -> Result<(), Fail> {
        if self.faulty {
            return Err(Fail::Misuse("Tried to use faulty request handle".into()));
        }
        if self.state != State::Active {
            return Err(ResponseError::Finished.into());
        }
        Ok(())
    }

    /// Announces `Connection: close` while the head is held back if the connection cannot
    /// carry another request after this response.
    pub(super) fn before_head(&mut self) {
        if self.resp.started() {
            return;
        }
        let unread = match &self.body {
            Body::Done => false,
            Body::Length(n) => self.expect_continue || *n > DRAIN_LIMIT,
            Body::Chunked { .. } => self.expect_continue,
        };
        if signal::sigterm_received() {
            self.shutdown = true;
        }
        if unread || self.shutdown || self.discard_input {
            self.resp.force_close();
        }
    }

    /// Turns off Nagle's algorithm once a connection carries a second write: a small piece
    /// after earlier data (the tail of a long or flushed response, the next response of a
    /// keep-alive connection) would otherwise wait for the client's delayed ACK (up to
    /// 40 ms). A connection with one request and one write never needs the system call.
    pub(super) fn nodelay(&mut self, h: &Handle) {
        if self.nodelay || h.kind() != crate::io::Kind::Tcp {
            return;
        }
        self.nodelay = true;
        if let Some(fd) = h.raw_fd() {
            let _ = crate::io::sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
    }

    /// Moves the response output to the socket (all of it with `flush`, else once large).
    pub(super) fn push(&mut self, h: &mut Handle, flush: bool) -> Result<(), Fail> {
        if self.resp.output().len() < WRITE_BUFFER_LIMIT && !flush {
            return Ok(());
        }
        if self.wrote {
            self.nodelay(h);
        }
        self.wrote = true;
        let out = self.resp.take_output();
        let r = self.write_out(h, &[&out], flush);
        self.resp.recycle_output(out);
        r
    }

    pub fn send_status(&mut self, status: &[u8]) -> Result<(), Fail> {
        self.usable()?;
        self.used = true;
        let date = self.date.line(unix_secs());
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

    pub fn finish_headers(&mut self, h: &mut Handle) -> Result<(), Fail> {
        self.usable()?;
        self.before_head();
        self.resp.finish_headers()?;
        self.resp.flush()?;
        self.push(h, true)
    }

    pub fn send_data(&mut self, h: &mut Handle, parts: &[&[u8]]) -> Result<(), Fail> {
        self.usable()?;
        self.before_head();
        for part in parts {
            if part.len() >= DIRECT_WRITE {
                if let Some(suffix) = self.resp.data_direct(part.len())? {
                    // straight from the Lua string to the socket: no copy into the output
                    if self.wrote {
                        self.nodelay(h);
                    }
                    self.wrote = true;
                    let out = self.resp.take_output();
                    let r = self.write_out(h, &[&out, part, suffix], false);
                    self.resp.recycle_output(out);
                    r?;
                    continue;
                }
            }
            self.resp.data(part)?;
        }
        self.push(h, false)
    }

    pub fn flush(&mut self, h: &mut Handle) -> Result<(), Fail> {
        self.usable()?;
        self.before_head();
        self.resp.flush()?;
        self.push(h, true)
    }

    pub fn finish(&mut self, h: &mut Handle) -> Result<(), Fail> {
        if self.resp.phase() == Phase::Finished || (self.state == State::Closed && !self.faulty) {
            return Ok(());
        }
        self.usable()?;
        self.before_head();
        self.resp.finish()?;
        self.push(h, true)
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
