//! Table tests of the response writer: framing decisions, HEAD and body-less statuses,
//! interim responses, misuse, and large pieces sent by the caller.

use super::*;

fn cfg() -> ResponseConfig {
    ResponseConfig {
        http11: true,
        head: false,
        close: false,
        min_chunk: 4,
    }
}

fn text(r: &mut Response) -> String {
    String::from_utf8(r.take_output()).unwrap()
}

#[test]
fn whole_body_known_at_finish_gets_content_length() {
    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.header(b"Content-Type", b"text/plain").unwrap();
    r.data(b"Hello ").unwrap();
    r.data(b"World!").unwrap();
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello World!"
    );
}

#[test]
fn flush_before_finish_makes_it_chunked() {
    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"ab").unwrap();
    r.flush().unwrap();
    r.data(b"cdefgh").unwrap(); // >= min_chunk: a chunk at once
    r.data(b"i").unwrap();
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n6\r\ncdefgh\r\n1\r\ni\r\n0\r\n\r\n"
    );
}

#[test]
fn app_content_length_is_used_and_checked() {
    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.header(b"Content-Length", b"5").unwrap();
    r.data(b"12345").unwrap();
    assert_eq!(r.data(b"6"), Err(ResponseError::ContentLengthMismatch));
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"
    );

    let mut short = Response::new(cfg());
    short.status(b"200 OK", &[]).unwrap();
    short.header(b"content-length", b"5").unwrap();
    short.data(b"123").unwrap();
    assert_eq!(short.finish(), Err(ResponseError::ContentLengthMismatch));
}

#[test]
fn http10_without_length_closes() {
    let mut r = Response::new(ResponseConfig {
        http11: false,
        ..cfg()
    });
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"abc").unwrap();
    r.flush().unwrap();
    r.data(b"def").unwrap();
    r.finish().unwrap();
    assert!(r.closes_connection());
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcdef"
    );
}

#[test]
fn http10_keep_alive_with_known_length() {
    let mut r = Response::new(ResponseConfig {
        http11: false,
        ..cfg()
    });
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"abc").unwrap();
    r.finish().unwrap();
    assert!(!r.closes_connection());
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc"
    );
}

#[test]
fn head_sends_get_headers_without_body() {
    let mut r = Response::new(ResponseConfig {
        head: true,
        ..cfg()
    });
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"Hello").unwrap();
    r.finish().unwrap();
    assert_eq!(text(&mut r), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
}

/// A HEAD response has the header fields of the GET response to the same steps, byte for
/// byte, and no body: a body known at finish, an app's Content-Length, a flushed or large
/// body (chunked, or closing in HTTP/1.0), no body at all, and a body-less status.
#[test]
fn head_headers_match_get_headers() {
    let big = vec![b'x'; 40 << 10];
    type Steps = Box<dyn Fn(&mut Response)>;
    let cases: Vec<(&str, Steps)> = vec![
        (
            "known at finish",
            Box::new(|r: &mut Response| r.data(b"Hello").unwrap()),
        ),
        (
            "app length",
            Box::new(|r: &mut Response| {
                r.header(b"Content-Length", b"5").unwrap();
                r.data(b"Hello").unwrap();
            }),
        ),
        (
            "flushed",
            Box::new(|r: &mut Response| {
                r.data(b"Hel").unwrap();
                r.flush().unwrap();
                r.data(b"lo").unwrap();
            }),
        ),
        (
            "large",
            Box::new(move |r: &mut Response| r.data(&big).unwrap()),
        ),
        ("empty", Box::new(|_: &mut Response| {})),
        (
            "headers flushed",
            Box::new(|r: &mut Response| {
                r.finish_headers().unwrap();
                r.flush().unwrap();
            }),
        ),
    ];
    for http11 in [true, false] {
        for (name, steps) in &cases {
            for status in [&b"200 OK"[..], b"204 No Content", b"304 Not Modified"] {
                let mut heads = Vec::new();
                for head in [false, true] {
                    let mut r = Response::new(ResponseConfig {
                        head,
                        http11,
                        ..cfg()
                    });
                    r.status(status, &[]).unwrap();
                    r.header(b"X-A", b"1").unwrap();
                    if status == b"200 OK" {
                        steps(&mut r);
                    }
                    r.finish().unwrap();
                    let out = text(&mut r);
                    let end = out.find("\r\n\r\n").unwrap() + 4;
                    if head {
                        assert_eq!(end, out.len(), "HEAD has no body: {name} {out:?}");
                    }
                    heads.push((out[..end].to_string(), r.closes_connection()));
                }
                assert_eq!(heads[0], heads[1], "{name}, http11={http11}");
            }
        }
    }
}

#[test]
fn no_body_statuses_have_no_framing() {
    for st in [
        &b"204 No Content"[..],
        b"304 Not Modified",
        b"101 Switching Protocols",
    ] {
        let mut r = Response::new(cfg());
        r.status(st, &[]).unwrap();
        r.header(b"X-A", b"1").unwrap();
        assert_eq!(r.data(b"x"), Err(ResponseError::BodyNotAllowed));
        r.finish().unwrap();
        let out = text(&mut r);
        assert!(
            !out.contains("Content-Length") && !out.contains("Transfer-Encoding"),
            "{out}"
        );
        assert!(out.ends_with("X-A: 1\r\n\r\n"), "{out}");
    }
}

#[test]
fn connection_close_from_app_or_config() {
    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.header(b"Connection", b"close").unwrap();
    r.finish().unwrap();
    assert!(r.closes_connection());
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );

    let mut r = Response::new(ResponseConfig {
        close: true,
        ..cfg()
    });
    r.status(b"404 Not Found", &[]).unwrap();
    r.finish().unwrap();
    assert!(text(&mut r).contains("Connection: close\r\n"));
}

#[test]
fn static_headers_and_date_come_first() {
    let mut r = Response::new(cfg());
    let date = b"Date: Wed, 02 Dec 2026 04:00:00 GMT\r\n";
    r.status(b"200 OK", &[date, b"Server: mb\r\n"]).unwrap();
    r.header(b"X-App", b"1").unwrap();
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nDate: Wed, 02 Dec 2026 04:00:00 GMT\r\nServer: mb\r\nX-App: 1\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn states_only_move_forward() {
    let mut r = Response::new(cfg());
    assert_eq!(r.header(b"A", b"b"), Err(ResponseError::NoStatus));
    assert_eq!(r.status(b"20 OK", &[]), Err(ResponseError::InvalidStatus));
    assert_eq!(r.status(b"200OK", &[]), Err(ResponseError::InvalidStatus));
    assert_eq!(
        r.status(b"200 O\r\nK", &[]),
        Err(ResponseError::InvalidStatus)
    );
    r.status(b"200 OK", &[]).unwrap();
    assert_eq!(
        r.status(b"200 OK", &[]),
        Err(ResponseError::StatusAlreadySent)
    );
    assert_eq!(
        r.header(b"Bad Name", b"x"),
        Err(ResponseError::InvalidHeaderName)
    );
    assert_eq!(
        r.header(b"X", b"a\r\nInjected: 1"),
        Err(ResponseError::InvalidHeaderValue)
    );
    assert_eq!(
        r.header(b"Content-Length", b"+5"),
        Err(ResponseError::InvalidContentLength)
    );
    r.finish_headers().unwrap();
    assert_eq!(r.header(b"A", b"b"), Err(ResponseError::HeadersFinished));
    assert_eq!(r.set_close(), Err(ResponseError::HeadersFinished));
    r.finish().unwrap();
    r.finish().unwrap(); // idempotent
    assert_eq!(r.data(b"x"), Err(ResponseError::Finished));
}

#[test]
fn large_bodies_switch_to_chunked_without_waiting_for_finish() {
    let mut r = Response::new(ResponseConfig {
        min_chunk: 1024,
        ..cfg()
    });
    r.status(b"200 OK", &[]).unwrap();
    r.data(&vec![b'x'; 20_000]).unwrap();
    assert!(!r.output().is_empty());
    let out = text(&mut r);
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4E20\r\n"),
        "{}",
        &out[..80]
    );
    r.finish().unwrap();
    assert_eq!(text(&mut r), "0\r\n\r\n");
}

#[test]
fn interim_responses_precede_the_final_one() {
    let mut r = Response::new(cfg());
    r.status(b"103 Early Hints", &[]).unwrap();
    r.header(b"Link", b"</a.css>; rel=preload").unwrap();
    assert_eq!(
        r.header(b"Content-Length", b"0"),
        Err(ResponseError::InterimHeader)
    );
    assert_eq!(r.data(b"x"), Err(ResponseError::BodyNotAllowed));
    r.finish_headers().unwrap();
    assert!(!r.started());
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"ok").unwrap();
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    );
}

#[test]
fn switching_protocols_keeps_the_apps_connection_header() {
    let mut r = Response::new(cfg());
    r.status(b"101 Switching Protocols", &[]).unwrap();
    r.header(b"Connection", b"Upgrade").unwrap();
    r.header(b"Upgrade", b"websocket").unwrap();
    r.finish_headers().unwrap();
    assert!(r.closes_connection(), "the connection is no longer HTTP");
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
}

#[test]
fn server_close_is_announced_only_while_the_head_is_held() {
    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"a").unwrap();
    assert!(r.force_close());
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na"
    );
    r.reset(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.flush().unwrap();
    assert!(!r.force_close());
    assert!(r.closes_connection());
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
}

#[test]
fn error_responses_are_small_and_close() {
    let out = error_response(413, "Content Too Large", "Request body too large", &[]);
    let body = "413 Content Too Large\n\nRequest body too large\n";
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    );
    let out = error_response(400, "Bad Request", "", &[b"Server: x\r\n"]);
    assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n"));
    assert!(out.ends_with(b"\r\n\r\n400 Bad Request\n"));
}

#[test]
fn large_pieces_are_framed_for_the_caller_to_send() {
    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.data(b"ab").unwrap();
    assert_eq!(r.data_direct(5), Ok(Some(&b"\r\n"[..])));
    let mut wire = text(&mut r);
    wire.push_str("12345\r\n");
    r.data(b"c").unwrap();
    r.finish().unwrap();
    wire.push_str(&text(&mut r));
    assert_eq!(
        wire,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n5\r\n12345\r\n1\r\nc\r\n0\r\n\r\n"
    );

    let mut r = Response::new(cfg());
    r.status(b"200 OK", &[]).unwrap();
    r.header(b"Content-Length", b"6").unwrap();
    assert_eq!(r.data_direct(5), Ok(Some(&b""[..])));
    assert_eq!(r.data_direct(2), Err(ResponseError::ContentLengthMismatch));
    r.data(b"6").unwrap();
    r.finish().unwrap();

    let mut head = Response::new(ResponseConfig {
        head: true,
        ..cfg()
    });
    head.status(b"200 OK", &[]).unwrap();
    assert_eq!(head.data_direct(5), Ok(None));
    let mut empty = Response::new(cfg());
    empty.status(b"204 No Content", &[]).unwrap();
    assert_eq!(empty.data_direct(5), Ok(None));
    assert_eq!(empty.data(b"x"), Err(ResponseError::BodyNotAllowed));
}

#[test]
fn the_applications_date_replaces_ours() {
    let mut r = Response::new(cfg());
    let date = b"Date: Wed, 02 Dec 2026 04:00:00 GMT\r\n";
    r.status(b"200 OK", &[date, b"Server: mb\r\n"]).unwrap();
    r.header(b"date", b"Thu, 01 Jan 2026 00:00:00 GMT").unwrap();
    r.finish().unwrap();
    assert_eq!(
        text(&mut r),
        "HTTP/1.1 200 OK\r\nServer: mb\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn numbers_are_written_in_decimal_and_hex() {
    for (n, dec, hex) in [
        (0u64, "0", "0"),
        (9, "9", "9"),
        (10, "10", "A"),
        (255, "255", "FF"),
        (65536, "65536", "10000"),
        (u64::MAX, "18446744073709551615", "FFFFFFFFFFFFFFFF"),
    ] {
        let mut d = Vec::new();
        super::push_number(&mut d, n, 10);
        assert_eq!(d, dec.as_bytes());
        let mut h = b"x".to_vec();
        super::push_number(&mut h, n, 16);
        assert_eq!(h, format!("x{hex}").as_bytes());
    }
}
