//! Process-level start-up duties of the launcher: the pid file (exclusively locked, holder
//! reported) and running in the background.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::io::sys;

/// Why the pid file could not be taken.
#[derive(Debug)]
pub enum PidFileError {
    /// Another process holds the lock; its PID if the kernel told us.
    Locked(Option<i32>),
    Io(io::Error),
}

/// A pid file we hold locked (fcntl write lock) for the life of the master.
#[derive(Debug)]
pub struct PidFile {
    fd: OwnedFd,
    path: String,
    owner: i32,
}

impl PidFile {
    /// Creates or opens `path`, locks it, and writes our PID.
    pub fn acquire(path: &str) -> Result<PidFile, PidFileError> {
        let c =
            CString::new(path).map_err(|_| PidFileError::Io(io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: `c` is a valid C string; the result is a new descriptor or -1.
        let raw = sys::cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                0o644,
            )
        })
        .map_err(PidFileError::Io)?;
        // SAFETY: `raw` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut lock = whole_file_lock(libc::F_WRLCK as i16);
        // SAFETY: F_SETLK reads the flock structure we pass.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLK, &lock) } != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                // SAFETY: F_GETLK fills in the flock structure we pass.
                let holder = (unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLK, &mut lock) }
                    == 0
                    && lock.l_type != libc::F_UNLCK as i16)
                    .then_some(lock.l_pid);
                return Err(PidFileError::Locked(holder));
            }
            return Err(PidFileError::Io(e));
        }
        let pid = sys::getpid();
        let text = format!("{pid}\n");
        // SAFETY: truncate and write on our descriptor with a live buffer.
        unsafe {
            sys::cvt(libc::ftruncate(fd.as_raw_fd(), 0)).map_err(PidFileError::Io)?;
            sys::cvt(libc::pwrite(
                fd.as_raw_fd(),
                text.as_ptr().cast(),
                text.len(),
                0,
            ))
            .map_err(PidFileError::Io)?;
        }
        Ok(PidFile {
            fd,
            path: path.to_string(),
            owner: pid,
        })
    }

    /// Removes the file (only from the process that created it, never from a worker).
    pub fn remove(self) {
        if sys::getpid() == self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
        drop(self.fd);
    }
}

/// Takes an exclusive fcntl lock on the whole file, or names the process holding it.
/// (fcntl locks, unlike flock, tell who holds them, and are not inherited by workers.)
/// Never pass a duplicate descriptor that is closed afterwards: closing any descriptor of a
/// file drops the process's fcntl locks on it.
pub fn lock_exclusive(fd: &impl AsRawFd) -> Result<(), PidFileError> {
    let mut lock = whole_file_lock(libc::F_WRLCK as i16);
    // SAFETY: F_SETLK reads the flock structure we pass.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
        // SAFETY: F_GETLK fills in the flock structure we pass.
        let holder = (unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLK, &mut lock) } == 0
            && lock.l_type != libc::F_UNLCK as i16)
            .then_some(lock.l_pid);
        return Err(PidFileError::Locked(holder));
    }
    Err(PidFileError::Io(e))
}

fn whole_file_lock(kind: i16) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value before we set the fields.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as i16;
    l
}

/// Detaches from the terminal: fork, setsid, fork again; stdin/stdout/stderr -> /dev/null.
/// Returns in the daemon only; the launching process exits 0.
pub fn daemonize() -> io::Result<()> {
    for step in 0..2 {
        // SAFETY: single-threaded process; the child continues with ordinary code.
        let pid = sys::cvt(unsafe { libc::fork() })?;
        if pid > 0 {
            // SAFETY: _exit skips atexit handlers and Lua's state, which belong to the child now.
            unsafe { libc::_exit(0) };
        }
        if step == 0 {
            // SAFETY: setsid has no arguments.
            sys::cvt(unsafe { libc::setsid() })?;
        }
    }
    // SAFETY: opening /dev/null and dup2 onto the standard descriptors.
    unsafe {
        let null = sys::cvt(libc::open(
            c"/dev/null".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC,
        ))?;
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::close(null);
    }
    Ok(())
}
