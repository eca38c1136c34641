//! Per-thread pools of spare vectors: memory a finished connection gives back for the next
//! one, instead of a free now and a malloc soon after (see `buffer`'s read buffers and
//! `http::spare`). Each pool is a `thread_local!` of this type; the callers decide which
//! vectors are worth keeping.

use std::cell::RefCell;
use std::thread::LocalKey;

/// The vectors a pool holds.
pub type Spares<T> = RefCell<Vec<Vec<T>>>;

/// A spare vector (empty, with its old capacity), if the pool has one.
pub fn take<T>(pool: &'static LocalKey<Spares<T>>) -> Option<Vec<T>> {
    pool.try_with(|p| p.borrow_mut().pop()).ok().flatten()
}

/// Keeps `v` (emptied) for a later `take` while the pool holds fewer than `keep`; frees it
/// otherwise.
pub fn give<T>(pool: &'static LocalKey<Spares<T>>, mut v: Vec<T>, keep: usize) {
    v.clear();
    // `try_with`: during thread exit the pool may be gone already; then just free.
    let _ = pool.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < keep {
            p.push(v);
        }
    });
}
