//! Watchers at run time (SPEC §11). The store notes each watched change in its outbox in
//! the transaction of the write ([`crate::store::Triggers`]); a pass drains it here. A
//! `resync` watcher makes the linked objects pending in one transaction with the removal of
//! the entry, so a crash between the write and the drain loses nothing and a drain that
//! committed is never repeated. A payload watcher's entry stays until its runs ended: at
//! least once, never retried on failure, blocking nothing.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as Json, json};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::bookkeeping::Cause;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::deps::scalar_text;
use crate::snapshot::Snapshot;
use crate::stepdef::{OnChange, Payload, Watcher};
use crate::store::{self, Millis, OutboxEntry, StepStatus, StoreError, WriteTx};
use crate::sysdir::Phase;
use crate::template::{ObjectView, from_serde};

/// The payload watchers' runs in flight, which outlive the pass that started them: a slow
/// watcher never holds up the actuators.
#[derive(Default)]
pub(crate) struct Runs {
    /// Outbox entries being run, so the next drain does not start them twice.
    in_flight: Arc<Mutex<HashSet<i64>>>,
    tasks: Mutex<JoinSet<()>>,
    /// When this process last started each object's sync: a resync watcher's change that
    /// was written before the object's run started was seen by that run, and is not worth
    /// another (a restarted runner knows none, and resyncs: harmless, runs are idempotent).
    started: Mutex<HashMap<i64, i64>>,
}

/// A payload watcher's change and the objects it runs for.
type Job = (OutboxEntry, Vec<i64>);

impl Runs {
    /// An object's sync, which read the model at `at_us` (microseconds), is being sent.
    pub(crate) fn note_start(&self, id: i64, at_us: i64) {
        lock(&self.started).insert(id, at_us);
    }

    /// Strictly after: a run that started in the very microsecond of the change may not have
    /// read it, and an extra run is harmless where a missed one is not.
    fn started_after(&self, id: i64, t_us: i64) -> bool {
        lock(&self.started).get(&id).is_some_and(|s| *s > t_us)
    }

    /// Waits for every payload run in flight (`run --once` ends with them).
    pub(crate) async fn wait(&self) {
        loop {
            let mut tasks = std::mem::take(&mut *lock(&self.tasks));
            if tasks.is_empty() {
                return;
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reason a resync watcher gives its linked objects: `watch Instance/i1.ip`.
fn cause(e: &OutboxEntry) -> Cause {
    Cause::Watch(format!("{}/{}.{}", e.model, e.key, e.fields.join(",")))
}

/// The objects of the watcher's model that reach the changed object through a watch's
/// `via` path, walked backwards from the changed object's fields as they now stand, by id.
fn linked(
    tx: &dyn WriteTx,
    w: &Watcher,
    e: &OutboxEntry,
) -> Result<Vec<crate::store::ObjectRecord>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    for watch in w
        .watches
        .iter()
        .filter(|x| x.model == e.model && x.fires_on(&e.fields))
    {
        let mut frontier: Vec<Map<String, Json>> = vec![e.new.clone()];
        let mut found = Vec::new();
        for hop in watch.via.iter().rev() {
            let mut seen = HashSet::new();
            found.clear();
            for fields in &frontier {
                let Some(v) = fields.get(&hop.to_field).and_then(scalar_text) else {
                    continue;
                };
                for id in tx.pointing_via(&hop.to, &hop.to_field, &v, &hop.field)? {
                    // Only objects of the hop's own model count (another model may use the
                    // same field name).
                    if seen.insert(id)
                        && let Some(o) = tx.get_by_id(id)?
                        && o.model == hop.from
                        && !o.book.deleted
                    {
                        found.push(o);
                    }
                }
            }
            frontier = found.iter().map(|o| o.fields.clone()).collect();
        }
        out.extend(found.into_iter().map(|o| (o.id, o)));
    }
    Ok(out.into_values().collect())
}

impl Engine {
    /// Drains the outbox (see the module's comment) and starts the payload watchers' runs.
    pub(crate) fn drain_watchers(self: &Arc<Self>) -> Result<()> {
        // On a shared store the leader alone drains it (SPEC §17): one run per firing.
        if !self.leads() || self.store.outbox()?.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.write()?;
        let (resynced, jobs) = self.drain_in(&mut *tx)?;
        tx.commit()?;
        if resynced > 0 {
            info!(objects = resynced, "watchers made objects pending");
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let world = self.snapshot()?;
        let mut tasks = lock(&self.watch_runs.tasks);
        for (e, ids) in jobs {
            lock(&self.watch_runs.in_flight).insert(e.id);
            let engine = self.clone();
            let world = world.clone();
            tasks.spawn(async move {
                engine.run_watcher(&e, &ids, &world).await;
                lock(&engine.watch_runs.in_flight).remove(&e.id);
            });
        }
        Ok(())
    }

    /// Whether watched changes wait for a drain (payload runs in flight aside).
    pub(crate) fn watchers_waiting(&self) -> Result<bool> {
        if !self.leads() {
            return Ok(false);
        }
        let in_flight = lock(&self.watch_runs.in_flight).clone();
        Ok(self
            .store
            .outbox()?
            .iter()
            .any(|e| !in_flight.contains(&e.id)))
    }

    /// What a plan shows of watchers: the objects resync watchers would make pending, marked
    /// in `tx` (payload watchers run nothing in a plan). Returns how many.
    pub(crate) fn mark_watched(&self, tx: &mut dyn WriteTx) -> Result<usize> {
        let in_flight = lock(&self.watch_runs.in_flight).clone();
        let mut n = 0;
        for e in tx.outbox()? {
            if in_flight.contains(&e.id) {
                continue;
            }
            if let Some(w) = self.svc.stepdefs.watcher(&e.watcher)
                && matches!(w.on_change, OnChange::Resync)
            {
                n += self.resync(tx, w, &e)?;
            }
        }
        Ok(n)
    }

    /// Marks the objects a resync watcher's change links to, and removes the change.
    fn resync(&self, tx: &mut dyn WriteTx, w: &Watcher, e: &OutboxEntry) -> Result<usize> {
        let c = cause(e);
        let mut n = 0;
        for o in linked(&*tx, w, e)? {
            if self.watch_runs.started_after(o.id, e.at_us) {
                continue;
            }
            if store::watched(tx, o, c.clone())? {
                n += 1;
            }
        }
        tx.outbox_remove(e.id, e.seq)?;
        Ok(n)
    }

    /// The outbox drained in `tx`: resyncs marked, the payload watchers' runs to start.
    fn drain_in(&self, tx: &mut dyn WriteTx) -> Result<(usize, Vec<Job>)> {
        let in_flight = lock(&self.watch_runs.in_flight).clone();
        let mut resynced = 0;
        let mut jobs = Vec::new();
        for e in tx.outbox()? {
            if in_flight.contains(&e.id) {
                continue;
            }
            let Some(w) = self.svc.stepdefs.watcher(&e.watcher) else {
                // Its watcher was removed from the service: nobody waits for it.
                tx.outbox_remove(e.id, e.seq)?;
                continue;
            };
            match &w.on_change {
                OnChange::Resync => resynced += self.resync(tx, w, &e)?,
                OnChange::Payload(_) => {
                    let ids: Vec<i64> = linked(&*tx, w, &e)?.iter().map(|o| o.id).collect();
                    if ids.is_empty() {
                        tx.outbox_remove(e.id, e.seq)?;
                    } else {
                        jobs.push((e, ids));
                    }
                }
            }
        }
        Ok((resynced, jobs))
    }

    /// Runs a payload watcher once per linked object for one (folded) change, records its
    /// outcome in the watcher's status and removes the entry: never retried.
    async fn run_watcher(&self, e: &OutboxEntry, ids: &[i64], world: &Arc<Snapshot>) {
        let Some(w) = self.svc.stepdefs.watcher(&e.watcher) else {
            return;
        };
        let OnChange::Payload(payload) = &w.on_change else {
            return;
        };
        let span = tracing::info_span!("watcher", watcher = %w.name, changed = %format!("{}/{}", e.model, e.key));
        let _enter = span.enter();
        let mut failures: Vec<String> = Vec::new();
        let mut ran = 0;
        for id in ids {
            let Some(obj) = world.by_id(*id) else {
                continue;
            };
            ran += 1;
            if let Err(msg) = self.watcher_payload(w, payload, e, &obj, world).await {
                let msg = self.clean_message(&format!("{}: {msg}", obj.name()));
                warn!(watcher = %w.name, object = %obj.name(), error = %msg, "watcher payload failed");
                failures.push(msg);
            } else {
                info!(watcher = %w.name, object = %obj.name(), "watcher payload ok");
            }
        }
        let now = Millis::now();
        let record = || -> Result<()> {
            let mut tx = self.store.write()?;
            let mut st = tx.watcher_status(&w.name)?.unwrap_or_else(|| StepStatus {
                name: w.name.clone(),
                ..StepStatus::default()
            });
            st.runs += ran;
            st.last_run = Some(now);
            if failures.is_empty() {
                st.last_ok = Some(now);
                st.message = "OK".to_owned();
            } else {
                st.failures += i64::try_from(failures.len()).unwrap_or(i64::MAX);
                st.last_error_at = Some(now);
                st.message = self.clean_message(&failures.join("; "));
            }
            tx.put_watcher_status(&st)?;
            tx.outbox_remove(e.id, e.seq)?;
            tx.commit()?;
            Ok(())
        };
        if let Err(err) = record() {
            warn!(watcher = %w.name, error = %err, "cannot record the watcher's outcome");
        }
    }

    /// Renders the watcher's payload for `obj`, with `watched` in its context, writes its
    /// recipe under `<sys_dir>/.watch/<watcher>/` and sends it.
    async fn watcher_payload(
        &self,
        w: &Watcher,
        payload: &Payload,
        e: &OutboxEntry,
        obj: &Arc<crate::store::ObjectRecord>,
        world: &Arc<Snapshot>,
    ) -> std::result::Result<(), String> {
        // Every field of the schema is there, unset ones `none`, as in any template
        // (SPEC §5.1): `watched.old.ip` of a created object is none, not undefined.
        let whole = |m: &Map<String, Json>| -> Map<String, Json> {
            let mut out = m.clone();
            if let Some(model) = self.svc.schema.model(&e.model) {
                for f in model.fields.keys() {
                    out.entry(f.clone()).or_insert(Json::Null);
                }
            }
            out
        };
        let watched = json!({
            "model": e.model,
            "key": e.key,
            "fields": e.fields,
            "old": whole(&e.old),
            "new": whole(&e.new),
        });
        let t = &self.svc.stepdefs.templates;
        let object = ObjectView::value(obj.clone(), world.clone());
        let vars = serde_json::to_value(&self.svc.config.vars).unwrap_or(Json::Null);
        let base = minijinja::Value::from(std::collections::BTreeMap::from([
            ("object", object.clone()),
            ("vars", from_serde(&vars)),
            ("watched", from_serde(&watched)),
        ]));
        let mut attributes = Map::new();
        for (name, tv) in &payload.vars {
            let v = t.render_value(tv, &base).map_err(|e| e.to_string())?;
            attributes.insert(name.clone(), v);
        }
        attributes.insert("watched".to_owned(), watched.clone());
        let mut ctx: std::collections::BTreeMap<String, minijinja::Value> = attributes
            .iter()
            .map(|(k, v)| (k.clone(), from_serde(v)))
            .collect();
        ctx.insert("object".to_owned(), object);
        ctx.insert("vars".to_owned(), from_serde(&vars));
        let recipe = self
            .payloads
            .render(t, &payload.kind, &minijinja::Value::from(ctx), &attributes)
            .map_err(|e| e.to_string())?;
        let sys = self.svc.sys_dir_at(self.watch_dir(w));
        let title = format!("{} (watcher {})", obj.name(), w.name);
        let vars_json = serde_json::to_string_pretty(
            &self
                .svc
                .secrets
                .mask_json(&Json::Object(attributes.clone())),
        )
        .unwrap_or_default();
        let files = recipe.files(Phase::Sync, &self.svc.secrets, &title, vars_json + "\n");
        sys.write_files(&obj.model, &obj.key, &files)
            .map_err(|e| format!("sys dir {}: {e}", sys.root().display()))?;
        let dir = sys.object_dir(&obj.model, &obj.key);
        let ex = self
            .payloads
            .execute(&recipe, Phase::Sync, &dir, &attributes)
            .await;
        match ex.response {
            Ok(r) => match r.failure {
                Some(f) => Err(f),
                None => Ok(()),
            },
            Err(e) => Err(e),
        }
    }

    /// Where a payload watcher's recipes go: `<sys_dir>/.watch/<file stem>/`.
    fn watch_dir(&self, w: &Watcher) -> PathBuf {
        let stem: String = w
            .name
            .trim_start_matches("stepdefs/")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.sys.root().join(".watch").join(stem)
    }
}
