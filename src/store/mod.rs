//! The data model store. The [`Store`] trait is what the engine and commands use; SQLite is
//! the embedded implementation, PostgreSQL the shared one (SPEC §17). Writes go through a
//! [`WriteTx`] so an apply is all or nothing.

mod columns;
pub mod copy;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod suite;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

// The bookkeeping types are the state machine's; the store persists them.
pub use crate::bookkeeping::{Bookkeeping, Intent, Millis, RunRecord, Status};

use crate::bookkeeping::{self, Cause, Disposition};
use crate::model::deps::Edge;

/// What the server said: the client's own text for a server error is only "db error".
fn pg_message(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// `url` is shown without its password.
    #[error("store {url}: {}", pg_message(source))]
    Postgres {
        url: String,
        #[source]
        source: ::postgres::Error,
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
    /// Who wrote it on its own, if not a person: `Network/n1` for the object a policy of
    /// Network/n1 ensured (SPEC §12).
    pub owner: Option<String>,
    /// The store revision of the row's last write as it was read (0 for a record never
    /// read from a store): of two reads of one object, the later has the higher one.
    pub touched: i64,
}

impl ObjectRecord {
    /// `Model/key`, how objects are named everywhere.
    pub fn name(&self) -> String {
        format!("{}/{}", self.model, self.key)
    }

    /// Declarative and feedback fields in one map, as watchers see an object.
    pub fn all_fields(&self) -> Map<String, Value> {
        let mut all = self.fields.clone();
        all.extend(self.feedback.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

/// What the store notes on write for the service's watchers (SPEC §11): per watched model,
/// which watcher cares about which fields.
#[derive(Debug, Default)]
pub struct Triggers {
    by_model: HashMap<String, Vec<Rule>>,
}

/// A watcher's name and the fields it watches (`None`: any).
type Rule = (String, Option<Vec<String>>);

impl Triggers {
    /// `watcher` fires on changes of `fields` of `model` (`None`: any field).
    pub fn add(&mut self, model: &str, watcher: &str, fields: Option<&[String]>) {
        self.by_model
            .entry(model.to_owned())
            .or_default()
            .push((watcher.to_owned(), fields.map(<[String]>::to_vec)));
    }

    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// The watchers a change of `changed` fields of `model` fires, each with the changed
    /// fields it watches.
    fn fired(&self, model: &str, changed: &[String]) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (watcher, fields) in self.by_model.get(model).into_iter().flatten() {
            let hit: Vec<String> = changed
                .iter()
                .filter(|c| fields.as_ref().is_none_or(|f| f.contains(c)))
                .cloned()
                .collect();
            if hit.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(w, _)| w == watcher) {
                Some((_, f)) => {
                    for h in hit {
                        if !f.contains(&h) {
                            f.push(h);
                        }
                    }
                }
                None => out.push((watcher.clone(), hit)),
            }
        }
        out
    }
}

/// A watched change waiting for its watcher, written in the transaction of the change.
/// Changes of one object before the watcher runs fold into one entry: `old` stays the state
/// before the first, `new` is the latest, `fields` the union; `seq` counts the folds, so
/// a run that saw an older fold does not remove a newer one.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: i64,
    pub watcher: String,
    /// The changed object.
    pub obj: i64,
    pub model: String,
    pub key: String,
    pub fields: Vec<String>,
    pub old: Map<String, Value>,
    pub new: Map<String, Value>,
    pub seq: i64,
    /// When the latest folded change was written, in microseconds since the epoch: finer
    /// than a run's start in milliseconds would tell apart (see `steps::watch`).
    pub at_us: i64,
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A step's last outcome: a payload watcher's (SPEC §11: shown, never retried), a pull
/// step's polls or an event step's messages (SPEC §13, §14). `failures` counts the failures
/// since the last success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStatus {
    pub name: String,
    pub runs: i64,
    pub failures: i64,
    pub last_run: Option<Millis>,
    pub last_ok: Option<Millis>,
    pub last_error_at: Option<Millis>,
    pub message: String,
}

/// A message an event step could not decode or map (SPEC §14), kept with its error.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    /// `event/<step>`.
    pub step: String,
    /// The message's place: `topic/partition` (Kafka) or the stream (NATS), and its offset
    /// or sequence there.
    pub part: String,
    pub pos: i64,
    pub at: Millis,
    /// The payload, as text (invalid UTF-8 replaced), at most [`DEAD_LETTER_LIMIT`] bytes.
    pub message: String,
    pub error: String,
}

/// A claim on one object's run (SPEC §17): one worker holds it until it expires or is
/// released, and every claim of the object has a higher epoch than the last, so the write
/// of a run's outcome can be fenced by it ([`WriteTx::fence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub obj: i64,
    pub epoch: i64,
}

/// A worker of a store, as `status` and the API show it: registered when it starts, its
/// heartbeat moved with every renewal of its claims, gone when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique per process: host, pid and start time, as the runner lease's holder.
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub since: Millis,
    pub heartbeat: Millis,
    /// Object claims it holds now (unexpired, unreleased); filled in by [`Store::workers`].
    pub claims: usize,
}

impl WorkerInfo {
    /// Whether it leads (SPEC §17): it holds the runner lease `lease`, unexpired at `now`.
    pub fn leads(&self, lease: Option<&Lease>, now: Millis) -> bool {
        lease.is_some_and(|l| l.pid == self.pid && l.host == self.host && l.expires > now)
    }
}

/// A running [`Store::listen`]: stops listening when dropped.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<std::sync::atomic::AtomicBool>,
    live: Arc<std::sync::atomic::AtomicBool>,
}

impl Listener {
    /// A listener driven by a thread that ends when `stop` is set and sets `live` while it
    /// is connected.
    pub(crate) fn new(
        stop: Arc<std::sync::atomic::AtomicBool>,
        live: Arc<std::sync::atomic::AtomicBool>,
    ) -> Listener {
        Listener { stop, live }
    }

    /// Whether hints arrive now: connected and listening. While not, the waiter must poll
    /// as often as it would without one.
    pub fn live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A visible change of one object, in store-wide revision order (SPEC §16's events stream):
/// its state after the change, or that it was purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChange {
    /// The store's revision at this change; later changes have higher ones.
    pub rev: i64,
    pub model: String,
    pub key: String,
    /// `None`: the object was purged (its delete ran, or it never reached a backend).
    pub state: Option<ChangedState>,
}

impl ObjectChange {
    /// From a row of either store's changes query: a purge has no status.
    fn from_row(
        rev: i64,
        model: String,
        key: String,
        status: Option<String>,
        message: Option<String>,
        deleted: bool,
    ) -> Self {
        let state = status.map(|s| ChangedState {
            status: Status::parse(&s).unwrap_or(Status::Pending),
            message: message.unwrap_or_default(),
            deleted,
        });
        ObjectChange {
            rev,
            model,
            key,
            state,
        }
    }
}

/// An object's status as a change left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedState {
    pub status: Status,
    pub message: String,
    pub deleted: bool,
}

/// What a dead letter keeps of its message.
pub const DEAD_LETTER_LIMIT: usize = 64 * 1024;

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

/// Reads, available both outside and inside a write transaction.
/// A page of objects: the filters, where the last page ended, and how many at most.
#[derive(Debug, Clone, Default)]
pub struct PageQuery<'a> {
    pub model: Option<&'a str>,
    pub status: Option<Status>,
    /// Keys that start with this.
    pub prefix: Option<&'a str>,
    /// The (model, key) the previous page ended with: this page starts after it.
    pub after: Option<(&'a str, &'a str)>,
    pub limit: usize,
}

pub trait ReadOps {
    fn get(&self, model: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError>;
    /// Every object of `model` (or of all models), ordered by model then key.
    fn list(&self, model: Option<&str>) -> Result<Vec<ObjectRecord>, StoreError>;
    /// Objects with a dependency edge into `to_model` (the caller matches the values).
    fn referrers(&self, to_model: &str) -> Result<Vec<Referrer>, StoreError>;
    /// Ids of the objects whose dependency edge `to_field` into `to_model` holds `value`.
    fn pointing_at(
        &self,
        to_model: &str,
        to_field: &str,
        value: &str,
    ) -> Result<Vec<i64>, StoreError>;
    /// Each model's definition digest as last recorded ([`sync_definitions`]).
    fn definitions(&self) -> Result<HashMap<String, String>, StoreError>;
    /// Ids of the objects whose edge `field` into `to_model` holds `value` in `to_field`.
    fn pointing_via(
        &self,
        to_model: &str,
        to_field: &str,
        value: &str,
        field: &str,
    ) -> Result<Vec<i64>, StoreError>;
    /// The objects `owner` wrote on its own (SPEC §12), ordered by model then key.
    fn owned_by(&self, owner: &str) -> Result<Vec<ObjectRecord>, StoreError>;
    /// One page of objects in (model, key) order: what the API's list shows (SPEC §16).
    fn page(&self, q: &PageQuery<'_>) -> Result<Vec<ObjectRecord>, StoreError>;
    /// The live objects of `model` whose generation moved past the one their policies last
    /// ran on (backoff aside: see [`bookkeeping::needs_policy`]), by id.
    fn unpoliced(&self, model: &str) -> Result<Vec<ObjectRecord>, StoreError>;
    /// The watched changes waiting for their watchers, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The objects of `model` with work or a suspicion (see [`bookkeeping::work`] and
    /// [`bookkeeping::suspect`]), by id.
    fn with_work(&self, model: &str) -> Result<Vec<ObjectRecord>, StoreError>;
    /// The objects the clock alone can make due when no resync period is set: failed or
    /// deferred ones (their retry) and those whose policies failed (their backoff).
    fn waking(&self) -> Result<Vec<ObjectRecord>, StoreError>;
}

/// One write transaction; dropped without [`WriteTx::commit`] it rolls back. It persists
/// what the bookkeeping state machine ([`crate::bookkeeping`]) decided and decides nothing
/// itself; callers go through the functions at the end of this file.
pub trait WriteTx: ReadOps {
    fn get_by_id(&self, id: i64) -> Result<Option<ObjectRecord>, StoreError>;
    /// Creates an object with the given bookkeeping; returns its id.
    fn insert(
        &mut self,
        model: &str,
        key: &str,
        fields: &Map<String, Value>,
        refs: &[Edge],
        book: &Bookkeeping,
    ) -> Result<i64, StoreError>;
    /// Replaces the declarative fields and their dependency edges.
    fn put_fields(
        &mut self,
        id: i64,
        fields: &Map<String, Value>,
        refs: &[Edge],
    ) -> Result<(), StoreError>;
    /// Replaces the bookkeeping, and the feedback fields when given.
    fn put_book(
        &mut self,
        id: i64,
        book: &Bookkeeping,
        feedback: Option<&Map<String, Value>>,
    ) -> Result<(), StoreError>;
    /// Objects of `model` that synced at least once and are not being deleted.
    fn synced_ids(&self, model: &str) -> Result<Vec<i64>, StoreError>;
    fn put_definition(&mut self, model: &str, digest: &str) -> Result<(), StoreError>;
    /// Notes objects (id, model, key) whose folders in the sys dir `owner` names a pass is
    /// about to write, so a runner that dies mid-pass leaves a list of exactly the folders
    /// to repair. Each sys dir has a journal of its own: workers sharing a store journal
    /// and repair only their own (`""` for the one runner of a store nobody shares).
    fn journal(&mut self, owner: &str, objects: &[(i64, String, String)])
    -> Result<(), StoreError>;
    fn clear_journal(&mut self, owner: &str) -> Result<(), StoreError>;
    /// Removes the object and its edges for good.
    fn purge(&mut self, id: i64) -> Result<(), StoreError>;
    /// What this transaction's writes note for watchers.
    fn triggers(&self) -> Arc<Triggers>;
    fn put_owner(&mut self, id: i64, owner: Option<&str>) -> Result<(), StoreError>;
    fn outbox_get(&self, watcher: &str, obj: i64) -> Result<Option<OutboxEntry>, StoreError>;
    /// Inserts `e`, or replaces the entry of the same watcher and object.
    fn outbox_put(&mut self, e: &OutboxEntry) -> Result<(), StoreError>;
    /// Removes entry `id` if no change folded into it since `seq`; returns whether it did.
    fn outbox_remove(&mut self, id: i64, seq: i64) -> Result<bool, StoreError>;
    fn watcher_status(&self, name: &str) -> Result<Option<StepStatus>, StoreError>;
    fn put_watcher_status(&mut self, w: &StepStatus) -> Result<(), StoreError>;
    /// A pull or event step's last outcome (`pull/<name>`, `event/<name>`).
    fn feed_status(&self, name: &str) -> Result<Option<StepStatus>, StoreError>;
    fn put_feed_status(&mut self, s: &StepStatus) -> Result<(), StoreError>;
    /// The last message position an event step applied in `part`, if any.
    fn position(&self, step: &str, part: &str) -> Result<Option<i64>, StoreError>;
    fn put_position(&mut self, step: &str, part: &str, pos: i64) -> Result<(), StoreError>;
    fn put_dead_letter(&mut self, d: &DeadLetter) -> Result<(), StoreError>;
    /// Whether each of `claims` is still current: `worker` holds the object at that epoch.
    /// One that is is released in this transaction, which writes the outcome it guards;
    /// for one that is not (the claim expired and another worker took the object over),
    /// the caller must write nothing for the object. PostgreSQL holds the claims' rows until
    /// commit, so a takeover waits for these outcomes rather than running past them, and
    /// fences them all in one statement.
    fn fence(&mut self, worker: &str, claims: &[Claim]) -> Result<Vec<bool>, StoreError>;
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Totals over every object, without loading them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects per status, in `Status::ALL` order, zero counts left out.
    pub by_status: Vec<(Status, usize)>,
    /// Objects with work on them whatever the clock says ([`crate::bookkeeping::work`]).
    pub pending: usize,
    /// In-sync objects an input of whose recipe changed ([`crate::bookkeeping::suspect`]):
    /// rendered again on the next pass to know whether they are pending.
    pub suspect: usize,
}

/// Who drives a store (SPEC §5.5): one runner at a time holds this lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per runner process: host, pid and start time.
    pub holder: String,
    pub pid: u32,
    pub host: String,
    pub since: Millis,
    pub expires: Millis,
}

pub trait Store: ReadOps + Send + Sync {
    /// The runner's lease as it stands, if any runner ever took one.
    fn lease(&self) -> Result<Option<Lease>, StoreError>;
    /// Writes `new` as the lease if the lease is still `expected` (compare and swap, so two
    /// runners deciding at once cannot both win); `None` for `new` releases it.
    fn swap_lease(&self, expected: Option<&Lease>, new: Option<&Lease>)
    -> Result<bool, StoreError>;
    /// Per-status totals and the pending count, as one aggregate query.
    fn counts(&self) -> Result<Counts, StoreError>;
    /// Objects per model (every model with at least one, sorted by name), as one aggregate
    /// query: for `get` without a model and for finding models the schema lost.
    fn counts_by_model(&self) -> Result<Vec<(String, usize)>, StoreError>;
    /// Objects per model and status, zero counts left out (the API and `/metrics`).
    fn counts_by_model_status(&self) -> Result<Vec<(String, Status, usize)>, StoreError>;
    /// Starts a write transaction that excludes other writers until it ends.
    fn write(&self) -> Result<Box<dyn WriteTx + '_>, StoreError>;
    /// Starts a transaction for writes of what this worker alone holds (SPEC §17): the
    /// outcomes of the runs it claimed, its own journal. On a shared store several run side
    /// by side: each locks the rows it reads to write ([`WriteTx::get_by_id`]) and takes
    /// its revisions at commit, and only [`Store::write`] excludes them all. Where nothing
    /// is shared it is [`Store::write`]: one writer.
    fn write_own(&self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        self.write()
    }
    /// The objects whose folders the last pass may have left half written (see
    /// [`WriteTx::journal`]).
    fn journaled(&self, owner: &str) -> Result<Vec<(i64, String, String)>, StoreError>;
    /// A number that changes when another process commits a change.
    fn change_marker(&self) -> Result<i64, StoreError>;
    /// Whether several workers may drive this store at once, claiming object runs (SPEC
    /// §17: PostgreSQL); otherwise one runner drives it under the runner lease (SQLite).
    fn shared(&self) -> bool;
    /// A file whose directory sees a write whenever the store changes, for waking on changes
    /// without polling; `None` when the store has no such file.
    fn watch_path(&self) -> Option<&std::path::Path>;
    /// Hints on `tx` when another process may have committed a change, for a store whose
    /// changes no file shows (PostgreSQL's `LISTEN/NOTIFY`, SPEC §17): a hint only, read
    /// with [`Store::change_marker`], and lost hints are caught by polling. `None` when the
    /// store has no such channel.
    fn listen(&self, tx: tokio::sync::mpsc::Sender<()>) -> Option<Listener> {
        let _ = tx;
        None
    }
    /// What every later write transaction notes for watchers (the service's, at open).
    fn set_triggers(&self, triggers: Arc<Triggers>);
    /// Every watcher's last outcome, by name.
    fn watcher_statuses(&self) -> Result<Vec<StepStatus>, StoreError>;
    /// How many objects' policies failed last time they ran.
    fn policy_errors(&self) -> Result<usize, StoreError>;
    /// Every pull and event step's last outcome, by name.
    fn feed_statuses(&self) -> Result<Vec<StepStatus>, StoreError>;
    /// How many dead letters there are, and the newest `limit` of them, newest first.
    fn dead_letters(&self, limit: usize) -> Result<(usize, Vec<DeadLetter>), StoreError>;
    /// Claims the runs of those of `ids` that nobody else holds (never claimed, released,
    /// or expired) for `worker`, for `ttl`; each with its new epoch. An object another
    /// worker is claiming at this moment is skipped, not waited for (PostgreSQL: `FOR
    /// UPDATE SKIP LOCKED`). Expiry is read on the store's clock.
    fn claim(&self, worker: &str, ids: &[i64], ttl: Duration) -> Result<Vec<Claim>, StoreError>;
    /// The objects of `ids` the store has, as committed now, by id (in no set order): what
    /// a worker reads again of the objects it just claimed, in one round trip.
    fn get_by_ids(&self, ids: &[i64]) -> Result<Vec<ObjectRecord>, StoreError>;
    /// Moves `worker`'s heartbeat and the expiry of every claim it still holds to `ttl`
    /// from now; the claims it still holds (one taken over is not among them, nor one
    /// whose outcome a transaction of its own is writing at this moment).
    fn renew(&self, worker: &str, ttl: Duration) -> Result<Vec<Claim>, StoreError>;
    /// Gives back claims whose run did not happen (the object was no longer due).
    fn release(&self, worker: &str, claims: &[Claim]) -> Result<(), StoreError>;
    /// Notes `w` among the store's workers (again: its heartbeat moves).
    fn register_worker(&self, w: &WorkerInfo) -> Result<(), StoreError>;
    /// Takes `name` off the workers and gives back every claim it holds (a clean stop).
    fn retire_worker(&self, name: &str) -> Result<(), StoreError>;
    /// The workers, by name, each with the claims it holds now.
    fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;
    /// Every event step's last applied position per partition: (step, part, position).
    fn positions(&self) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// The schema version the store is at (this build's after opening it).
    fn schema_version(&self) -> Result<i64, StoreError>;
    /// The store's revision: that of its last visible object change (0 for none).
    fn revision(&self) -> Result<i64, StoreError>;
    /// The visible object changes after revision `after`, oldest first, at most `limit`.
    /// Each object appears once, at its last change; purges are kept for the last 100,000
    /// revisions.
    fn changes(&self, after: i64, limit: usize) -> Result<Vec<ObjectChange>, StoreError>;
    /// Every object written after revision `after`, as it stands now, and the objects
    /// purged since, read in one snapshot of the store: what a reader that holds every
    /// object as of `after` applies to hold them as of the returned revision. `None` when
    /// the tombstones of some of those purges are gone (`after` is more than 100,000
    /// revisions old), or when more than `limit` objects were written (reading them beside
    /// the ones held would hold two copies of most of the store): the reader reads every
    /// object again.
    fn changed_since(&self, after: i64, limit: usize) -> Result<Option<Changed>, StoreError>;
}

/// What [`Store::changed_since`] read.
#[derive(Debug, Default)]
pub struct Changed {
    /// The store's revision in the snapshot read: every write up to it is in here.
    pub rev: i64,
    /// Each object written since (its `touched` the revision of its last write).
    pub objects: Vec<ObjectRecord>,
    /// Each purge since: its revision, and the object's model and key.
    pub purged: Vec<(i64, String, String)>,
}

/// The row limit that tells a [`Store::changed_since`] with `limit` that there are more
/// than `limit` rows: one more.
fn over(limit: usize) -> i64 {
    i64::try_from(limit)
        .unwrap_or(i64::MAX - 1)
        .saturating_add(1)
}

/// Whether the tombstones a store keeps cover every purge after `after`, its revision
/// being `rev`: a tombstone older than [`sqlite::PURGED_KEPT`] revisions is gone.
fn tombstones_cover(after: i64, rev: i64) -> bool {
    after >= rev - sqlite::PURGED_KEPT
}

/// Creates an object, pending at generation 1.
pub fn create(
    tx: &mut dyn WriteTx,
    model: &str,
    key: &str,
    fields: &Map<String, Value>,
    refs: &[Edge],
    now: Millis,
) -> Result<i64, StoreError> {
    let id = tx.insert(model, key, fields, refs, &bookkeeping::created(now))?;
    note_change(tx, id, model, key, &Map::new(), fields)?;
    Ok(id)
}

/// Replaces an object's declarative fields: a new generation (SPEC §5.1).
pub fn change(
    tx: &mut dyn WriteTx,
    id: i64,
    fields: &Map<String, Value>,
    refs: &[Edge],
    now: Millis,
) -> Result<(), StoreError> {
    let before = tx.get_by_id(id)?;
    tx.put_fields(id, fields, refs)?;
    if let Some(obj) = update(tx, id, |b| bookkeeping::on_change(b, now))?
        && let Some(before) = before.filter(|b| b.fields != *fields)
    {
        mark_referrers(tx, &obj)?;
        note_change(
            tx,
            id,
            &obj.model,
            &obj.key,
            &before.all_fields(),
            &obj.all_fields(),
        )?;
    }
    Ok(())
}

/// Notes a write that changed `old` into `new` in the outbox of every watcher that watches
/// a changed field (SPEC §11), in the writer's transaction: a write that leaves the watched
/// fields equal notes nothing.
fn note_change(
    tx: &mut dyn WriteTx,
    id: i64,
    model: &str,
    key: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), StoreError> {
    let triggers = tx.triggers();
    if triggers.is_empty() {
        return Ok(());
    }
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    for (watcher, fields) in triggers.fired(model, &changed) {
        let entry = match tx.outbox_get(&watcher, id)? {
            Some(mut e) => {
                for f in fields {
                    if !e.fields.contains(&f) {
                        e.fields.push(f);
                    }
                }
                e.new.clone_from(new);
                e.seq += 1;
                e.at_us = now_micros();
                e
            }
            None => OutboxEntry {
                id: 0,
                watcher,
                obj: id,
                model: model.to_owned(),
                key: key.to_owned(),
                fields,
                old: old.clone(),
                new: new.clone(),
                seq: 1,
                at_us: now_micros(),
            },
        };
        tx.outbox_put(&entry)?;
    }
    Ok(())
}

/// Merges `feedback` into an object's feedback fields without touching its generation
/// (SPEC §13: writing only feedback never makes an object pending); returns whether they
/// changed. A change is noted for watchers and makes referrers suspects, as a run's is.
pub fn put_feedback(
    tx: &mut dyn WriteTx,
    cur: &ObjectRecord,
    feedback: &Map<String, Value>,
) -> Result<bool, StoreError> {
    let mut merged = cur.feedback.clone();
    for (k, v) in feedback {
        if v.is_null() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    if merged == cur.feedback {
        return Ok(false);
    }
    tx.put_book(cur.id, &cur.book, Some(&merged))?;
    let mut after = cur.clone();
    after.feedback = merged;
    note_change(
        tx,
        cur.id,
        &cur.model,
        &cur.key,
        &cur.all_fields(),
        &after.all_fields(),
    )?;
    mark_referrers(tx, &after)?;
    Ok(true)
}

/// Marks an object deleted (SPEC §5.4).
pub fn mark_deleted(tx: &mut dyn WriteTx, id: i64, now: Millis) -> Result<(), StoreError> {
    update(tx, id, |b| bookkeeping::on_delete(b, now)).map(drop)
}

/// A pass that had the object among its jobs did not end (see [`bookkeeping::on_interrupted`]).
pub fn interrupted(tx: &mut dyn WriteTx, id: i64) -> Result<(), StoreError> {
    update(tx, id, bookkeeping::on_interrupted).map(drop)
}

/// A resync watcher fired for an object (see [`bookkeeping::on_watch`]); returns whether
/// that gave it work.
/// `cur` is the object as `tx` holds it (the caller just read it).
pub fn watched(
    tx: &mut dyn WriteTx,
    mut cur: ObjectRecord,
    cause: Cause,
) -> Result<bool, StoreError> {
    if !bookkeeping::on_watch(&mut cur.book, cause) {
        return Ok(false);
    }
    tx.put_book(cur.id, &cur.book, None)?;
    Ok(true)
}

/// An object's policies ran; their writes are in `tx` (SPEC §12).
pub fn policed(tx: &mut dyn WriteTx, id: i64) -> Result<(), StoreError> {
    update(tx, id, bookkeeping::on_policed).map(drop)
}

/// An object's policies failed and wrote nothing (see [`bookkeeping::on_policy_failed`]).
pub fn policy_failed(
    tx: &mut dyn WriteTx,
    id: i64,
    message: String,
    now: Millis,
    backoff: &crate::config::Backoff,
    jitter: f64,
) -> Result<(), StoreError> {
    update(tx, id, |b| {
        bookkeeping::on_policy_failed(b, message, now, backoff, jitter);
    })
    .map(drop)
}

/// Clears an object's backoff so it is tried on the next pass.
pub fn clear_backoff(tx: &mut dyn WriteTx, id: i64) -> Result<(), StoreError> {
    update(tx, id, bookkeeping::on_retry).map(drop)
}

/// What a run's outcome makes of `cur` (feedback never moves the generation): the object
/// as it then stands, `None` if it is purged, and whether its feedback changed. Pure: the
/// engine also uses it to write a run's files before the store has the outcome.
pub fn apply_run(
    mut cur: ObjectRecord,
    run: &RunRecord,
    now: Millis,
    rules: &bookkeeping::Rules<'_>,
    jitter: f64,
) -> (Option<ObjectRecord>, bool) {
    if bookkeeping::on_run(&mut cur.book, run, now, rules, jitter) == Disposition::Purge {
        return (None, false);
    }
    let moved = match run {
        RunRecord::Success {
            feedback: Some(f), ..
        } => {
            // Merged, not replaced: feedback fields a pull or event step writes (SPEC §13,
            // §14) are not the actuator's, and its run reports all of its own.
            let before = cur.feedback.clone();
            for (k, v) in f {
                cur.feedback.insert(k.clone(), v.clone());
            }
            before != cur.feedback
        }
        _ => false,
    };
    (Some(cur), moved)
}

/// Records a run's outcome ([`apply_run`]) and returns the object as it now stands, or
/// `None` if it is gone (a completed delete purges it), with the number of in-sync objects
/// its changed feedback made suspects.
pub fn record_run(
    tx: &mut dyn WriteTx,
    id: i64,
    run: &RunRecord,
    now: Millis,
    rules: &bookkeeping::Rules<'_>,
    jitter: f64,
) -> Result<(Option<ObjectRecord>, usize), StoreError> {
    let Some(cur) = tx.get_by_id(id)? else {
        return Ok((None, 0));
    };
    let before = cur.all_fields();
    let (rec, moved) = apply_run(cur, run, now, rules, jitter);
    let Some(rec) = rec else {
        tx.purge(id)?;
        return Ok((None, 0));
    };
    let feedback = match run {
        RunRecord::Success {
            feedback: Some(_), ..
        } => Some(&rec.feedback),
        _ => None,
    };
    tx.put_book(id, &rec.book, feedback)?;
    // A feedback field its referrers' recipes may read (SPEC §5.1 rule 5), or watchers watch.
    let marked = if moved {
        note_change(tx, id, &rec.model, &rec.key, &before, &rec.all_fields())?;
        mark_referrers(tx, &rec)?
    } else {
        0
    };
    Ok((Some(rec), marked))
}

/// Every object that follows `changed` through refs, transitively, has a changed input
/// (SPEC §5.1 rule 5): each becomes a suspect, to be rendered again. The walk does not go
/// past an object that never synced: nothing beyond it can have synced either. Returns how
/// many became suspects.
pub fn mark_referrers(tx: &mut dyn WriteTx, changed: &ObjectRecord) -> Result<usize, StoreError> {
    let mut marked = 0;
    let cause = Cause::Reference(changed.name());
    let mut seen: HashSet<i64> = HashSet::from([changed.id]);
    let mut next = vec![changed.clone()];
    while let Some(obj) = next.pop() {
        for (field, v) in &obj.fields {
            let Some(value) = crate::model::deps::scalar_text(v) else {
                continue;
            };
            for id in tx.pointing_at(&obj.model, field, &value)? {
                if !seen.insert(id) {
                    continue;
                }
                let Some(mut r) = tx.get_by_id(id)? else {
                    continue;
                };
                if r.book.last_success_at.is_none() {
                    continue;
                }
                if bookkeeping::on_inputs_changed(&mut r.book, cause.clone()) {
                    tx.put_book(id, &r.book, None)?;
                    marked += 1;
                }
                next.push(r);
            }
        }
    }
    Ok(marked)
}

/// Brings the store's record of each model's definition digest up to `current` (SPEC §5.1
/// rule 4): every synced object of a model whose digest changed has a changed input and
/// becomes a suspect (a failed one loses its backoff). Returns each model that changed with
/// the number of its objects this touched.
pub fn sync_definitions(
    store: &dyn Store,
    current: &HashMap<String, String>,
) -> Result<Vec<(String, usize)>, StoreError> {
    let known = store.definitions()?;
    let mut changed: Vec<(String, usize)> = current
        .iter()
        .filter(|(m, d)| known.get(*m) != Some(*d))
        .map(|(m, _)| (m.clone(), 0))
        .collect();
    if changed.is_empty() {
        return Ok(changed);
    }
    changed.sort();
    let mut tx = store.write()?;
    for (model, touched) in &mut changed {
        for id in tx.synced_ids(model)? {
            if let Some(mut o) = tx.get_by_id(id)?
                && bookkeeping::on_inputs_changed(&mut o.book, Cause::Definition)
            {
                tx.put_book(id, &o.book, None)?;
                *touched += 1;
            }
        }
        tx.put_definition(model, &current[model.as_str()])?;
    }
    tx.commit()?;
    Ok(changed)
}

/// Brings the store's record of each policed model's policy digest up to `current`: the
/// objects of a model whose policies were edited have them run again (SPEC §12). The store
/// keeps these beside the models' definition digests, as `policy:<Model>`.
pub fn sync_policies(
    store: &dyn Store,
    current: &HashMap<String, String>,
) -> Result<usize, StoreError> {
    let known = store.definitions()?;
    let key = |m: &str| format!("policy:{m}");
    let mut changed: Vec<&String> = current
        .iter()
        .filter(|(m, d)| known.get(&key(m)) != Some(*d))
        .map(|(m, _)| m)
        .collect();
    if changed.is_empty() {
        return Ok(0);
    }
    changed.sort();
    let mut touched = 0;
    let mut tx = store.write()?;
    for model in changed {
        for mut o in tx.list(Some(model))? {
            if bookkeeping::on_policies_changed(&mut o.book) {
                tx.put_book(o.id, &o.book, None)?;
                touched += 1;
            }
        }
        tx.put_definition(&key(model), &current[model.as_str()])?;
    }
    tx.commit()?;
    Ok(touched)
}

fn update(
    tx: &mut dyn WriteTx,
    id: i64,
    f: impl FnOnce(&mut Bookkeeping),
) -> Result<Option<ObjectRecord>, StoreError> {
    let Some(mut cur) = tx.get_by_id(id)? else {
        return Ok(None);
    };
    f(&mut cur.book);
    tx.put_book(id, &cur.book, None)?;
    Ok(Some(cur))
}
