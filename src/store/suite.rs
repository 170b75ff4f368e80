//! The store suite: every case is written once against the `Store` traits and run on both
//! stores, SQLite (a temporary file) and PostgreSQL (a fresh database per test on the server
//! at `STEPSYNC_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`, which
//! `scripts/test.sh` starts). `cargo test --lib store::suite` runs it; `store::suite::pg::`
//! one store's half.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Bookkeeping, ChangedState, Claim, Counts, DeadLetter, Edge, Lease, Millis, ObjectRecord,
    OutboxEntry, PageQuery, PostgresStore, ReadOps, Referrer, SqliteStore, Status, StepStatus,
    Store, StoreError, Triggers, WorkerInfo, WriteTx,
};
use crate::bookkeeping::{self, Cause, Drift};

/// Where one test's store lives; each `open` is another handle on it, as another process
/// would have.
trait Backend: Send + Sync {
    fn open(&self) -> Result<Box<dyn Store>, StoreError>;
    /// Marks the schema as written by a stepsync that knows version `v`.
    fn set_version(&self, v: i64);
}

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(SqliteStore::open(&self.path())?))
    }
    fn set_version(&self, v: i64) {
        let conn = rusqlite::Connection::open(self.path()).expect("open");
        conn.pragma_update(None, "user_version", v)
            .expect("user_version");
    }
}

/// A database of its own on the test server, dropped with this.
struct Pg {
    db: String,
}

/// The test server, without a database.
fn pg_server() -> String {
    std::env::var("STEPSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Runs `sql` on database `db` of the test server. On a thread of its own: the client
/// blocks on a runtime of its own, which a test inside a tokio runtime could not.
fn pg_admin(db: &str, sql: String) {
    if let Err(e) = try_pg_admin(db, sql.clone()) {
        panic!("{sql}: {e}");
    }
}

fn try_pg_admin(db: &str, sql: String) -> Result<(), ::postgres::Error> {
    let url = format!("{}/{db}", pg_server());
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} (scripts/test.sh starts it): {e}"));
        c.batch_execute(&sql)
    })
    .join()
    .expect("admin thread")
}

impl Pg {
    fn new() -> Pg {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let db = format!(
            "stepsync_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A locale's collation, as production databases have, rather than the server's
        // default (C on the project's machines): the store must sort by bytes anyway.
        let icu = format!(
            "CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
             LOCALE 'C.UTF-8'"
        );
        if let Err(e) = try_pg_admin("postgres", icu) {
            eprintln!("no ICU collation on the test server ({e}); {db} has the default one");
            pg_admin("postgres", format!("CREATE DATABASE {db}"));
        }
        Pg { db }
    }
    fn url(&self) -> String {
        format!("{}/{}", pg_server(), self.db)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        pg_admin(
            "postgres",
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
        );
    }
}

impl Backend for Pg {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(PostgresStore::open(&self.url())?))
    }
    fn set_version(&self, v: i64) {
        pg_admin(
            &self.db,
            format!("UPDATE stepsync_meta SET version = {v} WHERE id = 1"),
        );
    }
}

/// Each case once per store: `store::suite::sqlite::NAME` and `store::suite::pg::NAME`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(&super::Sqlite::new()); })*
        }
        mod pg {
            $(#[test] fn $case() { super::$case(&super::Pg::new()); })*
        }
    };
}

suite!(
    insert_update_and_rollback,
    records_round_trip_every_column,
    get_and_list_sort_by_model_then_key_bytewise,
    pages_filter_and_follow_the_cursor,
    counts_pending_and_suspect,
    with_work_waking_unpoliced_and_policy_errors,
    edges_referrers_pointing_at_and_via,
    owned_by_follows_the_owner,
    purge_removes_the_object_and_its_edges,
    outbox_put_fold_and_remove_by_seq,
    writes_note_watched_changes_in_the_outbox,
    watcher_and_feed_statuses,
    positions,
    dead_letters_count_and_newest_first,
    journal,
    definitions_and_sync_definitions,
    lease_compare_and_swap,
    two_contenders_for_the_lease_one_wins,
    change_marker_moves_when_another_handle_commits,
    reopening_keeps_data_and_refuses_a_newer_schema,
    a_second_writer_waits_for_the_first_to_commit,
    read_modify_write_in_a_transaction_loses_no_update,
    fresh_store_opened_by_many_at_once,
    calls_from_inside_a_tokio_runtime,
    changes_follow_visible_writes_in_revision_order,
    claims_are_exclusive_and_fence_outcomes_by_epoch,
    expired_claims_are_taken_over_and_renewal_keeps_them,
    workers_register_count_their_claims_and_retire,
    concurrent_claimers_split_the_objects_without_overlap,
    outcome_writers_lose_no_update_beside_the_one_writer,
    outcome_writers_commit_side_by_side_in_revision_order,
    many_bookkeeping_writes_in_one_transaction_land_as_written,
    a_snapshot_that_catches_up_holds_what_a_fresh_read_holds,
);

/// A pass's snapshot catches up on other handles' writes by reading only what was written
/// since ([`Store::changed_since`]): after writes of every kind — bookkeeping the events
/// stream does not show (a retry time), an owner, fields, feedback, an outcome writer's,
/// a purge, a purge and a new object of the same key, a new object — it holds exactly what
/// a fresh read holds, and only the objects written were read.
fn a_snapshot_that_catches_up_holds_what_a_fresh_read_holds(b: &dyn Backend) {
    let (store, other) = (b.open().unwrap(), b.open().unwrap());
    let ids: Vec<i64> = (0..8)
        .map(|i| create(&*store, "Site", &format!("s{i}"), json!({"n": i}), &[]))
        .collect();
    let schema = std::sync::Arc::new(crate::model::Schema::default());
    let snap = crate::snapshot::Snapshot::tracking(schema.clone(), &*store).unwrap();
    let held = |s: &crate::snapshot::Snapshot| {
        let mut all: Vec<ObjectRecord> = s.all().iter().map(|o| (**o).clone()).collect();
        all.sort_by_key(|o| o.id);
        all
    };
    let fresh = || {
        let mut all = store.list(None).unwrap();
        all.sort_by_key(|o| o.id);
        all
    };
    let none = snap.catch_up(&*store).unwrap();
    assert!(
        none.is_some_and(|r| r.is_empty()),
        "nothing written: still tracking, nothing replaced"
    );
    assert_eq!(held(&snap), fresh());
    let before = store.revision().unwrap();
    edit(&*other, ids[0], |bk| bk.next_retry_at = Some(Millis(5)));
    let mut tx = other.write().unwrap();
    tx.put_owner(ids[1], Some("Network/n1")).unwrap();
    tx.put_fields(ids[2], &map(json!({"n": 20})), &[]).unwrap();
    let book = tx.get_by_id(ids[3]).unwrap().unwrap().book;
    tx.put_book(ids[3], &book, Some(&map(json!({"ip": "10.0.0.3"}))))
        .unwrap();
    tx.purge(ids[4]).unwrap();
    tx.purge(ids[5]).unwrap();
    tx.commit().unwrap();
    let again = create(&*other, "Site", "s5", json!({"n": 55}), &[]);
    let new = create(&*other, "Site", "s9", json!({}), &[]);
    let mut tx = other.write_own().unwrap();
    let mut book = tx.get_by_id(ids[6]).unwrap().unwrap().book;
    synced(&mut book);
    tx.put_book(ids[6], &book, None).unwrap();
    let mut book = tx.get_by_id(ids[7]).unwrap().unwrap().book;
    book.failures = 3;
    tx.put_book(ids[7], &book, None).unwrap();
    tx.commit().unwrap();
    let changed = store.changed_since(before, 100).unwrap().unwrap();
    assert!(
        store.changed_since(before, 7).unwrap().is_none(),
        "more written than the limit"
    );
    assert!(store.changed_since(before, 8).unwrap().is_some());
    let mut read: Vec<i64> = changed.objects.iter().map(|o| o.id).collect();
    read.sort_unstable();
    assert_eq!(
        read,
        [ids[0], ids[1], ids[2], ids[3], ids[6], ids[7], again, new],
        "the objects written since, and no other"
    );
    assert_eq!(changed.purged.len(), 2);
    assert_eq!(changed.rev, store.revision().unwrap());
    let replaced = snap.catch_up(&*store).unwrap().unwrap();
    let count = |before: bool, after: bool| {
        replaced
            .iter()
            .filter(|r| r.before.is_some() == before && r.after.is_some() == after)
            .count()
    };
    // Six replaced, two purged, two new (s5 again among them).
    assert_eq!(
        (count(true, true), count(true, false), count(false, true)),
        (6, 2, 2)
    );
    assert_eq!(held(&snap), fresh());
    assert_eq!(snap.get("Site", "s5").unwrap().id, again);
    // What a pass walks without resyncs: the objects with work, no other.
    let mut active: Vec<i64> = snap.active().iter().map(|o| o.id).collect();
    active.sort_unstable();
    let want: Vec<i64> = fresh()
        .iter()
        .filter(|o| crate::bookkeeping::active(&o.book))
        .map(|o| o.id)
        .collect();
    assert!(!active.contains(&ids[6]), "synced by the outcome writer");
    assert_eq!(active, want);
    // A run's outcome recorded late — read before another process's later write that the
    // snapshot has caught up on, or of an object purged since — changes nothing; a
    // record as new as the held one replaces it, and one with other fields reshapes.
    let stale = snap.by_id(ids[2]).unwrap();
    let late = store.get_by_ids(&[ids[2]]).unwrap().pop().unwrap();
    let mut tx = other.write().unwrap();
    tx.put_fields(ids[2], &map(json!({"n": 21})), &[]).unwrap();
    tx.commit().unwrap();
    assert!(snap.catch_up(&*store).unwrap().is_some());
    assert!(!snap.take_reshaped());
    let mut old = late.clone();
    old.book.message = "a late outcome".into();
    snap.put(old);
    assert_eq!(snap.by_id(ids[2]).unwrap().fields, map(json!({"n": 21})));
    assert_ne!(stale.fields, snap.by_id(ids[2]).unwrap().fields);
    let purged = (*snap.get("Site", "s9").unwrap()).clone();
    let mut tx = other.write().unwrap();
    tx.purge(new).unwrap();
    tx.commit().unwrap();
    assert!(snap.catch_up(&*store).unwrap().is_some());
    snap.put(purged);
    assert!(
        snap.get("Site", "s9").is_none(),
        "a purged object stays gone"
    );
    assert!(!snap.take_reshaped());
    let mut current = store.get_by_ids(&[ids[1]]).unwrap().pop().unwrap();
    current.book.message = "recorded".into();
    snap.put(current.clone());
    assert_eq!(snap.by_id(ids[1]).unwrap().book.message, "recorded");
    assert!(!snap.take_reshaped(), "same fields");
    current.fields = map(json!({"n": 100}));
    snap.put(current);
    assert!(snap.take_reshaped(), "other fields");
    assert!(!snap.take_reshaped(), "taken");
    // Caught up: nothing more to read.
    let rev = store.revision().unwrap();
    assert!(snap.catch_up(&*store).unwrap().is_some());
    let now = store.changed_since(rev, 0).unwrap().unwrap();
    assert!(now.objects.is_empty() && now.purged.is_empty());
    // A snapshot that does not track cannot catch up.
    let plain = crate::snapshot::Snapshot::load(schema, &*store).unwrap();
    assert!(plain.catch_up(&*store).unwrap().is_none());
}

/// A recording of many outcomes in one transaction (PostgreSQL sends them as one
/// statement): every object's last write lands, feedback only where given, an object
/// written twice ends at its second write, and a read in between sees the first.
fn many_bookkeeping_writes_in_one_transaction_land_as_written(b: &dyn Backend) {
    let store = b.open().unwrap();
    let ids: Vec<i64> = (0..5)
        .map(|i| create(&*store, "Site", &format!("s{i}"), json!({}), &[]))
        .collect();
    let mut tx = store.write_own().unwrap();
    let books: Vec<Bookkeeping> = ids
        .iter()
        .map(|&id| tx.get_by_id(id).unwrap().unwrap().book)
        .collect();
    let mut want = Vec::new();
    for (i, (&id, mut book)) in ids.iter().zip(books).enumerate() {
        synced(&mut book);
        book.message = format!("run {i}");
        book.failures = u32::try_from(i).unwrap();
        book.next_retry_at = (i % 2 == 0).then_some(Millis(5000 + i64::try_from(i).unwrap()));
        let feedback = map(json!({"n": i}));
        tx.put_book(id, &book, (i % 2 == 1).then_some(&feedback))
            .unwrap();
        let stored = if i % 2 == 1 {
            feedback
        } else {
            Default::default()
        };
        want.push((book, stored));
    }
    // Written again after a read of its first write in the same transaction (then written
    // twice with no read between).
    let seen = tx.get_by_id(ids[2]).unwrap().unwrap();
    assert_eq!(seen.book, want[2].0, "a read after a write sees it");
    let mut again = seen.book;
    again.message = "run 2, again".into();
    again.status = Status::Error;
    tx.put_book(ids[2], &again, None).unwrap();
    want[2].0 = again.clone();
    // And twice with no read between: the second write is the one that stays.
    for n in 1..=2 {
        let mut twice = want[3].0.clone();
        twice.message = format!("run 3, write {n}");
        twice.failures += n;
        tx.put_book(ids[3], &twice, None).unwrap();
        if n == 2 {
            want[3].0 = twice;
        }
    }
    tx.commit().unwrap();
    for (id, (book, feedback)) in ids.iter().zip(&want) {
        let r = store.get_by_ids(&[*id]).unwrap().pop().unwrap();
        assert_eq!(&r.book, book, "{}", r.name());
        assert_eq!(&r.feedback, feedback, "{}", r.name());
    }
}

/// Increments from four handles at once, three through outcome writers (which on a shared
/// store run beside each other) and one through the one writer: an outcome writer's read
/// locks the row it writes, or some increments would be lost.
fn outcome_writers_lose_no_update_beside_the_one_writer(b: &dyn Backend) {
    let setup = b.open().unwrap();
    let id = create(&*setup, "Counter", "c", json!({"n": 0}), &[]);
    let rev0 = setup.revision().unwrap();
    let n = increments(b, id, |store, i| {
        if i < 3 {
            store.write_own().unwrap()
        } else {
            store.write().unwrap()
        }
    });
    // One revision a commit, the object at the last.
    assert_eq!(setup.revision().unwrap(), rev0 + n);
    let changes = setup.changes(rev0, 10).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].rev, rev0 + n);
}

/// On a shared store two outcome writers of disjoint objects are open at once, and the
/// one writer waits for both; their revisions follow the order they commit in, a purge's
/// tombstone included, so an events stream never reads past one still to come.
fn outcome_writers_commit_side_by_side_in_revision_order(b: &dyn Backend) {
    let (first, second, third) = (b.open().unwrap(), b.open().unwrap(), b.open().unwrap());
    let a = create(&*first, "Site", "a", json!({}), &[]);
    let bb = create(&*first, "Site", "b", json!({}), &[]);
    let gone = create(&*first, "Site", "gone", json!({}), &[]);
    let rev0 = first.revision().unwrap();
    // An outcome: `id` read and written in sync in `tx`.
    let sync = |tx: &mut dyn WriteTx, id: i64| {
        let mut book = tx.get_by_id(id).unwrap().unwrap().book;
        synced(&mut book);
        tx.put_book(id, &book, None).unwrap();
    };
    // The second writer's: b in sync, "gone" purged.
    let second_writes = || {
        let mut tx = second.write_own().unwrap();
        sync(&mut *tx, bb);
        tx.purge(gone).unwrap();
        tx.commit().unwrap();
    };
    let mut tx = first.write_own().unwrap();
    sync(&mut *tx, a);
    if first.shared() {
        let third = &*third;
        std::thread::scope(|s| {
            let (done, other) = std::sync::mpsc::channel();
            let second_writes = &second_writes;
            s.spawn(move || {
                second_writes();
                done.send(()).unwrap();
            });
            other
                .recv_timeout(Duration::from_secs(20))
                .expect("the second outcome writer committed while the first was open");
            let (began, waited) = std::sync::mpsc::channel();
            s.spawn(move || {
                let tx = third.write().unwrap();
                began.send(()).unwrap();
                tx.commit().unwrap();
            });
            std::thread::sleep(Duration::from_millis(400));
            assert!(
                waited.try_recv().is_err(),
                "the one writer began while an outcome writer was open"
            );
            tx.commit().unwrap();
            waited.recv_timeout(Duration::from_secs(20)).unwrap();
        });
    } else {
        // One writer at a time: the same writes one after the other.
        tx.commit().unwrap();
        second_writes();
    }
    let seen: Vec<(i64, String, bool)> = third
        .changes(rev0, 10)
        .unwrap()
        .into_iter()
        .map(|c| (c.rev, c.key, c.state.is_none()))
        .collect();
    // Within one transaction the order of its revisions says nothing; across them it is
    // the order they committed in.
    let (mut early, late) = if first.shared() {
        // b and the tombstone of "gone" committed first, a after.
        (seen[..2].to_vec(), seen[2..].to_vec())
    } else {
        (seen[1..].to_vec(), seen[..1].to_vec())
    };
    early.sort_by(|x, y| x.1.cmp(&y.1));
    let (second_revs, first_rev) = if first.shared() {
        ([rev0 + 1, rev0 + 2], rev0 + 3)
    } else {
        ([rev0 + 2, rev0 + 3], rev0 + 1)
    };
    assert_eq!(
        early
            .iter()
            .map(|(_, k, d)| (k.as_str(), *d))
            .collect::<Vec<_>>(),
        [("b", false), ("gone", true)],
        "{seen:?}"
    );
    let mut revs: Vec<i64> = early.iter().map(|(r, ..)| *r).collect();
    revs.sort_unstable();
    assert_eq!(revs, second_revs, "{seen:?}");
    assert_eq!(late, [(first_rev, "a".to_owned(), false)], "{seen:?}");
    assert_eq!(third.revision().unwrap(), rev0 + 3);
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn edge(field: &str, to_model: &str, to_field: &str, value: &str) -> Edge {
    Edge {
        field: field.into(),
        to_model: to_model.into(),
        to_field: to_field.into(),
        value: value.into(),
    }
}

/// Creates an object in a transaction of its own; its id.
fn create(store: &dyn Store, model: &str, key: &str, fields: Value, refs: &[Edge]) -> i64 {
    let mut tx = store.write().unwrap();
    let id = super::create(&mut *tx, model, key, &map(fields), refs, Millis(1000)).unwrap();
    tx.commit().unwrap();
    id
}

/// Changes an object's bookkeeping in a transaction of its own.
fn edit(store: &dyn Store, id: i64, f: impl FnOnce(&mut Bookkeeping)) {
    let mut tx = store.write().unwrap();
    let mut b = tx.get_by_id(id).unwrap().unwrap().book;
    f(&mut b);
    tx.put_book(id, &b, None).unwrap();
    tx.commit().unwrap();
}

/// In sync with its last run.
fn synced(b: &mut Bookkeeping) {
    b.status = Status::Ok;
    b.synced_generation = b.generation;
    b.last_success_at = Some(Millis(2000));
    b.attempted = true;
}

fn names(objs: &[ObjectRecord]) -> Vec<String> {
    objs.iter().map(ObjectRecord::name).collect()
}

fn lease(holder: &str, expires: i64) -> Lease {
    Lease {
        holder: holder.into(),
        pid: 4242,
        host: "h1".into(),
        since: Millis(1),
        expires: Millis(expires),
    }
}

fn insert_update_and_rollback(b: &dyn Backend) {
    let store = b.open().unwrap();
    let fields = map(json!({"name": "a"}));
    let mut tx = store.write().unwrap();
    let id = super::create(&mut *tx, "Site", "a", &fields, &[], Millis(1000)).unwrap();
    tx.commit().unwrap();
    let rec = store.get("Site", "a").unwrap().unwrap();
    assert_eq!(
        (rec.id, rec.book.generation, rec.book.status, rec.fields),
        (id, 1, Status::Pending, fields.clone())
    );

    // Dropped without commit: nothing changes, an insert included.
    let mut tx = store.write().unwrap();
    super::change(&mut *tx, id, &map(json!({"name": "b"})), &[], Millis(2000)).unwrap();
    super::create(&mut *tx, "Site", "gone", &Map::new(), &[], Millis(2000)).unwrap();
    // The transaction sees its own writes.
    assert_eq!(tx.get_by_id(id).unwrap().unwrap().book.generation, 2);
    assert!(tx.get("Site", "gone").unwrap().is_some());
    drop(tx);
    let rec = store.get("Site", "a").unwrap().unwrap();
    assert_eq!((rec.book.generation, rec.fields), (1, fields));
    assert_eq!(store.get("Site", "gone").unwrap(), None);
    assert_eq!(store.list(None).unwrap().len(), 1);

    let mut tx = store.write().unwrap();
    super::change(&mut *tx, id, &map(json!({"name": "b"})), &[], Millis(2000)).unwrap();
    tx.commit().unwrap();
    let rec = store.get("Site", "a").unwrap().unwrap();
    assert_eq!(
        (rec.book.generation, rec.book.updated, rec.fields),
        (2, Millis(2000), map(json!({"name": "b"})))
    );
    // The same key twice is refused.
    let mut tx = store.write().unwrap();
    let book = bookkeeping::created(Millis(1));
    assert!(tx.insert("Site", "a", &Map::new(), &[], &book).is_err());
}

/// Every bookkeeping column, the fields and feedback (key order kept) read back as written.
fn records_round_trip_every_column(b: &dyn Backend) {
    let store = b.open().unwrap();
    // Keys out of order, nested values, numbers of every kind, unicode and a NUL escaped
    // in a string: JSON text keeps them all.
    let fields = map(json!({
        "zeta": 1, "alpha": {"y": [1, 2.5, -3], "b": null}, "mid": "é\u{0}✓", "big": 9_007_199_254_740_993u64,
    }));
    let book = Bookkeeping {
        status: Status::Deferred,
        message: "waiting for the backend: 503".into(),
        generation: 7,
        synced_generation: 5,
        failures: 3,
        next_retry_at: Some(Millis(1_767_225_600_123)),
        deleted: true,
        created: Millis(11),
        updated: Millis(12),
        enacted: Some(Millis(13)),
        last_success_at: Some(Millis(14)),
        last_error_at: Some(Millis(15)),
        attempted: true,
        applied: Some("sha256:abc".into()),
        drift: Some(Drift {
            cause: Cause::Reference("Net/n1".into()),
            found: true,
        }),
        policed_generation: 6,
        policy_error: Some("policy p: boom".into()),
        policy_failures: 2,
        policy_retry_at: Some(Millis(16)),
    };
    let mut tx = store.write().unwrap();
    let id = tx.insert("Site", "a", &fields, &[], &book).unwrap();
    tx.put_owner(id, Some("Network/n1")).unwrap();
    tx.commit().unwrap();
    let want = ObjectRecord {
        id,
        model: "Site".into(),
        key: "a".into(),
        fields: fields.clone(),
        feedback: Map::new(),
        book: book.clone(),
        owner: Some("Network/n1".into()),
        touched: store.revision().unwrap(),
    };
    let got = store.get("Site", "a").unwrap().unwrap();
    assert_eq!(got, want);
    assert_eq!(
        got.fields.keys().collect::<Vec<_>>(),
        ["zeta", "alpha", "mid", "big"]
    );

    // Another bookkeeping, and the feedback; then a bookkeeping alone keeps the feedback.
    let book2 = Bookkeeping {
        status: Status::Ok,
        deleted: false,
        drift: Some(Drift {
            cause: Cause::Watch("Net/n1.mtu".into()),
            found: false,
        }),
        next_retry_at: None,
        policy_error: None,
        applied: None,
        ..book.clone()
    };
    let feedback = map(json!({"z": [true], "a": {"k": "v"}}));
    let mut tx = store.write().unwrap();
    tx.put_book(id, &book2, Some(&feedback)).unwrap();
    tx.commit().unwrap();
    let got = store.get("Site", "a").unwrap().unwrap();
    assert_eq!((&got.book, &got.feedback), (&book2, &feedback));
    assert_eq!(got.feedback.keys().collect::<Vec<_>>(), ["z", "a"]);
    let book3 = Bookkeeping {
        drift: Some(Drift {
            cause: Cause::Definition,
            found: false,
        }),
        ..bookkeeping::created(Millis(20))
    };
    let mut tx = store.write().unwrap();
    tx.put_book(id, &book3, None).unwrap();
    assert_eq!(tx.get_by_id(id).unwrap().unwrap().book, book3);
    tx.commit().unwrap();
    let got = store.get("Site", "a").unwrap().unwrap();
    assert_eq!((&got.book, &got.feedback), (&book3, &feedback));
}

fn get_and_list_sort_by_model_then_key_bytewise(b: &dyn Backend) {
    let store = b.open().unwrap();
    // A locale's collation would sort `B` with `b`, ignore the `-` and put `é` after `e`:
    // both stores sort by bytes.
    for key in ["é", "b", "a1", "B", "a-1", "z"] {
        create(&*store, "Site", key, json!({}), &[]);
    }
    for (model, key) in [("site", "a"), ("Net", "x"), ("Net", "X")] {
        create(&*store, model, key, json!({}), &[]);
    }
    let keys: Vec<String> = store
        .list(Some("Site"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["B", "a-1", "a1", "b", "z", "é"]);
    assert_eq!(
        names(&store.list(None).unwrap()),
        [
            "Net/X", "Net/x", "Site/B", "Site/a-1", "Site/a1", "Site/b", "Site/z", "Site/é",
            "site/a"
        ]
    );
    assert_eq!(store.list(Some("Nope")).unwrap(), vec![]);
    assert_eq!(store.get("Site", "Z").unwrap(), None);
    assert_eq!(store.get("site", "a").unwrap().unwrap().name(), "site/a");
}

/// Ported from the SQLite store's tests, with the prefix filter.
fn pages_filter_and_follow_the_cursor(b: &dyn Backend) {
    let store = b.open().unwrap();
    let mut tx = store.write().unwrap();
    for m in ["A", "B", "C"] {
        for i in 0..30 {
            let id = super::create(
                &mut *tx,
                m,
                &format!("k{i:02}"),
                &Map::new(),
                &[],
                Millis(1),
            )
            .unwrap();
            if i % 3 == 0 {
                let mut b = tx.get_by_id(id).unwrap().unwrap().book;
                b.status = Status::Error;
                tx.put_book(id, &b, None).unwrap();
            }
        }
    }
    tx.commit().unwrap();
    let keys = |q: PageQuery<'_>| -> Vec<String> { names(&store.page(&q).unwrap()) };
    // One model, one status, paged: every object once, in key order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = keys(PageQuery {
            model: Some("B"),
            status: Some(Status::Error),
            after: after.as_deref().map(|k| ("B", k)),
            limit: 4,
            ..PageQuery::default()
        });
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|n| n["B/".len()..].to_owned());
        seen.extend(page);
    }
    let want: Vec<String> = (0..30).step_by(3).map(|i| format!("B/k{i:02}")).collect();
    assert_eq!(seen, want);
    // A cursor of an earlier model starts the model at its first key; of a later one,
    // past its end.
    let first = |am: &'static str| {
        keys(PageQuery {
            model: Some("B"),
            after: Some((am, "k99")),
            limit: 1,
            ..PageQuery::default()
        })
    };
    assert_eq!(first("A"), ["B/k00"]);
    assert!(first("C").is_empty());
    // Without a model the cursor crosses from one model into the next.
    assert_eq!(
        keys(PageQuery {
            after: Some(("A", "k29")),
            limit: 2,
            ..PageQuery::default()
        }),
        ["B/k00", "B/k01"]
    );
    // Without a model, every object once across the models.
    let mut all = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = store
            .page(&PageQuery {
                after: after.as_ref().map(|(m, k)| (m.as_str(), k.as_str())),
                limit: 7,
                ..PageQuery::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|o| (o.model.clone(), o.key.clone()));
        all.extend(names(&page));
    }
    assert_eq!(all, names(&store.list(None).unwrap()));
    assert_eq!(all.len(), 90);
    // A key prefix, in one model and across them; with a status.
    let want: Vec<String> = (10..20).map(|i| format!("C/k{i}")).collect();
    assert_eq!(
        keys(PageQuery {
            model: Some("C"),
            prefix: Some("k1"),
            limit: 100,
            ..PageQuery::default()
        }),
        want
    );
    assert_eq!(
        keys(PageQuery {
            prefix: Some("k2"),
            status: Some(Status::Error),
            limit: 100,
            ..PageQuery::default()
        }),
        [
            "A/k21", "A/k24", "A/k27", "B/k21", "B/k24", "B/k27", "C/k21", "C/k24", "C/k27"
        ]
    );
    assert!(
        keys(PageQuery {
            prefix: Some("x"),
            limit: 100,
            ..PageQuery::default()
        })
        .is_empty()
    );
    assert_eq!(
        keys(PageQuery {
            status: Some(Status::Error),
            after: Some(("B", "k27")),
            limit: 2,
            ..PageQuery::default()
        }),
        ["C/k00", "C/k03"]
    );
}

/// Site/a pending (new), Site/b in sync, Site/c a suspect, Site/d failed, Net/x being deleted,
/// Net/y deferred; b's policies failed, b and c are policed. Their ids.
fn six_objects(store: &dyn Store) -> [i64; 6] {
    let ids = [
        ("Site", "a"),
        ("Site", "b"),
        ("Site", "c"),
        ("Site", "d"),
        ("Net", "x"),
        ("Net", "y"),
    ]
    .map(|(m, k)| create(store, m, k, json!({}), &[]));
    edit(store, ids[1], |b| {
        synced(b);
        b.policed_generation = b.generation;
        b.policy_error = Some("boom".into());
        b.policy_retry_at = Some(Millis(5000));
    });
    edit(store, ids[2], |b| {
        synced(b);
        b.policed_generation = b.generation;
        b.drift = Some(Drift {
            cause: Cause::Definition,
            found: false,
        });
    });
    edit(store, ids[3], |b| {
        b.status = Status::Error;
        b.failures = 1;
        b.next_retry_at = Some(Millis(9000));
    });
    edit(store, ids[4], |b| {
        synced(b);
        b.deleted = true;
        b.status = Status::Deleting;
    });
    edit(store, ids[5], |b| b.status = Status::Deferred);
    ids
}

fn counts_pending_and_suspect(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.counts().unwrap(), Counts::default());
    assert_eq!(store.counts_by_model().unwrap(), vec![]);
    six_objects(&*store);
    // What the state machine says of each: counted, not decided, by the store.
    let all = store.list(None).unwrap();
    let pending = all
        .iter()
        .filter(|o| bookkeeping::work(&o.book).is_some())
        .count();
    let suspect = all
        .iter()
        .filter(|o| bookkeeping::suspect(&o.book).is_some())
        .count();
    assert_eq!((pending, suspect), (4, 1));
    assert_eq!(
        store.counts().unwrap(),
        Counts {
            by_status: vec![
                (Status::Pending, 1),
                (Status::Ok, 2),
                (Status::Error, 1),
                (Status::Deferred, 1),
                (Status::Deleting, 1),
            ],
            pending,
            suspect,
        }
    );
    assert_eq!(
        store.counts_by_model().unwrap(),
        [("Net".to_owned(), 2), ("Site".to_owned(), 4)]
    );
    let mut by = store.counts_by_model_status().unwrap();
    // Models in order; within one, no order is promised.
    assert_eq!(
        by.iter().map(|(m, ..)| m.as_str()).collect::<Vec<_>>(),
        ["Net", "Net", "Site", "Site", "Site"]
    );
    by.sort_by_key(|(m, s, _)| (m.clone(), s.as_str()));
    assert_eq!(
        by,
        [
            ("Net".to_owned(), Status::Deferred, 1),
            ("Net".to_owned(), Status::Deleting, 1),
            ("Site".to_owned(), Status::Error, 1),
            ("Site".to_owned(), Status::Ok, 2),
            ("Site".to_owned(), Status::Pending, 1),
        ]
    );
}

fn with_work_waking_unpoliced_and_policy_errors(b: &dyn Backend) {
    let store = b.open().unwrap();
    let [a, b_, c, d, x, y] = six_objects(&*store);
    let ids = |objs: Vec<ObjectRecord>| objs.into_iter().map(|o| o.id).collect::<Vec<_>>();
    // Work or a suspicion, by id.
    assert_eq!(ids(store.with_work("Site").unwrap()), [a, c, d]);
    assert_eq!(ids(store.with_work("Net").unwrap()), [x, y]);
    assert_eq!(ids(store.with_work("Nope").unwrap()), Vec::<i64>::new());
    // Failed or deferred, or their policies failed.
    let mut waking = ids(store.waking().unwrap());
    waking.sort_unstable();
    assert_eq!(waking, [b_, d, y]);
    assert_eq!(store.policy_errors().unwrap(), 1);
    // Live and behind their policies, by id.
    assert_eq!(ids(store.unpoliced("Site").unwrap()), [a, d]);
    assert_eq!(ids(store.unpoliced("Net").unwrap()), [y]);
    // In sync, the suspect leaves `with_work`; a policed failure leaves `waking`.
    edit(&*store, c, |b| b.drift = None);
    edit(&*store, b_, bookkeeping::on_policed);
    edit(&*store, a, |b| {
        synced(b);
        b.policed_generation = b.generation;
    });
    assert_eq!(ids(store.with_work("Site").unwrap()), [d]);
    let mut waking = ids(store.waking().unwrap());
    waking.sort_unstable();
    assert_eq!(waking, [d, y]);
    assert_eq!(store.policy_errors().unwrap(), 0);
    assert_eq!(ids(store.unpoliced("Site").unwrap()), [d]);
    // Reads in a transaction see its own writes.
    let mut tx = store.write().unwrap();
    let mut book = tx.get_by_id(d).unwrap().unwrap().book;
    synced(&mut book);
    book.policed_generation = book.generation;
    tx.put_book(d, &book, None).unwrap();
    assert_eq!(ids(tx.with_work("Site").unwrap()), Vec::<i64>::new());
    assert_eq!(ids(tx.unpoliced("Site").unwrap()), Vec::<i64>::new());
    assert_eq!(ids(tx.waking().unwrap()), [y]);
}

fn edges_referrers_pointing_at_and_via(b: &dyn Backend) {
    let store = b.open().unwrap();
    let net = |v: &str| edge("net", "Net", "name", v);
    create(&*store, "Net", "n1", json!({"name": "n1"}), &[]);
    let s1 = create(&*store, "Site", "s1", json!({"net": "n1"}), &[net("n1")]);
    let s2 = create(
        &*store,
        "Site",
        "s2",
        json!({"net": "n1", "alt": "n1"}),
        &[net("n1"), edge("alt", "Net", "name", "n1")],
    );
    let s3 = create(&*store, "Site", "s3", json!({"net": "n2"}), &[net("n2")]);
    let p1 = create(
        &*store,
        "Port",
        "p1",
        json!({"site": "s1"}),
        &[edge("site", "Site", "key", "s1")],
    );
    let r = |id: i64, key: &str, field: &str, value: &str| Referrer {
        id,
        model: "Site".into(),
        key: key.into(),
        field: field.into(),
        to_field: "name".into(),
        value: value.into(),
    };
    let mut refs = store.referrers("Net").unwrap();
    assert_eq!(
        refs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["s1", "s2", "s2", "s3"]
    );
    // Within one object, no order is promised.
    refs.sort_by(|a, b| (&a.key, &a.field).cmp(&(&b.key, &b.field)));
    assert_eq!(
        refs,
        [
            r(s1, "s1", "net", "n1"),
            r(s2, "s2", "alt", "n1"),
            r(s2, "s2", "net", "n1"),
            r(s3, "s3", "net", "n2"),
        ]
    );
    assert_eq!(store.referrers("Port").unwrap(), vec![]);
    let sorted = |mut v: Vec<i64>| {
        v.sort_unstable();
        v
    };
    // Each object once, however many of its edges match.
    assert_eq!(
        sorted(store.pointing_at("Net", "name", "n1").unwrap()),
        [s1, s2]
    );
    assert_eq!(
        store.pointing_at("Net", "other", "n1").unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(store.pointing_at("Site", "key", "s1").unwrap(), [p1]);
    assert_eq!(
        store.pointing_via("Net", "name", "n1", "alt").unwrap(),
        [s2]
    );
    assert_eq!(
        sorted(store.pointing_via("Net", "name", "n1", "net").unwrap()),
        [s1, s2]
    );
    assert_eq!(
        store.pointing_via("Net", "name", "n2", "alt").unwrap(),
        Vec::<i64>::new()
    );
    // New fields replace the edges.
    let mut tx = store.write().unwrap();
    tx.put_fields(s2, &map(json!({"net": "n2"})), &[net("n2")])
        .unwrap();
    assert_eq!(tx.pointing_at("Net", "name", "n1").unwrap(), [s1]);
    tx.commit().unwrap();
    assert_eq!(store.pointing_at("Net", "name", "n1").unwrap(), [s1]);
    assert_eq!(
        sorted(store.pointing_at("Net", "name", "n2").unwrap()),
        [s2, s3]
    );
    assert_eq!(
        store.pointing_via("Net", "name", "n1", "alt").unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        store.get("Site", "s2").unwrap().unwrap().fields,
        map(json!({"net": "n2"}))
    );
}

fn owned_by_follows_the_owner(b: &dyn Backend) {
    let store = b.open().unwrap();
    let ids = [("Site", "b"), ("Port", "a"), ("Site", "a"), ("Site", "c")]
        .map(|(m, k)| create(&*store, m, k, json!({}), &[]));
    let mut tx = store.write().unwrap();
    for id in &ids[..3] {
        tx.put_owner(*id, Some("Network/n1")).unwrap();
    }
    tx.put_owner(ids[3], Some("Network/n2")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        names(&store.owned_by("Network/n1").unwrap()),
        ["Port/a", "Site/a", "Site/b"]
    );
    assert_eq!(names(&store.owned_by("Network/n2").unwrap()), ["Site/c"]);
    assert_eq!(store.owned_by("Network").unwrap(), vec![]);
    let mut tx = store.write().unwrap();
    tx.put_owner(ids[2], None).unwrap();
    assert_eq!(
        names(&tx.owned_by("Network/n1").unwrap()),
        ["Port/a", "Site/b"]
    );
    tx.commit().unwrap();
    assert_eq!(store.get("Site", "a").unwrap().unwrap().owner, None);
    assert_eq!(
        names(&store.owned_by("Network/n1").unwrap()),
        ["Port/a", "Site/b"]
    );
}

fn purge_removes_the_object_and_its_edges(b: &dyn Backend) {
    let store = b.open().unwrap();
    let s1 = create(
        &*store,
        "Site",
        "s1",
        json!({"net": "n1"}),
        &[edge("net", "Net", "name", "n1")],
    );
    let s2 = create(
        &*store,
        "Site",
        "s2",
        json!({"net": "n1"}),
        &[edge("net", "Net", "name", "n1")],
    );
    let mut tx = store.write().unwrap();
    tx.purge(s1).unwrap();
    assert_eq!(tx.get_by_id(s1).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(store.get("Site", "s1").unwrap(), None);
    assert_eq!(store.pointing_at("Net", "name", "n1").unwrap(), [s2]);
    assert_eq!(store.referrers("Net").unwrap().len(), 1);
    // The key is free again, under a new id.
    let again = create(&*store, "Site", "s1", json!({}), &[]);
    assert_ne!(again, s1);
    assert_eq!(store.list(None).unwrap().len(), 2);
}

fn entry(watcher: &str, obj: i64, seq: i64) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        watcher: watcher.into(),
        obj,
        model: "Site".into(),
        key: "a".into(),
        fields: vec!["zeta".into(), "alpha".into()],
        old: map(json!({"zeta": 1, "alpha": [1]})),
        new: map(json!({"zeta": 2, "alpha": {"x": null}})),
        seq,
        at_us: 1_767_225_600_000_123,
    }
}

fn outbox_put_fold_and_remove_by_seq(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.outbox().unwrap(), vec![]);
    let mut tx = store.write().unwrap();
    assert_eq!(tx.outbox_get("w1", 7).unwrap(), None);
    tx.outbox_put(&entry("w2", 7, 1)).unwrap();
    tx.outbox_put(&entry("w1", 7, 1)).unwrap();
    tx.outbox_put(&entry("w1", 8, 1)).unwrap();
    let first = tx.outbox_get("w1", 7).unwrap().unwrap();
    assert_eq!(
        first,
        OutboxEntry {
            id: first.id,
            ..entry("w1", 7, 1)
        }
    );
    // A fold replaces the entry of the same watcher and object, keeping its id.
    let mut folded = entry("w1", 7, 2);
    folded.id = first.id;
    folded.fields.push("mid".into());
    folded.new = map(json!({"mid": "m", "zeta": 3}));
    folded.at_us += 1;
    tx.outbox_put(&folded).unwrap();
    assert_eq!(tx.outbox_get("w1", 7).unwrap().unwrap(), folded);
    tx.commit().unwrap();
    // Oldest first.
    let all = store.outbox().unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.watcher.as_str(), e.obj, e.seq))
            .collect::<Vec<_>>(),
        [("w2", 7, 1), ("w1", 7, 2), ("w1", 8, 1)]
    );
    assert_eq!(all[1], folded);
    assert!(all[0].id < all[1].id && all[1].id < all[2].id);
    // A run that saw an older fold removes nothing.
    let mut tx = store.write().unwrap();
    assert!(!tx.outbox_remove(first.id, 1).unwrap());
    assert!(tx.outbox_get("w1", 7).unwrap().is_some());
    assert!(tx.outbox_remove(first.id, 2).unwrap());
    assert_eq!(tx.outbox_get("w1", 7).unwrap(), None);
    assert!(!tx.outbox_remove(first.id, 2).unwrap());
    tx.commit().unwrap();
    assert_eq!(store.outbox().unwrap().len(), 2);
}

/// The triggers set on the store reach every later transaction, and `create`/`change`
/// write and fold outbox entries through them.
fn writes_note_watched_changes_in_the_outbox(b: &dyn Backend) {
    let store = b.open().unwrap();
    let mut t = Triggers::default();
    t.add("Site", "w", Some(&["name".to_owned()]));
    store.set_triggers(Arc::new(t));
    let id = create(&*store, "Site", "a", json!({"name": "x", "other": 1}), &[]);
    create(&*store, "Net", "n", json!({"name": "x"}), &[]);
    let got = store.outbox().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].watcher.as_str(),
            got[0].obj,
            got[0].seq,
            &got[0].fields
        ),
        ("w", id, 1, &vec!["name".to_owned()])
    );
    // An unwatched field changes nothing; a watched one folds.
    let mut tx = store.write().unwrap();
    super::change(
        &mut *tx,
        id,
        &map(json!({"name": "x", "other": 2})),
        &[],
        Millis(3),
    )
    .unwrap();
    super::change(
        &mut *tx,
        id,
        &map(json!({"name": "y", "other": 2})),
        &[],
        Millis(4),
    )
    .unwrap();
    tx.commit().unwrap();
    let got = store.outbox().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, 2);
    assert_eq!(got[0].old, map(json!({})));
    assert_eq!(got[0].new, map(json!({"name": "y", "other": 2})));
}

fn status(name: &str, runs: i64) -> StepStatus {
    StepStatus {
        name: name.into(),
        runs,
        failures: runs / 2,
        last_run: Some(Millis(runs * 10)),
        last_ok: None,
        last_error_at: Some(Millis(7)),
        message: format!("run {runs}"),
    }
}

fn watcher_and_feed_statuses(b: &dyn Backend) {
    let store = b.open().unwrap();
    let mut tx = store.write().unwrap();
    assert_eq!(tx.watcher_status("b").unwrap(), None);
    for (n, runs) in [("b", 1), ("A", 2), ("a", 3)] {
        tx.put_watcher_status(&status(n, runs)).unwrap();
    }
    tx.put_feed_status(&status("pull/p", 4)).unwrap();
    tx.put_feed_status(&status("event/e", 5)).unwrap();
    // Replaced whole, a missing time included.
    let mut b2 = status("b", 9);
    b2.last_run = None;
    b2.last_ok = Some(Millis(99));
    tx.put_watcher_status(&b2).unwrap();
    assert_eq!(tx.watcher_status("b").unwrap(), Some(b2.clone()));
    assert_eq!(tx.feed_status("pull/p").unwrap(), Some(status("pull/p", 4)));
    assert_eq!(tx.feed_status("b").unwrap(), None);
    assert_eq!(tx.watcher_status("pull/p").unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(
        store.watcher_statuses().unwrap(),
        [status("A", 2), status("a", 3), b2]
    );
    assert_eq!(
        store.feed_statuses().unwrap(),
        [status("event/e", 5), status("pull/p", 4)]
    );
}

fn positions(b: &dyn Backend) {
    let store = b.open().unwrap();
    let mut tx = store.write().unwrap();
    assert_eq!(tx.position("event/e", "t/0").unwrap(), None);
    tx.put_position("event/e", "t/0", 5).unwrap();
    tx.put_position("event/e", "t/1", 1).unwrap();
    tx.put_position("event/f", "t/0", i64::MAX).unwrap();
    tx.put_position("event/e", "t/0", 7).unwrap();
    tx.commit().unwrap();
    let tx = store.write().unwrap();
    assert_eq!(tx.position("event/e", "t/0").unwrap(), Some(7));
    assert_eq!(tx.position("event/e", "t/1").unwrap(), Some(1));
    assert_eq!(tx.position("event/f", "t/0").unwrap(), Some(i64::MAX));
    assert_eq!(tx.position("event/f", "t/1").unwrap(), None);
}

fn dead_letter(pos: i64, message: &str) -> DeadLetter {
    DeadLetter {
        id: 0,
        step: "event/e".into(),
        part: "t/0".into(),
        pos,
        at: Millis(pos * 100),
        message: message.into(),
        error: format!("not JSON at {pos}"),
    }
}

fn dead_letters_count_and_newest_first(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.dead_letters(10).unwrap(), (0, vec![]));
    let mut tx = store.write().unwrap();
    tx.put_dead_letter(&dead_letter(3, "{oops")).unwrap();
    tx.put_dead_letter(&dead_letter(1, "é ✓")).unwrap();
    tx.put_dead_letter(&dead_letter(2, "x")).unwrap();
    // The same message again (a redelivery) is kept once, as first written.
    tx.put_dead_letter(&dead_letter(3, "again")).unwrap();
    tx.commit().unwrap();
    let (n, newest) = store.dead_letters(2).unwrap();
    assert_eq!(n, 3);
    let strip = |d: &DeadLetter| DeadLetter { id: 0, ..d.clone() };
    assert_eq!(
        newest.iter().map(strip).collect::<Vec<_>>(),
        [dead_letter(2, "x"), dead_letter(1, "é ✓")]
    );
    assert!(newest[0].id > newest[1].id);
    let (n, all) = store.dead_letters(100).unwrap();
    assert_eq!((n, all.len()), (3, 3));
    assert_eq!(strip(&all[2]), dead_letter(3, "{oops"));
    assert_eq!(store.dead_letters(0).unwrap(), (3, vec![]));
}

/// Each sys dir's journal is its own: another owner's entries are neither listed nor
/// cleared.
fn journal(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.journaled("").unwrap(), vec![]);
    let j = |id: i64, key: &str| (id, "Site".to_owned(), key.to_owned());
    let mut tx = store.write().unwrap();
    tx.journal("", &[j(3, "c"), j(1, "a")]).unwrap();
    tx.journal("", &[j(1, "a"), j(2, "b")]).unwrap();
    tx.journal("h2:/sys", &[j(1, "a")]).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        store.journaled("").unwrap(),
        [j(1, "a"), j(2, "b"), j(3, "c")]
    );
    assert_eq!(store.journaled("h2:/sys").unwrap(), [j(1, "a")]);
    let mut tx = store.write().unwrap();
    tx.clear_journal("").unwrap();
    drop(tx);
    assert_eq!(store.journaled("").unwrap().len(), 3);
    let mut tx = store.write().unwrap();
    tx.clear_journal("").unwrap();
    tx.commit().unwrap();
    assert_eq!(store.journaled("").unwrap(), vec![]);
    assert_eq!(store.journaled("h2:/sys").unwrap(), [j(1, "a")]);
}

fn definitions_and_sync_definitions(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.definitions().unwrap(), HashMap::new());
    let synced_id = create(&*store, "Site", "a", json!({}), &[]);
    edit(&*store, synced_id, synced);
    create(&*store, "Site", "new", json!({}), &[]);
    let digests = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(m, d)| ((*m).to_owned(), (*d).to_owned()))
            .collect()
    };
    let mut tx = store.write().unwrap();
    tx.put_definition("Site", "d1").unwrap();
    tx.put_definition("Net", "n1").unwrap();
    tx.put_definition("Site", "d2").unwrap();
    assert_eq!(tx.synced_ids("Site").unwrap(), [synced_id]);
    tx.commit().unwrap();
    assert_eq!(
        store.definitions().unwrap(),
        digests(&[("Site", "d2"), ("Net", "n1")])
    );
    // Unchanged digests touch nothing; a changed one makes the synced object a suspect.
    let none = super::sync_definitions(&*store, &digests(&[("Site", "d2")])).unwrap();
    assert_eq!(none, vec![]);
    assert_eq!(store.counts().unwrap().suspect, 0);
    let changed = super::sync_definitions(&*store, &digests(&[("Site", "d3")])).unwrap();
    assert_eq!(changed, [("Site".to_owned(), 1)]);
    assert_eq!(store.counts().unwrap().suspect, 1);
    assert_eq!(store.definitions().unwrap()["Site"], "d3");
    let rec = store.get("Site", "a").unwrap().unwrap();
    assert_eq!(
        rec.book.drift,
        Some(Drift {
            cause: Cause::Definition,
            found: false
        })
    );
    assert_eq!(
        names(&store.with_work("Site").unwrap()),
        ["Site/a", "Site/new"]
    );
}

fn lease_compare_and_swap(b: &dyn Backend) {
    let store = b.open().unwrap();
    let l1 = lease("h1-1-1", 100);
    assert_eq!(store.lease().unwrap(), None);
    // Releasing a lease nobody holds succeeds; expecting one that is not there fails.
    assert!(store.swap_lease(None, None).unwrap());
    assert!(!store.swap_lease(Some(&l1), Some(&l1)).unwrap());
    assert!(!store.swap_lease(Some(&l1), None).unwrap());
    assert_eq!(store.lease().unwrap(), None);
    assert!(store.swap_lease(None, Some(&l1)).unwrap());
    assert_eq!(store.lease().unwrap(), Some(l1.clone()));
    // Held: a taker that expects none loses, and so does one that expects another lease,
    // even one that differs in a single column.
    let l2 = lease("h2-2-2", 500);
    assert!(!store.swap_lease(None, Some(&l2)).unwrap());
    assert!(!store.swap_lease(None, None).unwrap());
    for stale in [
        Lease {
            expires: Millis(99),
            ..l1.clone()
        },
        Lease {
            pid: 1,
            ..l1.clone()
        },
        Lease {
            host: "h2".into(),
            ..l1.clone()
        },
        Lease {
            since: Millis(2),
            ..l1.clone()
        },
        Lease {
            holder: "h1-1-2".into(),
            ..l1.clone()
        },
    ] {
        assert!(!store.swap_lease(Some(&stale), Some(&l2)).unwrap());
        assert!(!store.swap_lease(Some(&stale), None).unwrap());
    }
    assert_eq!(store.lease().unwrap(), Some(l1.clone()));
    // Renewed, taken over, released.
    let renewed = lease("h1-1-1", 200);
    assert!(store.swap_lease(Some(&l1), Some(&renewed)).unwrap());
    assert!(!store.swap_lease(Some(&l1), Some(&l2)).unwrap());
    assert!(store.swap_lease(Some(&renewed), Some(&l2)).unwrap());
    // Another handle (another process) sees it.
    assert_eq!(b.open().unwrap().lease().unwrap(), Some(l2.clone()));
    assert!(store.swap_lease(Some(&l2), None).unwrap());
    assert_eq!(store.lease().unwrap(), None);
}

fn two_contenders_for_the_lease_one_wins(b: &dyn Backend) {
    let stores: Vec<Box<dyn Store>> = (0..2).map(|_| b.open().unwrap()).collect();
    let mut current: Option<Lease> = None;
    for round in 0..10 {
        let start = Barrier::new(2);
        let results: Vec<(Lease, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let (start, current) = (&start, current.clone());
                    s.spawn(move || {
                        let mine = lease(&format!("runner{i}"), round);
                        start.wait();
                        let won = store.swap_lease(current.as_ref(), Some(&mine)).unwrap();
                        (mine, won)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&Lease> = results.iter().filter(|r| r.1).map(|r| &r.0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(stores[0].lease().unwrap().as_ref(), Some(winners[0]));
        // Odd rounds take over the winner's lease, even ones start from none.
        current = if round % 2 == 0 {
            Some(winners[0].clone())
        } else {
            assert!(stores[1].swap_lease(Some(winners[0]), None).unwrap());
            None
        };
    }
}

fn change_marker_moves_when_another_handle_commits(b: &dyn Backend) {
    let a = b.open().unwrap();
    let other = b.open().unwrap();
    let m0 = a.change_marker().unwrap();
    // Its own commits leave a handle's marker where it was (SQLite's data_version).
    create(&*a, "Site", "a", json!({}), &[]);
    assert!(a.swap_lease(None, Some(&lease("a", 1))).unwrap());
    assert_eq!(a.change_marker().unwrap(), m0);
    // Another's rolled-back transaction moves nothing; its commit does.
    let mut tx = other.write().unwrap();
    super::create(&mut *tx, "Site", "b", &Map::new(), &[], Millis(1)).unwrap();
    drop(tx);
    assert_eq!(a.change_marker().unwrap(), m0);
    create(&*other, "Site", "b", json!({}), &[]);
    let m1 = a.change_marker().unwrap();
    assert_ne!(m1, m0);
    assert_eq!(a.change_marker().unwrap(), m1);
    // So does another's lease.
    assert!(
        other
            .swap_lease(Some(&lease("a", 1)), Some(&lease("b", 2)))
            .unwrap()
    );
    let m2 = a.change_marker().unwrap();
    assert_ne!(m2, m1);
    // And a write of each kind through a transaction.
    let mut tx = other.write().unwrap();
    tx.put_position("event/e", "p", 1).unwrap();
    tx.commit().unwrap();
    assert_ne!(a.change_marker().unwrap(), m2);
}

/// Ported from the SQLite store's tests.
fn reopening_keeps_data_and_refuses_a_newer_schema(b: &dyn Backend) {
    {
        let store = b.open().unwrap();
        create(&*store, "Site", "a", json!({"k": [1]}), &[]);
        let mut tx = store.write().unwrap();
        tx.put_definition("Site", "d").unwrap();
        tx.commit().unwrap();
    }
    let store = b.open().unwrap();
    assert_eq!(names(&store.list(None).unwrap()), ["Site/a"]);
    assert_eq!(store.definitions().unwrap()["Site"], "d");
    assert_eq!(
        store.get("Site", "a").unwrap().unwrap().fields,
        map(json!({"k": [1]}))
    );
    drop(store);
    b.set_version(99);
    let err = b.open().err().expect("a newer schema is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("schema version 99 was written by a newer stepsync"),
        "{msg}"
    );
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

/// SPEC §5.5: one writer at a time. A second write transaction, from another handle, starts
/// only once the first committed, and then sees what it wrote.
fn a_second_writer_waits_for_the_first_to_commit(b: &dyn Backend) {
    let first = b.open().unwrap();
    let second = b.open().unwrap();
    let mut tx = first.write().unwrap();
    super::create(&mut *tx, "Site", "a", &Map::new(), &[], Millis(1)).unwrap();
    let (began, waited) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let tx = second.write().unwrap();
            let seen = tx.get("Site", "a").unwrap().map(|o| o.name());
            began.send(seen).unwrap();
            tx.commit().unwrap();
        });
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            waited.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Empty),
            "the second writer began while the first was open"
        );
        tx.commit().unwrap();
        let seen = waited.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(seen.as_deref(), Some("Site/a"));
    });
}

/// Counter increments read and written back in transactions from four handles at once:
/// without one writer at a time some would be lost.
fn read_modify_write_in_a_transaction_loses_no_update(b: &dyn Backend) {
    let setup = b.open().unwrap();
    let id = create(&*setup, "Counter", "c", json!({"n": 0}), &[]);
    increments(b, id, |store, _| store.write().unwrap());
}

/// Increments of counter `id` from four handles at once, each read and written back in a
/// transaction `begin(handle, thread)` starts: checks none was lost, returns how many.
fn increments(
    b: &dyn Backend,
    id: i64,
    begin: impl for<'s> Fn(&'s dyn Store, usize) -> Box<dyn WriteTx + 's> + Sync,
) -> i64 {
    const THREADS: i64 = 4;
    const EACH: i64 = 15;
    let stores: Vec<Box<dyn Store>> = (0..THREADS).map(|_| b.open().unwrap()).collect();
    let start = Barrier::new(stores.len());
    std::thread::scope(|s| {
        for (i, store) in stores.iter().enumerate() {
            let (start, begin) = (&start, &begin);
            s.spawn(move || {
                start.wait();
                for _ in 0..EACH {
                    let mut tx = begin(&**store, i);
                    let n = tx.get_by_id(id).unwrap().unwrap().fields["n"]
                        .as_i64()
                        .unwrap();
                    // Widen the window between the read and the write.
                    std::thread::sleep(Duration::from_millis(1));
                    tx.put_fields(id, &map(json!({"n": n + 1})), &[]).unwrap();
                    tx.commit().unwrap();
                }
            });
        }
    });
    let n = stores[0].get_by_ids(&[id]).unwrap()[0].fields["n"].clone();
    assert_eq!(n, json!(THREADS * EACH));
    THREADS * EACH
}

/// `threads` handles opening `b`'s store at once, each then reading and writing: the
/// errors they met.
fn open_at_once(b: &dyn Backend, threads: usize) -> Vec<String> {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let start = &start;
                s.spawn(move || -> Result<(), StoreError> {
                    start.wait();
                    let store = b.open()?;
                    store.counts()?;
                    let mut tx = store.write()?;
                    let book = bookkeeping::created(Millis(1));
                    tx.insert("Site", &format!("s{i}"), &Map::new(), &[], &book)?;
                    tx.commit()?;
                    store.list(None)?;
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err().map(|e| e.to_string()))
            .collect()
    })
}

/// Handles opening a fresh store at once all migrate it (taking turns), then read and
/// write.
fn fresh_store_opened_by_many_at_once(b: &dyn Backend) {
    let failures = open_at_once(b, 8);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(b.open().unwrap().list(None).unwrap().len(), 8);
}

/// SPEC §5.5: no command ever shows "database is locked". Many connections opening one
/// fresh SQLite file at once race to create it, switch it to WAL and migrate it; the race
/// is SQLite's own, so it is run many times.
#[test]
fn sqlite_many_openers_of_a_fresh_store_at_once_never_see_a_lock() {
    let mut failures = Vec::new();
    for _ in 0..20 {
        failures.extend(open_at_once(&Sqlite::new(), 16));
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// The engine calls the store from async tasks (the daemon's `change_marker`, the API's
/// handlers): opening and every kind of call work on a multi-thread runtime's workers and
/// in `block_on` itself.
fn calls_from_inside_a_tokio_runtime(b: &dyn Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::from(b.open().unwrap());
        let s = store.clone();
        let listed = tokio::spawn(async move {
            let mut tx = s.write().unwrap();
            super::create(&mut *tx, "Site", "a", &Map::new(), &[], Millis(1)).unwrap();
            tx.commit().unwrap();
            s.change_marker().unwrap();
            s.counts().unwrap();
            assert!(s.swap_lease(None, Some(&lease("t", 1))).unwrap());
            names(&s.list(None).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(listed, ["Site/a"]);
        // On the runtime's own thread, and a handle opened there.
        let other = b.open().unwrap();
        assert!(other.get("Site", "a").unwrap().is_some());
        let mut tx = other.write().unwrap();
        super::create(&mut *tx, "Site", "b", &Map::new(), &[], Millis(1)).unwrap();
        tx.commit().unwrap();
        drop(other);
        assert_eq!(store.list(None).unwrap().len(), 2);
        assert_eq!(store.lease().unwrap(), Some(lease("t", 1)));
    });
}

/// What only the PostgreSQL store has to get right.
mod pg_only {
    use super::*;

    fn open(b: &Pg) -> PostgresStore {
        PostgresStore::open(&b.url()).unwrap()
    }

    /// Nothing listens on port 1: the connection is refused at once.
    #[test]
    fn a_password_never_reaches_a_message() {
        for url in [
            "postgres://sync:hunter2@127.0.0.1:1/x",
            "postgresql://sync@127.0.0.1:1/x?connect_timeout=5&password=hunter2",
        ] {
            let err = PostgresStore::open(url).err().expect("nothing listens");
            let shown = format!("{err} / {err:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("127.0.0.1:1/x"), "{shown}");
            assert!(shown.contains("********"), "{shown}");
            assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
        }
    }

    /// SQLite goes on after a failed statement; PostgreSQL aborts the transaction, whose
    /// COMMIT would then roll back and answer success: the store refuses it.
    #[test]
    fn a_failed_statement_fails_the_commit() {
        let b = Pg::new();
        let store = open(&b);
        let mut tx = store.write().unwrap();
        super::super::create(&mut *tx, "Site", "a", &Map::new(), &[], Millis(1)).unwrap();
        let book = bookkeeping::created(Millis(1));
        assert!(tx.insert("Site", "a", &Map::new(), &[], &book).is_err());
        let err = tx.commit().expect_err("the commit fails");
        assert!(err.to_string().contains("nothing was written"), "{err}");
        assert_eq!(store.get("Site", "a").unwrap(), None);
        // The connection went back clean: the next transaction commits.
        let mut tx = store.write().unwrap();
        super::super::create(&mut *tx, "Site", "a", &Map::new(), &[], Millis(1)).unwrap();
        tx.commit().unwrap();
        assert!(store.get("Site", "a").unwrap().is_some());
    }

    /// TEXT cannot hold NUL; messages quoting a backend's or a broker's bytes may.
    #[test]
    fn nul_in_a_message_is_kept_as_a_replacement_character() {
        let b = Pg::new();
        let store = open(&b);
        let id = create(&store, "Site", "a", json!({}), &[]);
        let mut tx = store.write().unwrap();
        let mut book = tx.get_by_id(id).unwrap().unwrap().book;
        book.message = "bad\0body".into();
        book.policy_error = Some("p\0".into());
        tx.put_book(id, &book, None).unwrap();
        let mut w = status("w", 1);
        w.message = "w\0".into();
        tx.put_watcher_status(&w).unwrap();
        tx.put_dead_letter(&dead_letter(1, "\0\u{1}x")).unwrap();
        tx.commit().unwrap();
        let got = store.get("Site", "a").unwrap().unwrap().book;
        assert_eq!(got.message, "bad\u{FFFD}body");
        assert_eq!(got.policy_error.as_deref(), Some("p\u{FFFD}"));
        assert_eq!(store.watcher_statuses().unwrap()[0].message, "w\u{FFFD}");
        assert_eq!(
            store.dead_letters(1).unwrap().1[0].message,
            "\u{FFFD}\u{1}x"
        );
    }

    /// A server restart (here: every connection of the database ended by the server) costs
    /// nothing but a reconnect: reads and new transactions carry on.
    #[test]
    fn connections_the_server_closed_are_opened_again() {
        let b = Pg::new();
        let store = open(&b);
        create(&store, "Site", "a", json!({}), &[]);
        // Several connections of the pool in use at once, so more than one is ended.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| store.list(None).unwrap());
            }
        });
        // Ends the store's connections and waits until they are gone: the server ends a
        // backend after it answered, and one still there could take the next statement.
        let end = || {
            pg_admin(
                "postgres",
                format!(
                    "DO $$ BEGIN
                       PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = '{db}';
                       FOR i IN 1..500 LOOP
                         -- The view is read once a transaction unless told otherwise.
                         PERFORM pg_stat_clear_snapshot();
                         EXIT WHEN NOT EXISTS
                           (SELECT 1 FROM pg_stat_activity WHERE datname = '{db}');
                         PERFORM pg_sleep(0.01);
                       END LOOP;
                     END $$",
                    db = b.db
                ),
            );
        };
        end();
        assert_eq!(names(&store.list(None).unwrap()), ["Site/a"]);
        end();
        store.change_marker().unwrap();
        end();
        create(&store, "Site", "b", json!({}), &[]);
        end();
        assert!(store.swap_lease(None, Some(&lease("x", 1))).unwrap());
        assert_eq!(store.list(None).unwrap().len(), 2);
    }

    /// More callers at once than the store opens connections: they queue, none fails.
    #[test]
    fn more_callers_than_connections_take_turns() {
        let b = Pg::new();
        let store = open(&b);
        create(&store, "Site", "a", json!({}), &[]);
        std::thread::scope(|s| {
            for i in 0..12 {
                let store = &store;
                s.spawn(move || {
                    for _ in 0..10 {
                        if i % 4 == 0 {
                            let mut tx = store.write().unwrap();
                            tx.put_position("e", &format!("p{i}"), 1).unwrap();
                            tx.commit().unwrap();
                        } else {
                            assert_eq!(store.list(None).unwrap().len(), 1);
                        }
                    }
                });
            }
        });
    }
}

/// The events stream's source (SPEC §16): every visible change, once per object at its
/// latest, in commit order; rewrites that change nothing visible move nothing; a purge
/// leaves a tombstone; a change of another handle is seen; revisions never repeat.
fn changes_follow_visible_writes_in_revision_order(b: &dyn Backend) {
    let store = b.open().unwrap();
    let other = b.open().unwrap();
    assert_eq!(store.revision().unwrap(), 0);
    assert_eq!(store.changes(0, 10).unwrap(), vec![]);
    let state = |status, message: &str, deleted| {
        Some(ChangedState {
            status,
            message: message.into(),
            deleted,
        })
    };
    // (key, state) of each change after `after`, checking the revisions grow and end at
    // most at the store's revision.
    let seen = |s: &dyn Store, after: i64| -> Vec<(String, Option<ChangedState>)> {
        let changes = s.changes(after, 100).unwrap();
        assert!(
            changes.windows(2).all(|w| w[0].rev < w[1].rev),
            "{changes:?}"
        );
        assert!(changes.iter().all(|c| c.rev > after && c.model == "Site"));
        if let Some(last) = changes.last() {
            assert!(last.rev <= s.revision().unwrap());
        }
        changes.into_iter().map(|c| (c.key, c.state)).collect()
    };
    let pending = || state(Status::Pending, "", false);
    let a = create(&*store, "Site", "a", json!({"n": 1}), &[]);
    let c = create(&*other, "Site", "c", json!({}), &[]);
    assert_eq!(
        seen(&*store, 0),
        [("a".into(), pending()), ("c".into(), pending())]
    );
    let r0 = store.changes(0, 10).unwrap()[1].rev;
    // Bookkeeping no one sees (a retry time) moves no object; a status does.
    edit(&*store, a, |bk| bk.next_retry_at = Some(Millis(5)));
    assert_eq!(seen(&*store, r0), []);
    edit(&*other, a, |bk| {
        bk.status = Status::Error;
        bk.message = "HTTP 500".into();
    });
    assert_eq!(
        seen(&*store, r0),
        [("a".into(), state(Status::Error, "HTTP 500", false))]
    );
    // Each object once, at its latest, in the order of their last changes; the limit
    // counts from the oldest.
    edit(&*store, c, synced);
    edit(&*store, a, synced);
    assert_eq!(
        seen(&*store, 0),
        [
            ("c".into(), state(Status::Ok, "", false)),
            ("a".into(), state(Status::Ok, "HTTP 500", false)),
        ]
    );
    assert_eq!(store.changes(0, 1).unwrap()[0].key, "c");
    let r1 = store.revision().unwrap();
    // Fields, feedback and deletion are visible.
    let mut tx = store.write().unwrap();
    tx.put_fields(a, &map(json!({"n": 2})), &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(seen(&*store, r1).len(), 1);
    let r2 = store.revision().unwrap();
    let mut tx = store.write().unwrap();
    let book = tx.get_by_id(c).unwrap().unwrap().book;
    tx.put_book(c, &book, Some(&map(json!({"ip": "10.0.0.1"}))))
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        seen(&*store, r2),
        [("c".into(), state(Status::Ok, "", false))]
    );
    let r3 = store.revision().unwrap();
    let mut tx = store.write().unwrap();
    super::mark_deleted(&mut *tx, a, Millis(3000)).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        seen(&*store, r3),
        [("a".into(), state(Status::Deleting, "", true))]
    );
    // A purge leaves a tombstone, and a later object's revision is higher still, though
    // the object with the highest one is gone.
    let r4 = store.revision().unwrap();
    let mut tx = store.write().unwrap();
    tx.purge(a).unwrap();
    tx.commit().unwrap();
    let d = create(&*store, "Site", "d", json!({}), &[]);
    assert_eq!(
        seen(&*other, r4),
        [("a".into(), None), ("d".into(), pending())]
    );
    // A rolled-back write leaves no trace, and hands no revision out.
    let r5 = store.revision().unwrap();
    let mut tx = store.write().unwrap();
    tx.purge(d).unwrap();
    drop(tx);
    assert_eq!(store.revision().unwrap(), r5);
    assert_eq!(seen(&*store, r5), []);
}

const LONG: Duration = Duration::from_secs(60);

/// Whether `claim` still fences an outcome of `worker`, asked in a transaction that then
/// commits (and so releases it when it does).
fn fenced(store: &dyn Store, worker: &str, claim: Claim) -> bool {
    let mut tx = store.write().unwrap();
    let ok = tx.fence(worker, &[claim]).unwrap() == [true];
    tx.commit().unwrap();
    ok
}

fn claims_are_exclusive_and_fence_outcomes_by_epoch(b: &dyn Backend) {
    let store = b.open().unwrap();
    let other = b.open().unwrap();
    let a = create(&*store, "Site", "a", json!({}), &[]);
    let bb = create(&*store, "Site", "b", json!({}), &[]);
    let c = create(&*store, "Site", "c", json!({}), &[]);
    let claim = |obj, epoch| Claim { obj, epoch };
    assert_eq!(
        store.claim("w1", &[a, bb], LONG).unwrap(),
        [claim(a, 1), claim(bb, 1)]
    );
    // Held objects are not handed out again; an id with no object is not claimed.
    assert_eq!(
        other.claim("w2", &[a, bb, c, 999_999], LONG).unwrap(),
        [claim(c, 1)]
    );
    store.release("w1", &[claim(a, 1)]).unwrap();
    assert_eq!(other.claim("w2", &[a], LONG).unwrap(), [claim(a, 2)]);
    // The superseded claim fences nothing; the current one fences once and is released.
    assert!(!fenced(&*store, "w1", claim(a, 1)));
    assert!(
        !fenced(&*store, "w1", claim(a, 2)),
        "another worker's claim"
    );
    assert!(fenced(&*other, "w2", claim(a, 2)));
    assert!(
        !fenced(&*other, "w2", claim(a, 2)),
        "released by the first fence"
    );
    assert_eq!(store.claim("w1", &[a], LONG).unwrap(), [claim(a, 3)]);
    // A fence rolled back with its transaction releases nothing.
    let mut tx = store.write().unwrap();
    assert_eq!(tx.fence("w1", &[claim(bb, 1)]).unwrap(), [true]);
    drop(tx);
    assert_eq!(other.claim("w2", &[bb], LONG).unwrap(), []);
    // A purged object takes its claim with it.
    let mut tx = store.write().unwrap();
    tx.purge(c).unwrap();
    tx.commit().unwrap();
    assert_eq!(other.claim("w2", &[c], LONG).unwrap(), []);
}

fn expired_claims_are_taken_over_and_renewal_keeps_them(b: &dyn Backend) {
    let store = b.open().unwrap();
    let other = b.open().unwrap();
    let a = create(&*store, "Site", "a", json!({}), &[]);
    let bb = create(&*store, "Site", "b", json!({}), &[]);
    let short = Duration::from_millis(300);
    assert_eq!(store.claim("w1", &[a, bb], short).unwrap().len(), 2);
    // Renewed with a long ttl before it ran out: still w1's after the short one ends.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        store.renew("w1", LONG).unwrap(),
        [Claim { obj: a, epoch: 1 }, Claim { obj: bb, epoch: 1 }]
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(other.claim("w2", &[a, bb], LONG).unwrap(), []);
    // Left to expire (a worker paused or gone): another takes it over with a new epoch,
    // the old holder's renewal no longer has it and its outcome is fenced off.
    assert_eq!(
        store.claim("w1", &[a], Duration::from_millis(1)).unwrap(),
        [Claim { obj: a, epoch: 2 }]
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        other.claim("w2", &[a], LONG).unwrap(),
        [Claim { obj: a, epoch: 3 }]
    );
    assert_eq!(
        store.renew("w1", LONG).unwrap(),
        [Claim { obj: bb, epoch: 1 }]
    );
    assert!(!fenced(&*store, "w1", Claim { obj: a, epoch: 2 }));
    assert!(fenced(&*other, "w2", Claim { obj: a, epoch: 3 }));
}

fn workers_register_count_their_claims_and_retire(b: &dyn Backend) {
    let store = b.open().unwrap();
    let a = create(&*store, "Site", "a", json!({}), &[]);
    let bb = create(&*store, "Site", "b", json!({}), &[]);
    let worker = |name: &str| WorkerInfo {
        name: name.into(),
        host: "h1".into(),
        pid: 7,
        since: Millis(1000),
        heartbeat: Millis::now(),
        claims: 0,
    };
    assert_eq!(store.workers().unwrap(), []);
    store.register_worker(&worker("w1")).unwrap();
    store.register_worker(&worker("w2")).unwrap();
    store.claim("w1", &[a, bb], LONG).unwrap();
    let ws = store.workers().unwrap();
    assert_eq!(
        ws.iter()
            .map(|w| (w.name.as_str(), w.claims))
            .collect::<Vec<_>>(),
        [("w1", 2), ("w2", 0)]
    );
    assert_eq!(
        (ws[0].pid, ws[0].since, ws[0].host.as_str()),
        (7, Millis(1000), "h1")
    );
    // The heartbeat moves with a renewal.
    let before = ws[0].heartbeat;
    std::thread::sleep(Duration::from_millis(20));
    store.renew("w1", LONG).unwrap();
    assert!(store.workers().unwrap()[0].heartbeat > before);
    // A clean stop gives its claims back at once.
    store.retire_worker("w1").unwrap();
    assert_eq!(names_of(&store.workers().unwrap()), ["w2"]);
    assert_eq!(store.claim("w2", &[a, bb], LONG).unwrap().len(), 2);
}

fn names_of(ws: &[WorkerInfo]) -> Vec<&str> {
    ws.iter().map(|w| w.name.as_str()).collect()
}

/// Four handles (processes) claim the same objects at once, in rounds: each object goes to
/// exactly one of them per round.
fn concurrent_claimers_split_the_objects_without_overlap(b: &dyn Backend) {
    let store = b.open().unwrap();
    let ids: Vec<i64> = (0..60)
        .map(|i| create(&*store, "Site", &format!("s{i:02}"), json!({}), &[]))
        .collect();
    let handles: Vec<Box<dyn Store>> = (0..4).map(|_| b.open().unwrap()).collect();
    for round in 0..3 {
        let barrier = Barrier::new(handles.len());
        let won: Vec<Vec<Claim>> = std::thread::scope(|s| {
            let tasks: Vec<_> = handles
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let (barrier, ids) = (&barrier, &ids);
                    s.spawn(move || {
                        barrier.wait();
                        h.claim(&format!("w{i}"), ids, LONG).unwrap()
                    })
                })
                .collect();
            tasks.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut all: Vec<i64> = won.iter().flatten().map(|c| c.obj).collect();
        all.sort_unstable();
        assert_eq!(all, ids, "round {round}: each object claimed once");
        for (i, claims) in won.iter().enumerate() {
            handles[i].release(&format!("w{i}"), claims).unwrap();
        }
    }
}
