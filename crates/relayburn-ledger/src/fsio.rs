//! Durable file primitives shared by every writer: appends that never
//! leave a partial line, whole-file replacement through a temporary file
//! and a rename, and the identity of a file (device and inode) that tells
//! a replaced file from a grown one.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Which file a tracked offset belongs to, so a replaced file (a rename
/// over it) is noticed even when it happens to be longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    pub(crate) fn of(m: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn of(_m: &Metadata) -> FileId {
        FileId { dev: 0, ino: 0 }
    }
}

/// How far a file has been read, and which file that was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub(crate) id: Option<FileId>,
    pub(crate) offset: u64,
}

/// Append `payload` to `path` in one write, creating the file. A file that
/// does not end with `\n` (a writer died mid-line) first gets one, so the
/// fragment cannot swallow the new lines. A failed write is truncated back.
/// Returns the file, its length before and after.
pub(crate) fn append_bytes(path: &Path, payload: &[u8]) -> Result<(FileId, u64, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .ctx("open", path)?;
    let meta = f.metadata().ctx("stat", path)?;
    let prev = meta.len();
    let needs_newline = prev > 0 && last_byte(&mut f, prev).ctx("read", path)? != b'\n';
    let owned;
    let bytes: &[u8] = if needs_newline {
        let mut v = Vec::with_capacity(payload.len() + 1);
        v.push(b'\n');
        v.extend_from_slice(payload);
        owned = v;
        &owned
    } else {
        payload
    };
    if let Err(e) = f.write_all(bytes) {
        // Never leave a partial line a reader could take for a record.
        let _ = f.set_len(prev);
        return Err(Error::io("append to", path, e));
    }
    Ok((FileId::of(&meta), prev, prev + bytes.len() as u64))
}

pub(crate) fn last_byte(f: &mut File, len: u64) -> std::io::Result<u8> {
    f.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0])
}

/// Write `body` to `<path>.tmp` and rename it over `path`: readers see the
/// old file or the new one, never a part.
pub(crate) fn replace_file(path: &Path, body: &[u8]) -> Result<Tracked> {
    replace_file_via(path, &tmp_path(path), body)
}

/// [`replace_file`] through the temporary file `tmp` (beside `path`),
/// for writers that may race on one name and need a private one.
pub(crate) fn replace_file_via(path: &Path, tmp: &Path, body: &[u8]) -> Result<Tracked> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    }
    let written = File::create(tmp)
        .ctx("create", tmp)
        .and_then(|mut f| {
            f.write_all(body).ctx("write", tmp)?;
            f.metadata().ctx("stat", tmp)
        })
        .and_then(|meta| {
            std::fs::rename(tmp, path).ctx("rename into place", path)?;
            Ok(meta)
        });
    match written {
        Ok(meta) => Ok(Tracked {
            id: Some(FileId::of(&meta)),
            offset: meta.len(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// `<path>.tmp`, the name the reference uses for its atomic writes.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_repairs_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        append_bytes(&p, b"a\n").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"torn")
            .unwrap();
        let (_, prev, len) = append_bytes(&p, b"b\n").unwrap();
        assert_eq!((prev, len), (6, 9));
        assert_eq!(std::fs::read(&p).unwrap(), b"a\ntorn\nb\n");
    }

    #[test]
    fn a_failed_replace_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::create_dir(&p).unwrap();
        assert!(replace_file(&p, b"x").is_err());
        assert!(!tmp_path(&p).exists());
        let q = dir.path().join("g");
        let t = replace_file(&q, b"abc\n").unwrap();
        assert_eq!(t.offset, 4);
        assert_eq!(std::fs::read(&q).unwrap(), b"abc\n");
    }
}
