//! Request heads: parse, then decide the framing of whatever parses. A parser that saw the
//! first byte alone parses the rest by its scan, never by the one-pass parse of a whole
//! head, and must give the same answer.
#![no_main]
use moonbridge::http::{framing::framing, head};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = head::Limits {
        head_size: 2048,
        target_len: 256,
        headers: 32,
    };
    let whole = head::parse_head(data, &limits);
    if let Ok(head::Status::Complete(h, _)) = &whole {
        let _ = framing(h);
    }
    if !data.is_empty() {
        let mut parser = head::HeadParser::new();
        let first = parser.parse(&data[..1], &limits);
        let split = match first {
            Ok(head::Status::Partial) => parser.parse(data, &limits),
            other => other,
        };
        assert_eq!(whole, split, "{:?}", data.escape_ascii());
    }
});
