//! Runs the fuzz targets' checks on stable within `cargo test`: replays, for every target,
//! the committed corpus `fuzz/seeds/<target>` (minimized by `fuzz/deep.sh`) and whatever a
//! local run left in `fuzz/corpus/<target>` (not committed), then mutates the
//! `tests/data/http` corpus for a bounded time. No input may panic; heads and chunked
//! bodies must give the same result whole, byte by byte and in random pieces, connections
//! the same transcript however they are cut, and the incremental form decoder the same
//! fields as the whole-body parser.

mod corpus_files;

use std::path::Path;
use std::time::{Duration, Instant};

use corpus_files::unescape;
use moonbridge::http::chunked::{ChunkedDecoder, Decoded};
use moonbridge::http::drive::script::{run, segment};
use moonbridge::http::head::Limits;
use moonbridge::http::{cookie, form, framing, head, multipart};

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

/// Checks that a connection's input gives the same transcript whole, byte by byte and cut
/// at `cuts`.
fn check_cuts(input: &[u8], limits: &Limits, cuts: &[usize]) {
    let whole = run(&[input], limits);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run(&bytes, limits),
        whole,
        "byte by byte: {:?}",
        input.escape_ascii()
    );
    assert_eq!(
        run(&segment(input, cuts), limits),
        whole,
        "cut {cuts:?}: {:?}",
        input.escape_ascii()
    );
}

/// Checks that a connection's input gives one verdict however it is cut.
fn check_head(input: &[u8], rng: &mut Rng) {
    for limits in &LIMITS {
        let cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(64)).collect();
        check_cuts(input, limits, &cuts);
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

/// Every file of `fuzz/seeds/<target>` and `fuzz/corpus/<target>` (either may be missing).
fn fuzz_corpus(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            inputs.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    inputs
}

/// The `head` target: parse with small limits, then the framing of what parses.
fn check_parse_head(input: &[u8]) {
    let limits = Limits {
        head_size: 2048,
        target_len: 256,
        headers: 32,
    };
    if let Ok(head::Status::Complete(h, _)) = head::parse_head(input, &limits) {
        let _ = framing::framing(&h);
    }
}

/// The `multipart` target: the first byte picks the piece size.
fn check_multipart(input: &[u8]) {
    let Some((&step, body)) = input.split_first() else {
        return;
    };
    let limits = multipart::Limits {
        max_chunk: 64,
        max_header_bytes: 512,
        max_headers: 8,
    };
    let mut dec = multipart::MultipartDecoder::with_boundary(b"XyZ", limits);
    for chunk in body.chunks(step as usize % 16 + 1) {
        let mut feed = dec.feed(chunk);
        while let Ok(Some(_)) = feed.next_event() {}
    }
    let _ = dec.finish();
}

/// The `form` target: the incremental decoder agrees with the whole-body parser.
fn check_form(input: &[u8]) {
    let whole = form::parse_urlencoded(input);
    let _ = form::parse_query(input);
    let mut inc = form::FormDecoder::new(1 << 20);
    for chunk in input.chunks(7) {
        if inc.feed(chunk).is_err() {
            return;
        }
    }
    assert_eq!(
        inc.finish().len(),
        whole.len(),
        "incremental: {:?}",
        input.escape_ascii()
    );
    let _ = cookie::parse_cookies(input);
}

/// The `conn` target: the same transcript whole, cut where the first byte says, and byte
/// by byte.
fn check_conn(input: &[u8]) {
    let cut = input.first().map_or(0, |&b| b as usize);
    check_cuts(input, &LIMITS[0], &[cut]);
}

#[test]
fn replay_fuzz_corpus() {
    let mut rng = Rng(0x5eed);
    let mut counts = Vec::new();
    for target in ["head", "chunked", "multipart", "form", "conn"] {
        let inputs = fuzz_corpus(target);
        for input in &inputs {
            match target {
                "head" => {
                    check_parse_head(input);
                    check_head(input, &mut rng);
                }
                "chunked" => check_chunked(input, &mut rng),
                "multipart" => check_multipart(input),
                "form" => check_form(input),
                _ => check_conn(input),
            }
        }
        counts.push(format!("{} {target}", inputs.len()));
    }
    println!("replayed {} inputs", counts.join(", "));
}

/// The committed corpus is there, for every target (a clean clone has no `fuzz/corpus`).
#[test]
fn the_committed_corpus_covers_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for target in ["head", "chunked", "multipart", "form", "conn"] {
        let n = std::fs::read_dir(root.join(target)).map_or(0, |d| d.count());
        assert!(n > 0, "fuzz/seeds/{target} is empty or missing");
    }
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
