//! The scoreboard: one shared memory page set (an anonymous MAP_SHARED mapping made by the
//! master before the first fork) where every worker keeps its state in its own slot, so that
//! workers need not tell the master about each connection. The master reads the slots when
//! it applies the pool policy; a worker wakes the master (a control message) only when a
//! threshold that matters is crossed: its pool has too few spare workers while it may still
//! grow, or surplus idle workers appeared that the master does not know of.
//!
//! Each pool also has one word per timed job (interval or main listener): the master marks
//! a job queued before it puts the job into the pool's queue, and the worker that receives
//! it claims it with a compare-and-swap. A job is therefore run only by the worker whose
//! claim succeeded (a duplicate message is ignored), and a worker that dies after receiving
//! a job leaves a word that tells the master what happened (see `master.rs`, `reap`).
//!
//! The mapping itself is an `io::sys::SharedMemory`; all the unsafe code that reads it is
//! here, and the rest of the server sees safe methods.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};

use crate::io::sys::SharedMemory;

/// The state of one worker slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Slot {
    Free = 0,
    /// Forked, running `prepare`.
    Starting = 1,
    Idle = 2,
    Busy = 3,
    /// Takes no more jobs; runs `finish` and exits.
    Leaving = 4,
}

impl Slot {
    fn from_u8(v: u8) -> Slot {
        match v {
            1 => Slot::Starting,
            2 => Slot::Idle,
            3 => Slot::Busy,
            4 => Slot::Leaving,
            _ => Slot::Free,
        }
    }
}

/// Slots beyond `max_fork` per pool, for workers that were told to stop and are still
/// finishing their last connection.
pub const SLACK: usize = 64;

/// Per-pool words the master publishes for the workers.
#[repr(C)]
struct Header {
    /// Workers the pool policy counts (not stopping or leaving).
    total: AtomicU32,
    /// 1 while the master knows of surplus idle workers (and has a timer for them).
    surplus_known: AtomicU32,
    /// Until when (`sys::monotonic_ms`) one worker of an overloaded pool is giving up an
    /// idle keep-alive connection for a waiting one (see `pressure.rs`); 0: none is.
    shedding_until: AtomicU64,
}

/// The state of one timed job, as the board holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Not queued (waiting for its time, or spent).
    Idle,
    /// Put into the pool's queue; no worker claimed it yet.
    Queued,
    /// Claimed by the worker in this slot.
    Taken(usize),
}

const JOB_IDLE: u32 = 0;
const JOB_QUEUED: u32 = 1;
/// `JOB_TAKEN + slot`: claimed by that slot's worker.
const JOB_TAKEN: u32 = 2;

impl JobState {
    fn word(self) -> u32 {
        match self {
            JobState::Idle => JOB_IDLE,
            JobState::Queued => JOB_QUEUED,
            JobState::Taken(slot) => JOB_TAKEN + slot as u32,
        }
    }

    fn from_word(w: u32) -> JobState {
        match w {
            JOB_IDLE => JobState::Idle,
            JOB_QUEUED => JobState::Queued,
            w => JobState::Taken((w - JOB_TAKEN) as usize),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    header: usize,
    slots: usize,
    len: usize,
    /// Offset of the job words (4-byte aligned) and their number.
    jobs: usize,
    job_count: usize,
}

/// The shared mapping; both the master and each worker hold it (unmapped on drop).
#[derive(Debug)]
pub struct Board {
    memory: SharedMemory,
    pools: Vec<Layout>,
}

impl Board {
    /// A board with `pools[p].0` worker slots and `pools[p].1` job words for pool `p`, all
    /// free and idle.
    pub fn new(pools_sizes: &[(usize, usize)]) -> io::Result<Board> {
        let mut pools = Vec::with_capacity(pools_sizes.len());
        let mut off = 0;
        for &(len, job_count) in pools_sizes {
            let header = off;
            off += std::mem::size_of::<Header>();
            let slots = off;
            off += len;
            off = off.next_multiple_of(std::mem::align_of::<AtomicU32>());
            let jobs = off;
            off += job_count * std::mem::size_of::<AtomicU32>();
            off = off.next_multiple_of(std::mem::align_of::<Header>());
            pools.push(Layout {
                header,
                slots,
                len,
                jobs,
                job_count,
            });
        }
        let memory = SharedMemory::new(off.max(1))?;
        // Anonymous mappings are zero-filled: every slot is Free, every header 0.
        Ok(Board { memory, pools })
    }

    fn header(&self, pool: usize) -> &Header {
        // SAFETY: the offset lies inside the mapping, is aligned for Header (offsets are
        // rounded up to its alignment) and the memory lives as long as `self`; Header
        // holds only atomics, so shared access from several processes is sound.
        unsafe {
            &*self
                .memory
                .as_ptr()
                .add(self.pools[pool].header)
                .cast::<Header>()
        }
    }

    fn slot_ref(&self, pool: usize, slot: usize) -> &AtomicU8 {
        let l = self.pools[pool];
        assert!(slot < l.len, "slot {slot} out of range");
        // SAFETY: in bounds (checked above), AtomicU8 has alignment 1, the mapping lives as
        // long as `self`, and atomics may be shared between processes.
        unsafe { &*self.memory.as_ptr().add(l.slots + slot).cast::<AtomicU8>() }
    }

    fn job_ref(&self, pool: usize, job: usize) -> Option<&AtomicU32> {
        let l = self.pools[pool];
        if job >= l.job_count {
            return None;
        }
        // SAFETY: in bounds (checked above), 4-byte aligned (the offset is rounded up, the
        // mapping is page-aligned), the mapping lives as long as `self`, and atomics may be
        // shared between processes.
        Some(unsafe {
            &*self
                .memory
                .as_ptr()
                .add(l.jobs + job * 4)
                .cast::<AtomicU32>()
        })
    }

    /// The state of job `job` of a pool (`Idle` for an index the pool does not have).
    pub fn job(&self, pool: usize, job: usize) -> JobState {
        self.job_ref(pool, job)
            .map_or(JobState::Idle, |w| JobState::from_word(w.load(SeqCst)))
    }

    /// The master's transitions: queued before the job is sent, idle once it ended.
    pub fn set_job(&self, pool: usize, job: usize, state: JobState) {
        if let Some(w) = self.job_ref(pool, job) {
            w.store(state.word(), SeqCst);
        }
    }

    /// A worker's claim of a job it received: true if the job was queued and is now
    /// `Taken(slot)`; false for a duplicate or stale message (or an unknown index).
    pub fn take_job(&self, pool: usize, job: usize, slot: usize) -> bool {
        self.job_ref(pool, job).is_some_and(|w| {
            w.compare_exchange(JOB_QUEUED, JobState::Taken(slot).word(), SeqCst, SeqCst)
                .is_ok()
        })
    }

    /// Number of job words of a pool.
    pub fn jobs(&self, pool: usize) -> usize {
        self.pools[pool].job_count
    }

    /// Number of slots of a pool.
    pub fn slots(&self, pool: usize) -> usize {
        self.pools[pool].len
    }

    pub fn get(&self, pool: usize, slot: usize) -> Slot {
        Slot::from_u8(self.slot_ref(pool, slot).load(SeqCst))
    }

    pub fn set(&self, pool: usize, slot: usize, state: Slot) {
        self.slot_ref(pool, slot).store(state as u8, SeqCst);
    }

    /// (starting, idle) workers of a pool, from the slots.
    pub fn spare(&self, pool: usize) -> (u32, u32) {
        let (mut starting, mut idle) = (0, 0);
        for i in 0..self.pools[pool].len {
            match self.get(pool, i) {
                Slot::Starting => starting += 1,
                Slot::Idle => idle += 1,
                _ => {}
            }
        }
        (starting, idle)
    }

    pub fn publish(&self, pool: usize, total: u32, surplus_known: bool) {
        let h = self.header(pool);
        h.total.store(total, SeqCst);
        h.surplus_known.store(surplus_known as u32, SeqCst);
    }

    pub fn total(&self, pool: usize) -> u32 {
        self.header(pool).total.load(SeqCst)
    }

    pub fn surplus_known(&self, pool: usize) -> bool {
        self.header(pool).surplus_known.load(SeqCst) != 0
    }

    /// Whether the pool has a worker that is idle or starting (stops at the first).
    pub fn has_spare(&self, pool: usize) -> bool {
        (0..self.pools[pool].len).any(|i| matches!(self.get(pool, i), Slot::Idle | Slot::Starting))
    }

    /// Claims the pool's turn to shed a connection, for `ms` from `now_ms`: false while
    /// another worker's claim lasts. Released by `end_shedding` or when it expires (the
    /// claimant may die).
    pub fn claim_shedding(&self, pool: usize, now_ms: u64, ms: u64) -> bool {
        let w = &self.header(pool).shedding_until;
        let cur = w.load(SeqCst);
        cur <= now_ms && w.compare_exchange(cur, now_ms + ms, SeqCst, SeqCst).is_ok()
    }

    pub fn end_shedding(&self, pool: usize) {
        self.header(pool).shedding_until.store(0, SeqCst);
    }
}

/// The pool limits a worker needs to decide when to wake the master.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub pre_fork: u32,
    pub min_fork: u32,
    pub max_fork: u32,
}

impl Limits {
    /// After taking a job: the master may have to fork (too few spare workers left, and the
    /// pool may still grow).
    pub fn wake_after_taking(&self, board: &Board, pool: usize) -> bool {
        if board.total(pool) >= self.max_fork {
            return false;
        }
        let (starting, idle) = board.spare(pool);
        starting + idle < self.pre_fork.max(1)
    }

    /// After finishing a job: surplus idle workers the master should stop after exit_delay.
    pub fn wake_after_finishing(&self, board: &Board, pool: usize) -> bool {
        if board.total(pool) <= self.min_fork || board.surplus_known(pool) {
            return false;
        }
        board.spare(pool).1 > self.pre_fork
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sys;

    #[test]
    fn slots_start_free_and_keep_their_state() {
        let b = Board::new(&[(3, 0), (5, 2)]).unwrap();
        assert_eq!(b.slots(1), 5);
        for p in 0..2 {
            for s in 0..b.slots(p) {
                assert_eq!(b.get(p, s), Slot::Free);
            }
        }
        b.set(1, 4, Slot::Busy);
        b.set(0, 0, Slot::Idle);
        b.set(0, 2, Slot::Starting);
        assert_eq!(b.get(1, 4), Slot::Busy);
        assert_eq!(b.spare(0), (1, 1));
        assert_eq!(b.spare(1), (0, 0));
        b.publish(1, 7, true);
        assert_eq!((b.total(1), b.surplus_known(1)), (7, true));
        assert_eq!((b.total(0), b.surplus_known(0)), (0, false));
    }

    #[test]
    fn a_job_is_claimed_once_and_only_when_queued() {
        let b = Board::new(&[(3, 2), (1, 1)]).unwrap();
        assert_eq!(b.jobs(0), 2);
        assert_eq!(b.job(0, 1), JobState::Idle);
        assert!(!b.take_job(0, 1, 0), "an idle job cannot be claimed");
        b.set_job(0, 1, JobState::Queued);
        assert_eq!(b.job(0, 0), JobState::Idle); // the neighbour is untouched
        assert!(b.take_job(0, 1, 2));
        assert_eq!(b.job(0, 1), JobState::Taken(2));
        assert!(!b.take_job(0, 1, 1), "a duplicate message finds it taken");
        b.set_job(0, 1, JobState::Idle);
        assert!(!b.take_job(0, 1, 1));
        // out of range: nothing, no panic
        assert!(!b.take_job(0, 7, 0));
        assert_eq!(b.job(0, 7), JobState::Idle);
        b.set_job(0, 7, JobState::Queued);
        // pools do not share words
        b.set_job(1, 0, JobState::Queued);
        assert_eq!(b.job(0, 0), JobState::Idle);
        assert!(b.take_job(1, 0, 0));
        // a slot beyond the first few still round-trips
        b.set_job(0, 0, JobState::Taken(SLACK + 3));
        assert_eq!(b.job(0, 0), JobState::Taken(SLACK + 3));
    }

    #[test]
    fn a_forked_child_writes_where_the_parent_reads() {
        let b = Board::new(&[(2, 1)]).unwrap();
        // SAFETY: the test harness has threads, but the child only stores into the mapping
        // (an atomic store) and _exits, both async-signal-safe.
        match unsafe { sys::fork() }.unwrap() {
            sys::Fork::Child => {
                b.set(0, 1, Slot::Leaving);
                b.set_job(0, 0, JobState::Queued);
                let _ = b.take_job(0, 0, 1);
                // at once: no test harness code may run in the child
                sys::exit_now(0);
            }
            sys::Fork::Parent(pid) => {
                sys::waitpid(pid).unwrap();
            }
        }
        assert_eq!(b.get(0, 1), Slot::Leaving);
        assert_eq!(b.job(0, 0), JobState::Taken(1));
    }

    #[test]
    fn one_worker_at_a_time_sheds_until_its_claim_ends_or_expires() {
        let b = Board::new(&[(2, 0), (2, 0)]).unwrap();
        assert!(!b.has_spare(0));
        b.set(0, 1, Slot::Starting);
        assert!(b.has_spare(0) && !b.has_spare(1));
        assert!(b.claim_shedding(0, 1000, 200));
        assert!(!b.claim_shedding(0, 1100, 200), "held by the first");
        assert!(b.claim_shedding(1, 1100, 200), "pools do not share it");
        assert!(b.claim_shedding(0, 1200, 200), "expired");
        b.end_shedding(0);
        assert!(b.claim_shedding(0, 1201, 200));
    }

    #[test]
    fn wake_thresholds() {
        let b = Board::new(&[(4, 0)]).unwrap();
        let lim = Limits {
            pre_fork: 1,
            min_fork: 1,
            max_fork: 3,
        };
        b.set(0, 0, Slot::Busy);
        b.set(0, 1, Slot::Busy);
        b.publish(0, 2, false);
        assert!(lim.wake_after_taking(&b, 0)); // no spare, may grow
        b.publish(0, 3, false);
        assert!(!lim.wake_after_taking(&b, 0)); // at max_fork: nothing to do
        b.set(0, 2, Slot::Idle);
        assert!(!lim.wake_after_taking(&b, 0));
        b.set(0, 0, Slot::Idle);
        assert!(lim.wake_after_finishing(&b, 0)); // 2 idle > pre_fork 1, total 3 > min 1
        b.publish(0, 3, true);
        assert!(!lim.wake_after_finishing(&b, 0)); // the master knows already
    }
}
