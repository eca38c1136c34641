//! Throughput of the sans-IO parsers, with a plain harness (stable Rust, no extra crate):
//! `cargo bench --features lua54 --bench parsers`. Each case checks what it parsed (a
//! parser that returned early would otherwise look fast) and prints bytes/s and the time
//! per item; the head parser runs next to httparse on the same inputs. The figures are for
//! comparing builds and parsers on one machine, not assertions.

use std::hint::black_box;
use std::time::{Duration, Instant};

use moonbridge::http::chunked::{ChunkedDecoder, ChunkedLimits, Decoded};
use moonbridge::http::form::parse_urlencoded;
use moonbridge::http::head::{HeadParser, Limits, Status};
use moonbridge::http::multipart::{self, Event, MultipartDecoder};

/// How long each case runs (after one warm-up pass of the same length / 4).
const RUN: Duration = Duration::from_millis(400);

/// Runs `f` (which handles `bytes` bytes of input per call) repeatedly for about RUN and
/// prints the rate.
fn bench(name: &str, bytes: usize, mut f: impl FnMut()) {
    let warm = Instant::now();
    while warm.elapsed() < RUN / 4 {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..16 {
            f();
        }
        calls += 16;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<50} {:>9.1} MiB/s {:>10.0} ns/call",
        bytes as f64 * calls as f64 / secs / (1 << 20) as f64,
        secs * 1e9 / calls as f64
    );
}

/// A head as a browser sends it (about 700 bytes, 12 fields).
const BROWSER: &[u8] = b"GET /shop/items?id=12345&sort=price HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://www.example.com/shop/\r\n\
Connection: keep-alive\r\n\
Cookie: session=8f2b1c9d4e7a6b3c; theme=dark; cart=3; consent=yes; tz=Europe%2FBerlin\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";

/// The head wrk sends.
const SMALL: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

fn many_fields() -> Vec<u8> {
    let mut h = b"POST /api/v1/upload HTTP/1.1\r\nHost: api.example.com\r\n".to_vec();
    for i in 0..60 {
        h.extend_from_slice(format!("X-Field-{i}: value number {i} of the head\r\n").as_bytes());
    }
    h.extend_from_slice(b"\r\n");
    h
}

fn heads() {
    let many = many_fields();
    for (label, head, fields) in [
        ("wrk GET", SMALL, 1),
        ("browser GET", BROWSER, 12),
        ("62 fields", &many[..], 61),
    ] {
        let limits = Limits::default();
        bench(
            &format!("head, moonbridge: {label}"),
            head.len(),
            || match HeadParser::new().parse(black_box(head), &limits) {
                Ok(Status::Complete(h, used)) => {
                    assert_eq!((h.headers.len(), used), (fields, head.len()))
                }
                other => panic!("{label}: {other:?}"),
            },
        );
        bench(&format!("head, httparse: {label}"), head.len(), || {
            let mut fields_buf = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut fields_buf);
            match req.parse(black_box(head)) {
                Ok(httparse::Status::Complete(used)) => {
                    assert_eq!((req.headers.len(), used), (fields, head.len()))
                }
                other => panic!("{label}: {other:?}"),
            }
        });
    }
}

/// `data` in the chunked coding, `chunk` bytes a chunk.
fn chunked_body(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn chunked() {
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for chunk in [64, 4096] {
        let body = chunked_body(&data, chunk);
        bench(
            &format!("chunked, 1 MiB in {chunk}-byte chunks"),
            body.len(),
            || {
                let mut d = ChunkedDecoder::new(ChunkedLimits::default());
                let (mut pos, mut got) = (0, 0);
                loop {
                    match d.feed(black_box(&body[pos..])).unwrap() {
                        Decoded::Data(r) => {
                            got += r.len();
                            pos += r.end;
                        }
                        Decoded::Done { consumed } => {
                            pos += consumed;
                            break;
                        }
                        Decoded::NeedMore => panic!("the body is complete"),
                    }
                }
                assert_eq!((got, pos), (data.len(), body.len()));
            },
        );
    }
}

fn urlencoded() {
    let mut body = Vec::new();
    for i in 0..2000 {
        if i > 0 {
            body.push(b'&');
        }
        body.extend_from_slice(format!("field{i}=some+value%20with%C3%A9scapes{i}").as_bytes());
    }
    bench("urlencoded, 2000 fields with escapes", body.len(), || {
        let pairs = parse_urlencoded(black_box(&body));
        assert_eq!(pairs.len(), 2000);
        assert_eq!(&pairs[1999].0[..], b"field1999");
    });
    let plain: Vec<u8> = (0..2000)
        .map(|i| format!("k{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
    bench("urlencoded, 2000 plain fields", plain.len(), || {
        assert_eq!(parse_urlencoded(black_box(&plain)).len(), 2000);
    });
}

fn multipart_body(file: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in [("title", &b"A holiday picture"[..]), ("album", b"2026")] {
        b.extend_from_slice(b"--XyZ42\r\nContent-Disposition: form-data; name=\"");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\"\r\n\r\n");
        b.extend_from_slice(value);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(
        b"--XyZ42\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\
Content-Type: image/jpeg\r\n\r\n",
    );
    b.extend_from_slice(file);
    b.extend_from_slice(b"\r\n--XyZ42--\r\n");
    b
}

fn multipart() {
    // bytes that look like a delimiter start now and then ("\r\n--"), as binary files do
    let file: Vec<u8> = (0..1 << 20)
        .map(|i: u32| match i % 997 {
            0 => b'\r',
            1 => b'\n',
            2 | 3 => b'-',
            n => n as u8,
        })
        .collect();
    let expected = file.len() + "A holiday picture".len() + "2026".len();
    let body = multipart_body(&file);
    for feed in [body.len(), 16384] {
        let label = if feed == body.len() {
            "whole".to_string()
        } else {
            format!("{feed}-byte reads")
        };
        bench(
            &format!("multipart, 3 parts, 1 MiB file, {label}"),
            body.len(),
            || {
                let mut d = MultipartDecoder::with_boundary(b"XyZ42", multipart::Limits::default());
                let (mut data, mut parts) = (0, 0);
                for piece in black_box(&body).chunks(feed) {
                    let mut f = d.feed(piece);
                    while let Some(e) = f.next_event().unwrap() {
                        match e {
                            Event::Data(b) => data += b.len(),
                            Event::PartEnd => parts += 1,
                            _ => {}
                        }
                    }
                }
                d.finish().unwrap();
                assert_eq!((data, parts), (expected, 3));
            },
        );
    }
}

fn main() {
    // `cargo bench` passes "--bench"; a name given after `--` picks the cases run
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let cases: [(&str, fn()); 4] = [
        ("head", heads),
        ("chunked", chunked),
        ("urlencoded", urlencoded),
        ("multipart", multipart),
    ];
    for (name, run) in cases {
        if only.is_empty() || only.iter().any(|o| name.contains(o.as_str())) {
            run();
        }
    }
}
