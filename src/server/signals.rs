//! The master's signals: handlers only write the signal number into a self-pipe, which the
//! master loop polls with everything else (gunicorn's arbiter does the same). Workers undo
//! this right after the fork.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::io::sys;

/// Signals the master handles: worker exits, graceful and fast shutdown.
const MASTER_SIGNALS: [i32; 4] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

static SIGNAL_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

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

/// A pipe with both ends CLOEXEC.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The installed handlers and the pipe they write to.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
    previous: Vec<(i32, libc::sigaction)>,
}

impl SignalPipe {
    pub fn install() -> io::Result<Self> {
        let (read, write) = pipe()?;
        sys::set_nonblocking(read.as_raw_fd(), true)?;
        sys::set_nonblocking(write.as_raw_fd(), true)?;
        SIGNAL_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let mut previous = Vec::new();
        for sig in MASTER_SIGNALS {
            // SAFETY: sigaction with zeroed, then filled structures; the handler only does
            // async-signal-safe work.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, &sa, &mut old);
                previous.push((sig, old));
            }
        }
        // The master must hear these even if the application blocked them.
        // SAFETY: sigprocmask with a local, initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in MASTER_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
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
        loop {
            // SAFETY: read writes at most buf.len() bytes into buf.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend(buf[..n as usize].iter().map(|&b| b as i32));
        }
    }

    /// Puts back the dispositions from before `install` (in workers, and at master exit).
    pub fn restore(&mut self) {
        SIGNAL_WRITE_FD.store(-1, Ordering::Relaxed);
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: reinstalls a sigaction previously returned by the kernel.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
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
    pub fn master_signals() -> Self {
        // SAFETY: sigprocmask with local, initialised sets.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in MASTER_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            let mut saved: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut saved);
            Blocked { saved }
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restores a mask returned by the kernel; pending signals are delivered now.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.saved, std::ptr::null_mut()) };
    }
}

/// In a new worker: SIGINT and SIGHUP end it (the master kills its workers on those anyway);
/// the interpreter's own SIGINT handler would only turn them into Lua errors.
pub fn default_interrupts() {
    for sig in [libc::SIGINT, libc::SIGHUP] {
        // SAFETY: resetting a disposition; no handler pointer involved.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Asks the kernel to send SIGTERM to this worker when the master dies, so that a worker
/// never outlives its master for long (it then finishes its connection and exits).
pub fn set_parent_death_signal() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        )
    };
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
