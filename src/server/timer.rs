//! `timeout()`: a real-time interval timer whose expiry kills the worker. SIGALRM keeps its
//! default action (terminate), so no Lua code runs on expiry, `finish` is skipped, and the
//! master sees "terminated by SIGALRM" and logs a timeout, as listen.md §4 requires.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::io::sys;

/// Whether this process armed the timer. Only the timer's expiry (which ends the process)
/// or `set` change it, so clearing an unarmed timer needs no system call: the driver clears
/// the timer after every handler.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Whether this process (or the one it was forked from) made SIGALRM's default action the
/// one in force and the signal deliverable. Done once, at the first arming, not for every
/// response (two system calls per connection): moonbridge_io has no way to change either,
/// so only a C module could undo it.
static SIGALRM_READY: AtomicBool = AtomicBool::new(false);

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

/// Arms the timer (`ZERO` disarms it) and returns the time that was remaining before.
pub fn set(d: Duration) -> io::Result<Duration> {
    if d.is_zero() && !ARMED.load(Ordering::Relaxed) {
        return Ok(Duration::ZERO);
    }
    if !d.is_zero() && !SIGALRM_READY.load(Ordering::Relaxed) {
        // The default action must be in force and the signal deliverable, even if the
        // application (its loading, or a prepare) changed either with a C module.
        let ok = sys::default_action(libc::SIGALRM).is_ok();
        let ok = sys::unblock_signals(&[libc::SIGALRM]).is_ok() && ok;
        SIGALRM_READY.store(ok, Ordering::Relaxed);
    }
    let old = sys::set_real_timer(d)?;
    ARMED.store(!d.is_zero(), Ordering::Relaxed);
    Ok(old)
}

/// Time remaining (`ZERO` when no timer is armed).
pub fn remaining() -> io::Result<Duration> {
    if !ARMED.load(Ordering::Relaxed) {
        return Ok(Duration::ZERO);
    }
    sys::real_timer_left()
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
