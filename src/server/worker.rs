//! The worker side: wait for the next job (a due interval/main job from the pool's queue, or
//! a connection accepted on one of the pool's inherited listeners), keep this worker's slot
//! on the scoreboard up to date, and wake the master only when it has something to decide.
//! One job at a time; the Lua driver runs the handlers.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::io::epoll::Epoll;
use crate::io::net::Listener;
use crate::io::signal::{self, SigtermWindow};
use crate::io::Handle;
use crate::server::board::{Board, Limits, Slot};
use crate::server::control::{self, Job, Received, Report, MAX_MESSAGE};
use crate::server::master::WorkerStart;

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
}

/// Epoll tokens: the control socket, the job queue, and listeners by descriptor.
const TOKEN_CONTROL: u64 = 0;
const TOKEN_QUEUE: u64 = 1;
const TOKEN_LISTENER: u64 = 2;

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
    pub fn ready(&self) {
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
                            self.set_slot(Slot::Busy);
                            self.current = Current::Timed;
                            self.report(Report::Took(j));
                            return Ok(Next::Timed(j));
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
            // wait below).
            if !self.master_alive() {
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

    /// Accepts a pending connection on one of the listeners, if there is one.
    fn try_accept(&mut self) -> io::Result<Option<Next>> {
        let mut i = 0;
        while i < self.listeners.len() {
            match self.listeners[i].accept_nb() {
                Ok(Some(h)) => {
                    self.set_slot(Slot::Busy);
                    self.current = Current::Connection;
                    if self.limits.wake_after_taking(&self.board, self.pool) {
                        self.report(Report::Wake);
                    }
                    return Ok(Some(Next::Connection(h)));
                }
                Ok(None) => i += 1,
                // The master shut the listener down (graceful shutdown): forget it.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    let l = self.listeners.swap_remove(i);
                    // Other processes keep the listener open, so its registration would
                    // outlive our descriptor: remove it first.
                    if let (Some(ep), Some(fd)) = (&self.epoll, l.fd()) {
                        let _ = ep.delete(fd.as_raw_fd());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Waits until the queue, a listener or the control socket (EOF: master gone) is
    /// readable, the timeout passes, or SIGTERM arrives (blocked except during the wait, so
    /// one arriving just before it is not missed). Listeners are registered with
    /// `EPOLLEXCLUSIVE`: a new connection wakes one idle worker, not all of them.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.epoll.is_none() {
            let ep = Epoll::new()?;
            ep.add(self.control.as_raw_fd(), TOKEN_CONTROL, false)?;
            if let Some(q) = &self.queue {
                ep.add(q.as_raw_fd(), TOKEN_QUEUE, false)?;
            }
            for fd in self.listeners.iter().filter_map(|l| l.fd()) {
                let fd = fd.as_raw_fd();
                ep.add(fd, TOKEN_LISTENER + fd as u64, true)?;
            }
            self.epoll = Some(ep);
        }
        let ep = self.epoll.as_ref().expect("made above");
        let window = SigtermWindow::open()?;
        if signal::sigterm_received() {
            return Ok(());
        }
        let mut tokens = [0u64; 8];
        match ep.wait(&mut tokens, timeout, Some(window.wait_mask())) {
            Ok(n) => {
                self.woken_for_listener = tokens[..n].iter().any(|&t| t >= TOKEN_LISTENER);
                Ok(())
            }
            // SIGTERM or another signal: the caller looks at everything again
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}
