//! `stepsync store copy FROM TO` (SPEC §17): the whole data model of one store into another
//! that holds no object yet, SQLite ↔ PostgreSQL, in one write transaction of the target,
//! so a copy that fails half way leaves the target as it was.
//!
//! What is copied: every object with its fields, feedback, bookkeeping and owner, its
//! dependency edges, the definitions' digests (so no object turns suspect), the watchers'
//! outbox, the steps' outcomes and positions (so an event step resumes where it was, not
//! from the start), and the dead letters. What is not: the runner lease, the workers, their
//! claims and journals, which belong to the processes driving the source.

use std::collections::HashMap;

use super::{Edge, ObjectRecord, Store, StoreError};

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub objects: usize,
    pub edges: usize,
    pub outbox: usize,
    pub positions: usize,
    pub dead_letters: usize,
}

/// Copies `from` into `to`. `edges` gives an object's dependency edges (from the service's
/// schema: the stores keep them only to answer who points at whom); `progress(done, total)`
/// is told as objects are written.
pub fn copy(
    from: &dyn Store,
    to: &dyn Store,
    edges: impl Fn(&ObjectRecord) -> Vec<Edge>,
    progress: &dyn Fn(usize, usize),
) -> Result<Copied, StoreError> {
    if let Some((model, n)) = to.counts_by_model()?.into_iter().next() {
        return Err(StoreError::Invalid {
            path: "the target store".into(),
            message: format!(
                "it already holds objects ({n} of {model} and maybe more): a copy goes into an empty store only"
            ),
        });
    }
    let objects = from.list(None)?;
    let mut copied = Copied::default();
    let mut ids: HashMap<i64, i64> = HashMap::with_capacity(objects.len());
    let mut tx = to.write()?;
    for (i, o) in objects.iter().enumerate() {
        let e = edges(o);
        let id = tx.insert(&o.model, &o.key, &o.fields, &e, &o.book)?;
        if !o.feedback.is_empty() {
            tx.put_book(id, &o.book, Some(&o.feedback))?;
        }
        if o.owner.is_some() {
            tx.put_owner(id, o.owner.as_deref())?;
        }
        ids.insert(o.id, id);
        copied.objects += 1;
        copied.edges += e.len();
        if i % 1000 == 999 {
            progress(i + 1, objects.len());
        }
    }
    progress(objects.len(), objects.len());
    for (model, digest) in from.definitions()? {
        tx.put_definition(&model, &digest)?;
    }
    for mut e in from.outbox()? {
        let Some(&obj) = ids.get(&e.obj) else {
            continue;
        };
        e.obj = obj;
        tx.outbox_put(&e)?;
        copied.outbox += 1;
    }
    for w in from.watcher_statuses()? {
        tx.put_watcher_status(&w)?;
    }
    for f in from.feed_statuses()? {
        tx.put_feed_status(&f)?;
    }
    for (step, part, pos) in from.positions()? {
        tx.put_position(&step, &part, pos)?;
        copied.positions += 1;
    }
    let (_, mut dead) = from.dead_letters(usize::MAX)?;
    // Oldest first, so the newest stays newest in the target.
    dead.reverse();
    for d in &dead {
        tx.put_dead_letter(d)?;
        copied.dead_letters += 1;
    }
    tx.commit()?;
    Ok(copied)
}
