//! The objects of the data model as one pass sees them, by id and by `Model/key`. Runs
//! update it as they record outcomes, so later decisions of the same pass see them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::bookkeeping;
use crate::model::Schema;
use crate::store::{ObjectRecord, ReadOps, Store, StoreError};

#[derive(Default)]
struct Maps {
    by_id: HashMap<i64, Arc<ObjectRecord>>,
    /// model -> key -> id: nested so a lookup borrows its strings instead of building a key.
    by_key: HashMap<String, HashMap<String, i64>>,
    /// The store revision every object is held as of, for a snapshot that catches up
    /// ([`Snapshot::catch_up`]).
    rev: Option<i64>,
    /// The objects that can be due without a resync ([`bookkeeping::active`]), so a pass
    /// over a large store in sync walks only them (B4: walking 10,000 objects for the one
    /// an apply changed was 4.4 ms).
    active: HashSet<i64>,
    /// Objects purged since the snapshot was read (ids are never used again): a run's
    /// outcome recorded after another process purged its object must not bring it back.
    gone: HashSet<i64>,
    /// A run's recorded outcome ([`Snapshot::put`], [`Snapshot::remove`]) added or removed
    /// an object or changed its fields since the last [`Snapshot::take_reshaped`]: a graph
    /// built before may no longer hold. (A catch-up reports its own changes.)
    reshaped: bool,
}

/// An object as a [`Snapshot::catch_up`] found it: as held before (`None`: new) and after
/// (`None`: purged).
pub struct Replaced {
    pub before: Option<Arc<ObjectRecord>>,
    pub after: Option<Arc<ObjectRecord>>,
}

impl Maps {
    fn put(&mut self, rec: ObjectRecord) {
        self.put_arc(Arc::new(rec));
    }

    /// Holds `rec`; the object it replaces.
    fn put_arc(&mut self, rec: Arc<ObjectRecord>) -> Option<Arc<ObjectRecord>> {
        // Not `entry`: the model's map exists for all but its first object, and a lookup
        // borrows where an entry would allocate the key.
        match self.by_key.get_mut(&rec.model) {
            Some(keys) => {
                keys.insert(rec.key.clone(), rec.id);
            }
            None => {
                self.by_key
                    .entry(rec.model.clone())
                    .or_default()
                    .insert(rec.key.clone(), rec.id);
            }
        }
        if bookkeeping::active(&rec.book) {
            self.active.insert(rec.id);
        } else {
            self.active.remove(&rec.id);
        }
        self.by_id.insert(rec.id, rec)
    }

    fn remove(&mut self, id: i64) -> Option<Arc<ObjectRecord>> {
        self.active.remove(&id);
        let o = self.by_id.remove(&id)?;
        if let Some(keys) = self.by_key.get_mut(&o.model) {
            keys.remove(&o.key);
        }
        Some(o)
    }
}

pub struct Snapshot {
    pub schema: Arc<Schema>,
    maps: RwLock<Maps>,
    /// Seen by a plan: feedback not yet known renders as `(known after apply)`.
    planning: std::sync::atomic::AtomicBool,
}

impl Snapshot {
    pub fn load(schema: Arc<Schema>, store: &dyn ReadOps) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::of(schema, store.list(None)?))
    }

    /// Every object of `store`, as [`Snapshot::load`], noting the revision they are held
    /// as of so that [`Snapshot::catch_up`] can read only what changed since.
    pub fn tracking(schema: Arc<Schema>, store: &dyn Store) -> Result<Snapshot, StoreError> {
        // Read before the rows: a write that lands between the two is read again by the
        // next catch-up, never missed.
        let rev = store.revision()?;
        let snap = Snapshot::of(schema, store.list(None)?);
        snap.write().rev = Some(rev);
        Ok(snap)
    }

    /// Brings a [`Snapshot::tracking`] snapshot up to the store's latest commits by reading
    /// only the objects written since it was read (B11: three workers each read 3,000
    /// rows 38 times to see each other's outcomes). What it replaced, removed and added;
    /// `None` when it cannot (it is not tracking, or the store no longer keeps what it
    /// would need): the caller loads anew.
    pub fn catch_up(&self, store: &dyn Store) -> Result<Option<Vec<Replaced>>, StoreError> {
        let Some(after) = self.read().rev else {
            return Ok(None);
        };
        // More than a quarter of the objects written: a new read holds one copy of them, a
        // catch-up two at once (B3G: a first sync's second pass over 100,000 objects).
        let limit = self.len() / 4 + 64;
        let Some(changed) = store.changed_since(after, limit)? else {
            return Ok(None);
        };
        /// One change read, to apply in revision order.
        enum Step {
            Put(Box<ObjectRecord>),
            Purge(String, String),
        }
        // In revision order: a purge, then an object of the same model and key made after
        // it, leaves the new one.
        let mut steps: Vec<(i64, Step)> = changed
            .objects
            .into_iter()
            .map(|o| (o.touched, Step::Put(Box::new(o))))
            .chain(
                changed
                    .purged
                    .into_iter()
                    .map(|(rev, model, key)| (rev, Step::Purge(model, key))),
            )
            .collect();
        steps.sort_by_key(|s| s.0);
        let mut m = self.write();
        let mut replaced = Vec::with_capacity(steps.len());
        for (_, step) in steps {
            match step {
                Step::Put(o) => {
                    let after = Arc::new(*o);
                    let before = m.put_arc(after.clone());
                    replaced.push(Replaced {
                        before,
                        after: Some(after),
                    });
                }
                Step::Purge(model, key) => {
                    if let Some(id) = m
                        .by_key
                        .get(&model)
                        .and_then(|keys| keys.get(&key))
                        .copied()
                        && let Some(before) = m.remove(id)
                    {
                        m.gone.insert(id);
                        replaced.push(Replaced {
                            before: Some(before),
                            after: None,
                        });
                    }
                }
            }
        }
        m.rev = Some(changed.rev.max(after));
        Ok(Some(replaced))
    }

    /// A snapshot of just these objects (for templates that need only them and what they
    /// refer to).
    pub fn of(schema: Arc<Schema>, objects: Vec<ObjectRecord>) -> Snapshot {
        let mut maps = Maps::default();
        for o in objects {
            maps.put(o);
        }
        Snapshot {
            schema,
            maps: RwLock::new(maps),
            planning: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks this snapshot as a plan's: templates then read a feedback field that an object
    /// never synced has not got yet as `(known after apply)`, as Terraform shows it.
    pub fn planning(self: Arc<Self>) -> Arc<Self> {
        self.planning
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self
    }

    pub fn is_planning(&self) -> bool {
        self.planning.load(std::sync::atomic::Ordering::Relaxed)
    }

    // Writers replace whole entries, so a map left by a panicking writer is still consistent.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, model: &str, key: &str) -> Option<Arc<ObjectRecord>> {
        let m = self.read();
        let id = m.by_key.get(model)?.get(key)?;
        m.by_id.get(id).cloned()
    }

    pub fn by_id(&self, id: i64) -> Option<Arc<ObjectRecord>> {
        self.read().by_id.get(&id).cloned()
    }

    /// Replaces one object after a run changed it: the record its outcome wrote, read in
    /// the recording's transaction. A record older than the one held (a catch-up read a
    /// later write of another process meanwhile) or of an object since purged is dropped:
    /// the held one is the newer truth.
    pub fn put(&self, rec: ObjectRecord) {
        let mut m = self.write();
        if m.gone.contains(&rec.id) {
            return;
        }
        match m.by_id.get(&rec.id) {
            Some(held) if rec.touched < held.touched => return,
            Some(held) if held.fields == rec.fields => {}
            _ => m.reshaped = true,
        }
        m.put(rec);
    }

    /// Removes an object a run purged.
    pub fn remove(&self, id: i64) {
        let mut m = self.write();
        if m.remove(id).is_some() {
            m.reshaped = true;
        }
        m.gone.insert(id);
    }

    /// Whether [`Snapshot::put`] or [`Snapshot::remove`] reshaped the objects since the
    /// last call (see `Maps::reshaped`).
    pub fn take_reshaped(&self) -> bool {
        std::mem::take(&mut self.write().reshaped)
    }

    /// Every object of `model`, sorted by key.
    pub fn of_model(&self, model: &str) -> Vec<Arc<ObjectRecord>> {
        let mut v: Vec<Arc<ObjectRecord>> = self
            .read()
            .by_id
            .values()
            .filter(|o| o.model == model)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    pub fn all(&self) -> Vec<Arc<ObjectRecord>> {
        self.read().by_id.values().cloned().collect()
    }

    /// The objects that can be due without a resync ([`bookkeeping::active`]).
    pub fn active(&self) -> Vec<Arc<ObjectRecord>> {
        let m = self.read();
        m.active
            .iter()
            .filter_map(|id| m.by_id.get(id).cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
