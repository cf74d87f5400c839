//! The one JSONL scanner every reader shares: byte offsets, torn tails,
//! blank and malformed lines.
//!
//! Lines end at `\n`. A final line without `\n` is reported as not
//! terminated: queries still parse it (Node's readline emits it), while the
//! archive treats it as torn and reads it again next time.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::js;
use crate::json::{self, Value};

/// Lines longer than this cannot be held by the reference (V8 caps strings
/// near 2^29 characters), so they are skipped and reported, never buffered.
pub const MAX_LINE_BYTES: usize = 512 << 20;

const CHUNK: usize = 1 << 20;

/// One physical line of a JSONL file.
#[derive(Debug)]
pub struct RawLine<'a> {
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// The line without its `\n`; empty for an over-long line.
    pub bytes: &'a [u8],
    /// Whether a `\n` ended it (false only for the last line of the file).
    pub terminated: bool,
    /// The line exceeded [`MAX_LINE_BYTES`] and its bytes were discarded.
    pub oversized: bool,
}

impl RawLine<'_> {
    /// Offset just past this line (and its newline).
    pub fn end(&self, len: u64) -> u64 {
        self.offset + len + u64::from(self.terminated)
    }
}

/// Streams the lines of a reader with their byte offsets, in bounded memory
/// (one chunk plus the longest line).
pub struct LineScanner<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Offset of `buf[start]` in the source.
    pos: u64,
}

impl LineScanner<File> {
    /// Open `path` and start at byte `from`.
    pub fn open_at(path: &Path, from: u64) -> io::Result<LineScanner<File>> {
        use std::io::{Seek, SeekFrom};
        let mut f = File::open(path)?;
        if from > 0 {
            f.seek(SeekFrom::Start(from))?;
        }
        Ok(LineScanner::new(f, from))
    }
}

impl<R: Read> LineScanner<R> {
    /// Scan `src`, whose first byte is at offset `base` of the file.
    pub fn new(src: R, base: u64) -> LineScanner<R> {
        LineScanner {
            src,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            pos: base,
        }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// After a long line, give its memory back rather than hold it for
    /// the rest of the file.
    fn shrink(&mut self) {
        let pending = self.end - self.start;
        if self.buf.len() > 4 * CHUNK && pending <= CHUNK / 2 {
            let mut fresh = vec![0; CHUNK];
            fresh[..pending].copy_from_slice(&self.buf[self.start..self.end]);
            self.buf = fresh;
            self.start = 0;
            self.end = pending;
        }
    }

    /// The next line, or `None` at end of input.
    pub fn next_line(&mut self) -> io::Result<Option<RawLine<'_>>> {
        self.shrink();
        let mut searched = self.start;
        let mut oversized = false;
        let mut skipped: u64 = 0;
        loop {
            if let Some(i) = memchr(b'\n', &self.buf[searched..self.end]) {
                let nl = searched + i;
                let line_start = self.start;
                let offset = self.pos;
                let len = (nl - line_start) as u64;
                self.pos += len + 1;
                self.start = nl + 1;
                if oversized {
                    return Ok(Some(RawLine {
                        offset: offset - skipped,
                        bytes: &[],
                        terminated: true,
                        oversized: true,
                    }));
                }
                return Ok(Some(RawLine {
                    offset,
                    bytes: &self.buf[line_start..nl],
                    terminated: true,
                    oversized: false,
                }));
            }
            if self.eof {
                if self.start == self.end && !oversized {
                    return Ok(None);
                }
                let offset = self.pos;
                let len = (self.end - self.start) as u64;
                let line_start = self.start;
                self.pos += len;
                self.start = self.end;
                if oversized {
                    return Ok(Some(RawLine {
                        offset: offset - skipped,
                        bytes: &[],
                        terminated: false,
                        oversized: true,
                    }));
                }
                return Ok(Some(RawLine {
                    offset,
                    bytes: &self.buf[line_start..self.end],
                    terminated: false,
                    oversized: false,
                }));
            }
            if self.end - self.start >= MAX_LINE_BYTES {
                // Drop what we have of this line and keep looking for its end.
                let dropped = (self.end - self.start) as u64;
                skipped += dropped;
                self.pos += dropped;
                self.start = self.end;
                oversized = true;
            }
            searched = self.end;
            let before = self.start;
            self.fill()?;
            searched -= before;
        }
    }
}

/// Position of the first `needle` in `hay`, eight bytes per step.
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w) ^ pattern;
        // High bit of each zero byte; only the lowest one is exact.
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(base + (zeros.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// What a reader makes of one line.
#[derive(Debug)]
pub enum Parsed {
    /// Nothing but whitespace.
    Blank,
    /// Not JSON (or over-long): skipped by every reader.
    Malformed(String),
    Value(Value),
}

/// Decode bytes the way Node's `utf8` stream decoding does: invalid
/// sequences become U+FFFD.
pub fn decode(bytes: &[u8]) -> Cow<'_, str> {
    // Valid UTF-8 is the rule; the strict check is much faster than the
    // lossy decoder's walk.
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Parse one line as `JSON.parse(line.trim())`.
pub fn parse_line(bytes: &[u8]) -> Parsed {
    let text = decode(bytes);
    parse_text(&text)
}

fn parse_text(text: &str) -> Parsed {
    let t = js::trim(text);
    if t.is_empty() {
        return Parsed::Blank;
    }
    match json::parse(t) {
        Ok(v) => Parsed::Value(v),
        Err(e) => Parsed::Malformed(e.to_string()),
    }
}

/// Node's readline also ends a line at a lone `\r`. For the rare physical
/// line that holds one, the readers see several logical lines.
pub fn for_each_logical(bytes: &[u8], mut f: impl FnMut(Parsed)) {
    let inner = match bytes.last() {
        Some(b'\r') => &bytes[..bytes.len() - 1],
        _ => bytes,
    };
    if !inner.contains(&b'\r') {
        f(parse_line(bytes));
        return;
    }
    let text = decode(inner);
    for part in text.split('\r') {
        f(parse_text(part));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
        let mut s = LineScanner::new(data, 0);
        let mut out = Vec::new();
        while let Some(l) = s.next_line().unwrap() {
            out.push((l.offset, l.bytes.to_vec(), l.terminated));
        }
        out
    }

    #[test]
    fn offsets_and_torn_tail() {
        let got = lines(b"ab\n\ncd\nef");
        assert_eq!(
            got,
            vec![
                (0, b"ab".to_vec(), true),
                (3, b"".to_vec(), true),
                (4, b"cd".to_vec(), true),
                (7, b"ef".to_vec(), false)
            ]
        );
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"x\n"), vec![(0, b"x".to_vec(), true)]);
    }

    #[test]
    fn lines_longer_than_a_chunk() {
        let long = vec![b'a'; CHUNK * 3 + 7];
        let mut data = long.clone();
        data.extend_from_slice(b"\nshort\n");
        let got = lines(&data);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, long);
        assert_eq!(got[1], ((CHUNK * 3 + 8) as u64, b"short".to_vec(), true));
    }

    #[test]
    fn js_trim_and_lossy_decode() {
        assert!(matches!(parse_line(b"  \t\r"), Parsed::Blank));
        assert!(matches!(
            parse_line("\u{feff}{}".as_bytes()),
            Parsed::Value(_)
        ));
        assert!(matches!(parse_line(b"{\"a\":1}\r"), Parsed::Value(_)));
        assert!(matches!(parse_line(b"{broken"), Parsed::Malformed(_)));
        match parse_line(b"{\"a\":\"\xff\"}") {
            Parsed::Value(v) => assert_eq!(v.get("a").unwrap().as_str(), Some("\u{fffd}")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lone_cr_splits_logical_lines() {
        let mut n = 0;
        for_each_logical(b"{\"a\":1}\r{\"b\":2}", |p| {
            assert!(matches!(p, Parsed::Value(_)));
            n += 1;
        });
        assert_eq!(n, 2);
    }
}
