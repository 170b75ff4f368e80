//! The engine's `Progress`, drawn with indicatif: a bar on stderr for passes long enough to
//! want one, and only on a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use stepsync::engine::progress::Progress;

/// Passes with fewer objects than this finish before a bar would tell anything.
const MIN_JOBS: usize = 20;

/// The bar being drawn, process-wide: log lines on stderr are written around it
/// ([`suspend`]), so a line never lands in the middle of the bar.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

fn with(f: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
    // A poisoned lock only means an earlier update panicked; the bar is still usable.
    let mut bar = BAR.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut bar);
}

/// Runs `f` (a write to stderr) with the bar, if one is shown, cleared for its duration.
pub(crate) fn suspend<T>(f: impl FnOnce() -> T) -> T {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(b) if !b.is_hidden() => b.suspend(f),
        _ => f(),
    }
}

/// A bar per pass; the daemon's passes each get their own.
#[derive(Default)]
pub(crate) struct Bar;

impl Progress for Bar {
    fn start(&self, jobs: usize) {
        let bar = if jobs < MIN_JOBS || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(u64::try_from(jobs).unwrap_or(u64::MAX));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} objects [{elapsed}] {wide_bar}",
            ) {
                bar.set_style(style);
            }
            bar
        };
        with(|b| {
            if let Some(old) = b.replace(bar) {
                old.finish_and_clear();
            }
        });
    }

    fn advance(&self, n: usize) {
        with(|b| {
            if let Some(bar) = b {
                bar.inc(u64::try_from(n).unwrap_or(0));
            }
        });
    }

    fn finish(&self) {
        with(|b| {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        });
    }
}
