//! `graph`: the dependency graph of the models or of the objects, as text or Graphviz dot.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use stepsync::engine::graph::{Dep, ObjectGraph};
use stepsync::error::Result;
use stepsync::service::Service;
use stepsync::snapshot::Snapshot;

use super::print;

/// `graph --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum GraphFormat {
    #[default]
    Text,
    Dot,
}

/// `graph [--objects] [--format dot|text]`: what depends on what (the original `dmdot`).
pub(crate) fn graph(
    dir: &Path,
    objects: bool,
    format: GraphFormat,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let (nodes, mut edges): (Vec<String>, Vec<(String, String)>) = if objects {
        let store = svc.open_store()?;
        let world = Snapshot::load(svc.schema.clone(), &*store)?;
        let g = ObjectGraph::build(&svc.graph, &world);
        let mut all = world.all();
        all.sort_by(|a, b| (&a.model, &a.key).cmp(&(&b.model, &b.key)));
        let name = |id: i64| world.by_id(id).map(|o| o.name()).unwrap_or_default();
        let edges = g
            .edges()
            .map(|(id, dep)| match dep {
                Dep::Object(t) => (name(id), name(*t)),
                Dep::Missing(n) => (name(id), format!("{n} (missing)")),
            })
            .collect();
        (all.iter().map(|o| o.name()).collect(), edges)
    } else {
        let edges = svc
            .graph
            .model_edges()
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        (svc.graph.order().to_vec(), edges)
    };
    edges.sort();
    edges.dedup();
    let mut t = String::new();
    match format {
        GraphFormat::Text => {
            for n in &nodes {
                let deps: Vec<&str> = edges
                    .iter()
                    .filter(|(a, _)| a == n)
                    .map(|(_, b)| b.as_str())
                    .collect();
                if deps.is_empty() {
                    t.push_str(&format!("{n}\n"));
                } else {
                    t.push_str(&format!("{n} -> {}\n", deps.join(", ")));
                }
            }
        }
        GraphFormat::Dot => {
            let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
            t.push_str("digraph stepsync {\n  rankdir=BT;\n");
            for n in &nodes {
                t.push_str(&format!("  {};\n", q(n)));
            }
            for (a, b) in &edges {
                t.push_str(&format!("  {} -> {};\n", q(a), q(b)));
            }
            t.push_str("}\n");
        }
    }
    print(out, &t)?;
    Ok(ExitCode::SUCCESS)
}
