//! Multipart decoder tests: table rows of valid and invalid bodies, each decoded whole, one
//! byte at a time, split at every point, and with trailing bytes; property tests for random
//! segmentation and random input.

use super::*;
use proptest::prelude::*;

const B: &[u8] = b"XyZ";

/// An event with owned data; consecutive `Data` events are merged into one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Start(Part),
    Data(Vec<u8>),
    End,
    Done,
}

fn start(name: &str, file_name: Option<&[u8]>, content_type: Option<&str>) -> Ev {
    Ev::Start(Part {
        name: Some(name.as_bytes().to_vec()),
        file_name: file_name.map(<[u8]>::to_vec),
        content_type: content_type.map(|c| c.as_bytes().to_vec()),
    })
}

fn data(bytes: &[u8]) -> Ev {
    Ev::Data(bytes.to_vec())
}

/// Decodes `segments` in order, checking the decoder's promises after every event and feed:
/// `Data` is non-empty and at most `max_chunk`, and between feeds fewer than boundary + 4
/// bytes of tail are held.
fn run(boundary: &[u8], limits: Limits, segments: &[&[u8]]) -> Result<Vec<Ev>, MultipartError> {
    let mut d = MultipartDecoder::with_boundary(boundary, limits);
    let mut out = Vec::new();
    for segment in segments {
        let mut feed = d.feed(segment);
        while let Some(event) = feed.next_event()? {
            match event {
                Event::Data(bytes) => {
                    assert!(!bytes.is_empty() && bytes.len() <= limits.max_chunk.max(1));
                    match out.last_mut() {
                        Some(Ev::Data(prev)) => prev.extend_from_slice(bytes),
                        _ => out.push(data(bytes)),
                    }
                }
                Event::PartStart(part) => out.push(Ev::Start(part)),
                Event::PartEnd => out.push(Ev::End),
                Event::Done => out.push(Ev::Done),
            }
        }
        assert!(
            d.tail.len() - d.tail_pos < boundary.len() + 4,
            "tail too long"
        );
        assert!(d.machine.head.len() <= limits.max_header_bytes);
    }
    d.finish()?;
    Ok(out)
}

/// `body` cut into pieces of the given lengths (the rest last).
fn split<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    for &c in cuts {
        let end = (pos + c).min(body.len());
        pieces.push(&body[pos..end]);
        pos = end;
    }
    pieces.push(&body[pos..]);
    pieces
}

/// Every segmentation the tests promise: whole, byte by byte, every two-way split.
fn segmentations(body: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all = vec![vec![body], body.chunks(1).collect()];
    all.extend((0..=body.len()).map(|cut| split(body, &[cut])));
    all
}

fn check(boundary: &[u8], limits: Limits, body: &[u8], expected: &Result<Vec<Ev>, MultipartError>) {
    for segments in segmentations(body) {
        let lens: Vec<usize> = segments.iter().map(|s| s.len()).collect();
        assert_eq!(
            &run(boundary, limits, &segments),
            expected,
            "segments {lens:?}"
        );
    }
}

fn valid_cases() -> Vec<(Vec<u8>, Vec<Ev>)> {
    let two_fields = (
        b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XyZ\r\n\
          Content-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\
          Content-Type: text/plain\r\n\r\nline1\r\nline2\r\n--XyZ--\r\n"
            .to_vec(),
        vec![
            start("a", None, None),
            data(b"hello"),
            Ev::End,
            start("f", Some(b"a.txt"), Some("text/plain")),
            data(b"line1\r\nline2"),
            Ev::End,
            Ev::Done,
        ],
    );
    let preamble_epilogue = (
        b"ignored --XyZ preamble\r\n--XyZ\r\ncontent-disposition: form-data; name=x\r\n\r\n1\r\n\
          --XyZ--epilogue\r\n--XyZ\r\nignored too"
            .to_vec(),
        vec![start("x", None, None), data(b"1"), Ev::End, Ev::Done],
    );
    let empty_part_and_padding = (
        b"--XyZ \t\r\nContent-Disposition: form-data; name=\"e\"; filename=\"\"\r\n\r\n\r\n\
          --XyZ\t\r\n\r\nno headers\r\n--XyZ--"
            .to_vec(),
        vec![
            start("e", Some(b""), None),
            Ev::End,
            Ev::Start(Part::default()),
            data(b"no headers"),
            Ev::End,
            Ev::Done,
        ],
    );
    let near_delimiters = (
        b"--XyZ\r\nContent-Disposition: form-data; name=n\r\n\r\n\
          a\r\n--XyY\r\n--Xy\r--XyZ\n--XyZ\r\r\n-\r\n\r\n--\r\n--XyZ--"
            .to_vec(),
        vec![
            start("n", None, None),
            data(b"a\r\n--XyY\r\n--Xy\r--XyZ\n--XyZ\r\r\n-\r\n\r\n--"),
            Ev::End,
            Ev::Done,
        ],
    );
    let parameters = (
        b"--XyZ\r\nX-Other: whatever\r\nCONTENT-DISPOSITION: form-data ; NAME = \"q\\\"\\\\\" ;\
          filename=\"C:\\new\\a.txt\"\r\nContent-Transfer-Encoding: binary\r\n\r\nv\r\n\
          --XyZ\r\nContent-Disposition: form-data; name=\xc3\xa4; filename=\"x\"; \
          filename*=UTF-8''%C3%A4.txt\r\nContent-Type:  image/png \r\n\r\n\x00\xff\r\n--XyZ--"
            .to_vec(),
        vec![
            start("q\"\\", Some(b"C:\\new\\a.txt"), None),
            data(b"v"),
            Ev::End,
            start("ä", Some("ä.txt".as_bytes()), Some("image/png")),
            data(b"\x00\xff"),
            Ev::End,
            Ev::Done,
        ],
    );
    let only_close = (b"--XyZ--".to_vec(), vec![Ev::Done]);
    vec![
        two_fields,
        preamble_epilogue,
        empty_part_and_padding,
        near_delimiters,
        parameters,
        only_close,
    ]
}

#[test]
fn valid_bodies_every_segmentation() {
    for (body, events) in valid_cases() {
        check(B, Limits::default(), &body, &Ok(events));
    }
}

#[test]
fn valid_bodies_with_trailing_bytes() {
    for (mut body, events) in valid_cases() {
        body.extend_from_slice(b"\r\n--XyZ\r\ntrailing bytes after the end");
        check(B, Limits::default(), &body, &Ok(events));
    }
}

#[test]
fn three_way_splits() {
    let (body, events) = valid_cases().swap_remove(0);
    let expected = Ok(events);
    for a in 0..=body.len() {
        for b in 0..=body.len() - a {
            assert_eq!(
                run(B, Limits::default(), &split(&body, &[a, b])),
                expected,
                "{a},{b}"
            );
        }
    }
}

#[test]
fn data_is_cut_at_max_chunk_and_tail_stays_small() {
    let payload: Vec<u8> = (0..5000u32)
        .map(|i| b"\r\n-XyZab"[i as usize % 8])
        .collect();
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=big\r\n\r\n".to_vec();
    body.extend_from_slice(&payload);
    body.extend_from_slice(b"\r\n--XyZ--");
    let expected = Ok(vec![
        start("big", None, None),
        data(&payload),
        Ev::End,
        Ev::Done,
    ]);
    for max_chunk in [0, 1, 7, 100, 16384] {
        let limits = Limits {
            max_chunk,
            ..Limits::default()
        };
        for piece in [1, 3, 64, 1000, body.len()] {
            let segments: Vec<&[u8]> = body.chunks(piece).collect();
            assert_eq!(
                run(B, limits, &segments),
                expected,
                "max {max_chunk} piece {piece}"
            );
        }
    }
}

#[test]
fn data_comes_from_the_fed_chunk() {
    let mut d = MultipartDecoder::with_boundary(B, Limits::default());
    let head = b"--XyZ\r\nContent-Disposition: form-data; name=z\r\n\r\n";
    let mut feed = d.feed(head);
    assert!(matches!(feed.next_event(), Ok(Some(Event::PartStart(_)))));
    assert_eq!(feed.next_event(), Ok(None));
    let chunk = vec![b'x'; 4096];
    let mut feed = d.feed(&chunk);
    let Ok(Some(Event::Data(bytes))) = feed.next_event() else {
        panic!("no data")
    };
    // zero-copy: the data is the fed chunk itself, not a copy
    assert_eq!(bytes.as_ptr(), chunk.as_ptr());
    assert_eq!(bytes.len(), 4096);
}

#[test]
fn invalid_bodies_every_segmentation() {
    use MultipartError::*;
    let small = Limits {
        max_header_bytes: 40,
        max_headers: 2,
        ..Limits::default()
    };
    let cd = "Content-Disposition: form-data; name=a";
    let cases: Vec<(String, Limits, MultipartError)> = vec![
        (String::new(), Limits::default(), Truncated),
        ("no delimiter at all".into(), Limits::default(), Truncated),
        ("--XyZ".into(), Limits::default(), Truncated),
        (
            format!("--XyZ\r\n{cd}\r\n\r\ndata\r\n--Xy"),
            Limits::default(),
            Truncated,
        ),
        (
            format!("--XyZ\r\n{cd}\r\n\r\ndata\r\n--XyZ-"),
            Limits::default(),
            Truncated,
        ),
        ("--XyZx\r\n".into(), Limits::default(), AfterBoundary),
        (
            "--XyZ\n\r\n\r\n--XyZ--".into(),
            Limits::default(),
            AfterBoundary,
        ),
        ("--XyZ -\r\n".into(), Limits::default(), AfterBoundary),
        ("--XyZ-x".into(), Limits::default(), AfterBoundary),
        ("--XyZ\rx".into(), Limits::default(), AfterBoundary),
        (
            format!("--XyZ\r\n{cd}\r\n\r\nd\r\n--XyZ2\r\n"),
            Limits::default(),
            AfterBoundary,
        ),
        (format!("--XyZ\r\n{cd}\n\r\n"), Limits::default(), BareLf),
        ("--XyZ\r\n\n".into(), Limits::default(), BareLf),
        (
            "--XyZ\r\nbogus\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            format!("--XyZ\r\n{cd}\r\n folded\r\n\r\n"),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nContent-Type : a\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nX: a\rb\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nX: a\0b\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            format!("--XyZ\r\n{cd}\r\n{cd}\r\n\r\n"),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"b\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nContent-Disposition: form-data; name\r\n\r\n".into(),
            Limits::default(),
            InvalidHeader,
        ),
        (
            "--XyZ\r\nContent-Transfer-Encoding: base64\r\n\r\n".into(),
            Limits::default(),
            UnsupportedEncoding,
        ),
        (
            format!("--XyZ\r\n{cd}\r\nX-Long: {}\r\n\r\n", "x".repeat(10)),
            small,
            HeadersTooLarge,
        ),
        (
            format!("--XyZ\r\nX-Long: {}", "x".repeat(40)),
            small,
            HeadersTooLarge,
        ),
        (
            "--XyZ\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n".into(),
            small,
            TooManyHeaders,
        ),
    ];
    for (body, limits, error) in cases {
        check(B, limits, body.as_bytes(), &Err(error));
    }
}

#[test]
fn limits_at_the_edge_are_accepted() {
    let limits = Limits {
        max_header_bytes: 14,
        max_headers: 2,
        ..Limits::default()
    };
    // two header lines of 6 bytes (CRLF included) and the empty line: 14 bytes in all
    let body = b"--XyZ\r\nA: 1\r\nB: 2\r\n\r\nv\r\n--XyZ--";
    check(
        B,
        limits,
        body,
        &Ok(vec![
            Ev::Start(Part::default()),
            data(b"v"),
            Ev::End,
            Ev::Done,
        ]),
    );
}

#[test]
fn errors_are_sticky_and_more_input_after_done_is_ignored() {
    let mut d = MultipartDecoder::with_boundary(B, Limits::default());
    let mut feed = d.feed(b"--XyZ?");
    assert_eq!(feed.next_event(), Err(MultipartError::AfterBoundary));
    assert_eq!(feed.next_event(), Err(MultipartError::AfterBoundary));
    assert_eq!(
        d.feed(b"\r\n").next_event(),
        Err(MultipartError::AfterBoundary)
    );
    assert_eq!(d.finish(), Err(MultipartError::AfterBoundary));
    assert!(!d.is_done());

    let mut d = MultipartDecoder::with_boundary(B, Limits::default());
    assert_eq!(d.feed(b"--XyZ--").next_event(), Ok(Some(Event::Done)));
    assert!(d.is_done());
    assert_eq!(d.feed(b"\r\n--XyZ\r\n\r\nmore").next_event(), Ok(None));
    assert_eq!(d.finish(), Ok(()));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn boundary_table() {
    use MultipartError::*;
    let b70 = "b".repeat(70);
    let long70 = format!("multipart/form-data; boundary={b70}");
    let long71 = format!("multipart/form-data; boundary={b70}b");
    let cases: Vec<(&[u8], Result<&str, MultipartError>)> = vec![
        (b"multipart/form-data; boundary=XyZ", Ok("XyZ")),
        (b"Multipart/Form-Data;boundary=\"a b\"", Ok("a b")),
        (
            b" multipart/form-data ; charset=utf-8; boundary=abc",
            Ok("abc"),
        ),
        (b"multipart/form-data; BOUNDARY = abc ;", Ok("abc")),
        (b"multipart/form-data; boundary=a; boundary=b", Ok("a")),
        (
            b"multipart/form-data; boundary=\"'()+_,-./:=? x\"",
            Ok("'()+_,-./:=? x"),
        ),
        (long70.as_bytes(), Ok(&b70)),
        (long71.as_bytes(), Err(InvalidBoundary)),
        (b"multipart/form-data; boundary=", Err(InvalidBoundary)),
        (b"multipart/form-data; boundary=\"\"", Err(InvalidBoundary)),
        (
            b"multipart/form-data; boundary=\"a\\\"b\"",
            Err(InvalidBoundary),
        ),
        (
            b"multipart/form-data; boundary=\"ab \"",
            Err(InvalidBoundary),
        ),
        (b"multipart/form-data; boundary=a{b", Err(InvalidBoundary)),
        (
            b"multipart/form-data; boundary=\xc3\xa4",
            Err(InvalidBoundary),
        ),
        (b"multipart/form-data", Err(MissingBoundary)),
        (b"multipart/form-data; charset=utf-8", Err(MissingBoundary)),
        (b"multipart/form-data; boundary=\"abc", Err(MissingBoundary)),
        (b"multipart/form-data; junk", Err(MissingBoundary)),
        (b"multipart/mixed; boundary=x", Err(NotMultipart)),
        (b"text/plain", Err(NotMultipart)),
        (b"", Err(NotMultipart)),
    ];
    for (content_type, expected) in cases {
        let got = boundary(content_type).map(|b| std::str::from_utf8(b).unwrap());
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(content_type));
    }
    assert!(MultipartDecoder::new(b"multipart/form-data; boundary=x", Limits::default()).is_ok());
    assert_eq!(
        MultipartDecoder::new(b"text/plain", Limits::default()).err(),
        Some(NotMultipart)
    );
    assert_eq!(NotMultipart.status(), 415);
    assert_eq!(BareLf.status(), 400);
    assert_eq!(
        Truncated.to_string(),
        "Premature end of multipart/form-data request body"
    );
}

/// Builds a body from parts (name, data) with boundary `B`, and the events it must yield.
fn build(parts: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<Ev>) {
    let mut body = b"preamble".to_vec();
    let mut events = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\"\r\n\r\n");
        body.extend_from_slice(bytes);
        events.push(start(name, None, None));
        if !bytes.is_empty() {
            events.push(data(bytes));
        }
        events.push(Ev::End);
    }
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    events.push(Ev::Done);
    (body, events)
}

/// Bytes that often form (partial) delimiters.
fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b'-'),
        Just(b'X'),
        Just(b'y'),
        Just(b'Z'),
        Just(b':'),
        any::<u8>()
    ];
    proptest::collection::vec(byte, 0..max)
}

/// Data that never contains the delimiter (as senders guarantee).
fn part_data() -> impl Strategy<Value = Vec<u8>> {
    tricky_bytes(40).prop_filter("contains the delimiter", |d| {
        let mut probe = b"\r\n".to_vec();
        probe.extend_from_slice(d);
        probe.extend_from_slice(b"\r\n");
        memchr::memmem::find(&probe, b"\r\n--XyZ").is_none()
    })
}

proptest! {
    #[test]
    fn random_segmentation_yields_the_same_events(
        parts in proptest::collection::vec(("[a-z]{0,5}", part_data()), 0..4),
        cuts in proptest::collection::vec(0usize..24, 0..16),
        max_chunk in 1usize..9,
    ) {
        let (body, events) = build(&parts);
        let limits = Limits { max_chunk, ..Limits::default() };
        prop_assert_eq!(run(B, limits, &split(&body, &cuts)), Ok(events));
    }

    #[test]
    fn random_input_never_panics_and_ignores_segmentation(
        body in tricky_bytes(120),
        cuts in proptest::collection::vec(0usize..10, 0..12),
    ) {
        let mut input = b"--XyZ\r\n".to_vec();
        input.extend_from_slice(&body);
        let limits = Limits { max_header_bytes: 30, max_headers: 3, max_chunk: 5 };
        for candidate in [&body[..], &input[..]] {
            let whole = run(B, limits, &[candidate]);
            prop_assert_eq!(run(B, limits, &split(candidate, &cuts)), whole);
        }
    }

    #[test]
    fn random_content_type_never_panics(ct in tricky_bytes(80)) {
        let mut with_prefix = b"multipart/form-data; boundary=".to_vec();
        with_prefix.extend_from_slice(&ct);
        for candidate in [&ct[..], &with_prefix[..]] {
            if let Ok(b) = boundary(candidate) {
                prop_assert!((1..=70).contains(&b.len()));
            }
        }
    }
}
