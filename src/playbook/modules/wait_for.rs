//! `wait_for`: waits for a port to open or close, or a file to appear, hold a pattern or
//! go. The port is tried from the target itself; only the timers run on the engine's side.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::params::{Int, Str};
use super::{Exit, ModCtx, ModResult, Module, either, exit, sh};
use crate::playbook::target::quote;

pub(super) struct WaitFor;

/// Ansible's parameters; `active_connection_states` and `exclude_hosts` (for `drained`,
/// which the built-in runner refuses) are accepted and not acted on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct Params {
    host: Option<Str>,
    port: Option<Int>,
    path: Option<Str>,
    search_regex: Option<Str>,
    state: Option<Str>,
    timeout: Option<Int>,
    connect_timeout: Option<Int>,
    delay: Option<Int>,
    sleep: Option<Int>,
    msg: Option<Str>,
    active_connection_states: Option<Json>,
    exclude_hosts: Option<Json>,
}

impl Module for WaitFor {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(wait(p, mc))
    }
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

fn wait(p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| {
        let mut r = exit(m);
        r.data.insert("elapsed".into(), json!(0));
        r
    };
    let int = |v: Option<Int>, default: i64| v.map_or(default, |i| i.0);
    let host = p.host.map_or_else(|| "127.0.0.1".to_owned(), |s| s.0);
    let timeout = int(p.timeout, 300).max(0).unsigned_abs();
    let connect_timeout = int(p.connect_timeout, 5).max(1).unsigned_abs();
    let delay = int(p.delay, 0).max(0).unsigned_abs();
    let sleep = int(p.sleep, 1).max(0).unsigned_abs();
    let port = match p.port {
        None => None,
        Some(Int(n)) => Some(u16::try_from(n).map_err(|_| fail(format!("invalid port {n}")))?),
    };
    let path = p.path.map(|s| s.0);
    let search_regex = p.search_regex.map(|s| s.0);
    let state = p.state.map_or_else(|| "started".to_owned(), |s| s.0);
    let custom_msg = p.msg.map(|s| s.0);
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
