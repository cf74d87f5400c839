//! Child processes for the tests: this test binary run again with one
//! (ignored) entry test selected and a role and its arguments in the
//! environment. The entry test calls [`current`] and does nothing in an
//! ordinary run.

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
