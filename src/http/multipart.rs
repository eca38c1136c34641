//! Streaming `multipart/form-data` decoder (RFC 7578 over RFC 2046 §5.1): `post_params`,
//! `post_metadata` and `stream_post_param(s)` of `moonbridge_http`.
//!
//! Body bytes are fed in chunks of any size; [`Feed::next_event`] then yields
//! [`Event::PartStart`], [`Event::Data`] (at most [`Limits::max_chunk`] bytes, never empty),
//! [`Event::PartEnd`] and finally [`Event::Done`]. Part data is handed out straight from the
//! fed chunk. Between feeds the decoder keeps only what could still be the start of a
//! delimiter (fewer than boundary length + 4 bytes) and the part headers being read (at most
//! [`Limits::max_header_bytes`]); it never buffers part data.
//!
//! Syntax: the body is parsed as if it began with CRLF, so the first `--boundary` may open
//! the body or follow a preamble; every later delimiter is `CRLF--boundary`. A delimiter is
//! followed by optional spaces/tabs (transport padding) and CRLF, or by `--` (the end; the
//! epilogue after it is ignored). Part header lines must end in CRLF (a bare LF is an error),
//! may not be folded, and are limited in number and size. Any violation is an error, which
//! the HTTP layer answers with [`MultipartError::status`] (400, or 415 for a request that is
//! not `multipart/form-data` at all).

mod headers;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use memchr::memmem::Finder;

use crate::http::head::trim_ows;

pub use headers::Part;

/// Why a multipart body (or its `Content-Type`) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipartError {
    /// The media type is not `multipart/form-data`.
    NotMultipart,
    /// The `Content-Type` has no `boundary` parameter (or its parameters are malformed).
    MissingBoundary,
    /// The boundary is empty, longer than 70 bytes, or has characters RFC 2046 forbids.
    InvalidBoundary,
    /// A delimiter is followed by something other than padding and CRLF, or `--`.
    AfterBoundary,
    /// A part header line ends in a bare LF.
    BareLf,
    /// A part header line is malformed (no colon, bad name, folded, CR/NUL in a value,
    /// malformed parameters, duplicate Content-Disposition or Content-Type).
    InvalidHeader,
    /// A part's header section exceeds [`Limits::max_header_bytes`].
    HeadersTooLarge,
    /// A part has more than [`Limits::max_headers`] header lines.
    TooManyHeaders,
    /// A part uses a Content-Transfer-Encoding other than 7bit, 8bit or binary.
    UnsupportedEncoding,
    /// The body ended before the final delimiter.
    Truncated,
}

impl MultipartError {
    /// A short description, fit for an error response body.
    pub fn message(self) -> &'static str {
        use MultipartError::*;
        match self {
            NotMultipart => "Unknown Content-Type of request body",
            MissingBoundary => "No boundary in multipart/form-data Content-Type",
            InvalidBoundary => "Invalid boundary in multipart/form-data Content-Type",
            AfterBoundary => "Error while parsing multipart body (expected CRLF or double minus)",
            BareLf => "Bare LF in multipart/form-data part header",
            InvalidHeader => "Invalid header in multipart/form-data part",
            HeadersTooLarge => "Header section of multipart/form-data part too large",
            TooManyHeaders => "Too many headers in multipart/form-data part",
            UnsupportedEncoding => {
                "Content-transfer-encoding not supported by multipart/form-data parser"
            }
            Truncated => "Premature end of multipart/form-data request body",
        }
    }

    /// The HTTP status this error should be answered with.
    pub fn status(self) -> u16 {
        match self {
            MultipartError::NotMultipart => 415,
            _ => 400,
        }
    }
}

impl fmt::Display for MultipartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MultipartError {}

/// Bounds on what one body may make the decoder do or hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest [`Event::Data`] slice (`maximum_input_chunk_size`); 0 counts as 1.
    pub max_chunk: usize,
    /// Largest header section of one part, CRLFs included.
    pub max_header_bytes: usize,
    /// Most header lines in one part.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk: 16384,
            max_header_bytes: 16384,
            max_headers: 32,
        }
    }
}

/// One step of the decoded body. `Data` borrows the fed chunk (or the decoder's small tail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A part begins; its data follows.
    PartStart(Part),
    /// Some bytes of the current part's data (non-empty, at most `max_chunk`).
    Data(&'a [u8]),
    /// The current part is complete.
    PartEnd,
    /// The final delimiter was read; later bytes (the epilogue) are ignored.
    Done,
}

/// Extracts and checks the boundary of a `multipart/form-data` `Content-Type` value.
pub fn boundary(content_type: &[u8]) -> Result<&[u8], MultipartError> {
    let semicolon = memchr::memchr(b';', content_type).unwrap_or(content_type.len());
    let media = trim_ows(&content_type[..semicolon]);
    if !media.eq_ignore_ascii_case(b"multipart/form-data") {
        return Err(MultipartError::NotMultipart);
    }
    let mut found = None;
    for param in headers::Params::new(&content_type[semicolon..]) {
        let (key, value) = param.map_err(|_| MultipartError::MissingBoundary)?;
        if key.eq_ignore_ascii_case(b"boundary") && found.is_none() {
            found = Some(value);
        }
    }
    let value = found.ok_or(MultipartError::MissingBoundary)?;
    // RFC 2046 bchars: no quote or backslash, so a valid boundary never needed unescaping
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    match value {
        Cow::Borrowed(value)
            if (1..=70).contains(&value.len())
                && value.iter().all(|&b| bchar(b))
                && value.last() != Some(&b' ') =>
        {
            Ok(value)
        }
        _ => Err(MultipartError::InvalidBoundary),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter: bytes are discarded.
    Preamble,
    /// Right after a delimiter.
    AfterDelimiter(After),
    /// Reading a part's header lines into `head`.
    Headers,
    /// Inside a part's data.
    Data,
    /// After the final delimiter: bytes are discarded.
    Epilogue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Start,
    Dash,
    Padding,
    Cr,
}

/// What one step over a window of bytes produced (ranges are relative to the window).
enum Raw {
    PartStart(Part),
    Data(Range<usize>),
    PartEnd,
    Done,
}

/// Where a scan for the delimiter ended.
enum Scan {
    /// A delimiter starts at this offset.
    Found(usize),
    /// This many leading bytes cannot belong to a delimiter.
    Safe(usize),
}

/// The state machine proper; separate from the tail buffer it reads from.
#[derive(Debug)]
struct Machine {
    /// `CRLF--boundary`
    delimiter: Finder<'static>,
    limits: Limits,
    state: State,
    head: Vec<u8>,
    line_start: usize,
    lines: usize,
}

/// The decoder for one request body; see the module documentation.
#[derive(Debug)]
pub struct MultipartDecoder {
    machine: Machine,
    /// Undecided bytes kept between feeds; `tail[tail_pos..]` is unread.
    tail: Vec<u8>,
    tail_pos: usize,
    error: Option<MultipartError>,
}

impl MultipartDecoder {
    /// A decoder for a request with this `Content-Type` value.
    pub fn new(content_type: &[u8], limits: Limits) -> Result<Self, MultipartError> {
        Ok(Self::with_boundary(boundary(content_type)?, limits))
    }

    /// A decoder for an already validated boundary (see [`boundary`]).
    pub fn with_boundary(boundary: &[u8], limits: Limits) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        let limits = Limits {
            max_chunk: limits.max_chunk.max(1),
            ..limits
        };
        MultipartDecoder {
            machine: Machine {
                delimiter: Finder::new(&delimiter).into_owned(),
                limits,
                state: State::Preamble,
                head: Vec::new(),
                line_start: 0,
                lines: 0,
            },
            // the body is read as if it began with CRLF (see the module documentation)
            tail: b"\r\n".to_vec(),
            tail_pos: 0,
            error: None,
        }
    }

    /// Hands the decoder the next chunk of the body. Call [`Feed::next_event`] until it
    /// returns `Ok(None)` (or an error): bytes left unread when the `Feed` is dropped are lost.
    pub fn feed<'d, 'a>(&'d mut self, input: &'a [u8]) -> Feed<'d, 'a> {
        Feed {
            decoder: self,
            input,
            pos: 0,
            from_input: 0,
        }
    }

    /// Ends the body: `Ok` once the final delimiter has been read, otherwise the error that
    /// stopped decoding, or [`MultipartError::Truncated`].
    pub fn finish(&self) -> Result<(), MultipartError> {
        match (self.error, self.machine.state) {
            (Some(e), _) => Err(e),
            (None, State::Epilogue) => Ok(()),
            (None, _) => Err(MultipartError::Truncated),
        }
    }

    /// Whether the final delimiter has been read.
    pub fn is_done(&self) -> bool {
        self.error.is_none() && self.machine.state == State::Epilogue
    }

    /// How many body bytes are held between feeds (part headers being read included).
    pub fn buffered(&self) -> usize {
        self.tail.len() - self.tail_pos + self.machine.head.len()
    }
}

/// One chunk of body being decoded; see [`MultipartDecoder::feed`].
#[derive(Debug)]
pub struct Feed<'d, 'a> {
    decoder: &'d mut MultipartDecoder,
    input: &'a [u8],
    /// Unread input starts here.
    pos: usize,
    /// How many bytes at the end of the tail were copied from `input[..pos]`.
    from_input: usize,
}

impl Feed<'_, '_> {
    /// The next event, or `Ok(None)` when the chunk is used up. After an error every call
    /// returns the same error.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, MultipartError> {
        let d = &mut *self.decoder;
        if let Some(e) = d.error {
            return Err(e);
        }
        loop {
            if d.tail_pos < d.tail.len() {
                let start = d.tail_pos;
                let (used, raw) = d.machine.step(&d.tail[start..]).inspect_err(|&e| {
                    d.error = Some(e);
                })?;
                d.tail_pos += used;
                if let Some(raw) = raw {
                    return Ok(Some(raw.event(&d.tail[start..])));
                }
                if used > 0 {
                    continue;
                }
                // the tail is undecided: fewer than delimiter-length bytes
                let left = d.tail.len() - d.tail_pos;
                if self.pos == self.input.len() {
                    d.tail.drain(..d.tail_pos);
                    d.tail_pos = 0;
                    self.from_input = 0;
                    return Ok(None);
                }
                if left <= self.from_input {
                    // they were all copied from this input: read them from there instead
                    self.pos -= left;
                    d.tail.clear();
                    d.tail_pos = 0;
                    self.from_input = 0;
                    continue;
                }
                // top up with enough input to decide (or to use the input up)
                d.tail.drain(..d.tail_pos);
                d.tail_pos = 0;
                let room = 2 * d.machine.delimiter.needle().len() + 4 - d.tail.len();
                let take = room.min(self.input.len() - self.pos);
                d.tail
                    .extend_from_slice(&self.input[self.pos..self.pos + take]);
                self.pos += take;
                self.from_input += take;
                continue;
            }
            d.tail.clear();
            d.tail_pos = 0;
            self.from_input = 0;
            if self.pos == self.input.len() {
                return Ok(None);
            }
            let start = self.pos;
            let window = &self.input[start..];
            let (used, raw) = d.machine.step(window).inspect_err(|&e| {
                d.error = Some(e);
            })?;
            self.pos += used;
            if let Some(raw) = raw {
                return Ok(Some(raw.event(&self.input[start..])));
            }
            if used == 0 {
                // a possible delimiter start at the very end: keep it for the next feed
                debug_assert!(window.len() < d.machine.delimiter.needle().len());
                d.tail.extend_from_slice(window);
                self.pos = self.input.len();
                return Ok(None);
            }
        }
    }
}

impl Raw {
    fn event(self, window: &[u8]) -> Event<'_> {
        match self {
            Raw::PartStart(part) => Event::PartStart(part),
            Raw::Data(range) => Event::Data(&window[range]),
            Raw::PartEnd => Event::PartEnd,
            Raw::Done => Event::Done,
        }
    }
}

impl Machine {
    /// Reads from the start of a non-empty `window`: how many bytes were used, and maybe an
    /// event. `(0, None)` means the window is a possible delimiter prefix that needs more
    /// bytes; only `Preamble` and `Data` return it, and only for a window shorter than the
    /// delimiter.
    fn step(&mut self, window: &[u8]) -> Result<(usize, Option<Raw>), MultipartError> {
        let delimiter_len = self.delimiter.needle().len();
        match self.state {
            State::Preamble => Ok(match self.scan(window, usize::MAX) {
                Scan::Found(at) => {
                    self.state = State::AfterDelimiter(After::Start);
                    (at + delimiter_len, None)
                }
                Scan::Safe(n) => (n, None),
            }),
            State::Data => Ok(match self.scan(window, self.limits.max_chunk) {
                Scan::Found(0) => {
                    self.state = State::AfterDelimiter(After::Start);
                    (delimiter_len, Some(Raw::PartEnd))
                }
                Scan::Found(n) | Scan::Safe(n) if n > 0 => {
                    let n = n.min(self.limits.max_chunk);
                    (n, Some(Raw::Data(0..n)))
                }
                _ => (0, None),
            }),
            State::AfterDelimiter(after) => self.after_delimiter(after, window),
            State::Headers => self.headers(window),
            State::Epilogue => Ok((window.len(), None)),
        }
    }

    /// Finds the delimiter, looking no further than needed to hand out `limit` bytes, so
    /// emitting a long part in `max_chunk` pieces scans each byte about once.
    fn scan(&self, window: &[u8], limit: usize) -> Scan {
        let needle = self.delimiter.needle();
        let span = window.len().min(limit.saturating_add(needle.len()));
        if let Some(at) = self.delimiter.find(&window[..span]) {
            return Scan::Found(at);
        }
        if span < window.len() {
            // a delimiter starting before `limit` would lie within `span`
            return Scan::Safe(limit);
        }
        // the end may hold the start of a delimiter: stop at the first CR that could begin one
        let from = window.len().saturating_sub(needle.len() - 1);
        let partial = memchr::memchr_iter(b'\r', &window[from..])
            .map(|i| from + i)
            .find(|&i| needle.starts_with(&window[i..]));
        Scan::Safe(partial.unwrap_or(window.len()))
    }

    fn after_delimiter(
        &mut self,
        mut after: After,
        window: &[u8],
    ) -> Result<(usize, Option<Raw>), MultipartError> {
        for (i, &b) in window.iter().enumerate() {
            after = match (after, b) {
                (After::Start, b'-') => After::Dash,
                (After::Start | After::Padding, b' ' | b'\t') => After::Padding,
                (After::Start | After::Padding, b'\r') => After::Cr,
                (After::Dash, b'-') => {
                    self.state = State::Epilogue;
                    return Ok((i + 1, Some(Raw::Done)));
                }
                (After::Cr, b'\n') => {
                    self.state = State::Headers;
                    self.head.clear();
                    self.line_start = 0;
                    self.lines = 0;
                    return Ok((i + 1, None));
                }
                _ => return Err(MultipartError::AfterBoundary),
            };
        }
        self.state = State::AfterDelimiter(after);
        Ok((window.len(), None))
    }

    /// Collects header lines up to the empty line, which yields `PartStart`.
    fn headers(&mut self, window: &[u8]) -> Result<(usize, Option<Raw>), MultipartError> {
        let room = self.limits.max_header_bytes.saturating_sub(self.head.len());
        let newline = memchr::memchr(b'\n', window);
        let take = newline.map_or(window.len(), |i| i + 1);
        if take > room {
            return Err(MultipartError::HeadersTooLarge);
        }
        self.head.extend_from_slice(&window[..take]);
        if newline.is_none() {
            return Ok((take, None));
        }
        let line = &self.head[self.line_start..];
        if line.len() < 2 || line[line.len() - 2] != b'\r' {
            return Err(MultipartError::BareLf);
        }
        if line.len() == 2 {
            let part = headers::parse_part(&self.head[..self.line_start])?;
            self.head.clear();
            self.state = State::Data;
            return Ok((take, Some(Raw::PartStart(part))));
        }
        self.lines += 1;
        if self.lines > self.limits.max_headers {
            return Err(MultipartError::TooManyHeaders);
        }
        self.line_start = self.head.len();
        Ok((take, None))
    }
}
