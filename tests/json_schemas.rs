//! The JSON Schemas of `schemas/json/` (issue #6): generated from the Rust types and checked
//! in, so they must be up to date; they must accept every shipped file and refuse what the
//! loaders refuse; and every shipped file must point editors at its schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use stepsync::config::Config;
use stepsync::diag::Diagnostics;
use stepsync::json_schema::{self, SCHEMAS};
use stepsync::model::objects::load_objects;
use stepsync::model::{ModelGraph, Schema};
use stepsync::secrets::Secrets;
use stepsync::stepdef::Stepdefs;
use stepsync::template::Templates;
use stepsync::yaml::Source;

use crate::common::Service;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema(name: &str) -> Value {
    json_schema::generate(name).unwrap()
}

/// The schema's complaints about `doc` (none: valid).
fn complaints(schema: &Value, doc: &Value) -> Vec<String> {
    // Building the validator also checks the schema against the draft-07 meta-schema.
    let v = jsonschema::validator_for(schema).expect("a valid draft-07 schema");
    v.iter_errors(doc)
        .map(|e| {
            format!(
                "{e} (at `/{}`)",
                e.instance_path().as_str().trim_start_matches('/')
            )
        })
        .collect()
}

/// The documents of a YAML file as JSON, read the way stepsync reads it.
fn yaml_docs(src: &Source) -> Vec<Value> {
    src.documents()
        .unwrap_or_else(|d| panic!("{d}"))
        .iter()
        .map(|d| d.value.to_json())
        .collect()
}

fn one_doc(text: &str) -> Value {
    let docs = yaml_docs(&Source::from_text("t.yaml", text));
    assert_eq!(docs.len(), 1, "{text}");
    docs.into_iter().next().unwrap()
}

#[test]
fn checked_in_schemas_are_up_to_date() {
    let bless = std::env::var_os("STEPSYNC_BLESS").is_some();
    let mut stale = Vec::new();
    for s in SCHEMAS {
        let want = json_schema::to_text(&schema(s.name));
        let path = repo().join(s.json_file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if bless {
                std::fs::write(&path, &want).unwrap();
            } else {
                stale.push(s.json_file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with the Rust types: {stale:?}\nregenerate them all with \
         `STEPSYNC_BLESS=1 cargo test --test integration checked_in_schemas`, or one with \
         `cargo run -- schema NAME > schemas/json/NAME.json`"
    );
}

// ---- the shipped files --------------------------------------------------------------------

/// Every shipped file of the four formats, with its schema's name: the repository root
/// service and each `examples/*/` service.
fn shipped_files() -> Vec<(PathBuf, &'static str)> {
    let mut services = vec![repo().to_path_buf()];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("stepsync.yaml").is_file())
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no example services found");
    services.extend(examples);
    let mut out = Vec::new();
    for dir in services {
        out.push((dir.join("stepsync.yaml"), "config"));
        for (sub, name) in [
            ("schemas", "model"),
            ("stepdefs", "stepdef"),
            ("objects", "objects"),
        ] {
            let sub = dir.join(sub);
            if sub.is_dir() {
                let files = stepsync::model::schema::yaml_files(&sub).unwrap();
                out.extend(files.into_iter().map(|f| (f, name)));
            }
        }
    }
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap().display().to_string()
}

#[test]
fn every_shipped_file_validates_against_its_schema() {
    let files = shipped_files();
    assert!(files.len() >= 9, "{files:?}");
    let mut problems = Vec::new();
    for (path, name) in &files {
        let schema = schema(name);
        let src = Source::read(path).unwrap();
        for doc in yaml_docs(&src) {
            for c in complaints(&schema, &doc) {
                problems.push(format!("{}: {c}", rel(path)));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_shipped_file_names_its_schema_on_its_first_line() {
    let mut problems = Vec::new();
    for (path, name) in shipped_files() {
        // The path is relative to the file, as yaml-language-server resolves it.
        let depth = rel(&path).matches('/').count();
        let want = format!(
            "# yaml-language-server: $schema={}schemas/json/{name}.json",
            "../".repeat(depth)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        if first != want {
            problems.push(format!(
                "{}: first line `{first}`, expected `{want}`",
                rel(&path)
            ));
        }
        let target = path
            .parent()
            .unwrap()
            .join(want.rsplit('=').next().unwrap());
        assert!(target.is_file(), "{} points at a missing file", rel(&path));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- the schemas and the loaders agree ----------------------------------------------------

/// Checks that the schema `name` and the loader agree with `valid` on every case.
fn agree(name: &str, cases: &[(&str, bool)], loader_ok: impl Fn(&str) -> bool) {
    let schema = schema(name);
    let mut problems = Vec::new();
    for (text, valid) in cases {
        let said = complaints(&schema, &one_doc(text));
        if said.is_empty() != *valid {
            problems.push(format!(
                "schema {name}, expected valid={valid}: {text:?} {said:?}"
            ));
        }
        if loader_ok(text) != *valid {
            problems.push(format!("loader, expected valid={valid}: {text:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn config_schema_refuses_what_loading_refuses() {
    let spec_example = "name: hello
store: sqlite:.stepsync/state.db
sys_dir: .stepsync/sys
sys_keep_runs: 5
dependency_graph: model-deps.json
inventory: inventory.yaml
pretend: false
disabled: false
concurrency: 16
backoff: {initial: 10s, factor: 2, max: 30m, jitter: 0.1, disabled: false}
resync: 0s
defer_retry: 5s
runner: builtin
vars: {}
secrets:
  onos_token: {env: ONOS_TOKEN}
  other: {file: /run/secrets/onos_token}
ssh:
  user: root
  port: 22
  private_key: null
  known_hosts: strict
  known_hosts_file: null
  connect_timeout: 10s
logging: {level: info, format: text}
";
    let cases = [
        (spec_example, true),
        ("name: x\n", true),
        (
            "name: x\nresync: 0\nbackoff: {initial: 1h 30m, max: 1.5h}\n",
            true,
        ),
        (
            "name: x\nstore: postgres://u@h/db\nssh: {known_hosts: accept-new}\n",
            true,
        ),
        ("name: x\nconcurency: 4\n", false),
        ("name: x\nbackoff: {initial: 1s, factr: 2}\n", false),
        ("name: x\nsys_keep_runs: five\n", false),
        ("name: x\nresync: soon\n", false),
        ("name: x\nresync: 10\n", false),
        ("store: sqlite:x\n", false),
        ("name: ' '\n", false),
        ("name: x\nstore: mysql://x\n", false),
        ("name: x\nconcurrency: 0\n", false),
        ("name: x\nbackoff: {factor: 0.5}\n", false),
        ("name: x\nbackoff: {jitter: 3}\n", false),
        ("name: x\nssh: {known_hosts: maybe}\n", false),
        ("name: x\nsecrets: {t: {vault: x}}\n", false),
        ("name: x\nrunner: docker\n", false),
    ];
    agree("config", &cases, |text| {
        Config::parse(&Source::from_text("stepsync.yaml", text)).is_ok()
    });
}

#[test]
fn model_schema_refuses_what_loading_refuses() {
    let good = "models:
  Site:
    key: name
    fields:
      name: {type: string, required: true}
      login_base: string
  Slice:
    fields:
      name: string
      site: {type: ref, to: Site, required: true}
      max_instances: {type: int, default: 10}
      flavor: {type: string, enum: [small, large]}
      ports: {type: refs, to: Site}
      labels: {type: map}
      out: {type: string, feedback: true}
      node_name: string
    links:
      - {to: Site, via: node_name, field: name}
";
    let cases = [
        (good, true),
        ("models: {A: {fields: {name: string}, keys: name}}\n", false),
        ("models: {A: {fields: {name: strng}}}\n", false),
        ("models: {A: {fields: {name: ref}}}\n", false),
        (
            "models: {A: {fields: {name: string, b: {type: ref}}}}\n",
            false,
        ),
        (
            "models: {A: {fields: {name: {type: string, to: A}}}}\n",
            false,
        ),
        (
            "models: {A: {fields: {name: string, l: {type: list, enum: [a]}}}}\n",
            false,
        ),
        (
            "models: {A: {fields: {name: string, o: {type: string, required: true, feedback: true}}}}\n",
            false,
        ),
        (
            "models: {A: {fields: {name: {type: string, required: maybe}}}}\n",
            false,
        ),
        (
            "models: {A: {fields: {name: {type: string, options: 1}}}}\n",
            false,
        ),
        (
            "models: {A: {fields: {name: string}, links: [{to: A, via: name}]}}\n",
            false,
        ),
        ("models: {1A: {fields: {name: string}}}\n", false),
        ("models: []\n", false),
        ("model: {}\n", false),
    ];
    agree("model", &cases, |text| {
        Schema::from_sources(&[Source::from_text("m.yaml", text)]).is_ok()
    });
}

#[test]
fn stepdef_schema_refuses_what_loading_refuses() {
    let model = Schema::from_sources(&[Source::from_text(
        "m.yaml",
        "models: {Device: {fields: {name: string, device_id: {type: string, feedback: true}}}}\n",
    )])
    .unwrap();
    let config = Config::parse(&Source::from_text("stepsync.yaml", "name: t\n")).unwrap();
    let head = "kind: Actuator\nmodel: Device\n";
    let cases: Vec<(String, bool)> = [
        ("attributes: {n: '{{ object.name }}', cfg: {a: [1, 2]}}\nsync: {playbook: x.yml, hosts: h, vars: {state: present}}\nconcurrency: 2\nresync: 1h\n", true),
        ("sync:\n  rest:\n    method: put\n    url: http://x/{{ object.name }}\n    headers: {Accept: application/json}\n    auth: {basic: {user: u, password: p}}\n    body: {name: '{{ object.name }}'}\n    timeout: 10s\n    expect: [200, 201]\nfeedback: {device_id: {jsonpath: $.id}}\n", true),
        ("sync:\n  rest:\n    observe: {url: http://x, method: HEAD, absent: [404, 410]}\n    create: {method: POST, url: http://x, body: {a: 1}}\n    update: {method: PUT, url: http://x, auth: {bearer: t}}\n    compare: {observed: {jsonpath: $.config}}\ndelete: {rest: {method: DELETE, url: http://x}}\nfeedback: {device_id: '{{ result.body.id }}'}\ndefer_when: '{{ result.status == 409 }}'\n", true),
        ("snyc: {playbook: x.yml}\n", false),
        ("sync: {playbook: x.yml, rest: {url: http://x}}\n", false),
        ("sync: {vars: {a: 1}}\n", false),
        ("sync: {rest: {url: http://x}, hosts: h}\n", false),
        ("sync: {rest: {url: http://x, observe: {url: http://x}, update: {url: http://x}}}\n", false),
        ("sync: {rest: {observe: {url: http://x}}}\n", false),
        ("sync: {rest: {observe: {url: http://x}, update: {method: PUT}}}\n", false),
        ("sync: {rest: {method: PUT}}\n", false),
        ("sync: {rest: {url: http://x, compare: {observed: {jsonpath: $.a}}}}\n", false),
        ("sync: {rest: {observe: {url: http://x, method: POST}, update: {url: http://x}}}\n", false),
        ("sync: {rest: {url: http://x, method: 'P T'}}\n", false),
        ("sync: {rest: {url: http://x, timeout: soon}}\n", false),
        ("sync: {rest: {url: http://x, expect: [ok]}}\n", false),
        ("sync: {rest: {url: http://x, auth: {token: t}}}\n", false),
        ("sync: {rest: {url: http://x, headers: {'bad header': v}}}\n", false),
        ("feedback: {device_id: {jsonpth: $.id}}\n", false),
        ("feedback: {device_id: {jsonpath: id}}\n", false),
        ("attributes: {object: x}\n", false),
        ("sync: {playbook: x.yml, vars: {vars: 1}}\n", false),
        ("concurrency: 0\n", false),
        ("resync: 10\n", false),
    ]
    .iter()
    .map(|(body, valid)| (format!("{head}{body}"), *valid))
    .chain([("kind: Actuatr\nmodel: Device\n".to_owned(), false)])
    .chain([("model: Device\n".to_owned(), false)])
    .collect();
    let cases: Vec<(&str, bool)> = cases.iter().map(|(t, v)| (t.as_str(), *v)).collect();
    agree("stepdef", &cases, |text| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("stepdefs")).unwrap();
        std::fs::write(dir.path().join("stepdefs/s.yaml"), text).unwrap();
        let templates = Templates::new(Arc::new(Secrets::load(&config, dir.path())));
        let graph = stepsync::model::ModelGraph::build(&model, Vec::new()).unwrap();
        Stepdefs::load(dir.path(), &model, &graph, templates).is_ok()
    });
}

/// The models the watcher and policy cases below refer to: the fabric-net example's.
fn fabric_net_model() -> Schema {
    Schema::load_dir(&repo().join("examples/fabric-net/schemas")).unwrap()
}

/// Whether the loader accepts `text` as the only stepdef of a service with `model`.
fn stepdef_loads(model: &Schema, text: &str) -> bool {
    let config = Config::parse(&Source::from_text("stepsync.yaml", "name: t\n")).unwrap();
    let graph = ModelGraph::build(model, vec![]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("stepdefs")).unwrap();
    std::fs::write(dir.path().join("stepdefs/s.yaml"), text).unwrap();
    let templates = Templates::new(Arc::new(Secrets::load(&config, dir.path())));
    Stepdefs::load(dir.path(), model, &graph, templates).is_ok()
}

/// `head` before each body, as owned cases for `agree`.
fn with_head(head: &str, bodies: &[(&str, bool)]) -> Vec<(String, bool)> {
    bodies
        .iter()
        .map(|(body, valid)| (format!("{head}{body}"), *valid))
        .collect()
}

#[test]
fn watcher_schema_refuses_what_loading_refuses() {
    let model = fabric_net_model();
    let watch = "watches: [{model: Instance, via: instance}]\n";
    let mut cases = with_head(
        "kind: Watcher\nmodel: Fabric\n",
        &[
            (
                "watches:\n  - {model: Instance, via: instance, fields: [ip, subnet]}\non_change: resync\nconverges: true\n",
                true,
            ),
            (watch, true),
            ("watch_degree: 2\n", true),
            // An empty list beside `watch_degree` is no list at all.
            ("watch_degree: 1\nwatches: []\n", true),
            (
                &format!(
                    "{watch}on_change:\n  rest: {{method: POST, url: 'http://x/{{{{ object.name }}}}'}}\n"
                ),
                true,
            ),
            (
                &format!("{watch}on_change: {{playbook: notify.yml}}\n"),
                true,
            ),
            ("", false),
            ("watches: []\n", false),
            (&format!("{watch}watch_degree: 1\n"), false),
            ("watch_degree: -1\n", false),
            ("watches: [{model: Instance}]\n", false),
            ("watches: [{via: instance}]\n", false),
            (
                "watches: [{model: Instance, via: instance, feilds: [ip]}]\n",
                false,
            ),
            ("watches: {model: Instance, via: instance}\n", false),
            (&format!("{watch}on_change: resink\n"), false),
            (
                &format!("{watch}on_change: {{playbook: x.yml, rest: {{url: http://x}}}}\n"),
                false,
            ),
            (
                &format!("{watch}on_change: {{rest: {{method: PUT}}}}\n"),
                false,
            ),
            // An actuator's keys are not a watcher's.
            (&format!("{watch}sync: {{playbook: x.yml}}\n"), false),
            (&format!("{watch}attributes: {{a: 1}}\n"), false),
        ],
    );
    cases.push((
        "kind: Wacher\nmodel: Fabric\nwatch_degree: 1\n".to_owned(),
        false,
    ));
    cases.push(("model: Fabric\nwatch_degree: 1\n".to_owned(), false));
    let cases: Vec<(&str, bool)> = cases.iter().map(|(t, v)| (t.as_str(), *v)).collect();
    agree("stepdef", &cases, |text| stepdef_loads(&model, text));
}

#[test]
fn policy_schema_refuses_what_loading_refuses() {
    let model = fabric_net_model();
    let ensure = "on_create:\n  - ensure: {model: Interface, key: '{{ object.name }}-if0'}\n";
    let mut cases = with_head(
        "kind: Policy\nmodel: Network\n",
        &[
            (
                "on_create:\n  - ensure:\n      model: Interface\n      key: '{{ object.name }}-if0'\n      fields: {network: '{{ object.name }}', mtu: '{{ object.mtu }}'}\non_delete: cascade\n",
                true,
            ),
            (
                "on_create:\n  - ensure: {model: Interface, key: '{{ object.name }}-p{{ item }}', loop: [1, 2], fields: {network: '{{ object.name }}'}}\n  - delete: {model: Interface, key: '{{ object.name }}-old'}\non_update: []\non_delete: keep\nconverges: true\n",
                true,
            ),
            (
                "on_update:\n  - delete: {model: Interface, key: old}\n",
                true,
            ),
            (ensure, true),
            ("", false),
            ("on_create: []\n", false),
            ("on_create: []\non_update: []\n", false),
            ("on_create:\n  - {}\n", false),
            (
                "on_create:\n  - ensure: {model: Interface, key: k}\n    delete: {model: Interface, key: k}\n",
                false,
            ),
            (
                "on_create:\n  - create: {model: Interface, key: k}\n",
                false,
            ),
            ("on_create:\n  - ensure: {model: Interface}\n", false),
            ("on_create:\n  - ensure: {key: k}\n", false),
            (
                "on_create:\n  - ensure: {model: Interface, key: k, feilds: {}}\n",
                false,
            ),
            ("on_create:\n  - delete: {model: Interface}\n", false),
            ("on_create:\n  ensure: {model: Interface, key: k}\n", false),
            (&format!("{ensure}on_delete: orphan\n"), false),
            // Neither an actuator's keys nor a watcher's.
            (&format!("{ensure}watch_degree: 1\n"), false),
            (&format!("{ensure}feedback: {{}}\n"), false),
        ],
    );
    cases.push(("kind: Policy\non_create: []\n".to_owned(), false));
    let cases: Vec<(&str, bool)> = cases.iter().map(|(t, v)| (t.as_str(), *v)).collect();
    agree("stepdef", &cases, |text| stepdef_loads(&model, text));
}

/// The examples ship a stepdef of every kind, so `every_shipped_file_validates_against_its_schema`
/// checks each branch of the stepdef schema on real files; and a typo in each is refused by
/// its own kind's schema (the branch applies, not only the `kind` check).
#[test]
fn every_step_kind_is_shipped_and_checked_by_its_schema() {
    let schema = schema("stepdef");
    let mut kinds = std::collections::BTreeSet::new();
    for (path, name) in shipped_files() {
        if name != "stepdef" {
            continue;
        }
        let src = Source::read(&path).unwrap();
        for doc in yaml_docs(&src) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let mut typo = doc.clone();
            typo.as_object_mut()
                .unwrap()
                .insert("modle".to_owned(), Value::from("X"));
            let said = complaints(&schema, &typo);
            assert!(
                said.iter().any(|c| c.contains("modle")),
                "{}: {said:?}",
                rel(&path)
            );
            kinds.insert(kind);
        }
    }
    let want: std::collections::BTreeSet<String> =
        ["Actuator", "EventStep", "Policy", "PullStep", "Watcher"]
            .map(String::from)
            .into();
    assert_eq!(kinds, want);
}

#[test]
fn objects_schemas_refuse_what_loading_refuses() {
    let dir = repo().join("examples/rest-devices");
    let model = Schema::load_dir(&dir.join("schemas")).unwrap();
    let loads = |text: &str| {
        let mut d = Diagnostics::default();
        load_objects(&Source::from_text("o.yaml", text), &model, &mut d);
        !d.has_errors()
    };
    // What the generic schema can see: the shape.
    let generic = [
        (
            "Network:\n  - {name: lab, cidr: 10.0.0.0/24}\nDevice: []\n",
            true,
        ),
        ("Network:\n", true),
        ("- a\n", false),
        ("Network: {name: lab, cidr: 10.0.0.0/24}\n", false),
        ("Network: [lab]\n", false),
        ("1Network: []\n", false),
    ];
    agree("objects", &generic, loads);
    // The service's own schema sees the fields.
    let specific = json_schema::objects_for("rest-devices", model.models.values());
    let cases = [
        (
            "Network:\n  - {name: lab, cidr: 10.0.0.0/24}\nDevice:\n  - {name: d, network: lab, model: core, ports: [1]}\n  - {name: d2, network: 8, model: null}\n",
            true,
        ),
        ("Device:\n  - {name: 7, network: lab}\n", false),
        (
            "Device:\n  - {name: d, network: lab, device_id: null}\n",
            false,
        ),
        (
            "Device:\n  - {name: d, network: lab, device_id: x}\n",
            false,
        ),
        ("Device:\n  - {name: d, network: lab, colour: red}\n", false),
        ("Device:\n  - {name: d, network: lab, ports: 5}\n", false),
        ("Device:\n  - {name: d, network: lab, model: huge}\n", false),
        ("Device:\n  - {name: d, network: [lab]}\n", false),
        ("Device:\n  - {name: d}\n", false),
        ("Device:\n  - {name: null, network: lab}\n", false),
        ("Network:\n  - {name: lab}\n", false),
        ("Switch: []\n", false),
    ];
    let mut problems = Vec::new();
    for (text, valid) in cases {
        let said = complaints(&specific, &one_doc(text));
        if said.is_empty() != valid {
            problems.push(format!("schema, expected valid={valid}: {text:?} {said:?}"));
        }
        if loads(text) != valid {
            problems.push(format!("loader, expected valid={valid}: {text:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And the example's own objects file fits its service's schema.
    let src = Source::read(&dir.join("objects/devices.yaml")).unwrap();
    for doc in yaml_docs(&src) {
        assert_eq!(complaints(&specific, &doc), Vec::<String>::new());
    }
}

// ---- the command --------------------------------------------------------------------------

#[test]
fn schema_command_prints_lists_and_refuses() {
    let tmp = Service::empty();
    for s in SCHEMAS {
        let file = std::fs::read_to_string(repo().join(s.json_file)).unwrap();
        tmp.test().args(["schema", s.name]).stdout(&file).run();
    }
    let out = tmp.ok(&["schema"]).stdout;
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["config", "model", "stepdef", "objects"]);

    tmp.test()
        .args(["schema", "stepdefs"])
        .status(2)
        .stderr_contains("unknown schema `stepdefs`")
        .stderr_contains("did you mean `stepdef`?")
        .run();

    tmp.expect(&["schema", "config", "--service"], 2);
    tmp.test()
        .args(["schema", "objects", "--service"])
        .status(2)
        .stderr_contains("no stepsync.yaml")
        .run();
}

#[test]
fn schema_objects_service_describes_the_service_models() {
    let out = Service::at(&repo().join("examples/rest-devices"))
        .ok(&["schema", "objects", "--service"])
        .stdout;
    let printed: Value = serde_json::from_str(&out).unwrap();
    let device = &printed["definitions"]["Device"];
    assert_eq!(device["required"], serde_json::json!(["name", "network"]));
    assert_eq!(device["properties"]["model"]["default"], "edge");
    assert!(device["properties"].get("device_id").is_none());
    assert_eq!(printed["additionalProperties"], false);
}
