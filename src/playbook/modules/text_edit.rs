//! What `lineinfile` and `blockinfile` share: where a new line or block goes, reading the
//! file to edit and writing it back.
//!
//! The editing is ported from Ansible's modules (quirks included, since playbooks are written
//! against them) as pure functions on text; the modules only read the file, call them, and
//! write back when the text differs.
//!
//! Regular expressions are Rust's `regex`, not Python's `re`: the common syntax is the same,
//! but lookarounds and backreferences inside a pattern are refused. A line is searched
//! without its final `\n`, so that `$` matches where Python's `$` does (before a final
//! newline).

use super::params::Inert;
use regex::Regex;
use serde_json::Value as Json;

use super::{Exit, ModCtx, ModResult, exit, io};

/// Where a new line or block goes when nothing in the file matches.
#[derive(Debug, Clone)]
pub(super) enum Insert {
    Bof,
    Eof,
    After(Regex),
    Before(Regex),
}

/// The outcome of an edit: the new text and Ansible's message for it (empty: no change).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Edit {
    pub text: String,
    pub msg: String,
}

/// The file's lines as Python's `readlines()` gives them: split after each `\n`, kept.
pub(super) fn readlines(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_owned).collect()
}

/// The text a pattern is searched in: the line without its final `\n` (see the module doc).
pub(super) fn searchable(line: &str) -> &str {
    line.strip_suffix('\n').unwrap_or(line)
}

pub(super) fn strip_eol(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

pub(super) fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// Whether a pattern starts with global inline flags that include `m`, as `(?m)` or `(?im)`.
pub(super) fn global_multiline(pattern: &str) -> bool {
    pattern
        .strip_prefix("(?")
        .and_then(|rest| rest.split_once(')'))
        .is_some_and(|(flags, _)| {
            flags.contains('m') && flags.chars().all(|c| "aiLmsux".contains(c))
        })
}

/// The file to edit, as `lineinfile` and `blockinfile` both take it.
pub(super) struct Doc {
    pub(super) path: String,
    /// None: the file does not exist.
    pub(super) text: Option<String>,
}

/// What `lineinfile` and `blockinfile` take without acting on it: a backup file and a
/// validation command would change what a run does.
pub(super) const EDIT_INERT: &[Inert] =
    &[Inert::only("backup", &["false"]), Inert::never("validate")];

/// The file to edit. `backup` and `validate` are refused before this (the modules' `INERT`).
pub(super) fn load(path: Option<String>, mc: &ModCtx) -> Result<Doc, Exit> {
    let Some(path) = path else {
        return Err(exit("missing required arguments: path".to_owned()));
    };
    match mc.target.stat(&path) {
        Ok(Some(s)) if s.is_dir => {
            return Err(exit(format!("Path {path} is a directory !")));
        }
        Ok(_) => {}
        Err(e) => return Err(Box::new(io("cannot stat", &path, e))),
    }
    let text = match mc.target.read(&path) {
        Ok(None) => None,
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(t) => Some(t),
            Err(_) => {
                return Err(exit(format!(
                    "{path} is not UTF-8 text; the built-in runner edits UTF-8 files only"
                )));
            }
        },
        Err(e) => return Err(Box::new(io("cannot read", &path, e))),
    };
    Ok(Doc { path, text })
}

/// Creates the parent directory of a file about to be created, as Ansible's `create` does.
fn make_parent(mc: &ModCtx, path: &str) -> Result<(), Exit> {
    let Some(parent) = std::path::Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    match mc.target.stat(&parent) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => mc
            .target
            .mkdir_p(&parent)
            .map_err(|e| exit(format!("Error creating {parent} ({e})"))),
        Err(e) => Err(Box::new(io("cannot stat", &parent, e))),
    }
}

/// `mode`, `owner` and `group` of an edited file.
pub(super) struct Attrs<'a> {
    pub(super) mode: Option<u32>,
    pub(super) owner: Option<&'a str>,
    pub(super) group: Option<&'a str>,
}

/// Writes the new text when it changed, then applies the mode and ownership; the message
/// says what happened in Ansible's words.
pub(super) fn finish(mc: &ModCtx, attrs: &Attrs, doc: &Doc, edit: Edit) -> ModResult {
    let mode = attrs.mode;
    let mut changed = doc.text.as_deref() != Some(edit.text.as_str());
    let mut msg = edit.msg;
    if changed {
        if doc.text.is_none()
            && let Err(r) = make_parent(mc, &doc.path)
        {
            return *r;
        }
        if let Err(e) = mc.target.write(&doc.path, edit.text.as_bytes()) {
            return io("cannot write", &doc.path, e);
        }
    }
    if let Some(m) = mode {
        match mc.target.stat(&doc.path) {
            Ok(Some(s)) if s.mode != m => {
                if let Err(e) = mc.target.chmod(&doc.path, m) {
                    return io("cannot chmod", &doc.path, e);
                }
                if changed {
                    msg.push_str(" and ");
                }
                changed = true;
                msg.push_str("ownership, perms or SE linux context changed");
            }
            Ok(_) => {}
            Err(e) => return io("cannot stat", &doc.path, e),
        }
    }
    // Ansible says the same of a new owner as of a new mode, once.
    match super::own(mc, &doc.path, attrs.owner, attrs.group, true) {
        Ok(true) if !msg.ends_with("context changed") => {
            if changed {
                msg.push_str(" and ");
            }
            changed = true;
            msg.push_str("ownership, perms or SE linux context changed");
        }
        Ok(_) => {}
        Err(e) => return ModResult::fail(e),
    }
    let mut r = ModResult::ok(changed);
    r.msg = Some(msg);
    r.data.insert("backup".into(), Json::String(String::new()));
    r
}

pub(super) fn insert_of(
    after: Option<&str>,
    before: Option<&str>,
    bof_is_special_after: bool,
) -> Result<Insert, String> {
    Ok(match (after, before) {
        (Some(_), Some(_)) => {
            return Err("parameters are mutually exclusive: insertbefore|insertafter".into());
        }
        (None | Some("EOF"), None) => Insert::Eof,
        // lineinfile treats insertafter=BOF like insertbefore=BOF; blockinfile does not.
        (Some("BOF"), None) if bof_is_special_after => Insert::Bof,
        (Some(a), None) => Insert::After(compile(a)?),
        (None, Some("BOF")) => Insert::Bof,
        (None, Some(b)) => Insert::Before(compile(b)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_flags() {
        assert!(global_multiline("(?m)^x"));
        assert!(global_multiline("(?im)^x"));
        assert!(!global_multiline("(?m:x)"));
        assert!(!global_multiline("^x"));
    }
}
