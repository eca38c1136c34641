//! The master's record of one worker: its channels, its slot on the scoreboard, what it is
//! known to do, its stderr turned into log lines, and the log line of its end.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::io::sys;
use crate::server::lines::Lines;
use crate::server::log::Logger;
use crate::server::signals::signal_name;

#[derive(Debug)]
pub struct Record {
    pub pid: i32,
    pub pool: usize,
    /// None once the worker closed its end (it is exiting).
    pub control: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    lines: Lines,
    /// Its slot on the scoreboard (in its pool's part).
    pub slot: usize,
    /// The interval or main job it runs.
    pub job: Option<usize>,
    /// Told to stop (surplus, shutdown) or leaving on its own: no longer counted.
    pub stopping: bool,
    /// Took a main job: its exit stops the server.
    pub main: bool,
}

impl Record {
    pub fn new(pid: i32, pool: usize, slot: usize, control: OwnedFd, stderr: OwnedFd) -> Self {
        Record {
            pid,
            pool,
            control: Some(control),
            stderr: Some(stderr),
            lines: Lines::default(),
            slot,
            job: None,
            stopping: false,
            main: false,
        }
    }

    /// Logs the complete lines the worker wrote to stderr so far.
    pub fn read_stderr(&mut self, log: &mut Logger) {
        let mut buf = [0u8; 8192];
        // Bounded per call: a chatty worker cannot hold the master.
        for _ in 0..16 {
            let Some(fd) = &self.stderr else { return };
            let n = match sys::read(fd.as_fd(), &mut buf) {
                // (an interrupted read counts against the bound)
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Ok(n @ 1..) => n,
                Ok(0) | Err(_) => {
                    self.stderr = None; // EOF (or a broken pipe): the worker is exiting
                    return;
                }
            };
            let (pool, pid) = (self.pool, self.pid);
            self.lines.push(&buf[..n], &mut |line, cut| {
                log_line(log, pool, pid, line, cut)
            });
        }
    }

    /// After the worker's death: its last stderr bytes, then why it ended.
    pub fn log_end(&mut self, log: &mut Logger, status: i32, usage: &libc::rusage) {
        self.read_stderr(log);
        let (pool, pid) = (self.pool, self.pid);
        self.lines
            .finish(&mut |line, cut| log_line(log, pool, pid, line, cut));
        let id = format!("(PID {pid}) of pool #{}", pool + 1);
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            if sig == libc::SIGALRM {
                log.log(&format!(
                    "Worker process {id} exited prematurely due to timeout"
                ));
            } else if self.stopping && (sig == libc::SIGKILL || sig == libc::SIGTERM) {
                log.stats(&format!("Worker process {id} stopped"));
            } else {
                let name = signal_name(sig);
                log.log(&format!(
                    "Worker process {id} terminated by signal {sig} ({name})"
                ));
            }
        } else {
            let code = libc::WEXITSTATUS(status);
            if code != 0 {
                log.log(&format!("Worker process {id} exited with code {code}"));
            } else {
                log.stats(&format!("Worker process {id} exited normally"));
            }
        }
        if log.stats {
            log.log(&format!(
                "Resource usage of worker process {id}: user time {:.3} s, system time {:.3} s, \
                 max resident set size {} kB, {} minor and {} major page faults, \
                 {} voluntary and {} involuntary context switches",
                seconds(usage.ru_utime),
                seconds(usage.ru_stime),
                usage.ru_maxrss,
                usage.ru_minflt,
                usage.ru_majflt,
                usage.ru_nvcsw,
                usage.ru_nivcsw
            ));
        }
    }
}

fn log_line(log: &mut Logger, pool: usize, pid: i32, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let marker = if cut { " [line truncated]" } else { "" };
    log.log(&format!("[Pool #{}, PID {pid}] {text}{marker}", pool + 1));
}

fn seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}
