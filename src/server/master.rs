//! The master process: owns the listeners, forks workers, and from then on only manages the
//! pools (counts, delays, timed jobs, signals, logging). It never runs a handler and never
//! blocks on a client: workers accept on the inherited listeners themselves, take due
//! interval/main jobs from their pool's shared queue (see `control.rs`), and keep their
//! state on the scoreboard (see `board.rs`), so a connection costs the master nothing.
//!
//! The loop: drain queued signals -> reap workers -> queue due jobs -> apply the pool policy
//! (fork / stop an idle worker) -> `poll(2)` on the signal pipe, the workers' control sockets
//! and stderr pipes, and the listeners of pools that have no spare worker but may fork one.
//!
//! `run` returns in the master when the server stops (`Role::Exit`), and in each forked
//! worker right after the fork (`Role::Worker`), so that the worker continues in Lua.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::io::net::Listener;
use crate::io::sys;
use crate::server::board::{self, Board, JobState, Limits, Slot};
use crate::server::control::{self, Job, Received, Report, MAX_MESSAGE};
use crate::server::log::Logger;
use crate::server::pool::{Action, Counts, Pool, PoolConfig};
use crate::server::record::Record;
use crate::server::signals::{self, SignalPipe};
use crate::server::spawn::{self, Forked};
use crate::server::timed::{Timed, TimedKind, TimedState};

/// One `listen{}` call.
#[derive(Debug)]
pub struct PoolSpec {
    pub config: PoolConfig,
    /// Listening sockets (local ones have their socket file removed at shutdown).
    pub listeners: Vec<Listener>,
    /// Interval and main listeners, in the order of the job indices the workers receive.
    pub timed: Vec<TimedKind>,
}

/// What a forked worker takes along.
#[derive(Debug)]
pub struct WorkerStart {
    /// 0-based pool index.
    pub pool: usize,
    /// The worker's end of its private control pair.
    pub control: OwnedFd,
    /// The workers' end of the pool's job queue (None: the pool has no timed listeners).
    pub queue: Option<OwnedFd>,
    pub listeners: Vec<Listener>,
    pub master_pid: i32,
    pub board: Rc<Board>,
    /// This worker's slot on the board (in its pool's part).
    pub slot: usize,
    pub limits: Limits,
}

pub enum Role {
    Worker(WorkerStart),
    Exit(i32),
}

/// Exit code of the master after a shutdown (listen.md §1).
pub const EXIT_OK: i32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM: no new connections; busy workers finish.
    Graceful,
    /// SIGINT/SIGHUP: workers are killed.
    Fast,
}

struct PoolState {
    policy: Pool,
    listeners: Vec<Listener>,
    timed: Vec<Timed>,
    /// The job queue: (master end, workers' end), when the pool has timed listeners.
    queue: Option<(OwnedFd, OwnedFd)>,
    /// The master saw a connection waiting while no worker was spare.
    pending: bool,
    /// Counts last logged with `-s`.
    logged: Counts,
}

struct Master<'a> {
    pools: Vec<PoolState>,
    workers: Vec<Record>,
    board: Rc<Board>,
    signals: SignalPipe,
    log: &'a mut Logger,
    start: Instant,
    phase: Phase,
    pid: i32,
}

/// After a worker of pool `p` died: a job message it received before it could claim the
/// job is gone from the queue, and the job would stay queued for ever. When fewer messages
/// wait in the queue than jobs are marked queued, every queued job is sent again; the
/// claim on the board makes the extra copies harmless (a worker that finds its job already
/// taken drops the message).
fn requeue_lost_jobs(pool: &PoolState, p: usize, board: &Board, log: &mut Logger) {
    let Some((master_end, workers_end)) = &pool.queue else {
        return;
    };
    let queued: Vec<usize> = (0..pool.timed.len())
        .filter(|&j| board.job(p, j) == JobState::Queued)
        .collect();
    let waiting = match sys::queued_bytes(workers_end.as_fd()) {
        Ok(bytes) => bytes / Job(0).encode().1,
        Err(_) => return,
    };
    if waiting >= queued.len() {
        return;
    }
    let mut sent = Vec::new();
    for j in queued {
        if control::send(master_end, Job(j as u32).encode()).is_ok() {
            sent.push(format!("#{}", j + 1));
        }
    }
    if sent.is_empty() {
        return; // a full queue: the jobs stay queued, and messages are waiting anyway
    }
    log.log(&format!(
        "A worker of pool #{} ended after it received a job and before it claimed it: \
         job {} queued again",
        p + 1,
        sent.join(", ")
    ));
}

/// Runs the server until it stops (master) or until this process became a worker.
pub fn run(pools: Vec<PoolSpec>, log: &mut Logger) -> io::Result<Role> {
    let mut states = Vec::with_capacity(pools.len());
    let mut slots = Vec::with_capacity(pools.len());
    for p in pools {
        let mut config = p.config;
        let only_main = p.listeners.is_empty() && p.timed.iter().all(|t| *t == TimedKind::Main);
        if only_main {
            // Nothing but main jobs: fork exactly when one is queued, keep no spares.
            config.pre_fork = 0;
            config.min_fork = 0;
        }
        let queue = if p.timed.is_empty() {
            None
        } else {
            Some(control::seqpacket_pair()?)
        };
        slots.push((config.max_fork as usize + board::SLACK, p.timed.len()));
        states.push(PoolState {
            policy: Pool::new(config),
            listeners: p.listeners,
            timed: p.timed.into_iter().map(Timed::new).collect(),
            queue,
            pending: false,
            logged: Counts::default(),
        });
    }
    let mut m = Master {
        pools: states,
        workers: Vec::new(),
        board: Rc::new(Board::new(&slots)?),
        signals: SignalPipe::install()?,
        log,
        start: Instant::now(),
        phase: Phase::Running,
        pid: sys::getpid(),
    };
    let role = m.run_loop();
    if !matches!(role, Ok(Role::Worker(_))) {
        m.close_listeners();
        if role.is_err() {
            // An internal error: no worker may outlive the master.
            for w in &m.workers {
                // (the pid is our unreaped child, so it cannot have been reused)
                let _ = sys::kill(w.pid, libc::SIGKILL);
            }
            for w in &m.workers {
                reap_one(w.pid);
            }
        }
        m.signals.restore();
    }
    role
}

/// Waits for one specific child (blocking).
fn reap_one(pid: i32) {
    let _ = sys::waitpid(pid);
}

impl Master<'_> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn run_loop(&mut self) -> io::Result<Role> {
        loop {
            self.handle_signals();
            self.reap();
            if self.phase != Phase::Running {
                if self.workers.is_empty() {
                    self.log.log("Shutdown complete");
                    return Ok(Role::Exit(EXIT_OK));
                }
            } else {
                self.queue_due_jobs();
                if let Some(start) = self.manage_pools() {
                    return Ok(Role::Worker(start));
                }
            }
            self.log_counts();
            let timeout = self.next_timeout();
            self.publish();
            self.wait(timeout)?;
        }
    }

    fn handle_signals(&mut self) {
        for sig in self.signals.drain() {
            match sig {
                libc::SIGTERM if self.phase == Phase::Running => {
                    self.log.log("Received SIGTERM: graceful shutdown");
                    self.begin_shutdown(Phase::Graceful);
                }
                libc::SIGINT | libc::SIGHUP if self.phase != Phase::Fast => {
                    self.log.log(&format!(
                        "Received {}: fast shutdown",
                        signals::signal_name(sig)
                    ));
                    self.begin_shutdown(Phase::Fast);
                }
                _ => {}
            }
        }
    }

    fn begin_shutdown(&mut self, phase: Phase) {
        self.phase = phase;
        self.close_listeners();
        let sig = if phase == Phase::Fast {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        for w in &mut self.workers {
            w.stopping = true;
            // (the pid is our unreaped child, so it cannot have been reused)
            let _ = sys::kill(w.pid, sig);
        }
        if !self.workers.is_empty() {
            self.log.log(&format!(
                "Waiting for {} worker process(es) to exit",
                self.workers.len()
            ));
        }
    }

    /// Stops listening everywhere: `shutdown(2)` takes the socket out of the listening state
    /// in every process that shares it (busy workers still hold copies), then the master's
    /// copy is closed and socket files are removed.
    fn close_listeners(&mut self) {
        for pool in &mut self.pools {
            for l in pool.listeners.drain(..) {
                if let Some(fd) = l.fd() {
                    let _ = sys::shutdown(fd, libc::SHUT_RDWR);
                }
                if let Some(path) = l.path() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Collects every exited child (also unknown ones) and logs why it ended.
    fn reap(&mut self) {
        loop {
            // None: none exited; an error: ECHILD (no children left)
            let Ok(Some(sys::Ended { pid, status, usage })) = sys::reap_any() else {
                return;
            };
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            // Messages it sent before dying still count (e.g. that it took a job).
            self.read_control(pid);
            let mut w = self.workers.swap_remove(i);
            w.log_end(self.log, status, &usage);
            let now = self.now();
            let state = self.board.get(w.pool, w.slot);
            self.board.set(w.pool, w.slot, Slot::Free);
            let pool = &mut self.pools[w.pool];
            if state == Slot::Starting && !w.stopping {
                // Ended in prepare (an error, os.exit, a crash): do not fork in a tight loop.
                pool.policy.fork_failed(now);
            }
            // The job it held (claimed on the board, whether or not its Took report came
            // before it died) ended with it.
            for j in 0..pool.timed.len() {
                if self.board.job(w.pool, j) == JobState::Taken(w.slot) {
                    pool.timed[j].ended(now);
                    self.board.set_job(w.pool, j, JobState::Idle);
                    w.main |= pool.timed[j].is_main();
                }
            }
            if self.phase == Phase::Running {
                requeue_lost_jobs(pool, w.pool, &self.board, self.log);
            }
            if w.main && self.phase == Phase::Running {
                self.log.log("Main handler finished: graceful shutdown");
                self.begin_shutdown(Phase::Graceful);
            }
        }
    }

    fn counts(&self, pool: usize) -> Counts {
        let mut c = Counts::default();
        for w in self
            .workers
            .iter()
            .filter(|w| w.pool == pool && !w.stopping)
        {
            match self.board.get(pool, w.slot) {
                Slot::Starting | Slot::Free => c.starting += 1,
                Slot::Idle => c.idle += 1,
                Slot::Busy => c.busy += 1,
                Slot::Leaving => {}
            }
        }
        c
    }

    /// Whether work waits in pool `p` that no spare worker is known to take.
    fn work_waiting(&self, p: usize) -> bool {
        let pool = &self.pools[p];
        pool.pending || pool.timed.iter().any(|t| t.state == TimedState::Queued)
    }

    /// Puts due interval and main jobs into their pool's queue.
    fn queue_due_jobs(&mut self) {
        let now = self.now();
        for (p, pool) in self.pools.iter_mut().enumerate() {
            let Some((queue, _)) = &pool.queue else {
                continue;
            };
            for (j, t) in pool.timed.iter_mut().enumerate() {
                if !t.due(now) {
                    continue;
                }
                // marked first: the worker that receives it claims it on the board
                self.board.set_job(p, j, JobState::Queued);
                match control::send(queue, Job(j as u32).encode()) {
                    Ok(()) => {
                        t.state = TimedState::Queued;
                        self.log
                            .debug(&format!("Queued job #{} of pool #{}", j + 1, p + 1));
                    }
                    Err(e) => {
                        self.board.set_job(p, j, JobState::Idle);
                        // Only a full queue could do this; it is retried on the next round.
                        self.log.log(&format!(
                            "Could not queue job #{} of pool #{}: {}",
                            j + 1,
                            p + 1,
                            sys::error_text(&e)
                        ));
                    }
                }
            }
        }
    }

    /// Applies the pool policy; returns `Some` in a freshly forked worker.
    fn manage_pools(&mut self) -> Option<WorkerStart> {
        for p in 0..self.pools.len() {
            loop {
                let now = self.now();
                let counts = self.counts(p);
                let waiting = self.work_waiting(p);
                match self.pools[p].policy.decide(counts, waiting, now) {
                    Action::Fork => {
                        self.pools[p].policy.forked(now);
                        self.pools[p].pending = false;
                        if let Some(start) = self.fork_worker(p) {
                            return Some(start);
                        }
                    }
                    Action::StopIdle => {
                        self.pools[p].policy.stopped_idle(now);
                        // Never the main worker: its exit would stop the whole server.
                        let board = &self.board;
                        if let Some(w) = self.workers.iter_mut().find(|w| {
                            w.pool == p
                                && !w.stopping
                                && !w.main
                                && board.get(p, w.slot) == Slot::Idle
                        }) {
                            w.stopping = true;
                            // (our own unreaped child)
                            let _ = sys::kill(w.pid, libc::SIGTERM);
                            self.log.stats(&format!(
                                "Stopping idle worker process (PID {}) of pool #{}",
                                w.pid,
                                p + 1
                            ));
                        }
                    }
                    Action::Wait(_) => break,
                }
            }
            // A stale sighting must not fork later; the listener is polled again if needed.
            self.pools[p].pending = false;
        }
        None
    }

    /// What workers compare with before waking the master: the counted workers, and whether
    /// an exit_delay is already running. Published right before waiting, from the state the
    /// wait is based on.
    fn publish(&self) {
        for p in 0..self.pools.len() {
            let total = self.counts(p).total();
            let tracking = self.pools[p].policy.tracking_surplus();
            self.board.publish(p, total, tracking);
        }
    }

    /// Forks a worker for pool `p`. Returns `Some` in the child. Failures are logged and
    /// pause forking for `fork_error_delay`.
    fn fork_worker(&mut self, p: usize) -> Option<WorkerStart> {
        // Slots of live workers (also those still finishing after being told to stop).
        let Some(slot) = (0..self.board.slots(p))
            .find(|&i| !self.workers.iter().any(|w| w.pool == p && w.slot == i))
        else {
            let e = io::Error::other("every worker slot is in use");
            self.fork_failed(p, &e);
            return None;
        };
        self.board.set(p, slot, Slot::Starting);
        match spawn::fork(&mut self.signals, self.pid) {
            Err(e) => {
                self.board.set(p, slot, Slot::Free);
                self.fork_failed(p, &e);
                None
            }
            Ok(Forked::Child { control }) => {
                let pool = &mut self.pools[p];
                let config = &pool.policy.config;
                let limits = Limits {
                    pre_fork: config.pre_fork,
                    min_fork: config.min_fork,
                    max_fork: config.max_fork,
                };
                Some(WorkerStart {
                    pool: p,
                    control,
                    queue: pool.queue.take().map(|(_, workers)| workers),
                    listeners: pool.listeners.drain(..).collect(),
                    master_pid: self.pid,
                    board: Rc::clone(&self.board),
                    slot,
                    limits,
                })
            }
            Ok(Forked::Parent {
                pid,
                control,
                stderr,
            }) => {
                let text = format!("Created worker process (PID {pid}) in pool #{}", p + 1);
                self.log.stats(&text);
                self.workers
                    .push(Record::new(pid, p, slot, control, stderr));
                None
            }
        }
    }

    fn fork_failed(&mut self, p: usize, e: &io::Error) {
        self.log.log(&format!(
            "Could not fork a worker process for pool #{}: {}",
            p + 1,
            sys::error_text(e)
        ));
        let now = self.now();
        self.pools[p].policy.fork_failed(now);
    }

    /// `-s`: one line per pool whenever its counts changed.
    fn log_counts(&mut self) {
        if !self.log.stats || self.phase != Phase::Running {
            return;
        }
        for p in 0..self.pools.len() {
            let c = self.counts(p);
            if c != self.pools[p].logged {
                self.pools[p].logged = c;
                self.log.log(&format!(
                    "Pool #{}: {} worker(s): {} starting, {} idle, {} busy",
                    p + 1,
                    c.total(),
                    c.starting,
                    c.idle,
                    c.busy
                ));
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        if self.phase != Phase::Running {
            return None;
        }
        let now = self.now();
        let mut t: Option<Duration> = None;
        for p in 0..self.pools.len() {
            let counts = self.counts(p);
            let waiting = self.work_waiting(p);
            let pool = &mut self.pools[p];
            let mut waits = pool
                .timed
                .iter()
                .filter_map(|x| x.wait_time(now))
                .collect::<Vec<_>>();
            if let Action::Wait(Some(d)) = pool.policy.decide(counts, waiting, now) {
                waits.push(d);
            }
            for d in waits {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        }
        t
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        #[derive(Clone, Copy)]
        enum Src {
            Signals,
            Control(i32),
            Stderr(i32),
            Listener(usize),
        }
        let entry = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = vec![entry(self.signals.read_fd())];
        let mut src = vec![Src::Signals];
        for w in &self.workers {
            if let Some(c) = &w.control {
                fds.push(entry(c.as_raw_fd()));
                src.push(Src::Control(w.pid));
            }
            if let Some(e) = &w.stderr {
                fds.push(entry(e.as_raw_fd()));
                src.push(Src::Stderr(w.pid));
            }
        }
        if self.phase == Phase::Running {
            let now = self.now();
            for p in 0..self.pools.len() {
                let c = self.counts(p);
                let pool = &self.pools[p];
                if c.spare() == 0 && pool.policy.can_fork(c, now) {
                    for fd in pool.listeners.iter().filter_map(|l| l.fd()) {
                        fds.push(entry(fd.as_raw_fd()));
                        src.push(Src::Listener(p));
                    }
                }
            }
        }
        // a signal ends the wait: the loop reads the signal pipe next
        match sys::poll(&mut fds, sys::timeout_ms(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        for (pfd, s) in fds.iter().zip(src) {
            if pfd.revents == 0 {
                continue;
            }
            match s {
                Src::Signals => {}
                Src::Control(pid) => self.read_control(pid),
                Src::Stderr(pid) => self.read_stderr(pid),
                Src::Listener(p) => self.pools[p].pending = true,
            }
        }
        Ok(())
    }

    /// Applies every report a worker has sent.
    fn read_control(&mut self, pid: i32) {
        let now = self.now();
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        let mut buf = [0u8; MAX_MESSAGE + 1];
        while let Some(control) = &w.control {
            let report = match control::recv(control, &mut buf) {
                Ok(Received::Message(m)) => Report::decode(m),
                Ok(Received::Nothing) => return,
                Ok(Received::Closed) | Err(_) => {
                    // the worker is exiting; stop polling its end
                    w.control = None;
                    return;
                }
            };
            self.log.debug(&match report {
                Some(r) => format!("Worker process (PID {pid}) of pool #{}: {r}", w.pool + 1),
                None => format!("Invalid control message from worker process (PID {pid})"),
            });
            let timed = &mut self.pools[w.pool].timed;
            match report {
                // the loop looks at the scoreboard next
                Some(Report::Wake) => {}
                Some(Report::Took(j)) => {
                    if let Some(t) = timed.get_mut(j as usize) {
                        t.state = TimedState::Running;
                        w.main |= t.is_main();
                        w.job = Some(j as usize);
                    }
                }
                Some(Report::Done) => {
                    if let Some(j) = w.job.take() {
                        timed[j].ended(now);
                        self.board.set_job(w.pool, j, JobState::Idle);
                    }
                }
                // it exits soon: a spare worker must be forked now if one is needed
                Some(Report::Leaving) => w.stopping = true,
                None => {}
            }
        }
    }

    /// Logs the complete lines a worker wrote to stderr.
    fn read_stderr(&mut self, pid: i32) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
            w.read_stderr(self.log);
        }
    }
}
