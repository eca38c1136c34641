//! Incremental decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! Feed it the input as it arrives; it keeps its state between calls and hands back body
//! data as ranges of the input, so nothing is copied. Every byte of framing is checked as
//! it arrives, including the CRLF after chunk data when it is split across feeds (h11's
//! GHSA-vqfr-h8mv-ghfj). Strict grammar, no leniency:
//!
//! - chunk-size is `1*HEXDIG`: leading zeros are fine (at most 64 digits in all), the value
//!   must fit in 64 bits, and nothing but `;` extensions may follow it; whitespace is allowed
//!   only before a `;` (BWS), so `5 \r\n` and `5 0\r\n` are errors.
//! - extensions are `;name[=value]` with a token name and a token or quoted-string value;
//!   they are checked and skipped, within per-line and per-body length limits.
//! - every line ends with CRLF; a bare LF or a CR that is not followed by LF is an error.
//! - the trailer section is parsed with the same rules as the header section and kept,
//!   within a size limit, for [`ChunkedDecoder::trailers`].
//!
//! Once an error is returned the decoder stays failed. Limiting the body size is the
//! caller's job; [`ChunkedDecoder::received`] gives the running total.

use std::ops::Range;

use memchr::memchr;

use super::error::HttpError;
use super::head::{byte_class, parse_field_line, TOKEN};

/// Most hex digits a chunk-size may have, leading zeros included.
const MAX_SIZE_DIGITS: u32 = 64;

/// Bounds on what a chunked body may carry besides its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// Most bytes of extensions (whitespace before them included) on one chunk-size line.
    pub ext_line: usize,
    /// Most bytes of extensions in the whole body.
    pub ext_total: u64,
    /// Most bytes of the trailer section, CRLFs included.
    pub trailer_size: usize,
}

impl Default for ChunkedLimits {
    /// 4 KiB of extensions per line, 64 KiB per body, 16 KiB of trailers.
    fn default() -> Self {
        ChunkedLimits {
            ext_line: 4 << 10,
            ext_total: 64 << 10,
            trailer_size: 16 << 10,
        }
    }
}

/// What one call to [`ChunkedDecoder::feed`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// `input[range]` is body data. The input was consumed up to `range.end`; feed the rest
    /// again.
    Data(Range<usize>),
    /// All of the input was consumed (it held only framing, or nothing): more is needed.
    NeedMore,
    /// The body ended after `input[..consumed]`; the rest belongs to the next request.
    Done {
        /// Bytes of this input that belonged to the body.
        consumed: usize,
    },
}

/// Where in the chunk grammar the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading chunk-size digits (`digits` so far).
    Size {
        digits: u32,
    },
    /// Whitespace after the chunk-size: only `;` may follow.
    SizeBws,
    /// Inside the extensions of a chunk-size line.
    Ext(Ext),
    /// Seen the CR that ends a chunk-size line.
    SizeLf,
    /// Inside chunk data (`self.remaining` bytes to go).
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Seen the CR of the final empty line.
    TrailerLf,
    /// Inside a trailer field line.
    TrailerLine,
    Done,
    Failed(HttpError),
}

/// Positions in `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// After a `;`, before the name.
    NameStart,
    Name,
    /// Whitespace after a name: `=` or `;` may follow.
    AfterName,
    /// After `=`, before the value.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    Escape,
    /// Right after a closing quote.
    AfterQuoted,
    /// Whitespace after a value: only `;` may follow.
    Bws,
}

/// The decoder of one chunked body. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    limits: ChunkedLimits,
    /// The size of the chunk being read (while in `Size`), then the data still to come.
    remaining: u64,
    received: u64,
    ext_line: usize,
    ext_total: u64,
    /// The trailer section so far: field lines, each with its CRLF.
    trailer: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new(ChunkedLimits::default())
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            limits,
            remaining: 0,
            received: 0,
            ext_line: 0,
            ext_total: 0,
            trailer: Vec::new(),
        }
    }

    /// Body data bytes handed out so far (for the caller's body size limit).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the whole body, trailer section included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer fields received so far as `(name, value)`; all of them once the decoder
    /// is done. The caller must not merge them into the header fields unless it knows the
    /// field is safe to merge (RFC 9110 §6.5.1).
    pub fn trailers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // Only complete lines, each checked when its LF arrived.
        self.trailer
            .split_inclusive(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r\n"))
            .filter_map(|line| parse_field_line(line).ok())
    }

    /// Decodes from the start of `input` up to the first piece of data, the end of the
    /// body, or the end of the input. See [`Decoded`] for how much was consumed.
    pub fn feed(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        let result = self.run(input);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    fn run(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Done => return Ok(Decoded::Done { consumed: pos }),
                State::Data => {
                    let left = (input.len() - pos) as u64;
                    if left == 0 {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = left.min(self.remaining);
                    self.remaining -= n;
                    self.received = self.received.saturating_add(n);
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded::Data(pos..pos + n as usize));
                }
                State::TrailerLine if pos == input.len() => return Ok(Decoded::NeedMore),
                State::TrailerLine => pos = self.trailer_line(input, pos)?,
                _ => {
                    let Some(&byte) = input.get(pos) else {
                        return Ok(Decoded::NeedMore);
                    };
                    pos += 1;
                    self.framing_byte(byte)?;
                }
            }
        }
    }

    /// Advances over one byte of framing (everything except data and trailer lines).
    fn framing_byte(&mut self, b: u8) -> Result<(), HttpError> {
        use HttpError::{BareCr, BareLf, ChunkDataEnd, ChunkExtension, ChunkSize};
        if b == b'\n' && !matches!(self.state, State::SizeLf | State::DataLf | State::TrailerLf) {
            return Err(if self.state == State::DataCr {
                ChunkDataEnd
            } else {
                BareLf
            });
        }
        self.state = match self.state {
            State::Size { digits } => match b {
                _ if b.is_ascii_hexdigit() => {
                    if digits == MAX_SIZE_DIGITS || self.remaining >> 60 != 0 {
                        return Err(ChunkSize);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.remaining = self.remaining << 4 | u64::from(d);
                    State::Size { digits: digits + 1 }
                }
                _ if digits == 0 => return Err(ChunkSize),
                b'\r' => State::SizeLf,
                b';' => self.ext(Ext::NameStart)?,
                b' ' | b'\t' => self.count_ext().map(|()| State::SizeBws)?,
                _ => return Err(ChunkSize),
            },
            State::SizeBws => match b {
                b' ' | b'\t' => self.count_ext().map(|()| State::SizeBws)?,
                b';' => self.ext(Ext::NameStart)?,
                _ => return Err(ChunkSize),
            },
            State::Ext(at) => match (at, b) {
                (Ext::Name | Ext::Token | Ext::AfterQuoted, b'\r') => State::SizeLf,
                (Ext::Quoted, b'"') => self.ext(Ext::AfterQuoted)?,
                (Ext::Quoted, b'\\') => self.ext(Ext::Escape)?,
                (Ext::Quoted, _) if QDTEXT[b as usize] => self.ext(Ext::Quoted)?,
                (Ext::Escape, _) if QDTEXT[b as usize] || b == b'"' || b == b'\\' => {
                    self.ext(Ext::Quoted)?
                }
                (Ext::Quoted | Ext::Escape, _) => return Err(ChunkExtension),
                (Ext::Name | Ext::Token | Ext::AfterName | Ext::AfterQuoted | Ext::Bws, b';') => {
                    self.ext(Ext::NameStart)?
                }
                (Ext::NameStart | Ext::ValueStart | Ext::AfterName | Ext::Bws, b' ' | b'\t') => {
                    self.ext(at)?
                }
                (Ext::Name, b' ' | b'\t') => self.ext(Ext::AfterName)?,
                (Ext::Token | Ext::AfterQuoted, b' ' | b'\t') => self.ext(Ext::Bws)?,
                (Ext::Name | Ext::AfterName, b'=') => self.ext(Ext::ValueStart)?,
                (Ext::NameStart | Ext::Name, _) if TOKEN[b as usize] => self.ext(Ext::Name)?,
                (Ext::ValueStart | Ext::Token, _) if TOKEN[b as usize] => self.ext(Ext::Token)?,
                (Ext::ValueStart, b'"') => self.ext(Ext::Quoted)?,
                _ => return Err(ChunkExtension),
            },
            State::SizeLf => match b {
                b'\n' => self.end_size_line(),
                _ => return Err(BareCr),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { digits: 0 },
            State::DataCr | State::DataLf => return Err(ChunkDataEnd),
            State::TrailerStart => match b {
                b'\r' => State::TrailerLf,
                _ => {
                    self.push_trailer(&[b])?;
                    State::TrailerLine
                }
            },
            State::TrailerLf => match b {
                b'\n' => State::Done,
                _ => return Err(BareCr),
            },
            // Not framing bytes: `run` handles these states itself.
            other @ (State::Data | State::TrailerLine | State::Done | State::Failed(_)) => other,
        };
        Ok(())
    }

    /// Counts one extension byte against the limits and moves to `next`.
    fn ext(&mut self, next: Ext) -> Result<State, HttpError> {
        self.count_ext()?;
        Ok(State::Ext(next))
    }

    /// Counts one byte after the chunk-size (extension or whitespace) against the limits.
    fn count_ext(&mut self) -> Result<(), HttpError> {
        self.ext_line += 1;
        self.ext_total += 1;
        if self.ext_line > self.limits.ext_line || self.ext_total > self.limits.ext_total {
            return Err(HttpError::ChunkExtensionTooLong);
        }
        Ok(())
    }

    /// After the CRLF of a chunk-size line: data follows, or the trailer section after `0`.
    fn end_size_line(&mut self) -> State {
        self.ext_line = 0;
        if self.remaining == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
    }

    /// Takes the bytes of a trailer line from `input[pos..]`, checking the line once its LF
    /// arrives. Returns the new position.
    fn trailer_line(&mut self, input: &[u8], pos: usize) -> Result<usize, HttpError> {
        let rest = &input[pos..];
        let Some(lf) = memchr(b'\n', rest) else {
            self.push_trailer(rest)?;
            return Ok(input.len());
        };
        self.push_trailer(&rest[..=lf])?;
        let end = self.trailer.len() - 1;
        let start = self.trailer[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if self.trailer[end - 1] != b'\r' {
            return Err(HttpError::BareLf);
        }
        parse_field_line(&self.trailer[start..end - 1])?;
        self.state = State::TrailerStart;
        Ok(pos + lf + 1)
    }

    fn push_trailer(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        // The final empty line's CRLF counts too, so leave room for it.
        if self.trailer.len() + bytes.len() + 2 > self.limits.trailer_size {
            return Err(HttpError::TrailerTooLarge);
        }
        self.trailer.extend_from_slice(bytes);
        Ok(())
    }
}

/// `qdtext` of RFC 9110 §5.6.4: HTAB, SP, VCHAR except `"` and `\`, obs-text.
static QDTEXT: [bool; 256] =
    byte_class!(|b| b == b'\t' || (b >= b' ' && b != 0x7f && b != b'"' && b != b'\\'));

#[cfg(test)]
mod tests {
    use super::*;
    use HttpError::*;

    /// The body data, the trailers, and the bytes consumed (`None`: needs more input).
    type Outcome = (
        Vec<u8>,
        Vec<(Vec<u8>, Vec<u8>)>,
        Result<Option<usize>, HttpError>,
    );

    /// Decodes `pieces` in order as they would arrive from a socket.
    fn decode(limits: ChunkedLimits, pieces: &[&[u8]]) -> Outcome {
        let mut decoder = ChunkedDecoder::new(limits);
        let (mut data, mut offset) = (Vec::new(), 0);
        let mut result = Ok(None);
        'pieces: for piece in pieces {
            let mut rest = *piece;
            loop {
                match decoder.feed(rest) {
                    Ok(Decoded::Data(range)) => {
                        assert!(!range.is_empty());
                        data.extend_from_slice(&rest[range.clone()]);
                        offset += range.end;
                        rest = &rest[range.end..];
                    }
                    Ok(Decoded::NeedMore) => {
                        offset += rest.len();
                        continue 'pieces;
                    }
                    Ok(Decoded::Done { consumed }) => {
                        result = Ok(Some(offset + consumed));
                        break 'pieces;
                    }
                    Err(e) => {
                        assert_eq!(decoder.feed(b"0\r\n\r\n"), Err(e), "errors are sticky");
                        result = Err(e);
                        break 'pieces;
                    }
                }
            }
        }
        assert_eq!(decoder.received(), data.len() as u64);
        assert_eq!(decoder.is_done(), matches!(result, Ok(Some(_))));
        let trailers = decoder
            .trailers()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        (data, trailers, result)
    }

    type Want = Result<Option<(&'static str, &'static [(&'static str, &'static str)])>, HttpError>;

    #[rustfmt::skip]
    const ROWS: &[(&str, Want)] = &[
        ("0\r\n\r\n", Ok(Some(("", &[])))),
        ("5\r\nhello\r\n0\r\n\r\n", Ok(Some(("hello", &[])))),
        ("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Ok(Some(("hello world", &[])))),
        ("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", Ok(Some(("0123456789abcdefghij", &[])))),
        ("0005\r\nhello\r\n000\r\n\r\n", Ok(Some(("hello", &[])))),
        ("00000000000000000000000000000003\r\nabc\r\n0\r\n\r\n", Ok(Some(("abc", &[])))),
        ("5;a\r\nhello\r\n0;b=c\r\n\r\n", Ok(Some(("hello", &[])))),
        ("5;a=\"x;y\\\"z\"\r\nhello\r\n0\r\n\r\n", Ok(Some(("hello", &[])))),
        ("5 ; a = b ; c\r\nhello\r\n0\r\n\r\n", Ok(Some(("hello", &[])))),
        ("5;a=b\t;c=\"\"\r\nhello\r\n0;z\t=\t\"\t\"\r\n\r\n", Ok(Some(("hello", &[])))),
        ("1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n", Ok(Some(("\r\n", &[])))),
        ("0\r\nX: 1\r\nY:  2 \r\n\r\n", Ok(Some(("", &[("X", "1"), ("Y", "2")])))),
        ("2\r\nab\r\n0\r\nContent-Length: 5\r\n\r\n", Ok(Some(("ab", &[("Content-Length", "5")])))),
        // incomplete
        ("", Ok(None)),
        ("5\r\nhel", Ok(None)),
        ("5\r\nhello\r", Ok(None)),
        ("0\r\n\r", Ok(None)),
        ("0\r\nX: 1", Ok(None)),
        ("FFFFFFFFFFFFFFFF\r\nabc", Ok(None)),
        // chunk-size
        ("\r\n", Err(ChunkSize)),
        (";a\r\n", Err(ChunkSize)),
        ("x\r\n", Err(ChunkSize)),
        ("5x\r\n", Err(ChunkSize)),
        ("-5\r\n", Err(ChunkSize)),
        ("+5\r\n", Err(ChunkSize)),
        ("0x5\r\n", Err(ChunkSize)),
        (" 5\r\n", Err(ChunkSize)),
        ("5 \r\n", Err(ChunkSize)),
        ("5 0\r\nhello\r\n", Err(ChunkSize)),
        ("5\t\r\n", Err(ChunkSize)),
        ("10000000000000000\r\n", Err(ChunkSize)),
        ("00000000000000000000000000000000000000000000000000000000000000001\r\n", Err(ChunkSize)),
        // line endings and the CRLF after data
        ("5\nhello\r\n0\r\n\r\n", Err(BareLf)),
        ("5\rhello", Err(BareCr)),
        ("5\r\nhello\n0\r\n\r\n", Err(ChunkDataEnd)),
        ("5\r\nhello0\r\n\r\n", Err(ChunkDataEnd)),
        ("5\r\nhelloXY0\r\n\r\n", Err(ChunkDataEnd)),
        ("5\r\nhello\rX", Err(ChunkDataEnd)),
        ("5\r\nhello\r\r\n", Err(ChunkDataEnd)),
        ("5\r\nhello\r\n0\n\n", Err(BareLf)),
        ("5\r\nhello\r\n0\r\n\n", Err(BareLf)),
        ("0\r\n\rX", Err(BareCr)),
        // extensions
        ("5;\r\nhello", Err(ChunkExtension)),
        ("5;=a\r\n", Err(ChunkExtension)),
        ("5;a=\r\n", Err(ChunkExtension)),
        ("5;a=\"b\r\n", Err(ChunkExtension)),
        ("5;a b\r\n", Err(ChunkExtension)),
        ("5;a=b c\r\n", Err(ChunkExtension)),
        ("5;a=\"x\"y\r\n", Err(ChunkExtension)),
        ("5;a=\"\x01\"\r\n", Err(ChunkExtension)),
        ("5;a=(b)\r\n", Err(ChunkExtension)),
        ("5;a \r\n", Err(ChunkExtension)),
        ("5;a\n", Err(BareLf)),
        ("5;a=\"b\nc\"\r\n", Err(BareLf)),
        // trailers
        ("0\r\nX : 1\r\n\r\n", Err(SpaceBeforeColon)),
        ("0\r\n X: 1\r\n\r\n", Err(ObsFold)),
        ("0\r\nX: 1\r\n\tY\r\n\r\n", Err(ObsFold)),
        ("0\r\nX: \x01\r\n\r\n", Err(HeaderValue)),
        ("0\r\nX: \0\r\n\r\n", Err(HeaderValue)),
        ("0\r\nX: a\rb\r\n\r\n", Err(BareCr)),
        ("0\r\nX: 1\n\r\n", Err(BareLf)),
        ("0\r\nX\r\n\r\n", Err(HeaderName)),
    ];

    fn expected(want: &Want, len: usize) -> Outcome {
        let owned = |t: &[(&str, &str)]| {
            t.iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        match want {
            Ok(Some((data, trailers))) => {
                (data.as_bytes().to_vec(), owned(trailers), Ok(Some(len)))
            }
            Ok(None) | Err(_) => (Vec::new(), Vec::new(), want.map(|_| None)),
        }
    }

    /// Every row whole, one byte at a time, split at every point, and with the start of a
    /// next request after it, which must stay unconsumed.
    #[test]
    fn chunked_table() {
        let limits = ChunkedLimits::default();
        for (text, want) in ROWS {
            let input = text.as_bytes();
            let mut want = expected(want, input.len());
            let whole = decode(limits, &[input]);
            // Data and trailers before an error are delivered; the table gives only the error.
            if want.2.is_err() || want.2 == Ok(None) {
                (want.0, want.1) = (whole.0.clone(), whole.1.clone());
            }
            assert_eq!(whole, want, "whole {text:?}");
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode(limits, &bytes), want, "byte by byte {text:?}");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(decode(limits, &[a, b]), want, "split at {cut}: {text:?}");
            }
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
            if let Ok(Some(_)) = want.2 {
                assert_eq!(decode(limits, &[&longer]), want, "trailing bytes {text:?}");
                let bytes: Vec<&[u8]> = longer.chunks(1).collect();
                assert_eq!(
                    decode(limits, &bytes),
                    want,
                    "trailing, byte by byte {text:?}"
                );
            }
        }
    }

    #[test]
    fn limits() {
        let limits = ChunkedLimits {
            ext_line: 4,
            ext_total: 7,
            trailer_size: 10,
        };
        #[rustfmt::skip]
        let rows: &[(&str, Result<Option<usize>, HttpError>)] = &[
            ("1;abc\r\na\r\n0\r\n\r\n", Ok(Some(15))),
            ("1;abcd\r\na\r\n", Err(ChunkExtensionTooLong)),
            ("1 ;ab\r\na\r\n0\r\n\r\n", Ok(Some(15))),
            ("1  ;ab\r\n", Err(ChunkExtensionTooLong)),
            ("1     ", Err(ChunkExtensionTooLong)),
            ("1;abc\r\na\r\n1;ab\r\nb\r\n0\r\n\r\n", Ok(Some(24))),
            ("1;abc\r\na\r\n1;abc\r\nb\r\n", Err(ChunkExtensionTooLong)),
            ("0\r\nX: 123\r\n\r\n", Ok(Some(13))),
            ("0\r\nX: 1234\r\n\r\n", Err(TrailerTooLarge)),
            ("0\r\nX: 123456789", Err(TrailerTooLarge)),
        ];
        for &(text, want) in rows {
            let input = text.as_bytes();
            assert_eq!(decode(limits, &[input]).2, want, "{text:?}");
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode(limits, &bytes).2, want, "byte by byte {text:?}");
        }
    }

    #[test]
    fn largest_chunk_size_is_accepted() {
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(
            decoder.feed(b"FFFFFFFFFFFFFFFF\r\nab"),
            Ok(Decoded::Data(18..20))
        );
        assert_eq!(decoder.received(), 2);
        assert_eq!(decoder.feed(b""), Ok(Decoded::NeedMore));
    }
}
