//! Issue #13 findings 4 and 12, against a real HTTP server and real processes: unset schema
//! fields are `none` (SPEC §5.1), `urlencode` keeps a key in one path segment (§6.1), and a
//! second signal stops the daemon at once (§5.5).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Service;
use common::http::TestServer;

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
