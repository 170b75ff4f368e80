//! `blockinfile`: a block of lines between markers in a text file on the target, changed
//! only when the block really changes. Ported from Ansible's module as a pure function on
//! text (see `text_edit` for the regex dialect).

use super::params::Inert;
use serde_json::Value as Json;

use super::params::{Flag, Mode, PyStr, Str, file_params, is};
use super::text_edit::{
    Attrs, Edit, Insert, finish, global_multiline, insert_of, load, searchable,
};
use super::{Exit, ModCtx, ModResult, Module, either, exit};

pub(super) struct BlockInFile;

file_params! {
    /// Ansible's parameters; SELinux ones are accepted and not acted on, `backup`
    /// and `validate` refused (`INERT`).
    struct Params {
        #[serde(alias = "dest", alias = "destfile", alias = "name")]
        path: Option<Str>,
        state: Option<PyStr>,
        marker: Option<PyStr>,
        #[serde(alias = "content")]
        block: Option<PyStr>,
        insertafter: Option<PyStr>,
        insertbefore: Option<PyStr>,
        create: Option<Flag>,
        marker_begin: Option<PyStr>,
        marker_end: Option<PyStr>,
        append_newline: Option<Flag>,
        prepend_newline: Option<Flag>,
        mode: Option<Mode>,
        backup: Option<Flag>,
        validate: Option<PyStr>,
    }
}

impl Module for BlockInFile {
    type Params = Params;

    /// `backup` and `validate` are not acted on: refused when set.
    const INERT: &'static [Inert] = super::text_edit::EDIT_INERT;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        either(edit(p, mc))
    }
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

fn edit(p: Params, mc: &ModCtx) -> Result<ModResult, Exit> {
    let fail = |m: String| exit(m);
    let state = p.state.map_or_else(|| "present".to_owned(), |s| s.0);
    let present = match state.as_str() {
        "present" => true,
        "absent" => false,
        other => {
            return Err(fail(format!(
                "value of state must be one of: absent, present, got: {other}"
            )));
        }
    };
    let block = p.block.map(|s| s.0).unwrap_or_default();
    let marker = p
        .marker
        .map_or_else(|| "# {mark} ANSIBLE MANAGED BLOCK".to_owned(), |s| s.0);
    let begin = p.marker_begin.map_or_else(|| "BEGIN".to_owned(), |s| s.0);
    let end = p.marker_end.map_or_else(|| "END".to_owned(), |s| s.0);
    let (after, before) = (
        p.insertafter.as_ref().map(|s| s.0.as_str()),
        p.insertbefore.as_ref().map(|s| s.0.as_str()),
    );
    let insert = insert_of(after, before, false).map_err(fail)?;
    let multiline = after.or(before).is_some_and(global_multiline);
    let doc = load(p.path.map(|s| s.0), mc)?;
    if doc.text.is_none() {
        if !is(p.create) {
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
        append_newline: is(p.append_newline),
        prepend_newline: is(p.prepend_newline),
    };
    let edit = block_edit(doc.text.as_deref(), &spec);
    let attrs = Attrs {
        mode: p.mode.map(|m| m.0),
        owner: p.owner.as_ref().map(|o| o.0.as_str()),
        group: p.group.as_ref().map(|g| g.0.as_str()),
    };
    Ok(finish(mc, &attrs, &doc, edit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn re(p: &str) -> Regex {
        Regex::new(p).expect("test pattern")
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
}
