//! Server logging: one line per message, each prefixed `YYYY-MM-DD HH:MM:SS TZ: `, to
//! stderr, a log file (appended under an exclusive lock) and/or syslog. Multi-line messages
//! are logged line by line.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};

use crate::io::sys;
use crate::server::process::{lock_exclusive, PidFileError};

/// Where log lines go.
#[derive(Default)]
pub struct Logger {
    pub to_stderr: bool,
    file: Option<File>,
    syslog: bool,
    /// Keeps the ident string alive: openlog stores the pointer.
    _ident: Option<CString>,
    pub debug: bool,
    /// `-s`: log worker starts and exits with resource usage.
    pub stats: bool,
}

impl Logger {
    pub fn stderr() -> Self {
        Logger {
            to_stderr: true,
            ..Default::default()
        }
    }

    /// Appends to `path`, holding an exclusive lock for the life of the process.
    pub fn open_file(&mut self, path: &str) -> Result<(), PidFileError> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(PidFileError::Io)?;
        lock_file(&f)?;
        self.file = Some(f);
        Ok(())
    }

    /// Takes the log file's lock again in a new process (fcntl locks are not inherited, so
    /// a daemonized master must lock the file it inherited).
    pub fn relock(&self) -> Result<(), PidFileError> {
        match &self.file {
            Some(f) => lock_file(f),
            None => Ok(()),
        }
    }

    /// The log file's descriptor, whose lock a daemonizing master hands over.
    pub fn file_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// Logs to syslog with this ident and facility (LOG_DAEMON, LOG_USER, LOG_LOCAL0..7).
    pub fn open_syslog(&mut self, ident: &str, facility: i32) {
        let ident = CString::new(ident.replace('\0', "")).expect("NUL removed above");
        // SAFETY: `ident` is kept alive in self for as long as syslog may use it (until the
        // next `open_syslog`, which replaces it only after the new `openlog`).
        unsafe { sys::openlog(&ident, libc::LOG_PID | libc::LOG_NDELAY, facility) };
        self._ident = Some(ident);
        self.syslog = true;
    }

    /// Logs a message, one line per line of text.
    pub fn log(&mut self, message: &str) {
        let stamp = timestamp();
        for line in message.lines() {
            let text = format!("{stamp}: {line}\n");
            if self.to_stderr {
                let _ = io::stderr().write_all(text.as_bytes());
            }
            if let Some(f) = self.file.as_mut() {
                let _ = f.write_all(text.as_bytes());
            }
            if self.syslog {
                if let Ok(c) = CString::new(line.replace('\0', "")) {
                    sys::syslog(libc::LOG_NOTICE, &c);
                }
            }
        }
    }

    /// Logs only with `-s` (or `-d`).
    pub fn stats(&mut self, message: &str) {
        if self.stats || self.debug {
            self.log(message)
        }
    }

    /// Logs only in debug mode (`-d`).
    pub fn debug(&mut self, message: &str) {
        if self.debug {
            self.log(message)
        }
    }
}

fn lock_file(f: &File) -> Result<(), PidFileError> {
    // Never through a duplicate: closing any descriptor of the file drops the process's
    // fcntl locks on it.
    lock_exclusive(f)
}

/// Local time as `YYYY-MM-DD HH:MM:SS TZ`.
pub fn timestamp() -> String {
    let mut buf = [0u8; 64];
    let n = sys::local_time(c"%Y-%m-%d %H:%M:%S %Z", &mut buf);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        let b = t.as_bytes();
        assert!(t.len() >= 20, "{t}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16]),
            (b'-', b'-', b' ', b':', b':'),
            "{t}"
        );
    }
}
