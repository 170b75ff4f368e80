//! `lineinfile`: one line of a text file on the target, present or absent, changed only
//! when the line really changes. The editing is ported from Ansible's module as pure
//! functions on text (see `text_edit` for the regex dialect).

use super::params::Inert;
use regex::{Captures, Regex};
use serde_json::Value as Json;

use super::params::{Flag, Mode, PyStr, Str, file_params, is};
use super::text_edit::{
    Attrs, Edit, Insert, compile, finish, insert_of, load, readlines, searchable, strip_eol,
};
use super::{Exit, ModCtx, ModResult, Module, either, exit};

pub(super) struct LineInFile;

file_params! {
    /// Ansible's parameters; SELinux ones are accepted and not acted on, `backup`
    /// and `validate` refused (`INERT`).
    struct Params {
        #[serde(alias = "dest", alias = "destfile", alias = "name")]
        path: Option<Str>,
        state: Option<PyStr>,
        #[serde(alias = "regex")]
        regexp: Option<PyStr>,
        search_string: Option<PyStr>,
        #[serde(alias = "value")]
        line: Option<PyStr>,
        backrefs: Option<Flag>,
        insertafter: Option<PyStr>,
        insertbefore: Option<PyStr>,
        create: Option<Flag>,
        firstmatch: Option<Flag>,
        mode: Option<Mode>,
        backup: Option<Flag>,
        validate: Option<PyStr>,
    }
}

impl Module for LineInFile {
    type Params = Params;

    /// `backup` and `validate` are not acted on: refused when set.
    const INERT: &'static [Inert] = super::text_edit::EDIT_INERT;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(edit(p, mc))
    }
}

/// What `lineinfile` with `state: present` looks for and writes.
#[derive(Debug, Clone)]
pub(super) struct LineSpec<'a> {
    pub regexp: Option<Regex>,
    pub search_string: Option<&'a str>,
    pub line: &'a str,
    pub insert: Insert,
    pub backrefs: bool,
    pub firstmatch: bool,
}

/// `lineinfile` with `state: present`, as Ansible's `present()` does it.
pub(super) fn line_present(text: &str, spec: &LineSpec) -> Result<Edit, String> {
    let mut lines = readlines(text);
    let line = spec.line;
    // index[0] of Ansible: the line to replace; index[1]: where to insert.
    let mut replace_at: Option<usize> = None;
    let mut insert_at: Option<usize> = None;
    let mut matched = false;

    if let Some(re) = &spec.regexp {
        for (i, l) in lines.iter().enumerate() {
            if re.is_match(searchable(l)) {
                replace_at = Some(i);
                matched = true;
                if spec.firstmatch {
                    break;
                }
            }
        }
    }
    if let Some(s) = spec.search_string {
        for (i, l) in lines.iter().enumerate() {
            if l.contains(s) {
                replace_at = Some(i);
                matched = true;
                if spec.firstmatch {
                    break;
                }
            }
        }
    }
    if !matched {
        for (i, l) in lines.iter().enumerate() {
            if strip_eol(l) == line {
                replace_at = Some(i);
            } else {
                match &spec.insert {
                    Insert::After(re) if re.is_match(searchable(l)) => {
                        insert_at = Some(i + 1);
                        if spec.firstmatch {
                            break;
                        }
                    }
                    Insert::Before(re) if re.is_match(searchable(l)) => {
                        insert_at = Some(i);
                        if spec.firstmatch {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    let added = format!("{line}\n");
    let mut msg = String::new();
    if let Some(i) = replace_at {
        // Only a regexp match (not an exact line found instead) expands backrefs.
        let caps = match (&spec.regexp, matched && spec.backrefs) {
            (Some(re), true) => re.captures(searchable(&lines[i])).map(|c| (re, c)),
            _ => None,
        };
        let mut new_line = match caps {
            Some((re, c)) => expand_python(line, re, &c)?,
            None => line.to_owned(),
        };
        if !new_line.ends_with('\n') {
            new_line.push('\n');
        }
        if lines[i] != new_line {
            lines[i] = new_line;
            msg = "line replaced".into();
        }
    } else if spec.backrefs {
        // With backrefs, a regexp that matches nothing leaves the file alone.
    } else {
        match (&spec.insert, insert_at) {
            (Insert::Bof, _) => {
                lines.insert(0, added);
                msg = "line added".into();
            }
            (Insert::Eof, _) | (_, None) => {
                if let Some(last) = lines.last_mut()
                    && !last.ends_with(['\n', '\r'])
                {
                    last.push('\n');
                }
                lines.push(added);
                msg = "line added".into();
            }
            (Insert::After(_), Some(i)) => {
                // Ansible compares with the line before the end without first ending an
                // unterminated last line, so a line appended there joins it; kept as it is.
                // `i` is one past a matching line, so `i - 1` does not underflow.
                let neighbour = if i == lines.len() { i - 1 } else { i };
                if strip_eol(&lines[neighbour]) != line {
                    lines.insert(i, added);
                    msg = "line added".into();
                }
            }
            (Insert::Before(_), Some(i)) => {
                lines.insert(i, added);
                msg = "line added".into();
            }
        }
    }
    Ok(Edit {
        text: lines.concat(),
        msg,
    })
}

/// `lineinfile` with `state: absent`: drops every matching line; returns the new text and
/// how many lines went.
pub(super) fn line_absent(
    text: &str,
    regexp: Option<&Regex>,
    search_string: Option<&str>,
    line: Option<&str>,
) -> (String, usize) {
    let mut found = 0;
    let kept: Vec<String> = readlines(text)
        .into_iter()
        .filter(|l| {
            let hit = match (regexp, search_string, line) {
                (Some(re), _, _) => re.is_match(searchable(l)),
                (None, Some(s), _) => l.contains(s),
                (None, None, Some(want)) => strip_eol(l) == want,
                (None, None, None) => false,
            };
            found += usize::from(hit);
            !hit
        })
        .collect();
    (kept.concat(), found)
}

/// Python's `Match.expand`: `\1`, `\g<1>`, `\g<name>` and the escapes `\n`, `\t`, `\\`, ...;
/// a group that did not take part in the match expands to nothing.
pub(super) fn expand_python(template: &str, re: &Regex, caps: &Captures) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    let group = |out: &mut String, key: &str| -> Result<(), String> {
        let m = match key.parse::<usize>() {
            Ok(n) if n < caps.len() => caps.get(n),
            Ok(_) => return Err(format!("invalid group reference {key}")),
            Err(_) if re.capture_names().flatten().any(|n| n == key) => caps.name(key),
            Err(_) => return Err(format!("unknown group name '{key}'")),
        };
        out.push_str(m.map_or("", |m| m.as_str()));
        Ok(())
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err("bad escape (end of pattern)".into());
        };
        match e {
            'g' => {
                if chars.next() != Some('<') {
                    return Err("missing < after \\g".into());
                }
                let mut key = String::new();
                loop {
                    match chars.next() {
                        Some('>') => break,
                        Some(k) => key.push(k),
                        None => return Err("missing >, unterminated name".into()),
                    }
                }
                group(&mut out, &key)?;
            }
            '0' => {
                // \0 is an octal escape (up to three digits), not the whole match.
                let mut code = 0u32;
                for _ in 0..2 {
                    match chars.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            code = code * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(code).unwrap_or('\0'));
            }
            d if d.is_ascii_digit() => {
                let mut key = d.to_string();
                if let Some(d2) = chars.peek().copied().filter(char::is_ascii_digit) {
                    key.push(d2);
                    chars.next();
                }
                group(&mut out, &key)?;
            }
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            l if l.is_ascii_alphabetic() => return Err(format!("bad escape \\{l}")),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

fn edit(p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let state = p.state.map_or_else(|| "present".to_owned(), |s| s.0);
    let regexp = match p.regexp.map(|s| s.0) {
        Some(p) => Some(compile(&p).map_err(fail)?),
        None => None,
    };
    let search_string = p.search_string.map(|s| s.0);
    let line = p.line.map(|s| s.0);
    let backrefs = is(p.backrefs);
    if regexp.is_some() && search_string.is_some() {
        return Err(fail(
            "parameters are mutually exclusive: regexp|search_string".into(),
        ));
    }
    if backrefs && search_string.is_some() {
        return Err(fail(
            "parameters are mutually exclusive: backrefs|search_string".into(),
        ));
    }
    let insert = insert_of(
        p.insertafter.as_ref().map(|s| s.0.as_str()),
        p.insertbefore.as_ref().map(|s| s.0.as_str()),
        true,
    )
    .map_err(fail)?;
    let doc = load(p.path.map(|s| s.0), mc)?;
    let attrs = Attrs {
        mode: p.mode.map(|m| m.0),
        owner: p.owner.as_ref().map(|o| o.0.as_str()),
        group: p.group.as_ref().map(|g| g.0.as_str()),
    };
    match state.as_str() {
        "present" => {
            if backrefs && regexp.is_none() {
                return Err(fail("regexp is required with backrefs=true".into()));
            }
            let Some(line) = line.as_deref() else {
                return Err(fail("line is required with state=present".into()));
            };
            let create = is(p.create);
            if doc.text.is_none() && !create {
                let mut r = fail(format!("Destination {} does not exist !", doc.path));
                r.data.insert("rc".into(), Json::from(257));
                return Err(r);
            }
            let spec = LineSpec {
                regexp,
                search_string: search_string.as_deref(),
                line,
                insert,
                backrefs,
                firstmatch: is(p.firstmatch),
            };
            let edit = line_present(doc.text.as_deref().unwrap_or(""), &spec).map_err(fail)?;
            if doc.text.is_none() && edit.text.is_empty() {
                // backrefs matched nothing in a file that does not exist: nothing to create.
                let mut r = ModResult::ok(false);
                r.msg = Some(String::new());
                return Ok(r);
            }
            Ok(finish(mc, &attrs, &doc, edit))
        }
        "absent" => {
            if regexp.is_none() && search_string.is_none() && line.is_none() {
                return Err(fail(
                    "one of line, search_string, or regexp is required with state=absent".into(),
                ));
            }
            let Some(text) = doc.text.as_deref() else {
                let mut r = ModResult::ok(false);
                r.msg = Some("file not present".into());
                return Ok(r);
            };
            let (new, found) = line_absent(
                text,
                regexp.as_ref(),
                search_string.as_deref(),
                line.as_deref(),
            );
            let msg = if found > 0 {
                format!("{found} line(s) removed")
            } else {
                String::new()
            };
            let mut r = finish(mc, &attrs, &doc, Edit { text: new, msg });
            r.data.insert("found".into(), Json::from(found));
            Ok(r)
        }
        other => Err(fail(format!(
            "value of state must be one of: absent, present, got: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Regex {
        Regex::new(p).expect("test pattern")
    }

    fn spec(line: &str) -> LineSpec<'_> {
        LineSpec {
            regexp: None,
            search_string: None,
            line,
            insert: Insert::Eof,
            backrefs: false,
            firstmatch: false,
        }
    }

    fn present(text: &str, s: &LineSpec) -> (String, String) {
        let e = line_present(text, s).expect("edit");
        (e.text, e.msg)
    }

    #[test]
    fn regexp_replaces_the_last_match_and_is_idempotent() {
        let s = LineSpec {
            regexp: Some(re("^port=")),
            ..spec("port=8080")
        };
        let text = "port=1\nhost=a\nport=2\n";
        let (once, msg) = present(text, &s);
        assert_eq!(once, "port=1\nhost=a\nport=8080\n");
        assert_eq!(msg, "line replaced");
        assert_eq!(present(&once, &s), (once.clone(), String::new()));
        let first = LineSpec {
            firstmatch: true,
            ..s
        };
        assert_eq!(present(text, &first).0, "port=8080\nhost=a\nport=2\n");
    }

    #[test]
    fn dollar_matches_before_the_newline_as_in_python() {
        let s = LineSpec {
            regexp: Some(re("^host=.*$")),
            ..spec("host=b")
        };
        assert_eq!(present("host=a\n", &s).0, "host=b\n");
    }

    #[test]
    fn a_missing_line_goes_to_the_end_and_ends_the_last_line_first() {
        assert_eq!(
            present("a", &spec("x")),
            ("a\nx\n".into(), "line added".into())
        );
        assert_eq!(present("", &spec("x")).0, "x\n");
        assert_eq!(present("x\n", &spec("x")), ("x\n".into(), String::new()));
        // An exact line without its newline is rewritten with one.
        assert_eq!(present("a\nx", &spec("x")).0, "a\nx\n");
    }

    #[test]
    fn insertafter_and_insertbefore() {
        let text = "[a]\nk=1\n[b]\nk=2\n";
        let after = LineSpec {
            insert: Insert::After(re(r"^\[")),
            ..spec("new")
        };
        // The last match wins unless firstmatch.
        assert_eq!(present(text, &after).0, "[a]\nk=1\n[b]\nnew\nk=2\n");
        let first = LineSpec {
            firstmatch: true,
            ..after.clone()
        };
        assert_eq!(present(text, &first).0, "[a]\nnew\nk=1\n[b]\nk=2\n");
        let before = LineSpec {
            insert: Insert::Before(re(r"^\[b\]")),
            ..spec("new")
        };
        assert_eq!(present(text, &before).0, "[a]\nk=1\nnew\n[b]\nk=2\n");
        let bof = LineSpec {
            insert: Insert::Bof,
            ..spec("top")
        };
        assert_eq!(present(text, &bof).0, format!("top\n{text}"));
        // Present already: nothing moves, wherever it is.
        assert_eq!(present("top\n[a]\n", &bof).1, "");
        // No match for the insert pattern: the end of the file.
        let nowhere = LineSpec {
            insert: Insert::After(re("^nothing")),
            ..spec("z")
        };
        assert_eq!(present("a\n", &nowhere).0, "a\nz\n");
    }

    #[test]
    fn insertafter_the_line_already_there_is_no_change() {
        let s = LineSpec {
            insert: Insert::After(re("^a$")),
            ..spec("b")
        };
        assert_eq!(present("a\nb\n", &s).1, "");
        // The exact line anywhere counts as present.
        assert_eq!(present("b\na\n", &s).1, "");
    }

    #[test]
    fn insertafter_an_unterminated_last_line_joins_it_as_ansible_does() {
        let s = LineSpec {
            insert: Insert::After(re("^a")),
            ..spec("b")
        };
        assert_eq!(present("a", &s).0, "ab\n");
    }

    #[test]
    fn backrefs_expand_groups_and_leave_the_file_alone_without_a_match() {
        let s = LineSpec {
            regexp: Some(re(r"^(?P<key>\w+)\s*=\s*(.*)$")),
            backrefs: true,
            ..spec(r"\g<key>: \2")
        };
        assert_eq!(present("name = x\n", &s).0, "name: x\n");
        assert_eq!(
            present("# nothing\n", &s),
            ("# nothing\n".into(), String::new())
        );
        // Without backrefs the line is taken literally.
        let literal = LineSpec {
            backrefs: false,
            ..s
        };
        assert_eq!(present("name = x\n", &literal).0, "\\g<key>: \\2\n");
    }

    #[test]
    fn expand_python_handles_escapes_and_groups() {
        let r = re(r"(a)(b)?(?P<n>c)");
        let caps = r.captures("ac").expect("matches");
        let ex = |t: &str| expand_python(t, &r, &caps);
        assert_eq!(ex(r"\1-\2-\g<n>-\g<3>").as_deref(), Ok("a--c-c"));
        assert_eq!(ex(r"x\ty\\z\.").as_deref(), Ok("x\ty\\z\\."));
        assert_eq!(ex(r"$1 \0").as_deref(), Ok("$1 \0"));
        assert!(ex(r"\4").is_err());
        assert!(ex(r"\g<nope>").is_err());
        assert!(ex(r"\q").is_err());
        assert!(ex("trailing\\").is_err());
    }

    #[test]
    fn absent_removes_every_match_and_counts_them() {
        let text = "a=1\nb=2\na=3\n";
        assert_eq!(
            line_absent(text, Some(&re("^a=")), None, None),
            ("b=2\n".into(), 2)
        );
        assert_eq!(
            line_absent(text, None, Some("=2"), None),
            ("a=1\na=3\n".into(), 1)
        );
        assert_eq!(
            line_absent(text, None, None, Some("a=3")),
            ("a=1\nb=2\n".into(), 1)
        );
        assert_eq!(line_absent(text, None, None, Some("zz")), (text.into(), 0));
    }
}
