//! `stepsync apply` (SPEC §4.4): upsert objects by key in one transaction, all or nothing.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use crate::deletion::{Removal, referrers_of, remove};
use crate::diag::{Diagnostic, Diagnostics};
use crate::error::{Error, Result};
use crate::model::objects::{ObjectSpec, check_duplicates, load_objects};
use crate::service::Service;
use crate::store::{Millis, ObjectRecord, Store};
use crate::yaml::Source;

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    pub prune: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Removed(Removal),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Created => f.write_str("created"),
            Outcome::Configured => f.write_str("configured"),
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::Removed(r) => write!(f, "pruned ({r})"),
        }
    }
}

/// What an apply did (or, with `dry_run`, would do), one line per object.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub lines: Vec<(String, Outcome)>,
}

/// Reads and checks every file, then writes all objects in one transaction.
pub fn apply(
    svc: &Service,
    store: &dyn Store,
    files: &[PathBuf],
    opts: ApplyOptions,
) -> Result<ApplyReport> {
    apply_then(svc, store, files, opts, |_| Ok(())).map(|(report, ())| report)
}

/// [`apply`], then `then` on the store as the apply left it, inside its transaction: with
/// `dry_run` (rolled back), what the store would hold after the apply — for planning files'
/// objects on top of the store without writing them (`run --pretend -f`).
pub fn apply_then<T>(
    svc: &Service,
    store: &dyn Store,
    files: &[PathBuf],
    opts: ApplyOptions,
    then: impl FnOnce(&mut dyn crate::store::WriteTx) -> Result<T>,
) -> Result<(ApplyReport, T)> {
    let sources = files.iter().map(|f| Source::read(f)).collect();
    apply_sources_then(svc, store, sources, opts, then)
}

/// [`apply`] of objects-file texts that are not files (the API's request bodies): each is
/// named as its diagnostics will say it, `(request body)` say.
pub fn apply_sources(
    svc: &Service,
    store: &dyn Store,
    sources: Vec<Source>,
    opts: ApplyOptions,
) -> Result<ApplyReport> {
    let sources = sources.into_iter().map(Ok).collect();
    apply_sources_then(svc, store, sources, opts, |_| Ok(())).map(|(report, ())| report)
}

fn apply_sources_then<T>(
    svc: &Service,
    store: &dyn Store,
    sources: Vec<std::result::Result<Source, Diagnostic>>,
    opts: ApplyOptions,
    then: impl FnOnce(&mut dyn crate::store::WriteTx) -> Result<T>,
) -> Result<(ApplyReport, T)> {
    let mut diags = Diagnostics::default();
    let mut specs = Vec::new();
    for src in sources {
        match src {
            Ok(src) => specs.extend(load_objects(&src, &svc.schema, &mut diags)),
            Err(d) => diags.push(d),
        }
    }
    let seen = check_duplicates(&specs, &mut diags);
    if diags.has_errors() {
        return Err(Error::Invalid(diags));
    }

    let mut tx = store.write()?;
    // Refs may point at objects of this same apply, in any order, or at live stored ones.
    for s in &specs {
        for r in &s.refs {
            if seen.contains_key(&(r.to.clone(), r.key.clone())) {
                continue;
            }
            match tx.get(&r.to, &r.key)? {
                Some(t) if !t.book.deleted => {}
                Some(_) => diags.push(r.origin.diag(format!(
                    "field `{}` refers to {}/{}, which is being deleted",
                    r.field, r.to, r.key
                ))),
                None => diags.push(
                    r.origin
                        .diag(format!(
                            "field `{}` refers to {}/{}, which does not exist",
                            r.field, r.to, r.key
                        ))
                        .with_hint(format!("create the {} in this apply or before it", r.to)),
                ),
            }
        }
    }
    diags.into_result()?;

    let now = Millis::now();
    let mut report = ApplyReport::default();
    for s in &specs {
        let outcome = upsert(svc, &mut *tx, s, now)?;
        report
            .lines
            .push((format!("{}/{}", s.model, s.key), outcome));
    }
    if opts.prune {
        let models: HashSet<&str> = specs.iter().map(|s| s.model.as_str()).collect();
        let mut doomed: Vec<ObjectRecord> = Vec::new();
        for model in svc
            .graph
            .order()
            .iter()
            .rev()
            .filter(|m| models.contains(m.as_str()))
        {
            // What a policy or a pull step wrote is theirs to remove, never a prune's.
            doomed.extend(tx.list(Some(model))?.into_iter().filter(|o| {
                !o.book.deleted
                    && o.owner.is_none()
                    && !seen.contains_key(&(o.model.clone(), o.key.clone()))
            }));
        }
        let doomed_ids: HashSet<i64> = doomed.iter().map(|o| o.id).collect();
        for o in &doomed {
            let keepers: Vec<String> = referrers_of(&*tx, o, true)?
                .iter()
                .filter(|r| !doomed_ids.contains(&r.id))
                .map(ObjectRecord::name)
                .collect();
            if !keepers.is_empty() {
                return Err(Error::Failed(
                    Diagnostic::error(format!(
                        "cannot prune {}: referenced by {}",
                        o.name(),
                        keepers.join(", ")
                    ))
                    .with_hint("list it in the files again, or delete its dependents first"),
                ));
            }
        }
        for (name, r) in remove(svc, &mut *tx, doomed, now)? {
            report.lines.push((name, Outcome::Removed(r)));
        }
    }
    let after = then(&mut *tx)?;
    if opts.dry_run {
        drop(tx); // rolls back
    } else {
        tx.commit()?;
    }
    Ok((report, after))
}

fn upsert(
    svc: &Service,
    tx: &mut dyn crate::store::WriteTx,
    s: &ObjectSpec,
    now: Millis,
) -> Result<Outcome> {
    let edges = svc.graph.edges(&s.model, &s.fields);
    match tx.get(&s.model, &s.key)? {
        None => {
            crate::store::create(tx, &s.model, &s.key, &s.fields, &edges, now)?;
            Ok(Outcome::Created)
        }
        Some(old) if old.fields == s.fields && !old.book.deleted => Ok(Outcome::Unchanged),
        Some(old) => {
            crate::store::change(tx, old.id, &s.fields, &edges, now)?;
            Ok(Outcome::Configured)
        }
    }
}
