//! Ansible's lookup plugins of the built-in subset (`env`, `file`, `template`, `pipe`,
//! `list`), called as `lookup(...)`, `query(...)` or `q(...)`. They run on the controller, as
//! in Ansible: the machine that runs the runner.

use std::path::{Component, Path, PathBuf};

use minijinja::value::{Kwargs, Rest, Value};
use minijinja::{Error, ErrorKind, State};

use super::vars::{search_loader, without_last_newline};
use crate::template::{defined_chains_in, describe, render_bounded};

/// The key under which the template context hands itself to the `template` lookup, which
/// renders a file with the task's variables (a function sees them only one by one).
pub(super) const VARS_KEY: &str = "__stepsync_task_vars__";

/// The lookups the built-in runner implements (validate's list too).
pub const LOOKUPS: &[&str] = &["env", "file", "template", "pipe", "list"];

fn error(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// `lookup(kind, terms...)`: `wantlist` as given (default false), `query`: always a list.
pub(super) fn call(
    state: &State,
    kind: &str,
    terms: Rest<Value>,
    kwargs: Kwargs,
    query: bool,
) -> Result<Value, Error> {
    let wantlist: Option<bool> = kwargs.get("wantlist")?;
    // The env lookup's `default`: what an unset variable reads as.
    let default: Option<String> = if kind == "env" {
        kwargs.get("default")?
    } else {
        None
    };
    kwargs.assert_all_used()?;
    let terms: Vec<Value> = terms.0;
    let mut out: Vec<Value> = Vec::new();
    match kind {
        "list" => out = terms,
        "env" => {
            for t in &terms {
                let v = std::env::var(text(t)).ok().or_else(|| default.clone());
                out.push(Value::from(v.unwrap_or_default()));
            }
        }
        "file" => {
            for t in &terms {
                let name = text(t);
                // As Ansible: searched for, never read from wherever the process runs.
                let path = find(state, "files", &name)
                    .ok_or_else(|| error(format!("could not locate file in lookup: {name}")))?;
                let s = std::fs::read_to_string(&path)
                    .map_err(|e| error(format!("lookup('file', {name}): {e}")))?;
                out.push(Value::from(s.trim_end().to_owned()));
            }
        }
        "template" => {
            for t in &terms {
                out.push(Value::from(template(state, &text(t))?));
            }
        }
        "pipe" => {
            for t in &terms {
                out.push(Value::from(pipe(state, &text(t))?));
            }
        }
        other => {
            return Err(error(format!(
                "lookup `{other}` is not in the built-in subset; set `runner: ansible` in \
                 stepsync.yaml to run this playbook with ansible-playbook"
            )));
        }
    }
    if query || wantlist == Some(true) {
        return Ok(Value::from(out));
    }
    // Ansible's `lookup` without `wantlist`: strings joined with commas, else the only
    // item, else the list.
    if out.iter().all(|v| v.as_str().is_some()) {
        let joined: Vec<&str> = out.iter().filter_map(Value::as_str).collect();
        return Ok(Value::from(joined.join(",")));
    }
    if out.len() == 1 {
        return Ok(out.swap_remove(0));
    }
    Ok(Value::from(out))
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// A variable of the task as a string (`playbook_dir`), if set.
fn var(state: &State, name: &str) -> Option<String> {
    state
        .lookup(name)
        .filter(|v| !v.is_undefined() && !v.is_none())
        .map(|v| text(&v))
}

/// Ansible's `find_file_in_search_path`: `name` in `<dir>/<subdir>/` then `<dir>/` of every
/// directory of `ansible_search_path`. Relative names only, and none that climb out.
fn find(state: &State, subdir: &str, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    if rel.is_absolute() {
        return Some(rel.to_path_buf());
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    search_path(state)
        .iter()
        .flat_map(|d| [Path::new(d).join(subdir).join(rel), Path::new(d).join(rel)])
        .find(|p| p.is_file())
}

/// The task's `ansible_search_path`.
fn search_path(state: &State) -> Vec<String> {
    state
        .lookup("ansible_search_path")
        .and_then(|v| v.try_iter().ok().map(|i| i.map(|d| text(&d)).collect()))
        .unwrap_or_default()
}

/// `lookup('template', name)`: the file rendered with the task's variables, its trailing
/// newlines kept, as Ansible's lookup keeps them.
fn template(state: &State, name: &str) -> Result<String, Error> {
    // Each lookup renders in an environment of its own, whose recursion limit starts anew:
    // a template that looks itself up must still end.
    thread_local! {
        static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    struct Level;
    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    if DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    }) > crate::template::RECURSION_LIMIT
    {
        DEPTH.with(|d| d.set(d.get() - 1));
        return Err(error(format!(
            "lookup('template', {name}): more than {} nested template lookups",
            crate::template::RECURSION_LIMIT
        )));
    }
    let _level = Level;
    let path = find(state, "templates", name)
        .ok_or_else(|| error(format!("the template file {name} could not be found")))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| error(format!("lookup('template', {name}): {e}")))?;
    let vars = state
        .lookup(VARS_KEY)
        .ok_or_else(|| error("lookup('template') outside of a task".to_owned()))?;
    // `{% include %}` and the like find their files as the template module's do: in
    // `templates/` and the folder of each search path entry, then beside the template.
    let mut search: Vec<PathBuf> = search_path(state)
        .iter()
        .flat_map(|d| [Path::new(d).join("templates"), PathBuf::from(d)])
        .collect();
    search.extend(path.parent().map(Path::to_path_buf));
    let mut env = state.env().clone();
    env.set_loader(search_loader(search));
    // As the template module renders (and Ansible's lookup the same way): the text without
    // its last newline, the result's trailing newlines topped up to the file's.
    let code = defined_chains_in(without_last_newline(&text));
    let mut out = env
        .template_from_str(&code)
        .and_then(|t| render_bounded(&t, vars))
        .map_err(|e| error(format!("lookup('template', {name}): {}", describe(&e))))?;
    let newlines = |s: &str| s.len() - s.trim_end_matches('\n').len();
    let missing = newlines(&text).saturating_sub(newlines(&out));
    out.push_str(&"\n".repeat(missing));
    Ok(out)
}

/// `lookup('pipe', command)`: the command run by `/bin/sh` on the controller in the
/// playbook's directory, its output without trailing blanks; a non-zero exit is an error.
fn pipe(state: &State, command: &str) -> Result<String, Error> {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    if let Some(dir) = var(state, "playbook_dir").filter(|d| Path::new(d).is_dir()) {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| error(format!("lookup('pipe', {command}): {e}")))?;
    // A value is at most what a template may produce: a command that prints more is
    // stopped rather than allowed to fill the memory.
    let mut stdout = Vec::new();
    let read = child.stdout.take().map(|o| {
        use std::io::Read;
        o.take(crate::template::MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut stdout)
    });
    let too_much = stdout.len() > crate::template::MAX_OUTPUT;
    if too_much {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| error(format!("lookup('pipe', {command}): {e}")))?;
    if let Some(Err(e)) = read {
        return Err(error(format!("lookup('pipe', {command}): {e}")));
    }
    if too_much {
        return Err(error(format!(
            "lookup('pipe', {command}): more than {} bytes of output",
            crate::template::MAX_OUTPUT
        )));
    }
    if !status.success() {
        return Err(error(format!(
            "lookup_plugin.pipe({command}) returned {}",
            status.code().unwrap_or(-1)
        )));
    }
    Ok(String::from_utf8_lossy(&stdout).trim_end().to_owned())
}
