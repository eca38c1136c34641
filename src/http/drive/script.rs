//! A driver over input given in pieces, with a clock the caller moves: each wait of the
//! machine takes the next piece (and after the last one, the end of input), so the same
//! bytes can be fed whole, byte by byte or split anywhere and the transcripts compared.
//! The handler it plays reads every request body whole and answers `200 OK` with it.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::http::conn::{After, Clock, Close, Config, Connection, Step};
use crate::http::head::Limits;

/// A clock that moves only when told.
#[derive(Clone, Copy, Debug)]
pub struct TestClock {
    pub start: Instant,
    pub elapsed: Duration,
}

impl TestClock {
    pub fn new() -> Self {
        TestClock {
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TestClock {
    fn now(&mut self) -> Instant {
        self.start + self.elapsed
    }
    fn unix_secs(&mut self) -> u64 {
        self.elapsed.as_secs()
    }
}

/// The options the transcripts use: the given head limits, a body limit of 1 MiB and no
/// timeouts (the input decides everything).
pub fn config(limits: Limits) -> Config {
    Config {
        head_limits: limits,
        body_limit: 1 << 20,
        max_input_chunk: 16 << 10,
        min_output_chunk: 0,
        idle_timeout: None,
        stall_timeout: None,
        header_timeout: None,
        busy_header_timeout: None,
        drain_timeout: None,
        static_headers: Vec::new(),
    }
}

/// Input arriving in pieces.
struct Feed<'a> {
    pieces: std::slice::Iter<'a, &'a [u8]>,
    buf: Vec<u8>,
    eof: bool,
}

impl Feed<'_> {
    /// The next piece, or the end of input.
    fn more(&mut self) {
        match self.pieces.next() {
            Some(p) => self.buf.extend_from_slice(p),
            None => self.eof = true,
        }
    }
}

/// Serves `pieces` on one connection and describes it, one line per request (its head and
/// framing), one per body, and a last one for how the connection ended.
pub fn run(pieces: &[&[u8]], limits: &Limits) -> Vec<String> {
    let mut lines = Vec::new();
    let mut clock = TestClock::new();
    let mut m = Connection::new(Rc::new(config(*limits)));
    let mut feed = Feed {
        pieces: pieces.iter(),
        buf: Vec::new(),
        eof: false,
    };
    loop {
        // the head
        let mut step = m.poll_head(&feed.buf, feed.eof, &mut clock);
        while let Step::Wait { .. } = step {
            feed.more();
            step = m.poll_head(&feed.buf, feed.eof, &mut clock);
        }
        let Step::Request { consumed } = step else {
            return end(lines, &step, Some(&feed));
        };
        lines.push(describe(&m));
        feed.buf.drain(..consumed);
        // the body
        let mut body = Vec::new();
        loop {
            let step = m
                .poll_body(&feed.buf, feed.eof, usize::MAX, &mut clock)
                .expect("the request is active");
            match step {
                Step::Data(r) => {
                    body.extend_from_slice(&feed.buf[r.clone()]);
                    feed.buf.drain(..r.end);
                }
                Step::BodyDone { consumed } => {
                    feed.buf.drain(..consumed);
                    break;
                }
                Step::Flush => m.clear_output(),
                Step::Wait { consumed, .. } => {
                    feed.buf.drain(..consumed);
                    feed.more();
                }
                // how much the decoder took up before the failure depends on the pieces
                other => return end(lines, &other, None),
            }
        }
        lines.push(format!("  body {}", esc(&body)));
        // the response
        m.send_status(b"200 OK", &mut clock).expect("status");
        m.begin_data().expect("data");
        m.data(&body).expect("data");
        m.finish().expect("finish");
        m.clear_output();
        // All of the input counts as arrived when the response ends, so that the verdict
        // (a quiet close or a lingering one) does not depend on the pieces.
        let more = feed.pieces.clone().any(|p| !p.is_empty());
        match m.end_request(feed.buf.is_empty() && !more, &mut clock) {
            After::Next => {}
            After::Drain => unreachable!("the body was read"),
            After::End(close) => {
                let step = Step::End { close, fail: None };
                return end(lines, &step, Some(&feed));
            }
        }
    }
}

fn describe(m: &Connection) -> String {
    let p = &m.parsed;
    let f = p.framing.expect("a parsed head has its framing");
    let opt =
        |r: &Option<std::ops::Range<usize>>| r.as_ref().map_or("nil".into(), |r| esc(p.get(r)));
    format!(
        "{} {} {} path={} query={} authority={} headers={} keep_alive={} expect={} body={:?}",
        esc(p.get(&p.method)),
        esc(p.get(&p.target)),
        if p.http11 { "Http11" } else { "Http10" },
        opt(&p.path),
        opt(&p.query),
        opt(&p.authority),
        p.headers.len(),
        f.keep_alive,
        f.expect_continue,
        f.body
    )
}

/// The last line: how the connection ended, the failure, and what was left unread (when
/// that does not depend on how the input was cut).
fn end(mut lines: Vec<String>, step: &Step, feed: Option<&Feed<'_>>) -> Vec<String> {
    let how = match step {
        Step::End { close, fail } => {
            let close = match close {
                Close::Quiet => "close",
                Close::Linger => "linger",
                Close::Reset => "reset",
                Close::Handover => "handover",
            };
            match fail {
                Some(f) => format!("{close}: {}", f.message()),
                None => close.to_string(),
            }
        }
        other => format!("unexpected {other:?}"),
    };
    let left = feed.map_or(0, |f| {
        f.buf.len() + f.pieces.clone().map(|p| p.len()).sum::<usize>()
    });
    lines.push(if left > 0 {
        format!("{how} ({left} bytes unread)")
    } else {
        how
    });
    lines
}

/// Bytes as printable ASCII with escapes, quoted.
pub fn esc(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
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
