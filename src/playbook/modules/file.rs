//! `file`: a path's state on the target (absent, directory, touch, file) and its mode.

use super::params::Inert;
use std::path::Path;

use serde_json::Value as Json;

use super::params::{Flag, Mode, Str, file_params, is};
use super::{ModCtx, ModResult, Module, io, own};

pub(super) struct File;

file_params! {
    /// Ansible's parameters; times, `recurse` and SELinux ones are refused unless given what this runner does (`INERT`).
    struct Params {
        #[serde(alias = "dest", alias = "name")]
        path: Option<Str>,
        state: Option<Str>,
        mode: Option<Mode>,
        src: Option<Str>,
        recurse: Option<Flag>,
        force: Option<Flag>,
        follow: Option<Flag>,
        modification_time: Option<Str>,
        modification_time_format: Option<Str>,
        access_time: Option<Str>,
        access_time_format: Option<Str>,
    }
}

impl Module for File {
    type Params = Params;

    /// `recurse` and the time arguments are not acted on: refused unless given what this runner does.
    const INERT: &'static [Inert] = &[
        Inert::only("recurse", &["false"]),
        Inert::only("modification_time", &["preserve"]),
        Inert::only("access_time", &["preserve"]),
        Inert::any("modification_time_format"),
        Inert::any("access_time_format"),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(path)) = p.path else {
            return ModResult::fail("path is required");
        };
        let mode = p.mode.map(|m| m.0);
        let state = p.state.map_or_else(|| "file".to_owned(), |s| s.0);
        let current = match mc.target.stat(&path) {
            Ok(s) => s,
            Err(e) => return io("cannot stat", &path, e),
        };
        let mut changed = false;
        let owner = p.owner.as_ref().map(|o| o.0.as_str());
        let group = p.group.as_ref().map(|g| g.0.as_str());
        match state.as_str() {
            "link" | "hard" => {
                let Some(Str(src)) = &p.src else {
                    return ModResult::fail(format!(
                        "src is required for creating a {}",
                        if state == "link" {
                            "symlink"
                        } else {
                            "hard link"
                        }
                    ));
                };
                return link(mc, &path, src, state == "hard", is(p.force), owner, group);
            }
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
                Some(_) => {
                    return ModResult::fail(format!("{path} exists and is not a directory"));
                }
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
            "file" => match &current {
                None => {
                    return ModResult::fail(format!("file ({path}) is absent, cannot continue"));
                }
                // As Ansible: `state: file` only checks attributes of a file, never a folder.
                Some(s) if s.is_dir => {
                    return ModResult::fail(format!("file ({path}) is directory, cannot continue"));
                }
                Some(_) => {}
            },
            other => {
                return ModResult::fail(format!("state `{other}` is not in the built-in subset"));
            }
        }
        // The path as it is now: what was read before, unless this task made it (then read
        // again only when a mode is to be checked; a made path's mode is not reported).
        let now = if changed {
            mode.and_then(|_| mc.target.stat(&path).ok().flatten())
        } else {
            current
        };
        if let Some(m) = mode
            && now.as_ref().map(|s| s.mode) != Some(m)
        {
            if let Err(e) = mc.target.chmod(&path, m) {
                return io("cannot chmod", &path, e);
            }
            changed = true;
        }
        if state != "absent" {
            match own(mc, &path, owner, group, p.follow.is_none_or(|f| f.0)) {
                Ok(c) => changed |= c,
                Err(e) => return ModResult::fail(e),
            }
        }
        let mut r = ModResult::ok(changed);
        r.data.insert("path".into(), Json::String(path));
        // Ansible reports the state the path is in: `touch` makes a file.
        let state = if state == "touch" {
            "file".to_owned()
        } else {
            state
        };
        r.data.insert("state".into(), Json::String(state));
        if let Some(s) = now {
            let m = mode.unwrap_or(s.mode);
            r.data
                .insert("mode".into(), Json::String(format!("{m:04o}")));
            r.data.insert("size".into(), Json::from(s.size));
        }
        r
    }
}

/// `state: link` (a symlink to `src`) or `state: hard` (a hard link): made or replaced when
/// the path is not that link yet. As Ansible, an existing file or folder is only replaced
/// with `force: true`.
fn link(
    mc: &ModCtx,
    path: &str,
    src: &str,
    hard: bool,
    force: bool,
    owner: Option<&str>,
    group: Option<&str>,
) -> ModResult {
    let current = match mc.target.describe(path, false, false) {
        Ok(c) => c,
        Err(e) => return io("cannot stat", path, e),
    };
    let flag = |c: &serde_json::Map<String, Json>, k: &str| c.get(k) == Some(&Json::Bool(true));
    let done = match &current {
        None => false,
        Some(c) if !hard => {
            flag(c, "islnk") && c.get("lnk_target").and_then(Json::as_str) == Some(src)
        }
        Some(c) => match mc.target.describe(src, true, false) {
            Ok(Some(s)) => {
                !flag(c, "islnk")
                    && c.get("inode") == s.get("inode")
                    && c.get("dev") == s.get("dev")
            }
            Ok(None) => return ModResult::fail(format!("src does not exist: {src}")),
            Err(e) => return io("cannot stat", src, e),
        },
    };
    let mut changed = false;
    if !done {
        if let Some(c) = &current
            && !flag(c, "islnk")
            && !force
        {
            let kind = if flag(c, "isdir") {
                "directory"
            } else {
                "file"
            };
            return ModResult::fail(format!(
                "refusing to convert from {kind} to {} for {path}",
                if hard { "hard link" } else { "symlink" }
            ));
        }
        let mut argv = vec!["ln".to_owned(), if hard { "-f" } else { "-sfn" }.to_owned()];
        argv.extend(["--".to_owned(), src.to_owned(), path.to_owned()]);
        match mc.target.run(&argv, None, None, &[]) {
            Ok(out) if out.rc == 0 => changed = true,
            Ok(out) => {
                return ModResult::fail(format!("cannot link {path}: {}", out.stderr.trim()));
            }
            Err(e) => return io("cannot link", path, e),
        }
    }
    match own(mc, path, owner, group, hard) {
        Ok(c) => changed |= c,
        Err(e) => return ModResult::fail(e),
    }
    let mut r = ModResult::ok(changed);
    r.data.insert("path".into(), Json::String(path.to_owned()));
    r.data.insert("src".into(), Json::String(src.to_owned()));
    r.data.insert(
        "state".into(),
        Json::String(if hard { "hard" } else { "link" }.to_owned()),
    );
    r
}
