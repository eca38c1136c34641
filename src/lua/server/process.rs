//! Process-level duties of the launcher, for `moonbridge_core`: logging set-up, the pid file,
//! running in the background, the process title, checking listen addresses (`-t`), and
//! ending a worker.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};

use mlua::ffi;

use crate::io::net;
use crate::io::sys::error_text;
use crate::lua::net::check_port;
use crate::lua::stack::{bad_arg, lua_fn, Stack};
use crate::server::log::Logger;
use crate::server::process::{self, PidFile, PidFileError};
use crate::server::title;

thread_local! {
    pub static LOGGER: RefCell<Logger> = RefCell::new(Logger::stderr());
    static PIDFILE: RefCell<Option<PidFile>> = const { RefCell::new(None) };
}

pub fn log(message: &str) {
    LOGGER.with(|l| l.borrow_mut().log(message));
}

lua_fn! {
    /// log(message): one timestamped line per line of text.
    pub fn core_log(s) {
        let msg = s.check_bytes(1, 1, "log")?;
        log(&String::from_utf8_lossy(msg));
        Ok(0)
    }
}

/// Pushes field `name` of the table at index 1 and returns its type.
fn field(s: Stack<'_>, name: &CStr) -> c_int {
    // index 1 is checked to be a table by the caller
    s.get_field(1, name)
}

/// A string field of the table at index 1.
fn string_field(s: Stack<'_>, name: &CStr) -> Option<String> {
    let text = (field(s, name) == ffi::LUA_TSTRING)
        .then(|| String::from_utf8_lossy(s.to_bytes(-1).unwrap_or_default()).into_owned());
    s.pop(1);
    text
}

fn bool_field(s: Stack<'_>, name: &CStr) -> bool {
    field(s, name);
    let v = s.to_boolean(-1);
    s.pop(1);
    v
}

/// `"DAEMON"`, `"USER"` or `"0"`..`"7"` (LOCAL0..7) as a syslog facility.
fn facility(name: Option<&str>) -> c_int {
    match name {
        Some("USER") => libc::LOG_USER,
        Some(d) if d.len() == 1 && (b'0'..=b'7').contains(&d.as_bytes()[0]) => {
            libc::LOG_LOCAL0 + ((d.as_bytes()[0] - b'0') as c_int) * 8
        }
        _ => libc::LOG_DAEMON,
    }
}

pub fn locked_message(what: &str, path: &str, pid: Option<i32>) -> String {
    match pid {
        Some(p) => {
            format!("{what} \"{path}\" is locked by another process (PID {p}): already running")
        }
        None => format!("{what} \"{path}\" is locked by another process: already running"),
    }
}

lua_fn! {
    /// log_config{file=, syslog=, facility=, ident=, stderr=, debug=, stats=}
    /// -> true | nil, message, holder_pid (when the log file is locked)
    pub fn log_config(s) {
        if s.type_of(1) != ffi::LUA_TTABLE {
            return Err(s.expected(1, 1, "log_config", "table"));
        }
        let mut logger = Logger::default();
        logger.to_stderr = bool_field(s, c"stderr");
        logger.debug = bool_field(s, c"debug");
        logger.stats = bool_field(s, c"stats");
        if bool_field(s, c"syslog") {
            let ident = string_field(s, c"ident");
            let fac = string_field(s, c"facility");
            logger.open_syslog(ident.as_deref().unwrap_or("moonbridge"), facility(fac.as_deref()));
        }
        if let Some(path) = string_field(s, c"file") {
            match logger.open_file(&path) {
                Ok(()) => {}
                Err(PidFileError::Locked(pid)) => {
                    s.push_nil();
                    s.push_str(&locked_message("Log file", &path, pid));
                    s.push_int(pid.unwrap_or(0) as i64);
                    return Ok(3);
                }
                Err(PidFileError::Io(e)) => {
                    return s.fail(&format!("Could not open log file \"{path}\": {}", error_text(&e)));
                }
            }
        }
        LOGGER.with(|l| *l.borrow_mut() = logger);
        s.push_bool(true);
        Ok(1)
    }
}

lua_fn! {
    /// exit(code): ends a worker at once (no atexit handlers, no Lua state teardown, which
    /// would run __gc of inherited objects a second time).
    pub fn exit(s) {
        let code = s.opt_integer(1, 1, "exit")?.unwrap_or(0);
        // SAFETY: _exit terminates the process; nothing after it runs.
        unsafe { libc::_exit(code as c_int) }
    }
}

lua_fn! {
    /// daemonize() -> true | nil, message. Called once the listeners are open and the pid
    /// file is taken. Returns in the background process only, once it holds the pid file and
    /// log file locks again; the launching process waits for that and exits 0, or prints why
    /// the daemon could not take over and exits 2 (a lock taken meanwhile) or 3.
    pub fn daemonize(s) {
        let pid_fd = PIDFILE.with(|p| p.borrow().as_ref().map(PidFile::raw_fd));
        let log_fd = LOGGER.with(|l| l.borrow().file_fd());
        let locks: Vec<_> = pid_fd.into_iter().chain(log_fd).collect();
        let detached = match process::daemonize(&locks) {
            Ok(d) => d,
            Err(e) => return s.fail_os(&e),
        };
        let relocked = PIDFILE
            .with(|p| p.borrow_mut().as_mut().map_or(Ok(()), PidFile::take_over))
            .map_err(|e| ("PID file", e))
            .and_then(|()| {
                LOGGER.with(|l| {
                    let mut l = l.borrow_mut();
                    l.to_stderr = false;
                    l.relock().map_err(|e| ("Log file", e))
                })
            });
        let (code, message) = match relocked {
            Ok(()) => {
                detached.ready();
                s.push_bool(true);
                return Ok(1);
            }
            Err((what, PidFileError::Locked(pid))) => {
                let holder = pid.map_or(String::new(), |p| format!(" (PID {p})"));
                (2, format!("{what} is locked by another process{holder}: already running"))
            }
            Err((what, PidFileError::Io(e))) => (3, format!("{what}: {}", error_text(&e))),
        };
        detached.fail(code, &message);
        // SAFETY: _exit ends the daemon, which has nothing to clean up yet.
        unsafe { libc::_exit(code as c_int) }
    }
}

lua_fn! {
    /// pidfile(path) -> true | nil, message, holder_pid (when locked)
    pub fn pidfile(s) {
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
                error_text(&e)
            )),
        }
    }
}

lua_fn! {
    /// cleanup(): removes the pid file (master only).
    pub fn cleanup(s) {
        let _ = s;
        if let Some(pf) = PIDFILE.with(|p| p.borrow_mut().take()) {
            pf.remove();
        }
        Ok(0)
    }
}

lua_fn! {
    /// set_title(title) -> true (the command line shows it) | false (only the 15-byte comm
    /// name could be set) | nil, message (prctl failed)
    pub fn set_title(s) {
        let title = s.check_bytes(1, 1, "set_title")?;
        if title.contains(&0) {
            return Err(bad_arg(1, "set_title", "string contains a NUL byte"));
        }
        match title::set_title(title) {
            Ok(rewritten) => {
                s.push_bool(rewritten);
                Ok(1)
            }
            Err(e) => s.fail_os(&e),
        }
    }
}

lua_fn! {
    /// resolve(host, port) -> true | nil, message: whether `tcplisten(host, port)` would find
    /// an address to bind to (the same resolution; nothing is bound).
    pub fn resolve(s) {
        let host = s.check_bytes(1, 1, "resolve")?;
        let port = check_port(s, 2, "resolve")?;
        match net::check_listen_address(host, port) {
            Ok(()) => {
                s.push_bool(true);
                Ok(1)
            }
            Err(message) => s.fail(&message),
        }
    }
}
