//! The objects of the data model as one pass sees them, indexed by `Model/key`. Runs update
//! it as they record outcomes, so later objects of the same pass see their dependencies'
//! new state.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::Schema;
use crate::store::{ObjectRecord, ReadOps, StoreError};

type Key = (String, String);

pub struct Snapshot {
    pub schema: Arc<Schema>,
    objects: RwLock<HashMap<Key, Arc<ObjectRecord>>>,
}

impl Snapshot {
    pub fn load(schema: Arc<Schema>, store: &dyn ReadOps) -> Result<Snapshot, StoreError> {
        let objects = store
            .list(None)?
            .into_iter()
            .map(|o| ((o.model.clone(), o.key.clone()), Arc::new(o)))
            .collect();
        Ok(Snapshot {
            schema,
            objects: RwLock::new(objects),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<ObjectRecord>>> {
        // Writers only insert or remove whole entries, so a poisoned map is still consistent.
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, model: &str, key: &str) -> Option<Arc<ObjectRecord>> {
        self.read()
            .get(&(model.to_owned(), key.to_owned()))
            .cloned()
    }

    /// Replaces one object after a run changed it.
    pub fn put(&self, rec: ObjectRecord) {
        let mut map = self.objects.write().unwrap_or_else(|p| p.into_inner());
        map.insert((rec.model.clone(), rec.key.clone()), Arc::new(rec));
    }

    pub fn remove(&self, model: &str, key: &str) {
        let mut map = self.objects.write().unwrap_or_else(|p| p.into_inner());
        map.remove(&(model.to_owned(), key.to_owned()));
    }

    /// Every object of `model`, sorted by key.
    pub fn of_model(&self, model: &str) -> Vec<Arc<ObjectRecord>> {
        let mut v: Vec<Arc<ObjectRecord>> = self
            .read()
            .values()
            .filter(|o| o.model == model)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    pub fn all(&self) -> Vec<Arc<ObjectRecord>> {
        self.read().values().cloned().collect()
    }
}
