//! `tempfile`: a new temporary file or directory on the target (`mktemp`), its path in
//! the result. Always a change, as in Ansible.

use serde::Deserialize;
use serde_json::Value as Json;

use super::params::Str;
use super::{ModCtx, ModResult, Module, sh};
use crate::playbook::target::quote;

pub(super) struct TempFile;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    state: Option<Str>,
    path: Option<Str>,
    prefix: Option<Str>,
    suffix: Option<Str>,
}

impl Module for TempFile {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let dir = match p.state.as_ref().map(|s| s.0.as_str()) {
            None | Some("file") => false,
            Some("directory") => true,
            Some(other) => {
                return ModResult::fail(format!(
                    "value of state must be one of: directory, file, got: {other}"
                ));
            }
        };
        // Ansible's defaults: `ansible.` in the system's temporary folder.
        let prefix = p.prefix.map_or_else(|| "ansible.".to_owned(), |s| s.0);
        let suffix = p.suffix.map(|s| s.0).unwrap_or_default();
        let template = format!("{prefix}XXXXXXXXXX{suffix}");
        let mut script = String::from("mktemp");
        if dir {
            script.push_str(" -d");
        }
        match &p.path {
            Some(Str(path)) => script.push_str(&format!(" -p {}", quote(path))),
            None => script.push_str(" -t"),
        }
        script.push(' ');
        script.push_str(&quote(&template));
        match sh(mc, &script) {
            Ok(out) if out.rc == 0 => {
                let mut r = ModResult::ok(true);
                r.data
                    .insert("path".into(), Json::String(out.stdout.trim().to_owned()));
                r.data.insert(
                    "state".into(),
                    Json::String(if dir { "directory" } else { "file" }.to_owned()),
                );
                r
            }
            Ok(out) => ModResult::fail(format!(
                "failed to create temporary {}: {}",
                if dir { "directory" } else { "file" },
                out.stderr.trim()
            )),
            Err(e) => ModResult::fail(format!("cannot run mktemp: {e}")),
        }
    }
}
