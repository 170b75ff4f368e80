//! `file`: a path's state on the target (absent, directory, touch, file) and its mode.

use std::path::Path;

use serde_json::Value as Json;

use super::params::{Flag, Mode, Str, file_params};
use super::{ModCtx, ModResult, Module, io};

pub(super) struct File;

file_params! {
    /// Ansible's parameters; links, ownership, times and SELinux ones are accepted and not acted
    /// on, as before.
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
