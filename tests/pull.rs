//! Pull steps end to end (SPEC §13) through the real binary against a real HTTP server: a
//! poll's objects (key and field templates, `owner: pull/<name>`), pagination by `next`
//! (relative, root-relative and absolute URLs), bearer auth from an env secret that is never
//! written anywhere, writes only on change (no new generation, no actuator run), feedback-only
//! steps, `prune` of owned objects only, failed polls (status, body, template, timeout) that
//! change nothing and show in `status`, the daemon's retries, per-step timers (a hanging
//! backend delays neither another step nor the actuators, and a poll never overlaps itself),
//! and `plan --refresh`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Service;
use crate::common::http::{Recorded, TestServer};

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
      region: string
      enabled: {type: bool, default: false}
      zone_state: {type: string, feedback: true}
  Host:
    fields:
      name: {type: string, required: true}
";

/// The environment variable the `cloud` secret is read from, and its value.
const ENV: &str = "STEPSYNC_PULL_TEST_CLOUD_TOKEN";
const TOKEN: &str = "tok-5ecr3t-Cloud-77";

/// Declarative fields and a feedback field, as in SPEC §13.
const FULL: &str = "fields: {login_base: \"{{ item.ZoneName | lower }}\", region: \"{{ item.Region }}\", enabled: true}
feedback: {zone_state: \"{{ item.State }}\"}
";

/// Feedback only: such a step creates nothing.
const FEEDBACK_ONLY: &str = "feedback: {zone_state: \"{{ item.State }}\"}\n";

/// A pull step `name` listing `{{ vars.cloud }}/<path>` (the server's `/api/<path>`) every
/// `interval`, with bearer auth from `secret('cloud')`; `request_extra` goes into `request:`
/// (indented two spaces), `rest` after the key (fields, feedback, prune).
fn pull(name: &str, path: &str, interval: &str, request_extra: &str, rest: &str) -> String {
    format!(
        "kind: PullStep
name: {name}
interval: {interval}
request:
  method: GET
  url: \"{{{{ vars.cloud }}}}/{path}\"
  auth: {{bearer: \"{{{{ secret('cloud') }}}}\"}}
{request_extra}next: {{jsonpath: \"$.next\"}}
items: {{jsonpath: \"$.zones[*]\"}}
model: Site
key: \"{{{{ item.ZoneName }}}}\"
{rest}"
    )
}

fn zone(name: &str, state: &str, region: &str) -> Value {
    json!({"ZoneName": name, "State": state, "Region": region})
}

struct Fx {
    svc: Service,
    server: TestServer,
}

impl Fx {
    /// A service with REST actuators for Site (PUT and DELETE `/sites/<name>`) and Host (PUT
    /// `/hosts/<name>`), and `steps` as `stepdefs/pull-<i>.yaml`.
    fn new(steps: &[String]) -> Fx {
        let server = TestServer::start();
        let svc = Service::new(SCHEMA);
        svc.file(
            "stepsync.yaml",
            &format!(
                "name: pull-test
vars: {{base: \"{url}\", cloud: \"{url}/api\"}}
secrets:
  cloud: {{env: {ENV}}}
backoff: {{initial: 200ms, factor: 2, max: 1s, jitter: 0}}
",
                url = server.url
            ),
        );
        svc.file(
            "stepdefs/site.yaml",
            "kind: Actuator
model: Site
sync:
  rest:
    method: PUT
    url: \"{{ vars.base }}/sites/{{ object.name }}\"
    body: {name: \"{{ object.name }}\", login_base: \"{{ object.login_base }}\", region: \"{{ object.region }}\"}
delete:
  rest:
    method: DELETE
    url: \"{{ vars.base }}/sites/{{ object.name }}\"
    expect: [200, 204, 404]
",
        );
        svc.file(
            "stepdefs/host.yaml",
            "kind: Actuator
model: Host
sync:
  rest:
    method: PUT
    url: \"{{ vars.base }}/hosts/{{ object.name }}\"
    body: {name: \"{{ object.name }}\"}
",
        );
        let fx = Fx { svc, server };
        fx.steps(steps);
        fx
    }

    fn steps(&self, steps: &[String]) {
        for (i, s) in steps.iter().enumerate() {
            self.svc.file(&format!("stepdefs/pull-{i}.yaml"), s);
        }
    }

    /// Serves `pages` at `/api/<base>`, `/api/<base>2`, ...: page 1 links to page 2 by a
    /// relative URL, page 2 to page 3 root-relative, page 3 to page 4 absolute, and so on;
    /// the last page's `next` is empty.
    fn list(&self, base: &str, pages: &[Vec<Value>]) {
        for (i, items) in pages.iter().enumerate() {
            let n = i + 2;
            let next = if i + 1 == pages.len() {
                String::new()
            } else {
                match i % 3 {
                    0 => format!("{base}{n}"),
                    1 => format!("/api/{base}{n}"),
                    _ => format!("{}/api/{base}{n}", self.server.url),
                }
            };
            let body = json!({"zones": items, "next": next}).to_string();
            self.server.respond("GET", &page_path(base, i), 200, &body);
        }
    }

    /// `run --once` with the secret in the environment, exiting `code`.
    #[track_caller]
    fn run_once(&self, code: i32) -> crate::common::Out {
        self.svc
            .test()
            .env(ENV, TOKEN)
            .args(["run", "--once"])
            .status(code)
            .stderr_lacks(TOKEN)
            .stdout_lacks(TOKEN)
            .run()
    }

    /// The daemon, with the secret in the environment and its log in `daemon.log`.
    fn daemon(&self) -> Child {
        let log = std::fs::File::create(self.svc.path().join("daemon.log")).expect("log file");
        self.svc
            .command(&["run"])
            .env(ENV, TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon")
    }

    fn site(&self, key: &str) -> Value {
        self.svc.object("Site", key)
    }

    fn keys(&self) -> Vec<String> {
        let mut k = self.svc.keys("Site");
        k.sort();
        k
    }

    /// `status -o json`'s entry for `pull/<name>`.
    fn pull_status(&self, name: &str) -> Value {
        let out = self.svc.ok(&["status", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).expect("status -o json prints JSON");
        let steps = v["pull_steps"].as_array().expect("pull_steps").clone();
        steps
            .into_iter()
            .find(|s| s["name"] == format!("pull/{name}"))
            .unwrap_or_else(|| panic!("no pull/{name} in {v}"))
    }

    fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The requests other than the pull steps' GETs of `/api/...`: what the actuators sent.
    fn actuated(&self) -> Vec<String> {
        let mut l: Vec<String> = self
            .server
            .lines()
            .into_iter()
            .filter(|l| !l.starts_with("GET /api/"))
            .collect();
        l.sort();
        l
    }

    /// Every file under `.stepsync/` (the store and the sys dir) lacks the token.
    #[track_caller]
    fn token_written_nowhere(&self) {
        let state = self.svc.path().join(".stepsync");
        let files = crate::common::walk(&state);
        assert!(!files.is_empty());
        for f in files {
            let bytes = std::fs::read(&f).expect("read");
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "{} holds the secret",
                f.display()
            );
        }
    }
}

fn page_path(base: &str, i: usize) -> String {
    if i == 0 {
        format!("/api/{base}")
    } else {
        format!("/api/{base}{}", i + 1)
    }
}

/// The GETs of an n-page listing of `base`, in order.
fn gets(base: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("GET {}", page_path(base, i)))
        .collect()
}

/// Polls `f` every 25 ms until it holds or `limit` passes.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn kill(mut d: Child) {
    let _ = d.kill();
    let _ = d.wait();
}

/// The most of `reqs` that were in flight at once (by their arrival and response times; a
/// request not answered yet is in flight still).
fn max_overlap(reqs: &[Recorded]) -> usize {
    let far = Instant::now() + Duration::from_secs(3600);
    reqs.iter()
        .map(|r| {
            reqs.iter()
                .filter(|o| o.start <= r.start && o.end.unwrap_or(far) > r.start)
                .count()
        })
        .max()
        .unwrap_or(0)
}

// ---- 1. a poll creates objects ----------------------------------------------------------------

#[test]
fn a_poll_follows_every_page_and_creates_owned_objects_from_the_items() {
    let fx = Fx::new(&[pull("zones", "zones", "1h", "", FULL)]);
    fx.list(
        "zones",
        &[
            vec![
                zone("US-East-1a", "available", "us-east"),
                zone("US-East-1b", "impaired", "us-east"),
            ],
            vec![zone("EU-West-1a", "available", "eu-west")],
            vec![zone("AP-South-1a", "available", "ap-south")],
            vec![zone("SA-East-1a", "available", "sa-east")],
        ],
    );
    fx.run_once(0);
    // Four pages, in order, through a relative, a root-relative and an absolute `next`; the
    // bearer token from the env secret on every one.
    let pulls: Vec<Recorded> = fx
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    assert_eq!(
        pulls.iter().map(Recorded::line).collect::<Vec<_>>(),
        gets("zones", 4)
    );
    for r in &pulls {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.line()
        );
    }
    assert_eq!(
        fx.keys(),
        [
            "AP-South-1a",
            "EU-West-1a",
            "SA-East-1a",
            "US-East-1a",
            "US-East-1b"
        ]
    );
    let a = fx.site("US-East-1a");
    assert_eq!(
        a["fields"],
        json!({"name": "US-East-1a", "login_base": "us-east-1a", "region": "us-east",
               "enabled": true, "zone_state": "available"})
    );
    assert_eq!(a["owner"], "pull/zones", "{a}");
    assert_eq!(a["status"]["status"], "ok", "{a}");
    assert_eq!(fx.site("US-East-1b")["fields"]["zone_state"], "impaired");
    assert_eq!(fx.site("SA-East-1a")["fields"]["login_base"], "sa-east-1a");
    // The created objects were actuated like any other.
    assert_eq!(
        fx.actuated(),
        [
            "PUT /sites/AP-South-1a",
            "PUT /sites/EU-West-1a",
            "PUT /sites/SA-East-1a",
            "PUT /sites/US-East-1a",
            "PUT /sites/US-East-1b"
        ]
    );
    fx.svc
        .test()
        .args(["get", "Site", "US-East-1a", "-o", "yaml"])
        .stdout_contains("owner: pull/zones")
        .stdout_lacks(TOKEN)
        .run();
    fx.svc
        .test()
        .args(["status"])
        .stdout_matches(r"(?m)^Pull steps:\n  pull/zones: 1 poll, last ok \d{4}-")
        .stdout_lacks("failing")
        .stdout_lacks(TOKEN)
        .run();
    let st = fx.pull_status("zones");
    assert_eq!(st["runs"], 1, "{st}");
    assert_eq!(st["failures"], 0, "{st}");
    assert_eq!(st["message"], "", "{st}");
    assert!(!st["last_ok"].is_null(), "{st}");
    assert!(st["last_error_at"].is_null(), "{st}");
    fx.svc
        .test()
        .args(["status", "-o", "json"])
        .stdout_lacks(TOKEN)
        .run();
    fx.svc
        .test()
        .args(["get", "Site", "-o", "json"])
        .stdout_lacks(TOKEN)
        .run();
    fx.token_written_nowhere();
}

// ---- 2. writes only on change -----------------------------------------------------------------

#[test]
fn a_poll_that_lists_the_same_items_writes_nothing_and_actuates_nothing() {
    let fx = Fx::new(&[pull("zones", "zones", "1h", "", FULL)]);
    let pages = vec![
        vec![zone("a", "up", "r1"), zone("b", "up", "r1")],
        vec![zone("c", "up", "r1")],
        vec![zone("d", "up", "r1")],
    ];
    fx.list("zones", &pages);
    fx.run_once(0);
    let before: Vec<Value> = ["a", "b", "c", "d"].iter().map(|k| fx.site(k)).collect();
    for o in &before {
        assert_eq!(o["status"]["status"], "ok", "{o}");
        assert_eq!(o["status"]["generation"], 1, "{o}");
    }
    fx.server.clear();

    // The same listing again: nothing is written, not even a timestamp, and nothing runs.
    fx.run_once(0);
    assert_eq!(fx.server.lines(), gets("zones", 3));
    let after: Vec<Value> = ["a", "b", "c", "d"].iter().map(|k| fx.site(k)).collect();
    assert_eq!(before, after);
    assert_eq!(fx.pull_status("zones")["runs"], 2);
    fx.server.clear();

    // Only a feedback field changes: written, but no new generation and no run.
    let mut pages2 = pages.clone();
    pages2[0][0] = zone("a", "draining", "r1");
    fx.list("zones", &pages2);
    fx.run_once(0);
    assert_eq!(fx.actuated(), Vec::<String>::new());
    let a = fx.site("a");
    assert_eq!(a["fields"]["zone_state"], "draining", "{a}");
    assert_eq!(a["status"]["generation"], 1, "{a}");
    assert_eq!(a["status"]["synced_generation"], 1, "{a}");
    assert_eq!(a["status"]["status"], "ok", "{a}");
    assert_eq!(a["status"]["reason"], Value::Null, "{a}");
    assert_eq!(fx.site("b"), before[1]);
    fx.server.clear();

    // The control: a declarative field changes, so that object (only) gets a new generation
    // and is actuated once.
    pages2[1][0] = zone("c", "up", "r2");
    fx.list("zones", &pages2);
    fx.run_once(0);
    assert_eq!(fx.actuated(), ["PUT /sites/c"]);
    let c = fx.site("c");
    assert_eq!(c["fields"]["region"], "r2", "{c}");
    assert_eq!(c["status"]["generation"], 2, "{c}");
    assert_eq!(c["status"]["synced_generation"], 2, "{c}");
    assert_eq!(fx.site("d"), before[3]);
}

// ---- 3. feedback only -------------------------------------------------------------------------

#[test]
fn a_feedback_only_step_updates_existing_objects_without_a_new_generation_and_creates_none() {
    let fx = Fx::new(&[pull("state", "state", "1h", "", FEEDBACK_ONLY)]);
    fx.list("state", &[vec![]]);
    fx.svc.file(
        "sites.yaml",
        "Site:\n  - {name: a, login_base: la}\n  - {name: b, login_base: lb}\n",
    );
    fx.svc.ok(&["apply", "-f", "sites.yaml"]);
    fx.run_once(0);
    assert_eq!(fx.actuated(), ["PUT /sites/a", "PUT /sites/b"]);
    let b_before = fx.site("b");
    fx.server.clear();

    // `c` is listed but does not exist: a feedback-only step creates nothing.
    fx.list(
        "state",
        &[vec![zone("a", "up", "x")], vec![zone("c", "up", "x")]],
    );
    fx.run_once(0);
    assert_eq!(fx.server.lines(), gets("state", 2));
    assert_eq!(fx.keys(), ["a", "b"]);
    let a = fx.site("a");
    assert_eq!(
        a["fields"],
        json!({"name": "a", "login_base": "la", "enabled": false, "zone_state": "up"}),
        "{a}"
    );
    assert_eq!(a["status"]["generation"], 1, "{a}");
    assert_eq!(a["status"]["synced_generation"], 1, "{a}");
    assert_eq!(a["status"]["status"], "ok", "{a}");
    assert_eq!(a["status"]["reason"], Value::Null, "{a}");
    // It did not take the hand-applied object over.
    assert_eq!(a.get("owner"), None, "{a}");
    assert_eq!(fx.site("b"), b_before);
    fx.server.clear();

    // A new state: written again, still no generation and no run.
    fx.list(
        "state",
        &[vec![zone("a", "down", "x")], vec![zone("c", "up", "x")]],
    );
    fx.run_once(0);
    assert_eq!(fx.actuated(), Vec::<String>::new());
    let a = fx.site("a");
    assert_eq!(a["fields"]["zone_state"], "down", "{a}");
    assert_eq!(a["status"]["generation"], 1, "{a}");
    assert_eq!(a["status"]["status"], "ok", "{a}");
    assert_eq!(fx.keys(), ["a", "b"]);
}

// ---- 4. prune ---------------------------------------------------------------------------------

#[test]
fn prune_deletes_only_the_objects_the_step_owns_that_it_no_longer_lists() {
    let fx = Fx::new(&[
        pull("zones", "zones", "1h", "", &format!("{FULL}prune: true\n")),
        pull("extra", "extra", "1h", "", FULL),
    ]);
    // `hand` is listed but was applied by hand (the step updates it, it does not own it);
    // `other` is applied by hand and never listed.
    fx.svc.file(
        "sites.yaml",
        "Site:\n  - {name: hand, login_base: h}\n  - {name: other, login_base: o}\n",
    );
    fx.svc.ok(&["apply", "-f", "sites.yaml"]);
    fx.list(
        "zones",
        &[
            vec![zone("a", "up", "r1"), zone("b", "up", "r1")],
            vec![zone("hand", "up", "r1")],
        ],
    );
    fx.list("extra", &[vec![zone("x", "up", "r1")]]);
    fx.run_once(0);
    assert_eq!(fx.keys(), ["a", "b", "hand", "other", "x"]);
    assert_eq!(fx.site("a")["owner"], "pull/zones");
    assert_eq!(fx.site("x")["owner"], "pull/extra");
    let hand = fx.site("hand");
    assert_eq!(hand["fields"]["login_base"], "hand", "{hand}");
    assert_eq!(hand.get("owner"), None, "{hand}");
    fx.server.clear();

    // Now `zones` lists only `a`, and `extra` nothing.
    fx.list("zones", &[vec![zone("a", "up", "r1")]]);
    fx.list("extra", &[vec![]]);
    fx.run_once(0);
    // `b` (owned, unlisted) is deleted through its actuator; `hand` and `other` (applied by
    // hand) and `x` (owned by a step without `prune`) stay.
    assert_eq!(fx.actuated(), ["DELETE /sites/b"]);
    assert_eq!(fx.keys(), ["a", "hand", "other", "x"]);
    for k in ["a", "hand", "other", "x"] {
        let o = fx.site(k);
        assert_eq!(o["status"]["status"], "ok", "{o}");
        assert_eq!(o["status"]["deleted"], false, "{o}");
    }
    // Pruned once: the next poll has nothing left to do.
    fx.server.clear();
    fx.run_once(0);
    assert_eq!(fx.actuated(), Vec::<String>::new());
    assert_eq!(fx.keys(), ["a", "hand", "other", "x"]);
}

// ---- 5. failed polls --------------------------------------------------------------------------

/// What makes the backend fail, for one failure case.
type Breaks<'a> = Box<dyn Fn() + 'a>;

#[test]
fn a_failed_poll_changes_nothing_shows_in_status_and_the_daemon_retries_it() {
    // A short request timeout for the transport failure; a short interval for the daemon.
    let step = |interval: &str| {
        pull(
            "zones",
            "zones",
            interval,
            "  timeout: 400ms\n",
            &format!("{FULL}prune: true\n"),
        )
    };
    let fx = Fx::new(&[step("1h")]);
    let good = vec![
        vec![zone("a", "up", "r1"), zone("b", "up", "r1")],
        vec![zone("c", "up", "r1")],
    ];
    fx.list("zones", &good);
    fx.run_once(0);
    let before: Vec<Value> = ["a", "b", "c"].iter().map(|k| fx.site(k)).collect();
    let first_ok = fx.pull_status("zones")["last_ok"].clone();
    // Every failing listing changes `a` on page 1 and drops `c` (which prune would delete):
    // a poll that fails on page 2 must write neither.
    let page1 = json!({"zones": [zone("a", "gone", "r9")], "next": "zones2"}).to_string();
    fx.server.respond("GET", "/api/zones", 200, &page1);

    let failures: [(&str, Breaks, &str); 4] = [
        (
            "status",
            Box::new(|| {
                // The backend echoes the token: the message must not.
                let body = format!("{{\"error\": \"token {TOKEN} is not allowed\"}}");
                fx.server.respond("GET", "/api/zones2", 500, &body);
            }),
            "unexpected status 500",
        ),
        (
            "body",
            Box::new(|| {
                fx.server
                    .respond("GET", "/api/zones2", 200, "<html>busy</html>")
            }),
            "not JSON",
        ),
        (
            "template",
            Box::new(|| {
                let body = json!({"zones": [{"State": "up", "Region": "r1"}], "next": ""});
                fx.server
                    .respond("GET", "/api/zones2", 200, &body.to_string());
            }),
            "key",
        ),
        (
            "transport",
            Box::new(|| {
                let body = json!({"zones": [], "next": ""});
                fx.server
                    .respond("GET", "/api/zones2", 200, &body.to_string());
                fx.server.hold("/api/zones2", Duration::from_secs(3));
            }),
            "zones2",
        ),
    ];
    for (n, (what, break_it, says)) in failures.iter().enumerate() {
        break_it();
        fx.server.clear();
        fx.run_once(1);
        assert_eq!(fx.server.lines(), gets("zones", 2), "{what}");
        let after: Vec<Value> = ["a", "b", "c"].iter().map(|k| fx.site(k)).collect();
        assert_eq!(before, after, "a failed poll ({what}) wrote something");
        assert_eq!(fx.actuated(), Vec::<String>::new(), "{what}");
        let st = fx.pull_status("zones");
        assert_eq!(st["failures"], n + 1, "{what}: {st}");
        assert_eq!(st["runs"], n + 2, "{what}: {st}");
        assert_eq!(st["last_ok"], first_ok, "{what}: {st}");
        assert!(!st["last_error_at"].is_null(), "{what}: {st}");
        let msg = st["message"].as_str().expect("message");
        assert!(msg.contains(says), "{what}: {msg:?} lacks {says:?}");
        assert!(!msg.contains(TOKEN), "{what}: {msg:?}");
        if *what == "status" {
            assert!(msg.contains("********"), "{msg:?}");
        }
        fx.svc
            .test()
            .args(["status"])
            .stdout_matches(&format!(
                r"(?m)^  pull/zones: {} polls, last ok \S+, {} failing at \S+: .+",
                n + 2,
                if n == 0 {
                    "1 time".to_owned()
                } else {
                    format!("{} times", n + 1)
                }
            ))
            .stdout_lacks(TOKEN)
            .run();
    }
    fx.server.hold("/api/zones2", Duration::ZERO);
    fx.token_written_nowhere();

    // The daemon, still failing (the template error): it retries with the backoff capped at
    // the interval, not the service's 10 s default nor once an interval of an hour.
    fx.steps(&[step("300ms")]);
    let bad = json!({"zones": [{"State": "up"}], "next": ""});
    fx.server
        .respond("GET", "/api/zones2", 200, &bad.to_string());
    fx.server.clear();
    let d = fx.daemon();
    let retried = until(Duration::from_secs(5), || {
        fx.requests_to("/api/zones").len() >= 5
    });
    // Start to start: 200 ms after the first failure, then the cap of max(interval 300 ms,
    // backoff.initial 200 ms) — not 400 ms, 800 ms, 1 s as the uncapped backoff would wait.
    let starts: Vec<Instant> = fx
        .requests_to("/api/zones")
        .iter()
        .map(|r| r.start)
        .collect();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let unchanged = ["a", "b", "c"]
        .iter()
        .map(|k| fx.site(k))
        .collect::<Vec<_>>()
        == before;
    // The backend recovers, with `a` changed and `c` gone.
    let fixed = json!({"zones": [zone("b", "up", "r1")], "next": ""});
    fx.server
        .respond("GET", "/api/zones2", 200, &fixed.to_string());
    let recovered = until(Duration::from_secs(5), || {
        fx.pull_status("zones")["failures"] == 0 && fx.keys() == ["a", "b"]
    });
    let synced = until(Duration::from_secs(5), || {
        fx.site("a")["status"]["synced_generation"] == 2
    });
    kill(d);
    assert!(
        retried,
        "the daemon did not retry the failing poll 4 times in 5 s: {:?}",
        fx.server.lines()
    );
    eprintln!("gaps between the polls of a failing backend: {gaps:?}");
    for g in gaps.iter().take(4) {
        assert!(
            *g >= Duration::from_millis(150) && *g < Duration::from_millis(600),
            "retry gaps {gaps:?}"
        );
    }
    assert!(unchanged, "the daemon's failed polls wrote something");
    assert!(
        recovered,
        "the daemon did not poll again after the backend recovered"
    );
    assert!(synced, "the recovered poll's change was not actuated");
    let a = fx.site("a");
    assert_eq!(a["fields"]["region"], "r9", "{a}");
    assert_eq!(a["fields"]["zone_state"], "gone", "{a}");
    assert_eq!(a["status"]["status"], "ok", "{a}");
    let st = fx.pull_status("zones");
    assert_eq!(st["message"], "", "{st}");
    assert!(st["last_ok"] != first_ok, "{st}");
    assert!(fx.actuated().contains(&"DELETE /sites/c".to_owned()));
    let log = std::fs::read_to_string(fx.svc.path().join("daemon.log")).expect("log");
    assert!(!log.contains(TOKEN), "the daemon logged the secret:\n{log}");
}

#[test]
fn a_page_where_the_items_path_finds_nothing_is_a_failed_poll_not_an_empty_listing() {
    let fx = Fx::new(&[pull(
        "zones",
        "zones",
        "1h",
        "",
        &format!("{FULL}prune: true\n"),
    )]);
    fx.list("zones", &[vec![zone("a", "up", "r1")]]);
    fx.run_once(0);
    // A 200 that is no listing (an error object, an API that changed): SPEC §13 counts a
    // jsonpath that fails as a failed poll, and `prune` must not take it for an empty one.
    fx.server
        .respond("GET", "/api/zones", 200, r#"{"message": "rate limited"}"#);
    fx.run_once(1);
    assert_eq!(fx.keys(), ["a"]);
    let st = fx.pull_status("zones");
    assert_eq!(st["failures"], 1, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap_or_default()
            .contains("$.zones"),
        "{st}"
    );
    // The control: an empty list is a listing, and prune deletes what it no longer lists.
    fx.server
        .respond("GET", "/api/zones", 200, r#"{"zones": [], "next": ""}"#);
    fx.run_once(0);
    assert_eq!(fx.keys(), Vec::<String>::new());
    assert_eq!(fx.pull_status("zones")["failures"], 0);
}

// ---- 6. isolation -----------------------------------------------------------------------------

#[test]
fn a_hanging_pull_step_delays_neither_another_step_nor_the_actuators_and_never_overlaps_itself() {
    let fx = Fx::new(&[
        pull("slow", "slow", "200ms", "  timeout: 60s\n", FULL),
        pull("fast", "fast", "200ms", "", FULL),
    ]);
    fx.list("slow", &[vec![zone("s1", "up", "r1")]]);
    fx.list("fast", &[vec![zone("f1", "up", "r1")]]);
    fx.server.hold("/api/slow", Duration::from_secs(10));
    let mut d = fx.daemon();
    let slow = fx
        .server
        .wait_for("GET /api/slow", Duration::from_secs(5))
        .is_some();
    let created = until(Duration::from_secs(5), || {
        fx.keys().contains(&"f1".to_owned())
    });
    // Over 2 s, the fast step keeps its own 200 ms timer (about 10 polls).
    let n0 = fx.requests_to("/api/fast").len();
    let t0 = Instant::now();
    fx.svc.file("hosts.yaml", "Host:\n  - {name: h1}\n");
    fx.svc.ok(&["apply", "-f", "hosts.yaml"]);
    let host = fx.server.wait_for("PUT /hosts/h1", Duration::from_secs(3));
    let host_after = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
    let fast_polls = fx.requests_to("/api/fast").len() - n0;
    let slow_reqs = fx.requests_to("/api/slow");
    // SIGTERM while the slow poll hangs: the daemon stops without waiting for it.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.id().to_string()])
        .status();
    let stopped = until(Duration::from_secs(5), || {
        d.try_wait().expect("try_wait").is_some()
    });
    let code = d.try_wait().ok().flatten().and_then(|s| s.code());
    kill(d);
    fx.server.hold("/api/slow", Duration::ZERO);
    assert!(slow, "the slow step never polled: {:?}", fx.server.lines());
    assert!(
        created,
        "the fast step wrote nothing while the slow one hung"
    );
    assert!(
        host.is_some(),
        "the actuator waited for a hanging poll: {:?}",
        fx.server.lines()
    );
    eprintln!("Host/h1 actuated {host_after:?} after apply; fast step: {fast_polls} polls in 2 s");
    assert!(
        host_after < Duration::from_secs(2),
        "Host/h1 took {host_after:?}"
    );
    assert!(
        fast_polls >= 5,
        "the fast step polled {fast_polls} times in 2 s on a 200 ms interval"
    );
    // One poll of the slow step, still in flight: no second one started on its timer.
    assert_eq!(slow_reqs.len(), 1, "{:?}", fx.server.lines());
    assert_eq!(max_overlap(&slow_reqs), 1);
    assert!(slow_reqs[0].end.is_none(), "the slow request was answered");
    assert!(!fx.keys().contains(&"s1".to_owned()));
    assert!(
        stopped,
        "the daemon did not stop on SIGTERM while a poll hung"
    );
    assert_eq!(code, Some(0));
}

// ---- 7. plan --refresh ------------------------------------------------------------------------
//
// Against the contract of `stepsync plan --refresh` for pull steps (being added on main): each
// pull step polls, and the plan shows what it would write, without writing it:
// `pull/<name>: create|update|feedback|delete Model/key` lines in text, and
// `"pulls": [{"step", "action", "model", "key"}]` in `plan -o json`.

fn plan_pulls(v: &Value) -> Vec<(String, String, String, String)> {
    // An empty list may be left out.
    let none = Vec::new();
    let pulls = match &v["pulls"] {
        Value::Null => &none,
        p => p
            .as_array()
            .unwrap_or_else(|| panic!("`pulls` is no list in {v}")),
    };
    assert!(v["changes"].is_array(), "not a plan: {v}");
    let mut out: Vec<_> = pulls
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("step"), s("action"), s("model"), s("key"))
        })
        .collect();
    out.sort();
    out
}

fn pl(action: &str, key: &str) -> (String, String, String, String) {
    (
        "pull/zones".to_owned(),
        action.to_owned(),
        "Site".to_owned(),
        key.to_owned(),
    )
}

#[test]
fn plan_refresh_shows_what_each_poll_would_write_without_writing_it() {
    let fx = Fx::new(&[pull(
        "zones",
        "zones",
        "1h",
        "",
        &format!("{FULL}prune: true\n"),
    )]);
    fx.list(
        "zones",
        &[
            vec![zone("a", "up", "r1"), zone("b", "up", "r1")],
            vec![zone("d", "up", "r1")],
        ],
    );
    // A plain plan sends nothing and shows no poll.
    fx.svc
        .test()
        .args(["plan"])
        .stdout_lacks("pull/zones")
        .run();
    assert_eq!(fx.server.lines(), Vec::<String>::new());

    fx.svc
        .test()
        .env(ENV, TOKEN)
        .args(["plan", "--refresh"])
        .stdout_contains("pull/zones: create Site/a")
        .stdout_contains("pull/zones: create Site/b")
        .stdout_contains("pull/zones: create Site/d")
        .stdout_lacks(TOKEN)
        .run();
    assert_eq!(fx.server.lines(), gets("zones", 2));
    assert_eq!(fx.keys(), Vec::<String>::new(), "plan --refresh wrote");
    let out = fx
        .svc
        .test()
        .env(ENV, TOKEN)
        .args(["plan", "--refresh", "-o", "json"])
        .run();
    let v: Value = serde_json::from_str(&out.stdout).expect("plan -o json prints JSON");
    assert_eq!(
        plan_pulls(&v),
        [pl("create", "a"), pl("create", "b"), pl("create", "d")]
    );

    fx.run_once(0);
    let before: Vec<Value> = ["a", "b", "d"].iter().map(|k| fx.site(k)).collect();
    // a: a declarative change; b: feedback only; c: new; d: no longer listed (pruned).
    fx.list(
        "zones",
        &[
            vec![zone("a", "up", "r2"), zone("b", "down", "r1")],
            vec![zone("c", "up", "r1")],
        ],
    );
    fx.server.clear();
    fx.svc
        .test()
        .env(ENV, TOKEN)
        .args(["plan", "--refresh"])
        .stdout_contains("pull/zones: update Site/a")
        .stdout_contains("pull/zones: feedback Site/b")
        .stdout_contains("pull/zones: create Site/c")
        .stdout_contains("pull/zones: delete Site/d")
        .run();
    let out = fx
        .svc
        .test()
        .env(ENV, TOKEN)
        .args(["plan", "--refresh", "-o", "json"])
        .run();
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        plan_pulls(&v),
        [
            pl("create", "c"),
            pl("delete", "d"),
            pl("feedback", "b"),
            pl("update", "a")
        ]
    );
    // Nothing was written and nothing was actuated.
    assert_eq!(fx.keys(), ["a", "b", "d"]);
    let after: Vec<Value> = ["a", "b", "d"].iter().map(|k| fx.site(k)).collect();
    assert_eq!(before, after);
    assert_eq!(fx.actuated(), Vec::<String>::new());
    // Unchanged items are not listed: after the run, the plan has no pull lines.
    fx.run_once(0);
    let out = fx
        .svc
        .test()
        .env(ENV, TOKEN)
        .args(["plan", "--refresh", "-o", "json"])
        .run();
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(plan_pulls(&v), []);
}
