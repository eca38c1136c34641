//! Child processes for `moonbridge_io.exec`: `fork` + `execvp` with three pipes, and a
//! pidfd so that waiting (and `poll`) treat the child's exit like a readable descriptor.
//!
//! Everything the child needs (C strings, argv, signal sets, descriptor numbers) is prepared
//! before `fork`; between `fork` and `exec` the child makes only async-signal-safe calls.
//! A `Child` that is dropped unreaped is killed and reaped, but only by the process that
//! created it: a forked worker's copy just closes its descriptor.

use std::ffi::{c_char, c_int, CString};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::io::handle::{Handle, Kind};
use crate::io::sys::{self, cvt, retry, Interest};

/// Exit code the child uses when `execvp` fails (its errno goes through the status pipe).
const EXEC_FAILED: c_int = 127;

/// Signals whose disposition the library may have changed; the child resets them.
const RESET_SIGNALS: [c_int; 5] = [
    libc::SIGPIPE,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGCHLD,
];

/// A program and its arguments as C strings, ready to be executed.
#[derive(Debug, Clone)]
pub struct Command {
    args: Vec<CString>,
}

/// Why `spawn` failed; `Display` gives the message returned to Lua.
#[derive(Debug)]
pub enum SpawnError {
    Pipe(io::Error),
    Fork(io::Error),
    Exec(io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, e) = match self {
            SpawnError::Pipe(e) => ("Could not create pipe", e),
            SpawnError::Fork(e) => ("Could not fork", e),
            SpawnError::Exec(e) => ("Could not execute", e),
        };
        write!(f, "{what}: {}", sys::error_text(e))
    }
}

/// A started child with the parent's ends of its standard streams.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub stdin: Handle,
    pub stdout: Handle,
    pub stderr: Handle,
}

/// What the forked child needs, all prepared before `fork`.
struct ChildPlan {
    argv: Vec<*const c_char>,
    /// Descriptors to become 0, 1, 2 (all >= 3, see `above_stdio`).
    stdio: [RawFd; 3],
    /// Write end of the exec status pipe.
    status: RawFd,
    empty_mask: libc::sigset_t,
}

impl Command {
    /// `Err(i)`: string `i` (0 = the program) contains a NUL byte.
    pub fn new(program: &[u8], args: &[&[u8]]) -> Result<Command, usize> {
        let args = std::iter::once(program)
            .chain(args.iter().copied())
            .enumerate()
            .map(|(i, a)| CString::new(a).map_err(|_| i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Command { args })
    }

    /// Starts the program (found through `PATH` like `execvp`) with its stdin, stdout and
    /// stderr connected to non-blocking pipe handles. A program that cannot be executed
    /// gives `SpawnError::Exec` with the child already reaped.
    pub fn spawn(&self) -> Result<Spawned, SpawnError> {
        let (in_r, in_w) = pipe().map_err(SpawnError::Pipe)?;
        let (out_r, out_w) = pipe().map_err(SpawnError::Pipe)?;
        let (err_r, err_w) = pipe().map_err(SpawnError::Pipe)?;
        let (status_r, status_w) = pipe().map_err(SpawnError::Pipe)?;
        // The child dup2s onto 0..2, which must not overwrite one of its own sources.
        let in_r = above_stdio(in_r).map_err(SpawnError::Pipe)?;
        let out_w = above_stdio(out_w).map_err(SpawnError::Pipe)?;
        let err_w = above_stdio(err_w).map_err(SpawnError::Pipe)?;
        let status_w = above_stdio(status_w).map_err(SpawnError::Pipe)?;
        for fd in [&in_w, &out_r, &err_r] {
            sys::set_nonblocking(fd.as_raw_fd(), true).map_err(SpawnError::Pipe)?;
        }

        let mut argv: Vec<*const c_char> = self.args.iter().map(|a| a.as_ptr()).collect();
        argv.push(ptr::null());
        let plan = ChildPlan {
            argv,
            stdio: [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            status: status_w.as_raw_fd(),
            empty_mask: empty_sigset(),
        };
        let pid = fork_child(&plan).map_err(SpawnError::Fork)?;
        let mut child = Child {
            pid,
            creator: sys::getpid(),
            pidfd: pidfd_open(pid),
            status: None,
        };
        // Our copies of the child's ends must go, or reads would never see EOF.
        drop((in_r, out_w, err_w, status_w));
        match read_exec_status(status_r.as_fd()) {
            Ok(None) => Ok(Spawned {
                child,
                stdin: Handle::new(in_w, Kind::Pipe),
                stdout: Handle::new(out_r, Kind::Pipe),
                stderr: Handle::new(err_r, Kind::Pipe),
            }),
            Ok(Some(errno)) => {
                let _ = child.reap_blocking();
                Err(SpawnError::Exec(io::Error::from_raw_os_error(errno)))
            }
            Err(e) => {
                child.terminate();
                Err(SpawnError::Exec(e))
            }
        }
    }
}

/// A child process started by `Command::spawn`.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    /// The process that forked the child: the only one allowed to kill and reap it on drop.
    creator: libc::pid_t,
    /// Readable once the child has exited; `None` if pidfds are unsupported or once reaped.
    pidfd: Option<OwnedFd>,
    /// Decoded status once reaped (see `decode_status`).
    status: Option<i32>,
}

impl Child {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The status once the child has been reaped.
    pub fn status(&self) -> Option<i32> {
        self.status
    }

    /// True once reaped: `poll` then treats the child as ready at once.
    pub fn has_exited(&self) -> bool {
        self.status.is_some()
    }

    /// A descriptor that polls readable (POLLIN) when the child exits. `None` once reaped
    /// (see `has_exited`) or when the kernel has no pidfds; in that case `exited_now` tells
    /// whether a wait would succeed.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// Whether the child has exited (reaped or not), without reaping it.
    pub fn exited_now(&self) -> bool {
        if self.status.is_some() {
            return true;
        }
        if let Some(fd) = self.poll_fd() {
            return sys::ready_now(fd, Interest::Read).unwrap_or(true);
        }
        // SAFETY: siginfo_t is plain data; waitid writes into it and nothing else.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let r = retry(|| {
            // SAFETY: `info` is a valid siginfo_t for the duration of the call.
            cvt(unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) })
        });
        // SAFETY: when waitid succeeds si_pid is set (0 while the child still runs).
        r.is_err() || unsafe { info.si_pid() } != 0
    }

    /// Sends `signal` unless the child has already been reaped. EINVAL = bad signal number.
    pub fn kill(&mut self, signal: i32) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let r = match &self.pidfd {
            // SAFETY: plain syscall on a pidfd we own; no siginfo is passed.
            Some(fd) => cvt(unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    ptr::null::<libc::siginfo_t>(),
                    0,
                )
            })
            .map(drop),
            // SAFETY: plain syscall; the pid is our unreaped child, so it cannot be reused.
            None => cvt(unsafe { libc::kill(self.pid, signal) }).map(drop),
        };
        match r {
            // Already exited (a zombie may no longer accept signals): nothing left to do.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The status if the child has exited (reaping it), `None` while it runs.
    pub fn wait_nb(&mut self) -> io::Result<Option<i32>> {
        if self.status.is_none() {
            self.waitpid(libc::WNOHANG)?;
        }
        Ok(self.status)
    }

    /// Blocks until the child exits; returns its status. Repeated calls return it again.
    pub fn wait(&mut self) -> io::Result<i32> {
        loop {
            if let Some(status) = self.wait_nb()? {
                return Ok(status);
            }
            match self.poll_fd() {
                Some(fd) => {
                    sys::wait_fd(fd, Interest::Read, -1)?;
                }
                None => return self.reap_blocking(),
            }
        }
    }

    /// Blocking `waitpid`, for exec failures, drops and kernels without pidfds.
    fn reap_blocking(&mut self) -> io::Result<i32> {
        while self.status.is_none() {
            self.waitpid(0)?;
        }
        Ok(self.status.unwrap_or_default())
    }

    /// One `waitpid(pid, flags)`; records the status (and frees the pidfd) if reaped.
    fn waitpid(&mut self, flags: c_int) -> io::Result<()> {
        let mut raw: c_int = 0;
        // SAFETY: `raw` is a valid c_int to write the status into.
        let r = retry(|| cvt(unsafe { libc::waitpid(self.pid, &mut raw, flags) }))?;
        if r == self.pid {
            self.status = Some(decode_status(raw));
            self.pidfd = None;
        }
        Ok(())
    }

    /// Kills and reaps the child if this process created it and it is not reaped yet.
    pub fn terminate(&mut self) {
        if self.status.is_none() && sys::getpid() == self.creator {
            let _ = self.kill(libc::SIGKILL);
            let _ = self.reap_blocking();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `waitpid` status → the manual's value: the exit code, or minus the terminating signal.
pub fn decode_status(raw: c_int) -> i32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw)
    } else if libc::WIFSIGNALED(raw) {
        -libc::WTERMSIG(raw)
    } else {
        raw
    }
}

/// A close-on-exec pipe as (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are new and owned only by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Moves a descriptor that landed on 0, 1 or 2 (because the process closed its standard
/// streams) to a number >= 3, close-on-exec.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own; the new one is ours alone.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn empty_sigset() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    }
}

/// The child's pidfd (close-on-exec by the kernel's definition), or `None` if unsupported.
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: plain syscall; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new pidfd owned only by us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Forks with every signal blocked, so no handler of this process runs in the child before
/// it has reset the dispositions. Returns the child's pid in the parent.
fn fork_child(plan: &ChildPlan) -> io::Result<libc::pid_t> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask fills `old` (it cannot fail with
    // SIG_SETMASK and a valid set).
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    // SAFETY: the child only runs `exec_child`, which makes async-signal-safe calls only.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child and `plan` was prepared before fork.
        unsafe { exec_child(plan) }
    }
    let result = cvt(pid);
    // SAFETY: `old` was initialised by the pthread_sigmask call above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), ptr::null_mut()) };
    result
}

/// Runs in the child between `fork` and `exec`: async-signal-safe calls only, no
/// allocation, no unwinding.
///
/// # Safety
/// Must only be called in a freshly forked child, with every signal blocked.
unsafe fn exec_child(plan: &ChildPlan) -> ! {
    // SAFETY: signal, dup2, sigprocmask, execvp, write and _exit are async-signal-safe
    // (glibc's execvp builds candidate paths on the stack); every pointer comes from `plan`,
    // which outlives this call, and `argv` is NULL-terminated.
    unsafe {
        for sig in RESET_SIGNALS {
            libc::signal(sig, libc::SIG_DFL);
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            // dup2 clears close-on-exec on the copy; the source (>= 3) closes at exec.
            if libc::dup2(fd, target as c_int) == -1 {
                exec_failed(plan.status);
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, &plan.empty_mask, ptr::null_mut());
        libc::execvp(plan.argv[0], plan.argv.as_ptr());
        exec_failed(plan.status)
    }
}

/// Reports errno through the status pipe and exits without running any destructor.
///
/// # Safety
/// Only in the forked child.
unsafe fn exec_failed(status_fd: RawFd) -> ! {
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL);
    // SAFETY: write and _exit are async-signal-safe; the buffer is a live c_int. A short
    // write is impossible for 4 bytes on a pipe.
    unsafe {
        libc::write(
            status_fd,
            (&errno as *const c_int).cast(),
            std::mem::size_of::<c_int>(),
        );
        libc::_exit(EXEC_FAILED)
    }
}

/// Reads the exec status pipe: EOF = the exec succeeded (close-on-exec closed the write
/// end); four bytes = the errno of the failed exec.
fn read_exec_status(fd: BorrowedFd<'_>) -> io::Result<Option<c_int>> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        let n = retry(|| {
            // SAFETY: `rest` is a live, writable buffer of the length passed.
            cvt(unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) })
        })?;
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok((got == buf.len()).then(|| c_int::from_ne_bytes(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_returned_as_is() {
        for code in [0, 1, 3, 127, 255] {
            assert_eq!(decode_status(code << 8), code);
        }
    }

    #[test]
    fn signals_are_negated_with_or_without_core_dump() {
        assert_eq!(decode_status(libc::SIGKILL), -9);
        assert_eq!(decode_status(libc::SIGTERM), -15);
        assert_eq!(decode_status(0x80 | libc::SIGSEGV), -11);
    }

    #[test]
    fn command_rejects_nul_bytes_naming_the_string() {
        assert_eq!(Command::new(b"a\0b", &[]).unwrap_err(), 0);
        assert_eq!(Command::new(b"cat", &[b"ok", b"x\0"]).unwrap_err(), 2);
        let c = Command::new(b"echo", &[b"1", b""]).unwrap();
        assert_eq!(c.args.len(), 3);
    }

    #[test]
    fn spawn_errors_read_like_the_original() {
        let e = SpawnError::Exec(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            e.to_string(),
            "Could not execute: No such file or directory"
        );
        let e = SpawnError::Pipe(io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(e.to_string(), "Could not create pipe: Too many open files");
    }

    #[test]
    fn exec_status_pipe_tells_success_from_errno() {
        let (r, w) = pipe().unwrap();
        drop(w);
        assert_eq!(read_exec_status(r.as_fd()).unwrap(), None);
        let (r, w) = pipe().unwrap();
        let errno = libc::EACCES.to_ne_bytes();
        // SAFETY: writes a live 4-byte buffer to a pipe we own.
        unsafe { libc::write(w.as_raw_fd(), errno.as_ptr().cast(), 4) };
        drop(w);
        assert_eq!(read_exec_status(r.as_fd()).unwrap(), Some(libc::EACCES));
    }

    /// Wraps a process started by `std::process` (which spawns safely from the threaded
    /// test harness; these tests never call `fork` themselves).
    #[allow(clippy::zombie_processes)] // the returned `Child` waits for it
    fn adopt(program: &str, args: &[&str], use_pidfd: bool) -> Child {
        let std_child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = std_child.id() as libc::pid_t;
        Child {
            pid,
            creator: sys::getpid(),
            pidfd: if use_pidfd { pidfd_open(pid) } else { None },
            status: None,
        }
    }

    fn still_exists(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn wait_without_pidfd_falls_back_to_waitpid() {
        let mut child = adopt("sleep", &["10"], false);
        assert!(child.poll_fd().is_none());
        assert_eq!(child.wait_nb().unwrap(), None);
        assert!(!child.exited_now());
        child.kill(libc::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap(), -libc::SIGTERM);
        assert!(child.has_exited() && child.exited_now());
        assert_eq!(child.wait().unwrap(), -libc::SIGTERM);
        child.kill(libc::SIGKILL).unwrap(); // reaped: no signal is sent
    }

    #[test]
    fn exited_now_sees_an_unreaped_exit_without_reaping() {
        for use_pidfd in [false, true] {
            let mut child = adopt("sh", &["-c", "exit 4"], use_pidfd);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !child.exited_now() {
                assert!(std::time::Instant::now() < deadline, "child did not exit");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(!child.has_exited());
            assert_eq!(child.wait_nb().unwrap(), Some(4));
        }
    }

    #[test]
    fn wait_with_pidfd_polls_until_exit() {
        let mut child = adopt("sh", &["-c", "sleep 0.1; exit 6"], true);
        assert!(child.poll_fd().is_some());
        assert_eq!(child.wait().unwrap(), 6);
        assert!(child.poll_fd().is_none(), "the pidfd is closed once reaped");
    }

    #[test]
    fn drop_kills_and_reaps_only_in_the_creating_process() {
        let child = adopt("sleep", &["10"], true);
        let pid = child.pid();
        drop(child);
        assert!(!still_exists(pid), "killed and reaped");

        let mut child = adopt("sleep", &["10"], true);
        child.creator = -1; // as if this were a forked worker's copy
        let pid = child.pid();
        drop(child);
        assert!(
            still_exists(pid),
            "a copy in another process leaves the child alone"
        );
        let mut owner = Child {
            pid,
            creator: sys::getpid(),
            pidfd: None,
            status: None,
        };
        owner.kill(libc::SIGKILL).unwrap();
        assert_eq!(owner.wait().unwrap(), -libc::SIGKILL);
    }

    #[test]
    fn pipes_are_close_on_exec_and_stay_above_stdio() {
        let (r, _w) = pipe().unwrap();
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let raw = r.as_raw_fd();
        let same = above_stdio(r).unwrap();
        assert_eq!(same.as_raw_fd(), raw);
    }
}
