//! Chunked bodies: decode until the input runs out, the body ends or an error.
#![no_main]
use moonbridge::http::chunked::{ChunkedDecoder, Decoded};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut decoder = ChunkedDecoder::default();
    let mut rest = data;
    while let Ok(Decoded::Data(range)) = decoder.feed(rest) {
        rest = &rest[range.end..];
    }
});
