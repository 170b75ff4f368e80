//! The actors besides actuators (SPEC §1): watchers (§11) and model policies (§12) at run
//! time, and the read/write graph that finds loops between all of them (§15).

pub(crate) mod event;
pub(crate) mod feed;
pub(crate) mod guard;
pub mod loops;
pub(crate) mod police;
pub(crate) mod pull;
pub(crate) mod watch;

use std::sync::Arc;

use crate::engine::Engine;

/// The running pull and event steps of one engine (SPEC §13, §14), each a task of its own;
/// dropped, they stop.
pub(crate) struct Feeds {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Feeds {
    /// Starts every pull step's timer and every event step's consumer; `changed` hears of
    /// each write they make.
    pub(crate) fn start(engine: &Arc<Engine>, changed: &tokio::sync::mpsc::Sender<()>) -> Feeds {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..engine.svc.stepdefs.pulls.len() {
            tasks.push(tokio::spawn(pull::run(
                engine.clone(),
                i,
                rx.clone(),
                changed.clone(),
            )));
        }
        for steps in event::sources(engine) {
            tasks.push(tokio::spawn(event::run(
                engine.clone(),
                steps,
                rx.clone(),
                changed.clone(),
            )));
        }
        Feeds { stop, tasks }
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            // A poll or batch in flight is dropped unwritten, or its commit ends on its
            // own thread; either way nothing half-written remains.
            t.abort();
        }
    }
}
