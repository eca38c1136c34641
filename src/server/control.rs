//! Messages between the master and a worker, one per datagram on a SOCK_SEQPACKET pair.
//! Pure encode/decode; the sockets live in `master.rs` and `worker.rs`.

/// Worker -> master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// `prepare` finished: the worker is ready for work.
    Ready,
    /// A connection was accepted: one more job.
    Accepted,
    /// A connection handler returned: one job less.
    Done,
    /// The interval with this index ran: one job less, and the interval may be planned again.
    IntervalDone(u32),
}

/// Master -> worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop after the current job (surplus idle worker, or graceful shutdown).
    Terminate,
    /// Run the interval handler with this index.
    RunInterval(u32),
}

/// Longest encoded message.
pub const MAX_MESSAGE: usize = 5;

fn with_index(tag: u8, idx: u32) -> ([u8; MAX_MESSAGE], usize) {
    let mut b = [0u8; MAX_MESSAGE];
    b[0] = tag;
    b[1..5].copy_from_slice(&idx.to_le_bytes());
    (b, 5)
}

fn index_of(bytes: &[u8]) -> Option<u32> {
    let arr: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
    (bytes.len() == 5).then(|| u32::from_le_bytes(arr))
}

impl Report {
    pub fn encode(self) -> ([u8; MAX_MESSAGE], usize) {
        match self {
            Report::Ready => ([b'R', 0, 0, 0, 0], 1),
            Report::Accepted => ([b'A', 0, 0, 0, 0], 1),
            Report::Done => ([b'D', 0, 0, 0, 0], 1),
            Report::IntervalDone(i) => with_index(b'E', i),
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Report> {
        match bytes {
            [b'R'] => Some(Report::Ready),
            [b'A'] => Some(Report::Accepted),
            [b'D'] => Some(Report::Done),
            [b'E', ..] => index_of(bytes).map(Report::IntervalDone),
            _ => None,
        }
    }
}

impl Command {
    pub fn encode(self) -> ([u8; MAX_MESSAGE], usize) {
        match self {
            Command::Terminate => ([b'T', 0, 0, 0, 0], 1),
            Command::RunInterval(i) => with_index(b'I', i),
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Command> {
        match bytes {
            [b'T'] => Some(Command::Terminate),
            [b'I', ..] => index_of(bytes).map(Command::RunInterval),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [
            Report::Ready,
            Report::Accepted,
            Report::Done,
            Report::IntervalDone(0),
            Report::IntervalDone(u32::MAX),
        ] {
            let (b, n) = r.encode();
            assert_eq!(Report::decode(&b[..n]), Some(r));
        }
        for c in [Command::Terminate, Command::RunInterval(7)] {
            let (b, n) = c.encode();
            assert_eq!(Command::decode(&b[..n]), Some(c));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"X",
            b"RR",
            b"E\x01\x00\x00",
            b"E\x01\x00\x00\x00\x00",
            b"T1",
        ] {
            assert_eq!(Report::decode(bad), None, "{bad:?}");
            assert_eq!(Command::decode(bad), None, "{bad:?}");
        }
    }
}
