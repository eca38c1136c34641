//! A cache of small heap blocks for a worker's Lua state, by size class.
//!
//! A request loop allocates and frees the same few dozen small objects (tables, closures,
//! strings) for every connection; glibc's malloc spends about a seventh of a
//! Connection: close worker's CPU time on them (perf, issue 12). Blocks freed here are kept
//! on a free list of their class and handed out again without a call into malloc.
//!
//! Every block is a malloc block, whatever allocated it (this cache, or the interpreter's
//! allocator before the cache was installed), and its class is taken from
//! `malloc_usable_size`, so blocks from either origin can be freed here, and a block freed
//! with `free` after the cache is gone is still valid. Large blocks go straight to
//! malloc/realloc/free.
//!
//! Not thread-safe: one cache belongs to one Lua state of a single-threaded worker.

use std::ptr;

/// Class granularity and the largest cached block size.
pub const GRANULE: usize = 16;
pub const MAX_SMALL: usize = 1024;
const CLASSES: usize = MAX_SMALL / GRANULE;
/// glibc's usable size of a block exceeds its requested size by up to a word plus the
/// rounding; a block up to this size still counts as small when it is freed.
const SMALL_USABLE: usize = MAX_SMALL + 2 * GRANULE;
/// Bytes the free lists may hold in all; beyond that freed blocks go back to malloc, so a
/// burst of small objects does not pin its peak.
pub const CACHE_LIMIT: usize = 4 << 20;

struct Link {
    next: *mut Link,
}

pub struct SmallBlocks {
    heads: [*mut Link; CLASSES],
    cached: usize,
}

impl Default for SmallBlocks {
    fn default() -> Self {
        SmallBlocks::new()
    }
}

/// The class that serves a request of `size` bytes (1..=MAX_SMALL).
fn class_of_request(size: usize) -> usize {
    size.div_ceil(GRANULE) - 1
}

/// The class a free block of `usable` bytes can serve (usable >= GRANULE).
fn class_of_usable(usable: usize) -> usize {
    (usable / GRANULE).min(CLASSES) - 1
}

fn class_size(class: usize) -> usize {
    (class + 1) * GRANULE
}

fn usable(p: *mut u8) -> usize {
    // SAFETY: `p` is a live malloc block (the contract of every caller).
    unsafe { libc::malloc_usable_size(p.cast()) }
}

impl SmallBlocks {
    pub const fn new() -> SmallBlocks {
        SmallBlocks {
            heads: [ptr::null_mut(); CLASSES],
            cached: 0,
        }
    }

    /// Bytes on the free lists.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// A block of at least `size` (> 0) bytes, or null when out of memory.
    pub fn alloc(&mut self, size: usize) -> *mut u8 {
        if size > MAX_SMALL {
            // SAFETY: malloc has no preconditions.
            return unsafe { libc::malloc(size) }.cast();
        }
        let class = class_of_request(size);
        let head = self.heads[class];
        if head.is_null() {
            // A fresh block of the class's full size, so that it serves the class when it
            // comes back.
            // SAFETY: malloc has no preconditions.
            return unsafe { libc::malloc(class_size(class)) }.cast();
        }
        // SAFETY: blocks on a free list are unused blocks of at least GRANULE bytes whose
        // first word this cache wrote (`free`).
        self.heads[class] = unsafe { (*head).next };
        self.cached -= class_size(class);
        head.cast()
    }

    /// Frees a block.
    ///
    /// # Safety
    /// `p` is null or a live block of the C allocator (malloc, realloc or this cache), and
    /// is not used afterwards.
    pub unsafe fn free(&mut self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        let u = usable(p);
        if !(GRANULE..=SMALL_USABLE).contains(&u) || self.cached + MAX_SMALL > CACHE_LIMIT {
            // SAFETY: `p` is a live malloc block (the caller's contract).
            unsafe { libc::free(p.cast()) };
            return;
        }
        let class = class_of_usable(u);
        let link = p.cast::<Link>();
        // SAFETY: the block is at least GRANULE bytes, malloc-aligned, and ours now.
        unsafe {
            link.write(Link {
                next: self.heads[class],
            })
        };
        self.heads[class] = link;
        self.cached += class_size(class);
    }

    /// Changes the size of a block from `old` to `new` bytes (`new` > 0), keeping its first
    /// `min(old, new)` bytes. Returns null when out of memory, with the block unchanged;
    /// never fails to shrink.
    ///
    /// # Safety
    /// `p` is a live block of the C allocator whose first `old` bytes are initialized.
    pub unsafe fn realloc(&mut self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
        let u = usable(p);
        let small = u <= SMALL_USABLE;
        if new <= u && (small || new > MAX_SMALL) {
            if small {
                return p; // it fits, and a small block is not worth moving
            }
            // SAFETY: a large malloc block; realloc keeps its contents.
            let q = unsafe { libc::realloc(p.cast(), new) }.cast::<u8>();
            return if q.is_null() { p } else { q };
        }
        if !small && new > MAX_SMALL {
            // SAFETY: as above.
            return unsafe { libc::realloc(p.cast(), new) }.cast();
        }
        // Between the classes and malloc: a new block, the contents copied over.
        let q = self.alloc(new);
        if q.is_null() {
            return if new <= old { p } else { ptr::null_mut() };
        }
        // SAFETY: both blocks are live and distinct, `p` has `old` initialized bytes and
        // `q` room for `new`.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old.min(new));
            self.free(p);
        }
        q
    }

    /// Gives every cached block back to malloc.
    pub fn release(&mut self) {
        for head in &mut self.heads {
            let mut p = *head;
            while !p.is_null() {
                // SAFETY: `p` is a cached block: unused, with the next link in its first word.
                unsafe {
                    let next = (*p).next;
                    libc::free(p.cast());
                    p = next;
                }
            }
            *head = ptr::null_mut();
        }
        self.cached = 0;
    }
}

impl Drop for SmallBlocks {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fill(p: *mut u8, n: usize, seed: u8) {
        for i in 0..n {
            // SAFETY: the tests only write blocks of at least `n` bytes.
            unsafe { *p.add(i) = seed.wrapping_add(i as u8) };
        }
    }

    fn check(p: *mut u8, n: usize, seed: u8) -> bool {
        // SAFETY: as in `fill`.
        (0..n).all(|i| unsafe { *p.add(i) } == seed.wrapping_add(i as u8))
    }

    #[test]
    fn classes() {
        assert_eq!(class_of_request(1), 0);
        assert_eq!(class_of_request(16), 0);
        assert_eq!(class_of_request(17), 1);
        assert_eq!(class_of_request(MAX_SMALL), CLASSES - 1);
        // a block serves every request its class serves
        for size in 1..=MAX_SMALL {
            let c = class_of_request(size);
            assert!(class_size(c) >= size);
            assert_eq!(class_of_usable(class_size(c)), c);
        }
        assert_eq!(class_of_usable(24), 0);
        assert_eq!(class_of_usable(SMALL_USABLE), CLASSES - 1);
    }

    #[test]
    fn reuses_freed_blocks() {
        let mut c = SmallBlocks::new();
        let a = c.alloc(40);
        fill(a, 40, 1);
        // malloc may hand out a larger block than asked for (a chunk too small to split):
        // its class is the one its usable size serves
        let class = class_of_usable(usable(a));
        assert!(class_size(class) >= 48);
        // SAFETY: `a` is live and not used again.
        unsafe { c.free(a) };
        assert_eq!(c.cached(), class_size(class));
        // the smallest request of that class gets the same block back
        let b = c.alloc(class_size(class) - GRANULE + 1);
        assert_eq!(a, b);
        assert_eq!(c.cached(), 0);
        // SAFETY: `b` is live.
        unsafe { c.free(b) };
        c.release();
        assert_eq!(c.cached(), 0);
    }

    #[test]
    fn foreign_blocks() {
        let mut c = SmallBlocks::new();
        // a block of the plain allocator, of a size no class has
        // SAFETY: malloc has no preconditions.
        let p = unsafe { libc::malloc(21) }.cast::<u8>();
        fill(p, 21, 7);
        // SAFETY: `p` is live, 21 bytes initialized.
        let q = unsafe { c.realloc(p, 21, 300) };
        assert!(check(q, 21, 7));
        // SAFETY: `q` is live.
        unsafe { c.free(q) };
        // a large block stays with malloc
        // SAFETY: malloc has no preconditions.
        let big = unsafe { libc::malloc(1 << 16) }.cast::<u8>();
        let before = c.cached();
        // SAFETY: `big` is live.
        unsafe { c.free(big) };
        assert_eq!(c.cached(), before);
    }

    #[test]
    fn never_fails_to_shrink_and_moves_big_blocks_down() {
        let mut c = SmallBlocks::new();
        let p = c.alloc(100_000);
        fill(p, 100_000, 3);
        // SAFETY: `p` is live with 100 000 initialized bytes.
        let q = unsafe { c.realloc(p, 100_000, 64) };
        assert!(!q.is_null());
        assert!(check(q, 64, 3));
        assert!(usable(q) <= SMALL_USABLE);
        // SAFETY: `q` is live.
        unsafe { c.free(q) };
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Free(usize),
        Realloc(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let size = prop_oneof![1usize..=64, 1usize..=MAX_SMALL + 64, 1usize..=5000];
        prop_oneof![
            size.clone().prop_map(Op::Alloc),
            any::<usize>().prop_map(Op::Free),
            (any::<usize>(), size).prop_map(|(i, n)| Op::Realloc(i, n)),
        ]
    }

    proptest! {
        // Any sequence of operations keeps every live block's contents and never hands out
        // a block twice.
        #[test]
        fn contents_survive(ops in proptest::collection::vec(op(), 1..300)) {
            let mut c = SmallBlocks::new();
            let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
            for (n, o) in ops.into_iter().enumerate() {
                let seed = n as u8;
                match o {
                    Op::Alloc(size) => {
                        let p = c.alloc(size);
                        prop_assert!(!p.is_null());
                        prop_assert!(live.iter().all(|b| b.0 != p));
                        fill(p, size, seed);
                        live.push((p, size, seed));
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (p, size, s) = live.swap_remove(i % live.len());
                        prop_assert!(check(p, size, s));
                        // SAFETY: `p` is live and dropped from `live`.
                        unsafe { c.free(p) };
                    }
                    Op::Realloc(i, new) if !live.is_empty() => {
                        let k = i % live.len();
                        let (p, old, s) = live[k];
                        // SAFETY: `p` is live with `old` initialized bytes.
                        let q = unsafe { c.realloc(p, old, new) };
                        prop_assert!(!q.is_null());
                        prop_assert!(check(q, old.min(new), s));
                        fill(q, new, seed);
                        live[k] = (q, new, seed);
                    }
                    _ => {}
                }
                prop_assert!(c.cached() <= CACHE_LIMIT);
            }
            for (p, size, s) in live {
                prop_assert!(check(p, size, s));
                // SAFETY: `p` is live.
                unsafe { c.free(p) };
            }
        }
    }
}
