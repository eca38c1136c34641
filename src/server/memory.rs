//! memory_limit accounting: bytes allocated by a worker's Lua state. Pure bookkeeping; the
//! allocator hook that calls it is in `src/lua/memory.rs`.

/// Running total and limit (0 = unlimited) of a Lua state's allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub used: usize,
    pub limit: usize,
}

impl Budget {
    /// Whether a block may change from `old` to `new` bytes. Shrinking is always allowed:
    /// Lua assumes that an allocator never fails to shrink.
    pub fn admits(&self, old: usize, new: usize) -> bool {
        new <= old || self.limit == 0 || self.used.saturating_add(new - old) <= self.limit
    }

    /// Records a completed reallocation from `old` to `new` bytes.
    pub fn record(&mut self, old: usize, new: usize) {
        self.used = self.used.saturating_sub(old).saturating_add(new);
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn admits_and_records() {
        let mut b = Budget {
            used: 900,
            limit: 1000,
        };
        assert!(b.admits(0, 100));
        assert!(!b.admits(0, 101));
        assert!(b.admits(50, 150));
        assert!(!b.admits(50, 151));
        assert!(b.admits(500, 0)); // frees and shrinks always succeed
        b.record(0, 100);
        assert_eq!(b.used, 1000);
        b.record(100, 0);
        assert_eq!(b.used, 900);
        let unlimited = Budget {
            used: usize::MAX - 1,
            limit: 0,
        };
        assert!(unlimited.admits(0, 1 << 40));
    }
}
