//! The one place where libc return codes become `io::Result`, and where EINTR is retried.
//!
//! Nothing here knows about Lua or about handles; callers decide what a failure means.
//! Each wrapper is a thin face of one libc call (safe where the call's safety does not
//! depend on the caller: `fork`, `set_handler` and `openlog` stay `unsafe fn`); failures
//! become `io::Result` through [`cvt`], and the wrapper's comment says when it retries
//! EINTR. Descriptors come back as `OwnedFd`, opened close-on-exec. `server` makes its
//! system calls only through these; the one raw call left there is the write in the
//! master's signal handler (`server::signals::on_signal`), which must restore errno.
//!
//! # Every wait in the server
//! Each process waits in one of these, and only here; what ends each wait is part of its
//! contract (an EINTR that is not a wake-up is retried with the time left):
//! - **Handle waits** (`Handle::wait`, `exec::Child::wait`, via [`wait_fd`]): one fd, no
//!   deadline; EINTR retried. The blocking `moonbridge_io` methods.
//! - **`moonbridge_io.poll`** (`io::poll::poll`): many fds and a deadline; with
//!   `catch_sigterm`, a SIGTERM wakes it (`ppoll` with SIGTERM blocked outside the call, so
//!   one landing between the flag check and the wait is not lost); EINTR restarts with the
//!   time left.
//! - **The HTTP connection** (`http::drive::blocking::Conn::wait_input` and its write and
//!   linger waits): the deadline comes from the connection machine; input waits sleep in
//!   `recv` with SO_RCVTIMEO (or `poll`) in slices of at most a second with the SIGTERM
//!   flag checked between them, and EINTR ends a slice (so a SIGTERM is seen at once).
//! - **The worker's accept wait** (`server::worker`, `io::epoll::Epoll::wait`): the pool's
//!   listeners and the control socket; `epoll_pwait` with SIGTERM unblocked only inside.
//! - **The master's loop** (`server::master`, [`poll`]): listeners (while a fork is due),
//!   worker control sockets, stderr pipes and the signal pipe, until the next timer; a
//!   signal's EINTR returns to the loop, which reads the signal pipe. Its reaping
//!   ([`reap_any`]) never waits; only after an internal error does it wait in [`waitpid`]
//!   for each worker it killed with SIGKILL (EINTR retried).
//! - **The launcher's wait for the daemon** (`server::process::daemonize`): a blocking
//!   [`read`] of the report pipe until the daemon closes it; EINTR retried.

use std::ffi::{c_int, CStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

/// Turns a libc-style return value (`-1` = failure, `errno` set) into an `io::Result`.
pub fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Calls `f` until it stops failing with EINTR. Signals never surface as I/O failures.
pub fn retry<T, F: FnMut() -> io::Result<T>>(mut f: F) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The text of an OS error without Rust's " (os error N)" suffix, as C's `strerror` gives it.
pub fn error_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// Readiness the blocking driver waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

impl Interest {
    fn events(self) -> libc::c_short {
        match self {
            Interest::Read => libc::POLLIN,
            Interest::Write => libc::POLLOUT,
        }
    }
}

/// Raises the soft limit of open descriptors to the hard limit (an unlimited hard limit
/// counts as the kernel's `nr_open`, 1048576 by default). Returns the new soft limit.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let max = if lim.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur < max {
        lim.rlim_cur = max;
        // SAFETY: `lim` is a valid rlimit; only the soft limit changed.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

/// Waits until `fd` is ready (or in an error/hang-up state, which the next step reports).
/// `timeout_ms < 0` waits forever. Returns whether the descriptor became ready.
pub fn wait_fd(fd: BorrowedFd<'_>, interest: Interest, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: interest.events(),
        revents: 0,
    };
    let n = retry(|| poll(std::slice::from_mut(&mut pfd), timeout_ms))?;
    Ok(n > 0)
}

/// One `poll(2)` on `fds`; `timeout_ms < 0` waits forever. Returns how many entries have
/// events. EINTR is returned, not retried: the caller decides whether a signal ends its wait.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfd entries for the call.
    let n = cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) })?;
    Ok(n as usize)
}

/// A wait's timeout in the milliseconds `poll`/`epoll_wait` take: `-1` for none, rounded up
/// (a wake-up that comes a little too early would only spin), capped at `c_int::MAX`.
pub fn timeout_ms(timeout: Option<std::time::Duration>) -> libc::c_int {
    timeout.map_or(-1, |d| {
        d.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int
    })
}

/// Whether the descriptor is ready right now, without blocking.
pub fn ready_now(fd: BorrowedFd<'_>, interest: Interest) -> io::Result<bool> {
    wait_fd(fd, interest, 0)
}

/// Sets or clears `O_NONBLOCK` on a descriptor we own.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument; an invalid fd yields EBADF.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL takes an integer flag argument.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// Sets an integer-valued socket option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value points to a live c_int of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// SO_LINGER: `Some(0)` makes `close` send a TCP RST; `None` restores a graceful close.
pub fn set_linger(fd: RawFd, seconds: Option<i32>) -> io::Result<()> {
    let lg = libc::linger {
        l_onoff: seconds.is_some() as i32,
        l_linger: seconds.unwrap_or(0),
    };
    // SAFETY: the option value points to a live `linger` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// TCP_DEFER_ACCEPT on a listening socket: a new connection is handed to `accept` only
/// once it has data (or after about `seconds`, a retransmitted SYN-ACK later); 0 turns it
/// off.
pub fn set_defer_accept(fd: RawFd, seconds: i32) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, seconds)
}

/// SO_RCVTIMEO: how long a blocking `recv` on the socket waits before failing with EAGAIN.
/// Rounded up to whole milliseconds and at least 1 ms, because a zero value means "forever".
pub fn set_recv_timeout(fd: RawFd, timeout: std::time::Duration) -> io::Result<()> {
    let ms = timeout.as_micros().div_ceil(1000).max(1);
    let tv = libc::timeval {
        tv_sec: (ms / 1000).min(i64::MAX as u128) as libc::time_t,
        tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
    };
    // SAFETY: the option value points to a live `timeval` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The process id of the caller (changes in forked workers).
pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

// ---------------------------------------------------------------------------------------
// Descriptors. Every descriptor made here is an `OwnedFd` opened close-on-exec; a wrapper
// makes exactly one system call unless its comment says that it retries EINTR.

/// Takes ownership of a descriptor a system call just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: only called with a descriptor the kernel has just created for this process,
    // which nothing else owns yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A pipe as (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a live array of two c_ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// A connected pair of `AF_UNIX` sockets of type `kind` (which may carry `SOCK_NONBLOCK`),
/// both close-on-exec.
pub fn unix_socketpair(kind: c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a live array of two c_ints for socketpair to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// `open(2)` with `O_CLOEXEC` added to `flags`; `mode` matters only with `O_CREAT`.
pub fn open(path: &CStr, flags: c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a NUL-terminated string that lives for the call.
    let fd =
        cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    Ok(owned(fd))
}

/// Makes descriptor number `target` a copy of `fd` (closing what `target` was). The copy is
/// not close-on-exec: that is the point of putting something on 0, 1 or 2. EINTR retried.
pub fn dup2(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes no pointers; replacing `target` is what the caller asks for.
    retry(|| cvt(unsafe { libc::dup2(fd.as_raw_fd(), target) })).map(drop)
}

/// One `read(2)` into `buf`; `Ok(0)` is end of file.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read writes at most `buf.len()` bytes into the live buffer `buf`.
    let n = cvt(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// One `write(2)` of `buf`; returns how many bytes were taken.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: write reads at most `buf.len()` bytes from the live buffer `buf`.
    let n = cvt(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// One `pwrite(2)` of `buf` at byte `offset`.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: libc::off_t) -> io::Result<usize> {
    // SAFETY: pwrite reads at most `buf.len()` bytes from the live buffer `buf`.
    let n = cvt(unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) })?;
    Ok(n as usize)
}

/// `ftruncate(2)`: cuts or extends the file to `len` bytes.
pub fn ftruncate(fd: BorrowedFd<'_>, len: libc::off_t) -> io::Result<()> {
    // SAFETY: ftruncate takes no pointers.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// One `send(2)` of `buf` with `flags`.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: send reads at most `buf.len()` bytes from the live buffer `buf`.
    let n = cvt(unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) })?;
    Ok(n as usize)
}

/// One `recv(2)` into `buf` with `flags`; `Ok(0)` is an orderly shutdown by the peer.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into the live buffer `buf`.
    let n = cvt(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) })?;
    Ok(n as usize)
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`; for a Unix SOCK_SEQPACKET socket
/// the sum over all its queued messages).
pub fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// How long ago a TCP socket last received data (`TCP_INFO`'s `tcpi_last_data_recv`; for
/// a connection that sent nothing, the time since it was established, including the time
/// it waited to be accepted). `None` for other sockets or when the kernel does not say.
pub fn tcp_silent_for(fd: RawFd) -> Option<std::time::Duration> {
    // SAFETY: tcp_info is plain data (integers only).
    let (info, len) = unsafe { tcp_option::<libc::tcp_info>(fd, libc::TCP_INFO) }?;
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv) + 4;
    if len < end {
        return None;
    }
    Some(std::time::Duration::from_millis(u64::from(
        info.tcpi_last_data_recv,
    )))
}

/// TCP_DEFER_ACCEPT of a listening socket, in seconds as the kernel keeps it (rounded to
/// whole SYN-ACK retransmissions); 0 when off.
pub fn defer_accept_of(fd: RawFd) -> io::Result<i32> {
    // SAFETY: c_int is plain data.
    unsafe { tcp_option::<libc::c_int>(fd, libc::TCP_DEFER_ACCEPT) }
        .map(|(v, _)| v)
        .ok_or_else(io::Error::last_os_error)
}

/// getsockopt(IPPROTO_TCP, `opt`) into a zeroed `T`, with the length the kernel wrote.
///
/// # Safety
/// `T` must be plain data for which all-zero bytes and any bytes the kernel writes are
/// valid values (integers, C structs of integers).
unsafe fn tcp_option<T: Copy>(fd: RawFd, opt: libc::c_int) -> Option<(T, usize)> {
    // SAFETY: all-zero is a valid `T` (the caller's guarantee).
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the pointers are to `v` and `len`, which hold `len` bytes and one socklen_t.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            opt,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    };
    (r == 0).then_some((v, len as usize))
}

/// Milliseconds of `CLOCK_MONOTONIC`: one clock for all processes of the machine, for
/// times kept in shared memory.
pub fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

/// How far the coarse clocks below may be behind: one timer tick (Linux's HZ is at least
/// 100).
pub const COARSE_SLACK_MS: u64 = 10;

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: the monotonic clock as of the last timer tick,
/// up to `COARSE_SLACK_MS` behind, read without the time stamp counter (5 ns here against
/// 22 for `CLOCK_MONOTONIC`): for a request's once-a-second decisions.
pub fn coarse_monotonic_ms() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000
}

/// Seconds since the Unix epoch of `CLOCK_REALTIME_COARSE` (up to `COARSE_SLACK_MS`
/// behind): the `Date` of a response.
pub fn coarse_unix_secs() -> u64 {
    clock_ns(libc::CLOCK_REALTIME_COARSE) / 1_000_000_000
}

/// Nanoseconds of `CLOCK_MONOTONIC` (the clock of `ITIMER_REAL`). Async-signal-safe.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds of `clock` (one that always exists: the coarse ones since Linux 2.6.32).
/// Async-signal-safe (clock_gettime is).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: timespec is plain data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes one timespec through the pointer; the callers' clocks
    // always exist, so it cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec.max(0) as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits up to `timeout` (`None`: no limit) until one of `fds` is readable; answers the
/// readiness of each (`POLLIN` without `POLLHUP`/`POLLERR`: a listener that was shut
/// down does not count). A signal ends the wait early (all false).
pub fn readable(
    fds: &[RawFd],
    timeout: Option<std::time::Duration>,
    out: &mut Vec<bool>,
) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    out.clear();
    // SAFETY: `pfds` holds `pfds.len()` valid pollfd entries for the duration of the call.
    match cvt(unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout_ms(timeout),
        )
    }) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    let bad = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    out.extend(
        pfds.iter()
            .map(|p| p.revents & libc::POLLIN != 0 && p.revents & bad == 0),
    );
    Ok(())
}

/// `shutdown(2)`: `how` is `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
pub fn shutdown(fd: BorrowedFd<'_>, how: c_int) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

/// An fcntl record lock of type `kind` (`F_WRLCK`, `F_RDLCK`, `F_UNLCK`) over the whole file.
fn whole_file(kind: c_int) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value before the fields are set.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// `fcntl(F_SETLK)` of a whole-file lock of type `kind` (`F_WRLCK`, `F_UNLCK`, ...), without
/// waiting: a conflicting lock fails with EAGAIN or EACCES.
pub fn set_file_lock(fd: RawFd, kind: c_int) -> io::Result<()> {
    let lock = whole_file(kind);
    // SAFETY: F_SETLK reads the live flock structure passed.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETLK, &lock) }).map(drop)
}

/// `fcntl(F_GETLK)`: the PID of a process whose lock would conflict with a whole-file lock
/// of type `kind`, or `None` if there is none.
pub fn file_lock_holder(fd: RawFd, kind: c_int) -> io::Result<Option<libc::pid_t>> {
    let mut lock = whole_file(kind);
    // SAFETY: F_GETLK fills in the live flock structure passed.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETLK, &mut lock) })?;
    Ok((lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid))
}

// ---------------------------------------------------------------------------------------
// Processes.

/// Which side of a [`fork`] this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fork {
    Child,
    Parent(libc::pid_t),
}

/// `fork(2)`.
///
/// # Safety
/// In a process with more than one thread the child may only make async-signal-safe calls
/// until it execs or exits. (Server processes are single-threaded, so the child may run
/// ordinary code.)
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: what the child may do afterwards is the caller's obligation (see above).
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `kill(2)`: sends `signal` to `pid`.
pub fn kill(pid: libc::pid_t, signal: c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// Waits until child `pid` ends and returns its wait status. EINTR retried.
pub fn waitpid(pid: libc::pid_t) -> io::Result<c_int> {
    let mut status = 0;
    // SAFETY: waitpid writes only to the live `status`.
    retry(|| cvt(unsafe { libc::waitpid(pid, &mut status, 0) }))?;
    Ok(status)
}

/// A child that ended, as `wait4` reports it.
pub struct Ended {
    pub pid: libc::pid_t,
    /// The wait status (`WIFSIGNALED`, `WEXITSTATUS`, ...).
    pub status: c_int,
    pub usage: libc::rusage,
}

/// Collects any one ended child without blocking (`wait4(-1, WNOHANG)`): `None` if none has
/// ended; ECHILD when there are no children at all. Never waits, so never sees EINTR.
pub fn reap_any() -> io::Result<Option<Ended>> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes only to the live `status` and `usage`.
    let pid = cvt(unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) })?;
    Ok((pid > 0).then_some(Ended { pid, status, usage }))
}

/// The parent's process id (1, or a subreaper, once the parent died).
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// `setsid(2)`: a new session and process group led by the caller; returns its id.
pub fn setsid() -> io::Result<libc::pid_t> {
    // SAFETY: setsid takes no arguments.
    cvt(unsafe { libc::setsid() })
}

/// `_exit(2)`: ends the process at once, without atexit handlers, destructors or flushing
/// stdio (which in a fork belong to the other process).
pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// `prctl(PR_SET_PDEATHSIG)`: the kernel sends `signal` to this process when its parent
/// (strictly, the thread that forked it) ends.
pub fn set_parent_death_signal(signal: c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// `prctl(PR_SET_NAME)`: the calling thread's comm name; the kernel keeps at most 15 bytes.
pub fn set_comm_name(name: &CStr) -> io::Result<()> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (at most 16 bytes of it) from the
    // live `name`.
    cvt(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) })
        .map(drop)
}

// ---------------------------------------------------------------------------------------
// Signals. The handlers themselves stay with their owners (`server::signals`, `io::signal`).

/// A signal set holding `signals`.
pub fn signal_set(signals: &[c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset then initialises it and
    // sigaddset adds to the initialised set (an invalid number is only refused).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Adds `signals` to the process's signal mask and returns the mask from before.
pub fn block_signals(signals: &[c_int]) -> io::Result<libc::sigset_t> {
    let set = signal_set(signals);
    // SAFETY: an all-zero sigset_t is a valid out-parameter.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are live; sigprocmask reads `set` and fills `saved`.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut saved) })?;
    Ok(saved)
}

/// Removes `signals` from the process's signal mask (pending ones are delivered now).
pub fn unblock_signals(signals: &[c_int]) -> io::Result<()> {
    let set = signal_set(signals);
    // SAFETY: `set` is live; no old mask is asked for.
    cvt(unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) }).map(drop)
}

/// Replaces the process's signal mask (with one [`block_signals`] returned, say).
pub fn set_signal_mask(mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `mask` is live; no old mask is asked for.
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) }).map(drop)
}

/// Gives `signal` its default action (`signal(sig, SIG_DFL)`).
pub fn default_action(signal: c_int) -> io::Result<()> {
    // SAFETY: SIG_DFL installs no handler code.
    if unsafe { libc::signal(signal, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A disposition replaced by [`set_handler`], to be put back with [`SavedAction::restore`].
pub struct SavedAction {
    signal: c_int,
    action: libc::sigaction,
}

/// Installs `handler` for `signal` with `flags` (`SA_RESTART`, ...) and an empty handler
/// mask; returns the disposition it replaced.
///
/// # Safety
/// `handler` runs asynchronously, interrupting any code: it may only do async-signal-safe
/// work (atomics, `write(2)` with errno preserved, ...).
pub unsafe fn set_handler(
    signal: c_int,
    handler: extern "C" fn(c_int),
    flags: c_int,
) -> io::Result<SavedAction> {
    // SAFETY: all-zero sigaction structures are valid; `sa_mask` is then initialised with
    // sigemptyset, and sigaction reads `new` and fills `old`. The handler's conduct is the
    // caller's obligation.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler as *const () as libc::sighandler_t;
        new.sa_flags = flags;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        cvt(libc::sigaction(signal, &new, &mut old))?;
        Ok(SavedAction {
            signal,
            action: old,
        })
    }
}

impl SavedAction {
    /// Reinstalls the saved disposition.
    pub fn restore(self) -> io::Result<()> {
        // SAFETY: the action is one the kernel returned for this signal, so it was valid
        // (and its handler, if any, acceptable) before.
        cvt(unsafe { libc::sigaction(self.signal, &self.action, std::ptr::null_mut()) }).map(drop)
    }
}

// ---------------------------------------------------------------------------------------
// The real-time interval timer (SIGALRM).

fn timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

fn duration(tv: libc::timeval) -> Duration {
    Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000)
}

/// Arms `ITIMER_REAL` to expire once after `value` (zero disarms it); returns what was left
/// of the previous timer.
pub fn set_real_timer(value: Duration) -> io::Result<Duration> {
    let new = libc::itimerval {
        it_interval: timeval(Duration::ZERO),
        it_value: timeval(value),
    };
    // SAFETY: a zeroed itimerval is a valid out-parameter.
    let mut old: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live, initialised itimerval structures.
    cvt(unsafe { libc::setitimer(libc::ITIMER_REAL, &new, &mut old) })?;
    Ok(duration(old.it_value))
}

// ---------------------------------------------------------------------------------------
// Memory shared with forked children.

/// An anonymous `MAP_SHARED` read-write mapping, zero-filled by the kernel; a fork shares
/// it with the child. Unmapped on drop (in each process separately).
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    len: usize,
}

impl SharedMemory {
    /// Maps `len` (> 0) bytes.
    pub fn new(len: usize) -> io::Result<SharedMemory> {
        // SAFETY: an anonymous mapping at an address of the kernel's choosing; no file and
        // no existing memory are involved.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(SharedMemory { base, len })
    }

    /// The first byte; `len` bytes from here are readable and writable while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; pointers into it derive from
        // `as_ptr` and must not outlive `self` (the owner's contract).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

// ---------------------------------------------------------------------------------------
// Time and syslog (C library calls, not system calls, but the same raw interface).

/// The current local time formatted by `strftime` with `format` into `buf`; returns how many
/// bytes were written (0 if the result did not fit).
pub fn local_time(format: &CStr, buf: &mut [u8]) -> usize {
    // SAFETY: time/localtime_r/strftime get valid pointers to live local storage; strftime
    // writes at most `buf.len()` bytes and returns how many.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm)
    }
}

/// `openlog(3)`.
///
/// # Safety
/// syslog keeps the `ident` pointer: it must stay alive (and unchanged) until `openlog` is
/// called again or the process ends.
pub unsafe fn openlog(ident: &CStr, option: c_int, facility: c_int) {
    // SAFETY: `ident` is a valid C string; its lifetime is the caller's obligation.
    unsafe { libc::openlog(ident.as_ptr(), option, facility) }
}

/// `syslog(3)` of one line at `priority`, passed through a constant "%s" format.
pub fn syslog(priority: c_int, line: &CStr) {
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), line.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn timeouts_become_whole_milliseconds_rounded_up() {
        assert_eq!(super::timeout_ms(None), -1);
        assert_eq!(super::timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(super::timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(super::timeout_ms(Some(Duration::from_micros(2001))), 3);
        assert_eq!(super::timeout_ms(Some(Duration::from_secs(2))), 2000);
        assert_eq!(super::timeout_ms(Some(Duration::MAX)), libc::c_int::MAX);
    }

    #[test]
    fn timer_values_convert_both_ways() {
        let tv = super::timeval(Duration::from_millis(2500));
        assert_eq!((tv.tv_sec, tv.tv_usec), (2, 500_000));
        assert_eq!(super::duration(tv), Duration::from_millis(2500));
    }
}
