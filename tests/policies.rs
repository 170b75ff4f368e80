//! Model policies end to end (SPEC §12): `kind: Policy` steps through the real binary,
//! against a real HTTP server — ensure (with `loop`), `delete:`, `on_update`, ownership
//! (`owner:`, cascade and `keep`, never pruned, shrinking loops), a failing policy (nothing
//! written, `policy_status`, its own backoff, blocking only what it owns, cleared by a fix),
//! policies before actuators in one run, `policed_generation`, and plan.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::Service;
use crate::common::http::TestServer;

const SCHEMA: &str = "models:
  Network:
    fields:
      name: {type: string, required: true}
      mtu: json
      ports: list
  Interface:
    fields:
      name: {type: string, required: true}
      network: {type: ref, to: Network, required: true}
      mtu: {type: int, default: 1500}
      role: string
  Port:
    fields:
      name: {type: string, required: true}
      network: {type: ref, to: Network, required: true}
      number: int
  Route:
    fields:
      name: {type: string, required: true}
      via: string
";

/// PUT to sync, DELETE to delete, at `{{ vars.base }}/<path>/<name>`; `body` is stepdef YAML.
fn actuator(model: &str, path: &str, body: &str) -> String {
    format!(
        "kind: Actuator\nmodel: {model}\nsync:\n  rest:\n    method: PUT\n    url: \"{{{{ vars.base }}}}/{path}/{{{{ object.name }}}}\"\n    body: {body}\ndelete:\n  rest: {{method: DELETE, url: \"{{{{ vars.base }}}}/{path}/{{{{ object.name }}}}\"}}\n"
    )
}

const INTERFACE_BODY: &str =
    r#"{name: "{{ object.name }}", mtu: "{{ object.mtu }}", role: "{{ object.role }}"}"#;

/// For every Network: a Port per item of `ports`, an Interface (`role` says which of
/// on_create and on_update wrote it), and no default Route.
fn policy(role_on_update: &str) -> String {
    let actions = |role: &str| {
        format!(
            r#"  - ensure:
      model: Port
      loop: "{{{{ object.ports | default([]) }}}}"
      key: "{{{{ object.name }}}}-p{{{{ item }}}}"
      fields: {{network: "{{{{ object.name }}}}", number: "{{{{ item }}}}"}}
  - ensure:
      model: Interface
      key: "{{{{ object.name }}}}-if0"
      fields: {{network: "{{{{ object.name }}}}", mtu: "{{{{ object.mtu | default(1500) }}}}", role: {role}}}
  - delete: {{model: Route, key: "{{{{ object.name }}}}-default"}}
"#
        )
    };
    format!(
        "kind: Policy\nmodel: Network\non_create:\n{}on_update:\n{}",
        actions("created"),
        actions(role_on_update)
    )
}

const POLICY_FILE: &str = "stepdefs/network-policy.yaml";

struct Fx {
    svc: Service,
    server: TestServer,
}

impl Fx {
    /// A service with the actuators and `policy_text` as `stepdefs/network-policy.yaml`;
    /// policies back off 2 s, without jitter.
    fn new(policy_text: &str) -> Fx {
        let server = TestServer::start();
        let svc = Service::new(SCHEMA);
        svc.file(
            "stepsync.yaml",
            &format!(
                "name: policy-test\nvars: {{base: \"{}\"}}\nbackoff: {{initial: 2s, factor: 1, max: 2s, jitter: 0}}\n",
                server.url
            ),
        );
        svc.file(
            "stepdefs/network.yaml",
            &actuator("Network", "networks", r#"{name: "{{ object.name }}"}"#),
        );
        svc.file(
            "stepdefs/interface.yaml",
            &actuator("Interface", "interfaces", INTERFACE_BODY),
        );
        svc.file(
            "stepdefs/port.yaml",
            &actuator(
                "Port",
                "ports",
                r#"{name: "{{ object.name }}", number: "{{ object.number }}"}"#,
            ),
        );
        svc.file(
            "stepdefs/route.yaml",
            &actuator("Route", "routes", r#"{name: "{{ object.name }}"}"#),
        );
        svc.file(POLICY_FILE, policy_text);
        Fx { svc, server }
    }

    fn apply(&self, objects: &str) {
        self.svc.file("objects.yaml", objects);
        self.svc.ok(&["apply", "-f", "objects.yaml"]);
    }

    /// `run --once` (exit 0), then the requests it sent, in order; the record is cleared.
    #[track_caller]
    fn run(&self) -> Vec<String> {
        self.svc.ok(&["run", "--once"]);
        self.sent()
    }

    fn sent(&self) -> Vec<String> {
        let l = self.server.lines();
        self.server.clear();
        l
    }

    fn fields(&self, model: &str, key: &str) -> Value {
        self.svc.object(model, key)["fields"].clone()
    }

    fn status(&self, model: &str, key: &str) -> Value {
        self.svc.object(model, key)["status"].clone()
    }

    fn yaml(&self, model: &str, key: &str) -> String {
        self.svc.ok(&["get", model, key, "-o", "yaml"]).stdout
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn an_ensure_creates_an_owned_object_and_one_run_creates_and_syncs_both() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1, mtu: 9000}\n");
    // Nothing but the person's object before a pass: policies run in the engine.
    assert_eq!(fx.svc.keys("Interface"), Vec::<String>::new());
    // One run: the policy writes the interface before the actuators run, and the interface's
    // actuator sees it (after its network, which it depends on).
    let sent = fx.run();
    assert_eq!(sent, ["PUT /networks/n1", "PUT /interfaces/n1-if0"]);
    assert_eq!(
        fx.fields("Interface", "n1-if0"),
        serde_json::json!({"name": "n1-if0", "network": "n1", "mtu": 9000, "role": "created"})
    );
    assert_eq!(fx.status("Interface", "n1-if0")["status"], "ok");
    // Owned by its source, as `get -o yaml` shows; the person's object has no owner.
    let y = fx.yaml("Interface", "n1-if0");
    assert!(y.contains("owner: Network/n1"), "{y}");
    let y = fx.yaml("Network", "n1");
    assert!(!y.contains("owner:"), "{y}");
    // The source: policed at its generation, its policy ok.
    let n1 = fx.status("Network", "n1");
    assert_eq!(n1["status"], "ok", "{n1}");
    assert_eq!(n1["generation"], 1, "{n1}");
    assert_eq!(n1["policed_generation"], n1["generation"], "{n1}");
    assert_eq!(n1["policy_status"]["status"], "ok", "{n1}");
    // Idempotent: nothing more to write or send.
    assert_eq!(fx.run(), Vec::<String>::new());
}

#[test]
fn the_owned_objects_request_carries_what_the_policy_wrote_in_the_same_run() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1, mtu: 1400}\n");
    fx.svc.ok(&["run", "--once"]);
    let put = fx
        .server
        .requests()
        .into_iter()
        .find(|r| r.line() == "PUT /interfaces/n1-if0")
        .expect("the interface was sent in the run that created it");
    let body: Value = serde_json::from_str(&put.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "n1-if0", "mtu": 1400, "role": "created"})
    );
}

#[test]
fn a_loop_ensures_one_object_per_item_and_a_smaller_loop_deletes_the_extra_one() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1, ports: [1, 2, 3]}\n");
    let sent = fx.run();
    assert_eq!(sent[0], "PUT /networks/n1");
    assert_eq!(
        sorted(sent[1..].to_vec()),
        [
            "PUT /interfaces/n1-if0",
            "PUT /ports/n1-p1",
            "PUT /ports/n1-p2",
            "PUT /ports/n1-p3"
        ]
    );
    assert_eq!(fx.svc.keys("Port"), ["n1-p1", "n1-p2", "n1-p3"]);
    assert_eq!(fx.fields("Port", "n1-p2")["number"], 2);
    assert!(fx.yaml("Port", "n1-p3").contains("owner: Network/n1"));
    // The loop shrinks: the port it no longer yields is deleted (its delete runs).
    fx.apply("Network:\n  - {name: n1, ports: [1, 3]}\n");
    let sent = fx.run();
    assert!(sent.contains(&"DELETE /ports/n1-p2".to_owned()), "{sent:?}");
    assert!(
        !sent
            .iter()
            .any(|l| l.contains("n1-p1") || l.contains("n1-p3")),
        "the kept ports are unchanged: {sent:?}"
    );
    assert_eq!(fx.svc.keys("Port"), ["n1-p1", "n1-p3"]);
    let n1 = fx.status("Network", "n1");
    assert_eq!(n1["generation"], 2, "{n1}");
    assert_eq!(n1["policed_generation"], 2, "{n1}");
}

#[test]
fn on_update_runs_on_a_change_and_on_create_on_the_first_policing() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1}\n");
    fx.run();
    assert_eq!(fx.fields("Interface", "n1-if0")["role"], "created");
    fx.apply("Network:\n  - {name: n1, mtu: 1600}\n");
    let sent = fx.run();
    assert_eq!(sent, ["PUT /networks/n1", "PUT /interfaces/n1-if0"]);
    let f = fx.fields("Interface", "n1-if0");
    assert_eq!(
        (f["role"].clone(), f["mtu"].clone()),
        ("updated".into(), 1600.into()),
        "{f}"
    );
    assert_eq!(fx.status("Interface", "n1-if0")["generation"], 2);
    assert_eq!(fx.status("Network", "n1")["policed_generation"], 2);
}

#[test]
fn a_delete_action_deletes_the_object_it_names() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Route:\n  - {name: n1-default}\n  - {name: n2-default}\n");
    fx.run();
    fx.apply("Route:\n  - {name: n1-default}\n  - {name: n2-default}\nNetwork:\n  - {name: n1}\n");
    let sent = fx.run();
    assert!(
        sent.contains(&"DELETE /routes/n1-default".to_owned()),
        "{sent:?}"
    );
    assert!(!sent.iter().any(|l| l.contains("n2-default")), "{sent:?}");
    assert_eq!(fx.svc.keys("Route"), ["n2-default"]);
}

#[test]
fn deleting_the_source_deletes_its_owned_objects_without_cascade() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1, ports: [7]}\n  - {name: n2}\n");
    fx.run();
    fx.svc.ok(&["delete", "Network", "n1"]);
    let sent = fx.run();
    // The owned objects first (they depend on the source), the source last.
    assert_eq!(
        sent.last().map(String::as_str),
        Some("DELETE /networks/n1"),
        "{sent:?}"
    );
    assert_eq!(
        sorted(sent),
        [
            "DELETE /interfaces/n1-if0",
            "DELETE /networks/n1",
            "DELETE /ports/n1-p7"
        ]
    );
    assert_eq!(fx.svc.keys("Network"), ["n2"]);
    assert_eq!(fx.svc.keys("Interface"), ["n2-if0"]);
    assert_eq!(fx.svc.keys("Port"), Vec::<String>::new());
}

#[test]
fn on_delete_keep_leaves_the_owned_objects() {
    let fx = Fx::new(
        "kind: Policy\nmodel: Network\non_create:\n  - ensure: {model: Route, key: \"{{ object.name }}-r\", fields: {via: \"{{ object.name }}\"}}\non_delete: keep\n",
    );
    fx.apply("Network:\n  - {name: n1}\n");
    fx.run();
    assert!(fx.yaml("Route", "n1-r").contains("owner: Network/n1"));
    fx.svc.ok(&["delete", "Network", "n1"]);
    let sent = fx.run();
    assert_eq!(sent, ["DELETE /networks/n1"]);
    assert_eq!(fx.svc.keys("Network"), Vec::<String>::new());
    assert_eq!(fx.svc.keys("Route"), ["n1-r"]);
    assert_eq!(fx.status("Route", "n1-r")["status"], "ok");
}

#[test]
fn the_default_on_delete_cascade_can_be_spelled_out() {
    let fx = Fx::new(
        "kind: Policy\nmodel: Network\non_create:\n  - ensure: {model: Route, key: \"{{ object.name }}-r\"}\non_delete: cascade\n",
    );
    fx.apply("Network:\n  - {name: n1}\n");
    fx.run();
    fx.svc.ok(&["delete", "Network", "n1"]);
    assert_eq!(
        sorted(fx.run()),
        ["DELETE /networks/n1", "DELETE /routes/n1-r"]
    );
    assert_eq!(fx.svc.keys("Route"), Vec::<String>::new());
}

#[test]
fn apply_prune_never_prunes_owned_objects() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1}\nInterface:\n  - {name: manual, network: n1}\n");
    fx.run();
    assert_eq!(fx.svc.keys("Interface"), ["manual", "n1-if0"]);
    // The file no longer lists `manual`, and never listed n1-if0: only `manual` goes.
    fx.svc.file(
        "objects.yaml",
        "Network:\n  - {name: n1}\nInterface:\n  - {name: other, network: n1}\n",
    );
    let out = fx.svc.ok(&["apply", "-f", "objects.yaml", "--prune"]);
    assert!(!out.stdout.contains("n1-if0"), "{}", out.stdout);
    let sent = fx.run();
    assert!(
        sent.contains(&"DELETE /interfaces/manual".to_owned()),
        "{sent:?}"
    );
    assert!(!sent.iter().any(|l| l.contains("n1-if0")), "{sent:?}");
    assert_eq!(fx.svc.keys("Interface"), ["n1-if0", "other"]);
    assert_eq!(fx.status("Interface", "n1-if0")["status"], "ok");
}

fn at(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("a timestamp: {v}")))
        .expect("RFC 3339")
}

#[test]
fn a_failing_policy_writes_nothing_backs_off_blocks_only_its_own_and_a_fix_clears_it() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1, ports: [1]}\n  - {name: n2}\n");
    fx.run();
    // Every interface must run again (definition drift), so blocking shows: n1's policy
    // fails — its mtu renders a string where Interface.mtu is an int — after its port
    // loop rendered fine.
    fx.svc.file(
        "stepdefs/interface.yaml",
        &actuator(
            "Interface",
            "interfaces",
            r#"{name: "{{ object.name }}", mtu: "{{ object.mtu }}", role: "{{ object.role }}", v: 2}"#,
        ),
    );
    fx.apply("Network:\n  - {name: n1, ports: [1, 2], mtu: big}\n  - {name: n2}\n");
    let failed_at = SystemTime::now();
    let out = fx.svc.test().args(["run", "--once"]).any_status().run();
    let sent = sorted(fx.sent());
    // Nothing written: no second port, the interface as it was.
    assert_eq!(fx.svc.keys("Port"), ["n1-p1"]);
    assert_eq!(fx.fields("Interface", "n1-if0")["mtu"], 1500);
    // Shown on the source.
    let n1 = fx.status("Network", "n1");
    let ps = &n1["policy_status"];
    assert_eq!(ps["status"], "error", "{n1}");
    let msg = ps["message"].as_str().unwrap();
    assert!(
        msg.contains(POLICY_FILE) && msg.contains("Interface/n1-if0") && msg.contains("mtu"),
        "{msg}"
    );
    assert_eq!(ps["failures"], 1, "{n1}");
    assert_eq!(n1["policed_generation"], 1, "{n1}");
    assert_eq!(n1["generation"], 2, "{n1}");
    let retry = at(&ps["next_retry_at"]);
    let wait = retry.duration_since(failed_at).unwrap_or_default();
    // Shown to the second (cut, not rounded): 2 s after the failure, give or take one.
    assert!(
        wait > Duration::from_millis(900) && wait < Duration::from_millis(3100),
        "the policy's backoff is 2s: next_retry_at is {wait:?} after the failure"
    );
    // It blocks the objects it owns, and nothing else: n2's interface and n1 itself sync.
    let if1 = fx.status("Interface", "n1-if0");
    assert_eq!(if1["status"], "blocked", "{if1}");
    let m = if1["message"].as_str().unwrap();
    assert!(
        m.starts_with("blocked by the policy of Network/n1: "),
        "{m}"
    );
    assert_eq!(fx.status("Interface", "n2-if0")["status"], "ok");
    assert_eq!(fx.status("Network", "n1")["status"], "ok");
    assert_eq!(
        sent,
        ["PUT /interfaces/n2-if0", "PUT /networks/n1"],
        "{}",
        out.stdout
    );
    // `status` lists it among the policies in error, with its message.
    let table = fx.svc.ok(&["status"]).stdout;
    assert!(
        table.contains("Policies in error:") && table.contains("Network/n1 (1 failure"),
        "{table}"
    );
    let v: Value = serde_json::from_str(&fx.svc.ok(&["status", "-o", "json"]).stdout).unwrap();
    let keys: Vec<&Value> = v["policy_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["key"])
        .collect();
    assert_eq!(keys, ["n1"], "{v}");
    // Not retried before its backoff ends...
    fx.svc.test().args(["run", "--once"]).any_status().run();
    assert!(
        SystemTime::now() < retry,
        "the check came too late to mean anything"
    );
    let again = fx.status("Network", "n1")["policy_status"].clone();
    assert_eq!(again, *ps, "retried before next_retry_at");
    // ...and retried after it (failing again: failures 2, a new next retry).
    while SystemTime::now() <= retry + Duration::from_millis(1050) {
        std::thread::sleep(Duration::from_millis(50));
    }
    fx.svc.test().args(["run", "--once"]).any_status().run();
    let again = fx.status("Network", "n1")["policy_status"].clone();
    assert_eq!(again["failures"], 2, "{again}");
    assert!(at(&again["next_retry_at"]) > retry, "{again}");
    assert!(fx.sent().iter().all(|l| !l.contains("n1-if0")));
    // A corrected source clears it at once, backoff or not.
    fx.apply("Network:\n  - {name: n1, ports: [1, 2], mtu: 9000}\n  - {name: n2}\n");
    let sent = sorted(fx.run());
    assert_eq!(
        sent,
        [
            "PUT /interfaces/n1-if0",
            "PUT /networks/n1",
            "PUT /ports/n1-p2"
        ]
    );
    let n1 = fx.status("Network", "n1");
    assert_eq!(n1["policy_status"]["status"], "ok", "{n1}");
    assert_eq!(n1["policy_status"]["next_retry_at"], Value::Null, "{n1}");
    assert_eq!(n1["policed_generation"], n1["generation"], "{n1}");
    assert_eq!(fx.fields("Interface", "n1-if0")["mtu"], 9000);
    assert_eq!(fx.status("Interface", "n1-if0")["status"], "ok");
    assert_eq!(fx.svc.keys("Port"), ["n1-p1", "n1-p2"]);
}

#[test]
fn an_ensure_onto_an_object_a_person_created_is_an_error_naming_both() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1}\nInterface:\n  - {name: n1-if0, network: n1, role: mine}\n");
    fx.svc.test().args(["run", "--once"]).any_status().run();
    let n1 = fx.status("Network", "n1");
    assert_eq!(n1["policy_status"]["status"], "error", "{n1}");
    let msg = n1["policy_status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Interface/n1-if0") && msg.contains("Network/n1"),
        "{msg}"
    );
    // The person's object is left as they wrote it, and stays theirs.
    assert_eq!(fx.fields("Interface", "n1-if0")["role"], "mine");
    assert!(!fx.yaml("Interface", "n1-if0").contains("owner:"));
}

#[test]
fn plan_shows_a_policys_effects_as_lines_of_their_own() {
    let fx = Fx::new(&policy("updated"));
    fx.apply("Network:\n  - {name: n1}\n");
    let out = fx.svc.test().args(["plan"]).any_status().run();
    // The policy's effect (naming the policy and, beyond the spec's example, its source),
    // then the recipe the ensured object would get, after its network's.
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(
        lines,
        [
            "+ create Interface/n1-if0 (policy stepdefs/network-policy.yaml of Network/n1)",
            "+ create Network/n1 (rest) created",
            "+ create Interface/n1-if0 (rest) created",
        ],
        "{}",
        out.stdout
    );
    // And nothing is written: the plan only shows it.
    assert_eq!(fx.svc.keys("Interface"), Vec::<String>::new());
}

#[test]
fn retry_clears_a_failing_policys_backoff() {
    let fx = Fx::new(&policy("updated"));
    // A long backoff: only `retry` can make the policy run again within this test.
    fx.svc.file(
        "stepsync.yaml",
        &format!(
            "name: policy-test\nvars: {{base: \"{}\"}}\nbackoff: {{initial: 1h, jitter: 0}}\n",
            fx.server.url
        ),
    );
    fx.apply("Network:\n  - {name: n1, mtu: big}\n");
    fx.svc.test().args(["run", "--once"]).any_status().run();
    assert_eq!(fx.status("Network", "n1")["policy_status"]["failures"], 1);
    // SPEC §5.3: `stepsync retry MODEL [KEY]` clears the backoff; a policy's is one.
    fx.svc
        .test()
        .args(["retry", "Network", "n1"])
        .any_status()
        .run();
    fx.svc.test().args(["run", "--once"]).any_status().run();
    let ps = fx.status("Network", "n1")["policy_status"].clone();
    assert_eq!(
        ps["failures"], 2,
        "retry did not make the policy run again: {ps}"
    );
}
