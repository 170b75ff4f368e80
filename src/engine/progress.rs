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
}

/// The default reporter: nothing is shown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
