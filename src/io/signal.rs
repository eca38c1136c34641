//! SIGTERM catching (`catch_sigterm`, the flag seen by `poll(..., true)`) and the monotonic
//! clock behind `timeref`.
//!
//! The handler only sets an atomic flag. A waiter that wants to be woken by SIGTERM opens a
//! [`SigtermWindow`]: SIGTERM is blocked, the flag is checked, and `ppoll` unblocks SIGTERM
//! atomically for the wait alone. A SIGTERM arriving at any moment therefore either sets the
//! flag before the check or interrupts the wait. Outside such a window SIGTERM stays
//! unblocked, so programs started through `io.popen` or `os.execute` (which inherit the
//! signal mask) can still be terminated normally.

use std::ffi::c_int;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::time::{clock_gettime, ClockId};

/// Set by the handler; cleared only by [`clear_sigterm`].
static RECEIVED: AtomicBool = AtomicBool::new(false);
/// Whether [`catch_sigterm`] installed the handler in this process (inherited by forks).
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_signal: c_int) {
    // A lock-free atomic store is async-signal-safe.
    RECEIVED.store(true, Ordering::SeqCst);
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
    fn flag_is_cleared_explicitly() {
        let _lock = TEST_FLAG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        simulate_sigterm();
        assert!(sigterm_received());
        clear_sigterm();
        assert!(!sigterm_received());
    }
}
