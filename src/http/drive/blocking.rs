//! The blocking driver: the connection machine over a socket's [`Handle`], for classic
//! workers. Each call runs the machine until it has an answer for the application, doing
//! what the machine asks: writing the output, waiting for input until a deadline (or a
//! SIGTERM), ending the connection. The HTTP layer and `socket:read` share the handle's
//! read buffer, so no byte is lost between them.
//!
//! A *cooperative* connection (`set_cooperative`, for concurrent pools) never waits: where
//! it would, it records what it waits for ([`Conn::take_pending`]) and returns
//! (`Next::Wait`, `Fail::Wait`, or with the pending wait set). The caller waits, then makes
//! the same call again (reads and `next_request`, which pick up where they were), or
//! `catch_up` (the calls that already did their part: what is left is a write, a drain or
//! the end of the connection).

use std::io;
use std::ops::Range;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::http::conn::{After, Clock, Close, Config, Connection, Fail, Push, Shed, Step};
use crate::io::handle::{HandleError, ReadStatus, WRITE_BUFFER_LIMIT};
use crate::io::poll::{self, Entry, Interest, Outcome};
use crate::io::{signal, sys, Handle, Kind};
use crate::server::pressure;

/// Pieces of response body at least this long are written from the application's string
/// (framed around it) instead of being copied into the output buffer first.
const DIRECT_WRITE: usize = 64 << 10;

/// Longest single wait while waiting for input: bounds the delay when a SIGTERM lands
/// between the flag check and the wait (see `wait_input`).
const SIGTERM_SLICE: Duration = Duration::from_secs(1);

/// While a classic worker waits for a request, how often it looks whether its pool became
/// overloaded (see `server::pressure`). Every wait for a request is cut into slices of
/// this length (the same each time, so SO_RCVTIMEO is set once per connection). A
/// keep-alive connection's first slice does not look: the next request usually comes
/// within it, so looking would cost every request something.
const PRESSURE_CHECK: Duration = Duration::from_millis(100);

/// An overloaded pool's worker that found another one shedding leaves the listeners alone
/// this long.
const SHEDDING_PAUSE: Duration = Duration::from_millis(50);

/// The earlier of an optional deadline and `b`.
fn sooner(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The system clock.
struct SysClock;

impl Clock for SysClock {
    fn now(&mut self) -> Instant {
        Instant::now()
    }
    fn unix_secs(&mut self) -> u64 {
        // (for `Date`, whose second may then change up to a timer tick late)
        sys::coarse_unix_secs()
    }
}

/// What `next_request` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A request head was read; the handler may be called.
    Request,
    /// The connection ended (quietly, or after a refusal that was answered).
    Closed,
    /// A cooperative connection waits (see [`Conn::take_pending`]): call again after it.
    Wait,
}

/// What a cooperative connection waits for: readiness of `fd`, or the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub fd: RawFd,
    pub read: bool,
    pub write: bool,
    pub until: Option<Instant>,
}

/// What a cooperative call left to do when it stopped to wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Unfinished {
    #[default]
    Nothing,
    /// Sending the output (all of it with `flush`).
    Write { flush: bool },
    /// Discarding the unread rest of a request body after its response (`done`).
    Drain,
    /// Ending the connection.
    End(Close),
}

/// How a wait for input ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// New bytes are in the handle's buffer (or the input ended).
    Input,
    /// SIGTERM was received (only reported when asked for).
    Sigterm,
    /// The deadline passed.
    Timeout,
    /// A cooperative connection has to wait (the wait is recorded).
    Wait,
}

/// One connection: the machine and what the driver knows of the socket.
#[derive(Debug)]
pub struct Conn {
    pub m: Connection,
    /// The peer ended its input.
    eof: bool,
    /// A response write happened on this connection; TCP_NODELAY is set (see `nodelay`).
    wrote: bool,
    nodelay: bool,
    /// The socket's SO_RCVTIMEO as last set (see `wait_input`).
    rcvtimeo: Option<Duration>,
    /// Cooperative: never wait, return with `pending` set instead.
    coop: bool,
    pending: Option<Pending>,
    unfinished: Unfinished,
    /// The failure to report once the unfinished end of the connection is done.
    deferred: Option<Fail>,
    /// A cooperative write's stall deadline and the bytes pending when it was set (any
    /// progress starts a new one, as the blocking driver's per-wait deadline does).
    stall: Option<(Option<Instant>, usize)>,
    /// The deadline of the input wait a cooperative call stopped at: the call made again
    /// goes on with that wait (the machine would set a new deadline if polled afresh).
    /// With the input buffered then: more since counts as input.
    waited: Option<(Option<Instant>, usize)>,
}

fn io_fail(e: HandleError) -> String {
    match e {
        HandleError::Io(m) => m,
        HandleError::Misuse(m) => m.to_string(),
    }
}

impl Conn {
    pub fn new(cfg: Rc<Config>) -> Self {
        Conn {
            m: Connection::new(cfg),
            eof: false,
            wrote: false,
            nodelay: false,
            rcvtimeo: None,
            coop: false,
            pending: None,
            unfinished: Unfinished::Nothing,
            deferred: None,
            stall: None,
            waited: None,
        }
    }

    /// Makes this a cooperative connection (see the module documentation).
    pub fn set_cooperative(&mut self, on: bool) {
        self.coop = on;
    }

    /// The wait the last call stopped at (cooperative connections), taken.
    pub fn take_pending(&mut self) -> Option<Pending> {
        self.pending.take()
    }

    fn wait_for(&mut self, fd: RawFd, read: bool, write: bool, until: Option<Instant>) {
        self.pending = Some(Pending {
            fd,
            read,
            write,
            until,
        });
    }

    /// Cooperative: does what the last call left unfinished. `Err(Fail::Wait)` when it has
    /// to wait again; a failure deferred until the end of the connection was done comes
    /// out here.
    pub fn catch_up(&mut self, h: &mut Handle) -> Result<(), Fail> {
        match std::mem::take(&mut self.unfinished) {
            Unfinished::Nothing => Ok(()),
            Unfinished::Write { flush } => {
                if self.m.drains_while_writing() && !h.is_finished() {
                    let _ = h.drain_step(None, None);
                }
                self.write_out(h, &[], flush)
            }
            Unfinished::Drain => {
                self.drain(h);
                self.waiting()
            }
            Unfinished::End(close) => {
                self.end(h, close);
                self.waiting()?;
                match self.deferred.take() {
                    Some(f) => Err(f),
                    None => Ok(()),
                }
            }
        }
    }

    /// Cooperative: how the input wait the last call stopped at ended, if it stopped at one.
    fn resume_wait(
        &mut self,
        h: &mut Handle,
        on_sigterm: bool,
    ) -> Option<Result<Arrival, HandleError>> {
        let (until, had) = self.waited.take()?;
        if h.buffered().len() != had {
            return Some(Ok(Arrival::Input));
        }
        Some(self.wait_input(h, until, on_sigterm, None))
    }

    /// `Err(Fail::Wait)` if a wait is pending.
    fn waiting(&self) -> Result<(), Fail> {
        match self.pending {
            Some(_) => Err(Fail::Wait),
            None => Ok(()),
        }
    }

    /// A socket closed behind the machine's back (by the application) ends the connection.
    fn sync(&mut self, h: &Handle) {
        if h.is_closed() && !self.m.is_closed() {
            self.m.mark_closed();
        }
    }

    /// A SIGTERM that arrived before the response head went out makes it the last one.
    fn check_sigterm(&mut self) {
        if !self.m.response().started() && signal::sigterm_received() {
            self.m.note_sigterm();
        }
    }

    /// Reads the next request head (waiting up to `idle_timeout` for its first byte).
    /// Refusals are answered here and end the connection.
    pub fn next_request(&mut self, h: &mut Handle) -> Next {
        if self.unfinished != Unfinished::Nothing {
            match self.catch_up(h) {
                Err(Fail::Wait) => return Next::Wait,
                Err(_) => return Next::Closed,
                Ok(()) => {}
            }
        }
        self.sync(h);
        if self.m.is_closed() {
            return Next::Closed;
        }
        let sigterm = signal::sigterm_received();
        if sigterm {
            self.m.note_sigterm();
        }
        // A new connection usually has its request waiting (and after a SIGTERM, one that
        // already arrived is still served): read before waiting.
        let read_first = h.buffered().is_empty() && (self.m.requests() == 0 || sigterm);
        if read_first && self.fill_nb(h).is_err() {
            self.m.mark_closed();
            let _ = h.reset();
            return Next::Closed;
        }
        let mut step = match self.resume_wait(h, true) {
            None | Some(Ok(Arrival::Input)) => {
                self.m.poll_head(h.buffered(), self.eof, &mut SysClock)
            }
            Some(Ok(Arrival::Wait)) => return Next::Wait,
            Some(Ok(Arrival::Sigterm)) => {
                self.m.note_sigterm();
                self.m.poll_head(h.buffered(), self.eof, &mut SysClock)
            }
            Some(Ok(Arrival::Timeout)) => self.m.timeout(&mut SysClock),
            Some(Err(_)) => {
                self.m.mark_closed();
                let _ = h.reset();
                return Next::Closed;
            }
        };
        let mut waits = 0u32;
        loop {
            step = match step {
                Step::Request { consumed } => {
                    h.consume(consumed);
                    return Next::Request;
                }
                Step::Wait { until, sigterm, .. } => {
                    waits += 1;
                    match self.wait_request(h, until, sigterm, waits == 1) {
                        Ok(None) => self.m.shed_now(&mut SysClock),
                        Ok(Some(Arrival::Input)) => {
                            self.m.poll_head(h.buffered(), self.eof, &mut SysClock)
                        }
                        Ok(Some(Arrival::Sigterm)) => {
                            self.m.note_sigterm();
                            if self.fill_nb(h).is_err() {
                                self.eof = true;
                            }
                            self.m.poll_head(h.buffered(), self.eof, &mut SysClock)
                        }
                        Ok(Some(Arrival::Timeout)) => self.m.timeout(&mut SysClock),
                        Ok(Some(Arrival::Wait)) => return Next::Wait,
                        Err(_) => {
                            self.m.mark_closed();
                            let _ = h.reset();
                            return Next::Closed;
                        }
                    }
                }
                Step::End { close, .. } => {
                    self.end(h, close);
                    if self.pending.is_some() {
                        return Next::Wait;
                    }
                    return Next::Closed;
                }
                _ => {
                    self.end(h, Close::Reset);
                    return Next::Closed;
                }
            };
        }
    }

    /// Runs a body step to its answer: `Ok(Some(range))` body bytes in `h.buffered()`
    /// (copy them out, then consume through the range's end), `Ok(None)` the end, or the
    /// failure (the client's, answered, or the connection's).
    fn body_loop<F>(&mut self, h: &mut Handle, mut poll: F) -> Result<Option<Range<usize>>, Fail>
    where
        F: FnMut(&mut Connection, &[u8], bool) -> Result<Step, Fail>,
    {
        self.catch_up(h)?;
        let mut step = match self.resume_wait(h, false) {
            None | Some(Ok(Arrival::Input)) => poll(&mut self.m, h.buffered(), self.eof)?,
            Some(Ok(Arrival::Wait)) => return Err(Fail::Wait),
            Some(Ok(_)) => self.m.timeout(&mut SysClock),
            Some(Err(e)) => return Err(Fail::Io(io_fail(e))),
        };
        loop {
            step = match step {
                Step::Data(r) => return Ok(Some(r)),
                Step::BodyDone { consumed } => {
                    h.consume(consumed);
                    return Ok(None);
                }
                Step::Buffered => return Ok(None),
                Step::Flush => {
                    self.push(h, true)?;
                    poll(&mut self.m, h.buffered(), self.eof)?
                }
                Step::Wait {
                    consumed, until, ..
                } => {
                    h.consume(consumed);
                    match self.wait_input(h, until, false, None) {
                        Ok(Arrival::Timeout | Arrival::Sigterm) => self.m.timeout(&mut SysClock),
                        Ok(Arrival::Input) => poll(&mut self.m, h.buffered(), self.eof)?,
                        Ok(Arrival::Wait) => return Err(Fail::Wait),
                        Err(e) => return Err(Fail::Io(io_fail(e))),
                    }
                }
                Step::End { close, fail } => {
                    self.end(h, close);
                    let fail = fail.unwrap_or_else(|| Fail::Client("Connection closed".into()));
                    return Err(self.defer(fail));
                }
                Step::Request { .. } | Step::Next { .. } => return Ok(None),
            };
        }
    }

    /// The next piece of the request body, at most `max` bytes: a range of `h.buffered()`.
    /// The caller copies it out, then consumes the buffer up to the range's end. `None` at
    /// the end of the body. The first call answers `Expect: 100-continue`.
    pub fn body_data(&mut self, h: &mut Handle, max: usize) -> Result<Option<Range<usize>>, Fail> {
        self.body_loop(h, |m, input, eof| {
            m.poll_body(input, eof, max, &mut SysClock)
        })
    }

    /// Reads until all of a Content-Length body of at most `max` bytes is buffered, so that
    /// `body_data` hands it out in one piece (one copy instead of collecting pieces). Other
    /// bodies are left alone.
    pub fn buffer_body(&mut self, h: &mut Handle, max: u64) -> Result<(), Fail> {
        let Some(left) = self.m.whole_length(max) else {
            return Ok(());
        };
        h.reserve_unread(left as usize);
        self.body_loop(h, |m, input, eof| {
            m.poll_buffered(input, eof, max, &mut SysClock)
        })?;
        Ok(())
    }

    /// A client error found while the handler reads the body (e.g. a malformed multipart
    /// body): answered like a refusal, the connection closed.
    pub fn body_error(&mut self, h: &mut Handle, code: u16, reason: &str, detail: &str) -> Fail {
        match self.m.body_error(code, reason, detail, &mut SysClock) {
            Step::End { close, fail } => {
                self.end(h, close);
                let f = fail.unwrap_or_else(|| Fail::Client(format!("{code} {reason} ({detail})")));
                self.defer(f)
            }
            _ => Fail::Client(format!("{code} {reason} ({detail})")),
        }
    }

    pub fn send_status(&mut self, status: &[u8]) -> Result<(), Fail> {
        self.m.send_status(status, &mut SysClock)
    }

    pub fn send_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), Fail> {
        self.m.send_header(name, value)
    }

    pub fn finish_headers(&mut self, h: &mut Handle) -> Result<(), Fail> {
        self.check_sigterm();
        let push = self.m.finish_headers()?;
        self.push(h, push == Push::Flush)
    }

    pub fn send_data(&mut self, h: &mut Handle, parts: &[&[u8]]) -> Result<(), Fail> {
        self.check_sigterm();
        self.m.begin_data()?;
        for part in parts {
            if part.len() >= DIRECT_WRITE {
                if let Some(suffix) = self.m.data_direct(part.len())? {
                    // straight from the Lua string to the socket: no copy into the output
                    self.before_write(h);
                    let out = self.m.take_output();
                    let r = self.write_out(h, &[&out, part, suffix], false);
                    self.m.recycle_output(out);
                    r?;
                    continue;
                }
            }
            self.m.data(part)?;
        }
        self.push(h, false)
    }

    pub fn flush(&mut self, h: &mut Handle) -> Result<(), Fail> {
        self.check_sigterm();
        let push = self.m.flush()?;
        self.push(h, push == Push::Flush)
    }

    /// `finish()`: idempotent.
    pub fn finish(&mut self, h: &mut Handle) -> Result<(), Fail> {
        self.check_sigterm();
        match self.m.finish()? {
            Some(push) => self.push(h, push == Push::Flush),
            None => Ok(()),
        }
    }

    /// The error path of a handler: a 500 if no response head went out, else a reset.
    pub fn abort(&mut self, h: &mut Handle) {
        self.unfinished = Unfinished::Nothing;
        self.deferred = None;
        self.sync(h);
        if let Some(Step::End { close, .. }) = self.m.abort(&mut SysClock) {
            self.end(h, close);
        }
    }

    /// Ends the current request after its response is finished: drains an unread body
    /// (bounded) or closes. Returns whether the connection may carry another request.
    pub fn done(&mut self, h: &mut Handle) -> bool {
        self.sync(h);
        match self.m.end_request(h.buffered().is_empty(), &mut SysClock) {
            After::Next => true,
            After::End(close) => {
                self.end(h, close);
                false
            }
            After::Drain => self.drain(h),
        }
    }

    /// Discards the unread rest of a request body (bounded by the machine): whether the
    /// connection may carry another request.
    fn drain(&mut self, h: &mut Handle) -> bool {
        // a cooperative drain that stopped to wait goes on with that wait
        let mut resumed = match self.resume_wait(h, false) {
            None | Some(Ok(Arrival::Input)) => None,
            Some(Ok(Arrival::Wait)) => {
                self.unfinished = Unfinished::Drain;
                return false;
            }
            Some(Ok(_)) => Some(self.m.timeout(&mut SysClock)),
            Some(Err(_)) => {
                self.m.mark_closed();
                let _ = h.reset();
                return false;
            }
        };
        loop {
            let step = match resumed.take() {
                Some(step) => step,
                None => self.m.poll_drain(h.buffered(), self.eof, &mut SysClock),
            };
            let step = match step {
                Step::Wait {
                    consumed, until, ..
                } => {
                    h.consume(consumed);
                    match self.wait_input(h, until, false, None) {
                        Ok(Arrival::Input) => continue,
                        Ok(Arrival::Wait) => {
                            self.unfinished = Unfinished::Drain;
                            return false;
                        }
                        Ok(_) => self.m.timeout(&mut SysClock),
                        Err(_) => {
                            self.m.mark_closed();
                            let _ = h.reset();
                            return false;
                        }
                    }
                }
                other => other,
            };
            match step {
                Step::Data(r) => h.consume(r.end),
                Step::Next { consumed } => {
                    h.consume(consumed);
                    return true;
                }
                Step::End { close, .. } => {
                    self.end(h, close);
                    return false;
                }
                Step::Wait { .. } => {}
                _ => {
                    self.end(h, Close::Reset);
                    return false;
                }
            }
        }
    }

    /// A failure found while ending the connection: reported at once, or (cooperative, when
    /// the end has to wait) once the end is done, by `catch_up`.
    fn defer(&mut self, f: Fail) -> Fail {
        if self.pending.is_some() {
            self.deferred = Some(f);
            Fail::Wait
        } else {
            f
        }
    }

    /// Does what the machine decided for the end of the connection.
    fn end(&mut self, h: &mut Handle, close: Close) {
        if h.is_closed() {
            self.m.mark_closed();
            return;
        }
        match close {
            Close::Handover => {}
            Close::Reset => {
                let _ = h.reset();
            }
            Close::Quiet => match self.push(h, true) {
                Ok(()) => {
                    let _ = h.close();
                }
                Err(Fail::Wait) => self.unfinished = Unfinished::End(close),
                Err(_) => {}
            },
            Close::Linger => self.linger(h),
        }
    }

    /// Writes the output, half-closes, drains the input until it ends (close), the machine's
    /// deadline passes, or it fails (reset): the client reads the answer before the close.
    fn linger(&mut self, h: &mut Handle) {
        match self.push(h, true) {
            Ok(()) => {}
            Err(Fail::Wait) => {
                self.unfinished = Unfinished::End(Close::Linger);
                return;
            }
            Err(_) => return,
        }
        if !h.is_finished() && h.finish().is_err() {
            let _ = h.reset();
            return;
        }
        loop {
            let eof = match h.drain_step(None, None) {
                Ok(d) => d.status == ReadStatus::Eof,
                Err(_) => {
                    let _ = h.reset();
                    return;
                }
            };
            let mut step = self.m.poll_linger(eof, &mut SysClock);
            if let (Step::Wait { until, .. }, true, Some(fd)) = (&step, self.coop, h.raw_fd()) {
                if until.is_none_or(|d| d > Instant::now()) {
                    self.wait_for(fd, true, false, *until);
                    self.unfinished = Unfinished::End(Close::Linger);
                    return;
                }
                step = self.m.timeout(&mut SysClock);
            }
            if let Step::Wait { until, .. } = step {
                match wait(h, &[Interest::Read], until) {
                    Ok(Outcome::Ready) => continue,
                    _ => step = self.m.timeout(&mut SysClock),
                }
            }
            match step {
                Step::End {
                    close: Close::Quiet,
                    ..
                } => {
                    let _ = h.close();
                    return;
                }
                Step::Wait { .. } => continue,
                _ => {
                    let _ = h.reset();
                    return;
                }
            }
        }
    }

    /// Turns off Nagle's algorithm once a connection carries a second write: a small piece
    /// after earlier data (the tail of a long or flushed response, the next response of a
    /// keep-alive connection) would otherwise wait for the client's delayed ACK (up to
    /// 40 ms). A connection with one request and one write never needs the system call.
    fn before_write(&mut self, h: &Handle) {
        if self.wrote && !self.nodelay && h.kind() == Kind::Tcp {
            self.nodelay = true;
            if let Some(fd) = h.raw_fd() {
                let _ = sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            }
        }
        self.wrote = true;
    }

    /// Moves the machine's output to the socket (all of it with `flush`, else once large).
    fn push(&mut self, h: &mut Handle, flush: bool) -> Result<(), Fail> {
        if self.m.output().len() < WRITE_BUFFER_LIMIT && !flush {
            return Ok(());
        }
        if self.m.output().is_empty() && h.write_pending() == 0 {
            return Ok(());
        }
        self.before_write(h);
        let out = self.m.take_output();
        let r = self.write_out(h, &[&out], flush);
        self.m.recycle_output(out);
        r
    }

    /// Writes `parts` after anything pending; with `flush`, waits until all is sent,
    /// otherwise only until less than the handle's buffer limit is pending. Waits are
    /// bounded by `stall_timeout`; a failure resets the connection and marks it faulty.
    fn write_out(&mut self, h: &mut Handle, parts: &[&[u8]], flush: bool) -> Result<(), Fail> {
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
            let until = self
                .m
                .cfg
                .stall_timeout
                .and_then(|d| Instant::now().checked_add(d));
            // A client that sends a body we discard must not block our sending.
            let drain = self.m.drains_while_writing();
            if self.coop {
                return self.write_wait(h, pending, until, drain, flush);
            }
            let interests: &[Interest] = if drain {
                &[Interest::Write, Interest::Read]
            } else {
                &[Interest::Write]
            };
            match wait(h, interests, until) {
                Ok(Outcome::Ready) => {}
                Ok(_) => return Err(self.broken(h, "Client connection stalled")),
                Err(e) => return Err(self.broken(h, &sys::error_text(&e))),
            }
            if drain && !h.is_finished() {
                let _ = h.drain_step(None, None);
            }
            pending = match step(h, &[]) {
                Ok(n) => n,
                Err(e) => return Err(self.broken(h, &io_fail(e))),
            };
        }
        Ok(())
    }

    /// Cooperative: a write that cannot go on now waits for the socket (and for input, when
    /// the client's body is being discarded), within the stall timeout.
    fn write_wait(
        &mut self,
        h: &mut Handle,
        pending: usize,
        fresh_until: Option<Instant>,
        drain: bool,
        flush: bool,
    ) -> Result<(), Fail> {
        let until = match self.stall {
            Some((d, p)) if p <= pending => d,
            _ => fresh_until,
        };
        if until.is_some_and(|d| d <= Instant::now()) {
            self.stall = None;
            return Err(self.broken(h, "Client connection stalled"));
        }
        let Some(fd) = h.raw_fd() else {
            return Err(self.broken(h, "Attempt to write to a closed I/O handle"));
        };
        self.stall = Some((until, pending));
        self.wait_for(fd, drain, true, until);
        self.unfinished = Unfinished::Write { flush };
        Err(Fail::Wait)
    }

    /// A write failed: reset, faulty, closed.
    fn broken(&mut self, h: &mut Handle, why: &str) -> Fail {
        // a handle the application closed is its own doing; anything else is the client's
        let by_client = !h.is_closed();
        if by_client {
            let _ = h.reset();
        }
        self.m.broken(why, by_client)
    }

    /// Reads once into the buffer without blocking: `Ok(true)` = new data, `Ok(false)` =
    /// nothing now, or the input ended (then `eof` is set).
    fn fill_nb(&mut self, h: &mut Handle) -> Result<bool, HandleError> {
        let have = h.buffered().len();
        let out = h.read_step(Some(have + 1), None, true)?;
        Ok(match out.status {
            ReadStatus::Block => false,
            ReadStatus::Eof => {
                self.eof = true;
                h.buffered().len() > have
            }
            _ => true,
        })
    }

    /// [`wait_input`](Self::wait_input) for (the rest of) a request head, in a classic
    /// worker that watches its pool (`server::pressure`): while the pool is overloaded
    /// and the machine says so ([`Connection::shed`]), the wait ends with `None`, to give
    /// the connection up. Waits end at least every `PRESSURE_CHECK` to look again (the
    /// machine answers an early end with the same wait); `first`: the first slice of the
    /// wait, which does not look on a keep-alive connection between requests.
    fn wait_request(
        &mut self,
        h: &mut Handle,
        until: Option<Instant>,
        on_sigterm: bool,
        first: bool,
    ) -> Result<Option<Arrival>, HandleError> {
        if self.coop || !pressure::installed() {
            return self.wait_input(h, until, on_sigterm, None).map(Some);
        }
        let between = self.m.requests() > 0 && h.buffered().is_empty();
        if first && between {
            return self
                .wait_input(h, until, on_sigterm, Some(PRESSURE_CHECK))
                .map(Some);
        }
        let Some(gauge) = pressure::current() else {
            return self.wait_input(h, until, on_sigterm, None).map(Some);
        };
        let now = Instant::now();
        let check = sooner(until, now + PRESSURE_CHECK);
        if !gauge.full() {
            return self
                .wait_input(h, until, on_sigterm, Some(PRESSURE_CHECK))
                .map(Some);
        }
        let silent = match (h.kind(), h.raw_fd()) {
            (Kind::Tcp, Some(fd)) => sys::tcp_silent_for(fd),
            _ => None,
        };
        let claim = match self.m.shed(silent, &mut SysClock) {
            Shed::Never => return self.wait_input(h, until, on_sigterm, None).map(Some),
            Shed::After(d) => {
                return self
                    .wait_input(h, sooner(check, now + d), on_sigterm, None)
                    .map(Some)
            }
            Shed::Now { claim } => claim,
        };
        if on_sigterm && signal::sigterm_received() {
            return Ok(Some(Arrival::Sigterm));
        }
        let Some(fd) = h.raw_fd() else {
            self.eof = true;
            return Ok(Some(Arrival::Input));
        };
        // Sleep until the client sends something or a connection waits to be accepted.
        let mut fds = vec![fd];
        fds.extend(gauge.listeners());
        let mut ready = Vec::with_capacity(fds.len());
        let timeout = check.map(|c| c.saturating_duration_since(now));
        sys::readable(&fds, timeout, &mut ready)
            .map_err(|e| HandleError::Io(sys::error_text(&e)))?;
        // Input first, even when a connection waits too (it may have come just now).
        let had = h.buffered().len();
        if self.fill_nb(h)? || self.eof || h.buffered().len() > had {
            return Ok(Some(Arrival::Input));
        }
        if ready[0] || !ready[1..].contains(&true) || !gauge.full() {
            return Ok(Some(Arrival::Timeout));
        }
        if !claim || gauge.claim() {
            return Ok(None);
        }
        // Another worker gives up its connection for this one.
        let pause = sooner(check, Instant::now() + SHEDDING_PAUSE);
        self.wait_input(h, pause, on_sigterm, None).map(Some)
    }

    /// Reads more input into `h`'s buffer, waiting until `until`; with `on_sigterm`,
    /// returns early when SIGTERM was received; with `cap`, after one wait of at most
    /// that long (`Timeout`, whether or not `until` passed).
    ///
    /// An accepted connection (a blocking socket) sleeps in `recv` itself, with SO_RCVTIMEO
    /// bounding each sleep: one system call per wait instead of `poll` and `recv`. It is
    /// changed only when a wait needs a shorter one, so a keep-alive connection sets it
    /// once. Other handles poll.
    ///
    /// Both ways wait in slices of at most a second with the SIGTERM flag checked in
    /// between: a signal always ends a `poll` and, with SO_RCVTIMEO set, a `recv` (EINTR
    /// even with SA_RESTART); one landing between the check and the wait is seen within a
    /// slice. That is cheaper than `poll::poll(.., true)`, which blocks and unblocks
    /// SIGTERM around every wait.
    fn wait_input(
        &mut self,
        h: &mut Handle,
        until: Option<Instant>,
        on_sigterm: bool,
        cap: Option<Duration>,
    ) -> Result<Arrival, HandleError> {
        let io_err = |e: io::Error| HandleError::Io(sys::error_text(&e));
        if self.eof {
            return Ok(Arrival::Input);
        }
        if self.coop {
            let had = h.buffered().len();
            if self.fill_nb(h)? || self.eof || h.buffered().len() > had {
                return Ok(Arrival::Input);
            }
            if on_sigterm && signal::sigterm_received() {
                return Ok(Arrival::Sigterm);
            }
            if until.is_some_and(|d| d <= Instant::now()) {
                return Ok(Arrival::Timeout);
            }
            let Some(fd) = h.raw_fd() else {
                self.eof = true;
                return Ok(Arrival::Input);
            };
            // an idle connection among thousands holds no read buffer while it waits
            h.release_idle_buffer();
            self.wait_for(fd, true, false, until);
            self.waited = Some((until, h.buffered().len()));
            return Ok(Arrival::Wait);
        }
        loop {
            if on_sigterm && signal::sigterm_received() {
                return Ok(Arrival::Sigterm);
            }
            let now = Instant::now();
            let slice = match until {
                Some(d) if d <= now => return Ok(Arrival::Timeout),
                Some(d) => (d - now).min(SIGTERM_SLICE),
                None => SIGTERM_SLICE,
            };
            let slice = cap.map_or(slice, |c| slice.min(c));
            // Round up, so a short remaining time does not become a busy loop of 0 ms waits.
            // (in u64: `as_micros` is a u128, whose division is a library call)
            let ms = slice.as_secs() * 1000 + u64::from(slice.subsec_micros()).div_ceil(1000);
            let slice = Duration::from_millis(ms);
            let Some(fd) = h.raw_fd() else {
                self.eof = true;
                return Ok(Arrival::Input);
            };
            if h.can_wait_in_recv() {
                let stale = self.rcvtimeo.is_none_or(|t| t > slice || t * 2 < slice);
                if stale {
                    sys::set_recv_timeout(fd, slice).map_err(io_err)?;
                    self.rcvtimeo = Some(slice);
                }
                match h.recv_wait()? {
                    Some(true) => return Ok(Arrival::Input),
                    Some(false) => {
                        self.eof = true;
                        return Ok(Arrival::Input);
                    }
                    None if cap.is_some() => return Ok(Arrival::Timeout),
                    None => continue,
                }
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Not `sys::wait_fd`: a signal must end this wait (EINTR), not restart it.
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            match sys::cvt(unsafe { libc::poll(&mut pfd, 1, sys::timeout_ms(Some(slice))) }) {
                Ok(0) if cap.is_some() => return Ok(Arrival::Timeout),
                Ok(0) => {}
                Ok(_) => {
                    let had = h.buffered().len();
                    if self.fill_nb(h)? || self.eof || h.buffered().len() > had {
                        return Ok(Arrival::Input);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

/// Waits until the kernel has more for `h` in one of `interests` (input already buffered
/// does not count: callers wait only when they need more), or the deadline passes.
fn wait(h: &Handle, interests: &[Interest], until: Option<Instant>) -> io::Result<Outcome> {
    let Some(fd) = h.raw_fd() else {
        return Ok(Outcome::Ready);
    };
    let entries: Vec<Entry> = interests.iter().map(|&i| Entry::new(fd, i)).collect();
    let timeout = until.map(|d| d.saturating_duration_since(Instant::now()));
    poll::poll(&entries, timeout, false)
}
