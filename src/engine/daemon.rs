//! `stepsync run` (SPEC §5.5): passes whenever something may have changed — a write by
//! another process (noticed through file events, not polling), a retry or resync time, a
//! deferred object's next try — and a graceful stop on SIGINT/SIGTERM.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::Engine;
use crate::error::{Error, Result};
use crate::store::Millis;

/// How often to look at the store when file events are unavailable.
const FALLBACK_POLL: Duration = Duration::from_millis(500);
/// How often to look at the store while `LISTEN/NOTIFY` wakes the daemon: the hints cover
/// every committed change, and the poll covers what sends none — a dead worker's claims
/// expiring, the leader's lease coming free — so it is a third of the lease ttl (a claim
/// is taken over within ttl + ttl/3), at most this.
const LISTENED_POLL_MAX: Duration = Duration::from_secs(5);

/// The poll while listening, for a lease `ttl` (see [`LISTENED_POLL_MAX`]).
fn listened_poll(ttl: Duration) -> Duration {
    (ttl / 3).clamp(FALLBACK_POLL, LISTENED_POLL_MAX)
}

/// The longest sleep with nothing scheduled; a safety net, not the change detector.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// How long the daemon lets the writes of pull and event steps gather before a pass, at
/// least; a pass that took longer makes the next wait that many times its length (below).
const FEED_SETTLE: Duration = Duration::from_millis(200);
/// Under a steady stream of feed writes the wait before the next pass is this many times the
/// last pass's length: a pass loads the store, so back-to-back passes over a store that a
/// stream keeps growing would take most of the CPU from the stream itself (B8 measured
/// twice as much pass CPU as ingest CPU with a fixed 200 ms). This keeps passes to at most
/// a third of the time while the stream lasts; objects wait at most that long for their run.
const FEED_SETTLE_RATIO: u32 = 4;
/// The longest wait for feed writes to gather: a pass that was long because its runs were
/// (a slow backend, not the store) must not hold back the stream's objects for long.
const FEED_SETTLE_MAX: Duration = Duration::from_secs(2);

/// How long the daemon lets a burst of file events settle before it reloads the service
/// (an editor's save is several events).
const RELOAD_SETTLE: Duration = Duration::from_millis(100);

impl Engine {
    /// Runs until SIGINT or SIGTERM; runs in flight then finish and are recorded. When the
    /// service's own files change (stepdefs, playbooks, roles, schemas, `stepsync.yaml`), it
    /// calls `reload` for an engine on the new definitions and goes on with that one; a
    /// service that no longer loads is reported and the running definitions kept.
    pub async fn run_daemon(
        self: &Arc<Self>,
        reload: &(dyn Fn() -> Result<Engine> + Sync),
    ) -> Result<()> {
        let _part = self.take_part()?;
        info!(
            service = %self.svc.config.name,
            store = %self.svc.config.store,
            sys_dir = %self.sys.root().display(),
            lease_ttl = %self.svc.config.lease.ttl,
            pid = std::process::id(),
            "started"
        );
        let mut engine = self.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut signals = Signals::new();
            signals.next().await;
            info!(
                "stopping: no new runs; waiting for runs in flight (a second signal stops at once)"
            );
            let _ = stop_tx.send(true);
            signals.next().await;
            // As after a crash: what was in flight is not recorded and stays pending, so no
            // intent is lost; the runs are tried again on the next start.
            warn!("second signal: stopping at once; runs in flight are abandoned");
            std::process::exit(SECOND_SIGNAL_EXIT);
        });
        let (change_tx, mut changes) = mpsc::channel::<()>(1);
        // Kept alive for the life of the loop: dropping them stops the events.
        let _listener = self.store.listen(change_tx.clone());
        let _watcher = self.watch_store(change_tx);
        let (edit_tx, mut edits) = mpsc::channel::<()>(1);
        let _svc_watcher = self.watch_service(edit_tx);
        let listened_poll = listened_poll(self.svc.config.lease.ttl.0);
        if _listener.is_some() {
            info!(
                "woken by LISTEN/NOTIFY; checking the store every {} ms as well ({} ms while not listening)",
                listened_poll.as_millis(),
                FALLBACK_POLL.as_millis()
            );
        } else if _watcher.is_none() {
            warn!(
                "file events unavailable; checking the store every {} ms",
                FALLBACK_POLL.as_millis()
            );
        }
        let mut marker = self.store.change_marker()?;
        let mut stop = stop_rx.clone();
        // Pull and event steps write on their own timers and streams; each write they
        // make wakes the loop.
        let (fed_tx, mut fed) = mpsc::channel::<()>(1);
        // Only the leader runs them on a shared store (SPEC §17); a worker that comes to lead
        // starts them before its next pass.
        let mut feeds = engine
            .leads()
            .then(|| crate::steps::Feeds::start(&engine, &fed_tx));
        let mut housekept = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            // The leader's housekeeping, about every ttl/3 (as often as a worker beats).
            if engine.leads() && housekept.elapsed() >= listened_poll {
                housekept = tokio::time::Instant::now();
                if let Err(e) = tokio::task::block_in_place(|| engine.housekeep()) {
                    warn!(error = %e, "housekeeping failed; trying again later");
                }
            }
            if feeds.is_none() && engine.leads() {
                feeds = Some(crate::steps::Feeds::start(&engine, &fed_tx));
            } else if feeds.is_some() && !engine.leads() {
                // Demoted (paused past the ttl, another worker leads now).
                feeds = None;
            }
            let mut done = HashSet::new();
            let wake = super::scheduler::Wake {
                events: &mut changes,
                marker: &mut marker,
            };
            let pass_started = tokio::time::Instant::now();
            engine.pass(&mut done, &stop_rx, Some(wake)).await?;
            let feed_settle =
                (pass_started.elapsed() * FEED_SETTLE_RATIO).clamp(FEED_SETTLE, FEED_SETTLE_MAX);
            if *stop.borrow() {
                break;
            }
            let wake = engine.next_wake()?;
            let poll = if _watcher.is_some() {
                IDLE_WAKE
            } else if _listener.as_ref().is_some_and(|l| l.live()) {
                listened_poll
            } else {
                FALLBACK_POLL
            };
            let sleep = tokio::time::sleep(wake.min(poll));
            tokio::pin!(sleep);
            // Wait for a change by another process, the next scheduled time, or a stop.
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = stop.changed() => break,
                    Some(()) = fed.recv() => {
                        // A busy stream commits a batch every few milliseconds: one pass
                        // takes up what a short while brought, rather than one pass a batch.
                        tokio::select! {
                            _ = tokio::time::sleep(feed_settle) => {}
                            _ = stop.changed() => {}
                        }
                        while fed.try_recv().is_ok() {}
                        break;
                    }
                    Some(()) = changes.recv() => {
                        if self.store.change_marker()? != marker {
                            break;
                        }
                    }
                    Some(()) = edits.recv() => {
                        tokio::time::sleep(RELOAD_SETTLE).await;
                        while edits.try_recv().is_ok() {}
                        match tokio::task::block_in_place(reload) {
                            Ok(e) => {
                                info!("service files changed; running on the new definitions");
                                engine = Arc::new(e.with_worker(&engine));
                                drop(feeds);
                                feeds = engine
                                    .leads()
                                    .then(|| crate::steps::Feeds::start(&engine, &fed_tx));
                                break;
                            }
                            Err(e) => warn!(error = %e, "service files changed but do not load; keeping the running definitions"),
                        }
                    }
                }
            }
            // Polling without events: only a changed marker or a due time warrants a pass.
            marker = self.store.change_marker()?;
        }
        drop(feeds);
        info!("stopped");
        Ok(())
    }

    /// How long until something is due: a retry, a resync, or a deferred object's next try.
    fn next_wake(&self) -> Result<Duration> {
        let now = Millis::now();
        let mut next = IDLE_WAKE;
        let at =
            |t: Millis| Duration::from_millis(u64::try_from((t.0 - now.0).max(0)).unwrap_or(0));
        // Watched changes this runner's own runs wrote (their feedback) wake nobody else.
        if self.watchers_waiting()? {
            return Ok(Duration::from_millis(10));
        }
        // Without a resync period only failed, deferred and policy-failed objects can come
        // due by the clock: reading those alone keeps a pass over a large store from ending
        // in a read of every row (B8: after every pass while a stream lasted).
        let candidates = if self.resyncs() {
            self.store.list(None)?
        } else {
            self.store.waking()?
        };
        for o in candidates {
            if let Some(t) = crate::bookkeeping::wake_at(&o.book, now, &self.rules(&o.model)) {
                next = next.min(at(t));
            }
            // A failed policy is tried again after its own backoff (SPEC §12).
            if let Some(t) = crate::bookkeeping::policy_wake_at(&o.book) {
                next = next.min(at(t));
            }
        }
        Ok(next.max(Duration::from_millis(10)))
    }

    /// Events for the service's own files: `stepsync.yaml`, the inventory and
    /// `model-deps.json` in its folder (not the objects files beside them), and the
    /// stepdefs, playbooks and schemas folders, whole.
    fn watch_service(&self, tx: mpsc::Sender<()>) -> Option<Vec<notify::RecommendedWatcher>> {
        use notify::{RecursiveMode, Watcher};
        let dir = &self.svc.dir;
        let src = &self.svc.sources;
        let names: Vec<std::ffi::OsString> = std::iter::once(&src.config)
            .chain(&src.inventory)
            .chain(&src.model_deps)
            .filter(|p| p.parent() == Some(dir.as_path()))
            .filter_map(|p| p.file_name().map(|n| n.to_owned()))
            .collect();
        let edits = move |ev: &notify::Event| !matches!(ev.kind, notify::EventKind::Access(_));
        let root_tx = tx.clone();
        let mut root = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && edits(&ev)
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
            {
                let _ = root_tx.try_send(());
            }
        })
        .ok()?;
        root.watch(dir, RecursiveMode::NonRecursive).ok()?;
        let mut folders = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Reads and metadata touches change nothing a recipe is made of.
            if ev.is_ok_and(|e| edits(&e)) {
                let _ = tx.try_send(());
            }
        })
        .ok()?;
        for sub in [
            crate::stepdef::STEPDEFS_DIR,
            crate::payload::playbook::PLAYBOOKS_DIR,
            crate::service::SCHEMAS_DIR,
        ] {
            let p = dir.join(sub);
            if p.is_dir() {
                // A folder that cannot be watched leaves the rest watched.
                let _ = folders.watch(&p, RecursiveMode::Recursive);
            }
        }
        Some(vec![root, folders])
    }

    fn watch_store(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let dir = self.store.watch_path()?.parent()?.to_path_buf();
        let dir = if dir.as_os_str().is_empty() {
            std::path::PathBuf::from(".")
        } else {
            dir
        };
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                // A full channel already holds a wake-up; dropping this one loses nothing.
                let _ = tx.try_send(());
            }
        })
        .ok()?;
        w.watch(&dir, notify::RecursiveMode::NonRecursive).ok()?;
        Some(w)
    }
}

/// The exit code after a second SIGINT/SIGTERM: 128 + SIGINT, as shells report Ctrl-C.
const SECOND_SIGNAL_EXIT: i32 = 130;

/// SIGINT and SIGTERM, listened to once for the daemon's life so no second signal is lost.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                streams: signal(SignalKind::interrupt())
                    .and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A runtime for the engine's commands.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("cannot start the runtime: {e}")))
}
