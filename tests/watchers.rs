//! Watchers end to end (SPEC §11, §5.1 rule 6, §15 at run time): `kind: Watcher` steps
//! against a real HTTP server through the real binary — via paths of one and two hops,
//! `fields`, `watch_degree`, the `watch Model/key.field` reason, folding, payload watchers
//! (their `watched` context, their status, no retries, no blocking), a `kill -9` between a
//! watched write and its watcher, and the run-time loop guard.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Service;
use crate::common::http::TestServer;

/// Fabric -> Instance -> Node (two hops), Fabric -> Switch (a dependency that can fail and
/// so block a fabric). `ip` is feedback the instances' backend assigns.
const SCHEMA: &str = "models:
  Node:
    fields:
      name: {type: string, required: true}
      rack: string
  Switch:
    fields:
      name: {type: string, required: true}
      ports: {type: int, default: 1}
  Instance:
    fields:
      name: {type: string, required: true}
      size: {type: int, default: 1}
      label: string
      node: {type: ref, to: Node}
      ip: {type: string, feedback: true}
  Fabric:
    fields:
      name: {type: string, required: true}
      instance: {type: ref, to: Instance}
      switch: {type: ref, to: Switch}
";

/// Two instances on two nodes; f1 on i1 (and s1), f2 on i2.
const OBJECTS: &str = "Node:
  - {name: n1, rack: r1}
  - {name: n2, rack: r1}
Switch:
  - {name: s1}
Instance:
  - {name: i1, node: n1}
  - {name: i2, node: n2}
Fabric:
  - {name: f1, instance: i1, switch: s1}
  - {name: f2, instance: i2}
";

/// A REST actuator: PUT `{{ vars.base }}/<path>/<name>` with `body` (stepdef YAML). No
/// actuator's recipe reads another object's fields, so nothing but a watcher makes a fabric
/// run again when its instance changes (reference drift, rule 5, stays out of the way).
fn actuator(model: &str, path: &str, body: &str, extra: &str) -> String {
    format!(
        "kind: Actuator\nmodel: {model}\nsync:\n  rest:\n    method: PUT\n    url: \"{{{{ vars.base }}}}/{path}/{{{{ object.name }}}}\"\n    body: {body}\n{extra}"
    )
}

struct Fx {
    svc: Service,
    server: TestServer,
}

impl Fx {
    /// The service with `watcher` as `stepdefs/fabric-watch.yaml`, `objects` applied and
    /// synced (every object ok), and the server's requests forgotten. Instances get the ips
    /// 10.0.0.1 (i1) and 10.0.0.2 (i2) from their backend.
    fn new(watcher: &str, objects: &str) -> Fx {
        let server = TestServer::start();
        let svc = Service::new(SCHEMA);
        svc.file(
            "stepsync.yaml",
            &format!(
                "name: watch-test\nvars: {{base: \"{}\"}}\nbackoff: {{initial: 1s, factor: 1, max: 1s, jitter: 0}}\n",
                server.url
            ),
        );
        svc.file(
            "stepdefs/node.yaml",
            &actuator(
                "Node",
                "nodes",
                r#"{name: "{{ object.name }}", rack: "{{ object.rack }}"}"#,
                "",
            ),
        );
        svc.file(
            "stepdefs/switch.yaml",
            &actuator(
                "Switch",
                "switches",
                r#"{name: "{{ object.name }}", ports: "{{ object.ports }}"}"#,
                "",
            ),
        );
        svc.file(
            "stepdefs/instance.yaml",
            &actuator(
                "Instance",
                "instances",
                r#"{name: "{{ object.name }}", size: "{{ object.size }}", label: "{{ object.label }}"}"#,
                "feedback:\n  ip: {jsonpath: \"$.ip\"}\n",
            ),
        );
        svc.file(
            "stepdefs/fabric.yaml",
            &actuator("Fabric", "fabrics", r#"{name: "{{ object.name }}"}"#, ""),
        );
        svc.file("stepdefs/fabric-watch.yaml", watcher);
        let fx = Fx { svc, server };
        fx.ip("i1", "10.0.0.1");
        fx.ip("i2", "10.0.0.2");
        fx.apply(objects);
        fx.svc.ok(&["run", "--once"]);
        for o in fx.all() {
            assert_eq!(o["status"]["status"], "ok", "{o}");
        }
        fx.server.clear();
        fx
    }

    /// The backend gives instance `name` this ip from now on.
    fn ip(&self, name: &str, ip: &str) {
        self.server.respond(
            "PUT",
            &format!("/instances/{name}"),
            200,
            &format!(r#"{{"ip": "{ip}"}}"#),
        );
    }

    fn apply(&self, objects: &str) {
        self.svc.file("change.yaml", objects);
        self.svc.ok(&["apply", "-f", "change.yaml"]);
    }

    fn all(&self) -> Vec<Value> {
        let out = self.svc.ok(&["get", "Fabric", "-o", "json"]);
        let mut all: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON");
        for m in ["Node", "Switch", "Instance"] {
            let out = self.svc.ok(&["get", m, "-o", "json"]);
            let v: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON");
            all.extend(v);
        }
        all
    }

    /// The requests since the last `clear`, sorted (objects without a path between them run
    /// in any order).
    fn sent(&self) -> Vec<String> {
        let mut l = self.server.lines();
        l.sort();
        l
    }

    /// `run --once`, then what it sent; the server's record is cleared for the next step.
    #[track_caller]
    fn run(&self) -> Vec<String> {
        self.svc.ok(&["run", "--once"]);
        let sent = self.sent();
        self.server.clear();
        sent
    }

    fn status(&self, model: &str, key: &str) -> Value {
        self.svc.object(model, key)["status"].clone()
    }
}

const ONE_HOP_IP: &str =
    "kind: Watcher\nmodel: Fabric\nwatches:\n  - {model: Instance, via: instance, fields: [ip]}\n";

#[test]
fn a_watched_feedback_field_one_hop_away_makes_the_linked_object_run_again() {
    let fx = Fx::new(ONE_HOP_IP, OBJECTS);
    // The first sync gave i1 its ip, and f1 ran after it: one PUT each, no second one for
    // the ip that f1's own run already saw.
    // The backend moves i1 to a new address; a declarative change makes i1 run again.
    fx.ip("i1", "10.9.9.9");
    fx.apply("Instance:\n  - {name: i1, node: n1, label: moved}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /instances/i1"]);
    assert_eq!(fx.svc.object("Instance", "i1")["fields"]["ip"], "10.9.9.9");
    let f1 = fx.status("Fabric", "f1");
    assert_eq!(f1["status"], "ok", "{f1}");
    assert_eq!(f1["reason"], Value::Null, "{f1}");
    // f2 watches i2, which did not change; and nothing is left to do.
    assert_eq!(fx.run(), Vec::<String>::new());
}

#[test]
fn the_first_sync_of_a_watched_object_does_not_run_its_watchers_objects_twice() {
    let fx = Fx::new(ONE_HOP_IP, "Node:\n  - {name: n1}\n  - {name: n2}\n");
    fx.apply(OBJECTS);
    // i1 and i2 get their first ip in the run that syncs f1 and f2 after them: the fabrics'
    // runs already saw it, so each is sent once.
    let sent = fx.run();
    let fabrics: Vec<&String> = sent
        .iter()
        .filter(|l| l.starts_with("PUT /fabrics/"))
        .collect();
    assert_eq!(fabrics, ["PUT /fabrics/f1", "PUT /fabrics/f2"], "{sent:?}");
    assert_eq!(fx.run(), Vec::<String>::new());
}

#[test]
fn a_two_hop_via_path_reaches_the_objects_behind_the_instance() {
    let fx = Fx::new(
        "kind: Watcher\nmodel: Fabric\nwatches:\n  - {model: Node, via: instance.node}\n",
        OBJECTS,
    );
    // n1 carries i1, which carries f1; f2 is on i2 on n2.
    fx.apply("Node:\n  - {name: n1, rack: r7}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /nodes/n1"]);
    fx.apply("Node:\n  - {name: n2, rack: r7}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f2", "PUT /nodes/n2"]);
    // An instance change is not a node change: this watcher does not watch instances.
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 4}\n");
    assert_eq!(fx.run(), ["PUT /instances/i1"]);
}

#[test]
fn a_change_of_an_unwatched_field_fires_nothing() {
    let fx = Fx::new(
        "kind: Watcher\nmodel: Fabric\nwatches:\n  - {model: Instance, via: instance, fields: [size]}\n",
        OBJECTS,
    );
    fx.apply("Instance:\n  - {name: i1, node: n1, label: blue}\n");
    assert_eq!(fx.run(), ["PUT /instances/i1"], "label is not watched");
    fx.apply("Instance:\n  - {name: i1, node: n1, label: blue, size: 2}\n");
    assert_eq!(
        fx.run(),
        ["PUT /fabrics/f1", "PUT /instances/i1"],
        "size is"
    );
}

#[test]
fn a_write_that_leaves_the_watched_fields_equal_fires_nothing() {
    let fx = Fx::new(ONE_HOP_IP, OBJECTS);
    // i1 runs again and its backend answers with the ip it already has: feedback written,
    // the watched field equal.
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    assert_eq!(fx.run(), ["PUT /instances/i1"]);
    // Applying identical content writes nothing at all.
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    assert_eq!(fx.run(), Vec::<String>::new());
    // The same change with a new ip does fire: the check above can fail.
    fx.ip("i1", "10.0.0.7");
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 3}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /instances/i1"]);
}

#[test]
fn watch_degree_1_watches_every_field_of_the_models_one_hop_away() {
    let fx = Fx::new("kind: Watcher\nmodel: Fabric\nwatch_degree: 1\n", OBJECTS);
    // Nodes are two hops from fabrics.
    fx.apply("Node:\n  - {name: n1, rack: r9}\n");
    assert_eq!(fx.run(), ["PUT /nodes/n1"]);
    // Instances and switches are one hop away, every field watched.
    fx.apply("Instance:\n  - {name: i1, node: n1, label: any}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /instances/i1"]);
    fx.apply("Switch:\n  - {name: s1, ports: 48}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /switches/s1"]);
}

#[test]
fn watch_degree_2_also_watches_the_models_two_hops_away() {
    let fx = Fx::new("kind: Watcher\nmodel: Fabric\nwatch_degree: 2\n", OBJECTS);
    fx.apply("Node:\n  - {name: n2, rack: r9}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f2", "PUT /nodes/n2"]);
    fx.apply("Instance:\n  - {name: i1, node: n1, label: any}\n");
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /instances/i1"]);
}

#[test]
fn the_reason_names_the_watched_change_while_the_object_waits() {
    let fx = Fx::new(ONE_HOP_IP, OBJECTS);
    // f1 cannot run: its switch fails. i1 gets a new ip in the same run.
    fx.server
        .respond("PUT", "/switches/s1", 500, r#"{"error": "down"}"#);
    fx.ip("i1", "10.0.0.42");
    fx.apply("Switch:\n  - {name: s1, ports: 2}\nInstance:\n  - {name: i1, node: n1, size: 2}\n");
    fx.svc.expect(&["run", "--once"], 1);
    let f1 = fx.status("Fabric", "f1");
    assert_eq!(f1["status"], "blocked", "{f1}");
    assert_eq!(f1["reason"], "watch Instance/i1.ip", "{f1}");
    assert!(
        f1["message"]
            .as_str()
            .unwrap()
            .starts_with("blocked by Switch/s1"),
        "{f1}"
    );
    assert!(
        !fx.server.lines().contains(&"PUT /fabrics/f1".to_owned()),
        "{:?}",
        fx.server.lines()
    );
    let out = fx.svc.ok(&["get", "Fabric", "f1", "-o", "yaml"]);
    assert!(
        out.stdout.contains("reason: watch Instance/i1.ip"),
        "{}",
        out.stdout
    );
    // The switch recovers: f1 runs for the watched change, and the reason is gone.
    fx.server.forget("PUT", "/switches/s1");
    fx.server.clear();
    fx.svc.ok(&["retry", "Switch", "s1"]);
    assert_eq!(fx.run(), ["PUT /fabrics/f1", "PUT /switches/s1"]);
    let f1 = fx.status("Fabric", "f1");
    assert_eq!(f1["status"], "ok", "{f1}");
    assert_eq!(f1["reason"], Value::Null, "{f1}");
}

#[test]
fn several_changes_before_the_run_fold_into_one() {
    let fx = Fx::new(
        "kind: Watcher\nmodel: Fabric\nwatches:\n  - {model: Instance, via: instance, fields: [size, label]}\n",
        OBJECTS,
    );
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 3, label: x}\n");
    fx.apply("Instance:\n  - {name: i2, node: n2, size: 5}\n");
    assert_eq!(
        fx.run(),
        [
            "PUT /fabrics/f1",
            "PUT /fabrics/f2",
            "PUT /instances/i1",
            "PUT /instances/i2"
        ]
    );
}

/// A payload watcher on `fields` of the fabrics' instances: a POST per linked fabric and
/// change, `watched` in its context.
fn hook(fields: &str) -> String {
    format!(
        r#"kind: Watcher
model: Fabric
watches:
  - {{model: Instance, via: instance, fields: [{fields}]}}
on_change:
  rest:
    method: POST
    url: "{{{{ vars.base }}}}/hooks/{{{{ object.name }}}}"
    body:
      changed: "{{{{ watched.fields }}}}"
      new_ip: "{{{{ watched.new.ip }}}}"
      old_ip: "{{{{ watched.old.ip }}}}"
      old_size: "{{{{ watched.old.size }}}}"
      new_size: "{{{{ watched.new.size }}}}"
      what: "{{{{ watched.model }}}}/{{{{ watched.key }}}}"
"#
    )
}

/// f1 and f3 on i1, f2 on i2.
const HOOK_OBJECTS: &str = "Node:
  - {name: n1}
  - {name: n2}
Switch:
  - {name: s1}
Instance:
  - {name: i1, node: n1}
  - {name: i2, node: n2}
Fabric:
  - {name: f1, instance: i1}
  - {name: f2, instance: i2}
  - {name: f3, instance: i1}
";

fn body(r: &crate::common::http::Recorded) -> Value {
    serde_json::from_str(&r.body).expect("a JSON body")
}

#[test]
fn a_payload_watcher_runs_once_per_linked_object_with_watched_in_its_context() {
    let fx = Fx::new(&hook("ip"), HOOK_OBJECTS);
    fx.ip("i1", "10.0.0.9");
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    fx.svc.ok(&["run", "--once"]);
    let reqs = fx.server.requests();
    let mut lines: Vec<String> = reqs.iter().map(|r| r.line()).collect();
    lines.sort();
    // No resync: the fabrics' actuator does not run, the watcher's own payload does, once
    // for each fabric on i1 (the size is not watched here; the ip i1's run got is).
    assert_eq!(
        lines,
        ["POST /hooks/f1", "POST /hooks/f3", "PUT /instances/i1"],
        "{lines:?}"
    );
    for r in reqs.iter().filter(|r| r.path.starts_with("/hooks/")) {
        let b = body(r);
        assert_eq!(b["what"], "Instance/i1", "{b}");
        assert_eq!(b["new_ip"], "10.0.0.9", "{b}");
        assert_eq!(b["old_ip"], "10.0.0.1", "{b}");
        // `old` and `new` are the whole object, before and after.
        assert_eq!(b["old_size"], 2, "{b}");
        assert_eq!(b["new_size"], 2, "{b}");
        assert_eq!(
            b["changed"],
            serde_json::json!(["ip"]),
            "watched.fields is a list: {b}"
        );
    }
    // Its recipe is kept under .watch/<file>/Model/key/, apart from the actuators'.
    let dir = fx
        .svc
        .path()
        .join(".stepsync/sys/.watch/fabric-watch.yaml/Fabric/f1");
    let http = std::fs::read_to_string(dir.join("sync.http"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(
        http.contains("POST ") && http.contains("/hooks/f1"),
        "{http}"
    );
    assert!(http.contains("10.0.0.9"), "{http}");
    for f in ["sync.sh", "vars.json"] {
        assert!(dir.join(f).is_file(), "{} has no {f}", dir.display());
    }
    // Not among the actuators' recipes.
    let own = std::fs::read_to_string(fx.svc.path().join(".stepsync/sys/Fabric/f1/sync.http"))
        .expect("f1's own recipe");
    assert!(!own.contains("/hooks/"), "{own}");
    // Nothing changed since: nothing runs again.
    fx.server.clear();
    assert_eq!(fx.run(), Vec::<String>::new());
    // Every fabric stays in sync throughout: a payload watcher does not make them pending.
    for f in ["f1", "f2", "f3"] {
        assert_eq!(fx.status("Fabric", f)["status"], "ok");
    }
}

#[test]
fn changes_folded_before_a_payload_watcher_runs_give_it_the_first_old_and_the_last_new() {
    let fx = Fx::new(&hook("ip, size"), HOOK_OBJECTS);
    fx.apply("Instance:\n  - {name: i2, node: n2, size: 2}\n");
    fx.apply("Instance:\n  - {name: i2, node: n2, size: 3}\n");
    fx.svc.ok(&["run", "--once"]);
    let hooks: Vec<_> = fx
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/hooks/"))
        .collect();
    assert_eq!(
        hooks.len(),
        1,
        "one POST for two changes: {:?}",
        fx.server.lines()
    );
    assert_eq!(hooks[0].path, "/hooks/f2");
    let b = body(&hooks[0]);
    assert_eq!(
        (b["old_size"].clone(), b["new_size"].clone()),
        (1.into(), 3.into()),
        "{b}"
    );
    assert_eq!(b["changed"], serde_json::json!(["size"]), "{b}");
}

/// The watcher `name` as `status -o json` shows it: (runs, failures, message).
fn watcher_status(svc: &Service, name: &str) -> Option<(i64, i64, String)> {
    let out = svc.ok(&["status", "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let w = v["watchers"]
        .as_array()
        .unwrap_or_else(|| panic!("status -o json has no watchers: {v}"))
        .iter()
        .find(|w| w["name"] == name)?;
    Some((
        w["runs"].as_i64().expect("runs"),
        w["failures"].as_i64().expect("failures"),
        w["message"].as_str().expect("message").to_owned(),
    ))
}

#[test]
fn a_failing_payload_watcher_is_shown_not_retried_and_blocks_nothing() {
    let fx = Fx::new(&hook("ip, size"), HOOK_OBJECTS);
    let name = "stepdefs/fabric-watch.yaml";
    let (runs0, failures0, _) =
        watcher_status(&fx.svc, name).expect("the first sync ran the watcher");
    assert_eq!(failures0, 0);
    fx.server
        .respond("POST", "/hooks/f1", 500, r#"{"error": "hook down"}"#);
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    // The actuators run as usual and the run succeeds: the watcher's failure blocks nothing.
    let out = fx.svc.ok(&["run", "--once"]);
    assert!(out.stdout.contains("ok"), "{}", out.stdout);
    let mut lines = fx.sent();
    lines.sort();
    assert_eq!(
        lines,
        ["POST /hooks/f1", "POST /hooks/f3", "PUT /instances/i1"]
    );
    for o in fx.all() {
        assert_eq!(o["status"]["status"], "ok", "{o}");
    }
    // Shown in the watcher's status: its failure, naming the object and the answer.
    let (runs, failures, message) = watcher_status(&fx.svc, name).expect("watcher status");
    assert_eq!(runs, runs0 + 2);
    assert_eq!(failures, failures0 + 1);
    assert!(
        message.contains("Fabric/f1") && message.contains("500"),
        "{message}"
    );
    let table = fx.svc.ok(&["status"]).stdout;
    assert!(
        table.contains(&format!("{name}: {runs} runs, {failures} failed, last ")),
        "{table}"
    );
    // Never retried: the next runs send nothing.
    fx.server.clear();
    assert_eq!(fx.run(), Vec::<String>::new());
    assert_eq!(fx.run(), Vec::<String>::new());
    assert_eq!(watcher_status(&fx.svc, name).unwrap().0, runs);
    // A new change runs it again (and it now succeeds).
    fx.server.forget("POST", "/hooks/f1");
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 3}\n");
    assert_eq!(
        fx.run(),
        ["POST /hooks/f1", "POST /hooks/f3", "PUT /instances/i1"]
    );
    let (_, failures, message) = watcher_status(&fx.svc, name).expect("watcher status");
    assert_eq!(failures, failures0 + 1);
    assert_eq!(message, "OK");
}

/// Waits for `cond`, polling, up to `timeout`.
fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill(mut d: Child) {
    let _ = d.kill();
    let _ = d.wait();
}

#[test]
fn kill_9_between_a_watched_write_and_the_watcher_loses_no_trigger() {
    let fx = Fx::new(ONE_HOP_IP, OBJECTS);
    // f1's switch is being synced and its request hangs: whenever the daemon drains the
    // watcher, f1 cannot run before the kill (it waits for s1), while i1's sync records a
    // new ip.
    fx.server.hold("/switches/s1", Duration::from_secs(60));
    fx.ip("i1", "10.0.0.66");
    fx.apply("Switch:\n  - {name: s1, ports: 2}\nInstance:\n  - {name: i1, node: n1, size: 2}\n");
    let d = fx.svc.daemon();
    let recorded = poll(Duration::from_secs(20), || {
        fx.svc.object("Instance", "i1")["fields"]["ip"] == "10.0.0.66"
    });
    let held = fx
        .server
        .wait_for("PUT /switches/s1", Duration::from_secs(5))
        .is_some();
    // kill -9: the daemon cannot save anything now.
    kill(d);
    assert!(recorded, "the daemon did not record i1's new ip");
    assert!(held, "s1 was not being synced: {:?}", fx.server.lines());
    assert!(
        !fx.server.lines().contains(&"PUT /fabrics/f1".to_owned()),
        "f1 ran before the kill, the test proves nothing: {:?}",
        fx.server.lines()
    );
    fx.server.hold("/switches/s1", Duration::ZERO);
    fx.server.clear();
    // The trigger was written with the ip (in the outbox, or as f1's mark if the daemon
    // drained it): the next run re-pushes f1, and only f1. Nothing else makes f1 run: its
    // recipe reads neither its switch nor its instance.
    let sent = fx.run();
    assert!(sent.contains(&"PUT /fabrics/f1".to_owned()), "{sent:?}");
    assert!(!sent.contains(&"PUT /fabrics/f2".to_owned()), "{sent:?}");
    assert_eq!(fx.status("Fabric", "f1")["status"], "ok");
    assert_eq!(fx.run(), Vec::<String>::new());
}

#[test]
fn a_slow_request_does_not_hold_up_a_watched_change_in_the_daemon() {
    let fx = Fx::new(ONE_HOP_IP, OBJECTS);
    // i2's request hangs for 15 s: SPEC §5.5, a slow run never holds up others.
    fx.server.hold("/instances/i2", Duration::from_secs(15));
    fx.apply("Instance:\n  - {name: i2, node: n2, size: 2}\n");
    let d = fx.svc.daemon();
    let slow = fx
        .server
        .wait_for("PUT /instances/i2", Duration::from_secs(5))
        .is_some();
    fx.ip("i1", "10.0.0.88");
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    let i1 = fx
        .server
        .wait_for("PUT /instances/i1", Duration::from_secs(5));
    // i1's new ip must reach f1 while i2 still hangs, not after the slow request ends.
    let f1 = fx
        .server
        .wait_for("PUT /fabrics/f1", Duration::from_secs(5));
    kill(d);
    fx.server.hold("/instances/i2", Duration::ZERO);
    assert!(slow && i1.is_some(), "{:?}", fx.server.lines());
    assert!(
        f1.is_some(),
        "f1 waited for an unrelated slow request: {:?}",
        fx.server.lines()
    );
}

#[test]
fn the_daemon_runs_the_watcher_of_a_feedback_change_its_own_run_wrote() {
    let fx = Fx::new(ONE_HOP_IP, OBJECTS);
    let d = fx.svc.daemon();
    // Let it start and find nothing to do.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(fx.sent(), Vec::<String>::new());
    fx.ip("i1", "10.0.0.77");
    fx.apply("Instance:\n  - {name: i1, node: n1, size: 2}\n");
    // i1 runs at once; its new ip (written by the daemon's own run) must reach f1 about as
    // soon, not at the daemon's next outside wake-up.
    let i1 = fx
        .server
        .wait_for("PUT /instances/i1", Duration::from_secs(5));
    let f1 = fx
        .server
        .wait_for("PUT /fabrics/f1", Duration::from_secs(5));
    kill(d);
    assert!(
        i1.is_some(),
        "the daemon did not run i1: {:?}",
        fx.server.lines()
    );
    assert!(
        f1.is_some(),
        "the daemon did not re-push f1 within 5 s of i1's new ip: {:?}",
        fx.server.lines()
    );
}

/// A model whose objects may refer to themselves (a self-reference is no dependency cycle),
/// and a counter its backend bumps on every run: `count` is fed back as the `n` the request
/// carried plus one, so every run changes it.
const PEER_SCHEMA: &str = "models:
  Peer:
    fields:
      name: {type: string, required: true}
      peer: {type: ref, to: Peer}
      count: {type: int, feedback: true}
";

const PEER: &str = r#"kind: Actuator
model: Peer
sync:
  rest:
    method: PUT
    url: "{{ vars.base }}/peers/{{ object.name }}"
    body: {name: "{{ object.name }}", n: "{{ object.count | default(0) }}"}
feedback:
  count: "{{ result.body.n + 1 }}"
"#;

/// Each peer reacts to the counter of the peer it names: a peer that names itself reacts to
/// its own runs, for ever.
const PEER_WATCH: &str =
    "kind: Watcher\nmodel: Peer\nwatches:\n  - {model: Peer, via: peer, fields: [count]}\n";

fn peers(backoff: &str) -> (Service, TestServer) {
    let server = TestServer::start();
    let svc = Service::new(PEER_SCHEMA);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: loop-test\nvars: {{base: \"{}\"}}\nbackoff: {backoff}\n",
            server.url
        ),
    );
    svc.file("stepdefs/peer.yaml", PEER);
    svc.file("stepdefs/peer-watch.yaml", PEER_WATCH);
    // p1 watches itself; p2 follows p1; p3 follows nobody.
    svc.file(
        "objects.yaml",
        "Peer:\n  - {name: p1, peer: p1}\n  - {name: p2, peer: p1}\n  - {name: p3}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    (svc, server)
}

fn count(server: &TestServer, line: &str) -> usize {
    server.lines().iter().filter(|l| *l == line).count()
}

#[test]
fn a_watcher_loop_is_stopped_by_the_run_time_loop_guard() {
    let (svc, server) = peers("{initial: 1m, jitter: 0}");
    // run --once keeps making passes while the watcher keeps p1 busy, until the guard stops
    // it: its first run (created) and ten watch-caused runs are allowed, the eleventh
    // watch-caused one within a minute is not sent.
    let out = svc.expect(&["run", "--once"], 1);
    let p1 = svc.object("Peer", "p1")["status"].clone();
    assert_eq!(p1["status"], "error", "{p1}\n{}", out.stdout);
    let msg = p1["message"].as_str().unwrap();
    assert!(msg.starts_with("loop detected: Peer/p1"), "{msg}");
    assert!(
        msg.contains("watch Peer/p1.count"),
        "the chain of triggers: {msg}"
    );
    assert_eq!(count(&server, "PUT /peers/p1"), 11, "{:?}", server.lines());
    assert_eq!(svc.object("Peer", "p1")["fields"]["count"], 11);
    // p3 watches nothing and is left alone.
    assert_eq!(count(&server, "PUT /peers/p3"), 1);
    assert_eq!(svc.object("Peer", "p3")["status"]["status"], "ok");
    // Stopped: the next run sends nothing for p1 (it waits on its backoff).
    server.clear();
    svc.expect(&["run", "--once"], 1);
    assert_eq!(count(&server, "PUT /peers/p1"), 0, "{:?}", server.lines());
}

#[test]
fn the_daemon_stops_a_watcher_loop_and_it_stays_stopped_after_the_backoff() {
    let (svc, server) = peers("{initial: 1s, factor: 1, max: 1s, jitter: 0}");
    let d = svc.daemon();
    let stopped = poll(Duration::from_secs(30), || {
        svc.object("Peer", "p1")["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("loop detected:"))
    });
    let sent = count(&server, "PUT /peers/p1");
    // Its backoff (1 s) passes twice over. A retry is no outside change: the loop the guard
    // found has not gone away, and the object must not start another ten runs.
    std::thread::sleep(Duration::from_millis(2500));
    let later = count(&server, "PUT /peers/p1");
    let status = svc.object("Peer", "p1")["status"].clone();
    kill(d);
    assert!(stopped, "no loop detected: {status}");
    assert!(sent <= 12, "{sent} runs before the guard stopped p1");
    assert!(
        later - sent <= 2,
        "p1 ran {} more times after the guard stopped it ({status})",
        later - sent
    );
}
