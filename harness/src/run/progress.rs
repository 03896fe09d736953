//! Progress on a terminal ([`RunOptions::progress`]): a spinner naming what the run is
//! doing now (building the fabric, adding pods, probe round N of a step) with the time
//! it has taken so far, and the finished stages as lines above it. Nothing at all when
//! progress is off (CI, no terminal, `--json`). A process runs one scenario at a terminal,
//! and stderr is one per process, so the spinner is process-wide: [`note`](super::note)
//! prints through it wherever it is called from.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::RunOptions;

static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> Option<ProgressBar> {
    ACTIVE.lock().ok().and_then(|g| g.clone())
}

/// Clears the spinner when the run ends, however it ends.
pub(super) struct Spinner(bool);

impl Drop for Spinner {
    fn drop(&mut self) {
        if self.0
            && let Ok(mut g) = ACTIVE.lock()
            && let Some(bar) = g.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// Starts the spinner if `opts.progress` says so and stderr is a terminal.
pub(super) fn start(opts: &RunOptions) -> Spinner {
    if !opts.progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return Spinner(false);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    match ACTIVE.lock() {
        Ok(mut g) => {
            *g = Some(bar);
            Spinner(true)
        }
        Err(_) => Spinner(false),
    }
}

/// What the run is doing now (shown next to the spinner; nothing without one).
pub(super) fn stage(msg: impl FnOnce() -> String) {
    if let Some(bar) = active() {
        bar.set_message(msg());
    }
}

/// A finished stage, as a line on stderr above the spinner.
pub(super) fn line(msg: &str) {
    match active() {
        Some(bar) => bar.println(format!("  {msg}")),
        None => eprintln!("  {msg}"),
    }
}

/// Runs `f` (which writes to the terminal or reads from it) with the spinner hidden.
pub(super) fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match active() {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}
