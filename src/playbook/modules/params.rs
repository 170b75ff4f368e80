//! The argument types of the modules' parameter structs, and reading arguments into them.
//!
//! A task's arguments may hold templates, rendered only at run time. So the loader checks
//! what it can before anything runs — every key against the parameter struct, and the type
//! of each literal value — and the executor deserializes the rendered arguments into the
//! struct. Both go through the same `#[serde(deny_unknown_fields)]` struct, so the key set
//! is written once.
//!
//! The types read values as Ansible's argument types do: a `str` takes any scalar, an `int`
//! takes `5` and `"5"`, a `bool` takes the words of [`crate::boolean`].

use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess};
use serde_json::Value as Json;

pub use crate::boolean::Flag;

/// An unset boolean argument is false.
pub fn is(f: Option<Flag>) -> bool {
    f.is_some_and(|f| f.0)
}

/// A string as Ansible's `str` type takes it: a string as is, any other value as its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Str(pub String);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Str(match Json::deserialize(d)? {
            Json::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// A string written into a file or matched in one (`lineinfile`, `blockinfile`): a boolean
/// is Python's `True`/`False`, as Ansible's `str()` of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PyStr(pub String);

impl<'de> Deserialize<'de> for PyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PyStr(match Json::deserialize(d)? {
            Json::String(s) => s,
            Json::Bool(true) => "True".to_owned(),
            Json::Bool(false) => "False".to_owned(),
            other => other.to_string(),
        }))
    }
}

/// A file mode as Ansible reads it: a string is octal (`"0644"`, `"644"`, `"0o644"`); an
/// integer is the mode itself, as Ansible passes it to chmod. Playbooks are read as YAML 1.1,
/// so `mode: 0644` is the integer 420, that is 0o644; `mode: 644` is 0o1204 there too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Json::deserialize(d)?;
        let mode = match &v {
            Json::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
            Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => {
                return Err(de::Error::custom(format!(
                    "must be an octal string like \"0644\", got {v}"
                )));
            }
        };
        // chmod takes the permission bits, setuid/setgid and sticky; nothing above.
        mode.filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| de::Error::custom(format!("is not an octal mode: {v}")))
    }
}

/// An integer as Ansible's `int` type reads it: `5`, `"5"` and `5.0`, but not `5.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Json::deserialize(d)?;
        let n = match &v {
            Json::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Some(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Some(f as i64),
                _ => None,
            },
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.map(Int).ok_or_else(|| {
            de::Error::custom(format!(
                "is of type {v} and we were unable to convert to int"
            ))
        })
    }
}

/// A parameter struct of a module that writes a file: the fields given, then Ansible's
/// ownership, attribute and SELinux parameters, which every such module takes and the
/// built-in runner accepts without acting on them.
macro_rules! file_params {
    ($(#[$meta:meta])* struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub(super) struct $name {
            $($fields)*
            owner: Option<$crate::playbook::modules::params::Str>,
            group: Option<$crate::playbook::modules::params::Str>,
            #[serde(alias = "attr")]
            attributes: Option<$crate::playbook::modules::params::Str>,
            selevel: Option<$crate::playbook::modules::params::Str>,
            serole: Option<$crate::playbook::modules::params::Str>,
            setype: Option<$crate::playbook::modules::params::Str>,
            seuser: Option<$crate::playbook::modules::params::Str>,
            unsafe_writes: Option<$crate::playbook::modules::params::Flag>,
        }
    };
}
pub(super) use file_params;

/// An argument of Ansible's that a module takes without acting on it. Given a value with
/// which Ansible would act differently, it is refused (at load when it is literal, at run
/// time when it is templated) rather than silently ignored.
pub struct Inert {
    pub arg: &'static str,
    pub fine: Fine,
}

impl Inert {
    /// Refused unless given one of `values`.
    pub const fn only(arg: &'static str, values: &'static [&'static str]) -> Inert {
        Inert {
            arg,
            fine: Fine::Only(values),
        }
    }

    /// Refused whatever its value.
    pub const fn never(arg: &'static str) -> Inert {
        Inert::only(arg, &[])
    }

    /// Accepted whatever its value.
    pub const fn any(arg: &'static str) -> Inert {
        Inert {
            arg,
            fine: Fine::Any,
        }
    }
}

/// The values of an [`Inert`] argument that mean what the built-in runner does anyway.
pub enum Fine {
    /// Whatever the value, the outcome is the same here (SELinux labels on a host without
    /// SELinux, a lock timeout).
    Any,
    /// Only these, as strings; a flag is compared as `true`/`false` whatever its spelling.
    Only(&'static [&'static str]),
}

/// Ownership-module arguments every `file_params!` module takes: `attributes` runs chattr
/// in Ansible, which no module of the subset does.
const FILE_INERT: &[Inert] = &[Inert::only("attributes", &[""]), Inert::only("attr", &[""])];

/// Why `key: value` is refused, if it is: an inert argument given a value Ansible acts on.
pub fn refused(inert: &[Inert], key: &str, value: &Json) -> Option<String> {
    let i = inert.iter().chain(FILE_INERT).find(|i| i.arg == key)?;
    let Fine::Only(fine) = i.fine else {
        return None;
    };
    let as_text = match value {
        Json::Null => return None,
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let flag = crate::boolean::from_json(value).map(|b| b.to_string());
    if fine
        .iter()
        .any(|f| *f == as_text || flag.as_deref() == Some(*f))
    {
        return None;
    }
    Some(format!(
        "`{key}: {as_text}` is not in the built-in subset (it accepts {})",
        match fine {
            [] => "no value".to_owned(),
            [""] => "no value".to_owned(),
            many => many
                .iter()
                .map(|f| format!("`{}`", f.escape_default()))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    ))
}

/// Reads rendered arguments into a module's parameters. A problem names the argument at
/// fault, as Ansible's argument spec does.
pub fn parse<P: DeserializeOwned>(args: &Json) -> Result<P, String> {
    let args = match args {
        Json::Null => Json::Object(serde_json::Map::new()),
        other => other.clone(),
    };
    serde_json::from_value(args.clone()).map_err(|e| {
        // serde_json does not say which field a value error is about; one key at a time does.
        if let Json::Object(m) = &args {
            for (k, v) in m {
                if let Err(msg) = check::<P>(k, v) {
                    return msg;
                }
            }
        }
        e.to_string()
    })
}

/// Checks one argument on its own: whether the module has it and whether its value reads.
pub fn check<P: DeserializeOwned>(key: &str, value: &Json) -> Result<(), String> {
    if names::<P>().is_some_and(|known| !known.contains(&key)) {
        return Err(format!("unsupported parameter `{key}`"));
    }
    let mut one = serde_json::Map::new();
    one.insert(key.to_owned(), value.clone());
    serde_json::from_value::<P>(Json::Object(one))
        .map(drop)
        .map_err(|e| format!("argument `{key}` {e}"))
}

/// The parameter names of `P`, aliases included; `None` when `P` takes any key (`set_fact`).
///
/// Read from the struct itself: a `deny_unknown_fields` struct shown an unknown key answers
/// with the list of the keys it knows.
pub fn names<P: DeserializeOwned>() -> Option<&'static [&'static str]> {
    match P::deserialize(Probe) {
        Err(ProbeError(Some(names))) => Some(names),
        _ => None,
    }
}

/// A map with one key that no struct has.
struct Probe;

#[derive(Debug)]
struct ProbeError(Option<&'static [&'static str]>);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ProbeError(None)
    }

    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Self {
        ProbeError(Some(expected))
    }
}

struct ProbeMap(bool);

impl<'de> MapAccess<'de> for ProbeMap {
    type Error = ProbeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        if std::mem::replace(&mut self.0, true) {
            return Ok(None);
        }
        seed.deserialize(IntoDeserializer::<ProbeError>::into_deserializer("\u{0}"))
            .map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        seed.deserialize(IntoDeserializer::<ProbeError>::into_deserializer(()))
    }
}

impl<'de> Deserializer<'de> for Probe {
    type Error = ProbeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_map(ProbeMap(false))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        #[serde(alias = "dest")]
        path: Option<Str>,
        mode: Option<Mode>,
        force: Option<Flag>,
        n: Option<Int>,
    }

    #[test]
    fn inert_arguments_are_refused_unless_given_what_the_runner_does() {
        const INERT: &[Inert] = &[
            Inert::only("backup", &["false"]),
            Inert::never("validate"),
            Inert::any("seuser"),
        ];
        for (key, value, refused_) in [
            ("backup", json!(false), false),
            ("backup", json!("no"), false),
            ("backup", json!("yes"), true),
            ("backup", json!(true), true),
            ("validate", json!("visudo -cf %s"), true),
            ("validate", Json::Null, false),
            ("seuser", json!("system_u"), false),
            ("attributes", json!("+i"), true),
            ("attributes", json!(""), false),
            ("mode", json!("0644"), false),
        ] {
            assert_eq!(
                refused(INERT, key, &value).is_some(),
                refused_,
                "{key}: {value}"
            );
        }
        assert_eq!(
            refused(INERT, "backup", &json!(true)).as_deref(),
            Some("`backup: true` is not in the built-in subset (it accepts `false`)")
        );
    }

    #[test]
    fn names_come_from_the_struct_aliases_included() {
        assert_eq!(
            names::<P>(),
            Some(&["dest", "path", "mode", "force", "n"][..])
        );
        assert_eq!(names::<serde_json::Map<String, Json>>(), None);
    }

    #[test]
    fn values_read_as_ansible_reads_them() {
        let p: P =
            parse(&json!({"dest": 5, "mode": "0644", "force": "yes", "n": "7"})).expect("params");
        assert_eq!(p.path, Some(Str("5".into())));
        assert_eq!(p.mode, Some(Mode(0o644)));
        assert_eq!(p.force, Some(Flag(true)));
        assert_eq!(p.n, Some(Int(7)));
        // An integer is the mode itself, as Ansible takes it (YAML 1.1 reads `0644` as 420).
        assert_eq!(
            parse::<P>(&json!({"mode": 420})).expect("p").mode,
            Some(Mode(0o644))
        );
        assert_eq!(
            parse::<P>(&json!({"mode": 644})).expect("p").mode,
            Some(Mode(0o1204))
        );
        assert!(parse::<P>(&json!({"mode": 600.0})).is_err());
        let e = parse::<P>(&json!({"path": "x", "force": "maybe"})).err();
        assert_eq!(
            e.as_deref(),
            Some(
                "argument `force` must be a boolean (yes/no, true/false, on/off, 1/0), got \"maybe\""
            )
        );
        assert_eq!(
            check::<P>("mdoe", &json!("0644")).err().as_deref(),
            Some("unsupported parameter `mdoe`")
        );
        assert!(check::<P>("n", &json!(5.5)).is_err());
    }
}
