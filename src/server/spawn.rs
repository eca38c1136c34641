//! How a worker process is born: its control pair and stderr pipe, the fork itself (with the
//! master's signals blocked across it), and the child's first steps: stderr to the master,
//! the master's signal handling undone, a death signal armed for when the master goes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::io::sys::{self, Fork};
use crate::server::control;
use crate::server::signals::{self, Blocked, SignalPipe};

/// The result of a fork, seen from each side.
pub enum Forked {
    /// In the new worker: its end of the control pair.
    Child { control: OwnedFd },
    /// In the master: the worker's PID, the master's end of its control pair and the read
    /// end of its stderr (non-blocking).
    Parent {
        pid: i32,
        control: OwnedFd,
        stderr: OwnedFd,
    },
}

/// Forks a worker. `signals` are the master's handlers, undone in the child.
pub fn fork(signals: &mut SignalPipe, master_pid: i32) -> io::Result<Forked> {
    let (ours, theirs) = control::seqpacket_pair()?;
    let (err_r, err_w) = sys::pipe()?;
    // A signal meant for the new worker stays pending until it has its own dispositions.
    let blocked = Blocked::master_signals()?;
    // SAFETY: the process is single-threaded (no threads anywhere in the server), so the
    // child may run ordinary code after fork.
    let pid = match unsafe { sys::fork() }? {
        Fork::Parent(pid) => pid,
        Fork::Child => {
            // The copy on fd 2 is not CLOEXEC, so programs the worker runs write there too.
            let _ = sys::dup2(err_w.as_fd(), 2);
            drop((ours, err_r, err_w));
            signals.restore();
            signals::default_interrupts();
            signals::set_parent_death_signal();
            crate::server::timer::forget_after_fork();
            drop(blocked);
            if sys::getppid() != master_pid {
                // the master died before the death signal was armed
                sys::exit_now(0);
            }
            return Ok(Forked::Child { control: theirs });
        }
    };
    drop(blocked);
    drop((theirs, err_w));
    sys::set_nonblocking(err_r.as_raw_fd(), true)?;
    Ok(Forked::Parent {
        pid,
        control: ours,
        stderr: err_r,
    })
}
