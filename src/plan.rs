//! Pretend mode and `plan` (SPEC §9): the whole pipeline — pending detection, ordering,
//! attributes, rendering — without a backend call and without writing the data model.

use std::sync::Arc;

use serde::Serialize;

use crate::engine::Engine;
use crate::engine::Prepared;
use crate::error::Result;
use crate::payload::rest::Action;
use crate::snapshot::Snapshot;
use crate::store::{Millis, ObjectRecord};
use crate::sysdir::Phase;

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub action: &'static str,
    pub model: String,
    pub key: String,
    pub payload: &'static str,
    pub recipe: String,
    pub diff: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Objects whose recipe could not be rendered, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Renders every pending object's recipe into the sys dir, in the order the engine would
/// run them. With `refresh`, delta REST recipes send their read-only observe request.
pub async fn plan(engine: &Engine, refresh: bool) -> Result<Plan> {
    let world = engine.snapshot()?;
    let now = Millis::now();
    let order: Vec<String> = engine.svc.graph.order().to_vec();
    let mut todo: Vec<(Arc<ObjectRecord>, Phase)> = Vec::new();
    for model in order.iter().rev() {
        todo.extend(
            world
                .of_model(model)
                .into_iter()
                .filter(|o| o.book.deleted)
                .map(|o| (o, Phase::Delete)),
        );
    }
    for model in &order {
        todo.extend(
            world
                .of_model(model)
                .into_iter()
                .filter(|o| {
                    !o.book.deleted
                        && crate::bookkeeping::pending(&o.book, now, &engine.rules(&o.model))
                            .is_some()
                })
                .map(|o| (o, Phase::Sync)),
        );
    }
    let mut out = Plan::default();
    if refresh {
        // Refreshing asks the backend, one object after the other.
        for (obj, phase) in todo {
            let p = match engine.prepare(&world, &obj, phase) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    out.errors
                        .push(engine.clean_message(&format!("{}: {e}", obj.name())));
                    continue;
                }
            };
            let mut action = action_of(&obj, phase);
            if phase == Phase::Sync
                && let Some(refreshed) = engine.payloads.refresh(&p.recipe).await
            {
                match refreshed {
                    Ok(None) => continue,
                    Ok(Some(Action::Create)) => action = "create",
                    Ok(Some(_)) => action = "update",
                    Err(e) => out
                        .errors
                        .push(engine.clean_message(&format!("{}: refresh: {e}", obj.name()))),
                }
            }
            out.changes.extend(change(engine, &p, action)?);
        }
        return Ok(out);
    }
    // Rendering and writing the recipes is CPU and file system work with no order between
    // objects: spread over the cores in contiguous chunks, gathered back in plan order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = todo.len().div_ceil(threads).max(1);
    let world = &world;
    let results: Vec<std::thread::Result<Vec<Rendered>>> = std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(obj, phase)| render(engine, world, obj, *phase))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for part in results {
        let part = part.map_err(|_| crate::error::Error::failed("rendering the plan panicked"))?;
        for r in part {
            match r {
                Rendered::Skip => {}
                Rendered::Invalid(e) => out.errors.push(e),
                Rendered::Change(c) => out.changes.push(c),
                Rendered::Failed(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// One object's part of a plan.
enum Rendered {
    Skip,
    /// Its recipe could not be rendered: reported, the plan goes on.
    Invalid(String),
    Change(Change),
    /// The sys dir could not be written: the plan stops.
    Failed(crate::error::Error),
}

fn render(
    engine: &Engine,
    world: &Arc<Snapshot>,
    obj: &Arc<ObjectRecord>,
    phase: Phase,
) -> Rendered {
    match engine.prepare(world, obj, phase) {
        Ok(Some(p)) => match change(engine, &p, action_of(obj, phase)) {
            Ok(Some(c)) => Rendered::Change(c),
            Ok(None) => Rendered::Skip,
            Err(e) => Rendered::Failed(e),
        },
        Ok(None) => Rendered::Skip,
        Err(e) => Rendered::Invalid(engine.clean_message(&format!("{}: {e}", obj.name()))),
    }
}

fn action_of(obj: &ObjectRecord, phase: Phase) -> &'static str {
    match phase {
        Phase::Delete => "delete",
        Phase::Sync if obj.book.last_success_at.is_none() => "create",
        Phase::Sync => "update",
    }
}

/// Writes the recipe of `p` and diffs its main file against what was there.
fn change(engine: &Engine, p: &Prepared, action: &'static str) -> Result<Option<Change>> {
    let written = engine.write_recipe(p)?;
    let Some(main) = written.first() else {
        return Ok(None);
    };
    let rel = main
        .path
        .strip_prefix(engine.sys.root())
        .unwrap_or(&main.path)
        .display()
        .to_string();
    let old = main.old.clone().unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&old, &main.new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{rel}"), &format!("b/{rel}"))
        .to_string();
    Ok(Some(Change {
        action,
        model: p.obj.model.clone(),
        key: p.obj.key.clone(),
        payload: p.recipe.payload_name(),
        recipe: main.path.display().to_string(),
        diff,
    }))
}
