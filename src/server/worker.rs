//! The worker side: wait for the next job (a due interval/main job from the pool's queue, or
//! a connection accepted on one of the pool's inherited listeners), keep this worker's slot
//! on the scoreboard up to date, and wake the master only when it has something to decide.
//! One job at a time; the Lua driver runs the handlers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::io::epoll::Epoll;
use crate::io::net::Listener;
use crate::io::signal;
use crate::io::Handle;
use crate::server::board::{Board, Limits, Slot};
use crate::server::control::{self, Job, Received, Report, MAX_MESSAGE};
use crate::server::master::WorkerStart;
use crate::server::pressure::{self, Gauge};

/// What the worker should do next.
#[derive(Debug)]
pub enum Next {
    Connection(Handle),
    /// Run the interval or main listener with this index.
    Timed(u32),
    Stop(StopReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM (graceful shutdown, or the master stopping a surplus worker).
    Terminated,
    /// Idle longer than `idle_timeout`.
    IdleTimeout,
    /// The master is gone.
    MasterGone,
}

impl StopReason {
    pub fn text(self) -> &'static str {
        match self {
            StopReason::Terminated => "terminated",
            StopReason::IdleTimeout => "idle timeout",
            StopReason::MasterGone => "master gone",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    None,
    Connection,
    Timed,
}

#[derive(Debug)]
pub struct Worker {
    pub pool: usize,
    control: OwnedFd,
    queue: Option<OwnedFd>,
    listeners: Vec<Listener>,
    idle_timeout: Option<Duration>,
    master_pid: i32,
    board: Rc<Board>,
    slot: usize,
    limits: Limits,
    current: Current,
    /// What an idle worker waits on, made on its first wait (after the fork).
    epoll: Option<Epoll>,
    /// The last wait ended because a listener became ready (see `next_job`).
    woken_for_listener: bool,
    /// Handlers this worker runs at once (`concurrency`; 1 in a classic pool).
    capacity: u32,
    /// Handlers running now, and whether one of them is a timed job (concurrent pools).
    running: u32,
    timed_running: bool,
    /// Whether the listeners are in the epoll set: a full concurrent worker takes them
    /// out, or each new connection would wake it for nothing.
    listening: bool,
    /// Accepting stopped until then: the process ran out of descriptors or memory (see
    /// `try_accept`).
    accept_paused: Option<Instant>,
    /// When such a pause was last logged.
    pause_logged: Option<Instant>,
    /// What the HTTP driver reads to see that the pool is overloaded (classic pools).
    gauge: Option<Rc<Gauge>>,
    /// The read end of the SIGTERM wake socket, in the epoll set (see `wait`).
    wake: Option<OwnedFd>,
    /// Whether `next_job` should ask if the master still lives before it waits: at first
    /// and after a wait that no listener ended (see `next_job`).
    check_master: bool,
}

/// How long a worker that could not accept (out of descriptors or memory) waits before it
/// tries again, unless a handler ends first and frees what it held.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Such pauses are logged at most this often.
const PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accept failures that say "not now" rather than "never": the connection stays queued.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Epoll tokens: the control socket, the job queue, and listeners by descriptor.
const TOKEN_CONTROL: u64 = 0;
const TOKEN_QUEUE: u64 = 1;
const TOKEN_LISTENER: u64 = 2;
/// Connections of a concurrent worker: this bit, and the descriptor below it.
const TOKEN_CONNECTION: u64 = 1 << 32;
/// The SIGTERM wake socket (above every listener's and connection's token).
const TOKEN_WAKE: u64 = 1 << 40;

impl Worker {
    pub fn new(start: WorkerStart, idle_timeout: Option<Duration>) -> Self {
        Worker {
            pool: start.pool,
            control: start.control,
            queue: start.queue,
            listeners: start.listeners,
            idle_timeout,
            master_pid: start.master_pid,
            board: start.board,
            slot: start.slot,
            limits: start.limits,
            current: Current::None,
            epoll: None,
            woken_for_listener: false,
            capacity: 1,
            running: 0,
            timed_running: false,
            listening: false,
            accept_paused: None,
            pause_logged: None,
            gauge: None,
            wake: None,
            check_master: true,
        }
    }

    /// Makes this a worker of a concurrent pool running up to `n` handlers at once.
    ///
    /// Such a worker holds a descriptor per connection, so it raises its soft limit of open
    /// descriptors to the hard limit (a classic worker keeps the limit it inherited).
    pub fn set_capacity(&mut self, n: u32) {
        self.capacity = n.max(1);
        if self.capacity > 1 {
            let _ = crate::io::sys::raise_descriptor_limit();
        }
    }

    /// Tells the master something. A vanished master is noticed by `next_job`.
    fn report(&self, r: Report) {
        let _ = control::send(&self.control, r.encode());
    }

    fn set_slot(&self, state: Slot) {
        self.board.set(self.pool, self.slot, state);
    }

    /// `prepare` is done: the worker is ready for jobs.
    pub fn ready(&mut self) {
        if self.capacity == 1 && self.gauge.is_none() {
            let fds = self
                .listeners
                .iter()
                .filter_map(|l| l.fd())
                .map(|f| f.as_raw_fd())
                .collect();
            let g = Rc::new(Gauge::new(
                self.board.clone(),
                self.pool,
                self.limits.max_fork,
                fds,
            ));
            pressure::install(Some(g.clone()));
            self.gauge = Some(g);
        }
        self.set_slot(Slot::Idle);
    }

    /// The job from the last `next_job` ended.
    pub fn job_done(&mut self) {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::None => return,
            Current::Timed => self.report(Report::Done),
            Current::Connection => {}
        }
        self.set_slot(Slot::Idle);
        if let Some(g) = &self.gauge {
            g.idle_again();
        }
        self.accept_paused = None;
        if self.limits.wake_after_finishing(&self.board, self.pool) {
            self.report(Report::Wake);
        }
    }

    /// This worker takes no more jobs (it runs `finish` and exits).
    pub fn leaving(&self) {
        self.set_slot(Slot::Leaving);
        self.report(Report::Leaving);
    }

    fn master_alive(&self) -> bool {
        crate::io::sys::getppid() == self.master_pid
    }

    /// Waits for the next job. Queued jobs come first; then the listeners are tried before
    /// waiting, so a pending connection is taken without a wait.
    ///
    /// A new connection wakes only one idle worker (`EPOLLEXCLUSIVE`), so the worker it woke
    /// must take it: accepting comes first after such a wake-up, even before a queued job
    /// (a queued job wakes every idle worker) or a SIGTERM that arrived meanwhile (the
    /// worker then stops at its next call).
    pub fn next_job(&mut self) -> io::Result<Next> {
        let deadline = self.idle_timeout.map(|d| Instant::now() + d);
        let mut buf = [0u8; MAX_MESSAGE + 1];
        loop {
            if std::mem::take(&mut self.woken_for_listener) {
                if let Some(next) = self.try_accept()? {
                    return Ok(next);
                }
            }
            if signal::sigterm_received() {
                return Ok(Next::Stop(StopReason::Terminated));
            }
            if let Some(q) = &self.queue {
                match control::recv(q, &mut buf)? {
                    Received::Message(m) => {
                        if let Some(Job(j)) = Job::decode(m) {
                            if self.claim(j) {
                                self.set_slot(Slot::Busy);
                                self.current = Current::Timed;
                                self.report(Report::Took(j));
                                return Ok(Next::Timed(j));
                            }
                            continue; // a copy of a job another worker has: look again
                        }
                    }
                    Received::Nothing => {}
                    Received::Closed => return Ok(Next::Stop(StopReason::MasterGone)),
                }
            }
            if let Some(next) = self.try_accept()? {
                return Ok(next);
            }
            // Nothing to do: before waiting, make sure there is still a master to wait for
            // (its death also sends SIGTERM, and closes the control socket, which wakes the
            // wait below). After a wait a listener ended, no need to ask again: the death
            // signal is armed and would have been seen (one system call per connection).
            if std::mem::take(&mut self.check_master) && !self.master_alive() {
                return Ok(Next::Stop(StopReason::MasterGone));
            }
            let remaining = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(Next::Stop(StopReason::IdleTimeout));
                    }
                    Some(d - now)
                }
            };
            self.wait(remaining)?;
        }
    }

    /// Claims job `j`, received from the pool's queue, on the board: false when the
    /// message was a copy of a job another worker claimed (see `board.rs`).
    fn claim(&mut self, j: u32) -> bool {
        die_here_for_a_test();
        self.board.take_job(self.pool, j as usize, self.slot)
    }

    /// Accepts a pending connection on one of the listeners, if there is one.
    fn try_accept(&mut self) -> io::Result<Option<Next>> {
        if let Some(until) = self.accept_paused {
            if Instant::now() < until {
                return Ok(None);
            }
            self.accept_paused = None;
        }
        let mut i = 0;
        while i < self.listeners.len() {
            match self.listeners[i].accept_nb() {
                Ok(Some(h)) => {
                    if self.capacity == 1 {
                        self.set_slot(Slot::Busy);
                        self.current = Current::Connection;
                        if self.limits.wake_after_taking(&self.board, self.pool) {
                            self.report(Report::Wake);
                        }
                    } else {
                        self.took();
                    }
                    return Ok(Some(Next::Connection(h)));
                }
                Ok(None) => i += 1,
                // The master shut the listener down (graceful shutdown): forget it.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    let l = self.listeners.swap_remove(i);
                    if let (Some(g), Some(fd)) = (&self.gauge, l.fd()) {
                        g.forget(fd.as_raw_fd());
                    }
                    // Other processes keep the listener open, so its registration would
                    // outlive our descriptor: remove it first.
                    if let (Some(ep), Some(fd)) = (&self.epoll, l.fd()) {
                        let _ = ep.delete(fd.as_raw_fd());
                    }
                }
                // Out of descriptors (or memory): the worker keeps serving what it holds
                // and tries again in a while; the connection waits in the backlog.
                Err(e) if out_of_resources(&e) => {
                    self.pause_accepting(&e);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn pause_accepting(&mut self, e: &io::Error) {
        let now = Instant::now();
        self.accept_paused = Some(now + ACCEPT_PAUSE);
        if self
            .pause_logged
            .is_none_or(|t| now - t >= PAUSE_LOG_INTERVAL)
        {
            self.pause_logged = Some(now);
            use std::io::Write;
            let _ = writeln!(
                io::stderr(),
                "Cannot accept a connection: {} (accepting again in {} ms)",
                crate::io::sys::error_text(e),
                ACCEPT_PAUSE.as_millis()
            );
        }
    }

    /// The time left of an accept pause, shortening a wait's `timeout`.
    fn pause_left(&self, timeout: Option<Duration>) -> Option<Duration> {
        match self.accept_paused {
            None => timeout,
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                Some(timeout.map_or(left, |t| t.min(left)))
            }
        }
    }

    /// Puts the listeners into the epoll set or takes them out.
    fn set_listening(&mut self, listen: bool) -> io::Result<()> {
        if listen == self.listening {
            return Ok(());
        }
        let fds: Vec<RawFd> = self
            .listeners
            .iter()
            .filter_map(|l| l.fd())
            .map(|f| f.as_raw_fd())
            .collect();
        let ep = self.epoll()?;
        for fd in fds {
            if listen {
                ep.add(fd, TOKEN_LISTENER + fd as u64, true)?;
            } else {
                ep.delete(fd)?;
            }
        }
        self.listening = listen;
        Ok(())
    }

    /// Waits until the queue, a listener or the control socket (EOF: master gone) is
    /// readable, the timeout passes, or SIGTERM arrives (its handler writes to the wake
    /// socket in the set, so one arriving just before the wait is not missed; a signal mask
    /// for the wait alone would cost two `sigprocmask` calls). Listeners are registered
    /// with `EPOLLEXCLUSIVE`: a new connection wakes one idle worker, not all of them.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.epoll()?;
        self.set_listening(self.accept_paused.is_none())?;
        let timeout = self.pause_left(timeout);
        if signal::sigterm_received() {
            return Ok(());
        }
        let ep = self.epoll.as_ref().expect("made above");
        let mut tokens = [0u64; 8];
        let n = match ep.wait(&mut tokens, timeout, None) {
            Ok(n) => n,
            // SIGTERM or another signal: the caller looks at everything again
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        self.woken_for_listener = false;
        for &t in &tokens[..n] {
            match t {
                TOKEN_WAKE => self.drain_wake(),
                t if t >= TOKEN_LISTENER => self.woken_for_listener = true,
                _ => {}
            }
        }
        self.check_master = !self.woken_for_listener;
        Ok(())
    }

    fn drain_wake(&self) {
        if let Some(w) = &self.wake {
            signal::drain_wake(w.as_fd());
        }
    }

    // --- Concurrent pools: the same jobs, taken without waiting, up to `capacity` at once.

    /// One more handler runs; a worker without free slots counts as busy for the master.
    fn took(&mut self) {
        self.running += 1;
        if self.running == self.capacity {
            self.set_slot(Slot::Busy);
            if self.limits.wake_after_taking(&self.board, self.pool) {
                self.report(Report::Wake);
            }
        }
    }

    /// A handler started by `try_job` ended (`timed`: it was an interval or main job).
    pub fn handler_done(&mut self, timed: bool) {
        if self.running == 0 {
            return;
        }
        if timed && self.timed_running {
            self.timed_running = false;
            self.report(Report::Done);
        }
        let was_full = self.running == self.capacity;
        self.running -= 1;
        // what the handler held is free again: a paused accept may succeed now
        self.accept_paused = None;
        if was_full {
            self.set_slot(Slot::Idle);
            if self.limits.wake_after_finishing(&self.board, self.pool) {
                self.report(Report::Wake);
            }
        }
    }

    /// The next job if one can be taken now (`None`: nothing, or no free slot), in the
    /// order of `next_job`; one timed job at a time, so that the master's reports pair up.
    pub fn try_job(&mut self) -> io::Result<Option<Next>> {
        let free = self.running < self.capacity;
        if std::mem::take(&mut self.woken_for_listener) && free {
            if let Some(next) = self.try_accept()? {
                return Ok(Some(next));
            }
        }
        if signal::sigterm_received() {
            return Ok(Some(Next::Stop(StopReason::Terminated)));
        }
        if let (Some(q), true, false) = (&self.queue, free, self.timed_running) {
            let mut buf = [0u8; MAX_MESSAGE + 1];
            match control::recv(q, &mut buf)? {
                Received::Message(m) => {
                    if let Some(Job(j)) = Job::decode(m) {
                        if self.claim(j) {
                            self.timed_running = true;
                            self.took();
                            self.report(Report::Took(j));
                            return Ok(Some(Next::Timed(j)));
                        }
                    }
                }
                Received::Nothing => {}
                Received::Closed => return Ok(Some(Next::Stop(StopReason::MasterGone))),
            }
        }
        if free {
            if let Some(next) = self.try_accept()? {
                return Ok(Some(next));
            }
        }
        if !self.master_alive() {
            return Ok(Some(Next::Stop(StopReason::MasterGone)));
        }
        Ok(None)
    }

    /// Watches a descriptor a handler waits on; `wait_ready` reports it when it may have
    /// become readable or writable.
    pub fn watch(&mut self, fd: RawFd) -> io::Result<()> {
        self.epoll()?.watch_edges(fd, TOKEN_CONNECTION | fd as u64)
    }

    /// Waits (up to `timeout`) until a job may be taken, a watched descriptor is ready, or
    /// SIGTERM arrives; adds the ready descriptors to `ready`. `accepting`: whether new
    /// connections are wanted (a worker that is full or leaving stops listening).
    pub fn wait_ready(
        &mut self,
        timeout: Option<Duration>,
        accepting: bool,
        ready: &mut Vec<RawFd>,
    ) -> io::Result<()> {
        self.set_listening(
            accepting && self.running < self.capacity && self.accept_paused.is_none(),
        )?;
        let timeout = self.pause_left(timeout);
        // A SIGTERM ends the wait until the worker has seen it (it then stops accepting);
        // afterwards the wait goes on for the connections it still serves. One arriving
        // just before the wait writes to the wake socket, which ends it.
        if accepting && signal::sigterm_received() {
            return Ok(());
        }
        let mut tokens = [0u64; 64];
        let ep = self.epoll()?;
        match ep.wait(&mut tokens, timeout, None) {
            Ok(n) => {
                for &t in &tokens[..n] {
                    if t == TOKEN_WAKE {
                        self.drain_wake();
                    } else if t & TOKEN_CONNECTION != 0 {
                        ready.push((t & !TOKEN_CONNECTION) as RawFd);
                    } else if t >= TOKEN_LISTENER {
                        self.woken_for_listener = true;
                    }
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The worker's epoll set, made on first use (after the fork). A classic worker
    /// registers its listeners at once; a concurrent one when it starts accepting.
    fn epoll(&mut self) -> io::Result<&Epoll> {
        if self.epoll.is_none() {
            let ep = Epoll::new()?;
            ep.add(self.control.as_raw_fd(), TOKEN_CONTROL, false)?;
            let wake = signal::sigterm_wake()?;
            ep.add(wake.as_raw_fd(), TOKEN_WAKE, false)?;
            self.wake = Some(wake);
            if let Some(q) = &self.queue {
                ep.add(q.as_raw_fd(), TOKEN_QUEUE, false)?;
            }
            if self.capacity == 1 {
                for fd in self.listeners.iter().filter_map(|l| l.fd()) {
                    let fd = fd.as_raw_fd();
                    ep.add(fd, TOKEN_LISTENER + fd as u64, true)?;
                }
                self.listening = true;
            }
            self.epoll = Some(ep);
        }
        Ok(self.epoll.as_ref().expect("made above"))
    }
}

/// Fault injection for the specs: when `MOONBRIDGE_TEST_DIE_AFTER_RECEIVING_JOB` names a
/// file that this process can remove, it removes it and ends at once, between receiving a
/// job and claiming it (the moment a SIGKILL could hit). One file, one death, whichever
/// worker gets there first. Without the variable this is one `getenv` per job taken.
fn die_here_for_a_test() {
    let Some(path) = std::env::var_os("MOONBRIDGE_TEST_DIE_AFTER_RECEIVING_JOB") else {
        return;
    };
    if std::fs::remove_file(path).is_ok() {
        crate::io::sys::exit_now(9);
    }
}
