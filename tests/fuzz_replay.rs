//! Runs the fuzz targets' checks on stable within `cargo test`: replays every file in
//! `fuzz/corpus/{head,chunked}` if present (cargo-fuzz writes them there; they are not
//! committed), then mutates the `tests/data/http` corpus for a bounded time. Each input must
//! give the same result whole, byte by byte and in random pieces, and must not panic.

mod corpus_files;

use std::path::Path;
use std::time::{Duration, Instant};

use corpus_files::unescape;
use moonbridge::http::chunked::{ChunkedDecoder, Decoded};
use moonbridge::http::drive::script::{run, segment};
use moonbridge::http::head::Limits;

const LIMITS: [Limits; 2] = [
    Limits {
        head_size: 2048,
        target_len: 256,
        headers: 32,
    },
    Limits {
        head_size: 1 << 20,
        target_len: 64 << 10,
        headers: 256,
    },
];

/// How long the random mutation loop may run.
const BUDGET: Duration = Duration::from_secs(2);

/// A small deterministic generator (xorshift64*), so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Checks that a connection's input gives one verdict however it is cut.
fn check_head(input: &[u8], rng: &mut Rng) {
    for limits in &LIMITS {
        let whole = run(&[input], limits);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            run(&bytes, limits),
            whole,
            "byte by byte: {:?}",
            input.escape_ascii()
        );
        let cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(64)).collect();
        let pieces = segment(input, &cuts);
        assert_eq!(
            run(&pieces, limits),
            whole,
            "cut {cuts:?}: {:?}",
            input.escape_ascii()
        );
    }
}

/// Decodes a chunked body from `pieces`: the data, and the end (consumed bytes or error).
fn decode(pieces: &[&[u8]]) -> (Vec<u8>, String) {
    let mut decoder = ChunkedDecoder::default();
    let (mut data, mut offset) = (Vec::new(), 0);
    for piece in pieces {
        let mut rest = *piece;
        loop {
            match decoder.feed(rest) {
                Ok(Decoded::Data(r)) => {
                    data.extend_from_slice(&rest[r.clone()]);
                    offset += r.end;
                    rest = &rest[r.end..];
                }
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Done { consumed }) => {
                    return (data, format!("done {}", offset + consumed))
                }
                Err(e) => return (data, format!("{e:?}")),
            }
        }
        offset += rest.len();
    }
    (data, "need more".into())
}

fn check_chunked(input: &[u8], rng: &mut Rng) {
    let whole = decode(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        decode(&bytes),
        whole,
        "byte by byte: {:?}",
        input.escape_ascii()
    );
    let cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(64)).collect();
    assert_eq!(
        decode(&segment(input, &cuts)),
        whole,
        "cut {cuts:?}: {:?}",
        input.escape_ascii()
    );
}

/// Every file of `fuzz/corpus/<target>`, if that directory exists.
fn fuzz_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn replay_fuzz_corpus() {
    let mut rng = Rng(0x5eed);
    let heads = fuzz_corpus("head");
    let bodies = fuzz_corpus("chunked");
    for input in &heads {
        check_head(input, &mut rng);
    }
    for input in &bodies {
        check_chunked(input, &mut rng);
    }
    println!(
        "replayed {} head and {} chunked inputs",
        heads.len(),
        bodies.len()
    );
}

#[test]
fn mutate_corpus_for_a_bounded_time() {
    let seeds: Vec<Vec<u8>> = corpus_files::corpus()
        .iter()
        .map(|(_, text)| unescape(text.split("--- expect\n").next().unwrap()))
        .collect();
    const BYTES: &[u8] = b"\r\n\0 \t:,;\"0123456789aAfF-+=/?*\x7f\x80\xff\x0b";
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < BUDGET && runs < 200_000 {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len() + 1);
            let byte = BYTES[rng.below(BYTES.len())];
            match rng.below(4) {
                0 if at < input.len() => input[at] = byte,
                1 if at < input.len() => drop(input.remove(at)),
                2 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    let len = rng.below(other.len() - from + 1).min(64);
                    input.splice(at..at, other[from..from + len].iter().copied());
                }
                _ => input.insert(at, byte),
            }
        }
        check_head(&input, &mut rng);
        // The bytes after the first empty line, as a chunked body.
        if let Some(i) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            check_chunked(&input[i + 4..], &mut rng);
        }
        runs += 1;
    }
    assert!(runs > 0);
    println!("{runs} mutated inputs in {:?}", start.elapsed());
}
