//! The HTTP/1.1 core of `moonbridge_http`: pure functions and incremental decoders over
//! byte slices. No Lua types here, and no I/O outside `drive`.
//!
//! - `error`: `HttpError`, a `Copy` enum with a static message and a status hint
//! - `head`: request line and header section, strict (RFC 9112), zero-copy
//! - `framing`: which body a request has (Content-Length, chunked, none)
//! - `chunked`: incremental chunked transfer-coding decoder
//! - `form`: query strings and `application/x-www-form-urlencoded` bodies
//! - `multipart`: streaming `multipart/form-data` decoder
//! - `cookie`: the `Cookie` request header
//! - `encode`: `encode_html` and URL encoding helpers
//! - `response`: status line, headers and body framing of a response
//! - `date`: the `Date` header, cached per second
//! - `conn`: one connection as a state machine: bytes and the time in, steps out
//! - `drive`: the drivers of that machine (blocking over a socket; scripted, for tests)
//! - `spare`: buffers of ended connections, reused by the next ones

pub mod chunked;
pub mod conn;
pub mod cookie;
pub mod date;
pub mod drive;
pub mod encode;
pub mod error;
pub mod form;
pub mod framing;
pub mod head;
pub mod multipart;
pub mod response;
pub mod spare;
