//! `include_vars`: the variables of a YAML file, set for the rest of the play (as facts),
//! or under `name:` as one map. A relative file is looked up in the role's `vars/`, then
//! the playbook's `vars/` and the playbook's own folder, as Ansible's search path does.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::params::Str;
use super::{ModCtx, ModResult, Module};
use crate::playbook::vars_file::load_vars_file;

pub(super) struct IncludeVars;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// `include_vars: file.yml`.
    #[serde(rename = "_raw_params")]
    raw_params: Option<Str>,
    file: Option<Str>,
    name: Option<Str>,
}

impl Module for IncludeVars {
    type Params = Params;

    fn free_form(&self) -> bool {
        true
    }

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(file)) = p.file.or(p.raw_params) else {
            return ModResult::fail("file (or a path as the argument) is required");
        };
        let path = PathBuf::from(&file);
        let found = if path.is_absolute() {
            Some(path)
        } else {
            // The task's file search path, its `files` folders read as `vars` ones.
            mc.files
                .iter()
                .map(|d| match d.file_name() {
                    Some(n) if n == "files" => d.with_file_name("vars"),
                    _ => d.clone(),
                })
                .map(|d| d.join(&file))
                .find(|p| p.is_file())
        };
        let Some(path) = found else {
            return ModResult::fail(format!("Could not find or access '{file}'"));
        };
        let vars = match load_vars_file(&path, None) {
            Ok(v) => v,
            Err(d) => return ModResult::fail(d.to_string()),
        };
        let mut r = ModResult::ok(false);
        let vars: Map<String, Json> = vars.into_iter().collect();
        match p.name {
            Some(Str(name)) => {
                r.facts.insert(name, Json::Object(vars));
            }
            None => r.facts.extend(vars),
        }
        r.data.insert(
            "ansible_included_var_files".into(),
            Json::Array(vec![Json::String(path.display().to_string())]),
        );
        r
    }
}
