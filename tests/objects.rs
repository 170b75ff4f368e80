//! The object commands against the real binary and a real SQLite file: apply, get, delete,
//! status (SPEC §4.4, §5.1, §10).

use serde_json::Value;

use crate::common::fixtures::{INSTANCE_OBJECTS as OBJECTS, SITE_SLICE_PORT_INSTANCE as SCHEMA};
use crate::common::{Service, Test};

fn svc() -> Service {
    let s = Service::new(SCHEMA);
    s.file("objects.yaml", OBJECTS);
    s
}

#[test]
fn walkthrough_apply_get_reapply_change_delete() {
    let s = svc();
    s.test()
        .args(["apply", "-f", "objects.yaml"])
        .stdout_contains("Site/site-a created")
        .stdout_contains("Instance/i1 created")
        .run();

    // Table, YAML and JSON all show the object.
    let table = s.ok(&["get", "Instance"]).stdout;
    assert!(table.starts_with("MODEL"), "{table}");
    assert!(table.contains("i1") && table.contains("pending"));
    let yaml = s.ok(&["get", "Instance", "i1", "-o", "yaml"]).stdout;
    assert!(
        yaml.contains("key: i1") && yaml.contains("generation: 1"),
        "{yaml}"
    );
    let i1 = s.object("Instance", "i1");
    assert_eq!(i1["model"], "Instance");
    assert_eq!(i1["fields"]["ports"], serde_json::json!(["p1", "p2"]));
    assert_eq!(i1["status"]["status"], "pending");
    assert_eq!(i1["status"]["backend_code"], 0);
    assert_eq!(i1["status"]["synced_generation"], 0);
    let list: Value = serde_json::from_str(&s.ok(&["get", "Port", "-o", "json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    // Defaults are filled in.
    assert_eq!(s.object("Slice", "s1")["fields"]["max_instances"], 10);

    // Identical content is a no-op.
    s.test()
        .args(["apply", "-f", "objects.yaml"])
        .stdout_contains("Instance/i1 unchanged")
        .run();
    assert_eq!(s.object("Instance", "i1")["status"]["generation"], 1);

    // One field changes: that object moves to generation 2, the others stay.
    s.test()
        .file(
            "objects.yaml",
            &OBJECTS.replace("flavor: small", "flavor: large"),
        )
        .args(["apply", "-f", "objects.yaml"])
        .stdout_contains("Instance/i1 configured")
        .run();
    let i1 = s.object("Instance", "i1");
    assert_eq!(i1["status"]["generation"], 2);
    assert_eq!(i1["status"]["synced_generation"], 0);
    assert_eq!(i1["status"]["status"], "pending");
    assert_eq!(i1["fields"]["flavor"], "large");
    assert_eq!(s.object("Slice", "s1")["status"]["generation"], 1);

    // Deleting a referenced object is refused, naming who references it.
    s.test()
        .args(["delete", "Site", "site-a"])
        .status(1)
        .stderr_contains("cannot delete Site/site-a: referenced by Instance/i1, Slice/s1")
        .stderr_contains("--cascade")
        .run();
    assert_eq!(s.keys("Site"), ["site-a"]);

    // --cascade deletes the dependents first, then the object.
    let out = s.ok(&["delete", "Site", "site-a", "--cascade"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Instance/i1 deleted",
            "Slice/s1 deleted",
            "Site/site-a deleted"
        ]
    );
    assert!(s.keys("Site").is_empty());
    assert!(s.keys("Instance").is_empty());
    assert_eq!(s.keys("Port"), ["p1", "p2"], "unrelated objects stay");
}

#[test]
fn refs_may_point_forward_within_one_apply() {
    let s = Test::new()
        .schema(SCHEMA)
        .file(
            "o.yaml",
            "Slice:\n  - {name: s1, site: later}\n---\nSite:\n  - {name: later}\n",
        )
        .args(["apply", "-f", "o.yaml"])
        .run()
        .service;
    assert_eq!(s.object("Slice", "s1")["fields"]["site"], "later");
}

#[test]
fn refs_may_point_at_stored_objects_and_across_files() {
    let s = Service::new(SCHEMA);
    s.file("a.yaml", "Site:\n  - {name: a}\n");
    s.file("b.yaml", "Slice:\n  - {name: s1, site: a}\n");
    s.ok(&["apply", "-f", "a.yaml"]);
    s.ok(&["apply", "-f", "b.yaml"]);
    s.file("dir/c.yaml", "Site:\n  - {name: c}\n");
    s.file("dir/d.yaml", "Slice:\n  - {name: s2, site: c}\n");
    s.ok(&["apply", "-f", "dir"]);
    assert_eq!(s.keys("Slice"), ["s1", "s2"]);
}

/// Each bad input: the file, the expected `file:line:col` and a word of the message.
const BAD: &[(&str, &str, &str)] = &[
    (
        "Sight:\n  - {name: a}\n",
        "bad.yaml:1:1",
        "unknown model `Sight`",
    ),
    (
        "Site:\n  - {name: a, login: x}\n",
        "bad.yaml:2:15",
        "unknown field `login`",
    ),
    (
        "Slice:\n  - {name: s, site: a, max_instances: many}\n",
        "bad.yaml:2:39",
        "expected int, found string",
    ),
    (
        "Slice:\n  - {name: s}\n",
        "bad.yaml:2:5",
        "missing required field `site`",
    ),
    (
        "Instance:\n  - {name: i, flavor: huge}\n",
        "bad.yaml:2:23",
        "not an allowed value of `flavor`",
    ),
    (
        "Instance:\n  - {name: i, instance_id: x}\n",
        "bad.yaml:2:15",
        "feedback field",
    ),
    (
        "Slice:\n  - {name: s, site: nowhere}\n",
        "bad.yaml:2:21",
        "Site/nowhere, which does not exist",
    ),
    (
        "Instance:\n  - {name: i, ports: [p1, ghost]}\n",
        "bad.yaml:2:27",
        "Port/ghost",
    ),
    (
        "Site:\n  - {name: a}\n  - {name: a}\n",
        "bad.yaml:3:5",
        "listed twice",
    ),
    (
        "Site: {name: a}\n",
        "bad.yaml:1:7",
        "expected a list of Site objects",
    ),
    ("Site:\n  - {name: a\n", "bad.yaml:", "error"),
    ("- a\n", "bad.yaml:1:1", "expected a map of model name"),
];

#[test]
fn every_bad_input_names_file_line_column_and_writes_nothing() {
    for (text, loc, what) in BAD {
        // A valid object before the bad one must not be written either.
        let s = Test::new()
            .schema(SCHEMA)
            .file(
                "bad.yaml",
                &format!("{text}---\nPort:\n  - {{name: p1, number: 1}}\n"),
            )
            .args(["apply", "-f", "bad.yaml"])
            .status(2)
            .stderr_contains(loc)
            .stderr_contains(what)
            .stderr_matches("^error: ")
            .stderr_lacks("panicked")
            .run()
            .service;
        assert!(
            s.keys("Port").is_empty(),
            "{text:?}: nothing may be written"
        );
    }
}

#[test]
fn failed_apply_keeps_earlier_valid_objects_out_of_the_store() {
    let s = Service::new(SCHEMA);
    s.file(
        "o.yaml",
        "Site:\n  - {name: good}\n  - {name: bad, colour: red}\n",
    );
    s.expect(&["apply", "-f", "o.yaml"], 2);
    assert!(s.keys("Site").is_empty());
    // And a store that already had objects keeps them as they were.
    s.file("ok.yaml", "Site:\n  - {name: keep, login_base: k}\n");
    s.ok(&["apply", "-f", "ok.yaml"]);
    s.file(
        "o.yaml",
        "Site:\n  - {name: keep, login_base: changed}\n  - {name: bad, colour: red}\n",
    );
    s.expect(&["apply", "-f", "o.yaml"], 2);
    let keep = s.object("Site", "keep");
    assert_eq!(keep["fields"]["login_base"], "k");
    assert_eq!(keep["status"]["generation"], 1);
}

#[test]
fn all_errors_of_all_files_are_reported_at_once() {
    Test::new()
        .schema(SCHEMA)
        .file("a.yaml", "Site:\n  - {name: a, x: 1}\n")
        .file("b.yaml", "Slice:\n  - {name: s, site: a, y: 2}\n")
        .args(["apply", "-f", "a.yaml", "-f", "b.yaml"])
        .status(2)
        .stderr_contains("a.yaml:2:15")
        .stderr_contains("b.yaml:2:24")
        .run();
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let s = svc();
    s.test()
        .args(["apply", "-f", "objects.yaml", "--dry-run"])
        .stdout_contains("Site/site-a created (dry run)")
        .run();
    assert!(s.keys("Site").is_empty());
}

#[test]
fn prune_removes_unlisted_objects_of_listed_models_only() {
    let s = svc();
    s.ok(&["apply", "-f", "objects.yaml"]);
    s.file("ports.yaml", "Port:\n  - {name: p1, number: 80}\n");
    // p2 is referenced by Instance/i1, which stays: pruning it is refused.
    s.test()
        .args(["apply", "-f", "ports.yaml", "--prune"])
        .status(1)
        .stderr_contains("cannot prune Port/p2: referenced by Instance/i1")
        .run();
    assert_eq!(s.keys("Port"), ["p1", "p2"]);

    s.file(
        "sites.yaml",
        "Site:\n  - {name: site-a, login_base: a}\n  - {name: extra}\n",
    );
    s.ok(&["apply", "-f", "sites.yaml"]);
    s.file("sites.yaml", "Site:\n  - {name: site-a, login_base: a}\n");
    s.test()
        .args(["apply", "-f", "sites.yaml", "--prune"])
        .stdout_contains("Site/extra pruned")
        .run();
    assert_eq!(s.keys("Site"), ["site-a"]);
    assert_eq!(
        s.keys("Port"),
        ["p1", "p2"],
        "models not in the files are left alone"
    );
}

#[test]
fn get_and_delete_errors_have_exit_codes() {
    let s = svc();
    s.ok(&["apply", "-f", "objects.yaml"]);
    s.test()
        .args(["get", "Slise"])
        .status(2)
        .stderr_contains("unknown model `Slise`")
        .stderr_contains("did you mean `Slice`?")
        .run();
    s.test()
        .args(["get", "Slice", "nope"])
        .status(1)
        .stderr_contains("Slice/nope not found")
        .run();
    s.expect(&["delete", "Slice", "nope"], 1);
    s.expect(&["frobnicate"], 2);
}

#[test]
fn status_counts_objects_per_model() {
    let s = svc();
    s.ok(&["apply", "-f", "objects.yaml"]);
    let out = s.ok(&["status"]).stdout;
    let port = out
        .lines()
        .find(|l| l.starts_with("Port"))
        .expect("Port row");
    let cells: Vec<&str> = port.split_whitespace().collect();
    assert_eq!(cells[..3], ["Port", "2", "2"], "{out}");
}

#[test]
fn reapply_after_delete_recreates() {
    let s = svc();
    s.ok(&["apply", "-f", "objects.yaml"]);
    s.ok(&["delete", "Port", "p1", "--cascade"]);
    assert_eq!(s.keys("Port"), ["p2"]);
    s.test()
        .args(["apply", "-f", "objects.yaml"])
        .stdout_contains("Port/p1 created")
        .run();
}
