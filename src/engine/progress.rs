//! How a pass reports its progress to whoever shows it. The engine only counts; the front
//! end decides whether and how to draw (the CLI draws a bar on a terminal).

/// Told by the scheduler as a pass runs. Every method defaults to doing nothing.
pub trait Progress: Send + Sync {
    /// A pass starts with `jobs` objects to run.
    fn start(&self, jobs: usize) {
        let _ = jobs;
    }

    /// `n` more objects of the pass have finished.
    fn advance(&self, n: usize) {
        let _ = n;
    }

    /// The pass is over.
    fn finish(&self) {}

    /// A run of an object of `model` starts (rendering, then the backend call).
    fn run_started(&self, model: &str) {
        let _ = model;
    }

    /// That run ended: `phase` is `sync` or `delete`, `result` one of `ok`, `error`,
    /// `deferred`, `unchanged` (a suspect whose recipe had not changed), after `secs`.
    fn run_finished(&self, model: &str, phase: &str, result: &str, secs: f64) {
        let _ = (model, phase, result, secs);
    }

    /// The event step `step` has `behind` messages on its bus still to apply, as its
    /// consumer learned with its last batch (0: caught up).
    fn event_lag(&self, step: &str, behind: u64) {
        let _ = (step, behind);
    }
}

/// The default reporter: nothing is shown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
