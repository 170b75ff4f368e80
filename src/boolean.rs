//! Ansible's booleans: the one place that knows which strings mean true and false.
//!
//! Ansible reads a boolean argument or keyword with `boolean()`: `yes`/`no`, `true`/`false`,
//! `on`/`off`, `y`/`n`, `t`/`f`, `1`/`0`, case-insensitive, and the numbers 1 and 0. The
//! Jinja truthiness of a rendered value (a non-empty list is true) is another question;
//! whoever asks it uses [`parse`] for the string part only.

use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value as Json;

/// The words of Ansible's `BOOLEANS_TRUE` / `BOOLEANS_FALSE`, lower case.
const TRUE: &[&str] = &["yes", "on", "1", "true", "y", "t"];
const FALSE: &[&str] = &["no", "off", "0", "false", "n", "f"];

/// An Ansible boolean string, case-insensitive and trimmed; `None` for anything else.
pub fn parse(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    if TRUE.contains(&s.as_str()) {
        Some(true)
    } else if FALSE.contains(&s.as_str()) {
        Some(false)
    } else {
        None
    }
}

/// A JSON value as Ansible's `boolean()` reads it: a boolean, 1 or 0, or one of the words.
pub fn from_json(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Json::String(s) => parse(s),
        _ => None,
    }
}

/// A boolean argument: deserializes from anything [`from_json`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Json::deserialize(d)?;
        from_json(&v).map(Flag).ok_or_else(|| {
            de::Error::custom(format!(
                "must be a boolean (yes/no, true/false, on/off, 1/0), got {v}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_and_numbers_as_ansible_reads_them() {
        for t in ["yes", "YES", "On", "1", "true", "True", " y ", "t"] {
            assert_eq!(parse(t), Some(true), "{t}");
        }
        for f in ["no", "Off", "0", "FALSE", "n", "f"] {
            assert_eq!(parse(f), Some(false), "{f}");
        }
        assert_eq!(parse("maybe"), None);
        assert_eq!(parse(""), None);
        assert_eq!(from_json(&json!(1)), Some(true));
        assert_eq!(from_json(&json!(0.0)), Some(false));
        assert_eq!(from_json(&json!(2)), None);
        assert_eq!(from_json(&json!([])), None);
        let f: Flag = serde_json::from_value(json!("off")).expect("flag");
        assert_eq!(f, Flag(false));
        assert!(serde_json::from_value::<Flag>(json!("maybe")).is_err());
    }
}
