//! Request heads: parse, then decide the framing of whatever parses.
#![no_main]
use moonbridge::http::{framing::framing, head};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = head::Limits {
        head_size: 2048,
        target_len: 256,
        headers: 32,
    };
    if let Ok(head::Status::Complete(h, _)) = head::parse_head(data, &limits) {
        let _ = framing(&h);
    }
});
