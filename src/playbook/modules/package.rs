//! `package` and `apt`: Debian packages present, latest or absent, through dpkg and apt.

use super::params::Inert;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::params::{Flag, Int, Str, is};
use super::{Exit, ModCtx, ModResult, Module, either, exit, sh};
use crate::playbook::target::quote;

pub(super) struct Package {
    name: &'static str,
}

impl Package {
    pub(super) const PACKAGE: Package = Package { name: "package" };
    pub(super) const APT: Package = Package { name: "apt" };
}

/// The parameters of both modules; apt's others are refused unless given what this runner does (`INERT`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct Params {
    #[serde(alias = "package", alias = "pkg")]
    name: Option<Json>,
    state: Option<Str>,
    #[serde(alias = "update-cache")]
    update_cache: Option<Flag>,
    cache_valid_time: Option<Int>,
    purge: Option<Flag>,
    autoremove: Option<Flag>,
    #[serde(alias = "install-recommends")]
    install_recommends: Option<Flag>,
    deb: Option<Str>,
    #[serde(alias = "default-release")]
    default_release: Option<Str>,
    dpkg_options: Option<Str>,
    force: Option<Flag>,
    force_apt_get: Option<Flag>,
    #[serde(alias = "allow-unauthenticated")]
    allow_unauthenticated: Option<Flag>,
    allow_downgrade: Option<Flag>,
    allow_change_held_packages: Option<Flag>,
    only_upgrade: Option<Flag>,
    upgrade: Option<Str>,
    autoclean: Option<Flag>,
    clean: Option<Flag>,
    fail_on_autoremove: Option<Flag>,
    lock_timeout: Option<Int>,
    policy_rc_d: Option<Int>,
    #[serde(rename = "use")]
    use_: Option<Str>,
}

impl Module for Package {
    type Params = Params;

    /// apt's arguments beyond the ones acted on: refused unless given what this runner does.
    const INERT: &'static [Inert] = &[
        Inert::never("deb"),
        Inert::never("default_release"),
        Inert::never("default-release"),
        Inert::any("dpkg_options"),
        Inert::only("force", &["false"]),
        Inert::any("force_apt_get"),
        Inert::only("allow_unauthenticated", &["false"]),
        Inert::only("allow-unauthenticated", &["false"]),
        Inert::only("allow_downgrade", &["false"]),
        Inert::only("allow_change_held_packages", &["false"]),
        Inert::only("only_upgrade", &["false"]),
        Inert::only("upgrade", &["no", "false"]),
        Inert::only("autoclean", &["false"]),
        Inert::only("clean", &["false"]),
        Inert::any("fail_on_autoremove"),
        Inert::any("lock_timeout"),
        Inert::never("policy_rc_d"),
        Inert::only("use", &["auto", "apt"]),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(manage(self.name, p, mc))
    }
}

/// A package argument as Ansible's list type reads it: a list, or a comma-separated string.
fn package_names(name: Option<&Json>) -> Result<Vec<String>, String> {
    let names: Vec<String> = match name {
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

fn manage(module: &str, p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let specs = package_names(p.name.as_ref()).map_err(fail)?;
    let state = p.state.map_or_else(|| "present".to_owned(), |s| s.0);
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
    let update_cache = is(p.update_cache);
    let cache_valid_time = p.cache_valid_time.map_or(0, |i| i.0);
    let purge = is(p.purge);
    let autoremove = is(p.autoremove);
    let recommends = match p.install_recommends {
        None => String::new(),
        Some(Flag(true)) => " -o APT::Install-Recommends=yes".into(),
        Some(Flag(false)) => " --no-install-recommends".into(),
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
    fn package_names_and_versions() {
        let names = package_names(Some(&json!("a, b=1.2*"))).expect("names");
        assert_eq!(names, ["a", "b=1.2*"]);
        assert!(package_names(Some(&json!(["-o", "x"]))).is_err());
        let w = Wanted::parse("b=1.2*");
        assert!(w.satisfied_by(Some("1.2.3")));
        assert!(!w.satisfied_by(Some("1.3")));
        assert!(!w.satisfied_by(None));
        assert!(Wanted::parse("c").satisfied_by(Some("9")));
    }
}
