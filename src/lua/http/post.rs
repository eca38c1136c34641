//! Reading the request body for the glue: raw chunks, the whole body, and the events of a
//! `multipart/form-data` body (parts, their data, their end), decoded in Rust so that Lua
//! only sees chunks of at most `maximum_input_chunk_size` bytes and never scans bytes. The
//! glue decides per part whether its data is streamed to a callback, collected into one
//! string (in Rust), or skipped.

use std::collections::VecDeque;

use std::ffi::c_int;

use super::request::{raise, request_ctx, settle, wait, Ctx, Input};
use crate::http::conn::Fail;
use crate::http::form;
use crate::http::multipart::{self, Event, MultipartDecoder, MultipartError, Part};
use crate::lua::stack::{bad_arg, lua_fn, lua_fn_k, Flow, LResult, Raise, Stack};

/// One decoded multipart step, owned (the decoder's events borrow the input).
#[derive(Debug)]
enum PostEvent {
    Start(Part),
    Data(Vec<u8>),
    End,
    Done,
}

/// A multipart body being decoded.
#[derive(Debug)]
pub struct PostState {
    decoder: MultipartDecoder,
    queue: VecDeque<PostEvent>,
    collected: Vec<u8>,
    /// The body ended (or the final delimiter was read): nothing more to feed.
    finished: bool,
}

fn setup_error() -> Raise {
    Raise("Cannot setup request body streamer at this stage anymore".into())
}

fn check_usable(ctx: &Ctx<'_>) -> LResult<()> {
    if ctx.http.conn.m.faulty {
        return Err(Raise("Tried to use faulty request handle".into()));
    }
    Ok(())
}

lua_fn! {
    /// setup(request): before a stream handler is registered or the body is read whole;
    /// raises once that is too late (status sent, input read, monologue).
    pub fn setup(s) {
        let ctx = request_ctx(s, "stream_request_body")?;
        check_usable(&ctx)?;
        let http = ctx.http;
        if !ctx.current
            || http.status_sent
            || http.input == Input::Started
            || http.conn.m.discard_input
        {
            return Err(setup_error());
        }
        http.input = Input::Setup;
        http.conn.m.used = true;
        Ok(0)
    }
}

lua_fn! {
    /// begin(request) -> true the first time the input is processed, false after that (or
    /// when there is none to process: a finished request, or after monologue).
    pub fn begin(s) {
        let ctx = request_ctx(s, "consume_input")?;
        check_usable(&ctx)?;
        let http = ctx.http;
        let first = ctx.current && http.input != Input::Started && !http.conn.m.discard_input;
        if first {
            http.input = Input::Started;
        }
        s.push_bool(first);
        Ok(1)
    }
}

lua_fn_k! {
    /// read_chunk(request) -> next piece of the body (at most maximum_input_chunk_size
    /// bytes), or nil at its end.
    pub fn read_chunk(s, ctx) {
        read_waiting(s, "read_chunk", ctx, |s| {
            let ctx = request_ctx(s, "read_chunk")?;
            ctx.require_current()?;
            let max = ctx.http.conn.m.cfg.max_input_chunk;
            let Some(piece) = waiting(ctx.http.conn.body_data(ctx.h, max))? else {
                return Ok(None);
            };
            match piece {
                Some(r) => {
                    s.push_bytes(&ctx.h.buffered()[r.clone()]);
                    ctx.h.consume(r.end);
                }
                None => s.push_nil(),
            }
            Ok(Some(1))
        })
    }
}

/// A Content-Length body up to this size is collected in the socket's read buffer and
/// copied once into the Lua string; a larger one (or a chunked one) in pieces.
const WHOLE_BODY_BUFFER: u64 = 16 << 20;

lua_fn_k! {
    /// read_all(request) -> the whole body as one string.
    pub fn read_all(s, ctx) {
        read_waiting(s, "body", ctx, |s| {
            let ctx = request_ctx(s, "body")?;
            ctx.require_current()?;
            let http = &mut *ctx.http;
            if waiting(http.conn.buffer_body(ctx.h, WHOLE_BODY_BUFFER))?.is_none() {
                return Ok(None);
            }
            // pieces read before a wait (cooperative connections) are kept in the connection
            let mut body = std::mem::take(&mut http.body_so_far);
            loop {
                let piece = match waiting(http.conn.body_data(ctx.h, usize::MAX)) {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        http.body_so_far = body;
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                };
                let Some(r) = piece else { break };
                if body.is_empty() && http.conn.m.body_done() {
                    // all of it was buffered at once: one copy, straight into the Lua string
                    s.push_bytes(&ctx.h.buffered()[r.clone()]);
                    ctx.h.consume(r.end);
                    return Ok(Some(1));
                }
                body.extend_from_slice(&ctx.h.buffered()[r.clone()]);
                ctx.h.consume(r.end);
            }
            s.push_bytes(&body);
            Ok(Some(1))
        })
    }
}

lua_fn_k! {
    /// post_kind(request) -> "urlencoded" | "multipart" | "none". An unknown media type is
    /// answered with 415 and a malformed multipart Content-Type with 400, both raised.
    pub fn post_kind(s, resumed) {
        let ctx = request_ctx(s, "post_params")?;
        if resumed == Some(ANSWERING) || ctx.http.answering.is_some() {
            return see_out(s, ctx, resumed == Some(ANSWERING));
        }
        ctx.require_current()?;
        let conn = &mut ctx.http.conn;
        let content_type = conn.m.parsed.header(b"content-type").map(<[u8]>::to_vec);
        let kind = match content_type {
            _ if !conn.m.has_body() => "none",
            None => "none",
            Some(ct) if form::is_urlencoded(&ct) => "urlencoded",
            Some(ct) => {
                let limits = multipart::Limits {
                    max_chunk: conn.m.cfg.max_input_chunk,
                    ..multipart::Limits::default()
                };
                match MultipartDecoder::new(&ct, limits) {
                    Ok(decoder) => {
                        ctx.http.post = Some(Box::new(PostState {
                            decoder,
                            queue: VecDeque::new(),
                            collected: Vec::new(),
                            finished: false,
                        }));
                        "multipart"
                    }
                    Err(e) => {
                        multipart_error(ctx, e)?;
                        let ctx = request_ctx(s, "post_params")?;
                        return see_out(s, ctx, false);
                    }
                }
            }
        };
        s.push_str(kind);
        Ok(Flow::Return(1))
    }
}

/// Ctx of a body call resumed while its error response goes out.
const ANSWERING: isize = 2;

/// Answers a multipart error (415 or 400) and raises it; on a cooperative connection whose
/// answer has to wait, returns with the error kept in `answering` (see [`see_out`]).
fn multipart_error(ctx: Ctx<'_>, e: MultipartError) -> LResult<()> {
    let (code, reason) = match e.status() {
        415 => (415, "Unsupported Media Type"),
        _ => (400, "Bad Request"),
    };
    match ctx.http.conn.body_error(ctx.h, code, reason, e.message()) {
        Fail::Wait => {
            ctx.http.answering = Some(format!("{code} {reason} ({})", e.message()));
            Ok(())
        }
        f => Err(raise(f)),
    }
}

/// Sees out the error response of a cooperative connection (yielding while it waits;
/// `resumed` after such a yield), then raises the error.
fn see_out(s: Stack<'_>, ctx: Ctx<'_>, resumed: bool) -> LResult<Flow> {
    match settle(s, &mut ctx.http.conn, ctx.h, ANSWERING, resumed) {
        Ok(Some(flow)) => Ok(flow),
        Ok(None) => Err(Raise(ctx.http.answering.take().unwrap_or_default())),
        Err(f) => {
            ctx.http.answering = None;
            Err(raise(f))
        }
    }
}

/// Runs a body read that may have to wait: `read` returns `Ok(None)` when the
/// connection stopped to wait; the read is then made again after the wait. A read that
/// found a malformed body whose answer has to wait sees the answer out first.
fn read_waiting(
    s: Stack<'_>,
    fname: &str,
    resumed: Option<isize>,
    read: fn(Stack<'_>) -> LResult<Option<c_int>>,
) -> LResult<Flow> {
    if resumed == Some(ANSWERING) {
        return see_out(s, request_ctx(s, fname)?, true);
    }
    loop {
        if let Some(n) = read(s)? {
            return Ok(Flow::Return(n));
        }
        let ctx = request_ctx(s, fname)?;
        if ctx.http.answering.is_some() {
            return see_out(s, ctx, false);
        }
        if let Err(flow) = wait(s, &mut ctx.http.conn, 0) {
            return Ok(flow);
        }
    }
}

/// `Ok(None)` for a wait (see `read_waiting`), else the result as is.
fn waiting<T>(r: Result<T, Fail>) -> LResult<Option<T>> {
    match r {
        Err(Fail::Wait) => Ok(None),
        other => other.map(Some).map_err(raise),
    }
}

/// How the glue wants the data of the current part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Collect,
    Skip,
}

lua_fn_k! {
    /// post_next(request, mode) -> the next multipart event:
    ///   "part", name, file_name, content_type   (each nil if absent)
    ///   "data", chunk        (mode "stream")
    ///   "value", string      (mode "collect": the whole part at its end)
    ///   "end"                (mode "stream" or "skip": the part ended)
    ///   nil                  (the body is complete)
    pub fn post_next(s, ctx) {
        read_waiting(s, "post_params", ctx, post_next_step)
    }
}

fn post_next_step(s: Stack<'_>) -> LResult<Option<c_int>> {
    let mode = match s.check_bytes(2, 1, "post_next")? {
        b"stream" => Mode::Stream,
        b"collect" => Mode::Collect,
        b"skip" => Mode::Skip,
        _ => {
            return Err(bad_arg(
                1,
                "post_next",
                "\"stream\", \"collect\" or \"skip\" expected",
            ))
        }
    };
    let ctx = request_ctx(s, "post_params")?;
    ctx.require_current()?;
    let max = ctx.http.conn.m.cfg.max_input_chunk;
    loop {
        let Some(post) = ctx.http.post.as_mut() else {
            s.push_nil();
            return Ok(Some(1));
        };
        while let Some(ev) = post.queue.pop_front() {
            match ev {
                PostEvent::Start(part) => {
                    post.collected.clear();
                    s.push_str("part");
                    for v in [&part.name, &part.file_name, &part.content_type] {
                        match v {
                            Some(b) => s.push_bytes(b),
                            None => s.push_nil(),
                        }
                    }
                    return Ok(Some(4));
                }
                PostEvent::Data(bytes) => match mode {
                    Mode::Stream => {
                        s.push_str("data");
                        s.push_bytes(&bytes);
                        return Ok(Some(2));
                    }
                    Mode::Collect => post.collected.extend_from_slice(&bytes),
                    Mode::Skip => {}
                },
                PostEvent::End if mode == Mode::Collect => {
                    s.push_str("value");
                    s.push_bytes(&post.collected);
                    post.collected = Vec::new();
                    return Ok(Some(2));
                }
                PostEvent::End => {
                    s.push_str("end");
                    return Ok(Some(1));
                }
                PostEvent::Done => {
                    post.finished = true;
                    post.queue.clear();
                    s.push_nil();
                    return Ok(Some(1));
                }
            }
        }
        if post.finished {
            s.push_nil();
            return Ok(Some(1));
        }
        let Some(piece) = waiting(ctx.http.conn.body_data(ctx.h, max))? else {
            return Ok(None);
        };
        match piece {
            Some(r) => {
                let failed = {
                    let mut feed = post.decoder.feed(&ctx.h.buffered()[r.clone()]);
                    loop {
                        match feed.next_event() {
                            Ok(Some(ev)) => post.queue.push_back(match ev {
                                Event::PartStart(part) => PostEvent::Start(part),
                                Event::Data(d) => PostEvent::Data(d.to_vec()),
                                Event::PartEnd => PostEvent::End,
                                Event::Done => PostEvent::Done,
                            }),
                            Ok(None) => break None,
                            Err(e) => break Some(e),
                        }
                    }
                };
                ctx.h.consume(r.end);
                if let Some(e) = failed {
                    multipart_error(ctx, e)?;
                    return Ok(None);
                }
            }
            None => {
                post.finished = true;
                if let Err(e) = post.decoder.finish() {
                    multipart_error(ctx, e)?;
                    return Ok(None);
                }
            }
        }
    }
}
