//! The engine: how one object is actuated (render, write its recipe, dispatch, classify,
//! record). What is pending and when it runs is the scheduler's business (`scheduler.rs`),
//! the long-running loop the daemon's (`daemon.rs`); the object graph is in `graph.rs`.

pub mod daemon;
pub mod graph;
mod lease;
pub mod progress;
mod queue;
pub mod scheduler;
mod worker;

pub(crate) use lease::hostname;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use minijinja::Value;
use serde_json::{Map, Value as Json};
use tracing::{info, warn};

use crate::backoff;
use crate::bookkeeping::Rules;
use crate::config::in_dir;
use crate::definition::Definitions;
use crate::error::{Error, Result};
use crate::output::ObjectView as JsonView;
pub use crate::payload::Recipe;
use crate::payload::{Dispatcher, RenderFailure, Response};
use crate::service::Service;
use crate::snapshot::Snapshot;
use crate::stepdef::{Actuator, Feedback};
use crate::store::{self, Intent, Millis, ObjectRecord, RunRecord, Status, Store};
use crate::sysdir::{Phase, SysDir, Written};
use crate::template::{ObjectView, RenderError, from_serde};

/// The bookkeeping message limit of SPEC §5.1.
const MESSAGE_LIMIT: usize = 1024;
/// Bookkeeping-only outcomes written per transaction by [`Engine::record_batch`].
const RECORD_CHUNK: usize = 2000;

/// A rendered payload, ready to write to the sys dir and to execute.
pub struct Prepared {
    pub obj: Arc<ObjectRecord>,
    pub phase: Phase,
    /// The attributes (and payload vars), as `vars.json` shows them.
    pub attributes: Map<String, Json>,
    pub recipe: Recipe,
    /// The recipe's files for the object's folder (name, content), the main recipe first.
    pub files: Vec<(String, String)>,
    /// What a sync of this recipe applies ([`crate::definition::Definitions::recipe_digest`]).
    pub digest: String,
    /// The payload's template context; feedback and `defer_when` add `result` to it.
    ctx: Map<String, Json>,
    world: Arc<Snapshot>,
}

/// Why a run failed. Kept typed until the message is written to the bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The attributes or the payload could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderFailure),
    /// The recipe could not be written to the sys dir.
    #[error("{0}")]
    SysDir(String),
    /// The backend said no, or could not be reached.
    #[error("{0}")]
    Backend(String),
    #[error("defer_when: {0}")]
    DeferWhen(RenderError),
    #[error("feedback `{field}`: {source}")]
    Feedback { field: String, source: RenderError },
    #[error("feedback `{field}`: {path} matched nothing in the result")]
    FeedbackPath { field: String, path: String },
    /// Found by the engine itself: a dependency cycle, a run task that died.
    #[error("{0}")]
    Engine(String),
}

impl RunError {
    /// Whether the payload had reached the backend when the run failed.
    pub fn dispatched(&self) -> bool {
        match self {
            RunError::Render(_) | RunError::SysDir(_) | RunError::Engine(_) => false,
            RunError::Backend(_)
            | RunError::DeferWhen(_)
            | RunError::Feedback { .. }
            | RunError::FeedbackPath { .. } => true,
        }
    }
}

/// How one run ended.
#[derive(Debug)]
pub enum Outcome {
    /// `digest`: what a sync applied (none for a delete or a model without a payload).
    Ok {
        feedback: Map<String, Json>,
        digest: Option<String>,
    },
    Error(RunError),
    Deferred(String),
    /// A suspect's recipe renders as it did when it was applied: nothing to send (SPEC §5.1
    /// rule 4). Carries the recipe digest.
    Unchanged(String),
}

impl Outcome {
    /// The outcome's name as metrics label it.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Error(_) => "error",
            Outcome::Deferred(_) => "deferred",
            Outcome::Unchanged(_) => "unchanged",
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub passes: usize,
    /// Objects deleted from their backends (and purged) by these passes.
    pub purged: usize,
    pub counts: Vec<(Status, usize)>,
    /// Objects whose policies failed (SPEC §12): the run is not all ok while any did.
    pub policy_errors: usize,
    /// Pull steps whose poll failed (SPEC §13): the run is not all ok while any did.
    pub pull_errors: usize,
    pub all_ok: bool,
}

pub struct Engine {
    pub svc: Service,
    pub store: Arc<dyn Store>,
    pub sys: SysDir,
    /// Everything about backends: rendering payloads into recipes and running them.
    pub payloads: Dispatcher,
    /// The digests of the service's definitions, for drift (SPEC §5.1 rule 4).
    pub definitions: Definitions,
    /// Told how each pass advances; the caller chooses it (`with_progress`), none by default.
    pub(crate) progress: Arc<dyn progress::Progress>,
    /// Payload watchers' runs in flight (SPEC §11).
    pub(crate) watch_runs: crate::steps::watch::Runs,
    /// Recent internal actuations per object, for the run-time loop guard (SPEC §15).
    pub(crate) loops: crate::steps::guard::Guard,
    /// This process as one of several workers of a shared store (SPEC §17): its claims and
    /// whether it leads. `None` outside `run` and `serve`, and on a store one runner drives.
    /// Set once, when the process takes its part ([`Engine::take_part`]).
    pub(crate) worker: std::sync::OnceLock<Arc<worker::Worker>>,
    /// The last pass's objects and their graph, which the next pass catches up on instead
    /// of reading every object again (B4: a daemon woken by a one-object apply read all
    /// 10,000).
    pub(crate) last_world: std::sync::Mutex<Option<(Arc<Snapshot>, graph::ObjectGraph)>>,
}

/// What a process holds while it drives the store ([`Engine::take_part`]).
pub(crate) enum Part {
    Runner(#[allow(dead_code)] lease::LeaseGuard),
    /// The worker (also the engine's) and the renewal of its claims.
    Worker(Arc<worker::Worker>, tokio::task::JoinHandle<()>),
}

impl Drop for Part {
    fn drop(&mut self) {
        if let Part::Worker(w, renewer) = self {
            renewer.abort();
            w.stop();
        }
    }
}

impl Engine {
    /// Opens the store and the sys dir (`sys_dir` overrides the configured one).
    pub fn open(svc: Service, sys_dir: Option<PathBuf>) -> Result<Engine> {
        let store: Arc<dyn Store> = Arc::from(svc.open_store()?);
        let root = sys_dir.unwrap_or_else(|| in_dir(&svc.dir, &svc.config.sys_dir));
        let sys = svc.sys_dir_at(root);
        let payloads = Dispatcher::new(&svc, sys.root()).map_err(Error::failed)?;
        let root_files = payloads.root_files(&svc);
        if !root_files.is_empty() {
            sys.write_root_files(&root_files)
                .map_err(|e| sys_error(&sys, e))?;
        }
        let definitions = Definitions::of(&svc);
        Ok(Engine {
            svc,
            store,
            sys,
            payloads,
            definitions,
            progress: Arc::new(progress::NoProgress),
            watch_runs: Default::default(),
            loops: Default::default(),
            worker: std::sync::OnceLock::new(),
            last_world: std::sync::Mutex::new(None),
        })
    }

    /// The engine with `progress` told how its passes advance.
    pub fn with_progress(mut self, progress: Arc<dyn progress::Progress>) -> Engine {
        self.progress = progress;
        self
    }

    /// Takes this process's part in driving the store for as long as the guard lives: the
    /// runner lease on a store one runner drives (SPEC §5.5, refused while another runner
    /// holds it), or a worker's registration and claims on a shared one (SPEC §17), which
    /// the engine then uses (and so do engines made with [`Engine::with_worker`]).
    pub(crate) fn take_part(&self) -> Result<Part> {
        let ttl = self.svc.config.lease.ttl.0;
        if !self.store.shared() {
            return Ok(Part::Runner(lease::acquire(self.store.clone(), ttl)?));
        }
        let w = worker::Worker::register(self.store.clone(), ttl)?;
        if self.worker.set(w.clone()).is_err() {
            return Err(Error::failed("this engine already drives the store"));
        }
        let renewer = w.keep_renewed();
        Ok(Part::Worker(w, renewer))
    }

    /// This engine as the same worker as `other` (a reload keeps its claims and lead).
    pub(crate) fn with_worker(self, other: &Engine) -> Engine {
        if let Some(w) = other.worker.get() {
            let _ = self.worker.set(w.clone());
        }
        self
    }

    /// Whether this process runs the pull and event steps, watchers and policies: the one
    /// runner, or the leading worker.
    pub(crate) fn leads(&self) -> bool {
        self.worker.get().is_none_or(|w| w.leads())
    }

    pub fn snapshot(&self) -> Result<Arc<Snapshot>> {
        Ok(Arc::new(Snapshot::load(
            self.svc.schema.clone(),
            &*self.store,
        )?))
    }

    /// Secrets masked, cut to the bookkeeping limit.
    pub fn clean_message(&self, msg: &str) -> String {
        let masked = self.svc.secrets.mask(msg);
        if masked.chars().count() <= MESSAGE_LIMIT {
            masked
        } else {
            let mut s: String = masked.chars().take(MESSAGE_LIMIT - 1).collect();
            s.push('…');
            s
        }
    }

    /// Renders the attributes and the payload of `obj` for `phase`. `None` when the model
    /// has no actuator or the actuator no payload for that phase: nothing to dispatch.
    pub fn prepare(
        &self,
        world: &Arc<Snapshot>,
        obj: &Arc<ObjectRecord>,
        phase: Phase,
    ) -> Result<Option<Prepared>, RenderFailure> {
        let Some(act) = self.svc.stepdefs.actuator(&obj.model) else {
            return Ok(None);
        };
        let payload = match phase {
            Phase::Sync => act.sync.as_ref(),
            Phase::Delete => act.delete.as_ref(),
        };
        let Some(payload) = payload else {
            return Ok(None);
        };
        let t = &self.svc.stepdefs.templates;
        let object = ObjectView::value(obj.clone(), world.clone());
        let vars = from_serde(&self.svc.config.vars);
        let attr_ctx = Value::from(std::collections::BTreeMap::from([
            ("object", object.clone()),
            ("vars", vars),
        ]));
        let mut attributes = Map::new();
        for (name, tv) in act.attributes.iter().chain(&payload.vars) {
            let v = t.render_value(tv, &attr_ctx)?;
            attributes.insert(name.clone(), v);
        }
        let mut ctx = attributes.clone();
        ctx.insert(
            "vars".into(),
            serde_json::to_value(&self.svc.config.vars).unwrap_or(Json::Null),
        );
        let payload_ctx = payload_value(&ctx, object);
        let recipe = self
            .payloads
            .render(t, &payload.kind, &payload_ctx, &attributes)?;
        let secrets = &self.svc.secrets;
        let title = format!("{} ({})", obj.name(), phase.as_str());
        let vars_json =
            serde_json::to_string_pretty(&secrets.mask_json(&Json::Object(attributes.clone())))
                .unwrap_or_default();
        let files = recipe.files(phase, secrets, &title, vars_json + "\n");
        let digest = self.definitions.recipe_digest(&obj.model, &files);
        Ok(Some(Prepared {
            obj: obj.clone(),
            phase,
            attributes,
            recipe,
            files,
            digest,
            ctx,
            world: world.clone(),
        }))
    }

    /// Writes the recipe files of `p` into `sys` (the sys dir, or a plan dir); the first one
    /// returned is the main recipe.
    pub fn write_recipe(&self, sys: &SysDir, p: &Prepared) -> Result<Vec<Written>> {
        sys.write_files(&p.obj.model, &p.obj.key, &p.files)
            .map_err(|e| sys_error(sys, e))
    }

    /// Sends the payload and classifies what came back; returns the outcome and the run log.
    pub async fn actuate(&self, p: &Prepared) -> (Outcome, String) {
        let Some(act) = self.svc.stepdefs.actuator(&p.obj.model) else {
            return (
                Outcome::Ok {
                    feedback: Map::new(),
                    digest: None,
                },
                String::new(),
            );
        };
        let dir = self.sys.object_dir(&p.obj.model, &p.obj.key);
        let ex = self
            .payloads
            .execute(&p.recipe, p.phase, &dir, &p.attributes)
            .await;
        let log = self.svc.secrets.mask(&ex.log);
        let outcome = match ex.response {
            Ok(r) => self.classify(act, p, r),
            Err(e) => Outcome::Error(RunError::Backend(e)),
        };
        (outcome, log)
    }

    /// Deferred, failed or ok with its feedback, from a backend's response (SPEC §6.4).
    fn classify(&self, act: &Actuator, p: &Prepared, r: Response) -> Outcome {
        let mut ctx = p.ctx.clone();
        ctx.insert("result".into(), r.result);
        let ctx_value = payload_value(&ctx, ObjectView::value(p.obj.clone(), p.world.clone()));
        let t = &self.svc.stepdefs.templates;
        let deferred = match &act.defer_when {
            Some(tmpl) => match t.render(tmpl, &ctx_value) {
                Ok(v) => truthy(&v),
                Err(e) => return Outcome::Error(RunError::DeferWhen(e)),
            },
            None => r.default_defer,
        };
        if deferred {
            return Outcome::Deferred(format!("deferred: {}", r.described));
        }
        if let Some(f) = r.failure {
            return Outcome::Error(RunError::Backend(f));
        }
        if p.phase == Phase::Delete {
            return Outcome::Ok {
                feedback: Map::new(),
                digest: None,
            };
        }
        let mut feedback = p.obj.feedback.clone();
        for (field, rule) in &act.feedback {
            let v = match rule {
                Feedback::Template(tmpl) => match t.render(tmpl, &ctx_value) {
                    Ok(v) => v,
                    Err(source) => {
                        return Outcome::Error(RunError::Feedback {
                            field: field.clone(),
                            source,
                        });
                    }
                },
                Feedback::JsonPath(path) => {
                    use jsonpath_rust::JsonPath;
                    match r.jsonpath_root.query(path) {
                        Ok(found) if !found.is_empty() => found[0].clone(),
                        _ => {
                            return Outcome::Error(RunError::FeedbackPath {
                                field: field.clone(),
                                path: path.clone(),
                            });
                        }
                    }
                }
            };
            feedback.insert(field.clone(), v);
        }
        Outcome::Ok {
            feedback,
            digest: Some(p.digest.clone()),
        }
    }

    /// Writes an outcome to the store, the sys dir and the logs; returns the new record.
    fn record(
        &self,
        obj: &ObjectRecord,
        phase: Phase,
        outcome: &Outcome,
        log: &str,
    ) -> Result<Option<ObjectRecord>> {
        // A sys dir failure was logged; the object's files are rewritten on its next run.
        let (mut recs, _failed, _) = self.record_runs(&[(obj, phase, outcome, log)])?;
        Ok(recs.pop().flatten())
    }

    /// The store's record of one outcome of a run that read `obj` when it started.
    /// What `outcome` makes of the run; a failure's message ends with where its run log
    /// (`log`, written with the record) tells the rest: the stderr, the whole response.
    fn run_record(
        &self,
        obj: &ObjectRecord,
        phase: Phase,
        outcome: &Outcome,
        log: Option<&Path>,
    ) -> RunRecord {
        let intent = Intent::of(&obj.book);
        match outcome {
            Outcome::Ok { feedback, digest } => RunRecord::Success {
                intent,
                feedback: (phase == Phase::Sync).then(|| {
                    feedback
                        .iter()
                        .map(|(k, v)| (k.clone(), self.svc.secrets.mask_json(v)))
                        .collect()
                }),
                digest: digest.clone(),
            },
            Outcome::Unchanged(digest) => RunRecord::Checked {
                digest: digest.clone(),
            },
            Outcome::Error(e) => {
                let mut message = self.clean_message(&e.to_string());
                if let Some(log) = log {
                    message.push_str(&format!(" (run log: {})", log.display()));
                }
                RunRecord::Failure {
                    intent,
                    message,
                    dispatched: e.dispatched(),
                }
            }
            Outcome::Deferred(msg) => RunRecord::Deferred {
                intent,
                message: self.clean_message(msg),
            },
        }
    }

    /// Records finished runs: the store in one transaction, and each run's log and
    /// `status.json`. Returns each new record (`None`: purged), in order, and the sys dir
    /// writes that failed (errors of their objects, SPEC §5.5).
    ///
    /// The run log and `status.json` are part of recording a run (SPEC §8): they are written
    /// before the transaction commits, so an object the store calls ok always has both. A
    /// crash in between leaves files ahead of the store, in a folder the pass journaled;
    /// the next pass rewrites it ([`Engine::repair`]). Purged folders move aside after the
    /// commit, so no folder of an object the store still has is ever moved.
    pub(crate) fn record_runs(
        &self,
        runs: &[(&ObjectRecord, Phase, &Outcome, &str)],
    ) -> Result<(Vec<Option<ObjectRecord>>, Vec<SysFailure>, usize)> {
        let now = Millis::now();
        let stamp = run_stamp(now);
        let records: Vec<(RunRecord, f64)> = runs
            .iter()
            .map(|(obj, phase, outcome, log)| {
                let log = (!log.is_empty())
                    .then(|| self.sys.run_log_path(&obj.model, &obj.key, *phase, &stamp));
                (
                    self.run_record(obj, *phase, outcome, log.as_deref()),
                    backoff::unit_random(),
                )
            })
            .collect();
        // The files are written from what each outcome will make of the object as the store
        // has it now, before the transaction and outside it: the store is not held while
        // files are written. The transaction recomputes every record; the rare one that
        // differs (the object changed in between) has its files rewritten after the commit.
        let ids: Vec<i64> = runs.iter().map(|(obj, ..)| obj.id).collect();
        let mut current: std::collections::HashMap<i64, ObjectRecord> = self
            .store
            .get_by_ids(&ids)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let predicted: Vec<Option<ObjectRecord>> = runs
            .iter()
            .zip(&records)
            .map(|((obj, ..), (run, jitter))| {
                let cur = current.remove(&obj.id)?;
                store::apply_run(cur, run, now, &self.rules(&obj.model), *jitter).0
            })
            .collect();
        let mut files = SysWrites::default();
        for ((obj, phase, outcome, log), rec) in runs.iter().zip(&predicted) {
            match outcome {
                // Nothing ran and nothing in the object's folder changed.
                Outcome::Unchanged(_) => {
                    tracing::debug!(object = %obj.name(), "recipe unchanged by the new inputs");
                    continue;
                }
                Outcome::Ok { .. } => info!(object = %obj.name(), phase = phase.as_str(), "ok"),
                Outcome::Error(e) => {
                    warn!(object = %obj.name(), phase = phase.as_str(), error = %self.clean_message(&e.to_string()), "failed")
                }
                Outcome::Deferred(m) => {
                    info!(object = %obj.name(), phase = phase.as_str(), reason = %self.clean_message(m), "deferred")
                }
            }
            if !log.is_empty() {
                files.0.push(SysWrite::RunLog {
                    model: obj.model.clone(),
                    key: obj.key.clone(),
                    phase: *phase,
                    stamp: stamp.clone(),
                    text: (*log).to_owned(),
                });
            }
            if let Some(r) = rec {
                files.0.push(self.status_write(r));
            }
        }
        let mut failed = files.apply(&self.sys);
        let mut recs = Vec::with_capacity(runs.len());
        let mut marked = 0;
        // Beside the other workers' outcomes: each run here was claimed, so the objects
        // this writes are this worker's alone (a referrer it marks is locked as it is read).
        let mut tx = self.store.write_own()?;
        let fenced = self.fenced(&mut *tx, runs.iter().map(|(obj, ..)| *obj))?;
        for (((obj, ..), (run, jitter)), fenced) in runs.iter().zip(&records).zip(fenced) {
            if !fenced {
                // Another worker took the object over: its state is that worker's to
                // write, and the files below are rewritten from it. A plain read, not
                // `get_by_id`, which would lock the row that worker writes.
                recs.push(tx.get(&obj.model, &obj.key)?.filter(|r| r.id == obj.id));
                continue;
            }
            let rules = self.rules(&obj.model);
            let (rec, m) = store::record_run(&mut *tx, obj.id, run, now, &rules, *jitter)?;
            recs.push(rec);
            marked += m;
        }
        tx.commit()?;
        let mut after = SysWrites::default();
        for (((obj, _, outcome, _), rec), guess) in runs.iter().zip(&recs).zip(&predicted) {
            if matches!(outcome, Outcome::Unchanged(_)) {
                continue;
            }
            match rec {
                None => after.0.push(SysWrite::Retire {
                    model: obj.model.clone(),
                    key: obj.key.clone(),
                }),
                Some(r) if guess.as_ref() != Some(r) => after.0.push(self.status_write(r)),
                Some(_) => {}
            }
        }
        failed.extend(after.apply(&self.sys));
        Ok((recs, failed, marked))
    }

    /// Whether the outcome of each object's run may be written in `tx`: always, but on a
    /// shared store where the run was claimed and the claim is no longer current (SPEC
    /// §17's fence: a worker paused or cut off past its ttl never overwrites a newer
    /// outcome). The claims are fenced together, in one statement on PostgreSQL.
    fn fenced<'o>(
        &self,
        tx: &mut dyn store::WriteTx,
        objs: impl Iterator<Item = &'o ObjectRecord>,
    ) -> Result<Vec<bool>> {
        let objs: Vec<&ObjectRecord> = objs.collect();
        let Some(w) = self.worker.get() else {
            return Ok(vec![true; objs.len()]);
        };
        let fences: Vec<worker::Fence> = objs.iter().map(|o| w.fence(o.id)).collect();
        let claims: Vec<store::Claim> = fences
            .iter()
            .filter_map(|f| match f {
                worker::Fence::Claim(c) => Some(*c),
                _ => None,
            })
            .collect();
        let mut verdicts = tx.fence(w.name(), &claims)?.into_iter();
        let mut held = Vec::with_capacity(objs.len());
        for (obj, f) in objs.iter().zip(&fences) {
            let ok = match f {
                worker::Fence::Unclaimed => true,
                worker::Fence::Claim(_) => verdicts.next().unwrap_or(false),
                worker::Fence::Lost => false,
            };
            if !ok {
                warn!(object = %obj.name(), "lost the claim on this object to another worker; its outcome is not written");
            }
            held.push(ok);
        }
        Ok(held)
    }

    fn status_write(&self, r: &ObjectRecord) -> SysWrite {
        SysWrite::Status {
            model: r.model.clone(),
            key: r.key.clone(),
            text: self.status_json(r),
        }
    }

    /// `status.json`: the object as `get -o json` shows it, secrets masked.
    fn status_json(&self, r: &ObjectRecord) -> String {
        let view = serde_json::to_value(JsonView::new(&self.svc.schema, r)).unwrap_or_default();
        serde_json::to_string_pretty(&self.svc.secrets.mask_json(&view)).unwrap_or_default() + "\n"
    }

    /// Repairs the folders a pass journaled and did not finish (a runner killed mid-pass):
    /// temporary files are removed, `status.json` is rewritten from the store, and the
    /// folder of an object the store no longer has moves aside (SPEC §8). Cheap when the
    /// last pass ended: the journal is then empty.
    pub(crate) fn repair(&self) -> Result<()> {
        self.repair_journal(&self.journal_owner())
    }

    /// Repairs, in this engine's sys dir, what the journal of `owner` lists, and clears it.
    fn repair_journal(&self, owner: &str) -> Result<()> {
        let journaled = self.store.journaled(owner)?;
        if journaled.is_empty() {
            return Ok(());
        }
        let mut swept = 0;
        for (id, model, key) in &journaled {
            let dir = self.sys.object_dir(model, key);
            let fix = || -> std::io::Result<usize> {
                let n = self.sys.sweep(model, key)?;
                match self.store.get(model, key) {
                    Ok(Some(r)) if r.id == *id => {
                        if dir.exists() {
                            self.sys.write_files(
                                model,
                                key,
                                &[("status.json".to_owned(), self.status_json(&r))],
                            )?;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => self.sys.retire(model, key)?,
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
                Ok(n)
            };
            match fix() {
                Ok(n) => swept += n,
                Err(e) => {
                    warn!(object = %format!("{model}/{key}"), path = %dir.display(), error = %e, "cannot repair the sys dir folder")
                }
            }
        }
        info!(
            folders = journaled.len(),
            temporary_files = swept,
            "repaired the sys dir after an interrupted run"
        );
        let mut tx = self.store.write()?;
        for (id, ..) in &journaled {
            store::interrupted(&mut *tx, *id)?;
        }
        tx.clear_journal(owner)?;
        tx.commit()?;
        Ok(())
    }

    /// The leader's housekeeping on a shared store (SPEC §17): a worker whose heartbeat is
    /// older than twice the lease ttl is dead (a live one beats every ttl/3, and a paused
    /// one has lost its claims by then anyway), so its journal is repaired here and it is
    /// retired: its row leaves `status` and its claims are freed at once. Its folders are
    /// this sys dir's when the workers share one; a worker with a sys dir of its own repairs
    /// nothing of another's here, which only rewrites `status.json` of folders it has.
    pub(crate) fn housekeep(&self) -> Result<()> {
        let Some(me) = self.worker.get() else {
            return Ok(());
        };
        let ttl = i64::try_from(self.svc.config.lease.ttl.0.as_millis()).unwrap_or(i64::MAX / 4);
        let now = crate::store::Millis::now().0;
        let cutoff = now.saturating_sub(ttl.saturating_mul(2));
        for dead in self.store.workers()? {
            if dead.name == me.name() || dead.heartbeat.0 >= cutoff {
                continue;
            }
            self.repair_journal(&dead.name)?;
            self.store.retire_worker(&dead.name)?;
            info!(
                worker = %dead.name,
                silent_ms = now.saturating_sub(dead.heartbeat.0),
                "retired a worker that stopped beating: its journal repaired, its claims freed"
            );
        }
        Ok(())
    }

    /// Whose journal this engine keeps: the worker's, when workers share the store (their
    /// sys dirs may be one), so none repairs or clears what another has in flight; `""` for
    /// the one runner of a store nobody shares.
    fn journal_owner(&self) -> String {
        match self.worker.get() {
            Some(w) => w.name().to_owned(),
            None => String::new(),
        }
    }

    /// Writes many bookkeeping-only outcomes (no run log, no recipe), [`RECORD_CHUNK`] to a
    /// transaction: objects without a payload, and blocked ones.
    pub(crate) fn record_batch(
        &self,
        writes: &[(Arc<ObjectRecord>, RunRecord)],
    ) -> Result<Vec<Option<ObjectRecord>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let now = Millis::now();
        let mut out = Vec::with_capacity(writes.len());
        // Each outcome stands alone, so a long list is written in several transactions: the
        // store's writer is free between them, and an event stream committing alongside
        // waits for one chunk, not for all (B8 saw a 1 s stall behind 50,000 at once).
        for chunk in writes.chunks(RECORD_CHUNK) {
            let mut tx = self.store.write()?;
            for (obj, run) in chunk {
                let rules = self.rules(&obj.model);
                out.push(
                    store::record_run(&mut *tx, obj.id, run, now, &rules, backoff::unit_random())?
                        .0,
                );
            }
            tx.commit()?;
        }
        for ((obj, _), rec) in writes.iter().zip(&out) {
            // Purged: its folder moves aside. A failure leaves the folder where it was; the
            // store no longer has the object, so there is nothing to mark in error.
            if rec.is_none()
                && let Err(e) = self.sys.retire(&obj.model, &obj.key)
            {
                warn!(object = %obj.name(), error = %sys_error(&self.sys, e), "cannot move a purged object's folder aside");
            }
        }
        if out.iter().any(Option::is_none) {
            prune_deleted(&self.sys);
        }
        Ok(out)
    }

    /// Journals the objects whose folders a pass is about to write (see [`Engine::repair`]).
    pub(crate) fn journal(&self, objects: &[(i64, String, String)]) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        // The journal's rows are this worker's (by owner): no other worker's writes wait.
        let mut tx = self.store.write_own()?;
        tx.journal(&self.journal_owner(), objects)?;
        tx.commit()?;
        Ok(())
    }

    /// A pass ended with every folder it journaled written.
    pub(crate) fn end_journal(&self) -> Result<()> {
        let mut tx = self.store.write_own()?;
        tx.clear_journal(&self.journal_owner())?;
        tx.commit()?;
        Ok(())
    }

    /// What decides when objects of `model` are due and what their failures cost.
    pub fn rules(&self, model: &str) -> Rules<'_> {
        let c = &self.svc.config;
        let resync = self
            .svc
            .stepdefs
            .actuator(model)
            .and_then(|a| a.resync)
            .unwrap_or(c.resync);
        Rules {
            backoff: &c.backoff,
            resync: resync.0,
            defer_retry: c.defer_retry.0,
        }
    }
}

/// Sys dir files that follow from recorded runs, in the order they must be written.
#[derive(Default)]
pub(crate) struct SysWrites(Vec<SysWrite>);

enum SysWrite {
    RunLog {
        model: String,
        key: String,
        phase: Phase,
        stamp: String,
        text: String,
    },
    Status {
        model: String,
        key: String,
        text: String,
    },
    Retire {
        model: String,
        key: String,
    },
}

/// A sys dir write that failed: an error of that object, never of the engine (SPEC §5.5).
pub(crate) struct SysFailure {
    pub(crate) model: String,
    pub(crate) key: String,
    pub(crate) message: String,
}

impl SysWrites {
    /// Writes everything it can; what fails is returned, object by object, with the path
    /// and the cause (a full disk, a name the file system refuses).
    pub(crate) fn apply(self, sys: &SysDir) -> Vec<SysFailure> {
        let mut failed: Vec<SysFailure> = Vec::new();
        let mut retired = false;
        for w in self.0 {
            let (model, key, result) = match w {
                SysWrite::RunLog {
                    model,
                    key,
                    phase,
                    stamp,
                    text,
                } => {
                    let r = sys
                        .write_run_log(&model, &key, phase, &stamp, &text)
                        .map(drop);
                    (model, key, r)
                }
                SysWrite::Status { model, key, text } => {
                    let r = sys
                        .write_files(&model, &key, &[("status.json".to_owned(), text)])
                        .map(drop);
                    (model, key, r)
                }
                SysWrite::Retire { model, key } => {
                    retired = true;
                    let r = sys.retire(&model, &key);
                    (model, key, r)
                }
            };
            if let Err(e) = result
                && !failed.iter().any(|f| f.model == model && f.key == key)
            {
                let path = sys.object_dir(&model, &key);
                warn!(object = %format!("{model}/{key}"), path = %path.display(), error = %e, "sys dir write failed");
                failed.push(SysFailure {
                    message: format!("sys dir {}: {e}", path.display()),
                    model,
                    key,
                });
            }
        }
        if retired {
            prune_deleted(sys);
        }
        failed
    }
}

/// Trims `.deleted/` after folders moved there; a failure is only worth a warning (the
/// folders stay until the next trim).
fn prune_deleted(sys: &SysDir) {
    if let Err(e) = sys.prune_deleted() {
        warn!(error = %sys_error(sys, e), "cannot trim the sys dir's .deleted folder");
    }
}

/// An I/O failure in the sys dir, named by its root.
fn sys_error(sys: &SysDir, e: std::io::Error) -> Error {
    Error::failed(format!("sys dir {}: {e}", sys.root().display()))
}

/// The payload context: attributes as top-level variables, plus `object` and `vars`.
fn payload_value(ctx: &Map<String, Json>, object: Value) -> Value {
    let mut map: std::collections::BTreeMap<String, Value> = ctx
        .iter()
        .map(|(k, v)| (k.clone(), from_serde(v)))
        .collect();
    map.insert("object".to_owned(), object);
    Value::from(map)
}

/// Whether a rendered `defer_when` says yes: Jinja truthiness, with strings read as
/// Ansible's booleans.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Bool(b) => *b,
        Json::String(s) => crate::boolean::parse(s) == Some(true),
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::Null => false,
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// `20261122T032411.123Z`: sortable and safe in a file name.
pub fn run_stamp(t: Millis) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(t.0).unwrap_or(0));
    humantime::format_rfc3339_millis(t)
        .to_string()
        .replace(['-', ':'], "")
}
