//! Pretend mode and `plan` (SPEC §9): the whole pipeline — pending detection, ordering,
//! attributes, rendering — without a backend call and without writing the data model. Recipes
//! are rendered into the plan dir (`<sys_dir>/.plan/`, or `--out`), never over the recipes the
//! engine last executed, and each is diffed against that executed recipe, so a plan run twice
//! says the same thing twice.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::bookkeeping::{self, Due};
use crate::engine::{Engine, Prepared};
use crate::error::Result;
use crate::payload::rest::Action;
use crate::snapshot::Snapshot;
use crate::steps::police::EffectKind;
use crate::store::ObjectRecord;
use crate::sysdir::{Phase, SysDir};

/// One object the engine would act on.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub action: &'static str,
    pub model: String,
    pub key: String,
    pub payload: &'static str,
    /// Why it is pending (SPEC §5.1 `status.reason`).
    pub reason: String,
    /// Where the plan rendered its recipe.
    pub recipe: String,
    /// The new recipe against the one the engine last executed.
    pub diff: String,
}

/// An object whose recipe could not be rendered.
#[derive(Debug, Clone, Serialize)]
pub struct PlanError {
    pub model: String,
    pub key: String,
    pub message: String,
}

/// A write a model policy would make before the actuators run (SPEC §12).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyChange {
    pub action: &'static str,
    pub model: String,
    pub key: String,
    /// The policy's file.
    pub policy: String,
    /// The object whose policy it is.
    pub source: String,
}

/// A write a pull step's poll would make (`plan --refresh`, SPEC §13).
#[derive(Debug, Clone, Serialize)]
pub struct PullChange {
    /// `pull/<name>`.
    pub step: String,
    /// `create`, `update`, `feedback` or `delete`.
    pub action: &'static str,
    pub model: String,
    pub key: String,
}

/// A pull step whose poll failed (`plan --refresh`).
#[derive(Debug, Clone, Serialize)]
pub struct PullError {
    pub step: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// What pull steps' polls would write (`--refresh` only); the recipes of the objects
    /// they write are in `changes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pulls: Vec<PullChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_errors: Vec<PullError>,
    /// What policies would write; the recipes of the objects they write are in `changes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyChange>,
    pub changes: Vec<Change>,
    pub errors: Vec<PlanError>,
}

#[derive(Default, Clone)]
pub struct PlanOptions {
    /// Delta REST recipes send their read-only observe request.
    pub refresh: bool,
    /// The plan dir; `<sys_dir>/.plan` by default.
    pub out: Option<PathBuf>,
    /// The objects to plan, when not the store's as they stand (`run --pretend -f`: see
    /// [`pretend_world`]), with what policies wrote to make them.
    pub world: Option<(Arc<Snapshot>, Vec<PolicyChange>)>,
}

/// What the next pass would start from, as `tx` sees it: resync watchers' marks and the
/// policies' writes made in `tx` (which the caller rolls back), and the objects then.
pub fn pretend_world(
    engine: &Engine,
    tx: &mut dyn crate::store::WriteTx,
) -> Result<(Snapshot, Vec<PolicyChange>)> {
    let now = crate::store::Millis::now();
    engine.mark_watched(tx)?;
    let policed = crate::steps::police::police(&engine.svc, tx, now, None)?;
    engine.mark_watched(tx)?;
    let changes = policed
        .effects
        .into_iter()
        .map(|e| PolicyChange {
            action: match e.kind {
                EffectKind::Create => "create",
                EffectKind::Update => "update",
                EffectKind::Delete => "delete",
            },
            model: e.model,
            key: e.key,
            policy: e.policy,
            source: e.source,
        })
        .collect();
    Ok((Snapshot::load(engine.svc.schema.clone(), &*tx)?, changes))
}

/// The plan dir of `engine` (or `out`).
pub fn plan_dir(engine: &Engine, out: Option<PathBuf>) -> SysDir {
    SysDir::new(out.unwrap_or_else(|| engine.sys.root().join(".plan")), 0)
}

/// Renders every pending object's recipe into the plan dir, in the order the engine would run
/// them.
pub async fn plan(engine: &Engine, opts: PlanOptions) -> Result<Plan> {
    // `--refresh` asks the backends what pull steps would write (read-only requests).
    let mut listings = Vec::new();
    if opts.refresh && opts.world.is_none() {
        for step in &engine.svc.stepdefs.pulls {
            listings.push((step, crate::steps::pull::list(engine, step).await));
        }
    }
    let mut pulls = Vec::new();
    let mut pull_errors = Vec::new();
    let (world, policies) = match opts.world {
        Some(w) => w,
        None => {
            // Written and rolled back: nothing of the plan reaches the store.
            let mut tx = engine.store.write()?;
            let now = crate::store::Millis::now();
            for (step, listing) in listings {
                let polled = listing.and_then(|l| {
                    crate::steps::pull::apply(engine, &mut *tx, step, &l, now)
                        .map_err(|e| e.to_string())
                });
                match polled {
                    Ok(p) => pulls.extend(p.effects.into_iter().filter_map(|(w, model, key)| {
                        use crate::steps::feed::Written;
                        let action = match w {
                            Written::Created => "create",
                            Written::Updated => "update",
                            Written::Feedback => "feedback",
                            Written::Deleted => "delete",
                            Written::Unchanged | Written::Missing => return None,
                        };
                        Some(PullChange {
                            step: step.owner(),
                            action,
                            model,
                            key,
                        })
                    })),
                    Err(message) => pull_errors.push(PullError {
                        step: step.owner(),
                        message: engine.clean_message(&message),
                    }),
                }
            }
            let (world, policies) = pretend_world(engine, &mut *tx)?;
            drop(tx);
            (Arc::new(world), policies)
        }
    };
    // A feedback field of an object that never synced is what the backend will say.
    let world = world.planning();
    let out_dir = plan_dir(engine, opts.out);
    let now = crate::store::Millis::now();
    let order: Vec<String> = engine.svc.graph.order().to_vec();
    let due = |o: &ObjectRecord| bookkeeping::pending(&o.book, now, &engine.rules(&o.model));
    // Models whose definitions changed since the store last saw them: their synced objects
    // are suspects, as the next pass will find (SPEC §5.1 rule 4).
    let known = engine.store.definitions()?;
    let edited: HashSet<String> = engine
        .definitions
        .digests()
        .into_iter()
        .filter(|(m, d)| known.get(m) != Some(d))
        .map(|(m, _)| m)
        .collect();
    let suspect = |o: &ObjectRecord| -> Option<Due> {
        if let Some(c) = bookkeeping::suspect(&o.book) {
            return Some(c.into());
        }
        let synced = o.book.last_success_at.is_some() && !o.book.deleted;
        (synced && edited.contains(&o.model)).then_some(Due::Definition)
    };
    let mut todo: Vec<Job> = Vec::new();
    for model in order.iter().rev() {
        for o in world.of_model(model) {
            if let Some(d) = due(&o).filter(|d| d.is_delete()) {
                todo.push((o, Phase::Delete, d, false));
            }
        }
    }
    for model in &order {
        for o in world.of_model(model) {
            match due(&o) {
                Some(d) if !d.is_delete() => todo.push((o, Phase::Sync, d, false)),
                Some(_) => {}
                None => {
                    if let Some(d) = suspect(&o) {
                        todo.push((o, Phase::Sync, d, true));
                    }
                }
            }
        }
    }
    let mut out = Plan {
        pulls,
        pull_errors,
        policies,
        ..Plan::default()
    };
    if opts.refresh {
        // Refreshing asks the backend, one object after the other.
        for (obj, phase, due, check) in todo {
            let p = match engine.prepare(&world, &obj, phase) {
                Ok(Some(p)) if check && unchanged(&obj, &p) => continue,
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    out.errors.push(error(engine, &obj, &e.to_string()));
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
                        .push(error(engine, &obj, &format!("refresh: {e}"))),
                }
            }
            out.changes
                .extend(change(engine, &out_dir, &p, action, &due)?);
        }
        return Ok(out);
    }
    // Rendering and writing the recipes is CPU and file system work with no order between
    // objects: spread over the cores in contiguous chunks, gathered back in plan order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = todo.len().div_ceil(threads).max(1);
    let (world, out_dir) = (&world, &out_dir);
    let results: Vec<std::thread::Result<Vec<Rendered>>> = std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(obj, phase, due, check)| {
                            render(engine, out_dir, world, obj, *phase, due, *check)
                        })
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
    Invalid(PlanError),
    Change(Change),
    /// The plan dir could not be written: the plan stops.
    Failed(crate::error::Error),
}

/// An object to plan: what it would do, why, and whether it is a suspect (listed only if
/// its recipe changed).
type Job = (Arc<ObjectRecord>, Phase, Due, bool);

/// Whether a suspect's recipe renders as it was applied (or nothing says what was applied).
fn unchanged(obj: &ObjectRecord, p: &Prepared) -> bool {
    obj.book.applied.as_deref().is_none_or(|a| a == p.digest)
}

fn render(
    engine: &Engine,
    out_dir: &SysDir,
    world: &Arc<Snapshot>,
    obj: &Arc<ObjectRecord>,
    phase: Phase,
    due: &Due,
    check: bool,
) -> Rendered {
    match engine.prepare(world, obj, phase) {
        Ok(Some(p)) if check && unchanged(obj, &p) => Rendered::Skip,
        Ok(Some(p)) => match change(engine, out_dir, &p, action_of(obj, phase), due) {
            Ok(Some(c)) => Rendered::Change(c),
            Ok(None) => Rendered::Skip,
            Err(e) => Rendered::Failed(e),
        },
        Ok(None) => Rendered::Skip,
        Err(e) => Rendered::Invalid(error(engine, obj, &e.to_string())),
    }
}

fn error(engine: &Engine, obj: &ObjectRecord, message: &str) -> PlanError {
    PlanError {
        model: obj.model.clone(),
        key: obj.key.clone(),
        message: engine.clean_message(message),
    }
}

fn action_of(obj: &ObjectRecord, phase: Phase) -> &'static str {
    match phase {
        Phase::Delete => "delete",
        Phase::Sync if obj.book.last_success_at.is_none() => "create",
        Phase::Sync => "update",
    }
}

/// Writes the recipe of `p` into the plan dir and diffs its main file against the recipe
/// the engine last executed.
fn change(
    engine: &Engine,
    out_dir: &SysDir,
    p: &Prepared,
    action: &'static str,
    due: &Due,
) -> Result<Option<Change>> {
    let written = engine.write_recipe(out_dir, p)?;
    let Some(main) = written.first() else {
        return Ok(None);
    };
    let name = main.path.file_name().unwrap_or_default();
    let executed = engine.sys.object_dir(&p.obj.model, &p.obj.key).join(name);
    let rel = executed
        .strip_prefix(engine.sys.root())
        .unwrap_or(&executed)
        .display()
        .to_string();
    let old = std::fs::read_to_string(&executed).unwrap_or_default();
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
        reason: due.to_string(),
        recipe: main.path.display().to_string(),
        diff,
    }))
}
