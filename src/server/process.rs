//! Process-level start-up duties of the launcher: the pid file (exclusively locked, holder
//! reported) and running in the background.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

fn write_pid(fd: &OwnedFd, pid: i32) -> io::Result<()> {
    let text = format!("{pid}\n");
    // SAFETY: truncate and write on our descriptor with a live buffer.
    unsafe {
        sys::cvt(libc::ftruncate(fd.as_raw_fd(), 0))?;
        sys::cvt(libc::pwrite(
            fd.as_raw_fd(),
            text.as_ptr().cast(),
            text.len(),
            0,
        ))?;
    }
    Ok(())
}

fn whole_file_lock(kind: i16) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value before we set the fields.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as i16;
    l
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
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills in two new descriptors.
    sys::cvt(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // Released before the fork: released after it, the daemon could ask for a lock while
    // this process still held it.
    for &fd in locks {
        let unlock = whole_file_lock(libc::F_UNLCK as i16);
        // SAFETY: F_SETLK reads the flock structure we pass.
        unsafe { libc::fcntl(fd, libc::F_SETLK, &unlock) };
    }
    // SAFETY: single-threaded process; the child continues with ordinary code.
    let pid = sys::cvt(unsafe { libc::fork() })?;
    if pid > 0 {
        drop(write_end);
        await_report(read_end);
    }
    drop(read_end);
    // SAFETY: setsid has no arguments.
    sys::cvt(unsafe { libc::setsid() })?;
    // SAFETY: as above; the intermediate process only exits.
    if sys::cvt(unsafe { libc::fork() })? > 0 {
        // SAFETY: _exit skips atexit handlers and Lua's state, which belong to the daemon.
        unsafe { libc::_exit(0) };
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
    Ok(Detached { report: write_end })
}

/// The launching process's side of [`daemonize`]: reads `[code] message` until the daemon
/// closes the pipe, and exits with it. A daemon that ends without a word is a failure.
fn await_report(from: OwnedFd) -> ! {
    let mut report = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = sys::retry(|| {
            // SAFETY: reading into a live local buffer of the given length.
            sys::cvt(unsafe { libc::read(from.as_raw_fd(), chunk.as_mut_ptr().cast(), 512) })
        });
        match n {
            Ok(n) if n > 0 => report.extend_from_slice(&chunk[..n as usize]),
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
        // SAFETY: writing a live buffer to our stderr.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    }
    // SAFETY: _exit skips atexit handlers and Lua's state, which belong to the daemon.
    unsafe { libc::_exit(code) }
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
        // SAFETY: writing a live buffer to our pipe descriptor.
        unsafe {
            libc::write(
                self.report.as_raw_fd(),
                report.as_ptr().cast(),
                report.len(),
            )
        };
    }
}
