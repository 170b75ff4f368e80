//! Model-level dependencies (SPEC §4.2, §4.3): from `ref`/`refs` fields, `links` and
//! `model-deps.json`, gathered into one petgraph graph that is checked for cycles.

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Diagnostics, Origin, expected_hint};
use crate::model::schema::{FieldType, Schema};
use crate::yaml::{Source, Spanned};

/// "Objects of `from` depend on the object of `to` whose `to_field` equals their `field`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub from: String,
    pub field: String,
    pub to: String,
    pub to_field: String,
    /// The field holds a list of values (a `refs` field).
    pub many: bool,
    pub origin: Origin,
}

/// One dependency edge of one object, as stored: the object's `field` holds `value`, which
/// must equal `to_field` of some `to_model` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub field: String,
    pub to_model: String,
    pub to_field: String,
    pub value: String,
}

/// The text a scalar field value is matched by (keys are text; ints in decimal).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The model dependency graph, cycle-free between distinct models.
#[derive(Debug, Clone, Default)]
pub struct ModelGraph {
    graph: DiGraph<String, ()>,
    deps: IndexMap<String, Vec<Dep>>,
    /// Every model, each after the models it depends on.
    order: Vec<String>,
}

impl ModelGraph {
    /// Collects the dependencies of every model and checks them for cycles.
    pub fn build(schema: &Schema, explicit: Vec<Dep>) -> Result<ModelGraph, Diagnostics> {
        let mut deps: IndexMap<String, Vec<Dep>> = schema
            .models
            .keys()
            .map(|m| (m.clone(), Vec::new()))
            .collect();
        for model in schema.models.values() {
            let list = deps.entry(model.name.clone()).or_default();
            for field in model.fields.values() {
                if let Some(to) = field.ty.target()
                    && let Some(target) = schema.model(to)
                {
                    list.push(Dep {
                        from: model.name.clone(),
                        field: field.name.clone(),
                        to: to.to_owned(),
                        to_field: target.key.clone(),
                        many: matches!(field.ty, FieldType::Refs(_)),
                        origin: field.origin.clone(),
                    });
                }
            }
            for link in &model.links {
                list.push(Dep {
                    from: model.name.clone(),
                    field: link.via.clone(),
                    to: link.to.clone(),
                    to_field: link.field.clone(),
                    many: false,
                    origin: link.origin.clone(),
                });
            }
        }
        for dep in explicit {
            let list = deps.entry(dep.from.clone()).or_default();
            let same =
                |d: &Dep| d.field == dep.field && d.to == dep.to && d.to_field == dep.to_field;
            if !list.iter().any(same) {
                list.push(dep);
            }
        }

        let mut graph = DiGraph::new();
        let index: HashMap<String, NodeIndex> = schema
            .models
            .keys()
            .map(|m| (m.clone(), graph.add_node(m.clone())))
            .collect();
        for (from, list) in &deps {
            for d in list {
                // Every dep was checked to name schema models; `get` keeps that an
                // invariant rather than a panic.
                if let (Some(a), Some(b)) = (index.get(from), index.get(&d.to))
                    && a != b
                {
                    graph.update_edge(*a, *b, ());
                }
            }
        }
        let mut diags = Diagnostics::default();
        // tarjan_scc yields components dependencies-first, which is the run order we want.
        let mut order = Vec::new();
        for comp in tarjan_scc(&graph) {
            if comp.len() > 1 {
                let mut names: Vec<&str> = comp.iter().map(|i| graph[*i].as_str()).collect();
                names.sort_unstable();
                let members: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
                let witness = deps.values().flatten().find(|d| {
                    members.contains(&d.from) && members.contains(&d.to) && d.from != d.to
                });
                let msg = format!("dependency cycle between models: {}", names.join(", "));
                diags.push(match witness {
                    Some(d) => d.origin.diag(msg).with_hint(format!(
                        "{}.{} makes {} depend on {}; a cycle is only allowed within one model",
                        d.from, d.field, d.from, d.to
                    )),
                    None => Diagnostic::error(msg),
                });
            }
            order.extend(comp.iter().map(|i| graph[*i].clone()));
        }
        diags.into_result()?;
        Ok(ModelGraph { graph, deps, order })
    }

    /// The dependency edges of one object of `model` with these declarative fields.
    pub fn edges(&self, model: &str, fields: &Map<String, Value>) -> Vec<Edge> {
        let mut out = Vec::new();
        for dep in self.deps_of(model) {
            let values: Vec<String> = match fields.get(&dep.field) {
                Some(Value::Array(items)) if dep.many => {
                    items.iter().filter_map(scalar_text).collect()
                }
                Some(v) => scalar_text(v).into_iter().collect(),
                None => Vec::new(),
            };
            out.extend(values.into_iter().map(|value| Edge {
                field: dep.field.clone(),
                to_model: dep.to.clone(),
                to_field: dep.to_field.clone(),
                value,
            }));
        }
        out
    }

    /// What objects of `model` depend on.
    pub fn deps_of(&self, model: &str) -> &[Dep] {
        self.deps.get(model).map_or(&[], Vec::as_slice)
    }

    /// Every dependency that points at `model` (including from `model` itself).
    pub fn deps_on(&self, model: &str) -> impl Iterator<Item = &Dep> {
        self.deps.values().flatten().filter(move |d| d.to == model)
    }

    /// Models, each after those it depends on.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The edge list (model, depends-on) for printing.
    pub fn model_edges(&self) -> Vec<(&str, &str)> {
        self.graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(a, b)| (self.graph[a].as_str(), self.graph[b].as_str()))
            .collect()
    }
}

/// `{"Model": [["Target", "accessor", "reverse"], ...]}` with positions.
type ModelDepsFile = IndexMap<Spanned<String>, Vec<Spanned<Vec<Spanned<String>>>>>;

/// Reads a `model-deps.json` in the original framework's format:
/// `{"User": [["Site", "site", "users"]]}` — User.site points at a Site.
pub fn load_model_deps(path: &Path, schema: &Schema) -> Result<Vec<Dep>, Diagnostics> {
    let src = Source::read(path)?;
    // JSON is YAML, so the YAML reader gives positions for JSON too.
    let raw: ModelDepsFile = src.parse()?;
    let models = schema.model_names();
    let mut diags = Diagnostics::default();
    let mut out = Vec::new();
    for (from, entries) in &raw {
        let Some(from_model) = schema.model(&from.value) else {
            diags.push(
                src.diag_at(format!("unknown model `{}`", from.value), from)
                    .with_hint(expected_hint(&from.value, &models)),
            );
            continue;
        };
        for entry in entries {
            let parts = &entry.value;
            if !(2..=3).contains(&parts.len()) {
                diags.push(src.diag_at(
                    "expected [\"Target\", \"accessor\"] or [\"Target\", \"accessor\", \"reverse_accessor\"]",
                    entry,
                ));
                continue;
            }
            let (to, accessor) = (&parts[0], &parts[1]);
            let Some(target) = schema.model(&to.value) else {
                diags.push(
                    src.diag_at(format!("unknown model `{}`", to.value), to)
                        .with_hint(expected_hint(&to.value, &models)),
                );
                continue;
            };
            let Some(field) = from_model.fields.get(&accessor.value) else {
                diags.push(
                    src.diag_at(
                        format!("`{}` is not a field of {}", accessor.value, from.value),
                        accessor,
                    )
                    .with_hint(expected_hint(&accessor.value, &from_model.field_names())),
                );
                continue;
            };
            out.push(Dep {
                from: from.value.clone(),
                field: accessor.value.clone(),
                to: to.value.clone(),
                to_field: target.key.clone(),
                many: matches!(field.ty, FieldType::Refs(_) | FieldType::List),
                origin: src.origin(accessor),
            });
        }
    }
    diags.into_result().map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Schema {
        Schema::from_sources(&[Source::from_text("m.yaml", text)]).unwrap()
    }

    #[test]
    fn order_puts_dependencies_first_and_allows_self_refs() {
        let s = schema(
            "models:\n  Slice:\n    fields: {name: string, site: {type: ref, to: Site}, parent: {type: ref, to: Slice}}\n  Site:\n    fields: {name: string}\n",
        );
        let g = ModelGraph::build(&s, vec![]).unwrap();
        assert_eq!(g.order(), ["Site", "Slice"]);
        assert_eq!(g.deps_of("Slice").len(), 2);
    }

    #[test]
    fn cycle_names_the_models() {
        let s = schema(
            "models:\n  A:\n    fields: {name: string, b: {type: ref, to: B}}\n  B:\n    fields: {name: string, a: {type: ref, to: A}}\n",
        );
        let err = ModelGraph::build(&s, vec![]).unwrap_err();
        assert!(err.0[0].message.contains("A, B"), "{}", err);
        assert!(err.0[0].pos.is_some());
    }
}
