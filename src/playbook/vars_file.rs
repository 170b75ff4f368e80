//! Vars files: a play's `vars_files` and a role's `defaults/` and `vars/`. A file that is
//! missing, does not read, or is not a map of variables is a problem with its place, at
//! validation and at run time alike; never silently an empty set of variables.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::diag::{Diagnostic, Origin};
use crate::yaml::{Node, Source};

/// A `vars_files` entry and where the play names it.
#[derive(Debug, Clone)]
pub struct VarsFile {
    pub path: String,
    pub origin: Origin,
}

impl VarsFile {
    /// Known only at run time: the name is a template.
    pub fn templated(&self) -> bool {
        self.path.contains("{{")
    }
}

/// Where a vars file named in a play is: relative names are the playbook folder's.
pub fn resolve(playbook_dir: &Path, name: &str) -> PathBuf {
    if Path::new(name).is_absolute() {
        PathBuf::from(name)
    } else {
        playbook_dir.join(name)
    }
}

/// The variables of a vars file, in file order. `named_at`: the entry that names the file,
/// for a missing one (a role's files are found, not named).
pub fn load_vars_file(
    path: &Path,
    named_at: Option<&Origin>,
) -> Result<Vec<(String, Json)>, Diagnostic> {
    if !path.is_file() {
        let msg = format!("vars file {} does not exist", path.display());
        return Err(match named_at {
            Some(o) => o.diag(msg),
            None => Diagnostic::in_file(msg, path),
        });
    }
    let src = Source::read_ansible(path)?;
    let docs = src.documents()?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    match &doc.value {
        Node::Null => Ok(Vec::new()),
        Node::Map(entries) => Ok(entries
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.to_json()))
            .collect()),
        other => Err(src
            .diag_at(
                format!("a vars file is a map of variables, not a {}", other.kind()),
                doc,
            )
            .with_hint("write `name: value` lines at the top level")),
    }
}
