//! `service` and `systemd`: a service's state and whether it starts at boot, through
//! systemd or a sysvinit script, whichever the target has.

use super::params::Inert;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::params::{Flag, Str, is};
use super::{Exit, ModCtx, ModResult, Module, either, exit, sh};
use crate::playbook::target::quote;

pub(super) struct Service {
    name: &'static str,
}

impl Service {
    pub(super) const SERVICE: Service = Service { name: "service" };
    pub(super) const SYSTEMD: Service = Service { name: "systemd" };
}

/// The parameters of both modules; those beyond name, state, enabled and daemon_reload are
/// Ansible's: refused unless given what this runner does (`INERT`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct Params {
    #[serde(alias = "service", alias = "unit")]
    name: Option<Str>,
    state: Option<Str>,
    enabled: Option<Flag>,
    #[serde(alias = "daemon-reload")]
    daemon_reload: Option<Flag>,
    #[serde(alias = "daemon-reexec")]
    daemon_reexec: Option<Flag>,
    masked: Option<Flag>,
    scope: Option<Str>,
    no_block: Option<Flag>,
    force: Option<Flag>,
    sleep: Option<Json>,
    pattern: Option<Str>,
    runlevel: Option<Str>,
    #[serde(alias = "args")]
    arguments: Option<Str>,
    #[serde(rename = "use")]
    use_: Option<Str>,
}

impl Module for Service {
    type Params = Params;

    /// Only name, state, enabled and daemon_reload act; the rest is refused unless given what this runner does.
    const INERT: &'static [Inert] = &[
        Inert::only("daemon_reexec", &["false"]),
        Inert::only("daemon-reexec", &["false"]),
        Inert::never("masked"),
        Inert::only("scope", &["system"]),
        Inert::only("no_block", &["false"]),
        Inert::only("force", &["false"]),
        Inert::any("sleep"),
        Inert::never("pattern"),
        Inert::any("runlevel"),
        Inert::never("arguments"),
        Inert::never("args"),
        Inert::only("use", &["auto"]),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(manage(self.name, p, mc))
    }
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

fn manage(module: &str, p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let Some(Str(name)) = p.name else {
        return Err(fail("missing required arguments: name".into()));
    };
    let state = p.state.map(|s| s.0);
    let enabled = p.enabled.map(|f| f.0);
    let daemon_reload = is(p.daemon_reload);
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
}
