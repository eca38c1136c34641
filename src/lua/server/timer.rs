//! `timeout()`, `memory_limit` and the small-block cache for `moonbridge_core`: the worker's
//! real-time timer (its expiry kills the worker) and the allocator of its Lua state.

use std::time::Duration;

use mlua::ffi;

use crate::io::signal::monotonic_seconds;
use crate::lua::stack::{bad_arg, lua_fn, Raise, Stack};
use crate::server::timer;

fn push_secs(s: Stack<'_>, d: Duration) {
    s.push_number(d.as_secs_f64());
}

fn failure(e: std::io::Error) -> Raise {
    Raise(format!("timeout: {}", crate::io::sys::error_text(&e)))
}

lua_fn! {
    /// timer_set(seconds) -> previous remaining seconds (0 disarms)
    pub fn timer_set(s) {
        let secs = s.check_number(1, 1, "timeout")?;
        let prev = timer::set(timer::seconds(secs)).map_err(failure)?;
        push_secs(s, prev);
        Ok(1)
    }
}

/// Registry key of the weak-keyed set of handlers made by moonbridge_http, which may park
/// the timer (see `server::timer`).
static PARKING_HANDLERS: u8 = 0;

fn parking_key() -> *const std::ffi::c_void {
    std::ptr::addr_of!(PARKING_HANDLERS).cast()
}

lua_fn! {
    /// timer_handler(f) -> f: `f`, a handler moonbridge_http made, may park the timer when
    /// it is a classic pool's `connect` (in moonbridge_http's core).
    pub fn timer_handler(s) {
        if s.type_of(1) != ffi::LUA_TFUNCTION {
            return Err(bad_arg(1, "timer_handler", "function expected"));
        }
        s.reserve(3);
        s.registry_weak_table(parking_key(), 1);
        s.push_value(1);
        s.push_bool(true);
        s.raw_set(-3);
        s.set_top(1);
        Ok(1)
    }
}

lua_fn! {
    /// timer_parking(connect) -> whether this classic worker parks its timer: `connect` is
    /// a handler of moonbridge_http (see `timer_handler`).
    pub fn timer_parking(s) {
        s.reserve(3);
        let on = s.registry_get(parking_key()) == ffi::LUA_TTABLE && {
            s.push_value(1);
            s.raw_get(-2) == ffi::LUA_TBOOLEAN
        };
        timer::set_parking(on);
        s.push_bool(on);
        Ok(1)
    }
}

lua_fn! {
    /// timer_clear(): clears the timer and disarms the kernel timer at once (the master).
    pub fn timer_clear(s) {
        let _ = s;
        timer::clear().map_err(failure)?;
        Ok(0)
    }
}

lua_fn! {
    /// timer_remaining() -> seconds (0 when no timer is armed)
    pub fn timer_remaining(s) {
        push_secs(s, timer::remaining().map_err(failure)?);
        Ok(1)
    }
}

lua_fn! {
    /// timer_sub(seconds) -> outer remaining, start time: arms the sub-timer of
    /// `timeout(seconds, f)` (a shorter outer timer wins).
    pub fn timer_sub(s) {
        let secs = s.check_number(1, 1, "timeout")?;
        let outer = timer::remaining().map_err(failure)?;
        timer::set(timer::sub_timer(timer::seconds(secs), outer)).map_err(failure)?;
        push_secs(s, outer);
        s.push_number(monotonic_seconds());
        Ok(2)
    }
}

lua_fn! {
    /// timer_restore(outer, start): the outer timer continues minus the elapsed time.
    pub fn timer_restore(s) {
        let outer = timer::seconds(s.check_number(1, 1, "timeout")?);
        let start = s.check_number(2, 2, "timeout")?;
        let elapsed = timer::seconds(monotonic_seconds() - start);
        timer::set(timer::outer_after(outer, elapsed)).map_err(failure)?;
        Ok(0)
    }
}

lua_fn! {
    /// set_memory_limit(bytes): 0 lifts the limit.
    pub fn set_memory_limit(s) {
        let n = s.check_integer(1, 1, "set_memory_limit")?;
        if n < 0 {
            return Err(bad_arg(1, "set_memory_limit", "non-negative number expected"));
        }
        crate::lua::memory::set_limit(s, n as usize);
        Ok(0)
    }
}

lua_fn! {
    /// use_small_blocks() -> whether the state's small blocks now come from a cache
    pub fn use_small_blocks(s) {
        s.push_bool(crate::lua::memory::use_small_blocks(s));
        Ok(1)
    }
}
