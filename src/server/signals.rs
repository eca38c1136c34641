//! The master's signals: handlers only write the signal number into a self-pipe, which the
//! master loop polls with everything else (gunicorn's arbiter does the same). Workers undo
//! this right after the fork.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::io::sys::{self, SavedAction};

/// Signals the master handles: worker exits, graceful and fast shutdown.
const MASTER_SIGNALS: [i32; 4] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

static SIGNAL_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The handler stays on raw libc: it runs between any two instructions of the master, so it
/// works on the bare descriptor number from an atomic (no `BorrowedFd` can be held for it)
/// and must put errno back before returning, which `sys::write` would not do.
extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored around it. A
        // full pipe drops the byte, which is harmless: the loop reaps and checks anyway.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

/// The installed handlers and the pipe they write to.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
    previous: Vec<SavedAction>,
}

impl SignalPipe {
    pub fn install() -> io::Result<Self> {
        let (read, write) = sys::pipe()?;
        sys::set_nonblocking(read.as_raw_fd(), true)?;
        sys::set_nonblocking(write.as_raw_fd(), true)?;
        SIGNAL_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let mut previous = Vec::new();
        for sig in MASTER_SIGNALS {
            let flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            // SAFETY: the handler only does async-signal-safe work (see `on_signal`).
            previous.push(unsafe { sys::set_handler(sig, on_signal, flags) }?);
        }
        // The master must hear these even if the application blocked them.
        sys::unblock_signals(&MASTER_SIGNALS)?;
        Ok(SignalPipe {
            read,
            _write: write,
            previous,
        })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The signals received since the last call, in order.
    pub fn drain(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        // Until empty (EAGAIN), or an error, or EOF (which cannot happen: we hold the
        // write end).
        while let Ok(n @ 1..) = sys::read(self.read.as_fd(), &mut buf) {
            out.extend(buf[..n].iter().map(|&b| b as i32));
        }
        out
    }

    /// Puts back the dispositions from before `install` (in workers, and at master exit).
    pub fn restore(&mut self) {
        SIGNAL_WRITE_FD.store(-1, Ordering::Relaxed);
        for saved in self.previous.drain(..) {
            let _ = saved.restore();
        }
    }
}

/// The master's signals blocked until dropped. A fork happens under this guard, so that a
/// signal meant for a new worker (SIGTERM at shutdown) cannot reach it while it still has
/// the master's handlers: it stays pending until the worker installed its own dispositions.
pub struct Blocked {
    saved: libc::sigset_t,
}

impl Blocked {
    pub fn master_signals() -> io::Result<Self> {
        let saved = sys::block_signals(&MASTER_SIGNALS)?;
        Ok(Blocked { saved })
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // Pending signals are delivered now.
        let _ = sys::set_signal_mask(&self.saved);
    }
}

/// In a new worker: SIGINT and SIGHUP end it (the master kills its workers on those anyway);
/// the interpreter's own SIGINT handler would only turn them into Lua errors.
pub fn default_interrupts() {
    for sig in [libc::SIGINT, libc::SIGHUP] {
        let _ = sys::default_action(sig);
    }
}

/// Asks the kernel to send SIGTERM to this worker when the master dies, so that a worker
/// never outlives its master for long (it then finishes its connection and exits).
pub fn set_parent_death_signal() {
    let _ = sys::set_parent_death_signal(libc::SIGTERM);
}

/// A short name for log lines.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}
