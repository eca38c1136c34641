//! multipart/form-data: the first byte picks a chunk size, the rest is fed in such chunks.
#![no_main]
use moonbridge::http::multipart::{Limits, MultipartDecoder};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else { return };
    let limits = Limits { max_chunk: 64, max_header_bytes: 512, max_headers: 8 };
    let mut dec = MultipartDecoder::with_boundary(b"XyZ", limits);
    for chunk in body.chunks(step as usize % 16 + 1) {
        let mut feed = dec.feed(chunk);
        loop {
            match feed.next_event() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = dec.finish();
});
