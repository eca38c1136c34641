//! Query strings and `application/x-www-form-urlencoded` bodies: `get_params` and
//! `post_params` of `moonbridge_http`.
//!
//! Rules (the original's where it had one, chosen and fixed otherwise):
//! - Pairs are separated by `&` only (not `;`), as in the original.
//! - A piece without `=` (`?debug`, the empty pieces of `a=1&&b=2`) is ignored, as in the
//!   original, so `get_params.debug` stays `nil` for `?debug`.
//! - A piece is split at its first `=`: `a=b=c` is name `a`, value `b=c` (the original made
//!   that two pairs, `a`=`b` and `""`=`c`). Empty names (`=b`) and values (`a=`) are kept.
//! - Names and values are decoded by form rules: `+` is a space, `%XX` a byte; invalid
//!   escapes stay literal (see [`crate::http::encode`]). Results are bytes, not necessarily
//!   UTF-8.
//! - A query string may start with one `?` (`request.query` keeps it); it is skipped. A `?`
//!   elsewhere is data (the original dropped pairs around it).
//! - Pairs keep their order and repeated names are all kept; "first value wins" for
//!   `get_params` is the caller's choice.
//!
//! [`FormDecoder`] decodes a body that arrives in chunks, holding only the decoded pairs (not
//! the raw body), and fails once more than the caller's limit has been fed.

use std::borrow::Cow;
use std::fmt;

use super::encode::{decode_uri, PercentDecoder};

/// One decoded name/value pair.
pub type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Parses a query string (with or without its leading `?`) into ordered pairs.
pub fn parse_query(query: &[u8]) -> Vec<Pair<'_>> {
    parse_urlencoded(query.strip_prefix(b"?").unwrap_or(query))
}

/// Parses a complete `application/x-www-form-urlencoded` body into ordered pairs. Borrows
/// from `body` where nothing needs decoding.
pub fn parse_urlencoded(body: &[u8]) -> Vec<Pair<'_>> {
    body.split(|&b| b == b'&')
        .filter_map(|piece| {
            let eq = memchr::memchr(b'=', piece)?;
            Some((decode_uri(&piece[..eq]), decode_uri(&piece[eq + 1..])))
        })
        .collect()
}

/// Whether a `Content-Type` value names `application/x-www-form-urlencoded` (parameters such
/// as `; charset=UTF-8` allowed, case-insensitive, surrounding whitespace ignored).
pub fn is_urlencoded(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    media
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// Why an urlencoded body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormError {
    /// More bytes were fed than the limit given to [`FormDecoder::new`].
    TooLarge,
}

impl FormError {
    /// A short description, fit for an error response body.
    pub fn message(self) -> &'static str {
        match self {
            FormError::TooLarge => "Request body size limit exceeded",
        }
    }

    /// The HTTP status this error should be answered with.
    pub fn status(self) -> u16 {
        match self {
            FormError::TooLarge => 413,
        }
    }
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for FormError {}

/// Incremental `application/x-www-form-urlencoded` decoder: feed the body in chunks of any
/// size (split anywhere, even inside `%XX`), then [`finish`](FormDecoder::finish). The result
/// equals [`parse_urlencoded`] of the whole body.
#[derive(Debug)]
pub struct FormDecoder {
    limit: usize,
    fed: usize,
    name: Vec<u8>,
    value: Vec<u8>,
    /// An `=` has been seen in the current piece: bytes now go to `value`.
    in_value: bool,
    decoder: PercentDecoder,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl FormDecoder {
    /// A decoder that refuses bodies longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FormDecoder {
            limit,
            fed: 0,
            name: Vec::new(),
            value: Vec::new(),
            in_value: false,
            decoder: PercentDecoder::new(true),
            pairs: Vec::new(),
        }
    }

    /// Decodes the next chunk of the body. Fails (and stays failed) once the total exceeds
    /// the limit; nothing of the offending chunk is decoded then.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), FormError> {
        self.fed = self.fed.saturating_add(chunk.len());
        if self.fed > self.limit {
            return Err(FormError::TooLarge);
        }
        while !chunk.is_empty() {
            let stop = if self.in_value {
                memchr::memchr(b'&', chunk)
            } else {
                memchr::memchr2(b'&', b'=', chunk)
            };
            let piece = &chunk[..stop.unwrap_or(chunk.len())];
            let target = if self.in_value {
                &mut self.value
            } else {
                &mut self.name
            };
            self.decoder.push(piece, target);
            let Some(stop) = stop else { break };
            if chunk[stop] == b'=' {
                self.decoder.flush(&mut self.name);
                self.in_value = true;
            } else {
                self.end_piece();
            }
            chunk = &chunk[stop + 1..];
        }
        Ok(())
    }

    /// Ends the body and returns the pairs in order.
    pub fn finish(mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.end_piece();
        self.pairs
    }

    /// Closes the current piece: a pair if it had an `=`, otherwise it is dropped.
    fn end_piece(&mut self) {
        if self.in_value {
            self.decoder.flush(&mut self.value);
            let pair = (
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.value),
            );
            self.pairs.push(pair);
        } else {
            self.decoder.flush(&mut self.name);
            self.name.clear();
        }
        self.in_value = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Owned = Vec<(Vec<u8>, Vec<u8>)>;

    fn owned(pairs: Vec<Pair<'_>>) -> Owned {
        pairs
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    }

    fn expect(list: &[(&[u8], &[u8])]) -> Owned {
        list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }

    /// (body, expected pairs); every row is also checked through the incremental decoder.
    #[allow(clippy::type_complexity)]
    const CASES: &[(&[u8], &[(&[u8], &[u8])])] = &[
        (b"", &[]),
        (b"a", &[]),
        (b"a=", &[(b"a", b"")]),
        (b"=b", &[(b"", b"b")]),
        (b"=", &[(b"", b"")]),
        (b"&", &[]),
        (b"a=1&&b=2", &[(b"a", b"1"), (b"b", b"2")]),
        (b"a=1&b=2&a=3", &[(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]),
        (b"a=b=c", &[(b"a", b"b=c")]),
        (b"a=1;b=2", &[(b"a", b"1;b=2")]),
        (b"flag&x=1&other", &[(b"x", b"1")]),
        (b"%41=%42", &[(b"A", b"B")]),
        (b"a=%4", &[(b"a", b"%4")]),
        (b"a=%zz", &[(b"a", b"%zz")]),
        (b"a=%", &[(b"a", b"%")]),
        (b"a%=%&b=%4&c", &[(b"a%", b"%"), (b"b", b"%4")]),
        (b"%3D=%26", &[(b"=", b"&")]),
        (b"+=+", &[(b" ", b" ")]),
        (b"q=a+b%2Bc", &[(b"q", b"a b+c")]),
        (b"n=%C3%A4%E2%82%AC", &[(b"n", "ä€".as_bytes())]),
        (b"raw=\xc3\xa4", &[(b"raw", "ä".as_bytes())]),
        (b"bin=%00%FF\xfe", &[(b"bin", b"\x00\xff\xfe")]),
        (b"?a=1", &[(b"?a", b"1")]),
        (b"a=?x", &[(b"a", b"?x")]),
    ];

    #[test]
    fn urlencoded_table() {
        for &(body, pairs) in CASES {
            assert_eq!(
                owned(parse_urlencoded(body)),
                expect(pairs),
                "body {:?}",
                body
            );
        }
    }

    #[test]
    fn query_strips_one_question_mark() {
        assert_eq!(owned(parse_query(b"?a=1&b")), expect(&[(b"a", b"1")]));
        assert_eq!(owned(parse_query(b"a=1")), expect(&[(b"a", b"1")]));
        assert_eq!(owned(parse_query(b"??a=1")), expect(&[(b"?a", b"1")]));
        assert_eq!(owned(parse_query(b"?")), expect(&[]));
        assert_eq!(owned(parse_query(b"")), expect(&[]));
    }

    #[test]
    fn parse_borrows_when_nothing_is_encoded() {
        let pairs = parse_urlencoded(b"a=1&b=x+y");
        assert!(matches!(pairs[0], (Cow::Borrowed(_), Cow::Borrowed(_))));
        assert!(matches!(pairs[1].1, Cow::Owned(_)));
    }

    #[test]
    fn content_type_detection() {
        let cases: &[(&[u8], bool)] = &[
            (b"application/x-www-form-urlencoded", true),
            (b"Application/X-WWW-Form-URLEncoded; charset=UTF-8", true),
            (b" application/x-www-form-urlencoded ;x", true),
            (b"application/x-www-form-urlencodedx", false),
            (b"multipart/form-data; boundary=x", false),
            (b"", false),
        ];
        for &(ct, expected) in cases {
            assert_eq!(is_urlencoded(ct), expected, "{:?}", ct);
        }
    }

    /// Feeds `body` in the given segment lengths (the rest last).
    fn incremental(body: &[u8], cuts: &[usize]) -> Owned {
        let mut d = FormDecoder::new(body.len());
        let mut pos = 0;
        for &c in cuts {
            let end = (pos + c).min(body.len());
            d.feed(&body[pos..end]).unwrap();
            pos = end;
        }
        d.feed(&body[pos..]).unwrap();
        d.finish()
    }

    #[test]
    fn incremental_whole_bytewise_and_every_split_point() {
        for &(body, pairs) in CASES {
            let expected = expect(pairs);
            assert_eq!(incremental(body, &[]), expected, "whole {:?}", body);
            assert_eq!(
                incremental(body, &vec![1; body.len()]),
                expected,
                "bytewise {:?}",
                body
            );
            for a in 0..=body.len() {
                for b in 0..=body.len() - a {
                    assert_eq!(
                        incremental(body, &[a, b]),
                        expected,
                        "cuts {a},{b} {:?}",
                        body
                    );
                }
            }
        }
    }

    #[test]
    fn incremental_with_trailing_pieces() {
        // bytes after the last pair extend or add pairs exactly as the whole body would
        let mut d = FormDecoder::new(100);
        d.feed(b"a=1&b=%4").unwrap();
        d.feed(b"1&tail").unwrap();
        assert_eq!(d.finish(), expect(&[(b"a", b"1"), (b"b", b"A")]));
    }

    #[test]
    fn incremental_limit() {
        let mut d = FormDecoder::new(5);
        assert_eq!(d.feed(b"a=1"), Ok(()));
        assert_eq!(d.feed(b"&b"), Ok(()));
        assert_eq!(d.feed(b"="), Err(FormError::TooLarge));
        assert_eq!(d.feed(b""), Err(FormError::TooLarge));
        assert_eq!(FormError::TooLarge.status(), 413);
        assert_eq!(
            FormError::TooLarge.to_string(),
            "Request body size limit exceeded"
        );
        assert_eq!(FormDecoder::new(0).feed(b""), Ok(()));
    }

    fn form_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(b'&'),
            Just(b'='),
            Just(b'%'),
            Just(b'+'),
            Just(b'4'),
            Just(b'f'),
            Just(b'z'),
            any::<u8>()
        ];
        proptest::collection::vec(byte, 0..48)
    }

    proptest! {
        #[test]
        fn incremental_matches_whole(body in form_bytes(),
                                     cuts in proptest::collection::vec(0usize..6, 0..10)) {
            prop_assert_eq!(incremental(&body, &cuts), owned(parse_urlencoded(&body)));
        }

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let pairs = parse_query(&body);
            prop_assert!(pairs.len() <= body.len());
        }

        #[test]
        fn encoded_pairs_round_trip(pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8),
                 proptest::collection::vec(any::<u8>(), 0..8)), 0..6)) {
            use crate::http::encode::encode_uri;
            let body: Vec<String> = pairs.iter()
                .map(|(n, v)| format!("{}={}", encode_uri(n), encode_uri(v)))
                .collect();
            prop_assert_eq!(owned(parse_urlencoded(body.join("&").as_bytes())), pairs);
        }
    }
}
