//! One HTTP connection, driven over the socket's [`Handle`] without any Lua type: reading
//! and checking request heads, the request body (Content-Length or chunked, with
//! `100 Continue` sent on the first read), the response with its framing, the refusals, and
//! what happens between requests (drain an unread body or close). The Lua binding
//! (`request.rs`) owns one `Connection` per socket and passes the handle into every call,
//! so the HTTP layer and `socket:read` share one read buffer and no byte is lost.
//!
//! Every wait has a deadline from the options: `idle_timeout` for the first byte of a
//! request (also woken by SIGTERM), `request_header_timeout` for the whole head,
//! `stall_timeout` for each wait for progress, `drain_timeout` for the input drained before
//! a connection is closed.

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use crate::http::chunked::{ChunkedDecoder, ChunkedLimits, Decoded};
use crate::http::date::DateCache;
use crate::http::error::HttpError;
use crate::http::framing::{framing, BodyKind};
use crate::http::head::{self, HeadParser, Status, Version};
use crate::http::response::{self, Phase, Response, ResponseConfig, ResponseError};
use crate::io::handle::{HandleError, ReadStatus, WRITE_BUFFER_LIMIT};
use crate::io::poll::{self, Entry, Interest, Outcome};
use crate::io::{signal, Handle};

/// An unread request body up to this size is read and discarded after the response so the
/// connection can stay open; a larger one closes it.
pub const DRAIN_LIMIT: u64 = 1 << 20;

/// Pieces of response body at least this long are written from the application's string
/// (framed around it) instead of being copied into the output buffer first.
const DIRECT_WRITE: usize = 64 << 10;

/// The options of `generate_handler` that the connection needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub head_limits: head::Limits,
    pub body_limit: u64,
    pub max_input_chunk: usize,
    pub min_output_chunk: usize,
    pub idle_timeout: Option<Duration>,
    pub stall_timeout: Option<Duration>,
    pub header_timeout: Option<Duration>,
    pub drain_timeout: Option<Duration>,
    /// The static headers, rendered as `Name: value\r\n` lines.
    pub static_headers: Vec<u8>,
}

/// Why a call failed. Each becomes a plain-string Lua error.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// The client sent something unacceptable (or too slowly): the error response went out
    /// if the response had not started, and the connection is closed.
    Client(String),
    /// The connection broke (or stalled while sending): it was reset, the request is faulty.
    Io(String),
    /// The application used the request wrongly; nothing happened.
    Misuse(String),
}

impl From<ResponseError> for Fail {
    fn from(e: ResponseError) -> Self {
        Fail::Misuse(e.message().into())
    }
}

/// What `next_request` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A request head was read; the handler may be called.
    Request,
    /// The connection ended (quietly, or after a refusal that was answered).
    Closed,
}

/// The request body still on the wire.
#[derive(Debug)]
enum Body {
    /// None, or all of it read.
    Done,
    /// This many bytes to come.
    Length(u64),
    /// A chunked body; `carry` bytes of data at the front of the read buffer were already
    /// counted by the decoder but not handed out.
    Chunked {
        decoder: Box<ChunkedDecoder>,
        carry: usize,
    },
}

/// Between requests, or serving one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Active,
    /// The connection is closed (or handed to a refusal); nothing more happens on it.
    Closed,
}

/// The parts of the current request head, as ranges into a copy of its bytes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub bytes: Vec<u8>,
    pub method: Range<usize>,
    pub path: Option<Range<usize>>,
    pub query: Option<Range<usize>>,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub http11: bool,
}

impl Parsed {
    pub fn get(&self, r: &Range<usize>) -> &[u8] {
        &self.bytes[r.clone()]
    }

    fn load(&mut self, raw: &[u8], head: &head::Head<'_>) {
        let base = raw.as_ptr() as usize;
        let range = |part: &[u8]| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        self.method = range(head.method);
        self.path = head.parts.path.map(range);
        self.query = head.parts.query.map(range);
        self.headers.clear();
        self.headers
            .extend(head.headers.iter().map(|(n, v)| (range(n), range(v))));
        self.http11 = head.version == Version::Http11;
        self.bytes.clear();
        self.bytes.extend_from_slice(raw);
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.get(n).eq_ignore_ascii_case(name))
            .map(|(_, v)| self.get(v))
    }
}

/// What a fill of the read buffer brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    Data,
    Eof,
    TimedOut,
}

/// The state of one connection. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    pub cfg: std::rc::Rc<Config>,
    pub parsed: Parsed,
    pub state: State,
    pub resp: Response,
    body: Body,
    /// `Expect: 100-continue` not yet answered.
    expect_continue: bool,
    /// The request may be followed by another one (before the response's own say).
    keep_alive: bool,
    /// Monologue: the input is discarded, never handed to the application.
    pub discard_input: bool,
    /// Set when the request was used (fresh = false).
    pub used: bool,
    pub faulty: bool,
    /// SIGTERM arrived: no further request after this one.
    shutdown: bool,
    requests: u64,
    /// A response write happened on this connection; TCP_NODELAY is set (see `nodelay`).
    wrote: bool,
    nodelay: bool,
    date: DateCache,
}

/// `Instant::now() + d` for an optional timeout (`None` = never).
fn deadline(d: Option<Duration>) -> Option<Instant> {
    d.and_then(|d| Instant::now().checked_add(d))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// Longest single `poll` while waiting for a request: bounds the delay when a SIGTERM lands
/// between the flag check and the `poll` (see `wait_for_request`).
const SIGTERM_SLICE: Duration = Duration::from_secs(1);

/// Waits for input on `h` until `until`, returning early when SIGTERM was received.
///
/// Cheaper than `poll::poll(.., true)`, which blocks and unblocks SIGTERM around every wait
/// (two more system calls per request): here the handler's flag is checked and `poll(2)`,
/// which a signal always interrupts (SA_RESTART does not restart it), waits in slices. A
/// SIGTERM that arrives between the check and the `poll` is seen within one slice.
fn wait_for_request(h: &Handle, until: Option<Instant>) -> io::Result<Outcome> {
    let Some(fd) = h.raw_fd() else {
        return Ok(Outcome::Ready);
    };
    loop {
        if signal::sigterm_received() {
            return Ok(Outcome::Sigterm);
        }
        let now = Instant::now();
        let slice = match until {
            Some(d) if d <= now => return Ok(Outcome::Timeout),
            Some(d) => (d - now).min(SIGTERM_SLICE),
            None => SIGTERM_SLICE,
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up, so a short remaining time does not become a busy loop of 0 ms polls.
        let ms = slice.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        match crate::io::sys::cvt(unsafe { libc::poll(&mut pfd, 1, ms) }) {
            Ok(0) => {}
            Ok(_) => return Ok(Outcome::Ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads once into the buffer without blocking: `Some(true)` = new data, `Some(false)` =
/// end of input, `None` = nothing now.
fn fill_nb(h: &mut Handle) -> Result<Option<bool>, HandleError> {
    let have = h.buffered().len();
    let out = h.read_step(Some(have + 1), None, true)?;
    Ok(match out.status {
        ReadStatus::Block => None,
        ReadStatus::Eof => Some(h.buffered().len() > have),
        _ => Some(true),
    })
}

fn io_fail(e: HandleError) -> String {
    match e {
        HandleError::Io(m) => m,
        HandleError::Misuse(m) => m.to_string(),
    }
}

impl Connection {
    pub fn new(cfg: std::rc::Rc<Config>) -> Self {
        let min_chunk = cfg.min_output_chunk;
        Connection {
            cfg,
            parsed: Parsed::default(),
            state: State::Idle,
            resp: Response::new(ResponseConfig {
                http11: true,
                head: false,
                close: false,
                min_chunk,
            }),
            body: Body::Done,
            expect_continue: false,
            keep_alive: false,
            discard_input: false,
            used: false,
            faulty: false,
            shutdown: false,
            requests: 0,
            wrote: false,
            nodelay: false,
            date: DateCache::default(),
        }
    }

    /// Whether the request body has been read completely (or there is none).
    pub fn body_done(&self) -> bool {
        matches!(self.body, Body::Done)
    }

    /// Whether the request has a body at all (chunked, or a non-zero Content-Length).
    pub fn has_body(&self) -> bool {
        !self.body_done()
    }

    /// Reads the next request head (waiting up to `idle_timeout` for its first byte).
    /// Refusals are answered here and end the connection.
    pub fn next_request(&mut self, h: &mut Handle) -> Next {
        if self.state == State::Closed || h.is_closed() {
            self.state = State::Closed;
            return Next::Closed;
        }
        match self.read_head(h) {
            Ok(next) => next,
            Err(Fail::Io(_)) => {
                let _ = h.reset();
                self.state = State::Closed;
                Next::Closed
            }
            Err(_) => {
                self.state = State::Closed;
                Next::Closed
            }
        }
    }

    fn read_head(&mut self, h: &mut Handle) -> Result<Next, Fail> {
        // Nothing of the previous request may shape a refusal of this one.
        self.resp.reset(ResponseConfig {
            http11: true,
            head: false,
            close: true,
            min_chunk: self.cfg.min_output_chunk,
        });
        self.body = Body::Done;
        self.expect_continue = false;
        self.discard_input = false;
        self.faulty = false;
        if h.buffered().is_empty() {
            if !self.wait_first_byte(h)? {
                return Ok(Next::Closed);
            }
        } else if signal::sigterm_received() {
            self.shutdown = true;
        }
        let cfg = self.cfg.clone();
        let until = deadline(cfg.header_timeout);
        let mut parser = HeadParser::new();
        loop {
            match parser.parse(h.buffered(), &cfg.head_limits) {
                Ok(Status::Complete(head, used)) => {
                    let framing = match framing(&head) {
                        Ok(f) => f,
                        Err(e) => return Err(self.refuse_error(h, e)),
                    };
                    self.parsed.load(&h.buffered()[..used], &head);
                    let head_request = head.method == b"HEAD";
                    h.consume(used);
                    self.body = match framing.body {
                        BodyKind::None | BodyKind::Length(0) => Body::Done,
                        BodyKind::Length(n) if n > cfg.body_limit => {
                            return Err(self.refuse_error(h, HttpError::BodyTooLarge))
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
                        min_chunk: cfg.min_output_chunk,
                    });
                    self.discard_input = false;
                    self.used = false;
                    self.faulty = false;
                    self.requests += 1;
                    self.state = State::Active;
                    return Ok(Next::Request);
                }
                Ok(Status::Partial) => {}
                Err(e) => return Err(self.refuse_error(h, e)),
            }
            match self.fill(h, until)? {
                Fill::Data => {}
                Fill::Eof => {
                    if h.buffered().iter().all(|&b| b == b'\r' || b == b'\n') {
                        self.close_quietly(h);
                        return Ok(Next::Closed);
                    }
                    return Err(self.refuse(h, 400, "Bad Request", "Unexpected EOF"));
                }
                Fill::TimedOut => {
                    let detail = "Timeout while receiving headers";
                    return Err(self.refuse(h, 408, "Request Timeout", detail));
                }
            }
        }
    }

    /// Waits for the first byte of a request: `Ok(false)` when the connection ended
    /// (client closed, idle timeout or SIGTERM, the last two answered with 408).
    fn wait_first_byte(&mut self, h: &mut Handle) -> Result<bool, Fail> {
        // A new connection usually has its request waiting: try before polling.
        if self.requests == 0 && !signal::sigterm_received() {
            match fill_nb(h).map_err(|e| Fail::Io(io_fail(e)))? {
                Some(true) => return Ok(true),
                Some(false) => {
                    self.close_quietly(h);
                    return Ok(false);
                }
                None => {}
            }
        }
        let until = deadline(self.cfg.idle_timeout);
        loop {
            let outcome =
                wait_for_request(h, until).map_err(|e| Fail::Io(crate::io::sys::error_text(&e)))?;
            match outcome {
                Outcome::Sigterm => {
                    self.refuse(h, 408, "Request Timeout", "Server shutdown");
                    return Ok(false);
                }
                Outcome::Timeout => {
                    self.refuse(h, 408, "Request Timeout", "Idle connection timed out");
                    return Ok(false);
                }
                Outcome::Ready => match fill_nb(h).map_err(|e| Fail::Io(io_fail(e)))? {
                    Some(true) => return Ok(true),
                    Some(false) => {
                        self.close_quietly(h);
                        return Ok(false);
                    }
                    None => {}
                },
            }
        }
    }

    /// Reads more input, waiting up to `stall_timeout` (and `until`).
    fn fill(&mut self, h: &mut Handle, until: Option<Instant>) -> Result<Fill, Fail> {
        loop {
            match fill_nb(h).map_err(|e| Fail::Io(io_fail(e)))? {
                Some(true) => return Ok(Fill::Data),
                Some(false) => return Ok(Fill::Eof),
                None => {}
            }
            let until = earliest(until, deadline(self.cfg.stall_timeout));
            let outcome = wait(h, &[Interest::Read], until)
                .map_err(|e| Fail::Io(crate::io::sys::error_text(&e)))?;
            if outcome == Outcome::Timeout {
                return Ok(Fill::TimedOut);
            }
        }
    }

    /// The client's EOF or error ends the connection without an answer.
    fn close_quietly(&mut self, h: &mut Handle) {
        if !h.is_closed() {
            let _ = h.close();
        }
        self.state = State::Closed;
    }

    fn refuse_error(&mut self, h: &mut Handle, e: HttpError) -> Fail {
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

    /// Writes `bytes` after anything pending; with `flush`, waits until all is sent,
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
    fn broken(&mut self, h: &mut Handle, why: &str) -> Fail {
        if !h.is_closed() {
            let _ = h.reset();
        }
        self.faulty = true;
        self.state = State::Closed;
        Fail::Io(format!("Could not send data to client: {why}"))
    }

    /// Checks that the request can still be used for the response.
    fn usable(&self) -> Result<(), Fail> {
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
    fn before_head(&mut self) {
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
    fn nodelay(&mut self, h: &Handle) {
        if self.nodelay || h.kind() != crate::io::Kind::Tcp {
            return;
        }
        self.nodelay = true;
        if let Some(fd) = h.raw_fd() {
            let _ = crate::io::sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
    }

    /// Moves the response output to the socket (all of it with `flush`, else once large).
    fn push(&mut self, h: &mut Handle, flush: bool) -> Result<(), Fail> {
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

    /// The next piece of the request body, at most `max` bytes: a range of `h.buffered()`.
    /// The caller copies it out, then consumes the buffer up to the range's end. `None` at
    /// the end of the body. The first call answers `Expect: 100-continue`.
    pub fn body_data(&mut self, h: &mut Handle, max: usize) -> Result<Option<Range<usize>>, Fail> {
        self.usable()?;
        self.used = true;
        if self.expect_continue {
            self.expect_continue = false;
            if !self.resp.started() {
                self.write_out(h, &[b"HTTP/1.1 100 Continue\r\n\r\n"], true)?;
            }
        }
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
                match self.fill(h, None)? {
                    Fill::Data => {}
                    Fill::Eof => {
                        let detail = "Unexpected EOF while reading request body";
                        return Err(self.body_error(h, 400, "Bad Request", detail));
                    }
                    Fill::TimedOut => {
                        let detail = "Timeout while waiting for request body";
                        return Err(self.body_error(h, 408, "Request Timeout", detail));
                    }
                }
            }
        }
    }

    /// A client error while the handler reads the body: answered (if the response has not
    /// started) and the connection closed, like a refusal.
    pub fn body_error(&mut self, h: &mut Handle, code: u16, reason: &str, detail: &str) -> Fail {
        match self.refuse(h, code, reason, detail) {
            Fail::Client(m) => Fail::Client(format!("Error while reading request body: {m}")),
            other => other,
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
