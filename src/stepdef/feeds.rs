//! The typed, checked form of the bottom-up steps (SPEC §13, §14): pull steps and event
//! steps, both feeding the data model from the backend's side.

use std::time::Duration;

use super::Request;
use super::check::Cx;
use super::spec::{EventStepSpec, PullStepSpec};
use crate::diag::{Origin, expected_hint};
use crate::model::{Model, Schema};
use crate::template::{TValue, Tmpl};
use crate::yaml::{Node, Spanned};
use indexmap::IndexMap;

/// How a listed item or a message becomes a write: the object's model and key, and the
/// declarative and feedback fields it sets.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(crate) model: String,
    pub(crate) key: Tmpl,
    pub(crate) fields: Vec<(String, TValue)>,
    pub(crate) feedback: Vec<(String, TValue)>,
}

/// A pull step: lists a backend's objects every `interval` and writes them.
#[derive(Debug)]
pub(crate) struct PullStep {
    pub(crate) name: String,
    pub(crate) interval: Duration,
    pub(crate) request: Request,
    /// A JSONPath to the next page's URL.
    pub(crate) next: Option<String>,
    /// A JSONPath to each page's items.
    pub(crate) items: String,
    pub(crate) map: Mapping,
    pub(crate) prune: bool,
    pub(crate) origin: Origin,
}

impl PullStep {
    /// The owner of the objects this step created (SPEC §13).
    pub(crate) fn owner(&self) -> String {
        format!("pull/{}", self.name)
    }
}

/// How a message's payload becomes `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decode {
    Json,
    Yaml,
    Text,
}

/// An event step: each message of `topic` becomes a write.
#[derive(Debug)]
pub(crate) struct EventStep {
    pub(crate) name: String,
    pub(crate) topic: String,
    pub(crate) decode: Decode,
    /// `upsert` (none), `delete` or `ignore`.
    pub(crate) action: Option<Tmpl>,
    pub(crate) map: Mapping,
    pub(crate) origin: Origin,
}

impl EventStep {
    pub(crate) fn owner(&self) -> String {
        format!("event/{}", self.name)
    }
}

impl Cx<'_> {
    pub(super) fn pull_step(&mut self, spec: PullStepSpec, schema: &Schema) -> Option<PullStep> {
        let before = self.diags.0.len();
        self.step_name(&spec.name);
        if spec.interval.0.is_zero() {
            self.error(
                self.src
                    .diag_at("`interval` must be more than 0s", &spec.kind)
                    .with_hint("e.g. `interval: 1m`"),
            );
        }
        let request = self.request(&spec.request.value, &spec.request, None);
        let next = spec.next.as_ref().and_then(|n| self.jsonpath(&n.jsonpath));
        let items = self.jsonpath(&spec.items.jsonpath);
        let map = self.mapping(schema, &spec.model, &spec.key, &spec.fields, &spec.feedback);
        if self.diags.0.len() > before {
            return None;
        }
        Some(PullStep {
            name: spec.name.value,
            interval: spec.interval.0,
            request: request?,
            next,
            items: items?,
            map: map?,
            prune: spec.prune,
            origin: self.src.origin(&spec.kind),
        })
    }

    pub(super) fn event_step(&mut self, spec: EventStepSpec, schema: &Schema) -> Option<EventStep> {
        let before = self.diags.0.len();
        self.step_name(&spec.name);
        if spec.topic.value.trim().is_empty() {
            self.error(self.src.diag_at("`topic` must not be empty", &spec.topic));
        }
        let decode = match spec.decode.as_ref().map(|d| d.value.as_str()) {
            None | Some("json") => Decode::Json,
            Some("yaml") => Decode::Yaml,
            Some("text") => Decode::Text,
            Some(other) => {
                let at = spec
                    .decode
                    .as_ref()
                    .map(|d| self.src.diag_at(format!("unknown decode `{other}`"), d));
                if let Some(d) = at {
                    self.error(d.with_hint("`json`, `yaml` or `text`"));
                }
                Decode::Json
            }
        };
        let action = spec.action.as_ref().and_then(|a| self.tmpl(a));
        let map = self.mapping(schema, &spec.model, &spec.key, &spec.fields, &spec.feedback);
        if self.diags.0.len() > before {
            return None;
        }
        Some(EventStep {
            name: spec.name.value,
            topic: spec.topic.value,
            decode,
            action,
            map: map?,
            origin: self.src.origin(&spec.kind),
        })
    }

    fn step_name(&mut self, name: &Spanned<String>) {
        let ok = !name.value.is_empty()
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            self.error(
                self.src
                    .diag_at(format!("`{}` is not a step name", name.value), name)
                    .with_hint("letters, digits, `_`, `.` and `-`"),
            );
        }
    }

    fn mapping(
        &mut self,
        schema: &Schema,
        model: &Spanned<String>,
        key: &Spanned<String>,
        fields: &IndexMap<Spanned<String>, Spanned<Node>>,
        feedback: &IndexMap<Spanned<String>, Spanned<Node>>,
    ) -> Option<Mapping> {
        let Some(m) = schema.model(&model.value) else {
            let hint = expected_hint(&model.value, &schema.model_names());
            self.error(
                self.src
                    .diag_at(format!("unknown model `{}`", model.value), model)
                    .with_hint(hint),
            );
            return None;
        };
        let key = self.tmpl(key);
        let fields = self.mapped(m, fields, false);
        let feedback = self.mapped(m, feedback, true);
        Some(Mapping {
            model: m.name.clone(),
            key: key?,
            fields,
            feedback,
        })
    }

    /// The templates of `map`, each a declarative field of `m` (or a feedback one).
    fn mapped(
        &mut self,
        m: &Model,
        map: &IndexMap<Spanned<String>, Spanned<Node>>,
        feedback: bool,
    ) -> Vec<(String, TValue)> {
        let mut out = Vec::new();
        for (k, v) in map {
            match m.fields.get(&k.value) {
                Some(f) if f.feedback != feedback => {
                    let (is, put) = if f.feedback {
                        ("a feedback field", "under `feedback:`")
                    } else {
                        ("a declarative field", "under `fields:`")
                    };
                    let msg = format!("`{}` is {is} of {}", k.value, m.name);
                    self.error(
                        self.src
                            .diag_at(msg, k)
                            .with_hint(format!("write it {put}")),
                    );
                }
                Some(_) => {
                    if let Some(t) = self.value(v) {
                        out.push((k.value.clone(), t));
                    }
                }
                None => {
                    let msg = format!("`{}` is not a field of {}", k.value, m.name);
                    self.error(
                        self.src
                            .diag_at(msg, k)
                            .with_hint(expected_hint(&k.value, &m.field_names())),
                    );
                }
            }
        }
        out
    }
}
