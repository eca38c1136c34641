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

/// Longest single `poll` while waiting for a request: bounds the delay when a SIGTERM lands
/// between the flag check and the `poll` (see `wait_for_request`).
const SIGTERM_SLICE: Duration = Duration::from_secs(1);

/// Waits for input on `h` until `until`, returning early when SIGTERM was received.
///
/// Cheaper than `poll::poll(.., true)`, which blocks and unblocks SIGTERM around every wait
/// (two more system calls per request): here the handler's flag is checked and `poll(2)`,
/// which a signal always interrupts (SA_RESTART does not restart it), waits in slices. A
/// SIGTERM that arrives between the check and the `poll` is seen within one slice.
pub(super) fn wait_for_request(h: &Handle, until: Option<Instant>) -> io::Result<Outcome> {
    let Some(fd) = h.raw_fd() else {
        return Ok(Outcome::Ready);
    };
    loop {
        if signal::sigterm_received() {
            return Ok(Outcome::Sigterm);
        }
        let now = Instant::now();
        let slice = match until {
            Some(d) if d <= now => return Ok(Outcome::Timeout),
            Some(d) => (d - now).min(SIGTERM_SLICE),
            None => SIGTERM_SLICE,
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up, so a short remaining time does not become a busy loop of 0 ms polls.
        let ms = slice.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        match crate::io::sys::cvt(unsafe { libc::poll(&mut pfd, 1, ms) }) {
            Ok(0) => {}
            Ok(_) => return Ok(Outcome::Ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
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
