//! `moonbridge_core`: the process primitives behind `lua/moonbridge.lua` and the launcher:
//! `serve` (the master loop, returning in each forked worker with a worker object), the
//! worker's `ready`/`next`/`done`, timers, memory limit, logging, pid file, daemonizing,
//! the process title (`set_title`) and the launcher's listen-address check (`resolve`).
//! Loaded from the same shared object as `moonbridge_io`
//! (`package.loadlib(..., "luaopen_moonbridge_core")`), so listener and handle userdata are
//! shared.

mod process;
pub mod timer;

use std::ffi::{c_int, CStr};
use std::time::Duration;

use crate::io::net::Listener;
use crate::io::Handle;
use crate::lua::fields::Fields;
use crate::lua::handle::push_handle;
use crate::lua::object::{
    check_self, push_object, push_upvalue, retire, take_object, to_object, LuaObject,
};
use crate::lua::stack::{bad_arg, lua_fn, Functions, LResult, Raise, Stack};
use crate::server::master::{self, PoolSpec, Role};
use crate::server::pool::PoolConfig;
use crate::server::timed::TimedKind;
use crate::server::timer::seconds as to_duration;
use crate::server::worker::{Next, Worker};

/// Registers the worker object type (its methods table is left on the stack).
pub fn register(s: Stack<'_>) {
    crate::lua::object::register_type::<WorkerObject>(s);
}

pub const FUNCTIONS: Functions = &[
    (c"log", process::core_log),
    (c"log_config", process::log_config),
    (c"serve", serve),
    (c"timer_set", timer::timer_set),
    (c"timer_clear", timer::timer_clear),
    (c"timer_parking", timer::timer_parking),
    (c"timer_remaining", timer::timer_remaining),
    (c"timer_sub", timer::timer_sub),
    (c"timer_restore", timer::timer_restore),
    (c"set_memory_limit", timer::set_memory_limit),
    (c"use_small_blocks", timer::use_small_blocks),
    (c"exit", process::exit),
    (c"daemonize", process::daemonize),
    (c"pidfile", process::pidfile),
    (c"cleanup", process::cleanup),
    (c"set_title", process::set_title),
    (c"resolve", process::resolve),
    (c"coop_handlers", crate::lua::coop::coop_handlers),
    (c"fd_of", fd_of),
    (c"close_handle", crate::lua::handle::close_if_open),
    (c"defer_accept", defer_accept),
];

lua_fn! {
    /// defer_accept(listener, seconds) -> true | nil, message: the `defer_accept` field of
    /// a TCP listener (see `Listener::defer_accept`).
    fn defer_accept(s) {
        let seconds = s.check_integer(2, 2, "defer_accept")?;
        let l = to_object::<Listener>(s, 1)
            .ok_or_else(|| s.expected(1, 1, "defer_accept", "moonbridge_io listener"))?;
        match l.defer_accept(seconds.clamp(0, i32::MAX as i64) as i32) {
            Ok(()) => {
                s.push_bool(true);
                Ok(1)
            }
            Err(e) => s.fail_os(&e),
        }
    }
}

lua_fn! {
    /// fd_of(handle) -> the descriptor of an open handle, or nil (for the scheduler of a
    /// concurrent worker, when a handler yields a handle as the `_yield` forms do).
    fn fd_of(s) {
        match to_object::<Handle>(s, 1).and_then(|h| h.raw_fd()) {
            Some(fd) => s.push_int(fd as i64),
            None => s.push_nil(),
        }
        Ok(1)
    }
}

/// A timed listener as the worker sees it: what to pass to the handler.
#[derive(Debug)]
struct TimedName {
    main: bool,
    name: Vec<u8>,
}

/// Per-pool data the worker needs besides what the master keeps.
struct PoolExtra {
    idle_timeout: Option<Duration>,
    timed: Vec<TimedName>,
    concurrency: u32,
}

/// Converts the pool specs built by moonbridge.lua (validated there, every default filled
/// in). Listener objects are taken over: their Lua userdata are left empty, and the
/// descriptors belong to the server.
fn read_pools(s: Stack<'_>) -> LResult<(Vec<PoolSpec>, Vec<PoolExtra>)> {
    let mut pools = Vec::new();
    let mut extras = Vec::new();
    let seconds = |t: Fields<'_>, name| t.number(name).map(to_duration);
    Fields::new(s, 1, "serve")?.each_table(|p, t| {
        let config = PoolConfig {
            pre_fork: t.count(c"pre_fork")?,
            min_fork: t.count(c"min_fork")?,
            max_fork: t.count(c"max_fork")?.max(1),
            fork_delay: seconds(t, c"fork_delay")?,
            fork_error_delay: seconds(t, c"fork_error_delay")?,
            exit_delay: seconds(t, c"exit_delay")?,
        };
        let idle = seconds(t, c"idle_timeout")?;
        let mut spec = PoolSpec {
            config,
            listeners: Vec::new(),
            timed: Vec::new(),
        };
        let mut extra = PoolExtra {
            idle_timeout: (!idle.is_zero()).then_some(idle),
            timed: Vec::new(),
            concurrency: t.count(c"concurrency")?,
        };
        t.table(c"listeners", |lt| {
            lt.each(|i, s| {
                let listener = take_object::<Listener>(s, -1).ok_or_else(|| {
                    Raise(format!(
                        "serve: listener #{i} of pool #{p} is not an open listener"
                    ))
                })?;
                spec.listeners.push(listener);
                Ok(())
            })
        })?;
        t.table(c"timed", |tt| {
            tt.each_table(|_, e| {
                let main = e.bytes(c"kind")? == b"main";
                spec.timed.push(if main {
                    TimedKind::Main
                } else {
                    TimedKind::Interval {
                        delay: seconds(e, c"delay")?,
                        strict: e.boolean(c"strict")?,
                    }
                });
                extra.timed.push(TimedName {
                    main,
                    name: e.bytes(c"name")?,
                });
                Ok(())
            })
        })?;
        pools.push(spec);
        extras.push(extra);
        Ok(())
    })?;
    Ok((pools, extras))
}

lua_fn! {
    /// serve(pools) -> "master", exit_code | "worker", pool_index, worker
    ///              | nil, message (internal error of the master)
    fn serve(s) {
        let (pools, mut extras) = read_pools(s)?;
        let result = process::LOGGER.with(|l| master::run(pools, &mut l.borrow_mut()));
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
                let mut worker = Worker::new(start, extra.idle_timeout);
                worker.set_capacity(extra.concurrency);
                s.push_str("worker");
                s.push_int(pool as i64 + 1);
                push_object(s, WorkerObject { worker, timed: extra.timed });
                Ok(3)
            }
            Err(e) => s.fail(&format!("Server failure: {}", crate::io::sys::error_text(&e))),
        }
    }
}

/// The worker object handed to the Lua worker loop.
struct WorkerObject {
    worker: Worker,
    timed: Vec<TimedName>,
}

impl LuaObject for WorkerObject {
    const TNAME: &'static CStr = c"moonbridge worker";
    /// `next`'s kind of a connection job, pushed once per connection (upvalue 1).
    const UPVALUE_STRINGS: &'static [&'static str] = &["connection"];

    fn methods() -> Functions {
        &[
            (c"ready", worker_ready),
            (c"next", worker_next),
            (c"done", worker_done),
            (c"leaving", worker_leaving),
            (c"try_next", worker_try_next),
            (c"watch", worker_watch),
            (c"wait_ready", worker_wait_ready),
            (c"handler_done", worker_handler_done),
        ]
    }

    fn describe(&self) -> String {
        format!("moonbridge worker (pool #{})", self.worker.pool + 1)
    }
}

lua_fn! {
    /// ready(): `prepare` is done; the master may count on this worker.
    fn worker_ready(s) {
        let w = check_self::<WorkerObject>(s, "ready")?;
        w.worker.ready();
        Ok(0)
    }
}

lua_fn! {
    /// next() -> "connection", socket | "interval", name | "main", name | nil, reason
    fn worker_next(s) {
        let w = check_self::<WorkerObject>(s, "next")?;
        let next = w
            .worker
            .next_job()
            .map_err(worker_error)?;
        push_next(s, &w.timed, next)
    }
}

/// Pushes a job as `next` returns it.
fn push_next(s: Stack<'_>, timed: &[TimedName], next: Next) -> LResult<c_int> {
    match next {
        Next::Connection(h) => {
            push_upvalue(s, 1); // "connection", without hashing it again
            push_handle(s, h);
        }
        Next::Timed(j) => {
            let (main, name) = timed
                .get(j as usize)
                .map_or((false, &[][..]), |t| (t.main, &t.name[..]));
            s.push_str(if main { "main" } else { "interval" });
            s.push_bytes(name);
        }
        Next::Stop(reason) => {
            s.push_nil();
            s.push_str(reason.text());
        }
    }
    Ok(2)
}

fn worker_error(e: std::io::Error) -> Raise {
    Raise(format!("worker: {}", crate::io::sys::error_text(&e)))
}

lua_fn! {
    /// try_next() -> as next(), or nil, "block" when no job can be taken now (concurrent
    /// pools: nothing pending, or no free slot).
    fn worker_try_next(s) {
        let w = check_self::<WorkerObject>(s, "try_next")?;
        match w.worker.try_job().map_err(worker_error)? {
            Some(next) => push_next(s, &w.timed, next),
            None => {
                s.push_nil();
                s.push_str("block");
                Ok(2)
            }
        }
    }
}

lua_fn! {
    /// watch(fd): wait_ready reports the descriptor when it may be ready.
    fn worker_watch(s) {
        let fd = s.check_integer(2, 1, "watch")?;
        let w = check_self::<WorkerObject>(s, "watch")?;
        let fd = i32::try_from(fd).map_err(|_| bad_arg(1, "watch", "descriptor expected"))?;
        w.worker.watch(fd).map_err(worker_error)?;
        Ok(0)
    }
}

lua_fn! {
    /// wait_ready(timeout, accepting, ready): waits until a job may be taken, a watched
    /// descriptor is ready, or SIGTERM; stores the ready descriptors in the table `ready`
    /// (1..n, cleared after them) and returns n. `timeout`: seconds or nil (no limit).
    fn worker_wait_ready(s) {
        let timeout = match s.is_nil(2) {
            true => None,
            false => Some(to_duration(s.check_number(2, 1, "wait_ready")?)),
        };
        let accepting = s.to_boolean(3);
        if s.type_of(4) != mlua::ffi::LUA_TTABLE {
            return Err(s.expected(4, 3, "wait_ready", "table"));
        }
        let w = check_self::<WorkerObject>(s, "wait_ready")?;
        let mut ready = Vec::new();
        w.worker.wait_ready(timeout, accepting, &mut ready).map_err(worker_error)?;
        let n = ready.len() as i64;
        for (i, fd) in ready.into_iter().enumerate() {
            s.push_int(fd as i64);
            s.raw_set_index(4, i as i64 + 1);
        }
        s.push_nil();
        s.raw_set_index(4, n + 1);
        s.push_int(n);
        Ok(1)
    }
}

lua_fn! {
    /// handler_done(timed): a handler started from try_next ended.
    fn worker_handler_done(s) {
        let timed = s.to_boolean(2);
        let w = check_self::<WorkerObject>(s, "handler_done")?;
        w.worker.handler_done(timed);
        Ok(0)
    }
}

lua_fn! {
    /// done(ok, socket): closes the connection if the handler left it open (gracefully when
    /// the handler returned, with a reset after an error), retires the socket object (its
    /// fields read as nil from now on, see `object::retire`), and tells the master the job
    /// ended.
    fn worker_done(s) {
        let ok = s.to_boolean(2);
        if let Some(h) = to_object::<Handle>(s, 3) {
            if !h.is_closed() {
                let _ = if ok { h.close() } else { h.reset() };
            }
            retire::<Handle>(s, 3);
        }
        let w = check_self::<WorkerObject>(s, "done")?;
        w.worker.job_done();
        Ok(0)
    }
}

lua_fn! {
    /// leaving(): this worker takes no more jobs (it is about to run `finish` and exit).
    fn worker_leaving(s) {
        let w = check_self::<WorkerObject>(s, "leaving")?;
        w.worker.leaving();
        Ok(0)
    }
}
