//! The request head (request line and header section), parsed strictly after RFC 9112 and
//! without copying: a [`Head`] borrows every slice from the input buffer.
//!
//! A fresh parser first tries the common head in one pass (`parse_simple`: a plain
//! origin-form target, token-named fields, all there and within the limits). Anything else
//! is parsed in two steps, which decide every error. [`HeadParser`] scans the growing
//! input for the empty line that ends the head, remembering how far it got, so a head that
//! arrives byte by byte costs O(bytes) in total. While scanning it already enforces
//! everything that can be decided on a prefix: bare LF, the head size limit (431), the
//! header count (431) and the length of the request-target (414). Each of these errors is
//! reported at the byte position where the prefix first becomes invalid, so feeding the
//! same bytes whole or in pieces gives the same result. Once the head is complete, its
//! lines are parsed once.
//!
//! Strictness, with no leniency options: lines end with CRLF only; a CR anywhere else is an
//! error; exactly one SP separates the three parts of the request line; a line starting with
//! whitespace (obs-fold) is an error; field names are tokens directly followed by `:`; field
//! values may not contain control characters other than HTAB (bytes 0x80-0xFF are allowed).
//! The request-target may hold only the characters of RFC 3986 (see [`TARGET_CLASS`]), with
//! every `%` starting a `%HH` escape and `[` `]` only in an absolute-form authority.
//! Empty lines before the request line are skipped (RFC 9112 §2.2).

use crate::bytes::{find_below, find_byte};

use super::error::HttpError;

/// Size limits for a request head. `Default` gives 1 MiB, 64 KiB and 256 headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes the head may have, from the first byte (leading empty lines included)
    /// through the empty line that ends it. More → [`HttpError::HeadTooLarge`] (431).
    pub head_size: usize,
    /// Longest request-target. Longer → [`HttpError::TargetTooLong`] (414).
    pub target_len: usize,
    /// Most header fields. More → [`HttpError::TooManyHeaders`] (431).
    pub headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_size: 1 << 20,
            target_len: 64 << 10,
            headers: 256,
        }
    }
}

/// The result of a parse that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The value, and how many bytes of the input it used.
    Complete(T, usize),
    /// The input ends before the value does: call again when more bytes have arrived.
    Partial,
}

/// The two protocol versions served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

/// Which of the request-target forms of RFC 9112 §3.2 a target has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://host/path?query` (scheme `http` or `https`)
    Absolute,
    /// `*`, only with `OPTIONS`
    Asterisk,
}

/// A request-target split into its parts, none of them percent-decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The form the target was sent in.
    pub form: TargetForm,
    /// The path without its leading `/` (`""` for `/`); `None` for `*`.
    pub path: Option<&'a [u8]>,
    /// The query with its leading `?`, or `""` if there is none; `None` for `*`.
    pub query: Option<&'a [u8]>,
    /// The authority (`host[:port]`) of an absolute-form target.
    pub authority: Option<&'a [u8]>,
}

/// A parsed request head, borrowing from the input buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method, a token, case-sensitive as sent.
    pub method: &'a [u8],
    /// The request-target exactly as sent.
    pub target: &'a [u8],
    /// The target split into path and query.
    pub parts: Target<'a>,
    /// The protocol version.
    pub version: Version,
    /// Header fields in order: the name as sent, and the value without surrounding
    /// whitespace.
    pub headers: Vec<Field<'a>>,
}

/// A header field: its name and its value.
pub type Field<'a> = (&'a [u8], &'a [u8]);

/// `fields` emptied, as a vector that may borrow from any buffer: its allocation serves
/// the next head (a malloc and a free less per request). Collecting a vector's own
/// iterator into an element type of the same layout reuses its allocation in place.
pub fn reuse_fields<'b>(mut fields: Vec<Field<'_>>) -> Vec<Field<'b>> {
    fields.clear();
    fields
        .into_iter()
        .map(|_| unreachable!("emptied"))
        .collect()
}

impl<'a> Head<'a> {
    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header called `name` (compared case-insensitively), in order.
    pub fn headers_named<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'a [u8]> + 'h {
        let name = name.as_bytes();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

/// Parses a head from the start of `buf`, scanning all of it. For input that grows over
/// several calls, keep a [`HeadParser`] instead, which resumes where it stopped.
pub fn parse_head<'a>(buf: &'a [u8], limits: &Limits) -> Result<Status<Head<'a>>, HttpError> {
    HeadParser::new().parse(buf, limits)
}

/// Incremental head parser: call [`parse`](Self::parse) with the whole buffered input each
/// time more bytes arrive (the buffer must only grow at its end). Use a new parser (or
/// `Default`) for the next request.
#[derive(Clone, Debug, Default)]
pub struct HeadParser {
    /// Where the request line starts, once the leading empty lines are skipped.
    start: Option<usize>,
    /// Where scanning resumes (the start of the first line not yet complete).
    pos: usize,
    /// Complete lines seen (request line included).
    lines: usize,
    /// The request line's first SP, and how far the target has been measured.
    sp1: Option<usize>,
    target_pos: usize,
    target_done: bool,
    /// Where the first lines end (their LF), so that parsing the complete head need not
    /// search for them again; lines beyond these are found again.
    ends: [u32; KNOWN_ENDS],
}

/// Line ends a [`HeadParser`] remembers: a request line and 23 fields cover most requests
/// (the parser lives in its connection, whose userdata must stay a small block).
const KNOWN_ENDS: usize = 24;

impl HeadParser {
    /// A parser for a new request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this parser one for a new request, as [`new`](Self::new) would, without
    /// clearing the line ends (only those of lines seen since are read).
    pub fn restart(&mut self) {
        // (every field named: a new one fails to compile until it is reset here too)
        let HeadParser {
            start,
            pos,
            lines,
            sp1,
            target_pos,
            target_done,
            ends: _,
        } = self;
        (*start, *pos, *lines, *sp1) = (None, 0, 0, None);
        (*target_pos, *target_done) = (0, false);
    }

    /// Parses the head at the start of `buf`: `Complete(head, consumed)` once it is all
    /// there, `Partial` while it may still become valid, or the error.
    pub fn parse<'a>(
        &mut self,
        buf: &'a [u8],
        limits: &Limits,
    ) -> Result<Status<Head<'a>>, HttpError> {
        self.parse_reusing(buf, limits, &mut Vec::new())
    }

    /// [`parse`](Self::parse) that puts the header fields into the allocation of `spare`
    /// (taken once a head is complete, left while it is partial), so that a connection
    /// reuses one allocation for every request (see [`reuse_fields`]).
    pub fn parse_reusing<'a>(
        &mut self,
        buf: &'a [u8],
        limits: &Limits,
        spare: &mut Vec<Field<'_>>,
    ) -> Result<Status<Head<'a>>, HttpError> {
        if self.pos == 0 && self.start.is_none() {
            // nothing scanned yet: the common head may be all there
            match parse_simple(buf, limits, reuse_fields(std::mem::take(spare))) {
                Ok((head, end)) => return Ok(Status::Complete(head, end)),
                Err(fields) => *spare = reuse_fields(fields),
            }
        }
        self.parse_in_two(buf, limits, spare)
    }

    /// [`parse_reusing`](Self::parse_reusing) by the scan and the parse of the complete head.
    fn parse_in_two<'a>(
        &mut self,
        buf: &'a [u8],
        limits: &Limits,
        spare: &mut Vec<Field<'_>>,
    ) -> Result<Status<Head<'a>>, HttpError> {
        match self.scan(buf, limits)? {
            Some(end) => {
                let start = self.start.unwrap_or(0);
                let fields = self.lines.saturating_sub(1);
                let known = &self.ends[..self.lines.min(KNOWN_ENDS)];
                // the request line's second SP, when the scan found it
                let sp = match (self.sp1, self.target_done) {
                    (Some(sp1), true) if buf.get(self.target_pos) == Some(&b' ') => {
                        Some((sp1 - start, self.target_pos - start))
                    }
                    _ => None,
                };
                let lines = Lines { known, start, sp };
                let headers = reuse_fields(std::mem::take(spare));
                let head = parse_complete(&buf[start..end], fields, lines, limits, headers)?;
                Ok(Status::Complete(head, end))
            }
            None => Ok(Status::Partial),
        }
    }

    /// Finds the end of the head, checking the limits and line endings on the way. Only
    /// `buf[..head_size]` is looked at: a head that does not end there is too large.
    fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, HttpError> {
        let region = &buf[..buf.len().min(limits.head_size)];
        if self.pos > region.len() {
            // Not the buffer we scanned before: start over rather than trust stale offsets.
            *self = HeadParser::default();
        }
        if self.start.is_none() {
            match skip_empty_lines(region, self.pos)? {
                Ok(start) => (self.start, self.pos, self.target_pos) = (Some(start), start, start),
                Err(resume) => {
                    self.pos = resume;
                    return too_large(buf, limits);
                }
            }
        }
        loop {
            let lf = find_byte(b'\n', &region[self.pos..]).map(|k| self.pos + k);
            if self.lines == 0 {
                self.measure_target(&region[..lf.unwrap_or(region.len())], limits)?;
            }
            let Some(lf) = lf else { break };
            if lf == 0 || region[lf - 1] != b'\r' {
                return Err(HttpError::BareLf);
            }
            if lf >= 2 && region[lf - 2] == b'\n' {
                return Ok(Some(lf + 1));
            }
            if let Some(slot) = self.ends.get_mut(self.lines) {
                *slot = lf as u32;
            }
            self.lines += 1;
            if self.lines > limits.headers.saturating_add(1) {
                return Err(HttpError::TooManyHeaders);
            }
            self.pos = lf + 1;
        }
        self.pos = region.len();
        too_large(buf, limits)
    }

    /// Checks the request-target length on the part of the request line seen so far.
    fn measure_target(&mut self, line: &[u8], limits: &Limits) -> Result<(), HttpError> {
        if self.target_done {
            return Ok(());
        }
        let sp1 = match self.sp1 {
            Some(sp1) => sp1,
            None => match find_byte(b' ', &line[self.target_pos..]) {
                Some(k) => {
                    let sp1 = self.target_pos + k;
                    (self.sp1, self.target_pos) = (Some(sp1), sp1 + 1);
                    sp1
                }
                None => {
                    self.target_pos = line.len();
                    return Ok(());
                }
            },
        };
        let end = match find_below(&line[self.target_pos..], 0x21, *b" \r\n") {
            Some(k) => {
                self.target_done = true;
                self.target_pos + k
            }
            None => line.len(),
        };
        self.target_pos = end;
        if end - (sp1 + 1) > limits.target_len {
            return Err(HttpError::TargetTooLong);
        }
        Ok(())
    }
}

/// The common head in one pass over its bytes: a token method, an origin-form target of
/// plain characters (no `%`, `[` or `]`), `HTTP/1.1` or `HTTP/1.0`, fields of a token name,
/// `:` and a value of field-value bytes, all within the limits and complete in `buf`.
/// Anything else gives the fields back (`Err`), and the scan and the parse of the whole
/// head decide: this path only accepts what they accept, with the same result (a property
/// test below and the whole-versus-bytewise ones compare the two), and costs about half
/// of them on a small head.
fn parse_simple<'a>(
    buf: &'a [u8],
    limits: &Limits,
    mut headers: Vec<Field<'a>>,
) -> Result<(Head<'a>, usize), Vec<Field<'a>>> {
    let b = &buf[..buf.len().min(limits.head_size)];
    let token = |c: u8| TOKEN[c as usize];
    let sp1 = run_end(b, 0, token);
    if sp1 == 0 || b.get(sp1) != Some(&b' ') || b.get(sp1 + 1) != Some(&b'/') {
        return Err(headers);
    }
    let method = &b[..sp1];
    if method == b"CONNECT" {
        return Err(headers);
    }
    let path_start = sp1 + 2;
    let sp2 = run_end(b, path_start, |c| {
        TARGET_CLASS[c as usize] == PLAIN && c != b'[' && c != b']'
    });
    if b.get(sp2) != Some(&b' ') || sp2 - (sp1 + 1) > limits.target_len {
        return Err(headers);
    }
    let version = match b.get(sp2 + 1..sp2 + 11) {
        Some(b"HTTP/1.1\r\n") => Version::Http11,
        Some(b"HTTP/1.0\r\n") => Version::Http10,
        _ => return Err(headers),
    };
    let mut pos = sp2 + 11;
    loop {
        match b.get(pos..pos + 2) {
            Some(b"\r\n") => break,
            Some(_) if headers.len() < limits.headers => {}
            _ => return Err(headers),
        }
        let colon = run_end(b, pos, token);
        if colon == pos || b.get(colon) != Some(&b':') {
            return Err(headers);
        }
        let value_end = colon + 1 + field_value_len(&b[colon + 1..]);
        if b.get(value_end..value_end + 2) != Some(b"\r\n") {
            return Err(headers);
        }
        headers.push((&b[pos..colon], trim_ows(&b[colon + 1..value_end])));
        pos = value_end + 2;
    }
    let q = run_end(&b[..sp2], path_start, |c| c != b'?');
    let head = Head {
        method,
        target: &b[sp1 + 1..sp2],
        parts: Target {
            form: TargetForm::Origin,
            path: Some(&b[path_start..q]),
            query: Some(&b[q..sp2]),
            authority: None,
        },
        version,
        headers,
    };
    Ok((head, pos + 2))
}

/// Where the run of bytes from `i` (at most `b.len()`) that `ok` accepts ends.
#[inline]
fn run_end(b: &[u8], i: usize, ok: impl Fn(u8) -> bool) -> usize {
    i + b[i..].iter().position(|&c| !ok(c)).unwrap_or(b.len() - i)
}

/// How many bytes at the start of `bytes` are field-value bytes ([`FIELD_VALUE`]).
fn field_value_len(bytes: &[u8]) -> usize {
    in_class_len(bytes, &FIELD_VALUE, 0x20)
}

/// Skips CRLF pairs from `pos`: `Ok(start of request line)`, or `Err(resume point)`.
fn skip_empty_lines(buf: &[u8], mut pos: usize) -> Result<Result<usize, usize>, HttpError> {
    loop {
        match buf.get(pos) {
            None => return Ok(Err(pos)),
            Some(b'\n') => return Err(HttpError::BareLf),
            Some(b'\r') => match buf.get(pos + 1) {
                None => return Ok(Err(pos)),
                Some(b'\n') => pos += 2,
                Some(_) => return Err(HttpError::BareCr),
            },
            Some(_) => return Ok(Ok(pos)),
        }
    }
}

fn too_large<T>(buf: &[u8], limits: &Limits) -> Result<Option<T>, HttpError> {
    if buf.len() > limits.head_size {
        return Err(HttpError::HeadTooLarge);
    }
    Ok(None)
}

/// What the scan learnt of a complete head's lines: where the first ones end (absolute
/// offsets of their LF; `start` is where `buf` of [`parse_complete`] begins), and the
/// request line's two SPs (relative to `start`) when it found both.
struct Lines<'p> {
    known: &'p [u32],
    start: usize,
    sp: Option<(usize, usize)>,
}

/// Parses a complete head: `buf` runs from the request line through the final CRLF CRLF,
/// and the scan has already checked its line endings and limits, and counted its `fields`.
fn parse_complete<'a>(
    buf: &'a [u8],
    fields: usize,
    scanned: Lines<'_>,
    limits: &Limits,
    mut headers: Vec<Field<'a>>,
) -> Result<Head<'a>, HttpError> {
    // Every line up to the final empty one ends with CRLF (the scan checked it).
    let body = &buf[..buf.len().saturating_sub(2)];
    let mut known = scanned.known.iter();
    let mut pos = 0;
    let mut lines = std::iter::from_fn(move || {
        let rest = body.get(pos..)?;
        let lf = match known.next() {
            Some(&end) => end as usize - scanned.start - pos,
            None => find_byte(b'\n', rest)?,
        };
        let line = &rest[..lf.saturating_sub(1)];
        pos += lf + 1;
        Some(line)
    });
    let line = lines.next().ok_or(HttpError::RequestLine)?;
    // A CR in a line always fails its checks; which error it is is decided then.
    let (method, target, version) =
        parse_request_line(line, scanned.sp, limits).map_err(|e| bare_cr_first(line, e))?;
    let parts = split_target(method, target)?;
    headers.reserve(fields);
    for line in lines {
        headers.push(parse_field_line(line)?);
    }
    Ok(Head {
        method,
        target,
        parts,
        version,
        headers,
    })
}

/// The error for a line that failed with `e`: a CR in it comes first.
fn bare_cr_first(line: &[u8], e: HttpError) -> HttpError {
    if find_byte(b'\r', line).is_some() {
        HttpError::BareCr
    } else {
        e
    }
}

/// Splits `method SP target SP version`, checking each part.
/// `sp`: both SPs, when the scan found them already.
fn parse_request_line<'a>(
    line: &'a [u8],
    sp: Option<(usize, usize)>,
    limits: &Limits,
) -> Result<(&'a [u8], &'a [u8], Version), HttpError> {
    let (sp1, sp2) = match sp {
        Some((a, b)) if b < line.len() => (a, Some(b - a - 1)),
        _ => {
            let sp1 = find_byte(b' ', line).ok_or(HttpError::RequestLine)?;
            (sp1, find_byte(b' ', &line[sp1 + 1..]))
        }
    };
    let (method, rest) = (&line[..sp1], &line[sp1 + 1..]);
    let target = &rest[..sp2.unwrap_or(rest.len())];
    if target.len() > limits.target_len {
        return Err(HttpError::TargetTooLong);
    }
    let sp2 = sp2.ok_or(HttpError::RequestLine)?;
    if method.is_empty() || target.is_empty() {
        return Err(HttpError::RequestLine);
    }
    if !method.iter().all(|&b| TOKEN[b as usize]) {
        return Err(HttpError::Method);
    }
    if !valid_target_bytes(target) {
        return Err(HttpError::Target);
    }
    let version = match &rest[sp2 + 1..] {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            return Err(HttpError::VersionNotSupported)
        }
        _ => return Err(HttpError::VersionSyntax),
    };
    Ok((method, target, version))
}

/// Splits a request-target into path and query (RFC 9112 §3.2). `*` is accepted only for
/// `OPTIONS`. `CONNECT` is refused with 501 whatever its target, since this server is not
/// a proxy, so the authority-form is never accepted. An absolute-form target must use the
/// `http` or `https` scheme and have a non-empty authority without userinfo.
pub fn split_target<'a>(method: &[u8], target: &'a [u8]) -> Result<Target<'a>, HttpError> {
    if method == b"CONNECT" {
        return Err(HttpError::ConnectUnsupported);
    }
    let (form, authority, rest) = match target {
        b"*" if method == b"OPTIONS" => {
            let form = TargetForm::Asterisk;
            return Ok(Target {
                form,
                path: None,
                query: None,
                authority: None,
            });
        }
        [b'/', rest @ ..] => (TargetForm::Origin, None, rest),
        _ => {
            let after = strip_scheme(target).ok_or(HttpError::Target)?;
            let end = after
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(after.len());
            let authority = &after[..end];
            if authority.is_empty() || authority.contains(&b'@') {
                return Err(HttpError::Target);
            }
            let rest = &after[end..];
            (
                TargetForm::Absolute,
                Some(authority),
                rest.strip_prefix(b"/").unwrap_or(rest),
            )
        }
    };
    // `[` and `]` belong to an IP literal in the authority, nowhere else.
    if memchr::memchr2(b'[', b']', rest).is_some() {
        return Err(HttpError::Target);
    }
    let q = find_byte(b'?', rest).unwrap_or(rest.len());
    let (path, query) = (Some(&rest[..q]), Some(&rest[q..]));
    Ok(Target {
        form,
        path,
        query,
        authority,
    })
}

/// The part of an `http://` or `https://` target after the `//`.
fn strip_scheme(target: &[u8]) -> Option<&[u8]> {
    let colon = find_byte(b':', target)?;
    let scheme = &target[..colon];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return None;
    }
    target[colon + 1..].strip_prefix(b"//")
}

/// Parses one field line (without its CRLF) into name and trimmed value. Shared with the
/// chunked decoder's trailer section.
pub(crate) fn parse_field_line(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    field_line(line).map_err(|e| bare_cr_first(line, e))
}

/// [`parse_field_line`] without the CR check: a CR fails as a name or value byte.
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let colon = line
        .iter()
        .position(|&b| !TOKEN[b as usize])
        .ok_or(HttpError::HeaderName)?;
    match line[colon] {
        b':' if colon > 0 => {}
        b' ' | b'\t' if colon == 0 => return Err(HttpError::ObsFold),
        b' ' | b'\t' => {
            let after = line[colon..].iter().find(|&&b| b != b' ' && b != b'\t');
            return Err(match after {
                Some(b':') => HttpError::SpaceBeforeColon,
                _ => HttpError::HeaderName,
            });
        }
        _ => return Err(HttpError::HeaderName),
    }
    let value = &line[colon + 1..];
    if !all_in(value, &FIELD_VALUE, 0x20) {
        return Err(HttpError::HeaderValue);
    }
    Ok((&line[..colon], trim_ows(value)))
}

/// `value` without leading and trailing SP and HTAB.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Whether every byte of `bytes` is in `class` (see [`in_class_len`]).
fn all_in(bytes: &[u8], class: &[bool; 256], low: u8) -> bool {
    in_class_len(bytes, class, low) == bytes.len()
}

/// How many bytes at the start of `bytes` are in `class`, for a class that holds every
/// byte from `low` up except DEL (plus, possibly, a few bytes below `low`, such as HTAB).
/// Eight bytes at a time while no byte is below `low` or DEL, then byte by byte: about
/// three times faster than the table alone on typical header values.
fn in_class_len(bytes: &[u8], class: &[bool; 256], low: u8) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let mut rest = bytes;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let w = u64::from_ne_bytes(*word);
        let del = w ^ (ONES * 0x7f);
        // The classic "has a byte less than n" test, exact about existence for n <= 128.
        let below = w.wrapping_sub(ONES * u64::from(low)) & !w & HIGH;
        let is_del = del.wrapping_sub(ONES) & !del & HIGH;
        if below | is_del != 0 {
            break;
        }
        rest = tail;
    }
    let scanned = bytes.len() - rest.len();
    scanned
        + rest
            .iter()
            .position(|&c| !class[c as usize])
            .unwrap_or(rest.len())
}

/// A 256-entry byte class built at compile time from a predicate on `b`.
macro_rules! byte_class {
    (|$b:ident| $pred:expr) => {{
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            table[i] = $pred;
            i += 1;
        }
        table
    }};
}
pub(crate) use byte_class;

/// `tchar` of RFC 9110 §5.6.2: the characters of methods, field names and codings.
pub(crate) static TOKEN: [bool; 256] = byte_class!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'
    )
    || matches!(b, b'_' | b'`' | b'|' | b'~'));
/// Field value bytes: HTAB, SP, VCHAR and obs-text.
static FIELD_VALUE: [bool; 256] = byte_class!(|b| b == b'\t' || (b >= b' ' && b != 0x7f));
/// What a byte may be in a request-target (see [`valid_target_bytes`]).
const BAD: u8 = 0;
const PLAIN: u8 = 1;
const PERCENT: u8 = 2;

/// Request-target bytes (RFC 3986 §2-3 as used by RFC 9112 §3.2): unreserved
/// (`A-Z a-z 0-9 - . _ ~`), sub-delims (`! $ & ' ( ) * + , ; =`), `:` `@` `/` `?`, `[` `]`
/// (IP literals; [`split_target`] allows them only in an authority) and `%` (which must
/// start `%HH`). Everything else is refused: controls, SP, bytes >= 0x80 (raw UTF-8 must be
/// percent-encoded), `#` (a fragment is never sent), `"` `<` `>` `\` `^` `` ` `` `{` `|` `}`.
static TARGET_CLASS: [u8; 256] = {
    let mut table = [BAD; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = if b == b'%' {
            PERCENT
        } else if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')'
            )
            || matches!(
                b,
                b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/' | b'?'
            )
            || matches!(b, b'[' | b']')
        {
            PLAIN
        } else {
            BAD
        };
        i += 1;
    }
    table
};

/// Whether every byte of a request-target is allowed ([`TARGET_CLASS`]) and every `%` is
/// followed by two hex digits: one pass over the bytes with a table, no allocation.
fn valid_target_bytes(target: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = target.get(i) {
        match TARGET_CLASS[b as usize] {
            PLAIN => i += 1,
            PERCENT => match target.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpError::*;

    /// What a row expects: the parsed fields, an error, or `Partial`.
    #[derive(Debug)]
    enum Want {
        Head(
            &'static str,
            &'static str,
            Version,
            &'static [(&'static str, &'static str)],
        ),
        Err(HttpError),
        Partial,
    }
    use Version::*;
    use Want::Partial;

    const H: Version = Http11;
    const HOST: &[(&str, &str)] = &[("Host", "a")];

    #[rustfmt::skip]
    const ROWS: &[(&str, Want)] = &[
        // valid
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "/", H, HOST)),
        ("GET / HTTP/1.0\r\n\r\n", Want::Head("GET", "/", Http10, &[])),
        ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "/", H, HOST)),
        ("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "/", H, HOST)),
        ("GET / HTTP/1.1\r\nX:  a b \t\r\n\r\n", Want::Head("GET", "/", H, &[("X", "a b")])),
        ("GET / HTTP/1.1\r\nX:\r\nY: \r\n\r\n", Want::Head("GET", "/", H, &[("X", ""), ("Y", "")])),
        ("GET / HTTP/1.1\r\nX: a\tb\r\n\r\n", Want::Head("GET", "/", H, &[("X", "a\tb")])),
        ("GET / HTTP/1.1\r\nx-Y_z!#$%&'*+.^`|~9: v\r\n\r\n", Want::Head("GET", "/", H, &[("x-Y_z!#$%&'*+.^`|~9", "v")])),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("OPTIONS", "*", H, HOST)),
        ("GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "http://a/b?c", H, HOST)),
        ("PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("PROPFIND", "/x", H, HOST)),
        ("get /x HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("get", "/x", H, HOST)),
        ("GET /caf%C3%A9?q=%20&x HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "/caf%C3%A9?q=%20&x", H, HOST)),
        ("GET /a-._~!$&'()*+,;=:@/b?c/d?e=%aF%00 HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "/a-._~!$&'()*+,;=:@/b?c/d?e=%aF%00", H, HOST)),
        ("GET /?a=/b?c HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "/?a=/b?c", H, HOST)),
        ("GET http://[::1]:8080/p?q=[x HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET http://[::1]:8080/p?q HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "http://[::1]:8080/p?q", H, HOST)),
        ("GET HTTPS://a.b:1/?x=%2F HTTP/1.1\r\nHost: a\r\n\r\n", Want::Head("GET", "HTTPS://a.b:1/?x=%2F", H, HOST)),
        ("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n", Want::Head("GET", "/", H, &[("A", "1"), ("B", "2"), ("A", "3")])),
        // incomplete
        ("", Partial),
        ("\r", Partial),
        ("\r\n", Partial),
        ("\r\n\r\n", Partial),
        ("GET / HTTP/1.1", Partial),
        ("GET / HTTP/1.1\r\nHost: a\r\n", Partial),
        ("GET / HTTP/1.1\r\nHost: a\r\n\r", Partial),
        // line endings
        ("GET / HTTP/1.1\nHost: a\n\n", Want::Err(BareLf)),
        ("GET / HTTP/1.1\r\nHost: a\n\r\n", Want::Err(BareLf)),
        ("GET / HTTP/1.1\r\nHost: a\r\n\n", Want::Err(BareLf)),
        ("\nGET / HTTP/1.1\r\n\r\n", Want::Err(BareLf)),
        ("\rGET / HTTP/1.1\r\n\r\n", Want::Err(BareCr)),
        ("GET / HTTP/1.1\r\r\n\r\n", Want::Err(BareCr)),
        ("GET / HTTP/1.1\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n", Want::Err(BareCr)),
        ("GET / HTTP/1.1\r\nX: a\r\r\n\r\n", Want::Err(BareCr)),
        // request line
        ("GET  / HTTP/1.1\r\n\r\n", Want::Err(RequestLine)),
        (" GET / HTTP/1.1\r\n\r\n", Want::Err(RequestLine)),
        ("GET /\r\n\r\n", Want::Err(RequestLine)),
        ("GET\r\n\r\n", Want::Err(RequestLine)),
        ("GET / HTTP/1.1 \r\n\r\n", Want::Err(VersionSyntax)),
        ("GET /a b HTTP/1.1\r\n\r\n", Want::Err(VersionSyntax)),
        ("GET\t/ HTTP/1.1\r\n\r\n", Want::Err(RequestLine)),
        ("GET\t/ x HTTP/1.1\r\n\r\n", Want::Err(Method)),
        ("GE(T / HTTP/1.1\r\n\r\n", Want::Err(Method)),
        ("G\0ET / HTTP/1.1\r\n\r\n", Want::Err(Method)),
        ("GET /a\x01 HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET /a\x7f HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET /\0 HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /caf\u{e9}?q HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /?q=\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /# HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /?a#b HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /<a> HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a> HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a^b HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /{a} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a% HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a%2g HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a%g2 HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /%%41 HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a?b=% HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a?b=%zz HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /[x] HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a?[x] HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a] HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a\x1f HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a\u{80} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET /a\u{ff} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET http://a/\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET http://a/#x HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET http://a{b}/ HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET http://a\u{e9}/ HTTP/1.1\r\nHost: a\r\n\r\n", Want::Err(Target)),
        ("GET / HTTP/1.2\r\n\r\n", Want::Err(VersionNotSupported)),
        ("GET / HTTP/2.0\r\n\r\n", Want::Err(VersionNotSupported)),
        ("GET / HTTP/0.9\r\n\r\n", Want::Err(VersionNotSupported)),
        ("GET / HTTP/1.1x\r\n\r\n", Want::Err(VersionSyntax)),
        ("GET / http/1.1\r\n\r\n", Want::Err(VersionSyntax)),
        ("GET / HTTP/1\r\n\r\n", Want::Err(VersionSyntax)),
        ("GET / HTTP/11.1\r\n\r\n", Want::Err(VersionSyntax)),
        ("GET / HTTP/1.1\0\r\n\r\n", Want::Err(VersionSyntax)),
        // target forms
        ("GET * HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Want::Err(ConnectUnsupported)),
        ("GET a:443 HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET ftp://a/ HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET http:///x HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET http://u@a/ HTTP/1.1\r\n\r\n", Want::Err(Target)),
        ("GET http:/a HTTP/1.1\r\n\r\n", Want::Err(Target)),
        // header fields
        ("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Want::Err(ObsFold)),
        ("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", Want::Err(ObsFold)),
        ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", Want::Err(ObsFold)),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Want::Err(SpaceBeforeColon)),
        ("GET / HTTP/1.1\r\nTransfer-Encoding\t: chunked\r\n\r\n", Want::Err(SpaceBeforeColon)),
        ("GET / HTTP/1.1\r\nHost a\r\n\r\n", Want::Err(HeaderName)),
        ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", Want::Err(HeaderName)),
        ("GET / HTTP/1.1\r\n: a\r\n\r\n", Want::Err(HeaderName)),
        ("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", Want::Err(HeaderName)),
        ("GET / HTTP/1.1\r\nH\u{f3}st: a\r\n\r\n", Want::Err(HeaderName)),
        ("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", Want::Err(HeaderValue)),
        ("GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n", Want::Err(HeaderValue)),
        ("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", Want::Err(HeaderValue)),
        ("GET / HTTP/1.1\r\nX: \x1b[31m\r\n\r\n", Want::Err(HeaderValue)),
    ];

    /// Checks one parse result against a row.
    fn check(text: &[u8], got: Result<Status<Head<'_>>, HttpError>, want: &Want, extra: usize) {
        let len = text.len();
        let text = String::from_utf8_lossy(text);
        match (got, want) {
            (Ok(Status::Complete(head, used)), Want::Head(method, target, version, headers)) => {
                assert_eq!(used + extra, len, "{text:?}");
                assert_eq!(
                    (head.method, head.target),
                    (method.as_bytes(), target.as_bytes())
                );
                assert_eq!(head.version, *version);
                let fields: Vec<_> = headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                    .collect();
                assert_eq!(head.headers, fields, "{text:?}");
            }
            (Ok(Status::Partial), Want::Partial) => {}
            (Err(e), Want::Err(want)) => assert_eq!(e, *want, "{text:?}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    /// Every row five ways: whole, into the previous row's fields, by a parser restarted
    /// after it saw part of the row, byte by byte, and with bytes after the head.
    #[test]
    fn head_table() {
        let limits = Limits::default();
        let mut spare = Vec::new();
        let mut restarted = HeadParser::new();
        for (text, want) in ROWS {
            let text = text.as_bytes();
            check(text, parse_head(text, &limits), want, 0);

            let reused = HeadParser::new().parse_reusing(text, &limits, &mut spare);
            check(text, reused.clone(), want, 0);
            if let Ok(Status::Complete(head, _)) = reused {
                spare = reuse_fields(head.headers);
            }

            let _ = restarted.parse(&text[..text.len() / 2], &limits);
            restarted.restart();
            check(text, restarted.parse(text, &limits), want, 0);

            let mut parser = HeadParser::new();
            let mut last = Ok(Status::Partial);
            for n in 0..=text.len() {
                last = parser.parse(&text[..n], &limits);
                match &last {
                    Ok(Status::Partial) => {}
                    _ => {
                        assert!(
                            n == text.len() || matches!(want, Want::Err(_)),
                            "{text:?} at {n}"
                        );
                        break;
                    }
                }
            }
            check(text, last, want, 0);

            let mut longer = text.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            if !matches!(want, Want::Partial) {
                check(&longer, parse_head(&longer, &limits), want, 18);
            }
        }
    }

    #[test]
    fn reused_fields_keep_their_allocation() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        let limits = Limits::default();
        let Ok(Status::Complete(head, _)) = parse_head(text, &limits) else {
            panic!("no head")
        };
        let (at, capacity) = (head.headers.as_ptr() as usize, head.headers.capacity());
        let mut spare: Vec<Field<'static>> = reuse_fields(head.headers);
        assert!(spare.is_empty());
        assert_eq!((spare.as_ptr() as usize, spare.capacity()), (at, capacity));
        let partial = HeadParser::new().parse_reusing(b"GET / HTTP/1.1\r\nHo", &limits, &mut spare);
        assert_eq!(partial, Ok(Status::Partial));
        assert_eq!(spare.as_ptr() as usize, at); // (left for the complete head)
        let other = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n".to_vec();
        let Ok(Status::Complete(next, _)) =
            HeadParser::new().parse_reusing(&other, &limits, &mut spare)
        else {
            panic!("no head")
        };
        assert_eq!(next.headers, [(&b"Host"[..], &b"b"[..])]);
        assert_eq!(next.headers.as_ptr() as usize, at);
    }

    /// Form, path, query and authority.
    type Parts = (
        TargetForm,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn target_splitting() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, Result<Parts, HttpError>)] = &[
            ("GET", "/", Ok((TargetForm::Origin, Some(""), Some(""), None))),
            ("GET", "/a/b", Ok((TargetForm::Origin, Some("a/b"), Some(""), None))),
            ("GET", "/a%20b?x=1&y=%41", Ok((TargetForm::Origin, Some("a%20b"), Some("?x=1&y=%41"), None))),
            ("GET", "/?", Ok((TargetForm::Origin, Some(""), Some("?"), None))),
            ("GET", "//a?b?c", Ok((TargetForm::Origin, Some("/a"), Some("?b?c"), None))),
            ("OPTIONS", "*", Ok((TargetForm::Asterisk, None, None, None))),
            ("OPTIONS", "/*", Ok((TargetForm::Origin, Some("*"), Some(""), None))),
            ("GET", "http://h:80/p?q", Ok((TargetForm::Absolute, Some("p"), Some("?q"), Some("h:80")))),
            ("GET", "HTTPS://h", Ok((TargetForm::Absolute, Some(""), Some(""), Some("h")))),
            ("GET", "http://h?q", Ok((TargetForm::Absolute, Some(""), Some("?q"), Some("h")))),
            ("GET", "*", Err(Target)),
            ("GET", "a/b", Err(Target)),
            ("GET", "h:80", Err(Target)),
            ("GET", "http:", Err(Target)),
            ("GET", "http://", Err(Target)),
            ("GET", "http://a@h/", Err(Target)),
            ("GET", "ws://h/", Err(Target)),
            ("GET", "http://[::1]:80/p", Ok((TargetForm::Absolute, Some("p"), Some(""), Some("[::1]:80")))),
            ("GET", "http://[::1]?[", Err(Target)),
            ("GET", "/[::1]", Err(Target)),
            ("GET", "/?]", Err(Target)),
            ("CONNECT", "h:443", Err(ConnectUnsupported)),
            ("CONNECT", "/", Err(ConnectUnsupported)),
        ];
        for &(method, target, want) in rows {
            let got = split_target(method.as_bytes(), target.as_bytes()).map(|t| {
                fn s(o: Option<&[u8]>) -> Option<&str> {
                    o.map(|b| std::str::from_utf8(b).unwrap())
                }
                (t.form, s(t.path), s(t.query), s(t.authority))
            });
            assert_eq!(got, want, "{method} {target}");
        }
    }

    /// The limits are enforced on prefixes already, at the byte where they are exceeded.
    #[test]
    fn limits() {
        let limits = Limits {
            head_size: 40,
            target_len: 8,
            headers: 2,
        };
        #[rustfmt::skip]
        let rows: &[(&str, Result<bool, HttpError>)] = &[
            ("GET /2345678 HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", Ok(true)),
            ("GET /23456789 HTTP/1.1\r\n\r\n", Err(TargetTooLong)),
            ("GET /23456789", Err(TargetTooLong)),
            ("GET /2345678", Ok(false)),
            ("GET /2345678\r", Ok(false)),
            ("XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", Ok(false)),
            ("XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", Err(HeadTooLarge)),
            ("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n", Err(HeadTooLarge)),
            ("GET / HTTP/1.1\r\nA: 1\r\nB: 22222222222\r\n\r\n", Ok(true)),
            ("GET / HTTP/1.1\r\nA: 1\r\nB: 222222222222\r\n\r\n", Err(HeadTooLarge)),
            ("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n", Err(TooManyHeaders)),
            ("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC", Ok(false)),
        ];
        for &(text, want) in rows {
            let got = parse_head(text.as_bytes(), &limits)
                .map(|s| matches!(s, Status::Complete(_, n) if n == text.len()));
            assert_eq!(got, want, "{text:?}");
        }
    }

    /// A valid request followed by an invalid one: the first parses with its exact length,
    /// then the rest fails on its own.
    #[test]
    fn pipelined_invalid_request() {
        let text = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost : a\r\n\r\n";
        let Ok(Status::Complete(head, used)) = parse_head(text, &Limits::default()) else {
            panic!("the first request must parse");
        };
        assert_eq!((head.target, used), (&b"/a"[..], 28));
        assert_eq!(
            parse_head(&text[used..], &Limits::default()),
            Err(SpaceBeforeColon)
        );
    }

    /// The word-at-a-time check agrees with the byte table for every byte at every position.
    #[test]
    fn word_check_matches_table() {
        for (class, low) in [(&FIELD_VALUE, 0x20)] {
            for len in 1..20 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![b'a'; len];
                        bytes[at] = b;
                        assert_eq!(
                            all_in(&bytes, class, low),
                            class[b as usize],
                            "{b} at {at}/{len}"
                        );
                    }
                }
            }
        }
    }

    /// Every byte value, alone and after `%`, against the grammar written out by hand.
    #[test]
    fn target_bytes_follow_rfc3986() {
        let allowed =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?[]";
        for b in 0..=255u8 {
            let plain = [b'/', b, b'x'];
            assert_eq!(valid_target_bytes(&plain), allowed.contains(&b), "{b:#x}");
            let escaped = [b'/', b'%', b, b'0'];
            assert_eq!(
                valid_target_bytes(&escaped),
                b.is_ascii_hexdigit(),
                "%{b:#x}0"
            );
        }
        for ok in ["/", "*", "/%41%4a%4A", "/a?b=%20", "http://[::1]:80/"] {
            assert!(valid_target_bytes(ok.as_bytes()), "{ok}");
        }
        for bad in ["/%", "/%4", "/a%4", "/%4%41", "/a#b", "/\u{e9}"] {
            assert!(!valid_target_bytes(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn header_lookup_ignores_case() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let Ok(Status::Complete(head, _)) = parse_head(text, &Limits::default()) else {
            panic!("must parse");
        };
        assert_eq!(head.header("HOST"), Some(&b"a"[..]));
        assert_eq!(
            head.headers_named("x-A").collect::<Vec<_>>(),
            [&b"1"[..], b"2"]
        );
        assert_eq!(head.header("y"), None);
    }

    /// Fragments that make heads valid and nearly valid for the one-pass parser's limits.
    const PIECES: &[&[u8]] = &[
        b"GET",
        b"POST",
        b"CONNECT",
        b"OPTIONS",
        b"x",
        b" ",
        b"  ",
        b"/",
        b"/a/b",
        b"?q=1",
        b"?",
        b"%41",
        b"%4",
        b"[",
        b"]",
        b"*",
        b"#",
        b"http://a/",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2.0",
        b"HTTP/1.1 ",
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b"\r",
        b"Host",
        b"X-Y_z",
        b":",
        b" :",
        b": v",
        b"  v \t",
        b"\t",
        b"\x7f",
        b"\x80\xff",
        b"\0",
        b"a b",
        b",",
    ];

    /// A valid head of `fields` fields, the bytes of which `edits` may then change.
    fn generated(method: &str, target: &str, fields: &[(String, String)], v10: bool) -> Vec<u8> {
        let mut head = format!("{method} {target} HTTP/1.{}\r\n", if v10 { 0 } else { 1 });
        for (n, v) in fields {
            head += &format!("{n}:{v}\r\n");
        }
        head += "\r\n";
        head.into_bytes()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// The one-pass parse, where it answers, answers as the scan and the two-phase
        /// parse do, for every limit it must respect.
        #[test]
        fn one_pass_agrees_with_the_two_phase_parse(
            pieces in proptest::collection::vec(0..PIECES.len(), 0..24),
            method in "[A-Za-z!#$%&'*+.^_`|~-]{1,8}",
            target in "/[A-Za-z0-9/?=&:@._~!$'()*+,;%\\[\\]-]{0,24}",
            fields in proptest::collection::vec(("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}",
                "[ \t!-~\u{80}-\u{ff}]{0,12}"), 0..6),
            v10: bool,
            edits in proptest::collection::vec((0usize..200, 0..PIECES.len()), 0..3),
            head_size in 0usize..120,
            target_len in 0usize..30,
            headers in 0usize..6,
        ) {
            let mut inputs = vec![pieces.iter().flat_map(|&i| PIECES[i].iter().copied()).collect()];
            let mut valid = generated(&method, &target, &fields, v10);
            inputs.push(valid.clone());
            for (at, piece) in edits {
                let at = at % (valid.len() + 1);
                valid.splice(at..at, PIECES[piece].iter().copied());
            }
            inputs.push(valid);
            let small = Limits { head_size, target_len, headers };
            for input in &inputs {
                for limits in [small, Limits::default()] {
                    let fast = parse_simple(input, &limits, Vec::new());
                    let slow = HeadParser::new().parse_in_two(input, &limits, &mut Vec::new());
                    if let Ok((head, end)) = fast {
                        proptest::prop_assert_eq!(&Ok(Status::Complete(head, end)), &slow, "{:?}", input);
                    }
                    let whole = HeadParser::new().parse(input, &limits);
                    proptest::prop_assert_eq!(whole, slow);
                }
            }
        }
    }
}
