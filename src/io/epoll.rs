//! A minimal epoll set, for a server worker that waits on the same descriptors again and
//! again. Unlike `poll`, it can register a listener with `EPOLLEXCLUSIVE`, so that a new
//! connection wakes one of the waiting workers instead of all of them. Create it in the
//! process that uses it: an epoll set made before a fork would be shared by the children.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use crate::io::sys::cvt;

#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is a fresh descriptor that nothing else owns.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for input, reported as `token`. With `exclusive`, an event wakes only
    /// one of the processes waiting on the descriptor through their own epoll sets.
    pub fn add(&self, fd: RawFd, token: u64, exclusive: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN as u32;
        if exclusive {
            events |= libc::EPOLLEXCLUSIVE as u32;
        }
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Watches `fd` for input and output edges (`EPOLLET`), reported as `token`: for a
    /// connection whose reads and writes go until they would block before each wait.
    /// Registering a descriptor twice is not an error.
    pub fn watch_edges(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        match cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
        {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Stops watching `fd` (needed before closing a descriptor that other processes keep
    /// open: the registration lives as long as the open file, not the descriptor).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event argument (null is allowed since 2.6.9).
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                ptr::null_mut(),
            )
        })
        .map(drop)
    }

    /// Waits until a watched descriptor is ready or `timeout` passes (`None`: no limit),
    /// with `mask` as the signal mask while waiting (`epoll_pwait`). Fills `tokens` and
    /// returns how many are ready (0: timed out); a signal gives `ErrorKind::Interrupted`.
    pub fn wait(
        &self,
        tokens: &mut [u64],
        timeout: Option<Duration>,
        mask: Option<&libc::sigset_t>,
    ) -> io::Result<usize> {
        const MAX: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let room = tokens.len().min(MAX) as libc::c_int;
        let ms = crate::io::sys::timeout_ms(timeout);
        let mask = mask.map_or(ptr::null(), |m| m as *const libc::sigset_t);
        // SAFETY: `events` has room for `room` entries; `mask` is null or points to a
        // sigset that outlives the call.
        let n = cvt(unsafe {
            libc::epoll_pwait(self.fd.as_raw_fd(), events.as_mut_ptr(), room, ms, mask)
        })? as usize;
        for (t, e) in tokens.iter_mut().zip(&events[..n]) {
            *t = e.u64;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn reports_ready_tokens_and_timeouts() {
        let ep = Epoll::new().unwrap();
        let (r1, w1) = pipe();
        let (r2, _w2) = pipe();
        ep.add(r1.as_raw_fd(), 7, false).unwrap();
        ep.add(r2.as_raw_fd(), 9, true).unwrap();
        let mut tokens = [0u64; 4];
        assert_eq!(
            ep.wait(&mut tokens, Some(Duration::from_millis(1)), None)
                .unwrap(),
            0
        );
        nix::unistd::write(&w1, b"x").unwrap();
        assert_eq!(ep.wait(&mut tokens, None, None).unwrap(), 1);
        assert_eq!(tokens[0], 7);
        ep.delete(r1.as_raw_fd()).unwrap();
        assert_eq!(ep.wait(&mut tokens, Some(Duration::ZERO), None).unwrap(), 0);
        assert!(
            ep.delete(r1.as_raw_fd()).is_err(),
            "not registered any more"
        );
    }
}
