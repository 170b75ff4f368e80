//! The data model store. The [`Store`] trait is what the engine and commands use; SQLite is
//! the embedded implementation. Writes go through a [`WriteTx`] so an apply is all or
//! nothing, and a PostgreSQL store with several workers can implement the same calls.

pub mod sqlite;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

pub use sqlite::SqliteStore;

use crate::model::deps::Edge;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Millis {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// RFC 3339, UTC, whole seconds (`2026-01-01T00:00:00Z`).
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0));
        humantime::format_rfc3339_seconds(t).to_string()
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// The engine's view of an object (SPEC §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Ok,
    Error,
    Deferred,
    Blocked,
    Deleting,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Ok,
        Status::Error,
        Status::Deferred,
        Status::Blocked,
        Status::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Deferred => "deferred",
            Status::Blocked => "blocked",
            Status::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The original framework's `backend_code`: 0 pending/deferred, 1 ok, 2 error/blocked.
    pub fn backend_code(self) -> u8 {
        match self {
            Status::Ok => 1,
            Status::Error | Status::Blocked => 2,
            Status::Pending | Status::Deferred | Status::Deleting => 0,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bookkeeping owned by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Bookkeeping {
    pub status: Status,
    pub message: String,
    pub generation: i64,
    pub synced_generation: i64,
    pub failures: u32,
    pub next_retry_at: Option<Millis>,
    pub deleted: bool,
    pub created: Millis,
    pub updated: Millis,
    pub enacted: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_error_at: Option<Millis>,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    pub id: i64,
    pub model: String,
    pub key: String,
    /// Declarative fields (refs as keys).
    pub fields: Map<String, Value>,
    /// Feedback fields, written only by the actuator.
    pub feedback: Map<String, Value>,
    pub book: Bookkeeping,
}

impl ObjectRecord {
    /// `Model/key`, how objects are named everywhere.
    pub fn name(&self) -> String {
        format!("{}/{}", self.model, self.key)
    }
}

/// An object that points at another, as found by [`ReadOps::referrers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub id: i64,
    pub model: String,
    pub key: String,
    pub field: String,
    pub to_field: String,
    pub value: String,
}

/// What a run (or a pass's check of an object) leaves in the bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRecord {
    /// Synced: `generation` is the one read when the run started, so a change made while
    /// it ran keeps the object pending. `feedback` replaces the feedback fields.
    Success {
        generation: i64,
        feedback: Map<String, Value>,
    },
    Failure {
        message: String,
        next_retry_at: Option<Millis>,
    },
    Deferred {
        message: String,
    },
    Blocked {
        message: String,
    },
}

/// Reads, available both outside and inside a write transaction.
pub trait ReadOps {
    fn get(&self, model: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError>;
    /// Every object of `model` (or of all models), ordered by model then key.
    fn list(&self, model: Option<&str>) -> Result<Vec<ObjectRecord>, StoreError>;
    /// Objects with a dependency edge into `to_model` (the caller matches the values).
    fn referrers(&self, to_model: &str) -> Result<Vec<Referrer>, StoreError>;
}

/// One write transaction; dropped without [`WriteTx::commit`] it rolls back.
pub trait WriteTx: ReadOps {
    /// Creates an object at generation 1, pending.
    fn insert(
        &mut self,
        model: &str,
        key: &str,
        fields: &Map<String, Value>,
        refs: &[Edge],
        now: Millis,
    ) -> Result<i64, StoreError>;
    /// Replaces the declarative fields, bumps the generation, clears backoff and any
    /// pending delete; returns the new generation.
    fn update_fields(
        &mut self,
        id: i64,
        fields: &Map<String, Value>,
        refs: &[Edge],
        now: Millis,
    ) -> Result<i64, StoreError>;
    /// Marks the object deleted; the engine runs its delete payload and purges it.
    fn mark_deleted(&mut self, id: i64, now: Millis) -> Result<(), StoreError>;
    /// Clears an object's backoff so it is retried on the next pass.
    fn clear_backoff(&mut self, id: i64) -> Result<(), StoreError>;
    /// Records the outcome of a run (feedback never moves the generation) and returns the
    /// object as it now stands, or `None` if it is gone.
    fn record_run(
        &mut self,
        id: i64,
        run: &RunRecord,
        now: Millis,
    ) -> Result<Option<ObjectRecord>, StoreError>;
    /// Removes the object and its edges for good.
    fn purge(&mut self, id: i64) -> Result<(), StoreError>;
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Totals over every object, without loading them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects per status, in `Status::ALL` order, zero counts left out.
    pub by_status: Vec<(Status, usize)>,
    /// Objects with work on them whatever the clock says: a generation not yet synced, or a
    /// deletion not yet carried out.
    pub pending: usize,
}

pub trait Store: ReadOps + Send + Sync {
    /// Per-status totals and the pending count, as one aggregate query.
    fn counts(&self) -> Result<Counts, StoreError>;
    /// Starts a write transaction that excludes other writers until it ends.
    fn write(&self) -> Result<Box<dyn WriteTx + '_>, StoreError>;
    /// A number that changes when another process commits a change.
    fn change_marker(&self) -> Result<i64, StoreError>;
    /// A file whose directory sees a write whenever the store changes, for waking on changes
    /// without polling; `None` when the store has no such file.
    fn watch_path(&self) -> Option<&std::path::Path>;
}
