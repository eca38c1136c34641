//! The response writer: status line, headers and body framing, as bytes in an output buffer.
//! Pure (no I/O): the caller writes what [`Response::output`] holds to the socket and then
//! calls [`Response::clear_output`]. One `Response` serves every request of a connection
//! ([`Response::reset`] keeps its buffers). States only move forward (status -> headers ->
//! body -> finished); misuse is a `ResponseError` that the binding raises as a Lua error.
//!
//! Framing rules (listen.md §7): the app's own Content-Length is used as given (and the body
//! is checked against it); otherwise, if the whole body is known when the response finishes
//! (no flush before), a Content-Length is sent; otherwise the body is chunked for HTTP/1.1,
//! or delimited by closing the connection for HTTP/1.0. HEAD responses, 1xx, 204 and 304
//! carry no body; for 204/304/1xx no framing headers are sent either. An interim 1xx status
//! other than 101 ends with its header section, after which a final status may follow.

use std::fmt::Write as _;

use crate::http::spare;

/// Misuse of the response API by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    StatusAlreadySent,
    NoStatus,
    HeadersFinished,
    Finished,
    InvalidStatus,
    InvalidHeaderName,
    InvalidHeaderValue,
    InvalidContentLength,
    /// The app sent a different number of body bytes than its Content-Length said.
    ContentLengthMismatch,
    /// A body for a status that has none (1xx, 204, 304).
    BodyNotAllowed,
    /// Content-Length or `Connection: close` for an interim (1xx) response.
    InterimHeader,
}

impl ResponseError {
    pub fn message(self) -> &'static str {
        match self {
            ResponseError::StatusAlreadySent => "HTTP status has already been sent",
            ResponseError::NoStatus => "HTTP status has not been sent yet",
            ResponseError::HeadersFinished => "All HTTP headers have already been sent",
            ResponseError::Finished => "Response has already been finished",
            ResponseError::InvalidStatus => {
                "Invalid HTTP status (expected a 3-digit code and a reason, e.g. \"200 OK\")"
            }
            ResponseError::InvalidHeaderName => "Invalid HTTP header name",
            ResponseError::InvalidHeaderValue => "Invalid HTTP header value (CR, LF or NUL)",
            ResponseError::InvalidContentLength => "Invalid Content-Length header value",
            ResponseError::ContentLengthMismatch => {
                "Response body length does not match the Content-Length header"
            }
            ResponseError::BodyNotAllowed => "This HTTP status does not allow a response body",
            ResponseError::InterimHeader => {
                "Content-Length and Connection: close are not allowed in an informational response"
            }
        }
    }
}

/// Where the response is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Nothing sent yet (or only interim 1xx responses).
    Initial,
    /// Status given; headers may follow.
    Headers,
    /// Header section complete (maybe still held back, see `Response`); body may follow.
    Body,
    Finished,
}

/// How the body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Not decided yet: the head is held back while the body is buffered.
    Undecided,
    Length {
        remaining: u64,
    },
    Chunked,
    /// HTTP/1.0 without a length: the end of the body is the end of the connection.
    Close,
    /// No body on the wire (HEAD, 1xx, 204, 304).
    None,
}

/// Per-response settings from the request and the module options.
#[derive(Clone, Copy, Debug)]
pub struct ResponseConfig {
    /// The request was HTTP/1.1 (chunked responses are possible).
    pub http11: bool,
    /// The request method was HEAD.
    pub head: bool,
    /// The connection closes after this response (client or app asked, or an error).
    pub close: bool,
    /// Bodies shorter than this are gathered before a chunk is written.
    pub min_chunk: usize,
}

/// Bodies up to this size are held back in the hope of sending a Content-Length.
const HOLD_BACK: usize = 16 * 1024;

/// An HTTP/1.x response being written.
#[derive(Debug)]
pub struct Response {
    cfg: ResponseConfig,
    phase: Phase,
    status: u16,
    /// The head being built (status line and headers), held until the framing is known.
    head: Vec<u8>,
    head_sent: bool,
    app_length: Option<u64>,
    app_connection_close: bool,
    /// The app sent a `Connection` header without `close` (e.g. `Upgrade`).
    app_connection_header: bool,
    /// Where our `Date` line is in `head` (until the app sends its own).
    date_line: Option<std::ops::Range<usize>>,
    framing: Framing,
    /// Body bytes not yet framed (chunked: below `min_chunk`; undecided: everything).
    body: Vec<u8>,
    /// Bytes ready for the socket.
    out: Vec<u8>,
}

fn is_token_byte(b: u8) -> bool {
    crate::http::head::TOKEN[b as usize]
}

/// The output buffer's first size: a small response fits, and it stays below glibc's
/// large-chunk size (1024), whose allocation consolidates every small free chunk (Lua frees
/// many), a measurable cost per connection.
const OUT_CAPACITY: usize = 640;

impl Response {
    pub fn new(cfg: ResponseConfig) -> Self {
        Response {
            cfg,
            phase: Phase::Initial,
            status: 0,
            head: spare::bytes(256),
            head_sent: false,
            app_length: None,
            app_connection_close: false,
            app_connection_header: false,
            date_line: None,
            framing: Framing::Undecided,
            // (the smallest spare: the last connection's body buffer, usually)
            body: spare::bytes(0),
            out: spare::bytes(OUT_CAPACITY),
        }
    }

    /// Gives the buffers to the next connection (see `spare`); the response keeps empty
    /// ones, so anything done with it afterwards still works.
    pub fn recycle(&mut self) {
        spare::give_bytes(std::mem::take(&mut self.head));
        spare::give_bytes(std::mem::take(&mut self.body));
        spare::give_bytes(std::mem::take(&mut self.out));
    }

    /// Starts the next response of the connection, keeping the buffers' memory. Output not
    /// yet taken is kept.
    pub fn reset(&mut self, cfg: ResponseConfig) {
        self.cfg = cfg;
        self.phase = Phase::Initial;
        self.status = 0;
        self.head.clear();
        self.head_sent = false;
        self.app_length = None;
        self.app_connection_close = false;
        self.app_connection_header = false;
        self.date_line = None;
        self.framing = Framing::Undecided;
        self.body.clear();
        if self.body.capacity() > 1 << 20 {
            self.body = Vec::new();
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The status code sent (0 before `status`).
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// Whether the final header section was produced (after that, an error can only reset).
    pub fn started(&self) -> bool {
        self.head_sent
    }

    /// The connection must close after this response.
    pub fn closes_connection(&self) -> bool {
        self.cfg.close
            || self.app_connection_close
            || self.framing == Framing::Close
            || self.status == 101
    }

    /// `close_after_finish()`: asks for `Connection: close` (before the header section is
    /// complete).
    pub fn set_close(&mut self) -> Result<(), ResponseError> {
        if self.phase >= Phase::Body {
            return Err(ResponseError::HeadersFinished);
        }
        self.cfg.close = true;
        Ok(())
    }

    /// The server decided to close after this response: announced if the head is still
    /// held back. Returns whether it will be announced.
    pub fn force_close(&mut self) -> bool {
        self.cfg.close = true;
        !self.head_sent
    }

    fn no_body_status(&self) -> bool {
        self.status < 200 || self.status == 204 || self.status == 304
    }

    /// A 1xx status other than 101 was given (0: none yet).
    fn interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// `send_status("200 OK")`. `prelude` holds header lines (each ending in CRLF) sent right
    /// after the status line: the `Date` (first, if any) and the static headers. A `Date`
    /// line there is dropped if the application sends its own.
    pub fn status(&mut self, status: &[u8], prelude: &[&[u8]]) -> Result<(), ResponseError> {
        match self.phase {
            Phase::Initial => {}
            Phase::Finished => return Err(ResponseError::Finished),
            _ => return Err(ResponseError::StatusAlreadySent),
        }
        let code = parse_status(status).ok_or(ResponseError::InvalidStatus)?;
        self.status = code;
        self.head.extend_from_slice(b"HTTP/1.1 ");
        self.head.extend_from_slice(status);
        self.head.extend_from_slice(b"\r\n");
        self.date_line = None;
        for (i, lines) in prelude.iter().enumerate() {
            if i == 0 && lines.starts_with(b"Date: ") {
                self.date_line = Some(self.head.len()..self.head.len() + lines.len());
            }
            self.head.extend_from_slice(lines);
        }
        self.phase = Phase::Headers;
        Ok(())
    }

    /// `send_header(key, value)`.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Result<(), ResponseError> {
        match self.phase {
            Phase::Initial => return Err(ResponseError::NoStatus),
            Phase::Headers => {}
            Phase::Body => return Err(ResponseError::HeadersFinished),
            Phase::Finished => return Err(ResponseError::Finished),
        }
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(ResponseError::InvalidHeaderName);
        }
        if crate::bytes::find_below(value, 0x20, *b"\r\n\0").is_some() {
            return Err(ResponseError::InvalidHeaderValue);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.interim() {
                return Err(ResponseError::InterimHeader);
            }
            let trimmed = trim(value);
            if trimmed.is_empty() || !trimmed.iter().all(u8::is_ascii_digit) || trimmed.len() > 19 {
                return Err(ResponseError::InvalidContentLength);
            }
            let n: u64 = std::str::from_utf8(trimmed)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ResponseError::InvalidContentLength)?;
            if self.app_length.is_some_and(|m| m != n) {
                return Err(ResponseError::InvalidContentLength);
            }
            self.app_length = Some(n);
            return Ok(()); // written with the framing decision
        }
        if name.eq_ignore_ascii_case(b"date") {
            // Date is a single value: the application's replaces ours
            if let Some(ours) = self.date_line.take() {
                self.head.drain(ours);
            }
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // We frame the body ourselves; an app's own chunked coding would be doubled.
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"connection") {
            if trim(value)
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
            {
                if self.interim() {
                    return Err(ResponseError::InterimHeader);
                }
                self.app_connection_close = true;
                return Ok(()); // written with the framing decision, once
            }
            // other options (`Upgrade`, `keep-alive`) are the app's to send
            self.app_connection_header = true;
        }
        self.head.reserve(name.len() + value.len() + 4);
        self.head.extend_from_slice(name);
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value);
        self.head.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// `finish_headers()`: no more headers. The head may still be held back until the
    /// framing is decided (first flush, a large body, or finish). An interim response is
    /// complete here, and the next status may follow.
    pub fn finish_headers(&mut self) -> Result<(), ResponseError> {
        match self.phase {
            Phase::Initial => return Err(ResponseError::NoStatus),
            Phase::Headers => self.phase = Phase::Body,
            Phase::Body => {}
            Phase::Finished => return Err(ResponseError::Finished),
        }
        if self.interim() {
            self.head.extend_from_slice(b"\r\n");
            self.out.append(&mut self.head);
            self.phase = Phase::Initial;
            self.status = 0;
        } else if self.no_body_status() || (self.cfg.head && self.app_length.is_some()) {
            self.decide(None);
        } else if let Some(n) = self.app_length {
            self.framing = Framing::Length { remaining: n };
            self.decide(None);
        }
        Ok(())
    }

    /// Moves to the body phase (completing the header section) before body bytes.
    fn enter_body(&mut self) -> Result<(), ResponseError> {
        if self.phase < Phase::Body {
            if self.interim() {
                return Err(ResponseError::BodyNotAllowed);
            }
            self.finish_headers()?;
        }
        if self.phase == Phase::Finished {
            return Err(ResponseError::Finished);
        }
        Ok(())
    }

    /// `send_data(...)`: body bytes (ignored for HEAD).
    pub fn data(&mut self, bytes: &[u8]) -> Result<(), ResponseError> {
        self.enter_body()?;
        if bytes.is_empty() {
            return Ok(());
        }
        if self.no_body_status() {
            return Err(ResponseError::BodyNotAllowed);
        }
        match self.framing {
            // HEAD (or a body-less status, refused above): nothing goes on the wire
            Framing::None => Ok(()),
            Framing::Undecided => {
                self.body.extend_from_slice(bytes);
                if self.body.len() >= self.cfg.min_chunk.max(HOLD_BACK) {
                    self.decide(Some(false));
                }
                Ok(())
            }
            Framing::Length { remaining } => {
                if bytes.len() as u64 > remaining {
                    return Err(ResponseError::ContentLengthMismatch);
                }
                self.framing = Framing::Length {
                    remaining: remaining - bytes.len() as u64,
                };
                if !self.cfg.head {
                    self.out.extend_from_slice(bytes);
                }
                Ok(())
            }
            Framing::Chunked => {
                self.body.extend_from_slice(bytes);
                if self.body.len() >= self.cfg.min_chunk {
                    self.emit_chunk();
                }
                Ok(())
            }
            Framing::Close => {
                self.out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// A large piece of body that the caller sends itself, without copying it into the
    /// output: frames it (deciding the framing if needed) and returns the bytes the caller
    /// must send after [`output`](Self::output) and the piece itself (`"\r\n"` after a
    /// chunk, else nothing). `Ok(None)`: this response takes no body bytes on the wire (HEAD,
    /// or a status without body, which [`data`](Self::data) reports): use `data` instead.
    pub fn data_direct(&mut self, len: usize) -> Result<Option<&'static [u8]>, ResponseError> {
        self.enter_body()?;
        if len == 0 || self.cfg.head || self.no_body_status() {
            return Ok(None);
        }
        if self.framing == Framing::Undecided {
            self.decide(Some(false));
        }
        match self.framing {
            Framing::Length { remaining } => {
                if len as u64 > remaining {
                    return Err(ResponseError::ContentLengthMismatch);
                }
                self.framing = Framing::Length {
                    remaining: remaining - len as u64,
                };
                Ok(Some(b""))
            }
            Framing::Chunked => {
                self.emit_chunk();
                push_number(&mut self.out, len as u64, 16);
                self.out.extend_from_slice(b"\r\n");
                Ok(Some(b"\r\n"))
            }
            Framing::Close => Ok(Some(b"")),
            Framing::None | Framing::Undecided => Ok(None),
        }
    }

    /// `flush()`: everything so far goes out (a pending chunk is written even if small).
    pub fn flush(&mut self) -> Result<(), ResponseError> {
        match self.phase {
            Phase::Finished | Phase::Initial => return Ok(()),
            Phase::Headers if self.interim() => return Ok(()),
            Phase::Headers => self.finish_headers()?,
            Phase::Body => {}
        }
        if self.framing == Framing::Undecided {
            self.decide(Some(false));
        }
        if self.framing == Framing::Chunked {
            self.emit_chunk();
        }
        Ok(())
    }

    /// `finish()`: completes the response (idempotent).
    pub fn finish(&mut self) -> Result<(), ResponseError> {
        match self.phase {
            Phase::Finished => return Ok(()),
            Phase::Initial => return Err(ResponseError::NoStatus),
            Phase::Headers if self.interim() => return Err(ResponseError::NoStatus),
            Phase::Headers => self.finish_headers()?,
            Phase::Body => {}
        }
        if self.framing == Framing::Undecided {
            self.decide(Some(true));
        }
        match self.framing {
            Framing::Length { remaining } if remaining > 0 && !self.cfg.head => {
                return Err(ResponseError::ContentLengthMismatch);
            }
            Framing::Chunked => {
                self.emit_chunk();
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
            _ => {}
        }
        self.phase = Phase::Finished;
        Ok(())
    }

    /// Decides the framing and writes the head. `whole` = Some(true): the buffered body is
    /// all of it; Some(false): more may come; None: no body buffered yet.
    fn decide(&mut self, whole: Option<bool>) {
        if self.head_sent {
            return;
        }
        if self.no_body_status() {
            self.framing = Framing::None;
        } else if let Some(n) = self.app_length {
            self.framing = if self.cfg.head {
                Framing::None
            } else {
                Framing::Length { remaining: n }
            };
            self.head_line_length(n);
        } else if whole == Some(true) {
            let n = self.body.len() as u64;
            self.head_line_length(n);
            self.framing = if self.cfg.head {
                Framing::None
            } else {
                Framing::Length { remaining: n }
            };
        } else if self.cfg.head {
            // HEAD with a length not known yet: the header fields a GET gets (RFC 9110
            // §9.3.2), and no body. RFC 9112 §6.1 allows `Transfer-Encoding` in a HEAD
            // response for the coding a GET would have; an HTTP/1.0 GET would end with the
            // connection, so the HEAD response closes it too.
            self.framing = Framing::None;
            if self.cfg.http11 {
                self.head
                    .extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            } else {
                self.cfg.close = true;
            }
        } else if self.cfg.http11 {
            self.head
                .extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            self.framing = Framing::Chunked;
        } else {
            self.framing = Framing::Close;
        }
        if self.status == 101 {
            // the app's `Connection: Upgrade` says it all
        } else if self.closes_connection() {
            self.head.extend_from_slice(b"Connection: close\r\n");
        } else if !self.cfg.http11 && !self.app_connection_header {
            self.head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.head.extend_from_slice(b"\r\n");
        self.out.append(&mut self.head);
        self.head_sent = true;
        // the buffered body, framed
        match self.framing {
            Framing::Length { remaining } => {
                let n = self.body.len() as u64;
                self.out.append(&mut self.body);
                self.framing = Framing::Length {
                    remaining: remaining.saturating_sub(n),
                };
            }
            Framing::Chunked => {
                if self.body.len() >= self.cfg.min_chunk || whole.is_some() {
                    self.emit_chunk();
                }
            }
            Framing::Close => self.out.append(&mut self.body),
            Framing::None | Framing::Undecided => self.body.clear(),
        }
    }

    fn head_line_length(&mut self, n: u64) {
        if !self.no_body_status() {
            self.head.extend_from_slice(b"Content-Length: ");
            push_number(&mut self.head, n, 10);
            self.head.extend_from_slice(b"\r\n");
        }
    }

    fn emit_chunk(&mut self) {
        if self.body.is_empty() {
            return;
        }
        push_number(&mut self.out, self.body.len() as u64, 16);
        self.out.extend_from_slice(b"\r\n");
        self.out.append(&mut self.body);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Bytes ready for the socket.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Appends bytes that are not part of this response (`100 Continue`, a refusal) to the
    /// output.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Marks the output as written.
    pub fn clear_output(&mut self) {
        self.out.clear();
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::with_capacity(OUT_CAPACITY);
        }
    }

    /// Bytes ready for the socket; the caller writes them out.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Gives a vector from [`take_output`](Self::take_output) back once written, so its
    /// memory serves the next response.
    pub fn recycle_output(&mut self, mut written: Vec<u8>) {
        if self.out.is_empty() && written.capacity() <= 1 << 20 {
            written.clear();
            self.out = written;
        }
    }
}

/// Appends `n` in base 10 or 16 (upper-case digits): on every response, where `write!`
/// costs several times as much.
fn push_number(out: &mut Vec<u8>, mut n: u64, base: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789ABCDEF"[(n % base) as usize];
        n /= base;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `write!` into a byte vector.
struct DisplayBuf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for DisplayBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// "200 OK" -> 200. Three digits (100-999), then a space and a reason without CR/LF/NUL
/// (the reason may be empty: "204 ").
pub fn parse_status(s: &[u8]) -> Option<u16> {
    if s.len() < 3 || !s[..3].iter().all(u8::is_ascii_digit) || s[0] == b'0' {
        return None;
    }
    if s.len() > 3 && s[3] != b' ' {
        return None;
    }
    if s.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return None;
    }
    Some((s[0] - b'0') as u16 * 100 + (s[1] - b'0') as u16 * 10 + (s[2] - b'0') as u16)
}

/// A complete error response that closes the connection: `HTTP/1.1 <code> <reason>`,
/// `Content-Type: text/plain`, `Connection: close`, and the body `<code> <reason>` followed
/// by the detail, if any. `prelude` as for [`Response::status`].
pub fn error_response(code: u16, reason: &str, detail: &str, prelude: &[&[u8]]) -> Vec<u8> {
    let mut body = format!("{code} {reason}\n");
    if !detail.is_empty() {
        let _ = write!(body, "\n{detail}\n");
    }
    let mut out = Vec::with_capacity(160 + body.len());
    let _ = write!(DisplayBuf(&mut out), "HTTP/1.1 {code} {reason}\r\n");
    for lines in prelude {
        out.extend_from_slice(lines);
    }
    let _ = write!(
        DisplayBuf(&mut out),
        "Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    out
}

#[cfg(test)]
mod tests;
