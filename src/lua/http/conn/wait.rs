//! Waiting on the socket with deadlines, and the one non-blocking read step the connection
//! uses (through the handle's own buffer, as `socket:read` does).

use std::io;
use std::time::{Duration, Instant};

use crate::io::handle::{HandleError, ReadStatus};
use crate::io::poll::{self, Entry, Interest, Outcome};
use crate::io::{signal, Handle};

/// Waits until the kernel has more for `h` in one of `interests` (input already buffered
/// does not count: callers wait only when they need more), or the deadline passes.
pub(super) fn wait(
    h: &Handle,
    interests: &[Interest],
    until: Option<Instant>,
) -> io::Result<Outcome> {
    let Some(fd) = h.raw_fd() else {
        return Ok(Outcome::Ready);
    };
    let entries: Vec<Entry> = interests.iter().map(|&i| Entry::new(fd, i)).collect();
    let timeout = until.map(|d| d.saturating_duration_since(Instant::now()));
    poll::poll(&entries, timeout, false)
}

/// Longest single wait while waiting for input: bounds the delay when a SIGTERM lands
/// between the flag check and the wait (see `wait_fill`).
const SIGTERM_SLICE: Duration = Duration::from_secs(1);

/// What a wait for input brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// New bytes are in the handle's buffer.
    Data,
    /// The peer ended its input.
    Eof,
    /// SIGTERM was received (only reported when asked for).
    Sigterm,
    /// The deadline passed.
    Timeout,
}

/// Reads more input into `h`'s buffer, waiting until `until`; with `on_sigterm`, returns
/// early when SIGTERM was received.
///
/// An accepted connection (a blocking socket) sleeps in `recv` itself, with SO_RCVTIMEO
/// bounding each sleep: one system call per wait instead of `poll` and `recv`. `rcvtimeo`
/// is the value last set on the socket (`None`: never set); it is changed only when a
/// wait needs a shorter one, so a keep-alive connection sets it once. Other handles poll.
///
/// Both ways wait in slices of at most a second with the SIGTERM flag checked in between:
/// a signal always ends a `poll` and, with SO_RCVTIMEO set, a `recv` (EINTR even with
/// SA_RESTART); one landing between the check and the wait is seen within a slice. That
/// is cheaper than `poll::poll(.., true)`, which blocks and unblocks SIGTERM around every
/// wait.
pub(super) fn wait_fill(
    h: &mut Handle,
    until: Option<Instant>,
    rcvtimeo: &mut Option<Duration>,
    on_sigterm: bool,
) -> Result<Arrival, HandleError> {
    let io_err = |e: io::Error| HandleError::Io(crate::io::sys::error_text(&e));
    loop {
        if on_sigterm && signal::sigterm_received() {
            return Ok(Arrival::Sigterm);
        }
        let now = Instant::now();
        let slice = match until {
            Some(d) if d <= now => return Ok(Arrival::Timeout),
            Some(d) => (d - now).min(SIGTERM_SLICE),
            None => SIGTERM_SLICE,
        };
        // Round up, so a short remaining time does not become a busy loop of 0 ms waits.
        let slice = Duration::from_millis(slice.as_micros().div_ceil(1000) as u64);
        let Some(fd) = h.raw_fd() else {
            return Ok(Arrival::Eof);
        };
        if h.can_wait_in_recv() {
            let stale = rcvtimeo.is_none_or(|t| t > slice || t * 2 < slice);
            if stale {
                crate::io::sys::set_recv_timeout(fd, slice).map_err(io_err)?;
                *rcvtimeo = Some(slice);
            }
            match h.recv_wait()? {
                Some(true) => return Ok(Arrival::Data),
                Some(false) => return Ok(Arrival::Eof),
                None => continue,
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        match crate::io::sys::cvt(unsafe {
            libc::poll(&mut pfd, 1, crate::io::sys::timeout_ms(Some(slice)))
        }) {
            Ok(0) => {}
            Ok(_) => match fill_nb(h)? {
                Some(true) => return Ok(Arrival::Data),
                Some(false) => return Ok(Arrival::Eof),
                None => {}
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Reads once into the buffer without blocking: `Some(true)` = new data, `Some(false)` =
/// end of input, `None` = nothing now.
pub(super) fn fill_nb(h: &mut Handle) -> Result<Option<bool>, HandleError> {
    let have = h.buffered().len();
    let out = h.read_step(Some(have + 1), None, true)?;
    Ok(match out.status {
        ReadStatus::Block => None,
        ReadStatus::Eof => Some(h.buffered().len() > have),
        _ => Some(true),
    })
}

pub(super) fn io_fail(e: HandleError) -> String {
    match e {
        HandleError::Io(m) => m,
        HandleError::Misuse(m) => m.to_string(),
    }
}
