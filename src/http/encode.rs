//! The escaping helpers `moonbridge_http` exports, and the one percent-decoder every other
//! part of `src/http` uses.
//!
//! The original module (Moonbridge 1.0.1) exported `encode_html`, `encode_uri` and
//! `decode_uri`; the names are kept. Differences, on purpose:
//! - `encode_html` also escapes `'` (as `&#39;`), so its output is safe inside single-quoted
//!   attributes too (the original escaped only `& < > "`).
//! - `encode_uri` writes uppercase hex digits (`%2F`), as RFC 3986 §2.1 recommends; the
//!   original wrote lowercase. Every decoder treats both alike. The kept set is the same:
//!   RFC 3986 unreserved characters `A-Z a-z 0-9 - . _ ~`.
//!
//! Decoding never fails: an escape that is not `%` followed by two hex digits (`%zz`, a
//! trailing `%4`) stays as it is, as browsers and the original do. Bytes are not required to
//! be UTF-8.

use std::borrow::Cow;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything except RFC 3986 unreserved characters is escaped by [`encode_uri`].
const URI_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes `&`, `<`, `>`, `"` and `'` as `&amp;`, `&lt;`, `&gt;`, `&quot;` and `&#39;`.
/// Borrows the input when it has nothing to escape.
pub fn encode_html(text: &[u8]) -> Cow<'_, [u8]> {
    let entity = |b: u8| -> Option<&'static [u8]> {
        Some(match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&#39;",
            _ => return None,
        })
    };
    let Some(first) = text.iter().position(|&b| entity(b).is_some()) else {
        return Cow::Borrowed(text);
    };
    let mut out = Vec::with_capacity(text.len() + 16);
    out.extend_from_slice(&text[..first]);
    for &b in &text[first..] {
        match entity(b) {
            Some(e) => out.extend_from_slice(e),
            None => out.push(b),
        }
    }
    Cow::Owned(out)
}

/// Percent-encodes every byte except the RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), like JavaScript's `encodeURIComponent` (which also keeps
/// `! ' ( ) *`). Spaces become `%20` and `+` becomes `%2B`, so both [`decode_uri`] and
/// [`decode_percent`] restore the input.
pub fn encode_uri(text: &[u8]) -> Cow<'_, str> {
    percent_encode(text, URI_ESCAPED).into()
}

/// Undoes URL encoding by form rules: `+` becomes a space and `%XX` the byte `XX`, as the
/// original `decode_uri`. Invalid escapes stay literal. Borrows when nothing changes.
pub fn decode_uri(text: &[u8]) -> Cow<'_, [u8]> {
    decode(text, true)
}

/// Undoes percent-encoding only (`+` stays `+`), like `decodeURIComponent` but on bytes and
/// without failing on invalid escapes. Borrows when nothing changes.
pub fn decode_percent(text: &[u8]) -> Cow<'_, [u8]> {
    decode(text, false)
}

fn decode(text: &[u8], plus_as_space: bool) -> Cow<'_, [u8]> {
    let special = if plus_as_space {
        memchr::memchr2(b'%', b'+', text)
    } else {
        memchr::memchr(b'%', text)
    };
    if special.is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut decoder = PercentDecoder::new(plus_as_space);
    decoder.push(text, &mut out);
    decoder.flush(&mut out);
    Cow::Owned(out)
}

/// The value of one hex digit, if `b` is one.
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// An incremental percent-decoder: input may be split anywhere, even inside `%XX`.
///
/// At most two bytes (`%` and one hex digit) are held between calls to [`push`]; [`flush`]
/// writes them out literally when the input ends there.
///
/// [`push`]: PercentDecoder::push
/// [`flush`]: PercentDecoder::flush
#[derive(Clone, Copy, Debug)]
pub struct PercentDecoder {
    plus_as_space: bool,
    /// Bytes of an unfinished escape: `%` (len 1) or `%` and a hex digit (len 2).
    pending: [u8; 2],
    pending_len: u8,
}

impl PercentDecoder {
    /// A decoder; with `plus_as_space`, `+` decodes to a space (form rules).
    pub fn new(plus_as_space: bool) -> Self {
        PercentDecoder {
            plus_as_space,
            pending: [b'%', 0],
            pending_len: 0,
        }
    }

    /// Decodes `input`, appending the result to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some((&b, rest)) = input.split_first() {
            if self.pending_len > 0 {
                match hex_value(b) {
                    Some(_) if self.pending_len == 1 => {
                        self.pending[1] = b;
                        self.pending_len = 2;
                    }
                    Some(lo) => {
                        // pending[1] was checked to be a hex digit when it was stored
                        let hi = hex_value(self.pending[1]).unwrap_or(0);
                        out.push(hi << 4 | lo);
                        self.pending_len = 0;
                    }
                    None => {
                        // not an escape after all: keep it literally and look at `b` again
                        self.flush(out);
                        continue;
                    }
                }
                input = rest;
                continue;
            }
            let run = if self.plus_as_space {
                memchr::memchr2(b'%', b'+', input)
            } else {
                memchr::memchr(b'%', input)
            };
            let Some(run) = run else {
                out.extend_from_slice(input);
                return;
            };
            out.extend_from_slice(&input[..run]);
            if input[run] == b'%' {
                self.pending_len = 1;
            } else {
                out.push(b' ');
            }
            input = &input[run + 1..];
        }
    }

    /// Ends the input: an unfinished escape is written out literally.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pending[..usize::from(self.pending_len)]);
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn html_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"plain text", b"plain text"),
            (b"<a href=\"x\">", b"&lt;a href=&quot;x&quot;&gt;"),
            (b"Tom & Jerry's", b"Tom &amp; Jerry&#39;s"),
            (b"&amp;", b"&amp;amp;"),
            (b"\xff<\x00", b"\xff&lt;\x00"),
        ];
        for &(input, expected) in cases {
            assert_eq!(&*encode_html(input), expected, "input {:?}", input);
        }
        assert!(matches!(encode_html(b"nothing"), Cow::Borrowed(_)));
    }

    #[test]
    fn uri_encode_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"AZaz09-._~", "AZaz09-._~"),
            (b"a b+c", "a%20b%2Bc"),
            (b"/?#&=%", "%2F%3F%23%26%3D%25"),
            ("ä".as_bytes(), "%C3%A4"),
            (b"\x00\xff", "%00%FF"),
        ];
        for &(input, expected) in cases {
            assert_eq!(encode_uri(input), expected, "input {:?}", input);
        }
    }

    #[test]
    fn uri_decode_table() {
        // (input, decode_uri, decode_percent)
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"", b"", b""),
            (b"a+b", b"a b", b"a+b"),
            (b"%41%62", b"Ab", b"Ab"),
            (b"%2b%2B", b"++", b"++"),
            (b"%4", b"%4", b"%4"),
            (b"%", b"%", b"%"),
            (b"%zz", b"%zz", b"%zz"),
            (b"%4g", b"%4g", b"%4g"),
            (b"%%41", b"%A", b"%A"),
            (b"%4%41", b"%4A", b"%4A"),
            (b"%+41", b"% 41", b"%+41"),
            (b"%C3%A4", "ä".as_bytes(), "ä".as_bytes()),
            (b"%00%ff", b"\x00\xff", b"\x00\xff"),
            (b"\xff%", b"\xff%", b"\xff%"),
        ];
        for &(input, form, plain) in cases {
            assert_eq!(&*decode_uri(input), form, "decode_uri {:?}", input);
            assert_eq!(&*decode_percent(input), plain, "decode_percent {:?}", input);
        }
        assert!(matches!(decode_uri(b"abc"), Cow::Borrowed(_)));
        assert!(matches!(decode_percent(b"a+b"), Cow::Borrowed(_)));
    }

    /// Decodes `input` pushed in the given pieces.
    fn decode_split(input: &[u8], cuts: &[usize], plus: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut d = PercentDecoder::new(plus);
        let mut pos = 0;
        for &c in cuts {
            let end = (pos + c).min(input.len());
            d.push(&input[pos..end], &mut out);
            pos = end;
        }
        d.push(&input[pos..], &mut out);
        d.flush(&mut out);
        out
    }

    #[test]
    fn decoder_every_split_point() {
        for input in [&b"%41%4%zz+%%2B%"[..], b"a%C3%A4b+c%", b"%4"] {
            for plus in [false, true] {
                let whole = decode(input, plus).into_owned();
                for cut in 0..=input.len() {
                    assert_eq!(decode_split(input, &[cut], plus), whole, "cut {cut}");
                }
                assert_eq!(decode_split(input, &vec![1; input.len()], plus), whole);
            }
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded = encode_uri(&input);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(&*decode_uri(encoded.as_bytes()), &input[..]);
            prop_assert_eq!(&*decode_percent(encoded.as_bytes()), &input[..]);
        }

        #[test]
        fn html_output_has_no_special_bytes(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let out = encode_html(&input);
            prop_assert!(!out.iter().any(|b| b"<>\"'".contains(b)));
        }

        #[test]
        fn decoder_ignores_segmentation(
            input in proptest::collection::vec(prop_oneof![Just(b'%'), Just(b'+'), Just(b'4'),
                Just(b'a'), Just(b'z'), any::<u8>()], 0..40),
            cuts in proptest::collection::vec(0usize..8, 0..8),
            plus in any::<bool>(),
        ) {
            prop_assert_eq!(decode_split(&input, &cuts, plus), decode(&input, plus).into_owned());
        }
    }
}
