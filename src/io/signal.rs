//! SIGTERM catching (`catch_sigterm`, the flag seen by `poll(..., true)`) and the monotonic
//! clock behind `timeref`.
//!
//! The handler sets an atomic flag (and writes to the wake socket, if there is one). A
//! waiter that wants to be woken by SIGTERM opens a [`SigtermWindow`]: SIGTERM is blocked,
//! the flag is checked, and `ppoll` unblocks SIGTERM atomically for the wait alone. A
//! SIGTERM arriving at any moment therefore either sets the flag before the check or
//! interrupts the wait. A worker's idle wait watches the wake socket instead
//! ([`sigterm_wake`]): no mask to change around every wait. Outside such a window SIGTERM
//! stays unblocked, so programs started through `io.popen` or `os.execute` (which inherit
//! the signal mask) can still be terminated normally.

use std::ffi::c_int;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::time::{clock_gettime, ClockId};

/// Set by the handler; cleared only by [`clear_sigterm`].
static RECEIVED: AtomicBool = AtomicBool::new(false);
/// Whether [`catch_sigterm`] installed the handler in this process (inherited by forks).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The write end of this process's SIGTERM wake socket ([`sigterm_wake`]), or -1.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_signal: c_int) {
    // A lock-free atomic store is async-signal-safe.
    RECEIVED.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `send` is async-signal-safe; it does not block (a full socket is awake
        // anyway) and raises no SIGPIPE once the reader is gone; errno is saved and
        // restored so the interrupted code reads its own.
        unsafe {
            let errno = *libc::__errno_location();
            let _ = libc::send(
                fd,
                b"T".as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
            *libc::__errno_location() = errno;
        }
    }
}

/// A descriptor that becomes readable when SIGTERM arrives from now on: a wait that
/// watches it ends on SIGTERM without a signal mask (a [`SigtermWindow`] costs two
/// `sigprocmask` calls per wait). One per process; a new call replaces the previous socket
/// (after a fork, the parent's). The write end stays open for the life of the process,
/// as the handler's target; [`drain_wake`] empties the read end.
pub fn sigterm_wake() -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::IntoRawFd;
    // a socket pair, not a pipe: `send` can refuse SIGPIPE when the read end is closed
    let (r, w) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)?;
    let old = WAKE_FD.swap(w.into_raw_fd(), Ordering::SeqCst);
    if old >= 0 {
        // SAFETY: `old` is the write end a previous call leaked into WAKE_FD (this
        // process's copy); nothing else owns it, and the handler now writes to the new one
        // (it runs on this thread, so not in the middle of using the old one).
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(old) });
    }
    Ok(r)
}

/// Reads what SIGTERMs wrote to the wake socket's read end `fd`, so it stops being readable.
pub fn drain_wake(fd: std::os::fd::BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    while nix::unistd::read(fd, &mut buf).is_ok_and(|n| n > 0) {}
}

/// Installs the SIGTERM handler. Calling it again is harmless.
pub fn catch_sigterm() -> io::Result<()> {
    if INSTALLED.load(Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: an all-zero sigaction is a valid starting value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigterm as extern "C" fn(c_int) as libc::sighandler_t;
    // SA_RESTART: system calls other than waits resume instead of failing with EINTR.
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action` is fully initialised; the handler only touches an atomic.
    crate::io::sys::cvt(unsafe { libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) })?;
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether SIGTERM arrived since the handler was installed (or since the last clear).
pub fn sigterm_received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}

/// Forgets SIGTERMs received so far (the server calls this before each connection).
pub fn clear_sigterm() {
    RECEIVED.store(false, Ordering::SeqCst);
}

/// SIGTERM blocked for the calling thread until dropped; [`wait_mask`](Self::wait_mask) is
/// the mask to hand to `ppoll` so that SIGTERM is deliverable only while waiting.
pub struct SigtermWindow {
    saved: SigSet,
    wait: SigSet,
}

impl SigtermWindow {
    pub fn open() -> io::Result<Self> {
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        let saved = term.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let mut wait = saved;
        wait.remove(Signal::SIGTERM);
        Ok(SigtermWindow { saved, wait })
    }

    pub fn wait_mask(&self) -> &libc::sigset_t {
        self.wait.as_ref()
    }
}

impl Drop for SigtermWindow {
    fn drop(&mut self) {
        // A SIGTERM that became pending after a successful wait is delivered here.
        let _ = self.saved.thread_set_mask();
    }
}

/// Serialises the unit tests that set or read the process-wide flag (tests run threaded).
#[cfg(test)]
pub(crate) static TEST_FLAG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets the flag as the handler would (for unit tests; no real signal in a threaded test).
#[cfg(test)]
pub(crate) fn simulate_sigterm() {
    on_sigterm(libc::SIGTERM);
}

/// Seconds on CLOCK_MONOTONIC (the clock `Instant` uses on Linux).
pub fn monotonic_seconds() -> f64 {
    // CLOCK_MONOTONIC cannot fail on Linux; zero is a harmless fallback.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_never_goes_back() {
        let a = monotonic_seconds();
        let b = monotonic_seconds();
        assert!(a > 0.0 && b >= a);
    }

    #[test]
    fn window_blocks_sigterm_and_restores_the_mask() {
        let before = SigSet::thread_get_mask().unwrap();
        {
            let w = SigtermWindow::open().unwrap();
            assert!(SigSet::thread_get_mask().unwrap().contains(Signal::SIGTERM));
            assert!(!w.wait.contains(Signal::SIGTERM));
        }
        let after = SigSet::thread_get_mask().unwrap();
        assert_eq!(
            before.contains(Signal::SIGTERM),
            after.contains(Signal::SIGTERM)
        );
    }

    #[test]
    fn the_wake_socket_becomes_readable_on_sigterm() {
        use std::os::fd::{AsFd, AsRawFd};
        let _lock = TEST_FLAG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let first = sigterm_wake().unwrap();
        let r = sigterm_wake().unwrap(); // replaces the first
        let readable = |fd: &std::os::fd::OwnedFd| {
            let entries = [crate::io::poll::Entry::new(
                fd.as_raw_fd(),
                crate::io::poll::Interest::Read,
            )];
            crate::io::poll::poll(&entries, Some(std::time::Duration::ZERO), false).unwrap()
                == crate::io::poll::Outcome::Ready
        };
        assert!(!readable(&r));
        simulate_sigterm();
        assert!(readable(&r));
        let mut buf = [0u8; 4];
        assert_eq!(
            nix::unistd::read(&first, &mut buf).ok(),
            Some(0),
            "the replaced socket's write end was closed, unwritten"
        );
        drain_wake(r.as_fd());
        assert!(!readable(&r));
        clear_sigterm();
    }

    #[test]
    fn flag_is_cleared_explicitly() {
        let _lock = TEST_FLAG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        simulate_sigterm();
        assert!(sigterm_received());
        clear_sigterm();
        assert!(!sigterm_received());
    }
}
