//! The process title: what `ps` and `top` show for the master and each worker
//! (`moonbridge: master app.lua`, `moonbridge: worker pool #1 app.lua`) instead of the
//! interpreter's command line (`lua5.4 -e package.path=... /path/moonbridge app.lua`).
//!
//! Two places hold what tools show, and [`set_title`] writes both:
//! - the *comm* name (`/proc/<pid>/comm`, `ps -o comm`, `top`): set with
//!   `prctl(PR_SET_NAME)`, which the kernel truncates to 15 bytes;
//! - the *argv area* (`/proc/<pid>/cmdline`, `ps -o args`): the bytes of the original
//!   `argv` strings, which the kernel reads straight from the process's memory between
//!   `arg_start` and `arg_end`. There is no system call for it: the bytes are overwritten.
//!
//! The library is loaded by the stock `lua` interpreter, so it never sees `main`'s `argv`.
//! The area is found from `/proc/self/stat` (fields 48 and 49, `arg_start` and `arg_end`,
//! see proc(5)) and written only after every check passes; otherwise only the comm name
//! changes:
//! - both fields parse, `arg_start < arg_end`;
//! - the whole range lies inside one private, readable and writable mapping of
//!   `/proc/self/maps` (normally the main thread's stack), so the writes cannot fault;
//! - the memory holds exactly what `/proc/self/cmdline` reports (the kernel reads the same
//!   range), so the range really is the argv area as the kernel sees it.
//!
//! The title is written NUL-padded inside `[arg_start, arg_end)`, never beyond (the
//! environment follows), truncated so that the last byte stays NUL. A NUL last byte also
//! keeps the kernel reading the area as-is instead of its `setproctitle` special case.
//!
//! Overwriting is safe for the interpreter: `lua.c` copied the arguments into the `arg`
//! table before running any Lua code. Pointers into the area that remain see the title
//! (every one of them still ends at a NUL): glibc's `program_invocation_name` (used in
//! some libc messages) and `lua.c`'s program name (the prefix of its "uncaught error"
//! message). Each process writes its own copy of the area, so a forked worker sets its own
//! title without touching the master's. (Rust's `std::env::args` would see the title too;
//! the crate never calls it.) Nothing here knows about Lua.

use std::io;

/// Longest comm name: the kernel keeps 16 bytes including the terminating NUL.
pub const COMM_LEN: usize = 15;

/// The argv area of this process: `[start, end)` in its address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgvArea {
    pub start: usize,
    pub end: usize,
}

impl ArgvArea {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Sets the comm name and, where the argv area checks out, the command line. Returns
/// whether the command line was rewritten. A NUL byte ends the title.
///
/// Call it only while the process has one thread (the server never starts any): another
/// thread could be reading the area.
pub fn set_title(title: &[u8]) -> io::Result<bool> {
    let title = title.split(|&b| b == 0).next().unwrap_or_default();
    set_comm(title)?;
    let Some(area) = argv_area() else {
        return Ok(false);
    };
    let bytes = padded(title, area.len());
    // SAFETY: `argv_area` checked that [start, end) lies inside one readable and writable
    // private mapping of this process and holds the argv strings the kernel reports. No
    // Rust value owns or borrows that memory (it belongs to the C runtime's startup data,
    // which the interpreter only reads), this process is single-threaded, and exactly
    // `area.len()` bytes are written, the last one NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area.start as *mut u8, bytes.len());
    }
    Ok(true)
}

/// `prctl(PR_SET_NAME)` with the title truncated to [`COMM_LEN`] bytes.
fn set_comm(title: &[u8]) -> io::Result<()> {
    let mut name = [0u8; COMM_LEN + 1];
    let n = title.len().min(COMM_LEN);
    name[..n].copy_from_slice(&title[..n]);
    // `name` ends with a NUL (its last byte is never written), so this always finds one.
    let name = std::ffi::CStr::from_bytes_until_nul(&name)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    crate::io::sys::set_comm_name(name)
}

/// The title as the `len` bytes to write: truncated to `len - 1` bytes, NUL-padded.
pub fn padded(title: &[u8], len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    let n = title.len().min(len.saturating_sub(1));
    bytes[..n].copy_from_slice(&title[..n]);
    bytes
}

/// The argv area of this process, if every check of the module doc passes.
pub fn argv_area() -> Option<ArgvArea> {
    let stat = std::fs::read("/proc/self/stat").ok()?;
    let area = parse_stat_area(&stat)?;
    let maps = std::fs::read("/proc/self/maps").ok()?;
    if !inside_writable_mapping(&maps, area) {
        return None;
    }
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    if cmdline.len() != area.len() {
        return None;
    }
    // SAFETY: the range lies inside a readable mapping of this process (checked above), and
    // nothing writes to it while this shared slice lives (single-threaded; dropped below).
    let memory = unsafe { std::slice::from_raw_parts(area.start as *const u8, area.len()) };
    (memory == cmdline.as_slice()).then_some(area)
}

/// Fields 48 and 49 (`arg_start`, `arg_end`) of a `/proc/<pid>/stat` line. The comm name
/// (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat_area(stat: &[u8]) -> Option<ArgvArea> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // `rest` starts with field 3 (state).
    let mut fields = rest.split_ascii_whitespace().skip(48 - 3);
    let start = fields.next()?.parse::<usize>().ok()?;
    let end = fields.next()?.parse::<usize>().ok()?;
    (start != 0 && start < end).then_some(ArgvArea { start, end })
}

/// Whether `area` lies inside one mapping of `/proc/<pid>/maps` text that is readable,
/// writable and private (`rw-p`).
pub fn inside_writable_mapping(maps: &[u8], area: ArgvArea) -> bool {
    let Ok(text) = std::str::from_utf8(maps) else {
        return false;
    };
    text.lines().any(|line| {
        let mut parts = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            return false;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            return false;
        };
        perms.starts_with("rw") && perms.ends_with('p') && lo <= area.start && area.end <= hi
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line with `comm` and the given arg_start/arg_end (other fields made up).
    fn stat_line(comm: &str, start: usize, end: usize) -> Vec<u8> {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[0] = "S".into();
        fields[48 - 3] = start.to_string();
        fields[49 - 3] = end.to_string();
        format!("1234 ({comm}) {}\n", fields.join(" ")).into_bytes()
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let area = ArgvArea {
            start: 0x7ffd_0000,
            end: 0x7ffd_0040,
        };
        assert_eq!(
            parse_stat_area(&stat_line("lua5.4", 0x7ffd_0000, 0x7ffd_0040)),
            Some(area)
        );
        assert_eq!(
            parse_stat_area(&stat_line("a) (b c) d", 0x7ffd_0000, 0x7ffd_0040)),
            Some(area)
        );
    }

    #[test]
    fn stat_lines_that_do_not_check_out_give_none() {
        assert_eq!(parse_stat_area(&stat_line("x", 10, 10)), None);
        assert_eq!(parse_stat_area(&stat_line("x", 20, 10)), None);
        assert_eq!(parse_stat_area(&stat_line("x", 0, 10)), None);
        assert_eq!(parse_stat_area(b"1234 (x) S 1 2 3"), None, "too few fields");
        assert_eq!(parse_stat_area(b"1234 x S 1 2 3"), None, "no comm");
        // a garbled field 48 or 49 gives none
        let line = String::from_utf8(stat_line("x", 10, 20)).unwrap();
        assert_eq!(
            parse_stat_area(line.replace(" 10 20 ", " 1O 20 ").as_bytes()),
            None
        );
        assert_eq!(
            parse_stat_area(line.replace(" 10 20 ", " 10 -20 ").as_bytes()),
            None
        );
    }

    #[test]
    fn the_area_must_lie_inside_one_private_writable_mapping() {
        let maps = b"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/lua5.4\n\
                     7ffd1000-7ffd3000 rw-p 00000000 00:00 0 [stack]\n\
                     7ffd3000-7ffd4000 rw-s 00000000 00:00 0 /dev/shm/x\n";
        let inside = ArgvArea {
            start: 0x7ffd_2000,
            end: 0x7ffd_3000,
        };
        assert!(inside_writable_mapping(maps, inside));
        let across = ArgvArea {
            start: 0x7ffd_2000,
            end: 0x7ffd_3001,
        };
        assert!(!inside_writable_mapping(maps, across), "runs past the end");
        let shared = ArgvArea {
            start: 0x7ffd_3000,
            end: 0x7ffd_3010,
        };
        assert!(!inside_writable_mapping(maps, shared), "shared mapping");
        let code = ArgvArea {
            start: 0x0040_1000,
            end: 0x0040_1010,
        };
        assert!(!inside_writable_mapping(maps, code), "not writable");
        assert!(!inside_writable_mapping(b"garbage\n", inside));
    }

    #[test]
    fn titles_are_nul_padded_and_truncated_to_keep_a_final_nul() {
        assert_eq!(padded(b"abc", 6), b"abc\0\0\0");
        assert_eq!(padded(b"abcdef", 6), b"abcde\0");
        assert_eq!(padded(b"abc", 1), b"\0");
        assert_eq!(padded(b"", 3), b"\0\0\0");
    }

    #[test]
    fn this_process_has_an_argv_area_matching_its_cmdline() {
        // The test harness is a normal executable, so its argv area must check out.
        let area = argv_area().expect("argv area of the test process");
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(area.len(), cmdline.len());
        assert!(!area.is_empty());
    }
}
