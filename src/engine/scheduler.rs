//! The scheduler (SPEC §5.2, §5.3): one pass runs every pending object as soon as the
//! objects it depends on are in sync — concurrently, up to `concurrency` overall and each
//! stepdef's own `concurrency`, never the same object twice — and blocks only the dependents
//! of what failed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span};

use super::graph::{Dep, ObjectGraph};
use super::{Engine, Outcome, Summary};
use crate::error::Result;
use crate::snapshot::Snapshot;
use crate::store::{Millis, ObjectRecord, RunRecord, Status};
use crate::sysdir::Phase;

/// How long a stopping daemon waits for runs in flight before abandoning them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
pub struct PassStats {
    /// Objects that became ok or were purged.
    pub progress: usize,
    pub ran: usize,
    pub failed: usize,
    pub deferred: usize,
    pub blocked: usize,
}

/// What a finished task hands back to the pass.
struct Finished {
    id: i64,
    phase: Phase,
    outcome: (Outcome, String),
}

/// Ordering key of pending work: deletes (dependents first) before syncs (dependencies first).
type OrderKey = (usize, String, i64);

struct Job {
    phase: Phase,
    /// Dependencies (for a sync) or dependents (for a delete) still pending in this pass.
    unresolved: usize,
    key: OrderKey,
    /// Whether the actuator has a payload to dispatch; if not, the job completes inline.
    dispatch: bool,
}

/// The state of one pass: what is pending, what is ready, what runs.
struct Pass<'a> {
    engine: &'a Arc<Engine>,
    world: Arc<Snapshot>,
    graph: ObjectGraph,
    jobs: HashMap<i64, Job>,
    ready: BTreeSet<OrderKey>,
    inline: Vec<i64>,
    in_flight: HashSet<i64>,
    per_model: HashMap<String, usize>,
    stats: PassStats,
    /// Bookkeeping writes that need no run log, flushed in one transaction.
    writes: Vec<(Arc<ObjectRecord>, Option<RunRecord>)>,
    /// Sys dir files of recorded runs, being written off the scheduler's thread; all are
    /// awaited before the pass ends, so no object runs again before its files are there.
    sys_writes: JoinSet<Result<()>>,
}

fn in_sync(o: &ObjectRecord) -> bool {
    o.book.status == Status::Ok && o.book.synced_generation >= o.book.generation && !o.book.deleted
}

impl Engine {
    /// One pass. `done` holds (id, generation) pairs already synced in this run, so a
    /// `--once` run actuates an object at most once per generation.
    pub async fn pass(
        self: &Arc<Self>,
        done: &mut HashSet<(i64, i64)>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<PassStats> {
        let started = Instant::now();
        // Nothing pending and no periodic resync: nothing can be due, so skip loading every
        // object and building the graph (an idle pass over 100,000 objects is one query).
        // Objects in error are pending too (their generation is not synced), so backoff
        // retries still come through the full pass.
        if !self.resyncs() && self.store.counts()?.pending == 0 {
            return Ok(PassStats::default());
        }
        let world = Arc::new(Snapshot::load(self.svc.schema.clone(), &*self.store)?);
        let graph = ObjectGraph::build(&self.svc.graph, &world);
        let mut pass = Pass {
            engine: self,
            world,
            graph,
            jobs: HashMap::new(),
            ready: BTreeSet::new(),
            inline: Vec::new(),
            in_flight: HashSet::new(),
            per_model: HashMap::new(),
            stats: PassStats::default(),
            writes: Vec::new(),
            sys_writes: JoinSet::new(),
        };
        pass.collect(done)?;
        self.progress.start(pass.jobs.len());
        let limit = usize::try_from(self.svc.config.concurrency.get()).unwrap_or(usize::MAX);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            pass.run_inline(done)?;
            if *shutdown.borrow() {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_GRACE);
            } else {
                for id in pass.startable(limit) {
                    pass.start(id, &mut tasks);
                }
            }
            if pass.in_flight.is_empty() {
                break;
            }
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, tasks.join_next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        tracing::warn!(
                            in_flight = pass.in_flight.len(),
                            "shutdown grace period over; abandoning runs in flight"
                        );
                        tasks.abort_all();
                        break;
                    }
                },
                None => tasks.join_next().await,
            };
            let Some(joined) = next else { break };
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
            pass.finish(batch, done)?;
        }
        pass.flush()?;
        while let Some(joined) = pass.sys_writes.join_next().await {
            match joined {
                Ok(r) => r?,
                Err(e) => tracing::error!(error = %e, "a sys dir write failed"),
            }
        }
        self.progress.finish();
        let stats = pass.stats;
        info!(
            ran = stats.ran,
            ok = stats.progress,
            failed = stats.failed,
            deferred = stats.deferred,
            blocked = stats.blocked,
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "pass"
        );
        Ok(stats)
    }

    /// Whether any object may become due by the clock alone (a `resync` period is set).
    fn resyncs(&self) -> bool {
        !self.svc.config.resync.0.is_zero()
            || self
                .svc
                .stepdefs
                .actuators
                .values()
                .any(|a| a.resync.is_some_and(|d| !d.0.is_zero()))
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
        let (_tx, rx) = watch::channel(false);
        let mut done = HashSet::new();
        let mut summary = Summary::default();
        loop {
            summary.passes += 1;
            let stats = self.pass(&mut done, &rx).await?;
            if stats.progress == 0 {
                break;
            }
        }
        let counts = self.store.counts()?;
        summary.all_ok = counts.by_status.iter().all(|(st, _)| *st == Status::Ok);
        summary.counts = counts.by_status;
        Ok(summary)
    }
}

impl Pass<'_> {
    /// Finds the pending work and what each job waits for; blocks what cannot run.
    fn collect(&mut self, done: &HashSet<(i64, i64)>) -> Result<()> {
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
        for o in self.world.all() {
            if cyclic.contains(&o.id) || e.waiting_on_backoff(&o, now) {
                continue;
            }
            let r = rank.get(o.model.as_str()).copied().unwrap_or(0);
            let (phase, key) = if o.book.deleted {
                (Phase::Delete, (models - r, o.key.clone(), o.id))
            } else if e.sync_due(&o, now) && !done.contains(&(o.id, o.book.generation)) {
                (Phase::Sync, (models + 1 + r, o.key.clone(), o.id))
            } else {
                continue;
            };
            let dispatch = e.has_payload(&o.model, phase);
            self.jobs.insert(
                o.id,
                Job {
                    phase,
                    unresolved: 0,
                    key,
                    dispatch,
                },
            );
        }
        let mut blocked = Vec::new();
        let ids: Vec<i64> = self.jobs.keys().copied().collect();
        for id in ids {
            match self.initial_wait(id) {
                Err(message) => blocked.push((id, message)),
                Ok(0) => self.make_ready(id),
                Ok(n) => {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.unresolved = n;
                    }
                }
            }
        }
        for (id, message) in blocked {
            // An earlier block in this loop may have resolved it already.
            if self.jobs.contains_key(&id) {
                self.block(id, message);
            }
        }
        Ok(())
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
            for id in cycle {
                cyclic.insert(id);
                if let Some(o) = self.world.by_id(id)
                    && o.book.message != msg
                    && !self.engine.waiting_on_backoff(&o, now)
                    && let Some(r) =
                        self.engine
                            .record(&o, Phase::Sync, &Outcome::Error(msg.clone()), "")?
                {
                    self.world.put(r);
                }
            }
        }
        Ok(cyclic)
    }

    /// How many pending jobs `id` waits for, or why it cannot run in this pass.
    fn initial_wait(&self, id: i64) -> Result<usize, String> {
        let Some(job) = self.jobs.get(&id) else {
            return Ok(0);
        };
        let mut n = 0;
        match job.phase {
            Phase::Sync => {
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
                    if in_sync(&t) {
                        continue;
                    }
                    match self.jobs.get(&t.id) {
                        Some(j) if j.phase == Phase::Sync => n += 1,
                        _ => return Err(blocked_by(&t)),
                    }
                }
            }
            Phase::Delete => {
                for r in self.graph.referrers(id) {
                    let Some(rec) = self.world.by_id(*r) else {
                        continue;
                    };
                    match self.jobs.get(r) {
                        Some(j) if j.phase == Phase::Delete => n += 1,
                        _ => return Err(format!("waiting for {} to be deleted", rec.name())),
                    }
                }
            }
        }
        Ok(n)
    }

    fn make_ready(&mut self, id: i64) {
        if let Some(j) = self.jobs.get(&id) {
            if j.dispatch {
                self.ready.insert(j.key.clone());
            } else {
                self.inline.push(id);
            }
        }
    }

    /// Records `id` as blocked and blocks, in turn, everything in this pass waiting on it.
    fn block(&mut self, id: i64, message: String) {
        let mut work = vec![(id, message)];
        while let Some((id, message)) = work.pop() {
            let Some(job) = self.jobs.remove(&id) else {
                continue;
            };
            self.ready.remove(&job.key);
            self.stats.blocked += 1;
            let Some(obj) = self.world.by_id(id) else {
                continue;
            };
            if obj.book.message != message
                || (!obj.book.deleted && obj.book.status != Status::Blocked)
            {
                self.writes.push((
                    obj.clone(),
                    Some(RunRecord::Blocked {
                        message: message.clone(),
                    }),
                ));
            }
            let next = match job.phase {
                Phase::Sync => blocked_by_message(&obj, &message),
                Phase::Delete => format!("waiting for {} to be deleted", obj.name()),
            };
            for w in self.waiters(id, job.phase) {
                work.push((w, next.clone()));
            }
        }
    }

    /// The pending jobs that wait on `id` finishing its `phase`.
    fn waiters(&self, id: i64, phase: Phase) -> Vec<i64> {
        let candidates: Vec<i64> = match phase {
            Phase::Sync => self.graph.referrers(id).to_vec(),
            Phase::Delete => self
                .graph
                .deps(id)
                .iter()
                .filter_map(|d| {
                    if let Dep::Object(t) = d {
                        Some(*t)
                    } else {
                        None
                    }
                })
                .collect(),
        };
        candidates
            .into_iter()
            .filter(|w| self.jobs.get(w).is_some_and(|j| j.phase == phase))
            .collect()
    }

    /// `id` completed its phase successfully: its waiters may now be ready.
    fn release(&mut self, id: i64, phase: Phase) {
        for w in self.waiters(id, phase) {
            let now_ready = self.jobs.get_mut(&w).is_some_and(|j| {
                j.unresolved = j.unresolved.saturating_sub(1);
                j.unresolved == 0
            });
            if now_ready {
                self.make_ready(w);
            }
        }
    }

    /// Completes the jobs that have nothing to dispatch, in one transaction per wave.
    fn run_inline(&mut self, done: &mut HashSet<(i64, i64)>) -> Result<()> {
        while !self.inline.is_empty() {
            let wave = std::mem::take(&mut self.inline);
            let mut finished = Vec::new();
            for id in wave {
                let Some(job) = self.jobs.remove(&id) else {
                    continue;
                };
                let Some(obj) = self.world.by_id(id) else {
                    continue;
                };
                let run = match job.phase {
                    Phase::Sync => Some(RunRecord::Success {
                        generation: obj.book.generation,
                        feedback: obj.feedback.clone(),
                    }),
                    Phase::Delete => None,
                };
                self.writes.push((obj.clone(), run));
                finished.push((obj, job.phase));
            }
            self.flush()?;
            for (obj, phase) in finished {
                self.stats.progress += 1;
                if phase == Phase::Sync {
                    done.insert((obj.id, obj.book.generation));
                }
                self.release(obj.id, phase);
            }
        }
        self.flush()
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

    /// The ready jobs to start now, within the overall and per-model limits.
    fn startable(&self, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut extra: HashMap<&str, usize> = HashMap::new();
        for key in &self.ready {
            if self.in_flight.len() + out.len() >= limit {
                break;
            }
            let Some(obj) = self.world.by_id(key.2) else {
                continue;
            };
            let model_limit = self
                .engine
                .svc
                .stepdefs
                .actuator(&obj.model)
                .and_then(|a| a.concurrency)
                .map_or(usize::MAX, |c| {
                    usize::try_from(c.get()).unwrap_or(usize::MAX)
                });
            let running = self.per_model.get(&obj.model).copied().unwrap_or(0);
            let mine = extra.get(obj.model.as_str()).copied().unwrap_or(0);
            if running + mine >= model_limit {
                continue;
            }
            if let Some(m) = self.engine.svc.schema.model(&obj.model) {
                *extra.entry(m.name.as_str()).or_default() += 1;
            }
            out.push(key.2);
        }
        out
    }

    fn start(&mut self, id: i64, tasks: &mut JoinSet<Finished>) {
        let (Some(job), Some(obj)) = (self.jobs.get(&id), self.world.by_id(id)) else {
            return;
        };
        let phase = job.phase;
        self.ready.remove(&job.key);
        self.in_flight.insert(id);
        *self.per_model.entry(obj.model.clone()).or_default() += 1;
        let engine = self.engine.clone();
        let world = self.world.clone();
        let span = info_span!("run", model = %obj.model, key = %obj.key, generation = obj.book.generation, action = phase.as_str());
        tasks.spawn(
            async move {
                // Rendering and the recipe files are CPU and file system work: off the
                // threads that drive the requests in flight.
                let prepared = {
                    let (engine, obj) = (engine.clone(), obj.clone());
                    tokio::task::spawn_blocking(move || {
                        let p = engine.prepare(&world, &obj, phase)?;
                        if let Some(p) = &p {
                            engine.write_recipe(p).map_err(|e| e.to_string())?;
                        }
                        Ok::<_, String>(p)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("rendering the payload panicked: {e}")))
                };
                let outcome = match prepared {
                    Ok(Some(p)) => engine.actuate(&p).await,
                    // The payload was checked when the job was made; only a race with a
                    // reload could get here, and then there is nothing to send.
                    Ok(None) => (
                        Outcome::Ok {
                            feedback: obj.feedback.clone(),
                        },
                        String::new(),
                    ),
                    Err(e) => (Outcome::Error(e), String::new()),
                };
                Finished {
                    id: obj.id,
                    phase,
                    outcome,
                }
            }
            .instrument(span),
        );
    }

    /// Records finished runs (one store transaction) and lets their waiters go, or blocks them.
    fn finish(&mut self, batch: Vec<Finished>, done: &mut HashSet<(i64, i64)>) -> Result<()> {
        self.flush()?;
        let mut runs = Vec::with_capacity(batch.len());
        for f in &batch {
            self.in_flight.remove(&f.id);
            self.jobs.remove(&f.id);
            let Some(obj) = self.world.by_id(f.id) else {
                continue;
            };
            if let Some(n) = self.per_model.get_mut(&obj.model) {
                *n = n.saturating_sub(1);
            }
            self.stats.ran += 1;
            runs.push((obj, f));
        }
        let args: Vec<_> = runs
            .iter()
            .map(|(obj, f)| (&**obj, f.phase, &f.outcome.0, f.outcome.1.as_str()))
            .collect();
        let (recs, writes) = self.engine.record_runs(&args)?;
        let engine = self.engine.clone();
        self.sys_writes
            .spawn_blocking(move || writes.apply(&engine.sys));
        for ((obj, f), rec) in runs.iter().zip(recs) {
            match rec {
                None => {
                    self.world.remove(obj.id);
                    self.stats.progress += 1;
                    self.release(obj.id, f.phase);
                }
                Some(r) => {
                    let ok = r.book.status == Status::Ok;
                    match r.book.status {
                        Status::Ok => {
                            done.insert((obj.id, obj.book.generation));
                            self.stats.progress += 1;
                        }
                        Status::Deferred => self.stats.deferred += 1,
                        _ => self.stats.failed += 1,
                    }
                    let message = match f.phase {
                        Phase::Sync => blocked_by(&r),
                        Phase::Delete => format!("waiting for {} to be deleted", r.name()),
                    };
                    self.world.put(r);
                    if ok {
                        self.release(obj.id, f.phase);
                    } else {
                        for w in self.waiters(obj.id, f.phase) {
                            self.block(w, message.clone());
                        }
                    }
                }
            }
        }
        Ok(())
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
