//! `render` (one object's recipe into the sys dir) and `replay` (a rendered REST recipe run
//! again, without the data model).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use stepsync::diag::Diagnostic;
use stepsync::engine::Engine;
use stepsync::engine::daemon::runtime;
use stepsync::error::{Error, Result};
use stepsync::payload::{RenderFailure, rest, rest_recipe};
use stepsync::secrets::Secrets;
use stepsync::service::Service;
use stepsync::sysdir::Phase;

use super::{io_err, ok_or_1, stdout_err};

/// `render MODEL KEY [--delete]`: renders one recipe and prints its path.
pub(crate) fn render_cmd(
    dir: &Path,
    model: &str,
    key: &str,
    delete: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let svc = Service::load(dir)?;
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
    // Like a plan, a render never writes over the recipes the engine last executed.
    let written = engine.write_recipe(&stepsync::plan::plan_dir(&engine, None), &p)?;
    if let Some(main) = written.first() {
        writeln!(out, "{}", main.path.display()).map_err(stdout_err)?;
    }
    Ok(ExitCode::SUCCESS)
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

/// `replay PATH`: runs a rendered recipe (an object's folder: its sync recipe; or a recipe
/// file) as the engine would, without the data model. 0 when it succeeded.
pub(crate) fn replay_cmd(dir: &Path, path: &Path, out: &mut dyn Write) -> Result<ExitCode> {
    // A recipe can be replayed outside its service; secrets then come from the env.
    let svc = Service::load(dir).ok();
    let svc = svc.as_ref();
    let file = if path.is_dir() {
        match ["sync.http", "sync.yml"]
            .iter()
            .map(|n| path.join(n))
            .find(|f| f.exists())
        {
            Some(f) => f,
            None => {
                return Err(Error::Failed(
                    Diagnostic::in_file("no recipe here (sync.http or sync.yml)", path)
                        .with_hint("pass an object's folder in the sys dir, or one of its recipe files (delete.http, delete.yml)"),
                ));
            }
        }
    } else {
        path.to_path_buf()
    };
    if file.extension().is_some_and(|e| e == "yml" || e == "yaml") {
        return replay_playbook(svc, &file, out);
    }
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
    let http = rest::Http {
        client: reqwest::Client::new(),
        max_response: svc.map_or_else(
            || stepsync::config::HttpConfig::default().max_response.0,
            |s| s.config.http.max_response.0,
        ),
    };
    let is_delete = file.file_name().is_some_and(|n| n == "delete.http");
    let ex = rt.block_on(rest::execute(&http, &plan, is_delete));
    let mask = |s: &str| svc.map_or_else(|| s.to_owned(), |sv| sv.secrets.mask(s));
    for (req, status, _) in &ex.log {
        let st = status.map_or_else(|| "no response".to_owned(), |s| s.to_string());
        writeln!(out, "{} {} -> {st}", req.method, mask(&req.url)).map_err(stdout_err)?;
    }
    let ok = match &ex.failure {
        Some(f) => {
            writeln!(out, "failed: {}", mask(f)).map_err(stdout_err)?;
            false
        }
        None => {
            writeln!(out, "ok").map_err(stdout_err)?;
            true
        }
    };
    Ok(ok_or_1(ok))
}

/// A playbook recipe, replayed as a person runs it from its folder: `ansible-playbook -i
/// inventory.yml sync.yml` with the sys dir's `ansible.cfg`, secrets from the environment
/// (`STEPSYNC_SECRET_<NAME>`, or the service's own sources when run inside it). The rendered
/// recipe is an Ansible playbook whose model values are `!unsafe` data, so it is replayed
/// with `ansible-playbook` whichever runner the service configures.
fn replay_playbook(svc: Option<&Service>, file: &Path, out: &mut dyn Write) -> Result<ExitCode> {
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // The sys dir's root is the nearest folder above that holds its `ansible.cfg`.
    let root = folder
        .ancestors()
        .skip(1)
        .find(|d| d.join("ansible.cfg").exists())
        .ok_or_else(|| {
            Error::failed(format!(
                "{}: no ansible.cfg in a folder above it: replay runs recipes inside a sys dir",
                file.display()
            ))
        })?
        .to_path_buf();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let secrets = svc.map_or_else(Secrets::default, |s| (*s.secrets).clone());
    let rt = runtime()?;
    let (result, log) = rt.block_on(stepsync::payload::playbook::run_ansible(
        &folder, &root, &name, &secrets,
    ));
    let mask = |s: &str| secrets.mask(s);
    print_log(out, &mask(&log))?;
    let ok = match result {
        Ok(r) => {
            writeln!(out, "ok: {} ok, {} changed", r.ok, r.changed).map_err(stdout_err)?;
            true
        }
        Err(e) => {
            writeln!(out, "failed: {}", mask(&e)).map_err(stdout_err)?;
            false
        }
    };
    Ok(ok_or_1(ok))
}

fn print_log(out: &mut dyn Write, log: &str) -> Result<()> {
    out.write_all(log.as_bytes()).map_err(stdout_err)?;
    if !log.is_empty() && !log.ends_with('\n') {
        writeln!(out).map_err(stdout_err)?;
    }
    Ok(())
}
