//! Read and write buffers of an I/O handle, and the pure decision of what a read returns.
//!
//! `ReadBuf` remembers how far it already searched for a terminator, so reading a long line
//! that arrives in many segments costs O(bytes) rather than O(bytes²). Nothing here performs
//! I/O: `fill_with` hands spare capacity to a caller-provided reader.

use std::io;

/// How much spare room a read asks the kernel to fill at a time.
pub const READ_CHUNK: usize = 64 * 1024;

/// Why a read (or drain) ended. `Block` only appears for non-blocking calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    Term,
    Maxlen,
    Eof,
    Block,
}

impl ReadStatus {
    /// The status string of the manual.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadStatus::Term => "term",
            ReadStatus::Maxlen => "maxlen",
            ReadStatus::Eof => "eof",
            ReadStatus::Block => "block",
        }
    }
}

/// What the buffered bytes allow a read to return right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Return the first `n` bytes with this status.
    Done(usize, ReadStatus),
    /// The request cannot be answered from the buffer: more input (or EOF) is needed.
    NeedMore,
}

/// Read buffers given back by dropped handles, reused by new ones: a worker process serving
/// one short connection after another would otherwise allocate and free `READ_CHUNK` bytes
/// per connection, and glibc consolidates all its small free chunks on every such
/// allocation (measured: a few thousand instructions per connection).
mod spare {
    use crate::io::spare::{self, Spares};

    /// Buffers kept at most (a worker has one connection at a time; clients use a few).
    const KEEP: usize = 4;
    /// Larger buffers (grown for a big body) are freed instead of kept.
    pub const MAX_CAPACITY: usize = 4 * super::READ_CHUNK;

    thread_local! {
        static BUFFERS: Spares<u8> = const { Spares::new(Vec::new()) };
    }

    pub fn take() -> Vec<u8> {
        spare::take(&BUFFERS).unwrap_or_default()
    }

    pub fn give(v: Vec<u8>) {
        if (super::READ_CHUNK..=MAX_CAPACITY).contains(&v.capacity()) {
            spare::give(&BUFFERS, v, KEEP);
        }
    }
}

/// Buffered input: `data[start..]` is unread.
#[derive(Debug, Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    /// Bytes at the head already known not to contain `scanned_for`.
    scanned: usize,
    scanned_for: Option<u8>,
}

impl ReadBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unread bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` unread bytes.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume past the end of the read buffer");
        self.start += n;
        self.scanned = 0;
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Drops everything, releasing memory held by a large read.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Appends bytes (used by tests and by callers that push back input).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Position of `term` within the first `limit` unread bytes, searching only bytes not
    /// searched before for the same terminator.
    pub fn find(&mut self, term: u8, limit: usize) -> Option<usize> {
        let limit = limit.min(self.len());
        if self.scanned_for != Some(term) {
            self.scanned_for = Some(term);
            self.scanned = 0;
        }
        let from = self.scanned.min(limit);
        match crate::bytes::find_byte(term, &self.bytes()[from..limit]) {
            Some(i) => Some(from + i),
            None => {
                self.scanned = limit;
                None
            }
        }
    }

    /// What `read(maxlen, term)` may return from the buffer, given whether EOF was seen.
    /// `maxlen = None` means no limit. If both the terminator and maxlen are hit, the status
    /// is `Term` (the manual: "term" when the terminator is the last byte).
    pub fn decide(&mut self, maxlen: Option<usize>, term: Option<u8>, eof: bool) -> Decision {
        let avail = self.len();
        let limit = maxlen.map_or(avail, |m| m.min(avail));
        if let Some(t) = term {
            if let Some(i) = self.find(t, limit) {
                return Decision::Done(i + 1, ReadStatus::Term);
            }
        }
        match maxlen {
            Some(m) if avail >= m => Decision::Done(m, ReadStatus::Maxlen),
            _ if eof => Decision::Done(avail, ReadStatus::Eof),
            _ => Decision::NeedMore,
        }
    }

    /// Makes room for `total` unread bytes plus a full read chunk, so that input of a known
    /// size can be collected in one piece without `fill_with` compacting or reallocating
    /// (each would copy what arrived so far). Compacts only when the room is not there.
    pub fn reserve_unread(&mut self, total: usize) {
        if self.data.len() - self.start >= total {
            return; // all of it is here (a 64 KiB POST arrives with its head in one read)
        }
        let want = total.saturating_add(READ_CHUNK);
        if self.data.capacity() - self.start >= want {
            return;
        }
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        self.data.reserve(want.saturating_sub(self.data.len()));
    }

    /// Gives the buffer's memory back (to the spare buffers) when nothing is unread: for a
    /// connection about to wait idle among thousands (concurrent pools). The next read
    /// takes a buffer again.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.data.capacity() > 0 {
            spare::give(std::mem::take(&mut self.data));
            self.start = 0;
            self.scanned = 0;
        }
    }

    /// Lets `read` fill spare capacity (at least `READ_CHUNK` bytes) and records what it
    /// wrote. `read` receives a pointer to uninitialised memory and its length, and must
    /// return how many bytes it initialised.
    pub fn fill_with<F>(&mut self, read: F) -> io::Result<usize>
    where
        F: FnOnce(*mut u8, usize) -> io::Result<usize>,
    {
        if self.start > 0
            && (self.start >= self.data.len() / 2
                || self.data.capacity() - self.data.len() < READ_CHUNK)
        {
            self.data.drain(..self.start);
            self.start = 0;
        }
        if self.data.capacity() == 0 {
            self.data = spare::take();
        }
        self.data.reserve(READ_CHUNK);
        let spare = self.data.spare_capacity_mut();
        let n = read(spare.as_mut_ptr().cast(), spare.len())?;
        assert!(
            n <= spare.len(),
            "reader claims more bytes than it was given"
        );
        // SAFETY: the reader initialised the first `n` bytes of the spare capacity.
        unsafe { self.data.set_len(self.data.len() + n) };
        Ok(n)
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        spare::give(std::mem::take(&mut self.data));
    }
}

/// Buffered output: `data[start..]` is not yet passed to the kernel.
#[derive(Debug, Default)]
pub struct WriteBuf {
    data: Vec<u8>,
    start: usize,
}

impl WriteBuf {
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
        self.data.extend_from_slice(bytes);
    }

    /// Marks `n` pending bytes as written.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume past the end of the write buffer");
        self.start += n;
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        } else if self.start > 1 << 20 && self.start >= self.data.len() / 2 {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> ReadBuf {
        let mut b = ReadBuf::new();
        b.extend(bytes);
        b
    }

    #[test]
    fn decide_table() {
        use Decision::*;
        use ReadStatus::*;
        // (input, maxlen, term, eof, expected)
        type Row = (&'static [u8], Option<usize>, Option<u8>, bool, Decision);
        let rows: &[Row] = &[
            (b"abc\ndef", None, Some(b'\n'), false, Done(4, Term)),
            (b"abcdef", None, Some(b'\n'), false, NeedMore),
            (b"abcdef", None, Some(b'\n'), true, Done(6, Eof)),
            (b"abcdef", Some(3), Some(b'\n'), false, Done(3, Maxlen)),
            (b"ab\n", Some(3), Some(b'\n'), false, Done(3, Term)),
            (b"abc\n", Some(3), Some(b'\n'), false, Done(3, Maxlen)),
            (b"", Some(0), None, false, Done(0, Maxlen)),
            (b"", None, None, true, Done(0, Eof)),
            (b"", None, None, false, NeedMore),
            (b"abc", None, None, false, NeedMore),
            (b"abc", Some(5), None, true, Done(3, Eof)),
            (b"abc", Some(5), None, false, NeedMore),
            (b"\n", None, Some(b'\n'), false, Done(1, Term)),
        ];
        for (i, (input, maxlen, term, eof, want)) in rows.iter().enumerate() {
            assert_eq!(buf(input).decide(*maxlen, *term, *eof), *want, "row {i}");
        }
    }

    #[test]
    fn search_offset_is_remembered_and_reset() {
        let mut b = buf(b"aaaa");
        assert_eq!(b.find(b'\n', usize::MAX), None);
        assert_eq!(b.scanned, 4);
        b.extend(b"b\nc");
        assert_eq!(b.find(b'\n', usize::MAX), Some(5));
        // another terminator searches from the start again
        assert_eq!(b.find(b'a', usize::MAX), Some(0));
        b.consume(6);
        assert_eq!(b.bytes(), b"c");
        assert_eq!(b.find(b'c', usize::MAX), Some(0));
    }

    #[test]
    fn dropped_buffers_are_reused_cleared() {
        let mut a = ReadBuf::new();
        a.fill_with(|p, _| {
            // SAFETY: the buffer hands out at least READ_CHUNK writable bytes at `p`.
            unsafe { std::ptr::copy_nonoverlapping(b"old".as_ptr(), p, 3) };
            Ok(3)
        })
        .unwrap();
        let ptr = a.data.as_ptr();
        drop(a);
        let mut b = ReadBuf::new();
        b.fill_with(|_, len| {
            assert!(len >= READ_CHUNK);
            Ok(0)
        })
        .unwrap();
        assert!(b.bytes().is_empty());
        assert_eq!(
            ptr,
            b.data.as_ptr(),
            "the dropped buffer is taken again (same thread)"
        );
    }

    #[test]
    fn an_empty_buffer_is_released_and_taken_again_on_the_next_read() {
        let mut b = buf(b"abc");
        b.release_if_empty();
        assert_eq!(b.bytes(), b"abc", "unread bytes keep their buffer");
        b.consume(3);
        b.release_if_empty();
        assert_eq!(b.data.capacity(), 0);
        let n = b
            .fill_with(|p, len| {
                assert!(len >= READ_CHUNK);
                // SAFETY: `p` has room for `len >= 2` bytes.
                unsafe { std::ptr::copy_nonoverlapping(b"de".as_ptr(), p, 2) };
                Ok(2)
            })
            .unwrap();
        assert_eq!((n, b.bytes()), (2, &b"de"[..]));
    }

    #[test]
    fn reserve_unread_keeps_the_unread_bytes_and_makes_room() {
        let mut b = buf(b"head:body");
        b.consume(5);
        b.reserve_unread(100_000);
        assert_eq!(b.bytes(), b"body");
        let before = b.data.as_ptr();
        // filled the way a socket fills it: no compaction or reallocation on the way
        while b.len() < 100_000 {
            let want = (100_000 - b.len()).min(7_000);
            b.fill_with(|p, len| {
                assert!(len >= want);
                // SAFETY: the buffer hands out `len` writable bytes at `p`.
                unsafe { std::ptr::write_bytes(p, b'x', want) };
                Ok(want)
            })
            .unwrap();
            assert_eq!(
                before,
                b.data.as_ptr(),
                "no reallocation after the reservation"
            );
        }
        assert_eq!(&b.bytes()[..4], b"body");
        assert_eq!(b.len(), 100_000);
        // with enough room already, nothing moves
        let mut c = buf(&[b'y'; 300]);
        c.reserve_unread(1000);
        c.consume(200);
        let (ptr, start) = (c.data.as_ptr(), c.start);
        c.reserve_unread(500);
        assert_eq!((ptr, start), (c.data.as_ptr(), c.start));
        // all of it buffered already (a body that came with its head): nothing moves,
        // however full the buffer is
        let mut d = buf(&[b'z'; READ_CHUNK + 100]);
        d.consume(100);
        let (ptr, start) = (d.data.as_ptr(), d.start);
        d.reserve_unread(READ_CHUNK);
        assert_eq!((ptr, start), (d.data.as_ptr(), d.start));
        assert_eq!(d.len(), READ_CHUNK);
    }

    #[test]
    fn fill_with_appends_and_compacts() {
        let mut b = buf(b"xyz");
        b.consume(2);
        let n = b
            .fill_with(|p, len| {
                assert!(len >= READ_CHUNK);
                // SAFETY: the buffer hands out at least `len` writable bytes at `p`.
                unsafe { std::ptr::copy_nonoverlapping(b"123".as_ptr(), p, 3) };
                Ok(3)
            })
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(b.bytes(), b"z123");
    }

    #[test]
    fn write_buf_accounting() {
        let mut w = WriteBuf::default();
        w.push(b"hello ");
        w.push(b"world");
        assert_eq!(w.len(), 11);
        w.consume(6);
        assert_eq!(w.pending(), b"world");
        w.consume(5);
        assert!(w.is_empty());
        w.push(b"again");
        assert_eq!(w.pending(), b"again");
    }
}
