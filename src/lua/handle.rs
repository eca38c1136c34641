//! The I/O handle userdata: `read`, `drain`, `write`, `flush` (plain and `_nb`), `finish`,
//! `close`, `reset`, and the address fields. `_call`/`_yield` forms live in `lua/embedded/io_glue.lua`.

use std::ffi::{c_int, CStr};
use std::net::{IpAddr, SocketAddr};

use crate::io::poll::Interest;
use crate::io::{Handle, ReadStatus};
use crate::lua::coop;
use crate::lua::object::{check_self, push_object, push_upvalue, to_object, LuaObject};
use crate::lua::stack::{bad_arg, lua_fn, lua_fn_k, Flow, Functions, LResult, Stack};

impl LuaObject for Handle {
    const TNAME: &'static CStr = c"moonbridge_io handle";
    /// The status strings, in `status_upvalue` order.
    const UPVALUE_STRINGS: &'static [&'static str] = &["term", "maxlen", "eof", "block"];
    const FIELDS: &'static [&'static CStr] = &[
        c"local_ip4",
        c"local_ip6",
        c"local_tcpport",
        c"local_ip",
        c"remote_ip4",
        c"remote_ip6",
        c"remote_tcpport",
        c"remote_ip",
    ];

    fn methods() -> Functions {
        &[
            (c"read", read),
            (c"read_nb", read_nb),
            (c"_read_try", read_try),
            (c"drain", drain),
            (c"drain_nb", drain_nb),
            (c"write", write),
            (c"write_nb", write_nb),
            (c"flush", flush),
            (c"flush_nb", flush_nb),
            (c"finish", finish),
            (c"close", close),
            (c"reset", reset),
        ]
    }

    fn push_field(&self, s: Stack<'_>, key: &[u8]) -> bool {
        let (addr, what) = match key {
            b"local_ip4" | b"local_ip6" | b"local_tcpport" | b"local_ip" => {
                (self.local_addr, &key[6..])
            }
            b"remote_ip4" | b"remote_ip6" | b"remote_tcpport" | b"remote_ip" => {
                (self.remote_addr, &key[7..])
            }
            _ => return false,
        };
        let Some(addr) = addr else {
            return false;
        };
        push_address_field(s, addr, what)
    }

    fn describe(&self) -> String {
        match self.raw_fd() {
            _ if self.is_closed() => "moonbridge_io handle (closed)".into(),
            Some(fd) => format!("moonbridge_io handle ({}, fd {fd})", self.kind().name()),
            None => format!("moonbridge_io handle ({}, finished)", self.kind().name()),
        }
    }

    fn on_close(&mut self) {
        if !self.is_closed() {
            let _ = self.close();
        }
    }
}

/// Pushes `ip4`, `ip6`, `tcpport` or `ip` (text) of `addr`. IPv4-mapped IPv6 addresses
/// count as IPv4 for `ip4` and `ip`, and still have their 16-byte `ip6` form.
pub fn push_address_field(s: Stack<'_>, addr: SocketAddr, what: &[u8]) -> bool {
    let ip = addr.ip();
    let v4 = match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    match what {
        b"ip4" => match v4 {
            Some(a) => s.push_bytes(&a.octets()),
            None => return false,
        },
        b"ip6" => match ip {
            IpAddr::V6(a) => s.push_bytes(&a.octets()),
            IpAddr::V4(_) => return false,
        },
        b"tcpport" => s.push_int(addr.port() as i64),
        b"ip" => match v4 {
            Some(a) => s.push_str(&a.to_string()),
            None => s.push_str(&ip.to_string()),
        },
        _ => return false,
    }
    true
}

/// Pushes a new handle object.
pub fn push_handle(s: Stack<'_>, h: Handle) {
    push_object(s, h);
}

/// `maxlen` (nil or negative = unlimited) and `terminator` (one byte) at stack slots 2 and 3.
fn read_args(s: Stack<'_>, fname: &str) -> LResult<(Option<usize>, Option<u8>)> {
    let maxlen = match s.opt_integer(2, 1, fname)? {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    };
    let term = match s.opt_bytes(3, 2, fname)? {
        None => None,
        Some([b]) => Some(*b),
        Some(_) => return Err(bad_arg(2, fname, "single byte expected")),
    };
    Ok((maxlen, term))
}

/// Pushes the first `len` buffered bytes and the status, then consumes them. Pushing first
/// means a memory error leaves the input in the buffer.
fn push_read(s: Stack<'_>, h: &mut Handle, len: usize, status: ReadStatus) -> LResult<c_int> {
    s.push_bytes(&h.buffered()[..len]);
    push_status(s, status);
    h.consume(len);
    Ok(2)
}

/// Pushes the status string from the method's upvalues (see `UPVALUE_STRINGS`).
fn push_status(s: Stack<'_>, status: ReadStatus) {
    let n = match status {
        ReadStatus::Term => 1,
        ReadStatus::Maxlen => 2,
        ReadStatus::Eof => 3,
        ReadStatus::Block => 4,
    };
    push_upvalue(s, n);
}

/// The descriptor a cooperative wait of `h` waits on (none once it is closed: the call then
/// reports that instead of waiting).
fn wait_fd(h: &Handle) -> Option<std::os::fd::RawFd> {
    h.raw_fd()
}

lua_fn_k! {
    fn read(s, _ctx) {
        let h = check_self::<Handle>(s, "read")?;
        let (maxlen, term) = read_args(s, "read")?;
        let r = match coop::active() {
            false => h.read_blocking(maxlen, term),
            // a partial read stays buffered, so running again after the wait is safe
            true => match h.read_step(maxlen, term, false) {
                Ok(out) if out.status == ReadStatus::Block => match wait_fd(h) {
                    Some(fd) if coop::here(s) => {
                        h.release_idle_buffer(); // an idle connection holds no buffer
                        return Ok(coop::wait(s, fd, Interest::Read, 0));
                    }
                    _ => h.read_blocking(maxlen, term),
                },
                other => other,
            },
        };
        match r {
            Ok(out) => push_read(s, h, out.len, out.status).map(Flow::Return),
            Err(e) => s.handle_error(e).map(Flow::Return),
        }
    }
}

lua_fn! {
    fn read_nb(s) {
        let h = check_self::<Handle>(s, "read_nb")?;
        let (maxlen, term) = read_args(s, "read_nb")?;
        match h.read_step(maxlen, term, true) {
            Ok(out) => push_read(s, h, out.len, out.status),
            Err(e) => s.handle_error(e),
        }
    }
}

lua_fn! {
    /// Used by `read_call`: like `read_nb`, but on "block" returns `false` and keeps the
    /// partial input buffered, so waiting loops never concatenate partial strings.
    fn read_try(s) {
        let h = check_self::<Handle>(s, "read_call")?;
        let (maxlen, term) = read_args(s, "read_call")?;
        match h.read_step(maxlen, term, false) {
            Ok(out) if out.status == ReadStatus::Block => {
                s.push_bool(false);
                Ok(1)
            }
            Ok(out) => push_read(s, h, out.len, out.status),
            Err(e) => s.handle_error(e),
        }
    }
}

lua_fn_k! {
    /// On resumption `ctx` is the count drained before the wait.
    fn drain(s, ctx) {
        let h = check_self::<Handle>(s, "drain")?;
        let (maxlen, term) = read_args(s, "drain")?;
        let before = ctx.unwrap_or(0) as u64;
        let r = match coop::active() {
            false => h.drain_blocking(maxlen, term),
            true => {
                let left = maxlen.map(|m| m.saturating_sub(before as usize));
                match h.drain_step(left, term) {
                    Ok(out) if out.status == ReadStatus::Block => match wait_fd(h) {
                        Some(fd) if coop::here(s) => {
                            let ctx = (before + out.count) as isize;
                            return Ok(coop::wait(s, fd, Interest::Read, ctx));
                        }
                        _ => {
                            let left = left.map(|m| m - out.count as usize);
                            h.drain_blocking(left, term).map(|mut o| {
                                o.count += out.count;
                                o
                            })
                        }
                    },
                    other => other,
                }
            }
        };
        match r {
            Ok(out) => {
                s.push_int((before + out.count) as i64);
                push_status(s, out.status);
                Ok(Flow::Return(2))
            }
            Err(e) => s.handle_error(e).map(Flow::Return),
        }
    }
}

lua_fn! {
    fn drain_nb(s) {
        let h = check_self::<Handle>(s, "drain_nb")?;
        let (maxlen, term) = read_args(s, "drain_nb")?;
        match h.drain_step(maxlen, term) {
            Ok(out) => {
                s.push_int(out.count as i64);
                push_status(s, out.status);
                Ok(2)
            }
            Err(e) => s.handle_error(e),
        }
    }
}

/// The strings (or numbers) passed after `self`, all checked before anything is written, so
/// a bad argument never leaves a partial write or poisons the handle.
fn write_args<'a>(s: Stack<'a>, fname: &str) -> LResult<Vec<&'a [u8]>> {
    let top = s.top();
    let mut parts = Vec::with_capacity((top - 1).max(0) as usize);
    for i in 2..=top {
        parts.push(s.check_bytes(i, i - 1, fname)?);
    }
    Ok(parts)
}

/// A write that may wait: `step` sends or buffers `parts` without blocking and returns the
/// bytes still pending (0: done); `block` waits until the rest is done. Cooperatively, the
/// parts are buffered at once and the call yields until `step(&[])` answers 0 (on
/// resumption `ctx` is 1: the parts were taken already).
fn write_flow(
    s: Stack<'_>,
    ctx: Option<isize>,
    fname: &str,
    step: fn(&mut Handle, &[&[u8]]) -> crate::io::handle::HResult<usize>,
    block: fn(&mut Handle, &[&[u8]]) -> crate::io::handle::HResult<()>,
) -> LResult<Flow> {
    let h = check_self::<Handle>(s, fname)?;
    let parts = if ctx.is_some() {
        Vec::new()
    } else {
        write_args(s, fname)?
    };
    let r = match coop::active() {
        false => block(h, &parts),
        true => match step(h, &parts) {
            Ok(0) => Ok(()),
            Ok(_) => match wait_fd(h) {
                Some(fd) if coop::here(s) => return Ok(coop::wait(s, fd, Interest::Write, 1)),
                _ => block(h, &[]),
            },
            Err(e) => Err(e),
        },
    };
    match r {
        Ok(()) => {
            s.push_value(1);
            Ok(Flow::Return(1))
        }
        Err(e) => s.handle_error(e).map(Flow::Return),
    }
}

lua_fn_k! {
    fn write(s, ctx) {
        write_flow(s, ctx, "write", Handle::write_nb, Handle::write_blocking)
    }
}

lua_fn! {
    fn write_nb(s) {
        let h = check_self::<Handle>(s, "write_nb")?;
        let parts = write_args(s, "write_nb")?;
        match h.write_nb(&parts) {
            Ok(n) => {
                s.push_int(n as i64);
                Ok(1)
            }
            Err(e) => s.handle_error(e),
        }
    }
}

lua_fn_k! {
    fn flush(s, ctx) {
        write_flow(s, ctx, "flush", Handle::flush_nb, Handle::flush_blocking)
    }
}

lua_fn! {
    fn flush_nb(s) {
        let h = check_self::<Handle>(s, "flush_nb")?;
        let parts = write_args(s, "flush_nb")?;
        match h.flush_nb(&parts) {
            Ok(n) => {
                s.push_int(n as i64);
                Ok(1)
            }
            Err(e) => s.handle_error(e),
        }
    }
}

/// `true`, or `nil, message` for an I/O failure.
fn push_done(s: Stack<'_>, r: crate::io::handle::HResult<()>) -> LResult<c_int> {
    match r {
        Ok(()) => {
            s.push_bool(true);
            Ok(1)
        }
        Err(e) => s.handle_error(e),
    }
}

/// In a handler of a concurrent pool: sends what is still buffered before a `close` or
/// `finish`, waiting in the loop while the peer does not take it. `None`: go on with the
/// call (nothing pending, a failure the call itself reports, or no way to yield).
fn flush_first(s: Stack<'_>, h: &mut Handle) -> Option<Flow> {
    if !coop::active() || h.is_closed() || h.is_finished() || h.write_pending() == 0 {
        return None;
    }
    match h.flush_nb(&[]) {
        Ok(n) if n > 0 => match wait_fd(h) {
            Some(fd) if coop::here(s) => Some(coop::wait(s, fd, Interest::Write, 1)),
            _ => None,
        },
        _ => None,
    }
}

lua_fn_k! {
    fn finish(s, _ctx) {
        let h = check_self::<Handle>(s, "finish")?;
        if let Some(wait) = flush_first(s, h) {
            return Ok(wait);
        }
        push_done(s, h.finish()).map(Flow::Return)
    }
}

lua_fn_k! {
    fn close(s, _ctx) {
        let h = check_self::<Handle>(s, "close")?;
        if let Some(wait) = flush_first(s, h) {
            return Ok(wait);
        }
        push_done(s, h.close()).map(Flow::Return)
    }
}

lua_fn_k! {
    /// close_if_open(handle): how a worker closes a connection whose handler returned
    /// (gracefully; in a handler coroutine of a concurrent pool, what is still buffered is
    /// sent while the loop serves others). Nothing for a closed handle or another value.
    pub fn close_if_open(s, _ctx) {
        let Some(h) = to_object::<Handle>(s, 1) else {
            return Ok(Flow::Return(0));
        };
        if h.is_closed() {
            return Ok(Flow::Return(0));
        }
        if let Some(wait) = flush_first(s, h) {
            return Ok(wait);
        }
        let _ = h.close();
        Ok(Flow::Return(0))
    }
}

lua_fn! {
    fn reset(s) {
        let h = check_self::<Handle>(s, "reset")?;
        push_done(s, h.reset())
    }
}
