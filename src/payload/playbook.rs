//! The playbook payload (SPEC §6.3, §7, §8): the service's playbook rendered into a recipe
//! that the real `ansible-playbook` runs unchanged — attributes as play vars, the targeted
//! hosts in an inventory of their own — and, with `runner: ansible`, run that way.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use serde_yaml::Value as Yaml;
use serde_yaml::value::{Tag, TaggedValue};

use crate::config::{KnownHosts, Ssh};
use crate::inventory::Inventory;
use crate::secrets::{Piece, Secrets};
use crate::yaml::{Node, Source, Spanned};

pub const PLAYBOOKS_DIR: &str = "playbooks";
/// The callback that hands `ansible-playbook`'s result back to the engine.
pub const RESULT_CALLBACK: &str = include_str!("stepsync_result.py");

/// A rendered playbook recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookPlan {
    /// `sync.yml` / `delete.yml`.
    pub playbook: String,
    /// `inventory.yml`: the hosts the recipe targets.
    pub inventory: String,
    /// `ansible.cfg` beside the recipe: `ansible-playbook` reads it from the folder it is
    /// started in, so a person running the recipe there gets the roles and SSH policy the
    /// engine uses without setting `ANSIBLE_CONFIG`.
    pub ansible_cfg: String,
    /// The service's playbook and the hosts override, for the built-in runner.
    pub source: PathBuf,
    pub hosts: Option<String>,
}

/// `result` of a playbook run (SPEC §6.4).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlaybookResult {
    pub ok: u64,
    pub changed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub unreachable: u64,
    /// What `set_stats` recorded.
    pub stats: Map<String, Json>,
    /// The facts set on the single target host.
    pub facts: Map<String, Json>,
    pub message: Option<String>,
}

/// What the renderer needs from the service.
pub struct Context<'a> {
    pub playbooks_dir: &'a Path,
    pub inventory: &'a Inventory,
    pub ssh: &'a Ssh,
    pub secrets: &'a Secrets,
}

/// Renders `playbook` with `attributes` as play vars; `hosts` overrides each play's hosts.
pub fn render(
    cx: &Context,
    playbook: &Path,
    attributes: &Map<String, Json>,
    hosts: Option<&str>,
) -> Result<PlaybookPlan, String> {
    let file = cx.playbooks_dir.join(playbook);
    // Read as every user file is (positions in errors); serde_yaml only writes the recipe.
    let src = Source::read_ansible(&file).map_err(|d| d.to_string())?;
    let doc = src
        .documents()
        .map_err(|d| d.to_string())?
        .first()
        .map_or(Yaml::Null, |d| to_yaml(&src, d));
    let Yaml::Sequence(plays) = doc else {
        return Err(format!("{}: a playbook is a list of plays", file.display()));
    };
    let vars: serde_yaml::Mapping = attributes
        .iter()
        .map(|(k, v)| (Yaml::String(k.clone()), data_value(cx.secrets, v)))
        .collect();
    let mut out = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for play in plays {
        let Yaml::Mapping(mut play) = play else {
            return Err(format!("{}: each play is a map", file.display()));
        };
        if play.contains_key("import_playbook") {
            out.push(Yaml::Mapping(play));
            continue;
        }
        if let Some(h) = hosts {
            play.insert("hosts".into(), Yaml::String(h.to_owned()));
        }
        let pattern = play
            .get("hosts")
            .and_then(Yaml::as_str)
            .unwrap_or("localhost")
            .to_owned();
        let local = play.get("connection").and_then(Yaml::as_str) == Some("local");
        for h in cx.inventory.resolve(&pattern) {
            if !targets.contains(&h) {
                targets.push(h.clone());
            }
            if local && !targets.contains(&h) {
                targets.push(h);
            }
        }
        let mut play_vars = match play.remove("vars") {
            Some(Yaml::Mapping(m)) => m,
            _ => serde_yaml::Mapping::new(),
        };
        for (k, v) in &vars {
            play_vars.insert(k.clone(), v.clone());
        }
        if let Some(Yaml::Sequence(files)) = play.get_mut("vars_files") {
            // The recipe lives in the sys dir; relative vars files stay the service's.
            for f in files.iter_mut() {
                if let Some(s) = f
                    .as_str()
                    .filter(|s| !s.starts_with('/') && !s.contains("{{"))
                {
                    *f = Yaml::String(cx.playbooks_dir.join(s).display().to_string());
                }
            }
        }
        // Play vars sit right after `hosts`, where a reader looks for them.
        let mut ordered = serde_yaml::Mapping::new();
        for (k, v) in play {
            let is_hosts = k.as_str() == Some("hosts");
            ordered.insert(k, v);
            if is_hosts {
                ordered.insert("vars".into(), Yaml::Mapping(play_vars.clone()));
            }
        }
        if !ordered.contains_key("vars") {
            ordered.insert("vars".into(), Yaml::Mapping(play_vars));
        }
        out.push(Yaml::Mapping(ordered));
    }
    let body = serde_yaml::to_string(&Yaml::Sequence(out)).map_err(|e| e.to_string())?;
    let playbook = format!(
        "# Rendered by stepsync from playbooks/{}: the attributes are play vars.\n{body}",
        playbook.display(),
    );
    Ok(PlaybookPlan {
        playbook,
        inventory: inventory_yaml(cx, &targets)?,
        ansible_cfg: ansible_cfg(cx.playbooks_dir, cx.ssh),
        source: file,
        hosts: hosts.map(str::to_owned),
    })
}

/// A YAML value of the project's reader, for writing back out with serde_yaml. The playbook
/// is read with Ansible's YAML 1.1 meanings, so numbers and booleans are written as the
/// values Ansible reads (`0644` as 420). The reader keeps no tags; they matter to
/// `ansible-playbook` and are taken from the text (see [`raw_scalar`]).
fn to_yaml(src: &Source, n: &Spanned<Node>) -> Yaml {
    let plain = match &n.value {
        Node::Null => Yaml::Null,
        Node::Bool(b) => Yaml::Bool(*b),
        Node::Int(i) => Yaml::Number((*i).into()),
        Node::Float(f) => Yaml::Number((*f).into()),
        // serde_yaml quotes only what YAML 1.2 reads as another type: `'yes'`, `'1_000'` or
        // `'1:30'` would come out plain and read back as a boolean or a number. `!unsafe`
        // keeps them strings; such a string holds no template for it to change.
        Node::Str(s) if !matches!(crate::yaml::resolve_yaml11(s), Node::Str(_)) => {
            Yaml::Tagged(Box::new(TaggedValue {
                tag: Tag::new("unsafe"),
                value: Yaml::String(s.clone()),
            }))
        }
        Node::Str(s) => Yaml::String(s.clone()),
        Node::Seq(items) => Yaml::Sequence(items.iter().map(|i| to_yaml(src, i)).collect()),
        Node::Map(entries) => Yaml::Mapping(
            entries
                .iter()
                .map(|(k, v)| (Yaml::String(k.value.clone()), to_yaml(src, v)))
                .collect(),
        ),
    };
    match raw_scalar(&src.text, n).and_then(|r| r.0) {
        // `!unsafe` (and `!vault`) tell Ansible how to treat the value.
        Some(tag)
            if !matches!(
                plain,
                Yaml::Sequence(_) | Yaml::Mapping(_) | Yaml::Tagged(_)
            ) =>
        {
            Yaml::Tagged(Box::new(TaggedValue {
                tag: Tag::new(tag),
                value: plain,
            }))
        }
        _ => plain,
    }
}

/// The local tag written before a scalar (`!unsafe`), and the scalar's plain token.
fn raw_scalar<'a>(text: &'a str, n: &Spanned<Node>) -> Option<(Option<&'a str>, &'a str)> {
    let pos = crate::yaml::pos(n)?;
    let line = text
        .lines()
        .nth(usize::try_from(pos.line).ok()?.checked_sub(1)?)?;
    let at = line
        .char_indices()
        .nth(usize::try_from(pos.col).ok()?.checked_sub(1)?)
        .map_or(line.len(), |(i, _)| i);
    let (before, rest) = line.split_at(at);
    let token = rest
        .split([',', ']', '}', '#'])
        .next()
        .unwrap_or("")
        .trim_end();
    let tag = before
        .trim_end()
        .rsplit([' ', '\t', '[', '{', ','])
        .next()
        .and_then(|w| w.strip_prefix('!'))
        .filter(|t| !t.is_empty() && !t.starts_with('!'));
    Some((tag, token))
}

/// A data-model value for a play var. Strings are `!unsafe`, so Ansible never renders them
/// as templates; a secret becomes a lookup of its environment variable.
fn data_value(secrets: &Secrets, v: &Json) -> Yaml {
    match v {
        Json::String(s) => {
            let pieces = secrets.split(s);
            if pieces.iter().any(|p| matches!(p, Piece::Secret(_))) {
                let expr: Vec<String> = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => jinja_string(t),
                        Piece::Secret(n) => format!("lookup('env', '{}')", Secrets::env_var(n)),
                    })
                    .collect();
                Yaml::String(format!("{{{{ {} }}}}", expr.join(" ~ ")))
            } else {
                Yaml::Tagged(Box::new(TaggedValue {
                    tag: Tag::new("unsafe"),
                    value: Yaml::String(s.clone()),
                }))
            }
        }
        Json::Array(items) => {
            Yaml::Sequence(items.iter().map(|i| data_value(secrets, i)).collect())
        }
        Json::Object(m) => Yaml::Mapping(
            m.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), data_value(secrets, v)))
                .collect(),
        ),
        other => serde_yaml::to_value(other).unwrap_or(Yaml::Null),
    }
}

/// A Jinja string literal holding `s` exactly.
fn jinja_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn inventory_yaml(cx: &Context, targets: &[String]) -> Result<String, String> {
    let mut hosts = serde_yaml::Mapping::new();
    for h in targets {
        let mut vars: Map<String, Json> = cx.inventory.hosts.get(h).cloned().unwrap_or_default();
        let implicit_local =
            (h == "localhost" || h == "127.0.0.1") && !cx.inventory.hosts.contains_key(h);
        if implicit_local {
            vars.entry("ansible_connection")
                .or_insert_with(|| "local".into());
            // As Ansible's own implicit localhost: run modules with the controller's Python.
            vars.entry("ansible_python_interpreter")
                .or_insert_with(|| "{{ ansible_playbook_python }}".into());
        } else {
            if let Some(u) = &cx.ssh.user {
                vars.entry("ansible_user")
                    .or_insert_with(|| u.clone().into());
            }
            if cx.ssh.port != 22 {
                vars.entry("ansible_port")
                    .or_insert_with(|| cx.ssh.port.into());
            }
            if let Some(k) = &cx.ssh.private_key {
                vars.entry("ansible_ssh_private_key_file")
                    .or_insert_with(|| k.display().to_string().into());
            }
        }
        hosts.insert(
            Yaml::String(h.clone()),
            serde_yaml::to_value(&vars).map_err(|e| e.to_string())?,
        );
    }
    let mut groups = serde_yaml::Mapping::new();
    for (g, members) in &cx.inventory.groups {
        if g == "all" {
            continue;
        }
        let inside: serde_yaml::Mapping = members
            .iter()
            .filter(|m| targets.contains(m))
            .map(|m| {
                (
                    Yaml::String(m.clone()),
                    Yaml::Mapping(serde_yaml::Mapping::new()),
                )
            })
            .collect();
        if !inside.is_empty() {
            let mut gm = serde_yaml::Mapping::new();
            gm.insert("hosts".into(), Yaml::Mapping(inside));
            groups.insert(Yaml::String(g.clone()), Yaml::Mapping(gm));
        }
    }
    let mut all = serde_yaml::Mapping::new();
    all.insert("hosts".into(), Yaml::Mapping(hosts));
    if !groups.is_empty() {
        all.insert("children".into(), Yaml::Mapping(groups));
    }
    let mut top = serde_yaml::Mapping::new();
    top.insert("all".into(), Yaml::Mapping(all));
    serde_yaml::to_string(&Yaml::Mapping(top)).map_err(|e| e.to_string())
}

/// The sys dir's `ansible.cfg`: roles from the service, the SSH policy of `stepsync.yaml`.
pub fn ansible_cfg(playbooks_dir: &Path, ssh: &Ssh) -> String {
    let roles = absolute(&playbooks_dir.join("roles"));
    let (checking, strict, known) = match ssh.known_hosts {
        KnownHosts::Strict => (
            "True",
            "yes",
            ssh.known_hosts_file.as_ref().map(|p| absolute(p)),
        ),
        KnownHosts::AcceptNew => (
            "True",
            "accept-new",
            ssh.known_hosts_file.as_ref().map(|p| absolute(p)),
        ),
        KnownHosts::Off => ("False", "no", Some(PathBuf::from("/dev/null"))),
    };
    let mut ssh_args = format!(
        "-o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking={strict} -o ConnectTimeout={}",
        ssh.connect_timeout.0.as_secs().max(1)
    );
    if let Some(k) = known {
        ssh_args.push_str(&format!(" -o UserKnownHostsFile={}", k.display()));
    }
    format!(
        "# Written by stepsync: `ansible-playbook -i inventory.yml sync.yml` from an object's folder\n\
         # (which has a copy of this file) does what the engine does.\n\
         [defaults]\nroles_path = {}\nhost_key_checking = {checking}\nretry_files_enabled = False\ninterpreter_python = auto_silent\n\n\
         [ssh_connection]\nssh_args = {ssh_args}\n",
        roles.display()
    )
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Runs a rendered recipe in `dir` with `ansible-playbook`; returns the result and the log.
pub async fn run_ansible(
    dir: &Path,
    sys_root: &Path,
    recipe: &str,
    secrets: &Secrets,
) -> (Result<PlaybookResult, String>, String) {
    let result_file = absolute(&dir.join(format!(".result-{}.json", std::process::id())));
    let _ = std::fs::remove_file(&result_file);
    let mut cmd = tokio::process::Command::new("ansible-playbook");
    cmd.arg("-i")
        .arg("inventory.yml")
        .arg(recipe)
        .current_dir(dir)
        .env("ANSIBLE_CONFIG", absolute(&sys_root.join("ansible.cfg")))
        .env(
            "ANSIBLE_CALLBACK_PLUGINS",
            absolute(&sys_root.join("callback_plugins")),
        )
        .env("ANSIBLE_CALLBACKS_ENABLED", "stepsync_result")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("STEPSYNC_RESULT_FILE", &result_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in secrets.known() {
        cmd.env(Secrets::env_var(name), value);
    }
    let output = match cmd.output().await {
        Ok(o) => o,
        Err(e) => {
            return (
                Err(format!(
                    "cannot run ansible-playbook: {e} (is ansible-core installed?)"
                )),
                String::new(),
            );
        }
    };
    let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr);
    if !err.trim().is_empty() {
        log.push_str("\n--- stderr ---\n");
        log.push_str(&err);
    }
    let parsed = std::fs::read_to_string(&result_file)
        .ok()
        .and_then(|t| serde_json::from_str::<PlaybookResult>(&t).ok());
    let _ = std::fs::remove_file(&result_file);
    let result = match parsed {
        Some(r) if output.status.success() && r.failed == 0 && r.unreachable == 0 => Ok(r),
        Some(r) => Err(r
            .message
            .clone()
            .unwrap_or_else(|| format!("ansible-playbook exited with {}", output.status))),
        None => Err(format!(
            "ansible-playbook exited with {}: {}",
            output.status,
            err.lines()
                .chain(log.lines())
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
        )),
    };
    (result, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playbook_values_are_written_back_as_ansible_reads_them() {
        // Read as Ansible reads it (YAML 1.1), written so Ansible reads the same values back.
        let src = Source::from_text(
            "p.yml",
            "- a: !unsafe '{{ x }}'\n  mode: 0644\n  n: 5\n  f: 1.5\n  big: 1_000\n  m: {k: !unsafe v, o: 0755}\n  b: yes\n  q: 'yes'\n  t: '1:30'\n  s: 'x'\n",
        )
        .ansible();
        let docs = src.documents().expect("yaml");
        let out = serde_yaml::to_string(&to_yaml(&src, &docs[0])).expect("write");
        assert_eq!(
            out,
            "- a: !unsafe '{{ x }}'\n  mode: 420\n  n: 5\n  f: 1.5\n  big: 1000\n  m:\n    k: !unsafe v\n    o: 493\n  b: true\n  q: !unsafe yes\n  t: !unsafe 1:30\n  s: x\n"
        );
    }
}
