//! How requests and connections end: refusals (a small error response, then a lingering
//! close), the error path of a handler (500 or reset), a broken connection, and what
//! follows a finished response (drain an unread body and serve on, or close).

use super::{after, Body, Clock, Close, Connection, Fail, Phase, Step, WaitFor, DRAIN_LIMIT};
use crate::http::error::HttpError;
use crate::http::response;

/// What follows a finished response.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Another request may follow at once.
    Next,
    /// An unread body must be drained first: call [`Connection::poll_drain`].
    Drain,
    /// The connection ends.
    End(Close),
}

impl Connection {
    pub(super) fn end_quietly(&mut self) -> Step {
        self.mark_closed();
        Step::End {
            close: Close::Quiet,
            fail: None,
        }
    }

    pub(super) fn reset(&mut self) -> Step {
        self.mark_closed();
        Step::End {
            close: Close::Reset,
            fail: None,
        }
    }

    pub(super) fn refuse_error(&mut self, e: HttpError, clock: &mut impl Clock) -> Step {
        self.refuse(e.status(), e.reason(), e.message(), clock)
    }

    /// Answers with an error response (if the response has not started), then ends as
    /// `Linger`; a started response can only be reset. The failure describes it.
    pub fn refuse(
        &mut self,
        code: u16,
        reason: &str,
        detail: &str,
        clock: &mut impl Clock,
    ) -> Step {
        let fail = Some(Fail::Client(format!("{code} {reason} ({detail})")));
        if self.is_closed() {
            return Step::End {
                close: Close::Quiet,
                fail,
            };
        }
        self.body = Body::Done;
        self.expect_continue = false;
        if self.resp.started() || self.faulty {
            self.mark_closed();
            return Step::End {
                close: Close::Reset,
                fail,
            };
        }
        let date = self.date.line(clock.unix_secs()).to_vec();
        let bytes =
            response::error_response(code, reason, detail, &[&date, &self.cfg.static_headers]);
        self.resp.raw(&bytes);
        self.linger(clock, fail)
    }

    /// A client error while the handler reads the body: answered like a refusal, and
    /// remembered as `client_fault`.
    pub fn body_error(
        &mut self,
        code: u16,
        reason: &str,
        detail: &str,
        clock: &mut impl Clock,
    ) -> Step {
        match self.refuse(code, reason, detail, clock) {
            Step::End {
                close,
                fail: Some(Fail::Client(m)),
            } => {
                let m = format!("Error while reading request body: {m}");
                self.client_fault = Some(m.clone());
                Step::End {
                    close,
                    fail: Some(Fail::Client(m)),
                }
            }
            other => other,
        }
    }

    /// Ends the connection as `Close::Linger`: after the output, drain the input until
    /// `drain_timeout`.
    pub fn linger(&mut self, clock: &mut impl Clock, fail: Option<Fail>) -> Step {
        self.waiting = None;
        self.phase = Phase::Linger {
            until: after(clock.now(), self.cfg.drain_timeout),
        };
        Step::End {
            close: Close::Linger,
            fail,
        }
    }

    /// While lingering, after the input was drained: `Wait` for more (each wait bounded by
    /// `stall_timeout` too), or `End` once the input ended (close) or the time is up (reset).
    pub fn poll_linger(&mut self, eof: bool, clock: &mut impl Clock) -> Step {
        let Phase::Linger { until } = self.phase else {
            return self.reset();
        };
        if eof {
            return self.end_quietly();
        }
        let now = clock.now();
        if until.is_some_and(|u| now >= u) {
            return self.reset();
        }
        let until = super::earliest(until, after(now, self.cfg.stall_timeout));
        self.wait(WaitFor::Linger, 0, until)
    }

    /// Sending failed (or stalled): the request is faulty and the connection is reset.
    /// `by_client`: the client went away or stopped reading (not the application closing
    /// the socket), so the message is remembered as `client_fault`: the handler failing
    /// with it is not the application's error.
    pub fn broken(&mut self, why: &str, by_client: bool) -> Fail {
        self.faulty = true;
        self.mark_closed();
        self.resp.clear_output();
        let m = format!("Could not send data to client: {why}");
        if by_client {
            self.client_fault = Some(m.clone());
        }
        Fail::Io(m)
    }

    /// The error path of a handler: a 500 if no response head went out, else a reset.
    /// `None` when the connection is already over.
    pub fn abort(&mut self, clock: &mut impl Clock) -> Option<Step> {
        if self.is_closed() {
            return None;
        }
        if self.resp.started() || self.faulty {
            return Some(self.reset());
        }
        Some(self.refuse(500, "Internal Server Error", "", clock))
    }

    /// Ends the current request after its response is finished (see [`After`]).
    /// `input_empty`: nothing of the client's is buffered.
    pub fn end_request(&mut self, input_empty: bool, clock: &mut impl Clock) -> After {
        if self.is_closed() {
            return After::End(Close::Quiet);
        }
        if self.resp.closes_connection() || self.shutdown || self.discard_input {
            if self.resp.status_code() == 101 {
                // the socket belongs to the new protocol now; the server closes it
                self.mark_closed();
                return After::End(Close::Handover);
            }
            if !self.keep_alive && !self.shutdown && self.body_done() && input_empty {
                // The client asked to close, and everything it sent was read: it sends
                // nothing after that (RFC 9112 9.6, "MUST NOT send further requests"), so
                // no input is left to turn the close into a reset, and lingering (or a
                // read to look for more, a system call per connection) would only cost
                // time. nginx decides the same way, from what it has read.
                return self.close_quiet();
            }
            self.linger(clock, None);
            return After::End(Close::Linger);
        }
        let drainable = match &self.body {
            Body::Done => true,
            Body::Length(n) => *n <= DRAIN_LIMIT && !self.expect_continue,
            Body::Chunked { .. } => !self.expect_continue,
        };
        if !drainable {
            self.linger(clock, None);
            return After::End(Close::Linger);
        }
        if self.body_done() {
            self.phase = Phase::Between;
            return After::Next;
        }
        self.used = true;
        self.phase = Phase::Draining { drained: 0 };
        After::Drain
    }

    /// The connection closes once the output is written.
    fn close_quiet(&mut self) -> After {
        self.mark_closed();
        After::End(Close::Quiet)
    }
}
