//! The one place where libc return codes become `io::Result`, and where EINTR is retried.
//!
//! Nothing here knows about Lua or about handles; callers decide what a failure means.
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
//! - **The master's loop** (`server::master`): `poll` on listeners (while a fork is due),
//!   worker control sockets, stderr pipes and the signal pipe, until the next timer; a
//!   signal's EINTR returns to the loop, which reads the signal pipe.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

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

/// Waits until `fd` is ready (or in an error/hang-up state, which the next step reports).
/// `timeout_ms < 0` waits forever. Returns whether the descriptor became ready.
pub fn wait_fd(fd: BorrowedFd<'_>, interest: Interest, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: interest.events(),
        revents: 0,
    };
    let n = retry(|| {
        // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
        cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })
    })?;
    Ok(n > 0)
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
}
