//! Module functions `poll`, `catch_sigterm`, `timeref` and `getpid`.
//!
//! `poll` turns its two Lua sets into core [`Entry`] values (one function classifies a key)
//! and maps the core [`Outcome`] to the manual's return values.

use std::ffi::c_int;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// How often poll looks at children that have no pidfd.
const RECHECK: Duration = Duration::from_millis(20);

use mlua::ffi;

use crate::io::exec::Child;
use crate::io::net::Listener;
use crate::io::poll::{self as core, Entry, Interest, Outcome};
use crate::io::{signal, sys, Handle};
use crate::lua::coop;
use crate::lua::object::to_object;
use crate::lua::stack::{bad_arg, lua_fn, lua_fn_k, Flow, Functions, LResult, Raise, Stack};

pub const FUNCTIONS: Functions = &[
    (c"poll", poll),
    (c"catch_sigterm", catch_sigterm),
    (c"timeref", timeref),
    (c"getpid", getpid),
];

/// The entry for one key of a poll set (`argn` names the set in error messages).
fn entry_for_key(s: Stack<'_>, key: c_int, argn: i32, interest: Interest) -> LResult<Entry> {
    if s.type_of(key) == ffi::LUA_TNUMBER {
        let fd = s.check_integer(key, argn, "poll")?;
        let fd = i32::try_from(fd)
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or_else(|| bad_arg(argn, "poll", "invalid file descriptor"))?;
        return Ok(Entry::new(fd, interest));
    }
    if let Some(h) = to_object::<Handle>(s, key) {
        return handle_entry(h, interest);
    }
    if let Some(c) = to_object::<Child>(s, key) {
        // input set: the process exited
        return Ok(if c.exited_now() {
            Entry::ready(interest)
        } else if let Some(fd) = c.poll_fd() {
            Entry::new(fd.as_raw_fd(), interest)
        } else {
            // no pidfd (old kernel): nothing to wait on; poll re-checks every few ms
            Entry::new(-1, interest)
        });
    }
    if let Some(l) = to_object::<Listener>(s, key) {
        // input set: an incoming connection is pending
        return match l.fd() {
            Some(fd) => Ok(Entry::new(fd.as_raw_fd(), interest)),
            None => Err(Raise("Attempt to use a closed listener".into())),
        };
    }
    Err(bad_arg(
        argn,
        "poll",
        &format!(
            "file descriptor or I/O handle expected as key, got {}",
            s.type_name(key)
        ),
    ))
}

/// Buffered input, a known EOF or a read error make a handle readable without the kernel.
/// A finished handle without descriptor counts as ready: its next operation reports why.
fn handle_entry(h: &Handle, interest: Interest) -> LResult<Entry> {
    if h.is_closed() {
        return Err(Raise("Attempt to poll a closed I/O handle".into()));
    }
    if interest == Interest::Read && h.readable_without_kernel() {
        return Ok(Entry::ready(interest));
    }
    Ok(match h.raw_fd() {
        Some(fd) => Entry::new(fd, interest),
        None => Entry::ready(interest),
    })
}

/// Adds the keys of the set at `idx` (also its argument number) whose values are true;
/// a nil set is empty.
fn collect_set(s: Stack<'_>, idx: c_int, interest: Interest, out: &mut Vec<Entry>) -> LResult<()> {
    match s.type_of(idx) {
        ffi::LUA_TNONE | ffi::LUA_TNIL => return Ok(()),
        ffi::LUA_TTABLE => {}
        _ => return Err(s.expected(idx, idx, "poll", "table")),
    }
    s.push_nil();
    // `idx` is an absolute index of a table that is not modified while traversing; stack
    // space for key and value was reserved by the caller.
    while s.next(idx) {
        if s.to_boolean(-1) {
            out.push(entry_for_key(s, s.abs(-2), idx, interest)?);
        }
        s.pop(1);
    }
    Ok(())
}

/// The timeout argument: nil = forever, negative = do not wait.
fn timeout_arg(s: Stack<'_>) -> LResult<Option<std::time::Duration>> {
    if s.is_nil(3) {
        return Ok(None);
    }
    let secs = s.check_number(3, 3, "poll")?;
    if secs.is_nan() {
        return Err(bad_arg(3, "poll", "timeout is NaN"));
    }
    Ok(core::timeout_from_secs(secs))
}

lua_fn_k! {
    /// In a handler of a concurrent pool the wait yields to the worker's loop (`ctx`: the
    /// deadline in microseconds of the monotonic clock, or -1 for none).
    fn poll(s, ctx) {
        // Before any Rust value exists: this may raise.
        s.reserve(4);
        let wakeup = s.to_boolean(4);
        let mut entries = Vec::new();
        collect_set(s, 1, Interest::Read, &mut entries)?;
        collect_set(s, 2, Interest::Write, &mut entries)?;
        let timeout = timeout_arg(s)?;
        // A child without a pidfd has no descriptor (fd -1, which poll(2) skips): wait in
        // short slices and look again.
        let recheck = entries.iter().any(|e| e.fd < 0 && !e.ready_now);
        let deadline = match ctx {
            None => core::deadline_after(Instant::now(), timeout),
            Some(-1) => None,
            Some(us) => {
                let left = us as f64 / 1e6 - signal::monotonic_seconds();
                Some(Instant::now() + Duration::from_secs_f64(left.max(0.0)))
            }
        };
        if coop::active() && coop::here(s) {
            if let Some(flow) = poll_cooperatively(s, &entries, deadline, recheck, wakeup) {
                return Ok(flow);
            }
        }
        let outcome = loop {
            let left = core::remaining(deadline, Instant::now());
            let slice = if recheck { Some(left.map_or(RECHECK, |l| l.min(RECHECK))) } else { left };
            match core::poll(&entries, slice, wakeup) {
                Ok(Outcome::Timeout) if recheck && left.is_none_or(|l| l > RECHECK) => {
                    entries.clear();
                    collect_set(s, 1, Interest::Read, &mut entries)?;
                    collect_set(s, 2, Interest::Write, &mut entries)?;
                    if entries.iter().any(|e| e.ready_now) {
                        break Ok(Outcome::Ready);
                    }
                }
                other => break other,
            }
        };
        let (message, sigterm) = match outcome {
            Ok(Outcome::Ready) => {
                s.push_bool(true);
                return Ok(Flow::Return(1));
            }
            Ok(Outcome::Timeout) => ("Timeout", false),
            Ok(Outcome::Sigterm) => ("SIGTERM received", true),
            Err(e) => return s.fail_os(&e).map(Flow::Return),
        };
        push_outcome(s, message, sigterm, wakeup).map(Flow::Return)
    }
}

/// Pushes a poll that ended without readiness: `false, message[, sigterm]`.
fn push_outcome(s: Stack<'_>, message: &str, sigterm: bool, wakeup: bool) -> LResult<c_int> {
    s.push_bool(false);
    s.push_str(message);
    if !wakeup {
        return Ok(2);
    }
    s.push_bool(sigterm);
    Ok(3)
}

/// `poll` in a handler of a concurrent pool: answers at once if it can, else yields the
/// descriptors and the deadline to the worker's loop (`None`: go on as a plain poll, which
/// then returns at once).
fn poll_cooperatively(
    s: Stack<'_>,
    entries: &[Entry],
    deadline: Option<Instant>,
    recheck: bool,
    wakeup: bool,
) -> Option<Flow> {
    match core::poll(entries, Some(Duration::ZERO), wakeup) {
        Ok(Outcome::Timeout) => {}
        _ => return None,
    }
    let now = Instant::now();
    if deadline.is_some_and(|d| d <= now) {
        return None;
    }
    // a child without a pidfd has no descriptor: look again in a while
    let wake = match (deadline, recheck) {
        (d, false) => d,
        (None, true) => Some(now + RECHECK),
        (Some(d), true) => Some(d.min(now + RECHECK)),
    };
    let ctx = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(now).as_secs_f64();
            ((signal::monotonic_seconds() + left) * 1e6) as isize
        }
    };
    s.reserve(8);
    let fds: Vec<(RawFd, &str)> = entries
        .iter()
        .filter(|e| e.fd >= 0)
        .map(|e| {
            (
                e.fd,
                if e.interest == Interest::Read {
                    "r"
                } else {
                    "w"
                },
            )
        })
        .collect();
    Some(coop::wait_many(s, &fds, wake, ctx))
}

lua_fn! {
    fn catch_sigterm(s) {
        match signal::catch_sigterm() {
            Ok(()) => Ok(0),
            Err(e) => s.fail_os(&e),
        }
    }
}

lua_fn! {
    fn timeref(s) {
        let now = signal::monotonic_seconds();
        if s.is_nil(1) {
            s.push_number(now);
        } else {
            let previous = s.check_number(1, 1, "timeref")?;
            s.push_number(now - previous);
        }
        Ok(1)
    }
}

lua_fn! {
    fn getpid(s) {
        s.push_int(sys::getpid() as i64);
        Ok(1)
    }
}
