//! Issue #13 findings 4 and 12, against a real HTTP server and real processes: unset schema
//! fields are `none` (SPEC §5.1), `urlencode` keeps a key in one path segment (§6.1), and a
//! second signal stops the daemon at once (§5.5).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Service;
use crate::common::http::TestServer;

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      contact: string
      vlan: int
";

fn service(server: &TestServer, url: &str, body: &str) -> Service {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!("name: goal-test\nvars: {{base: \"{}\"}}\n", server.url),
    );
    svc.file(
        "stepdefs/site.yaml",
        &format!(
            "kind: Actuator\nmodel: Site\nattributes: {{n: \"{{{{ object.name }}}}\"}}\n\
             sync:\n  rest:\n    method: PUT\n    url: \"{url}\"\n    body: {body}\n"
        ),
    );
    svc
}

#[test]
fn unset_fields_are_none_in_templates() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n }}",
        r#"{contact: "{{ object.contact }}", vlan: "{{ object.vlan }}", who: "by {{ object.contact }}", d: "{{ object.contact | default('nobody') }}"}"#,
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["validate"]);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.ok(&["run", "--once"]);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&reqs[0].body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"contact": null, "vlan": null, "who": "by ", "d": "nobody"})
    );
}

#[test]
fn urlencode_keeps_a_key_in_its_path_segment() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n | urlencode }}",
        r#"{name: "{{ n }}"}"#,
    );
    svc.file("objects.yaml", "Site:\n  - {name: ../admin}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.ok(&["run", "--once"]);
    let lines = server.lines();
    assert_eq!(lines, ["PUT /sites/..%2Fadmin"], "{lines:?}");
}

#[test]
fn a_second_signal_stops_the_daemon_at_once() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n }}",
        r#"{name: "{{ n }}"}"#,
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    server.hold("/sites/a", Duration::from_secs(20));
    let mut child = svc
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the held PUT");
    let term = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    };
    term(child.id());
    std::thread::sleep(Duration::from_millis(300));
    // The first signal waits for the held run (up to the grace period); the second does not.
    assert!(
        child.try_wait().expect("wait").is_none(),
        "stopped on the first signal"
    );
    let sent = Instant::now();
    term(child.id());
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "still running 5 s after the second signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    // The abandoned run stays pending: nothing was recorded for it.
    assert_eq!(svc.object("Site", "a")["status"]["status"], "pending");
}

/// Files under `dir` whose name ends with one of `ends`, with their text.
fn recipe_files(dir: &std::path::Path, ends: &[&str]) -> Vec<(std::path::PathBuf, String)> {
    crate::common::walk(dir)
        .into_iter()
        .filter(|p| ends.iter().any(|e| p.to_string_lossy().ends_with(e)))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            (p, text)
        })
        .collect()
}

#[test]
fn a_key_with_a_newline_adds_no_line_to_a_recipe() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n }}",
        r#"{name: "{{ n }}"}"#,
    );
    let marker = svc.path().join("pwned");
    svc.file(
        "objects.yaml",
        &format!(
            "Site:\n  - {{name: \"a\\nGET /admin HTTP/1.1\\ntouch {}\"}}\n",
            marker.display()
        ),
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.ok(&["run", "--once"]);
    let files = recipe_files(&svc.path().join(".stepsync/sys"), &["sync.sh", "sync.http"]);
    assert_eq!(files.len(), 2, "{files:?}");
    for (path, text) in &files {
        for line in text.lines() {
            assert!(
                !line.starts_with("touch") && !line.starts_with("GET /admin"),
                "{}: {line}",
                path.display()
            );
        }
    }
    // Run by hand, the script sends what the engine sent and nothing else.
    let sh = &files
        .iter()
        .find(|(p, _)| p.ends_with("sync.sh"))
        .expect("sync.sh")
        .0;
    let out = std::process::Command::new("sh")
        .arg(sh)
        .current_dir(sh.parent().expect("folder"))
        .output()
        .expect("sh sync.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "sync.sh ran a line the key wrote");
    let http = &files
        .iter()
        .find(|(p, _)| p.ends_with("sync.http"))
        .expect("sync.http")
        .0;
    svc.ok(&["replay", &http.display().to_string()]);
    let lines = server.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l == &lines[0]), "{lines:?}");
    assert!(lines[0].starts_with("PUT /sites/a"), "{lines:?}");
}

#[test]
fn basic_auth_credentials_never_reach_a_file() {
    use base64::Engine as _;
    let server = TestServer::start();
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: goal-test\nvars: {{base: \"{}\"}}\nsecrets: {{pw: {{env: GOAL_TEST_PW}}}}\n",
            server.url
        ),
    );
    svc.file(
        "schemas/models.yaml",
        "models:\n  Site:\n    fields:\n      name: {type: string, required: true}\n      echo: {type: string, feedback: true}\n",
    );
    // The feedback stands for a backend that echoes the Authorization header it received.
    svc.file(
        "stepdefs/site.yaml",
        r#"kind: Actuator
model: Site
attributes: {n: "{{ object.name }}"}
sync:
  rest:
    method: PUT
    url: "{{ vars.base }}/sites/{{ n }}"
    auth: {basic: {user: admin, password: "{{ secret('pw') }}"}}
    body: {name: "{{ n }}"}
feedback:
  echo: "{{ 'Basic ' ~ ('admin:' ~ secret('pw')) | b64encode }}"
"#,
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let password = "correct-horse-battery";
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
    let run = svc
        .command(&["run", "--once"])
        .env("GOAL_TEST_PW", password)
        .output()
        .expect("run --once");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let sent = server.requests();
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Basic {encoded}").as_str())
    );
    let dir = svc.path().join(".stepsync");
    let mut everything = recipe_files(&dir, &[".http", ".sh", ".log", ".json"]);
    let db = std::fs::read(dir.join("state.db")).expect("the store");
    everything.push((
        dir.join("state.db"),
        String::from_utf8_lossy(&db).into_owned(),
    ));
    assert!(everything.len() >= 5, "{everything:?}");
    for (path, text) in &everything {
        assert!(
            !text.contains(password),
            "{} holds the password",
            path.display()
        );
        assert!(
            !text.contains(&encoded),
            "{} holds its base64",
            path.display()
        );
    }
    // Run by hand with the secret in the environment, the recipes send the same header.
    let sh = dir.join("sys/Site/a/sync.sh");
    let out = std::process::Command::new("sh")
        .arg(&sh)
        .env("STEPSYNC_SECRET_PW", password)
        .output()
        .expect("sh sync.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = svc
        .command(&[
            "replay",
            &dir.join("sys/Site/a/sync.http").display().to_string(),
        ])
        .env("GOAL_TEST_PW", password)
        .output()
        .expect("replay");
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let sent = server.requests();
    assert_eq!(sent.len(), 3);
    for r in &sent {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Basic {encoded}").as_str())
        );
    }
}

#[test]
fn a_second_runner_is_refused_and_a_dead_ones_lease_taken_over() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n }}",
        r#"{name: "{{ n }}"}"#,
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let mut daemon = svc
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the daemon's run");
    svc.test()
        .args(["run", "--once"])
        .status(1)
        .stderr_contains(&format!(
            "store is driven by another stepsync run (pid {} on host ",
            daemon.id()
        ))
        .run();
    // The holder dies without releasing its lease: the next run takes it over at once.
    daemon.kill().expect("kill -9");
    daemon.wait().expect("reap");
    let started = Instant::now();
    svc.ok(&["run", "--once"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.lines(), ["PUT /sites/a"]);
}

/// Site gets an id from its backend; a Slice's URL reads it through its ref.
fn feedback_service(server: &TestServer) -> Service {
    let svc = Service::new(
        "models:
  Site:
    fields:
      name: {type: string, required: true}
      site_id: {type: string, feedback: true}
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
",
    );
    svc.file(
        "stepsync.yaml",
        &format!("name: plan-test\nvars: {{base: \"{}\"}}\n", server.url),
    );
    svc.file(
        "stepdefs/site.yaml",
        r#"kind: Actuator
model: Site
attributes: {n: "{{ object.name }}"}
sync:
  rest: {method: PUT, url: "{{ vars.base }}/sites/{{ n }}", body: {name: "{{ n }}"}}
feedback:
  site_id: {jsonpath: "$.id"}
"#,
    );
    svc.file(
        "stepdefs/slice.yaml",
        r#"kind: Actuator
model: Slice
attributes: {n: "{{ object.name }}", site_id: "{{ object.site.site_id }}"}
sync:
  rest: {method: PUT, url: "{{ vars.base }}/sites/{{ site_id }}/slices/{{ n }}", body: {name: "{{ n }}"}}
"#,
    );
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a}\nSlice:\n  - {name: s1, site: a}\n",
    );
    svc
}

#[test]
fn plan_tells_the_truth() {
    let server = TestServer::start();
    let svc = feedback_service(&server);
    // Pretend with files plans them on top of the store and writes nothing to it.
    svc.test()
        .args(["run", "--once", "--pretend", "-f", "objects.yaml"])
        .stdout_contains("+ create Slice/s1 (rest) created")
        .run();
    assert!(svc.keys("Site").is_empty(), "pretend wrote the objects");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    // A value only the backend will give shows as such, and the plan succeeds.
    let first = svc
        .test()
        .args(["plan"])
        .stdout_contains("/sites/(known after apply)/slices/s1")
        .run();
    let second = svc.ok(&["plan"]);
    assert_eq!(first.stdout, second.stdout, "a second plan says the same");
    assert!(server.requests().is_empty());
    let sys = svc.path().join(".stepsync/sys");
    assert!(
        !sys.join("Slice/s1/sync.http").exists(),
        "plan wrote an executed recipe"
    );
    assert!(sys.join(".plan/Slice/s1/sync.http").exists());
    // After a run, the executed recipe is what was sent; a plan leaves it alone.
    svc.ok(&["run", "--once"]);
    let executed = std::fs::read_to_string(sys.join("Slice/s1/sync.http")).unwrap();
    assert!(executed.contains("/sites/id-a/slices/s1"), "{executed}");
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a}\nSlice:\n  - {name: s1, site: a}\n  - {name: s2, site: a}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.test()
        .args(["plan", "-o", "json"])
        .stdout_contains(r#""reason": "created""#)
        .run();
    assert_eq!(
        std::fs::read_to_string(sys.join("Slice/s1/sync.http")).unwrap(),
        executed
    );
}

#[test]
fn a_sys_dir_write_that_fails_is_an_error_of_that_object_only() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n | urlencode }}",
        r#"{name: "{{ n }}"}"#,
    );
    let long = "k".repeat(300);
    svc.file(
        "objects.yaml",
        &format!("Site:\n  - {{name: a}}\n  - {{name: b}}\n  - {{name: {long}}}\n"),
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    // Where b's folder would go, something that is not a folder.
    let sys = svc.path().join(".stepsync/sys/Site");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("b"), "in the way").unwrap();
    let out = svc
        .test()
        .args(["run", "--once"])
        .status(1)
        .stdout_contains("run: 2 ok, 1 error")
        .run();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("Site/b error (retry in ") && l.contains("): sys dir ")),
        "{}",
        out.stdout
    );
    assert_eq!(svc.object("Site", "a")["status"]["status"], "ok");
    // A key too long for a file name gets a folder cut to fit, its status.json has it whole.
    let status = crate::common::walk(&sys)
        .into_iter()
        .find(|p| p.ends_with("status.json") && p.to_string_lossy().contains("kkkk"))
        .expect("the long key's status.json");
    assert!(std::fs::read_to_string(status).unwrap().contains(&long));
}

#[test]
fn one_slow_request_does_not_hold_the_daemon() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n }}",
        r#"{name: "{{ n }}"}"#,
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    server.hold("/sites/a", Duration::from_secs(8));
    let mut daemon = svc
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the slow PUT");
    svc.file("b.yaml", "Site:\n  - {name: b}\n");
    let applied = Instant::now();
    svc.ok(&["apply", "-f", "b.yaml"]);
    let b = server.wait_for("PUT /sites/b", Duration::from_secs(10));
    let waited = applied.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    b.expect("b's PUT");
    assert!(
        waited < Duration::from_secs(3),
        "b waited {waited:?} for a's slow request"
    );
}

#[test]
fn a_response_larger_than_max_response_fails_the_run_and_logs_stay_small() {
    let server = TestServer::start();
    let svc = service(
        &server,
        "{{ vars.base }}/sites/{{ n }}",
        r#"{name: "{{ n }}"}"#,
    );
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &format!("{cfg}http: {{max_response: 1MiB}}\n"),
    );
    svc.file("objects.yaml", "Site:\n  - {name: big}\n  - {name: mid}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let big = format!("\"{}\"", "x".repeat(3 * 1024 * 1024));
    let mid = format!("\"{}\"", "y".repeat(512 * 1024));
    server.respond("PUT", "/sites/big", 200, &big);
    server.respond("PUT", "/sites/mid", 200, &mid);
    let out = svc.test().args(["run", "--once"]).status(1).run();
    assert!(
        out.stdout
            .contains("the response is larger than http.max_response (1 MiB)"),
        "{}",
        out.stdout
    );
    assert_eq!(svc.object("Site", "mid")["status"]["status"], "ok");
    // The run log keeps the first 64 KiB of a body, not all of it.
    let runs = svc.path().join(".stepsync/sys/Site/mid/runs");
    for log in std::fs::read_dir(runs).unwrap() {
        let len = std::fs::metadata(log.unwrap().path()).unwrap().len();
        assert!(len < 70 * 1024, "a run log of {len} bytes");
    }
}
