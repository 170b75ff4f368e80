//! The objects of the data model as one pass sees them, by id and by `Model/key`. Runs
//! update it as they record outcomes, so later decisions of the same pass see them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::model::Schema;
use crate::store::{ObjectRecord, ReadOps, StoreError};

#[derive(Default)]
struct Maps {
    by_id: HashMap<i64, Arc<ObjectRecord>>,
    /// model -> key -> id: nested so a lookup borrows its strings instead of building a key.
    by_key: HashMap<String, HashMap<String, i64>>,
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

    /// A snapshot of just these objects (for templates that need only them and what they
    /// refer to).
    pub fn of(schema: Arc<Schema>, objects: Vec<ObjectRecord>) -> Snapshot {
        let mut maps = Maps::default();
        for o in objects {
            maps.by_key
                .entry(o.model.clone())
                .or_default()
                .insert(o.key.clone(), o.id);
            maps.by_id.insert(o.id, Arc::new(o));
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

    /// Replaces one object after a run changed it.
    pub fn put(&self, rec: ObjectRecord) {
        let mut m = self.write();
        m.by_key
            .entry(rec.model.clone())
            .or_default()
            .insert(rec.key.clone(), rec.id);
        m.by_id.insert(rec.id, Arc::new(rec));
    }

    pub fn remove(&self, id: i64) {
        let mut m = self.write();
        if let Some(o) = m.by_id.remove(&id)
            && let Some(keys) = m.by_key.get_mut(&o.model)
        {
            keys.remove(&o.key);
        }
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

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
