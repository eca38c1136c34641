//! A connection driver over the pure HTTP parsers, shared by the corpus, property and fuzz
//! replay tests: it reads pipelined requests (head, framing, body) from input that arrives
//! in pieces, and describes what it saw as one line per request, so that feeding the same
//! bytes in any segmentation can be compared line for line.

#![allow(dead_code)] // each test crate uses a different part

use moonbridge::http::chunked::{ChunkedDecoder, Decoded};
use moonbridge::http::framing::{framing, BodyKind};
use moonbridge::http::head::{HeadParser, Limits, Status};

/// Where the driver is between pieces of input.
enum Phase {
    Head(HeadParser),
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Reads requests from `pieces` (delivered in order) until the input ends, an error occurs
/// or a request asks to close. Returns one line per request, then one line for how it ended.
pub fn run(pieces: &[&[u8]], limits: &Limits) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut phase = Phase::Head(HeadParser::new());
    let mut keep_alive = true;
    let mut body = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match &mut phase {
                Phase::Head(parser) => match parser.parse(&buf, limits) {
                    Ok(Status::Partial) => break,
                    Err(e) => return end(lines, format!("error {} {e:?}", e.status())),
                    Ok(Status::Complete(head, used)) => {
                        let f = match framing(&head) {
                            Ok(f) => f,
                            Err(e) => return end(lines, format!("error {} {e:?}", e.status())),
                        };
                        let p = &head.parts;
                        lines.push(format!(
                            "{} {} {:?} path={} query={} authority={} headers={} keep_alive={} \
                             expect={} body={:?}",
                            esc(head.method),
                            esc(head.target),
                            head.version,
                            opt(p.path),
                            opt(p.query),
                            opt(p.authority),
                            head.headers.len(),
                            f.keep_alive,
                            f.expect_continue,
                            f.body
                        ));
                        keep_alive = f.keep_alive;
                        buf.drain(..used);
                        phase = match f.body {
                            BodyKind::None | BodyKind::Length(0) => {
                                next_request(&mut lines, &mut body)
                            }
                            BodyKind::Length(n) => Phase::Length(n),
                            BodyKind::Chunked => Phase::Chunked(ChunkedDecoder::default()),
                        };
                    }
                },
                Phase::Length(left) => {
                    let n = (*left).min(buf.len() as u64) as usize;
                    body.extend(buf.drain(..n));
                    *left -= n as u64;
                    if *left > 0 {
                        break;
                    }
                    phase = next_request(&mut lines, &mut body);
                }
                Phase::Chunked(decoder) => match decoder.feed(&buf) {
                    Ok(Decoded::Data(range)) => {
                        body.extend_from_slice(&buf[range.clone()]);
                        buf.drain(..range.end);
                    }
                    Ok(Decoded::NeedMore) => {
                        buf.clear();
                        break;
                    }
                    Ok(Decoded::Done { consumed }) => {
                        buf.drain(..consumed);
                        let trailers: Vec<String> = decoder
                            .trailers()
                            .map(|(n, v)| format!("{}={}", esc(n), esc(v)))
                            .collect();
                        if !trailers.is_empty() {
                            lines.push(format!("  trailers {}", trailers.join(" ")));
                        }
                        phase = next_request(&mut lines, &mut body);
                    }
                    Err(e) => return end(lines, format!("error {} {e:?}", e.status())),
                },
            }
            if matches!(phase, Phase::Head(_)) && !keep_alive {
                return end(lines, "close".into());
            }
        }
    }
    let ending = match phase {
        Phase::Head(_) if buf.is_empty() => "end".to_string(),
        Phase::Head(_) => format!("incomplete head ({} bytes)", buf.len()),
        Phase::Length(_) | Phase::Chunked(_) => "incomplete body".to_string(),
    };
    end(lines, ending)
}

fn next_request(lines: &mut Vec<String>, body: &mut Vec<u8>) -> Phase {
    lines.push(format!("  body {}", esc(body)));
    body.clear();
    Phase::Head(HeadParser::new())
}

fn end(mut lines: Vec<String>, last: String) -> Vec<String> {
    lines.push(last);
    lines
}

/// Bytes as printable ASCII with escapes, quoted.
pub fn esc(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn opt(bytes: Option<&[u8]>) -> String {
    bytes.map_or("nil".into(), esc)
}

/// Splits `input` into pieces of the given sizes (the rest is one last piece).
pub fn segment<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    for &n in sizes {
        let (a, b) = rest.split_at(n.min(rest.len()));
        pieces.push(a);
        rest = b;
    }
    pieces.push(rest);
    pieces
}

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
