//! Reading user YAML with source positions. Every file format of the spec goes through
//! [`Source`], so every error can name file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
pub use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Origin, Pos, expected_hint};

mod yaml11;
pub use yaml11::resolve as resolve_yaml11;

/// A YAML value that remembers where each of its parts came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Entries in file order; duplicate keys are rejected by the parser.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// The YAML type name used in messages ("expected int, found string").
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "bool",
            Node::Int(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "string",
            Node::Seq(_) => "list",
            Node::Map(_) => "map",
        }
    }

    /// The plain value, positions dropped. Non-finite floats have no JSON form and become null.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(|i| i.value.to_json()).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                i64::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("integer out of range (64-bit signed)"))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
                i64::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("integer out of range (64-bit signed)"))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
                i64::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("integer out of range (64-bit signed)"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = a.next_entry()? {
                    entries.push(e);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

/// Where a spanned value starts, if the parser recorded it.
pub fn pos<T>(s: &Spanned<T>) -> Option<Pos> {
    let loc = s.referenced;
    (loc.line() > 0).then(|| Pos {
        line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
        col: u32::try_from(loc.column()).unwrap_or(u32::MAX),
    })
}

/// Which YAML a file is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// stepsync's own files: YAML 1.2 core, so a key `no` or a version `1.10` means what
    /// it says.
    #[default]
    Yaml12,
    /// Files Ansible reads (playbooks, roles, vars files, inventories): YAML 1.1 as PyYAML
    /// reads it, so the same file means the same to both runners (`0644` is octal, `yes` a
    /// boolean).
    Ansible,
}

/// A user file held in memory, so diagnostics can quote it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    /// Shared with every [`Origin`] taken from this file.
    pub text: std::sync::Arc<str>,
    /// How [`Source::documents`] reads plain scalars.
    pub dialect: Dialect,
}

impl Source {
    /// Reads `path`; invalid UTF-8 is reported at the first bad byte.
    pub fn read(path: &Path) -> Result<Source, Diagnostic> {
        let bytes = std::fs::read(path)
            .map_err(|e| Diagnostic::in_file(format!("cannot read file: {e}"), path))?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text: text.into(),
                dialect: Dialect::Yaml12,
            }),
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|b| **b == b'\n').count() + 1;
                let col = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let d = Diagnostic::at(
                    "file is not valid UTF-8",
                    path,
                    &text,
                    Some(Pos {
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        col: u32::try_from(col).unwrap_or(u32::MAX),
                    }),
                );
                // A byte-order mark says which encoding it is.
                let bytes = e.as_bytes();
                Err(
                    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
                        d.with_hint("the file is UTF-16; save it as UTF-8")
                    } else {
                        d
                    },
                )
            }
        }
    }

    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into().into(),
            dialect: Dialect::Yaml12,
        }
    }

    /// Reads a file that Ansible reads too, with its YAML 1.1 meanings ([`Dialect::Ansible`]).
    pub fn read_ansible(path: &Path) -> Result<Source, Diagnostic> {
        Source::read(path).map(Source::ansible)
    }

    /// This file read with Ansible's YAML 1.1 meanings.
    pub fn ansible(self) -> Source {
        Source {
            dialect: Dialect::Ansible,
            ..self
        }
    }

    /// A diagnostic at `pos` in this file.
    pub fn diag(&self, message: impl Into<String>, pos: Option<Pos>) -> Diagnostic {
        Diagnostic::at(message, &self.path, &self.text, pos)
    }

    /// A diagnostic at the start of `value`.
    pub fn diag_at<T>(&self, message: impl Into<String>, value: &Spanned<T>) -> Diagnostic {
        self.diag(message, pos(value))
    }

    /// Remembers where `value` is, for diagnostics made later.
    pub fn origin<T>(&self, value: &Spanned<T>) -> Origin {
        Origin {
            file: self.path.clone(),
            pos: pos(value),
            text: Some(self.text.clone()),
        }
    }

    /// Deserializes the single document of this file into a typed structure. Always YAML
    /// 1.2: only stepsync's own files are read into types; Ansible's go through
    /// [`Source::documents`].
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        // Syntax first, as a compiler does: the typed pass reads as it goes and would report
        // a type error met before a syntax error further on (an unclosed `{` then shows as a
        // strange value). These files are small; reading them twice costs nothing.
        let docs: Vec<de::IgnoredAny> =
            serde_saphyr::from_multiple_with_options(&self.text, options())
                .map_err(|e| self.convert(&e))?;
        if docs.is_empty() {
            return Err(self.diag("the file is empty", Some(Pos { line: 1, col: 1 })));
        }
        serde_saphyr::from_str_with_options(&self.text, options()).map_err(|e| self.convert(&e))
    }

    /// Whether the file holds no YAML at all (nothing, or only comments and null documents).
    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
            || self
                .documents()
                .is_ok_and(|d| d.iter().all(|d| d.value == Node::Null))
    }

    /// Every document of this file, positions kept. An empty file has no documents.
    pub fn documents(&self) -> Result<Vec<Spanned<Node>>, Diagnostic> {
        let mut docs: Vec<Spanned<Node>> =
            serde_saphyr::from_multiple_with_options(&self.text, options())
                .map_err(|e| self.convert(&e))?;
        if self.dialect == Dialect::Ansible {
            yaml11::apply(&self.text, &mut docs);
        }
        Ok(docs)
    }

    fn convert(&self, e: &serde_saphyr::Error) -> Diagnostic {
        use serde_saphyr::Error as E;
        let plain = e.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
        let mut pos = e.location().filter(|l| l.line() > 0).map(|l| Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            col: u32::try_from(l.column()).unwrap_or(u32::MAX),
        });
        let mut message = clean_message(&plain);
        let mut hint = None;
        let mut inner = e;
        while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = inner {
            inner = error;
        }
        match inner {
            E::SerdeUnknownField {
                field, expected, ..
            } => {
                message = format!("unknown field `{field}`");
                hint = Some(expected_hint(field, expected));
            }
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => {
                message = format!("unknown value `{variant}`");
                hint = Some(expected_hint(variant, expected));
            }
            // The parser places these at the key of the field being read (its fallback);
            // the offending token is the value after it.
            E::SerdeInvalidType { .. } | E::SerdeInvalidValue { .. } => {
                pos = pos.map(|p| value_after_key(&self.text, p).unwrap_or(p));
            }
            // Placed at the last key read; the map the field is missing from starts earlier.
            E::SerdeMissingField { .. } => {
                pos = pos.map(|p| map_start(&self.text, p));
            }
            E::Budget { breach, .. } => message = budget_message(breach),
            _ => {}
        }
        if let Some(found) = pos.and_then(|p| found_at(&self.text, p)) {
            for (from, what) in [
                ("expected mapping start", "expected a map"),
                ("expected sequence start", "expected a list"),
                ("expected string scalar", "expected a string"),
            ] {
                if message == from {
                    message = format!("{what}, found {found}");
                }
            }
        }
        if message.starts_with("tabs disallowed") {
            // Point at the tab itself, not at what follows it.
            pos = pos.map(|p| back_over_tabs(&self.text, p));
            hint = Some("indent YAML with spaces".to_owned());
        } else if message == "recursion limit exceeded" {
            message = format!("nested too deeply: more than {MAX_DEPTH} levels");
            hint = Some(format!(
                "stepsync reads at most {MAX_DEPTH} levels of nesting"
            ));
        } else if message.contains("multiline quoted scalar") {
            hint = Some("is a quote left open on an earlier line?".to_owned());
        } else if message.starts_with("invalid trailing content") {
            hint = Some("a `,` or `:` missing before this?".to_owned());
        } else if message == "mapping values are not allowed in this context" {
            hint = Some(
                "is this line indented deeper than the key before it, or is a `: ` inside a \
                 value that needs quotes?"
                    .to_owned(),
            );
        } else if message.contains("simple key") {
            hint = Some(
                "a plain key must fit on one line of at most 1024 characters; quote long keys"
                    .to_owned(),
            );
        }
        let mut d = self.diag(message, pos);
        d.hint = hint;
        d
    }
}

/// How deep YAML may nest: the parser's budget, which protects the stack.
const MAX_DEPTH: usize = 64;

/// The parser's resource limits, said in words, with the limit that was hit.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Depth { .. } => format!("nested too deeply: more than {MAX_DEPTH} levels"),
        B::Aliases { .. }
        | B::Anchors { .. }
        | B::RecordedAnchorEvents { .. }
        | B::RecordedAnchorBytes { .. }
        | B::AliasAnchorRatio { .. } => {
            "aliases expand beyond stepsync's limit (1,000,000 nodes replayed through \
             anchors): an alias bomb?"
                .to_owned()
        }
        B::Events { .. } | B::Nodes { .. } => {
            "the file is too large: more than 20,000,000 YAML nodes".to_owned()
        }
        B::ScalarBytes { .. } | B::InputBytes { .. } => {
            "the file is too large: more than 512 MB of text".to_owned()
        }
        B::Documents { .. } => "more than 1,024 YAML documents in one file".to_owned(),
        other => format!("the file exceeds a parser limit ({other:?})"),
    }
}

/// What the text at `p` starts: a list, a map, a string, ... for "expected X, found Y".
fn found_at(text: &str, p: Pos) -> Option<&'static str> {
    let line = text.lines().nth(p.line.checked_sub(1)? as usize)?;
    let rest: String = line.chars().skip(p.col.checked_sub(1)? as usize).collect();
    let rest = rest.trim_end();
    Some(match rest.chars().next() {
        None | Some('#') => "nothing (null)",
        Some('[') => "a list",
        Some('-') if rest.len() == 1 || rest.starts_with("- ") => "a list",
        Some('{') => "a map",
        Some('~') => "null",
        _ if rest == "null" => "null",
        _ if rest.parse::<f64>().is_ok() => "a number",
        _ if rest == "true" || rest == "false" => "a bool",
        _ if rest.contains(": ") || rest.ends_with(':') => "a map",
        _ => "a string",
    })
}

/// The position of the value of the key at `p`, when it is written on the same line.
fn value_after_key(text: &str, p: Pos) -> Option<Pos> {
    let line = text.lines().nth(p.line.checked_sub(1)? as usize)?;
    let chars: Vec<char> = line.chars().collect();
    let mut i = p.col.checked_sub(1)? as usize;
    match chars.get(i)? {
        q @ ('"' | '\'') => {
            i += 1;
            while *chars.get(i)? != *q {
                i += 1;
            }
            i += 1;
        }
        // Not a key: a value or a collection already.
        '{' | '[' | '-' | '&' | '*' | '!' | '|' | '>' => return None,
        _ => {
            while !(chars.get(i)? == &':' && chars.get(i + 1).is_none_or(|c| c.is_whitespace())) {
                i += 1;
            }
        }
    }
    if chars.get(i)? != &':' {
        return None;
    }
    i += 1;
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    match chars.get(i) {
        None | Some('#') => None,
        Some(_) => Some(Pos {
            line: p.line,
            col: u32::try_from(i + 1).ok()?,
        }),
    }
}

/// The first key of the block or flow map whose key is at `p`.
fn map_start(text: &str, p: Pos) -> Pos {
    let lines: Vec<&str> = text.lines().collect();
    let Some(line) = lines.get(p.line.saturating_sub(1) as usize) else {
        return p;
    };
    let col = p.col.saturating_sub(1) as usize;
    let before: String = line.chars().take(col).collect();
    // In a flow map: its `{` on the same line.
    if !before.trim_start_matches([' ', '-']).is_empty() {
        let mut depth = 0i32;
        for (i, c) in before.char_indices().rev() {
            match c {
                '}' | ']' => depth += 1,
                '[' => depth -= 1,
                '{' if depth == 0 => {
                    let col = before[..i].chars().count() + 2;
                    let after = &before[i + 1..];
                    let skip = after.len() - after.trim_start().len();
                    return Pos {
                        line: p.line,
                        col: u32::try_from(col + skip).unwrap_or(p.col),
                    };
                }
                '{' => depth -= 1,
                _ => {}
            }
        }
        return p;
    }
    // In a block map: go up while lines hold keys of the same indentation.
    let mut first = p;
    for n in (0..p.line.saturating_sub(1) as usize).rev() {
        let l = lines[n];
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.len() - t.len();
        if indent > col {
            continue;
        }
        // `- key:` starts the map at the key's column.
        let item = l[indent..].starts_with("- ")
            && l[indent..].trim_start_matches(['-', ' ']).len() + col == l.len();
        if indent == col || item {
            first = Pos {
                line: u32::try_from(n + 1).unwrap_or(p.line),
                col: p.col,
            };
            if item {
                break;
            }
            continue;
        }
        break;
    }
    first
}

/// The first of the tabs just before `p`.
fn back_over_tabs(text: &str, p: Pos) -> Pos {
    let Some(line) = text.lines().nth(p.line.saturating_sub(1) as usize) else {
        return p;
    };
    let chars: Vec<char> = line.chars().collect();
    let mut col = p.col as usize;
    while col > 1 && chars.get(col - 2) == Some(&'\t') {
        col -= 1;
    }
    Pos {
        line: p.line,
        col: u32::try_from(col).unwrap_or(p.col),
    }
}

/// YAML 1.2 core booleans only: `true`/`false`. With YAML 1.1's `y`, `yes`, `on`, a key
/// named `y` or a country code `no` would silently turn into a bool.
///
/// The parser's default budget (250,000 nodes) is sized for config files; objects files of
/// 100,000 objects need more. Anchors, aliases, depth and documents keep their defaults, which
/// is what bounds alias bombs and deep nesting.
fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.emit_comments = false;
    let mut b = serde_saphyr::Budget::default();
    b.max_nodes = 20_000_000;
    b.max_events = 40_000_000;
    b.max_total_scalar_bytes = 512 * 1024 * 1024;
    b.max_reader_input_bytes = Some(1024 * 1024 * 1024);
    o.budget = Some(b);
    o
}

/// The parser's message without its own location prefix/suffix and without advice that
/// only makes sense to a Rust caller.
fn clean_message(raw: &str) -> String {
    let mut msg = raw.trim();
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains(" column ")
    {
        msg = &rest[idx + 2..];
    }
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let msg = match msg.find(", set DuplicateKeyPolicy") {
        Some(i) => &msg[..i],
        None => msg,
    };
    // Advice to a Rust caller, not to the user.
    let msg = msg.trim_end_matches("; use Option<String>");
    if msg == "cannot deserialize null into string" {
        return "expected a string, found null".to_owned();
    }
    for (ty, max) in [
        ("u8", "255"),
        ("u16", "65535"),
        ("u32", "4294967295"),
        ("u64", "18446744073709551615"),
    ] {
        if msg == format!("invalid {ty}") {
            return format!("expected a whole number from 0 to {max}");
        }
    }
    msg.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn unknown_field_is_located_and_message_is_clean() {
        let src = Source::from_text("c.yaml", "name: x\nport: 3\nbogus: 1\n");
        let d = src.parse::<Cfg>().unwrap_err();
        assert_eq!(d.pos, Some(Pos { line: 3, col: 1 }));
        assert!(
            d.message.starts_with("unknown field `bogus`"),
            "{}",
            d.message
        );
        assert!(!d.message.contains("line 3"), "{}", d.message);
        assert_eq!(d.source_line.as_deref(), Some("bogus: 1"));
    }

    #[test]
    fn messages_name_the_token_and_suggest() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            inner: Cfg,
            n: Option<std::num::NonZeroU32>,
            extra: Option<u8>,
        }
        // An unknown key: a suggestion instead of the whole list.
        let d = Source::from_text("c.yaml", "innr: {name: x}\n")
            .parse::<Outer>()
            .unwrap_err();
        assert_eq!(d.message, "unknown field `innr`");
        assert_eq!(d.hint.as_deref(), Some("did you mean `inner`?"));
        // A missing field: at the start of the map it is missing from, not its last key.
        let d = Source::from_text("c.yaml", "# c\nn: 1\nextra: 2\n")
            .parse::<Outer>()
            .unwrap_err();
        assert!(d.message.contains("missing field `inner`"), "{}", d.message);
        assert_eq!(d.pos, Some(Pos { line: 2, col: 1 }));
        // A type error: at the value, not at its key.
        let d = Source::from_text("c.yaml", "inner: {name: x}\nn: 0\n")
            .parse::<Outer>()
            .unwrap_err();
        assert_eq!(d.pos, Some(Pos { line: 2, col: 4 }));
        // What was found instead of a map.
        let d = Source::from_text("c.yaml", "inner: [a]\n")
            .parse::<Outer>()
            .unwrap_err();
        assert_eq!(d.message, "expected a map, found a list");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let src = Source::from_text("d.yaml", "a: 1\na: 2\n");
        let d = src.documents().unwrap_err();
        assert_eq!(d.pos, Some(Pos { line: 2, col: 1 }));
        assert!(d.message.contains("duplicate"), "{}", d.message);
        assert!(!d.message.contains("DuplicateKeyPolicy"));
    }

    #[test]
    fn nested_positions_are_kept() {
        let src = Source::from_text("n.yaml", "a:\n  - {b: \"1\", c: 2}\n");
        let docs = src.documents().unwrap();
        let Node::Map(top) = &docs[0].value else {
            panic!("map")
        };
        let Node::Seq(items) = &top[0].1.value else {
            panic!("seq")
        };
        let Node::Map(inner) = &items[0].value else {
            panic!("map")
        };
        assert_eq!(inner[0].1.value, Node::Str("1".into()));
        assert_eq!(inner[1].1.value, Node::Int(2));
        assert_eq!(pos(&inner[1].0), Some(Pos { line: 2, col: 14 }));
    }

    #[test]
    fn only_yaml_1_2_booleans() {
        let src = Source::from_text("b.yaml", "a: y\nb: yes\nc: true\nd: no\n");
        let docs = src.documents().unwrap();
        let Node::Map(m) = &docs[0].value else {
            panic!("map")
        };
        let kinds: Vec<&str> = m.iter().map(|(_, v)| v.value.kind()).collect();
        assert_eq!(kinds, ["string", "string", "bool", "string"]);
    }

    #[test]
    fn invalid_utf8_names_position() {
        let dir = std::env::temp_dir().join(format!("stepsync-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.yaml");
        std::fs::write(&f, b"a: 1\nb: \xff\n").unwrap();
        let d = Source::read(&f).unwrap_err();
        assert_eq!(d.pos, Some(Pos { line: 2, col: 4 }));
        std::fs::remove_dir_all(&dir).ok();
    }
}
