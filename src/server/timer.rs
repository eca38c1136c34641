//! `timeout()`: a real-time interval timer whose expiry kills the worker, as listen.md §4
//! requires: no Lua code runs on expiry, `finish` is skipped, and the master sees
//! "terminated by SIGALRM" and logs a timeout.
//!
//! The HTTP module arms its response timer when a connection's first request starts and
//! clears it when the connection ends: two system calls per short connection. In a classic
//! worker whose handler is the module's own (no application code runs between its
//! connections), it *parks* the timer instead ([`park`]): cleared for the application, but
//! left running in the kernel, so that the next connection can take it over ([`adopt`]) as
//! the module does for the next request of a keep-alive connection. The SIGALRM handler
//! ignores an expiry that comes before the deadline the application set (there is none
//! while the timer is parked); a real one puts the default action back and raises the
//! signal again, which ends the process.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::io::sys;

/// The deadline the application set, in `CLOCK_MONOTONIC` nanoseconds; 0: none (cleared).
/// Read by the signal handler.
static DEADLINE_NS: AtomicU64 = AtomicU64::new(0);

/// Whether the kernel timer may be running: armed, and no expiry seen since.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// When the kernel timer was last armed and for how long (nanoseconds), for [`adopt`].
static ARMED_AT_NS: AtomicU64 = AtomicU64::new(0);
static ARMED_FOR_NS: AtomicU64 = AtomicU64::new(0);

/// Whether the timer may be parked: set by the driver in a classic worker whose handler is
/// the HTTP module's (see the module comment).
static PARKING: AtomicBool = AtomicBool::new(false);

/// Whether this process (or the one it was forked from) installed the SIGALRM handler and
/// made the signal deliverable. Done once, at the first arming, not for every response:
/// moonbridge_io has no way to change either, so only a C module could undo it. Until it
/// succeeded, nothing is parked.
static HANDLER_READY: AtomicBool = AtomicBool::new(false);

/// Seconds (float) as a timer duration; sub-microsecond positive values round up so that a
/// tiny timeout is still armed rather than cleared.
pub fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    let d = Duration::from_secs_f64(secs.min(1e9));
    if d < Duration::from_micros(1) {
        Duration::from_micros(1)
    } else {
        d
    }
}

/// Whether an expiry at `now` is the application's: it set a deadline and it has come
/// (the kernel timer never fires before the time it was armed for, and the deadline is
/// taken before arming it, so a real expiry is never early).
fn expiry_is_real(deadline_ns: u64, now_ns: u64) -> bool {
    deadline_ns != 0 && now_ns >= deadline_ns
}

extern "C" fn on_alarm(_: libc::c_int) {
    // Only atomics, clock_gettime, sigaction and raise: all async-signal-safe.
    if !expiry_is_real(DEADLINE_NS.load(Ordering::SeqCst), sys::monotonic_ns()) {
        // a parked timer (or the old one, just before it is replaced): nothing to do
        RUNNING.store(false, Ordering::SeqCst);
        return;
    }
    // SAFETY: SIG_DFL installs no handler code; the raised signal stays pending while this
    // handler runs (it is blocked during it) and ends the process once the handler returns.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::raise(libc::SIGALRM);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2)
}

/// What is left until `deadline_ns` at `now_ns` (`ZERO` for none or a passed one).
fn left(deadline_ns: u64, now_ns: u64) -> Duration {
    if deadline_ns == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(deadline_ns.saturating_sub(now_ns))
}

/// Arms the timer (`ZERO` clears it) and returns the time that was remaining before.
pub fn set(d: Duration) -> io::Result<Duration> {
    let now = sys::monotonic_ns();
    let prev = left(DEADLINE_NS.load(Ordering::SeqCst), now);
    if d.is_zero() {
        // (a parked timer stays parked: it is cleared already)
        if DEADLINE_NS.swap(0, Ordering::SeqCst) != 0 {
            disarm()?;
        }
        return Ok(prev);
    }
    if !HANDLER_READY.load(Ordering::Relaxed) {
        // The handler must be in force and the signal deliverable, even if the application
        // (its loading, or a prepare) changed either with a C module.
        // SAFETY: `on_alarm` does only async-signal-safe work (see there).
        let ok = unsafe { sys::set_handler(libc::SIGALRM, on_alarm, libc::SA_RESTART) }.is_ok();
        let ok = sys::unblock_signals(&[libc::SIGALRM]).is_ok() && ok;
        HANDLER_READY.store(ok, Ordering::Relaxed);
    }
    // The deadline first: an expiry of the old timer landing before the new one is armed
    // comes before it and is ignored; the new one cannot expire before it.
    DEADLINE_NS.store(now + nanos(d), Ordering::SeqCst);
    if let Err(e) = sys::set_real_timer(d) {
        DEADLINE_NS.store(0, Ordering::SeqCst);
        return Err(e);
    }
    RUNNING.store(true, Ordering::SeqCst);
    ARMED_AT_NS.store(now, Ordering::Relaxed);
    ARMED_FOR_NS.store(nanos(d), Ordering::Relaxed);
    Ok(prev)
}

/// Disarms the kernel timer, parked or not.
fn disarm() -> io::Result<()> {
    if RUNNING.swap(false, Ordering::SeqCst) {
        sys::set_real_timer(Duration::ZERO)?;
    }
    Ok(())
}

/// Clears the timer and disarms the kernel timer, parked or not.
pub fn clear() -> io::Result<()> {
    DEADLINE_NS.store(0, Ordering::SeqCst);
    disarm()
}

/// Allows parking (see the module comment) or stops it; stopping disarms a parked timer.
pub fn set_parking(on: bool) {
    PARKING.store(on, Ordering::Relaxed);
    if !on {
        settle();
    }
}

/// Clears the timer without disarming the kernel timer, where parking is allowed (else
/// nothing changes and the answer is false: the caller clears it the usual way).
pub fn park() -> bool {
    if !PARKING.load(Ordering::Relaxed) || !HANDLER_READY.load(Ordering::Relaxed) {
        return false;
    }
    DEADLINE_NS.store(0, Ordering::SeqCst);
    true
}

/// Disarms a parked kernel timer (no system call when none is).
pub fn settle() {
    if DEADLINE_NS.load(Ordering::SeqCst) == 0 {
        let _ = disarm();
    }
}

/// In a new worker: fork does not pass the kernel timer on.
pub fn forget_after_fork() {
    DEADLINE_NS.store(0, Ordering::SeqCst);
    RUNNING.store(false, Ordering::SeqCst);
    PARKING.store(false, Ordering::Relaxed);
}

/// Time remaining (`ZERO` when no timer is armed).
pub fn remaining() -> io::Result<Duration> {
    Ok(left(
        DEADLINE_NS.load(Ordering::SeqCst),
        sys::monotonic_ns(),
    ))
}

/// Whether a parked kernel timer armed at `at` for `armed_for` may serve as a new timer of
/// `d` at `now` (all nanoseconds): the same length, armed less than `fresh` ago, with more
/// than `fresh` left (so it cannot expire while it is taken over).
fn adoptable(at: u64, armed_for: u64, d: u64, fresh: u64, now: u64) -> bool {
    armed_for == d && now.saturating_sub(at) < fresh && (at + armed_for).saturating_sub(now) > fresh
}

/// Takes over a parked kernel timer as a timer of `d`, if [`adoptable`]: the HTTP module
/// re-arms its response timer at most every `fresh` anyway (see `http_glue.lua`), and a
/// worker serving one short connection after the other can then keep one timer running.
/// Returns how long ago it was armed; `None` when there is no such timer (nothing changes).
pub fn adopt(d: Duration, fresh: Duration) -> Option<Duration> {
    let now = sys::monotonic_ns();
    if !PARKING.load(Ordering::Relaxed)
        || DEADLINE_NS.load(Ordering::SeqCst) != 0
        || !RUNNING.load(Ordering::SeqCst)
    {
        return None;
    }
    let (at, armed_for) = (
        ARMED_AT_NS.load(Ordering::Relaxed),
        ARMED_FOR_NS.load(Ordering::Relaxed),
    );
    if !adoptable(at, armed_for, nanos(d), nanos(fresh), now) {
        return None;
    }
    DEADLINE_NS.store(at + armed_for, Ordering::SeqCst);
    Some(Duration::from_nanos(now - at))
}

/// The timer for a sub-call `timeout(n, f)`: the shorter of `n` and what remains outside.
/// `timeout(0, f)` sets no limit of its own, so only the outer timer applies.
pub fn sub_timer(requested: Duration, outer: Duration) -> Duration {
    if requested.is_zero() {
        outer
    } else if outer.is_zero() {
        requested
    } else {
        requested.min(outer)
    }
}

/// What remains of the outer timer after a sub-call that took `elapsed` (never zero: zero
/// would disarm it, and an expired outer timer has already killed the process).
pub fn outer_after(outer: Duration, elapsed: Duration) -> Duration {
    if outer.is_zero() {
        Duration::ZERO
    } else {
        outer.saturating_sub(elapsed).max(Duration::from_micros(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(seconds(0.0), Duration::ZERO);
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
        assert_eq!(seconds(1e-9), Duration::from_micros(1));
        // (timeval conversions: io::sys's tests)
    }

    #[test]
    fn expiries() {
        assert!(!expiry_is_real(0, 5)); // parked: no deadline
        assert!(!expiry_is_real(10, 9)); // the old timer, before the new one is armed
        assert!(expiry_is_real(10, 10));
        assert!(expiry_is_real(10, 11));
        assert_eq!(left(0, 5), Duration::ZERO);
        assert_eq!(left(10, 4), Duration::from_nanos(6));
        assert_eq!(left(10, 12), Duration::ZERO);
    }

    #[test]
    fn adoption() {
        let s = 1_000_000_000u64;
        // armed 0.5 s ago for 10 s: taken over as a timer of 10 s
        assert!(adoptable(100 * s, 10 * s, 10 * s, s, 100 * s + s / 2));
        // another length; armed too long ago
        assert!(!adoptable(100 * s, 10 * s, 9 * s, s, 100 * s + s / 2));
        assert!(!adoptable(100 * s, 10 * s, 10 * s, s, 101 * s));
        // too little left (a short timer): it could expire while being taken over
        assert!(!adoptable(100 * s, s / 2, s / 2, s, 100 * s + 1));
        let t = 3 * s / 2;
        assert!(!adoptable(100 * s, t, t, s, 100 * s + 9 * s / 10));
    }

    #[test]
    fn sub_timer_precedence() {
        let s = Duration::from_secs;
        assert_eq!(sub_timer(s(5), Duration::ZERO), s(5));
        assert_eq!(sub_timer(s(5), s(3)), s(3)); // a shorter outer timer wins
        assert_eq!(sub_timer(s(2), s(3)), s(2));
        assert_eq!(sub_timer(Duration::ZERO, s(3)), s(3));
        assert_eq!(sub_timer(Duration::ZERO, Duration::ZERO), Duration::ZERO);
        assert_eq!(outer_after(s(10), s(4)), s(6));
        assert_eq!(outer_after(Duration::ZERO, s(4)), Duration::ZERO);
        assert_eq!(outer_after(s(1), s(4)), Duration::from_micros(1));
    }
}
