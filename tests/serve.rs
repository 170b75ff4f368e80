//! `stepsync serve` (SPEC §16) through the real binary: the probes, bearer tokens (401
//! without one, 403 for a read token on a write), the API's list with filters and
//! pagination, one object, the status, the OpenAPI document, no secret in any response,
//! `/metrics` families that move after a sync, and the refusal to listen beyond loopback
//! without tokens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Service;
use crate::common::client::{exchange, listening_addr};
use crate::common::fixtures::rest_stepdef;
use crate::common::http::TestServer;

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
";

const READ_ENV: &str = "STEPSYNC_SERVE_TEST_READ";
const WRITE_ENV: &str = "STEPSYNC_SERVE_TEST_WRITE";
const READ: &str = "read-tok-7f3a9c";
const WRITE: &str = "write-tok-b81e04";
/// A secret the service knows; an object that holds it must never show it.
const SECRET_ENV: &str = "STEPSYNC_SERVE_TEST_SECRET";
const SECRET: &str = "s3cr3t-Pa55-serve";

/// A running `serve` and where it listens.
struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange: (status, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_body(addr, method, path, token, "")
}

/// One HTTP/1.1 exchange with a request body.
fn http_body(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let (status, _, body) = exchange(
        addr,
        method,
        path,
        &format!("{auth}Content-Type: application/yaml\r\n"),
        body,
    );
    (status, body)
}

/// How many requests `line` (`PUT /sites/a`) the server has had.
fn count(server: &TestServer, line: &str) -> usize {
    server.lines().iter().filter(|l| *l == line).count()
}

fn json(addr: &str, path: &str, token: &str) -> Value {
    let (code, body) = http(addr, "GET", path, Some(token));
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// A service with a REST actuator for Site against `server`, tokens from the environment
/// when `tokens`, and the secret declared.
fn service(server: &TestServer, tokens: bool) -> Service {
    let svc = Service::new(SCHEMA);
    let tokens = if tokens {
        format!("  tokens: {{read: {{env: {READ_ENV}}}, write: {{env: {WRITE_ENV}}}}}\n")
    } else {
        String::new()
    };
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: serve-test
vars: {{base: \"{}\"}}
secrets:
  pw: {{env: {SECRET_ENV}}}
serve:
  listen: 127.0.0.1:0
{tokens}",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    svc
}

/// Starts `serve` with `args` and waits for its `listening on` line.
fn serve(svc: &Service, args: &[&str]) -> Served {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut child = svc
        .command(&all)
        .env(READ_ENV, READ)
        .env(WRITE_ENV, WRITE)
        .env(SECRET_ENV, SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let addr = listening_addr(&mut child);
    Served { child, addr }
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn tokens_guard_the_api_and_a_read_token_cannot_write() {
    let server = TestServer::start();
    let svc = service(&server, true);
    let s = serve(&svc, &[]);
    // The probes answer without a token.
    assert_eq!(http(&s.addr, "GET", "/healthz", None).0, 200);
    assert!(
        eventually(Duration::from_secs(10), || http(
            &s.addr, "GET", "/readyz", None
        )
        .0 == 200),
        "readyz never became ready while serve holds the lease"
    );
    for path in [
        "/api/v1/models",
        "/api/v1/objects",
        "/api/v1/status",
        "/metrics",
    ] {
        let (code, body) = http(&s.addr, "GET", path, None);
        assert_eq!(code, 401, "GET {path} without a token: {body}");
        let err: Value = serde_json::from_str(&body).expect("errors are JSON");
        assert!(
            err["error"].as_str().unwrap().contains("bearer token"),
            "{body}"
        );
        assert_eq!(
            http(&s.addr, "GET", path, Some("wrong")).0,
            401,
            "{path}: a wrong token"
        );
        assert_eq!(
            http(&s.addr, "GET", path, Some(READ)).0,
            200,
            "{path}: the read token"
        );
        assert_eq!(
            http(&s.addr, "GET", path, Some(WRITE)).0,
            200,
            "{path}: the write token"
        );
    }
    let (code, body) = http(&s.addr, "POST", "/api/v1/models", Some(READ));
    assert_eq!(code, 403, "a write with the read token: {body}");
    assert!(body.contains("write token"), "{body}");
    // The write token passes the guard (the route itself takes no POST).
    assert_eq!(http(&s.addr, "POST", "/api/v1/models", Some(WRITE)).0, 405);
}

#[test]
fn the_list_pages_and_filters_on_the_server_and_nothing_of_a_secret_is_returned() {
    let server = TestServer::start();
    for bad in ["bad-7", "bad-47", "bad-87"] {
        server.respond("PUT", &format!("/sites/{bad}"), 500, "boom");
    }
    let svc = service(&server, true);
    let mut objects = String::from("Site:\n");
    for i in 0..120 {
        // One object holds the secret's value, as a model value may.
        let login = if i == 3 {
            SECRET.to_owned()
        } else {
            format!("l{i}")
        };
        let name = if i % 40 == 7 {
            format!("bad-{i}")
        } else {
            format!("s{i:03}")
        };
        objects.push_str(&format!("  - {{name: {name}, login_base: \"{login}\"}}\n"));
    }
    svc.file("objects.yaml", &objects);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.test()
        .args(["run", "--once"])
        .env(SECRET_ENV, SECRET)
        .status(1)
        .run();
    let s = serve(&svc, &[]);
    // Every object exactly once, 50 at a time, in key order.
    let mut seen = Vec::new();
    let mut path = "/api/v1/objects?model=Site&limit=50".to_owned();
    let mut pages = 0;
    loop {
        let page = json(&s.addr, &path, READ);
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 50);
        seen.extend(items.iter().map(|o| o["key"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next"].as_str() {
            Some(n) => path = format!("/api/v1/objects?model=Site&limit=50&after={n}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "in key order, no repeats");
    assert_eq!(seen.len(), 120);
    // The status filter: the objects whose PUT failed, and only those.
    let errors = json(&s.addr, "/api/v1/objects?status=error", READ);
    let keys: Vec<&str> = errors["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["bad-47", "bad-7", "bad-87"], "{errors}");
    let prefixed = json(&s.addr, "/api/v1/objects?prefix=s11", READ);
    assert_eq!(
        prefixed["items"].as_array().unwrap().len(),
        10,
        "{prefixed}"
    );
    // Bad filters are the caller's error.
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects?status=nope", Some(READ)).0,
        400
    );
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects?model=Nope", Some(READ)).0,
        404
    );
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects?limit=0", Some(READ)).0,
        400
    );
    // One object; the one holding the secret shows it masked, in the list and alone.
    let one = json(&s.addr, "/api/v1/objects/Site/s003", READ);
    assert_eq!(one["fields"]["login_base"], "********", "{one}");
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects/Site/none", Some(READ)).0,
        404
    );
    for path in [
        "/api/v1/objects?limit=500",
        "/api/v1/objects/Site/s003",
        "/api/v1/models",
        "/api/v1/status",
        "/api/v1/openapi.json",
        "/metrics",
    ] {
        let (_, body) = http(&s.addr, "GET", path, Some(READ));
        assert!(!body.contains(SECRET), "{path} shows the secret: {body}");
        assert!(
            !body.contains(READ) && !body.contains(WRITE),
            "{path} shows a token"
        );
    }
    let models = json(&s.addr, "/api/v1/models", READ);
    assert_eq!(models[0]["name"], "Site");
    assert_eq!(models[0]["total"], 120);
}

#[test]
fn the_openapi_document_describes_every_api_route() {
    let server = TestServer::start();
    let svc = service(&server, true);
    let s = serve(&svc, &[]);
    let doc = json(&s.addr, "/api/v1/openapi.json", READ);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for p in [
        "/api/v1/models",
        "/api/v1/objects",
        "/api/v1/objects/{model}/{key}",
        "/api/v1/objects/{model}/{key}/files",
        "/api/v1/objects/{model}/{key}/graph",
        "/api/v1/status",
        "/api/v1/events",
    ] {
        assert!(
            doc["paths"][p]["get"].is_object(),
            "{p} is not in the document"
        );
    }
    for p in [
        "/api/v1/apply",
        "/api/v1/plan",
        "/api/v1/objects/{model}/{key}/retry",
    ] {
        assert!(
            doc["paths"][p]["post"].is_object(),
            "POST {p} is not in the document"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{doc}"
    );
    assert!(doc["components"]["schemas"]["ObjectView"].is_object());
}

/// The value of the sample `name{labels}` in a Prometheus text scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_runs_and_objects_and_move_after_a_sync() {
    let server = TestServer::start();
    server.respond("PUT", "/sites/b", 500, "boom");
    let svc = service(&server, true);
    let s = serve(&svc, &[]);
    let scrape = || http(&s.addr, "GET", "/metrics", Some(READ)).1;
    // The lease is taken once the daemon starts, just after the server listens.
    assert!(eventually(Duration::from_secs(10), || {
        http(&s.addr, "GET", "/readyz", None).0 == 200
    }));
    let before = scrape();
    for family in [
        "# TYPE stepsync_objects gauge",
        "# TYPE stepsync_runs_in_flight gauge",
        "# TYPE stepsync_queue_depth gauge",
        "# TYPE stepsync_lease_held gauge",
        "# TYPE stepsync_dead_letters gauge",
    ] {
        assert!(before.contains(family), "no `{family}` in {before}");
    }
    assert_eq!(
        sample(&before, "stepsync_objects{model=\"Site\",status=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&before, "stepsync_lease_held"), Some(1.0));
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a}\n  - {name: b}\n  - {name: c}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let ok = "stepsync_runs_total{model=\"Site\",phase=\"sync\",result=\"ok\"}";
    let failed = "stepsync_runs_total{model=\"Site\",phase=\"sync\",result=\"error\"}";
    assert!(
        eventually(Duration::from_secs(20), || {
            let m = scrape();
            sample(&m, ok) == Some(2.0) && sample(&m, failed).is_some_and(|n| n >= 1.0)
        }),
        "the runs were not counted: {}",
        scrape()
    );
    // A run is counted when it ends, its outcome shows in the store's counts once recorded.
    let site_ok = "stepsync_objects{model=\"Site\",status=\"ok\"}";
    assert!(
        eventually(Duration::from_secs(10), || sample(&scrape(), site_ok)
            == Some(2.0)),
        "the objects gauge: {}",
        scrape()
    );
    let after = scrape();
    assert_eq!(
        sample(&after, "stepsync_objects{model=\"Site\",status=\"error\"}"),
        Some(1.0)
    );
    assert!(sample(&after, "stepsync_run_errors_total{model=\"Site\"}").is_some_and(|n| n >= 1.0));
    assert!(
        sample(
            &after,
            "stepsync_run_duration_seconds_count{model=\"Site\"}"
        )
        .is_some_and(|n| n >= 3.0),
        "{after}"
    );
    assert!(!after.contains("key="), "no per-object label: {after}");
}

#[test]
fn serve_without_tokens_refuses_to_listen_beyond_loopback() {
    let server = TestServer::start();
    let svc = service(&server, false);
    let out = svc
        .test()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .status(1)
        .run();
    assert!(out.stderr.contains("serve.tokens"), "{}", out.stderr);
    // The store was not taken: nothing ran, no lease was left behind.
    svc.ok(&["status"]);
}

#[test]
fn serve_without_tokens_on_loopback_answers_this_host() {
    let server = TestServer::start();
    let svc = service(&server, false);
    let s = serve(&svc, &[]);
    assert_eq!(http(&s.addr, "GET", "/api/v1/status", None).0, 200);
}

#[test]
fn writes_go_through_apply_all_or_nothing_with_the_problems_where_they_are() {
    let server = TestServer::start();
    let svc = Service::new(
        "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
      enabled: {type: bool, default: false}
",
    );
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: serve-test\nvars: {{base: \"{}\"}}\nserve:\n  listen: 127.0.0.1:0\n  tokens: {{read: {{env: {READ_ENV}}}, write: {{env: {WRITE_ENV}}}}}\n",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    let s = serve(&svc, &[]);
    let good = "Site:\n  - {name: a, login_base: la}\n  - {name: b}\n";
    // A read token cannot apply.
    assert_eq!(
        http_body(&s.addr, "POST", "/api/v1/apply", Some(READ), good).0,
        403
    );
    // A dry run answers what would happen and writes nothing.
    let (code, body) = http_body(
        &s.addr,
        "POST",
        "/api/v1/apply?dry_run=true",
        Some(WRITE),
        good,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"outcome\":\"created\""), "{body}");
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects/Site/a", Some(READ)).0,
        404
    );
    // One invalid field among valid objects: 422, nothing written, the field named with
    // its line and column in the body.
    let bad = "Site:\n  - {name: c}\n  - {name: d, enabled: maybe}\n";
    let (code, body) = http_body(&s.addr, "POST", "/api/v1/apply", Some(WRITE), bad);
    assert_eq!(code, 422, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    let p = &err["problems"][0];
    assert!(p["message"].as_str().unwrap().contains("enabled"), "{body}");
    assert_eq!(p["line"], 3, "{body}");
    assert!(p["column"].as_u64().is_some(), "{body}");
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects/Site/c", Some(READ)).0,
        404,
        "all or nothing"
    );
    // The real apply; the daemon syncs what it wrote.
    let (code, body) = http_body(&s.addr, "POST", "/api/v1/apply", Some(WRITE), good);
    assert_eq!(code, 200, "{body}");
    assert!(
        server
            .wait_for("PUT /sites/a", Duration::from_secs(10))
            .is_some(),
        "the daemon did not sync what the API applied: {:?}",
        server.lines()
    );
    // Delete: 404 for what is not there, then the object goes.
    assert_eq!(
        http(&s.addr, "DELETE", "/api/v1/objects/Site/zz", Some(WRITE)).0,
        404
    );
    let (code, body) = http(&s.addr, "DELETE", "/api/v1/objects/Site/b", Some(WRITE));
    assert_eq!(code, 200, "{body}");
    assert!(
        server
            .wait_for("DELETE /sites/b", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        server.lines()
    );
}

#[test]
fn a_retry_through_the_api_reaches_the_backend_before_the_backoff_would() {
    let server = TestServer::start();
    server.respond("PUT", "/sites/a", 500, "boom");
    let svc = service(&server, true);
    // A long backoff: only the retry can bring the next attempt within the test.
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &format!("{cfg}backoff: {{initial: 1h, max: 1h, jitter: 0}}\n"),
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let s = serve(&svc, &[]);
    assert!(
        eventually(Duration::from_secs(10), || {
            json(&s.addr, "/api/v1/objects/Site/a", READ)["status"]["status"] == "error"
        }),
        "the first sync did not fail"
    );
    let puts = || count(&server, "PUT /sites/a");
    assert_eq!(puts(), 1);
    server.respond("PUT", "/sites/a", 200, "{}");
    assert_eq!(
        http(&s.addr, "POST", "/api/v1/objects/Site/a/retry", Some(READ)).0,
        403
    );
    let (code, body) = http(&s.addr, "POST", "/api/v1/objects/Site/a/retry", Some(WRITE));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("backoff cleared"), "{body}");
    assert!(
        eventually(Duration::from_secs(10), || puts() == 2
            && json(&s.addr, "/api/v1/objects/Site/a", READ)["status"]["status"]
                == "ok"),
        "the retry did not reach the backend: {:?}",
        server.lines()
    );
    assert_eq!(
        http(
            &s.addr,
            "POST",
            "/api/v1/objects/Site/zz/retry",
            Some(WRITE)
        )
        .0,
        404
    );
}

/// Reads server-sent events from `r` until one `counts` event's data satisfies `want`.
fn next_counts(r: &mut impl BufRead, want: impl Fn(&Value) -> bool) -> Value {
    next_event(r, "counts", want)
}

/// Reads the stream up to the next `event` whose JSON data `want` takes; that data.
fn next_event(r: &mut impl BufRead, event: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut name = String::new();
    // The stream's keep-alive comments defeat the read timeout: a deadline of its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "no {event} event as wanted within 30 s"
        );
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read the event stream");
        assert!(n > 0, "the event stream ended");
        let line = line.trim_end();
        // Chunked transfer: the chunk sizes come as lines of their own.
        if let Some(e) = line.strip_prefix("event: ") {
            e.clone_into(&mut name);
        } else if let Some(d) = line.strip_prefix("data: ")
            && name == event
        {
            let v: Value = serde_json::from_str(d).expect("event data is JSON");
            if want(&v) {
                return v;
            }
        }
    }
}

/// `GET /api/v1/events` with the read token, on a connection of its own, ready to read.
fn events_stream(addr: &str) -> BufReader<TcpStream> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ}\r\n\r\n"
    )
    .unwrap();
    BufReader::new(conn)
}

#[test]
fn the_events_stream_delivers_a_change() {
    let server = TestServer::start();
    let svc = service(&server, true);
    let s = serve(&svc, &[]);
    let mut r = events_stream(&s.addr);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    // At once: the store as it is (empty).
    next_counts(&mut r, |v| v.as_object().is_some_and(|m| m.is_empty()));
    // A change by another process, then its sync, arrive on the stream.
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    // Object by object (a poll sends the objects' changes before the counts they make):
    // Site/a as its sync left it, then the counts.
    let a = next_event(&mut r, "object", |v| v["key"] == "a" && v["status"] == "ok");
    assert_eq!(a["model"], "Site", "{a}");
    let v = next_counts(&mut r, |v| v["Site"]["ok"] == 1);
    assert_eq!(v["Site"].as_object().unwrap().len(), 1, "{v}");
    assert_eq!(
        (&a["purged"], &a["deleted"]),
        (&json!(false), &json!(false))
    );
    // A failure shows with its message, the secret in it masked.
    server.respond("PUT", "/sites/b", 500, &format!("no {SECRET} here"));
    svc.file("objects.yaml", "Site:\n  - {name: a}\n  - {name: b}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let b = next_event(&mut r, "object", |v| {
        v["key"] == "b" && v["status"] == "error"
    });
    let message = b["message"].as_str().unwrap();
    assert!(message.contains("500"), "{b}");
    assert!(!message.contains(SECRET), "the secret in an event: {b}");
    assert!(b["rev"].as_i64() > a["rev"].as_i64(), "{a} then {b}");
    // A delete: the object goes, and the stream says it is gone.
    svc.file("objects.yaml", "Site:\n  - {name: b}\n");
    svc.ok(&["apply", "-f", "objects.yaml", "--prune"]);
    next_event(&mut r, "object", |v| v["key"] == "a" && v["purged"] == true);
    // Without a token: 401, no stream.
    assert_eq!(http(&s.addr, "GET", "/api/v1/events", None).0, 401);
}

#[test]
fn serve_stops_on_sigterm_while_an_events_stream_is_open() {
    let server = TestServer::start();
    let svc = service(&server, true);
    let mut s = serve(&svc, &[]);
    let mut r = events_stream(&s.addr);
    next_counts(&mut r, |_| true);
    let t0 = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    let exited = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let st = exited.expect("serve still runs 15 s after SIGTERM with an events stream open");
    assert!(st.success(), "serve exited {st}");
    // The stream was ended, not cut: its chunked body closes.
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(rest.ends_with("0\r\n\r\n"), "the stream's end: {rest:?}");
}

/// The schemathesis command: `STEPSYNC_SCHEMATHESIS`, else the PATH (scripts/test.sh
/// installs it, `ensure_schemathesis`).
fn schemathesis() -> String {
    std::env::var("STEPSYNC_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned())
}

#[test]
fn the_api_fuzzed_from_its_own_openapi_document_answers_no_5xx_and_keeps_to_its_schema() {
    let server = TestServer::start();
    let svc = service(&server, true);
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a, login_base: la}\n  - {name: b}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let s = serve(&svc, &[]);
    let out = std::process::Command::new(schemathesis())
        .args([
            "run",
            &format!("http://{}/api/v1/openapi.json", s.addr),
            "-H",
            &format!("Authorization: Bearer {WRITE}"),
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // It keeps a cache of what it found in its working directory: not in the repo.
        .current_dir(svc.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install it with `pip install schemathesis` (scripts/test.sh does)",
                schemathesis()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
}

/// Logs in to the dashboard with `token`: the session cookie (`name=value`).
fn login(addr: &str, token: &str) -> String {
    let (status, head, _) = exchange(
        addr,
        "POST",
        "/login",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        &format!("token={token}"),
    );
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(token),
        "the cookie carries the token itself"
    );
    cookie.split(';').next().unwrap().to_owned()
}

/// A dashboard request with a session cookie: (status, body).
fn page(addr: &str, method: &str, path: &str, cookie: &str) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path, &format!("Cookie: {cookie}\r\n"), "");
    (status, body)
}

/// Sites and Slices with REST actuators against `server`, an hour's backoff (only a retry
/// brings a failed object back within a test), tokens, and two trees applied.
fn dashboard_service(server: &TestServer) -> Service {
    let svc = Service::new(crate::common::fixtures::SITE_SLICE);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: dash\nvars: {{base: \"{}\"}}\nbackoff: {{initial: 1h, max: 1h, jitter: 0}}\nserve:\n  listen: 127.0.0.1:0\n  tokens: {{read: {{env: {READ_ENV}}}, write: {{env: {WRITE_ENV}}}}}\n",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    svc.file("stepdefs/slice.yaml", &rest_stepdef("Slice", "slices", ""));
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a}\n  - {name: b}\nSlice:\n  - {name: a1, site: a}\n  - {name: b1, site: b}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc
}

#[test]
fn the_dashboard_shows_errors_the_dependency_tree_and_retries_from_the_object_page() {
    let server = TestServer::start();
    server.respond("PUT", "/sites/a", 500, "backend says no <script>");
    let svc = dashboard_service(&server);
    let s = serve(&svc, &[]);
    // No session: the pages send to the login form; a wrong token gets no session.
    let (code, _) = page(&s.addr, "GET", "/", "stepsync_session=forged");
    assert_eq!(code, 303);
    assert_eq!(page(&s.addr, "GET", "/login", "").0, 200);
    let cookie = login(&s.addr, WRITE);
    assert!(
        eventually(Duration::from_secs(15), || {
            page(&s.addr, "GET", "/", &cookie)
                .1
                .contains("backend says no")
        }),
        "the overview never showed the error"
    );
    let (code, overview) = page(&s.addr, "GET", "/", &cookie);
    assert_eq!(code, 200);
    assert!(overview.contains("class=\"dot\""), "the red mark");
    assert!(overview.contains("href=\"/objects/Site/a\""), "{overview}");
    // Model values are escaped, never markup.
    assert!(overview.contains("&lt;script&gt;") && !overview.contains("no <script>"));
    // The model page pages and filters on the server.
    let (code, list) = page(&s.addr, "GET", "/models/Site?status=error", &cookie);
    assert_eq!(code, 200);
    assert!(
        list.contains(">a</a>") && !list.contains(">b</a>"),
        "{list}"
    );
    // The object page: its dependency tree both ways, the worst status along the path.
    let (_, slice) = page(&s.addr, "GET", "/objects/Slice/a1", &cookie);
    assert!(
        slice.contains("href=\"/objects/Site/a\""),
        "depends on Site/a: {slice}"
    );
    assert!(slice.contains("blocked by Site/a"), "why it waits: {slice}");
    let (_, site) = page(&s.addr, "GET", "/objects/Site/a", &cookie);
    assert!(
        site.contains("href=\"/objects/Slice/a1\""),
        "depended on by Slice/a1: {site}"
    );
    // The retry button reaches the backend (the backoff is an hour).
    let puts = || count(&server, "PUT /sites/a");
    let before = puts();
    server.respond("PUT", "/sites/a", 200, "{}");
    let read_cookie = login(&s.addr, READ);
    assert_eq!(
        page(&s.addr, "POST", "/objects/Site/a/retry", &read_cookie).0,
        403,
        "a read session cannot retry"
    );
    assert_eq!(
        page(&s.addr, "POST", "/objects/Site/a/retry", &cookie).0,
        303
    );
    assert!(
        eventually(Duration::from_secs(10), || puts() > before),
        "the retry did not reach the backend: {:?}",
        server.lines()
    );
    // The session also opens the events stream the page listens to.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
}

#[test]
fn an_objects_recipes_run_logs_and_graph_and_the_plan_come_through_the_api() {
    let server = TestServer::start();
    server.respond("PUT", "/sites/a", 500, "backend says no");
    let svc = dashboard_service(&server);
    let s = serve(&svc, &[]);
    assert!(
        eventually(Duration::from_secs(15), || {
            let a = json(&s.addr, "/api/v1/objects/Site/a", READ);
            let b = json(&s.addr, "/api/v1/objects/Slice/b1", READ);
            a["status"]["status"] == "error" && b["status"]["status"] == "ok"
        }),
        "Site/a never failed or Slice/b1 never synced"
    );
    // The graph both ways, with the worst status at or below each node.
    let g = json(&s.addr, "/api/v1/objects/Slice/a1/graph", READ);
    assert_eq!(g["object"], "Slice/a1", "{g:#}");
    assert_eq!(g["depends_on"][0]["key"], "a", "{g:#}");
    assert_eq!(g["depends_on"][0]["status"], "error", "{g:#}");
    assert_eq!(g["depended_on_by"], json!([]), "{g:#}");
    let g = json(&s.addr, "/api/v1/objects/Site/a/graph?depth=1", READ);
    assert_eq!(g["depended_on_by"][0]["model"], "Slice", "{g:#}");
    assert_eq!(g["depended_on_by"][0]["status"], "blocked", "{g:#}");
    assert_eq!(
        g["depended_on_by"][0]["children"],
        json!([]),
        "depth 1: {g:#}"
    );
    assert_eq!(
        http(
            &s.addr,
            "GET",
            "/api/v1/objects/Site/a/graph?depth=0",
            Some(READ)
        )
        .0,
        400
    );
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects/Site/zz/graph", Some(READ)).0,
        404
    );
    // Its recipes are the sys dir's files, and its run logs, newest first.
    let f = json(&s.addr, "/api/v1/objects/Site/b/files", READ);
    let recipes = f["recipes"].as_array().unwrap();
    assert!(!recipes.is_empty(), "{f:#}");
    // Where the sys dir is, relative to the service folder, as `sys_dir` in stepsync.yaml.
    let folder = svc.path().join(f["folder"].as_str().unwrap());
    for r in recipes {
        let on_disk = std::fs::read_to_string(folder.join(r["name"].as_str().unwrap())).unwrap();
        assert_eq!(r["content"], on_disk, "the file as the sys dir has it");
    }
    assert!(
        recipes
            .iter()
            .any(|r| r["content"].as_str().unwrap().contains("/sites/b")),
        "the recipe names its request: {f:#}"
    );
    let runs = f["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{f:#}");
    assert!(
        runs[0]["name"].as_str().unwrap().starts_with("runs/"),
        "{f:#}"
    );
    let failed = json(&s.addr, "/api/v1/objects/Site/a/files", READ);
    assert!(
        failed["runs"][0]["content"]
            .as_str()
            .unwrap()
            .contains("500"),
        "the failed run's log has the backend's answer: {failed:#}"
    );
    assert_eq!(
        http(&s.addr, "GET", "/api/v1/objects/Site/zz/files", Some(READ)).0,
        404
    );
    // The dashboard's object page shows the same files' contents.
    let cookie = login(&s.addr, READ);
    let (_, page_b) = page(&s.addr, "GET", "/objects/Site/b", &cookie);
    assert!(
        page_b.contains(runs[0]["name"].as_str().unwrap()),
        "{page_b}"
    );
    assert!(page_b.contains("/sites/b"), "{page_b}");
    // The plan: a write call (it holds the store's writer), the same as `plan -o json`.
    assert_eq!(http(&s.addr, "POST", "/api/v1/plan", Some(READ)).0, 403);
    let (code, body) = http(&s.addr, "POST", "/api/v1/plan", Some(WRITE));
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let cli: Value = serde_json::from_str(&svc.ok(&["plan", "-o", "json"]).stdout).unwrap();
    let names = |p: &Value| -> Vec<String> {
        p["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{} {}/{}", c["action"], c["model"], c["key"]))
            .collect()
    };
    assert!(
        !names(&api).is_empty(),
        "Site/a and Slice/a1 are pending: {api:#}"
    );
    assert_eq!(names(&api), names(&cli), "{api:#}");
}

/// A headless Chromium driven through chromedriver's WebDriver HTTP API (Debian's
/// `chromium` and `chromium-driver`; scripts/test.sh installs them).
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = crate::common::free_port();
        let driver = std::process::Command::new(
            std::env::var("STEPSYNC_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
        )
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver (apt install chromium chromium-driver; scripts/test.sh does)");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            eventually(Duration::from_secs(20), || TcpStream::connect(&addr)
                .is_ok()),
            "chromedriver did not listen"
        );
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("STEPSYNC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())],
            }
        }}});
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(&caps));
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut r = BufReader::new(s);
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).expect("WebDriver answer");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).expect("WebDriver body");
        let body = String::from_utf8_lossy(&buf).into_owned();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("WebDriver {path}: {e}: {body}"))
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, url: &str) {
        self.call(
            "POST",
            &self.s("/url"),
            Some(&serde_json::json!({"url": url})),
        );
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(&serde_json::json!({"using": "css selector", "value": css})),
        );
        v["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(&serde_json::json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(&serde_json::json!({})),
        );
    }

    /// The page's source once it contains `text` (a click's navigation is not waited for
    /// by WebDriver), or as it is after 10 s.
    fn source_with(&self, text: &str) -> String {
        let mut src = self.source();
        let until = Instant::now() + Duration::from_secs(10);
        while !src.contains(text) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            src = self.source();
        }
        src
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Writes a screenshot of the page to `target/screenshots/NAME.png`.
    fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().expect("a screenshot"))
            .expect("base64");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let s = self.s("");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &s, None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn in_chromium_the_overview_shows_the_error_the_object_page_its_tree_and_retry_reaches_the_backend()
{
    let server = TestServer::start();
    server.respond("PUT", "/sites/a", 500, "backend says no");
    let svc = dashboard_service(&server);
    let s = serve(&svc, &[]);
    assert!(eventually(Duration::from_secs(15), || {
        json(&s.addr, "/api/v1/objects/Site/a", READ)["status"]["status"] == "error"
    }));
    let b = Browser::start();
    let base = format!("http://{}", s.addr);
    b.go(&format!("{base}/"));
    // Sent to the login form first.
    b.type_into("input[name=token]", WRITE);
    b.click("button[type=submit]");
    let overview = b.source_with("backend says no");
    assert!(overview.contains("backend says no"), "{overview}");
    assert!(overview.contains("class=\"dot\""), "the red mark");
    b.screenshot("serve-overview");
    b.go(&format!("{base}/models/Site"));
    b.screenshot("serve-model");
    b.go(&format!("{base}/objects/Slice/a1"));
    let slice = b.source();
    assert!(slice.contains("/objects/Site/a"), "the tree: {slice}");
    b.screenshot("serve-object");
    server.respond("PUT", "/sites/a", 200, "{}");
    let puts = || count(&server, "PUT /sites/a");
    let before = puts();
    b.go(&format!("{base}/objects/Site/a"));
    b.click("form[action$='/retry'] button");
    assert!(
        eventually(Duration::from_secs(10), || puts() > before),
        "the retry button did not reach the backend: {:?}",
        server.lines()
    );
}
