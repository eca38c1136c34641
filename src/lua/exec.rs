//! `moonbridge_io.exec` and the child handle userdata: `kill`, `wait`, `wait_nb`, plus the
//! `stdin`, `stdout`, `stderr` handle fields. `wait_call`/`wait_yield` live in `lua/embedded/io_glue.lua`
//! (over `wait_nb`, so they share its checks).
//!
//! As in the original, a child is *collected* once its status has been returned by one of
//! the wait forms, or once it was killed and reaped by `__close`; waiting for or killing a
//! collected child is misuse and raises a plain-string error. (`tostring` and `poll` still
//! work: a collected child reads as exited.)

use std::ffi::{c_int, CStr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::io::exec::{Child, Command, Spawned};
use crate::io::poll::Interest;
use crate::lua::coop;
use crate::lua::handle::push_handle;
use crate::lua::object::{check_self, push_object, set_object_field, LuaObject};
use crate::lua::stack::{bad_arg, lua_fn, lua_fn_k, Flow, Functions, LResult, Raise, Stack};

pub const FUNCTIONS: Functions = &[(c"exec", exec)];

/// Returned (after `false`) by `wait_nb` while the child runs.
const STILL_RUNNING: &str = "Process is still running";

/// Raised by the wait forms on a collected child (the original's wording).
const WAIT_COLLECTED: &str = "Attempt to wait for an already collected child process";
/// Raised by `kill` on a collected child (the original's wording).
const KILL_COLLECTED: &str = "Attempt to kill an already collected child process";

/// `self` of a child method, which must not have been collected yet.
fn uncollected<'a>(s: Stack<'a>, fname: &str, collected: &str) -> LResult<&'a mut Child> {
    let child = check_self::<Child>(s, fname)?;
    if child.has_exited() {
        return Err(Raise(collected.into()));
    }
    Ok(child)
}

impl LuaObject for Child {
    const TNAME: &'static CStr = c"moonbridge_io child";

    fn methods() -> Functions {
        &[(c"kill", kill), (c"wait", wait), (c"wait_nb", wait_nb)]
    }

    fn describe(&self) -> String {
        match self.status() {
            Some(status) => format!("moonbridge_io child (pid {}, status {status})", self.pid()),
            None => format!("moonbridge_io child (pid {})", self.pid()),
        }
    }

    /// A to-be-closed child that goes out of scope is killed and reaped, as when collected.
    fn on_close(&mut self) {
        self.terminate();
    }
}

lua_fn! {
    /// `exec(command, arg1, ...)`: a child handle, or `nil, message`.
    fn exec(s) {
        let top = s.top().max(1);
        let mut strings = Vec::with_capacity(top as usize);
        for i in 1..=top {
            strings.push(s.check_bytes(i, i, "exec")?);
        }
        let command = Command::new(strings[0], &strings[1..])
            .map_err(|i| bad_arg(i as i32 + 1, "exec", "string contains a NUL byte"))?;
        s.reserve(4);
        let spawned = match command.spawn() {
            Ok(spawned) => spawned,
            Err(e) => return s.fail(&e.to_string()),
        };
        push_child(s, spawned);
        Ok(1)
    }
}

/// Pushes the child userdata with its three handles in its fields table.
/// The caller reserves stack space first: raising here would skip the drops.
fn push_child(s: Stack<'_>, spawned: Spawned) {
    push_object(s, spawned.child);
    let child = s.abs(-1);
    for (name, h) in [
        (c"stdin", spawned.stdin),
        (c"stdout", spawned.stdout),
        (c"stderr", spawned.stderr),
    ] {
        push_handle(s, h);
        // The handles read like fields set from Lua and live as long as the child handle.
        set_object_field(s, child, name);
    }
}

lua_fn! {
    /// `child:kill(signal = 9)`: returns the child handle; raises once collected.
    fn kill(s) {
        check_self::<Child>(s, "kill")?;
        let signal = s.opt_integer(2, 1, "kill")?.unwrap_or(libc::SIGKILL as i64);
        let invalid = || bad_arg(1, "kill", "invalid signal number");
        let signal = c_int::try_from(signal).map_err(|_| invalid())?;
        let child = uncollected(s, "kill", KILL_COLLECTED)?;
        match child.kill(signal) {
            Ok(()) => {
                s.push_value(1);
                Ok(1)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(invalid()),
            Err(e) => s.fail_os(&e),
        }
    }
}

lua_fn_k! {
    /// `child:wait()`: the exit code, or minus the signal number (the child is then
    /// collected).
    fn wait(s, _ctx) {
        let child = uncollected(s, "wait", WAIT_COLLECTED)?;
        if coop::active() && coop::here(s) {
            // in a handler of a concurrent pool: wait in the loop for the child's pidfd (or
            // look again in a while where the kernel has none)
            match child.wait_nb() {
                Ok(Some(status)) => {
                    s.push_int(status as i64);
                    return Ok(Flow::Return(1));
                }
                Ok(None) => {
                    return Ok(match child.poll_fd() {
                        Some(fd) => coop::wait(s, fd.as_raw_fd(), Interest::Read, 0),
                        None => coop::wait_many(s, &[], Some(Instant::now() + coop::RECHECK), 0),
                    })
                }
                Err(e) => return s.fail_os(&e).map(Flow::Return),
            }
        }
        match child.wait() {
            Ok(status) => {
                s.push_int(status as i64);
                Ok(Flow::Return(1))
            }
            Err(e) => s.fail_os(&e).map(Flow::Return),
        }
    }
}

lua_fn! {
    /// `child:wait_nb()`: the status, or `false, "Process is still running"`.
    fn wait_nb(s) {
        let child = uncollected(s, "wait_nb", WAIT_COLLECTED)?;
        match child.wait_nb() {
            Ok(Some(status)) => {
                s.push_int(status as i64);
                Ok(1)
            }
            Ok(None) => {
                s.push_bool(false);
                s.push_str(STILL_RUNNING);
                Ok(2)
            }
            Err(e) => s.fail_os(&e),
        }
    }
}
