//! Every call into the C library, each with the reason it is sound.
//!
//! The rest of the library stays in safe Rust: it asks here whether a
//! process exists, what this host is called, how much CPU a thread used,
//! and links an unnamed file into place.

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

/// What `kill(pid, 0)` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Exists,
    /// `ESRCH`: no such process.
    Gone,
    /// `EPERM`: it exists, owned by someone we may not signal.
    NotPermitted,
    Unknown,
}

/// Probe `pid` with signal 0, which checks for existence and sends
/// nothing. Pids outside `1..=i32::MAX` are never probed: 0 and negative
/// values would address process groups.
pub(crate) fn probe(pid: u32) -> Probe {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Probe::Unknown;
    };
    if pid <= 0 {
        return Probe::Unknown;
    }
    // SAFETY: kill has no memory arguments; signal 0 delivers nothing.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Probe::Exists;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Probe::Gone,
        Some(libc::EPERM) => Probe::NotPermitted,
        _ => Probe::Unknown,
    }
}

/// This host's name, `None` when it cannot be read or is empty.
pub(crate) fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its whole length; the name
    // is NUL-terminated when it fits, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// User plus system CPU time of the calling thread; zero where it cannot
/// be read.
pub fn thread_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given,
    // which is valid and properly aligned.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: the call above succeeded, so the struct is initialised (and
    // it was zeroed before, so every field holds a valid integer anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW)`: give the
/// file `from` names (here a `/proc/self/fd/N` link to an unnamed file) the
/// new name `to`; fails with `EEXIST` when `to` exists.
pub(crate) fn link_following(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive
    // the call; linkat keeps no reference to them.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        assert_eq!(probe(std::process::id()), Probe::Exists);
        assert_eq!(probe(0), Probe::Unknown);
        assert_eq!(probe(u32::MAX), Probe::Unknown);
    }

    #[test]
    fn this_thread_has_used_some_cpu() {
        let start = thread_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(thread_cpu() >= start);
    }

    #[test]
    fn link_refuses_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "x").unwrap();
        link_following(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
        let e = link_following(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
