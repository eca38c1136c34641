//! `Handle`: one byte stream (socket, pipe or standard stream) with its buffers and state.
//!
//! Every operation exists once, as a non-blocking step. The blocking forms are the same
//! steps driven by `sys::wait_fd`; the `_call`/`_yield` forms are driven from Lua. The
//! handle owns its descriptor, so dropping it closes the descriptor on every path.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

pub use crate::io::buffer::ReadStatus;
use crate::io::buffer::{Decision, ReadBuf, WriteBuf};
use crate::io::sys::{self, Interest};

/// Below this many pending bytes `write` just buffers; at or above it, it sends.
pub const WRITE_BUFFER_LIMIT: usize = 16 * 1024;

/// At most this many iovecs per `writev`/`sendmsg` (Linux IOV_MAX is 1024).
const MAX_IOVECS: usize = 64;

/// What kind of descriptor a handle wraps; it decides the system calls used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCP socket: `recv`/`sendmsg` with MSG_DONTWAIT; `finish` is `shutdown(SHUT_WR)`.
    Tcp,
    /// Unix domain socket: like TCP, but `finish` closes and emulates EOF (the manual).
    Local,
    /// A pipe end we created, in O_NONBLOCK mode.
    Pipe,
    /// A descriptor we did not create (fds 0, 1, 2): left in blocking mode, since
    /// O_NONBLOCK would leak into the shared terminal or pipe. Non-blocking steps poll first.
    Stdio,
}

impl Kind {
    fn is_socket(self) -> bool {
        matches!(self, Kind::Tcp | Kind::Local)
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Local => "local",
            Kind::Pipe => "pipe",
            Kind::Stdio => "stdio",
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError {
    /// A runtime I/O failure: reported to Lua as `nil, message`.
    Io(String),
    /// Misuse of the handle: raised as a Lua error.
    Misuse(&'static str),
}

impl HandleError {
    fn os(e: &io::Error) -> Self {
        HandleError::Io(sys::error_text(e))
    }
}

pub type HResult<T> = Result<T, HandleError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// `finish` was called: no more writes.
    Finished,
    Closed,
}

/// A buffered byte stream.
#[derive(Debug)]
pub struct Handle {
    fd: Option<OwnedFd>,
    kind: Kind,
    state: State,
    rbuf: ReadBuf,
    wbuf: WriteBuf,
    read_eof: bool,
    read_failed: bool,
    write_failed: bool,
    /// The descriptor is a socket in blocking mode (an accepted connection): `recv_wait`
    /// may sleep in `recv` itself. Every other step passes MSG_DONTWAIT.
    blocking_socket: bool,
    /// Address fields (TCP only; filled by the socket layer).
    pub local_addr: Option<SocketAddr>,
    pub remote_addr: Option<SocketAddr>,
}

/// Outcome of one read step: the first `len` buffered bytes are the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    pub len: usize,
    pub status: ReadStatus,
}

/// Outcome of one drain step: `count` bytes were discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainOutcome {
    pub count: u64,
    pub status: ReadStatus,
}

impl Handle {
    /// Wraps a descriptor. For `Tcp`/`Local`/`Pipe` it must already be in non-blocking
    /// mode or be a socket (sockets use MSG_DONTWAIT).
    pub fn new(fd: OwnedFd, kind: Kind) -> Self {
        Handle {
            fd: Some(fd),
            kind,
            state: State::Open,
            rbuf: ReadBuf::new(),
            wbuf: WriteBuf::default(),
            read_eof: false,
            read_failed: false,
            write_failed: false,
            blocking_socket: false,
            local_addr: None,
            remote_addr: None,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The descriptor, while there is one.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Unread input held in the buffer.
    pub fn buffered(&self) -> &[u8] {
        self.rbuf.bytes()
    }

    /// Prepares the read buffer to hold `total` unread bytes (see `ReadBuf::reserve_unread`).
    pub fn reserve_unread(&mut self, total: usize) {
        self.rbuf.reserve_unread(total)
    }

    /// Marks `n` buffered input bytes as read (after the caller copied them out).
    /// Releases the read buffer while nothing is unread (see `ReadBuf::release_if_empty`).
    pub fn release_idle_buffer(&mut self) {
        self.rbuf.release_if_empty()
    }

    pub fn consume(&mut self, n: usize) {
        self.rbuf.consume(n)
    }

    /// Bytes written but not yet passed to the kernel.
    pub fn write_pending(&self) -> usize {
        self.wbuf.len()
    }

    /// True if a read would not need the kernel: input is buffered, or EOF/an error is
    /// already known. `poll` treats such a handle as ready at once.
    pub fn readable_without_kernel(&self) -> bool {
        !self.rbuf.is_empty() || self.read_eof || self.read_failed || self.fd.is_none()
    }

    fn check_readable(&self) -> HResult<()> {
        if self.state == State::Closed {
            return Err(HandleError::Misuse(
                "Attempt to read from a closed I/O handle",
            ));
        }
        if self.read_failed {
            return Err(HandleError::Io("Previous read error".into()));
        }
        Ok(())
    }

    fn check_writable(&self) -> HResult<()> {
        match self.state {
            State::Closed => Err(HandleError::Misuse(
                "Attempt to write to a closed I/O handle",
            )),
            State::Finished => Err(HandleError::Misuse(
                "Attempt to write to a finished I/O handle",
            )),
            State::Open if self.write_failed => Err(HandleError::Io("Previous write error".into())),
            State::Open => Ok(()),
        }
    }

    /// Declares that the descriptor, a socket, is in blocking mode (see `recv_wait`).
    pub fn set_blocking_socket(&mut self) {
        self.blocking_socket = self.kind.is_socket();
    }

    /// Whether `recv_wait` can be used: an open blocking socket whose input has not ended.
    pub fn can_wait_in_recv(&self) -> bool {
        self.blocking_socket
            && self.state != State::Closed
            && self.fd.is_some()
            && !self.read_eof
            && !self.read_failed
    }

    /// Waits for input inside `recv` itself: one system call where `poll` and `recv` would
    /// be two. Only for a socket marked by `set_blocking_socket` whose SO_RCVTIMEO the
    /// caller has set: a finite SO_RCVTIMEO also makes a signal end the wait (EINTR) even
    /// with SA_RESTART. `Some(true)`: new data; `Some(false)`: end of input; `None`: the
    /// wait ended without input (SO_RCVTIMEO elapsed, or a signal arrived).
    pub fn recv_wait(&mut self) -> HResult<Option<bool>> {
        self.check_readable()?;
        if !self.can_wait_in_recv() {
            return Err(HandleError::Misuse(
                "recv_wait on a handle that cannot wait in recv",
            ));
        }
        let had = self.rbuf.len();
        match self.fill_inner(true)? {
            false => Ok(None),
            true => Ok(Some(self.rbuf.len() > had)),
        }
    }

    /// Reads once from the descriptor into the buffer. `Ok(false)` = would block.
    fn fill(&mut self) -> HResult<bool> {
        self.fill_inner(false)
    }

    /// `fill`, or with `wait` a blocking `recv` on a blocking socket, where EINTR and EAGAIN
    /// (the receive timeout) both give `Ok(false)`.
    fn fill_inner(&mut self, wait: bool) -> HResult<bool> {
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            self.read_eof = true;
            return Ok(true);
        };
        if self.kind == Kind::Stdio
            && !sys::ready_now(self.fd().expect("fd checked above"), Interest::Read)
                .map_err(|e| HandleError::os(&e))?
        {
            return Ok(false);
        }
        let kind = self.kind;
        let res = self.rbuf.fill_with(|ptr, len| {
            if wait {
                // SAFETY: `ptr` points to `len` writable bytes owned by the read buffer.
                let n = unsafe { libc::recv(fd, ptr.cast(), len, 0) };
                return sys::cvt(n).map(|n| n as usize);
            }
            sys::retry(|| {
                // SAFETY: `ptr` points to `len` writable bytes owned by the read buffer.
                let n = unsafe {
                    if kind.is_socket() {
                        libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT)
                    } else {
                        libc::read(fd, ptr.cast(), len)
                    }
                };
                sys::cvt(n).map(|n| n as usize)
            })
        });
        match res {
            Ok(0) => {
                self.read_eof = true;
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if wait && e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => {
                self.read_failed = true;
                Err(HandleError::os(&e))
            }
        }
    }

    /// One non-blocking read step. On success the caller takes the first `len` buffered
    /// bytes and then calls [`consume`](Self::consume). If input runs out before the request
    /// is satisfied, the status is `Block` and `len` is what may be returned now when
    /// `partial` is true (`read_nb`), or 0 when it is false (so `read_call` keeps waiting
    /// without copying partial results).
    pub fn read_step(
        &mut self,
        maxlen: Option<usize>,
        term: Option<u8>,
        partial: bool,
    ) -> HResult<ReadOutcome> {
        self.check_readable()?;
        loop {
            if let Decision::Done(len, status) = self.rbuf.decide(maxlen, term, self.read_eof) {
                return Ok(ReadOutcome { len, status });
            }
            if !self.fill()? {
                let len = if partial {
                    maxlen.map_or(self.rbuf.len(), |m| m.min(self.rbuf.len()))
                } else {
                    0
                };
                return Ok(ReadOutcome {
                    len,
                    status: ReadStatus::Block,
                });
            }
        }
    }

    /// Blocking read: the step driven by `poll(2)`.
    pub fn read_blocking(
        &mut self,
        maxlen: Option<usize>,
        term: Option<u8>,
    ) -> HResult<ReadOutcome> {
        loop {
            let out = self.read_step(maxlen, term, false)?;
            if out.status != ReadStatus::Block {
                return Ok(out);
            }
            self.wait(Interest::Read)?;
        }
    }

    /// One non-blocking drain step: discards up to `maxlen` bytes or through `term`.
    /// With status `Block`, `count` bytes were discarded so far and the caller may continue
    /// with `maxlen - count`.
    pub fn drain_step(&mut self, maxlen: Option<usize>, term: Option<u8>) -> HResult<DrainOutcome> {
        self.check_readable()?;
        let mut count: u64 = 0;
        let mut left = maxlen;
        loop {
            match self.rbuf.decide(left, term, self.read_eof) {
                Decision::Done(len, status) => {
                    self.rbuf.consume(len);
                    return Ok(DrainOutcome {
                        count: count + len as u64,
                        status,
                    });
                }
                Decision::NeedMore => {
                    // Discard what cannot contain the terminator, so draining stays bounded.
                    let n = self.rbuf.len();
                    self.rbuf.consume(n);
                    count += n as u64;
                    left = left.map(|m| m - n);
                }
            }
            if !self.fill()? {
                return Ok(DrainOutcome {
                    count,
                    status: ReadStatus::Block,
                });
            }
        }
    }

    /// Blocking drain.
    pub fn drain_blocking(
        &mut self,
        maxlen: Option<usize>,
        term: Option<u8>,
    ) -> HResult<DrainOutcome> {
        let mut total: u64 = 0;
        let mut left = maxlen;
        loop {
            let out = self.drain_step(left, term)?;
            total += out.count;
            if out.status != ReadStatus::Block {
                return Ok(DrainOutcome {
                    count: total,
                    status: out.status,
                });
            }
            left = left.map(|m| m - out.count as usize);
            self.wait(Interest::Read)?;
        }
    }

    /// Waits for readiness on the descriptor (blocking driver).
    fn wait(&self, interest: Interest) -> HResult<()> {
        if let Some(fd) = self.fd() {
            sys::wait_fd(fd, interest, -1).map_err(|e| HandleError::os(&e))?;
        }
        Ok(())
    }

    /// Sends as much of `pending ++ parts` as the kernel takes now. Returns how many bytes of
    /// `parts` (after `skip` of them already sent) were written; buffered bytes go first.
    fn send_some(&mut self, parts: &[&[u8]], skip: &mut usize) -> HResult<bool> {
        let fd = match self.fd.as_ref() {
            Some(f) => f.as_raw_fd(),
            None => {
                return Err(HandleError::Misuse(
                    "Attempt to write to a closed I/O handle",
                ))
            }
        };
        if self.kind == Kind::Stdio
            && !sys::ready_now(self.fd().expect("fd checked above"), Interest::Write)
                .map_err(|e| HandleError::os(&e))?
        {
            return Ok(false);
        }
        // On the stack and not zeroed: this runs for every response, and a heap vector, or
        // clearing the whole array, cost more than the few entries used.
        let mut iovs = [std::mem::MaybeUninit::<libc::iovec>::uninit(); MAX_IOVECS];
        let mut count = 0;
        let pending = self.wbuf.pending();
        // `skip` bytes at the front of `parts` were sent already.
        let mut off = *skip;
        let unsent = parts.iter().filter_map(|p| {
            let start = off.min(p.len());
            off -= start;
            (start < p.len()).then(|| &p[start..])
        });
        for piece in std::iter::once(pending)
            .filter(|p| !p.is_empty())
            .chain(unsent)
        {
            if count == MAX_IOVECS {
                break;
            }
            iovs[count].write(libc::iovec {
                iov_base: piece.as_ptr() as *mut _,
                iov_len: piece.len(),
            });
            count += 1;
        }
        // SAFETY: the first `count` entries were written just above; MaybeUninit<iovec> has
        // the layout of iovec.
        let iov = unsafe { std::slice::from_raw_parts(iovs.as_ptr().cast::<libc::iovec>(), count) };
        if iov.is_empty() {
            return Ok(true);
        }
        let kind = self.kind;
        let res = sys::retry(|| {
            // SAFETY: every iovec points into a live slice (`pending` or `parts`) that outlives
            // the call; `msg` is fully initialised.
            let n = unsafe {
                if kind.is_socket() && iov.len() == 1 {
                    // one piece (the usual small response): `send` spares the kernel the
                    // message header and iovec import of `sendmsg`
                    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                    libc::send(fd, iov[0].iov_base, iov[0].iov_len, flags)
                } else if kind.is_socket() {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = iov.as_ptr() as *mut _;
                    msg.msg_iovlen = iov.len() as _;
                    libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                } else {
                    libc::writev(fd, iov.as_ptr(), iov.len() as i32)
                }
            };
            sys::cvt(n).map(|n| n as usize)
        });
        match res {
            Ok(mut n) => {
                let from_buf = n.min(self.wbuf.len());
                self.wbuf.consume(from_buf);
                n -= from_buf;
                *skip += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => {
                self.write_failed = true;
                self.wbuf.clear();
                Err(HandleError::os(&e))
            }
        }
    }

    /// Writes `parts` so that at most `limit` bytes stay buffered, sending without blocking.
    /// Bytes the kernel did not take are copied into the buffer. Returns the bytes still
    /// buffered, or 0 when that is below `limit` (the manual's "small buffered portion").
    fn write_with_limit(&mut self, parts: &[&[u8]], limit: usize, block: bool) -> HResult<usize> {
        self.check_writable()?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut skip = 0;
        loop {
            let left = self.wbuf.len() + total - skip;
            if left == 0 || left < limit {
                break;
            }
            if !self.send_some(parts, &mut skip)? {
                if !block {
                    break;
                }
                self.wait(Interest::Write)?;
            }
        }
        let mut off = skip;
        for p in parts {
            if off >= p.len() {
                off -= p.len();
                continue;
            }
            self.wbuf.push(&p[off..]);
            off = 0;
        }
        let left = self.wbuf.len();
        Ok(if left < limit { 0 } else { left })
    }

    /// `write_nb`: buffer, sending without blocking once the buffer is large.
    pub fn write_nb(&mut self, parts: &[&[u8]]) -> HResult<usize> {
        self.write_with_limit(parts, WRITE_BUFFER_LIMIT, false)
    }

    /// `write`: buffer, blocking while more than the buffer limit is pending.
    pub fn write_blocking(&mut self, parts: &[&[u8]]) -> HResult<()> {
        self.write_with_limit(parts, WRITE_BUFFER_LIMIT, true)
            .map(drop)
    }

    /// `flush_nb`: write and send everything possible without blocking; returns bytes left.
    pub fn flush_nb(&mut self, parts: &[&[u8]]) -> HResult<usize> {
        self.write_with_limit(parts, 0, false)
    }

    /// `flush`: write and send everything, blocking as needed.
    pub fn flush_blocking(&mut self, parts: &[&[u8]]) -> HResult<()> {
        self.write_with_limit(parts, 0, true).map(drop)
    }

    /// `finish`: flush, then end the write direction. TCP sends FIN and reading goes on;
    /// for other kinds the descriptor is closed and later reads see buffered data, then EOF.
    pub fn finish(&mut self) -> HResult<()> {
        match self.state {
            State::Closed => {
                return Err(HandleError::Misuse("Attempt to finish a closed I/O handle"))
            }
            State::Finished => {
                return Err(HandleError::Misuse(
                    "Attempt to finish a finished I/O handle",
                ))
            }
            State::Open => {}
        }
        let flushed = if self.write_failed {
            Ok(())
        } else {
            self.flush_blocking(&[])
        };
        self.state = State::Finished;
        if self.kind == Kind::Tcp {
            if let Some(fd) = self.raw_fd() {
                // SAFETY: plain syscall on a descriptor we own.
                let r = sys::cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) });
                if let Err(e) = r {
                    flushed?;
                    return Err(HandleError::os(&e));
                }
            }
        } else {
            self.fd = None;
            self.read_eof = true;
        }
        flushed
    }

    /// `close`: flush and close gracefully. The handle is closed even when flushing fails.
    pub fn close(&mut self) -> HResult<()> {
        if self.state == State::Closed {
            return Err(HandleError::Misuse("Attempt to close a closed I/O handle"));
        }
        let flushed = if self.state == State::Open && !self.write_failed {
            self.flush_blocking(&[])
        } else {
            Ok(())
        };
        if self.kind == Kind::Tcp {
            if let Some(fd) = self.raw_fd() {
                // Undo the SO_LINGER 0 that makes crashes reset: this close is graceful.
                let _ = sys::set_linger(fd, None);
            }
        }
        self.release();
        flushed
    }

    /// `reset`: close abortively (TCP RST where possible), discarding buffered data.
    pub fn reset(&mut self) -> HResult<()> {
        if self.state == State::Closed {
            return Err(HandleError::Misuse("Attempt to reset a closed I/O handle"));
        }
        if self.kind == Kind::Tcp {
            if let Some(fd) = self.raw_fd() {
                let _ = sys::set_linger(fd, Some(0));
            }
        }
        self.release();
        Ok(())
    }

    fn release(&mut self) {
        self.fd = None; // an explicit close/reset closes even standard streams
        self.state = State::Closed;
        self.rbuf.clear();
        self.wbuf.clear();
    }
}

impl Drop for Handle {
    /// Descriptors 0-2 belong to the process: a collected standard-stream handle (as at
    /// `lua_close`, before C stdio flushes its buffers at exit) must not close them.
    fn drop(&mut self) {
        if self.kind == Kind::Stdio {
            if let Some(fd) = self.fd.take() {
                let _ = fd.into_raw_fd();
            }
        }
    }
}
