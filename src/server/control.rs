//! Messages between the master and its workers, one per datagram on SOCK_SEQPACKET sockets,
//! and the small socket helpers they travel on.
//!
//! Two channels:
//! - each worker has a private pair; the worker reports its progress ([`Report`]) on it, and
//!   the master sees EOF on it when the worker exits;
//! - each pool has one shared job queue: the master puts a [`Job`] (an interval or main
//!   listener that is due) into it and whichever idle worker receives it first runs it, just
//!   as whichever idle worker accepts a connection first serves it. A job can therefore never
//!   wait behind a connection that its worker accepted at the same moment.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::io::sys;

/// Worker -> master. Connections need no message: workers keep their state on the
/// scoreboard (`board.rs`) and only wake the master when it has something to decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// Look at the scoreboard: the pool may need a fork, or has surplus idle workers.
    Wake,
    /// The job (timed listener) with this index was taken from the pool's queue.
    Took(u32),
    /// The job taken last ended.
    Done,
    /// The worker takes no more jobs (it runs `finish` and exits): do not count it as spare.
    Leaving,
}

/// Master -> pool queue: run the interval or main listener with this index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job(pub u32);

/// Longest encoded message.
pub const MAX_MESSAGE: usize = 5;

type Encoded = ([u8; MAX_MESSAGE], usize);

fn with_index(tag: u8, idx: u32) -> Encoded {
    let mut b = [0u8; MAX_MESSAGE];
    b[0] = tag;
    b[1..5].copy_from_slice(&idx.to_le_bytes());
    (b, 5)
}

fn index_of(bytes: &[u8]) -> Option<u32> {
    let arr: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
    (bytes.len() == 5).then(|| u32::from_le_bytes(arr))
}

impl std::fmt::Display for Report {
    /// For `-d` traces.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::Wake => write!(f, "wake-up"),
            Report::Took(i) => write!(f, "took job #{}", *i as u64 + 1),
            Report::Done => write!(f, "job done"),
            Report::Leaving => write!(f, "leaving"),
        }
    }
}

impl Report {
    pub fn encode(self) -> Encoded {
        match self {
            Report::Wake => ([b'W', 0, 0, 0, 0], 1),
            Report::Took(i) => with_index(b'T', i),
            Report::Done => ([b'D', 0, 0, 0, 0], 1),
            Report::Leaving => ([b'L', 0, 0, 0, 0], 1),
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Report> {
        match bytes {
            [b'W'] => Some(Report::Wake),
            [b'D'] => Some(Report::Done),
            [b'L'] => Some(Report::Leaving),
            [b'T', ..] => index_of(bytes).map(Report::Took),
            _ => None,
        }
    }
}

impl Job {
    pub fn encode(self) -> Encoded {
        with_index(b'J', self.0)
    }

    pub fn decode(bytes: &[u8]) -> Option<Job> {
        match bytes {
            [b'J', ..] => index_of(bytes).map(Job),
            _ => None,
        }
    }
}

/// A connected SOCK_SEQPACKET pair (one message per send, EOF when the peer is gone).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::unix_socketpair(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)
}

/// Sends one message without blocking; a vanished peer is reported as an error (EPIPE),
/// never as SIGPIPE.
pub fn send(fd: &OwnedFd, msg: Encoded) -> io::Result<()> {
    let (bytes, n) = msg;
    sys::retry(|| {
        sys::send(
            fd.as_fd(),
            &bytes[..n],
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    })
    .map(drop)
}

/// What a non-blocking receive found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    Message(&'a [u8]),
    Nothing,
    /// The peer closed its end (or reset it).
    Closed,
}

/// Receives one message without blocking into `buf`.
pub fn recv<'a>(fd: &OwnedFd, buf: &'a mut [u8; MAX_MESSAGE + 1]) -> io::Result<Received<'a>> {
    match sys::retry(|| sys::recv(fd.as_fd(), &mut buf[..], libc::MSG_DONTWAIT)) {
        Ok(0) => Ok(Received::Closed),
        Ok(n) => Ok(Received::Message(&buf[..n])),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Received::Nothing),
            Some(libc::ECONNRESET) => Ok(Received::Closed),
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [
            Report::Wake,
            Report::Done,
            Report::Leaving,
            Report::Took(0),
            Report::Took(u32::MAX),
        ] {
            let (b, n) = r.encode();
            assert_eq!(Report::decode(&b[..n]), Some(r));
        }
        for j in [Job(0), Job(7), Job(u32::MAX)] {
            let (b, n) = j.encode();
            assert_eq!(Job::decode(&b[..n]), Some(j));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"X",
            b"WW",
            b"T\x01\x00\x00",
            b"T\x01\x00\x00\x00\x00",
            b"J",
            b"J1",
        ] {
            assert_eq!(Report::decode(bad), None, "{bad:?}");
            assert_eq!(Job::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_shared_queue_delivers_each_job_once() {
        let (master, workers) = seqpacket_pair().unwrap();
        let other = workers.try_clone().unwrap(); // a second worker's copy
        for i in 0..3 {
            send(&master, Job(i).encode()).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; MAX_MESSAGE + 1];
        for fd in [&workers, &other, &workers, &other] {
            if let Received::Message(m) = recv(fd, &mut buf).unwrap() {
                got.push(Job::decode(m).unwrap().0);
            }
        }
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(recv(&other, &mut buf).unwrap(), Received::Nothing);
        drop(master);
        // Another test of this process may fork and exec a child meanwhile: until its exec
        // the child holds a copy of `master` too, so the end may come a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match recv(&workers, &mut buf).unwrap() {
                Received::Closed => break,
                Received::Nothing if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                other => panic!("expected the end of the queue, got {other:?}"),
            }
        }
    }
}
