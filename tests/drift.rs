//! Issue #13 findings 1 and 2 (SPEC §5.1 rules 4–5): every input of a recipe counts. An
//! edited stepdef, role or playbook rolls out to exactly the objects whose recipe changed
//! — in `plan`, `run --once` and the daemon — and a dependency's changed feedback reaches
//! the objects whose recipe reads it. Against a real HTTP server and real processes.

use std::time::{Duration, Instant};

use crate::common::Service;
use crate::common::http::TestServer;

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      site_id: {type: string, feedback: true}
      etag: {type: string, feedback: true}
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
";

fn site_stepdef(body_extra: &str) -> String {
    format!(
        r#"kind: Actuator
model: Site
attributes: {{n: "{{{{ object.name }}}}"}}
sync:
  rest: {{method: PUT, url: "{{{{ vars.base }}}}/sites/{{{{ n }}}}", body: {{name: "{{{{ n }}}}"{body_extra}}}}}
feedback:
  site_id: {{jsonpath: "$.id"}}
  etag: {{jsonpath: "$.etag"}}
"#
    )
}

/// Slices' URLs read their site's backend id (a feedback field), not its etag.
const SLICE_STEPDEF: &str = r#"kind: Actuator
model: Slice
attributes: {n: "{{ object.name }}", site_id: "{{ object.site.site_id }}"}
sync:
  rest: {method: PUT, url: "{{ vars.base }}/sites/{{ site_id }}/slices/{{ n }}", body: {name: "{{ n }}"}}
"#;

fn service(server: &TestServer) -> Service {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!("name: drift-test\nvars: {{base: \"{}\"}}\n", server.url),
    );
    svc.file("stepdefs/site.yaml", &site_stepdef(""));
    svc.file("stepdefs/slice.yaml", SLICE_STEPDEF);
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a}\n  - {name: b}\nSlice:\n  - {name: s1, site: a}\n  - {name: s2, site: b}\n",
    );
    for s in ["a", "b"] {
        server.respond(
            "PUT",
            &format!("/sites/{s}"),
            200,
            &format!(r#"{{"id": "id-{s}", "etag": "1"}}"#),
        );
    }
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.ok(&["run", "--once"]);
    assert_eq!(server.requests().len(), 4, "{:?}", server.lines());
    server.clear();
    svc
}

fn plan_lines(svc: &Service) -> Vec<String> {
    let out = svc.test().args(["plan"]).any_status().run();
    out.stdout
        .lines()
        .filter(|l| {
            l.starts_with(['+', '~', '-']) && !l.starts_with("---") && !l.starts_with("+++")
        })
        .filter(|l| l.contains(" (rest) ") || l.contains(" (playbook) "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_edited_stepdef_rolls_out_to_exactly_its_objects() {
    let server = TestServer::start();
    let svc = service(&server);
    // A comment changes the file, not the recipe: nothing to do, nothing sent.
    svc.file(
        "stepdefs/site.yaml",
        &format!("# sites\n{}", site_stepdef("")),
    );
    assert!(plan_lines(&svc).is_empty(), "{:?}", plan_lines(&svc));
    svc.ok(&["run", "--once"]);
    assert!(server.requests().is_empty(), "{:?}", server.lines());

    svc.file("stepdefs/site.yaml", &site_stepdef(r#", tier: gold"#));
    let plan = plan_lines(&svc);
    assert_eq!(
        plan,
        [
            "~ update Site/a (rest) definition",
            "~ update Site/b (rest) definition"
        ],
        "{plan:?}"
    );
    assert_eq!(plan_lines(&svc), plan, "a second plan says the same");
    svc.test()
        .args(["plan", "-o", "json"])
        .stdout_contains(r#"+{\"name\":\"a\",\"tier\":\"gold\"}"#)
        .run();
    svc.ok(&["run", "--once"]);
    // Sites run at once: in either order.
    let mut lines = server.lines();
    lines.sort();
    assert_eq!(lines, ["PUT /sites/a", "PUT /sites/b"], "{lines:?}");
    assert!(server.requests().iter().all(|r| r.body.contains("gold")));
    // Applied: in sync again, and nothing more to send.
    server.clear();
    assert!(plan_lines(&svc).is_empty());
    svc.ok(&["run", "--once"]);
    assert!(server.requests().is_empty(), "{:?}", server.lines());
    assert_eq!(svc.object("Site", "a")["status"]["status"], "ok");
}

#[test]
fn a_dependencys_feedback_change_reaches_the_recipes_that_read_it() {
    let server = TestServer::start();
    let svc = service(&server);
    // The backend re-created site a: a new id. Site b only changed its etag, which no
    // slice reads.
    server.respond("PUT", "/sites/a", 200, r#"{"id": "id-a2", "etag": "2"}"#);
    server.respond("PUT", "/sites/b", 200, r#"{"id": "id-b", "etag": "2"}"#);
    svc.file("stepdefs/site.yaml", &site_stepdef(r#", v: 2"#));
    svc.ok(&["run", "--once"]);
    let mut lines = server.lines();
    lines[..2].sort();
    assert_eq!(
        lines,
        ["PUT /sites/a", "PUT /sites/b", "PUT /sites/id-a2/slices/s1"],
        "{lines:?}"
    );
    assert_eq!(svc.object("Slice", "s1")["status"]["status"], "ok");
    server.clear();
    svc.ok(&["run", "--once"]);
    assert!(server.requests().is_empty(), "{:?}", server.lines());
}

#[test]
fn the_daemon_rolls_out_an_edited_stepdef_within_a_second() {
    let server = TestServer::start();
    let svc = service(&server);
    let mut child = svc.daemon();
    // Let it start and find nothing to do.
    std::thread::sleep(Duration::from_millis(700));
    assert!(server.requests().is_empty(), "{:?}", server.lines());
    let edited = Instant::now();
    svc.file("stepdefs/site.yaml", &site_stepdef(r#", tier: gold"#));
    let got = server.wait_for("PUT /sites/b", Duration::from_secs(10));
    let took = edited.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(got.is_some(), "the daemon did not send the new recipe");
    assert!(
        took < Duration::from_secs(3),
        "the edit took {took:?} to reach the backend"
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.line().contains("slices"))
    );
}

#[test]
fn an_edited_role_rolls_out_to_the_playbooks_that_use_it() {
    let target = tempfile::tempdir().unwrap();
    let svc = Service::new(
        "models:\n  Greeter:\n    fields:\n      name: {type: string, required: true}\n",
    );
    svc.file("stepsync.yaml", "name: role-drift\n");
    svc.file(
        "stepdefs/greeter.yaml",
        &format!(
            "kind: Actuator\nmodel: Greeter\nattributes: {{n: \"{{{{ object.name }}}}\", dir: \"{}\"}}\nsync:\n  playbook: greet.yml\n",
            target.path().display()
        ),
    );
    svc.file(
        "playbooks/greet.yml",
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles: [greet]\n",
    );
    let role = |text: &str| {
        format!(
            "- name: greet\n  copy: {{dest: \"{{{{ dir }}}}/{{{{ n }}}}.txt\", content: \"{text} {{{{ n }}}}\"}}\n"
        )
    };
    svc.file("playbooks/roles/greet/tasks/main.yml", &role("hello"));
    svc.file("playbooks/roles/other/tasks/main.yml", &role("unused"));
    svc.file("objects.yaml", "Greeter:\n  - {name: g1}\n");
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.ok(&["run", "--once"]);
    let greeting = || std::fs::read_to_string(target.path().join("g1.txt")).unwrap();
    assert_eq!(greeting(), "hello g1");

    // A role no playbook of this service uses: nothing changed.
    svc.file(
        "playbooks/roles/other/tasks/main.yml",
        &role("still unused"),
    );
    assert!(plan_lines(&svc).is_empty(), "{:?}", plan_lines(&svc));

    svc.file("playbooks/roles/greet/tasks/main.yml", &role("hi"));
    assert_eq!(
        plan_lines(&svc),
        ["~ update Greeter/g1 (playbook) definition"]
    );
    svc.ok(&["run", "--once"]);
    assert_eq!(greeting(), "hi g1");
    assert!(plan_lines(&svc).is_empty());
}

#[test]
fn the_daemon_re_syncs_referrers_when_a_dependency_gets_a_new_id() {
    let server = TestServer::start();
    let svc = service(&server);
    let mut child = svc.daemon();
    std::thread::sleep(Duration::from_millis(700));
    // The backend re-creates site a under a new id when it is next written.
    server.respond("PUT", "/sites/a", 200, r#"{"id": "id-a2", "etag": "2"}"#);
    svc.file("stepdefs/site.yaml", &site_stepdef(r#", v: 2"#));
    let got = server.wait_for("PUT /sites/id-a2/slices/s1", Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert!(got.is_some(), "{:?}", server.lines());
}

/// Crash-test finding (CI, seed 1796145905449369307): a suspect blocked by its failing
/// dependency, then checked and found unchanged once the dependency recovered, kept
/// `blocked` for good: nothing made it due again, so `run --once` exited 1 forever.
#[test]
fn a_blocked_suspect_found_unchanged_is_ok_again() {
    let server = TestServer::start();
    let svc = service(&server);
    // Site a fails on its next write; the slice stepdef gains a comment, so both slices
    // are suspects (their recipes are unchanged), and s1 is blocked by its failing site.
    server.respond("PUT", "/sites/a", 500, r#"{"error": "down"}"#);
    svc.file("stepdefs/site.yaml", &site_stepdef(r#", v: 2"#));
    svc.file("stepdefs/slice.yaml", &format!("# slices\n{SLICE_STEPDEF}"));
    svc.test().args(["run", "--once"]).status(1).run();
    assert_eq!(svc.object("Slice", "s1")["status"]["status"], "blocked");
    assert_eq!(svc.object("Slice", "s2")["status"]["status"], "ok");

    // The site recovers with the same id: s1's recipe is what was applied, so it is in
    // sync without being sent again.
    server.respond("PUT", "/sites/a", 200, r#"{"id": "id-a", "etag": "1"}"#);
    server.clear();
    svc.ok(&["retry", "Site", "a"]);
    svc.ok(&["run", "--once"]);
    assert_eq!(server.lines(), ["PUT /sites/a"]);
    assert_eq!(svc.object("Slice", "s1")["status"]["status"], "ok");
    svc.ok(&["run", "--once"]);
}
