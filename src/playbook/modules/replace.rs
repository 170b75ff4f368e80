//! `replace`: every match of a regular expression in a file on the target, replaced —
//! optionally only in the section after `after` and/or before `before`. Ported from
//! Ansible's module: the section is found with the dot matching newlines, the replacement
//! is made with `^`/`$` matching at each line, and nothing is written unless the text
//! changes. Python's `\1` back-references are taken (see `text_edit` for the regex dialect).

use super::params::Inert;
use super::params::{Flag, Mode, PyStr, Str, file_params};
use super::text_edit::{Attrs, Edit, compile, finish, load};
use super::{ModCtx, ModResult, Module, exit};

pub(super) struct Replace;

file_params! {
    /// Ansible's parameters; SELinux ones are accepted and not acted on, `backup` and
    /// `validate` refused (`INERT`).
    struct Params {
        #[serde(alias = "dest", alias = "destfile", alias = "name")]
        path: Option<Str>,
        regexp: Option<PyStr>,
        replace: Option<PyStr>,
        after: Option<PyStr>,
        before: Option<PyStr>,
        mode: Option<Mode>,
        backup: Option<Flag>,
        validate: Option<PyStr>,
        encoding: Option<Str>,
    }
}

impl Module for Replace {
    type Params = Params;

    /// `backup`, `validate` and other encodings are not acted on: refused when set.
    const INERT: &'static [Inert] = &[
        Inert::only("backup", &["false"]),
        Inert::never("validate"),
        Inert::only("encoding", &["utf-8", "utf8"]),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let doc = match load(p.path.map(|s| s.0), mc) {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let Some(text) = doc.text.clone() else {
            return *exit(format!("Path {} does not exist !", doc.path));
        };
        let Some(PyStr(regexp)) = p.regexp else {
            return *exit("missing required arguments: regexp");
        };
        let replacement = p.replace.map(|r| r.0).unwrap_or_default();
        match replace(
            &text,
            &regexp,
            &replacement,
            p.after.as_ref().map(|a| a.0.as_str()),
            p.before.as_ref().map(|b| b.0.as_str()),
        ) {
            Ok(edit) => {
                let attrs = Attrs {
                    mode: p.mode.map(|m| m.0),
                    owner: p.owner.as_ref().map(|o| o.0.as_str()),
                    group: p.group.as_ref().map(|g| g.0.as_str()),
                };
                finish(mc, &attrs, &doc, edit)
            }
            Err(e) => *exit(e),
        }
    }
}

/// The edit `replace` makes of `text`: Ansible's message is `N replacements made`, or empty
/// when nothing changed.
fn replace(
    text: &str,
    regexp: &str,
    replacement: &str,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<Edit, String> {
    // The section: what lies between the first `after` and the next `before` (the dot
    // matches newlines, as Ansible's re.DOTALL).
    let section = match (after, before) {
        (Some(a), Some(b)) => Some(format!("(?s){a}(?P<subsection>.*?){b}")),
        (Some(a), None) => Some(format!("(?s){a}(?P<subsection>.*)")),
        (None, Some(b)) => Some(format!("(?s)(?P<subsection>.*){b}")),
        (None, None) => None,
    };
    let (start, end) = match &section {
        None => (0, text.len()),
        Some(pattern) => match compile(pattern)?
            .captures(text)
            .and_then(|c| c.name("subsection"))
        {
            Some(m) => (m.start(), m.end()),
            // No section: nothing to replace in.
            None => {
                return Ok(Edit {
                    text: text.to_owned(),
                    msg: String::new(),
                });
            }
        },
    };
    let re = compile(&format!("(?m){regexp}"))?;
    let part = &text[start..end];
    let count = re.find_iter(part).count();
    let replaced = re.replace_all(part, crate::template::python_backrefs(replacement).as_str());
    if count == 0 || replaced == part {
        return Ok(Edit {
            text: text.to_owned(),
            msg: String::new(),
        });
    }
    Ok(Edit {
        text: format!("{}{replaced}{}", &text[..start], &text[end..]),
        msg: format!("{count} replacements made"),
    })
}

#[cfg(test)]
mod tests {
    use super::replace;

    #[test]
    fn replaces_in_the_whole_file_or_a_section() {
        let text = "a=1\n[x]\na=2\n[y]\na=3\n";
        let e = replace(text, r"^a=(\d)$", r"a=\1\1", None, None).unwrap();
        assert_eq!(e.text, "a=11\n[x]\na=22\n[y]\na=33\n");
        assert_eq!(e.msg, "3 replacements made");
        let e = replace(text, "^a=.*$", "a=9", Some(r"\[x\]"), Some(r"\[y\]")).unwrap();
        assert_eq!(e.text, "a=1\n[x]\na=9\n[y]\na=3\n");
        let e = replace(text, "^b=.*$", "b=9", None, None).unwrap();
        assert_eq!((e.text.as_str(), e.msg.as_str()), (text, ""));
    }
}
