//! The `Cookie` request header (RFC 6265 §5.4 as browsers send it): `request.cookies`.
//!
//! Rules:
//! - Pairs are separated by `;`, with or without a following space; whitespace (SP, HTAB)
//!   around names and values is trimmed. Values may contain spaces inside and `=` after the
//!   first one (`a=b=c` is `a` = `b=c`).
//! - A value wrapped in double quotes has the quotes removed (`a="x y"` is `a` = `x y`).
//! - A piece without `=` is ignored (as the original did, and as most server frameworks do;
//!   RFC 6265bis would make it a nameless cookie). An empty name (`=v`) is kept.
//! - Names and values are then URL-decoded by form rules (`%XX`, `+` as space), as the
//!   original `decode_uri`'d them, so values an application wrote encoded come back decoded.
//! - Order is kept, duplicates included. Browsers send the cookie with the most specific path
//!   first, so [`first_wins`] is the right map (the original let the last one win).

use std::collections::HashSet;

use super::encode::decode_uri;
use super::head::trim_ows;

/// The raw pairs of one `Cookie` header value: trimmed and unquoted, not yet decoded.
pub fn raw_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|piece| {
        let eq = memchr::memchr(b'=', piece)?;
        let name = trim_ows(&piece[..eq]);
        let value = trim_ows(&piece[eq + 1..]);
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        };
        Some((name, value))
    })
}

/// Parses one `Cookie` header value into ordered, decoded pairs.
pub fn parse_cookies(header: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_pairs(header)
        .map(|(name, value)| {
            (
                decode_uri(name).into_owned(),
                decode_uri(value).into_owned(),
            )
        })
        .collect()
}

/// Keeps the first pair of every name, in order, dropping later duplicates.
pub fn first_wins(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = HashSet::with_capacity(pairs.len());
    pairs
        .into_iter()
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expect(list: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn cookie_table() {
        let cases: &[(&[u8], &[(&[u8], &[u8])])] = &[
            (b"", &[]),
            (b"a=1", &[(b"a", b"1")]),
            (b"a=1; b=2", &[(b"a", b"1"), (b"b", b"2")]),
            (b"a=1;b=2", &[(b"a", b"1"), (b"b", b"2")]),
            (b" a = 1 ;\tb=2\t; ", &[(b"a", b"1"), (b"b", b"2")]),
            (b"a=", &[(b"a", b"")]),
            (b"=v", &[(b"", b"v")]),
            (b"lonely; a=1; also", &[(b"a", b"1")]),
            (b";;a=1;;", &[(b"a", b"1")]),
            (b"a=b=c", &[(b"a", b"b=c")]),
            (b"q=\"quoted value\"", &[(b"q", b"quoted value")]),
            (b"q=\"\"", &[(b"q", b"")]),
            (b"q=\"", &[(b"q", b"\"")]),
            (b"q=\"half", &[(b"q", b"\"half")]),
            (b"q=in\"side\"", &[(b"q", b"in\"side\"")]),
            (b"sp=a b", &[(b"sp", b"a b")]),
            (b"enc=a%20b+c%3B", &[(b"enc", b"a b c;")]),
            (b"%41=%zz", &[(b"A", b"%zz")]),
            (b"u=\xc3\xa4", &[(b"u", "ä".as_bytes())]),
            (b"a=1; a=2", &[(b"a", b"1"), (b"a", b"2")]),
        ];
        for &(header, pairs) in cases {
            assert_eq!(parse_cookies(header), expect(pairs), "header {:?}", header);
        }
    }

    #[test]
    fn raw_pairs_are_not_decoded() {
        let raw: Vec<_> = raw_pairs(b"a=x+y%21; b=\"q\"").collect();
        assert_eq!(
            raw,
            vec![(&b"a"[..], &b"x+y%21"[..]), (&b"b"[..], &b"q"[..])]
        );
    }

    #[test]
    fn first_occurrence_wins() {
        let pairs = parse_cookies(b"sid=new; theme=dark; sid=old; theme=light; x=1");
        let expected: &[(&[u8], &[u8])] = &[(b"sid", b"new"), (b"theme", b"dark"), (b"x", b"1")];
        assert_eq!(first_wins(pairs), expect(expected));
        assert_eq!(first_wins(Vec::new()), expect(&[]));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(header in proptest::collection::vec(any::<u8>(), 0..200)) {
            let pairs = parse_cookies(&header);
            prop_assert!(pairs.len() <= header.len());
            prop_assert!(first_wins(pairs).len() <= header.len());
        }

        #[test]
        fn encoded_cookies_round_trip(pairs in proptest::collection::vec(
                ("[a-z]{1,6}", proptest::collection::vec(any::<u8>(), 0..8)), 0..6)) {
            use crate::http::encode::encode_uri;
            let header: Vec<String> = pairs.iter()
                .map(|(n, v)| format!("{}={}", n, encode_uri(v)))
                .collect();
            let expected: Vec<(Vec<u8>, Vec<u8>)> =
                pairs.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone())).collect();
            prop_assert_eq!(parse_cookies(header.join("; ").as_bytes()), expected);
        }
    }
}
