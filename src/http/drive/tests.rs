//! The blocking driver over real loopback sockets: a client sends its bytes
//! (and half-closes), the driver serves every request with a small handler, and what the
//! client received is compared as text (with the `Date` lines removed).

use std::rc::Rc;
use std::time::Duration;

use super::blocking::{Conn, Next};
use crate::http::conn::{Config, Fail};
use crate::http::head;
use crate::io::net::{tcp_connect, Listener, Port};
use crate::io::Handle;

fn config() -> Config {
    let t = Some(Duration::from_secs(3));
    Config {
        head_limits: head::Limits {
            head_size: 512,
            target_len: 64,
            headers: 8,
        },
        body_limit: 100,
        max_input_chunk: 7,
        min_output_chunk: 4,
        idle_timeout: t,
        stall_timeout: t,
        header_timeout: t,
        busy_header_timeout: Some(Duration::from_secs(1)),
        drain_timeout: Some(Duration::from_secs(1)),
        static_headers: b"Server: t\r\n".to_vec(),
    }
}

fn pair() -> (Handle, Handle) {
    let l = Listener::tcp(b"127.0.0.1", Port::Number(0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let client = tcp_connect(b"127.0.0.1", Port::Number(port)).unwrap();
    (client, l.accept().unwrap())
}

/// What a handler does with each request.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// Reads the body (pieces joined by `|`) and answers with it.
    Echo,
    /// Answers "ignored" without reading the body.
    Ignore,
}

/// Serves `input` and returns what the client received, without `Date` lines.
fn run(input: &[u8], serve: Serve) -> String {
    let (mut client, mut server) = pair();
    client.flush_blocking(&[input]).unwrap();
    client.finish().unwrap();
    let mut conn = Conn::new(Rc::new(config()));
    while conn.next_request(&mut server) == Next::Request {
        let mut body = Vec::new();
        if serve == Serve::Echo {
            while let Some(r) = conn.body_data(&mut server, 7).unwrap() {
                if !body.is_empty() {
                    body.push(b'|');
                }
                body.extend_from_slice(&server.buffered()[r.clone()]);
                server.consume(r.end);
            }
        } else {
            body.extend_from_slice(b"ignored");
        }
        conn.send_status(b"200 OK").unwrap();
        conn.send_data(&mut server, &[&body]).unwrap();
        conn.finish(&mut server).unwrap();
        if !conn.done(&mut server) {
            break;
        }
    }
    if !server.is_closed() {
        server.close().unwrap();
    }
    let out = client.read_blocking(None, None).unwrap();
    let text = String::from_utf8_lossy(&client.buffered()[..out.len]).into_owned();
    text.split_inclusive("\r\n")
        .filter(|l| !l.starts_with("Date: "))
        .collect()
}

fn refusal(code: u16, reason: &str, detail: &str) -> String {
    let body = format!("{code} {reason}\n\n{detail}\n");
    format!(
        "HTTP/1.1 {code} {reason}\r\nServer: t\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn refusals() {
    #[rustfmt::skip]
    let rows: &[(&str, u16, &str)] = &[
        ("GET / HTTP/1.1\r\n\r\n", 400, "Missing Host header"),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "Whitespace between header field name and colon"),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413, "Request body too large"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "Unsupported transfer coding"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "Both Content-Length and Transfer-Encoding present"),
        ("GET /0123456789012345678901234567890123456789012345678901234567890123456789 HTTP/1.1\r\n\r\n", 414, "Request target too long"),
        ("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n", 431, "Too many header fields"),
        ("GET / HTTP/1.1\r\nHost: a\r\n", 400, "Unexpected EOF"),
    ];
    for &(input, code, detail) in rows {
        let reason = match code {
            400 => "Bad Request",
            413 => "Content Too Large",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            505 => "HTTP Version Not Supported",
            _ => unreachable!(),
        };
        assert_eq!(
            run(input.as_bytes(), Serve::Echo),
            refusal(code, reason, detail),
            "{input:?}"
        );
    }
}

#[test]
fn pipelined_bodies_by_length_and_chunks_in_pieces() {
    let input = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789\
                 POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                 3;x=y\r\nabc\r\n9\r\ndefghijkl\r\n0\r\nT: 1\r\n\r\n\
                 \r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(
        run(input.as_bytes(), Serve::Echo),
        "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 11\r\n\r\n0123456|789\
         HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 14\r\n\r\nabc|defghij|kl\
         HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn unread_bodies_are_drained_before_the_next_request() {
    let input = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
                 POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
                 GET /c HTTP/1.0\r\n\r\n";
    let ok = "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 7\r\n\r\nignored";
    assert_eq!(
        run(input.as_bytes(), Serve::Ignore),
        format!(
            "{ok}{ok}HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 7\r\nConnection: close\r\n\r\nignored"
        )
    );
}

#[test]
fn continue_is_sent_only_when_the_body_is_read() {
    let input = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(
        run(input.as_bytes(), Serve::Echo),
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 2\r\n\r\nok"
    );
    assert_eq!(
        run(input.as_bytes(), Serve::Ignore),
        "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 7\r\nConnection: close\r\n\r\nignored"
    );
}

#[test]
fn http10_keep_alive_only_when_asked() {
    let input = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n";
    assert_eq!(
        run(input.as_bytes(), Serve::Ignore),
        "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 7\r\nConnection: keep-alive\r\n\r\nignored\
         HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 7\r\nConnection: close\r\n\r\nignored"
    );
}

#[test]
fn body_errors_are_answered_and_end_the_connection() {
    let (mut client, mut server) = pair();
    let input = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                 40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n\
                 40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n0\r\n\r\n";
    client.flush_blocking(&[input.as_bytes()]).unwrap();
    client.finish().unwrap();
    let mut conn = Conn::new(Rc::new(config()));
    assert_eq!(conn.next_request(&mut server), Next::Request);
    let failure = loop {
        match conn.body_data(&mut server, 1000) {
            Ok(Some(r)) => server.consume(r.end),
            Ok(None) => panic!("the body exceeds the limit"),
            Err(f) => break f,
        }
    };
    assert_eq!(
        failure,
        Fail::Client(
            "Error while reading request body: 413 Content Too Large (Request body too large)"
                .into()
        )
    );
    assert!(server.is_closed());
    assert_eq!(
        conn.send_status(b"200 OK"),
        Err(Fail::Misuse("Response has already been finished".into()))
    );
    assert!(conn.finish(&mut server).is_ok(), "finish stays idempotent");
    let out = client.read_blocking(None, None).unwrap();
    let text = String::from_utf8_lossy(&client.buffered()[..out.len]);
    assert!(
        text.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{text}"
    );
}

#[test]
fn a_length_body_arriving_in_segments_is_buffered_whole() {
    let (mut client, mut server) = pair();
    let body = [b'b'; 90];
    client
        .flush_blocking(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 90\r\n\r\n",
            &body[..30],
        ])
        .unwrap();
    let mut conn = Conn::new(Rc::new(config()));
    assert_eq!(conn.next_request(&mut server), Next::Request);
    let writer = std::thread::spawn(move || {
        for piece in body[30..].chunks(20) {
            std::thread::sleep(Duration::from_millis(20));
            client.flush_blocking(&[piece]).unwrap();
        }
        client
    });
    conn.buffer_body(&mut server, 1000).unwrap();
    let r = conn.body_data(&mut server, usize::MAX).unwrap().unwrap();
    assert_eq!(r, 0..90);
    assert!(server.buffered()[r].iter().all(|&b| b == b'b'));
    assert!(conn.m.body_done());
    drop(writer.join().unwrap());
}
