//! The `Date` response header (RFC 9110 §5.6.7 IMF-fixdate, e.g.
//! `Sun, 06 Nov 1994 08:49:37 GMT`), formatted from Unix seconds without the C library
//! (whose `strftime` follows the locale) and cached per second by [`DateCache`].

/// Length of an IMF-fixdate.
pub const DATE_LEN: usize = 29;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Formats `secs` (seconds since 1970-01-01 UTC, not before it) as an IMF-fixdate.
pub fn imf_fixdate(secs: u64) -> [u8; DATE_LEN] {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.min(9999);
    two_digits(&mut out[12..14], y / 100);
    two_digits(&mut out[14..16], y % 100);
    two_digits(&mut out[17..19], rem / 3600);
    two_digits(&mut out[20..22], rem / 60 % 60);
    two_digits(&mut out[23..25], rem % 60);
    out
}

fn two_digits(dst: &mut [u8], n: u64) {
    dst[0] = b'0' + (n / 10 % 10) as u8;
    dst[1] = b'0' + (n % 10) as u8;
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, by the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`, for non-negative inputs).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The header line `Date: <IMF-fixdate>\r\n`, rebuilt at most once per second.
#[derive(Clone, Debug)]
pub struct DateCache {
    secs: u64,
    line: [u8; DATE_LEN + 8],
}

impl Default for DateCache {
    fn default() -> Self {
        let mut line = [0u8; DATE_LEN + 8];
        line[..6].copy_from_slice(b"Date: ");
        line[6 + DATE_LEN..].copy_from_slice(b"\r\n");
        // formatted on first use: a new connection usually copies the line of the second
        // the previous one formatted (see `update`)
        DateCache {
            secs: u64::MAX,
            line,
        }
    }
}

thread_local! {
    /// The date last formatted by any cache of this thread: connections are short, the
    /// second is mostly the same.
    static LAST: std::cell::Cell<(u64, [u8; DATE_LEN])> =
        const { std::cell::Cell::new((u64::MAX, [0; DATE_LEN])) };
}

impl DateCache {
    /// The header line for the time `secs`.
    pub fn line(&mut self, secs: u64) -> &[u8] {
        if secs != self.secs {
            self.update(secs);
        }
        &self.line
    }

    fn update(&mut self, secs: u64) {
        let date = match LAST.get() {
            (last, date) if last == secs => date,
            _ => {
                let date = imf_fixdate(secs);
                LAST.set((secs, date));
                date
            }
        };
        self.secs = secs;
        self.line[6..6 + DATE_LEN].copy_from_slice(&date);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let rows: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (1_798_761_599, "Thu, 31 Dec 2026 23:59:59 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for &(secs, text) in rows {
            assert_eq!(std::str::from_utf8(&imf_fixdate(secs)).unwrap(), text);
        }
    }

    #[test]
    fn caches_give_the_line_of_the_second_asked() {
        let line = |secs| {
            format!(
                "Date: {}\r\n",
                std::str::from_utf8(&imf_fixdate(secs)).unwrap()
            )
        };
        let (mut a, mut b) = (DateCache::default(), DateCache::default());
        for secs in [784_111_777, 784_111_777, 784_111_778, 0, 0, 784_111_777] {
            assert_eq!(a.line(secs), line(secs).as_bytes());
            // a second cache, after the thread's last date was set by the first
            assert_eq!(b.line(secs), line(secs).as_bytes());
            assert_eq!(b.line(secs + 1), line(secs + 1).as_bytes());
        }
    }

    /// Every day for 1000 years against a naive day-by-day calendar walk.
    #[test]
    fn calendar_matches_a_naive_walk() {
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        for days in 0..365_250u64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }

    #[test]
    fn cache_rebuilds_when_the_second_changes() {
        let mut c = DateCache::default();
        assert_eq!(c.line(0), b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
        assert_eq!(c.line(61), b"Date: Thu, 01 Jan 1970 00:01:01 GMT\r\n");
        assert_eq!(c.line(61), b"Date: Thu, 01 Jan 1970 00:01:01 GMT\r\n");
    }
}
