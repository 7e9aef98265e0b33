//! Progress bars on stderr (`indicatif`), drawn only when stderr is a terminal and `--quiet`
//! is not given; otherwise every call is a no-op, so pipes and logs stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Set by `--quiet`: no progress bars and no informational lines on stderr.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Records `--quiet` for the whole run.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints an informational line on stderr unless `--quiet`.
pub fn note(line: &str) {
    if !quiet() {
        eprintln!("{line}");
    }
}

fn shown() -> bool {
    !quiet() && std::io::stderr().is_terminal()
}

/// A bar or spinner that may be hidden.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of `len` units (`bytes`: shown as sizes) labelled `what`.
    pub fn bar(len: u64, what: &str, bytes: bool) -> Progress {
        if !shown() {
            return Progress(None);
        }
        let template = if bytes {
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"
        } else {
            "{msg:>10} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let b = ProgressBar::new(len).with_style(style);
        b.set_message(what.to_string());
        Progress(Some(b))
    }

    /// A spinner with the elapsed time, for work of unknown length.
    pub fn spinner(what: &str) -> Progress {
        if !shown() {
            return Progress(None);
        }
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let b = ProgressBar::new_spinner().with_style(style);
        b.set_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(100));
        Progress(Some(b))
    }

    /// Advances by `n` units.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
