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
//!
//! This file: the state and reading request heads. `close`: refusals and the end of each
//! request (drain, linger, close); `wait`: the waits and the non-blocking read step;
//! `respond`: the response methods and writing; `body`: the request body.

mod body;
mod close;
mod respond;
#[cfg(test)]
mod tests;
mod wait;

use wait::{fill_nb, io_fail, wait_fill, Arrival};

use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use crate::http::chunked::{ChunkedDecoder, ChunkedLimits};
use crate::http::date::DateCache;
use crate::http::error::HttpError;
use crate::http::framing::{framing, BodyKind};
use crate::http::head::{self, HeadParser, Status, Version};
use crate::http::response::{Response, ResponseConfig, ResponseError};
use crate::io::{signal, Handle};

/// An unread request body up to this size is read and discarded after the response so the
/// connection can stay open; a larger one closes it.
pub const DRAIN_LIMIT: u64 = 1 << 20;

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
    /// The client's fault found while the handler read the body (the message raised for
    /// it): the request was answered and the connection closed, and the handler's failure
    /// that raises exactly this message is the client's, not the application's.
    pub client_fault: Option<String>,
    /// SIGTERM arrived: no further request after this one.
    shutdown: bool,
    requests: u64,
    /// A response write happened on this connection; TCP_NODELAY is set (see `nodelay`).
    wrote: bool,
    nodelay: bool,
    /// The socket's SO_RCVTIMEO as last set (see `wait::wait_fill`).
    rcvtimeo: Option<Duration>,
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
            client_fault: None,
            shutdown: false,
            requests: 0,
            wrote: false,
            nodelay: false,
            rcvtimeo: None,
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
        self.client_fault = None;
        if h.buffered().is_empty() {
            if !self.wait_first_byte(h)? {
                return Ok(Next::Closed);
            }
        } else if signal::sigterm_received() {
            self.shutdown = true;
        }
        let cfg = self.cfg.clone();
        // The head usually arrived whole: the clock is read only once it has to be waited for.
        let mut until = None;
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
            let until = *until.get_or_insert_with(|| deadline(cfg.header_timeout));
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
        let arrival =
            wait_fill(h, until, &mut self.rcvtimeo, true).map_err(|e| Fail::Io(io_fail(e)))?;
        match arrival {
            Arrival::Data => Ok(true),
            Arrival::Eof => {
                self.close_quietly(h);
                Ok(false)
            }
            Arrival::Sigterm => {
                // a request that already arrived is still served, then the connection closes
                if fill_nb(h).map_err(|e| Fail::Io(io_fail(e)))? == Some(true) {
                    self.shutdown = true;
                    return Ok(true);
                }
                self.refuse(h, 408, "Request Timeout", "Server shutdown");
                Ok(false)
            }
            Arrival::Timeout => {
                self.refuse(h, 408, "Request Timeout", "Idle connection timed out");
                Ok(false)
            }
        }
    }

    /// Reads more input, waiting up to `stall_timeout` (and `until`).
    fn fill(&mut self, h: &mut Handle, until: Option<Instant>) -> Result<Fill, Fail> {
        let until = earliest(until, deadline(self.cfg.stall_timeout));
        match wait_fill(h, until, &mut self.rcvtimeo, false).map_err(|e| Fail::Io(io_fail(e)))? {
            Arrival::Data => Ok(Fill::Data),
            Arrival::Eof => Ok(Fill::Eof),
            Arrival::Timeout | Arrival::Sigterm => Ok(Fill::TimedOut),
        }
    }
}
