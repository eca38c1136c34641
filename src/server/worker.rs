//! The worker side: wait for the next job (a connection accepted on one of the pool's
//! inherited listeners, an interval command from the master, or the end), and report
//! progress to the master. One job at a time; the Lua driver runs the handlers.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::io::net::Listener;
use crate::io::poll::{self, Entry, Interest};
use crate::io::Handle;
use crate::server::control::{Command, Report, MAX_MESSAGE};
use crate::server::master::{send_message, WorkerStart};

/// What the worker should do next.
#[derive(Debug)]
pub enum Job {
    Connection(Handle),
    Interval(u32),
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

#[derive(Debug)]
pub struct Worker {
    pub pool: usize,
    pub main: bool,
    control: OwnedFd,
    listeners: Vec<Listener>,
    idle_timeout: Option<Duration>,
    master_pid: i32,
}

impl Worker {
    pub fn new(start: WorkerStart, idle_timeout: Option<Duration>) -> Self {
        Worker {
            pool: start.pool,
            main: start.main,
            control: start.control,
            listeners: start.listeners,
            idle_timeout,
            // SAFETY: getppid has no preconditions.
            master_pid: unsafe { libc::getppid() },
        }
    }

    /// Tells the master about progress. A vanished master is noticed by `next_job`.
    pub fn report(&self, r: Report) {
        let (msg, n) = r.encode();
        let _ = send_message(&self.control, &msg[..n]);
    }

    /// Waits for the next job. Interval commands come first (the master already counted
    /// them); then the listeners are tried before waiting, so a pending connection is taken
    /// without a poll round.
    pub fn next_job(&mut self) -> io::Result<Job> {
        let deadline = self.idle_timeout.map(|d| Instant::now() + d);
        loop {
            if crate::io::signal::sigterm_received() {
                return Ok(Job::Stop(StopReason::Terminated));
            }
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } != self.master_pid {
                return Ok(Job::Stop(StopReason::MasterGone));
            }
            match self.read_command()? {
                Some(Ok(Command::RunInterval(i))) => return Ok(Job::Interval(i)),
                Some(Ok(Command::Terminate)) => return Ok(Job::Stop(StopReason::Terminated)),
                Some(Err(())) => return Ok(Job::Stop(StopReason::MasterGone)),
                None => {}
            }
            for l in &self.listeners {
                if let Some(h) = l.accept_nb()? {
                    self.report(Report::Accepted);
                    return Ok(Job::Connection(h));
                }
            }
            let remaining = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(Job::Stop(StopReason::IdleTimeout));
                    }
                    Some(d - now)
                }
            };
            self.wait(remaining)?;
        }
    }

    /// A pending command: `Some(Err(()))` when the master closed the control socket.
    fn read_command(&self) -> io::Result<Option<Result<Command, ()>>> {
        let mut buf = [0u8; MAX_MESSAGE + 1];
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                self.control.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                io::ErrorKind::ConnectionReset => Ok(Some(Err(()))),
                _ => Err(e),
            };
        }
        if n == 0 {
            return Ok(Some(Err(())));
        }
        Ok(Command::decode(&buf[..n as usize]).map(Ok))
    }

    /// Waits until a listener or the control socket is readable, the timeout passes, or
    /// SIGTERM arrives (after `catch_sigterm`, poll wakes up for it without a race).
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut entries = vec![Entry::new(self.control.as_raw_fd(), Interest::Read)];
        for fd in self.listeners.iter().filter_map(|l| l.fd()) {
            entries.push(Entry::new(fd.as_raw_fd(), Interest::Read));
        }
        poll::poll(&entries, timeout, true).map(drop)
    }
}
