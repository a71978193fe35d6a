//! Progress on standard error while a run goes on (indicatif). Bars draw only
//! on a terminal, so `--json` piped into a program stays clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `len` steps of `what` (`"sent"`, `"appended"` ...).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:32}] {pos}/{len} {per_sec:>12} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

/// A spinner for a step without a known length.
pub fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(what.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    spinner
}
