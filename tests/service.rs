//! Loading a service directory: config, schema, dependencies, init, and the store shared by
//! several processes (SPEC §2, §3, §4.1–4.3).

mod common;

use std::process::Stdio;

use common::{SCHEMA, Service};

#[test]
fn unknown_config_key_names_file_line_column() {
    let s = Service::new(SCHEMA);
    s.file("stepsync.yaml", "name: test\nconcurency: 4\n");
    let out = s.expect(&["status"], 2);
    assert!(out.stderr.contains("stepsync.yaml:2:1"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `concurency`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("2 | concurency: 4"),
        "quotes the line:\n{}",
        out.stderr
    );
}

#[test]
fn bad_config_values_are_located() {
    for (text, loc) in [
        ("name: t\nbackoff: {initial: soon}\n", "stepsync.yaml:2:20"),
        ("name: t\nssh: {known_hosts: maybe}\n", "stepsync.yaml:2:20"),
        ("name: t\nstore: mysql://x\n", "stepsync.yaml:2:8"),
        ("name: t\nconcurrency: 0\n", "stepsync.yaml:2:"),
        ("name: t\nbackoff: {factor: 0.5}\n", "stepsync.yaml:2:19"),
    ] {
        let s = Service::new(SCHEMA);
        s.file("stepsync.yaml", text);
        let out = s.expect(&["status"], 2);
        assert!(
            out.stderr.contains(loc),
            "{text:?}: wanted {loc} in\n{}",
            out.stderr
        );
    }
}

#[test]
fn missing_config_suggests_init() {
    let s = Service::empty();
    let out = s.expect(&["status"], 2);
    assert!(out.stderr.contains("no stepsync.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("stepsync init"));
}

#[test]
fn schema_errors_are_all_reported_with_locations() {
    let s = Service::new(
        "models:\n  A:\n    fields:\n      name: strng\n  B:\n    fields:\n      name: string\n      a: {type: ref, to: Aa}\n",
    );
    let out = s.expect(&["status"], 2);
    assert!(
        out.stderr.contains("schemas/models.yaml:4:7"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `string`?"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("schemas/models.yaml:8:26"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("unknown model `Aa`"), "{}", out.stderr);
}

#[test]
fn model_cycle_is_an_error_naming_the_models() {
    let s = Service::new(
        "models:\n  A:\n    fields: {name: string, b: {type: ref, to: B}}\n  B:\n    fields: {name: string, c: {type: ref, to: C}}\n  C:\n    fields: {name: string, a: {type: ref, to: A}}\n",
    );
    let out = s.expect(&["status"], 2);
    assert!(
        out.stderr
            .contains("dependency cycle between models: A, B, C"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_model_may_refer_to_itself() {
    let s =
        Service::new("models:\n  Dir:\n    fields: {name: string, parent: {type: ref, to: Dir}}\n");
    s.file(
        "o.yaml",
        "Dir:\n  - {name: child, parent: root}\n  - {name: root}\n",
    );
    s.ok(&["apply", "-f", "o.yaml"]);
    let out = s.expect(&["delete", "Dir", "root"], 1);
    assert!(
        out.stderr.contains("referenced by Dir/child"),
        "{}",
        out.stderr
    );
}

#[test]
fn model_deps_json_adds_dependencies() {
    let s = Service::new(
        "models:\n  Site:\n    fields: {name: string}\n  User:\n    fields: {name: string, site: string}\n",
    );
    s.file(
        "model-deps.json",
        "{\n  \"User\": [[\"Site\", \"site\", \"users\"]]\n}\n",
    );
    s.file(
        "o.yaml",
        "Site:\n  - {name: a}\nUser:\n  - {name: u, site: a}\n",
    );
    s.ok(&["apply", "-f", "o.yaml"]);
    let out = s.expect(&["delete", "Site", "a"], 1);
    assert!(
        out.stderr.contains("referenced by User/u"),
        "{}",
        out.stderr
    );

    s.file(
        "model-deps.json",
        "{\n  \"User\": [[\"Stie\", \"site\", \"users\"]]\n}\n",
    );
    let out = s.expect(&["status"], 2);
    assert!(
        out.stderr.contains("model-deps.json:2:13"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `Site`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn links_are_dependencies() {
    let s = Service::new(
        "models:\n  Node:\n    fields: {name: string}\n  Instance:\n    fields: {name: string, node_name: string}\n    links:\n      - {to: Node, via: node_name, field: name}\n",
    );
    s.file(
        "o.yaml",
        "Node:\n  - {name: n1}\nInstance:\n  - {name: i, node_name: n1}\n",
    );
    s.ok(&["apply", "-f", "o.yaml"]);
    let out = s.expect(&["delete", "Node", "n1"], 1);
    assert!(
        out.stderr.contains("referenced by Instance/i"),
        "{}",
        out.stderr
    );
}

#[test]
fn init_scaffolds_a_working_service() {
    let s = Service::empty();
    let out = s.ok(&["init", "svc"]);
    assert!(out.stdout.contains("initialized"), "{}", out.stdout);
    let dir = s.path().join("svc");
    for f in [
        "stepsync.yaml",
        "schemas/models.yaml",
        "objects/example.yaml",
        "stepdefs",
        "playbooks",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // Editors find each file's schema, written beside the service.
    for (f, schema) in [
        ("stepsync.yaml", "schemas/json/config.json"),
        ("schemas/models.yaml", "../schemas/json/model.json"),
        ("objects/example.yaml", "../schemas/json/objects.json"),
    ] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(first, format!("# yaml-language-server: $schema={schema}"));
        let target = dir.join(f).parent().unwrap().join(schema);
        assert!(target.is_file(), "{}", target.display());
    }
    let run = |args: &[&str]| {
        let o = std::process::Command::new(common::bin())
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(
        run(&["validate", "-f", "objects/"]),
        (Some(0), "valid (0 warnings)\n".into())
    );
    assert_eq!(run(&["apply", "-f", "objects/"]).0, Some(0));
    assert!(run(&["get", "Slice"]).1.contains("s1"));
    // A second init refuses to overwrite.
    assert_eq!(run(&["init"]).0, Some(1));
}

#[test]
fn the_root_hello_service_applies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = Service::empty();
    s.file(
        "stepsync.yaml",
        &std::fs::read_to_string(root.join("stepsync.yaml")).unwrap(),
    );
    s.file(
        "schemas/hello.yaml",
        &std::fs::read_to_string(root.join("schemas/hello.yaml")).unwrap(),
    );
    s.file(
        "objects/hello.yaml",
        &std::fs::read_to_string(root.join("objects/hello.yaml")).unwrap(),
    );
    s.ok(&["apply", "-f", "objects/hello.yaml"]);
    assert_eq!(s.keys("HelloServer"), ["hello-1", "hello-2"]);
}

#[test]
fn concurrent_applies_and_readers_all_succeed() {
    let s = Service::new(SCHEMA);
    // Two writers with overlapping and distinct objects, and readers, all at once.
    let mut a = String::from("Site:\n");
    let mut b = String::from("Site:\n");
    for i in 0..300 {
        a.push_str(&format!("  - {{name: a{i}}}\n"));
        b.push_str(&format!("  - {{name: b{i}}}\n"));
    }
    a.push_str("  - {name: shared, login_base: x}\n");
    b.push_str("  - {name: shared, login_base: x}\n");
    s.file("a.yaml", &a);
    s.file("b.yaml", &b);
    s.ok(&["status"]); // creates the store
    for round in 0..3 {
        let mut children = Vec::new();
        for f in ["a.yaml", "b.yaml"] {
            children.push(
                s.command(&["apply", "-f", f])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        for _ in 0..3 {
            children.push(
                s.command(&["get", "Site", "-o", "json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        for c in children {
            let o = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "round {round}: {err}");
            assert!(!err.contains("locked"), "{err}");
        }
    }
    assert_eq!(s.keys("Site").len(), 601);
    assert_eq!(s.object("Site", "shared")["status"]["generation"], 1);
}
