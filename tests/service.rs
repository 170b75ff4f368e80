//! Loading a service directory: config, schema, dependencies, init, and the store shared by
//! several processes (SPEC §2, §3, §4.1–4.3).

use std::process::Stdio;

use crate::common::fixtures::{DIR_SCHEMA, SITE_SLICE_PORT_INSTANCE as SCHEMA};
use crate::common::{Service, Test};

#[test]
fn unknown_config_key_names_file_line_column() {
    Test::new()
        .schema(SCHEMA)
        .config("name: test\nconcurency: 4\n")
        .args(["status"])
        .status(2)
        .stderr_contains("stepsync.yaml:2:1")
        .stderr_contains("unknown field `concurency`")
        // quotes the line
        .stderr_contains("2 | concurency: 4")
        .run();
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
        Test::new()
            .schema(SCHEMA)
            .config(text)
            .args(["status"])
            .status(2)
            .stderr_contains(loc)
            .run();
    }
}

#[test]
fn missing_config_suggests_init() {
    Test::empty()
        .args(["status"])
        .status(2)
        .stderr_contains("no stepsync.yaml")
        .stderr_contains("stepsync init")
        .run();
}

#[test]
fn schema_errors_are_all_reported_with_locations() {
    Test::new()
        .schema("models:\n  A:\n    fields:\n      name: strng\n  B:\n    fields:\n      name: string\n      a: {type: ref, to: Aa}\n")
        .args(["status"])
        .status(2)
        .stderr_contains("schemas/models.yaml:4:7")
        .stderr_contains("did you mean `string`?")
        .stderr_contains("schemas/models.yaml:8:26")
        .stderr_contains("unknown model `Aa`")
        .run();
}

#[test]
fn model_cycle_is_an_error_naming_the_models() {
    Test::new()
        .schema("models:\n  A:\n    fields: {name: string, b: {type: ref, to: B}}\n  B:\n    fields: {name: string, c: {type: ref, to: C}}\n  C:\n    fields: {name: string, a: {type: ref, to: A}}\n")
        .args(["status"])
        .status(2)
        .stderr_contains("dependency cycle between models: A, B, C")
        .run();
}

#[test]
fn a_model_may_refer_to_itself() {
    let s = Test::new()
        .schema(DIR_SCHEMA)
        .file(
            "o.yaml",
            "Dir:\n  - {name: child, parent: root}\n  - {name: root}\n",
        )
        .args(["apply", "-f", "o.yaml"])
        .run()
        .service;
    s.test()
        .args(["delete", "Dir", "root"])
        .status(1)
        .stderr_contains("referenced by Dir/child")
        .run();
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
    s.test()
        .args(["delete", "Site", "a"])
        .status(1)
        .stderr_contains("referenced by User/u")
        .run();

    s.test()
        .file(
            "model-deps.json",
            "{\n  \"User\": [[\"Stie\", \"site\", \"users\"]]\n}\n",
        )
        .args(["status"])
        .status(2)
        .stderr_contains("model-deps.json:2:13")
        .stderr_contains("did you mean `Site`?")
        .run();
}

#[test]
fn links_are_dependencies() {
    let s = Test::new()
        .schema("models:\n  Node:\n    fields: {name: string}\n  Instance:\n    fields: {name: string, node_name: string}\n    links:\n      - {to: Node, via: node_name, field: name}\n")
        .file(
            "o.yaml",
            "Node:\n  - {name: n1}\nInstance:\n  - {name: i, node_name: n1}\n",
        )
        .args(["apply", "-f", "o.yaml"])
        .run()
        .service;
    s.test()
        .args(["delete", "Node", "n1"])
        .status(1)
        .stderr_contains("referenced by Instance/i")
        .run();
}

#[test]
fn init_scaffolds_a_working_service() {
    let s = Test::empty()
        .args(["init", "svc"])
        .stdout_contains("initialized")
        .run()
        .service;
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
    let svc = || s.test().dir("svc");
    svc()
        .args(["validate", "-f", "objects/"])
        .stdout("valid (0 warnings)\n")
        .run();
    svc().args(["apply", "-f", "objects/"]).run();
    svc()
        .args(["get", "Slice"])
        .any_status()
        .stdout_contains("s1")
        .run();
    // A second init refuses to overwrite.
    svc().args(["init"]).status(1).run();
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
