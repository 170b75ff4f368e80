//! The commands of SPEC §10 that the CLI dispatches to. Each prints its own output to
//! stdout and returns an error that maps to the exit code.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::apply::{ApplyOptions, apply};
use crate::config::CONFIG_FILE;
use crate::deletion::delete;
use crate::diag::Diagnostic;
use std::sync::Arc;

use crate::engine::Engine;
use crate::engine::daemon::runtime;
use crate::engine::graph::{Dep, ObjectGraph};
use crate::error::{Error, Result};
use crate::model::schema::yaml_files;
use crate::output::{ObjectView, objects_table, status_report};
use crate::payload::RenderFailure;
use crate::payload::{rest, rest_recipe};
use crate::plan::{Plan, plan, to_text as plan_text};
use crate::secrets::Secrets;
use crate::service::Service;
use crate::snapshot::Snapshot;
use crate::store::Status;
use crate::sysdir::Phase;

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
    // Each file names its JSON Schema, written beside the service, so editors complete and
    // check it from the first keystroke.
    let header = |schema: &str, up: &str| {
        format!("# yaml-language-server: $schema={up}schemas/json/{schema}.json\n")
    };
    let mut files: Vec<(String, String)> = vec![
        (
            CONFIG_FILE.to_owned(),
            format!(
                "{}name: {}\n",
                header("config", ""),
                serde_json::Value::String(name)
            ),
        ),
        (
            "schemas/models.yaml".into(),
            format!("{}{INIT_SCHEMA}", header("model", "../")),
        ),
        (
            "objects/example.yaml".into(),
            format!("{}{INIT_OBJECTS}", header("objects", "../")),
        ),
        ("stepdefs/.gitkeep".into(), String::new()),
        ("playbooks/.gitkeep".into(), String::new()),
    ];
    for n in crate::json_schema::names() {
        if let Some(schema) = crate::json_schema::generate(n) {
            files.push((
                format!("schemas/json/{n}.json"),
                crate::json_schema::to_text(&schema),
            ));
        }
    }
    for (rel, text) in files {
        let path = dir.join(&rel);
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

/// `run --once [--pretend] [-f FILE]...`.
pub fn run_once(
    svc: Service,
    files: &[PathBuf],
    pretend: bool,
    out: &mut dyn Write,
) -> Result<bool> {
    if !files.is_empty() {
        apply_cmd(&svc, files, ApplyOptions::default(), out)?;
    }
    if svc.config.disabled {
        writeln!(out, "run: disabled in stepsync.yaml; nothing run")
            .map_err(io_err(Path::new("stdout")))?;
        return Ok(true);
    }
    let pretend = pretend || svc.config.pretend;
    let engine = Arc::new(Engine::open(svc, None)?);
    let rt = runtime()?;
    if pretend {
        let p = rt.block_on(plan(&engine, false))?;
        out.write_all(plan_text(&p).as_bytes())
            .map_err(io_err(Path::new("stdout")))?;
        report_plan_errors(&p);
        return Ok(p.errors.is_empty());
    }
    let summary = rt.block_on(engine.run_once())?;
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    writeln!(
        out,
        "run: {} after {} pass{}",
        if counts.is_empty() {
            "no objects".to_owned()
        } else {
            counts.join(", ")
        },
        summary.passes,
        if summary.passes == 1 { "" } else { "es" }
    )
    .map_err(io_err(Path::new("stdout")))?;
    if !summary.all_ok {
        let objs = engine.store.list(None)?;
        for o in objs.iter().filter(|o| o.book.status != Status::Ok) {
            writeln!(out, "  {} {}: {}", o.name(), o.book.status, o.book.message)
                .map_err(io_err(Path::new("stdout")))?;
        }
    }
    Ok(summary.all_ok)
}

fn report_plan_errors(p: &Plan) {
    for e in &p.errors {
        eprintln!("error: {e}");
    }
}

/// `plan`: returns the exit code (with `--detailed-exitcode`: 0 nothing, 1 error, 2 changes).
pub fn plan_cmd(
    svc: Service,
    json_out: bool,
    detailed: bool,
    refresh: bool,
    sys_dir: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<i32> {
    let engine = Engine::open(svc, sys_dir)?;
    let p = runtime()?.block_on(plan(&engine, refresh))?;
    let text = if json_out { json(&p)? } else { plan_text(&p) };
    out.write_all(text.as_bytes())
        .map_err(io_err(Path::new("stdout")))?;
    report_plan_errors(&p);
    Ok(
        match (p.errors.is_empty(), detailed, p.changes.is_empty()) {
            (false, _, _) => 1,
            (true, true, false) => 2,
            _ => 0,
        },
    )
}

/// `render MODEL KEY [--delete]`: renders one recipe and prints its path.
pub fn render_cmd(
    svc: Service,
    model: &str,
    key: &str,
    delete: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let model = svc.model(model)?.name.clone();
    let engine = Engine::open(svc, None)?;
    let world = engine.snapshot()?;
    let obj = world
        .get(&model, key)
        .ok_or_else(|| Error::failed(format!("{model}/{key} not found")))?;
    let phase = if delete { Phase::Delete } else { Phase::Sync };
    let p = engine
        .prepare(&world, &obj, phase)
        .map_err(|e| render_error(&engine, &e))?
        .ok_or_else(|| {
            Error::failed(format!(
                "{model} has no {} payload to render",
                phase.as_str()
            ))
        })?;
    let written = engine.write_recipe(&p)?;
    if let Some(main) = written.first() {
        writeln!(out, "{}", main.path.display()).map_err(io_err(Path::new("stdout")))?;
    }
    Ok(())
}

/// A recipe that cannot be rendered is a problem of the stepdef (or of the object it is
/// rendered for): invalid input, shown at the template when it has a place.
fn render_error(engine: &Engine, e: &RenderFailure) -> Error {
    let clean = |m: &str| engine.clean_message(m);
    Error::Invalid(
        match e {
            RenderFailure::Template(t) => t.diagnostic(clean),
            RenderFailure::Playbook(m) => Diagnostic::error(clean(m)),
        }
        .into(),
    )
}

/// `replay PATH`: runs a rendered REST recipe as the engine would, without the data model.
pub fn replay_cmd(svc: Option<&Service>, path: &Path, out: &mut dyn Write) -> Result<bool> {
    let file = if path.is_dir() {
        path.join("sync.http")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(io_err(&file))?;
    let lookup = |var: &str| -> std::result::Result<String, String> {
        if let Ok(v) = std::env::var(var) {
            return Ok(v);
        }
        let configured = svc.and_then(|s| {
            s.config
                .secrets
                .keys()
                .find(|n| Secrets::env_var(n) == var)
                .map(|n| s.secrets.get(n).map(str::to_owned))
        });
        configured.unwrap_or_else(|| Err(format!("{var} is not set")))
    };
    let plan = rest_recipe::parse_http(&text, &lookup)
        .map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime()?;
    let client = reqwest::Client::new();
    let is_delete = file.file_name().is_some_and(|n| n == "delete.http");
    let ex = rt.block_on(rest::execute(&client, &plan, is_delete));
    let mask = |s: &str| svc.map_or_else(|| s.to_owned(), |sv| sv.secrets.mask(s));
    for (req, status, _) in &ex.log {
        let st = status.map_or_else(|| "no response".to_owned(), |s| s.to_string());
        writeln!(out, "{} {} -> {st}", req.method, mask(&req.url))
            .map_err(io_err(Path::new("stdout")))?;
    }
    match &ex.failure {
        Some(f) => {
            writeln!(out, "failed: {}", mask(f)).map_err(io_err(Path::new("stdout")))?;
            Ok(false)
        }
        None => {
            writeln!(out, "ok").map_err(io_err(Path::new("stdout")))?;
            Ok(true)
        }
    }
}

/// `run` without `--once`: the daemon, until SIGINT/SIGTERM.
pub fn run_daemon(svc: Service, files: &[PathBuf], out: &mut dyn Write) -> Result<bool> {
    if !files.is_empty() {
        apply_cmd(&svc, files, ApplyOptions::default(), out)?;
    }
    out.flush().map_err(io_err(Path::new("stdout")))?;
    if svc.config.disabled {
        writeln!(out, "run: disabled in stepsync.yaml; nothing run")
            .map_err(io_err(Path::new("stdout")))?;
        return Ok(true);
    }
    let engine = Arc::new(Engine::open(svc, None)?);
    runtime()?.block_on(engine.run_daemon())?;
    Ok(true)
}

/// `retry MODEL [KEY]`: clears the backoff of the objects in error.
pub fn retry(svc: &Service, model: &str, key: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let m = svc.model(model)?;
    let store = svc.open_store()?;
    let mut tx = store.write()?;
    let targets = match key {
        Some(k) => vec![
            tx.get(&m.name, k)?
                .ok_or_else(|| Error::failed(format!("{}/{k} not found", m.name)))?,
        ],
        None => tx.list(Some(&m.name))?,
    };
    let mut lines = Vec::new();
    for o in targets.iter().filter(|o| o.book.next_retry_at.is_some()) {
        crate::store::clear_backoff(&mut *tx, o.id)?;
        lines.push(format!("{}: backoff cleared", o.name()));
    }
    tx.commit()?;
    if lines.is_empty() {
        lines.push(format!("no {} object is waiting on a backoff", m.name));
    }
    for l in lines {
        writeln!(out, "{l}").map_err(io_err(Path::new("stdout")))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
}

/// `graph [--objects] [--format dot|text]`: what depends on what (the original `dmdot`).
pub fn graph(svc: &Service, objects: bool, format: GraphFormat, out: &mut dyn Write) -> Result<()> {
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
    out.write_all(t.as_bytes())
        .map_err(io_err(Path::new("stdout")))
}

/// `validate`: every problem on stderr (errors and warnings), a summary on stdout; exit 2
/// when there is an error.
pub fn validate_cmd(
    dir: &Path,
    files: &[PathBuf],
    out: &mut dyn Write,
) -> Result<std::process::ExitCode> {
    let files = expand_files(files)?;
    let diags = crate::validate::validate(dir, &files);
    let text = diags.to_string();
    if !text.is_empty() {
        if crate::diag::colour_stderr() {
            eprintln!("{}\n", crate::diag::colourize(&text));
        } else {
            eprintln!("{text}\n");
        }
    }
    let errors = diags
        .0
        .iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .count();
    let warnings = diags.0.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    if errors > 0 {
        writeln!(
            out,
            "invalid: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        )
        .map_err(io_err(Path::new("stdout")))?;
        Ok(std::process::ExitCode::from(2))
    } else {
        writeln!(out, "valid ({})", plural(warnings, "warning"))
            .map_err(io_err(Path::new("stdout")))?;
        Ok(std::process::ExitCode::SUCCESS)
    }
}
