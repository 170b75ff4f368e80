//! The commands of SPEC §10 that the CLI dispatches to. Each prints its own output to
//! stdout and returns an error that maps to the exit code.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::apply::{ApplyOptions, apply};
use crate::config::CONFIG_FILE;
use crate::deletion::delete;
use crate::diag::Diagnostic;
use crate::error::{Error, Result};
use crate::model::schema::yaml_files;
use crate::output::{ObjectView, objects_table, status_report};
use crate::service::Service;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Yaml,
    Json,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::failed(format!("{}: {e}", path.display()))
}

/// `init [DIR]`: scaffold a service directory with a small, valid model.
pub fn init(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let config = dir.join(CONFIG_FILE);
    if config.exists() {
        return Err(Error::failed(format!(
            "{} already exists",
            config.display()
        )));
    }
    let name = std::fs::canonicalize(dir)
        .ok()
        .or_else(|| Some(dir.to_path_buf()))
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "service".to_owned());
    let files: [(&str, String); 5] = [
        (
            CONFIG_FILE,
            format!("name: {}\n", serde_json::Value::String(name)),
        ),
        ("schemas/models.yaml", INIT_SCHEMA.to_owned()),
        ("objects/example.yaml", INIT_OBJECTS.to_owned()),
        ("stepdefs/.gitkeep", String::new()),
        ("playbooks/.gitkeep", String::new()),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if !path.exists() {
            std::fs::write(&path, text).map_err(io_err(&path))?;
        }
    }
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "/.stepsync/state.db*\n").map_err(io_err(&ignore))?;
    }
    writeln!(out, "initialized service in {}", dir.display()).map_err(io_err(dir))?;
    Ok(())
}

const INIT_SCHEMA: &str = "models:
  Site:
    fields:
      name: {type: string, required: true}
      login_base: string
  Slice:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
      max_instances: {type: int, default: 10}
";

const INIT_OBJECTS: &str = "Site:
  - {name: site-a, login_base: a}
Slice:
  - {name: s1, site: site-a}
";

/// Expands directories given to `-f` into their YAML files, sorted.
pub fn expand_files(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
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

pub fn apply_cmd(
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
        writeln!(out, "{name} {outcome}{suffix}").map_err(io_err(Path::new("stdout")))?;
    }
    Ok(())
}

pub fn get(
    svc: &Service,
    model: &str,
    key: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<()> {
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
    out.write_all(text.as_bytes())
        .map_err(io_err(Path::new("stdout")))?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::failed(format!("cannot print JSON: {e}")))
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_yaml::to_string(v).map_err(|e| Error::failed(format!("cannot print YAML: {e}")))
}

pub fn delete_cmd(
    svc: &Service,
    model: &str,
    key: &str,
    cascade: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let store = svc.open_store()?;
    for (name, r) in delete(svc, &*store, model, key, cascade)? {
        writeln!(out, "{name} {r}").map_err(io_err(Path::new("stdout")))?;
    }
    Ok(())
}

pub fn status(svc: &Service, out: &mut dyn Write) -> Result<()> {
    let store = svc.open_store()?;
    let objs = store.list(None)?;
    out.write_all(status_report(&svc.schema, &objs).as_bytes())
        .map_err(io_err(Path::new("stdout")))
}
