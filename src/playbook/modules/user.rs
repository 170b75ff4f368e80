//! `user`: a local user account present or absent, through `useradd`, `usermod` and
//! `userdel` with the options Ansible's module gives them on Debian. What the account is now
//! is read with `getent`, so a second run changes nothing.

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::group::{account_name, getent, tool};
use super::params::{Flag, Int, Str, is};
use super::{Exit, ModCtx, ModResult, Module, either, exit};

pub(super) struct User;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    #[serde(alias = "user")]
    name: Option<Str>,
    state: Option<Str>,
    uid: Option<Int>,
    group: Option<Str>,
    /// A list, or a comma-separated string; `""` is no supplementary group.
    groups: Option<Json>,
    append: Option<Flag>,
    shell: Option<Str>,
    home: Option<Str>,
    #[serde(alias = "createhome")]
    create_home: Option<Flag>,
    move_home: Option<Flag>,
    system: Option<Flag>,
    comment: Option<Str>,
    remove: Option<Flag>,
    force: Option<Flag>,
}

impl Module for User {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(manage(p, mc))
    }
}

/// `getent passwd`'s fields.
const UID: usize = 2;
const GID: usize = 3;
const GECOS: usize = 4;
const HOME: usize = 5;
const SHELL: usize = 6;

fn manage(p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let name = p
        .name
        .as_ref()
        .ok_or_else(|| exit("missing required arguments: name"))?;
    let name = account_name(&name.0)?.to_owned();
    let state = p
        .state
        .as_ref()
        .map_or_else(|| "present".to_owned(), |s| s.0.clone());
    let current = getent(mc, "passwd", &name)?;
    let mut r = ModResult::ok(false);
    r.data.insert("name".into(), Json::String(name.clone()));
    r.data.insert("state".into(), Json::String(state.clone()));
    match state.as_str() {
        "absent" => {
            if current.is_some() {
                let mut argv = vec!["userdel".to_owned()];
                if is(p.force) {
                    argv.push("-f".into());
                }
                if is(p.remove) {
                    argv.push("-r".into());
                }
                argv.push(name.clone());
                let stderr = tool(mc, argv)?;
                r.changed = true;
                r.data.insert("force".into(), Json::Bool(is(p.force)));
                r.data.insert("remove".into(), Json::Bool(is(p.remove)));
                r.data.insert("stderr".into(), Json::String(stderr));
            }
            Ok(r)
        }
        "present" => {
            let groups = wanted_groups(mc, p.groups.as_ref())?;
            let groups_text = groups.as_ref().map(|g| g.join(","));
            match &current {
                None => create(mc, &name, &p, groups.as_deref())?,
                Some(entry) => r.changed = modify(mc, &name, &p, entry, groups.as_deref())?,
            }
            let now = getent(mc, "passwd", &name)?
                .ok_or_else(|| exit(format!("user {name} is missing after useradd")))?;
            let field = |i: usize| now.get(i).cloned().unwrap_or_default();
            let number = |i: usize| field(i).parse::<i64>().ok();
            r.data.insert("uid".into(), json!(number(UID)));
            r.data.insert("group".into(), json!(number(GID)));
            r.data.insert("comment".into(), Json::String(field(GECOS)));
            r.data.insert("home".into(), Json::String(field(HOME)));
            r.data.insert("shell".into(), Json::String(field(SHELL)));
            if let Some(g) = groups_text {
                r.data.insert("groups".into(), Json::String(g));
            }
            if current.is_none() {
                r.changed = true;
                r.data.insert(
                    "create_home".into(),
                    Json::Bool(p.create_home.is_none_or(|c| c.0)),
                );
                r.data.insert("system".into(), Json::Bool(is(p.system)));
            } else {
                r.data.insert("append".into(), Json::Bool(is(p.append)));
                r.data
                    .insert("move_home".into(), Json::Bool(is(p.move_home)));
            }
            Ok(r)
        }
        other => Err(exit(format!(
            "value of state must be one of: absent, present, got: {other}"
        ))),
    }
}

/// The supplementary groups asked for, by name; each must exist, as Ansible requires.
/// `None`: not given; empty: none.
fn wanted_groups(mc: &ModCtx, groups: Option<&Json>) -> Result<Option<Vec<String>>, Exit> {
    let items: Vec<String> = match groups {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(Json::String(s)) => s.split(',').map(str::to_owned).collect(),
        Some(other) => vec![other.to_string()],
    };
    let mut names = Vec::new();
    for g in items.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
        let entry = getent(mc, "group", account_name(g)?)?
            .ok_or_else(|| exit(format!("Group {g} does not exist")))?;
        let n = entry.first().cloned().unwrap_or_else(|| g.to_owned());
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(Some(names))
}

/// The primary group given, which must exist: its name as written and its gid.
fn primary_group(mc: &ModCtx, group: Option<&Str>) -> Result<Option<(String, String)>, Exit> {
    let Some(g) = group else {
        return Ok(None);
    };
    let entry = getent(mc, "group", account_name(&g.0)?)?
        .ok_or_else(|| exit(format!("Group {} does not exist", g.0)))?;
    Ok(Some((
        g.0.clone(),
        entry.get(2).cloned().unwrap_or_default(),
    )))
}

fn create(mc: &ModCtx, name: &str, p: &Params, groups: Option<&[String]>) -> Result<(), Exit> {
    let mut argv = vec!["useradd".to_owned()];
    if let Some(u) = p.uid {
        argv.extend(["-u".to_owned(), u.0.to_string()]);
    }
    match primary_group(mc, p.group.as_ref())? {
        Some((g, _)) => argv.extend(["-g".to_owned(), g]),
        // A group of the user's name exists already: useradd would fail creating it
        // (USERGROUPS_ENAB), so Ansible asks for none.
        None if getent(mc, "group", name)?.is_some() => argv.push("-N".into()),
        None => {}
    }
    if let Some(g) = groups.filter(|g| !g.is_empty()) {
        argv.extend(["-G".to_owned(), g.join(",")]);
    }
    if let Some(c) = &p.comment {
        argv.extend(["-c".to_owned(), c.0.clone()]);
    }
    if let Some(h) = &p.home {
        argv.extend(["-d".to_owned(), h.0.clone()]);
    }
    if let Some(s) = &p.shell {
        argv.extend(["-s".to_owned(), s.0.clone()]);
    }
    argv.push(if p.create_home.is_none_or(|c| c.0) {
        "-m".into()
    } else {
        "-M".into()
    });
    if is(p.system) {
        argv.push("-r".into());
    }
    argv.push(name.to_owned());
    tool(mc, argv).map(|_| ())
}

/// usermod with what differs from the account now, as Ansible's module compares it;
/// whether anything did.
fn modify(
    mc: &ModCtx,
    name: &str,
    p: &Params,
    entry: &[String],
    groups: Option<&[String]>,
) -> Result<bool, Exit> {
    let field = |i: usize| entry.get(i).map_or("", String::as_str);
    let mut argv = vec!["usermod".to_owned()];
    if let Some(u) = p.uid
        && field(UID) != u.0.to_string()
    {
        argv.extend(["-u".to_owned(), u.0.to_string()]);
    }
    if let Some((g, gid)) = primary_group(mc, p.group.as_ref())?
        && field(GID) != gid
    {
        argv.extend(["-g".to_owned(), g]);
    }
    if let Some(wanted) = groups {
        let now = memberships(mc, name)?;
        let missing = wanted.iter().any(|g| !now.contains(g));
        let extra = now.iter().any(|g| !wanted.contains(g));
        if is(p.append) {
            if missing {
                argv.extend(["-a".to_owned(), "-G".to_owned(), wanted.join(",")]);
            }
        } else if missing || extra {
            argv.extend(["-G".to_owned(), wanted.join(",")]);
        }
    }
    if let Some(c) = &p.comment
        && field(GECOS) != c.0
    {
        argv.extend(["-c".to_owned(), c.0.clone()]);
    }
    if let Some(h) = &p.home
        && field(HOME) != h.0
    {
        argv.extend(["-d".to_owned(), h.0.clone()]);
        if is(p.move_home) {
            argv.push("-m".into());
        }
    }
    if let Some(s) = &p.shell
        && field(SHELL) != s.0
    {
        argv.extend(["-s".to_owned(), s.0.clone()]);
    }
    if argv.len() == 1 {
        return Ok(false);
    }
    argv.push(name.to_owned());
    tool(mc, argv).map(|_| true)
}

/// The groups that list the user as a member (Ansible's `user_group_membership`).
fn memberships(mc: &ModCtx, name: &str) -> Result<Vec<String>, Exit> {
    let argv = ["getent".to_owned(), "group".to_owned()];
    let out = mc
        .target
        .run(&argv, None, None, &[])
        .map_err(|e| exit(format!("cannot run getent: {e}")))?;
    if out.rc != 0 {
        return Err(exit(format!(
            "getent group failed (rc {}): {}",
            out.rc,
            out.stderr.trim()
        )));
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m == name)
                .then(|| f.first().map(|g| (*g).to_owned()))
                .flatten()
        })
        .collect())
}
