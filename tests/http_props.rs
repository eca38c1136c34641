//! Property tests for the HTTP head parser, framing and chunked decoder: random input never
//! panics, and the result never depends on how the input is segmented, so nothing a
//! byte-at-a-time reader rejects is accepted when the bytes arrive together, or the other way
//! round.

mod corpus_files;

use moonbridge::http::chunked::{ChunkedDecoder, Decoded};
use moonbridge::http::drive::script::{esc, run, segment};
use moonbridge::http::framing::framing;
use moonbridge::http::head::{parse_head, split_target, Limits, Status};
use proptest::prelude::*;

/// Small limits, so that the limit checks are exercised too.
const SMALL: Limits = Limits {
    head_size: 300,
    target_len: 40,
    headers: 8,
};

/// A generated request and the body the parser must find in it.
#[derive(Debug, Clone)]
struct Request {
    bytes: Vec<u8>,
    body: Vec<u8>,
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// Field value bytes: no leading or trailing whitespace (it would be trimmed).
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![Just(b'\t'), Just(b' '), 0x21u8..0x7f, 0x80u8..=0xff];
    proptest::collection::vec(byte, 0..20).prop_map(|mut v| {
        while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.pop();
        }
        while v.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.remove(0);
        }
        v
    })
}

/// Chunked encoding of `chunks`, with optional extensions, leading zeros and trailers.
fn chunked(chunks: &[(Vec<u8>, bool, u8)], trailers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (data, ext, zeros) in chunks.iter().filter(|c| !c.0.is_empty()) {
        out.extend(std::iter::repeat_n(b'0', *zeros as usize));
        out.extend(format!("{:x}", data.len()).bytes());
        if *ext {
            out.extend_from_slice(b" ; a=\"b;\\\"\" ;c");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend(format!("{name}: ").bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn request() -> impl Strategy<Value = Request> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
        0u8..3,
    );
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "X-CUSTOM"]),
        // every character RFC 3986 allows in a path and a query, `%` only as `%HH`
        "/([A-Za-z0-9/._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}){0,20}(\\?([A-Za-z0-9=&+/?:@-]|%[0-9A-Fa-f]{2}){0,10})?",
        any::<bool>(),
        proptest::collection::vec((token(), field_value()), 0..5),
        0u8..3,
        proptest::collection::vec(chunk, 0..4),
        proptest::collection::vec((token(), field_value()), 0..2),
    )
        .prop_map(
            |(method, target, http10, fields, body_kind, chunks, trailers)| {
                let mut head = format!(
                    "{method} {target} HTTP/1.{}\r\n",
                    if http10 { 0 } else { 1 }
                );
                let mut bytes = Vec::new();
                head += if http10 {
                    "Connection: keep-alive\r\n"
                } else {
                    "Host: example.com\r\n"
                };
                bytes.extend(head.bytes());
                for (name, value) in &fields {
                    // Keep the generated fields away from the framing ones.
                    bytes.extend(format!("X-{name}: ").bytes());
                    bytes.extend_from_slice(value);
                    bytes.extend_from_slice(b"\r\n");
                }
                let body: Vec<u8> = chunks.iter().flat_map(|c| c.0.clone()).collect();
                let body = match body_kind {
                    0 => Vec::new(),
                    1 => {
                        bytes.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
                        bytes.extend_from_slice(&body);
                        return Request { bytes, body };
                    }
                    _ if http10 => Vec::new(),
                    _ => {
                        bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        bytes.extend(chunked(&chunks, &trailers));
                        return Request { bytes, body };
                    }
                };
                bytes.extend_from_slice(b"\r\n");
                Request { bytes, body }
            },
        )
}

/// One to three pipelined requests.
fn connection() -> impl Strategy<Value = (Vec<u8>, Vec<Request>)> {
    proptest::collection::vec(request(), 1..4).prop_map(|reqs| {
        let bytes = reqs.iter().flat_map(|r| r.bytes.clone()).collect();
        (bytes, reqs)
    })
}

/// Replaces, inserts or deletes bytes, mostly ones that matter to framing.
fn mutate(input: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\r\n\0 \t:,;\"0aF-+\x7f\xff\x0b";
    let mut out = input.to_vec();
    for &(pos, op, byte) in edits {
        let at = if out.is_empty() { 0 } else { pos % out.len() };
        let b = if byte < 200 {
            INTERESTING[byte as usize % INTERESTING.len()]
        } else {
            byte
        };
        match op % 3 {
            0 if at < out.len() => out[at] = b,
            1 => out.insert(at, b),
            _ if at < out.len() => {
                out.remove(at);
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        for limits in [SMALL, Limits::default()] {
            if let Ok(Status::Complete(head, used)) = parse_head(&input, &limits) {
                prop_assert!(used <= input.len());
                let _ = framing(&head);
                let _ = split_target(head.method, head.target);
            }
        }
        let mut decoder = ChunkedDecoder::default();
        let mut rest = &input[..];
        while let Ok(Decoded::Data(range)) = decoder.feed(rest) {
            prop_assert!(range.end <= rest.len() && !range.is_empty());
            rest = &rest[range.end..];
        }
    }

    #[test]
    fn valid_requests_parse_the_same_in_any_segmentation(
        (input, reqs) in connection(),
        cuts in proptest::collection::vec(0usize..60, 0..30),
    ) {
        let whole = run(&[&input], &Limits::default());
        // read to its end, the connection closes quietly
        prop_assert_eq!(whole.last().map(String::as_str), Some("close"), "{:?}", whole);
        let bodies: Vec<_> = whole.iter().filter_map(|l| l.strip_prefix("  body ")).collect();
        let want: Vec<_> = reqs.iter().map(|r| esc(&r.body)).collect();
        prop_assert_eq!(bodies, want);
        prop_assert_eq!(run(&segment(&input, &cuts), &Limits::default()), whole);
    }

    #[test]
    fn mutated_requests_give_the_same_verdict_whole_and_byte_by_byte(
        (input, _) in connection(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        cuts in proptest::collection::vec(0usize..30, 0..30),
    ) {
        let input = mutate(&input, &edits);
        for limits in [SMALL, Limits::default()] {
            let whole = run(&[&input], &limits);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            prop_assert_eq!(&run(&bytes, &limits), &whole);
            prop_assert_eq!(&run(&segment(&input, &cuts), &limits), &whole);
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_segmentation(
        chunks in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>(), 0u8..20), 0..6),
        cuts in proptest::collection::vec(0usize..50, 0..40),
    ) {
        let mut input = chunked(&chunks, &[]);
        let len = input.len();
        input.extend_from_slice(b"NEXT");
        let mut decoder = ChunkedDecoder::default();
        let (mut data, mut consumed) = (Vec::new(), None);
        'pieces: for piece in segment(&input, &cuts) {
            let mut offset = 0;
            loop {
                match decoder.feed(&piece[offset..]).unwrap() {
                    Decoded::Data(r) => {
                        data.extend_from_slice(&piece[offset..][r.clone()]);
                        offset += r.end;
                    }
                    Decoded::NeedMore => continue 'pieces,
                    Decoded::Done { consumed: n } => {
                        let start = piece.as_ptr() as usize - input.as_ptr() as usize;
                        consumed = Some(start + offset + n);
                        break 'pieces;
                    }
                }
            }
        }
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.0.clone()).collect();
        prop_assert_eq!(data, want);
        prop_assert_eq!(consumed, Some(len));
    }
}
