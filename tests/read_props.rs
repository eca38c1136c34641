//! Property tests for the read-buffer core: however the input is segmented, reading lines
//! through `ReadBuf::decide` yields exactly the lines of the whole input.

use moonbridge::io::buffer::{Decision, ReadBuf, ReadStatus};
use proptest::prelude::*;

/// Reads `input`, delivered in `cuts` segments, with `read(maxlen, term)` until EOF.
fn read_all(
    input: &[u8],
    cuts: &[usize],
    maxlen: Option<usize>,
    term: Option<u8>,
) -> Vec<(Vec<u8>, ReadStatus)> {
    let mut segments = Vec::new();
    let mut pos = 0;
    for &c in cuts {
        let end = (pos + c).min(input.len());
        segments.push(&input[pos..end]);
        pos = end;
    }
    segments.push(&input[pos..]);
    let mut feed = segments.into_iter();
    let mut buf = ReadBuf::new();
    let mut eof = false;
    let mut out = Vec::new();
    loop {
        match buf.decide(maxlen, term, eof) {
            Decision::Done(n, status) => {
                out.push((buf.bytes()[..n].to_vec(), status));
                buf.consume(n);
                if status == ReadStatus::Eof {
                    return out;
                }
                if n == 0 && status == ReadStatus::Maxlen {
                    return out;
                }
            }
            Decision::NeedMore => match feed.next() {
                Some(seg) => buf.extend(seg),
                None => eof = true,
            },
        }
    }
}

/// The oracle: split the whole input at once.
fn oracle(input: &[u8], maxlen: Option<usize>, term: Option<u8>) -> Vec<(Vec<u8>, ReadStatus)> {
    let mut out = Vec::new();
    let mut rest = input;
    loop {
        if maxlen == Some(0) {
            out.push((Vec::new(), ReadStatus::Maxlen));
            return out;
        }
        let limit = maxlen.map_or(rest.len(), |m| m.min(rest.len()));
        if let Some(i) = term.and_then(|t| rest[..limit].iter().position(|&b| b == t)) {
            out.push((rest[..=i].to_vec(), ReadStatus::Term));
            rest = &rest[i + 1..];
        } else if maxlen.is_some_and(|m| rest.len() >= m) {
            let m = maxlen.unwrap();
            out.push((rest[..m].to_vec(), ReadStatus::Maxlen));
            rest = &rest[m..];
        } else {
            out.push((rest.to_vec(), ReadStatus::Eof));
            return out;
        }
    }
}

proptest! {
    #[test]
    fn segmentation_does_not_change_results(
        input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..400),
        cuts in proptest::collection::vec(0usize..50, 0..20),
        maxlen in proptest::option::of(0usize..40),
        term in proptest::option::of(prop_oneof![Just(b'\n'), any::<u8>()]),
    ) {
        prop_assert_eq!(read_all(&input, &cuts, maxlen, term), oracle(&input, maxlen, term));
    }
}
