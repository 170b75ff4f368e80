//! The object commands: `apply`, `get`, `delete`, `status` and `retry`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stepsync::apply::{ApplyOptions, apply};
use stepsync::deletion::delete;
use stepsync::diag::Diagnostic;
use stepsync::error::{Error, Result};
use stepsync::model::schema::yaml_files;
use stepsync::output::ObjectView;
use stepsync::service::Service;

use super::table::{objects_table, status_report};
use super::{io_err, json, print, stdout_err, yaml};

/// `get -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    #[default]
    Table,
    Yaml,
    Json,
}

/// Expands directories given to `-f` into their YAML files, sorted.
pub(crate) fn expand_files(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            out.extend(yaml_files(f).map_err(io_err(f))?);
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

/// `get MODEL [KEY] [-o table|yaml|json]`.
pub(crate) fn get(
    dir: &Path,
    model: &str,
    key: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let m = svc.model(model)?;
    let store = svc.open_store()?;
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
        (OutputFormat::Table, _) => objects_table(&objs),
        (OutputFormat::Json, Some(v)) => json(v)?,
        (OutputFormat::Json, None) => json(&views)?,
        (OutputFormat::Yaml, Some(v)) => yaml(v)?,
        (OutputFormat::Yaml, None) => yaml(&views)?,
    };
    print(out, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// `delete MODEL KEY [--cascade]`.
pub(crate) fn delete_cmd(
    dir: &Path,
    model: &str,
    key: &str,
    cascade: bool,
    force: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let store = svc.open_store()?;
    for (name, r) in delete(&svc, &*store, model, key, cascade, force)? {
        writeln!(out, "{name} {r}").map_err(stdout_err)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`: counts per model and status, then the objects in error.
pub(crate) fn status(dir: &Path, out: &mut dyn Write) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let store = svc.open_store()?;
    let objs = store.list(None)?;
    print(out, &status_report(&svc.schema, &objs))?;
    Ok(ExitCode::SUCCESS)
}

/// `retry MODEL [KEY]`: clears the backoff of the objects in error.
pub(crate) fn retry(
    dir: &Path,
    model: &str,
    key: Option<&str>,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
    let m = svc.model(model)?;
    let store = svc.open_store()?;
    // Edited definitions count as the next pass will count them (SPEC §5.1 rule 4): the
    // model's synced objects become suspects, its failed ones lose their backoff.
    let edited = stepsync::store::sync_definitions(
        &*store,
        &stepsync::definition::Definitions::of(&svc).digests(),
    )?;
    let mut lines = Vec::new();
    if let Some((_, touched)) = edited.iter().find(|(e, _)| *e == m.name) {
        lines.push(format!(
            "{}: definitions changed; {touched} object(s) are rendered again on the next pass and sent if their recipe changed",
            m.name
        ));
    }
    let mut tx = store.write()?;
    let targets = match key {
        Some(k) => vec![
            tx.get(&m.name, k)?
                .ok_or_else(|| Error::failed(format!("{}/{k} not found", m.name)))?,
        ],
        None => tx.list(Some(&m.name))?,
    };
    for o in targets.iter().filter(|o| o.book.next_retry_at.is_some()) {
        stepsync::store::clear_backoff(&mut *tx, o.id)?;
        lines.push(format!("{}: backoff cleared", o.name()));
    }
    tx.commit()?;
    if lines.is_empty() {
        lines.push(format!("no {} object is waiting on a backoff", m.name));
    }
    for l in lines {
        writeln!(out, "{l}").map_err(stdout_err)?;
    }
    Ok(ExitCode::SUCCESS)
}
