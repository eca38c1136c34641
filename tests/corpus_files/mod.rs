//! The request corpus files of `tests/data/http`: reading them and decoding their escaped
//! input. The connection they are fed to is the shipping machine, through
//! `moonbridge::http::drive::script`.

#![allow(dead_code)] // each test crate uses a different part

/// Decodes the input part of a corpus case: `#` comment lines and line breaks dropped,
/// escapes (`\r \n \t \0 \\ \xHH`) decoded.
pub fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.bytes());
    while let Some(b) = chars.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match chars.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = [chars.next().unwrap(), chars.next().unwrap()];
                let hex = std::str::from_utf8(&hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).expect("bad \\x escape"));
            }
            other => panic!("unknown escape \\{:?}", other.map(char::from)),
        }
    }
    out
}

/// The inputs of the corpus cases in `tests/data/http`, sorted by file name.
pub fn corpus() -> Vec<(std::path::PathBuf, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/http");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data/http")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    files
}
