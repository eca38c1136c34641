//! Cooperative waits, for workers of concurrent pools (`listen{ concurrency = N }`).
//!
//! The worker's scheduler (lua/moonbridge.lua) runs each handler in a coroutine it lists in
//! a registry table. A blocking `moonbridge_io` call made from such a coroutine does not
//! wait in the kernel: it yields `(WAIT, fd, mode, deadline)` to the scheduler (see
//! [`wait_until`]), which resumes it
//! once the descriptor is ready, and the call goes on where it stopped (see
//! [`lua_fn_k!`](crate::lua::stack::lua_fn_k)). Anywhere else (a classic worker, the
//! master, a coroutine of the application's own, or a C boundary that cannot yield) the
//! same call blocks as it always did.

use std::ffi::c_void;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mlua::ffi;

use crate::io::poll::Interest;
use crate::lua::stack::{lua_fn, Flow, Stack};

/// Set once the scheduler of a concurrent worker asked for the handler table: until then
/// no call looks any further (the classic paths pay one flag test). A process-wide flag,
/// not a thread-local: the server has no threads, and a thread-local of a loaded library
/// costs a `__tls_get_addr` call on every read (every `read` of a line).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// How often a cooperative wait looks again at what the kernel offers no descriptor for (a
/// child without a pidfd, a Unix listener with a full backlog).
pub const RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// Identity of the value a waiting call yields first; also the registry key of the table
/// of handler coroutines.
static WAIT: u8 = 0;

fn wait_mark() -> *const c_void {
    (&WAIT as *const u8).cast()
}

/// Whether cooperative waits are on in this process at all.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Whether the running call may wait by yielding to the scheduler: cooperative waits are
/// on, the call can yield, and it runs in a handler coroutine itself.
pub fn here(s: Stack<'_>) -> bool {
    if !active() || !s.is_yieldable() {
        return false;
    }
    s.reserve(2);
    if s.registry_get(wait_mark()) != ffi::LUA_TTABLE {
        s.pop(1);
        return false;
    }
    s.push_thread();
    s.raw_get(-2);
    let handler = s.to_boolean(-1);
    s.pop(2);
    handler
}

/// Pushes what a waiting call yields and says to yield it; `ctx` comes back on resumption.
pub fn wait(s: Stack<'_>, fd: RawFd, interest: Interest, ctx: isize) -> Flow {
    let (read, write) = match interest {
        Interest::Read => (true, false),
        Interest::Write => (false, true),
    };
    wait_until(s, fd, read, write, None, ctx)
}

/// As [`wait`], for readiness to read and/or write, and up to a deadline: yields
/// `(WAIT, fd, "r" | "w" | "rw", seconds left or nil)`. The scheduler resumes the call when
/// the descriptor is ready or the deadline passes, whichever comes first.
pub fn wait_until(
    s: Stack<'_>,
    fd: RawFd,
    read: bool,
    write: bool,
    until: Option<Instant>,
    ctx: isize,
) -> Flow {
    s.reserve(4);
    s.push_light(wait_mark());
    s.push_int(fd as i64);
    s.push_str(match (read, write) {
        (true, true) => "rw",
        (false, true) => "w",
        _ => "r",
    });
    match until {
        Some(d) => s.push_number(d.saturating_duration_since(Instant::now()).as_secs_f64()),
        None => s.push_nil(),
    }
    Flow::Yield { n: 4, ctx }
}

/// As [`wait_until`] for several descriptors (`moonbridge_io.poll`): yields
/// `(WAIT, {fd1, mode1, fd2, mode2, ...}, "list", seconds left or nil)`.
pub fn wait_many(s: Stack<'_>, fds: &[(RawFd, &str)], until: Option<Instant>, ctx: isize) -> Flow {
    s.reserve(6);
    s.push_light(wait_mark());
    s.new_table(fds.len() as i32 * 2, 0);
    let t = s.top();
    for (i, (fd, mode)) in fds.iter().enumerate() {
        s.push_int(*fd as i64);
        s.raw_set_index(t, i as i64 * 2 + 1);
        s.push_str(mode);
        s.raw_set_index(t, i as i64 * 2 + 2);
    }
    s.push_str("list");
    match until {
        Some(d) => s.push_number(d.saturating_duration_since(Instant::now()).as_secs_f64()),
        None => s.push_nil(),
    }
    Flow::Yield { n: 4, ctx }
}

lua_fn! {
    /// coop_handlers() -> handlers, WAIT: the table of handler coroutines (weak keys; the
    /// scheduler sets `handlers[co] = true`) and the mark waiting calls yield first. Turns
    /// cooperative waits on for this process.
    pub fn coop_handlers(s) {
        s.reserve(4);
        s.registry_weak_table(wait_mark(), 8);
        ACTIVE.store(true, Ordering::Relaxed);
        s.push_light(wait_mark());
        Ok(2)
    }
}
