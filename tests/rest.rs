//! REST actuators end to end against a real HTTP server: the requests, feedback, pending
//! detection, delta form, deferral and errors, the sys dir, pretend mode and plan
//! (SPEC §6, §8, §9).

use serde_json::Value;

use crate::common::http::TestServer;
use crate::common::{Out, Service, Test, walk};

const TOKEN: &str = "tok-Zq81-very-secret";

const SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
      site_id: {type: string, feedback: true}
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
      size: {type: int, default: 1}
      slice_id: {type: string, feedback: true}
";

const SITE: &str = r#"kind: Actuator
model: Site
attributes:
  site_name: "{{ object.name }}"
  login: "{{ object.login_base | default('none') }}"
sync:
  rest:
    method: PUT
    url: "{{ vars.base }}/sites/{{ site_name }}"
    headers: {Accept: application/json}
    auth: {bearer: "{{ secret('tok') }}"}
    body: {name: "{{ site_name }}", login: "{{ login }}"}
delete:
  rest:
    method: DELETE
    url: "{{ vars.base }}/sites/{{ site_name }}"
    auth: {bearer: "{{ secret('tok') }}"}
feedback:
  site_id: {jsonpath: "$.id"}
"#;

const SLICE: &str = r#"kind: Actuator
model: Slice
attributes:
  slice_name: "{{ object.name }}"
  site_name: "{{ object.site.name }}"
  size: "{{ object.size }}"
sync:
  rest:
    observe: {url: "{{ vars.base }}/slices/{{ slice_name }}"}
    create: {method: POST, url: "{{ vars.base }}/slices/{{ slice_name }}", body: {name: "{{ slice_name }}", site: "{{ site_name }}", size: "{{ size }}"}}
    update: {method: PUT, url: "{{ vars.base }}/slices/{{ slice_name }}", body: {name: "{{ slice_name }}", site: "{{ site_name }}", size: "{{ size }}"}}
feedback:
  slice_id: "{{ result.body.id }}"
"#;

const OBJECTS: &str = "Site:
  - {name: a, login_base: la}
  - {name: b}
Slice:
  - {name: s1, site: a, size: 3}
";

struct Fixture {
    svc: Service,
    server: TestServer,
}

fn fixture() -> Fixture {
    let server = TestServer::start();
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!("name: rest-test\nvars: {{base: \"{}\"}}\nsecrets:\n  tok: {{env: STEPSYNC_TEST_TOKEN}}\n", server.url),
    );
    svc.file("stepdefs/site.yaml", SITE);
    svc.file("stepdefs/slice.yaml", SLICE);
    svc.file("objects.yaml", OBJECTS);
    Fixture { svc, server }
}

impl Fixture {
    /// A command with the token in its environment.
    fn cmd(&self, args: &[&str]) -> Test {
        self.svc.test().env("STEPSYNC_TEST_TOKEN", TOKEN).args(args)
    }

    fn apply_and_run(&self) -> Out {
        self.svc.ok(&["apply", "-f", "objects.yaml"]);
        self.cmd(&["run", "--once"]).run()
    }

    fn status(&self, model: &str, key: &str) -> Value {
        self.svc.object(model, key)
    }
}

#[test]
fn requests_are_exactly_what_the_stepdefs_describe_and_feedback_lands() {
    let f = fixture();
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    f.cmd(&["run", "--once"]).stdout_contains("3 ok").run();
    let reqs = f.server.requests();
    let mut lines: Vec<String> = reqs.iter().map(|r| r.line()).collect();
    // Sites run concurrently; the slice waits for its site.
    let pos = |l: &str| lines.iter().position(|x| x == l).unwrap();
    assert!(pos("GET /slices/s1") > pos("PUT /sites/a"), "{lines:?}");
    assert_eq!(
        pos("POST /slices/s1"),
        pos("GET /slices/s1") + 1,
        "{lines:?}"
    );
    lines.sort();
    assert_eq!(
        lines,
        [
            "GET /slices/s1",
            "POST /slices/s1",
            "PUT /sites/a",
            "PUT /sites/b"
        ]
    );
    let find = |line: &str| reqs.iter().find(|r| r.line() == line).unwrap();

    let a = find("PUT /sites/a");
    assert_eq!(a.body, r#"{"name":"a","login":"la"}"#);
    assert_eq!(
        a.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(a.header("accept"), Some("application/json"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(find("PUT /sites/b").body, r#"{"name":"b","login":"none"}"#);
    // Refs are followed (object.site.name) and single expressions keep their type.
    assert_eq!(
        find("POST /slices/s1").body,
        r#"{"name":"s1","site":"a","size":3}"#
    );

    let a = f.status("Site", "a");
    assert_eq!(a["fields"]["site_id"], "id-a");
    assert_eq!(a["status"]["status"], "ok");
    assert_eq!(a["status"]["backend_code"], 1);
    assert_eq!(a["status"]["message"], "OK");
    assert_eq!(a["status"]["synced_generation"], 1);
    assert_eq!(
        a["status"]["generation"], 1,
        "feedback never moves the generation"
    );
    assert_eq!(f.status("Slice", "s1")["fields"]["slice_id"], "id-s1");
}

#[test]
fn nothing_changed_sends_nothing_and_one_change_resends_one_object() {
    let f = fixture();
    f.apply_and_run();
    f.server.clear();
    f.cmd(&["run", "--once"]).run();
    assert!(f.server.requests().is_empty(), "{:?}", f.server.lines());

    f.svc.file(
        "objects.yaml",
        &OBJECTS.replace("login_base: la", "login_base: lb"),
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    f.cmd(&["run", "--once"]).run();
    let reqs = f.server.requests();
    assert_eq!(
        reqs.iter().map(|r| r.line()).collect::<Vec<_>>(),
        ["PUT /sites/a"]
    );
    assert_eq!(reqs[0].body, r#"{"name":"a","login":"lb"}"#);
    assert_eq!(f.status("Site", "a")["status"]["synced_generation"], 2);
}

#[test]
fn delta_form_only_observes_when_the_backend_matches() {
    let f = fixture();
    f.server.store(
        "/slices/s1",
        r#"{"name":"s1","site":"a","size":3,"id":"pre-existing"}"#,
    );
    f.apply_and_run();
    let slice: Vec<String> = f
        .server
        .lines()
        .into_iter()
        .filter(|l| l.contains("slices"))
        .collect();
    assert_eq!(slice, ["GET /slices/s1"]);
    assert_eq!(
        f.status("Slice", "s1")["fields"]["slice_id"],
        "pre-existing"
    );

    // A difference leads to the update request.
    f.server.clear();
    f.svc
        .file("objects.yaml", &OBJECTS.replace("size: 3", "size: 4"));
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    f.cmd(&["run", "--once"]).run();
    assert_eq!(f.server.lines(), ["GET /slices/s1", "PUT /slices/s1"]);
    assert_eq!(
        f.server.requests()[1].body,
        r#"{"name":"s1","site":"a","size":4}"#
    );
}

#[test]
fn status_503_defers_and_500_is_an_error_that_blocks_dependents() {
    let f = fixture();
    f.server.respond("PUT", "/sites/a", 503, "busy");
    f.server.respond("PUT", "/sites/b", 500, "boom");
    f.svc.file(
        "objects.yaml",
        &format!("{OBJECTS}  - {{name: s2, site: b}}\n"),
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    let out = f.cmd(&["run", "--once"]).status(1).run();
    let a = f.status("Site", "a");
    assert_eq!(a["status"]["status"], "deferred", "{}", out.stdout);
    assert_eq!(a["status"]["backend_code"], 0);
    assert_eq!(a["status"]["failures"], 0);
    let b = f.status("Site", "b");
    assert_eq!(b["status"]["status"], "error");
    assert_eq!(b["status"]["backend_code"], 2);
    assert_eq!(b["status"]["failures"], 1);
    assert!(
        b["status"]["message"].as_str().unwrap().contains("500"),
        "{b}"
    );
    assert!(b["status"]["next_retry_at"].is_string());
    let s2 = f.status("Slice", "s2");
    assert_eq!(s2["status"]["status"], "blocked");
    assert!(
        s2["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("blocked by Site/b: "),
        "{s2}"
    );
    assert_eq!(s2["status"]["failures"], 0, "blocking is not a failure");
    // No request for the blocked slices was sent.
    assert!(
        !f.server.lines().iter().any(|l| l.contains("slices")),
        "{:?}",
        f.server.lines()
    );
}

#[test]
fn rendered_sync_sh_sends_the_same_bytes_as_the_engine() {
    let f = fixture();
    f.apply_and_run();
    let engine_body = f
        .server
        .requests()
        .into_iter()
        .find(|r| r.line() == "PUT /sites/a")
        .unwrap()
        .body;
    f.server.clear();
    let dir = f.svc.path().join(".stepsync/sys/Site/a");
    let out = std::process::Command::new("sh")
        .arg(dir.join("sync.sh"))
        .env("STEPSYNC_SECRET_TOK", TOKEN)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reqs = f.server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].line(), "PUT /sites/a");
    assert_eq!(reqs[0].body.as_bytes(), engine_body.as_bytes());
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Without the secret in the environment, the script refuses to run.
    let out = std::process::Command::new("sh")
        .arg(dir.join("sync.sh"))
        .env_remove("STEPSYNC_SECRET_TOK")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("STEPSYNC_SECRET_TOK"));
}

#[test]
fn the_secret_is_written_nowhere() {
    let f = fixture();
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    let plan = f.cmd(&["plan"]).run();
    let run = f.cmd(&["-vv", "run", "--once"]).run();
    // A failure message that would echo the request must be masked too.
    f.server
        .respond("PUT", "/sites/a", 500, &format!("bad token {TOKEN}"));
    f.svc.file(
        "objects.yaml",
        &OBJECTS.replace("login_base: la", "login_base: lc"),
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    let failed = f.cmd(&["-vv", "run", "--once"]).status(1).run();
    let json = f.svc.ok(&["get", "Site", "-o", "json"]).stdout;
    for (what, text) in [
        ("plan", &plan.stdout),
        ("run log", &run.stderr),
        ("run", &run.stdout),
        ("failure", &failed.stdout),
        ("failure log", &failed.stderr),
        ("get", &json),
    ] {
        assert!(
            !text.contains(TOKEN),
            "the secret leaked into {what}:\n{text}"
        );
    }
    assert!(failed.stdout.contains("********"), "{}", failed.stdout);
    let mut files = 0;
    for entry in walk(&f.svc.path().join(".stepsync")) {
        let bytes = std::fs::read(&entry).unwrap();
        files += 1;
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the secret is in {}",
            entry.display()
        );
    }
    assert!(
        files >= 8,
        "the sys dir and the store were checked ({files} files)"
    );
}

#[test]
fn pretend_and_plan_send_nothing_and_write_no_state() {
    let f = fixture();
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    let before = f.svc.ok(&["get", "Site", "-o", "json"]).stdout;
    let out = f.cmd(&["plan"]).run();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("    "))
        .collect();
    assert_eq!(
        lines,
        [
            "+ create Site/a (rest) created",
            "+ create Site/b (rest) created",
            "+ create Slice/s1 (rest) created",
            "Plan: 3 to create, 0 to update, 0 to delete."
        ]
    );
    assert!(
        out.stdout.contains("+PUT "),
        "a diff against nothing: {}",
        out.stdout
    );
    f.cmd(&["run", "--once", "--pretend"])
        .stdout_contains("+ create Slice/s1 (rest) created")
        .run();
    assert!(
        f.server.requests().is_empty(),
        "pretend sent {:?}",
        f.server.lines()
    );
    assert_eq!(
        f.svc.ok(&["get", "Site", "-o", "json"]).stdout,
        before,
        "the store is untouched"
    );
    // The plan renders into the plan dir, never over the recipes the engine executed.
    assert!(
        f.svc
            .path()
            .join(".stepsync/sys/.plan/Site/a/sync.http")
            .exists()
    );
    assert!(!f.svc.path().join(".stepsync/sys/Site/a/sync.http").exists());

    // After a real run and a change, the plan shows an update with a diff.
    f.cmd(&["run", "--once"]).run();
    f.cmd(&["plan", "--detailed-exitcode"]).run();
    f.svc.file(
        "objects.yaml",
        &OBJECTS.replace("login_base: la", "login_base: lx"),
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    f.server.clear();
    f.cmd(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout_matches(r"^~ update Site/a \(rest\) changed\n")
        .stdout_contains(r#"-{"name":"a","login":"la"}"#)
        .stdout_contains(r#"+{"name":"a","login":"lx"}"#)
        .run();
    let json: Value = serde_json::from_str(&f.cmd(&["plan", "-o", "json"]).run().stdout).unwrap();
    assert_eq!(json["changes"][0]["action"], "update");
    assert_eq!(json["changes"][0]["payload"], "rest");
    assert!(
        json["changes"][0]["recipe"]
            .as_str()
            .unwrap()
            .ends_with("Site/a/sync.http")
    );
    assert!(f.server.requests().is_empty());

    // --out renders elsewhere; --refresh sends only the read-only observe requests.
    let other = tempfile::tempdir().unwrap();
    let out = f
        .cmd(&["plan", "--out", other.path().to_str().unwrap(), "--refresh"])
        .run();
    assert!(
        other.path().join("Site/a/sync.http").exists(),
        "{}",
        out.stdout
    );
    assert!(
        f.server.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        f.server.lines()
    );
}

#[test]
fn render_and_replay_a_recipe() {
    let f = fixture();
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    let out = f.cmd(&["render", "Site", "b"]).run();
    let path = out.stdout.trim();
    assert!(path.ends_with("Site/b/sync.http"), "{path}");
    let http = std::fs::read_to_string(f.svc.path().join(path)).unwrap();
    assert!(
        http.contains("{{$processEnv STEPSYNC_SECRET_TOK}}"),
        "{http}"
    );
    assert!(f.server.requests().is_empty());
    f.cmd(&["replay", path]).stdout_contains("PUT").run();
    assert_eq!(f.server.lines(), ["PUT /sites/b"]);
    assert_eq!(
        f.server.requests()[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        f.status("Site", "b")["status"]["status"],
        "pending",
        "replay leaves the data model alone"
    );
    let out = f.cmd(&["render", "Site", "b", "--delete"]).run();
    assert!(out.stdout.trim().ends_with("Site/b/delete.http"));
}

#[test]
fn deletion_sends_the_delete_and_moves_the_folder_aside() {
    let f = fixture();
    f.apply_and_run();
    f.server.clear();
    f.svc.ok(&["delete", "Site", "a", "--cascade"]);
    f.cmd(&["run", "--once"]).run();
    // Slice has no delete payload: purged at once; Site a gets its DELETE.
    assert_eq!(f.server.lines(), ["DELETE /sites/a"]);
    assert_eq!(f.svc.keys("Site"), ["b"]);
    let sys = f.svc.path().join(".stepsync/sys");
    assert!(!sys.join("Site/a").exists());
    assert!(sys.join(".deleted/Site/a/delete.http").exists());
}

#[test]
fn sys_dir_folder_names_stay_inside() {
    let f = fixture();
    f.svc.file(
        "objects.yaml",
        "Site:\n  - {name: \"../../etc\"}\n  - {name: \"a/b\"}\n  - {name: \"été\"}\n  - {name: \"\"}\n  - {name: \"..\"}\n",
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    f.cmd(&["plan"]).run();
    let site = f.svc.path().join(".stepsync/sys/.plan/Site");
    let mut names: Vec<String> = std::fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["%", "%2E.", "%2E.%2F..%2Fetc", "a%2Fb", "%C3%A9t%C3%A9"]
            .iter()
            .map(|s| s.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(!f.svc.path().join("etc").exists());
    for n in &names {
        assert!(site.join(n).join("sync.http").exists(), "{n}");
    }
}

#[test]
fn run_logs_are_kept_to_sys_keep_runs_and_rendering_is_deterministic() {
    let f = fixture();
    let cfg = std::fs::read_to_string(f.svc.path().join("stepsync.yaml")).unwrap();
    f.svc
        .file("stepsync.yaml", &format!("{cfg}sys_keep_runs: 2\n"));
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    let sys = f.svc.path().join(".stepsync/sys/Site/a");
    let mut first = None;
    for i in 0..4 {
        f.svc.file(
            "objects.yaml",
            &OBJECTS.replace("login_base: la", &format!("login_base: l{i}")),
        );
        f.svc.ok(&["apply", "-f", "objects.yaml"]);
        f.cmd(&["run", "--once"]).run();
        if i == 0 {
            first = Some(std::fs::read(sys.join("sync.sh")).unwrap());
        }
    }
    let logs = std::fs::read_dir(sys.join("runs")).unwrap().count();
    assert_eq!(logs, 2);
    // Same object, same definitions: byte-identical recipe.
    f.svc.file(
        "objects.yaml",
        &OBJECTS.replace("login_base: la", "login_base: l0"),
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    // `render` writes into the plan dir, beside the executed recipes, never over them.
    f.cmd(&["render", "Site", "a"]).run();
    let rendered = f.svc.path().join(".stepsync/sys/.plan/Site/a/sync.sh");
    assert_eq!(std::fs::read(rendered).unwrap(), first.unwrap());
}

#[test]
fn undefined_template_variable_names_the_stepdef() {
    let f = fixture();
    f.svc.file(
        "stepdefs/site.yaml",
        &SITE.replace("{{ object.name }}", "{{ object.nmae }}"),
    );
    f.svc.ok(&["apply", "-f", "objects.yaml"]);
    f.cmd(&["run", "--once"])
        .status(1)
        .stdout_contains("Site/a error")
        .run();
    let a = f.status("Site", "a");
    let msg = a["status"]["message"].as_str().unwrap();
    assert!(msg.contains("stepdefs/site.yaml:4:"), "{msg}");
    assert!(msg.contains("undefined"), "{msg}");
}

#[test]
fn stepdef_errors_are_located() {
    let f = fixture();
    f.svc
        .file("stepdefs/site2.yaml", "kind: Actuator\nmodel: Site\n");
    f.svc
        .test()
        .args(["status"])
        .status(2)
        .stderr_contains("a second actuator for model `Site`")
        .run();
    f.svc
        .test()
        .file("stepdefs/site2.yaml", "kind: Actuator\nmodel: Sitte\n")
        .args(["status"])
        .status(2)
        .stderr_contains("stepdefs/site2.yaml:2:8")
        .run();
    f.svc.file("stepdefs/site2.yaml", "");
    f.svc
        .test()
        .file(
            "stepdefs/slice.yaml",
            &SLICE.replace("slice_id: \"{{ result.body.id }}\"", "name: x"),
        )
        .args(["status"])
        .status(2)
        .stderr_contains("`name` is a declarative field of Slice")
        .run();
}

#[test]
fn basic_auth_secret_file_timeout_custom_defer_and_gone_deletes() {
    let server = TestServer::start();
    let svc =
        Service::new("models:\n  Port:\n    fields:\n      name: {type: string, required: true}\n");
    svc.file("pw.txt", "pw-from-file\n");
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: t\nvars: {{base: \"{}\"}}\nsecrets:\n  pw: {{file: pw.txt}}\n",
            server.url
        ),
    );
    svc.file(
        "stepdefs/port.yaml",
        r#"kind: Actuator
model: Port
attributes: {n: "{{ object.name }}"}
sync:
  rest:
    method: POST
    url: "{{ vars.base }}/ports/{{ n }}"
    auth: {basic: {user: admin, password: "{{ secret('pw') }}"}}
    body: {n: "{{ n }}"}
    timeout: 500ms
delete:
  rest: {method: DELETE, url: "{{ vars.base }}/ports/{{ n }}"}
defer_when: "{{ result.status == 409 }}"
"#,
    );
    svc.file("o.yaml", "Port:\n  - {name: p1}\n  - {name: p2}\n");
    svc.ok(&["apply", "-f", "o.yaml"]);
    server.respond("POST", "/ports/p2", 409, "later");
    svc.expect(&["run", "--once"], 1);
    let reqs = server.requests();
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Basic YWRtaW46cHctZnJvbS1maWxl")
    );
    assert_eq!(svc.object("Port", "p1")["status"]["status"], "ok");
    assert_eq!(svc.object("Port", "p2")["status"]["status"], "deferred");

    // A backend slower than `timeout` is an error that says so.
    server.forget("POST", "/ports/p2");
    server.set_delay(std::time::Duration::from_secs(2));
    svc.expect(&["run", "--once"], 1);
    let p2 = svc.object("Port", "p2");
    assert_eq!(p2["status"]["status"], "error");
    assert!(
        p2["status"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 500 ms"),
        "{p2}"
    );
    server.set_delay(std::time::Duration::ZERO);

    // Deleting what the backend no longer has (404) counts as deleted.
    server.respond("DELETE", "/ports/p1", 404, "");
    svc.ok(&["delete", "Port", "p1"]);
    svc.expect(&["run", "--once"], 1);
    assert_eq!(svc.keys("Port"), ["p2"]);
}
