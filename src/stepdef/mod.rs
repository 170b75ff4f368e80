//! Actuator step definitions (`stepdefs/*.yaml`, SPEC §6): parsed once into typed
//! structures whose templates are already compiled.
//!
//! `spec.rs` is the file format (and the JSON Schema derived from it), `check.rs` turns it
//! into the typed [`Actuator`]s of `actuator.rs`.

mod actuator;
mod check;
mod feeds;
mod spec;
mod steps;

use std::path::Path;

use indexmap::IndexMap;

// `Rest` and its parts are public: `payload::rest::render` takes them.
pub(crate) use actuator::{Actuator, Feedback, Payload, PayloadKind, PlaybookRef};
pub use actuator::{Auth, Request, Rest};
use check::Cx;
pub(crate) use feeds::{Decode, EventStep, Mapping, PullStep};
pub(crate) use spec::{EventStepSpec, PolicySpec, PullStepSpec, StepdefSpec, WatcherSpec};
pub(crate) use steps::{Action, OnChange, Policy, Watch, Watcher};

use crate::config::in_dir;
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::schema::yaml_files;
use crate::model::{ModelGraph, Schema};
use crate::template::Templates;
use crate::yaml::Source;

pub(crate) const STEPDEFS_DIR: &str = "stepdefs";

/// Every step of a service — actuators, watchers, policies — with the templates they
/// compiled.
pub struct Stepdefs {
    pub(crate) actuators: IndexMap<String, Actuator>,
    pub(crate) watchers: Vec<Watcher>,
    pub(crate) policies: Vec<Policy>,
    pub(crate) pulls: Vec<PullStep>,
    pub(crate) events: Vec<EventStep>,
    pub(crate) templates: Templates,
}

impl Stepdefs {
    pub(crate) fn actuator(&self, model: &str) -> Option<&Actuator> {
        self.actuators.get(model)
    }

    pub(crate) fn watcher(&self, name: &str) -> Option<&Watcher> {
        self.watchers.iter().find(|w| w.name == name)
    }

    /// The policies of objects of `model`.
    pub(crate) fn policies_of<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Policy> {
        self.policies.iter().filter(move |p| p.model == model)
    }

    /// What the store must note on write for these watchers.
    pub(crate) fn triggers(&self) -> crate::store::Triggers {
        let mut t = crate::store::Triggers::default();
        for w in &self.watchers {
            for watch in &w.watches {
                t.add(&watch.model, &w.name, watch.fields.as_deref());
            }
        }
        t
    }

    /// Reads every file of `stepdefs/`, reporting every problem found.
    pub fn load(
        dir: &Path,
        schema: &Schema,
        graph: &ModelGraph,
        templates: Templates,
    ) -> Result<Stepdefs, Diagnostics> {
        let (stepdefs, diags) = Stepdefs::load_partial(dir, schema, graph, templates);
        diags.into_result()?;
        Ok(stepdefs)
    }

    /// Every stepdef that loads, and the problems of those that do not: `validate` checks
    /// the good ones further instead of stopping at the first bad file.
    pub fn load_partial(
        dir: &Path,
        schema: &Schema,
        graph: &ModelGraph,
        mut templates: Templates,
    ) -> (Stepdefs, Diagnostics) {
        let root = in_dir(dir, Path::new(STEPDEFS_DIR));
        let mut diags = Diagnostics::default();
        let mut actuators: IndexMap<String, Actuator> = IndexMap::new();
        let mut watchers = Vec::new();
        let mut policies = Vec::new();
        let mut pulls: Vec<PullStep> = Vec::new();
        let mut events: Vec<EventStep> = Vec::new();
        let files = if root.is_dir() {
            match yaml_files(&root) {
                Ok(f) => f,
                Err(e) => {
                    diags.push(Diagnostic::in_file(format!("cannot list: {e}"), &root));
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        for file in files {
            let src = match Source::read(&file) {
                Ok(s) => s,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            if src.is_blank() {
                continue;
            }
            let kind: spec::KindSpec = match src.parse() {
                Ok(s) => s,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            let name = steps::step_name(&root, &file);
            let mut cx = Cx {
                src: &src,
                templates: &mut templates,
                diags: &mut diags,
                rest_defaults: None,
            };
            match kind.kind.value.as_str() {
                "Watcher" => {
                    match src.parse::<WatcherSpec>() {
                        Ok(spec) => watchers.extend(cx.watcher(spec, schema, graph, name)),
                        Err(d) => cx.diags.push(d),
                    }
                    continue;
                }
                "Policy" => {
                    match src.parse::<PolicySpec>() {
                        Ok(spec) => policies.extend(cx.policy(spec, schema, name)),
                        Err(d) => cx.diags.push(d),
                    }
                    continue;
                }
                "PullStep" => {
                    match src.parse::<PullStepSpec>() {
                        Ok(spec) => {
                            if let Some(p) = cx.pull_step(spec, schema) {
                                match pulls.iter().find(|q| q.name == p.name) {
                                    Some(q) => cx.diags.push(p.origin.diag(format!(
                                        "a second pull step named `{}` (the first is in {})",
                                        p.name,
                                        q.origin.file.display()
                                    ))),
                                    None => pulls.push(p),
                                }
                            }
                        }
                        Err(d) => cx.diags.push(d),
                    }
                    continue;
                }
                "EventStep" => {
                    match src.parse::<EventStepSpec>() {
                        Ok(spec) => {
                            if let Some(e) = cx.event_step(spec, schema) {
                                match events.iter().find(|q| q.name == e.name) {
                                    Some(q) => cx.diags.push(e.origin.diag(format!(
                                        "a second event step named `{}` (the first is in {})",
                                        e.name,
                                        q.origin.file.display()
                                    ))),
                                    None => events.push(e),
                                }
                            }
                        }
                        Err(d) => cx.diags.push(d),
                    }
                    continue;
                }
                _ => {}
            }
            let spec: StepdefSpec = match src.parse() {
                Ok(s) => s,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            let mut cx = Cx {
                src: &src,
                templates: &mut templates,
                diags: &mut diags,
                rest_defaults: None,
            };
            let model_at = src.origin(&spec.model);
            if let Some(a) = cx.actuator(spec, schema) {
                if let Some(prev) = actuators.get(&a.model) {
                    diags.push(
                        model_at
                            .diag(format!(
                                "a second actuator for model `{}` (the first is in {})",
                                a.model,
                                prev.file.display()
                            ))
                            .with_hint("each model has exactly one actuator"),
                    );
                } else {
                    actuators.insert(a.model.clone(), a);
                }
            }
        }
        (
            Stepdefs {
                actuators,
                watchers,
                policies,
                pulls,
                events,
                templates,
            },
            diags,
        )
    }
}
