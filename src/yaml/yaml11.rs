//! YAML 1.1 scalar meanings, as PyYAML (and so Ansible) resolves them, for the files Ansible
//! reads: playbooks, roles, vars files, inventories. `mode: 0600` is the octal 384 there and
//! `become: yes` a boolean, while YAML 1.2 (stepsync's own files) reads a float 600.0 and the
//! string "yes".
//!
//! serde-saphyr's own YAML 1.1 switches do not match PyYAML (they take `y`/`n` and any case
//! of `yes`, `0o17` and `1e3` as numbers), and its values no longer say how a scalar was
//! written. So the file is parsed a second time into events, which do: only a plain scalar
//! without a tag is resolved again, from its text, with PyYAML's own patterns; a quoted
//! `'0600'` or a `!!str yes` stays a string.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use super::{Node, Spanned};

/// The plain, untagged scalars of `text` by the byte offset they start at, with their value.
fn plain_scalars(text: &str) -> HashMap<usize, String> {
    let mut out = HashMap::new();
    for ev in Parser::new_from_str(text) {
        // The text has been parsed already; an error here ends the second pass, and the
        // scalars it did not reach keep their YAML 1.2 meaning.
        let Ok((ev, span)) = ev else { break };
        if let Event::Scalar(value, ScalarStyle::Plain, _, None) = ev
            && let Some(at) = span.start.byte_offset()
        {
            out.insert(at, value.into_owned());
        }
    }
    out
}

/// Gives every plain, untagged scalar of `docs` (parsed from `text`) its YAML 1.1 meaning.
pub(super) fn apply(text: &str, docs: &mut [Spanned<Node>]) {
    let plain = plain_scalars(text);
    if plain.is_empty() {
        return;
    }
    for d in docs {
        walk(&plain, d);
    }
}

fn walk(plain: &HashMap<usize, String>, n: &mut Spanned<Node>) {
    match &mut n.value {
        Node::Seq(items) => items.iter_mut().for_each(|i| walk(plain, i)),
        Node::Map(entries) => entries.iter_mut().for_each(|(_, v)| walk(plain, v)),
        // An alias's `defined` is the anchored scalar, so it resolves as its anchor does.
        _ => {
            let at = n.defined.span().byte_offset();
            if let Some(text) = at
                .and_then(|a| usize::try_from(a).ok())
                .and_then(|a| plain.get(&a))
            {
                n.value = resolve(text);
            }
        }
    }
}

/// PyYAML's implicit resolvers (yaml/resolver.py), in its order: bool, float, int, null.
/// A timestamp stays its text, which is how Ansible prints the date it reads.
static BOOL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
        .expect("valid pattern")
});
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)",
        r"|\.(?:nan|NaN|NAN))$"
    ))
    .expect("valid pattern")
});
static INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?0b[0-1_]+",
        r"|[-+]?0[0-7_]+",
        r"|[-+]?(?:0|[1-9][0-9_]*)",
        r"|[-+]?0x[0-9a-fA-F_]+",
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
    ))
    .expect("valid pattern")
});

/// The value of a plain scalar written `text`, as PyYAML's SafeConstructor builds it. A
/// number PyYAML reads but an `i64`/`f64` cannot hold stays text.
pub fn resolve(text: &str) -> Node {
    if BOOL.is_match(text) {
        return Node::Bool(
            matches!(text.as_bytes()[0], b'y' | b'Y' | b't' | b'T')
                || text.eq_ignore_ascii_case("on"),
        );
    }
    if FLOAT.is_match(text)
        && let Some(f) = float(text)
    {
        return Node::Float(f);
    }
    if INT.is_match(text)
        && let Some(i) = int(text)
    {
        return Node::Int(i);
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Node::Null;
    }
    Node::Str(text.to_owned())
}

/// The sign and the rest, underscores dropped (PyYAML's construct_yaml_int/float).
fn sign_and_digits(text: &str) -> (bool, String) {
    let v: String = text.chars().filter(|c| *c != '_').collect();
    match v.strip_prefix('-') {
        Some(r) => (true, r.to_owned()),
        None => (false, v.strip_prefix('+').unwrap_or(&v).to_owned()),
    }
}

fn int(text: &str) -> Option<i64> {
    let (neg, v) = sign_and_digits(text);
    let mag: i128 = if v == "0" {
        0
    } else if let Some(b) = v.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(h) = v.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if v.starts_with('0') {
        i128::from_str_radix(&v, 8).ok()?
    } else if v.contains(':') {
        // Sexagesimal: `1:30` is 90.
        let mut total: i128 = 0;
        for part in v.split(':') {
            total = total
                .checked_mul(60)?
                .checked_add(part.parse::<i128>().ok()?)?;
        }
        total
    } else {
        v.parse::<i128>().ok()?
    };
    i64::try_from(if neg { -mag } else { mag }).ok()
}

fn float(text: &str) -> Option<f64> {
    let (neg, v) = sign_and_digits(text);
    let v = v.to_ascii_lowercase();
    let mag = if v == ".inf" {
        f64::INFINITY
    } else if v == ".nan" {
        f64::NAN
    } else if v.contains(':') {
        let mut total = 0.0;
        for part in v.split(':') {
            total = total * 60.0 + part.parse::<f64>().ok()?;
        }
        total
    } else {
        v.parse::<f64>().ok()?
    };
    Some(if neg { -mag } else { mag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_as_pyyaml_resolves_them() {
        // What PyYAML 6 (yaml.safe_load) gives for each plain scalar.
        for (text, want) in [
            ("0600", Node::Int(384)),
            ("-017", Node::Int(-15)),
            ("0", Node::Int(0)),
            ("1_000", Node::Int(1000)),
            ("0x1F", Node::Int(31)),
            ("0b101", Node::Int(5)),
            ("1:30", Node::Int(90)),
            ("+12", Node::Int(12)),
            ("yes", Node::Bool(true)),
            ("No", Node::Bool(false)),
            ("ON", Node::Bool(true)),
            ("off", Node::Bool(false)),
            ("True", Node::Bool(true)),
            ("1.5", Node::Float(1.5)),
            ("1.", Node::Float(1.0)),
            ("1.0e+3", Node::Float(1000.0)),
            ("-.inf", Node::Float(f64::NEG_INFINITY)),
            ("~", Node::Null),
            ("Null", Node::Null),
            // Strings to PyYAML, numbers or booleans to other readers.
            ("y", Node::Str("y".into())),
            ("n", Node::Str("n".into())),
            ("yEs", Node::Str("yEs".into())),
            ("0800", Node::Str("0800".into())),
            ("0o17", Node::Str("0o17".into())),
            ("1e3", Node::Str("1e3".into())),
            ("2001-12-14", Node::Str("2001-12-14".into())),
            ("0b", Node::Str("0b".into())),
        ] {
            assert_eq!(resolve(text), want, "{text}");
        }
        assert!(matches!(resolve(".NaN"), Node::Float(f) if f.is_nan()));
        // Too big for 64 bits: kept as written rather than wrapped.
        assert_eq!(
            resolve("99999999999999999999"),
            Node::Str("99999999999999999999".into())
        );
    }
}
