//! Modules that read or wait on the target's system: `slurp`, `wait_for`, `pause`,
//! `service`/`systemd` and `package`/`apt`.
//!
//! Everything that touches the target goes through `Target` (files, or short shell scripts
//! run there), so the same code works over SSH. Only the timers of `wait_for` and `pause`
//! run on the engine's side.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use super::lines::{Exit, exit, flag};
use super::modules::{ModCtx, ModResult, arg, arg_str, io};
use super::target::{CmdOut, quote};

/// An integer argument; Ansible's `int` type takes `5`, `"5"` and `5.0` but not `5.5`.
fn int_arg(args: &Json, name: &str, default: i64) -> Result<i64, String> {
    let bad =
        |v: &Json| format!("argument '{name}' is of type {v} and we were unable to convert to int");
    match args.get(name) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
            _ => Err(bad(&Json::Number(n.clone()))),
        },
        Some(Json::String(s)) => s.trim().parse().map_err(|_| bad(&Json::String(s.clone()))),
        Some(other) => Err(bad(other)),
    }
}

/// Runs a shell script on the target with the task's environment.
fn sh(mc: &ModCtx, script: &str) -> std::io::Result<CmdOut> {
    mc.target.run(&[], Some(script), None, &mc.env)
}

pub fn slurp(args: &Json, mc: &ModCtx) -> ModResult {
    let Some(src) = arg_str(args, &["src", "path"]) else {
        return ModResult::fail("missing required arguments: src");
    };
    match mc.target.stat(&src) {
        Ok(Some(s)) if s.is_dir => {
            return ModResult::fail(format!("Source is a directory and must be a file: {src}"));
        }
        Ok(_) => {}
        Err(e) => return io("cannot stat", &src, e),
    }
    let data = match mc.target.read(&src) {
        Ok(Some(d)) => d,
        Ok(None) => return ModResult::fail(format!("File not found: {src}")),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return ModResult::fail(format!("File is not readable: {src}"));
        }
        Err(e) => return ModResult::fail(format!("Unable to slurp file: {src}: {e}")),
    };
    let mut r = ModResult::ok(false);
    r.data.insert(
        "content".into(),
        Json::String(base64::engine::general_purpose::STANDARD.encode(data)),
    );
    r.data.insert("source".into(), Json::String(src));
    r.data
        .insert("encoding".into(), Json::String("base64".into()));
    r
}

/// What one look at a port found.
enum Probe {
    Open,
    Closed,
}

/// Tries a TCP connection from the target itself (the port may be reachable only there):
/// with `python3` when it has one, else bash's `/dev/tcp`.
fn probe(mc: &ModCtx, host: &str, port: u16, timeout: u64) -> Result<Probe, String> {
    let (h, t) = (quote(host), timeout.max(1));
    let script = format!(
        "if command -v python3 >/dev/null 2>&1; then\n\
         python3 -c 'import socket,sys\n\
         try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()\n\
         except OSError:\n    sys.exit(1)' {h} {port} {t} 2>/dev/null && exit 0; exit 1\n\
         elif command -v bash >/dev/null 2>&1; then\n\
         timeout {t} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' {h} {port} 2>/dev/null && exit 0; exit 1\n\
         else echo 'the target has neither python3 nor bash to try a port with' >&2; exit 2; fi"
    );
    let out = sh(mc, &script).map_err(|e| format!("cannot try {host}:{port}: {e}"))?;
    match out.rc {
        0 => Ok(Probe::Open),
        1 => Ok(Probe::Closed),
        rc => Err(format!(
            "cannot try {host}:{port} (exit {rc}): {}",
            out.stderr.trim()
        )),
    }
}

pub fn wait_for(args: &Json, mc: &ModCtx) -> ModResult {
    match wait_for_inner(args, mc) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn wait_for_inner(args: &Json, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| {
        let mut r = exit(m);
        r.data.insert("elapsed".into(), json!(0));
        r
    };
    let int = |name: &str, default: i64| int_arg(args, name, default).map_err(fail);
    let host = arg_str(args, &["host"]).unwrap_or_else(|| "127.0.0.1".into());
    let timeout = int("timeout", 300)?.max(0).unsigned_abs();
    let connect_timeout = int("connect_timeout", 5)?.max(1).unsigned_abs();
    let delay = int("delay", 0)?.max(0).unsigned_abs();
    let sleep = int("sleep", 1)?.max(0).unsigned_abs();
    let port = match arg(args, &["port"]) {
        None | Some(Json::Null) => None,
        Some(_) => {
            let p = int("port", 0)?;
            Some(u16::try_from(p).map_err(|_| fail(format!("invalid port {p}")))?)
        }
    };
    let path = arg_str(args, &["path"]);
    let search_regex = arg_str(args, &["search_regex"]);
    let state = arg_str(args, &["state"]).unwrap_or_else(|| "started".into());
    let custom_msg = arg_str(args, &["msg"]);
    let regex = match &search_regex {
        Some(p) => Some(
            regex::RegexBuilder::new(p)
                .multi_line(true)
                .build()
                .map_err(|e| fail(format!("Invalid regular expression: {e}")))?,
        ),
        None => None,
    };
    if !["absent", "drained", "present", "started", "stopped"].contains(&state.as_str()) {
        return Err(fail(format!(
            "value of state must be one of: absent, drained, present, started, stopped, got: {state}"
        )));
    }
    if port.is_some() && path.is_some() {
        return Err(fail(
            "port and path parameter can not both be passed to wait_for".into(),
        ));
    }
    if path.is_some() && (state == "stopped" || state == "drained") {
        return Err(fail(format!(
            "state={state} should only be used for checking a port in the wait_for module"
        )));
    }
    if state == "drained" {
        return Err(fail(
            "wait_for state=drained is not in the built-in subset; set `runner: ansible`".into(),
        ));
    }
    if port.is_some() && regex.is_some() {
        return Err(fail(
            "wait_for search_regex on a port is not in the built-in subset; set `runner: ansible`"
                .into(),
        ));
    }

    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(delay));
    let end = start + Duration::from_secs(timeout);
    let mut groups: Vec<Json> = Vec::new();
    let mut groupdict = Map::new();
    let waiting_gone = state == "absent" || state == "stopped";
    let mut done = false;
    if port.is_none() && path.is_none() {
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        done = true;
    }
    while !done && Instant::now() < end {
        if let Some(p) = &path {
            let exists = match mc.target.stat(p) {
                Ok(s) => s.is_some(),
                Err(e) => {
                    let mut r = fail(
                        custom_msg
                            .clone()
                            .unwrap_or(format!("Failed to stat {p}, {e}")),
                    );
                    r.data
                        .insert("elapsed".into(), json!(start.elapsed().as_secs()));
                    return Err(r);
                }
            };
            done = match (waiting_gone, exists, &regex) {
                (true, exists, _) => !exists,
                (false, false, _) => false,
                (false, true, None) => true,
                (false, true, Some(re)) => {
                    // An unreadable file is waited on, as Ansible does.
                    let text = mc.target.read(p).ok().flatten().unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    match re.captures(&text) {
                        Some(c) => {
                            groups = c
                                .iter()
                                .skip(1)
                                .map(|m| m.map_or(Json::Null, |m| json!(m.as_str())))
                                .collect();
                            for name in re.capture_names().flatten() {
                                groupdict.insert(
                                    name.into(),
                                    c.name(name).map_or(Json::Null, |m| json!(m.as_str())),
                                );
                            }
                            true
                        }
                        None => false,
                    }
                }
            };
        } else if let Some(port) = port {
            let left = end.saturating_duration_since(Instant::now());
            let ct = if waiting_gone {
                connect_timeout
            } else {
                connect_timeout.min(left.as_secs_f64().ceil() as u64)
            };
            let open = match probe(mc, &host, port, ct) {
                Ok(p) => matches!(p, Probe::Open),
                Err(e) => return Err(fail(e)),
            };
            done = open != waiting_gone;
        }
        if !done {
            std::thread::sleep(Duration::from_secs(sleep));
        }
    }
    let elapsed = start.elapsed().as_secs();
    if !done {
        let what = match (&port, &path, &search_regex, waiting_gone) {
            (Some(p), _, _, true) => format!("Timeout when waiting for {host}:{p} to stop."),
            (Some(p), _, _, false) => format!("Timeout when waiting for {host}:{p}"),
            (None, Some(p), _, true) => format!("Timeout when waiting for {p} to be absent."),
            (None, Some(p), Some(re), false) => {
                format!("Timeout when waiting for search string {re} in {p}")
            }
            (None, Some(p), None, false) => format!("Timeout when waiting for file {p}"),
            (None, None, _, _) => "Timeout".into(),
        };
        let mut r = exit(custom_msg.unwrap_or(what));
        r.data.insert("elapsed".into(), json!(elapsed));
        return Err(r);
    }
    let mut r = ModResult::ok(false);
    r.data.insert("state".into(), json!(state));
    r.data.insert("port".into(), json!(port));
    r.data.insert("path".into(), json!(path));
    r.data.insert("search_regex".into(), json!(search_regex));
    r.data.insert("match_groups".into(), Json::Array(groups));
    r.data
        .insert("match_groupdict".into(), Json::Object(groupdict));
    r.data.insert("elapsed".into(), json!(elapsed));
    Ok(r)
}

/// A float as Python's `str()` writes it: `1.0`, `1.25`.
fn py_float(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

pub fn pause(args: &Json, _mc: &ModCtx) -> ModResult {
    // Ansible reads these with Python's int(): a float is cut to its whole part.
    let number = |name: &str| -> Result<Option<i64>, String> {
        match args.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.abs() < 1e15)
                        .map(|f| f.trunc() as i64)
                })
                .map(Some)
                .ok_or_else(|| format!("argument '{name}' is not an integer: {n}")),
            Some(Json::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("argument '{name}' is not an integer: {s:?}")),
            Some(other) => Err(format!("argument '{name}' is not an integer: {other}")),
        }
    };
    let (minutes, seconds) = match (number("minutes"), number("seconds")) {
        (Ok(m), Ok(s)) => (m, s),
        (Err(e), _) | (_, Err(e)) => return ModResult::fail(e),
    };
    let (total, unit) = match (minutes, seconds) {
        (Some(_), Some(_)) => {
            return ModResult::fail("parameters are mutually exclusive: minutes|seconds");
        }
        (Some(m), None) => (m.saturating_mul(60), "minutes"),
        (None, Some(s)) => (s, "seconds"),
        (None, None) => {
            return ModResult::fail(
                "pause without seconds or minutes waits for keyboard input, and the built-in \
                 runner does not prompt; give `seconds:` or `minutes:`, or set `runner: ansible`",
            );
        }
    };
    let start = Instant::now();
    // Like Ansible, never less than a second.
    std::thread::sleep(Duration::from_secs(total.max(1).unsigned_abs()));
    let took = start.elapsed().as_secs_f64();
    let shown = if unit == "minutes" { took / 60.0 } else { took };
    let mut r = ModResult::ok(false);
    r.data.insert("rc".into(), json!(0));
    r.data.insert("stderr".into(), json!(""));
    r.data.insert(
        "stdout".into(),
        json!(format!(
            "Paused for {} {unit}",
            py_float((shown * 100.0).round() / 100.0)
        )),
    );
    r.data.insert("delta".into(), json!(took as u64));
    r.data.insert("echo".into(), json!(true));
    r.data.insert("user_input".into(), json!(""));
    r
}

/// Whether a sysvinit service runs, from its `status` action, as Ansible's service module
/// decides it: LSB exit codes first, then the words of a one-line answer, then exit 0.
pub(super) fn sysv_running(name: &str, rc: i32, stdout: &str) -> Option<bool> {
    if [1, 2, 3, 4, 69].contains(&rc) {
        return Some(false);
    }
    if stdout.matches('\n').count() <= 1 {
        let clean = stdout.to_lowercase().replace(&name.to_lowercase(), "");
        if clean.contains("stop") {
            return Some(false);
        }
        if clean.contains("run") {
            return Some(!clean.contains("not "));
        }
        if clean.contains("start") && !clean.contains("not ") {
            return Some(true);
        }
        if [
            "could not access pid file",
            "is dead and pid file exists",
            "dead but subsys locked",
            "dead but pid file exists",
        ]
        .iter()
        .any(|w| clean.contains(w))
        {
            return Some(false);
        }
    }
    (rc == 0).then_some(true)
}

/// How the target manages services.
enum Init {
    Systemd,
    Sysv,
}

/// A service action's command, its output captured in a file: a daemon it starts inherits
/// that file rather than the pipes of this run, which would otherwise stay open until the
/// daemon exits.
fn detached(cmd: &str) -> String {
    format!(
        "o=$(mktemp) || exit 125\n{cmd} >\"$o\" 2>&1 </dev/null\nrc=$?\ncat \"$o\"\nrm -f \"$o\"\nexit $rc"
    )
}

pub fn service(module: &str, args: &Json, mc: &ModCtx) -> ModResult {
    match service_inner(module, args, mc) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn service_inner(module: &str, args: &Json, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let Some(name) = arg_str(args, &["name", "service", "unit"]) else {
        return Err(fail("missing required arguments: name".into()));
    };
    let state = arg_str(args, &["state"]);
    let enabled = match arg(args, &["enabled"]) {
        None | Some(Json::Null) => None,
        Some(_) => Some(flag(args, &["enabled"]).map_err(fail)?),
    };
    let daemon_reload = flag(args, &["daemon_reload", "daemon-reload"]).map_err(fail)?;
    if let Some(s) = &state
        && !["started", "stopped", "restarted", "reloaded"].contains(&s.as_str())
    {
        return Err(fail(format!(
            "value of state must be one of: reloaded, restarted, started, stopped, got: {s}"
        )));
    }
    if state.is_none() && enabled.is_none() && !daemon_reload {
        return Err(fail(if module == "service" {
            "Neither argument 'state' nor 'enabled' supplied".into()
        } else {
            "one of the following is required: state, enabled, daemon_reload".into()
        }));
    }
    // The name becomes part of `/etc/init.d/NAME` and of globs: a path is not a name.
    if name.is_empty() || name.contains('/') {
        return Err(fail(format!("invalid service name {name:?}")));
    }
    let q = quote(&name);
    let init_script = quote(&format!("/etc/init.d/{name}"));
    let run = |script: &str| sh(mc, script).map_err(|e| fail(format!("{name}: {e}")));
    // One look at how the target manages services, to keep SSH round trips few.
    let found = run(&format!(
        "if [ -d /run/systemd/system ]; then echo systemd; else echo sysv; fi\n\
         command -v service >/dev/null 2>&1 && echo service\n\
         [ -e {init_script} ] && echo script\n\
         exit 0"
    ))?;
    let has = |w: &str| found.stdout.lines().any(|l| l == w);
    let init = if has("systemd") {
        Init::Systemd
    } else {
        Init::Sysv
    };
    // Through `service` where there is one, as Ansible does; else the script itself.
    let sysv = |action: &str| {
        if has("service") {
            format!("service {q} {action}")
        } else {
            format!("{init_script} {action}")
        }
    };
    let mut changed = false;
    let (running, is_enabled) = match init {
        Init::Systemd => {
            if daemon_reload {
                let out = run("systemctl daemon-reload")?;
                if out.rc != 0 {
                    return Err(fail(format!(
                        "failure {} during daemon-reload: {}",
                        out.rc, out.stderr
                    )));
                }
            }
            let out = run(&format!(
                "systemctl show {q} --property=LoadState --property=ActiveState\n\
                 if systemctl is-enabled {q} >/dev/null 2>&1; then echo Enabled=yes; else echo Enabled=no; fi"
            ))?;
            let field = |k: &str| {
                out.stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or("")
                    .to_owned()
            };
            if field("LoadState") == "not-found" && (state.is_some() || enabled.is_some()) {
                return Err(fail(format!(
                    "Could not find the requested service {name}: host"
                )));
            }
            let active = field("ActiveState");
            (
                active == "active" || active == "activating" || active == "reloading",
                field("Enabled") == "yes",
            )
        }
        Init::Sysv => {
            if !has("script") && !has("service") {
                return Err(fail(
                    "cannot find 'service' binary or init script for service,  possible typo in service name?, aborting"
                        .into(),
                ));
            }
            let running = match &state {
                None => false,
                Some(_) => {
                    let out = run(&detached(&sysv("status")))?;
                    sysv_running(&name, out.rc, &out.stdout).ok_or_else(|| {
                        fail(
                            "failed determining service state, possible typo of service name?"
                                .into(),
                        )
                    })?
                }
            };
            let is_enabled = match enabled {
                None => false,
                // The quoted name matches only itself inside the glob.
                Some(_) => {
                    run(&format!(
                        "for f in /etc/rc[2345].d/S[0-9][0-9]{q}; do [ -e \"$f\" ] && exit 0; done; exit 1"
                    ))?
                    .rc == 0
                }
            };
            (running, is_enabled)
        }
    };

    if let Some(want) = enabled
        && want != is_enabled
    {
        let word = if want { "enable" } else { "disable" };
        let script = match init {
            Init::Systemd => format!("systemctl {word} {q}"),
            // update-rc.d needs its links before it can enable or disable them.
            Init::Sysv => format!(
                "if command -v update-rc.d >/dev/null 2>&1; then\n\
                 ls /etc/rc?.d/[SK][0-9][0-9]{q} >/dev/null 2>&1 || update-rc.d {q} defaults || exit $?\n\
                 exec update-rc.d {q} {word}\n\
                 elif command -v chkconfig >/dev/null 2>&1; then exec chkconfig {q} {onoff}\n\
                 else echo 'neither update-rc.d nor chkconfig is there' >&2; exit 127; fi",
                onoff = if want { "on" } else { "off" }
            ),
        };
        let out = run(&script)?;
        if out.rc != 0 {
            return Err(fail(format!(
                "Unable to {word} service {name}: {}{}",
                out.stdout, out.stderr
            )));
        }
        changed = true;
    }

    let action = match state.as_deref() {
        Some("started") if !running => Some("start"),
        Some("stopped") if running => Some("stop"),
        Some("restarted") => Some("restart"),
        Some("reloaded") if running => Some("reload"),
        // Ansible starts a stopped service it was asked to reload.
        Some("reloaded") => Some("start"),
        _ => None,
    };
    if let Some(action) = action {
        let script = match init {
            Init::Systemd => detached(&format!("systemctl {action} {q}")),
            Init::Sysv => detached(&sysv(action)),
        };
        let out = run(&script)?;
        if out.rc != 0 {
            let mut r = fail(format!(
                "Unable to {action} service {name}: {}{}",
                out.stdout, out.stderr
            ));
            r.data.insert("rc".into(), json!(out.rc));
            return Err(r);
        }
        changed = true;
    }
    let mut r = ModResult::ok(changed);
    r.data.insert("name".into(), json!(name));
    if let Some(s) = &state {
        r.data.insert("state".into(), json!(s));
    }
    if let Some(e) = enabled {
        r.data.insert("enabled".into(), json!(e));
    }
    Ok(r)
}

/// A package argument as Ansible's list type reads it: a list, or a comma-separated string.
fn package_names(args: &Json) -> Result<Vec<String>, String> {
    let names: Vec<String> = match arg(args, &["name", "package", "pkg"]) {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(Json::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
        Some(other) => vec![other.to_string()],
    };
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.starts_with('-') || n.chars().any(char::is_whitespace))
    {
        return Err(format!("invalid package name {bad:?}"));
    }
    Ok(names)
}

/// A package as named in the task: `name`, `name=version` or `name=version*`.
struct Wanted {
    name: String,
    version: Option<String>,
}

impl Wanted {
    fn parse(spec: &str) -> Wanted {
        match spec.split_once('=') {
            Some((n, v)) => Wanted {
                name: n.to_owned(),
                version: Some(v.to_owned()),
            },
            None => Wanted {
                name: spec.to_owned(),
                version: None,
            },
        }
    }

    /// Whether the installed version (if any) satisfies what the task asks for.
    fn satisfied_by(&self, installed: Option<&str>) -> bool {
        match (installed, &self.version) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(have), Some(want)) => match want.strip_suffix('*') {
                Some(prefix) => have.starts_with(prefix),
                None => have == want,
            },
        }
    }
}

/// What dpkg and apt say about one package: the installed and the candidate version.
struct PkgState {
    installed: Option<String>,
    candidate: Option<String>,
}

/// Queries every package in one script; each answers `name<TAB>installed<TAB>candidate`.
fn query_packages(mc: &ModCtx, names: &[&str], candidates: bool) -> Result<Vec<PkgState>, String> {
    let list: Vec<String> = names.iter().map(|n| quote(n)).collect();
    let candidate = if candidates {
        "c=$(apt-cache policy -- \"$p\" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1)"
    } else {
        "c="
    };
    let script = format!(
        "command -v dpkg-query >/dev/null 2>&1 || {{ echo 'no dpkg-query' >&2; exit 2; }}\n\
         for p in {}; do\n\
         v=$(dpkg-query -W -f='${{Status}}\\t${{Version}}\\n' -- \"$p\" 2>/dev/null | sed -n 's/^install ok installed\\t//p' | head -n 1)\n\
         {candidate}\n\
         printf '%s\\t%s\\t%s\\n' \"$p\" \"$v\" \"$c\"\n\
         done",
        list.join(" ")
    );
    let out = sh(mc, &script).map_err(|e| format!("cannot query packages: {e}"))?;
    if out.rc == 2 {
        return Err(
            "the built-in package module manages Debian packages (dpkg and apt) only, and the \
             target has no dpkg-query; set `runner: ansible`"
                .into(),
        );
    }
    if out.rc != 0 {
        return Err(format!("cannot query packages: {}", out.stderr.trim()));
    }
    let nonempty = |s: &str| (!s.is_empty() && s != "(none)").then(|| s.to_owned());
    let states: Vec<PkgState> = out
        .stdout
        .lines()
        .map(|l| {
            let mut f = l.split('\t').skip(1);
            PkgState {
                installed: f.next().and_then(nonempty),
                candidate: f.next().and_then(nonempty),
            }
        })
        .collect();
    if states.len() != names.len() {
        return Err(format!(
            "unexpected answer to the package query: {}",
            out.stdout
        ));
    }
    Ok(states)
}

pub fn package(module: &str, args: &Json, mc: &ModCtx) -> ModResult {
    match package_inner(module, args, mc) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn package_inner(module: &str, args: &Json, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let specs = package_names(args).map_err(fail)?;
    let state = arg_str(args, &["state"]).unwrap_or_else(|| "present".into());
    let state = match state.as_str() {
        "present" | "installed" => "present",
        "absent" | "removed" => "absent",
        "latest" => "latest",
        other => {
            return Err(fail(format!(
                "value of state must be one of: absent, latest, present, got: {other}"
            )));
        }
    };
    let update_cache = flag(args, &["update_cache", "update-cache"]).map_err(fail)?;
    let cache_valid_time = int_arg(args, "cache_valid_time", 0).map_err(fail)?;
    let purge = flag(args, &["purge"]).map_err(fail)?;
    let autoremove = flag(args, &["autoremove"]).map_err(fail)?;
    let recommends = match arg(args, &["install_recommends"]) {
        None | Some(Json::Null) => String::new(),
        Some(_) => match flag(args, &["install_recommends"]).map_err(fail)? {
            true => " -o APT::Install-Recommends=yes".into(),
            false => " --no-install-recommends".into(),
        },
    };
    if specs.is_empty() && !update_cache && cache_valid_time == 0 {
        return Err(fail(format!(
            "{module}: one of the following is required: name, update_cache"
        )));
    }

    let mut r = ModResult::ok(false);
    let mut cache_updated = false;
    if update_cache || cache_valid_time > 0 {
        // cache_valid_time: update only a cache older than that many seconds.
        let stale = if cache_valid_time > 0 {
            let out = sh(
                mc,
                &format!(
                    "t=$(stat -c %Y /var/cache/apt/pkgcache.bin 2>/dev/null || echo 0)\n\
                     [ $(( $(date +%s) - t )) -gt {cache_valid_time} ]"
                ),
            )
            .map_err(|e| fail(format!("cannot check the apt cache: {e}")))?;
            out.rc == 0
        } else {
            true
        };
        if stale {
            let out = sh(mc, "apt-get update -q")
                .map_err(|e| fail(format!("cannot update the apt cache: {e}")))?;
            if out.rc != 0 {
                return Err(fail(format!(
                    "Failed to update apt cache: {}",
                    out.stderr.trim()
                )));
            }
            cache_updated = true;
        }
    }
    r.data.insert("cache_updated".into(), json!(cache_updated));
    if specs.is_empty() {
        // Only a cache update was asked for: that is the change, as in Ansible.
        r.changed = cache_updated;
        return Ok(r);
    }

    let wanted: Vec<Wanted> = specs.iter().map(|s| Wanted::parse(s)).collect();
    let names: Vec<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    let states = query_packages(mc, &names, state == "latest").map_err(fail)?;
    let todo: Vec<&str> = wanted
        .iter()
        .zip(&states)
        .zip(&specs)
        .filter(|((w, s), _)| match state {
            "present" => !w.satisfied_by(s.installed.as_deref()),
            "latest" => {
                !w.satisfied_by(s.installed.as_deref())
                    || (w.version.is_none() && s.candidate.is_some() && s.installed != s.candidate)
            }
            _ => s.installed.is_some(),
        })
        .map(|(_, spec)| spec.as_str())
        .collect();
    if todo.is_empty() {
        return Ok(r);
    }
    let list: Vec<String> = todo.iter().map(|n| quote(n)).collect();
    let cmd = if state == "absent" {
        format!(
            "apt-get -y{}{} remove {}",
            if purge { " --purge" } else { "" },
            if autoremove { " --auto-remove" } else { "" },
            list.join(" ")
        )
    } else {
        format!(
            "apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold{recommends}{} install {}",
            if autoremove { " --auto-remove" } else { "" },
            list.join(" ")
        )
    };
    let out = sh(
        mc,
        &format!("DEBIAN_FRONTEND=noninteractive\nexport DEBIAN_FRONTEND\n{cmd}"),
    )
    .map_err(|e| fail(format!("cannot run apt-get: {e}")))?;
    r.data.insert("stdout".into(), json!(out.stdout));
    r.data.insert("stderr".into(), json!(out.stderr));
    r.data.insert("rc".into(), json!(out.rc));
    if out.rc != 0 {
        r.failed = true;
        r.msg = Some(format!("'{cmd}' failed: {}", out.stderr.trim()));
        return Err(Box::new(r));
    }
    r.changed = true;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_status_follows_ansible() {
        assert_eq!(sysv_running("x", 3, "x is not running\n"), Some(false));
        assert_eq!(sysv_running("x", 0, "x is running\n"), Some(true));
        assert_eq!(sysv_running("x", 0, "x is not running\n"), Some(false));
        assert_eq!(sysv_running("x", 0, ""), Some(true));
        assert_eq!(sysv_running("x", 0, "x stopped\n"), Some(false));
        assert_eq!(sysv_running("x", 5, "who knows\n"), None);
        // The service's own name does not count as a keyword.
        assert_eq!(sysv_running("runner", 0, "runner: ok\n"), Some(true));
    }

    #[test]
    fn package_names_and_versions() {
        let names = package_names(&json!({"name": "a, b=1.2*"})).expect("names");
        assert_eq!(names, ["a", "b=1.2*"]);
        assert!(package_names(&json!({"name": ["-o", "x"]})).is_err());
        let w = Wanted::parse("b=1.2*");
        assert!(w.satisfied_by(Some("1.2.3")));
        assert!(!w.satisfied_by(Some("1.3")));
        assert!(!w.satisfied_by(None));
        assert!(Wanted::parse("c").satisfied_by(Some("9")));
    }

    #[test]
    fn numbers_as_ansible_reads_them() {
        let a = json!({"t": "5", "u": 5.0, "v": 5.5, "w": "x"});
        assert_eq!(int_arg(&a, "t", 0), Ok(5));
        assert_eq!(int_arg(&a, "u", 0), Ok(5));
        assert!(int_arg(&a, "v", 0).is_err());
        assert!(int_arg(&a, "w", 0).is_err());
        assert_eq!(int_arg(&a, "missing", 7), Ok(7));
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(1.25), "1.25");
    }
}
