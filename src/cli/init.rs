//! `init [DIR]`: a new service directory.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use stepsync::config::CONFIG_FILE;
use stepsync::error::{Error, Result};
use stepsync::json_schema;

use super::io_err;

/// `init [DIR]`: scaffold a service directory with a small, valid model.
pub(crate) fn init(dir: &Path, out: &mut dyn Write) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
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
                "{}name: {}\n{INIT_CONFIG}",
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
        (
            "stepdefs/site.yaml".into(),
            format!("{}{INIT_STEPDEF}", header("stepdef", "../")),
        ),
        ("playbooks/.gitkeep".into(), String::new()),
    ];
    for n in json_schema::names() {
        if let Some(schema) = json_schema::generate(n) {
            files.push((
                format!("schemas/json/{n}.json"),
                json_schema::to_text(&schema),
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
        std::fs::write(&ignore, INIT_GITIGNORE).map_err(io_err(&ignore))?;
    }
    let shown = dir.display().to_string();
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!(
            "  cd {}\n",
            shlex::try_quote(&shown).unwrap_or_else(|_| shown.clone().into())
        )
    };
    write!(
        out,
        "initialized service in {shown}\n\nNext steps:\n{cd}{INIT_NEXT}"
    )
    .map_err(io_err(dir))?;
    Ok(ExitCode::SUCCESS)
}

/// What to do after `init`, in order; each line a command to type or a file to edit.
const INIT_NEXT: &str =
    "  # point `vars.api` in stepsync.yaml at the REST backend the example stepdef calls
  stepsync validate
  stepsync apply -f objects/
  stepsync plan
  stepsync run --once
  stepsync get Site -o wide
";

const INIT_CONFIG: &str = "vars:
  # The backend of stepdefs/site.yaml: it PUTs /sites/<name> and DELETEs it.
  api: http://127.0.0.1:8080
";

/// Run logs, plans, purged folders and `status.json` change on every run; the rendered
/// recipes are deterministic and worth keeping under version control.
const INIT_GITIGNORE: &str = "/.stepsync/state.db*
/.stepsync/sys/.plan/
/.stepsync/sys/.deleted/
/.stepsync/sys/*/*/runs/
/.stepsync/sys/*/*/status.json
/.stepsync/*.log
";

const INIT_STEPDEF: &str =
    "# Sites are PUT to the backend when created or changed, and DELETEd when deleted.
kind: Actuator
model: Site
rest_defaults:
  headers: {Accept: application/json}
  timeout: 10s
attributes:
  name: \"{{ object.name }}\"
  login_base: \"{{ object.login_base }}\"
sync:
  rest:
    method: PUT
    url: \"{{ vars.api }}/sites/{{ name | urlencode }}\"
    body: {name: \"{{ name }}\", login_base: \"{{ login_base }}\"}
delete:
  rest:
    method: DELETE
    url: \"{{ vars.api }}/sites/{{ name | urlencode }}\"
";

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
