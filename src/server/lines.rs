//! Splits a worker's stderr stream into log lines. Pure: bytes in, lines out. A line longer
//! than the limit is logged cut with a marker and the rest of it is dropped, so one worker
//! can never make the master buffer without bound.

/// Longest worker stderr line logged whole.
pub const MAX_LINE: usize = 4000;

/// Collects bytes until complete lines are available.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Inside an over-long line whose beginning was already logged.
    skipping: bool,
}

impl Lines {
    /// Feeds `data`; calls `out(line, truncated)` for every line it completes.
    pub fn push(&mut self, mut data: &[u8], out: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let newline = memchr::memchr(b'\n', data);
            let end = newline.unwrap_or(data.len());
            let (part, rest) = data.split_at(end);
            if !self.skipping {
                let room = MAX_LINE - self.buf.len();
                if part.len() > room {
                    self.buf.extend_from_slice(&part[..room]);
                    out(&self.buf, true);
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if newline.is_some() {
                if !self.skipping {
                    out(&self.buf, false);
                    self.buf.clear();
                }
                self.skipping = false;
                data = &rest[1..];
            } else {
                data = rest;
            }
        }
    }

    /// At EOF: logs an unterminated last line.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            out(&self.buf, false);
            self.buf.clear();
        }
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut l = Lines::default();
        let mut got = Vec::new();
        let mut out = |line: &[u8], cut: bool| {
            got.push((String::from_utf8_lossy(line).into_owned(), cut));
        };
        for c in chunks {
            l.push(c, &mut out);
        }
        l.finish(&mut out);
        got
    }

    #[test]
    fn lines_whole_split_and_unterminated() {
        let want = vec![
            ("a".to_string(), false),
            ("bc".to_string(), false),
            ("".to_string(), false),
            ("d".to_string(), false),
        ];
        assert_eq!(collect(&[b"a\nbc\n\nd"]), want);
        // the same bytes one at a time
        let bytes = b"a\nbc\n\nd";
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect(&singles), want);
    }

    #[test]
    fn long_lines_are_cut_once_and_the_rest_dropped() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        for chunk in [7usize, 4096, input.len()] {
            let parts: Vec<&[u8]> = input.chunks(chunk).collect();
            let got = collect(&parts);
            assert_eq!(got.len(), 2, "chunk {chunk}");
            assert_eq!(got[0].0.len(), MAX_LINE);
            assert!(got[0].1);
            assert_eq!(got[1], ("next".to_string(), false));
        }
        // exactly MAX_LINE bytes then a newline is not cut, however it is split
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        let whole = vec![("y".repeat(MAX_LINE), false)];
        assert_eq!(collect(&[&exact]), whole);
        assert_eq!(collect(&[&exact[..MAX_LINE], b"\n"]), whole);
    }
}
