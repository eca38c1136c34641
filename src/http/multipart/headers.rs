//! Header fields of one `multipart/form-data` part, and the `; key=value` parameter syntax
//! shared with the request's `Content-Type` (RFC 7578 §4, RFC 2046 §5.1.1, RFC 9110 §5.6).

use std::borrow::Cow;

use super::MultipartError;
use crate::http::encode::decode_percent;
use crate::http::head::{trim_ows, TOKEN};

/// What a part's headers say about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// The field name: `name` of `Content-Disposition`. `None` when the part has no
    /// Content-Disposition or no `name` (the original ignored such parts).
    pub name: Option<Vec<u8>>,
    /// The `filename` (or RFC 5987 `filename*`, which wins) of `Content-Disposition`; present
    /// but empty for a file input left empty.
    pub file_name: Option<Vec<u8>>,
    /// The part's `Content-Type` value, whitespace-trimmed.
    pub content_type: Option<Vec<u8>>,
}

/// Parses a part's header section: lines each ending in CRLF, the empty line excluded.
pub(super) fn parse_part(block: &[u8]) -> Result<Part, MultipartError> {
    let mut part = Part::default();
    let mut seen_disposition = false;
    let mut rest = block;
    while !rest.is_empty() {
        // the caller only passes whole CRLF-terminated lines
        let end = memchr::memmem::find(rest, b"\r\n").ok_or(MultipartError::InvalidHeader)?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        let colon = memchr::memchr(b':', line).ok_or(MultipartError::InvalidHeader)?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        // a space before the colon or a folded line (leading space) lands here as well
        if name.is_empty() || !name.iter().all(|&b| TOKEN[b as usize]) {
            return Err(MultipartError::InvalidHeader);
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(MultipartError::InvalidHeader);
        }
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if seen_disposition {
                return Err(MultipartError::InvalidHeader);
            }
            seen_disposition = true;
            parse_disposition(value, &mut part)?;
        } else if name.eq_ignore_ascii_case(b"content-type") {
            if part.content_type.is_some() {
                return Err(MultipartError::InvalidHeader);
            }
            part.content_type = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            // RFC 7578 §4.7 deprecates it; identity encodings are harmless, others would
            // hand the application undecoded data
            let identity = [&b"7bit"[..], b"8bit", b"binary"];
            if !identity.iter().any(|e| value.eq_ignore_ascii_case(e)) {
                return Err(MultipartError::UnsupportedEncoding);
            }
        }
    }
    Ok(part)
}

/// `form-data; name="field"; filename="a.txt"`: the disposition type is not checked.
fn parse_disposition(value: &[u8], part: &mut Part) -> Result<(), MultipartError> {
    let params_start = memchr::memchr(b';', value).unwrap_or(value.len());
    let mut extended_name = None;
    for param in Params::new(&value[params_start..]) {
        let (key, val) = param?;
        if key.eq_ignore_ascii_case(b"name") && part.name.is_none() {
            part.name = Some(val.into_owned());
        } else if key.eq_ignore_ascii_case(b"filename") && part.file_name.is_none() {
            part.file_name = Some(val.into_owned());
        } else if key.eq_ignore_ascii_case(b"filename*") && extended_name.is_none() {
            extended_name = ext_value(&val);
        }
    }
    if extended_name.is_some() {
        part.file_name = extended_name;
    }
    Ok(())
}

/// RFC 5987 `charset'language'percent-encoded`; the bytes are returned whatever the charset.
fn ext_value(val: &[u8]) -> Option<Vec<u8>> {
    let first = memchr::memchr(b'\'', val)?;
    let second = first + 1 + memchr::memchr(b'\'', &val[first + 1..])?;
    Some(decode_percent(&val[second + 1..]).into_owned())
}

/// Iterator over `*( OWS ";" OWS key "=" value )`, value a token or a quoted-string. Keys are
/// returned as written (compare case-insensitively); quoted values are unescaped.
pub(super) struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    /// Parameters of `s`, which starts at the first `;` (or is empty).
    pub(super) fn new(s: &'a [u8]) -> Self {
        Params { rest: s }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<(&'a [u8], Cow<'a, [u8]>), MultipartError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut s = trim_ows(self.rest);
        // empty parameters (`;;`) are skipped, as most parsers do
        while let Some(after) = s.strip_prefix(b";") {
            s = trim_ows(after);
        }
        if s.is_empty() {
            return None;
        }
        let result = parse_param(s);
        self.rest = match &result {
            Ok((_, _, rest)) => rest,
            Err(_) => &[],
        };
        Some(result.map(|(key, value, _)| (key, value)))
    }
}

type Param<'a> = (&'a [u8], Cow<'a, [u8]>, &'a [u8]);

/// One `key=value` at the start of `s`; returns it and what follows (`;...` or empty).
fn parse_param(s: &[u8]) -> Result<Param<'_>, MultipartError> {
    let bad = MultipartError::InvalidHeader;
    let key_len = s
        .iter()
        .position(|&b| !TOKEN[b as usize])
        .unwrap_or(s.len());
    let key = &s[..key_len];
    let s = trim_ows(&s[key_len..]).strip_prefix(b"=").ok_or(bad)?;
    let s = trim_ows(s);
    let (value, rest) = if let Some(quoted) = s.strip_prefix(b"\"") {
        let (value, used) = quoted_string(quoted).ok_or(bad)?;
        (value, &quoted[used..])
    } else {
        // lenient token: anything up to `;` or whitespace (raw UTF-8 names occur)
        let end = s.iter().position(|&b| b == b';' || b == b' ' || b == b'\t');
        let end = end.unwrap_or(s.len());
        (Cow::Borrowed(&s[..end]), &s[end..])
    };
    let rest = trim_ows(rest);
    if key.is_empty() || !(rest.is_empty() || rest[0] == b';') {
        return Err(bad);
    }
    Ok((key, value, rest))
}

/// The contents of a quoted-string whose opening quote is already consumed, and how many
/// bytes (closing quote included) it used. Only `\"` and `\\` are escapes: browsers send
/// Windows paths with bare backslashes (`C:\new\a.txt`), which stay as they are.
fn quoted_string(s: &[u8]) -> Option<(Cow<'_, [u8]>, usize)> {
    let mut owned: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => {
                let value = owned.map_or(Cow::Borrowed(&s[..i]), Cow::Owned);
                return Some((value, i + 1));
            }
            b'\\' if matches!(s.get(i + 1), Some(b'"' | b'\\')) => {
                let buf = owned.get_or_insert_with(|| s[..i].to_vec());
                buf.push(s[i + 1]);
                i += 2;
            }
            b => {
                if let Some(buf) = owned.as_mut() {
                    buf.push(b);
                }
                i += 1;
            }
        }
    }
    None
}
