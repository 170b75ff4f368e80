//! The object commands: `apply`, `get`, `delete`, `status` and `retry`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stepsync::apply::{ApplyOptions, apply};
use stepsync::deletion::{Which, delete};
use stepsync::diag::Diagnostic;
use stepsync::error::{Error, Result};
use stepsync::model::schema::yaml_files;
use stepsync::output::ObjectView;
use stepsync::service::Service;
use stepsync::validate::stored_mismatches;

use super::table::{Steps, models_table, objects_table, status_counts, status_report};
use super::{io_err, json, print, stdout_err, yaml};

/// `get -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    #[default]
    Table,
    /// The table with whole messages, the reason, failures and the next retry.
    Wide,
    Yaml,
    Json,
}

/// `status -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum StatusFormat {
    #[default]
    Table,
    /// Whole messages.
    Wide,
    Json,
}

/// Expands directories given to `-f` into their YAML files, sorted.
pub(crate) fn expand_files(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            let found = yaml_files(f).map_err(io_err(f))?;
            // Applying nothing and saying nothing would hide a wrong path.
            if found.is_empty() {
                return Err(Error::Invalid(
                    Diagnostic::in_file("no objects file (*.yaml, *.yml) in this directory", f)
                        .with_hint("pass the files themselves, or the directory that holds them")
                        .into(),
                ));
            }
            out.extend(found);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

/// `apply -f FILE... [--prune] [--dry-run]`.
pub(crate) fn apply_cmd(
    dir: &Path,
    files: &[PathBuf],
    opts: ApplyOptions,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    apply_files(&Service::load(dir)?, files, opts, out)?;
    Ok(ExitCode::SUCCESS)
}

/// Applies `files` and prints one line per object; `run -f` does this first too.
pub(crate) fn apply_files(
    svc: &Service,
    files: &[PathBuf],
    opts: ApplyOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let store = svc.open_store()?;
    let files = expand_files(files)?;
    let report = apply(svc, &*store, &files, opts)?;
    let suffix = if opts.dry_run { " (dry run)" } else { "" };
    for (name, outcome) in &report.lines {
        writeln!(out, "{name} {outcome}{suffix}").map_err(stdout_err)?;
    }
    Ok(())
}

/// `get [MODEL [KEY]] [-o table|wide|yaml|json]`; no model: the models and their counts.
pub(crate) fn get(
    dir: &Path,
    model: Option<&str>,
    key: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let store = svc.open_store()?;
    let Some(model) = model else {
        let stored: std::collections::HashMap<String, usize> =
            store.counts_by_model()?.into_iter().collect();
        let counts: Vec<(String, usize)> = svc
            .schema
            .models
            .keys()
            .map(|m| (m.clone(), stored.get(m).copied().unwrap_or(0)))
            .collect();
        let text = match format {
            OutputFormat::Table | OutputFormat::Wide => models_table(&counts),
            OutputFormat::Json | OutputFormat::Yaml => {
                let rows: Vec<serde_json::Value> = counts
                    .iter()
                    .map(|(m, n)| serde_json::json!({"model": m, "objects": n}))
                    .collect();
                if format == OutputFormat::Json {
                    json(&rows)?
                } else {
                    yaml(&rows)?
                }
            }
        };
        print(out, &text)?;
        return Ok(ExitCode::SUCCESS);
    };
    let m = svc.model(model)?;
    let objs = match key {
        Some(k) => match store.get(&m.name, k)? {
            Some(o) => vec![o],
            None => {
                return Err(Error::Failed(Diagnostic::error(format!(
                    "{}/{k} not found",
                    m.name
                ))));
            }
        },
        None => store.list(Some(&m.name))?,
    };
    let views: Vec<ObjectView> = objs
        .iter()
        .map(|o| ObjectView::new(&svc.schema, o))
        .collect();
    // `get MODEL KEY` prints the object itself, not a one-element list.
    let single = if key.is_some() { views.first() } else { None };
    let text = match (format, single) {
        // As `kubectl get`: an empty table is a sentence on stderr, not a lone header.
        (OutputFormat::Table | OutputFormat::Wide, _) if objs.is_empty() => {
            eprintln!("No {} objects.", m.name);
            String::new()
        }
        (OutputFormat::Table, _) => objects_table(&objs, false),
        (OutputFormat::Wide, _) => objects_table(&objs, true),
        (OutputFormat::Json, Some(v)) => json(v)?,
        (OutputFormat::Json, None) => json(&views)?,
        (OutputFormat::Yaml, Some(v)) => yaml(v)?,
        (OutputFormat::Yaml, None) => yaml(&views)?,
    };
    print(out, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// `delete MODEL KEY|--all [--cascade] [--force]`.
pub(crate) fn delete_cmd(
    dir: &Path,
    model: &str,
    which: Which,
    cascade: bool,
    force: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let store = svc.open_store()?;
    let removed = delete(&svc, &*store, model, which, cascade, force)?;
    if removed.is_empty() {
        writeln!(out, "no {model} objects").map_err(stdout_err)?;
    }
    for (name, r) in removed {
        writeln!(out, "{name} {r}").map_err(stdout_err)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `status [-o table|wide|json]`: counts per model and status, the objects in error with
/// their next retry, and stored objects the schema does not describe.
pub(crate) fn status(dir: &Path, format: StatusFormat, out: &mut dyn Write) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let store = svc.open_store()?;
    let objs = store.list(None)?;
    let mismatches = stored_mismatches(&svc.schema, &objs);
    let limit = if matches!(format, StatusFormat::Json) {
        DEAD_LETTERS_SHOWN_JSON
    } else {
        DEAD_LETTERS_SHOWN
    };
    let steps = Steps {
        watchers: store.watcher_statuses()?,
        feeds: store.feed_statuses()?,
        dead: store.dead_letters(limit)?,
        workers: store.workers()?,
        lease: store.lease()?,
    };
    let text = match format {
        StatusFormat::Table => status_report(&svc.schema, &objs, &mismatches, &steps, false),
        StatusFormat::Wide => status_report(&svc.schema, &objs, &mismatches, &steps, true),
        StatusFormat::Json => json(&status_json(&svc, &objs, &mismatches, &steps))?,
    };
    print(out, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// The dead letters `status` lists: the newest few in text, many more in JSON.
const DEAD_LETTERS_SHOWN: usize = 10;
const DEAD_LETTERS_SHOWN_JSON: usize = 1000;

/// `status -o json`: `{"models": [{"model", "total", "<status>": n...}], "errors": [object
/// views], "mismatches": [...], "watchers", "pull_steps", "event_steps", "dead_letters":
/// {"total", "newest": [...]}}`.
fn status_json(
    svc: &Service,
    objs: &[stepsync::store::ObjectRecord],
    mismatches: &[stepsync::validate::Mismatch],
    steps: &Steps,
) -> serde_json::Value {
    let counts = status_counts(objs);
    let models: Vec<serde_json::Value> = svc
        .schema
        .models
        .keys()
        .map(|m| {
            let c = counts.get(m.as_str()).copied().unwrap_or_default();
            let mut row = serde_json::Map::new();
            row.insert("model".into(), m.clone().into());
            row.insert("total".into(), c.iter().sum::<usize>().into());
            for (st, n) in stepsync::store::Status::ALL.iter().zip(c) {
                row.insert(st.as_str().into(), n.into());
            }
            serde_json::Value::Object(row)
        })
        .collect();
    let errors: Vec<ObjectView> = objs
        .iter()
        .filter(|o| {
            matches!(
                o.book.status,
                stepsync::store::Status::Error | stepsync::store::Status::Blocked
            )
        })
        .map(|o| ObjectView::new(&svc.schema, o))
        .collect();
    let policy_errors: Vec<ObjectView> = objs
        .iter()
        .filter(|o| o.book.policy_error.is_some())
        .map(|o| ObjectView::new(&svc.schema, o))
        .collect();
    let step = |w: &stepsync::store::StepStatus| {
        serde_json::json!({
            "name": w.name, "runs": w.runs, "failures": w.failures,
            "last_run": w.last_run, "last_ok": w.last_ok,
            "last_error_at": w.last_error_at, "message": w.message,
        })
    };
    let watchers: Vec<serde_json::Value> = steps.watchers.iter().map(step).collect();
    let of = |prefix: &str| -> Vec<serde_json::Value> {
        steps
            .feeds
            .iter()
            .filter(|f| f.name.starts_with(prefix))
            .map(step)
            .collect()
    };
    let dead: Vec<serde_json::Value> = steps
        .dead
        .1
        .iter()
        .map(|d| {
            serde_json::json!({
                "step": d.step, "part": d.part, "position": d.pos, "at": d.at,
                "message": d.message, "error": d.error,
            })
        })
        .collect();
    let workers: Vec<serde_json::Value> = steps
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "name": w.name, "host": w.host, "pid": w.pid, "since": w.since,
                "heartbeat": w.heartbeat, "claims": w.claims, "leads": steps.leads(w),
            })
        })
        .collect();
    serde_json::json!({
        "models": models, "errors": errors, "mismatches": mismatches,
        "policy_errors": policy_errors, "watchers": watchers,
        "pull_steps": of("pull/"), "event_steps": of("event/"),
        "dead_letters": {"total": steps.dead.0, "newest": dead},
        "workers": workers,
    })
}

/// `retry MODEL [KEY]`: clears the backoff of the objects in error.
pub(crate) fn retry(
    dir: &Path,
    model: &str,
    key: Option<&str>,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let store = svc.open_store()?;
    let lines = stepsync::retry::retry(&svc, &*store, model, key)?;
    for l in lines {
        writeln!(out, "{l}").map_err(stdout_err)?;
    }
    Ok(ExitCode::SUCCESS)
}
