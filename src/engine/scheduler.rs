//! The scheduler (SPEC §5.2, §5.3): one pass runs every pending object as soon as the
//! objects it depends on are in sync — concurrently, up to `concurrency` overall and each
//! stepdef's own `concurrency`, never the same object twice — and blocks only the dependents
//! of what failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
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

enum Readiness {
    Ready,
    Wait,
    Blocked(String),
}

/// What a finished task hands back to the pass.
struct Finished {
    id: i64,
    phase: Phase,
    /// `None`: the actuator has no payload for this phase.
    outcome: Option<(Outcome, String)>,
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
        let world = Arc::new(Snapshot::load(self.svc.schema.clone(), &*self.store)?);
        let graph = ObjectGraph::build(&self.svc.graph, &world);
        let now = Millis::now();
        let mut stats = PassStats::default();

        let mut cyclic = HashSet::new();
        for cycle in graph.cycles() {
            let mut names: Vec<String> = cycle
                .iter()
                .filter_map(|id| world.by_id(*id))
                .map(|o| o.name())
                .collect();
            names.sort();
            let msg = format!("dependency cycle between objects: {}", names.join(", "));
            for id in cycle {
                cyclic.insert(id);
                if let Some(o) = world.by_id(id)
                    && o.book.message != msg
                    && !self.waiting_on_backoff(&o, now)
                    && let Some(r) =
                        self.record(&o, Phase::Sync, &Outcome::Error(msg.clone()), "")?
                {
                    world.put(r);
                }
            }
        }

        // Pending work in the order runs start: deletes dependents first, syncs dependencies first.
        let rank: HashMap<&str, usize> = self
            .svc
            .graph
            .order()
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), i))
            .collect();
        let models = rank.len();
        let mut pending: BTreeMap<(usize, String, i64), Phase> = BTreeMap::new();
        for o in world.all() {
            if cyclic.contains(&o.id) || self.waiting_on_backoff(&o, now) {
                continue;
            }
            let r = rank.get(o.model.as_str()).copied().unwrap_or(0);
            if o.book.deleted {
                pending.insert((models - r, o.key.clone(), o.id), Phase::Delete);
            } else if self.sync_due(&o, now) && !done.contains(&(o.id, o.book.generation)) {
                pending.insert((models + 1 + r, o.key.clone(), o.id), Phase::Sync);
            }
        }
        let pending_ids = |p: &BTreeMap<(usize, String, i64), Phase>| -> HashSet<i64> {
            p.keys().map(|k| k.2).collect()
        };
        let bar = progress_bar(pending.len());

        let limit = usize::try_from(self.svc.config.concurrency.get()).unwrap_or(usize::MAX);
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut per_model: HashMap<String, usize> = HashMap::new();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut deadline: Option<tokio::time::Instant> = None;

        loop {
            if *shutdown.borrow() {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_GRACE);
            } else {
                let waiting = pending_ids(&pending);
                let keys: Vec<(usize, String, i64)> = pending.keys().cloned().collect();
                for k in keys {
                    let id = k.2;
                    let Some(phase) = pending.get(&k).copied() else {
                        continue;
                    };
                    let Some(obj) = world.by_id(id) else {
                        pending.remove(&k);
                        continue;
                    };
                    let readiness = match phase {
                        Phase::Sync => {
                            self.sync_readiness(&world, &graph, &obj, &waiting, &in_flight)
                        }
                        Phase::Delete => {
                            delete_readiness(&world, &graph, &obj, &waiting, &in_flight)
                        }
                    };
                    match readiness {
                        Readiness::Wait => {}
                        Readiness::Blocked(message) => {
                            pending.remove(&k);
                            stats.blocked += 1;
                            bar.inc(1);
                            if obj.book.message != message
                                && let Some(r) =
                                    self.record_simple(&obj, RunRecord::Blocked { message })?
                            {
                                world.put(r);
                            }
                        }
                        Readiness::Ready => {
                            let model_limit = self
                                .svc
                                .stepdefs
                                .actuator(&obj.model)
                                .and_then(|a| a.concurrency)
                                .map_or(usize::MAX, |c| {
                                    usize::try_from(c.get()).unwrap_or(usize::MAX)
                                });
                            let running_here = per_model.get(&obj.model).copied().unwrap_or(0);
                            if in_flight.len() >= limit || running_here >= model_limit {
                                continue;
                            }
                            pending.remove(&k);
                            in_flight.insert(id);
                            *per_model.entry(obj.model.clone()).or_default() += 1;
                            self.spawn_run(&mut tasks, &world, obj, phase);
                        }
                    }
                }
            }
            if in_flight.is_empty() {
                break;
            }
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, tasks.join_next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        tracing::warn!(
                            in_flight = in_flight.len(),
                            "shutdown grace period over; abandoning runs in flight"
                        );
                        tasks.abort_all();
                        break;
                    }
                },
                None => tasks.join_next().await,
            };
            let Some(joined) = next else { break };
            let finished = match joined {
                Ok(f) => f,
                // A run task panicked or was aborted: there is no outcome to record.
                Err(e) => {
                    tracing::error!(error = %e, "a run task failed");
                    continue;
                }
            };
            in_flight.remove(&finished.id);
            bar.inc(1);
            let Some(obj) = world.by_id(finished.id) else {
                continue;
            };
            if let Some(n) = per_model.get_mut(&obj.model) {
                *n = n.saturating_sub(1);
            }
            stats.ran += 1;
            let rec = match (&finished.outcome, finished.phase) {
                (None, Phase::Delete) => {
                    self.purge(&obj)?;
                    None
                }
                (None, Phase::Sync) => self.record_simple(
                    &obj,
                    RunRecord::Success {
                        generation: obj.book.generation,
                        feedback: obj.feedback.clone(),
                    },
                )?,
                (Some((outcome, log)), phase) => self.record(&obj, phase, outcome, log)?,
            };
            match rec {
                None => {
                    world.remove(obj.id);
                    stats.progress += 1;
                }
                Some(r) => {
                    match r.book.status {
                        Status::Ok => {
                            done.insert((obj.id, obj.book.generation));
                            stats.progress += 1;
                        }
                        Status::Deferred => stats.deferred += 1,
                        _ => stats.failed += 1,
                    }
                    world.put(r);
                }
            }
        }
        bar.finish_and_clear();
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

    fn spawn_run(
        self: &Arc<Self>,
        tasks: &mut JoinSet<Finished>,
        world: &Arc<Snapshot>,
        obj: Arc<ObjectRecord>,
        phase: Phase,
    ) {
        let engine = self.clone();
        let world = world.clone();
        let span = info_span!("run", model = %obj.model, key = %obj.key, generation = obj.book.generation, action = phase.as_str());
        tasks.spawn(
            async move {
                let id = obj.id;
                let outcome = match engine.prepare(&world, &obj, phase) {
                    Ok(None) => None,
                    Ok(Some(p)) => match engine.write_recipe(&p) {
                        Ok(_) => Some(engine.actuate(&p).await),
                        Err(e) => Some((Outcome::Error(e.to_string()), String::new())),
                    },
                    Err(e) => Some((Outcome::Error(e), String::new())),
                };
                Finished { id, phase, outcome }
            }
            .instrument(span),
        );
    }

    fn sync_readiness(
        &self,
        world: &Snapshot,
        graph: &ObjectGraph,
        obj: &ObjectRecord,
        waiting: &HashSet<i64>,
        in_flight: &HashSet<i64>,
    ) -> Readiness {
        let mut wait = false;
        for dep in graph.deps(obj.id) {
            let t = match dep {
                Dep::Missing(name) => {
                    return Readiness::Blocked(format!("blocked by {name}: missing"));
                }
                Dep::Object(id) => match world.by_id(*id) {
                    Some(t) => t,
                    None => {
                        return Readiness::Blocked(format!("blocked by a purged object (id {id})"));
                    }
                },
            };
            if t.book.deleted {
                return Readiness::Blocked(format!("blocked by {}: being deleted", t.name()));
            }
            if t.book.status == Status::Ok && t.book.synced_generation >= t.book.generation {
                continue;
            }
            if waiting.contains(&t.id) || in_flight.contains(&t.id) {
                wait = true;
                continue;
            }
            let why = if t.book.message.is_empty() {
                t.book.status.to_string()
            } else {
                t.book.message.clone()
            };
            return Readiness::Blocked(format!("blocked by {}: {why}", t.name()));
        }
        if wait {
            Readiness::Wait
        } else {
            Readiness::Ready
        }
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
        let objs = self.store.list(None)?;
        for st in Status::ALL {
            let n = objs.iter().filter(|o| o.book.status == st).count();
            if n > 0 {
                summary.counts.push((st, n));
            }
        }
        summary.all_ok = objs.iter().all(|o| o.book.status == Status::Ok);
        Ok(summary)
    }
}

/// A delete runs once every object that depends on it is gone.
fn delete_readiness(
    world: &Snapshot,
    graph: &ObjectGraph,
    obj: &ObjectRecord,
    waiting: &HashSet<i64>,
    in_flight: &HashSet<i64>,
) -> Readiness {
    let mut blockers = Vec::new();
    let mut wait = false;
    for r in graph.referrers(obj.id) {
        let Some(rec) = world.by_id(*r) else { continue };
        if waiting.contains(r) || in_flight.contains(r) {
            wait = true;
        } else {
            blockers.push(rec.name());
        }
    }
    if !blockers.is_empty() {
        Readiness::Blocked(format!("waiting for {} to be deleted", blockers.join(", ")))
    } else if wait {
        Readiness::Wait
    } else {
        Readiness::Ready
    }
}

/// A progress bar on a terminal, for passes long enough to want one; hidden otherwise.
fn progress_bar(len: usize) -> indicatif::ProgressBar {
    if len < 20 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(u64::try_from(len).unwrap_or(u64::MAX));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} objects [{elapsed}] {wide_bar}",
    ) {
        bar.set_style(style);
    }
    bar
}
