//! `lineinfile` and `blockinfile`: edit a text file on the target, changed only when a line
//! or the block really changes.
//!
//! The editing is ported from Ansible's modules (quirks included, since playbooks are written
//! against them) as pure functions on text; the module functions only read the file, call
//! them, and write back when the text differs.
//!
//! Regular expressions are Rust's `regex`, not Python's `re`: the common syntax is the same,
//! but lookarounds and backreferences inside a pattern are refused. A line is searched
//! without its final `\n`, so that `$` matches where Python's `$` does (before a final
//! newline).

use regex::{Captures, Regex};
use serde_json::Value as Json;

use super::modules::{ModCtx, ModResult, arg, arg_str, io, mode_of};

/// Where a new line or block goes when nothing in the file matches.
#[derive(Debug, Clone)]
pub(super) enum Insert {
    Bof,
    Eof,
    After(Regex),
    Before(Regex),
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

/// A module's early exit: its finished, failed result (boxed: the result is large, and an
/// exit happens once per task).
pub(super) type Exit = Box<ModResult>;

pub(super) fn exit(msg: impl Into<String>) -> Exit {
    Box::new(ModResult::fail(msg))
}

/// The outcome of an edit: the new text and Ansible's message for it (empty: no change).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Edit {
    pub text: String,
    pub msg: String,
}

/// The file's lines as Python's `readlines()` gives them: split after each `\n`, kept.
fn readlines(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_owned).collect()
}

/// The text a pattern is searched in: the line without its final `\n` (see the module doc).
fn searchable(line: &str) -> &str {
    line.strip_suffix('\n').unwrap_or(line)
}

fn strip_eol(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
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

/// What `blockinfile` is asked to do.
#[derive(Debug, Clone)]
pub(super) struct BlockSpec<'a> {
    pub block: &'a str,
    pub marker_begin: String,
    pub marker_end: String,
    pub present: bool,
    pub insert: Insert,
    /// The insert pattern has a global `(?m)` flag: it searches the whole text at once.
    pub multiline: bool,
    pub append_newline: bool,
    pub prepend_newline: bool,
}

/// Python's `bytes.splitlines(True)`: lines end at `\n`, `\r\n` or `\r`, ends kept.
fn splitlines_keep(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        if c == '\r' && chars.peek() == Some(&'\n') {
            continue;
        }
        if c == '\n' || c == '\r' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `blockinfile` as Ansible's module does it. `original` is None when the file is new.
pub(super) fn block_edit(original: Option<&str>, spec: &BlockSpec) -> Edit {
    let mut lines = original.map(splitlines_keep).unwrap_or_default();
    let marker0 = format!("{}\n", spec.marker_begin);
    let marker1 = format!("{}\n", spec.marker_end);
    let blocklines: Vec<String> = if spec.present && !spec.block.is_empty() {
        let mut block = spec.block.to_owned();
        if !block.ends_with('\n') {
            block.push('\n');
        }
        std::iter::once(marker0.clone())
            .chain(splitlines_keep(&block))
            .chain(std::iter::once(marker1.clone()))
            .collect()
    } else {
        Vec::new()
    };

    let (mut n0, mut n1) = (None, None);
    for (i, l) in lines.iter().enumerate() {
        if *l == marker0 {
            n0 = Some(i);
        }
        if *l == marker1 {
            n1 = Some(i);
        }
    }
    let mut at = match (n0, n1) {
        (Some(a), Some(b)) => {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            lines.drain(lo..=hi);
            lo
        }
        _ => match &spec.insert {
            Insert::After(re) | Insert::Before(re) => {
                let after = matches!(spec.insert, Insert::After(_));
                let mut found = None;
                if spec.multiline {
                    let whole = original.unwrap_or("");
                    if let Some(m) = re.find(whole) {
                        let upto = if after { m.end() } else { m.start() };
                        found = Some(whole[..upto].matches('\n').count());
                    }
                } else {
                    for (i, l) in lines.iter().enumerate() {
                        if re.is_match(searchable(l)) {
                            found = Some(i);
                        }
                    }
                }
                match found {
                    None => lines.len(),
                    Some(n) if after => n + 1,
                    Some(n) => n,
                }
            }
            Insert::Bof => 0,
            Insert::Eof => lines.len(),
        },
    };
    // A multiline match in the last, unterminated line counts one line too many.
    at = at.min(lines.len());
    if at > 0 && !lines[at - 1].ends_with('\n') {
        lines[at - 1].push('\n');
    }
    if spec.prepend_newline && spec.present && at != 0 && lines[at - 1] != "\n" {
        lines.insert(at, "\n".into());
        at += 1;
    }
    let after_block = at + blocklines.len();
    let removed = blocklines.is_empty();
    lines.splice(at..at, blocklines);
    if spec.append_newline
        && spec.present
        && after_block < lines.len()
        && lines[after_block] != "\n"
    {
        lines.insert(after_block, "\n".into());
    }
    let text = lines.concat();
    let msg = if original == Some(text.as_str()) {
        ""
    } else if original.is_none() {
        "File created"
    } else if removed {
        "Block removed"
    } else {
        "Block inserted"
    };
    Edit {
        text,
        msg: msg.into(),
    }
}

/// A boolean argument as Ansible reads one: YAML booleans or `yes`/`no`/`true`/`1`/...
pub(super) fn flag(args: &Json, names: &[&str]) -> Result<bool, String> {
    let what = names.first().copied().unwrap_or("argument");
    match arg(args, names) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(Json::Number(n)) if n.as_i64() == Some(1) => Ok(true),
        Some(Json::Number(n)) if n.as_i64() == Some(0) => Ok(false),
        Some(Json::String(s)) => match s.to_ascii_lowercase().as_str() {
            "yes" | "on" | "1" | "true" | "y" | "t" => Ok(true),
            "no" | "off" | "0" | "false" | "n" | "f" | "" => Ok(false),
            _ => Err(format!("{what} must be a boolean, got {s:?}")),
        },
        Some(other) => Err(format!("{what} must be a boolean, got {other}")),
    }
}

/// A string argument as Ansible's `str` type reads it: null is unset, a boolean is
/// Python's `True`/`False`.
fn text(args: &Json, names: &[&str]) -> Option<String> {
    match arg(args, names)? {
        Json::Null => None,
        Json::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        _ => arg_str(args, names),
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// Whether a pattern starts with global inline flags that include `m`, as `(?m)` or `(?im)`.
fn global_multiline(pattern: &str) -> bool {
    pattern
        .strip_prefix("(?")
        .and_then(|rest| rest.split_once(')'))
        .is_some_and(|(flags, _)| {
            flags.contains('m') && flags.chars().all(|c| "aiLmsux".contains(c))
        })
}

/// The file to edit, as `lineinfile` and `blockinfile` both take it.
struct Doc {
    path: String,
    /// None: the file does not exist.
    text: Option<String>,
}

fn load(args: &Json, mc: &ModCtx) -> Result<Doc, Exit> {
    let Some(path) = arg_str(args, &["path", "dest", "destfile", "name"]) else {
        return Err(exit("missing required arguments: path".to_owned()));
    };
    let asked = [
        ("backup", flag(args, &["backup"]) != Ok(false)),
        ("validate", text(args, &["validate"]).is_some()),
    ];
    if let Some((unsupported, _)) = asked.iter().find(|(_, on)| *on) {
        return Err(exit(format!(
            "`{unsupported}` is not in the built-in subset; set `runner: ansible`"
        )));
    }
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

/// Writes the new text when it changed, then applies `mode`; the message says what happened
/// in Ansible's words.
fn finish(mc: &ModCtx, args: &Json, doc: &Doc, edit: Edit) -> ModResult {
    let mode = match mode_of(args) {
        Ok(m) => m,
        Err(e) => return ModResult::fail(e),
    };
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
    let mut r = ModResult::ok(changed);
    r.msg = Some(msg);
    r.data.insert("backup".into(), Json::String(String::new()));
    r
}

fn insert_of(args: &Json, bof_is_special_after: bool) -> Result<Insert, String> {
    let after = text(args, &["insertafter"]);
    let before = text(args, &["insertbefore"]);
    Ok(match (after.as_deref(), before.as_deref()) {
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

pub fn lineinfile(args: &Json, mc: &ModCtx) -> ModResult {
    match lineinfile_inner(args, mc) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn lineinfile_inner(args: &Json, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let state = text(args, &["state"]).unwrap_or_else(|| "present".into());
    let regexp = match text(args, &["regexp", "regex"]) {
        Some(p) => Some(compile(&p).map_err(fail)?),
        None => None,
    };
    let search_string = text(args, &["search_string"]);
    let line = text(args, &["line", "value"]);
    let backrefs = flag(args, &["backrefs"]).map_err(fail)?;
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
    let insert = insert_of(args, true).map_err(fail)?;
    let doc = load(args, mc)?;
    match state.as_str() {
        "present" => {
            if backrefs && regexp.is_none() {
                return Err(fail("regexp is required with backrefs=true".into()));
            }
            let Some(line) = line.as_deref() else {
                return Err(fail("line is required with state=present".into()));
            };
            let create = flag(args, &["create"]).map_err(fail)?;
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
                firstmatch: flag(args, &["firstmatch"]).map_err(fail)?,
            };
            let edit = line_present(doc.text.as_deref().unwrap_or(""), &spec).map_err(fail)?;
            if doc.text.is_none() && edit.text.is_empty() {
                // backrefs matched nothing in a file that does not exist: nothing to create.
                let mut r = ModResult::ok(false);
                r.msg = Some(String::new());
                return Ok(r);
            }
            Ok(finish(mc, args, &doc, edit))
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
            let mut r = finish(mc, args, &doc, Edit { text: new, msg });
            r.data.insert("found".into(), Json::from(found));
            Ok(r)
        }
        other => Err(fail(format!(
            "value of state must be one of: absent, present, got: {other}"
        ))),
    }
}

pub fn blockinfile(args: &Json, mc: &ModCtx) -> ModResult {
    match blockinfile_inner(args, mc) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn blockinfile_inner(args: &Json, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let state = text(args, &["state"]).unwrap_or_else(|| "present".into());
    let present = match state.as_str() {
        "present" => true,
        "absent" => false,
        other => {
            return Err(fail(format!(
                "value of state must be one of: absent, present, got: {other}"
            )));
        }
    };
    let block = text(args, &["block", "content"]).unwrap_or_default();
    let marker = text(args, &["marker"]).unwrap_or_else(|| "# {mark} ANSIBLE MANAGED BLOCK".into());
    let begin = text(args, &["marker_begin"]).unwrap_or_else(|| "BEGIN".into());
    let end = text(args, &["marker_end"]).unwrap_or_else(|| "END".into());
    let insert = insert_of(args, false).map_err(fail)?;
    let multiline = match text(args, &["insertafter", "insertbefore"]) {
        Some(p) => global_multiline(&p),
        None => false,
    };
    let doc = load(args, mc)?;
    if doc.text.is_none() {
        if !flag(args, &["create"]).map_err(fail)? {
            let mut r = fail(format!("Path {} does not exist !", doc.path));
            r.data.insert("rc".into(), Json::from(257));
            return Err(r);
        }
        if !present {
            let mut r = ModResult::ok(false);
            r.msg = Some(format!("File {} not present", doc.path));
            return Ok(r);
        }
    }
    let spec = BlockSpec {
        block: &block,
        marker_begin: marker.replace("{mark}", &begin),
        marker_end: marker.replace("{mark}", &end),
        present,
        insert,
        multiline,
        append_newline: flag(args, &["append_newline"]).map_err(fail)?,
        prepend_newline: flag(args, &["prepend_newline"]).map_err(fail)?,
    };
    let edit = block_edit(doc.text.as_deref(), &spec);
    Ok(finish(mc, args, &doc, edit))
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

    fn block(text: Option<&str>, b: &str, insert: Insert) -> Edit {
        block_edit(
            text,
            &BlockSpec {
                block: b,
                marker_begin: "# BEGIN ANSIBLE MANAGED BLOCK".into(),
                marker_end: "# END ANSIBLE MANAGED BLOCK".into(),
                present: true,
                insert,
                multiline: false,
                append_newline: false,
                prepend_newline: false,
            },
        )
    }

    const B: &str = "# BEGIN ANSIBLE MANAGED BLOCK\n";
    const E: &str = "# END ANSIBLE MANAGED BLOCK\n";

    #[test]
    fn block_is_inserted_then_updated_in_place_then_removed() {
        let first = block(Some("a\nz"), "one\ntwo", Insert::Eof);
        assert_eq!(first.text, format!("a\nz\n{B}one\ntwo\n{E}"));
        assert_eq!(first.msg, "Block inserted");
        let again = block(Some(&first.text), "one\ntwo\n", Insert::Eof);
        assert_eq!(
            (again.text.as_str(), again.msg.as_str()),
            (first.text.as_str(), "")
        );
        // A changed block stays where it was, whatever the insert position says.
        let moved = block(Some(&format!("{B}x\n{E}tail\n")), "y", Insert::Eof);
        assert_eq!(moved.text, format!("{B}y\n{E}tail\n"));
        let gone = block(Some(&first.text), "", Insert::Eof);
        assert_eq!(
            (gone.text.as_str(), gone.msg.as_str()),
            ("a\nz\n", "Block removed")
        );
        let created = block(None, "x", Insert::Eof);
        assert_eq!(created.text, format!("{B}x\n{E}"));
        assert_eq!(created.msg, "File created");
    }

    #[test]
    fn block_insert_positions() {
        let text = "a\nb\na\n";
        assert_eq!(
            block(Some(text), "x", Insert::Bof).text,
            format!("{B}x\n{E}{text}")
        );
        assert_eq!(
            block(Some(text), "x", Insert::After(re("^a$"))).text,
            format!("a\nb\na\n{B}x\n{E}")
        );
        assert_eq!(
            block(Some(text), "x", Insert::Before(re("^b"))).text,
            format!("a\n{B}x\n{E}b\na\n")
        );
        // A pattern that matches nothing puts the block at the end.
        assert_eq!(
            block(Some(text), "x", Insert::Before(re("^q"))).text,
            format!("{text}{B}x\n{E}")
        );
    }

    #[test]
    fn block_with_multiline_pattern_and_newline_padding() {
        let text = "a\nb\nc\n";
        let mut s = BlockSpec {
            block: "x",
            marker_begin: "<<".into(),
            marker_end: ">>".into(),
            present: true,
            insert: Insert::After(re("(?m)^b\nc$")),
            multiline: true,
            append_newline: false,
            prepend_newline: false,
        };
        assert_eq!(block_edit(Some(text), &s).text, "a\nb\nc\n<<\nx\n>>\n");
        s.insert = Insert::Before(re("(?m)^b\nc$"));
        s.prepend_newline = true;
        s.append_newline = true;
        assert_eq!(block_edit(Some(text), &s).text, "a\n\n<<\nx\n>>\n\nb\nc\n");
    }

    #[test]
    fn reversed_or_identical_markers_are_handled_like_ansible() {
        let reversed = format!("{E}old\n{B}tail\n");
        assert_eq!(
            block(Some(&reversed), "x", Insert::Eof).text,
            format!("{B}x\n{E}tail\n")
        );
        let same = BlockSpec {
            block: "x",
            marker_begin: "##".into(),
            marker_end: "##".into(),
            present: true,
            insert: Insert::Eof,
            multiline: false,
            append_newline: false,
            prepend_newline: false,
        };
        let once = block_edit(Some("a\n"), &same).text;
        assert_eq!(once, "a\n##\nx\n##\n");
    }

    #[test]
    fn splitlines_keeps_every_kind_of_line_end() {
        assert_eq!(
            splitlines_keep("a\r\nb\rc\nd"),
            ["a\r\n", "b\r", "c\n", "d"]
        );
        assert!(splitlines_keep("").is_empty());
    }

    #[test]
    fn global_flags_and_booleans() {
        assert!(global_multiline("(?m)^x"));
        assert!(global_multiline("(?im)^x"));
        assert!(!global_multiline("(?m:x)"));
        assert!(!global_multiline("^x"));
        let args = serde_json::json!({"a": "yes", "b": false, "c": "maybe", "d": 1});
        assert_eq!(flag(&args, &["a"]), Ok(true));
        assert_eq!(flag(&args, &["b"]), Ok(false));
        assert!(flag(&args, &["c"]).is_err());
        assert_eq!(flag(&args, &["d"]), Ok(true));
        assert_eq!(flag(&args, &["missing"]), Ok(false));
    }
}
