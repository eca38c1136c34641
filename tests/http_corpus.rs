//! The request corpus: `tests/data/http/*.http`, each a connection's input and what the
//! server must make of it, checked whole, one byte at a time and split at every offset.
//!
//! File format: lines starting with `#` are comments. Then the input, written with escapes
//! (`\r`, `\n`, `\t`, `\0`, `\\`, `\xHH`); the file's own line breaks are ignored, so CRLF
//! is always spelled out. Then a line `--- expect`, followed by the lines that
//! `moonbridge::http::drive::script::run` must produce. `BLESS=1 cargo test --test http_corpus` rewrites the
//! expectations from the current behaviour (review the diff before committing it).

mod corpus_files;

use corpus_files::unescape;
use moonbridge::http::drive::script::{run, segment};
use moonbridge::http::head::Limits;

const MARK: &str = "--- expect\n";

/// Limits small enough for the 414 and 431 cases.
const LIMITS: Limits = Limits {
    head_size: 4096,
    target_len: 256,
    headers: 32,
};

#[test]
fn corpus() {
    let bless = std::env::var_os("BLESS").is_some();
    let cases = corpus_files::corpus();
    assert!(cases.len() >= 40, "the corpus is missing");
    for (path, text) in cases {
        let name = path.file_name().unwrap().to_string_lossy();
        let (source, expect) = text.split_once(MARK).unwrap_or((&text, ""));
        let input = unescape(source);
        let whole = run(&[&input], &LIMITS);
        if bless {
            std::fs::write(&path, format!("{source}{MARK}{}\n", whole.join("\n"))).unwrap();
            continue;
        }
        let expect: Vec<&str> = expect.lines().collect();
        assert_eq!(whole, expect, "{name}: whole");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, &LIMITS), expect, "{name}: byte by byte");
        for cut in 1..input.len() {
            assert_eq!(
                run(&segment(&input, &[cut]), &LIMITS),
                expect,
                "{name}: split at {cut}"
            );
        }
    }
}
