//! The machine alone, with a clock the tests move: tables of inputs and the steps they must
//! give, each input also fed byte by byte, split at every offset and followed by trailing
//! bytes; then the waits, timeouts, SIGTERM, `100 Continue`, the end of requests and of
//! connections.

use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::http::drive::script::{run, segment, TestClock};

pub(crate) fn config() -> Config {
    let t = Some(Duration::from_secs(10));
    Config {
        head_limits: head::Limits {
            head_size: 512,
            target_len: 64,
            headers: 8,
        },
        body_limit: 100,
        max_input_chunk: 7,
        min_output_chunk: 0,
        idle_timeout: Some(Duration::from_secs(30)),
        stall_timeout: Some(Duration::from_secs(5)),
        header_timeout: t,
        busy_header_timeout: Some(Duration::from_secs(2)),
        drain_timeout: Some(Duration::from_secs(2)),
        static_headers: b"Server: t\r\n".to_vec(),
    }
}

fn conn() -> Connection {
    Connection::new(Rc::new(config()))
}

/// A connection serving the request with this head (read whole), and its clock.
fn serving(head: &[u8]) -> (Connection, TestClock) {
    let (mut m, mut c) = (conn(), TestClock::new());
    let step = m.poll_head(head, false, &mut c);
    assert_eq!(
        step,
        Step::Request {
            consumed: head.len()
        }
    );
    (m, c)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The `until` of a wait, as seconds on the test clock.
fn wait_at(step: &Step, clock: &TestClock) -> Option<u64> {
    match step {
        Step::Wait { until, .. } => until.map(|u| (u - clock.start).as_secs()),
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn text(m: &Connection) -> String {
    String::from_utf8_lossy(m.output()).into_owned()
}

fn end(close: Close, fail: Option<&str>) -> Step {
    Step::End {
        close,
        fail: fail.map(|m| Fail::Client(m.into())),
    }
}

const LIMITS: head::Limits = head::Limits {
    head_size: 512,
    target_len: 64,
    headers: 8,
};

/// Whole-connection inputs and the transcript the machine gives for them (see
/// `drive::script::run`): each must come out the same fed whole, byte by byte, split at
/// every offset, and (for the ones that end at a close) with trailing bytes after it.
#[rustfmt::skip]
const TRANSCRIPTS: &[(&str, &[&str])] = &[
    ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[
        "\"GET\" \"/\" Http11 path=\"\" query=\"\" authority=nil headers=1 keep_alive=true expect=false body=None",
        "  body \"\"",
        "close",
    ]),
    ("POST /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
      POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n2;e=1\r\nyz\r\n0\r\nT: 1\r\n\r\n", &[
        "\"POST\" \"/p?q\" Http11 path=\"p\" query=\"?q\" authority=nil headers=2 keep_alive=true expect=false body=Length(3)",
        "  body \"abc\"",
        "\"POST\" \"/c\" Http11 path=\"c\" query=\"\" authority=nil headers=2 keep_alive=true expect=false body=Chunked",
        "  body \"xyz\"",
        "close",
    ]),
    ("GET / HTTP/1.0\r\n\r\n", &[
        "\"GET\" \"/\" Http10 path=\"\" query=\"\" authority=nil headers=0 keep_alive=false expect=false body=None",
        "  body \"\"",
        "close",
    ]),
    ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &[
        "\"GET\" \"/\" Http11 path=\"\" query=\"\" authority=nil headers=2 keep_alive=false expect=false body=None",
        "  body \"\"",
        "close",
    ]),
    ("GET / HTTP/1.1\r\n\r\n", &["linger: 400 Bad Request (Missing Host header) (18 bytes unread)"]),
    ("GET / HTTP/1.1\r\nHost: a\r\n", &["linger: 400 Bad Request (Unexpected EOF) (25 bytes unread)"]),
    ("\r\n\r\n", &["close (4 bytes unread)"]),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", &[
        "linger: 413 Content Too Large (Request body too large) (53 bytes unread)",
    ]),
    ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", &[
        "\"POST\" \"/\" Http11 path=\"\" query=\"\" authority=nil headers=2 keep_alive=true expect=false body=Length(5)",
        "linger: Error while reading request body: 400 Bad Request (Unexpected EOF while reading request body)",
    ]),
];

#[test]
fn transcripts_in_any_segmentation() {
    for &(input, want) in TRANSCRIPTS {
        let input = input.as_bytes();
        assert_eq!(run(&[input], &LIMITS), want, "{input:?} whole");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, &LIMITS), want, "{input:?} byte by byte");
        for cut in 1..input.len() {
            let pieces = segment(input, &[cut]);
            assert_eq!(run(&pieces, &LIMITS), want, "{input:?} split at {cut}");
        }
    }
}

#[test]
fn trailing_bytes_after_a_close_are_never_read() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\n";
    let want = [
        "\"GET\" \"/\" Http11 path=\"\" query=\"\" authority=nil headers=2 keep_alive=false expect=false body=None",
        "  body \"\"",
        "linger (17 bytes unread)",
    ];
    assert_eq!(run(&[input], &LIMITS), want);
    for cut in 1..input.len() {
        assert_eq!(
            run(&segment(input, &[cut]), &LIMITS),
            want,
            "split at {cut}"
        );
    }
}

#[test]
fn the_first_byte_waits_for_idle_timeout_then_408() {
    let (mut m, mut c) = (conn(), TestClock::new());
    let step = m.poll_head(b"", false, &mut c);
    assert!(matches!(step, Step::Wait { sigterm: true, .. }));
    assert_eq!(wait_at(&step, &c), Some(30));
    // a wake-up before the deadline is told to wait on, for the same deadline
    c.elapsed = secs(29);
    assert_eq!(wait_at(&m.timeout(&mut c), &c), Some(30));
    c.elapsed = secs(30);
    let fail = "408 Request Timeout (Idle connection timed out)";
    assert_eq!(m.timeout(&mut c), end(Close::Linger, Some(fail)));
    assert!(text(&m).starts_with("HTTP/1.1 408 Request Timeout\r\nDate: "));
    assert!(text(&m).contains("\r\nServer: t\r\n"));
    // lingering: each wait bounded by the stall timeout, the whole by the drain timeout
    let step = m.poll_linger(false, &mut c);
    assert_eq!(wait_at(&step, &c), Some(32));
    c.elapsed = secs(32);
    assert_eq!(m.timeout(&mut c), end(Close::Reset, None));
    assert!(m.is_closed());
}

#[test]
fn the_head_has_a_whole_deadline_and_a_stall_deadline() {
    let (mut m, mut c) = (conn(), TestClock::new());
    let step = m.poll_head(b"GET / HT", false, &mut c);
    assert!(matches!(step, Step::Wait { sigterm: false, .. }));
    assert_eq!(wait_at(&step, &c), Some(5), "stall first");
    c.elapsed = secs(4);
    let step = m.poll_head(b"GET / HTTP/1.1\r\n", false, &mut c);
    assert_eq!(wait_at(&step, &c), Some(9));
    c.elapsed = secs(8);
    let step = m.poll_head(b"GET / HTTP/1.1\r\nHost: a\r\n", false, &mut c);
    assert_eq!(
        wait_at(&step, &c),
        Some(10),
        "then the whole head's deadline"
    );
    c.elapsed = secs(10);
    let fail = "408 Request Timeout (Timeout while receiving headers)";
    assert_eq!(m.timeout(&mut c), end(Close::Linger, Some(fail)));
}

#[test]
fn an_overloaded_pool_sheds_idle_keep_alive_connections_at_once() {
    let (mut m, mut c) = serving(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(m.shed(None, &mut c), Shed::Never, "serving a request");
    m.send_status(b"200 OK", &mut c).unwrap();
    m.finish().unwrap();
    m.clear_output();
    assert_eq!(m.end_request(true, &mut c), After::Next);
    assert!(matches!(m.poll_head(b"", false, &mut c), Step::Wait { .. }));
    // the kernel's idea of silence does not matter: the client has had its answer
    assert_eq!(m.shed(Some(secs(0)), &mut c), Shed::Now { claim: true });
    assert_eq!(m.shed_now(&mut c), end(Close::Quiet, None));
    assert!(m.is_closed() && m.output().is_empty());
}

#[test]
fn an_overloaded_pool_gives_a_silent_new_connection_the_busy_bound() {
    let (mut m, mut c) = (conn(), TestClock::new());
    assert!(matches!(m.poll_head(b"", false, &mut c), Step::Wait { .. }));
    assert_eq!(m.shed(None, &mut c), Shed::After(secs(2)));
    // it waited in the backlog before it was accepted: that counts
    let silent = Some(Duration::from_millis(1500));
    assert_eq!(
        m.shed(silent, &mut c),
        Shed::After(Duration::from_millis(500))
    );
    c.elapsed = secs(2);
    assert_eq!(m.shed(None, &mut c), Shed::Now { claim: false });
    assert_eq!(m.shed_now(&mut c), end(Close::Quiet, None));
    assert!(m.is_closed() && m.output().is_empty());
}

#[test]
fn an_overloaded_pool_answers_a_slow_head_408_after_the_busy_bound() {
    let (mut m, mut c) = (conn(), TestClock::new());
    assert!(matches!(
        m.poll_head(b"GET / HT", false, &mut c),
        Step::Wait { .. }
    ));
    assert_eq!(m.shed(Some(secs(0)), &mut c), Shed::After(secs(2)));
    // a byte now and then does not extend it: it counts from the head's start too
    c.elapsed = secs(1);
    assert!(matches!(
        m.poll_head(b"GET / HTT", false, &mut c),
        Step::Wait { .. }
    ));
    assert_eq!(m.shed(Some(secs(0)), &mut c), Shed::After(secs(1)));
    // nor does the kernel's count start again: it saw the last byte 3 s ago
    assert_eq!(m.shed(Some(secs(3)), &mut c), Shed::Now { claim: false });
    let fail = "408 Request Timeout (Server busy, timeout while receiving headers)";
    assert_eq!(m.shed_now(&mut c), end(Close::Quiet, Some(fail)));
    assert!(
        text(&m).starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{}",
        text(&m)
    );
    assert!(m.is_closed());
}

#[test]
fn without_the_busy_bound_only_idle_keep_alive_connections_are_shed() {
    let mut cfg = config();
    cfg.busy_header_timeout = None;
    let (mut m, mut c) = (Connection::new(Rc::new(cfg)), TestClock::new());
    assert!(matches!(
        m.poll_head(b"GET / HT", false, &mut c),
        Step::Wait { .. }
    ));
    assert_eq!(m.shed(Some(secs(100)), &mut c), Shed::Never);
    // and nothing is given up that is not waiting for a request
    let (mut m, mut c) = serving(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n");
    assert!(matches!(
        m.poll_body(b"", false, 10, &mut c),
        Ok(Step::Wait { .. })
    ));
    assert_eq!(m.shed(Some(secs(100)), &mut c), Shed::Never);
}

#[test]
fn sigterm_ends_the_idle_wait_but_a_request_already_there_is_served() {
    let (mut m, mut c) = (conn(), TestClock::new());
    assert!(matches!(m.poll_head(b"", false, &mut c), Step::Wait { .. }));
    m.note_sigterm();
    let fail = "408 Request Timeout (Server shutdown)";
    assert_eq!(
        m.poll_head(b"", false, &mut c),
        end(Close::Linger, Some(fail))
    );

    let (mut m, mut c) = (conn(), TestClock::new());
    m.note_sigterm();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        m.poll_head(head, false, &mut c),
        Step::Request {
            consumed: head.len()
        }
    );
    m.send_status(b"200 OK", &mut c).unwrap();
    m.finish().unwrap();
    assert!(text(&m).contains("Connection: close\r\n"), "{}", text(&m));
    m.clear_output();
    assert_eq!(m.end_request(true, &mut c), After::End(Close::Linger));
}

#[test]
fn continue_goes_out_before_the_first_body_read_only() {
    let (mut m, mut c) =
        serving(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(m.poll_body(b"", false, 10, &mut c), Ok(Step::Flush));
    assert_eq!(text(&m), "HTTP/1.1 100 Continue\r\n\r\n");
    m.clear_output();
    let step = m.poll_body(b"", false, 10, &mut c).unwrap();
    assert_eq!(wait_at(&step, &c), Some(5));
    assert_eq!(m.poll_body(b"ok", false, 10, &mut c), Ok(Step::Data(0..2)));
    assert_eq!(
        m.poll_body(b"", false, 10, &mut c),
        Ok(Step::BodyDone { consumed: 0 })
    );
    assert!(m.output().is_empty());
}

#[test]
fn an_unanswered_continue_closes_instead_of_draining() {
    let (mut m, mut c) =
        serving(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    m.send_status(b"200 OK", &mut c).unwrap();
    m.finish().unwrap();
    assert!(text(&m).contains("Connection: close\r\n"));
    assert_eq!(m.end_request(true, &mut c), After::End(Close::Linger));
}

#[test]
fn a_failed_send_is_the_clients_fault_unless_the_application_closed_the_socket() {
    let (mut m, mut c) = serving(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    m.send_status(b"200 OK", &mut c).unwrap();
    let fail = "Could not send data to client: Broken pipe";
    assert_eq!(m.broken("Broken pipe", true), Fail::Io(fail.into()));
    assert_eq!(m.client_fault.as_deref(), Some(fail));
    assert!(m.faulty);

    let (mut m, mut c) = serving(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    m.send_status(b"200 OK", &mut c).unwrap();
    let why = "Attempt to write to a closed I/O handle";
    assert_eq!(
        m.broken(why, false),
        Fail::Io(format!("Could not send data to client: {why}"))
    );
    assert_eq!(m.client_fault, None);
}

#[test]
fn a_body_stall_is_the_clients_fault() {
    let (mut m, mut c) = serving(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
    let step = m.poll_body(b"", false, 10, &mut c).unwrap();
    assert_eq!(wait_at(&step, &c), Some(5));
    c.elapsed = secs(5);
    let fail = "Error while reading request body: 408 Request Timeout (Timeout while waiting for request body)";
    assert_eq!(m.timeout(&mut c), end(Close::Linger, Some(fail)));
    assert_eq!(m.client_fault.as_deref(), Some(fail));
    assert!(text(&m).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    assert_eq!(
        m.send_status(b"200 OK", &mut c),
        Err(Fail::Misuse("Response has already been finished".into()))
    );
}

#[test]
fn an_unread_body_is_drained_up_to_the_limit() {
    let (mut m, mut c) = serving(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n");
    m.send_status(b"204 No Content", &mut c).unwrap();
    m.finish().unwrap();
    m.clear_output();
    assert_eq!(m.end_request(true, &mut c), After::Drain);
    let step = m.poll_drain(b"", false, &mut c);
    assert_eq!(wait_at(&step, &c), Some(5));
    assert_eq!(m.poll_drain(b"abcd", false, &mut c), Step::Data(0..4));
    assert_eq!(m.poll_drain(b"", false, &mut c), Step::Next { consumed: 0 });
    assert!(matches!(m.poll_head(b"", false, &mut c), Step::Wait { .. }));
}

#[test]
fn a_handler_failure_is_a_500_before_the_head_and_a_reset_after() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let (mut m, mut c) = serving(head);
    let fail = "500 Internal Server Error ()";
    assert_eq!(m.abort(&mut c), Some(end(Close::Linger, Some(fail))));
    assert!(text(&m).starts_with("HTTP/1.1 500 Internal Server Error\r\n"));

    let (mut m, mut c) = serving(head);
    m.send_status(b"200 OK", &mut c).unwrap();
    assert_eq!(m.finish_headers(), Ok(Push::Flush));
    m.clear_output();
    assert_eq!(m.abort(&mut c), Some(end(Close::Reset, None)));
    assert_eq!(m.abort(&mut c), None, "over already");
}

#[test]
fn a_switched_protocol_hands_the_socket_over() {
    let (mut m, mut c) =
        serving(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n");
    m.send_status(b"101 Switching Protocols", &mut c).unwrap();
    m.send_header(b"Upgrade", b"x").unwrap();
    m.send_header(b"Connection", b"Upgrade").unwrap();
    m.finish().unwrap();
    assert_eq!(m.end_request(true, &mut c), After::End(Close::Handover));
}

#[test]
fn monologue_closes_after_the_response() {
    let (mut m, mut c) = serving(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n");
    m.monologue().unwrap();
    assert!(m.drains_while_writing());
    m.send_status(b"200 OK", &mut c).unwrap();
    m.finish().unwrap();
    assert!(text(&m).contains("Connection: close\r\n"));
    assert_eq!(m.end_request(true, &mut c), After::End(Close::Linger));
}

#[test]
fn a_client_that_asked_to_close_and_sent_nothing_more_is_closed_at_once() {
    let (mut m, mut c) = serving(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    m.send_status(b"200 OK", &mut c).unwrap();
    m.finish().unwrap();
    assert_eq!(m.end_request(true, &mut c), After::End(Close::Quiet));
    assert!(m.is_closed());
}

#[test]
fn a_client_that_asked_to_close_but_sent_more_gets_a_lingering_close() {
    let (mut m, mut c) = serving(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    m.send_status(b"200 OK", &mut c).unwrap();
    m.finish().unwrap();
    // more input buffered: closing now could turn the close into a reset
    assert_eq!(m.end_request(false, &mut c), After::End(Close::Linger));
}
