//! `group`: a local group present (with its gid) or absent, through `groupadd`, `groupmod`
//! and `groupdel` as Ansible runs them on Debian.

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::params::{Flag, Int, Str, is};
use super::{Exit, ModCtx, ModResult, Module, either, exit};

pub(super) struct Group;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    name: Option<Str>,
    state: Option<Str>,
    gid: Option<Int>,
    system: Option<Flag>,
}

impl Module for Group {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(manage(p, mc))
    }
}

/// A user or group name that is safe as one argument of the shadow tools: not empty, no
/// option (`-o`), and none of the separators of /etc/passwd and /etc/group.
pub(super) fn account_name(name: &str) -> Result<&str, Exit> {
    if name.is_empty()
        || name.starts_with('-')
        || name
            .chars()
            .any(|c| c == ':' || c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(exit(format!("invalid name {name:?}")));
    }
    Ok(name)
}

/// One entry of a database of `getent` (`passwd`, `group`), split on `:`; `None`: no such
/// entry.
pub(super) fn getent(mc: &ModCtx, db: &str, key: &str) -> Result<Option<Vec<String>>, Exit> {
    let argv = ["getent".to_owned(), db.to_owned(), key.to_owned()];
    let out = mc
        .target
        .run(&argv, None, None, &[])
        .map_err(|e| exit(format!("cannot run getent: {e}")))?;
    match out.rc {
        0 => Ok(out
            .stdout
            .lines()
            .next()
            .map(|l| l.split(':').map(str::to_owned).collect())),
        // getent's "key not found".
        2 => Ok(None),
        rc => Err(exit(format!(
            "getent {db} {key} failed (rc {rc}): {}",
            out.stderr.trim()
        ))),
    }
}

/// Runs one of the shadow tools; a failure is the task's, with its rc and stderr.
pub(super) fn tool(mc: &ModCtx, argv: Vec<String>) -> Result<String, Exit> {
    let out = mc.target.run(&argv, None, None, &mc.env).map_err(|e| {
        let tool = argv.first().map_or("the command", String::as_str);
        exit(format!("cannot run {tool}: {e}"))
    })?;
    if out.rc != 0 {
        let mut r = ModResult::fail(out.stderr.trim().to_owned());
        r.data.insert("rc".into(), Json::from(out.rc));
        r.data.insert("cmd".into(), Json::String(argv.join(" ")));
        return Err(Box::new(r));
    }
    Ok(out.stderr)
}

fn manage(p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let name = p
        .name
        .as_ref()
        .ok_or_else(|| exit("missing required arguments: name"))?;
    let name = account_name(&name.0)?.to_owned();
    let state = p.state.map_or_else(|| "present".to_owned(), |s| s.0);
    let current = getent(mc, "group", &name)?;
    let mut r = ModResult::ok(false);
    r.data.insert("name".into(), Json::String(name.clone()));
    r.data.insert("state".into(), Json::String(state.clone()));
    match state.as_str() {
        "absent" => {
            if current.is_some() {
                tool(mc, vec!["groupdel".into(), name])?;
                r.changed = true;
            }
        }
        "present" => {
            let gid = p.gid.map(|g| g.0.to_string());
            match current {
                None => {
                    let mut argv = vec!["groupadd".to_owned()];
                    if let Some(g) = &gid {
                        argv.extend(["-g".to_owned(), g.clone()]);
                    }
                    if is(p.system) {
                        argv.push("-r".into());
                    }
                    argv.push(name.clone());
                    tool(mc, argv)?;
                    r.changed = true;
                }
                Some(entry) => {
                    if let Some(g) = &gid
                        && entry.get(2) != Some(g)
                    {
                        tool(
                            mc,
                            vec!["groupmod".into(), "-g".into(), g.clone(), name.clone()],
                        )?;
                        r.changed = true;
                    }
                }
            }
            let now = getent(mc, "group", &name)?;
            let gid = now
                .as_ref()
                .and_then(|e| e.get(2))
                .and_then(|g| g.parse::<i64>().ok());
            r.data.insert("gid".into(), json!(gid));
            r.data.insert("system".into(), Json::Bool(is(p.system)));
        }
        other => {
            return Err(exit(format!(
                "value of state must be one of: absent, present, got: {other}"
            )));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_options_or_separators_are_refused() {
        assert!(account_name("deploy").is_ok());
        assert!(account_name("ss-1_a.b").is_ok());
        for bad in ["", "-o", "a:b", "a,b", "a b", "a\nb"] {
            assert!(account_name(bad).is_err(), "{bad:?}");
        }
    }
}
