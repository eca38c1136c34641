//! Query strings, urlencoded bodies (whole and incremental) and Cookie headers.
#![no_main]
use moonbridge::http::{cookie, form};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let whole = form::parse_urlencoded(data);
    let _ = form::parse_query(data);
    let mut inc = form::FormDecoder::new(1 << 20);
    for chunk in data.chunks(7) {
        if inc.feed(chunk).is_err() {
            return;
        }
    }
    // the incremental decoder agrees with the whole-body parser
    let pairs = inc.finish();
    assert_eq!(pairs.len(), whole.len());
    let _ = cookie::parse_cookies(data);
});
