//! Progress on stderr: shown only on a terminal, never with `--quiet` or
//! `--json`, so scripted output stays clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display that may be hidden.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// `visible` is the caller's wish; a non-terminal stderr hides it anyway.
    pub fn new(visible: bool, message: &str) -> Progress {
        let bar = if visible && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(message.to_string());
        Progress { bar }
    }

    /// Switch to a byte bar with throughput and ETA once the total is known.
    pub fn bytes(&self, done: u64, total: u64) {
        if self.bar.is_hidden() {
            return;
        }
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        self.bar.set_position(done);
    }

    pub fn set_message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    /// Switch to a bar of items (`unit`) once the total is known.
    pub fn items(&self, done: u64, total: u64, unit: &str) {
        if self.bar.is_hidden() {
            return;
        }
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
            self.bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ETA {{eta}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        self.bar.set_position(done);
    }

    /// A callback for library functions that report `(done, total)` bytes.
    pub fn callback(&self) -> impl FnMut(u64, u64) + '_ {
        move |done, total| self.bytes(done, total)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
