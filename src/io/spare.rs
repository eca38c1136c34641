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

/// The spare vector that best fits a need of `min` elements: the smallest holding at least
/// `min`, else the largest (the caller grows it). Pools that hold vectors of several uses
/// (a response's head and output buffers, a request's head copy) would otherwise hand the
/// small one to the large use and grow it for every connection.
pub fn take_fit<T>(pool: &'static LocalKey<Spares<T>>, min: usize) -> Option<Vec<T>> {
    pool.try_with(|p| {
        let mut p = p.borrow_mut();
        let fits = |v: &Vec<T>| v.capacity() >= min;
        let best = (0..p.len())
            .filter(|&i| fits(&p[i]))
            .min_by_key(|&i| p[i].capacity())
            .or_else(|| (0..p.len()).max_by_key(|&i| p[i].capacity()))?;
        Some(p.swap_remove(best))
    })
    .ok()
    .flatten()
}

/// Keeps `v` (emptied) for a later `take` while the pool holds fewer than `keep`; a full
/// pool keeps it in place of its smallest vector if that is smaller (small vectors nobody
/// asks for must not crowd out the useful ones), else frees it.
pub fn give<T>(pool: &'static LocalKey<Spares<T>>, mut v: Vec<T>, keep: usize) {
    v.clear();
    // `try_with`: during thread exit the pool may be gone already; then just free.
    let _ = pool.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < keep {
            p.push(v);
        } else if let Some(i) = (0..p.len()).min_by_key(|&i| p[i].capacity()) {
            if p[i].capacity() < v.capacity() {
                p[i] = v;
            }
        }
    });
}
