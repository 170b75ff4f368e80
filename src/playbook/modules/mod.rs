//! The modules of the built-in runner: one file per module, each with a typed parameter
//! struct, and one registry that both the loader and the executor consult.
//!
//! Each module reports `changed` truthfully — content and mode compared before writing — so
//! a second run of an idempotent playbook reports `changed=0`.
//!
//! Adding a module: a file here with a `#[derive(Deserialize)] #[serde(deny_unknown_fields)]`
//! parameter struct (Ansible's aliases as `#[serde(alias)]`) and an `impl Module`, then one
//! line in [`REGISTRY`]. The loader then accepts the module and checks its arguments.

use std::path::{Path, PathBuf};

use minijinja::Value;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use super::target::{CmdOut, Target};
use super::vars::Templar;

mod assert;
mod blockinfile;
pub mod check;
mod command;
mod copy;
mod debug;
mod fail;
mod file;
mod group;
mod include_vars;
mod lineinfile;
mod package;
pub mod params;
mod pause;
mod ping;
mod replace;
mod service;
mod set_fact;
mod set_stats;
mod slurp;
mod stat;
mod tempfile;
mod template;
mod text_edit;
mod user;
mod wait_for;

#[derive(Debug, Default, Clone)]
pub struct ModResult {
    pub changed: bool,
    pub failed: bool,
    /// The module chose not to act and says so as Ansible's `skipped` (debug's
    /// `verbosity` above the run's): the task counts as skipped.
    pub skipped: bool,
    /// The module decided not to act (a `creates` path exists).
    pub msg: Option<String>,
    /// Module-specific result fields (`rc`, `stdout`, `stat`, ...).
    pub data: Map<String, Json>,
    pub facts: Map<String, Json>,
    pub stats: Map<String, Json>,
}

impl ModResult {
    pub(super) fn fail(msg: impl Into<String>) -> ModResult {
        ModResult {
            failed: true,
            msg: Some(msg.into()),
            ..ModResult::default()
        }
    }

    pub(super) fn ok(changed: bool) -> ModResult {
        ModResult {
            changed,
            ..ModResult::default()
        }
    }

    /// The registered value: what `register:` stores and conditions see.
    pub fn to_json(&self) -> Json {
        let mut m = self.data.clone();
        m.insert("changed".into(), Json::Bool(self.changed));
        m.insert("failed".into(), Json::Bool(self.failed));
        if self.skipped {
            m.insert("skipped".into(), Json::Bool(true));
        }
        if let Some(msg) = &self.msg {
            m.insert("msg".into(), Json::String(msg.clone()));
        }
        if !self.facts.is_empty() {
            m.insert("ansible_facts".into(), Json::Object(self.facts.clone()));
        }
        Json::Object(m)
    }
}

/// A module's early exit: its finished, failed result (boxed: the result is large, and an
/// exit happens once per task).
pub(super) type Exit = Box<ModResult>;

pub(super) fn exit(msg: impl Into<String>) -> Exit {
    Box::new(ModResult::fail(msg))
}

/// The result of a module written with early exits.
fn either(r: Result<ModResult, Exit>) -> ModResult {
    r.unwrap_or_else(|e| *e)
}

/// What a module needs besides its arguments.
pub struct ModCtx<'a> {
    pub target: &'a dyn Target,
    pub templar: &'a Templar,
    /// The task's variables, for `template` and `assert`.
    pub vars: &'a Value,
    /// Where `src:` of `copy` and `template` is looked up, in order.
    pub files: Vec<PathBuf>,
    pub templates: Vec<PathBuf>,
    /// The play's and task's `environment`, for the commands a module runs.
    pub env: Vec<(String, String)>,
    /// `check_mode: true`: report what would change, change nothing (see [`check`]).
    pub check_mode: bool,
    /// `async:` seconds: a command still running then is killed, as Ansible's async
    /// wrapper kills its job (see [`run_async`]).
    pub async_secs: Option<u64>,
}

/// A module: its parameters and what it does with them.
pub trait Module: Sync {
    /// The arguments, read from the rendered task arguments.
    type Params: DeserializeOwned;

    /// Whether the module takes a command line as its argument (`command: ls -l`), kept
    /// as `_raw_params`. Other modules take a map, or `key=value` words.
    fn free_form(&self) -> bool {
        false
    }

    /// Ansible's arguments this module takes without acting on them ([`params::Inert`]).
    const INERT: &'static [params::Inert] = &[];

    fn run(&self, params: Self::Params, mc: &ModCtx) -> ModResult;
}

/// A module as the registry holds it: its parameter struct seen through JSON, so that
/// modules of different parameter types sit in one table.
pub trait Registered: Sync {
    fn free_form(&self) -> bool;
    /// The parameter names, aliases included; `None`: any key (`set_fact`).
    fn param_names(&self) -> Option<&'static [&'static str]>;
    /// Checks one literal argument at load time.
    fn check(&self, key: &str, value: &Json) -> Result<(), String>;
    /// Why an argument the module does not act on is refused with this value, if it is.
    fn refused(&self, key: &str, value: &Json) -> Option<String>;
    /// Reads the rendered arguments and runs the module.
    fn execute(&self, args: &Json, mc: &ModCtx) -> ModResult;
}

impl<M: Module> Registered for M {
    fn free_form(&self) -> bool {
        Module::free_form(self)
    }

    fn param_names(&self) -> Option<&'static [&'static str]> {
        params::names::<M::Params>()
    }

    fn check(&self, key: &str, value: &Json) -> Result<(), String> {
        params::check::<M::Params>(key, value)
    }

    fn refused(&self, key: &str, value: &Json) -> Option<String> {
        params::refused(M::INERT, key, value)
    }

    fn execute(&self, args: &Json, mc: &ModCtx) -> ModResult {
        let args = match args {
            Json::String(raw) if Module::free_form(self) => {
                let mut m = Map::new();
                m.insert("_raw_params".into(), Json::String(raw.clone()));
                Json::Object(m)
            }
            other => other.clone(),
        };
        // A templated value is known only now.
        if let Json::Object(m) = &args
            && let Some(why) = m.iter().find_map(|(k, v)| self.refused(k, v))
        {
            return ModResult::fail(format!("{why}; set `runner: ansible`"));
        }
        match params::parse::<M::Params>(&args) {
            Ok(p) => self.run(p, mc),
            Err(e) => ModResult::fail(e),
        }
    }
}

/// Every module of the built-in runner, by its short name.
static REGISTRY: &[(&str, &dyn Registered)] = &[
    ("command", &command::Command::COMMAND),
    ("shell", &command::Command::SHELL),
    ("raw", &command::Command::RAW),
    ("copy", &copy::Copy),
    ("template", &template::Template),
    ("file", &file::File),
    ("lineinfile", &lineinfile::LineInFile),
    ("blockinfile", &blockinfile::BlockInFile),
    ("stat", &stat::Stat),
    ("slurp", &slurp::Slurp),
    ("wait_for", &wait_for::WaitFor),
    ("debug", &debug::Debug),
    ("set_fact", &set_fact::SetFact),
    ("set_stats", &set_stats::SetStats),
    ("assert", &assert::Assert),
    ("fail", &fail::Fail),
    ("pause", &pause::Pause),
    ("service", &service::Service::SERVICE),
    ("systemd", &service::Service::SYSTEMD),
    ("package", &package::Package::PACKAGE),
    ("apt", &package::Package::APT),
    ("replace", &replace::Replace),
    ("ping", &ping::Ping),
    ("tempfile", &tempfile::TempFile),
    ("include_vars", &include_vars::IncludeVars),
    ("user", &user::User),
    ("group", &group::Group),
];

/// The prefix of the fully qualified names of Ansible's own modules.
pub const BUILTIN_PREFIX: &str = "ansible.builtin.";

/// A module by its short or its `ansible.builtin.` name.
pub fn lookup(name: &str) -> Option<&'static dyn Registered> {
    let short = name.strip_prefix(BUILTIN_PREFIX).unwrap_or(name);
    REGISTRY.iter().find(|(n, _)| *n == short).map(|(_, m)| *m)
}

/// The short names of every module, in registry order (for suggestions).
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(n, _)| *n)
}

pub fn run_module(name: &str, args: &Json, mc: &ModCtx) -> ModResult {
    match lookup(name) {
        Some(m) if mc.check_mode => match check::check_mode(name) {
            Some(check::CheckMode::Supported) => {
                let dry = check::DryRun(mc.target);
                let dmc = ModCtx {
                    target: &dry,
                    templar: mc.templar,
                    vars: mc.vars,
                    files: mc.files.clone(),
                    templates: mc.templates.clone(),
                    env: mc.env.clone(),
                    check_mode: true,
                    async_secs: mc.async_secs,
                };
                m.execute(args, &dmc)
            }
            Some(check::CheckMode::Skipped) => ModResult {
                skipped: true,
                msg: Some(format!(
                    "remote module ({name}) does not support check mode"
                )),
                ..ModResult::default()
            },
            None => ModResult::fail(check::refused(name)),
        },
        Some(m) => m.execute(args, mc),
        None => ModResult::fail(format!(
            "module `{name}` is not implemented by the built-in runner yet; set `runner: ansible`"
        )),
    }
}

/// Whether a module can run as an async job in Ansible: modules run by its "normal" action
/// and those whose action plugins say so; `copy`, `template`, `debug`, `raw`... cannot.
pub fn supports_async(module: &str) -> bool {
    let short = module.strip_prefix(BUILTIN_PREFIX).unwrap_or(module);
    !matches!(
        short,
        "copy"
            | "template"
            | "debug"
            | "set_fact"
            | "set_stats"
            | "assert"
            | "fail"
            | "pause"
            | "include_vars"
            | "raw"
    )
}

/// A module run with `async:` seconds and `poll` above 0, as Ansible runs and polls the job
/// until it ends: the module's result with the job's fields, or, when it took longer than
/// `secs` (a command is killed then, see `command.rs`), Ansible's failure.
pub fn run_async(name: &str, args: &Json, mc: &ModCtx, secs: u64) -> ModResult {
    if !supports_async(name) {
        return ModResult::fail(format!("This action ({name}) does not support async."));
    }
    let started = std::time::Instant::now();
    let mut r = run_module(name, args, mc);
    // A job id shaped as Ansible's (`j<number>.<pid>`); nothing looks it up.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jid = format!("j{stamp}.{}", std::process::id());
    if started.elapsed().as_secs_f64() >= secs as f64 && !r.skipped {
        let mut failed = ModResult::fail(format!(
            "async task did not complete within the requested time - {secs}s"
        ));
        failed.data.insert(
            "async_result".into(),
            serde_json::json!({
                "ansible_job_id": jid, "finished": false, "started": true,
                "stdout": "", "stderr": "", "stdout_lines": [], "stderr_lines": [],
            }),
        );
        return failed;
    }
    r.data.insert("ansible_job_id".into(), Json::String(jid));
    r.data.insert("started".into(), Json::Bool(true));
    r.data.insert("finished".into(), Json::Bool(true));
    r
}

pub(super) fn io(what: &str, path: &str, e: std::io::Error) -> ModResult {
    ModResult::fail(format!("{what} {path}: {e}"))
}

/// Runs a shell script on the target with the task's environment.
fn sh(mc: &ModCtx, script: &str) -> std::io::Result<CmdOut> {
    mc.target.run(&[], Some(script), None, &mc.env)
}

/// A list argument's items as text (`argv`, `that`).
fn texts(items: &[Json]) -> Vec<String> {
    items
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

fn find(dirs: &[PathBuf], src: &str) -> Option<PathBuf> {
    if Path::new(src).is_absolute() {
        return Some(PathBuf::from(src));
    }
    dirs.iter().map(|d| d.join(src)).find(|p| p.exists())
}

/// Writes `content` to `dest` when it differs, then sets `mode` when it differs.
/// `owner:` and `group:` of file, copy and template, set when they differ (a change, as in
/// Ansible); names or numeric ids. `follow: false` changes a symlink itself. The error is
/// the task's failure message.
pub(super) fn own(
    mc: &ModCtx,
    path: &str,
    owner: Option<&str>,
    group: Option<&str>,
    follow: bool,
) -> Result<bool, String> {
    if owner.is_none() && group.is_none() {
        return Ok(false);
    }
    let Some(st) = mc
        .target
        .describe(path, follow, false)
        .map_err(|e| format!("cannot stat {path}: {e}"))?
    else {
        return Ok(false);
    };
    let differs = |want: Option<&str>, name: &str, id: &str| {
        want.is_some_and(|w| {
            st.get(name).and_then(Json::as_str) != Some(w)
                && st.get(id).map(Json::to_string).as_deref() != Some(w)
        })
    };
    if !differs(owner, "pw_name", "uid") && !differs(group, "gr_name", "gid") {
        return Ok(false);
    }
    // `user:` alone would also set the user's login group: say only what was asked.
    let spec = match (owner, group) {
        (Some(o), Some(g)) => format!("{o}:{g}"),
        (Some(o), None) => o.to_owned(),
        (None, Some(g)) => format!(":{g}"),
        (None, None) => return Ok(false),
    };
    let mut argv = vec!["chown".to_owned()];
    if !follow {
        argv.push("-h".to_owned());
    }
    argv.extend([spec, "--".to_owned(), path.to_owned()]);
    match mc.target.run(&argv, None, None, &[]) {
        Ok(out) if out.rc == 0 => Ok(true),
        Ok(out) => Err(format!("chown failed: {}", out.stderr.trim())),
        Err(e) => Err(format!("cannot chown {path}: {e}")),
    }
}

/// Writes `content` to `dest` with `mode`, `owner` and `group`: copy and template.
fn put(
    mc: &ModCtx,
    dest: &str,
    content: &[u8],
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> ModResult {
    let parent = Path::new(dest)
        .parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty());
    if let Some(p) = &parent
        && mc.target.stat(p).ok().flatten().is_none_or(|s| !s.is_dir)
    {
        return ModResult::fail(format!("Destination directory {p} does not exist"));
    }
    let old = match mc.target.read(dest) {
        Ok(o) => o,
        Err(e) => return io("cannot read", dest, e),
    };
    let mut changed = false;
    if old.as_deref() != Some(content) {
        if let Err(e) = mc.target.write(dest, content) {
            return io("cannot write", dest, e);
        }
        changed = true;
    }
    let mut r_mode = None;
    if let Some(m) = mode {
        let current = mc.target.stat(dest).ok().flatten().map(|s| s.mode);
        if current != Some(m) {
            if let Err(e) = mc.target.chmod(dest, m) {
                return io("cannot chmod", dest, e);
            }
            changed = true;
        }
        r_mode = Some(m);
    }
    match own(mc, dest, owner, group, true) {
        Ok(c) => changed |= c,
        Err(e) => return ModResult::fail(e),
    }
    let mut r = ModResult::ok(changed);
    // What Ansible's copy and template return that needs no second look at the target.
    r.data.insert("dest".into(), Json::String(dest.to_owned()));
    r.data
        .insert("checksum".into(), Json::String(sha1_hex(content)));
    r.data.insert("size".into(), Json::from(content.len()));
    r.data.insert("state".into(), Json::String("file".into()));
    if let Some(m) = r_mode {
        r.data
            .insert("mode".into(), Json::String(format!("{m:04o}")));
    }
    r
}

/// The SHA-1 of `data` in hex: Ansible's `checksum`.
fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    crate::definition::hex(&sha1::Sha1::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_has_a_key_set_and_builtin_names_resolve() {
        for name in names() {
            let m = lookup(name).expect("registered");
            if name != "set_fact" {
                assert!(m.param_names().is_some_and(|p| !p.is_empty()), "{name}");
            }
            assert!(lookup(&format!("{BUILTIN_PREFIX}{name}")).is_some());
        }
        assert!(lookup("community.general.ufw").is_none());
    }
}
