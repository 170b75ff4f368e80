//! Outcomes never overwrite a newer intent (SPEC §5.1, §5.3, §5.4; issue #13 findings 5 and
//! 6): deletes and changes that arrive while a run is in flight, and objects never synced.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::Service;
use crate::common::http::TestServer;

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
      site_id: {type: string, feedback: true}
";

/// A Site actuator whose delete needs the id the backend assigned (a feedback field).
const STEPDEF: &str = r#"kind: Actuator
model: Site
attributes: {n: "{{ object.name }}"}
sync:
  rest:
    method: PUT
    url: "{{ vars.base }}/sites/{{ n }}"
    body: {name: "{{ n }}", login: "{{ object.login_base | default('') }}"}
delete:
  rest: {method: DELETE, url: "{{ vars.base }}/sites/{{ object.site_id }}"}
feedback:
  site_id: {jsonpath: "$.id"}
"#;

fn setup(config_extra: &str) -> (Service, TestServer) {
    let server = TestServer::start();
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: intent-test\nvars: {{base: \"{}\"}}\n{config_extra}",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", STEPDEF);
    svc.file("objects.yaml", "Site:\n  - {name: a, login_base: one}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    (svc, server)
}

fn run_once_in_background(svc: &Service) -> Child {
    svc.command(&["run", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start run --once")
}

fn status(svc: &Service) -> serde_json::Value {
    svc.object("Site", "a")["status"].clone()
}

#[test]
fn an_object_never_synced_is_purged_without_its_delete_payload() {
    let (svc, server) = setup("");
    svc.ok(&["delete", "Site", "a"]);
    // Its delete URL reads a feedback field that never came: rendering it would fail for
    // ever. Nothing was ever sent, so nothing is to be deleted.
    svc.ok(&["run", "--once"]);
    assert!(server.lines().is_empty(), "{:?}", server.lines());
    assert!(svc.keys("Site").is_empty());
}

#[test]
fn a_re_apply_during_the_delete_is_not_lost() {
    let (svc, server) = setup("");
    svc.ok(&["run", "--once"]);
    assert_eq!(status(&svc)["status"], "ok");
    server.hold("/sites/id-a", Duration::from_millis(1500));
    svc.ok(&["delete", "Site", "a"]);
    let child = run_once_in_background(&svc);
    server
        .wait_for("DELETE /sites/id-a", Duration::from_secs(10))
        .expect("the DELETE");
    svc.file("objects.yaml", "Site:\n  - {name: a, login_base: two}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let out = child.wait_with_output().expect("run --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The delete's success did not purge the re-applied object; it is created again.
    svc.ok(&["run", "--once"]);
    let lines = server.lines();
    assert_eq!(
        lines,
        ["PUT /sites/a", "DELETE /sites/id-a", "PUT /sites/a"],
        "{lines:?}"
    );
    let st = status(&svc);
    assert_eq!(st["status"], "ok", "{st}");
    assert_eq!(st["deleted"], false);
    assert_eq!(server.requests()[2].body, r#"{"name":"a","login":"two"}"#);
}

#[test]
fn a_delete_during_the_sync_keeps_the_object_deleting() {
    let (svc, server) = setup("");
    server.hold("/sites/a", Duration::from_millis(1000));
    server.hold("/sites/id-a", Duration::from_millis(3000));
    let child = run_once_in_background(&svc);
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the PUT");
    svc.ok(&["delete", "Site", "a"]);
    server
        .wait_for("DELETE /sites/id-a", Duration::from_secs(10))
        .expect("the DELETE after the PUT");
    // While the delete is in flight, the PUT's success has not made the object `ok`.
    let st = status(&svc);
    assert_eq!(st["status"], "deleting", "{st}");
    let out = child.wait_with_output().expect("run --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(svc.keys("Site").is_empty());
}

#[test]
fn a_change_during_a_failing_run_is_tried_at_once() {
    let (svc, server) = setup("backoff: {initial: 30s, jitter: 0}\n");
    server.respond("PUT", "/sites/a", 500, "{\"error\":\"boom\"}");
    server.hold("/sites/a", Duration::from_millis(1000));
    let child = run_once_in_background(&svc);
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the failing PUT");
    svc.file("objects.yaml", "Site:\n  - {name: a, login_base: two}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    // The backend heals as the fix arrives, while the old intent's PUT still fails.
    server.forget("PUT", "/sites/a");
    let _ = child.wait_with_output().expect("run --once");
    // The fix was applied while the old intent failed: no 30 s backoff for it.
    svc.ok(&["run", "--once"]);
    let puts: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.line() == "PUT /sites/a")
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(
        puts.last().map(String::as_str),
        Some(r#"{"name":"a","login":"two"}"#),
        "{puts:?}"
    );
    assert_eq!(status(&svc)["status"], "ok");
}

#[test]
fn delete_force_purges_without_a_backend_call() {
    let (svc, server) = setup("backoff: {initial: 30s, jitter: 0}\n");
    svc.ok(&["run", "--once"]);
    // Its backend refuses the delete for good: without --force it stays deleting.
    server.respond("DELETE", "/sites/id-a", 500, "{\"error\":\"no\"}");
    svc.ok(&["delete", "Site", "a"]);
    svc.test().args(["run", "--once"]).status(1).run();
    assert_eq!(status(&svc)["status"], "error");
    assert_eq!(status(&svc)["deleted"], true);
    server.clear();
    svc.test()
        .args(["delete", "--force", "Site", "a"])
        .stdout_contains("Site/a purged without a backend call (--force)")
        .stderr_contains("no delete was sent to the backend")
        .run();
    assert!(server.lines().is_empty(), "{:?}", server.lines());
    assert!(svc.keys("Site").is_empty());
    let sys = svc.path().join(".stepsync/sys");
    assert!(!sys.join("Site/a").exists());
    assert!(sys.join(".deleted/Site/a").exists());
}

#[test]
fn get_says_why_an_object_is_pending() {
    let (svc, server) = setup("backoff: {initial: 30s, jitter: 0}\n");
    assert_eq!(status(&svc)["reason"], "created");
    svc.ok(&["run", "--once"]);
    assert_eq!(status(&svc)["reason"], serde_json::Value::Null);
    svc.file("objects.yaml", "Site:\n  - {name: a, login_base: two}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    assert_eq!(status(&svc)["reason"], "changed");
    server.respond("PUT", "/sites/a", 500, "{}");
    svc.test().args(["run", "--once"]).status(1).run();
    assert_eq!(status(&svc)["reason"], "retry");
    svc.ok(&["delete", "Site", "a"]);
    assert_eq!(status(&svc)["reason"], "deleted");
}

/// A runner killed while its first PUT is in flight records nothing, but the backend may
/// have the object: deleting it afterwards still sends the delete payload.
#[test]
fn a_sync_cut_short_by_kill_9_still_gets_its_delete() {
    let (svc, server) = setup("");
    // The delete's URL must not need feedback that never came.
    svc.file(
        "stepdefs/site.yaml",
        &STEPDEF.replace("sites/{{ object.site_id }}", "sites/{{ n }}"),
    );
    server.hold("/sites/a", Duration::from_secs(10));
    let mut child = run_once_in_background(&svc);
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the held PUT");
    child.kill().expect("kill -9");
    let _ = child.wait();
    server.hold("/sites/a", Duration::ZERO);
    svc.ok(&["delete", "Site", "a"]);
    svc.ok(&["run", "--once"]);
    let lines = server.lines();
    assert_eq!(lines, ["PUT /sites/a", "DELETE /sites/a"], "{lines:?}");
    assert!(svc.keys("Site").is_empty());
}

/// SPEC §5.1: a change applied while the object's own run is in flight keeps it pending —
/// and the daemon sends it as soon as that run ends, not on some later change.
#[test]
fn the_daemon_sends_a_change_made_during_the_objects_own_run() {
    let (svc, server) = setup("");
    svc.ok(&["run", "--once"]);
    server.clear();
    server.hold("/sites/a", Duration::from_secs(3));
    let mut child = svc.daemon();
    // Objects files live apart from the service's own files, which the daemon watches.
    svc.file("objects/a.yaml", "Site:\n  - {name: a, login_base: two}\n");
    svc.ok(&["apply", "-f", "objects/a.yaml"]);
    server
        .wait_for("PUT /sites/a", Duration::from_secs(10))
        .expect("the first PUT");
    svc.file(
        "objects/a.yaml",
        "Site:\n  - {name: a, login_base: three}\n",
    );
    svc.ok(&["apply", "-f", "objects/a.yaml"]);
    server.hold("/sites/a", Duration::ZERO);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while server.requests().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{:?}", server.lines());
    assert!(reqs[1].body.contains("three"), "{}", reqs[1].body);
}
