//! The scheduler (SPEC §5.2, §5.3): one pass runs every pending object as soon as the
//! objects it depends on are in sync — concurrently, up to `concurrency` overall and each
//! stepdef's own `concurrency`, never the same object twice — and blocks only the dependents
//! of what failed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span};

use super::graph::{Dep, ObjectGraph};
use super::queue::ReadyQueue;
use super::{Engine, Outcome, RunError, Summary, SysFailure};
use crate::bookkeeping;
use crate::error::Result;
use crate::snapshot::Snapshot;
use crate::store::{Intent, Millis, ObjectRecord, RunRecord, Status};
use crate::sysdir::Phase;

/// How long a stopping daemon waits for runs in flight before abandoning them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone)]
pub struct PassStats {
    /// The store's totals, when the pass found nothing to do and read nothing else.
    pub idle: Option<crate::store::Counts>,
    /// Objects that became ok or were purged.
    pub progress: usize,
    pub ran: usize,
    pub failed: usize,
    pub deferred: usize,
    pub blocked: usize,
    /// Suspects rendered again whose recipe had not changed.
    pub unchanged: usize,
    /// Objects whose deletion finished: gone from the store.
    pub purged: usize,
    /// Runs left to another worker of a shared store (it holds their claims), with the
    /// jobs waiting on them (SPEC §17).
    pub elsewhere: usize,
}

/// What a finished task hands back to the pass.
struct Finished {
    /// The object as the run read it when it started: its outcome is weighed against that.
    obj: Arc<ObjectRecord>,
    phase: Phase,
    outcome: (Outcome, String),
}

/// How a daemon's pass hears, while runs are in flight, that another process changed the
/// store: it then takes the new work on at once instead of after the slowest run.
pub(crate) struct Wake<'a> {
    pub(crate) events: &'a mut tokio::sync::mpsc::Receiver<()>,
    /// The store's change marker as last seen.
    pub(crate) marker: &'a mut i64,
}

/// Ordering key of pending work: deletes (dependents first) before syncs (dependencies first),
/// then by key, or on a shared store first in the worker's own order ([`super::worker::Worker::spread`]).
type OrderKey = (usize, u64, String, i64);

/// The state of one pass: the objects, what is pending and what runs.
struct Pass<'a> {
    engine: &'a Arc<Engine>,
    world: Arc<Snapshot>,
    graph: ObjectGraph,
    /// The pending jobs, grouped by model for the stepdefs' `concurrency`.
    queue: ReadyQueue<i64, OrderKey, String>,
    /// Each job's phase, for as long as it is in the queue.
    phases: HashMap<i64, Phase>,
    /// Jobs that are suspects (SPEC §5.1 rules 4–5): rendered first, sent only if their
    /// recipe changed.
    checks: HashSet<i64>,
    stats: PassStats,
    /// Bookkeeping writes that need no run log, flushed in one transaction.
    writes: Vec<(Arc<ObjectRecord>, RunRecord)>,
    /// Finished runs being recorded (store, run logs, `status.json`) off the scheduler's
    /// thread; their jobs stay in flight until the record is committed.
    recording: JoinSet<Result<Recorded>>,
    /// Finished runs that wait for the recording under way, to be recorded together when it
    /// ends (a group commit): runs end one by one, and one transaction each is a BEGIN, a
    /// COMMIT and each statement's round trip per outcome.
    held: Vec<Finished>,
    /// A recorded outcome found a newer intent (a change or delete that arrived while the
    /// run was in flight): the pass looks for due work again instead of leaving it to the
    /// next pass, which the daemon would only make on the next change.
    recollect: bool,
    /// A recorded feedback change made in-sync referrers suspects (SPEC §5.1 rule 5): the
    /// pass reloads the objects to check them now.
    reload: bool,
    /// Jobs whose run ended and whose outcome is being recorded: they stay in flight for
    /// their dependents, but no longer use the backend, so they do not count against
    /// `concurrency`.
    recording_jobs: usize,
    /// Runs claimed and read again (see [`Pass::claimed`]) but not started yet, in the
    /// queue's order: in flight for the queue, but not using the backend.
    ahead: std::collections::VecDeque<i64>,
}

/// A batch of finished runs as recorded.
struct Recorded {
    batch: Vec<Finished>,
    recs: Vec<Option<ObjectRecord>>,
    failed: Vec<SysFailure>,
    /// Referrers that became suspects.
    marked: usize,
}

/// How often a pass reads the store again for other processes' commits. Each reload reads
/// every object, and on a shared store every outcome another worker commits wakes this one
/// (B11: three workers woke each other ~150 times a second, and each reload of 3,000
/// objects held the scheduler up from starting runs). So a reload waits until the pass
/// has spent [`REFRESH_SPACING`] times the last one's cost since it ended: at most a sixth
/// of the pass goes to reloading, and the wakes in between fold into the next one.
#[derive(Default)]
struct RefreshPace {
    /// When a folded wake is reloaded.
    due: Option<tokio::time::Instant>,
    last: Option<(Instant, Duration)>,
}

/// See [`RefreshPace`].
const REFRESH_SPACING: u32 = 5;

impl RefreshPace {
    /// Whether to reload now (`timer`: the folded wake's time has come); if not, the time
    /// to do it is set.
    fn now_or_later(&mut self, timer: bool) -> bool {
        if timer {
            self.due = None;
            return true;
        }
        let Some((ended, cost)) = self.last else {
            return true;
        };
        let at = ended + cost * REFRESH_SPACING;
        if Instant::now() >= at {
            return true;
        }
        self.due.get_or_insert(tokio::time::Instant::from_std(at));
        false
    }

    fn refreshed(&mut self, cost: Duration) {
        self.last = Some((Instant::now(), cost));
        self.due = None;
    }
}

impl Engine {
    /// One pass. `done` holds (id, generation) pairs already synced in this run, so a
    /// `--once` run actuates an object at most once per generation.
    pub(crate) async fn pass(
        self: &Arc<Self>,
        done: &mut HashSet<(i64, i64)>,
        shutdown: &watch::Receiver<bool>,
        mut wake: Option<Wake<'_>>,
    ) -> Result<PassStats> {
        let started = Instant::now();
        // Nothing pending and no periodic resync: nothing can be due, so skip loading every
        // object and building the graph (an idle pass over 100,000 objects is one query).
        // Objects in error are pending too (their generation is not synced), so backoff
        // retries still come through the full pass.
        // Folders a killed runner left half written are mended before anything is run (an
        // empty journal is one small query).
        self.repair()?;
        // Definitions edited since the store last saw them make their synced objects
        // suspects; comparing a digest per model is all an idle pass pays for rule 4.
        crate::store::sync_definitions(&*self.store, &self.definitions.digests())?;
        // Watched changes first (an empty outbox is one small query), then the policies,
        // whose writes may fire watchers again; actuators see the state after both.
        self.drain_watchers()?;
        if self.police()? {
            self.drain_watchers()?;
        }
        let settled = self.settle_without_runs(done)?;
        let counts = self.store.counts()?;
        if !self.resyncs() && counts.pending == 0 && counts.suspect == 0 {
            tracing::debug!(
                ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "idle pass: nothing pending"
            );
            return Ok(PassStats {
                idle: (settled == 0).then_some(counts),
                progress: settled,
                ..PassStats::default()
            });
        }
        let (world, graph) = self.world_now()?;
        let mut pass = Pass {
            engine: self,
            world,
            graph,
            queue: ReadyQueue::default(),
            phases: HashMap::new(),
            checks: HashSet::new(),
            stats: PassStats {
                progress: settled,
                ..PassStats::default()
            },
            writes: Vec::new(),
            recording: JoinSet::new(),
            held: Vec::new(),
            recollect: false,
            reload: false,
            recording_jobs: 0,
            ahead: std::collections::VecDeque::new(),
        };
        pass.collect(done)?;
        self.progress.start(pass.queue.len());
        let limit = usize::try_from(self.svc.config.concurrency.get()).unwrap_or(usize::MAX);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut pace = RefreshPace::default();
        /// What the pass waits for next.
        enum Next {
            Ran(Option<std::result::Result<Finished, tokio::task::JoinError>>),
            Recorded(std::result::Result<Result<Recorded>, tokio::task::JoinError>),
            Wake,
            Refresh,
            Abandon,
        }
        loop {
            pass.run_inline(done)?;
            if *shutdown.borrow() {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_GRACE);
                pass.give_back_ahead()?;
            } else {
                let engine = &self.engine_limits();
                // Runs left to other workers free their slots: take again until the slots
                // are full or nothing more is ready.
                loop {
                    let free = pass.start_ahead(limit, &mut tasks);
                    if free == 0 {
                        break;
                    }
                    // On a shared store a claim is a round trip on this thread: claimed a
                    // slot-full ahead, most runs start without one (B11: a claim for each
                    // run that ended, 2,189 for 3,000 objects).
                    let ahead = if self.worker.get().is_some() {
                        limit
                    } else {
                        0
                    };
                    let cap = pass.queue.in_flight() + free + ahead;
                    let ready = pass.queue.take(cap, |model| engine(model));
                    if ready.is_empty() {
                        break;
                    }
                    let won = pass.claimed(ready)?;
                    pass.ahead.extend(won);
                }
            }
            if pass.queue.in_flight() == 0 {
                break;
            }
            let waking = wake.is_some() && deadline.is_none();
            let next = tokio::select! {
                n = tasks.join_next(), if !tasks.is_empty() => Next::Ran(n),
                Some(r) = pass.recording.join_next(), if !pass.recording.is_empty() => Next::Recorded(r),
                Some(()) = async {
                    match wake.as_mut() {
                        Some(w) => w.events.recv().await,
                        None => std::future::pending().await,
                    }
                }, if waking => Next::Wake,
                () = async {
                    match pace.due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                }, if pace.due.is_some() && waking => Next::Refresh,
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                }, if deadline.is_some() => Next::Abandon,
                else => break,
            };
            match next {
                Next::Wake | Next::Refresh => {
                    if let Some(w) = wake.as_mut()
                        && pace.now_or_later(matches!(next, Next::Refresh))
                    {
                        let marker = self.store.change_marker()?;
                        if marker != *w.marker {
                            *w.marker = marker;
                            let clock = Instant::now();
                            pass.refresh(done)?;
                            pace.refreshed(clock.elapsed());
                        }
                    }
                }
                Next::Abandon => {
                    tracing::warn!(
                        in_flight = pass.queue.in_flight(),
                        "shutdown grace period over; abandoning runs in flight"
                    );
                    tasks.abort_all();
                    break;
                }
                Next::Recorded(r) => match r {
                    Ok(r) => {
                        pass.recorded(r?, done);
                        pass.finish_held()?;
                        let reload = std::mem::take(&mut pass.reload);
                        let recollect = std::mem::take(&mut pass.recollect);
                        let stopping = *shutdown.borrow();
                        // The runs' feedback fired watchers: their objects may run in this
                        // pass (the objects' runs that started after the change are spared).
                        let reload = reload || (!stopping && self.watchers_waiting()?);
                        if reload && !stopping {
                            pass.refresh(done)?;
                        } else if recollect && !stopping {
                            pass.collect(done)?;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "recording runs failed"),
                },
                Next::Ran(None) => {}
                Next::Ran(Some(joined)) => {
                    // Every run that has finished by now is recorded in one transaction.
                    let mut batch = Vec::new();
                    for joined in
                        std::iter::once(joined).chain(std::iter::from_fn(|| tasks.try_join_next()))
                    {
                        match joined {
                            Ok(f) => batch.push(f),
                            // A run task panicked or was aborted: there is no outcome to record.
                            Err(e) => tracing::error!(error = %e, "a run task failed"),
                        }
                    }
                    self.progress.advance(batch.len());
                    pass.finish(batch)?;
                }
            }
        }
        // Runs claimed ahead that did not start (a shutdown) go back to the other workers.
        pass.give_back_ahead()?;
        // Recordings under way complete even when runs were abandoned: they are quick, and
        // a record cut short would leave files ahead of the store.
        while let Some(r) = pass.recording.join_next().await {
            match r {
                Ok(r) => pass.recorded(r?, done),
                Err(e) => tracing::error!(error = %e, "recording runs failed"),
            }
            pass.finish_held()?;
        }
        pass.flush()?;
        // Every folder this pass wrote is complete: nothing to repair.
        if tasks.is_empty() {
            self.end_journal()?;
        }
        self.progress.finish();
        *self.last_world.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((pass.world.clone(), std::mem::take(&mut pass.graph)));
        let stats = pass.stats.clone();
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // An idle daemon passes often: only passes that ran something are worth a line.
        if stats.ran > 0 || stats.blocked > 0 {
            info!(
                ran = stats.ran,
                ok = stats.progress,
                failed = stats.failed,
                deferred = stats.deferred,
                blocked = stats.blocked,
                ms,
                "pass"
            );
        } else {
            tracing::debug!(ms, "idle pass");
        }
        Ok(stats)
    }

    /// Every object as the store holds them now, and their graph: the last pass's caught
    /// up on what was written since (the graph kept when nothing it is built from
    /// changed), or all of them read anew.
    fn world_now(&self) -> Result<(Arc<Snapshot>, ObjectGraph)> {
        let last = self
            .last_world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((world, graph)) = last
            && let Some(changes) = world.catch_up(&*self.store)?
        {
            // Not `||`: both clear what they read.
            let reshaped = world.take_reshaped();
            let graph = if !reshaped && graph.holds_after(&self.svc.graph, &changes) {
                graph
            } else {
                ObjectGraph::build(&self.svc.graph, &world)
            };
            return Ok((world, graph));
        }
        let world = Arc::new(Snapshot::tracking(self.svc.schema.clone(), &*self.store)?);
        let graph = ObjectGraph::build(&self.svc.graph, &world);
        Ok((world, graph))
    }

    /// Brings in sync, without a snapshot of the store, the objects that need no run and
    /// wait on nothing: those of models with no sync payload and no dependencies. Their
    /// outcome is what the full pass would record for them inline (success, or a check for
    /// a suspect), so a stream of new objects of such a model costs its own rows, not a
    /// read of every row (B8). Deletes are left to the full pass: they wait on dependents.
    fn settle_without_runs(&self, done: &mut HashSet<(i64, i64)>) -> Result<usize> {
        let now = Millis::now();
        let mut writes = Vec::new();
        for model in self.svc.graph.order() {
            if self.has_payload(model, Phase::Sync) || !self.svc.graph.deps_of(model).is_empty() {
                continue;
            }
            let rules = self.rules(model);
            for o in self.store.with_work(model)? {
                let seen = done.contains(&(o.id, o.book.generation));
                let run = match bookkeeping::due(&o.book, now, &rules) {
                    Some(due) if due.is_delete() => continue,
                    // As `collect`: once a generation, unless a watcher fired since.
                    Some(due) if seen && !matches!(due, bookkeeping::Due::Watch(_)) => continue,
                    // Nothing ran, so there is no feedback to report (the object's own stays).
                    Some(_) => RunRecord::Success {
                        intent: Intent::of(&o.book),
                        feedback: None,
                        digest: None,
                    },
                    None if seen => continue,
                    None if bookkeeping::suspect(&o.book).is_some() => RunRecord::Checked {
                        digest: o.book.applied.clone().unwrap_or_default(),
                    },
                    // Waiting on its backoff.
                    None => continue,
                };
                writes.push((Arc::new(o), run));
            }
        }
        let recs = self.record_batch(&writes)?;
        for ((obj, _), rec) in writes.iter().zip(&recs) {
            if rec.is_some() {
                done.insert((obj.id, obj.book.generation));
            }
        }
        if !writes.is_empty() {
            tracing::debug!(objects = writes.len(), "in sync without a run");
        }
        Ok(writes.len())
    }

    /// Whether any object may become due by the clock alone (a `resync` period is set).
    pub(super) fn resyncs(&self) -> bool {
        !self.svc.config.resync.0.is_zero()
            || self
                .svc
                .stepdefs
                .actuators
                .values()
                .any(|a| a.resync.is_some_and(|d| !d.0.is_zero()))
    }

    /// A model's own run limit (its stepdef's `concurrency`), by model name.
    fn engine_limits(&self) -> impl Fn(&String) -> usize + '_ {
        move |model| {
            self.svc
                .stepdefs
                .actuator(model)
                .and_then(|a| a.concurrency)
                .map_or(usize::MAX, |c| {
                    usize::try_from(c.get()).unwrap_or(usize::MAX)
                })
        }
    }

    fn has_payload(&self, model: &str, phase: Phase) -> bool {
        self.svc
            .stepdefs
            .actuator(model)
            .is_some_and(|a| match phase {
                Phase::Sync => a.sync.is_some(),
                Phase::Delete => a.delete.is_some(),
            })
    }

    /// `run --once`: passes until one makes no progress.
    pub async fn run_once(self: &Arc<Self>) -> Result<Summary> {
        let _part = self.take_part()?;
        let (_tx, rx) = watch::channel(false);
        let mut done = HashSet::new();
        let mut summary = Summary::default();
        // A one-shot run reads the backends first, as the daemon's timers would: every pull
        // step polls once, all at the same time.
        // On a shared store the leader alone reads them (SPEC §17).
        let pulls = if self.leads() {
            self.svc.stepdefs.pulls.len()
        } else {
            0
        };
        let polls = (0..pulls).map(|i| crate::steps::pull::poll(self, i));
        for (i, r) in futures_util::future::join_all(polls)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = r {
                summary.pull_errors += 1;
                tracing::warn!(step = %self.svc.stepdefs.pulls[i].name, error = %e, "poll failed");
            }
        }
        let idle = loop {
            summary.passes += 1;
            let stats = self.pass(&mut done, &rx, None).await?;
            summary.purged += stats.purged;
            if stats.progress == 0 {
                break stats.idle;
            }
        };
        // Payload watchers started by these passes end before the run does.
        self.watch_runs.wait().await;
        let counts = match idle {
            Some(c) => c,
            None => self.store.counts()?,
        };
        summary.policy_errors = self.store.policy_errors()?;
        summary.all_ok = counts.by_status.iter().all(|(st, _)| *st == Status::Ok)
            && summary.policy_errors == 0
            && summary.pull_errors == 0;
        summary.counts = counts.by_status;
        Ok(summary)
    }
}

impl Pass<'_> {
    /// Finds the pending work and what each job waits for; blocks what cannot run.
    fn collect(&mut self, done: &HashSet<(i64, i64)>) -> Result<()> {
        // An outcome recorded since the graph was built may carry another process's change
        // of the object's references (read in the recording's transaction).
        if self.world.take_reshaped() {
            self.rebuild_graph();
        }
        let e = self.engine;
        let now = Millis::now();
        let cyclic = self.record_cycles(now)?;
        let rank: HashMap<&str, usize> = e
            .svc
            .graph
            .order()
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), i))
            .collect();
        let models = rank.len();
        let worker = e.worker.get();
        let order = |level: usize, o: &ObjectRecord| -> OrderKey {
            let spread = worker.map_or(0, |w| w.spread(o.id));
            (level, spread, o.key.clone(), o.id)
        };
        let mut jobs: Vec<(Arc<ObjectRecord>, OrderKey)> = Vec::new();
        // Without resyncs only an object with work or a suspicion can be due.
        let candidates = if e.resyncs() {
            self.world.all()
        } else {
            self.world.active()
        };
        for o in candidates {
            // Already queued or in flight (a refresh in the middle of a pass).
            if cyclic.contains(&o.id) || self.phases.contains_key(&o.id) {
                continue;
            }
            let r = rank.get(o.model.as_str()).copied().unwrap_or(0);
            let Some((phase, check)) = self.wanted(&o, now, done) else {
                continue;
            };
            let level = if phase == Phase::Delete {
                models - r
            } else {
                models + 1 + r
            };
            if check {
                self.checks.insert(o.id);
            }
            self.phases.insert(o.id, phase);
            let key = order(level, &o);
            jobs.push((o, key));
        }
        let mut blocked = Vec::new();
        let mut journal = Vec::new();
        for (o, key) in jobs {
            let phase = self.phases.get(&o.id).copied().unwrap_or(Phase::Sync);
            // A delete dispatches only what a sync may have put in the backend.
            let dispatch = e.has_payload(&o.model, phase)
                && (phase == Phase::Sync || bookkeeping::delete_needs_payload(&o.book));
            if dispatch {
                journal.push((o.id, o.model.clone(), o.key.clone()));
            }
            match self.waits_on(o.id, phase) {
                Ok(waits) => self
                    .queue
                    .add(o.id, key, o.model.clone(), !dispatch, &waits),
                Err(message) => {
                    // Added with nothing to wait on, so blocking it below blocks its waiters.
                    self.queue.add(o.id, key, o.model.clone(), !dispatch, &[]);
                    blocked.push((o.id, message));
                }
            }
        }
        // Before any of their folders is written (SPEC §8: repaired after a crash).
        e.journal(&journal)?;
        for (id, message) in blocked {
            // An earlier block in this loop may have removed it already.
            if self.queue.contains(id) {
                self.block(id, message);
            }
        }
        Ok(())
    }

    /// The graph of the objects as the pass now holds them.
    fn rebuild_graph(&mut self) {
        self.world.take_reshaped();
        self.graph = ObjectGraph::build(&self.engine.svc.graph, &self.world);
    }

    /// Another process changed the store while runs are in flight: the objects as they now
    /// stand, and jobs for what became due. Runs in flight keep the objects they started
    /// with; their outcomes are weighed against those.
    fn refresh(&mut self, done: &HashSet<(i64, i64)>) -> Result<()> {
        let e = self.engine;
        // What the change fires is taken on now too, not after the slowest run (SPEC §5.5).
        e.drain_watchers()?;
        if e.police()? {
            e.drain_watchers()?;
        }
        // Only what was written since the pass read it (runs in flight see the newer
        // objects they render from, which is as new as any of their reads must be).
        match self.world.catch_up(&*e.store)? {
            Some(changes) if self.graph.holds_after(&e.svc.graph, &changes) => {}
            Some(_) => self.rebuild_graph(),
            None => {
                self.world = Arc::new(Snapshot::tracking(e.svc.schema.clone(), &*e.store)?);
                self.rebuild_graph();
            }
        }
        self.settled_elsewhere(done);
        let before = self.queue.len();
        self.collect(done)?;
        self.engine
            .progress
            .start(self.queue.len().saturating_sub(before));
        Ok(())
    }

    /// The run a pass queues for `o` now, and whether it is a suspect's check; `None` when
    /// it needs none (`done`: synced in this run at its generation).
    fn wanted(
        &self,
        o: &ObjectRecord,
        now: Millis,
        done: &HashSet<(i64, i64)>,
    ) -> Option<(Phase, bool)> {
        let fresh = !done.contains(&(o.id, o.book.generation));
        let Some(due) = bookkeeping::due(&o.book, now, &self.engine.rules(&o.model)) else {
            return (bookkeeping::suspect(&o.book).is_some() && fresh)
                .then_some((Phase::Sync, true));
        };
        if due.is_delete() {
            Some((Phase::Delete, false))
        } else if fresh || matches!(due, bookkeeping::Due::Watch(_)) {
            // A watcher that fired after this run's sync wants another (the loop guard
            // stops one that never settles).
            Some((Phase::Sync, false))
        } else {
            None
        }
    }

    /// Drops the queued jobs (not yet started) that the store just read no longer wants:
    /// on a shared store, the objects other workers ran meanwhile. Without this a worker
    /// walks through every object of the pass, a claim round trip each, to find most of
    /// them done (B11). One now in sync completes, so its waiters go on; any other (it
    /// failed elsewhere, it is gone) leaves with its waiters, as a claim lost does, for
    /// the next pass to read.
    fn settled_elsewhere(&mut self, done: &HashSet<(i64, i64)>) {
        let now = Millis::now();
        let gone: Vec<i64> = self
            .phases
            .keys()
            .copied()
            .filter(|&id| self.queue.contains(id) && !self.queue.is_in_flight(id))
            .filter(|&id| {
                self.world.by_id(id).is_none_or(|o| {
                    // Due as `collect` would queue it now, or the suspect's check it was.
                    let wanted = matches!(self.wanted(&o, now, done), Some((_, false)));
                    let check =
                        self.checks.contains(&id) && bookkeeping::suspect(&o.book).is_some();
                    !wanted && !check
                })
            })
            .collect();
        for id in gone {
            self.phases.remove(&id);
            self.checks.remove(&id);
            self.stats.elsewhere += 1;
            if self
                .world
                .by_id(id)
                .is_some_and(|o| bookkeeping::in_sync(&o.book))
            {
                self.queue.complete(id);
                continue;
            }
            for (w, _) in self.queue.block(id) {
                self.phases.remove(&w);
                self.stats.elsewhere += 1;
            }
        }
    }

    /// Objects on a dependency cycle: an error on each of them (SPEC §4.2).
    fn record_cycles(&mut self, now: Millis) -> Result<HashSet<i64>> {
        let mut cyclic = HashSet::new();
        for cycle in self.graph.cycles() {
            let mut names: Vec<String> = cycle
                .iter()
                .filter_map(|id| self.world.by_id(*id))
                .map(|o| o.name())
                .collect();
            names.sort();
            let msg = format!("dependency cycle between objects: {}", names.join(", "));
            for &id in cycle {
                cyclic.insert(id);
                if let Some(o) = self.world.by_id(id)
                    && o.book.message != msg
                    && bookkeeping::waiting_until(&o.book, now, &self.engine.rules(&o.model))
                        .is_none()
                    && let Some(r) = self.engine.record(
                        &o,
                        Phase::Sync,
                        &Outcome::Error(RunError::Engine(msg.clone())),
                        "",
                    )?
                {
                    self.world.put(r);
                }
            }
        }
        Ok(cyclic)
    }

    /// The pending jobs `id` waits for in its `phase`, or why it cannot run in this pass: a
    /// sync waits for every dependency that is a pending sync and needs the others in sync; a
    /// delete waits for every referrer's delete.
    fn waits_on(&self, id: i64, phase: Phase) -> Result<Vec<i64>, String> {
        let mut waits = Vec::new();
        match phase {
            Phase::Sync => {
                // The policy that owns it failed: what it would write now is unknown (SPEC §12).
                if let Some(owner) = self.world.by_id(id).and_then(|o| o.owner.clone())
                    && let Some((model, key)) = owner.split_once('/')
                    && let Some(src) = self.world.get(model, key)
                    && let Some(err) = &src.book.policy_error
                {
                    return Err(format!("blocked by the policy of {owner}: {err}"));
                }
                for dep in self.graph.deps(id) {
                    let t = match dep {
                        Dep::Missing(name) => return Err(format!("blocked by {name}: missing")),
                        Dep::Object(d) => match self.world.by_id(*d) {
                            Some(t) => t,
                            None => return Err(format!("blocked by a purged object (id {d})")),
                        },
                    };
                    if t.book.deleted {
                        return Err(format!("blocked by {}: being deleted", t.name()));
                    }
                    match self.phases.get(&t.id) {
                        Some(Phase::Sync) => waits.push(t.id),
                        _ if bookkeeping::in_sync(&t.book) => {}
                        _ => return Err(blocked_by(&t)),
                    }
                }
            }
            Phase::Delete => {
                for r in self.graph.referrers(id) {
                    let Some(rec) = self.world.by_id(*r) else {
                        continue;
                    };
                    match self.phases.get(r) {
                        Some(Phase::Delete) => waits.push(*r),
                        _ => return Err(format!("waiting for {} to be deleted", rec.name())),
                    }
                }
            }
        }
        Ok(waits)
    }

    /// Records `id` as blocked and blocks, in turn, everything in this pass waiting on it.
    fn block(&mut self, id: i64, message: String) {
        let phase = self.phases.get(&id).copied();
        let next = match self.world.by_id(id) {
            Some(obj) => self.blocked(&obj, phase, message),
            None => return,
        };
        self.fail(id, next);
    }

    /// Queues `obj`'s blocked record; returns the message for what waits on it.
    fn blocked(
        &mut self,
        obj: &Arc<ObjectRecord>,
        phase: Option<Phase>,
        message: String,
    ) -> String {
        self.stats.blocked += 1;
        let next = match phase {
            Some(Phase::Delete) => format!("waiting for {} to be deleted", obj.name()),
            _ => blocked_by_message(obj, &message),
        };
        if obj.book.message != message || (!obj.book.deleted && obj.book.status != Status::Blocked)
        {
            self.writes
                .push((obj.clone(), RunRecord::Blocked { message }));
        }
        next
    }

    /// Completes the jobs that have nothing to dispatch, in one transaction per wave.
    fn run_inline(&mut self, done: &mut HashSet<(i64, i64)>) -> Result<()> {
        loop {
            let wave = self.queue.take_inline();
            if wave.is_empty() {
                break;
            }
            let mut finished = Vec::new();
            for id in wave {
                let (Some(phase), Some(obj)) = (self.phases.remove(&id), self.world.by_id(id))
                else {
                    self.queue.complete(id);
                    continue;
                };
                // A suspect with nothing to render has nothing that could have changed.
                let run = if self.checks.remove(&id) {
                    RunRecord::Checked {
                        digest: obj.book.applied.clone().unwrap_or_default(),
                    }
                } else {
                    RunRecord::Success {
                        intent: Intent::of(&obj.book),
                        // Nothing ran, so nothing reports feedback: the snapshot's copy,
                        // written back, would undo a pull or event step's newer write.
                        feedback: None,
                        digest: None,
                    }
                };
                self.writes.push((obj.clone(), run));
                finished.push((obj, phase));
            }
            self.flush()?;
            for (obj, phase) in finished {
                self.stats.progress += 1;
                if phase == Phase::Delete {
                    self.stats.purged += 1;
                }
                if phase == Phase::Sync {
                    done.insert((obj.id, obj.book.generation));
                }
                self.queue.complete(obj.id);
            }
        }
        self.flush()
    }

    /// Objects whose sys dir files could not be written are in error (retried with backoff,
    /// which rewrites them); the rest of the pass goes on.
    fn sys_failed(&mut self, failed: Vec<SysFailure>) {
        for f in failed {
            let Some(obj) = self.world.get(&f.model, &f.key) else {
                continue;
            };
            self.stats.failed += 1;
            self.writes.push((
                obj.clone(),
                RunRecord::Failure {
                    intent: Intent::of(&obj.book),
                    message: self.engine.clean_message(&f.message),
                    dispatched: true,
                },
            ));
        }
    }

    /// Writes the queued bookkeeping and updates the world with the result.
    fn flush(&mut self) -> Result<()> {
        let writes = std::mem::take(&mut self.writes);
        let recs = self.engine.record_batch(&writes)?;
        for ((obj, _), rec) in writes.iter().zip(recs) {
            match rec {
                Some(r) => self.world.put(r),
                None => self.world.remove(obj.id),
            }
        }
        Ok(())
    }

    fn start(&mut self, id: i64, tasks: &mut JoinSet<Finished>) {
        let (Some(phase), Some(obj)) = (self.phases.get(&id).copied(), self.world.by_id(id)) else {
            self.queue.complete(id);
            return;
        };
        let engine = self.engine.clone();
        let world = self.world.clone();
        // A suspect that got work meanwhile (a watcher fired for it) is sent, not checked.
        let check = self.checks.remove(&id) && bookkeeping::suspect(&obj.book).is_some();
        // Before rendering: what the run reads is at least as new as this.
        let started = Millis::now();
        let started_us = crate::store::now_micros();
        // Why it would be sent, for the loop guard: a suspect is sent because its input changed.
        let why = match phase {
            Phase::Sync if check => bookkeeping::suspect(&obj.book).map(bookkeeping::Due::from),
            Phase::Sync => bookkeeping::work(&obj.book),
            Phase::Delete => None,
        };
        let span = info_span!("run", model = %obj.model, key = %obj.key, generation = obj.book.generation, action = phase.as_str());
        self.engine.progress.run_started(&obj.model);
        let clock = std::time::Instant::now();
        tasks.spawn(
            async move {
                // Rendering and the recipe files are CPU and file system work: off the
                // threads that drive the requests in flight.
                let prepared = {
                    let (engine, obj) = (engine.clone(), obj.clone());
                    tokio::task::spawn_blocking(move || {
                        let p = engine.prepare(&world, &obj, phase)?;
                        if let Some(p) = &p {
                            // A suspect whose recipe did not change is left alone: no file
                            // rewritten, nothing sent (SPEC §5.1 rule 4).
                            if check && obj.book.applied.as_deref().is_none_or(|a| a == p.digest) {
                                return Ok(Err(p.digest.clone()));
                            }
                            engine
                                .write_recipe(&engine.sys, p)
                                .map_err(|e| RunError::SysDir(e.to_string()))?;
                        }
                        Ok::<_, RunError>(Ok(p))
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(RunError::Engine(format!(
                            "rendering the payload panicked: {e}"
                        )))
                    })
                };
                let outcome = match prepared {
                    Ok(Err(digest)) => (Outcome::Unchanged(digest), String::new()),
                    Ok(Ok(Some(p))) => {
                        match why.and_then(|d| engine.loops.check(&obj.name(), &d, started)) {
                            Some(msg) => {
                                tracing::warn!(object = %obj.name(), "{msg}");
                                (Outcome::Error(RunError::Engine(msg)), String::new())
                            }
                            None => {
                                if phase == Phase::Sync {
                                    engine.watch_runs.note_start(p.obj.id, started_us);
                                }
                                engine.actuate(&p).await
                            }
                        }
                    }
                    // The payload was checked when the job was made; only a race with a
                    // reload could get here, and then there is nothing to send.
                    Ok(Ok(None)) => (
                        Outcome::Ok {
                            feedback: obj.feedback.clone(),
                            digest: None,
                        },
                        String::new(),
                    ),
                    Err(e) => (Outcome::Error(e), String::new()),
                };
                engine.progress.run_finished(
                    &obj.model,
                    phase.as_str(),
                    outcome.0.result(),
                    clock.elapsed().as_secs_f64(),
                );
                Finished {
                    obj,
                    phase,
                    outcome,
                }
            }
            .instrument(span),
        );
    }

    /// Records finished runs (one store transaction, with their run logs and `status.json`)
    /// off the scheduler's thread, or holds them for the next recording while one is under
    /// way; [`Pass::recorded`] takes it from there.
    fn finish(&mut self, batch: Vec<Finished>) -> Result<()> {
        self.recording_jobs += batch.len();
        if !self.recording.is_empty() {
            self.held.extend(batch);
            return Ok(());
        }
        self.record(batch)
    }

    /// Records the runs held while a recording was under way ([`Pass::held`]), if any.
    fn finish_held(&mut self) -> Result<()> {
        if self.held.is_empty() || !self.recording.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.held);
        self.record(batch)
    }

    /// Starts recording `batch` (see [`Pass::finish`]).
    fn record(&mut self, batch: Vec<Finished>) -> Result<()> {
        self.flush()?;
        let engine = self.engine.clone();
        self.recording.spawn_blocking(move || {
            let args: Vec<_> = batch
                .iter()
                .map(|f| (&*f.obj, f.phase, &f.outcome.0, f.outcome.1.as_str()))
                .collect();
            let (recs, failed, marked) = engine.record_runs(&args)?;
            Ok(Recorded {
                batch,
                recs,
                failed,
                marked,
            })
        });
        Ok(())
    }

    /// Lets the waiters of recorded runs go, or blocks them.
    fn recorded(&mut self, r: Recorded, done: &mut HashSet<(i64, i64)>) {
        let Recorded {
            batch,
            recs,
            failed,
            marked,
        } = r;
        self.reload |= marked > 0;
        self.recording_jobs = self.recording_jobs.saturating_sub(batch.len());
        for (f, rec) in batch.iter().zip(recs) {
            let obj = &f.obj;
            if !matches!(f.outcome.0, Outcome::Unchanged(_)) {
                self.stats.ran += 1;
            }
            match rec {
                None => {
                    self.world.remove(obj.id);
                    self.stats.progress += 1;
                    self.stats.purged += 1;
                    self.phases.remove(&obj.id);
                    self.queue.complete(obj.id);
                }
                Some(r) => {
                    if bookkeeping::Intent::of(&r.book) != bookkeeping::Intent::of(&obj.book) {
                        self.recollect = true;
                    }
                    let ok = r.book.status == Status::Ok;
                    if ok {
                        done.insert((obj.id, obj.book.generation));
                    }
                    match (&f.outcome.0, r.book.status) {
                        (Outcome::Unchanged(_), _) => self.stats.unchanged += 1,
                        (Outcome::Deferred(_), _) => self.stats.deferred += 1,
                        (Outcome::Error(_), Status::Error) => self.stats.failed += 1,
                        // Succeeded, or failed for an intent a newer one replaced while it
                        // ran (the object is pending or deleting again): either way the
                        // next pass has something new to do.
                        _ => self.stats.progress += 1,
                    }
                    let message = match f.phase {
                        Phase::Sync => blocked_by(&r),
                        Phase::Delete => format!("waiting for {} to be deleted", r.name()),
                    };
                    self.world.put(r);
                    if ok {
                        self.phases.remove(&obj.id);
                        self.queue.complete(obj.id);
                    } else {
                        self.fail(obj.id, message);
                    }
                }
            }
        }
        self.sys_failed(failed);
    }

    /// Starts runs claimed ahead into the slots of `limit` that runs do not use (those in
    /// flight but recording or claimed ahead use none); returns the slots still free.
    fn start_ahead(&mut self, limit: usize, tasks: &mut JoinSet<Finished>) -> usize {
        loop {
            let idle = self.recording_jobs + self.ahead.len();
            let free = limit.saturating_sub(self.queue.in_flight().saturating_sub(idle));
            if free == 0 {
                return 0;
            }
            let Some(id) = self.ahead.pop_front() else {
                return free;
            };
            self.start(id, tasks);
        }
    }

    /// Gives the runs claimed ahead back, unstarted: they leave the queue with their
    /// waiters, as a run left to another worker does.
    fn give_back_ahead(&mut self) -> Result<()> {
        let ids: Vec<i64> = self.ahead.drain(..).collect();
        if ids.is_empty() {
            return Ok(());
        }
        if let Some(worker) = self.engine.worker.get() {
            worker.give_back(&ids)?;
        }
        for id in ids {
            self.phases.remove(&id);
            for (w, _) in self.queue.block(id) {
                self.phases.remove(&w);
            }
        }
        Ok(())
    }

    /// The jobs of `ready` this pass may start. On a shared store each run is claimed first
    /// (SPEC §17); one another worker holds, or whose object changed since this pass read it
    /// (another worker's outcome landed in between), is left out with every job waiting on
    /// it, without an error: the worker that holds it records it, and the next pass here
    /// reads what it recorded.
    fn claimed(&mut self, ready: Vec<i64>) -> Result<Vec<i64>> {
        let Some(worker) = self.engine.worker.get() else {
            return Ok(ready);
        };
        if ready.is_empty() {
            return Ok(ready);
        }
        let won: HashSet<i64> = worker.take(&ready)?.into_iter().collect();
        let mut start = Vec::with_capacity(won.len());
        let mut stale = Vec::new();
        let now = Millis::now();
        // Read again under the claim, all in one read (none when every claim was lost).
        let ids: Vec<i64> = won.iter().copied().collect();
        let mut rows: HashMap<i64, ObjectRecord> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.engine
                .store
                .get_by_ids(&ids)?
                .into_iter()
                .map(|r| (r.id, r))
                .collect()
        };
        for id in ready {
            let seen = self.world.by_id(id);
            // The same as this pass saw, and still wanting the run it was queued for. A
            // refresh in the middle of the pass (another worker's commit woke it) may have
            // brought in the very outcome that settled a job still queued from before; the
            // job, not the row, is stale then.
            let current = match (&seen, won.contains(&id)) {
                (Some(o), true) => rows.remove(&id).is_some_and(|c| {
                    c.book == o.book
                        && c.fields == o.fields
                        && (bookkeeping::due(&c.book, now, &self.engine.rules(&c.model)).is_some()
                            || (self.checks.contains(&id)
                                && bookkeeping::suspect(&c.book).is_some()))
                }),
                _ => false,
            };
            if current {
                start.push(id);
                continue;
            }
            if won.contains(&id) {
                stale.push(id);
            }
            self.stats.elsewhere += 1;
            self.phases.remove(&id);
            for (w, _) in self.queue.block(id) {
                self.phases.remove(&w);
                self.stats.elsewhere += 1;
            }
        }
        worker.give_back(&stale)?;
        if !stale.is_empty() {
            tracing::debug!(
                objects = stale.len(),
                "changed by another worker since read; left to the next pass"
            );
        }
        Ok(start)
    }

    /// `id` did not succeed (or was blocked): it leaves the queue, and every job waiting on
    /// it is blocked with `message` (and their own waiters with theirs).
    fn fail(&mut self, id: i64, message: String) {
        self.phases.remove(&id);
        let mut messages = HashMap::from([(id, message)]);
        for (w, by) in self.queue.block(id) {
            let phase = self.phases.remove(&w);
            let (Some(why), Some(obj)) = (messages.get(&by).cloned(), self.world.by_id(w)) else {
                continue;
            };
            let next = self.blocked(&obj, phase, why);
            messages.insert(w, next);
        }
    }
}

/// `blocked by Model/key: <its message>`.
fn blocked_by(t: &ObjectRecord) -> String {
    let why = if t.book.message.is_empty() {
        t.book.status.to_string()
    } else {
        t.book.message.clone()
    };
    format!("blocked by {}: {why}", t.name())
}

/// The message for the dependents of `obj`, which was just blocked with `message`.
fn blocked_by_message(obj: &ObjectRecord, message: &str) -> String {
    format!("blocked by {}: {message}", obj.name())
}
