//! Reading user YAML with source positions. Every file format of the spec goes through
//! [`Source`], so every error can name file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
pub use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Origin, Pos};

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

/// A user file held in memory, so diagnostics can quote it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    /// Shared with every [`Origin`] taken from this file.
    pub text: std::sync::Arc<str>,
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
            }),
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|b| **b == b'\n').count() + 1;
                let col = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                Err(Diagnostic::at(
                    "file is not valid UTF-8",
                    path,
                    &text,
                    Some(Pos {
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        col: u32::try_from(col).unwrap_or(u32::MAX),
                    }),
                ))
            }
        }
    }

    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into().into(),
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

    /// Deserializes the single document of this file into a typed structure.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        serde_saphyr::from_str_with_options(&self.text, options()).map_err(|e| self.convert(&e))
    }

    /// Every document of this file, positions kept. An empty file has no documents.
    pub fn documents(&self) -> Result<Vec<Spanned<Node>>, Diagnostic> {
        serde_saphyr::from_multiple_with_options(&self.text, options())
            .map_err(|e| self.convert(&e))
    }

    fn convert(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let plain = e.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
        let pos = e.location().filter(|l| l.line() > 0).map(|l| Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            col: u32::try_from(l.column()).unwrap_or(u32::MAX),
        });
        self.diag(clean_message(&plain), pos)
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
