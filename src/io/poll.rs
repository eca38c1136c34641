//! `moonbridge_io.poll` without Lua: one `ppoll(2)` over a list of entries, with a timeout
//! and an optional wakeup by SIGTERM.
//!
//! Stateless on purpose: nothing (such as an epoll set) outlives the call, so nothing is
//! shared with forked workers (the server's idle workers use their own set, `io::epoll`). Interruptions by other signals are retried with the time
//! that is left, measured on the monotonic clock.

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::time::{Duration, Instant};

use crate::io::signal::{self, SigtermWindow};
use crate::io::sys::cvt;
pub use crate::io::sys::Interest;

/// One thing to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub fd: RawFd,
    pub interest: Interest,
    /// Ready without asking the kernel (e.g. a handle with buffered input): the poll
    /// returns at once and `fd` is not looked at.
    pub ready_now: bool,
}

impl Entry {
    pub fn new(fd: RawFd, interest: Interest) -> Self {
        Entry {
            fd,
            interest,
            ready_now: false,
        }
    }

    /// An entry that is already ready.
    pub fn ready(interest: Interest) -> Self {
        Entry {
            fd: -1,
            interest,
            ready_now: true,
        }
    }

    fn pollfd(&self) -> libc::pollfd {
        libc::pollfd {
            fd: self.fd,
            events: match self.interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        }
    }
}

/// Why the poll returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// At least one entry is ready (or in an error/hang-up state).
    Ready,
    Timeout,
    /// SIGTERM was received after `catch_sigterm` (only with the wakeup requested).
    Sigterm,
}

/// A timeout in seconds as Lua gives it: negative means "do not wait", infinite or too large
/// for a `Duration` means "wait forever" (`None`). NaN must be rejected by the caller.
pub fn timeout_from_secs(secs: f64) -> Option<Duration> {
    if secs <= 0.0 {
        return Some(Duration::ZERO);
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// The instant a wait of `timeout` started at `now` ends; `None` = never (also on overflow).
pub fn deadline_after(now: Instant, timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| now.checked_add(t))
}

/// Time left until `deadline` (zero once it passed); `None` = unbounded.
pub fn remaining(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(now))
}

/// The `ppoll` timeout for a remaining time; `None` = a null pointer (wait forever).
pub fn to_timespec(left: Option<Duration>) -> Option<libc::timespec> {
    left.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    })
}

/// Waits until an entry is ready, the timeout (`None` = forever) passes, or — when
/// `wakeup_on_sigterm` is set — SIGTERM has been received after `catch_sigterm`.
/// A received SIGTERM takes precedence over ready entries, so shutdown is never starved.
pub fn poll(
    entries: &[Entry],
    timeout: Option<Duration>,
    wakeup_on_sigterm: bool,
) -> io::Result<Outcome> {
    let deadline = deadline_after(Instant::now(), timeout);
    // Open before checking the flag: from here on a SIGTERM stays pending until ppoll.
    let window = if wakeup_on_sigterm {
        Some(SigtermWindow::open()?)
    } else {
        None
    };
    let woken = || window.is_some() && signal::sigterm_received();
    if woken() {
        return Ok(Outcome::Sigterm);
    }
    if entries.iter().any(|e| e.ready_now) {
        return Ok(Outcome::Ready);
    }
    let mut fds: Vec<libc::pollfd> = entries.iter().map(Entry::pollfd).collect();
    let mask = window
        .as_ref()
        .map_or(ptr::null(), |w| w.wait_mask() as *const libc::sigset_t);
    loop {
        let ts = to_timespec(remaining(deadline, Instant::now()));
        let ts_ptr = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a valid pollfd array of the given length; `ts_ptr` and `mask`
        // are null or point to values that live until the call returns.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, mask) };
        match cvt(n) {
            Ok(0) => return Ok(Outcome::Timeout),
            Ok(_) => return Ok(Outcome::Ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if woken() {
                    return Ok(Outcome::Sigterm);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn seconds_become_durations() {
        assert_eq!(timeout_from_secs(-1.0), Some(Duration::ZERO));
        assert_eq!(timeout_from_secs(-0.0), Some(Duration::ZERO));
        assert_eq!(timeout_from_secs(f64::NEG_INFINITY), Some(Duration::ZERO));
        assert_eq!(timeout_from_secs(0.0), Some(Duration::ZERO));
        assert_eq!(timeout_from_secs(0.25), Some(Duration::from_millis(250)));
        assert_eq!(timeout_from_secs(2.0), Some(Duration::from_secs(2)));
        assert_eq!(timeout_from_secs(f64::INFINITY), None);
        assert_eq!(timeout_from_secs(1e300), None);
    }

    #[test]
    fn timespecs_split_seconds_and_nanoseconds() {
        let ts = to_timespec(Some(Duration::from_millis(1500))).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (1, 500_000_000));
        let ts = to_timespec(Some(Duration::ZERO)).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (0, 0));
        let ts = to_timespec(Some(Duration::new(u64::MAX, 999_999_999))).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (libc::time_t::MAX, 999_999_999));
        assert!(to_timespec(None).is_none());
    }

    #[test]
    fn remaining_time_shrinks_and_saturates() {
        let start = Instant::now();
        let deadline = deadline_after(start, Some(Duration::from_secs(3)));
        assert_eq!(deadline, Some(start + Duration::from_secs(3)));
        let later = start + Duration::from_secs(1);
        assert_eq!(remaining(deadline, later), Some(Duration::from_secs(2)));
        let past = start + Duration::from_secs(5);
        assert_eq!(remaining(deadline, past), Some(Duration::ZERO));
        assert_eq!(remaining(None, past), None);
        // A deadline beyond what Instant can hold means "forever", not a panic.
        assert_eq!(deadline_after(start, Some(Duration::MAX)), None);
        assert_eq!(deadline_after(start, None), None);
    }

    #[test]
    fn empty_pipe_times_out_after_the_timeout() {
        let (r, _w) = pipe();
        let start = Instant::now();
        let got = poll(
            &[Entry::new(r.as_raw_fd(), Interest::Read)],
            Some(Duration::from_millis(60)),
            false,
        );
        assert_eq!(got.unwrap(), Outcome::Timeout);
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    #[test]
    fn data_or_writable_space_make_entries_ready() {
        let (r, w) = pipe();
        let read = Entry::new(r.as_raw_fd(), Interest::Read);
        let write = Entry::new(w.as_raw_fd(), Interest::Write);
        assert_eq!(poll(&[write], None, false).unwrap(), Outcome::Ready);
        nix::unistd::write(&w, b"x").unwrap();
        assert_eq!(poll(&[read], None, false).unwrap(), Outcome::Ready);
    }

    #[test]
    fn ready_now_entries_return_without_waiting() {
        let (r, _w) = pipe();
        let entries = [
            Entry::new(r.as_raw_fd(), Interest::Read),
            Entry::ready(Interest::Read),
        ];
        assert_eq!(poll(&entries, None, false).unwrap(), Outcome::Ready);
    }

    #[test]
    fn zero_timeout_polls_once() {
        let (r, _w) = pipe();
        let start = Instant::now();
        let entries = [Entry::new(r.as_raw_fd(), Interest::Read)];
        let got = poll(&entries, Some(Duration::ZERO), false).unwrap();
        assert_eq!(got, Outcome::Timeout);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn received_sigterm_wakes_only_when_asked() {
        let _lock = signal::TEST_FLAG_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (r, _w) = pipe();
        let entries = [Entry::new(r.as_raw_fd(), Interest::Read)];
        let short = Some(Duration::from_millis(20));
        assert_eq!(poll(&entries, short, true).unwrap(), Outcome::Timeout);
        signal::simulate_sigterm();
        assert_eq!(poll(&entries, None, true).unwrap(), Outcome::Sigterm);
        assert_eq!(poll(&entries, short, false).unwrap(), Outcome::Timeout);
        // The flag stays set until cleared; it wins over ready entries.
        let ready = [Entry::ready(Interest::Read)];
        assert_eq!(poll(&ready, None, true).unwrap(), Outcome::Sigterm);
        signal::clear_sigterm();
        assert_eq!(poll(&ready, None, true).unwrap(), Outcome::Ready);
    }
}
