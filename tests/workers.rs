//! Several workers on one PostgreSQL store (SPEC §17), through the real binary: every run
//! claimed by one worker, never two requests for one object at once, a killed worker's
//! objects taken over within the ttl, a paused worker's late outcome fenced off, and the
//! dependency order and error propagation holding across workers. The database is a fresh
//! one per test on the server at `STEPSYNC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`), which `scripts/test.sh` starts.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Service;
use crate::common::client::{exchange, listening_addr};
use crate::common::fixtures::{SITE_SLICE, rest_stepdef};
use crate::common::http::{Recorded, TestServer};

/// The claims' ttl in these tests: short, so takeovers are quick to wait for.
const TTL_S: u64 = 3;

fn pg_server() -> String {
    std::env::var("STEPSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Runs `sql` on the test server's `postgres` database, on a thread of its own (the client
/// blocks on a runtime of its own).
fn admin(sql: String) {
    let url = format!("{}/postgres", pg_server());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} (scripts/test.sh starts it): {e}"));
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .join()
    .expect("admin thread");
}

/// A database of its own, dropped with this.
struct Db(String);

impl Db {
    fn new() -> Db {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("stepsync_workers_{}_{nanos}", std::process::id());
        admin(format!("CREATE DATABASE {name}"));
        Db(name)
    }
    fn url(&self) -> String {
        format!("{}/{}", pg_server(), self.0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        admin(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}

/// Site and Slice on `server`, on the database, each worker running 16 at a time.
fn service(server: &TestServer, db: &Db) -> Service {
    let svc = Service::new(SITE_SLICE);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: workers-test\nstore: {}\nvars: {{base: \"{}\"}}\nconcurrency: 16\n\
             lease: {{ttl: {TTL_S}s}}\n",
            db.url(),
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    svc.file("stepdefs/slice.yaml", &rest_stepdef("Slice", "slices", ""));
    svc
}

/// A `stepsync run` worker with its log in the service directory.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn start(svc: &Service, name: &str) -> Worker {
        let log = svc.path().join(format!("{name}.log"));
        let child = svc
            .command(&["run"])
            .env("RUST_LOG", "stepsync=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start a worker");
        Worker { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of every object of `model`, by key.
fn statuses(svc: &Service, model: &str) -> HashMap<String, String> {
    let out = svc.ok(&["get", model, "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("get -o json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap_or_default().to_owned(),
                o["status"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Waits until `model` has `n` objects and `done` holds for their statuses; how long it took.
fn wait_until(
    svc: &Service,
    model: &str,
    n: usize,
    timeout: Duration,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let st = statuses(svc, model);
        if st.len() == n && done(&st) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "{model} not as wanted after {timeout:?}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_ok(st: &HashMap<String, String>) -> bool {
    st.values().all(|s| s == "ok")
}

/// The paths two of whose requests were in flight at once.
fn overlapping(requests: &[Recorded]) -> Vec<String> {
    let mut by_path: HashMap<&str, Vec<&Recorded>> = HashMap::new();
    for r in requests {
        by_path.entry(r.path.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (path, mut rs) in by_path {
        rs.sort_by_key(|r| r.start);
        if rs
            .windows(2)
            .any(|w| w[0].end.is_none_or(|end| w[1].start < end))
        {
            out.push(path.to_owned());
        }
    }
    out
}

/// `PUT /sites/<key>` requests, by key.
fn puts(server: &TestServer, what: &str) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for r in server.requests() {
        if r.method == "PUT"
            && let Some(key) = r.path.strip_prefix(&format!("/{what}/"))
        {
            *n.entry(key.to_owned()).or_default() += 1;
        }
    }
    n
}

fn sites(n: usize) -> String {
    let mut s = String::from("Site:\n");
    for i in 0..n {
        s.push_str(&format!("  - {{name: s{i:03}}}\n"));
    }
    s
}

#[test]
fn three_workers_sync_every_object_exactly_once_and_never_one_twice_at_a_time() {
    let server = TestServer::start();
    // Long enough that the three workers' passes overlap.
    server.set_delay(Duration::from_millis(100));
    let db = Db::new();
    let svc = service(&server, &db);
    let workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start(&svc, &format!("w{i}")))
        .collect();
    // Each worker registered before the objects arrive, so all three have work to share.
    wait_for_workers(&svc, 3);
    svc.file("objects.yaml", &sites(150));
    svc.ok(&["apply", "-f", "objects.yaml"]);
    wait_until(&svc, "Site", 150, Duration::from_secs(60), all_ok);
    let puts = puts(&server, "sites");
    assert_eq!(puts.len(), 150, "every object synced");
    let twice: Vec<_> = puts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "synced more than once: {twice:?}\n{}",
        workers
            .iter()
            .map(|w| w.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    assert_eq!(overlapping(&server.requests()), Vec::<String>::new());
    // The work was shared: more than one worker ran objects.
    let ran: Vec<usize> = workers
        .iter()
        .map(|w| w.log().matches(" ok").count())
        .collect();
    assert!(
        ran.iter().filter(|n| **n > 0).count() >= 2,
        "runs per worker: {ran:?}"
    );
}

/// Waits until `status` lists `n` workers.
fn wait_for_workers(svc: &Service, n: usize) {
    let t0 = Instant::now();
    loop {
        let out = svc.ok(&["status", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).expect("status -o json");
        if v["workers"].as_array().is_some_and(|w| w.len() == n) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "not {n} workers: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_workers_objects_are_taken_over_within_the_ttl_and_nothing_is_lost() {
    let server = TestServer::start();
    // Its requests never answer in time: the worker is killed with them in flight.
    server.set_delay(Duration::from_secs(60));
    let db = Db::new();
    let svc = service(&server, &db);
    svc.file("objects.yaml", &sites(40));
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let mut a = Worker::start(&svc, "a");
    let t0 = Instant::now();
    while server.requests().len() < 16 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no runs in flight");
        std::thread::sleep(Duration::from_millis(20));
    }
    let in_flight: Vec<String> = puts(&server, "sites").into_keys().collect();
    let _ = a.child.kill();
    let _ = a.child.wait();
    let killed = Instant::now();
    assert!(journal_rows(&db) > 0, "the killed worker left its journal");
    server.set_delay(Duration::ZERO);
    let _b = Worker::start(&svc, "b");
    wait_until(&svc, "Site", 40, Duration::from_secs(TTL_S + 30), all_ok);
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(TTL_S + 5),
        "converged {took:?} after the kill (ttl {TTL_S} s)"
    );
    // What the killed worker had in flight was sent again by the other.
    let puts = puts(&server, "sites");
    for key in &in_flight {
        assert_eq!(puts[key], 2, "{key}: {puts:?}");
    }
    assert_eq!(puts.len(), 40);
    // The leader retires the dead worker once its heartbeat is two ttls old: it leaves
    // `status`, and its journal (the folders it had in flight) is repaired and cleared.
    wait_for_workers(&svc, 1);
    assert_eq!(journal_rows(&db), 0);
    assert!(
        b_log(&svc).contains("retired a worker that stopped beating"),
        "{}",
        b_log(&svc)
    );
}

/// Rows in the journal of `db` (every worker's).
fn journal_rows(db: &Db) -> i64 {
    let url = db.url();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.query_one("SELECT count(*) FROM journal", &[])
            .expect("count the journal")
            .get(0)
    })
    .join()
    .expect("query thread")
}

fn b_log(svc: &Service) -> String {
    std::fs::read_to_string(svc.path().join("b.log")).unwrap_or_default()
}

#[test]
fn a_paused_workers_late_outcome_is_fenced_off_and_the_newer_outcome_stays() {
    let server = TestServer::start();
    let db = Db::new();
    let svc = service(&server, &db);
    // Its first PUT of x fails, and slowly; the next one succeeds at once.
    server.respond("PUT", "/sites/x", 500, "{\"error\": \"first try\"}");
    server.hold("/sites/x", Duration::from_secs(TTL_S + 3));
    svc.file("objects.yaml", "Site:\n  - {name: x}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let paused = Worker::start(&svc, "paused");
    server
        .wait_for("PUT /sites/x", Duration::from_secs(20))
        .expect("a first PUT of x");
    paused.signal("-STOP");
    server.forget("PUT", "/sites/x");
    server.hold("/sites/x", Duration::ZERO);
    // Another worker takes x over once the paused one's claim expires, and syncs it.
    let other = Worker::start(&svc, "other");
    wait_until(&svc, "Site", 1, Duration::from_secs(TTL_S * 4 + 10), all_ok);
    paused.signal("-CONT");
    // The paused worker's 500 comes back after the other's success: fenced off.
    let t0 = Instant::now();
    while !paused.log().contains("lost the claim") {
        assert!(
            t0.elapsed() < Duration::from_secs(TTL_S + 15),
            "no fenced outcome; paused: {}",
            paused.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whatever it does next, x stays as the other worker left it.
    std::thread::sleep(Duration::from_secs(1));
    let x = svc.object("Site", "x");
    assert_eq!(x["status"]["status"], "ok", "{x}\nother: {}", other.log());
    assert_eq!(puts(&server, "sites")["x"], 2);
}

#[test]
fn a_dependency_chain_across_workers_runs_in_order_and_a_failure_blocks_only_its_dependents() {
    let server = TestServer::start();
    server.set_delay(Duration::from_millis(50));
    server.respond("PUT", "/sites/bad", 500, "{\"error\": \"no\"}");
    let db = Db::new();
    let svc = service(&server, &db);
    let _workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start(&svc, &format!("w{i}")))
        .collect();
    wait_for_workers(&svc, 3);
    let mut objects = String::from("Site:\n  - {name: bad}\n");
    for i in 0..12 {
        objects.push_str(&format!("  - {{name: s{i}}}\n"));
    }
    objects.push_str("Slice:\n  - {name: on-bad, site: bad}\n");
    for i in 0..12 {
        for j in 0..3 {
            objects.push_str(&format!("  - {{name: s{i}-{j}, site: s{i}}}\n"));
        }
    }
    svc.file("objects.yaml", &objects);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    wait_until(&svc, "Slice", 37, Duration::from_secs(60), |st| {
        st.iter().all(|(k, s)| {
            if k == "on-bad" {
                s == "blocked"
            } else {
                s == "ok"
            }
        })
    });
    let sites = statuses(&svc, "Site");
    assert_eq!(sites["bad"], "error");
    assert_eq!(sites.values().filter(|s| *s == "ok").count(), 12);
    // Every slice's PUT began after its site's PUT had been answered.
    let requests = server.requests();
    let answered: HashMap<&str, Instant> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with("/sites/"))
        .filter_map(|r| Some((&r.path["/sites/".len()..], r.end?)))
        .collect();
    for r in requests.iter().filter(|r| r.path.starts_with("/slices/")) {
        let slice = &r.path["/slices/".len()..];
        assert_ne!(slice, "on-bad", "a slice of the failed site was sent");
        let site = slice.split('-').next().unwrap();
        assert!(r.start >= answered[site], "{slice} before its site {site}");
    }
}

/// Every object `get -o json` shows, without the ids (a copy numbers objects anew).
fn everything(svc: &Service) -> String {
    let mut out = String::new();
    for args in [
        &["get", "-o", "json"][..],
        &["get", "Site", "-o", "json"],
        &["get", "Slice", "-o", "json"],
    ] {
        out.push_str(&svc.ok(args).stdout);
    }
    out.lines()
        .filter(|l| !l.trim_start().starts_with("\"id\":"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `sql` on database `db` of the test server.
fn on_db(db: &Db, sql: &str) {
    let (url, sql) = (db.url(), sql.to_owned());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .join()
    .expect("sql thread");
}

#[test]
fn store_copy_moves_a_service_between_sqlite_and_postgresql_all_or_nothing() {
    let server = TestServer::start();
    server.respond("PUT", "/sites/bad", 500, "{\"error\": \"no\"}");
    let svc = Service::new(SITE_SLICE);
    svc.file(
        "stepsync.yaml",
        &format!("name: copy-test\nvars: {{base: \"{}\"}}\n", server.url),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    svc.file("stepdefs/slice.yaml", &rest_stepdef("Slice", "slices", ""));
    let mut objects = sites(30);
    objects.push_str(
        "  - {name: bad}\nSlice:\n  - {name: on-bad, site: bad}\n  - {name: ok1, site: s001}\n",
    );
    svc.file("objects.yaml", &objects);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.expect(&["run", "--once"], 1);
    let before = everything(&svc);

    // Into a target that fails half way (a trigger of the test's): nothing is left there.
    let db = Db::new();
    let pg = db.url();
    svc.ok(&["store", "migrate", &pg]);
    on_db(
        &db,
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF (SELECT count(*) FROM objects) >= 20 THEN RAISE EXCEPTION 'boom at 20'; END IF;
           RETURN NEW; END $$;
         CREATE TRIGGER boom BEFORE INSERT ON objects FOR EACH ROW EXECUTE FUNCTION boom();",
    );
    let failed = svc.expect(&["store", "copy", "sqlite:.stepsync/state.db", &pg], 1);
    assert!(failed.stderr.contains("boom at 20"), "{}", failed.stderr);
    let info = svc.ok(&["store", "info", &pg]).stdout;
    assert!(info.contains("objects:   0"), "{info}");
    on_db(&db, "DROP TRIGGER boom ON objects");

    // Then whole: the same objects, statuses, messages and feedback on PostgreSQL.
    let copied = svc
        .ok(&["store", "copy", "sqlite:.stepsync/state.db", &pg])
        .stdout;
    assert!(copied.contains("33 objects"), "{copied}");
    // A second copy into it is refused: it is no longer empty.
    let again = svc.expect(&["store", "copy", "sqlite:.stepsync/state.db", &pg], 1);
    assert!(
        again.stderr.contains("already holds objects"),
        "{}",
        again.stderr
    );
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: copy-test\nstore: {pg}\nvars: {{base: \"{}\"}}\n",
            server.url
        ),
    );
    let after = everything(&svc);
    assert!(
        after == before,
        "the copy differs:\n{after}\nfrom:\n{before}"
    );
    // Nothing turned suspect or pending: a run on the copy sends nothing new.
    let sent = server.requests().len();
    svc.expect(&["run", "--once"], 1);
    let resent: Vec<String> = server.requests()[sent..]
        .iter()
        .map(Recorded::line)
        .filter(|l| !l.contains("/bad"))
        .collect();
    assert!(resent.is_empty(), "sent again after the copy: {resent:?}");

    // And back into a fresh SQLite file, the same again.
    let after = everything(&svc);
    svc.ok(&["store", "copy", &pg, "sqlite:back.db"]);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: copy-test\nstore: sqlite:back.db\nvars: {{base: \"{}\"}}\n",
            server.url
        ),
    );
    let back = everything(&svc);
    assert!(
        back == after,
        "the copy back differs:\n{back}\nfrom:\n{after}"
    );
}

/// GETs `path` of the API at `addr` (no token: serve answers this host on loopback); the
/// status and the body.
fn api(addr: &str, path: &str) -> (u16, String) {
    let (code, _, body) = exchange(addr, "GET", path, "", "");
    (code, body)
}

#[test]
fn status_and_the_api_show_every_worker_its_heartbeat_claims_and_the_leader() {
    let server = TestServer::start();
    server.set_delay(Duration::from_secs(30));
    let db = Db::new();
    let svc = service(&server, &db);
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &format!("{cfg}serve: {{listen: 127.0.0.1:0}}\n"),
    );
    let _run = Worker::start(&svc, "run");
    let mut serve = svc
        .command(&["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let addr = listening_addr(&mut serve);
    // Killed on drop, whatever fails below.
    let serve = Worker {
        child: serve,
        log: svc.path().join("serve.log"),
    };
    wait_for_workers(&svc, 2);
    // Objects the backend holds for 30 s: each claimed by one worker while we look.
    svc.file("objects.yaml", &sites(8));
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let t0 = Instant::now();
    while server.requests().len() < 8 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "not every object in flight"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = api(&addr, "/api/v1/status");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    let workers = v["workers"].as_array().expect("workers").clone();
    assert_eq!(workers.len(), 2, "{v}");
    assert_eq!(
        workers.iter().filter(|w| w["leads"] == true).count(),
        1,
        "exactly one leads: {v}"
    );
    let claims: u64 = workers.iter().map(|w| w["claims"].as_u64().unwrap()).sum();
    assert_eq!(claims, 8, "every in-flight object is claimed once: {v}");
    assert!(
        workers.iter().any(|w| w["pid"] == serve.child.id()),
        "serve is a worker: {v}"
    );
    for w in &workers {
        assert!(
            w["heartbeat"].as_str().is_some_and(|h| !h.is_empty()),
            "{w}"
        );
    }
    // The CLI shows the same workers, and serve is ready as a worker of the shared store.
    let out = svc.ok(&["status"]).stdout;
    assert!(out.contains("Workers"), "{out}");
    assert_eq!(api(&addr, "/readyz").0, 200);
}

/// How long after `apply` of one new Site named `key` its request reaches `server`.
fn apply_to_request(svc: &Service, server: &TestServer, key: &str) -> Duration {
    svc.file(&format!("{key}.yaml"), &format!("Site:\n  - name: {key}\n"));
    let t0 = Instant::now();
    svc.ok(&["apply", "-f", &format!("{key}.yaml")]);
    server
        .wait_for(&format!("PUT /sites/{key}"), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{key} never reached the backend"));
    t0.elapsed()
}

#[test]
fn a_worker_wakes_on_notify_and_listens_again_after_its_connection_is_cut() {
    let server = TestServer::start();
    let db = Db::new();
    let svc = service(&server, &db);
    // A 60 s ttl makes the fallback poll 5 s (a third of it, at most 5 s): a wake-up well
    // inside that comes from the notification.
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &cfg.replace(&format!("ttl: {TTL_S}s"), "ttl: 60s"),
    );
    let w = Worker::start(&svc, "w");
    wait_for_workers(&svc, 1);
    let t0 = Instant::now();
    while !w.log().contains("woken by LISTEN/NOTIFY") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each of three applies, a second apart, would wait for the 5 s poll without the hint.
    let mut took = Vec::new();
    for i in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        took.push(apply_to_request(&svc, &server, &format!("n{i}")));
    }
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(2500)),
        "apply to request: {took:?}\n{}",
        w.log()
    );

    // The server cuts the listening connection (as a restart would): the worker says it
    // polls, connects again, and is woken by the hints again.
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{}' AND query LIKE 'LISTEN%'",
        db.0
    ));
    let t0 = Instant::now();
    while !w.log().contains("listening for changes again") {
        assert!(t0.elapsed() < Duration::from_secs(15), "{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.log().contains("not listening for changes"), "{}", w.log());
    let again = apply_to_request(&svc, &server, "after");
    assert!(
        again < Duration::from_millis(2500),
        "apply to request after the cut: {again:?}\n{}",
        w.log()
    );
}
