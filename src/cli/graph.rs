//! `graph`: the dependency graph of the models or of the objects, as text or Graphviz dot.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use stepsync::engine::graph::{Dep, ObjectGraph};
use stepsync::error::Result;
use stepsync::service::Service;
use stepsync::snapshot::Snapshot;
use stepsync::steps::loops::{StepEdge, StepKind, step_edges};

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
    // Watchers and policies are rules between models, with or without `--objects`: drawn
    // as edges of their own so they never read as dependencies.
    let steps = step_edges(&svc);
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
            for e in &steps {
                t.push_str(&format!("{}\n", e.line()));
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
            if !steps.is_empty() {
                dot_steps(&steps, objects, &q, &mut t);
            }
            t.push_str("}\n");
        }
    }
    print(out, &t)?;
    Ok(ExitCode::SUCCESS)
}

/// Watchers (dashed, blue) and policies (bold, green; a delete red) as dot edges in the
/// direction changes flow, labelled with what they watch or write and their file. With
/// `--objects` the nodes are objects: the rules go between boxes for their models, in a
/// cluster of their own.
fn dot_steps(steps: &[StepEdge], objects: bool, q: &dyn Fn(&str) -> String, t: &mut String) {
    let indent = if objects { "    " } else { "  " };
    if objects {
        t.push_str("  subgraph cluster_steps {\n    label=\"watchers and policies\";\n");
        let mut models: Vec<&str> = steps
            .iter()
            .flat_map(|e| [e.from.as_str(), e.to.as_str()])
            .collect();
        models.sort_unstable();
        models.dedup();
        for m in models {
            t.push_str(&format!("    {} [shape=box];\n", q(m)));
        }
    }
    for e in steps {
        let (style, color) = match e.kind {
            StepKind::Watch => ("dashed", "blue"),
            StepKind::Ensure => ("bold", "darkgreen"),
            StepKind::Delete => ("bold", "red"),
        };
        let mut label = format!("{}\n{}", e.label, e.file);
        if e.payload {
            label.push_str("\nruns its own payload");
        }
        if e.converges {
            label.push_str("\nconverges: true");
        }
        t.push_str(&format!(
            "{indent}{} -> {} [style={style}, color={color}, fontcolor={color}, label={}];\n",
            q(&e.from),
            q(&e.to),
            q(&label)
        ));
    }
    if objects {
        t.push_str("  }\n");
    }
}
