//! Overload, as a classic worker sees it while it waits for a request on its connection:
//! the pool is *overloaded* when no worker is idle or starting, no more may be forked
//! (`max_fork`), and a connection waits in a listener's backlog. Then the HTTP driver gives
//! up what holds a worker for nothing (see `http::conn::Connection::shed`): an idle
//! keep-alive connection, a new connection that sends nothing, a head that does not come.
//!
//! The worker installs its gauge once it is ready (classic pools only: a concurrent worker
//! does not run out of processes in this way); the driver finds it with [`current`].

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::io::sys;
use crate::server::board::Board;

/// How long one worker's turn to shed lasts at most (it normally ends sooner, when the
/// worker is idle again and takes the waiting connection).
const SHEDDING_TURN_MS: u64 = 200;

#[derive(Debug)]
pub struct Gauge {
    board: Rc<Board>,
    pool: usize,
    max_fork: u32,
    /// The pool's listeners, as this worker holds them.
    listeners: RefCell<Vec<RawFd>>,
    /// This worker holds the pool's turn to shed.
    claimed: Cell<bool>,
}

thread_local! {
    static GAUGE: RefCell<Option<Rc<Gauge>>> = const { RefCell::new(None) };
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this process has a gauge (cheaper than [`current`]).
pub fn installed() -> bool {
    INSTALLED.with(Cell::get)
}

/// The gauge of this worker, if it is a classic worker of a server.
pub fn current() -> Option<Rc<Gauge>> {
    GAUGE.with(|g| g.borrow().clone())
}

/// Installs (or with `None` removes) this process's gauge.
pub fn install(g: Option<Rc<Gauge>>) {
    INSTALLED.with(|on| on.set(g.is_some()));
    GAUGE.with(|cell| *cell.borrow_mut() = g);
}

impl Gauge {
    pub fn new(board: Rc<Board>, pool: usize, max_fork: u32, listeners: Vec<RawFd>) -> Gauge {
        Gauge {
            board,
            pool,
            max_fork,
            listeners: RefCell::new(listeners),
            claimed: Cell::new(false),
        }
    }

    /// Every worker busy and no more may be forked (cheap: one word, then the slots up to
    /// the first spare one).
    pub fn full(&self) -> bool {
        self.board.total(self.pool) >= self.max_fork && !self.board.has_spare(self.pool)
    }

    /// The descriptors of the listeners, for a wait that watches them too.
    pub fn listeners(&self) -> Vec<RawFd> {
        self.listeners.borrow().clone()
    }

    /// Takes the pool's turn to shed an idle keep-alive connection: false when another
    /// worker has it.
    pub fn claim(&self) -> bool {
        let ok = self
            .board
            .claim_shedding(self.pool, sys::monotonic_ms(), SHEDDING_TURN_MS);
        if ok {
            self.claimed.set(true);
        }
        ok
    }

    /// The worker is idle again (it will take the waiting connection): its turn ends.
    pub fn idle_again(&self) {
        if self.claimed.replace(false) {
            self.board.end_shedding(self.pool);
        }
    }

    /// The worker closed this listener (graceful shutdown).
    pub fn forget(&self, fd: RawFd) {
        self.listeners.borrow_mut().retain(|&l| l != fd);
    }
}
