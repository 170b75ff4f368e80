//! The writes of the bottom-up steps (SPEC §13, §14): one listed item or one message
//! becomes an upsert or a delete of one object, checked against the schema as an objects
//! file is, and written through the store's own functions (so watchers are noted and
//! referrers marked as for any other write).

use serde_json::{Map, Value};

use crate::bookkeeping::Millis;
use crate::model::Model;
use crate::model::deps::scalar_text;
use crate::service::Service;
use crate::stepdef::Mapping;
use crate::store::{self, ObjectRecord, StoreError, WriteTx};
use crate::template::Templates;

/// One object's write, rendered and checked: the declarative fields given (merged into the
/// stored object's) and the feedback fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Write {
    pub(crate) model: String,
    pub(crate) key: String,
    pub(crate) fields: Map<String, Value>,
    pub(crate) feedback: Map<String, Value>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Created,
    /// New declarative fields: a new generation.
    Updated,
    /// Only feedback fields changed: no new generation.
    Feedback,
    Deleted,
    Unchanged,
    /// Feedback for an object that does not exist (a step that writes feedback only
    /// creates nothing).
    Missing,
}

impl Written {
    pub(crate) fn changed(self) -> bool {
        !matches!(self, Written::Unchanged | Written::Missing)
    }
}

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    /// The item or message does not map to a valid write: nothing of it is written.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::error::Error> for FeedError {
    fn from(e: crate::error::Error) -> Self {
        FeedError::Invalid(e.to_string())
    }
}

/// Renders `map` in `ctx` (`item` or `event` beside `vars`) into a write: the key and the
/// fields, each checked against the model's schema.
pub(crate) fn render(
    svc: &Service,
    t: &Templates,
    map: &Mapping,
    ctx: &minijinja::Value,
) -> Result<Write, String> {
    let model = svc
        .schema
        .model(&map.model)
        .ok_or_else(|| format!("unknown model {}", map.model))?;
    let key = t
        .render_string(&map.key, ctx)
        .map_err(|e| format!("{} key: {e}", map.model))?;
    if key.is_empty() {
        return Err(format!("{}: the key rendered empty", map.model));
    }
    let name = format!("{}/{key}", map.model);
    let mut fields = Map::new();
    for (f, tv) in &map.fields {
        let v = t
            .render_value(tv, ctx)
            .map_err(|e| format!("{name} field `{f}`: {e}"))?;
        fields.insert(f.clone(), v);
    }
    let mut feedback = Map::new();
    for (f, tv) in &map.feedback {
        let v = t
            .render_value(tv, ctx)
            .map_err(|e| format!("{name} feedback `{f}`: {e}"))?;
        let v = match model.fields.get(f) {
            Some(_) if v.is_null() => v,
            Some(field) => field
                .ty
                .check_rendered(&v)
                .map_err(|e| format!("{name} feedback `{f}`: {e}"))?,
            None => return Err(format!("{name}: `{f}` is not a field of {}", model.name)),
        };
        feedback.insert(f.clone(), v);
    }
    Ok(Write {
        model: model.name.clone(),
        key,
        fields,
        feedback,
    })
}

/// Writes `w` in `tx`: creates the object (owned by `owner`) or merges into it, declarative
/// fields first, then feedback; only what changed is written. A write whose fields do not
/// check, or whose refs point at nothing, writes nothing.
pub(crate) fn upsert(
    svc: &Service,
    tx: &mut dyn WriteTx,
    owner: &str,
    w: &Write,
    has_fields: bool,
    now: Millis,
) -> Result<Written, FeedError> {
    let model = svc
        .schema
        .model(&w.model)
        .ok_or_else(|| FeedError::Invalid(format!("unknown model {}", w.model)))?;
    let existing = tx.get(&w.model, &w.key)?;
    if existing.is_none() && !has_fields {
        return Ok(Written::Missing);
    }
    let base = existing
        .as_ref()
        .map(|o| o.fields.clone())
        .unwrap_or_default();
    let fields =
        merged_fields(model, &w.key, base, w.fields.clone()).map_err(FeedError::Invalid)?;
    for e in super::police::key_edges(svc, &w.model, &fields) {
        match tx.get(&e.to_model, &e.value)? {
            Some(t) if !t.book.deleted => {}
            _ => {
                return Err(FeedError::Invalid(format!(
                    "{}/{} field `{}`: {}/{} does not exist",
                    w.model, w.key, e.field, e.to_model, e.value
                )));
            }
        }
    }
    let edges = svc.graph.edges(&w.model, &fields);
    let (obj, mut done): (ObjectRecord, Written) = match existing {
        None => {
            let id = store::create(tx, &w.model, &w.key, &fields, &edges, now)?;
            tx.put_owner(id, Some(owner))?;
            let obj = tx
                .get_by_id(id)?
                .ok_or_else(|| FeedError::Invalid(format!("{}/{} vanished", w.model, w.key)))?;
            (obj, Written::Created)
        }
        Some(o) if o.fields != fields || o.book.deleted => {
            store::change(tx, o.id, &fields, &edges, now)?;
            let obj = tx.get_by_id(o.id)?.unwrap_or(o);
            (obj, Written::Updated)
        }
        Some(o) => (o, Written::Unchanged),
    };
    if !w.feedback.is_empty()
        && store::put_feedback(tx, &obj, &w.feedback)?
        && done == Written::Unchanged
    {
        done = Written::Feedback;
    }
    Ok(done)
}

/// Deletes the object `model/key` if it exists (SPEC §5.4: marked deleted, or purged when
/// nothing has to run for it).
pub(crate) fn delete(
    svc: &Service,
    tx: &mut dyn WriteTx,
    model: &str,
    key: &str,
    now: Millis,
) -> Result<Written, FeedError> {
    match tx.get(model, key)? {
        Some(o) if !o.book.deleted => {
            crate::deletion::remove(svc, tx, vec![o], now)?;
            Ok(Written::Deleted)
        }
        _ => Ok(Written::Unchanged),
    }
}

/// `rendered` (declarative fields; null removes one) merged into `base`, each value checked
/// against `model`'s schema as an objects file's are (types, enums, required fields), the
/// key field set, in schema order with defaults filled in, as `apply` stores them. Errors
/// start with `Model/key`.
pub(crate) fn merged_fields(
    model: &Model,
    key: &str,
    mut fields: Map<String, Value>,
    rendered: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let model_name = &model.name;
    let name = format!("{model_name}/{key}");
    for (fname, v) in rendered {
        let Some(f) = model.fields.get(&fname) else {
            return Err(format!("{name}: `{fname}` is not a field of {model_name}"));
        };
        if v.is_null() {
            fields.remove(&fname);
            continue;
        }
        let v =
            f.ty.check_rendered(&v)
                .map_err(|e| format!("{name} field `{fname}`: {e}"))?;
        if let Some(allowed) = &f.allowed
            && !allowed.contains(&v)
        {
            return Err(format!(
                "{name} field `{fname}`: {v} is not an allowed value"
            ));
        }
        fields.insert(fname, v);
    }
    match fields.get(&model.key).and_then(scalar_text) {
        Some(k) if k != key => {
            return Err(format!(
                "{name}: field `{}` is {k}, not the key {key}",
                model.key
            ));
        }
        Some(_) => {}
        None => {
            fields.insert(model.key.clone(), Value::String(key.to_owned()));
        }
    }
    let mut ordered = Map::new();
    for f in model.fields.values().filter(|f| !f.feedback) {
        match fields.remove(&f.name).or_else(|| f.default.clone()) {
            Some(v) => {
                ordered.insert(f.name.clone(), v);
            }
            None if f.required => {
                return Err(format!("{name}: missing required field `{}`", f.name));
            }
            None => {}
        }
    }
    Ok(ordered)
}
