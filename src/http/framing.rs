//! How a parsed request is framed: which body follows the head, whether the connection stays
//! open afterwards, and whether the client waits for `100 Continue`.
//!
//! The rules close the request-smuggling doors of RFC 9112 §6 strictly: `Content-Length` is
//! exactly `1*DIGIT` (identical repeats, also as a list `5, 5`, are one value; differing
//! values, signs, spaces inside, empty values or overflow are errors); `Content-Length`
//! together with `Transfer-Encoding` is an error rather than a precedence rule; in HTTP/1.0
//! `Transfer-Encoding` is an error; the coding list must end with one `chunked`, and any
//! other coding before it is answered with 501 since no other coding is implemented. Empty
//! list elements (`,chunked`) are errors in both fields. An HTTP/1.1 request needs exactly
//! one `Host`.
//!
//! `Expect` (RFC 9110 §10.1.1) is read only in HTTP/1.1 requests: `100-continue` (any case)
//! is the one expectation served; any other element is answered with 417. Empty list
//! elements are skipped, as RFC 9110 §5.6.1 asks of list recipients. In an HTTP/1.0
//! request the whole header is ignored: the expectation mechanism is HTTP/1.1's, a 1.0
//! client cannot wait for `100 Continue`, and RFC 9110 lets a server ignore `Expect` there
//! (and makes it ignore `100-continue`).

use super::error::HttpError;
use super::head::{byte_class, trim_ows, Head, Version, TOKEN};

/// The body that follows a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (neither `Content-Length` nor `Transfer-Encoding`).
    None,
    /// Exactly this many bytes (possibly 0).
    Length(u64),
    /// A chunked body: decode it with [`ChunkedDecoder`](super::chunked::ChunkedDecoder).
    Chunked,
}

/// What a request head says about its body and its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// The body that follows the head.
    pub body: BodyKind,
    /// Whether the connection may carry another request after this one: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request (ignored in HTTP/1.0, see the module
    /// documentation). The caller sends `100 Continue` before it first reads the body.
    pub expect_continue: bool,
}

/// Which of the headers that decide the framing a request has: found in one pass over the
/// names (by length first), so the rules below look only for what is there.
#[derive(Default)]
struct Seen<'a> {
    hosts: u32,
    /// The value of the first `Host`.
    host: &'a [u8],
    te: bool,
    cl: bool,
    connection: bool,
    expect: bool,
}

fn seen<'a>(head: &Head<'a>) -> Seen<'a> {
    let mut s = Seen::default();
    for &(name, value) in &head.headers {
        let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
        match name.len() {
            4 if is(b"host") => {
                if s.hosts == 0 {
                    s.host = value;
                }
                s.hosts += 1;
            }
            6 if is(b"expect") => s.expect = true,
            10 if is(b"connection") => s.connection = true,
            14 if is(b"content-length") => s.cl = true,
            17 if is(b"transfer-encoding") => s.te = true,
            _ => {}
        }
    }
    s
}

/// Decides the framing of a parsed request, or the error to answer it with.
pub fn framing(head: &Head<'_>) -> Result<Framing, HttpError> {
    let seen = seen(head);
    check_host(head, seen.hosts, seen.host)?;
    let (has_te, has_cl) = (seen.te, seen.cl);
    let body = match (has_te, has_cl) {
        (true, _) if head.version == Version::Http10 => {
            return Err(HttpError::TransferEncodingHttp10)
        }
        (true, true) => return Err(HttpError::LengthAndChunked),
        (true, false) => {
            check_transfer_coding(head)?;
            BodyKind::Chunked
        }
        (false, true) => BodyKind::Length(content_length(head)?),
        (false, false) => BodyKind::None,
    };
    let (close, keep) = match seen.connection {
        true => connection_options(head),
        false => (false, false),
    };
    let keep_alive = !close && (keep || head.version == Version::Http11);
    let expect_continue = seen.expect && head.version == Version::Http11 && expects_continue(head)?;
    Ok(Framing {
        body,
        keep_alive,
        expect_continue,
    })
}

/// Whether the `Connection` headers name `close` and `keep-alive`. A value without a comma
/// (nearly all of them) is compared whole, without the generic list splitting.
fn connection_options(head: &Head<'_>) -> (bool, bool) {
    let (mut close, mut keep) = (false, false);
    let mut option = |item: &[u8]| {
        close |= item.eq_ignore_ascii_case(b"close");
        keep |= item.eq_ignore_ascii_case(b"keep-alive");
    };
    for value in head.headers_named("connection") {
        if crate::bytes::find_byte(b',', value).is_none() {
            option(trim_ows(value));
        } else {
            value
                .split(|&b| b == b',')
                .map(trim_ows)
                .for_each(&mut option);
        }
    }
    (close, keep)
}

/// Whether an HTTP/1.1 request's `Expect` asks for `100 Continue`; any other expectation is
/// an error (417). Empty elements are skipped.
fn expects_continue(head: &Head<'_>) -> Result<bool, HttpError> {
    let mut found = false;
    for item in list_items(head, "expect") {
        if item.eq_ignore_ascii_case(b"100-continue") {
            found = true;
        } else if !item.is_empty() {
            return Err(HttpError::ExpectationFailed);
        }
    }
    Ok(found)
}

/// The comma-separated elements of every `name` header, each without surrounding OWS.
fn list_items<'a>(head: &'a Head<'_>, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.headers_named(name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
}

/// An HTTP/1.1 request needs `Host`; no request may have two, or a value that is not one
/// `uri-host[:port]`. A comma is refused although RFC 3986 allows it in a reg-name: here it
/// is far more likely two folded Host headers than a real host name.
/// `host`: the value of the one `Host` there is.
fn check_host(head: &Head<'_>, hosts: u32, host: &[u8]) -> Result<(), HttpError> {
    match hosts {
        0 if head.version == Version::Http11 => Err(HttpError::MissingHost),
        0 => Ok(()),
        1 if !host.iter().all(|&b| HOST[b as usize]) => Err(HttpError::BadHost),
        1 => Ok(()),
        _ => Err(HttpError::BadHost),
    }
}

/// The one length all `Content-Length` values agree on.
fn content_length(head: &Head<'_>) -> Result<u64, HttpError> {
    let mut length = None;
    for item in list_items(head, "content-length") {
        let n = parse_decimal(item).ok_or(HttpError::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(HttpError::ContentLengthMismatch);
        }
        length = Some(n);
    }
    length.ok_or(HttpError::ContentLength)
}

/// `1*DIGIT` as a `u64`, by hand: `u64::from_str` would accept a leading `+`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = if d.is_ascii_digit() {
            d - b'0'
        } else {
            return None;
        };
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Checks that the transfer codings end with a single `chunked` (else 400) and that there
/// is no other coding (else 501: only `chunked` is implemented).
fn check_transfer_coding(head: &Head<'_>) -> Result<(), HttpError> {
    let (mut chunked, mut last_chunked, mut other) = (0, false, false);
    for item in list_items(head, "transfer-encoding") {
        // transfer-coding = token *( OWS ";" OWS transfer-parameter )
        let semi = item.iter().position(|&b| b == b';');
        let name = trim_ows(&item[..semi.unwrap_or(item.len())]);
        if name.is_empty() || !name.iter().all(|&b| TOKEN[b as usize]) {
            return Err(HttpError::TransferEncoding);
        }
        last_chunked = name.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            if semi.is_some() {
                return Err(HttpError::TransferEncoding);
            }
            chunked += 1;
        } else {
            other = true;
        }
    }
    if chunked != 1 || !last_chunked {
        return Err(HttpError::ChunkedNotFinal);
    }
    if other {
        return Err(HttpError::UnsupportedTransferCoding);
    }
    Ok(())
}

/// `Host` bytes: unreserved, pct-encoded, sub-delims except `,`, `:` and IP-literal brackets.
static HOST: [bool; 256] = byte_class!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')'
    )
    || matches!(b, b'*' | b'+' | b';' | b'=' | b':' | b'[' | b']'));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_head, Limits, Status};
    use BodyKind::*;
    use HttpError::*;

    /// (version, header lines, expected body kind and flags or error)
    type Row = (
        &'static str,
        &'static str,
        Result<(BodyKind, bool, bool), HttpError>,
    );

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        ("1.1", "Host: a", Ok((None, true, false))),
        ("1.1", "Host: a\r\nContent-Length: 5", Ok((Length(5), true, false))),
        ("1.1", "Host: a\r\nContent-Length: 0", Ok((Length(0), true, false))),
        ("1.1", "Host: a\r\nContent-Length:  5 ", Ok((Length(5), true, false))),
        ("1.1", "Host: a\r\nContent-Length: 007", Ok((Length(7), true, false))),
        ("1.1", "Host: a\r\nContent-Length: 5\r\nContent-Length: 5", Ok((Length(5), true, false))),
        ("1.1", "Host: a\r\nContent-Length: 5, 5", Ok((Length(5), true, false))),
        ("1.1", "Host: a\r\nContent-Length: 18446744073709551615", Ok((Length(u64::MAX), true, false))),
        ("1.1", "Host: a\r\nContent-Length: 18446744073709551616", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length:", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: +5", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: -1", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: 0x5", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: 5.0", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: 1 2", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: 5,", Err(ContentLength)),
        ("1.1", "Host: a\r\nContent-Length: 5\r\nContent-Length: 6", Err(ContentLengthMismatch)),
        ("1.1", "Host: a\r\nContent-Length: 5, 6", Err(ContentLengthMismatch)),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked", Ok((Chunked, true, false))),
        ("1.1", "Host: a\r\nTransfer-Encoding: CHUNKED", Ok((Chunked, true, false))),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5", Err(LengthAndChunked)),
        ("1.1", "Host: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", Err(LengthAndChunked)),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked, chunked", Err(ChunkedNotFinal)),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", Err(ChunkedNotFinal)),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked, gzip", Err(ChunkedNotFinal)),
        ("1.1", "Host: a\r\nTransfer-Encoding: gzip", Err(ChunkedNotFinal)),
        ("1.1", "Host: a\r\nTransfer-Encoding: gzip, chunked", Err(UnsupportedTransferCoding)),
        ("1.1", "Host: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked", Err(UnsupportedTransferCoding)),
        ("1.1", "Host: a\r\nTransfer-Encoding: ,chunked", Err(TransferEncoding)),
        ("1.1", "Host: a\r\nTransfer-Encoding:", Err(TransferEncoding)),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked;x=1", Err(TransferEncoding)),
        ("1.1", "Host: a\r\nTransfer-Encoding: \"chunked\"", Err(TransferEncoding)),
        ("1.1", "Host: a\r\nTransfer-Encoding: chunked ", Ok((Chunked, true, false))),
        ("1.0", "Transfer-Encoding: chunked", Err(TransferEncodingHttp10)),
        ("1.1", "", Err(MissingHost)),
        ("1.1", "Host: a\r\nHost: a", Err(BadHost)),
        ("1.1", "Host: a, b", Err(BadHost)),
        ("1.1", "Host: a b", Err(BadHost)),
        ("1.1", "Host: a@b", Err(BadHost)),
        ("1.1", "Host:", Ok((None, true, false))),
        ("1.1", "Host: [::1]:8080", Ok((None, true, false))),
        ("1.0", "", Ok((None, false, false))),
        ("1.0", "Connection: keep-alive", Ok((None, true, false))),
        ("1.0", "Connection: Keep-Alive, close", Ok((None, false, false))),
        ("1.1", "Host: a\r\nConnection: close", Ok((None, false, false))),
        ("1.1", "Host: a\r\nConnection: upgrade, CLOSE", Ok((None, false, false))),
        ("1.1", "Host: a\r\nConnection: keep-alive", Ok((None, true, false))),
        ("1.1", "Host: a\r\nConnection: closed", Ok((None, true, false))),
        ("1.1", "Host: a\r\nConnection: upgrade\r\nConnection: close", Ok((None, false, false))),
        ("1.1", "Host: a\r\nConnection: upgrade ,  close ", Ok((None, false, false))),
        ("1.1", "Host: a\r\nConnection: close-ish", Ok((None, true, false))),
        ("1.0", "Connection:keep-alive", Ok((None, true, false))),
        ("1.0", "Connection: , keep-alive,", Ok((None, true, false))),
        ("1.1", "Host: a\r\nExpect: 100-Continue\r\nContent-Length: 3", Ok((Length(3), true, true))),
        ("1.1", "Host: a\r\nExpect: 100-continue", Ok((None, true, true))),
        ("1.1", "Host: a\r\nExpect: 100-CONTINUE, 100-continue", Ok((None, true, true))),
        ("1.1", "Host: a\r\nExpect: 100-continue\r\nExpect: 100-Continue", Ok((None, true, true))),
        ("1.1", "Host: a\r\nExpect: , 100-continue ,", Ok((None, true, true))),
        ("1.1", "Host: a\r\nExpect:", Ok((None, true, false))),
        ("1.1", "Host: a\r\nExpect: 100-continuex", Err(ExpectationFailed)),
        ("1.1", "Host: a\r\nExpect: foo", Err(ExpectationFailed)),
        ("1.1", "Host: a\r\nExpect: 100-continue, foo", Err(ExpectationFailed)),
        ("1.1", "Host: a\r\nExpect: 100-continue\r\nExpect: x=1", Err(ExpectationFailed)),
        ("1.1", "Host: a\r\nExpect: 100-continue;a=b", Err(ExpectationFailed)),
        ("1.1", "Host: a\r\nExpect: \"100-continue\"", Err(ExpectationFailed)),
        ("1.1", "Host: a\r\nExpect: 200-ok\r\nContent-Length: 3", Err(ExpectationFailed)),
        ("1.0", "Expect: 100-continue", Ok((None, false, false))),
        ("1.0", "Expect: foo", Ok((None, false, false))),
        ("1.0", "Connection: keep-alive\r\nExpect: 100-continue, foo", Ok((None, true, false))),
    ];

    #[test]
    fn framing_table() {
        for (i, &(version, lines, expected)) in ROWS.iter().enumerate() {
            let sep = if lines.is_empty() { "" } else { "\r\n" };
            let text = format!("POST / HTTP/{version}\r\n{lines}{sep}\r\n");
            let Ok(Status::Complete(head, _)) = parse_head(text.as_bytes(), &Limits::default())
            else {
                panic!("row {i}: head does not parse: {text:?}");
            };
            let got = framing(&head).map(|f| (f.body, f.keep_alive, f.expect_continue));
            assert_eq!(got, expected, "row {i}: {text:?}");
        }
    }
}
