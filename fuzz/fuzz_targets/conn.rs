//! The connection machine: a connection's input through the scripted driver, whole and cut
//! where the input's first byte says; both must give the same transcript.
#![no_main]
use moonbridge::http::drive::script::{run, segment};
use moonbridge::http::head::Limits;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        head_size: 2048,
        target_len: 256,
        headers: 32,
    };
    let whole = run(&[data], &limits);
    let cut = data.first().map_or(0, |&b| b as usize);
    assert_eq!(run(&segment(data, &[cut]), &limits), whole);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(run(&bytes, &limits), whole);
});
