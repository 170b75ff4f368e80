//! The modules of the built-in runner. Each reports `changed` truthfully — content and mode
//! compared before writing — so a second run of an idempotent playbook reports `changed=0`.

use std::path::{Path, PathBuf};

use minijinja::Value;
use serde_json::{Map, Value as Json, json};

use super::target::Target;
use super::vars::Templar;

#[derive(Debug, Default, Clone)]
pub struct ModResult {
    pub changed: bool,
    pub failed: bool,
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
        if let Some(msg) = &self.msg {
            m.insert("msg".into(), Json::String(msg.clone()));
        }
        if !self.facts.is_empty() {
            m.insert("ansible_facts".into(), Json::Object(self.facts.clone()));
        }
        Json::Object(m)
    }
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
}

pub(super) fn arg<'a>(args: &'a Json, names: &[&str]) -> Option<&'a Json> {
    names.iter().find_map(|n| args.get(n))
}

pub(super) fn arg_str(args: &Json, names: &[&str]) -> Option<String> {
    arg(args, names).map(|v| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A file mode as Ansible reads it: `"0644"`, `"644"`, or an integer written like 0644.
pub(super) fn mode_of(args: &Json) -> Result<Option<u32>, String> {
    let Some(v) = args.get("mode") else {
        return Ok(None);
    };
    let digits = match v {
        Json::String(s) => s.trim_start_matches("0o").to_owned(),
        // YAML 1.2 reads 0644 as the integer 644; its digits are the octal mode meant.
        Json::Number(n) => n.to_string(),
        _ => return Err("mode must be an octal string like \"0644\"".into()),
    };
    u32::from_str_radix(&digits, 8)
        .map(Some)
        .map_err(|_| format!("invalid mode {v}"))
}

pub(super) fn io(what: &str, path: &str, e: std::io::Error) -> ModResult {
    ModResult::fail(format!("{what} {path}: {e}"))
}

pub fn run_module(name: &str, args: &Json, mc: &ModCtx) -> ModResult {
    match name {
        "command" | "shell" | "raw" => command(name, args, mc),
        "copy" => copy(args, mc, None),
        "template" => template(args, mc),
        "file" => file(args, mc),
        "stat" => stat(args, mc),
        "lineinfile" => super::lines::lineinfile(args, mc),
        "blockinfile" => super::lines::blockinfile(args, mc),
        "slurp" => super::system::slurp(args, mc),
        "wait_for" => super::system::wait_for(args, mc),
        "pause" => super::system::pause(args, mc),
        "service" | "systemd" => super::system::service(name, args, mc),
        "package" | "apt" => super::system::package(name, args, mc),
        "set_fact" => {
            let mut r = ModResult::ok(false);
            if let Json::Object(m) = args {
                r.facts = m
                    .iter()
                    .filter(|(k, _)| k.as_str() != "cacheable")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
            }
            r
        }
        "set_stats" => {
            let mut r = ModResult::ok(false);
            if let Some(Json::Object(m)) = args.get("data") {
                r.stats = m.clone();
            }
            r
        }
        "debug" => {
            let mut r = ModResult::ok(false);
            match (args.get("msg"), args.get("var")) {
                (Some(m), _) => {
                    r.data.insert("msg".into(), m.clone());
                }
                (None, Some(Json::String(var))) => {
                    let v = mc
                        .templar
                        .eval(var, mc.vars)
                        .ok()
                        .and_then(|v| serde_json::to_value(&v).ok());
                    r.data.insert(
                        var.clone(),
                        v.unwrap_or(Json::String("VARIABLE IS NOT DEFINED!".into())),
                    );
                }
                _ => {
                    r.data
                        .insert("msg".into(), Json::String("Hello world!".into()));
                }
            }
            r
        }
        "fail" => ModResult::fail(
            arg_str(args, &["msg"]).unwrap_or_else(|| "Failed as requested from task".into()),
        ),
        "assert" => {
            let that: Vec<String> = match args.get("that") {
                Some(Json::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect(),
                Some(Json::String(s)) => vec![s.clone()],
                Some(Json::Bool(b)) => vec![b.to_string()],
                _ => return ModResult::fail("assert needs `that:`"),
            };
            for cond in &that {
                match mc.templar.condition(cond, mc.vars) {
                    Ok(true) => {}
                    Ok(false) => {
                        let msg = arg_str(args, &["fail_msg", "msg"])
                            .unwrap_or_else(|| "Assertion failed".into());
                        let mut r = ModResult::fail(msg);
                        r.data
                            .insert("assertion".into(), Json::String(cond.clone()));
                        return r;
                    }
                    Err(e) => return ModResult::fail(format!("assert: {e}")),
                }
            }
            let mut r = ModResult::ok(false);
            r.msg = Some(
                arg_str(args, &["success_msg"]).unwrap_or_else(|| "All assertions passed".into()),
            );
            r
        }
        other => ModResult::fail(format!(
            "module `{other}` is not implemented by the built-in runner yet; set `runner: ansible`"
        )),
    }
}

fn command(name: &str, args: &Json, mc: &ModCtx) -> ModResult {
    let raw = match args {
        Json::String(s) => Some(s.clone()),
        _ => arg_str(args, &["_raw_params", "cmd"]),
    };
    let argv: Option<Vec<String>> = match args.get("argv") {
        Some(Json::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect(),
        ),
        _ => None,
    };
    // raw is a bare command line: Ansible ignores creates/removes for it and reports a change
    // every time.
    let guarded = name != "raw";
    if guarded
        && let Some(creates) = arg_str(args, &["creates"])
        && mc.target.stat(&creates).ok().flatten().is_some()
    {
        let mut r = ModResult::ok(false);
        r.msg = Some(format!("Did not run command since '{creates}' exists"));
        r.data.insert("rc".into(), json!(0));
        return r;
    }
    if guarded
        && let Some(removes) = arg_str(args, &["removes"])
        && mc.target.stat(&removes).ok().flatten().is_none()
    {
        let mut r = ModResult::ok(false);
        r.msg = Some(format!(
            "Did not run command since '{removes}' does not exist"
        ));
        r.data.insert("rc".into(), json!(0));
        return r;
    }
    let chdir = arg_str(args, &["chdir"]);
    let (out, shown) = if name == "command" {
        let argv = match (argv, &raw) {
            (Some(a), _) => a,
            (None, Some(r)) => match shlex::split(r) {
                Some(a) => a,
                None => return ModResult::fail(format!("cannot split the command line: {r}")),
            },
            (None, None) => return ModResult::fail("no command given"),
        };
        let shown = shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_default();
        (mc.target.run(&argv, None, chdir.as_deref(), &mc.env), shown)
    } else {
        let Some(script) = raw else {
            return ModResult::fail("no command given");
        };
        (
            mc.target.run(&[], Some(&script), chdir.as_deref(), &mc.env),
            script,
        )
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return ModResult::fail(format!("[Errno 2] No such file or directory: {shown}: {e}"));
        }
    };
    let mut r = ModResult::ok(true);
    let lines = |s: &str| Json::Array(s.lines().map(|l| Json::String(l.to_owned())).collect());
    let stdout = out.stdout.trim_end_matches('\n').to_owned();
    let stderr = out.stderr.trim_end_matches('\n').to_owned();
    r.data.insert("cmd".into(), Json::String(shown));
    r.data.insert("rc".into(), json!(out.rc));
    r.data.insert("stdout_lines".into(), lines(&stdout));
    r.data.insert("stderr_lines".into(), lines(&stderr));
    r.data.insert("stdout".into(), Json::String(stdout));
    r.data.insert("stderr".into(), Json::String(stderr));
    if out.rc != 0 {
        r.failed = true;
        r.msg = Some("non-zero return code".into());
    }
    r
}

fn find(dirs: &[PathBuf], src: &str) -> Option<PathBuf> {
    if Path::new(src).is_absolute() {
        return Some(PathBuf::from(src));
    }
    dirs.iter().map(|d| d.join(src)).find(|p| p.exists())
}

/// Writes `content` to `dest` when it differs, then sets `mode` when it differs.
pub(super) fn put(mc: &ModCtx, dest: &str, content: &[u8], mode: Option<u32>) -> ModResult {
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
    if let Some(m) = mode {
        let current = mc.target.stat(dest).ok().flatten().map(|s| s.mode);
        if current != Some(m) {
            if let Err(e) = mc.target.chmod(dest, m) {
                return io("cannot chmod", dest, e);
            }
            changed = true;
        }
    }
    let mut r = ModResult::ok(changed);
    r.data.insert("dest".into(), Json::String(dest.to_owned()));
    r
}

fn copy(args: &Json, mc: &ModCtx, rendered: Option<Vec<u8>>) -> ModResult {
    let Some(mut dest) = arg_str(args, &["dest"]) else {
        return ModResult::fail("dest is required");
    };
    let mode = match mode_of(args) {
        Ok(m) => m,
        Err(e) => return ModResult::fail(e),
    };
    let content: Vec<u8> = match (rendered, args.get("content"), arg_str(args, &["src"])) {
        (Some(c), _, _) => c,
        (None, Some(c), _) => python_str(c).into_bytes(),
        (None, None, Some(src)) => {
            let Some(path) = find(&mc.files, &src) else {
                return ModResult::fail(format!("Could not find or access '{src}'"));
            };
            if dest.ends_with('/')
                || mc
                    .target
                    .stat(&dest)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.is_dir)
            {
                let base = Path::new(&src)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                dest = format!("{}/{base}", dest.trim_end_matches('/'));
            }
            match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => return io("cannot read", &path.display().to_string(), e),
            }
        }
        (None, None, None) => return ModResult::fail("src (or content) is required"),
    };
    put(mc, &dest, &content, mode)
}

fn template(args: &Json, mc: &ModCtx) -> ModResult {
    let Some(src) = arg_str(args, &["src"]) else {
        return ModResult::fail("src is required");
    };
    let Some(path) = find(&mc.templates, &src) else {
        return ModResult::fail(format!("Could not find or access '{src}'"));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return io("cannot read", &path.display().to_string(), e),
    };
    let rendered = match mc.templar.render_template(&text, mc.vars) {
        Ok(r) => r,
        Err(e) => return ModResult::fail(format!("{}: {e}", path.display())),
    };
    copy(args, mc, Some(rendered.into_bytes()))
}

fn file(args: &Json, mc: &ModCtx) -> ModResult {
    let Some(path) = arg_str(args, &["path", "dest", "name"]) else {
        return ModResult::fail("path is required");
    };
    let mode = match mode_of(args) {
        Ok(m) => m,
        Err(e) => return ModResult::fail(e),
    };
    let state = arg_str(args, &["state"]).unwrap_or_else(|| "file".into());
    let current = match mc.target.stat(&path) {
        Ok(s) => s,
        Err(e) => return io("cannot stat", &path, e),
    };
    let mut changed = false;
    match state.as_str() {
        "absent" => {
            if current.is_some() {
                if let Err(e) = mc.target.remove(&path) {
                    return io("cannot remove", &path, e);
                }
                changed = true;
            }
            let mut r = ModResult::ok(changed);
            r.data.insert("path".into(), Json::String(path));
            r.data.insert("state".into(), Json::String("absent".into()));
            return r;
        }
        "directory" => match &current {
            Some(s) if s.is_dir => {}
            Some(_) => return ModResult::fail(format!("{path} exists and is not a directory")),
            None => {
                // Like Ansible, give every directory this creates the requested mode.
                let mut missing = Vec::new();
                let mut p = Path::new(&path);
                while mc
                    .target
                    .stat(&p.display().to_string())
                    .ok()
                    .flatten()
                    .is_none()
                {
                    missing.push(p.display().to_string());
                    match p.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                        _ => break,
                    }
                }
                if let Err(e) = mc.target.mkdir_p(&path) {
                    return io("cannot create", &path, e);
                }
                if let Some(m) = mode {
                    for d in missing.iter().rev() {
                        if let Err(e) = mc.target.chmod(d, m) {
                            return io("cannot chmod", d, e);
                        }
                    }
                }
                changed = true;
            }
        },
        "touch" => {
            if current.is_none()
                && let Err(e) = mc.target.write(&path, b"")
            {
                return io("cannot create", &path, e);
            }
            // Ansible's touch always reports a change: it updates the timestamps.
            changed = true;
        }
        "file" => {
            if current.is_none() {
                return ModResult::fail(format!("file ({path}) is absent, cannot continue"));
            }
        }
        other => return ModResult::fail(format!("state `{other}` is not in the built-in subset")),
    }
    if let Some(m) = mode {
        let now = mc.target.stat(&path).ok().flatten().map(|s| s.mode);
        if now != Some(m) {
            if let Err(e) = mc.target.chmod(&path, m) {
                return io("cannot chmod", &path, e);
            }
            changed = true;
        }
    }
    let mut r = ModResult::ok(changed);
    r.data.insert("path".into(), Json::String(path));
    r.data.insert("state".into(), Json::String(state));
    r
}

fn stat(args: &Json, mc: &ModCtx) -> ModResult {
    let Some(path) = arg_str(args, &["path"]) else {
        return ModResult::fail("path is required");
    };
    let mut r = ModResult::ok(false);
    let st = match mc.target.stat(&path) {
        Ok(Some(s)) => json!({
            "exists": true, "isdir": s.is_dir, "isreg": s.is_file,
            "mode": format!("{:04o}", s.mode), "size": s.size, "path": path,
        }),
        Ok(None) => json!({"exists": false}),
        Err(e) => return io("cannot stat", &path, e),
    };
    r.data.insert("stat".into(), st);
    r
}

/// A value as Python's `str()` writes it, which is what Ansible puts in a file: `True`,
/// `None`, `42`; lists and maps as JSON.
fn python_str(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".to_owned(),
        Json::Bool(false) => "False".to_owned(),
        Json::Null => "None".to_owned(),
        other => other.to_string(),
    }
}
