//! One HTTP/1.x server connection as a state machine, request after request: reading and
//! checking heads, framing bodies (Content-Length, chunked), `100 Continue`, the response
//! with its framing, refusals, timeouts, what happens between requests (drain an unread
//! body or close) and how the connection ends (quietly, lingering, reset).
//!
//! Sans-IO: the machine never touches a socket and has no clock of its own. The caller owns
//! the input buffer and passes its unread bytes (`input`), whether the peer ended its
//! input (`eof`), and a [`Clock`]. Each call answers with a [`Step`]: what was found (a
//! request head, body bytes as a range of `input`) or what the driver must do next (write
//! the output, wait for input until a deadline, end the connection in a given way). Bytes
//! to send accumulate in [`Connection::output`]. The blocking driver (`http::drive`) and
//! the tests (`http::drive::script`) are both thin loops over these calls.
//!
//! Deadlines come from the options: `idle_timeout` for the first byte of a request (a
//! SIGTERM, see [`Connection::note_sigterm`], ends that wait too), `request_header_timeout`
//! for the whole head, `stall_timeout` for each wait for progress, `drain_timeout` for the
//! input drained before a connection is closed. A wait that ends without input is reported
//! with [`Connection::timeout`], which gives the verdict for the wait in progress.
//!
//! This file: the types and the state. `input`: heads and bodies; `output`: the response;
//! `end`: refusals and the end of requests and connections.

mod end;
mod input;
mod output;

pub use end::After;
pub use output::Push;

#[cfg(test)]
pub(crate) mod tests;

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::http::chunked::ChunkedDecoder;
use crate::http::date::DateCache;
use crate::http::framing::Framing;
use crate::http::head::{self, HeadParser, Version};
use crate::http::response::{Response, ResponseConfig, ResponseError};
use crate::http::spare;

/// An unread request body up to this size is read and discarded after the response so the
/// connection can stay open; a larger one closes it.
pub const DRAIN_LIMIT: u64 = 1 << 20;

/// The most body bytes one step of the drain after a response hands out.
const DRAIN_PIECE: usize = 64 << 10;

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
    /// While the pool is overloaded: the most a new connection's first byte or an
    /// incomplete head may take (see [`Connection::shed`]); `None`: no such bound.
    pub busy_header_timeout: Option<Duration>,
    pub drain_timeout: Option<Duration>,
    /// The static headers, rendered as `Name: value\r\n` lines.
    pub static_headers: Vec<u8>,
}

/// The time, as the driver knows it: read only when a step needs it (a deadline to set, a
/// `Date` to write), so a request that arrives whole costs no clock reading.
pub trait Clock {
    /// The monotonic time, for deadlines.
    fn now(&mut self) -> Instant;
    /// Seconds since the Unix epoch, for `Date`.
    fn unix_secs(&mut self) -> u64;
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
    /// Not a failure: a cooperative driver stopped to wait and the call is to be made
    /// again (see `drive::blocking::Conn::take_pending`). The machine never returns it.
    Wait,
}

impl Fail {
    pub fn message(&self) -> &str {
        match self {
            Fail::Client(m) | Fail::Io(m) | Fail::Misuse(m) => m,
            Fail::Wait => "waiting",
        }
    }
}

impl From<ResponseError> for Fail {
    fn from(e: ResponseError) -> Self {
        Fail::Misuse(e.message().into())
    }
}

/// How a connection ends: what the driver does with the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Write the output (if any), then close: nothing is left to read (the client ended,
    /// or asked to close and sent nothing more).
    Quiet,
    /// Write all output, half-close, then drain the input: call
    /// [`Connection::poll_linger`] after each drain until the input ends (close) or it
    /// answers otherwise. The client reads the whole answer before the connection ends.
    Linger,
    /// Reset now: the answer cannot be completed (it started, or sending failed).
    Reset,
    /// Leave the socket alone: it belongs to the protocol the response switched to (101).
    Handover,
}

/// What becomes of a connection waiting for a request while its pool is overloaded
/// (see [`Connection::shed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// Give it up now ([`Connection::shed_now`]). `claim`: only one worker of the pool at
    /// a time should (an idle keep-alive connection: each waiting connection to accept
    /// costs one of them, not all).
    Now { claim: bool },
    /// Not before this much time.
    After(Duration),
    /// Not at all (it is not waiting for a request, or the bound is off).
    Never,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A request head of `consumed` bytes was read (see [`Connection::parsed`]): consume
    /// them; the handler may be called.
    Request { consumed: usize },
    /// Body bytes `input[range]`: take them, then consume through `range.end`.
    Data(Range<usize>),
    /// The body is complete: consume `consumed` bytes (the chunked trailer section).
    BodyDone { consumed: usize },
    /// What [`Connection::poll_buffered`] waited for is buffered.
    Buffered,
    /// Write all of [`Connection::output`], then call again.
    Flush,
    /// Consume `consumed` bytes (taken up by a decoder), then wait for more input until
    /// `until` (`None`: no limit) and call again; when the time passes without input, call
    /// [`Connection::timeout`]. With `sigterm`, a SIGTERM also ends the wait (report it
    /// with [`Connection::note_sigterm`], read what is there without waiting, call again).
    Wait {
        consumed: usize,
        until: Option<Instant>,
        sigterm: bool,
    },
    /// The request is over and the connection may carry another one: consume `consumed`
    /// bytes (the rest of a drained body).
    Next { consumed: usize },
    /// The connection ends as `close`, after the output (if any) is written. `fail`: the
    /// error the current call raises, if it was the client's fault or a broken connection.
    End { close: Close, fail: Option<Fail> },
}

/// The request body still on the wire.
#[derive(Debug)]
enum Body {
    /// None, or all of it read.
    Done,
    /// This many bytes to come.
    Length(u64),
    /// A chunked body; `carry` bytes of data at the front of the input were already
    /// counted by the decoder but not handed out.
    Chunked {
        decoder: Box<ChunkedDecoder>,
        carry: usize,
    },
}

/// Where the connection is.
#[derive(Debug)]
enum Phase {
    /// The previous request is over (or none came yet); nothing of the next one was read.
    Between,
    /// Waiting for the first byte of a request; `since` the first wait began.
    Idle { since: Option<Instant> },
    /// Reading a head; `since` the first wait for its rest (the whole head's deadline
    /// counts from then).
    Head { since: Option<Instant> },
    /// A request is being served (body reading and the response).
    Active,
    /// After the response: an unread body is read and discarded; `drained` so far.
    Draining { drained: u64 },
    /// Answered and half-closed: draining the input until `until`.
    Linger { until: Option<Instant> },
    /// Nothing more happens on the connection.
    Closed,
}

/// What a wait is for: what its timeout means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitFor {
    FirstByte,
    Head,
    Body,
    Linger,
}

/// The wait in progress (the last `Step::Wait` answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    what: WaitFor,
    until: Option<Instant>,
}

/// The parts of the current request head, as ranges into a copy of its bytes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub bytes: Vec<u8>,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub path: Option<Range<usize>>,
    pub query: Option<Range<usize>>,
    pub authority: Option<Range<usize>>,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub http11: bool,
    /// The framing the head announced.
    pub framing: Option<Framing>,
}

impl Parsed {
    pub fn get(&self, r: &Range<usize>) -> &[u8] {
        &self.bytes[r.clone()]
    }

    fn load(&mut self, raw: &[u8], head: &head::Head<'_>, framing: Framing) {
        let base = raw.as_ptr() as usize;
        let range = |part: &[u8]| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        self.method = range(head.method);
        self.target = range(head.target);
        self.path = head.parts.path.map(range);
        self.query = head.parts.query.map(range);
        self.authority = head.parts.authority.map(range);
        self.headers.clear();
        if self.headers.capacity() == 0 {
            self.headers = spare::fields(head.headers.len().max(16));
        }
        self.headers
            .extend(head.headers.iter().map(|(n, v)| (range(n), range(v))));
        self.http11 = head.version == Version::Http11;
        self.framing = Some(framing);
        self.bytes.clear();
        if self.bytes.capacity() == 0 {
            self.bytes = spare::bytes(raw.len().max(512));
        }
        self.bytes.extend_from_slice(raw);
    }

    /// Gives the buffers to the next connection, leaving an empty head (no ranges).
    fn recycle(&mut self) {
        let old = std::mem::take(self);
        spare::give_bytes(old.bytes);
        spare::give_fields(old.headers);
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.get(n).eq_ignore_ascii_case(name))
            .map(|(_, v)| self.get(v))
    }
}

/// The state of one connection. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    pub cfg: std::rc::Rc<Config>,
    pub parsed: Parsed,
    phase: Phase,
    waiting: Option<Waiting>,
    resp: Response,
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
    /// it; the request was answered and the connection closed) or sent the response (the
    /// client went away or stalled; the connection was reset): the handler's failure that
    /// raises exactly this message is the client's, not the application's.
    pub client_fault: Option<String>,
    /// SIGTERM arrived: no further request after this one.
    shutdown: bool,
    requests: u64,
    date: DateCache,
    /// The allocation of the last head's fields, for the next one.
    spare_fields: Vec<head::Field<'static>>,
    /// The parser of the head being read (in `Phase::Head`), kept here so that starting a
    /// head resets a few fields instead of moving a new parser into the phase.
    head_parser: HeadParser,
}

thread_local! {
    /// The head fields' allocation of the last connection that ended, for the next one.
    static SPARE_FIELDS: std::cell::Cell<Vec<head::Field<'static>>> =
        const { std::cell::Cell::new(Vec::new()) };
}

fn after(now: Instant, d: Option<Duration>) -> Option<Instant> {
    d.and_then(|d| now.checked_add(d))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Connection {
    pub fn new(cfg: std::rc::Rc<Config>) -> Self {
        let min_chunk = cfg.min_output_chunk;
        Connection {
            cfg,
            parsed: Parsed::default(),
            phase: Phase::Between,
            waiting: None,
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
            date: DateCache::default(),
            spare_fields: SPARE_FIELDS.with(std::cell::Cell::take),
            head_parser: HeadParser::new(),
        }
    }

    /// The connection is over (its requests can only be finished ones): its buffers go to
    /// the next connection (see `spare`).
    pub fn recycle(&mut self) {
        self.parsed.recycle();
        self.resp.recycle();
        // for the next connection (this one may wait for the collector)
        SPARE_FIELDS.with(|s| s.set(std::mem::take(&mut self.spare_fields)));
    }

    /// Whether a request is being served (its head read, the connection not ended).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active)
    }

    /// Whether the connection is between requests (it may carry another one).
    pub fn between_requests(&self) -> bool {
        matches!(
            self.phase,
            Phase::Between | Phase::Idle { .. } | Phase::Head { .. }
        )
    }

    /// Whether nothing more happens on the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The driver found the socket closed: the connection is over.
    pub fn mark_closed(&mut self) {
        self.phase = Phase::Closed;
        self.waiting = None;
    }

    /// The phase, for descriptions.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Between | Phase::Idle { .. } | Phase::Head { .. } => "Idle",
            Phase::Active | Phase::Draining { .. } => "Active",
            Phase::Linger { .. } | Phase::Closed => "Closed",
        }
    }

    /// How many request heads were read on this connection.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// A SIGTERM arrived: the current request (or the one already arriving) is the last.
    pub fn note_sigterm(&mut self) {
        self.shutdown = true;
    }

    /// Whether the request body has been read completely (or there is none).
    pub fn body_done(&self) -> bool {
        matches!(self.body, Body::Done)
    }

    /// Whether the request has a body at all (chunked, or a non-zero Content-Length).
    pub fn has_body(&self) -> bool {
        !self.body_done()
    }

    /// The response of the current request.
    pub fn response(&self) -> &Response {
        &self.resp
    }

    /// Bytes to send, in order.
    pub fn output(&self) -> &[u8] {
        self.resp.output()
    }

    /// The output, taken out to be written (give it back with [`recycle_output`]).
    ///
    /// [`recycle_output`]: Self::recycle_output
    pub fn take_output(&mut self) -> Vec<u8> {
        self.resp.take_output()
    }

    /// Gives the written output's memory back.
    pub fn recycle_output(&mut self, written: Vec<u8>) {
        self.resp.recycle_output(written);
    }

    /// Marks all output as written.
    pub fn clear_output(&mut self) {
        self.resp.clear_output();
    }

    /// Whether writing the response must not wait for the client to read its input: the
    /// input is discarded (monologue) and the driver drains it while it waits to write.
    pub fn drains_while_writing(&self) -> bool {
        self.discard_input
    }
}
