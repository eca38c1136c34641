//! The input side: request heads (with the first-byte and whole-head deadlines), request
//! bodies handed out in pieces straight from the caller's input buffer (with `100
//! Continue` before the first piece), and the timeouts of every wait.

use std::time::{Duration, Instant};

use super::{
    after, earliest, Body, Clock, Close, Connection, Fail, Phase, Shed, Step, WaitFor, Waiting,
    DRAIN_PIECE,
};
use crate::http::chunked::{ChunkedDecoder, ChunkedLimits, Decoded};
use crate::http::error::HttpError;
use crate::http::framing::{framing, BodyKind};
use crate::http::head::{reuse_fields, Status};
use crate::http::response::ResponseConfig;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Connection {
    /// Reads the next request head from `input`. Answers `Request`, `Wait` (the first
    /// byte's wait is also ended by SIGTERM) or `End` (the connection ended: quietly, or
    /// after a refusal in the output).
    pub fn poll_head(&mut self, input: &[u8], eof: bool, clock: &mut impl Clock) -> Step {
        self.waiting = None;
        if matches!(self.phase, Phase::Between) {
            self.begin_request();
        }
        if let Phase::Idle { since } = self.phase {
            if !input.is_empty() {
                self.phase = Phase::Head { since: None };
                self.head_parser.restart();
            } else if eof {
                return self.end_quietly();
            } else if self.shutdown {
                return self.refuse(408, "Request Timeout", "Server shutdown", clock);
            } else {
                // The deadline counts from the first time the driver had to wait.
                let since = match since {
                    Some(s) => s,
                    None => {
                        let s = clock.now();
                        self.phase = Phase::Idle { since: Some(s) };
                        s
                    }
                };
                return self.wait(WaitFor::FirstByte, 0, after(since, self.cfg.idle_timeout));
            }
        }
        let Phase::Head { since } = &mut self.phase else {
            return Step::End {
                close: Close::Quiet,
                fail: None,
            };
        };
        match self
            .head_parser
            .parse_reusing(input, &self.cfg.head_limits, &mut self.spare_fields)
        {
            Ok(Status::Complete(head, used)) => {
                let framing = match framing(&head) {
                    Ok(f) => f,
                    Err(e) => return self.refuse_error(e, clock),
                };
                self.parsed.load(&input[..used], &head, framing);
                let head_request = head.method == b"HEAD";
                self.spare_fields = reuse_fields(head.headers);
                self.body = match framing.body {
                    BodyKind::None | BodyKind::Length(0) => Body::Done,
                    BodyKind::Length(n) if n > self.cfg.body_limit => {
                        return self.refuse_error(HttpError::BodyTooLarge, clock)
                    }
                    BodyKind::Length(n) => Body::Length(n),
                    BodyKind::Chunked => Body::Chunked {
                        decoder: Box::new(ChunkedDecoder::new(ChunkedLimits::default())),
                        carry: 0,
                    },
                };
                self.expect_continue = framing.expect_continue && self.has_body();
                self.keep_alive = framing.keep_alive && !self.shutdown;
                self.resp.reset(ResponseConfig {
                    http11: self.parsed.http11,
                    head: head_request,
                    close: !self.keep_alive,
                    min_chunk: self.cfg.min_output_chunk,
                });
                self.requests += 1;
                self.phase = Phase::Active;
                Step::Request { consumed: used }
            }
            Ok(Status::Partial) if eof => {
                if input.iter().all(|&b| b == b'\r' || b == b'\n') {
                    return self.end_quietly();
                }
                self.refuse(400, "Bad Request", "Unexpected EOF", clock)
            }
            Ok(Status::Partial) => {
                let now = clock.now();
                let whole = after(*since.get_or_insert(now), self.cfg.header_timeout);
                let until = earliest(whole, after(now, self.cfg.stall_timeout));
                self.wait(WaitFor::Head, 0, until)
            }
            Err(e) => self.refuse_error(e, clock),
        }
    }

    /// Nothing of the previous request may shape a refusal of this one.
    fn begin_request(&mut self) {
        self.resp.reset(ResponseConfig {
            http11: true,
            head: false,
            close: true,
            min_chunk: self.cfg.min_output_chunk,
        });
        self.body = Body::Done;
        self.expect_continue = false;
        self.discard_input = false;
        self.used = false;
        self.faulty = false;
        self.client_fault = None;
        self.phase = Phase::Idle { since: None };
    }

    /// Answers a wait (and remembers it for [`timeout`](Self::timeout)).
    pub(super) fn wait(&mut self, what: WaitFor, consumed: usize, until: Option<Instant>) -> Step {
        self.waiting = Some(Waiting { what, until });
        Step::Wait {
            consumed,
            until,
            sigterm: what == WaitFor::FirstByte,
        }
    }

    /// The wait in progress ended without input: the verdict for it (a refusal, a reset),
    /// or the same wait again if its deadline has not passed.
    pub fn timeout(&mut self, clock: &mut impl Clock) -> Step {
        let Some(w) = self.waiting.take() else {
            return Step::Next { consumed: 0 };
        };
        if w.until.is_none_or(|u| clock.now() < u) {
            return self.wait(w.what, 0, w.until);
        }
        match w.what {
            WaitFor::FirstByte => {
                self.refuse(408, "Request Timeout", "Idle connection timed out", clock)
            }
            WaitFor::Head => self.refuse(
                408,
                "Request Timeout",
                "Timeout while receiving headers",
                clock,
            ),
            WaitFor::Body => {
                let detail = "Timeout while waiting for request body";
                self.body_error(408, "Request Timeout", detail, clock)
            }
            WaitFor::Linger => self.reset(),
        }
    }

    /// While the pool is overloaded (every worker busy, none may be forked, connections
    /// waiting to be accepted), what becomes of the wait in progress: an idle keep-alive
    /// connection is given up at once (its client may open it again; the connections
    /// waiting have not been served at all); a new connection that sent nothing yet and
    /// an incomplete head get `busy_header_timeout`, counted from the time the client
    /// last sent something (`silent`: the kernel's figure when the driver has one, so
    /// time spent waiting to be accepted counts) and from the start of the wait (a client
    /// sending a byte now and then cannot extend it). Everything else: `Never`.
    pub fn shed(&self, silent: Option<Duration>, clock: &mut impl Clock) -> Shed {
        let Some(w) = self.waiting else {
            return Shed::Never;
        };
        let started = match (&self.phase, w.what) {
            (Phase::Idle { .. }, WaitFor::FirstByte) if self.requests > 0 => {
                return Shed::Now { claim: true }
            }
            (Phase::Idle { since }, WaitFor::FirstByte) => *since,
            (Phase::Head { since, .. }, WaitFor::Head) => *since,
            _ => return Shed::Never,
        };
        let Some(bound) = self.cfg.busy_header_timeout else {
            return Shed::Never;
        };
        let mut left = bound;
        if let Some(s) = started {
            left = left.min(bound.saturating_sub(clock.now().saturating_duration_since(s)));
        }
        if let Some(q) = silent {
            left = left.min(bound.saturating_sub(q));
        }
        if left.is_zero() {
            Shed::Now { claim: false }
        } else {
            Shed::After(left)
        }
    }

    /// Gives up the wait that [`shed`](Self::shed) answered `Now` for: a connection
    /// without a byte of its next request is closed quietly; an incomplete head is
    /// answered with 408 and closed at once (no lingering: the worker is needed).
    /// Anything else: `Next` (nothing to give up).
    pub fn shed_now(&mut self, clock: &mut impl Clock) -> Step {
        match self.waiting.map(|w| w.what) {
            Some(WaitFor::FirstByte) => self.end_quietly(),
            Some(WaitFor::Head) => {
                let detail = "Server busy, timeout while receiving headers";
                match self.refuse(408, "Request Timeout", detail, clock) {
                    Step::End {
                        close: Close::Linger,
                        fail,
                    } => {
                        self.mark_closed();
                        Step::End {
                            close: Close::Quiet,
                            fail,
                        }
                    }
                    other => other,
                }
            }
            _ => Step::Next { consumed: 0 },
        }
    }

    /// The next piece of the request body, at most `max` bytes: `Data`, `BodyDone`,
    /// `Flush` (`100 Continue` first), `Wait` or `End` (the client's fault, answered).
    /// `Err`: the request cannot be read now (finished, faulty).
    pub fn poll_body(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        clock: &mut impl Clock,
    ) -> Result<Step, Fail> {
        self.waiting = None;
        if let Some(step) = self.begin_body()? {
            return Ok(step);
        }
        Ok(self.body_step(input, eof, max, clock))
    }

    /// Waits until all of a Content-Length body of at most `max` bytes is in `input`, so
    /// that it is handed out in one piece. Answers `Buffered` at once for other bodies.
    pub fn poll_buffered(
        &mut self,
        input: &[u8],
        eof: bool,
        max: u64,
        clock: &mut impl Clock,
    ) -> Result<Step, Fail> {
        self.waiting = None;
        let Body::Length(left) = self.body else {
            return Ok(Step::Buffered);
        };
        if left > max {
            return Ok(Step::Buffered);
        }
        if let Some(step) = self.begin_body()? {
            return Ok(step);
        }
        if input.len() as u64 >= left {
            return Ok(Step::Buffered);
        }
        Ok(self.need_body(eof, 0, clock))
    }

    /// How many bytes a whole Content-Length body of at most `max` bytes still needs.
    pub fn whole_length(&self, max: u64) -> Option<u64> {
        match self.body {
            Body::Length(left) if left <= max => Some(left),
            _ => None,
        }
    }

    /// The start of every body read: the request counts as used, and `Expect:
    /// 100-continue` is answered (`Flush`).
    fn begin_body(&mut self) -> Result<Option<Step>, Fail> {
        self.usable()?;
        self.used = true;
        if self.expect_continue {
            self.expect_continue = false;
            if !self.resp.started() {
                self.resp.raw(CONTINUE);
                return Ok(Some(Step::Flush));
            }
        }
        Ok(None)
    }

    fn body_step(&mut self, input: &[u8], eof: bool, max: usize, clock: &mut impl Clock) -> Step {
        let max = max.max(1);
        match &mut self.body {
            Body::Done => Step::BodyDone { consumed: 0 },
            Body::Length(left) => {
                if input.is_empty() {
                    return self.need_body(eof, 0, clock);
                }
                let n = (input.len() as u64).min(*left).min(max as u64);
                *left -= n;
                if *left == 0 {
                    self.body = Body::Done;
                }
                Step::Data(0..n as usize)
            }
            Body::Chunked { decoder, carry } => {
                if *carry > 0 {
                    let n = (*carry).min(input.len()).min(max);
                    if n > 0 {
                        *carry -= n;
                        return Step::Data(0..n);
                    }
                    return self.need_body(eof, 0, clock);
                }
                match decoder.feed(input) {
                    Ok(Decoded::Data(r)) => {
                        if decoder.received() > self.cfg.body_limit {
                            let e = HttpError::BodyTooLarge;
                            return self.body_error(e.status(), e.reason(), e.message(), clock);
                        }
                        let n = r.len().min(max);
                        *carry = r.len() - n;
                        Step::Data(r.start..r.start + n)
                    }
                    Ok(Decoded::NeedMore) => self.need_body(eof, input.len(), clock),
                    Ok(Decoded::Done { consumed }) => {
                        self.body = Body::Done;
                        Step::BodyDone { consumed }
                    }
                    Err(e) => self.body_error(e.status(), e.reason(), e.message(), clock),
                }
            }
        }
    }

    /// More body is needed: the end of input is the client's error, else wait for it.
    fn need_body(&mut self, eof: bool, consumed: usize, clock: &mut impl Clock) -> Step {
        if eof {
            let detail = "Unexpected EOF while reading request body";
            return self.body_error(400, "Bad Request", detail, clock);
        }
        let until = after(clock.now(), self.cfg.stall_timeout);
        self.wait(WaitFor::Body, consumed, until)
    }

    /// After the response: the next piece of an unread body to discard (`Data`), `Wait`,
    /// `Next` once it is all read, or `End` (too much to drain, or the client's fault).
    pub fn poll_drain(&mut self, input: &[u8], eof: bool, clock: &mut impl Clock) -> Step {
        self.waiting = None;
        let Phase::Draining { drained } = self.phase else {
            return Step::End {
                close: Close::Quiet,
                fail: None,
            };
        };
        match self.body_step(input, eof, DRAIN_PIECE, clock) {
            Step::Data(r) => {
                let drained = drained + r.len() as u64;
                if drained > super::DRAIN_LIMIT {
                    return self.linger(clock, None);
                }
                self.phase = Phase::Draining { drained };
                Step::Data(r)
            }
            Step::BodyDone { consumed } => {
                self.phase = Phase::Between;
                Step::Next { consumed }
            }
            other => other,
        }
    }

    /// Checks that the request can still be used (read, or answered).
    pub(super) fn usable(&self) -> Result<(), Fail> {
        if self.faulty {
            return Err(Fail::Misuse("Tried to use faulty request handle".into()));
        }
        if !self.is_active() {
            return Err(crate::http::response::ResponseError::Finished.into());
        }
        Ok(())
    }
}
