//! The master process: owns the listeners, forks workers, and from then on only manages the
//! pools (counts, delays, intervals, signals, logging). It never runs a handler and never
//! blocks on a client: workers accept on the inherited listeners themselves.
//!
//! The loop: drain queued signals -> reap workers -> apply the pool policy (fork / stop) ->
//! dispatch due intervals -> `poll(2)` on the signal pipe, worker control sockets, worker
//! stderr pipes and (only for pools without a spare worker) the listeners.
//!
//! `run` returns in the master when the server stops (`Role::Exit`), and in each forked
//! worker right after the fork (`Role::Worker`), so that the worker continues in Lua.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::io::net::Listener;
use crate::io::sys;
use crate::server::control::{Command, Report, MAX_MESSAGE};
use crate::server::log::Logger;
use crate::server::pool::{Action, Counts, Pool, PoolConfig};

/// An interval listener: the connect handler runs every `delay`.
#[derive(Clone, Debug)]
pub struct IntervalSpec {
    pub delay: Duration,
    pub strict: bool,
}

/// One `listen{}` call.
#[derive(Debug)]
pub struct PoolSpec {
    pub config: PoolConfig,
    /// Listening sockets (local ones have their socket file removed at shutdown).
    pub listeners: Vec<Listener>,
    pub intervals: Vec<IntervalSpec>,
    /// A `main` listener: one worker runs the handler once; its exit stops the server.
    pub main: bool,
}

/// What a forked worker takes along.
#[derive(Debug)]
pub struct WorkerStart {
    /// 0-based pool index.
    pub pool: usize,
    pub control: OwnedFd,
    pub listeners: Vec<Listener>,
    pub main: bool,
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

#[derive(Debug)]
struct Worker {
    pid: i32,
    pool: usize,
    /// None once the worker closed its end (it is exiting).
    control: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    stderr_buf: Vec<u8>,
    ready: bool,
    /// Connections and intervals in progress (the worker is idle when 0).
    jobs: u32,
    interval: Option<usize>,
    stopping: bool,
    main: bool,
}

#[derive(Debug)]
struct IntervalState {
    spec: IntervalSpec,
    next_at: Duration,
    running: bool,
}

struct PoolState {
    policy: Pool,
    listeners: Vec<Listener>,
    intervals: Vec<IntervalState>,
    main: bool,
    main_started: bool,
    /// A connection waits on a listener (seen by poll) and no worker is spare.
    pending: bool,
}

struct Master<'a> {
    pools: Vec<PoolState>,
    workers: Vec<Worker>,
    signals: SignalPipe,
    log: &'a mut Logger,
    start: Instant,
    phase: Phase,
}

/// Longest worker stderr line logged whole; longer lines are cut with a marker.
const MAX_LOG_LINE: usize = 4000;

/// Runs the server until it stops (master) or until this process became a worker.
pub fn run(pools: Vec<PoolSpec>, log: &mut Logger) -> io::Result<Role> {
    let signals = SignalPipe::install()?;
    let start = Instant::now();
    let pools = pools
        .into_iter()
        .map(|p| {
            let intervals = p
                .intervals
                .into_iter()
                .map(|spec| IntervalState {
                    next_at: spec.delay,
                    spec,
                    running: false,
                })
                .collect();
            PoolState {
                policy: Pool::new(p.config),
                listeners: p.listeners,
                intervals,
                main: p.main,
                main_started: false,
                pending: false,
            }
        })
        .collect();
    let mut m = Master {
        pools,
        workers: Vec::new(),
        signals,
        log,
        start,
        phase: Phase::Running,
    };
    let role = m.run_loop();
    if matches!(role, Ok(Role::Exit(_)) | Err(_)) {
        m.close_listeners();
        m.signals.restore();
    }
    role
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
                if let Some(start) = self.manage_pools()? {
                    return Ok(Role::Worker(start));
                }
                self.dispatch_intervals();
            }
            let timeout = self.next_timeout();
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
                    self.log.log("Received SIGINT or SIGHUP: fast shutdown");
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
            // SAFETY: kill has no memory arguments; the pid is our unreaped child.
            unsafe { libc::kill(w.pid, sig) };
        }
    }

    fn close_listeners(&mut self) {
        for pool in &mut self.pools {
            for l in pool.listeners.drain(..) {
                if let Some(path) = l.path() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Collects every exited child (also unknown ones) and logs why it ended.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return; // 0: none exited; -1: ECHILD (no children) or EINTR (next round)
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let mut w = self.workers.swap_remove(i);
            flush_stderr(&mut w, self.log, true);
            let now = self.now();
            let pool_no = w.pool + 1;
            let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
                self.log.log(&format!(
                    "Worker process (PID {pid}) of pool #{pool_no} exited prematurely due to timeout"
                ));
            } else if libc::WIFSIGNALED(status) && !(w.stopping && self.phase != Phase::Running) {
                let sig = libc::WTERMSIG(status);
                self.log.log(&format!(
                    "Worker process (PID {pid}) of pool #{pool_no} terminated by signal {sig} ({})",
                    signal_name(sig)
                ));
            } else if !clean {
                let code = libc::WEXITSTATUS(status);
                self.log.log(&format!(
                    "Worker process (PID {pid}) of pool #{pool_no} exited with code {code}"
                ));
            } else {
                self.log.debug(&format!(
                    "Worker process (PID {pid}) of pool #{pool_no} exited"
                ));
            }
            let pool = &mut self.pools[w.pool];
            if !w.ready && !clean && !w.stopping {
                // died during prepare: do not fork in a tight loop
                pool.policy.fork_failed(now);
            }
            if let Some(idx) = w.interval {
                finish_interval(&mut pool.intervals[idx], now);
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
            .filter(|w| w.pool == pool && !w.stopping && !w.main)
        {
            if !w.ready {
                c.starting += 1;
            } else if w.jobs == 0 {
                c.idle += 1;
            } else {
                c.busy += 1;
            }
        }
        c
    }

    /// Applies the pool policy; returns `Some` in a freshly forked worker.
    fn manage_pools(&mut self) -> io::Result<Option<WorkerStart>> {
        for p in 0..self.pools.len() {
            if self.pools[p].main {
                if !self.pools[p].main_started {
                    self.pools[p].main_started = true;
                    if let Some(start) = self.fork_worker(p, true)? {
                        return Ok(Some(start));
                    }
                }
                continue;
            }
            loop {
                let now = self.now();
                let counts = self.counts(p);
                let waiting = self.pools[p].pending || self.interval_waiting(p, now);
                match self.pools[p].policy.decide(counts, waiting, now) {
                    Action::Fork => {
                        self.pools[p].policy.forked(now);
                        self.pools[p].pending = false;
                        if let Some(start) = self.fork_worker(p, false)? {
                            return Ok(Some(start));
                        }
                    }
                    Action::StopIdle => {
                        self.pools[p].policy.stopped_idle(now);
                        if let Some(w) = self
                            .workers
                            .iter_mut()
                            .find(|w| w.pool == p && w.ready && w.jobs == 0 && !w.stopping)
                        {
                            w.stopping = true;
                            // SAFETY: plain kill of our own unreaped child.
                            unsafe { libc::kill(w.pid, libc::SIGTERM) };
                        }
                    }
                    Action::Wait(_) => break,
                }
            }
        }
        Ok(None)
    }

    /// An interval is due but no idle worker can take it.
    fn interval_waiting(&self, p: usize, now: Duration) -> bool {
        self.pools[p]
            .intervals
            .iter()
            .any(|i| !i.running && i.next_at <= now)
    }

    fn fork_worker(&mut self, p: usize, main: bool) -> io::Result<Option<WorkerStart>> {
        let (ours, theirs) = seqpacket_pair()?;
        let (err_r, err_w) = pipe()?;
        // SAFETY: the process is single-threaded (no threads anywhere in the server), so the
        // child may run ordinary code after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            self.log.log(&format!(
                "Could not fork worker for pool #{}: {}",
                p + 1,
                sys::error_text(&e)
            ));
            let now = self.now();
            self.pools[p].policy.fork_failed(now);
            return Ok(None);
        }
        if pid == 0 {
            // Worker: stderr goes to the master; the master's signal handling is undone.
            // SAFETY: dup2 onto fd 2 of descriptors we own.
            unsafe { libc::dup2(err_w.as_raw_fd(), 2) };
            drop((ours, err_r, err_w));
            self.signals.restore();
            set_parent_death_signal();
            let listeners = self.pools[p].listeners.drain(..).collect();
            return Ok(Some(WorkerStart {
                pool: p,
                control: theirs,
                listeners,
                main,
            }));
        }
        drop((theirs, err_w));
        let _ = sys::set_nonblocking(err_r.as_raw_fd(), true);
        let _ = sys::set_nonblocking(ours.as_raw_fd(), true);
        self.log.debug(&format!(
            "Forked worker process (PID {pid}) for pool #{}",
            p + 1
        ));
        self.workers.push(Worker {
            pid,
            pool: p,
            control: Some(ours),
            stderr: Some(err_r),
            stderr_buf: Vec::new(),
            ready: false,
            jobs: 0,
            interval: None,
            stopping: false,
            main,
        });
        Ok(None)
    }

    /// Hands due intervals to idle workers.
    fn dispatch_intervals(&mut self) {
        let now = self.now();
        for p in 0..self.pools.len() {
            for idx in 0..self.pools[p].intervals.len() {
                let iv = &self.pools[p].intervals[idx];
                if iv.running || iv.next_at > now {
                    continue;
                }
                let Some(w) = self
                    .workers
                    .iter_mut()
                    .find(|w| w.pool == p && w.ready && w.jobs == 0 && !w.stopping)
                else {
                    break; // manage_pools forks one; retried on the next round
                };
                let (msg, n) = Command::RunInterval(idx as u32).encode();
                let Some(control) = &w.control else { continue };
                if send_message(control, &msg[..n]).is_ok() {
                    w.jobs += 1;
                    w.interval = Some(idx);
                    self.pools[p].intervals[idx].running = true;
                }
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        let now = self.now();
        let mut t: Option<Duration> = None;
        let mut at = |d: Duration| t = Some(t.map_or(d, |x: Duration| x.min(d)));
        if self.phase == Phase::Running {
            for p in 0..self.pools.len() {
                let counts = self.counts(p);
                let pool = &mut self.pools[p];
                if let Action::Wait(Some(d)) = pool.policy.decide(counts, pool.pending, now) {
                    at(d);
                }
                for iv in pool.intervals.iter().filter(|i| !i.running) {
                    at(iv.next_at.saturating_sub(now));
                }
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
        let mut fds = vec![libc::pollfd {
            fd: self.signals.read_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut src = vec![Src::Signals];
        for w in &self.workers {
            if let Some(c) = &w.control {
                fds.push(libc::pollfd {
                    fd: c.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                src.push(Src::Control(w.pid));
            }
            if let Some(e) = &w.stderr {
                fds.push(libc::pollfd {
                    fd: e.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                src.push(Src::Stderr(w.pid));
            }
        }
        if self.phase == Phase::Running {
            for p in 0..self.pools.len() {
                let c = self.counts(p);
                let pool = &self.pools[p];
                if c.spare() == 0 && c.total() < pool.policy.config.max_fork && !pool.main {
                    for fd in pool.listeners.iter().filter_map(|l| l.fd()) {
                        fds.push(libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        src.push(Src::Listener(p));
                    }
                }
            }
        }
        let ms = timeout.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32 + 1);
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for (pfd, s) in fds.iter().zip(src) {
            if pfd.revents == 0 {
                continue;
            }
            match s {
                Src::Signals => {}
                Src::Control(pid) => self.read_control(pid),
                Src::Stderr(pid) => {
                    if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
                        flush_stderr(w, self.log, false);
                    }
                }
                Src::Listener(p) => self.pools[p].pending = true,
            }
        }
        Ok(())
    }

    fn read_control(&mut self, pid: i32) {
        let now = self.now();
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        let mut buf = [0u8; MAX_MESSAGE + 1];
        while let Some(control) = &w.control {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe {
                libc::recv(
                    control.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 0 {
                // the worker closed its end: it is exiting; stop polling it
                w.control = None;
            }
            if n <= 0 {
                return;
            }
            match Report::decode(&buf[..n as usize]) {
                Some(Report::Ready) => w.ready = true,
                Some(Report::Accepted) => w.jobs += 1,
                Some(Report::Done) => w.jobs = w.jobs.saturating_sub(1),
                Some(Report::IntervalDone(idx)) => {
                    w.jobs = w.jobs.saturating_sub(1);
                    w.interval = None;
                    if let Some(iv) = self.pools[w.pool].intervals.get_mut(idx as usize) {
                        finish_interval(iv, now);
                    }
                }
                None => {}
            }
        }
    }
}

/// Logs complete lines of a worker's stderr (all of it when `eof`).
fn flush_stderr(w: &mut Worker, log: &mut Logger, eof: bool) {
    if let Some(fd) = &w.stderr {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: read writes at most buf.len() bytes into buf.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n == 0 {
                    w.stderr = None;
                }
                break;
            }
            w.stderr_buf.extend_from_slice(&buf[..n as usize]);
            if w.stderr_buf.len() > 1 << 20 {
                break; // log what we have; never let one worker hold the master
            }
        }
    }
    let prefix = format!("[Pool #{}, PID {}] ", w.pool + 1, w.pid);
    while let Some(i) = memchr::memchr(b'\n', &w.stderr_buf) {
        let line: Vec<u8> = w.stderr_buf.drain(..=i).collect();
        log_worker_line(log, &prefix, &line[..line.len() - 1]);
    }
    if w.stderr_buf.len() > MAX_LOG_LINE || (eof && !w.stderr_buf.is_empty()) {
        let line = std::mem::take(&mut w.stderr_buf);
        log_worker_line(log, &prefix, &line);
    }
}

fn log_worker_line(log: &mut Logger, prefix: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    if text.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        log.log(&format!("{prefix}{} [line truncated]", &text[..cut]));
    } else {
        log.log(&format!("{prefix}{text}"));
    }
}

/// Plans an interval's next run after a run ended at `now`.
fn finish_interval(iv: &mut IntervalState, now: Duration) {
    iv.running = false;
    iv.next_at = next_interval_time(iv.next_at, iv.spec.delay, iv.spec.strict, now);
}

/// Strict intervals keep their grid (missed slots are skipped); others restart from `now`.
pub fn next_interval_time(
    planned: Duration,
    delay: Duration,
    strict: bool,
    now: Duration,
) -> Duration {
    if !strict || delay.is_zero() {
        return now + delay;
    }
    let mut next = planned + delay;
    if next <= now {
        let behind = (now - next).as_nanos() / delay.as_nanos() + 1;
        next += delay * behind as u32;
    }
    next
}

/// A connected SOCK_SEQPACKET pair (one message per send, EOF when the peer exits).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`.
    sys::cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one control message; a vanished peer is not an error worth reporting.
pub fn send_message(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    sys::retry(|| {
        // SAFETY: `msg` is a live slice for the duration of the call.
        sys::cvt(unsafe {
            libc::send(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        })
    })
    .map(drop)
}

/// Workers get SIGTERM when the master dies, and exit gracefully.
fn set_parent_death_signal() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        _ => "signal",
    }
}

/// Self-pipe for the master's signals: handlers only write the signal number.
struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
    previous: Vec<(i32, libc::sigaction)>,
}

static SIGNAL_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored around it.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

const MASTER_SIGNALS: [i32; 4] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

impl SignalPipe {
    fn install() -> io::Result<Self> {
        let (read, write) = pipe()?;
        sys::set_nonblocking(read.as_raw_fd(), true)?;
        sys::set_nonblocking(write.as_raw_fd(), true)?;
        SIGNAL_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let mut previous = Vec::new();
        for sig in MASTER_SIGNALS {
            // SAFETY: sigaction with zeroed, then filled structures; the handler only does
            // async-signal-safe work.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, &sa, &mut old);
                previous.push((sig, old));
            }
        }
        // The master must hear SIGTERM even if the application blocked it.
        // SAFETY: sigprocmask with a local, initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in MASTER_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        Ok(SignalPipe {
            read,
            _write: write,
            previous,
        })
    }

    fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn drain(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: read writes at most buf.len() bytes into buf.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend(buf[..n as usize].iter().map(|&b| b as i32));
        }
    }

    /// Puts back the dispositions from before `install` (in workers, and at master exit).
    fn restore(&mut self) {
        SIGNAL_WRITE_FD.store(-1, Ordering::Relaxed);
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: reinstalls a sigaction previously returned by the kernel.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn interval_planning() {
        // non-strict: from the end of the run
        assert_eq!(next_interval_time(s(10), s(10), false, s(13)), s(23));
        // strict: on the grid
        assert_eq!(next_interval_time(s(10), s(10), true, s(13)), s(20));
        // strict, a run overran two slots: missed slots are skipped
        assert_eq!(next_interval_time(s(10), s(10), true, s(35)), s(40));
        // strict, exactly on a slot boundary: the next one
        assert_eq!(next_interval_time(s(10), s(10), true, s(20)), s(30));
    }
}
