//! Removing objects (SPEC §4.4, §5.4): refusal while others reference an object, cascade in
//! dependency order, and purge-at-once for objects no actuator has to clean up after.

use std::collections::HashSet;
use std::fmt;

use crate::error::{Error, Result};
use crate::model::deps::scalar_text;
use crate::service::Service;
use crate::store::{Millis, ObjectRecord, ReadOps, Store, WriteTx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Marked deleted; the engine runs its delete payload, then purges it.
    Deleting,
    /// Gone from the store.
    Purged,
    /// Was already being deleted.
    AlreadyDeleting,
    /// `--force`: gone from the store, no backend call made.
    Forced,
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Removal::Deleting => "marked for deletion",
            Removal::Purged => "deleted",
            Removal::AlreadyDeleting => "already being deleted",
            Removal::Forced => "purged without a backend call (--force)",
        })
    }
}

/// Objects whose dependency edges point at `obj`. With `live_only`, those already being
/// deleted are left out.
pub fn referrers_of(
    tx: &dyn ReadOps,
    obj: &ObjectRecord,
    live_only: bool,
) -> Result<Vec<ObjectRecord>> {
    let mut out: Vec<ObjectRecord> = Vec::new();
    for r in tx.referrers(&obj.model)? {
        // The key field is one of the declarative fields, so one lookup covers refs and links.
        let target_value = obj.fields.get(&r.to_field).and_then(scalar_text);
        if target_value.as_deref() != Some(r.value.as_str()) || r.id == obj.id {
            continue;
        }
        if out.iter().any(|o| o.id == r.id) {
            continue;
        }
        if let Some(rec) = tx.get(&r.model, &r.key)?
            && !(live_only && rec.book.deleted)
        {
            out.push(rec);
        }
    }
    Ok(out)
}

/// `root` and everything that depends on it, transitively, dependents first; with
/// `live_only`, dependents already being deleted are left out. The objects its policies
/// ensured go with it (SPEC §12, `on_delete: cascade`), before it, with their own
/// dependents; their ids are added to `owned`.
fn closure(
    svc: &Service,
    tx: &dyn ReadOps,
    root: ObjectRecord,
    live_only: bool,
    owned: &mut HashSet<i64>,
) -> Result<Vec<ObjectRecord>> {
    fn visit(
        svc: &Service,
        tx: &dyn ReadOps,
        obj: ObjectRecord,
        live_only: bool,
        seen: &mut HashSet<i64>,
        owned: &mut HashSet<i64>,
        out: &mut Vec<ObjectRecord>,
    ) -> Result<()> {
        seen.insert(obj.id);
        if cascades(svc, &obj.model) {
            for o in tx.owned_by(&obj.name())? {
                if !(seen.contains(&o.id) || live_only && o.book.deleted) {
                    owned.insert(o.id);
                    visit(svc, tx, o, live_only, seen, owned, out)?;
                }
            }
        }
        for r in referrers_of(tx, &obj, live_only)? {
            if !seen.contains(&r.id) {
                visit(svc, tx, r, live_only, seen, owned, out)?;
            }
        }
        out.push(obj);
        Ok(())
    }
    let mut out = Vec::new();
    visit(
        svc,
        tx,
        root,
        live_only,
        &mut HashSet::new(),
        owned,
        &mut out,
    )?;
    Ok(out)
}

/// Whether deleting an object of `model` deletes what its policies ensured: unless every
/// policy of the model says `on_delete: keep`.
fn cascades(svc: &Service, model: &str) -> bool {
    svc.stepdefs.policies_of(model).any(|p| !p.keep_on_delete)
}

/// Removes `objs`, given dependents first. An object is purged at once when its model has
/// no actuator and nothing references it any more; otherwise it is marked deleted.
pub fn remove(
    svc: &Service,
    tx: &mut dyn WriteTx,
    objs: Vec<ObjectRecord>,
    now: Millis,
) -> Result<Vec<(String, Removal)>> {
    let mut out = Vec::new();
    for obj in objs {
        let purge = !svc.is_actuated(&obj.model) && referrers_of(tx, &obj, false)?.is_empty();
        if purge {
            tx.purge(obj.id)?;
            out.push((obj.name(), Removal::Purged));
        } else if obj.book.deleted {
            out.push((obj.name(), Removal::AlreadyDeleting));
        } else {
            crate::store::mark_deleted(tx, obj.id, now)?;
            out.push((obj.name(), Removal::Deleting));
        }
    }
    Ok(out)
}

/// Which objects of a model `delete` removes.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    One(&'a str),
    /// `--all`: every object of the model.
    All,
}

/// `stepsync delete MODEL KEY|--all [--cascade] [--force]`. With `force`, the objects are
/// purged at once, dependents first, without any backend call (SPEC §5.4): for an operator
/// who knows the backend objects are gone, or a delete that can never succeed — and the way
/// to forget objects of a model removed from the schema.
pub fn delete(
    svc: &Service,
    store: &dyn Store,
    model: &str,
    which: Which,
    cascade: bool,
    force: bool,
) -> Result<Vec<(String, Removal)>> {
    let model = match svc.model(model) {
        Ok(m) => m.name.clone(),
        // Stored objects of a removed model can only be forgotten: no actuator is left.
        Err(_) if force && store.counts_by_model()?.iter().any(|(m, _)| m == model) => {
            model.to_owned()
        }
        Err(e) => return Err(e),
    };
    let mut tx = store.write()?;
    let roots = match which {
        Which::One(key) => match tx.get(&model, key)? {
            Some(obj) => vec![obj],
            None => return Err(Error::failed(format!("{model}/{key} not found"))),
        },
        Which::All => tx.list(Some(&model))?,
    };
    let mut order: Vec<ObjectRecord> = Vec::new();
    let mut seen = HashSet::new();
    let mut already = Vec::new();
    let chosen: HashSet<i64> = roots.iter().map(|o| o.id).collect();
    for obj in roots {
        if seen.contains(&obj.id) {
            continue;
        }
        if obj.book.deleted && !force {
            seen.insert(obj.id);
            already.push((obj.name(), Removal::AlreadyDeleting));
            continue;
        }
        let name = obj.name();
        // A forced purge takes what is already being deleted along: nothing may be left
        // pointing at a purged object.
        let mut owned = HashSet::new();
        let closure = closure(svc, &*tx, obj, !force, &mut owned)?;
        let others: Vec<String> = closure[..closure.len() - 1]
            .iter()
            .filter(|o| !chosen.contains(&o.id) && !owned.contains(&o.id))
            .map(ObjectRecord::name)
            .collect();
        if !others.is_empty() && !cascade {
            return Err(Error::Failed(
                crate::diag::Diagnostic::error(format!(
                    "cannot delete {name}: referenced by {}",
                    others.join(", ")
                ))
                .with_hint("delete those first, or pass `--cascade` to delete them too"),
            ));
        }
        for o in closure {
            if seen.insert(o.id) {
                order.push(o);
            }
        }
    }
    if force {
        let mut out = Vec::new();
        for o in &order {
            tx.purge(o.id)?;
            out.push((o.name(), Removal::Forced));
        }
        tx.commit()?;
        let sys = svc.sys_dir();
        for o in &order {
            tracing::warn!(object = %o.name(), "purged with --force: no delete was sent to the backend");
            // The store no longer has it; its folder moves aside as any purged object's does.
            if let Err(e) = sys.retire(&o.model, &o.key) {
                tracing::warn!(object = %o.name(), error = %e, "cannot move its sys dir folder aside");
            }
        }
        if let Err(e) = sys.prune_deleted() {
            tracing::warn!(error = %e, "cannot trim the sys dir's .deleted folder");
        }
        already.extend(out);
        return Ok(already);
    }
    let result = remove(svc, &mut *tx, order, Millis::now())?;
    tx.commit()?;
    already.extend(result);
    Ok(already)
}
