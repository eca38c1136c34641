//! `moonbridge_core`: the process primitives behind `lua/moonbridge.lua` and the launcher
//! (serve, worker jobs, timers, memory limit, logging, pid file, daemonizing). Loaded from
//! the same shared object as `moonbridge_io` (`package.loadlib(..., "luaopen_moonbridge_core")`),
//! so listener and handle userdata are shared.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};
use std::time::Duration;

use mlua::ffi;

use crate::io::net::Listener;
use crate::io::Handle;
use crate::lua::handle::push_handle;
use crate::lua::state::{
    bad_arg, check_self, lua_fn, push_object, take_object, LResult, LuaObject, Misuse, Stack,
};
use crate::server::control::Report;
use crate::server::log::Logger;
use crate::server::master::{self, IntervalSpec, PoolSpec, Role};
use crate::server::pool::PoolConfig;
use crate::server::process::{self, PidFile, PidFileError};
use crate::server::timer;
use crate::server::worker::{Job, StopReason, Worker};

thread_local! {
    static LOGGER: RefCell<Logger> = RefCell::new(Logger::stderr());
    static PIDFILE: RefCell<Option<PidFile>> = const { RefCell::new(None) };
}

/// Registers the worker object type (its methods table is left on the stack).
pub fn register(s: Stack<'_>) {
    crate::lua::state::register_type::<WorkerObject>(s);
}

fn log(message: &str) {
    LOGGER.with(|l| l.borrow_mut().log(message));
}

pub const FUNCTIONS: &[(&CStr, ffi::lua_CFunction)] = &[
    (c"log", core_log),
    (c"log_config", log_config),
    (c"serve", serve),
    (c"timer_set", timer_set),
    (c"timer_remaining", timer_remaining),
    (c"timer_sub", timer_sub),
    (c"timer_restore", timer_restore),
    (c"set_memory_limit", set_memory_limit),
    (c"exit", exit),
    (c"daemonize", daemonize),
    (c"pidfile", pidfile),
    (c"cleanup", cleanup),
];

lua_fn! {
    fn core_log(s) {
        let msg = s.check_bytes(1, 1, "log")?;
        log(&String::from_utf8_lossy(msg));
        Ok(0)
    }
}

/// Reads an optional field of the table at index 1.
fn field<'a>(s: Stack<'a>, name: &CStr) -> c_int {
    // SAFETY: index 1 is checked to be a table by the callers; pushes one value.
    unsafe { ffi::lua_getfield(s.raw(), 1, name.as_ptr()) }
}

fn check_table(s: Stack<'_>, i: c_int, n: i32, fname: &str) -> LResult<()> {
    if s.type_of(i) == ffi::LUA_TTABLE {
        Ok(())
    } else {
        Err(s.expected(i, n, fname, "table"))
    }
}

lua_fn! {
    /// log_config{file=, syslog=, facility=, ident=, stderr=, debug=, stats=}
    /// -> true | nil, message, holder_pid_or_nil
    fn log_config(s) {
        check_table(s, 1, 1, "log_config")?;
        let mut logger = Logger::default();
        let get_bool = |name: &CStr| {
            field(s, name);
            let v = s.to_boolean(-1);
            s.pop(1);
            v
        };
        logger.to_stderr = get_bool(c"stderr");
        logger.debug = get_bool(c"debug");
        logger.stats = get_bool(c"stats");
        if get_bool(c"syslog") {
            field(s, c"ident");
            let ident = s.to_bytes(-1).map(|b| String::from_utf8_lossy(b).into_owned());
            s.pop(1);
            field(s, c"facility");
            let fac = s.to_bytes(-1).map(|b| String::from_utf8_lossy(b).into_owned());
            s.pop(1);
            let facility = match fac.as_deref() {
                Some("USER") => libc::LOG_USER,
                Some(d) if d.len() == 1 && (b'0'..=b'7').contains(&d.as_bytes()[0]) => {
                    libc::LOG_LOCAL0 + ((d.as_bytes()[0] - b'0') as i32) * 8
                }
                _ => libc::LOG_DAEMON,
            };
            logger.open_syslog(ident.as_deref().unwrap_or("moonbridge"), facility);
        }
        if field(s, c"file") == ffi::LUA_TSTRING {
            let path = String::from_utf8_lossy(s.to_bytes(-1).unwrap_or_default()).into_owned();
            s.pop(1);
            match logger.open_file(&path) {
                Ok(()) => {}
                Err(PidFileError::Locked(pid)) => {
                    s.push_nil();
                    s.push_str(&locked_message("Log file", &path, pid));
                    s.push_int(pid.unwrap_or(0) as i64);
                    return Ok(3);
                }
                Err(PidFileError::Io(e)) => {
                    return s.fail(&format!(
                        "Could not open log file \"{path}\": {}",
                        crate::io::sys::error_text(&e)
                    ));
                }
            }
        } else {
            s.pop(1);
        }
        LOGGER.with(|l| *l.borrow_mut() = logger);
        s.push_bool(true);
        Ok(1)
    }
}

fn locked_message(what: &str, path: &str, pid: Option<i32>) -> String {
    match pid {
        Some(p) => {
            format!("{what} \"{path}\" is locked by another process (PID {p}): already running")
        }
        None => format!("{what} \"{path}\" is locked by another process: already running"),
    }
}

/// A number field of the table on top of the stack, as seconds.
fn seconds_field(s: Stack<'_>, t: c_int, name: &CStr) -> Duration {
    // SAFETY: `t` is an absolute index of a table; one value is pushed and popped.
    let v = unsafe {
        ffi::lua_getfield(s.raw(), t, name.as_ptr());
        let v = ffi::lua_tonumber(s.raw(), -1);
        ffi::lua_pop(s.raw(), 1);
        v
    };
    timer::seconds(v)
}

fn count_field(s: Stack<'_>, t: c_int, name: &CStr) -> u32 {
    // SAFETY: as in seconds_field.
    unsafe {
        ffi::lua_getfield(s.raw(), t, name.as_ptr());
        let v = ffi::lua_tointegerx(s.raw(), -1, std::ptr::null_mut());
        ffi::lua_pop(s.raw(), 1);
        v.clamp(0, u32::MAX as i64) as u32
    }
}

/// Per-pool data the worker needs besides what the master keeps.
struct PoolExtra {
    idle_timeout: Option<Duration>,
    interval_names: Vec<Vec<u8>>,
    main_name: Option<Vec<u8>>,
}

/// Converts the pool specs built by moonbridge.lua. Listener objects are taken over: their
/// Lua userdata are left empty, and the descriptors now belong to the server.
fn read_pools(s: Stack<'_>) -> LResult<(Vec<PoolSpec>, Vec<PoolExtra>)> {
    check_table(s, 1, 1, "serve")?;
    let mut pools = Vec::new();
    let mut extras = Vec::new();
    let l = s.raw();
    // SAFETY: the stack holds the specs table at index 1; every push below is popped.
    unsafe {
        let n = ffi::lua_rawlen(l, 1) as i64;
        for p in 1..=n {
            ffi::lua_rawgeti(l, 1, p as _);
            let t = ffi::lua_gettop(l);
            let config = PoolConfig {
                pre_fork: count_field(s, t, c"pre_fork"),
                min_fork: count_field(s, t, c"min_fork"),
                max_fork: count_field(s, t, c"max_fork").max(1),
                fork_delay: seconds_field(s, t, c"fork_delay"),
                fork_error_delay: seconds_field(s, t, c"fork_error_delay"),
                exit_delay: seconds_field(s, t, c"exit_delay"),
            };
            let idle = seconds_field(s, t, c"idle_timeout");
            let mut spec = PoolSpec {
                config,
                listeners: Vec::new(),
                intervals: Vec::new(),
                main: false,
            };
            let mut extra = PoolExtra {
                idle_timeout: (!idle.is_zero()).then_some(idle),
                interval_names: Vec::new(),
                main_name: None,
            };
            ffi::lua_getfield(l, t, c"listeners".as_ptr());
            let lt = ffi::lua_gettop(l);
            for i in 1..=ffi::lua_rawlen(l, lt) as i64 {
                ffi::lua_rawgeti(l, lt, i as _);
                ffi::lua_getfield(l, -1, c"listener".as_ptr());
                let listener = take_object::<Listener>(s, -1).ok_or_else(|| {
                    Misuse(format!(
                        "serve: listener #{i} of pool #{p} is not an open listener"
                    ))
                })?;
                spec.listeners.push(listener);
                ffi::lua_pop(l, 2);
            }
            ffi::lua_pop(l, 1);
            ffi::lua_getfield(l, t, c"intervals".as_ptr());
            let it = ffi::lua_gettop(l);
            for i in 1..=ffi::lua_rawlen(l, it) as i64 {
                ffi::lua_rawgeti(l, it, i as _);
                let iv = ffi::lua_gettop(l);
                let delay = seconds_field(s, iv, c"delay");
                ffi::lua_getfield(l, iv, c"strict".as_ptr());
                let strict = ffi::lua_toboolean(l, -1) != 0;
                ffi::lua_getfield(l, iv, c"name".as_ptr());
                extra
                    .interval_names
                    .push(s.to_bytes(-1).unwrap_or_default().to_vec());
                ffi::lua_pop(l, 3);
                spec.intervals.push(IntervalSpec { delay, strict });
            }
            ffi::lua_pop(l, 1);
            ffi::lua_getfield(l, t, c"main".as_ptr());
            if let Some(name) = s.to_bytes(-1) {
                spec.main = true;
                extra.main_name = Some(name.to_vec());
            }
            ffi::lua_pop(l, 2);
            pools.push(spec);
            extras.push(extra);
        }
    }
    Ok((pools, extras))
}

/// The worker object handed to the Lua worker loop.
struct WorkerObject {
    worker: Worker,
    extra: PoolExtra,
    /// What the last `next()` returned, for `done()`.
    current: Current,
    main_done: bool,
}

enum Current {
    None,
    Connection,
    Interval(u32),
    Main,
}

impl LuaObject for WorkerObject {
    const TNAME: &'static CStr = c"moonbridge worker";

    fn methods() -> &'static [(&'static CStr, ffi::lua_CFunction)] {
        &[
            (c"ready", worker_ready),
            (c"next", worker_next),
            (c"done", worker_done),
        ]
    }

    fn describe(&self) -> String {
        format!("moonbridge worker (pool #{})", self.worker.pool + 1)
    }
}

lua_fn! {
    /// serve(pools) -> "master", exit_code | "worker", pool_index, worker
    fn serve(s) {
        let (pools, mut extras) = read_pools(s)?;
        let result = LOGGER.with(|l| master::run(pools, &mut l.borrow_mut()));
        match result {
            Ok(Role::Exit(code)) => {
                s.push_str("master");
                s.push_int(code as i64);
                Ok(2)
            }
            Ok(Role::Worker(start)) => {
                let pool = start.pool;
                let extra = extras.swap_remove(pool);
                drop(extras);
                let worker = Worker::new(start, extra.idle_timeout);
                s.push_str("worker");
                s.push_int(pool as i64 + 1);
                push_object(s, WorkerObject { worker, extra, current: Current::None, main_done: false });
                Ok(3)
            }
            Err(e) => Err(Misuse(format!("server failure: {}", crate::io::sys::error_text(&e)))),
        }
    }
}

lua_fn! {
    fn worker_ready(s) {
        let w = check_self::<WorkerObject>(s, "ready")?;
        w.worker.report(Report::Ready);
        Ok(0)
    }
}

lua_fn! {
    /// next() -> "connection", socket | "interval", index, name | "main", nil, name
    ///         | nil, reason
    fn worker_next(s) {
        let w = check_self::<WorkerObject>(s, "next")?;
        if w.worker.main {
            if w.main_done {
                s.push_nil();
                s.push_str("main handler done");
                return Ok(2);
            }
            w.main_done = true;
            w.current = Current::Main;
            s.push_str("main");
            s.push_nil();
            s.push_bytes(w.extra.main_name.as_deref().unwrap_or_default());
            return Ok(3);
        }
        let job = w.worker.next_job().map_err(|e| Misuse(format!("worker: {}", crate::io::sys::error_text(&e))))?;
        match job {
            Job::Connection(h) => {
                w.current = Current::Connection;
                s.push_str("connection");
                push_handle(s, h);
                // remember the socket for done(): uservalue slot of the worker object
                // SAFETY: index 1 is the worker userdata; the handle is on top.
                unsafe {
                    ffi::lua_pushvalue(s.raw(), -1);
                    ffi::lua_setuservalue(s.raw(), 1);
                }
                Ok(2)
            }
            Job::Interval(i) => {
                w.current = Current::Interval(i);
                s.push_str("interval");
                s.push_int(i as i64 + 1);
                s.push_bytes(w.extra.interval_names.get(i as usize).map(|v| v.as_slice()).unwrap_or_default());
                Ok(3)
            }
            Job::Stop(reason) => {
                s.push_nil();
                s.push_str(match reason {
                    StopReason::Terminated => "terminated",
                    StopReason::IdleTimeout => "idle timeout",
                    StopReason::MasterGone => "master gone",
                });
                Ok(2)
            }
        }
    }
}

lua_fn! {
    /// done(ok): closes the connection if the handler left it open (reset after an error),
    /// and tells the master the job ended.
    fn worker_done(s) {
        let w = check_self::<WorkerObject>(s, "done")?;
        let ok = s.to_boolean(2);
        match std::mem::replace(&mut w.current, Current::None) {
            Current::Connection => {
                // SAFETY: index 1 is the worker userdata; its uservalue holds the socket.
                unsafe {
                    ffi::lua_getuservalue(s.raw(), 1);
                }
                if let Some(h) = crate::lua::state::to_object::<Handle>(s, -1) {
                    if !h.is_closed() {
                        let _ = if ok { h.close() } else { h.reset() };
                    }
                }
                s.pop(1);
                s.push_nil();
                // SAFETY: replaces the uservalue with nil so the socket can be collected.
                unsafe {
                    ffi::lua_setuservalue(s.raw(), 1);
                }
                w.worker.report(Report::Done);
            }
            Current::Interval(i) => w.worker.report(Report::IntervalDone(i)),
            Current::Main | Current::None => {}
        }
        Ok(0)
    }
}

fn push_secs(s: Stack<'_>, d: Duration) {
    s.push_number(d.as_secs_f64());
}

lua_fn! {
    /// timer_set(seconds) -> previous remaining seconds (0 disarms)
    fn timer_set(s) {
        let secs = s.check_number(1, 1, "timeout")?;
        let prev = timer::set(timer::seconds(secs)).map_err(|e| Misuse(format!("timeout: {e}")))?;
        push_secs(s, prev);
        Ok(1)
    }
}

lua_fn! {
    fn timer_remaining(s) {
        let left = timer::remaining().map_err(|e| Misuse(format!("timeout: {e}")))?;
        push_secs(s, left);
        Ok(1)
    }
}

lua_fn! {
    /// timer_sub(seconds) -> outer remaining, start time: arms the sub-timer.
    fn timer_sub(s) {
        let secs = s.check_number(1, 1, "timeout")?;
        let outer = timer::remaining().map_err(|e| Misuse(format!("timeout: {e}")))?;
        timer::set(timer::sub_timer(timer::seconds(secs), outer)).map_err(|e| Misuse(format!("timeout: {e}")))?;
        push_secs(s, outer);
        s.push_number(crate::io::signal::monotonic_seconds());
        Ok(2)
    }
}

lua_fn! {
    /// timer_restore(outer, start): the outer timer continues minus the elapsed time.
    fn timer_restore(s) {
        let outer = timer::seconds(s.check_number(1, 1, "timeout")?);
        let start = s.check_number(2, 2, "timeout")?;
        let elapsed = timer::seconds(crate::io::signal::monotonic_seconds() - start);
        timer::set(timer::outer_after(outer, elapsed)).map_err(|e| Misuse(format!("timeout: {e}")))?;
        Ok(0)
    }
}

lua_fn! {
    fn set_memory_limit(s) {
        let n = s.check_integer(1, 1, "set_memory_limit")?;
        if n < 0 {
            return Err(bad_arg(1, "set_memory_limit", "non-negative number expected"));
        }
        // SAFETY: the state of this call, used by this thread only.
        unsafe { crate::lua::memory::set_limit(s.raw(), n as usize) };
        Ok(0)
    }
}

lua_fn! {
    /// exit(code): ends a worker at once (no atexit handlers, no Lua state teardown, which
    /// would run __gc of inherited objects a second time).
    fn exit(s) {
        let code = s.opt_integer(1, 1, "exit")?.unwrap_or(0);
        // SAFETY: _exit terminates the process; nothing after it runs.
        unsafe { libc::_exit(code as c_int) }
    }
}

lua_fn! {
    fn daemonize(s) {
        match process::daemonize() {
            Ok(()) => {
                LOGGER.with(|l| l.borrow_mut().to_stderr = false);
                s.push_bool(true);
                Ok(1)
            }
            Err(e) => s.fail_os(&e),
        }
    }
}

lua_fn! {
    /// pidfile(path) -> true | nil, message, holder_pid (when locked)
    fn pidfile(s) {
        let path = String::from_utf8_lossy(s.check_bytes(1, 1, "pidfile")?).into_owned();
        match PidFile::acquire(&path) {
            Ok(pf) => {
                PIDFILE.with(|p| *p.borrow_mut() = Some(pf));
                s.push_bool(true);
                Ok(1)
            }
            Err(PidFileError::Locked(pid)) => {
                s.push_nil();
                s.push_str(&locked_message("PID file", &path, pid));
                s.push_int(pid.unwrap_or(0) as i64);
                Ok(3)
            }
            Err(PidFileError::Io(e)) => s.fail(&format!(
                "Could not write PID file \"{path}\": {}",
                crate::io::sys::error_text(&e)
            )),
        }
    }
}

lua_fn! {
    /// cleanup(): removes the pid file (master only).
    fn cleanup(s) {
        let _ = s;
        if let Some(pf) = PIDFILE.with(|p| p.borrow_mut().take()) {
            pf.remove();
        }
        Ok(0)
    }
}
