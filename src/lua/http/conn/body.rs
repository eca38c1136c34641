//! The request body: Content-Length or chunked, handed out in pieces straight from the
//! socket's read buffer, with `100 Continue` sent on the first read and every client error
//! answered like a refusal.

use std::ops::Range;

use super::{Body, Connection, Fail, Fill};
use crate::http::chunked::Decoded;
use crate::http::error::HttpError;
use crate::io::Handle;

impl Connection {
    /// The next piece of the request body, at most `max` bytes: a range of `h.buffered()`.
    /// The caller copies it out, then consumes the buffer up to the range's end. `None` at
    /// the end of the body. The first call answers `Expect: 100-continue`.
    pub fn body_data(&mut self, h: &mut Handle, max: usize) -> Result<Option<Range<usize>>, Fail> {
        self.begin_body(h)?;
        let max = max.max(1);
        loop {
            let need_more = match &mut self.body {
                Body::Done => return Ok(None),
                Body::Length(left) => {
                    let avail = h.buffered().len() as u64;
                    if avail > 0 {
                        let n = avail.min(*left).min(max as u64);
                        *left -= n;
                        if *left == 0 {
                            self.body = Body::Done;
                        }
                        return Ok(Some(0..n as usize));
                    }
                    true
                }
                Body::Chunked { decoder, carry } => {
                    if *carry > 0 {
                        let n = (*carry).min(h.buffered().len()).min(max);
                        if n > 0 {
                            *carry -= n;
                            return Ok(Some(0..n));
                        }
                        true
                    } else {
                        match decoder.feed(h.buffered()) {
                            Ok(Decoded::Data(r)) => {
                                if decoder.received() > self.cfg.body_limit {
                                    let e = HttpError::BodyTooLarge;
                                    return Err(self.body_error(
                                        h,
                                        e.status(),
                                        e.reason(),
                                        e.message(),
                                    ));
                                }
                                let n = r.len().min(max);
                                *carry = r.len() - n;
                                return Ok(Some(r.start..r.start + n));
                            }
                            Ok(Decoded::NeedMore) => {
                                let n = h.buffered().len();
                                h.consume(n);
                                true
                            }
                            Ok(Decoded::Done { consumed }) => {
                                h.consume(consumed);
                                self.body = Body::Done;
                                return Ok(None);
                            }
                            Err(e) => {
                                return Err(self.body_error(h, e.status(), e.reason(), e.message()))
                            }
                        }
                    }
                }
            };
            if need_more {
                self.fill_body(h)?;
            }
        }
    }

    /// Reads until all of a Content-Length body of at most `max` bytes is buffered, so that
    /// `body_data` hands it out in one piece (one copy instead of collecting pieces). Other
    /// bodies are left alone.
    pub fn buffer_body(&mut self, h: &mut Handle, max: u64) -> Result<(), Fail> {
        let Body::Length(left) = self.body else {
            return Ok(());
        };
        if left > max {
            return Ok(());
        }
        self.begin_body(h)?;
        let left = left as usize;
        h.reserve_unread(left);
        while h.buffered().len() < left {
            self.fill_body(h)?;
        }
        Ok(())
    }

    /// The start of every body read: the request counts as used, and `Expect:
    /// 100-continue` is answered.
    fn begin_body(&mut self, h: &mut Handle) -> Result<(), Fail> {
        self.usable()?;
        self.used = true;
        if self.expect_continue {
            self.expect_continue = false;
            if !self.resp.started() {
                self.write_out(h, &[b"HTTP/1.1 100 Continue\r\n\r\n"], true)?;
            }
        }
        Ok(())
    }

    /// Reads more of the body; the end of input or a stall is the client's error.
    fn fill_body(&mut self, h: &mut Handle) -> Result<(), Fail> {
        match self.fill(h, None)? {
            Fill::Data => Ok(()),
            Fill::Eof => {
                let detail = "Unexpected EOF while reading request body";
                Err(self.body_error(h, 400, "Bad Request", detail))
            }
            Fill::TimedOut => {
                let detail = "Timeout while waiting for request body";
                Err(self.body_error(h, 408, "Request Timeout", detail))
            }
        }
    }

    /// A client error while the handler reads the body: answered (if the response has not
    /// started) and the connection closed, like a refusal. Remembered as `client_fault`.
    pub fn body_error(&mut self, h: &mut Handle, code: u16, reason: &str, detail: &str) -> Fail {
        match self.refuse(h, code, reason, detail) {
            Fail::Client(m) => {
                let m = format!("Error while reading request body: {m}");
                self.client_fault = Some(m.clone());
                Fail::Client(m)
            }
            other => other,
        }
    }
}
