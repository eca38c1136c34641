//! Process-level start-up duties of the launcher: the pid file (exclusively locked, holder
//! reported) and running in the background.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::io::sys::{self, Fork};

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
        let fd = sys::open(&c, libc::O_RDWR | libc::O_CREAT, 0o644).map_err(PidFileError::Io)?;
        lock_exclusive(&fd)?;
        let pid = sys::getpid();
        write_pid(&fd, pid).map_err(PidFileError::Io)?;
        Ok(PidFile {
            fd,
            path: path.to_string(),
            owner: pid,
        })
    }

    /// The descriptor whose lock [`daemonize`] hands over.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Takes the lock again in a new process (the daemon) and writes that process's PID.
    pub fn take_over(&mut self) -> Result<(), PidFileError> {
        lock_exclusive(&self.fd)?;
        self.owner = sys::getpid();
        write_pid(&self.fd, self.owner).map_err(PidFileError::Io)
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
    let e = match sys::set_file_lock(fd.as_raw_fd(), libc::F_WRLCK) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
        let holder = sys::file_lock_holder(fd.as_raw_fd(), libc::F_WRLCK)
            .ok()
            .flatten();
        return Err(PidFileError::Locked(holder));
    }
    Err(PidFileError::Io(e))
}

fn write_pid(fd: &OwnedFd, pid: i32) -> io::Result<()> {
    let text = format!("{pid}\n");
    sys::ftruncate(fd.as_fd(), 0)?;
    sys::pwrite(fd.as_fd(), text.as_bytes(), 0)?;
    Ok(())
}

/// Detaches from the terminal (fork, setsid, fork; stdin/stdout/stderr -> /dev/null) and
/// keeps the launching process waiting until the daemon reports whether it took over, so
/// that `moonbridge -b` fails visibly: the launching process prints the daemon's message on
/// its stderr and exits with the daemon's code ([`Detached::ready`] gives 0).
///
/// `locks` are descriptors whose fcntl locks (pid file, log file) the launching process
/// holds. fcntl locks belong to a process and are not inherited, so the launching process
/// releases them just before the fork and the daemon takes them again; if another process
/// takes one in between, the daemon's attempt fails and is reported like any other.
/// Returns in the daemon only.
pub fn daemonize(locks: &[RawFd]) -> io::Result<Detached> {
    let (read_end, write_end) = sys::pipe()?;
    // Released before the fork: released after it, the daemon could ask for a lock while
    // this process still held it.
    for &fd in locks {
        let _ = sys::set_file_lock(fd, libc::F_UNLCK);
    }
    // SAFETY: single-threaded process; the child continues with ordinary code.
    if let Fork::Parent(_) = unsafe { sys::fork() }? {
        drop(write_end);
        await_report(read_end);
    }
    drop(read_end);
    sys::setsid()?;
    // SAFETY: as above; the intermediate process only exits.
    if let Fork::Parent(_) = unsafe { sys::fork() }? {
        // _exit: atexit handlers and Lua's state belong to the daemon.
        sys::exit_now(0);
    }
    let null = sys::open(c"/dev/null", libc::O_RDWR, 0)?;
    for fd in 0..3 {
        let _ = sys::dup2(null.as_fd(), fd);
    }
    drop(null);
    Ok(Detached { report: write_end })
}

/// The launching process's side of [`daemonize`]: reads `[code] message` until the daemon
/// closes the pipe, and exits with it. A daemon that ends without a word is a failure.
fn await_report(from: OwnedFd) -> ! {
    let mut report = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match sys::retry(|| sys::read(from.as_fd(), &mut chunk)) {
            Ok(n) if n > 0 => report.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let (code, message) = match report.split_first() {
        Some((&code, message)) => (code as i32, message.to_vec()),
        None => (3, b"the background process ended during start-up".to_vec()),
    };
    if !message.is_empty() {
        let mut line = b"moonbridge: ".to_vec();
        line.extend_from_slice(&message);
        line.push(b'\n');
        let _ = sys::write(io::stderr().as_fd(), &line);
    }
    // _exit: atexit handlers and Lua's state belong to the daemon.
    sys::exit_now(code)
}

/// The daemon's promise to tell the launching process how its start-up went.
#[derive(Debug)]
pub struct Detached {
    report: OwnedFd,
}

impl Detached {
    /// The daemon took over: the launching process exits 0.
    pub fn ready(self) {
        self.send(0, "");
    }

    /// The daemon cannot go on: the launching process prints `message` and exits `code`.
    pub fn fail(self, code: u8, message: &str) {
        self.send(code, message);
    }

    fn send(self, code: u8, message: &str) {
        let mut report = vec![code];
        report.extend_from_slice(message.as_bytes());
        // A pipe takes PIPE_BUF bytes at once; a longer message may be cut, never blocks
        // for long because the reader is waiting.
        let _ = sys::write(self.report.as_fd(), &report);
    }
}
