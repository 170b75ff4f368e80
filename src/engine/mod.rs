//! The engine: how one object is actuated (render, write its recipe, dispatch, classify,
//! record). What is pending and when it runs is the scheduler's business (`scheduler.rs`),
//! the long-running loop the daemon's (`daemon.rs`); the object graph is in `graph.rs`.

pub mod daemon;
pub mod graph;
pub mod progress;
pub mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use minijinja::Value;
use serde_json::{Map, Value as Json};
use tracing::{info, warn};

use crate::backoff;
use crate::config::Runner;
use crate::config::in_dir;
use crate::error::{Error, Result};
use crate::output::ObjectView as JsonView;
use crate::payload::playbook::{self, PlaybookPlan};
use crate::payload::rest::{self, Exchange, RestPlan};
use crate::payload::rest_recipe;
use crate::service::Service;
use crate::snapshot::Snapshot;
use crate::stepdef::{Actuator, Feedback, PayloadKind};
use crate::store::{Millis, ObjectRecord, RunRecord, Status, Store};
use crate::sysdir::{Phase, SysDir, Written};
use crate::template::{ObjectView, from_serde};

/// The bookkeeping message limit of SPEC §5.1.
const MESSAGE_LIMIT: usize = 1024;

/// A rendered payload, ready to write to the sys dir and to execute.
pub struct Prepared {
    pub obj: Arc<ObjectRecord>,
    pub phase: Phase,
    /// The attributes (and payload vars), as `vars.json` shows them.
    pub attributes: Map<String, Json>,
    pub recipe: Recipe,
    /// The payload's template context; feedback and `defer_when` add `result` to it.
    ctx: Map<String, Json>,
    world: Arc<Snapshot>,
}

// One per object run, never held in bulk: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Recipe {
    Rest(RestPlan),
    Playbook(PlaybookPlan),
}

impl Recipe {
    pub fn payload_name(&self) -> &'static str {
        match self {
            Recipe::Rest(_) => "rest",
            Recipe::Playbook(_) => "playbook",
        }
    }
}

/// How one run ended.
#[derive(Debug)]
pub enum Outcome {
    Ok { feedback: Map<String, Json> },
    Error(String),
    Deferred(String),
}

#[derive(Debug, Default)]
pub struct Summary {
    pub passes: usize,
    pub counts: Vec<(Status, usize)>,
    pub all_ok: bool,
}

pub struct Engine {
    pub svc: Service,
    pub store: Box<dyn Store>,
    pub sys: SysDir,
    client: reqwest::Client,
    /// The built-in runner's SSH masters, opened on first use and kept for the engine's life.
    ssh_pool: std::sync::OnceLock<Arc<crate::playbook::ssh::SshPool>>,
    /// Told how each pass advances; the caller chooses it (`with_progress`), none by default.
    progress: Arc<dyn progress::Progress>,
}

impl Engine {
    /// Opens the store and the sys dir (`sys_dir` overrides the configured one).
    pub fn open(svc: Service, sys_dir: Option<PathBuf>) -> Result<Engine> {
        // reqwest is built without a default TLS provider; ring is the one we ship.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = svc.open_store()?;
        let root = sys_dir.unwrap_or_else(|| in_dir(&svc.dir, &svc.config.sys_dir));
        let sys = SysDir::new(root, usize::try_from(svc.config.sys_keep_runs).unwrap_or(5));
        let uses_playbooks = svc.stepdefs.actuators.values().any(|a| {
            [&a.sync, &a.delete]
                .into_iter()
                .flatten()
                .any(|p| matches!(p.kind, PayloadKind::Playbook(_)))
        });
        if uses_playbooks {
            let cfg = playbook::ansible_cfg(
                &in_dir(&svc.dir, Path::new(playbook::PLAYBOOKS_DIR)),
                &svc.config.ssh,
            );
            sys.write_root_files(&[
                ("ansible.cfg", cfg),
                (
                    "callback_plugins/stepsync_result.py",
                    playbook::RESULT_CALLBACK.to_owned(),
                ),
            ])
            .map_err(|e| sys_error(&sys, e))?;
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("stepsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::failed(format!("cannot create the HTTP client: {e}")))?;
        Ok(Engine {
            ssh_pool: std::sync::OnceLock::new(),
            svc,
            store,
            sys,
            client,
            progress: Arc::new(progress::NoProgress),
        })
    }

    /// The engine with `progress` told how its passes advance.
    pub fn with_progress(mut self, progress: Arc<dyn progress::Progress>) -> Engine {
        self.progress = progress;
        self
    }

    pub fn snapshot(&self) -> Result<Arc<Snapshot>> {
        Ok(Arc::new(Snapshot::load(
            self.svc.schema.clone(),
            &*self.store,
        )?))
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
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
    ) -> Result<Option<Prepared>, String> {
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
            let v = t.render_value(tv, &attr_ctx).map_err(|e| e.to_string())?;
            attributes.insert(name.clone(), v);
        }
        let mut ctx = attributes.clone();
        ctx.insert(
            "vars".into(),
            serde_json::to_value(&self.svc.config.vars).unwrap_or(Json::Null),
        );
        let payload_ctx = payload_value(&ctx, object);
        let recipe = match &payload.kind {
            PayloadKind::Rest(r) => Recipe::Rest(
                rest::render(t, r, &payload_ctx, rest::DEFAULT_TIMEOUT)
                    .map_err(|e| e.to_string())?,
            ),
            PayloadKind::Playbook(pb) => {
                let hosts = match &pb.hosts {
                    Some(h) => Some(
                        t.render_string(h, &payload_ctx)
                            .map_err(|e| e.to_string())?,
                    ),
                    None => None,
                };
                let cx = playbook::Context {
                    playbooks_dir: &in_dir(&self.svc.dir, Path::new(playbook::PLAYBOOKS_DIR)),
                    inventory: &self.svc.inventory,
                    ssh: &self.svc.config.ssh,
                    secrets: &self.svc.secrets,
                };
                Recipe::Playbook(playbook::render(
                    &cx,
                    &pb.playbook,
                    &attributes,
                    hosts.as_deref(),
                )?)
            }
        };
        Ok(Some(Prepared {
            obj: obj.clone(),
            phase,
            attributes,
            recipe,
            ctx,
            world: world.clone(),
        }))
    }

    /// Writes the recipe files of `p`; the first one returned is the main recipe.
    pub fn write_recipe(&self, p: &Prepared) -> Result<Vec<Written>> {
        let secrets = &self.svc.secrets;
        let title = format!("{} ({})", p.obj.name(), p.phase.as_str());
        let vars = secrets.mask(
            &serde_json::to_string_pretty(&Json::Object(p.attributes.clone())).unwrap_or_default(),
        );
        let files = match &p.recipe {
            Recipe::Rest(plan) => vec![
                (
                    format!("{}.http", p.phase.as_str()),
                    rest_recipe::to_http(plan, secrets, &title),
                ),
                (
                    format!("{}.sh", p.phase.as_str()),
                    rest_recipe::to_sh(plan, secrets, &title),
                ),
                ("vars.json".to_owned(), vars + "\n"),
            ],
            Recipe::Playbook(plan) => vec![
                (format!("{}.yml", p.phase.as_str()), plan.playbook.clone()),
                ("inventory.yml".to_owned(), plan.inventory.clone()),
                ("vars.json".to_owned(), vars + "\n"),
            ],
        };
        self.sys
            .write_files(&p.obj.model, &p.obj.key, &files)
            .map_err(|e| sys_error(&self.sys, e))
    }

    /// Sends the payload and classifies what came back.
    pub async fn actuate(&self, p: &Prepared) -> (Outcome, String) {
        let Some(act) = self.svc.stepdefs.actuator(&p.obj.model) else {
            return (
                Outcome::Ok {
                    feedback: Map::new(),
                },
                String::new(),
            );
        };
        match &p.recipe {
            Recipe::Rest(plan) => {
                let ex = rest::execute(&self.client, plan, p.phase == Phase::Delete).await;
                let log = self.svc.secrets.mask(&rest_log(&ex));
                let Some(result) = &ex.result else {
                    // No response at all: connection errors and timeouts are errors, with backoff.
                    let why = ex
                        .failure
                        .clone()
                        .unwrap_or_else(|| "no response".to_owned());
                    return (Outcome::Error(why), log);
                };
                let json = serde_json::to_value(result).unwrap_or(Json::Null);
                let default_defer = matches!(result.status, 429 | 503);
                let failure = ex.failure.clone();
                let described = failure
                    .clone()
                    .unwrap_or_else(|| format!("status {}", result.status));
                (
                    self.classify(
                        act,
                        p,
                        json,
                        &result.body,
                        failure,
                        default_defer,
                        described,
                    ),
                    log,
                )
            }
            Recipe::Playbook(plan) => {
                if self.svc.config.runner == Runner::Builtin {
                    let source = plan.source.clone();
                    let hosts = plan.hosts.clone();
                    let attributes = p.attributes.clone();
                    let playbooks_dir = in_dir(&self.svc.dir, Path::new(playbook::PLAYBOOKS_DIR));
                    let inventory = self.svc.inventory.clone();
                    let pool = self
                        .ssh_pool
                        .get_or_init(|| {
                            Arc::new(crate::playbook::ssh::SshPool::new(
                                tokio::runtime::Handle::current(),
                            ))
                        })
                        .clone();
                    let mut ssh = self.svc.config.ssh.clone();
                    ssh.private_key = ssh.private_key.map(|k| in_dir(&self.svc.dir, &k));
                    ssh.known_hosts_file = ssh.known_hosts_file.map(|k| in_dir(&self.svc.dir, &k));
                    // The built-in runner is synchronous (processes and files): keep it off
                    // the scheduler's threads.
                    let joined = tokio::task::spawn_blocking(move || {
                        let opts = crate::playbook::run::Options {
                            playbooks_dir: &playbooks_dir,
                            inventory: &inventory,
                            attributes: &attributes,
                            hosts: hosts.as_deref(),
                            ssh_pool: Some(&pool),
                            ssh: &ssh,
                        };
                        crate::playbook::run::run(&source, &opts)
                    })
                    .await;
                    return match joined {
                        Ok(Ok((r, log))) => {
                            let log = self.svc.secrets.mask(&log);
                            if r.failed > 0 || r.unreachable > 0 {
                                let msg = r
                                    .message
                                    .clone()
                                    .unwrap_or_else(|| "the playbook failed".to_owned());
                                return (Outcome::Error(msg), log);
                            }
                            let json = serde_json::to_value(&r).unwrap_or(Json::Null);
                            (
                                self.classify(
                                    act,
                                    p,
                                    json.clone(),
                                    &json,
                                    None,
                                    false,
                                    String::new(),
                                ),
                                log,
                            )
                        }
                        Ok(Err(e)) => (Outcome::Error(e), String::new()),
                        Err(e) => (
                            Outcome::Error(format!("the playbook run panicked: {e}")),
                            String::new(),
                        ),
                    };
                }
                let dir = self.sys.object_dir(&p.obj.model, &p.obj.key);
                let recipe = format!("{}.yml", p.phase.as_str());
                let (res, log) =
                    playbook::run_ansible(&dir, self.sys.root(), &recipe, &self.svc.secrets).await;
                let log = self.svc.secrets.mask(&log);
                match res {
                    Ok(r) => {
                        let json = serde_json::to_value(&r).unwrap_or(Json::Null);
                        (
                            self.classify(act, p, json.clone(), &json, None, false, String::new()),
                            log,
                        )
                    }
                    Err(e) => (Outcome::Error(e), log),
                }
            }
        }
    }

    /// Deferred, failed or ok with its feedback, from a run's `result` (SPEC §6.4).
    /// `jsonpath_root` is what `{jsonpath: ...}` feedback reads: a REST body, a playbook result.
    #[allow(clippy::too_many_arguments)]
    fn classify(
        &self,
        act: &Actuator,
        p: &Prepared,
        result: Json,
        jsonpath_root: &Json,
        failure: Option<String>,
        default_defer: bool,
        described: String,
    ) -> Outcome {
        let mut ctx = p.ctx.clone();
        ctx.insert("result".into(), result);
        let ctx_value = payload_value(&ctx, ObjectView::value(p.obj.clone(), p.world.clone()));
        let t = &self.svc.stepdefs.templates;
        let deferred = match &act.defer_when {
            Some(tmpl) => match t.render(tmpl, &ctx_value) {
                Ok(v) => truthy(&v),
                Err(e) => return Outcome::Error(format!("defer_when: {e}")),
            },
            None => default_defer,
        };
        if deferred {
            return Outcome::Deferred(format!("deferred: {described}"));
        }
        if let Some(f) = failure {
            return Outcome::Error(f);
        }
        if p.phase == Phase::Delete {
            return Outcome::Ok {
                feedback: Map::new(),
            };
        }
        let mut feedback = p.obj.feedback.clone();
        for (field, rule) in &act.feedback {
            let v = match rule {
                Feedback::Template(tmpl) => match t.render(tmpl, &ctx_value) {
                    Ok(v) => v,
                    Err(e) => return Outcome::Error(format!("feedback `{field}`: {e}")),
                },
                Feedback::JsonPath(path) => {
                    use jsonpath_rust::JsonPath;
                    match jsonpath_root.query(path) {
                        Ok(found) if !found.is_empty() => found[0].clone(),
                        _ => {
                            return Outcome::Error(format!(
                                "feedback `{field}`: {path} matched nothing in the result"
                            ));
                        }
                    }
                }
            };
            feedback.insert(field.clone(), v);
        }
        Outcome::Ok { feedback }
    }

    /// Writes an outcome to the store, the sys dir and the logs; returns the new record.
    fn record(
        &self,
        obj: &ObjectRecord,
        phase: Phase,
        outcome: &Outcome,
        log: &str,
    ) -> Result<Option<ObjectRecord>> {
        let (mut recs, writes) = self.record_runs(&[(obj, phase, outcome, log)])?;
        writes.apply(&self.sys)?;
        Ok(recs.pop().flatten())
    }

    /// The store's record of one outcome.
    fn run_record(&self, obj: &ObjectRecord, outcome: &Outcome, now: Millis) -> RunRecord {
        match outcome {
            Outcome::Ok { feedback } => {
                let masked = self
                    .svc
                    .secrets
                    .mask(&Json::Object(feedback.clone()).to_string());
                let feedback = serde_json::from_str(&masked).unwrap_or_default();
                RunRecord::Success {
                    generation: obj.book.generation,
                    feedback,
                }
            }
            Outcome::Error(msg) => {
                let b = &self.svc.config.backoff;
                let next = (!b.disabled).then(|| {
                    let d = backoff::delay(b, obj.book.failures + 1);
                    Millis(now.0 + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
                });
                RunRecord::Failure {
                    message: self.clean_message(msg),
                    next_retry_at: next,
                }
            }
            Outcome::Deferred(msg) => RunRecord::Deferred {
                message: self.clean_message(msg),
            },
        }
    }

    /// Writes finished runs to the store in one transaction and returns each new record
    /// (`None`: purged), in order, with the sys dir files that follow from them (run logs,
    /// `status.json`, retired folders). The caller applies those, possibly on another thread,
    /// before it runs any of these objects again.
    pub(crate) fn record_runs(
        &self,
        runs: &[(&ObjectRecord, Phase, &Outcome, &str)],
    ) -> Result<(Vec<Option<ObjectRecord>>, SysWrites)> {
        let now = Millis::now();
        let mut recs = Vec::with_capacity(runs.len());
        {
            let mut tx = self.store.write()?;
            for (obj, phase, outcome, _) in runs {
                let purge = *phase == Phase::Delete && matches!(outcome, Outcome::Ok { .. });
                recs.push(if purge {
                    tx.purge(obj.id)?;
                    None
                } else {
                    tx.record_run(obj.id, &self.run_record(obj, outcome, now), now)?
                });
            }
            tx.commit()?;
        }
        let stamp = run_stamp(now);
        let mut writes = SysWrites::default();
        for ((obj, phase, outcome, log), rec) in runs.iter().zip(&recs) {
            match outcome {
                Outcome::Ok { .. } => info!(object = %obj.name(), phase = phase.as_str(), "ok"),
                Outcome::Error(m) => {
                    warn!(object = %obj.name(), phase = phase.as_str(), error = %self.clean_message(m), "failed")
                }
                Outcome::Deferred(m) => {
                    info!(object = %obj.name(), phase = phase.as_str(), reason = %self.clean_message(m), "deferred")
                }
            }
            if !log.is_empty() {
                writes.0.push(SysWrite::RunLog {
                    model: obj.model.clone(),
                    key: obj.key.clone(),
                    phase: *phase,
                    stamp: stamp.clone(),
                    text: (*log).to_owned(),
                });
            }
            writes.0.push(match rec {
                Some(r) => {
                    let status = serde_json::to_string_pretty(&JsonView::new(&self.svc.schema, r))
                        .unwrap_or_default();
                    SysWrite::Status {
                        model: r.model.clone(),
                        key: r.key.clone(),
                        text: self.svc.secrets.mask(&status) + "\n",
                    }
                }
                None => SysWrite::Retire {
                    model: obj.model.clone(),
                    key: obj.key.clone(),
                },
            });
        }
        Ok((recs, writes))
    }

    /// Writes many bookkeeping-only outcomes (no run log, no recipe) in one transaction:
    /// objects without a payload, and blocked ones. `None` in `run` purges the object.
    pub(crate) fn record_batch(
        &self,
        writes: &[(Arc<ObjectRecord>, Option<RunRecord>)],
    ) -> Result<Vec<Option<ObjectRecord>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let now = Millis::now();
        let mut tx = self.store.write()?;
        let mut out = Vec::with_capacity(writes.len());
        for (obj, run) in writes {
            out.push(match run {
                Some(run) => tx.record_run(obj.id, run, now)?,
                None => {
                    tx.purge(obj.id)?;
                    None
                }
            });
        }
        tx.commit()?;
        for (obj, run) in writes {
            if run.is_none() {
                self.sys
                    .retire(&obj.model, &obj.key)
                    .map_err(|e| sys_error(&self.sys, e))?;
            }
        }
        Ok(out)
    }

    /// When an in-sync object is next due for a resync, if its actuator (or the service)
    /// asks for resyncs.
    pub fn resync_at(&self, obj: &ObjectRecord) -> Option<Millis> {
        let period = self
            .svc
            .stepdefs
            .actuator(&obj.model)
            .and_then(|a| a.resync)
            .unwrap_or(self.svc.config.resync);
        let last = obj.book.last_success_at?;
        (!period.0.is_zero()).then(|| {
            Millis(
                last.0
                    .saturating_add(i64::try_from(period.0.as_millis()).unwrap_or(i64::MAX)),
            )
        })
    }

    /// Whether `obj` is due for a sync now.
    pub fn sync_due(&self, obj: &ObjectRecord, now: Millis) -> bool {
        obj.book.synced_generation < obj.book.generation
            || self.resync_at(obj).is_some_and(|t| t <= now)
    }

    pub(crate) fn waiting_on_backoff(&self, obj: &ObjectRecord, now: Millis) -> bool {
        !self.svc.config.backoff.disabled
            && obj.book.status == Status::Error
            && obj.book.next_retry_at.is_some_and(|t| t > now)
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

impl SysWrites {
    pub(crate) fn apply(self, sys: &SysDir) -> Result<()> {
        let io = |e: std::io::Error| sys_error(sys, e);
        for w in self.0 {
            match w {
                SysWrite::RunLog {
                    model,
                    key,
                    phase,
                    stamp,
                    text,
                } => {
                    sys.write_run_log(&model, &key, phase, &stamp, &text)
                        .map_err(io)?;
                }
                SysWrite::Status { model, key, text } => {
                    sys.write_files(&model, &key, &[("status.json".to_owned(), text)])
                        .map_err(io)?;
                }
                SysWrite::Retire { model, key } => sys.retire(&model, &key).map_err(io)?,
            }
        }
        Ok(())
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

fn truthy(v: &Json) -> bool {
    match v {
        Json::Bool(b) => *b,
        Json::String(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "yes" | "1" | "on"
        ),
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

/// The run log of a REST run: every request sent and what came back.
fn rest_log(ex: &Exchange) -> String {
    let mut out = String::new();
    for (req, status, text) in &ex.log {
        out.push_str(&format!("> {} {}\n", req.method, req.url));
        for (k, v) in &req.headers {
            out.push_str(&format!("> {k}: {v}\n"));
        }
        if let Some(b) = &req.body {
            out.push_str(&format!(">\n> {b}\n"));
        }
        match status {
            Some(s) => out.push_str(&format!("< {s}\n< {}\n\n", text.trim_end())),
            None => out.push_str(&format!("! {text}\n\n")),
        }
    }
    match &ex.failure {
        Some(f) => out.push_str(&format!("FAILED: {f}\n")),
        None => out.push_str("OK\n"),
    }
    out
}
