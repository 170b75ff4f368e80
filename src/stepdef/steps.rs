//! The typed, checked form of the other two actors (SPEC §1): watchers (§11) and model
//! policies (§12), and the checks that turn their file formats into them.

use std::path::PathBuf;

use super::Payload;
use super::check::Cx;
use super::spec::{ActionSpec, OnChangeSpec, PolicySpec, TargetSpec, WatcherSpec};
use crate::diag::{Origin, expected_hint};
use crate::model::deps::Dep;
use crate::model::{ModelGraph, Schema};
use crate::template::{TValue, Tmpl};
use crate::yaml::Spanned;

/// A watcher: objects of `model` react when an object they reach through `via` changes.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// `stepdefs/<file>`: how messages, `graph` and loop reports name it.
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) watches: Vec<Watch>,
    pub(crate) on_change: OnChange,
    pub(crate) converges: bool,
    pub(crate) origin: Origin,
}

/// One watched model, reached from the watching model through `via`.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    pub(crate) model: String,
    /// The hops from the watching model to the watched one, in that order.
    pub(crate) via: Vec<Dep>,
    /// The watched fields; `None`: any field.
    pub(crate) fields: Option<Vec<String>>,
}

impl Watch {
    /// `instance.node`, as the file wrote it.
    pub(crate) fn via_text(&self) -> String {
        self.via
            .iter()
            .map(|d| d.field.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Whether a change of these fields fires this watch.
    pub(crate) fn fires_on(&self, changed: &[String]) -> bool {
        match &self.fields {
            None => !changed.is_empty(),
            Some(f) => changed.iter().any(|c| f.contains(c)),
        }
    }
}

#[derive(Debug)]
pub(crate) enum OnChange {
    /// The linked objects become pending; their actuator runs as usual.
    Resync,
    /// A payload of the watcher's own, once per linked object and change.
    Payload(Box<Payload>),
}

/// A model policy on objects of `model`.
#[derive(Debug)]
pub(crate) struct Policy {
    /// `stepdefs/<file>`.
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) on_create: Vec<Action>,
    /// `None`: the `on_create` actions (ensures are idempotent).
    pub(crate) on_update: Option<Vec<Action>>,
    /// `on_delete: keep`: the ensured objects outlive their source.
    pub(crate) keep_on_delete: bool,
    pub(crate) converges: bool,
    pub(crate) origin: Origin,
}

impl Policy {
    /// The actions for a source being created, or changed.
    pub(crate) fn actions(&self, creating: bool) -> &[Action] {
        match &self.on_update {
            Some(u) if !creating => u,
            _ => &self.on_create,
        }
    }

    /// Every model this policy writes.
    pub(crate) fn targets(&self) -> impl Iterator<Item = &str> {
        self.on_create
            .iter()
            .chain(self.on_update.iter().flatten())
            .map(|a| match a {
                Action::Ensure(e) => e.model.as_str(),
                Action::Delete { model, .. } => model.as_str(),
            })
    }
}

#[derive(Debug)]
pub(crate) enum Action {
    Ensure(Ensure),
    Delete { model: String, key: Tmpl },
}

/// Create or update, by key, one object per item of `each` (one when there is no loop).
#[derive(Debug)]
pub(crate) struct Ensure {
    pub(crate) model: String,
    pub(crate) key: Tmpl,
    pub(crate) fields: Vec<(String, TValue)>,
    pub(crate) each: Option<TValue>,
}

impl Cx<'_> {
    fn known_model<'s>(
        &mut self,
        schema: &'s Schema,
        name: &Spanned<String>,
    ) -> Option<&'s crate::model::Model> {
        let m = schema.model(&name.value);
        if m.is_none() {
            let hint = expected_hint(&name.value, &schema.model_names());
            self.error(
                self.src
                    .diag_at(format!("unknown model `{}`", name.value), name)
                    .with_hint(hint),
            );
        }
        m
    }

    pub(super) fn watcher(
        &mut self,
        spec: WatcherSpec,
        schema: &Schema,
        graph: &ModelGraph,
        name: String,
    ) -> Option<Watcher> {
        let model = self.known_model(schema, &spec.model)?;
        let before = self.diags.0.len();
        let mut watches = Vec::new();
        match (&spec.watch_degree, spec.watches.is_empty()) {
            (Some(d), false) => {
                self.error(
                    self.src
                        .diag_at("`watches` and `watch_degree` are alternatives; give one", d),
                );
            }
            (Some(d), true) => {
                degree_watches(graph, &model.name, d.value, &mut Vec::new(), &mut watches)
            }
            (None, true) => {
                self.error(
                    self.src
                        .diag_at("a watcher needs `watches:` or `watch_degree:`", &spec.kind),
                );
            }
            (None, false) => {
                for w in &spec.watches {
                    if let Some(w) = self.watch(&w.value, schema, graph, &model.name) {
                        watches.push(w);
                    }
                }
            }
        }
        let on_change = match spec.on_change {
            None => OnChange::Resync,
            Some(oc) => match oc.value {
                OnChangeSpec::Word(w) if w == "resync" => OnChange::Resync,
                OnChangeSpec::Word(w) => {
                    let at = Spanned::new(w.clone(), oc.referenced, oc.defined);
                    self.error(
                        self.src
                            .diag_at(format!("unknown on_change `{w}`"), &at)
                            .with_hint(
                                "`resync`, or a payload: `{rest: {...}}` or `{playbook: FILE}`",
                            ),
                    );
                    return None;
                }
                OnChangeSpec::Payload(p) => {
                    let p = Spanned::new(*p, oc.referenced, oc.defined);
                    OnChange::Payload(Box::new(self.payload(&p, false)?))
                }
            },
        };
        if self.diags.0.len() > before {
            return None;
        }
        Some(Watcher {
            name,
            model: model.name.clone(),
            watches,
            on_change,
            converges: spec.converges,
            origin: self.src.origin(&spec.kind),
        })
    }

    fn watch(
        &mut self,
        w: &super::spec::WatchSpec,
        schema: &Schema,
        graph: &ModelGraph,
        from: &str,
    ) -> Option<Watch> {
        let target = self.known_model(schema, &w.model)?;
        let mut via = Vec::new();
        let mut at = from.to_owned();
        for hop in w.via.value.split('.') {
            let deps = graph.deps_of(&at);
            let Some(dep) = deps.iter().find(|d| d.field == hop) else {
                let names: Vec<&str> = deps.iter().map(|d| d.field.as_str()).collect();
                self.error(
                    self.src
                        .diag_at(
                            format!("`{hop}` is not a ref field or link of {at}"),
                            &w.via,
                        )
                        .with_hint(expected_hint(hop, &names)),
                );
                return None;
            };
            via.push(dep.clone());
            at.clone_from(&dep.to);
        }
        if at != target.name {
            self.error(self.src.diag_at(
                format!(
                    "`via: {}` leads from {from} to {at}, not to {}",
                    w.via.value, target.name
                ),
                &w.via,
            ));
            return None;
        }
        let mut fields = None;
        if let Some(list) = &w.fields {
            let mut names = Vec::new();
            for f in list {
                if target.fields.contains_key(&f.value) {
                    names.push(f.value.clone());
                } else {
                    self.error(
                        self.src
                            .diag_at(
                                format!("`{}` is not a field of {}", f.value, target.name),
                                f,
                            )
                            .with_hint(expected_hint(&f.value, &target.field_names())),
                    );
                }
            }
            fields = Some(names);
        }
        Some(Watch {
            model: target.name.clone(),
            via,
            fields,
        })
    }

    pub(super) fn policy(
        &mut self,
        spec: PolicySpec,
        schema: &Schema,
        name: String,
    ) -> Option<Policy> {
        let model = self.known_model(schema, &spec.model)?;
        let before = self.diags.0.len();
        let on_create = self.actions(&spec.on_create, schema);
        let on_update = spec.on_update.as_ref().map(|a| self.actions(a, schema));
        let keep_on_delete = match &spec.on_delete {
            None => false,
            Some(w) if w.value == "cascade" => false,
            Some(w) if w.value == "keep" => true,
            Some(w) => {
                self.error(
                    self.src
                        .diag_at(format!("unknown on_delete `{}`", w.value), w)
                        .with_hint("`cascade` (the default) or `keep`"),
                );
                false
            }
        };
        if spec.on_create.is_empty() && spec.on_update.as_ref().is_none_or(Vec::is_empty) {
            self.error(self.src.diag_at(
                "a policy needs `on_create:` or `on_update:` actions",
                &spec.kind,
            ));
        }
        if self.diags.0.len() > before {
            return None;
        }
        Some(Policy {
            name,
            model: model.name.clone(),
            on_create,
            on_update,
            keep_on_delete,
            converges: spec.converges,
            origin: self.src.origin(&spec.kind),
        })
    }

    fn actions(&mut self, specs: &[Spanned<ActionSpec>], schema: &Schema) -> Vec<Action> {
        let mut out = Vec::new();
        for a in specs {
            match (&a.value.ensure, &a.value.delete) {
                (Some(e), None) => {
                    let e = &e.value;
                    let Some(target) = self.known_model(schema, &e.model) else {
                        continue;
                    };
                    let mut fields = Vec::new();
                    for (k, v) in &e.fields {
                        match target.fields.get(&k.value) {
                            Some(f) if f.feedback => {
                                let msg = format!(
                                    "`{}` is a feedback field of {}; policies write declarative state only",
                                    k.value, target.name
                                );
                                self.error(self.src.diag_at(msg, k));
                            }
                            Some(_) => {
                                if let Some(t) = self.value(v) {
                                    fields.push((k.value.clone(), t));
                                }
                            }
                            None => {
                                let msg =
                                    format!("`{}` is not a field of {}", k.value, target.name);
                                self.error(
                                    self.src
                                        .diag_at(msg, k)
                                        .with_hint(expected_hint(&k.value, &target.field_names())),
                                );
                            }
                        }
                    }
                    let key = self.tmpl(&e.key);
                    let each = e.each.as_ref().and_then(|n| self.value(n));
                    if let Some(key) = key {
                        out.push(Action::Ensure(Ensure {
                            model: target.name.clone(),
                            key,
                            fields,
                            each,
                        }));
                    }
                }
                (None, Some(d)) => {
                    let TargetSpec { model, key } = &d.value;
                    if let (Some(target), Some(key)) = (
                        self.known_model(schema, model).map(|m| m.name.clone()),
                        self.tmpl(key),
                    ) {
                        out.push(Action::Delete { model: target, key });
                    }
                }
                _ => self.error(
                    self.src
                        .diag_at("an action is `ensure:` or `delete:`, one of them", a),
                ),
            }
        }
        out
    }
}

/// `watch_degree: n` as the watches it stands for: every model reachable from `model` within
/// `n` dependency hops, by each path, all fields.
fn degree_watches(
    graph: &ModelGraph,
    model: &str,
    n: u32,
    path: &mut Vec<Dep>,
    out: &mut Vec<Watch>,
) {
    if n == 0 {
        return;
    }
    for dep in graph.deps_of(model) {
        path.push(dep.clone());
        out.push(Watch {
            model: dep.to.clone(),
            via: path.clone(),
            fields: None,
        });
        // A path through a model twice (a tree's parent, then its parent) reaches nothing
        // the shorter path did not.
        if !path.iter().any(|d| d.from == dep.to) {
            degree_watches(graph, &dep.to, n - 1, path, out);
        }
        path.pop();
    }
}

/// The file name watchers and policies are known by: `stepdefs/<path in stepdefs>`.
pub(super) fn step_name(root: &std::path::Path, file: &std::path::Path) -> String {
    let rel: PathBuf = file
        .strip_prefix(root)
        .map_or_else(|_| file.to_path_buf(), PathBuf::from);
    format!("{}/{}", super::STEPDEFS_DIR, rel.display())
}
