//! `copy`: a file from the controller (`src`) or given inline (`content`) onto the target.

use super::params::Inert;
use std::path::Path;

use serde_json::Value as Json;

use super::params::{Flag, Mode, Str, file_params};
use super::{ModCtx, ModResult, Module, find, io, put};

pub(super) struct Copy;

file_params! {
    /// Ansible's parameters; those it does not act on are refused unless given what this
    /// runner does anyway (`INERT`).
    struct Params {
        dest: Option<Str>,
        src: Option<Str>,
        content: Option<Json>,
        mode: Option<Mode>,
        force: Option<Flag>,
        backup: Option<Flag>,
        remote_src: Option<Flag>,
        follow: Option<Flag>,
        local_follow: Option<Flag>,
        directory_mode: Option<Mode>,
        validate: Option<Str>,
        checksum: Option<Str>,
        decrypt: Option<Flag>,
    }
}

impl Module for Copy {
    type Params = Params;

    /// Arguments Ansible's copy has that this one does not act on: refused unless given what this runner does.
    const INERT: &'static [Inert] = &[
        Inert::only("backup", &["false"]),
        Inert::never("validate"),
        Inert::never("checksum"),
        Inert::only("follow", &["false"]),
        Inert::only("local_follow", &["true"]),
        Inert::any("decrypt"),
        Inert::any("directory_mode"),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(mut dest)) = p.dest else {
            return ModResult::fail("dest is required");
        };
        // `force: false`: an existing destination is left as it is, whatever it holds.
        if p.force.is_some_and(|f| !f.0) && mc.target.stat(&dest).ok().flatten().is_some() {
            let mut r = ModResult::ok(false);
            r.data.insert("dest".into(), Json::String(dest));
            return r;
        }
        let content: Vec<u8> = match (p.content, p.src) {
            (Some(c), _) => python_str(&c).into_bytes(),
            // `remote_src`: the source is a file on the target itself.
            (None, Some(Str(src))) if p.remote_src.is_some_and(|f| f.0) => {
                match mc.target.read(&src) {
                    Ok(Some(b)) => b,
                    Ok(None) => return ModResult::fail(format!("Source {src} not found")),
                    Err(e) => return io("cannot read", &src, e),
                }
            }
            (None, Some(Str(src))) => {
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
            (None, None) => return ModResult::fail("src (or content) is required"),
        };
        put(
            mc,
            &dest,
            &content,
            p.mode.map(|m| m.0),
            p.owner.as_ref().map(|o| o.0.as_str()),
            p.group.as_ref().map(|g| g.0.as_str()),
        )
    }
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
