//! Loop detection (SPEC §15): `validate` reports every cycle of watchers, policies and
//! actuators that can re-actuate the system with no outside change, with its path and the
//! place of a step on it; `converges: true` accepts one; `graph` shows watchers and policies
//! as edges of their own.

use crate::common::Service;

const SCHEMA: &str = "models:
  Instance:
    fields:
      name: string
      image: string
      ip: {type: string, feedback: true}
  Fabric:
    fields:
      name: string
      instance: {type: ref, to: Instance}
      vlan: int
      fabric_ip: {type: string, feedback: true}
  Network:
    fields:
      name: string
      mtu: int
      interface: string
  Interface:
    fields:
      name: string
      network: string
      mtu: int
  Node:
    fields:
      name: string
      parent: {type: ref, to: Node}
      ip: {type: string, feedback: true}
";

/// A REST actuator of `model` reading `attrs` and writing `feedback`.
fn actuator(model: &str, attrs: &str, feedback: &str) -> String {
    format!(
        r#"kind: Actuator
model: {model}
attributes: {{{attrs}}}
sync:
  rest: {{method: PUT, url: "http://127.0.0.1:9/{{{{ object.name }}}}"}}
delete:
  rest: {{method: DELETE, url: "http://127.0.0.1:9/{{{{ object.name }}}}"}}
feedback: {{{feedback}}}
"#
    )
}

const NETWORK_POLICY: &str = r#"kind: Policy
model: Network
on_create:
  - ensure:
      model: Interface
      key: "{{ object.name }}-if0"
      fields: {network: "{{ object.name }}", mtu: "{{ object.mtu | default(1500) }}"}
"#;

/// The way back: every Interface keeps a Network of its own up to date.
const INTERFACE_POLICY: &str = r#"kind: Policy
model: Interface
on_create:
  - ensure:
      model: Network
      key: "{{ object.network }}"
      fields: {interface: "{{ object.name }}"}
"#;

const FABRIC_WATCH: &str = "kind: Watcher
model: Fabric
watches:
  - {model: Instance, via: instance, fields: [ip]}
";

/// Instance and Fabric actuated, Fabric resynced when its Instance's ip changes.
fn watched() -> Service {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/instance.yaml",
        &actuator(
            "Instance",
            "image: \"{{ object.image }}\"",
            "ip: \"{{ result.body.ip }}\"",
        ),
    );
    svc.file(
        "stepdefs/fabric.yaml",
        &actuator(
            "Fabric",
            "ip: \"{{ object.instance.ip }}\"",
            "fabric_ip: \"{{ result.body.ip }}\"",
        ),
    );
    svc.file("stepdefs/fabric-watch.yaml", FABRIC_WATCH);
    svc
}

#[test]
fn validate_reports_a_policy_ping_pong_with_its_path_and_place() {
    let svc = Service::new(SCHEMA);
    svc.file("stepdefs/network-policy.yaml", NETWORK_POLICY);
    svc.file("stepdefs/interface-policy.yaml", INTERFACE_POLICY);
    svc.test()
        .args(["validate"])
        .status(2)
        .stderr_contains(
            "error: loop: Interface.name -> policy stepdefs/interface-policy.yaml -> Network.interface -> policy stepdefs/network-policy.yaml -> Interface.name\n",
        )
        .stderr_contains("stepdefs/interface-policy.yaml:1:7\n")
        .stderr_contains("converges: true")
        .run();
}

#[test]
fn converges_true_on_one_policy_of_the_loop_accepts_it() {
    let svc = Service::new(SCHEMA);
    svc.file(
        "stepdefs/network-policy.yaml",
        &format!("{NETWORK_POLICY}converges: true\n"),
    );
    svc.file("stepdefs/interface-policy.yaml", INTERFACE_POLICY);
    svc.test().args(["validate"]).stderr_lacks("loop").run();
}

#[test]
fn every_loop_is_reported_at_once() {
    let svc = Service::new(SCHEMA);
    svc.file("stepdefs/network-policy.yaml", NETWORK_POLICY);
    svc.file("stepdefs/interface-policy.yaml", INTERFACE_POLICY);
    // A policy that ensures another object of its own model, whose policy is itself.
    svc.file(
        "stepdefs/node-policy.yaml",
        "kind: Policy\nmodel: Node\non_create:\n  - ensure: {model: Node, key: \"{{ object.name }}-child\", fields: {parent: \"{{ object.name }}\"}}\n",
    );
    let out = svc.test().args(["validate"]).status(2).run();
    assert_eq!(
        out.stderr.matches("error: loop: ").count(),
        2,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "error: loop: Node.parent -> policy stepdefs/node-policy.yaml -> Node.parent\n"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("stepdefs/node-policy.yaml:1:7"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_watcher_on_a_declarative_field_nobody_else_writes_is_no_loop() {
    let svc = watched();
    svc.file(
        "stepdefs/fabric-watch.yaml",
        "kind: Watcher\nmodel: Fabric\nwatches:\n  - {model: Instance, via: instance, fields: [image]}\n",
    );
    svc.test().args(["validate"]).stderr_lacks("loop").run();
}

#[test]
fn watchers_over_feedback_along_refs_are_no_loop() {
    // Fabric reacts to its Instance's feedback and writes its own; a Node to its parent's,
    // down to the leaves: objects never refer to each other in a ring, so this ends.
    let svc = watched();
    svc.file(
        "stepdefs/node.yaml",
        &actuator(
            "Node",
            "up: \"{{ object.parent.ip }}\"",
            "ip: \"{{ result.body.ip }}\"",
        ),
    );
    svc.file(
        "stepdefs/node-watch.yaml",
        "kind: Watcher\nmodel: Node\nwatches:\n  - {model: Node, via: parent, fields: [ip]}\n",
    );
    svc.test().args(["validate"]).stderr_lacks("loop").run();
}

#[test]
fn a_watcher_ping_pong_between_two_models_is_a_dependency_cycle() {
    // Each model would have to reach the other through `via`: refs both ways, which the
    // schema refuses before any watcher is read.
    let schema = SCHEMA.replace(
        "      image: string\n",
        "      image: string\n      fabric: {type: ref, to: Fabric}\n",
    );
    let svc = Service::new(&schema);
    svc.file("stepdefs/fabric-watch.yaml", FABRIC_WATCH);
    svc.file(
        "stepdefs/instance-watch.yaml",
        "kind: Watcher\nmodel: Instance\nwatches:\n  - {model: Fabric, via: fabric, fields: [fabric_ip]}\n",
    );
    svc.test()
        .args(["validate"])
        .status(2)
        .stderr_contains("dependency cycle between models: Fabric, Instance")
        .run();
}

/// Fabric watching Instance, Network's policy ensuring Interface.
fn with_steps() -> Service {
    let svc = watched();
    svc.file("stepdefs/network-policy.yaml", NETWORK_POLICY);
    svc
}

#[test]
fn graph_text_shows_watchers_and_policies_as_edges_of_their_own() {
    with_steps()
        .test()
        .args(["graph"])
        .stdout(
            "Instance\nFabric -> Instance\nNetwork\nInterface\nNode\n\
             Fabric <- watch Instance.ip via instance (stepdefs/fabric-watch.yaml)\n\
             Network -> policy ensures Interface (stepdefs/network-policy.yaml)\n",
        )
        .run();
}

#[test]
fn graph_dot_draws_watchers_dashed_and_policies_bold_with_labels() {
    with_steps()
        .test()
        .args(["graph", "--format", "dot"])
        .stdout_contains("  \"Fabric\" -> \"Instance\";\n")
        .stdout_contains(
            "  \"Instance\" -> \"Fabric\" [style=dashed, color=blue, fontcolor=blue, label=\"watch Instance.ip via instance\\nstepdefs/fabric-watch.yaml\"];\n",
        )
        .stdout_contains(
            "  \"Network\" -> \"Interface\" [style=bold, color=darkgreen, fontcolor=darkgreen, label=\"policy ensures Interface\\nstepdefs/network-policy.yaml\"];\n",
        )
        .stdout_matches("\\}\n$")
        .run();
}

#[test]
fn graph_objects_keeps_the_rules_between_models() {
    let svc = with_steps();
    svc.file(
        "objects.yaml",
        "Instance:\n  - {name: i1}\nFabric:\n  - {name: f1, instance: i1}\n",
    );
    svc.ok(&["apply", "-f", "objects.yaml"]);
    svc.test()
        .args(["graph", "--objects"])
        .stdout_contains("Fabric/f1 -> Instance/i1\n")
        .stdout_contains("Fabric <- watch Instance.ip via instance (stepdefs/fabric-watch.yaml)\n")
        .stdout_contains("Network -> policy ensures Interface (stepdefs/network-policy.yaml)\n")
        .run();
    svc.test()
        .args(["graph", "--objects", "--format", "dot"])
        .stdout_contains("  \"Fabric/f1\" -> \"Instance/i1\";\n")
        .stdout_contains("  subgraph cluster_steps {\n")
        .stdout_contains("    \"Instance\" [shape=box];\n")
        .stdout_contains("    \"Instance\" -> \"Fabric\" [style=dashed")
        .run();
}
