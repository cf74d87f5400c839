//! Child processes for the tests: this test binary run again with one
//! (ignored) entry test selected and a role and its arguments in the
//! environment. The entry test calls [`current`] and does nothing in an
//! ordinary run.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

const ROLE_VAR: &str = "RELAYBURN_TEST_ROLE";
const ARGS_VAR: &str = "RELAYBURN_TEST_ARGS";
/// Joins the arguments in one variable; no argument contains it.
const SEP: char = '\u{1f}';

/// `<this test binary> --exact <entry> --ignored` in role `role`; stdin
/// closed, stdout and stderr inherited unless the caller changes them.
pub fn command<S: AsRef<str>>(entry: &str, role: &str, args: &[S]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        entry,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE_VAR, role)
    .env(
        ARGS_VAR,
        args.iter()
            .map(|a| a.as_ref())
            .collect::<Vec<_>>()
            .join(&SEP.to_string()),
    )
    .stdin(Stdio::null());
    c
}

/// The role and arguments of this process, when it is a child.
pub fn current() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let args = std::env::var(ARGS_VAR)
        .unwrap_or_default()
        .split(SEP)
        .map(str::to_string)
        .collect();
    Some((role, args))
}

/// Run the child in its own mount namespace, in which nothing propagates
/// back to ours; `bind` is bind-mounted onto itself there, read-only when
/// asked. Spawning fails where namespaces are not allowed.
pub fn private_mounts(cmd: &mut Command, bind: Option<&Path>, read_only: bool) {
    let bind = bind.map(|p| CString::new(p.as_os_str().as_bytes()).unwrap());
    let slash = CString::new("/").unwrap();
    // SAFETY: between fork and exec only async-signal-safe calls (unshare,
    // mount) run, on strings allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            let null = std::ptr::null();
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(null, slash.as_ptr(), null, private, null.cast()) != 0 {
                return fail();
            }
            if let Some(b) = &bind {
                if libc::mount(b.as_ptr(), b.as_ptr(), null, libc::MS_BIND, null.cast()) != 0 {
                    return fail();
                }
                let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                if read_only && libc::mount(null, b.as_ptr(), null, ro, null.cast()) != 0 {
                    return fail();
                }
            }
            Ok(())
        });
    }
}
