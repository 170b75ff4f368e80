//! Model policies at run time (SPEC §12). A pass runs the policies of every object whose
//! generation moved past `policed_generation`, before any actuator, inside one store
//! transaction with the writes they cause: an actuator sees the state after its policies,
//! and a crash leaves either both the writes and the new `policed_generation` or neither.
//! Everything an object's policies would write is rendered and checked before the first
//! write, so a failing policy writes nothing; it is retried after a backoff of its own and
//! blocks the actuation of the objects it owns.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::bookkeeping::{self, Millis};
use crate::error::Result;
use crate::service::Service;
use crate::snapshot::Snapshot;
use crate::stepdef::{Action, Policy};
use crate::store::{self, ObjectRecord, ReadOps, WriteTx};
use crate::template::{ObjectView, from_serde};

/// Rounds of policies per pass: a policy's write may make another policy due; a chain
/// longer than this waits for the next pass (and a ring of policies is a loop, SPEC §15).
const MAX_ROUNDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectKind {
    Create,
    Update,
    Delete,
}

/// One write a policy made: for `plan`, the logs and the loop guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub kind: EffectKind,
    pub model: String,
    pub key: String,
    /// The policy's file (`stepdefs/network-policy.yaml`).
    pub policy: String,
    /// The object whose policy it was (`Network/n1`).
    pub source: String,
}

/// What one round of policing did.
#[derive(Debug, Default)]
pub struct Policed {
    pub effects: Vec<Effect>,
    /// Objects whose policies ran, and of those, failed.
    pub ran: usize,
    pub failed: usize,
}

/// An object a policy wants, checked and ready to write.
struct Upsert {
    existing: Option<ObjectRecord>,
    model: String,
    key: String,
    fields: Map<String, Value>,
    policy: String,
}

/// Everything one object's policies write.
#[derive(Default)]
struct Writes {
    upserts: Vec<Upsert>,
    deletes: Vec<(ObjectRecord, String)>,
}

impl crate::engine::Engine {
    /// Runs the due policies in one transaction; returns whether they wrote anything.
    pub(crate) fn police(&self) -> Result<bool> {
        // On a shared store the leader alone keeps the policies (SPEC §17).
        if self.svc.stepdefs.policies.is_empty() || !self.leads() {
            return Ok(false);
        }
        let now = Millis::now();
        store::sync_policies(&*self.store, &digests(&self.svc))?;
        if !any_due(&self.svc, &*self.store, now)? {
            return Ok(false);
        }
        let mut tx = self.store.write()?;
        let done = police(&self.svc, &mut *tx, now, Some(&self.loops))?;
        tx.commit()?;
        if done.ran > 0 {
            tracing::info!(
                objects = done.ran,
                failed = done.failed,
                writes = done.effects.len(),
                "policies"
            );
        }
        Ok(!done.effects.is_empty())
    }
}

/// Whether any object's policies are due now: the idle pass's whole cost for policies.
pub(crate) fn any_due(svc: &Service, store: &dyn ReadOps, now: Millis) -> Result<bool> {
    for model in policed_models(svc) {
        // Objects waiting on a failure's backoff are listed too: the few of them are read.
        if store
            .unpoliced(&model)?
            .iter()
            .any(|o| bookkeeping::needs_policy(&o.book, now, &svc.config.backoff))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Per policed model, a digest of its policies' files: an edit makes them run again.
pub(crate) fn digests(svc: &Service) -> HashMap<String, String> {
    use sha2::{Digest, Sha256};
    // Policies read the service's `vars` too.
    let vars = serde_json::to_string(&svc.config.vars).unwrap_or_default();
    let mut by_model: HashMap<String, Sha256> = HashMap::new();
    for p in &svc.stepdefs.policies {
        let h = by_model.entry(p.model.clone()).or_default();
        h.update(p.name.as_bytes());
        h.update([0]);
        h.update(p.origin.text.as_deref().unwrap_or_default().as_bytes());
        h.update([0]);
        h.update(vars.as_bytes());
    }
    by_model
        .into_iter()
        .map(|(m, h)| (m, crate::definition::hex(&h.finalize())))
        .collect()
}

fn policed_models(svc: &Service) -> BTreeSet<String> {
    svc.stepdefs
        .policies
        .iter()
        .map(|p| p.model.clone())
        .collect()
}

/// Runs every due object's policies in `tx` (see the module's comment).
/// With a `guard`, a ring of policies that never settles is stopped (SPEC §15).
pub(crate) fn police(
    svc: &Service,
    tx: &mut dyn WriteTx,
    now: Millis,
    guard: Option<&crate::steps::guard::Guard>,
) -> Result<Policed> {
    let models = policed_models(svc);
    let mut out = Policed::default();
    if models.is_empty() {
        return Ok(out);
    }
    let mut tried: HashSet<(i64, i64)> = HashSet::new();
    for _ in 0..MAX_ROUNDS {
        let mut due = Vec::new();
        for m in &models {
            for o in tx.unpoliced(m)? {
                if !tried.contains(&(o.id, o.book.generation))
                    && bookkeeping::needs_policy(&o.book, now, &svc.config.backoff)
                {
                    due.push(o);
                }
            }
        }
        if due.is_empty() {
            break;
        }
        let world = Arc::new(world_of(svc, &*tx, &due)?);
        for obj in due {
            tried.insert((obj.id, obj.book.generation));
            out.ran += 1;
            let span = tracing::info_span!("policy", object = %obj.name());
            let _enter = span.enter();
            let looping = guard.and_then(|g| g.check_policy(&obj.name(), now));
            match looping.map_or_else(|| writes_of(svc, &*tx, &world, &obj), Err) {
                Ok(w) => {
                    let first = out.effects.len();
                    apply(svc, tx, &obj, w, now, &mut out.effects)?;
                    store::policed(tx, obj.id)?;
                    if let Some(g) = guard {
                        for e in &out.effects[first..] {
                            if e.kind != EffectKind::Delete {
                                g.note_written(
                                    &format!("{}/{}", e.model, e.key),
                                    format!("policy {} of {}", e.policy, e.source),
                                );
                            }
                        }
                    }
                }
                Err(message) => {
                    out.failed += 1;
                    let message = svc.secrets.mask(&message);
                    tracing::warn!(object = %obj.name(), error = %message, "policy failed");
                    store::policy_failed(
                        tx,
                        obj.id,
                        message,
                        now,
                        &svc.config.backoff,
                        crate::backoff::unit_random(),
                    )?;
                }
            }
        }
    }
    Ok(out)
}

/// The dependency edges of an object with these fields that name their target by its key
/// (a ref): those a lookup by model and key finds. A `links` entry on another field is
/// matched by value, not looked up.
pub(crate) fn key_edges(
    svc: &Service,
    model: &str,
    fields: &Map<String, Value>,
) -> impl Iterator<Item = crate::model::deps::Edge> {
    let schema = svc.schema.clone();
    svc.graph.edges(model, fields).into_iter().filter(move |e| {
        schema
            .model(&e.to_model)
            .is_some_and(|m| m.key == e.to_field)
    })
}

/// The objects the policies' templates may read: the due objects and what they refer to,
/// transitively (not the whole store: a policy on one object of 100,000 reads a few).
fn world_of(svc: &Service, tx: &dyn WriteTx, due: &[ObjectRecord]) -> Result<Snapshot> {
    let mut seen: HashSet<i64> = due.iter().map(|o| o.id).collect();
    let mut all: Vec<ObjectRecord> = due.to_vec();
    let mut next: Vec<ObjectRecord> = due.to_vec();
    while let Some(o) = next.pop() {
        for e in key_edges(svc, &o.model, &o.fields) {
            if let Some(t) = tx.get(&e.to_model, &e.value)?
                && seen.insert(t.id)
            {
                all.push(t.clone());
                next.push(t);
            }
        }
    }
    Ok(Snapshot::of(svc.schema.clone(), all))
}

/// Renders and checks everything `obj`'s policies write, writing nothing; the first problem
/// is the policy's error.
fn writes_of(
    svc: &Service,
    tx: &dyn WriteTx,
    world: &Arc<Snapshot>,
    obj: &ObjectRecord,
) -> std::result::Result<Writes, String> {
    let owner = obj.name();
    let creating = obj.book.policed_generation == 0;
    let object = ObjectView::value(Arc::new(obj.clone()), world.clone());
    let vars = from_serde(&svc.config.vars);
    let t = &svc.stepdefs.templates;
    let mut w = Writes::default();
    let mut wanted: HashSet<(String, String)> = HashSet::new();
    for p in svc.stepdefs.policies_of(&obj.model) {
        let fail = |m: String| format!("policy {}: {m}", p.name);
        for a in p.actions(creating) {
            match a {
                Action::Ensure(e) => {
                    let base = ctx(&object, &vars, None);
                    let items: Vec<Option<Value>> = match &e.each {
                        None => vec![None],
                        Some(tv) => match t.render_value(tv, &base) {
                            Ok(Value::Array(items)) => items.into_iter().map(Some).collect(),
                            Ok(Value::Null) => Vec::new(),
                            Ok(other) => {
                                return Err(fail(format!(
                                    "ensure {}: `loop` gave {other}, not a list",
                                    e.model
                                )));
                            }
                            Err(err) => {
                                return Err(fail(format!("ensure {} loop: {err}", e.model)));
                            }
                        },
                    };
                    for item in items {
                        let c = ctx(&object, &vars, item.as_ref());
                        let key = t
                            .render_string(&e.key, &c)
                            .map_err(|err| fail(format!("ensure {} key: {err}", e.model)))?;
                        let mut rendered = Map::new();
                        for (name, tv) in &e.fields {
                            let v = t.render_value(tv, &c).map_err(|err| {
                                fail(format!("ensure {}/{key} field `{name}`: {err}", e.model))
                            })?;
                            rendered.insert(name.clone(), v);
                        }
                        let up =
                            checked(svc, tx, p, &owner, &e.model, &key, rendered).map_err(&fail)?;
                        if !wanted.insert((up.model.clone(), up.key.clone())) {
                            return Err(fail(format!(
                                "ensure yields {}/{} twice",
                                up.model, up.key
                            )));
                        }
                        w.upserts.push(up);
                    }
                }
                Action::Delete { model, key } => {
                    let key = t
                        .render_string(key, &ctx(&object, &vars, None))
                        .map_err(|err| fail(format!("delete {model} key: {err}")))?;
                    if let Some(o) = tx.get(model, &key).map_err(|e| e.to_string())?
                        && !o.book.deleted
                    {
                        w.deletes.push((o, p.name.clone()));
                    }
                }
            }
        }
    }
    // Refs may point at what the same policies ensure, in any order, or at live stored ones.
    for up in &w.upserts {
        refs_exist(svc, tx, up, &wanted)?;
    }
    // An ensure that no longer yields an object it made (a smaller loop) deletes it.
    for o in tx.owned_by(&owner).map_err(|e| e.to_string())? {
        if !o.book.deleted
            && !wanted.contains(&(o.model.clone(), o.key.clone()))
            && !w.deletes.iter().any(|(d, _)| d.id == o.id)
        {
            let policy = svc
                .stepdefs
                .policies_of(&obj.model)
                .find(|p| p.targets().any(|m| m == o.model))
                .map_or_else(String::new, |p| p.name.clone());
            w.deletes.push((o, policy));
        }
    }
    Ok(w)
}

fn ctx(
    object: &minijinja::Value,
    vars: &minijinja::Value,
    item: Option<&Value>,
) -> minijinja::Value {
    let mut m =
        std::collections::BTreeMap::from([("object", object.clone()), ("vars", vars.clone())]);
    if let Some(i) = item {
        m.insert("item", from_serde(i));
    }
    minijinja::Value::from(m)
}

/// One ensured object as it will be written: its fields checked against the schema as an
/// objects file's are (types, enums, required fields, refs that exist), merged into the
/// stored object's, which must be this source's own.
fn checked(
    svc: &Service,
    tx: &dyn WriteTx,
    p: &Policy,
    owner: &str,
    model_name: &str,
    key: &str,
    rendered: Map<String, Value>,
) -> std::result::Result<Upsert, String> {
    let model = svc
        .schema
        .model(model_name)
        .ok_or_else(|| format!("unknown model {model_name}"))?;
    if key.is_empty() {
        return Err(format!("ensure {model_name}: the key rendered empty"));
    }
    let name = format!("{model_name}/{key}");
    let existing = tx.get(model_name, key).map_err(|e| e.to_string())?;
    if let Some(o) = &existing
        && o.owner.as_deref() != Some(owner)
    {
        let whose = o.owner.as_deref().map_or_else(
            || "it was written by a person, not a policy".to_owned(),
            |w| format!("its owner is {w}"),
        );
        return Err(format!(
            "ensure {name}: it exists and is not owned by {owner} ({whose})"
        ));
    }
    let base = existing
        .as_ref()
        .map(|o| o.fields.clone())
        .unwrap_or_default();
    let fields = super::feed::merged_fields(model, key, base, rendered)
        .map_err(|e| format!("ensure {e}"))?;
    Ok(Upsert {
        existing,
        model: model_name.to_owned(),
        key: key.to_owned(),
        fields,
        policy: p.name.clone(),
    })
}

/// Every object `up` refers to exists and is not being deleted, or is ensured with it.
fn refs_exist(
    svc: &Service,
    tx: &dyn WriteTx,
    up: &Upsert,
    wanted: &HashSet<(String, String)>,
) -> std::result::Result<(), String> {
    for e in key_edges(svc, &up.model, &up.fields) {
        if wanted.contains(&(e.to_model.clone(), e.value.clone())) {
            continue;
        }
        match tx.get(&e.to_model, &e.value).map_err(|e| e.to_string())? {
            Some(t) if !t.book.deleted => {}
            _ => {
                return Err(format!(
                    "policy {}: ensure {}/{} field `{}`: {}/{} does not exist",
                    up.policy, up.model, up.key, e.field, e.to_model, e.value
                ));
            }
        }
    }
    Ok(())
}

fn apply(
    svc: &Service,
    tx: &mut dyn WriteTx,
    src: &ObjectRecord,
    w: Writes,
    now: Millis,
    effects: &mut Vec<Effect>,
) -> Result<()> {
    let source = src.name();
    let mut effect = |kind, model: &str, key: &str, policy: &str| {
        effects.push(Effect {
            kind,
            model: model.to_owned(),
            key: key.to_owned(),
            policy: policy.to_owned(),
            source: source.clone(),
        });
    };
    for u in w.upserts {
        let edges = svc.graph.edges(&u.model, &u.fields);
        match u.existing {
            None => {
                let id = store::create(tx, &u.model, &u.key, &u.fields, &edges, now)?;
                tx.put_owner(id, Some(&source))?;
                effect(EffectKind::Create, &u.model, &u.key, &u.policy);
            }
            Some(o) if o.fields != u.fields || o.book.deleted => {
                store::change(tx, o.id, &u.fields, &edges, now)?;
                effect(EffectKind::Update, &u.model, &u.key, &u.policy);
            }
            Some(_) => {}
        }
    }
    let mut by_policy: HashMap<i64, String> = HashMap::new();
    let mut doomed = Vec::new();
    for (o, policy) in w.deletes {
        by_policy.insert(o.id, policy);
        doomed.push(o);
    }
    for (name, _) in crate::deletion::remove(svc, tx, doomed.clone(), now)? {
        if let Some(o) = doomed.iter().find(|o| o.name() == name) {
            let policy = by_policy.get(&o.id).cloned().unwrap_or_default();
            effect(EffectKind::Delete, &o.model, &o.key, &policy);
        }
    }
    Ok(())
}
