//! How requests and connections end: refusals (a small error response, then a lingering
//! close), the error path of a handler (500 or reset), and what follows a finished response
//! (drain an unread body and serve on, or close).

use super::wait::{fill_nb, wait};
use super::{deadline, earliest, unix_secs, Body, Connection, Fail, State, DRAIN_LIMIT};
use crate::http::error::HttpError;
use crate::http::response;
use crate::io::handle::ReadStatus;
use crate::io::poll::{Interest, Outcome};
use crate::io::Handle;

impl Connection {
    /// The client's EOF or error ends the connection without an answer.
    pub(super) fn close_quietly(&mut self, h: &mut Handle) {
        if !h.is_closed() {
            let _ = h.close();
        }
        self.state = State::Closed;
    }

    pub(super) fn refuse_error(&mut self, h: &mut Handle, e: HttpError) -> Fail {
        self.refuse(h, e.status(), e.reason(), e.message())
    }

    /// Answers with an error response (if the response has not started), then closes: half
    /// close, drain input up to `drain_timeout`, close (or reset if the client keeps
    /// sending). The returned `Fail` describes it for a Lua error.
    pub fn refuse(&mut self, h: &mut Handle, code: u16, reason: &str, detail: &str) -> Fail {
        let message = format!("{code} {reason} ({detail})");
        if self.state == State::Closed || h.is_closed() {
            self.state = State::Closed;
            return Fail::Client(message);
        }
        self.body = Body::Done;
        self.expect_continue = false;
        if self.resp.started() || self.faulty {
            let _ = h.reset();
            self.state = State::Closed;
            return Fail::Client(message);
        }
        let date = self.date.line(unix_secs()).to_vec();
        let mut bytes = self.resp.output().to_vec();
        bytes.extend_from_slice(&response::error_response(
            code,
            reason,
            detail,
            &[&date, &self.cfg.static_headers],
        ));
        self.resp.clear_output();
        match self.write_out(h, &[&bytes], true) {
            Ok(()) => self.close_gracefully(h),
            Err(_) => self.state = State::Closed,
        }
        Fail::Client(message)
    }

    /// Half-closes, drains input up to `drain_timeout`, then closes (or resets if the client
    /// is still sending), so that the client reads the response before the connection ends.
    pub fn close_gracefully(&mut self, h: &mut Handle) {
        self.state = State::Closed;
        if h.is_closed() {
            return;
        }
        if self.write_out(h, &[], true).is_err() {
            return;
        }
        if !h.is_finished() && h.finish().is_err() {
            let _ = h.reset();
            return;
        }
        let until = deadline(self.cfg.drain_timeout);
        loop {
            match h.drain_step(None, None) {
                Ok(d) if d.status == ReadStatus::Eof => {
                    let _ = h.close();
                    return;
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = h.reset();
                    return;
                }
            }
            let until = earliest(until, deadline(self.cfg.stall_timeout));
            match wait(h, &[Interest::Read], until) {
                Ok(Outcome::Ready) => {}
                _ => {
                    let _ = h.reset();
                    return;
                }
            }
        }
    }

    /// The error path of a handler: a 500 if no response head went out, else a reset.
    pub fn abort(&mut self, h: &mut Handle) {
        if self.state == State::Closed || h.is_closed() {
            self.state = State::Closed;
            return;
        }
        if self.resp.started() || self.faulty {
            let _ = h.reset();
            self.state = State::Closed;
            return;
        }
        self.refuse(h, 500, "Internal Server Error", "");
    }

    /// Ends the current request after its response is finished: drains an unread body
    /// (bounded) or closes. Returns whether the connection may carry another request.
    pub fn done(&mut self, h: &mut Handle) -> bool {
        if self.state == State::Closed || h.is_closed() {
            self.state = State::Closed;
            return false;
        }
        if self.resp.closes_connection() || self.shutdown || self.discard_input {
            if self.resp.status_code() == 101 {
                // the socket belongs to the new protocol now; the server closes it
                self.state = State::Closed;
            } else if !self.keep_alive
                && !self.shutdown
                && self.body_done()
                && h.buffered().is_empty()
                && matches!(fill_nb(h), Ok(None | Some(false)))
            {
                // The client asked to close and sent nothing more (a well-behaved client
                // sends nothing after that): no input is left to turn the close into a
                // reset, so lingering would only cost time.
                self.state = State::Closed;
                if self.write_out(h, &[], true).is_ok() {
                    let _ = h.close();
                }
            } else {
                self.close_gracefully(h);
            }
            return false;
        }
        let drainable = match &self.body {
            Body::Done => true,
            Body::Length(n) => *n <= DRAIN_LIMIT && !self.expect_continue,
            Body::Chunked { .. } => !self.expect_continue,
        };
        if !drainable {
            self.close_gracefully(h);
            return false;
        }
        let mut drained = 0u64;
        while !self.body_done() {
            match self.body_data(h, 64 << 10) {
                Ok(Some(r)) => {
                    drained += r.len() as u64;
                    h.consume(r.end);
                    if drained > DRAIN_LIMIT {
                        self.close_gracefully(h);
                        return false;
                    }
                }
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        self.state = State::Idle;
        true
    }
}
