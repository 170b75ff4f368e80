//! The objects of the data model as one pass sees them, indexed by `Model/key`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::Schema;
use crate::store::{ObjectRecord, ReadOps, StoreError};

pub struct Snapshot {
    pub schema: Arc<Schema>,
    objects: HashMap<(String, String), Arc<ObjectRecord>>,
}

impl Snapshot {
    pub fn load(schema: Arc<Schema>, store: &dyn ReadOps) -> Result<Snapshot, StoreError> {
        let objects = store
            .list(None)?
            .into_iter()
            .map(|o| ((o.model.clone(), o.key.clone()), Arc::new(o)))
            .collect();
        Ok(Snapshot { schema, objects })
    }

    pub fn get(&self, model: &str, key: &str) -> Option<&Arc<ObjectRecord>> {
        self.objects.get(&(model.to_owned(), key.to_owned()))
    }

    /// Replaces one object after a run changed it, so later objects of the pass see it.
    pub fn put(&mut self, rec: ObjectRecord) {
        self.objects
            .insert((rec.model.clone(), rec.key.clone()), Arc::new(rec));
    }

    pub fn remove(&mut self, model: &str, key: &str) {
        self.objects.remove(&(model.to_owned(), key.to_owned()));
    }

    /// Every object of `model`, sorted by key.
    pub fn of_model(&self, model: &str) -> Vec<Arc<ObjectRecord>> {
        let mut v: Vec<Arc<ObjectRecord>> = self
            .objects
            .values()
            .filter(|o| o.model == model)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}
