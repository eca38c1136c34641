//! The connection userdata and the request object's response methods.
//!
//! A request is a plain Lua table (`method`, `path`, `query` set directly; `socket` and
//! the methods found through the metatable, the rest computed on first access by the
//! glue's `__index`). All requests of a connection share one metatable whose slot `[1]`
//! holds the connection userdata, and switch to a second one with the same `[1]` once they
//! are stale. The connection's uservalue is `{socket, current_request, metatable,
//! stale_metatable}`, which keeps the socket and the current request alive, so the
//! connection can hold their addresses. A method finds its connection through
//! `getmetatable(self)[1]`, and a request that is no longer the current one behaves as a
//! finished one. When the connection is over, the glue releases it (`release`): its
//! uservalue becomes the socket alone.

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr};
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::Instant;

use mlua::ffi;

use super::post::PostState;
use crate::http::conn::{Config, Fail};
use crate::http::drive::blocking::{Conn, Next, Pending};
use crate::http::response::Phase;
use crate::io::poll::{self, Entry, Interest};
use crate::io::{sys, Handle};
use crate::lua::coop;
use crate::lua::fields::Fields;
use crate::lua::object::{
    check_self, object_slot_ptr, push_object, push_upvalue, to_object, LuaObject,
};
use crate::lua::stack::{lua_fn, lua_fn_k, Flow, Functions, LResult, Raise, Stack};
use crate::server::timer;

/// The options of one `generate_handler` call.
pub struct HttpConfig(pub Rc<Config>);

impl LuaObject for HttpConfig {
    const TNAME: &'static CStr = c"moonbridge_http options";
    fn methods() -> Functions {
        &[]
    }
    fn describe(&self) -> String {
        "moonbridge_http options".into()
    }
}

/// What the application did with the request body so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Untouched,
    /// A stream handler was registered.
    Setup,
    /// Reading began (`consume_input`, `body`, `post_params`...): it happens once.
    Started,
}

/// The connection userdata: the HTTP state of one socket.
pub struct HttpConn {
    pub conn: Conn,
    pub input: Input,
    /// `send_status` was called for this request.
    pub status_sent: bool,
    /// Boxed: the decoder holds SIMD searchers aligned beyond what Lua gives userdata.
    pub post: Option<Box<PostState>>,
    /// The socket's slot; its userdata is referenced by the connection's uservalue (the
    /// uservalue is the socket itself once the connection was released).
    socket: NonNull<Option<Handle>>,
    /// `release` was called: no more requests.
    released: bool,
    /// The address of the current request table (referenced by the uservalue too).
    current: *const c_void,
    /// When the glue last (re-)armed the response timer (see `rearm_due`).
    /// (milliseconds of the coarse monotonic clock: cheaper to read and compare than
    /// `Instant`s, twice a request)
    last_arm: Option<u64>,
    /// What `read_all` collected before it stopped to wait (cooperative connections).
    pub body_so_far: Vec<u8>,
    /// The error a body call raises once its error response is out (cooperative
    /// connections: the answer to a malformed multipart body may have to wait).
    pub answering: Option<String>,
    /// This connection's number among the worker's (see `LAST`).
    id: u64,
}

/// One request after another, the response methods are given the current request of the
/// same connection. `LAST` remembers that connection (its address in its userdata block
/// and its `id`), so `request_ctx` finds it without the metatable look-ups (about 250
/// instructions per call, four calls in a small response). Dropping the connection clears
/// it, so the address is always live or null.
#[derive(Clone, Copy)]
struct Last {
    conn: *mut HttpConn,
    id: u64,
}

thread_local! {
    static LAST: Cell<Last> = const { Cell::new(Last { conn: std::ptr::null_mut(), id: 0 }) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        // (`__gc` moves the value out of its block first: compare ids, not addresses)
        let _ = LAST.try_with(|l| {
            if l.get().id == self.id {
                l.set(Last {
                    conn: std::ptr::null_mut(),
                    id: 0,
                });
            }
        });
    }
}

/// The response timer is re-armed at most this often (a `setitimer` per request would
/// cost more than the rest of a small request).
const REARM_INTERVAL_MS: u64 = 1000;

impl HttpConn {
    fn new(conn: Conn, socket: NonNull<Option<Handle>>) -> Self {
        HttpConn {
            conn,
            input: Input::Untouched,
            status_sent: false,
            post: None,
            socket,
            released: false,
            current: std::ptr::null(),
            last_arm: None,
            body_so_far: Vec::new(),
            answering: None,
            id: NEXT_ID.with(|n| n.replace(n.get() + 1)),
        }
    }

    /// Whether the response timer should be re-armed now (then it counts as re-armed).
    fn rearm_due(&mut self) -> bool {
        let now = sys::coarse_monotonic_ms();
        // (the coarse clock may be behind by the slack: within this, the last arm was less
        // than REARM_INTERVAL_MS ago for certain)
        if self
            .last_arm
            .is_some_and(|t| now.saturating_sub(t) < REARM_INTERVAL_MS - sys::COARSE_SLACK_MS)
        {
            return false;
        }
        self.last_arm = Some(now);
        true
    }

    /// The socket, unless it was collected (only possible while finalizers run).
    fn socket<'a>(&self) -> Option<&'a mut Handle> {
        // SAFETY: the socket userdata outlives this connection (see the field), its block
        // never moves, and Lua runs one C function at a time, so no other reference to
        // the handle is live during a method call.
        unsafe { (*self.socket.as_ptr()).as_mut() }
    }
}

impl LuaObject for HttpConn {
    const TNAME: &'static CStr = c"moonbridge_http connection";
    /// Only the glue sees it: no per-connection tables.
    const SHARED_METATABLE: bool = true;
    fn methods() -> Functions {
        &[
            (c"next_request", next_request),
            (c"done", done),
            (c"abort", abort),
            (c"client_fault", client_fault),
            (c"release", release),
            (c"adopt_timer", adopt_timer),
            (c"park_timer", park_timer),
        ]
    }
    /// The fields of a new request, as upvalues of `next_request` (`socket` comes from
    /// the metatable, see the glue), then the values most requests have (see
    /// `push_value`).
    const UPVALUE_STRINGS: &'static [&'static str] =
        &["method", "path", "query", "", "GET", "POST", "HEAD"];
    fn describe(&self) -> String {
        format!("moonbridge_http connection ({})", self.conn.m.phase_name())
    }
}

// Lua aligns userdata to 8 bytes only: anything needing more must be boxed.
const _: () = assert!(std::mem::align_of::<Option<HttpConn>>() <= 8);
// A connection's userdata stays a small block of the workers' allocator: with the block's
// type id and stage (24 bytes) and Lua 5.4's header with one user value (56), at most
// MAX_SMALL. Beyond it every connection's memory came from malloc, and a worker's RSS grew
// by 2 MiB over 2 000 short connections (bench/hardening.sh).
const _: () = assert!(
    std::mem::size_of::<Option<HttpConn>>() + 24 + 56 <= crate::server::small_blocks::MAX_SMALL
);
const _: () = assert!(std::mem::align_of::<Option<HttpConfig>>() <= 8);

/// A request method's view: its connection, the socket, and whether it is current.
pub struct Ctx<'a> {
    pub http: &'a mut HttpConn,
    pub h: &'a mut Handle,
    pub current: bool,
}

impl Ctx<'_> {
    /// Fails unless the request is the current one.
    pub fn require_current(&self) -> LResult<()> {
        if self.current {
            Ok(())
        } else {
            Err(Raise(
                crate::http::response::ResponseError::Finished
                    .message()
                    .into(),
            ))
        }
    }
}

/// The context of the request at index 1 (`fname` names the method in errors).
pub fn request_ctx<'a>(s: Stack<'a>, fname: &str) -> LResult<Ctx<'a>> {
    let me = s.to_pointer(1);
    let last = LAST.with(Cell::get);
    if !last.conn.is_null() && !me.is_null() {
        // SAFETY: `LAST` holds null or a live connection (its Drop clears it), whose block
        // never moves; Lua runs one C function at a time, so no other reference to it is
        // live during this call.
        let http = unsafe { &mut *last.conn };
        // The current request is referenced by its connection, so it is alive and no other
        // object has its address: `self` is that very table.
        if http.current == me {
            if let Some(h) = http.socket() {
                return Ok(Ctx {
                    http,
                    h,
                    current: true,
                });
            }
        }
    }
    let bad = || {
        Raise(format!(
            "bad self to '{fname}' (moonbridge_http request expected, got {})",
            s.type_name(1)
        ))
    };
    s.reserve(2);
    let top = s.top();
    if s.type_of(1) != ffi::LUA_TTABLE || !s.get_metatable(1) {
        return Err(bad());
    }
    s.raw_get_index(-1, 1);
    // The connection stays referenced by the request's metatable while the call runs.
    let http = to_object::<HttpConn>(s, -1);
    s.set_top(top);
    let http = http.ok_or_else(bad)?;
    let current = s.to_pointer(1) == http.current;
    // a request kept past its connection is a finished one
    let h = http.socket().ok_or_else(|| {
        Raise(
            crate::http::response::ResponseError::Finished
                .message()
                .into(),
        )
    })?;
    Ok(Ctx { http, h, current })
}

/// Raises a connection failure as a plain-string Lua error.
pub fn raise(f: Fail) -> Raise {
    match f {
        Fail::Client(m) | Fail::Io(m) | Fail::Misuse(m) => Raise(m),
        Fail::Wait => Raise("moonbridge_http: internal error: a wait was not handled".into()),
    }
}

/// A cooperative connection stopped to wait: yields the wait to the worker's loop (the call
/// then runs again with `ctx` = `again`), or, where the call cannot yield (a coroutine of
/// the application's own), waits here and returns `false`: the caller goes on as if resumed.
/// `true` with no wait pending.
pub fn wait(s: Stack<'_>, conn: &mut Conn, again: isize) -> Result<bool, Flow> {
    let Some(p) = conn.take_pending() else {
        return Ok(true);
    };
    if coop::here(s) {
        return Err(coop::wait_until(s, p.fd, p.read, p.write, p.until, again));
    }
    block_on(p);
    Ok(false)
}

/// Waits in the kernel for what a cooperative connection waits for. Whatever the outcome,
/// the call is made again and sees it.
fn block_on(p: Pending) {
    let mut entries = Vec::with_capacity(2);
    if p.read {
        entries.push(Entry::new(p.fd, Interest::Read));
    }
    if p.write {
        entries.push(Entry::new(p.fd, Interest::Write));
    }
    let timeout = p.until.map(|d| d.saturating_duration_since(Instant::now()));
    let _ = poll::poll(&entries, timeout, false);
}

/// Finishes what a cooperative call left waiting (after a resumption, `resumed`, first the
/// connection's `catch_up`): `Ok(None)` when nothing is left, `Ok(Some(flow))` to yield
/// (the call runs again with `ctx` = `again`), or the failure that came out.
pub fn settle(
    s: Stack<'_>,
    conn: &mut Conn,
    h: &mut Handle,
    again: isize,
    resumed: bool,
) -> Result<Option<Flow>, Fail> {
    let mut catch_up = resumed;
    loop {
        if catch_up {
            match conn.catch_up(h) {
                Ok(()) | Err(Fail::Wait) => {}
                Err(f) => return Err(f),
            }
        }
        match wait(s, conn, again) {
            Ok(true) => return Ok(None),
            Ok(false) => catch_up = true,
            Err(flow) => return Ok(Some(flow)),
        }
    }
}

/// A response call that may wait: `first` does the call's own work on the current request
/// (a stale one is refused, or with `stale_done` taken as done already); what is left
/// after a wait is the connection's `catch_up`. Returns `self`.
fn drive<F>(
    s: Stack<'_>,
    fname: &str,
    ctx: Option<isize>,
    stale_done: bool,
    first: F,
) -> LResult<Flow>
where
    F: FnOnce(&mut Conn, &mut Handle) -> Result<(), Fail>,
{
    let c = request_ctx(s, fname)?;
    let r = match ctx {
        Some(_) => settle(s, &mut c.http.conn, c.h, 1, true),
        None if stale_done && !c.current => Ok(None),
        None => {
            c.require_current()?;
            match first(&mut c.http.conn, c.h) {
                Err(Fail::Wait) => settle(s, &mut c.http.conn, c.h, 1, false),
                r => r.map(|()| None),
            }
        }
    };
    if let Some(flow) = r.map_err(raise)? {
        return Ok(flow);
    }
    s.push_value(1);
    Ok(Flow::Return(1))
}

lua_fn! {
    /// config{body_limit, header_limit, input_chunk, output_chunk, idle, stall, header,
    ///        busy_header, drain, static} -> options object. Sizes and the static header lines are
    /// required (their defaults are the option checker's, in lua/embedded/http_options.lua); a nil timeout
    /// means none. Validated by the option checker first.
    pub fn config(s) {
        let f = Fields::new(s, 1, "config")?;
        let header_limit = f.size(c"header_limit")?.max(1);
        let cfg = Config {
            body_limit: f.size(c"body_limit")? as u64,
            head_limits: crate::http::head::Limits {
                head_size: header_limit,
                target_len: header_limit.min(TARGET_LIMIT),
                headers: HEADER_COUNT_LIMIT,
            },
            max_input_chunk: f.size(c"input_chunk")?.max(1),
            min_output_chunk: f.size(c"output_chunk")?,
            idle_timeout: f.seconds(c"idle")?,
            stall_timeout: f.seconds(c"stall")?,
            header_timeout: f.seconds(c"header")?,
            busy_header_timeout: f.seconds(c"busy_header")?,
            drain_timeout: f.seconds(c"drain")?,
            static_headers: f.bytes(c"static")?,
        };
        push_object(s, HttpConfig(Rc::new(cfg)));
        Ok(1)
    }
}

/// The longest request-target accepted (within the header size limit).
const TARGET_LIMIT: usize = 64 << 10;
/// The most header fields a request may have.
const HEADER_COUNT_LIMIT: usize = 256;

lua_fn! {
    /// connection(options, socket, metatable, stale_metatable) -> connection object; sets
    /// `[1]` of both metatables. New requests get `metatable`; a request switches to
    /// `stale_metatable` when the next one arrives.
    pub fn connection(s) {
        let cfg = to_object::<HttpConfig>(s, 1)
            .ok_or_else(|| s.expected(1, 1, "connection", "moonbridge_http options"))?
            .0
            .clone();
        for i in [3, 4] {
            if s.type_of(i) != ffi::LUA_TTABLE {
                return Err(s.expected(i, i, "connection", "table"));
            }
        }
        // drops extra arguments, so the new object lands at index 5
        s.set_top(4);
        let socket = object_slot_ptr::<Handle>(s, 2)
            .ok_or_else(|| s.expected(2, 2, "connection", "moonbridge_io handle"))?;
        let mut conn = Conn::new(cfg);
        // in a concurrent pool the connection waits by yielding (see `wait`)
        conn.set_cooperative(coop::active());
        push_object(s, HttpConn::new(conn, socket));
        s.reserve(4);
        // the connection is at index 5, the arguments below it
        s.new_table(4, 0);
        for (from, slot) in [(2, USERVALUE_SOCKET), (3, USERVALUE_METATABLE), (4, USERVALUE_STALE)] {
            s.push_value(from);
            s.raw_set_index(-2, slot);
        }
        s.set_uservalue(5);
        for metatable in [3, 4] {
            s.push_value(5);
            s.raw_set_index(metatable, METATABLE_CONNECTION);
        }
        Ok(1)
    }
}

/// The slots of the connection's uservalue table.
const USERVALUE_SOCKET: i64 = 1;
const USERVALUE_REQUEST: i64 = 2;
const USERVALUE_METATABLE: i64 = 3;
const USERVALUE_STALE: i64 = 4;
/// The slot of the request metatables that holds the connection.
const METATABLE_CONNECTION: i64 = 1;

/// Sets field `key` (upvalue `n` of `next_request`) of the table on top of the stack.
fn set_field(s: Stack<'_>, n: c_int, value: &[u8]) {
    push_upvalue(s, n);
    push_value(s, value);
    // a new table without a metatable: a raw set is what `t.key = value` would do
    s.raw_set(-3);
}

/// Pushes `value` as a Lua string: the empty query and the common methods from the
/// upvalues (the same strings: a new short string is hashed and looked up first).
fn push_value(s: Stack<'_>, value: &[u8]) {
    let n = match value {
        b"" => 4,
        b"GET" => 5,
        b"POST" => 6,
        b"HEAD" => 7,
        _ => return s.push_bytes(value),
    };
    push_upvalue(s, n);
}

lua_fn_k! {
    /// conn:next_request(disarmed) -> request table, rearm | nil (the connection ended).
    /// `rearm`: the response timer should be (re-)armed now; `disarmed` says the glue
    /// stopped it, so it is due whatever the time.
    fn next_request(s, _ctx) {
        let http = check_self::<HttpConn>(s, "next_request")?;
        if s.to_boolean(2) {
            http.last_arm = None;
        }
        await_request(s, http, 0, false)
    }
}

/// Waits for the next request of `http` and returns it and `rearm` (see `next_request`),
/// or `nil` once the connection ended (`false` when `ended_false`, as `done` answers). A
/// cooperative wait yields, and the call comes back with `ctx` = `again`.
fn await_request(
    s: Stack<'_>,
    http: &mut HttpConn,
    again: isize,
    ended_false: bool,
) -> LResult<Flow> {
    let ended = |s: Stack<'_>| {
        match ended_false {
            true => s.push_bool(false),
            false => s.push_nil(),
        }
        Ok(Flow::Return(1))
    };
    if http.released {
        return ended(s);
    }
    loop {
        let Some(h) = http.socket() else {
            return Err(Raise(
                "moonbridge_http: the connection has no socket".into(),
            ));
        };
        match http.conn.next_request(h) {
            Next::Request => break,
            Next::Closed => return ended(s),
            Next::Wait => {
                if let Err(flow) = wait(s, &mut http.conn, again) {
                    return Ok(flow);
                }
            }
        }
    }
    http.input = Input::Untouched;
    http.status_sent = false;
    http.post = None;
    let p = &http.conn.m.parsed;
    s.reserve(6);
    // leaves exactly the new request on top
    s.new_table(0, 4);
    set_field(s, 1, p.get(&p.method));
    if let Some(r) = &p.path {
        set_field(s, 2, p.get(r));
    }
    if let Some(r) = &p.query {
        set_field(s, 3, p.get(r));
    }
    s.get_uservalue(1);
    s.raw_get_index(-1, USERVALUE_METATABLE);
    s.set_metatable(-3);
    // the previous request is stale now
    if s.raw_get_index(-1, USERVALUE_REQUEST) == ffi::LUA_TTABLE {
        s.raw_get_index(-2, USERVALUE_STALE);
        s.set_metatable(-2);
    }
    s.pop(1);
    s.push_value(-2);
    s.raw_set_index(-2, USERVALUE_REQUEST);
    s.pop(1);
    http.current = s.to_pointer(-1);
    let id = http.id;
    LAST.with(|l| l.set(Last { conn: http, id }));
    let rearm = http.rearm_due();
    s.push_bool(rearm);
    Ok(Flow::Return(2))
}

/// `conn:done`'s progress across waits (its `ctx`).
const DONE_FINISHING: isize = 1;
const DONE_ENDING: isize = 2;
/// Awaiting the next request (see `done`'s `go_on`).
const DONE_NEXT: isize = 3;

/// `done`'s `go_on`: no response timer runs between requests, so the next request is
/// awaited at once.
pub const GO_ON_UNARMED: i64 = 1;
/// `done`'s `go_on`: the timer runs on between requests; the next request is awaited at
/// once unless the timer is due for re-arming (the glue re-arms it first).
pub const GO_ON_RUNNING: i64 = 2;

lua_fn_k! {
    /// conn:done(request, go_on) -> again, rearm | nil, message: finishes the response the
    /// handler left open, then ends the request. `again`: another request may follow;
    /// `rearm`: the response timer should be re-armed. `nil, message` when the response
    /// could not be finished: the handler sent nothing, or sending failed (the glue then
    /// treats it as a handler error).
    ///
    /// With `go_on` (`GO_ON_UNARMED` or `GO_ON_RUNNING`, for a glue with nothing to do
    /// between requests but re-arming), `done` goes on as `next_request` would and
    /// returns the next request and its `rearm` instead of `true` (one call per request
    /// less); `true, true` still when the timer is due for re-arming first.
    fn done(s, ctx) {
        let http = check_self::<HttpConn>(s, "done")?;
        if ctx == Some(DONE_NEXT) {
            return await_request(s, http, DONE_NEXT, true);
        }
        let Some(h) = http.socket() else {
            s.push_bool(false);
            return Ok(Flow::Return(1));
        };
        let finishing = match ctx {
            None => {
                let request = s.to_pointer(2);
                let open = request == http.current && !h.is_closed() && http.conn.m.is_active();
                if open && http.conn.m.response().phase() == Phase::Initial && !http.conn.m.faulty {
                    return s.fail(
                        "HTTP request handler returned without sending a response (no HTTP status was sent)",
                    ).map(Flow::Return);
                }
                match open {
                    true => Some(http.conn.finish(h)),
                    false => None,
                }
            }
            Some(DONE_FINISHING) => Some(Err(Fail::Wait)),
            Some(_) => None,
        };
        if let Some(r) = finishing {
            let r = match r {
                Err(Fail::Wait) => settle(s, &mut http.conn, h, DONE_FINISHING, ctx.is_some()),
                Err(f) => Err(f),
                Ok(()) => Ok(None),
            };
            match r {
                Ok(Some(flow)) => return Ok(flow),
                Ok(None) => {}
                Err(f) => return s.fail(&raise(f).0).map(Flow::Return),
            }
        }
        // the end of the request may wait too (draining a body, lingering at a close)
        let resumed = ctx == Some(DONE_ENDING);
        if !resumed {
            http.conn.done(h);
        }
        if let Ok(Some(flow)) = settle(s, &mut http.conn, h, DONE_ENDING, resumed) {
            return Ok(flow);
        }
        // what `Conn::done` answers, also once a wait is over
        let again = http.conn.m.between_requests();
        http.post = None;
        if again {
            match s.to_integer(3) {
                Some(GO_ON_UNARMED) => {
                    http.last_arm = None; // (as `next_request(conn, true)`)
                    return await_request(s, http, DONE_NEXT, true);
                }
                Some(GO_ON_RUNNING) if !http.rearm_due() => {
                    return await_request(s, http, DONE_NEXT, true);
                }
                Some(GO_ON_RUNNING) => {
                    s.push_bool(true);
                    s.push_bool(true);
                    return Ok(Flow::Return(2));
                }
                _ => {}
            }
        }
        s.push_bool(again);
        s.push_bool(again && http.rearm_due());
        Ok(Flow::Return(2))
    }
}

lua_fn_k! {
    /// conn:abort(): the handler failed; 500 if nothing was sent, else reset.
    fn abort(s, ctx) {
        let http = check_self::<HttpConn>(s, "abort")?;
        if let Some(h) = http.socket() {
            if ctx.is_none() {
                http.conn.abort(h);
            }
            if let Ok(Some(flow)) = settle(s, &mut http.conn, h, 1, ctx.is_some()) {
                return Ok(flow);
            }
        }
        http.post = None;
        Ok(Flow::Return(0))
    }
}

lua_fn! {
    /// conn:adopt_timer(seconds, allowed) -> whether the server's parked timer serves as
    /// this connection's response timer (see `server::timer`): armed for `seconds` less
    /// than `REARM_INTERVAL_MS` ago, it counts as armed then (see `rearm_due`). Not
    /// `allowed` (the glue will not re-arm it through the server's `timeout`), a parked
    /// timer is disarmed.
    fn adopt_timer(s) {
        let http = check_self::<HttpConn>(s, "adopt_timer")?;
        let secs = s.check_number(2, 1, "adopt_timer")?;
        if !s.to_boolean(3) {
            timer::settle();
            s.push_bool(false);
            return Ok(1);
        }
        let fresh = std::time::Duration::from_millis(REARM_INTERVAL_MS);
        let adopted = timer::adopt(timer::seconds(secs), fresh);
        if let Some(age) = adopted {
            // (rounded up: the timer re-armed too early rather than too late)
            let age_ms = age.as_millis() as u64 + 1;
            http.last_arm = Some(sys::coarse_monotonic_ms().saturating_sub(age_ms));
        }
        s.push_bool(adopted.is_some());
        Ok(1)
    }
}

lua_fn! {
    /// conn:park_timer() -> whether the response timer was parked (cleared, but left
    /// running for the next connection; see `server::timer`); false: clear it as usual.
    fn park_timer(s) {
        check_self::<HttpConn>(s, "park_timer")?;
        s.push_bool(timer::park());
        Ok(1)
    }
}

lua_fn! {
    /// conn:release(): the connection is over (the glue calls it when the handler ends).
    /// Its requests behave as stale ones from now on (the last one gets the stale
    /// metatable here, as the others got it when the next arrived), `next_request`
    /// returns nil, and it keeps only the socket: it lets go of the requests and the
    /// metatables (it has its type's shared metatable, nothing to retire). The connection
    /// has a finalizer, so whatever it still referenced would stay for another collection
    /// cycle (a worker's heap grew several times over with short connections).
    fn release(s) {
        let http = check_self::<HttpConn>(s, "release")?;
        http.released = true;
        http.current = std::ptr::null();
        http.post = None;
        http.body_so_far = Vec::new();
        http.answering = None;
        http.conn.m.recycle();
        s.reserve(5);
        s.set_top(1);
        if s.get_uservalue(1) == ffi::LUA_TTABLE {
            // The last request becomes a stale one, as the ones before it did when the
            // next arrived: it leaves the metatable the worker's next connection reuses
            // (unless the application gave it one of its own).
            if s.raw_get_index(2, USERVALUE_REQUEST) == ffi::LUA_TTABLE && s.get_metatable(3) {
                s.raw_get_index(2, USERVALUE_METATABLE);
                if s.to_pointer(4) == s.to_pointer(5) {
                    s.raw_get_index(2, USERVALUE_STALE);
                    s.set_metatable(3);
                }
            }
            s.set_top(2);
            s.raw_get_index(2, USERVALUE_SOCKET);
            s.set_uservalue(1);
        }
        s.set_top(1);
        Ok(0)
    }
}

lua_fn! {
    /// request_socket(request) -> the socket of the request's connection (nil for anything
    /// else): `request.socket` of a request that is no longer the current one.
    pub fn request_socket(s) {
        s.reserve(3);
        s.set_top(1);
        if s.type_of(1) != ffi::LUA_TTABLE || !s.get_metatable(1) {
            s.push_nil();
            return Ok(1);
        }
        s.raw_get_index(-1, METATABLE_CONNECTION);
        if to_object::<HttpConn>(s, -1).is_none() {
            s.push_nil();
            return Ok(1);
        }
        // a released connection's uservalue is the socket itself (see `release`)
        if s.get_uservalue(-1) == ffi::LUA_TTABLE {
            s.raw_get_index(-1, USERVALUE_SOCKET);
        }
        Ok(1)
    }
}

lua_fn! {
    /// conn:client_fault() -> message | nil: the error raised for the client's fault found
    /// while the current request's body was read (already answered, connection closed).
    fn client_fault(s) {
        let http = check_self::<HttpConn>(s, "client_fault")?;
        match &http.conn.m.client_fault {
            Some(m) => s.push_str(m),
            None => s.push_nil(),
        }
        Ok(1)
    }
}

/// Runs a response step on the current request, or treats a stale one as finished.
fn respond<F>(s: Stack<'_>, fname: &str, step: F) -> LResult<c_int>
where
    F: FnOnce(&mut Conn, &mut Handle) -> Result<(), Fail>,
{
    let ctx = request_ctx(s, fname)?;
    ctx.require_current()?;
    step(&mut ctx.http.conn, ctx.h).map_err(raise)?;
    s.push_value(1);
    Ok(1)
}

lua_fn! {
    pub fn send_status(s) {
        let status = s.check_bytes(2, 1, "send_status")?;
        let ctx = request_ctx(s, "send_status")?;
        ctx.require_current()?;
        ctx.http.conn.send_status(status).map_err(raise)?;
        ctx.http.status_sent = true;
        s.push_value(1);
        Ok(1)
    }
}

lua_fn! {
    pub fn send_header(s) {
        let name = s.check_bytes(2, 1, "send_header")?;
        let value = s.check_bytes(3, 2, "send_header")?;
        respond(s, "send_header", |c, _| c.send_header(name, value))
    }
}

lua_fn_k! {
    /// send_data(...): every argument through `tostring`, concatenated.
    pub fn send_data(s, ctx) {
        if ctx.is_some() {
            // resumed: the data went into the connection already; what is left is sending
            return drive(s, "send_data", ctx, false, |_, _| Ok(()));
        }
        let top = s.top();
        for i in 2..=top {
            let t = s.type_of(i);
            if t != ffi::LUA_TSTRING && t != ffi::LUA_TNUMBER {
                // may raise from a __tostring metamethod, before any Rust value of this call
                s.to_string_in_place(i);
            }
        }
        // Usually one or two pieces: those stay on the stack.
        let mut few: [&[u8]; 4] = [&[]; 4];
        let mut many = Vec::new();
        let n = (top - 1).max(0) as usize;
        for i in 2..=top {
            let piece = s.check_bytes(i, i - 1, "send_data")?;
            if n <= few.len() {
                few[(i - 2) as usize] = piece;
            } else {
                many.push(piece);
            }
        }
        let parts = if n <= few.len() { &few[..n] } else { &many[..] };
        drive(s, "send_data", ctx, false, |c, h| c.send_data(h, parts))
    }
}

lua_fn_k! {
    pub fn flush(s, ctx) {
        drive(s, "flush", ctx, false, |c, h| c.flush(h))
    }
}

lua_fn_k! {
    pub fn finish_headers(s, ctx) {
        drive(s, "finish_headers", ctx, false, |c, h| c.finish_headers(h))
    }
}

lua_fn_k! {
    /// finish(): idempotent; a stale request is already finished.
    pub fn finish(s, ctx) {
        drive(s, "finish", ctx, true, |c, h| c.finish(h))
    }
}

lua_fn! {
    pub fn close_after_finish(s) {
        respond(s, "close_after_finish", |c, _| c.m.close_after_finish())
    }
}

lua_fn! {
    pub fn monologue(s) {
        respond(s, "monologue", |c, _| c.m.monologue())
    }
}

lua_fn! {
    /// fresh(request) -> boolean
    pub fn fresh(s) {
        let ctx = request_ctx(s, "fresh")?;
        let c = &ctx.http.conn.m;
        s.push_bool(ctx.current && c.is_active() && !c.used && ctx.http.input == Input::Untouched);
        Ok(1)
    }
}

lua_fn! {
    /// faulty(request) -> boolean
    pub fn faulty(s) {
        let ctx = request_ctx(s, "faulty")?;
        s.push_bool(ctx.current && ctx.http.conn.m.faulty);
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_conn() -> HttpConn {
        let conn = Conn::new(Rc::new(crate::http::conn::tests::config()));
        // the socket is never dereferenced here
        HttpConn::new(conn, NonNull::dangling())
    }

    #[test]
    fn dropping_the_last_connection_forgets_it() {
        let mut a = http_conn();
        let b = http_conn();
        assert_ne!(a.id, b.id);
        LAST.with(|l| {
            l.set(Last {
                conn: &mut a,
                id: a.id,
            })
        });
        drop(b); // another connection: LAST stays
        assert_eq!(LAST.with(Cell::get).id, a.id);
        // `__gc` moves the value out of its block before dropping it
        let mut block = Some(a);
        drop(block.take());
        let last = LAST.with(Cell::get);
        assert!(last.conn.is_null() && last.id == 0);
    }
}
