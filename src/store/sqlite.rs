//! The embedded store: one SQLite file in WAL mode, so readers never wait for the writer and
//! writers queue on a busy timeout instead of failing with "database is locked".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::columns::{self, OBJECT_COLUMNS, OUTBOX_COLUMNS, json_map};
use super::{
    Bookkeeping, Changed, Claim, Counts, DeadLetter, Edge, Lease, Millis, ObjectChange,
    ObjectRecord, OutboxEntry, PageQuery, ReadOps, Referrer, Status, StepStatus, Store, StoreError,
    Triggers, WorkerInfo, WriteTx,
};
use crate::bookkeeping;

/// The schema version this build writes. Each entry of `MIGRATIONS` moves one version up.
const SCHEMA_VERSION: i64 = 9;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE objects (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model TEXT NOT NULL,
        key TEXT NOT NULL,
        fields TEXT NOT NULL,
        feedback TEXT NOT NULL DEFAULT '{}',
        generation INTEGER NOT NULL,
        synced_generation INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        failures INTEGER NOT NULL DEFAULT 0,
        next_retry_at INTEGER,
        deleted INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        enacted INTEGER,
        last_success_at INTEGER,
        last_error_at INTEGER,
        UNIQUE (model, key)
    );
    CREATE TABLE refs (
        src INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
        field TEXT NOT NULL,
        to_model TEXT NOT NULL,
        to_field TEXT NOT NULL,
        value TEXT NOT NULL
    );
    CREATE INDEX refs_to ON refs(to_model, value);
    CREATE INDEX refs_src ON refs(src);",
    // 1 -> 2: the state machine's `work` mark, so counting pending objects needs no rules in
    // SQL; `backfill_pending` fills it for rows written by version 1.
    "ALTER TABLE objects ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN attempted INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        since INTEGER NOT NULL,
        expires INTEGER NOT NULL
     );",
    // 2 -> 3: drift (SPEC §5.1 rules 4-5): what each object's last sync applied, what input
    // changed since, the `suspect` mark the state machine derives (counted like `pending`),
    // and each model's definition digest as the store last saw it; an index that covers
    // `counts` (an idle pass reads it instead of every row: 60 ms -> 15 ms at 100,000
    // objects); the sys dir journal.
    "ALTER TABLE objects ADD COLUMN applied TEXT;
     ALTER TABLE objects ADD COLUMN drift TEXT;
     ALTER TABLE objects ADD COLUMN drift_found INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE definitions (
        model TEXT PRIMARY KEY,
        digest TEXT NOT NULL
     );
     CREATE INDEX objects_counts ON objects(status, pending, suspect);
     CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        key TEXT NOT NULL
     );",
    // 3 -> 4: watchers and policies (SPEC §11, §12). Each object's policy bookkeeping and its
    // owner; a partial index so finding the objects whose policies are due reads only those;
    // the outbox, where a write that changes a watched field leaves a row in its own
    // transaction (nothing lost to a crash, folded per watcher and object); each watcher's
    // last outcome.
    "ALTER TABLE objects ADD COLUMN policed_generation INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN policy_error TEXT;
     ALTER TABLE objects ADD COLUMN policy_failures INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN policy_retry_at INTEGER;
     ALTER TABLE objects ADD COLUMN owner TEXT;
     CREATE INDEX objects_unpoliced ON objects(model)
        WHERE policed_generation < generation AND deleted = 0;
     CREATE INDEX objects_policy_error ON objects(policy_retry_at) WHERE policy_error IS NOT NULL;
     CREATE INDEX objects_owner ON objects(owner) WHERE owner IS NOT NULL;
     CREATE INDEX refs_via ON refs(to_model, value, field);
     CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        watcher TEXT NOT NULL,
        obj INTEGER NOT NULL,
        model TEXT NOT NULL,
        key TEXT NOT NULL,
        fields TEXT NOT NULL,
        old TEXT NOT NULL,
        new TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        UNIQUE (watcher, obj)
     );
     CREATE TABLE watchers (
        name TEXT PRIMARY KEY,
        runs INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        last_run INTEGER,
        last_ok INTEGER,
        last_error_at INTEGER,
        message TEXT NOT NULL DEFAULT ''
     );",
    // 4 -> 5: pull and event steps (SPEC §13, §14). Each step's last outcome; each event
    // step's last applied position per partition (or stream), written in the same
    // transaction as the message's writes so a redelivery is recognised; dead letters.
    "CREATE TABLE feeds (
        name TEXT PRIMARY KEY,
        runs INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        last_run INTEGER,
        last_ok INTEGER,
        last_error_at INTEGER,
        message TEXT NOT NULL DEFAULT ''
     );
     CREATE TABLE positions (
        step TEXT NOT NULL,
        part TEXT NOT NULL,
        pos INTEGER NOT NULL,
        PRIMARY KEY (step, part)
     ) WITHOUT ROWID;
     CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        step TEXT NOT NULL,
        part TEXT NOT NULL,
        pos INTEGER NOT NULL,
        at INTEGER NOT NULL,
        message TEXT NOT NULL,
        error TEXT NOT NULL,
        UNIQUE (step, part, pos)
     );",
    // 5 -> 6: two indexes. The objects with work or a suspicion, by model, so a pass marks
    // a stream's new objects of a model with nothing to run without reading every row (B8:
    // a pass over 100,000 objects cost ~33 µs an object); a row leaves it once in sync.
    // (model, status, key) covers the per-model counts and seeks a model's objects of one
    // status in key order (the API's filtered list and the dashboard's model page, B10).
    "CREATE INDEX objects_work ON objects(model) WHERE pending = 1 OR suspect = 1;
     CREATE INDEX objects_model_status ON objects(model, status, key);",
    // 6 -> 7: a store-wide revision, handed out by write transactions to every visible
    // change of an object (status, message, fields, feedback, deletion) and kept as the
    // object's `rev`, and a tombstone for each purged object, for the events stream's object
    // events (SPEC §16): readers ask what changed after the revision they saw. A counter
    // row, not max(rev): a purge must not hand its number out again. Tombstones older than
    // 100,000 revisions go (a reader that far behind reads the counts again).
    "CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
     INSERT INTO revision (id, n) VALUES (1, 0);
     ALTER TABLE objects ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX objects_rev ON objects(rev);
     CREATE TABLE purged (rev INTEGER PRIMARY KEY, model TEXT NOT NULL, key TEXT NOT NULL);",
    // 7 -> 8: object claims and workers (SPEC §17), the same tables as PostgreSQL's, so the
    // store suite holds both to one contract; the journal keyed by sys dir as well. A claim's row stays when it is released
    // (expires 0), so the next claim's epoch is higher than every earlier one's.
    "CREATE TABLE object_leases (
        obj INTEGER PRIMARY KEY REFERENCES objects(id) ON DELETE CASCADE,
        owner TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires INTEGER NOT NULL
     );
     CREATE INDEX object_leases_owner ON object_leases(owner) WHERE expires > 0;
     CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        since INTEGER NOT NULL,
        heartbeat INTEGER NOT NULL
     );
     CREATE TABLE journal_by_owner (
        owner TEXT NOT NULL,
        id INTEGER NOT NULL,
        model TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (owner, id)
     );
     INSERT INTO journal_by_owner (owner, id, model, key) SELECT '', id, model, key FROM journal;
     DROP TABLE journal;
     ALTER TABLE journal_by_owner RENAME TO journal;",
    // 8 -> 9: each object's `touched`, the revision of its last write of any kind (`rev`
    // moves only with what the events stream shows), so a pass that holds every object as
    // of a revision reads only the rows written since instead of all of them again.
    "ALTER TABLE objects ADD COLUMN touched INTEGER NOT NULL DEFAULT 0;
     UPDATE objects SET touched = rev;
     CREATE INDEX objects_touched ON objects(touched);",
];

/// How many revisions a purge's tombstone is kept for the events stream.
pub(super) const PURGED_KEPT: i64 = 100_000;

/// Reader connections a store keeps beside its writer: two cores, and one more so a long
/// read (a pass's snapshot) leaves two for the rest.
const READERS: usize = 3;

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Connections for whole-store and page reads (a pass's snapshot of every object, the
    /// API's lists): in WAL mode they read the last commit while the writer goes on, so
    /// loading 100,000 objects (about a second) does not stall an event stream's commits
    /// behind it (B8). Several, so concurrent readers (the API's clients, B10) use both
    /// cores instead of queueing for one. Empty only while the schema is migrated.
    readers: Vec<Mutex<Connection>>,
    /// Where the next reader that finds every connection busy waits.
    next_reader: std::sync::atomic::AtomicUsize,
    /// What writes must note in the outbox: the service's watchers (SPEC §11).
    triggers: std::sync::RwLock<Arc<Triggers>>,
}

/// A connection to the store file with the settings every one of ours has.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let err = sql_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
    // Switching a fresh file to WAL needs it to itself for a moment, and SQLite reports
    // a competing opener as busy at once instead of calling the busy handler (it could
    // deadlock): wait and retry, as the busy timeout would.
    when_not_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(&err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(&err)?;
    // Plans that do not depend on bound values. Without this, SQLite (3.54) lets a bound
    // value steer the plan of a query with an `x = ?` term the index does not cover, and
    // marks the statement to be prepared again whenever that value is rebound, which
    // rusqlite's statement cache does on every use (it clears the bindings): `apply` of
    // one Site with 10,000 Slices spent 2/3 of its time re-preparing `pointing_at`.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(&err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let conn = connect(path)?;
        let mut store = SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            triggers: std::sync::RwLock::new(Arc::default()),
        };
        store.migrate()?;
        store.readers = (0..READERS)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        let err = sql_err(&self.path);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
        let result = (|| {
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(&err)?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::Invalid {
                    path: self.path.display().to_string(),
                    message: format!(
                        "schema version {version} was written by a newer stepsync (this one knows {SCHEMA_VERSION})"
                    ),
                });
            }
            for (i, sql) in MIGRATIONS
                .iter()
                .enumerate()
                .skip(usize::try_from(version).unwrap_or(0))
            {
                conn.execute_batch(sql).map_err(&err)?;
                conn.pragma_update(
                    None,
                    "user_version",
                    i64::try_from(i + 1).unwrap_or(SCHEMA_VERSION),
                )
                .map_err(&err)?;
            }
            if version < 2 {
                backfill_pending(&conn).map_err(&err)?;
            }
            Ok(())
        })();
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        conn.execute_batch(end).map_err(&err)?;
        result
    }

    /// A free reader connection, or, when all are busy, one of them in turn (the writer's
    /// while none is open yet).
    /// Runs `f` in a write transaction of its own (`BEGIN IMMEDIATE`, so the busy timeout
    /// applies), committed when it succeeds and rolled back when it fails.
    fn immediate<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<T> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = f(&conn);
            conn.execute_batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
            r
        };
        run().map_err(sql_err(&self.path))
    }

    fn read_lock(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        if self.readers.is_empty() {
            return self.lock();
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means a panic mid-call; the connection itself is still usable
        // because every transaction is rolled back on drop.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs `f` until SQLite stops answering busy or locked, for at most [`BUSY_TIMEOUT`]: for
/// the calls SQLite does not send through the busy handler.
fn when_not_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Fills the columns version 2 added from each row's bookkeeping, by the state machine's
/// rules.
fn backfill_pending(conn: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<ObjectRecord> = conn
        .prepare(&format!("SELECT {OBJECT_COLUMNS} FROM objects"))?
        .query_map([], row_to_record)?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare("UPDATE objects SET pending = ?2, attempted = ?3 WHERE id = ?1")?;
    for mut r in rows {
        bookkeeping::upgrade_v1(&mut r.book);
        st.execute(params![
            r.id,
            bookkeeping::work(&r.book).is_some(),
            r.book.attempted
        ])?;
    }
    Ok(())
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// A row of an object read, for the shared mapping (`columns::record`).
impl columns::Cells for Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        self.get(i)
    }
}

fn row_to_record(r: &Row<'_>) -> rusqlite::Result<ObjectRecord> {
    columns::record(r)
}

impl From<columns::Cell> for SqlValue {
    fn from(c: columns::Cell) -> SqlValue {
        use columns::Cell;
        match c {
            Cell::Int(v) => v.into(),
            Cell::OptInt(v) => v.into(),
            Cell::Text(v) => v.into(),
            Cell::OptText(v) => v.into(),
            Cell::Flag(v) => v.into(),
        }
    }
}

/// The bookkeeping statements, with SQLite's placeholders.
static BOOK_SQL: std::sync::LazyLock<columns::BookSql> =
    std::sync::LazyLock::new(|| columns::book_sql('?', "IS NOT"));

fn get(
    conn: &Connection,
    path: &Path,
    model: &str,
    key: &str,
) -> Result<Option<ObjectRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {OBJECT_COLUMNS} FROM objects WHERE model = ?1 AND key = ?2"
    ))
    .and_then(|mut st| st.query_row(params![model, key], row_to_record).optional())
    .map_err(sql_err(path))
}

fn get_by_id(conn: &Connection, path: &Path, id: i64) -> Result<Option<ObjectRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {OBJECT_COLUMNS} FROM objects WHERE id = ?1"
    ))
    .and_then(|mut st| st.query_row([id], row_to_record).optional())
    .map_err(sql_err(path))
}

fn list(
    conn: &Connection,
    path: &Path,
    model: Option<&str>,
) -> Result<Vec<ObjectRecord>, StoreError> {
    let run = || -> rusqlite::Result<Vec<ObjectRecord>> {
        match model {
            Some(m) => {
                let mut st = conn.prepare_cached(&format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects WHERE model = ?1 ORDER BY key"
                ))?;
                st.query_map([m], row_to_record)?.collect()
            }
            None => {
                let mut st = conn.prepare_cached(&format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects ORDER BY model, key"
                ))?;
                st.query_map([], row_to_record)?.collect()
            }
        }
    };
    run().map_err(sql_err(path))
}

fn referrers(conn: &Connection, path: &Path, to_model: &str) -> Result<Vec<Referrer>, StoreError> {
    let run = || -> rusqlite::Result<Vec<Referrer>> {
        let mut st = conn.prepare_cached(
            "SELECT o.id, o.model, o.key, r.field, r.to_field, r.value
             FROM refs r JOIN objects o ON o.id = r.src
             WHERE r.to_model = ?1 ORDER BY o.model, o.key",
        )?;
        st.query_map([to_model], |r| {
            Ok(Referrer {
                id: r.get(0)?,
                model: r.get(1)?,
                key: r.get(2)?,
                field: r.get(3)?,
                to_field: r.get(4)?,
                value: r.get(5)?,
            })
        })?
        .collect()
    };
    run().map_err(sql_err(path))
}

/// Ids of the objects whose edge `to_field` into `to_model` holds `value`.
fn pointing_at(
    conn: &Connection,
    path: &Path,
    to_model: &str,
    to_field: &str,
    value: &str,
) -> Result<Vec<i64>, StoreError> {
    let run = || -> rusqlite::Result<Vec<i64>> {
        let mut st = conn.prepare_cached(
            "SELECT DISTINCT src FROM refs WHERE to_model = ?1 AND value = ?2 AND to_field = ?3",
        )?;
        st.query_map(params![to_model, value, to_field], |r| r.get(0))?
            .collect()
    };
    run().map_err(sql_err(path))
}

fn pointing_via(
    conn: &Connection,
    path: &Path,
    to_model: &str,
    to_field: &str,
    value: &str,
    field: &str,
) -> Result<Vec<i64>, StoreError> {
    let run = || -> rusqlite::Result<Vec<i64>> {
        let mut st = conn.prepare_cached(
            "SELECT DISTINCT src FROM refs
             WHERE to_model = ?1 AND value = ?2 AND field = ?3 AND to_field = ?4",
        )?;
        st.query_map(params![to_model, value, field, to_field], |r| r.get(0))?
            .collect()
    };
    run().map_err(sql_err(path))
}

fn page(
    conn: &Connection,
    path: &Path,
    q: &PageQuery<'_>,
) -> Result<Vec<ObjectRecord>, StoreError> {
    // Only the filters in use go into the statement (at most 16 shapes, each prepared once):
    // a `?1 IS NULL OR ...` form keeps SQLite from seeking the (model, key) index, and a
    // deep page took 30 ms at 100,000 objects.
    let mut sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |sql: &mut String, cond: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&cond.replace('?', &format!("?{}", args.len())));
    };
    if let Some(m) = q.model {
        arg(&mut sql, " AND model = ?", m.to_owned().into());
    }
    if let Some(s) = q.status {
        arg(&mut sql, " AND status = ?", s.as_str().to_owned().into());
    }
    if let Some(p) = q.prefix {
        // A range on the key, which the index can seek, rather than a function of it.
        arg(&mut sql, " AND key >= ?", p.to_owned().into());
        arg(&mut sql, " AND key < ?", format!("{p}\u{10FFFF}").into());
    }
    match (q.model, q.after) {
        // Within one model the cursor is a range on the key, which SQLite seeks in the
        // (model, status, key) and (model, key) indexes; as a row value it scanned every
        // entry before it (a deep page of a status filter: O(offset), B10).
        (Some(m), Some((am, k))) if am == m => {
            arg(&mut sql, " AND key > ?", k.to_owned().into());
        }
        (Some(m), Some((am, _))) => {
            if am > m {
                sql.push_str(" AND 0");
            }
        }
        (None, Some((m, k))) => {
            arg(&mut sql, " AND (model, key) > (?", m.to_owned().into());
            arg(&mut sql, ", ?)", k.to_owned().into());
        }
        (_, None) => {}
    }
    arg(
        &mut sql,
        " ORDER BY model, key LIMIT ?",
        i64::try_from(q.limit).unwrap_or(i64::MAX).into(),
    );
    let run = || -> rusqlite::Result<Vec<ObjectRecord>> {
        let mut st = conn.prepare_cached(&sql)?;
        st.query_map(rusqlite::params_from_iter(args.iter()), row_to_record)?
            .collect()
    };
    run().map_err(sql_err(path))
}

fn with_work(conn: &Connection, path: &Path, model: &str) -> Result<Vec<ObjectRecord>, StoreError> {
    let run = || -> rusqlite::Result<Vec<ObjectRecord>> {
        let mut st = conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects INDEXED BY objects_work
             WHERE model = ?1 AND (pending = 1 OR suspect = 1) ORDER BY id"
        ))?;
        st.query_map([model], row_to_record)?.collect()
    };
    run().map_err(sql_err(path))
}

fn waking(conn: &Connection, path: &Path) -> Result<Vec<ObjectRecord>, StoreError> {
    let run = || -> rusqlite::Result<Vec<ObjectRecord>> {
        let mut st = conn.prepare_cached(&format!(
            // Two selects, so each uses its index (an OR of the two terms scans the table).
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE status IN ('error', 'deferred')
             UNION SELECT {OBJECT_COLUMNS} FROM objects WHERE policy_error IS NOT NULL"
        ))?;
        st.query_map([], row_to_record)?.collect()
    };
    run().map_err(sql_err(path))
}

fn owned_by(conn: &Connection, path: &Path, owner: &str) -> Result<Vec<ObjectRecord>, StoreError> {
    let run = || -> rusqlite::Result<Vec<ObjectRecord>> {
        let mut st = conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE owner = ?1 ORDER BY model, key"
        ))?;
        st.query_map([owner], row_to_record)?.collect()
    };
    run().map_err(sql_err(path))
}

fn unpoliced(conn: &Connection, path: &Path, model: &str) -> Result<Vec<ObjectRecord>, StoreError> {
    let run = || -> rusqlite::Result<Vec<ObjectRecord>> {
        let mut st = conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects INDEXED BY objects_unpoliced
             WHERE model = ?1 AND policed_generation < generation AND deleted = 0 ORDER BY id"
        ))?;
        st.query_map([model], row_to_record)?.collect()
    };
    run().map_err(sql_err(path))
}

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.get(0)?,
        watcher: r.get(1)?,
        obj: r.get(2)?,
        model: r.get(3)?,
        key: r.get(4)?,
        fields: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        old: json_map(&r.get::<_, String>(6)?),
        new: json_map(&r.get::<_, String>(7)?),
        seq: r.get(8)?,
        at_us: r.get(9)?,
    })
}

/// A row of `watchers`, selected in column order.
fn watcher_row(r: &Row<'_>) -> rusqlite::Result<StepStatus> {
    Ok(StepStatus {
        name: r.get(0)?,
        runs: r.get(1)?,
        failures: r.get(2)?,
        last_run: r.get::<_, Option<i64>>(3)?.map(Millis),
        last_ok: r.get::<_, Option<i64>>(4)?.map(Millis),
        last_error_at: r.get::<_, Option<i64>>(5)?.map(Millis),
        message: r.get(6)?,
    })
}

/// Every step's status in `table`, by name.
fn step_statuses(
    conn: &Connection,
    path: &Path,
    table: &str,
) -> Result<Vec<StepStatus>, StoreError> {
    let run = || -> rusqlite::Result<Vec<StepStatus>> {
        let mut st = conn.prepare_cached(&format!(
            "SELECT name, runs, failures, last_run, last_ok, last_error_at, message
             FROM {table} ORDER BY name"
        ))?;
        st.query_map([], watcher_row)?.collect()
    };
    run().map_err(sql_err(path))
}

/// A step's status from `table` (`watchers` or `feeds`: one row shape, two kinds of step).
fn step_status(
    conn: &Connection,
    path: &Path,
    table: &str,
    name: &str,
) -> Result<Option<StepStatus>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT name, runs, failures, last_run, last_ok, last_error_at, message
         FROM {table} WHERE name = ?1"
    ))
    .and_then(|mut st| st.query_row([name], watcher_row).optional())
    .map_err(sql_err(path))
}

fn put_step_status(
    conn: &Connection,
    path: &Path,
    table: &str,
    w: &StepStatus,
) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table}
           (name, runs, failures, last_run, last_ok, last_error_at, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            w.name,
            w.runs,
            w.failures,
            w.last_run.map(|m| m.0),
            w.last_ok.map(|m| m.0),
            w.last_error_at.map(|m| m.0),
            w.message
        ])
    })
    .map(drop)
    .map_err(sql_err(path))
}

fn outbox(conn: &Connection, path: &Path) -> Result<Vec<OutboxEntry>, StoreError> {
    let run = || -> rusqlite::Result<Vec<OutboxEntry>> {
        let mut st =
            conn.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"))?;
        st.query_map([], outbox_row)?.collect()
    };
    run().map_err(sql_err(path))
}

fn definitions(
    conn: &Connection,
    path: &Path,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let run = || -> rusqlite::Result<std::collections::HashMap<String, String>> {
        let mut st = conn.prepare_cached("SELECT model, digest FROM definitions")?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
    };
    run().map_err(sql_err(path))
}

impl ReadOps for SqliteStore {
    fn get(&self, model: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        get(&self.lock(), &self.path, model, key)
    }
    fn list(&self, model: Option<&str>) -> Result<Vec<ObjectRecord>, StoreError> {
        list(&self.read_lock(), &self.path, model)
    }
    fn referrers(&self, to_model: &str) -> Result<Vec<Referrer>, StoreError> {
        referrers(&self.lock(), &self.path, to_model)
    }
    fn pointing_at(
        &self,
        to_model: &str,
        to_field: &str,
        value: &str,
    ) -> Result<Vec<i64>, StoreError> {
        pointing_at(&self.lock(), &self.path, to_model, to_field, value)
    }
    fn definitions(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        definitions(&self.lock(), &self.path)
    }
    fn pointing_via(
        &self,
        to_model: &str,
        to_field: &str,
        value: &str,
        field: &str,
    ) -> Result<Vec<i64>, StoreError> {
        pointing_via(&self.lock(), &self.path, to_model, to_field, value, field)
    }
    fn owned_by(&self, owner: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        owned_by(&self.lock(), &self.path, owner)
    }
    fn page(&self, q: &PageQuery<'_>) -> Result<Vec<ObjectRecord>, StoreError> {
        page(&self.read_lock(), &self.path, q)
    }
    fn unpoliced(&self, model: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        unpoliced(&self.lock(), &self.path, model)
    }
    fn with_work(&self, model: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        with_work(&self.lock(), &self.path, model)
    }
    fn waking(&self) -> Result<Vec<ObjectRecord>, StoreError> {
        waking(&self.lock(), &self.path)
    }
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        outbox(&self.lock(), &self.path)
    }
}

fn read_lease(conn: &Connection) -> rusqlite::Result<Option<Lease>> {
    conn.prepare_cached("SELECT holder, pid, host, since, expires FROM lease WHERE id = 1")?
        .query_row([], |r| {
            Ok(Lease {
                holder: r.get(0)?,
                pid: r.get(1)?,
                host: r.get(2)?,
                since: Millis(r.get(3)?),
                expires: Millis(r.get(4)?),
            })
        })
        .optional()
}

impl Store for SqliteStore {
    fn lease(&self) -> Result<Option<Lease>, StoreError> {
        read_lease(&self.lock()).map_err(sql_err(&self.path))
    }

    fn swap_lease(
        &self,
        expected: Option<&Lease>,
        new: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        self.immediate(|conn| {
            if read_lease(conn)?.as_ref() != expected {
                return Ok(false);
            }
            match new {
                Some(l) => conn.execute(
                    "INSERT OR REPLACE INTO lease (id, holder, pid, host, since, expires)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                    params![l.holder, l.pid, l.host, l.since.0, l.expires.0],
                )?,
                None => conn.execute("DELETE FROM lease", [])?,
            };
            Ok(true)
        })
    }

    fn get_by_ids(&self, ids: &[i64]) -> Result<Vec<ObjectRecord>, StoreError> {
        let conn = self.read_lock();
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            out.extend(get_by_id(&conn, &self.path, id)?);
        }
        Ok(out)
    }

    fn claim(&self, worker: &str, ids: &[i64], ttl: Duration) -> Result<Vec<Claim>, StoreError> {
        let now = Millis::now();
        let expires = now.after(ttl).0;
        self.immediate(|conn| {
            // One writer at a time: nobody can be claiming the same rows meanwhile, so
            // there is nothing to skip.
            let mut row = conn.prepare_cached(
                "INSERT OR IGNORE INTO object_leases (obj, owner, epoch, expires)
                 SELECT ?1, '', 0, 0 WHERE EXISTS (SELECT 1 FROM objects WHERE id = ?1)",
            )?;
            let mut take = conn.prepare_cached(
                "UPDATE object_leases SET owner = ?2, epoch = epoch + 1, expires = ?3
                 WHERE obj = ?1 AND (expires <= ?4 OR owner = ?2) RETURNING epoch",
            )?;
            let mut claims = Vec::new();
            for &obj in ids {
                row.execute([obj])?;
                if let Some(epoch) = take
                    .query_row(params![obj, worker, expires, now.0], |r| r.get(0))
                    .optional()?
                {
                    claims.push(Claim { obj, epoch });
                }
            }
            Ok(claims)
        })
    }

    fn renew(&self, worker: &str, ttl: Duration) -> Result<Vec<Claim>, StoreError> {
        let now = Millis::now();
        self.immediate(|conn| {
            conn.prepare_cached("UPDATE workers SET heartbeat = ?2 WHERE name = ?1")?
                .execute(params![worker, now.0])?;
            let mut st = conn.prepare_cached(
                "UPDATE object_leases SET expires = ?2 WHERE owner = ?1 AND expires > 0
                 RETURNING obj, epoch",
            )?;
            let mut claims = st
                .query_map(params![worker, now.after(ttl).0], |r| {
                    Ok(Claim {
                        obj: r.get(0)?,
                        epoch: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            claims.sort_by_key(|c| c.obj);
            Ok(claims)
        })
    }

    fn release(&self, worker: &str, claims: &[Claim]) -> Result<(), StoreError> {
        self.immediate(|conn| {
            let mut st = conn.prepare_cached(
                "UPDATE object_leases SET expires = 0 WHERE obj = ?1 AND owner = ?2 AND epoch = ?3",
            )?;
            for c in claims {
                st.execute(params![c.obj, worker, c.epoch])?;
            }
            Ok(())
        })
    }

    fn register_worker(&self, w: &WorkerInfo) -> Result<(), StoreError> {
        self.immediate(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO workers (name, host, pid, since, heartbeat)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![w.name, w.host, w.pid, w.since.0, w.heartbeat.0],
            )
            .map(drop)
        })
    }

    fn retire_worker(&self, name: &str) -> Result<(), StoreError> {
        self.immediate(|conn| {
            conn.execute("DELETE FROM workers WHERE name = ?1", [name])?;
            conn.execute(
                "UPDATE object_leases SET expires = 0 WHERE owner = ?1 AND expires > 0",
                [name],
            )
            .map(drop)
        })
    }

    fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let now = Millis::now().0;
        let conn = self.read_lock();
        let run = || -> rusqlite::Result<Vec<WorkerInfo>> {
            let mut st = conn.prepare_cached(
                "SELECT w.name, w.host, w.pid, w.since, w.heartbeat,
                   (SELECT COUNT(*) FROM object_leases l WHERE l.owner = w.name AND l.expires > ?1)
                 FROM workers w ORDER BY w.name",
            )?;
            st.query_map([now], |r| {
                Ok(WorkerInfo {
                    name: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    since: Millis(r.get(3)?),
                    heartbeat: Millis(r.get(4)?),
                    claims: r
                        .get::<_, i64>(5)
                        .map(|n| usize::try_from(n).unwrap_or(0))?,
                })
            })?
            .collect()
        };
        run().map_err(sql_err(&self.path))
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<Vec<(String, i64, i64, i64)>> {
            let mut st = conn.prepare_cached(
                "SELECT status, COUNT(*), SUM(pending), SUM(suspect) FROM objects GROUP BY status",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        };
        let rows = run().map_err(sql_err(&self.path))?;
        let mut counts = Counts::default();
        for st in Status::ALL {
            let n: i64 = rows
                .iter()
                .filter(|(s, ..)| Status::parse(s) == Some(st))
                .map(|(_, n, ..)| n)
                .sum();
            if n > 0 {
                counts.by_status.push((st, usize::try_from(n).unwrap_or(0)));
            }
        }
        counts.pending = rows
            .iter()
            .map(|(_, _, p, _)| usize::try_from(*p).unwrap_or(0))
            .sum();
        counts.suspect = rows
            .iter()
            .map(|(.., s)| usize::try_from(*s).unwrap_or(0))
            .sum();
        Ok(counts)
    }

    fn counts_by_model(&self) -> Result<Vec<(String, usize)>, StoreError> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<Vec<(String, i64)>> {
            let mut st = conn.prepare_cached(
                "SELECT model, COUNT(*) FROM objects GROUP BY model ORDER BY model",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        };
        let rows = run().map_err(sql_err(&self.path))?;
        Ok(rows
            .into_iter()
            .map(|(m, n)| (m, usize::try_from(n).unwrap_or(0)))
            .collect())
    }

    fn counts_by_model_status(&self) -> Result<Vec<(String, Status, usize)>, StoreError> {
        let conn = self.read_lock();
        let run = || -> rusqlite::Result<Vec<(String, String, i64)>> {
            let mut st = conn.prepare_cached(
                "SELECT model, status, COUNT(*) FROM objects GROUP BY model, status ORDER BY model",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        };
        let rows = run().map_err(sql_err(&self.path))?;
        Ok(rows
            .into_iter()
            .filter_map(|(m, s, n)| Some((m, Status::parse(&s)?, usize::try_from(n).unwrap_or(0))))
            .collect())
    }

    fn journaled(&self, owner: &str) -> Result<Vec<(i64, String, String)>, StoreError> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<Vec<(i64, String, String)>> {
            let mut st = conn.prepare_cached(
                "SELECT id, model, key FROM journal WHERE owner = ?1 ORDER BY id",
            )?;
            st.query_map([owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        };
        run().map_err(sql_err(&self.path))
    }

    fn shared(&self) -> bool {
        false
    }

    fn change_marker(&self) -> Result<i64, StoreError> {
        // data_version moves when another connection commits; our own writes leave it alone.
        self.lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(sql_err(&self.path))
    }

    fn watch_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn set_triggers(&self, triggers: Arc<Triggers>) {
        *self.triggers.write().unwrap_or_else(|p| p.into_inner()) = triggers;
    }

    fn watcher_statuses(&self) -> Result<Vec<StepStatus>, StoreError> {
        step_statuses(&self.lock(), &self.path, "watchers")
    }

    fn feed_statuses(&self) -> Result<Vec<StepStatus>, StoreError> {
        step_statuses(&self.lock(), &self.path, "feeds")
    }

    fn dead_letters(&self, limit: usize) -> Result<(usize, Vec<DeadLetter>), StoreError> {
        let conn = self.lock();
        let run = || -> rusqlite::Result<(usize, Vec<DeadLetter>)> {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
            let mut st = conn.prepare_cached(
                "SELECT id, step, part, pos, at, message, error FROM dead_letters
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok(DeadLetter {
                        id: r.get(0)?,
                        step: r.get(1)?,
                        part: r.get(2)?,
                        pos: r.get(3)?,
                        at: Millis(r.get(4)?),
                        message: r.get(5)?,
                        error: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((usize::try_from(n).unwrap_or(0), rows))
        };
        run().map_err(sql_err(&self.path))
    }

    fn positions(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.read_lock();
        let run = || -> rusqlite::Result<Vec<(String, String, i64)>> {
            let mut st =
                conn.prepare_cached("SELECT step, part, pos FROM positions ORDER BY step, part")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        };
        run().map_err(sql_err(&self.path))
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.read_lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql_err(&self.path))
    }

    fn revision(&self) -> Result<i64, StoreError> {
        self.read_lock()
            .query_row("SELECT n FROM revision", [], |r| r.get(0))
            .map_err(sql_err(&self.path))
    }

    fn changes(&self, after: i64, limit: usize) -> Result<Vec<ObjectChange>, StoreError> {
        let conn = self.read_lock();
        let run = || -> rusqlite::Result<Vec<ObjectChange>> {
            // Both halves seek an index on rev (objects_rev, purged's key).
            let mut st = conn.prepare_cached(
                "SELECT rev, model, key, status, message, deleted FROM objects WHERE rev > ?1
                 UNION ALL
                 SELECT rev, model, key, NULL, NULL, 1 FROM purged WHERE rev > ?1
                 ORDER BY rev LIMIT ?2",
            )?;
            st.query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(ObjectChange::from_row(
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )?
            .collect()
        };
        run().map_err(sql_err(&self.path))
    }

    fn changed_since(&self, after: i64, limit: usize) -> Result<Option<Changed>, StoreError> {
        let conn = self.read_lock();
        let run = || -> rusqlite::Result<Option<Changed>> {
            // One read transaction: one snapshot for the revision and the rows.
            let tx = conn.unchecked_transaction()?;
            let rev: i64 = tx.query_row("SELECT n FROM revision", [], |r| r.get(0))?;
            if !super::tombstones_cover(after, rev) {
                return Ok(None);
            }
            let objects: Vec<ObjectRecord> = tx
                .prepare_cached(&format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects WHERE touched > ?1 LIMIT ?2"
                ))?
                .query_map(params![after, super::over(limit)], row_to_record)?
                .collect::<rusqlite::Result<_>>()?;
            if objects.len() > limit {
                return Ok(None);
            }
            let purged = tx
                .prepare_cached("SELECT rev, model, key FROM purged WHERE rev > ?1")?
                .query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            tx.finish()?;
            Ok(Some(Changed {
                rev,
                objects,
                purged,
            }))
        };
        run().map_err(sql_err(&self.path))
    }

    fn policy_errors(&self) -> Result<usize, StoreError> {
        self.lock()
            .query_row(
                "SELECT COUNT(*) FROM objects INDEXED BY objects_policy_error
                 WHERE policy_error IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(sql_err(&self.path))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        let conn = self.lock();
        // IMMEDIATE takes the write lock up front, so the busy timeout applies and the
        // transaction can never fail later on a lock upgrade.
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(sql_err(&self.path))?;
        Ok(Box::new(SqliteTx {
            conn,
            path: &self.path,
            done: false,
            rev: None,
            triggers: self
                .triggers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }))
    }
}

struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    path: &'a Path,
    done: bool,
    triggers: Arc<Triggers>,
    /// The last revision this transaction handed out, read from the counter at its first
    /// object write and written back at commit (one writer at a time: nobody else hands
    /// numbers out meanwhile).
    rev: Option<i64>,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Nothing to report to: the caller is already unwinding from its own error.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

type SqlValue = rusqlite::types::Value;

/// The bookkeeping columns in their order after `id` (or after `model, key, fields` in an
/// insert), with the `pending` mark the state machine derives: one list for every write.
impl SqliteTx<'_> {
    /// The next revision for an object write of this transaction.
    fn next_rev(&mut self) -> rusqlite::Result<i64> {
        let last = match self.rev {
            Some(r) => r,
            None => self
                .conn
                .prepare_cached("SELECT n FROM revision")?
                .query_row([], |r| r.get(0))?,
        };
        self.rev = Some(last + 1);
        Ok(last + 1)
    }

    fn save_book(
        &mut self,
        id: i64,
        b: &Bookkeeping,
        feedback: Option<&Map<String, Value>>,
    ) -> rusqlite::Result<()> {
        let rev = self.next_rev()?;
        let mut book: Vec<SqlValue> = vec![id.into()];
        book.extend(columns::book_values(b).map(SqlValue::from));
        match feedback {
            None => {
                book.push(rev.into());
                self.conn
                    .prepare_cached(&BOOK_SQL.update)?
                    .execute(rusqlite::params_from_iter(&book))?
            }
            Some(f) => {
                let mut all = book;
                all.push(Value::Object(f.clone()).to_string().into());
                all.push(rev.into());
                self.conn
                    .prepare_cached(&BOOK_SQL.update_feedback)?
                    .execute(rusqlite::params_from_iter(&all))?
            }
        };
        Ok(())
    }

    fn set_refs(&self, id: i64, refs: &[Edge]) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM refs WHERE src = ?1")?
            .execute([id])?;
        let mut st = self.conn.prepare_cached(
            "INSERT INTO refs (src, field, to_model, to_field, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for r in refs {
            st.execute(params![id, r.field, r.to_model, r.to_field, r.value])?;
        }
        Ok(())
    }
}

impl ReadOps for SqliteTx<'_> {
    fn get(&self, model: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        get(&self.conn, self.path, model, key)
    }
    fn list(&self, model: Option<&str>) -> Result<Vec<ObjectRecord>, StoreError> {
        list(&self.conn, self.path, model)
    }
    fn referrers(&self, to_model: &str) -> Result<Vec<Referrer>, StoreError> {
        referrers(&self.conn, self.path, to_model)
    }
    fn pointing_at(
        &self,
        to_model: &str,
        to_field: &str,
        value: &str,
    ) -> Result<Vec<i64>, StoreError> {
        pointing_at(&self.conn, self.path, to_model, to_field, value)
    }
    fn definitions(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        definitions(&self.conn, self.path)
    }
    fn pointing_via(
        &self,
        to_model: &str,
        to_field: &str,
        value: &str,
        field: &str,
    ) -> Result<Vec<i64>, StoreError> {
        pointing_via(&self.conn, self.path, to_model, to_field, value, field)
    }
    fn owned_by(&self, owner: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        owned_by(&self.conn, self.path, owner)
    }
    fn page(&self, q: &PageQuery<'_>) -> Result<Vec<ObjectRecord>, StoreError> {
        page(&self.conn, self.path, q)
    }
    fn unpoliced(&self, model: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        unpoliced(&self.conn, self.path, model)
    }
    fn with_work(&self, model: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        with_work(&self.conn, self.path, model)
    }
    fn waking(&self) -> Result<Vec<ObjectRecord>, StoreError> {
        waking(&self.conn, self.path)
    }
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        outbox(&self.conn, self.path)
    }
}

impl WriteTx for SqliteTx<'_> {
    fn get_by_id(&self, id: i64) -> Result<Option<ObjectRecord>, StoreError> {
        get_by_id(&self.conn, self.path, id)
    }

    fn insert(
        &mut self,
        model: &str,
        key: &str,
        fields: &Map<String, Value>,
        refs: &[Edge],
        book: &Bookkeeping,
    ) -> Result<i64, StoreError> {
        let rev = self.next_rev().map_err(sql_err(self.path))?;
        let run = || -> rusqlite::Result<i64> {
            // One statement: an apply of 100,000 objects is 100,000 of these.
            let mut values: Vec<SqlValue> = vec![
                model.to_owned().into(),
                key.to_owned().into(),
                Value::Object(fields.clone()).to_string().into(),
            ];
            values.extend(columns::book_values(book).map(SqlValue::from));
            values.push(rev.into());
            self.conn
                .prepare_cached(&BOOK_SQL.insert)?
                .execute(rusqlite::params_from_iter(&values))?;
            let id = self.conn.last_insert_rowid();
            self.set_refs(id, refs)?;
            Ok(id)
        };
        run().map_err(sql_err(self.path))
    }

    fn put_fields(
        &mut self,
        id: i64,
        fields: &Map<String, Value>,
        refs: &[Edge],
    ) -> Result<(), StoreError> {
        let rev = self.next_rev().map_err(sql_err(self.path))?;
        let run = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached(&BOOK_SQL.fields)?
                .execute(params![id, Value::Object(fields.clone()).to_string(), rev])?;
            self.set_refs(id, refs)
        };
        run().map_err(sql_err(self.path))
    }

    fn put_book(
        &mut self,
        id: i64,
        book: &Bookkeeping,
        feedback: Option<&Map<String, Value>>,
    ) -> Result<(), StoreError> {
        self.save_book(id, book, feedback)
            .map_err(sql_err(self.path))
    }

    fn synced_ids(&self, model: &str) -> Result<Vec<i64>, StoreError> {
        let run = || -> rusqlite::Result<Vec<i64>> {
            let mut st = self.conn.prepare_cached(
                "SELECT id FROM objects WHERE model = ?1 AND last_success_at IS NOT NULL
                 AND deleted = 0 ORDER BY id",
            )?;
            st.query_map([model], |r| r.get(0))?.collect()
        };
        run().map_err(sql_err(self.path))
    }

    fn journal(
        &mut self,
        owner: &str,
        objects: &[(i64, String, String)],
    ) -> Result<(), StoreError> {
        let run = || -> rusqlite::Result<()> {
            let mut st = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO journal (owner, id, model, key) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (id, model, key) in objects {
                st.execute(params![owner, id, model, key])?;
            }
            Ok(())
        };
        run().map_err(sql_err(self.path))
    }

    fn clear_journal(&mut self, owner: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM journal WHERE owner = ?1")
            .and_then(|mut st| st.execute([owner]))
            .map(drop)
            .map_err(sql_err(self.path))
    }

    fn put_definition(&mut self, model: &str, digest: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO definitions (model, digest) VALUES (?1, ?2)
                 ON CONFLICT (model) DO UPDATE SET digest = excluded.digest",
            )
            .and_then(|mut st| st.execute(params![model, digest]))
            .map(drop)
            .map_err(sql_err(self.path))
    }

    fn triggers(&self) -> Arc<Triggers> {
        self.triggers.clone()
    }

    fn put_owner(&mut self, id: i64, owner: Option<&str>) -> Result<(), StoreError> {
        let rev = self.next_rev().map_err(sql_err(self.path))?;
        self.conn
            .prepare_cached("UPDATE objects SET owner = ?2, touched = ?3 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, owner, rev]))
            .map(drop)
            .map_err(sql_err(self.path))
    }

    fn outbox_get(&self, watcher: &str, obj: i64) -> Result<Option<OutboxEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE watcher = ?1 AND obj = ?2"
            ))
            .and_then(|mut st| st.query_row(params![watcher, obj], outbox_row).optional())
            .map_err(sql_err(self.path))
    }

    fn outbox_put(&mut self, e: &OutboxEntry) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (watcher, obj, model, key, fields, old, new, seq, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (watcher, obj) DO UPDATE SET fields = excluded.fields,
                   old = excluded.old, new = excluded.new, seq = excluded.seq,
                   model = excluded.model, key = excluded.key, at = excluded.at",
            )
            .and_then(|mut st| {
                st.execute(params![
                    e.watcher,
                    e.obj,
                    e.model,
                    e.key,
                    serde_json::to_string(&e.fields).unwrap_or_default(),
                    Value::Object(e.old.clone()).to_string(),
                    Value::Object(e.new.clone()).to_string(),
                    e.seq,
                    e.at_us
                ])
            })
            .map(drop)
            .map_err(sql_err(self.path))
    }

    fn outbox_remove(&mut self, id: i64, seq: i64) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND seq = ?2")
            .and_then(|mut st| st.execute(params![id, seq]))
            .map(|n| n > 0)
            .map_err(sql_err(self.path))
    }

    fn put_watcher_status(&mut self, w: &StepStatus) -> Result<(), StoreError> {
        put_step_status(&self.conn, self.path, "watchers", w)
    }

    fn feed_status(&self, name: &str) -> Result<Option<StepStatus>, StoreError> {
        step_status(&self.conn, self.path, "feeds", name)
    }

    fn put_feed_status(&mut self, w: &StepStatus) -> Result<(), StoreError> {
        put_step_status(&self.conn, self.path, "feeds", w)
    }

    fn position(&self, step: &str, part: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT pos FROM positions WHERE step = ?1 AND part = ?2")
            .and_then(|mut st| st.query_row([step, part], |r| r.get(0)).optional())
            .map_err(sql_err(self.path))
    }

    fn put_position(&mut self, step: &str, part: &str, pos: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO positions (step, part, pos) VALUES (?1, ?2, ?3)
                 ON CONFLICT (step, part) DO UPDATE SET pos = excluded.pos",
            )
            .and_then(|mut st| st.execute(params![step, part, pos]))
            .map(drop)
            .map_err(sql_err(self.path))
    }

    fn put_dead_letter(&mut self, d: &DeadLetter) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO dead_letters (step, part, pos, at, message, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![d.step, d.part, d.pos, d.at.0, d.message, d.error])
            })
            .map(drop)
            .map_err(sql_err(self.path))
    }

    fn watcher_status(&self, name: &str) -> Result<Option<StepStatus>, StoreError> {
        step_status(&self.conn, self.path, "watchers", name)
    }

    fn purge(&mut self, id: i64) -> Result<(), StoreError> {
        let rev = self.next_rev().map_err(sql_err(self.path))?;
        let run = || -> rusqlite::Result<()> {
            // Its tombstone for the events stream; those 100,000 revisions old go.
            self.conn
                .prepare_cached(
                    "INSERT INTO purged (rev, model, key) SELECT ?2, model, key FROM objects
                     WHERE id = ?1",
                )?
                .execute(params![id, rev])?;
            self.conn
                .prepare_cached("DELETE FROM purged WHERE rev <= ?1")?
                .execute([rev - PURGED_KEPT])?;
            self.conn
                .prepare_cached("DELETE FROM objects WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        };
        run().map_err(sql_err(self.path))
    }

    fn fence(&mut self, worker: &str, claims: &[Claim]) -> Result<Vec<bool>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "UPDATE object_leases SET expires = 0 WHERE obj = ?1 AND owner = ?2 AND epoch = ?3
                 AND expires > 0",
            )
            .map_err(sql_err(self.path))?;
        claims
            .iter()
            .map(|c| {
                st.execute(params![c.obj, worker, c.epoch])
                    .map(|n| n > 0)
                    .map_err(sql_err(self.path))
            })
            .collect()
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.done = true;
        if let Some(rev) = self.rev
            && let Err(e) = self
                .conn
                .prepare_cached("UPDATE revision SET n = ?1")
                .and_then(|mut st| st.execute([rev]))
        {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(sql_err(self.path)(e));
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(sql_err(self.path)(e));
        }
        Ok(())
    }
}

// The behaviour both stores share is tested once for both, in `super::suite`; these are
// SQLite's own.
#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stepsync-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("state.db")
    }

    #[test]
    fn version_1_stores_get_their_pending_marks() {
        let path = tmp("v1");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO objects (model, key, fields, generation, synced_generation, status,
                   created, updated) VALUES
                   ('Site', 'new', '{}', 1, 0, 'pending', 1, 1),
                   ('Site', 'done', '{}', 1, 1, 'ok', 1, 1);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.counts().unwrap().pending, 1);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn millis_format_rfc3339() {
        assert_eq!(Millis(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Millis(1_767_225_600_000).rfc3339(), "2026-01-01T00:00:00Z");
    }
}
