//! The engine against a real HTTP server that can fail, hold or defer per object: ordering,
//! concurrency, blocking, backoff, deferral, deletion, lost updates and the daemon
//! (SPEC §4.2, §5).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Service;
use crate::common::fixtures::{DIR_SCHEMA, SITE_SLICE, SITE_SLICE_TREE as TREE, rest_stepdef};
use crate::common::http::TestServer;

fn setup(config_extra: &str, objects: &str) -> (Service, TestServer) {
    let server = TestServer::start();
    let svc = Service::new(SITE_SLICE);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: engine-test\nvars: {{base: \"{}\"}}\n{config_extra}",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    svc.file("stepdefs/slice.yaml", &rest_stepdef("Slice", "slices", ""));
    svc.file("objects.yaml", objects);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    (svc, server)
}

fn status(svc: &Service, model: &str, key: &str) -> serde_json::Value {
    svc.object(model, key)["status"].clone()
}

#[test]
fn no_request_before_its_dependencies_completed() {
    let (svc, server) = setup("", TREE);
    server.set_delay(Duration::from_millis(150));
    svc.ok(&["run", "--once"]);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 6);
    for slice in reqs.iter().filter(|r| r.path.starts_with("/slices/")) {
        let site = if slice.path.contains("/a") {
            "/sites/a"
        } else {
            "/sites/b"
        };
        let dep = reqs.iter().find(|r| r.path == site).unwrap();
        assert!(
            slice.start >= dep.end.unwrap(),
            "{} started before {site} completed",
            slice.path
        );
    }
}

#[test]
fn independent_objects_overlap_up_to_the_concurrency_limit() {
    let many: String = (0..8).map(|i| format!("  - {{name: s{i}}}\n")).collect();
    let (svc, server) = setup("concurrency: 3\n", &format!("Site:\n{many}"));
    server.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    svc.ok(&["run", "--once"]);
    assert_eq!(server.requests().len(), 8);
    assert_eq!(
        server.max_in_flight(),
        3,
        "several in flight, never more than `concurrency`"
    );
    assert!(
        t.elapsed() < Duration::from_millis(8 * 300),
        "ran concurrently"
    );

    // A stepdef's own `concurrency` caps its model below the global limit.
    let (svc, server) = setup("concurrency: 10\n", &format!("Site:\n{many}"));
    svc.file(
        "stepdefs/site.yaml",
        &rest_stepdef("Site", "sites", "concurrency: 2\n"),
    );
    server.set_delay(Duration::from_millis(200));
    svc.ok(&["run", "--once"]);
    assert_eq!(server.max_in_flight(), 2);
    // The command-line flag overrides the config.
    let (svc, server) = setup("concurrency: 10\n", &format!("Site:\n{many}"));
    server.set_delay(Duration::from_millis(200));
    svc.ok(&["run", "--once", "--concurrency", "1"]);
    assert_eq!(server.max_in_flight(), 1);
}

#[test]
fn a_failure_blocks_only_its_dependents_and_they_converge_once_it_heals() {
    let (svc, server) = setup("backoff: {initial: 1h}\n", TREE);
    server.respond("PUT", "/sites/a", 500, "site a is broken");
    let out = svc.expect(&["run", "--once"], 1);
    assert_eq!(
        status(&svc, "Site", "a")["status"],
        "error",
        "{}",
        out.stdout
    );
    assert_eq!(status(&svc, "Site", "b")["status"], "ok");
    for k in ["b1", "b2"] {
        assert_eq!(
            status(&svc, "Slice", k)["status"],
            "ok",
            "the siblings under b are synced"
        );
    }
    for k in ["a1", "a2"] {
        let st = status(&svc, "Slice", k);
        assert_eq!(st["status"], "blocked");
        assert_eq!(st["backend_code"], 2);
        assert_eq!(st["failures"], 0);
        let msg = st["message"].as_str().unwrap();
        assert!(msg.starts_with("blocked by Site/a: "), "{msg}");
        assert!(msg.contains("site a is broken"), "{msg}");
    }
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.starts_with("PUT /slices/a"))
    );

    // Heal the backend; the backoff (1h) holds the retry until `retry` clears it.
    server.forget("PUT", "/sites/a");
    server.clear();
    svc.expect(&["run", "--once"], 1);
    assert!(
        server.requests().is_empty(),
        "not retried before next_retry_at"
    );
    svc.test()
        .args(["retry", "Site", "a"])
        .stdout_contains("Site/a: backoff cleared")
        .run();
    svc.ok(&["run", "--once"]);
    for (m, k) in [("Site", "a"), ("Slice", "a1"), ("Slice", "a2")] {
        assert_eq!(status(&svc, m, k)["status"], "ok");
    }
}

fn secs(ts: &serde_json::Value) -> i64 {
    // RFC 3339, whole seconds: compare through the time of day.
    let s = ts.as_str().unwrap();
    let t = &s[11..19];
    let p: Vec<i64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600 + p[1] * 60 + p[2]
}

#[test]
fn backoff_grows_by_the_factor_up_to_max_and_deferral_does_not_count() {
    let (svc, server) = setup(
        "backoff: {initial: 2s, factor: 2, max: 4s, jitter: 0}\n",
        "Site:\n  - {name: a}\n  - {name: d}\n",
    );
    server.respond("PUT", "/sites/a", 500, "down");
    server.respond("PUT", "/sites/d", 503, "busy");
    let mut intervals = Vec::new();
    for attempt in 1..=3 {
        svc.expect(&["run", "--once"], 1);
        let st = status(&svc, "Site", "a");
        assert_eq!(st["failures"], attempt);
        intervals.push(secs(&st["next_retry_at"]) - secs(&st["last_error_at"]));
        // Not retried before next_retry_at.
        server.clear();
        svc.expect(&["run", "--once"], 1);
        assert!(
            !server.lines().contains(&"PUT /sites/a".to_owned()),
            "retried too early"
        );
        // The deferred object is tried again on every run, without failures.
        assert!(server.lines().contains(&"PUT /sites/d".to_owned()));
        let d = status(&svc, "Site", "d");
        assert_eq!(
            (d["status"].as_str(), d["failures"].as_i64()),
            (Some("deferred"), Some(0))
        );
        std::thread::sleep(Duration::from_millis(
            u64::try_from(intervals[attempt - 1] * 1000 + 1100).unwrap(),
        ));
    }
    // 2s, 4s, then capped at 4s (±1s for whole-second timestamps).
    let expect = [2, 4, 4];
    for (got, want) in intervals.iter().zip(expect) {
        assert!(
            (got - want).abs() <= 1,
            "intervals {intervals:?}, wanted {expect:?}"
        );
    }
    assert!(intervals[1] > intervals[0]);
}

#[test]
fn deletes_run_dependents_first_and_purge() {
    let (svc, server) = setup("", TREE);
    svc.ok(&["run", "--once"]);
    server.clear();
    server.set_delay(Duration::from_millis(100));
    svc.ok(&["delete", "Site", "a", "--cascade"]);
    let st = status(&svc, "Site", "a");
    assert_eq!(st["status"], "deleting");
    svc.ok(&["run", "--once"]);
    let reqs = server.requests();
    let site = reqs
        .iter()
        .find(|r| r.line() == "DELETE /sites/a")
        .expect("site delete");
    for k in ["a1", "a2"] {
        let slice = reqs
            .iter()
            .find(|r| r.line() == format!("DELETE /slices/{k}"))
            .expect("slice delete");
        assert!(
            slice.end.unwrap() <= site.start,
            "{k} was deleted before its site"
        );
    }
    assert_eq!(svc.keys("Site"), ["b"]);
    assert_eq!(svc.keys("Slice"), ["b1", "b2"]);
    svc.expect(&["get", "Site", "a"], 1);
}

#[test]
fn a_failed_delete_is_retried_with_backoff() {
    let (svc, server) = setup("backoff: {initial: 1h}\n", "Site:\n  - {name: a}\n");
    svc.ok(&["run", "--once"]);
    server.respond("DELETE", "/sites/a", 500, "nope");
    svc.ok(&["delete", "Site", "a"]);
    svc.expect(&["run", "--once"], 1);
    let st = status(&svc, "Site", "a");
    assert_eq!(
        (st["status"].as_str(), st["deleted"].as_bool()),
        (Some("error"), Some(true))
    );
    assert_eq!(st["failures"], 1);
    server.forget("DELETE", "/sites/a");
    server.clear();
    svc.expect(&["run", "--once"], 1);
    assert!(server.requests().is_empty(), "waits for the backoff");
    svc.ok(&["retry", "Site"]);
    svc.ok(&["run", "--once"]);
    assert!(svc.keys("Site").is_empty());
}

#[test]
fn an_update_during_a_run_is_not_lost() {
    let (svc, server) = setup("", "Site:\n  - {name: a, login_base: one}\n");
    server.hold("/sites/a", Duration::from_millis(1500));
    let child = svc
        .command(&["run", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the first PUT");
    svc.file("objects.yaml", "Site:\n  - {name: a, login_base: two}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bodies: Vec<String> = server.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(
        bodies,
        [
            r#"{"name":"a","login":"one"}"#,
            r#"{"name":"a","login":"two"}"#
        ]
    );
    let st = status(&svc, "Site", "a");
    assert_eq!(
        (st["generation"].as_i64(), st["synced_generation"].as_i64()),
        (Some(2), Some(2))
    );
}

#[test]
fn object_cycles_are_errors_on_those_objects() {
    let server = TestServer::start();
    let svc = Service::new(DIR_SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!("name: t\nvars: {{base: \"{}\"}}\n", server.url),
    );
    svc.file("stepdefs/dir.yaml", &rest_stepdef("Dir", "dirs", ""));
    svc.file("o.yaml", "Dir:\n  - {name: x, parent: y}\n  - {name: y, parent: x}\n  - {name: root}\n  - {name: leaf, parent: root}\n");
    svc.ok(&["apply", "-f", "o.yaml"]);
    svc.expect(&["run", "--once"], 1);
    for k in ["x", "y"] {
        let st = status(&svc, "Dir", k);
        assert_eq!(st["status"], "error");
        assert_eq!(
            st["message"],
            "dependency cycle between objects: Dir/x, Dir/y"
        );
    }
    assert_eq!(
        status(&svc, "Dir", "leaf")["status"],
        "ok",
        "a tree is fine"
    );
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.ends_with("/x") || l.ends_with("/y"))
    );
}

#[test]
fn graph_prints_models_and_objects() {
    let (svc, _server) = setup("", TREE);
    svc.test()
        .args(["graph"])
        .stdout("Site\nSlice -> Site\n")
        .run();
    svc.test()
        .args(["graph", "--format", "dot"])
        .stdout_matches("^digraph stepsync \\{")
        .stdout_contains("\"Slice\" -> \"Site\";")
        .run();
    svc.test()
        .args(["graph", "--objects"])
        .stdout_contains("Slice/a1 -> Site/a\n")
        .stdout_contains("Site/b\n")
        .run();
}

#[test]
fn the_daemon_notices_applies_within_a_second_and_stops_gracefully() {
    let (svc, server) = setup("", "Site:\n  - {name: a}\n");
    let mut daemon = svc
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("initial pass");
    std::thread::sleep(Duration::from_millis(300));

    // An apply by another process reaches the backend within a second.
    let mut worst = Duration::ZERO;
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        svc.file("more.yaml", &format!("Site:\n  - {{name: n{i}}}\n"));
        let t = Instant::now();
        svc.ok(&["apply", "-f", "more.yaml"]);
        let applied = t.elapsed();
        server
            .wait_for(&format!("PUT /sites/n{i}"), Duration::from_secs(5))
            .expect("actuated");
        worst = worst.max(t.elapsed() - applied);
    }
    eprintln!("slowest apply-to-request latency: {worst:?}");
    assert!(
        worst < Duration::from_secs(1),
        "slowest apply-to-request: {worst:?}"
    );

    // SIGTERM while a request is held: the run finishes and its outcome is recorded.
    server.hold("/sites/slow", Duration::from_millis(1500));
    svc.file("more.yaml", "Site:\n  - {name: slow}\n");
    svc.ok(&["apply", "-f", "more.yaml"]);
    server
        .wait_for("PUT /sites/slow", Duration::from_secs(5))
        .expect("slow request in flight");
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let t = Instant::now();
    let code = loop {
        if let Some(c) = daemon.try_wait().unwrap() {
            break c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code.code(), Some(0));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "it waited for the run in flight"
    );
    assert_eq!(status(&svc, "Site", "slow")["status"], "ok");
}

/// The daemon keeps its objects between passes and reads only what was written since
/// (B4), so a write the events stream does not show must reach it too: `retry` clears a
/// backoff and leaves the status and message as they were.
#[test]
fn the_daemon_retries_at_once_when_another_process_clears_a_backoff() {
    let (svc, server) = setup("backoff: {initial: 1h}\n", "Site:\n  - {name: a}\n");
    server.respond("PUT", "/sites/a", 500, "site a is broken");
    let daemon = svc.daemon_guard();
    let t = Instant::now();
    while status(&svc, "Site", "a")["status"] != "error" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the first sync failed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.forget("PUT", "/sites/a");
    server.clear();
    // A pass in between, woken by another object's apply, keeps the backoff's wait.
    svc.file("more.yaml", "Site:\n  - {name: b}\n");
    svc.ok(&["apply", "-f", "more.yaml"]);
    server
        .wait_for("PUT /sites/b", Duration::from_secs(5))
        .expect("b synced");
    assert!(
        !server.lines().iter().any(|l| l.starts_with("PUT /sites/a")),
        "not retried before next_retry_at"
    );
    svc.ok(&["retry", "Site", "a"]);
    let retried = server.wait_for("PUT /sites/a", Duration::from_secs(5));
    drop(daemon);
    retried.expect("retried once the backoff was cleared");
}

/// The daemon keeps its object graph between passes while only plain fields change; a
/// changed reference makes it build the graph again, so the object waits on its new
/// dependency, not the old one.
#[test]
fn the_daemon_follows_a_reference_that_moved_to_a_failed_object() {
    let (svc, server) = setup("backoff: {initial: 1h}\n", TREE);
    server.respond("PUT", "/sites/b", 500, "site b is broken");
    let daemon = svc.daemon_guard();
    let t = Instant::now();
    while status(&svc, "Slice", "b2")["status"] != "blocked"
        || status(&svc, "Slice", "a2")["status"] != "ok"
    {
        assert!(t.elapsed() < Duration::from_secs(10), "the first sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.clear();
    // a1 now refers to the broken site b; site a only changes a plain field.
    svc.file(
        "moved.yaml",
        "Site:\n  - {name: a, login_base: x}\nSlice:\n  - {name: a1, site: b}\n",
    );
    svc.ok(&["apply", "-f", "moved.yaml"]);
    let a = server.wait_for("PUT /sites/a", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let sent_a1 = server
        .lines()
        .iter()
        .any(|l| l.starts_with("PUT /slices/a1"));
    let a1 = status(&svc, "Slice", "a1");
    drop(daemon);
    a.expect("site a's change synced");
    assert!(
        !sent_a1,
        "a1 was sent though it now depends on the failed site b"
    );
    assert_eq!(a1["status"], "blocked", "{a1}");
    assert!(
        a1["message"]
            .as_str()
            .unwrap()
            .starts_with("blocked by Site/b"),
        "{a1}"
    );
}

#[test]
fn resync_re_actuates_in_sync_objects_after_the_period() {
    let (svc, server) = setup("", "Site:\n  - {name: a}\n");
    svc.file(
        "stepdefs/site.yaml",
        &rest_stepdef("Site", "sites", "resync: 1s\n"),
    );
    svc.ok(&["run", "--once"]);
    server.clear();
    svc.ok(&["run", "--once"]);
    assert!(server.requests().is_empty(), "not before the period");
    std::thread::sleep(Duration::from_millis(1100));
    svc.ok(&["run", "--once"]);
    assert_eq!(
        server.lines(),
        ["PUT /sites/a"],
        "once per run, not in a loop"
    );
}
