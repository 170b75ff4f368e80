//! Loop detection (SPEC §15): the read/write graph of actuators, watchers and policies, and
//! the cycles in it that can make the system re-actuate itself with no outside change.
//!
//! Nodes are model fields (`Model.field`), the actuation of a model, and each watcher and
//! policy. Edges say "a change of this starts that" or "that writes this":
//! - an actuator of M runs when a declarative field of M changes (a generation bump), and
//!   when a field it reads through a ref changes (reference drift, §5.1 rule 5); it writes
//!   its feedback fields. Its own feedback does not make it run again;
//! - a watcher fires on the fields it watches, and (`on_change: resync`) actuates its model;
//! - a policy runs on any declarative change of its source and writes the fields its
//!   ensures name (and the target's key: an ensure may create the object).
//!
//! Every edge but a policy's writes goes from an object to itself or to an object that
//! depends on it: an actuator reads what its object refers to, a watcher watches what its
//! objects reach through `via`. Object dependencies are acyclic (§4.2: between models, and
//! between the objects of a model that refers to itself), so a cycle made only of such
//! edges — a tree whose nodes watch their parent — ends at the leaves. Only a cycle with at
//! least one edge that does not follow dependencies (a policy's write, or a watcher's `via`
//! against them, should one ever be allowed) is reported as a loop.

use std::collections::{BTreeSet, HashMap, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::diag::{Diagnostic, Diagnostics, Origin};
use crate::model::Schema;
use crate::service::Service;
use crate::stepdef::{Action, OnChange, Policy, Watch, Watcher};
use crate::validate::{actuator_tmpls, object_path};

/// What a node of the read/write graph stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Field {
        model: String,
        field: String,
    },
    Actuate(String),
    /// Index into the service's watchers.
    Watcher(usize),
    /// Index into the service's policies.
    Policy(usize),
    /// A pull or event step (`pull/<name>`, `event/<name>`): it writes, and nothing of the
    /// data model starts it, so it is never on a loop; it is in the graph so the graph is
    /// the whole picture of who writes what.
    Feed(String),
}

#[derive(Debug, Clone)]
struct Node {
    key: Key,
    /// `Fabric.ip (feedback of Fabric)`, `watcher stepdefs/w.yaml`; an actuation is named
    /// by what starts it, when a path is printed.
    label: String,
    /// For a watcher or policy: where it is defined, and whether its author marked it as
    /// settling.
    step: Option<(Origin, bool)>,
}

/// Whether an edge goes from an object to itself or to objects depending on it (see the
/// module comment): a cycle of such edges only cannot loop.
#[derive(Debug, Clone, Copy)]
struct Edge {
    along_deps: bool,
}

/// The read/write graph of a service.
pub struct RwGraph {
    graph: DiGraph<Node, Edge>,
    index: HashMap<Key, NodeIndex>,
}

/// One loop: the path around it, and a watcher or policy on it to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    /// The nodes in order, the first repeated at the end.
    pub path: Vec<String>,
    pub at: Option<Origin>,
}

impl Loop {
    /// `loop: Fabric.ip (feedback of Fabric) -> watcher stepdefs/w.yaml -> ...`
    pub fn message(&self) -> String {
        format!("loop: {}", self.path.join(" -> "))
    }

    pub fn diagnostic(&self) -> Diagnostic {
        let msg = self.message();
        let d = match &self.at {
            Some(o) => o.diag(msg),
            None => Diagnostic::error(msg),
        };
        d.with_hint(
            "each step writes what starts the next, with no outside change; if the writes \
             settle (they become equal, so nothing changes any more), mark one of its watchers \
             or policies `converges: true`",
        )
    }
}

impl RwGraph {
    /// The graph of `svc`'s actuators, watchers and policies.
    pub fn build(svc: &Service) -> RwGraph {
        let mut g = RwGraph {
            graph: DiGraph::new(),
            index: HashMap::new(),
        };
        g.actuators(svc);
        for (i, w) in svc.stepdefs.watchers.iter().enumerate() {
            g.watcher(svc, i, w);
        }
        for (i, p) in svc.stepdefs.policies.iter().enumerate() {
            g.policy(&svc.schema, i, p);
        }
        let feeds = svc
            .stepdefs
            .pulls
            .iter()
            .map(|p| (p.owner(), &p.map, &p.origin))
            .chain(
                svc.stepdefs
                    .events
                    .iter()
                    .map(|e| (e.owner(), &e.map, &e.origin)),
            );
        for (name, map, origin) in feeds {
            g.feed(&svc.schema, name, map, origin);
        }
        g
    }

    fn feed(
        &mut self,
        schema: &Schema,
        name: String,
        map: &crate::stepdef::Mapping,
        origin: &Origin,
    ) {
        let Some(target) = schema.model(&map.model) else {
            return;
        };
        let label = name.clone();
        let me = self.node(Key::Feed(name), || label, Some((origin.clone(), false)));
        let written = map
            .fields
            .iter()
            .chain(&map.feedback)
            .map(|(f, _)| f.as_str())
            .chain(std::iter::once(target.key.as_str()));
        for f in written {
            let n = self.field(schema, &target.name, f);
            self.edge(me, n, false);
        }
    }

    fn node(
        &mut self,
        key: Key,
        label: impl FnOnce() -> String,
        step: Option<(Origin, bool)>,
    ) -> NodeIndex {
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        let i = self.graph.add_node(Node {
            key: key.clone(),
            label: label(),
            step,
        });
        self.index.insert(key, i);
        i
    }

    fn field(&mut self, schema: &Schema, model: &str, field: &str) -> NodeIndex {
        let feedback = schema
            .model(model)
            .and_then(|m| m.fields.get(field))
            .is_some_and(|f| f.feedback);
        self.node(
            Key::Field {
                model: model.to_owned(),
                field: field.to_owned(),
            },
            || {
                if feedback {
                    format!("{model}.{field} (feedback of {model})")
                } else {
                    format!("{model}.{field}")
                }
            },
            None,
        )
    }

    fn actuate(&mut self, model: &str) -> NodeIndex {
        self.node(Key::Actuate(model.to_owned()), || model.to_owned(), None)
    }

    fn edge(&mut self, a: NodeIndex, b: NodeIndex, along_deps: bool) {
        match self.graph.find_edge(a, b) {
            // One way that does not follow dependencies is enough to loop.
            Some(e) => self.graph[e].along_deps &= along_deps,
            None => {
                self.graph.add_edge(a, b, Edge { along_deps });
            }
        }
    }

    fn actuators(&mut self, svc: &Service) {
        let schema = &svc.schema;
        for act in svc.stepdefs.actuators.values() {
            let Some(model) = schema.model(&act.model) else {
                continue;
            };
            let run = self.actuate(&model.name);
            // Any declarative change bumps the generation: the object is actuated again.
            for f in model.fields.values().filter(|f| !f.feedback) {
                let n = self.field(schema, &model.name, &f.name);
                self.edge(n, run, true);
            }
            let mut read = BTreeSet::new();
            for t in actuator_tmpls(act) {
                for path in svc.stepdefs.templates.free_variables(t) {
                    let Some(walk) = object_path(schema, model, &path) else {
                        continue;
                    };
                    for (i, (m, f)) in walk.fields.iter().enumerate() {
                        // The object's own fields are covered above (declarative) or do not
                        // start it again (its own feedback); a field reached through a ref is
                        // another object's, even of the same model.
                        if i > 0 {
                            read.insert((m.name.clone(), f.name.clone()));
                        }
                    }
                    // `object.site` or a loop over `object.ports`: the whole object(s).
                    if let Some(whole) = walk.whole {
                        read.extend(whole.fields.keys().map(|f| (whole.name.clone(), f.clone())));
                    }
                }
            }
            for (m, f) in read {
                let n = self.field(schema, &m, &f);
                self.edge(n, run, true);
            }
            for (f, _) in &act.feedback {
                let n = self.field(schema, &model.name, f);
                self.edge(run, n, true);
            }
        }
    }

    fn watcher(&mut self, svc: &Service, i: usize, w: &Watcher) {
        let schema = &svc.schema;
        let me = self.node(
            Key::Watcher(i),
            || format!("watcher {}", w.name),
            Some((w.origin.clone(), w.converges)),
        );
        let mut along = true;
        for watch in &w.watches {
            let Some(watched) = schema.model(&watch.model) else {
                continue;
            };
            let fields: Vec<&str> = match &watch.fields {
                Some(f) => f.iter().map(String::as_str).collect(),
                None => watched.fields.keys().map(String::as_str).collect(),
            };
            for f in fields {
                let n = self.field(schema, &watched.name, f);
                self.edge(n, me, true);
            }
            along &= follows_deps(&w.model, watch);
        }
        // A payload of its own writes nothing to the data model; a resync of a model without
        // an actuator runs nothing.
        if matches!(w.on_change, OnChange::Resync) && svc.is_actuated(&w.model) {
            let run = self.actuate(&w.model);
            self.edge(me, run, along);
        }
    }

    fn policy(&mut self, schema: &Schema, i: usize, p: &Policy) {
        let Some(source) = schema.model(&p.model) else {
            return;
        };
        let me = self.node(
            Key::Policy(i),
            || format!("policy {}", p.name),
            Some((p.origin.clone(), p.converges)),
        );
        for f in source.fields.values().filter(|f| !f.feedback) {
            let n = self.field(schema, &source.name, &f.name);
            self.edge(n, me, true);
        }
        for a in p.on_create.iter().chain(p.on_update.iter().flatten()) {
            // A delete never brings an object back: it starts nothing that could come round.
            let Action::Ensure(e) = a else { continue };
            let Some(target) = schema.model(&e.model) else {
                continue;
            };
            let mut written: Vec<&str> = e.fields.iter().map(|(f, _)| f.as_str()).collect();
            // An ensure may create its object: its key is written, whatever the fields say.
            if target.fields.contains_key(&target.key) {
                written.push(&target.key);
            }
            for f in written {
                let n = self.field(schema, &target.name, f);
                // The objects a policy writes are whatever its keys say: no dependency order.
                self.edge(me, n, false);
            }
        }
    }

    /// Every loop not accepted by a `converges: true` on it: one path per group of nodes
    /// that reach each other, through an edge that does not follow dependencies.
    pub fn loops(&self) -> Vec<Loop> {
        // A node marked as settling breaks every cycle through it: leave it out.
        let sub = self.graph.filter_map(
            |i, n| (!n.step.as_ref().is_some_and(|(_, c)| *c)).then_some(i),
            |_, e| Some(*e),
        );
        let mut out = Vec::new();
        for scc in tarjan_scc(&sub) {
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let free = sub.edge_references().find(|e| {
                !e.weight().along_deps
                    && members.contains(&e.source())
                    && members.contains(&e.target())
            });
            let Some(free) = free else { continue };
            let (u, v) = (free.source(), free.target());
            // u -> v -> ... -> u (or u -> u), in the sub-graph's indices, then the full
            // graph's.
            let mut cycle: Vec<NodeIndex> = vec![u, v];
            if u != v {
                let Some(back) = shortest(&sub, &members, v, u) else {
                    continue;
                };
                cycle.extend(back);
            }
            let cycle: Vec<NodeIndex> = cycle.iter().map(|i| sub[*i]).collect();
            out.push(self.describe(&cycle));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// A cycle (first node repeated last) as a [`Loop`], starting at a field so it reads
    /// as "this change leads back to itself".
    fn describe(&self, cycle: &[NodeIndex]) -> Loop {
        let ring = &cycle[..cycle.len().saturating_sub(1)];
        let start = ring
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(self.graph[**i].key, Key::Field { .. }))
            .min_by(|a, b| self.graph[*a.1].label.cmp(&self.graph[*b.1].label))
            .map_or(0, |(n, _)| n);
        let mut order: Vec<NodeIndex> = ring[start..]
            .iter()
            .chain(&ring[..start])
            .copied()
            .collect();
        if let Some(first) = order.first().copied() {
            order.push(first);
        }
        let mut path = Vec::new();
        for (n, i) in order.iter().enumerate() {
            let node = &self.graph[*i];
            let label = match &node.key {
                Key::Actuate(m) => {
                    let after_watcher =
                        n > 0 && matches!(self.graph[order[n - 1]].key, Key::Watcher(_));
                    if after_watcher {
                        format!("{m} resync")
                    } else {
                        format!("{m} actuate")
                    }
                }
                _ => node.label.clone(),
            };
            path.push(label);
        }
        // Point at a policy if there is one (it is what turns the cycle into a loop), else
        // at a watcher.
        let steps = || order.iter().map(|i| &self.graph[*i]);
        let at = steps()
            .find(|n| matches!(n.key, Key::Policy(_)))
            .or_else(|| steps().find(|n| matches!(n.key, Key::Watcher(_))))
            .and_then(|n| n.step.as_ref().map(|(o, _)| o.clone()));
        Loop { path, at }
    }
}

/// Whether every hop of a watch's `via` goes from the watching model toward what it depends
/// on: the watched object's change then reaches only objects depending on it.
fn follows_deps(from: &str, w: &Watch) -> bool {
    let mut at = from;
    for hop in &w.via {
        if hop.from != at {
            return false;
        }
        at = &hop.to;
    }
    true
}

/// The nodes after `from` on a shortest path from `from` to another node `to` within
/// `members`, `to` included (`[to]` when an edge goes straight there).
fn shortest<N>(
    g: &DiGraph<N, Edge>,
    members: &BTreeSet<NodeIndex>,
    from: NodeIndex,
    to: NodeIndex,
) -> Option<Vec<NodeIndex>> {
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        for next in g.neighbors(n) {
            if !members.contains(&next) || next == from || prev.contains_key(&next) {
                continue;
            }
            prev.insert(next, n);
            if next == to {
                let mut path = vec![to];
                let mut at = to;
                while let Some(p) = prev.get(&at).copied() {
                    if p == from {
                        break;
                    }
                    path.push(p);
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(next);
        }
    }
    None
}

/// Every loop of `svc` as an error diagnostic at a watcher or policy on it (SPEC §15).
pub fn check(svc: &Service) -> Diagnostics {
    Diagnostics(
        RwGraph::build(svc)
            .loops()
            .iter()
            .map(Loop::diagnostic)
            .collect(),
    )
}

/// What a [`StepEdge`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Watch,
    Ensure,
    Delete,
}

/// A watcher or policy as an edge between models, in the direction changes flow: from the
/// watched model to the watching one, from a policy's source to its target. What `graph`
/// draws besides the dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEdge {
    pub kind: StepKind,
    pub from: String,
    pub to: String,
    /// `watch Instance.ip via instance`, `policy ensures Interface`.
    pub label: String,
    /// `stepdefs/<file>`.
    pub file: String,
    /// A watcher that runs a payload of its own rather than a resync.
    pub payload: bool,
    pub converges: bool,
}

impl StepEdge {
    /// The line `graph` prints: `Fabric <- watch Instance.ip via instance (stepdefs/w.yaml)`,
    /// `Network -> policy ensures Interface (stepdefs/network-policy.yaml)`.
    pub fn line(&self) -> String {
        let mut notes = vec![self.file.clone()];
        if self.payload {
            notes.push("runs its own payload".to_owned());
        }
        if self.converges {
            notes.push("converges: true".to_owned());
        }
        let notes = notes.join(", ");
        match self.kind {
            StepKind::Watch => format!("{} <- {} ({notes})", self.to, self.label),
            StepKind::Ensure | StepKind::Delete => {
                format!("{} -> {} ({notes})", self.from, self.label)
            }
        }
    }
}

/// Every watch of every watcher and every target of every policy, in file order, once each.
pub fn step_edges(svc: &Service) -> Vec<StepEdge> {
    let mut out: Vec<StepEdge> = Vec::new();
    let mut push = |e: StepEdge| {
        if !out.contains(&e) {
            out.push(e);
        }
    };
    for w in &svc.stepdefs.watchers {
        for watch in &w.watches {
            let what = match watch.fields.as_deref() {
                None => watch.model.clone(),
                Some([one]) => format!("{}.{one}", watch.model),
                Some(many) => format!("{}.{{{}}}", watch.model, many.join(",")),
            };
            push(StepEdge {
                kind: StepKind::Watch,
                from: watch.model.clone(),
                to: w.model.clone(),
                label: format!("watch {what} via {}", watch.via_text()),
                file: w.name.clone(),
                payload: matches!(w.on_change, OnChange::Payload(_)),
                converges: w.converges,
            });
        }
    }
    for p in &svc.stepdefs.policies {
        for a in p.on_create.iter().chain(p.on_update.iter().flatten()) {
            let (kind, target) = match a {
                Action::Ensure(e) => (StepKind::Ensure, &e.model),
                Action::Delete { model, .. } => (StepKind::Delete, model),
            };
            let verb = if kind == StepKind::Ensure {
                "ensures"
            } else {
                "deletes"
            };
            push(StepEdge {
                kind,
                from: p.model.clone(),
                to: target.clone(),
                label: format!("policy {verb} {target}"),
                file: p.name.clone(),
                payload: false,
                converges: p.converges,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "models:
  A:
    fields:
      name: string
      b: string
      peer: string
      state: {type: string, feedback: true}
  B:
    fields:
      name: string
      a: string
  Site:
    fields:
      name: string
      addr: {type: string, feedback: true}
  Slice:
    fields:
      name: string
      site: {type: ref, to: Site}
      ports: {type: refs, to: Port}
      slice_id: {type: string, feedback: true}
  Port:
    fields:
      name: string
      number: int
  Node:
    fields:
      name: string
      parent: {type: ref, to: Node}
      ip: {type: string, feedback: true}
";

    const POLICY_A: &str = r#"kind: Policy
model: A
on_create:
  - ensure: {model: B, key: "{{ object.name }}", fields: {a: "{{ object.name }}"}}
"#;
    const POLICY_B: &str = r#"kind: Policy
model: B
on_create:
  - ensure: {model: A, key: "{{ object.name }}", fields: {b: "{{ object.name }}"}}
"#;

    fn actuator(model: &str, attrs: &str, feedback: &str) -> String {
        format!(
            "kind: Actuator\nmodel: {model}\nattributes: {{{attrs}}}\nsync:\n  rest: {{method: PUT, url: \"http://x/{{{{ object.name }}}}\"}}\ndelete:\n  rest: {{method: DELETE, url: \"http://x/{{{{ object.name }}}}\"}}\nfeedback: {{{feedback}}}\n"
        )
    }

    /// A service with `SCHEMA` and these stepdefs, loaded as every command loads it.
    fn service(files: &[(&str, &str)]) -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("stepsync.yaml", "name: t\n");
        write("schemas/models.yaml", SCHEMA);
        for (rel, text) in files {
            write(rel, text);
        }
        let svc = match Service::load(dir.path()) {
            Ok(s) => s,
            Err(e) => panic!("the test service loads: {e}"),
        };
        (dir, svc)
    }

    fn messages(svc: &Service) -> Vec<String> {
        RwGraph::build(svc)
            .loops()
            .iter()
            .map(Loop::message)
            .collect()
    }

    impl RwGraph {
        fn has_edge(&self, from: &str, to: &str) -> bool {
            self.graph
                .edge_references()
                .any(|e| self.graph[e.source()].label == from && self.graph[e.target()].label == to)
        }
    }

    #[test]
    fn a_policy_ping_pong_is_a_loop_located_at_a_policy() {
        let (_d, svc) = service(&[("stepdefs/a.yaml", POLICY_A), ("stepdefs/b.yaml", POLICY_B)]);
        let loops = RwGraph::build(&svc).loops();
        assert_eq!(loops.len(), 1, "{loops:?}");
        assert_eq!(
            loops[0].message(),
            "loop: A.name -> policy stepdefs/a.yaml -> B.a -> policy stepdefs/b.yaml -> A.name"
        );
        let at = loops[0].at.as_ref().unwrap();
        assert!(at.file.ends_with("stepdefs/a.yaml"), "{at:?}");
        assert_eq!(at.pos.map(|p| (p.line, p.col)), Some((1, 7)));
        let d = loops[0].diagnostic();
        assert!(d.hint.unwrap().contains("converges: true"));
        assert_eq!(check(&svc).0.len(), 1);
    }

    #[test]
    fn converges_on_one_step_of_the_loop_accepts_it() {
        let a = format!("{POLICY_A}converges: true\n");
        let (_d, svc) = service(&[("stepdefs/a.yaml", &a), ("stepdefs/b.yaml", POLICY_B)]);
        assert!(messages(&svc).is_empty());
    }

    #[test]
    fn a_policy_ensuring_its_own_model_loops() {
        let p = r#"kind: Policy
model: A
on_create:
  - ensure: {model: A, key: "{{ object.name }}-next"}
"#;
        let (_d, svc) = service(&[("stepdefs/p.yaml", p)]);
        assert_eq!(
            messages(&svc),
            ["loop: A.name -> policy stepdefs/p.yaml -> A.name"]
        );
    }

    #[test]
    fn every_separate_loop_is_reported() {
        let p = r#"kind: Policy
model: Port
on_create:
  - ensure: {model: Port, key: "{{ object.name }}-next", fields: {number: 1}}
"#;
        let (_d, svc) = service(&[
            ("stepdefs/a.yaml", POLICY_A),
            ("stepdefs/b.yaml", POLICY_B),
            ("stepdefs/p.yaml", p),
        ]);
        assert_eq!(messages(&svc).len(), 2, "{:?}", messages(&svc));
    }

    #[test]
    fn a_policy_writing_a_model_that_writes_nothing_back_is_no_loop() {
        let (_d, svc) = service(&[
            ("stepdefs/a.yaml", POLICY_A),
            (
                "stepdefs/b.yaml",
                &actuator("B", "n: \"{{ object.a }}\"", ""),
            ),
        ]);
        assert!(messages(&svc).is_empty());
    }

    #[test]
    fn actuators_read_through_refs_and_write_their_feedback() {
        let act = actuator(
            "Slice",
            "site: \"{{ object.site.addr }}\", ports: \"{% for p in object.ports %}{{ p }}{% endfor %}\"",
            "slice_id: \"{{ result.body.id }}\"",
        );
        let (_d, svc) = service(&[("stepdefs/slice.yaml", &act)]);
        let g = RwGraph::build(&svc);
        // Its own declarative fields, and the other objects' fields it reads.
        assert!(g.has_edge("Slice.name", "Slice"));
        assert!(g.has_edge("Slice.site", "Slice"));
        assert!(g.has_edge("Site.addr (feedback of Site)", "Slice"));
        // A loop over `refs` may read any field of the objects.
        assert!(g.has_edge("Port.number", "Slice"));
        assert!(g.has_edge("Slice", "Slice.slice_id (feedback of Slice)"));
        // Writing its own feedback does not make it pending.
        assert!(!g.has_edge("Slice.slice_id (feedback of Slice)", "Slice"));
        assert!(!g.has_edge("Site.name", "Slice"));
    }

    #[test]
    fn a_tree_watching_its_parent_is_no_loop() {
        // n1 reacts to its parent's feedback, and its children to n1's: it ends at the
        // leaves, as objects cannot refer to each other in a ring.
        let act = actuator(
            "Node",
            "up: \"{{ object.parent.ip }}\"",
            "ip: \"{{ result.body.ip }}\"",
        );
        let w =
            "kind: Watcher\nmodel: Node\nwatches:\n  - {model: Node, via: parent, fields: [ip]}\n";
        let (_d, svc) = service(&[("stepdefs/node.yaml", &act), ("stepdefs/w.yaml", w)]);
        let g = RwGraph::build(&svc);
        assert!(g.has_edge("Node.ip (feedback of Node)", "watcher stepdefs/w.yaml"));
        assert!(g.has_edge("watcher stepdefs/w.yaml", "Node"));
        assert!(
            g.has_edge("Node.ip (feedback of Node)", "Node"),
            "through the ref"
        );
        assert!(g.loops().is_empty(), "{:?}", g.loops());
    }

    #[test]
    fn a_watcher_on_a_field_nobody_writes_is_no_loop() {
        let w =
            "kind: Watcher\nmodel: Slice\nwatches:\n  - {model: Site, via: site, fields: [name]}\n";
        let (_d, svc) = service(&[
            (
                "stepdefs/slice.yaml",
                &actuator("Slice", "", "slice_id: \"x\""),
            ),
            ("stepdefs/w.yaml", w),
        ]);
        assert!(messages(&svc).is_empty());
    }

    #[test]
    fn a_payload_watcher_writes_nothing() {
        let w = "kind: Watcher\nmodel: Slice\nwatches:\n  - {model: Site, via: site}\non_change: {rest: {method: POST, url: \"http://x/\"}}\n";
        let (_d, svc) = service(&[
            (
                "stepdefs/slice.yaml",
                &actuator("Slice", "", "slice_id: \"x\""),
            ),
            ("stepdefs/w.yaml", w),
        ]);
        let g = RwGraph::build(&svc);
        assert!(g.has_edge("Site.addr (feedback of Site)", "watcher stepdefs/w.yaml"));
        assert!(!g.has_edge("watcher stepdefs/w.yaml", "Slice"));
    }

    #[test]
    fn step_edges_name_watches_and_policy_targets() {
        let w =
            "kind: Watcher\nmodel: Slice\nwatches:\n  - {model: Site, via: site, fields: [addr]}\n";
        let (_d, svc) = service(&[
            (
                "stepdefs/slice.yaml",
                &actuator("Slice", "", "slice_id: \"x\""),
            ),
            ("stepdefs/w.yaml", w),
            ("stepdefs/a.yaml", POLICY_A),
        ]);
        let lines: Vec<String> = step_edges(&svc).iter().map(StepEdge::line).collect();
        assert_eq!(
            lines,
            [
                "Slice <- watch Site.addr via site (stepdefs/w.yaml)",
                "A -> policy ensures B (stepdefs/a.yaml)",
            ]
        );
    }

    /// The ring of SPEC §15's example, built by hand: two watchers whose `via` would go
    /// against dependencies (which the schema cannot express today: it would need refs both
    /// ways), so each resync reaches objects that do not depend on the changed one.
    fn ping_pong(along_deps: bool) -> RwGraph {
        let mut g = RwGraph {
            graph: DiGraph::new(),
            index: HashMap::new(),
        };
        let origin = |f: &str| Origin {
            file: f.into(),
            pos: Some(crate::diag::Pos { line: 1, col: 7 }),
            text: None,
        };
        let field = |g: &mut RwGraph, m: &str, f: &str| {
            let key = Key::Field {
                model: m.to_owned(),
                field: f.to_owned(),
            };
            g.node(key, || format!("{m}.{f} (feedback of {m})"), None)
        };
        let fabric_ip = field(&mut g, "Fabric", "ip");
        let instance_ip = field(&mut g, "Instance", "fabric_ip");
        let w = g.node(
            Key::Watcher(0),
            || "watcher stepdefs/w.yaml".to_owned(),
            Some((origin("stepdefs/w.yaml"), false)),
        );
        let v = g.node(
            Key::Watcher(1),
            || "watcher stepdefs/v.yaml".to_owned(),
            Some((origin("stepdefs/v.yaml"), false)),
        );
        let instance = g.actuate("Instance");
        let fabric = g.actuate("Fabric");
        g.edge(fabric_ip, w, true);
        g.edge(w, instance, along_deps);
        g.edge(instance, instance_ip, true);
        g.edge(instance_ip, v, true);
        g.edge(v, fabric, along_deps);
        g.edge(fabric, fabric_ip, true);
        g
    }

    #[test]
    fn a_watcher_ring_against_dependencies_reads_as_in_the_spec() {
        let loops = ping_pong(false).loops();
        assert_eq!(loops.len(), 1, "{loops:?}");
        assert_eq!(
            loops[0].message(),
            "loop: Fabric.ip (feedback of Fabric) -> watcher stepdefs/w.yaml -> Instance resync \
             -> Instance.fabric_ip (feedback of Instance) -> watcher stepdefs/v.yaml -> Fabric resync \
             -> Fabric.ip (feedback of Fabric)"
        );
        assert_eq!(
            loops[0].at.as_ref().map(Origin::short).as_deref(),
            Some("stepdefs/w.yaml:1:7")
        );
        assert!(
            ping_pong(true).loops().is_empty(),
            "along dependencies it ends"
        );
    }

    #[test]
    fn a_via_against_dependencies_is_told_apart() {
        let dep = |from: &str, to: &str| crate::model::Dep {
            from: from.to_owned(),
            field: "x".to_owned(),
            to: to.to_owned(),
            to_field: "name".to_owned(),
            many: false,
            origin: Origin {
                file: "schemas/m.yaml".into(),
                pos: None,
                text: None,
            },
        };
        let watch = |via| Watch {
            model: "C".to_owned(),
            via,
            fields: None,
        };
        assert!(follows_deps(
            "A",
            &watch(vec![dep("A", "B"), dep("B", "C")])
        ));
        assert!(!follows_deps("A", &watch(vec![dep("B", "A")])));
    }

    #[test]
    fn a_service_without_steps_has_no_loops_and_no_step_edges() {
        let (_d, svc) = service(&[(
            "stepdefs/slice.yaml",
            &actuator("Slice", "", "slice_id: \"x\""),
        )]);
        assert!(messages(&svc).is_empty());
        assert!(step_edges(&svc).is_empty());
    }
}
