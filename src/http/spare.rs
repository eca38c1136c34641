//! Buffers of ended connections, reused by the next ones.
//!
//! A worker serving one short connection after another made the same few heap allocations
//! for each (the response's head and output buffers, the copy of the request head and its
//! field list) and freed them when the collector finalized the connection, in bursts of
//! many: glibc's per-size caches overflowed and every allocation took its slow path
//! (perf, issue 12). A connection that ends gives its buffers here
//! (`Connection::recycle`) and the next one takes them. A few are kept (a concurrent pool
//! ends several connections at a time); buffers that grew large are freed instead.
//!
//! Per thread, like the interpreter state that owns the connections.

use std::ops::Range;

use crate::io::spare::{self, Spares};

/// Buffers of each kind kept at most.
const KEEP: usize = 16;
/// Larger buffers (a big response gathered whole, a huge head) are freed, not kept.
const MAX_CAPACITY: usize = 64 * 1024;

/// A header field of a parsed head: the ranges of its name and value.
pub type Field = (Range<usize>, Range<usize>);

thread_local! {
    static BYTES: Spares<u8> = const { Spares::new(Vec::new()) };
    static FIELDS: Spares<Field> = const { Spares::new(Vec::new()) };
}

fn take<T>(pool: &'static std::thread::LocalKey<Spares<T>>, min: usize) -> Vec<T> {
    let mut v = spare::take_fit(pool, min).unwrap_or_default();
    v.reserve(min);
    v
}

fn give<T>(pool: &'static std::thread::LocalKey<Spares<T>>, v: Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if v.capacity() > 0 && bytes <= MAX_CAPACITY {
        spare::give(pool, v, KEEP);
    }
}

/// An empty byte buffer with room for at least `min` bytes.
pub fn bytes(min: usize) -> Vec<u8> {
    take(&BYTES, min)
}

/// Gives a byte buffer back (its contents are dropped).
pub fn give_bytes(v: Vec<u8>) {
    give(&BYTES, v)
}

/// An empty field list with room for at least `min` fields.
pub fn fields(min: usize) -> Vec<Field> {
    take(&FIELDS, min)
}

/// Gives a field list back.
pub fn give_fields(v: Vec<Field>) {
    give(&FIELDS, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_their_memory() {
        let mut a = bytes(100);
        assert!(a.capacity() >= 100);
        a.extend_from_slice(b"left over");
        let ptr = a.as_ptr();
        give_bytes(a);
        let b = bytes(10);
        assert!(b.is_empty(), "contents are dropped");
        assert_eq!(b.as_ptr(), ptr, "the same memory is handed out again");
        // too big to keep: freed
        give_bytes(Vec::with_capacity(MAX_CAPACITY + 1));
        let c = bytes(1);
        assert!(c.capacity() <= MAX_CAPACITY);
        // at most KEEP are kept
        for _ in 0..KEEP + 5 {
            give_fields(Vec::with_capacity(4));
        }
        let n = FIELDS.with(|p| p.borrow().len());
        assert_eq!(n, KEEP);
        // a full pool takes a larger one in place of its smallest
        give_fields(Vec::with_capacity(64));
        let caps: Vec<usize> = FIELDS.with(|p| p.borrow().iter().map(|v| v.capacity()).collect());
        assert_eq!(caps.len(), KEEP);
        assert!(caps.contains(&64));
        let f = fields(8);
        assert!(f.is_empty() && f.capacity() >= 8);
    }

    #[test]
    fn the_best_fitting_buffer_is_handed_out() {
        BYTES.with(|p| p.borrow_mut().clear());
        let (small, large) = (Vec::with_capacity(256), Vec::with_capacity(4096));
        let (sp, lp) = (small.as_ptr(), large.as_ptr());
        // given in the order a response gives them back, taken in the order a new one asks
        give_bytes(small);
        give_bytes(large);
        let a = bytes(200);
        let b = bytes(1000);
        assert_eq!((a.as_ptr(), b.as_ptr()), (sp, lp), "no buffer had to grow");
        give_bytes(a);
        // nothing big enough: the largest is taken (and grown)
        let c = bytes(8192);
        assert!(c.capacity() >= 8192);
        assert!(
            BYTES.with(|p| p.borrow().is_empty()),
            "the one spare was used"
        );
    }
}
