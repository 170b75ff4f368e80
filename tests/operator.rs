//! The operator's day (#14): logging as `stepsync.yaml` says, `-q`, tables that keep the
//! useful part of a message, messages that say what failed and where to look, recipes a
//! person can run from their folder, `init`'s next steps, stored objects the schema no
//! longer describes, `rest_defaults`, shell completions (SPEC §3, §6.2, §8, §10).

use std::path::Path;
use std::time::Duration;

use crate::common::fixtures::{SITE_SLICE, SITE_SLICE_TREE, rest_stepdef};
use crate::common::http::TestServer;
use crate::common::{Service, Test};

/// Site and Slice with REST actuators against `server`.
fn rest_service(server: &TestServer) -> Service {
    let svc = Service::new(SITE_SLICE);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: ops\nvars: {{base: '{}'}}\nbackoff: {{initial: 1h}}\n",
            server.url
        ),
    );
    svc.file("stepdefs/site.yaml", &rest_stepdef("Site", "sites", ""));
    svc.file("stepdefs/slice.yaml", &rest_stepdef("Slice", "slices", ""));
    svc.file("objects.yaml", SITE_SLICE_TREE);
    svc
}

/// SIGTERM, then what the process wrote on stderr.
fn stop(child: std::process::Child) -> String {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("daemon output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---- 1. logging ------------------------------------------------------------------------

#[test]
fn the_daemon_logs_its_start_and_each_finished_run_at_the_default_level() {
    let server = TestServer::start();
    let svc = rest_service(&server);
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let child = svc
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("daemon");
    assert!(
        server
            .wait_for("PUT /slices/b2", Duration::from_secs(20))
            .is_some()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = stop(child);
    assert!(log.contains("started"), "{log}");
    assert!(log.contains("service=ops"), "{log}");
    assert!(log.contains("store=sqlite:.stepsync/state.db"), "{log}");
    assert!(log.contains("lease_ttl=15s"), "{log}");
    for name in ["Site/a", "Slice/b2"] {
        assert!(
            log.lines()
                .any(|l| l.contains("INFO") && l.contains(name) && l.contains(" ok")),
            "no line for {name}: {log}"
        );
    }
}

#[test]
fn the_logging_block_sets_level_format_and_file() {
    let server = TestServer::start();
    let svc = rest_service(&server);
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &format!("{cfg}logging: {{level: debug, format: json, file: logs/stepsync.log}}\n"),
    );
    let out = svc.ok(&["run", "--once", "-f", "objects.yaml"]);
    let file = std::fs::read_to_string(svc.path().join("logs/stepsync.log")).expect("log file");
    let lines: Vec<serde_json::Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "{file}");
    assert!(lines.iter().any(|l| l["level"] == "INFO"), "{file}");
    // stderr has the same lines, as JSON too.
    let first = out.stderr.lines().next().expect("log lines on stderr");
    serde_json::from_str::<serde_json::Value>(first).expect("JSON on stderr");

    // -q: errors only, over the file's level.
    svc.ok(&["apply", "-f", "objects.yaml"]);
    let out = svc.ok(&["-q", "run", "--once"]);
    assert_eq!(out.stderr, "");
}

// ---- 2. output -------------------------------------------------------------------------

#[test]
fn quiet_silences_apply_and_run_and_tables_keep_what_matters() {
    let server = TestServer::start();
    let svc = rest_service(&server);
    let out = svc.ok(&["-q", "apply", "-f", "objects.yaml"]);
    assert_eq!(out.stdout, "");
    let out = svc.ok(&["-q", "run", "--once", "-f", "objects.yaml"]);
    assert_eq!(out.stdout, "");

    // get without a model: the models and their counts; an empty model: a sentence.
    svc.test()
        .args(["get"])
        .stdout("MODEL  OBJECTS\nSite   2\nSlice  4\n")
        .run();

    // A failure whose useful part is at the end of a long message.
    server.respond(
        "PUT",
        "/sites/a",
        500,
        "{\"error\": \"the site quota of this tenant is exhausted\"}",
    );
    svc.file(
        "objects.yaml",
        &SITE_SLICE_TREE.replace("{name: a}", "{name: a, login_base: changed}"),
    );
    let out = svc
        .test()
        .args(["run", "--once", "-f", "objects.yaml"])
        .status(1)
        .run();
    assert!(
        out.stdout.contains("Site/a error (retry in "),
        "{}",
        out.stdout
    );
    let status = svc.ok(&["status"]).stdout;
    assert!(status.ends_with('\n'));
    assert!(
        status.contains("quota of this tenant is exhausted"),
        "{status}"
    );
    assert!(status.contains("1 failure, retry in "), "{status}");
    let table = svc.ok(&["get", "Site"]).stdout;
    assert!(table.contains("exhausted"), "{table}");
    let wide = svc.ok(&["get", "Site", "-o", "wide"]).stdout;
    assert!(
        wide.contains("REASON") && wide.contains("NEXT-RETRY") && wide.contains("retry in "),
        "{wide}"
    );
    assert!(
        wide.contains(&format!(
            "PUT {}/sites/a: unexpected status 500",
            server.url
        )),
        "{wide}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&svc.ok(&["status", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["errors"][0]["key"], "a");
    assert_eq!(json["models"][0]["total"], 2);

    // Deleting: the summary counts what was deleted.
    svc.ok(&["delete", "Site", "b", "--cascade"]);
    let out = svc.test().args(["run", "--once"]).status(1).run();
    assert!(out.stdout.contains("3 deleted"), "{}", out.stdout);
    svc.ok(&["delete", "Slice", "--all"]);
    svc.expect(&["run", "--once"], 1);
    svc.ok(&["delete", "Site", "--all", "--force"]);
    svc.ok(&["run", "--once"]);
    svc.test()
        .args(["get", "Site"])
        .stdout("")
        .stderr_contains("No Site objects.")
        .run();
}

// ---- 3. messages -----------------------------------------------------------------------

const CHECK: &str = "models:\n  Check:\n    fields:\n      name: {type: string, required: true}\n";

#[test]
fn a_failed_command_says_its_rc_and_stderr_and_points_at_the_run_log() {
    for runner in ["builtin", "ansible"] {
        let svc = Service::new(CHECK);
        svc.file("stepsync.yaml", &format!("name: t\nrunner: {runner}\n"));
        svc.file(
            "stepdefs/check.yaml",
            "kind: Actuator\nmodel: Check\nattributes: {n: '{{ object.name }}'}\nsync: {playbook: check.yml}\n",
        );
        svc.file(
            "playbooks/check.yml",
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n    - name: check the exporter\n      shell: \"echo starting; echo 'exporter: connection refused' >&2; exit 3\"\n",
        );
        svc.file("objects.yaml", "Check:\n  - {name: c1}\n");
        svc.test()
            .args(["run", "--once", "-f", "objects.yaml"])
            .status(1)
            .run();
        let msg = svc.object("Check", "c1")["status"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains("check the exporter"), "{runner}: {msg}");
        assert!(msg.contains("(rc 3)"), "{runner}: {msg}");
        assert!(
            msg.contains("exporter: connection refused"),
            "{runner}: {msg}"
        );
        let log = msg
            .split("(run log: ")
            .nth(1)
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{runner}: no run log in {msg}"));
        let text = std::fs::read_to_string(svc.path().join(log)).expect("the run log named");
        assert!(text.contains("connection refused"), "{text}");
    }
}

#[test]
fn validate_names_misspelt_vars_and_result_fields() {
    let svc = Service::new(
        "models:\n  Site:\n    fields:\n      name: {type: string, required: true}\n      site_id: {type: string, feedback: true}\n",
    );
    svc.file("stepsync.yaml", "name: t\nvars: {controller: 'http://c'}\n");
    svc.file(
        "stepdefs/site.yaml",
        "kind: Actuator\nmodel: Site\nsync:\n  rest:\n    method: PUT\n    url: \"{{ vars.controler }}/sites/{{ object.name }}\"\nfeedback:\n  site_id: \"{{ result.statuss }}\"\n",
    );
    let out = svc.test().args(["validate"]).status(2).run();
    assert!(
        out.stderr.contains("`vars.controler` is not a service var"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `controller`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("stepdefs/site.yaml:6:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("`result` has no field `statuss`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("stepdefs/site.yaml:8:"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_reports_every_file_even_after_a_syntax_error() {
    let svc = Service::new(SITE_SLICE);
    svc.file("stepsync.yaml", "name: t\nvars: [unclosed\n");
    svc.file("stepdefs/a-broken.yaml", "kind: Actuator\nmodel: [Site\n");
    svc.file(
        "stepdefs/b-typo.yaml",
        "kind: Actuator\nmodel: Slice\nsync:\n  rest: {method: PUT, url: \"http://x/{{ object.nmae }}\"}\n",
    );
    let out = svc.test().args(["validate"]).status(2).run();
    for want in [
        "stepsync.yaml:2:",
        "stepdefs/a-broken.yaml:2:",
        "stepdefs/b-typo.yaml:4:",
        "Slice has no field `nmae`",
    ] {
        assert!(out.stderr.contains(want), "{want}: {}", out.stderr);
    }
}

#[test]
fn arguments_say_what_they_want() {
    let svc = Service::new(SITE_SLICE);
    svc.test()
        .args(["run", "--once", "--concurrency", "0"])
        .status(2)
        .stderr_contains("must be at least 1")
        .stderr_lacks("non-zero type")
        .run();
    let help = svc.ok(&["get", "--help"]).stdout;
    assert!(help.contains("The model, as named in schemas/"), "{help}");
    assert!(help.contains("The object's key"), "{help}");
}

// ---- 4. recipes ------------------------------------------------------------------------

#[test]
fn a_playbook_recipe_runs_by_hand_from_its_folder_and_replays() {
    let svc = Service::new(CHECK);
    let target = svc.path().join("target");
    svc.file("stepsync.yaml", "name: t\n");
    svc.file(
        "stepdefs/check.yaml",
        &format!(
            "kind: Actuator\nmodel: Check\nattributes: {{n: '{{{{ object.name }}}}', dir: '{}'}}\nsync: {{playbook: check.yml}}\n",
            target.display()
        ),
    );
    svc.file(
        "playbooks/check.yml",
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles: [mark]\n",
    );
    svc.file(
        "playbooks/roles/mark/tasks/main.yml",
        "- name: mark\n  copy: {dest: \"{{ dir }}/{{ n }}.txt\", content: \"marked\\n\"}\n",
    );
    std::fs::create_dir_all(&target).unwrap();
    svc.file("objects.yaml", "Check:\n  - {name: c1}\n");
    svc.ok(&["run", "--once", "-f", "objects.yaml"]);
    let folder = svc.path().join(".stepsync/sys/Check/c1");
    assert!(folder.join("ansible.cfg").exists());
    std::fs::remove_file(target.join("c1.txt")).unwrap();
    let by_hand = std::process::Command::new("ansible-playbook")
        .args(["-i", "inventory.yml", "sync.yml"])
        .current_dir(&folder)
        .env_remove("ANSIBLE_CONFIG")
        .output()
        .unwrap();
    assert!(
        by_hand.status.success(),
        "{}{}",
        String::from_utf8_lossy(&by_hand.stdout),
        String::from_utf8_lossy(&by_hand.stderr)
    );
    assert!(target.join("c1.txt").exists());

    std::fs::remove_file(target.join("c1.txt")).unwrap();
    let out = svc.ok(&["replay", ".stepsync/sys/Check/c1"]);
    assert!(out.stdout.contains("ok: "), "{}", out.stdout);
    assert!(target.join("c1.txt").exists());
}

#[test]
fn delete_recipes_write_status_ranges_and_deleted_folders_are_capped() {
    let server = TestServer::start();
    let svc = rest_service(&server);
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file("stepsync.yaml", &format!("{cfg}sys_keep_deleted: 2\n"));
    svc.ok(&["run", "--once", "-f", "objects.yaml"]);
    svc.ok(&["render", "Site", "a", "--delete"]);
    let http =
        std::fs::read_to_string(svc.path().join(".stepsync/sys/.plan/Site/a/delete.http")).unwrap();
    assert!(http.contains("# @expect 200-299,404\n"), "{http}");
    let sh =
        std::fs::read_to_string(svc.path().join(".stepsync/sys/.plan/Site/a/delete.sh")).unwrap();
    assert!(sh.contains("2??|404)"), "{sh}");
    // The range form is what `replay` reads back: a 404 is still a success.
    server.respond("DELETE", "/sites/a", 404, "");
    svc.ok(&["replay", ".stepsync/sys/.plan/Site/a/delete.http"]);

    svc.ok(&["delete", "Site", "a", "--cascade"]);
    svc.ok(&["delete", "Site", "b", "--cascade"]);
    svc.ok(&["run", "--once"]);
    let deleted = svc.path().join(".stepsync/sys/.deleted");
    let kept: usize = ["Site", "Slice"]
        .iter()
        .map(|m| std::fs::read_dir(deleted.join(m)).map_or(0, Iterator::count))
        .sum();
    assert_eq!(kept, 2, "6 purged, 2 kept");
}

// ---- 5. scaffolding --------------------------------------------------------------------

#[test]
fn init_prints_next_steps_that_give_a_running_service() {
    let server = TestServer::start();
    let parent = Service::empty();
    let out = parent.ok(&["init", "svc"]);
    assert!(out.stdout.contains("Next steps:"), "{}", out.stdout);
    let svc = Service::at(&parent.path().join("svc"));
    let cfg = svc.path().join("stepsync.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("api: http://127.0.0.1:8080"), "{text}");
    std::fs::write(&cfg, text.replace("http://127.0.0.1:8080", &server.url)).unwrap();
    // Every `stepsync ...` line, in order, as a user types it in the service directory.
    let mut ran = 0;
    for line in out.stdout.lines().map(str::trim) {
        let Some(cmd) = line.strip_prefix("stepsync ") else {
            continue;
        };
        let args: Vec<&str> = cmd.split_whitespace().collect();
        svc.ok(&args);
        ran += 1;
    }
    assert!(ran >= 4, "{}", out.stdout);
    assert!(
        server
            .wait_for("PUT /sites/site-a", Duration::from_secs(1))
            .is_some()
    );
    let ignore = std::fs::read_to_string(svc.path().join(".gitignore")).unwrap();
    assert!(
        ignore.contains("runs/") && ignore.contains(".plan/"),
        "{ignore}"
    );
    assert_eq!(svc.object("Site", "site-a")["status"]["status"], "ok");
}

#[test]
fn apply_of_a_directory_without_objects_files_is_an_error() {
    let svc = Service::new(SITE_SLICE);
    std::fs::create_dir_all(svc.path().join("empty")).unwrap();
    svc.test()
        .args(["apply", "-f", "empty"])
        .status(2)
        .stderr_contains("no objects file (*.yaml, *.yml) in this directory\n  --> empty")
        .run();
}

#[test]
fn the_readme_stands_on_its_own() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        !readme.contains("../shared"),
        "the README links outside the repository"
    );
    for section in [
        "## Logging",
        "## Troubleshooting",
        "completions",
        "rest_defaults",
    ] {
        assert!(readme.contains(section), "no {section} in the README");
    }
}

// ---- 6. schema against the store -------------------------------------------------------

#[test]
fn stored_objects_the_schema_lost_are_reported_with_a_way_out() {
    let server = TestServer::start();
    let svc = rest_service(&server);
    svc.ok(&["run", "--once", "-f", "objects.yaml"]);
    // Slice removed from the schema (and its stepdef); Site gains a required field.
    svc.file(
        "schemas/models.yaml",
        "models:\n  Site:\n    fields:\n      name: {type: string, required: true}\n      login_base: string\n      region: {type: string, required: true}\n",
    );
    std::fs::remove_file(svc.path().join("stepdefs/slice.yaml")).unwrap();
    let out = svc.test().args(["validate"]).status(2).run();
    assert!(
        out.stderr
            .contains("Slice: 4 stored object(s) of a model no schema defines"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--all --force"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("Site: 2 stored object(s) lack the required field `region`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("schemas/models.yaml:6:"),
        "{}",
        out.stderr
    );
    let status = svc.ok(&["status"]).stdout;
    assert!(status.contains("Slice: 4 stored object(s)"), "{status}");
    let out = svc.test().args(["run", "--once"]).any_status().run();
    assert!(
        out.stderr.contains("model no schema defines"),
        "{}",
        out.stderr
    );

    // The way out: forget them (no backend call), and give the field a value.
    let before = server.requests().len();
    svc.ok(&["delete", "Slice", "--all", "--force"]);
    assert_eq!(server.requests().len(), before, "no backend call");
    svc.file(
        "objects.yaml",
        "Site:\n  - {name: a, region: eu}\n  - {name: b, region: us}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.ok(&["validate"]);
}

// ---- 7. rest_defaults ------------------------------------------------------------------

#[test]
fn rest_defaults_apply_to_every_request_and_a_request_overrides_them() {
    let server = TestServer::start();
    let svc = Service::new(SITE_SLICE);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: t\nvars: {{base: '{}'}}\nsecrets:\n  tok: {{env: OPS_TOKEN}}\n",
            server.url
        ),
    );
    svc.file(
        "stepdefs/site.yaml",
        "kind: Actuator
model: Site
rest_defaults:
  headers: {X-Team: core, Accept: application/json}
  auth: {bearer: \"{{ secret('tok') }}\"}
  timeout: 5s
sync:
  rest:
    observe: {url: \"{{ vars.base }}/sites/{{ object.name }}\"}
    create: {method: POST, url: \"{{ vars.base }}/sites/{{ object.name }}\", body: {name: \"{{ object.name }}\"}}
    update: {method: PUT, url: \"{{ vars.base }}/sites/{{ object.name }}\", headers: {x-team: edge}, body: {name: \"{{ object.name }}\"}}
delete:
  rest: {method: DELETE, url: \"{{ vars.base }}/sites/{{ object.name }}\"}
",
    );
    svc.file("objects.yaml", "Site:\n  - {name: a}\n");
    svc.test()
        .env("OPS_TOKEN", "tok-123")
        .args(["run", "--once", "-f", "objects.yaml"])
        .run();
    server.store("/sites/a", "{\"name\": \"old\"}");
    svc.file("objects.yaml", "Site:\n  - {name: a, login_base: x}\n");
    svc.test()
        .env("OPS_TOKEN", "tok-123")
        .args(["run", "--once", "-f", "objects.yaml"])
        .run();
    svc.ok(&["delete", "Site", "a"]);
    svc.test()
        .env("OPS_TOKEN", "tok-123")
        .args(["run", "--once"])
        .run();
    let reqs = server.requests();
    let lines: Vec<String> = reqs.iter().map(|r| r.line()).collect();
    assert!(lines.contains(&"POST /sites/a".to_owned()), "{lines:?}");
    assert!(lines.contains(&"PUT /sites/a".to_owned()), "{lines:?}");
    assert!(lines.contains(&"DELETE /sites/a".to_owned()), "{lines:?}");
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer tok-123"),
            "{}",
            r.line()
        );
        let team = if r.method == "PUT" { "edge" } else { "core" };
        assert_eq!(r.header("x-team"), Some(team), "{}", r.line());
    }
}

// ---- 8. completions --------------------------------------------------------------------

#[test]
fn completions_are_printed_for_each_shell() {
    let bash = Test::empty().args(["completions", "bash"]).run().stdout;
    assert!(
        bash.contains("_stepsync()") && bash.contains("complete -F"),
        "{bash}"
    );
    assert!(bash.contains("validate") && bash.contains("--detailed-exitcode"));
    let zsh = Test::empty().args(["completions", "zsh"]).run().stdout;
    assert!(zsh.starts_with("#compdef stepsync"), "{zsh}");
    for shell in ["fish", "elvish", "powershell"] {
        let out = Test::empty().args(["completions", shell]).run().stdout;
        assert!(out.contains("stepsync"), "{shell}");
    }
    // bash itself accepts the script.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stepsync.bash");
    std::fs::write(&f, &bash).unwrap();
    let ok = std::process::Command::new("bash")
        .arg("-n")
        .arg(&f)
        .status()
        .unwrap();
    assert!(ok.success());
}
