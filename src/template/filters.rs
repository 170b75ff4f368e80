//! The filters of every template environment (stepdefs and playbooks alike): Ansible's
//! everyday ones, on top of minijinja's built-ins; and the Python methods Ansible users call
//! on values (`d.items()`, `s.split(',')`, `s.startswith('x')`, ...).

use base64::Engine as _;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};

use super::from_serde;

/// `default(x[, boolean])`: `x` for an undefined or `none` value (and, with `boolean`, any
/// false one), as stepdefs read unset fields.
pub(super) fn default_filter(v: Value, other: Option<Value>, boolean: Option<bool>) -> Value {
    let missing = v.is_undefined() || v.is_none() || (boolean == Some(true) && !v.is_true());
    if missing {
        other.unwrap_or_else(|| Value::from(""))
    } else {
        v
    }
}

/// Characters `urlencode` leaves as they are: RFC 3986's unreserved set. Unlike Jinja2's,
/// it encodes `/` too, so a value is always one path segment (`../admin` cannot climb).
const URL_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn add_filters(env: &mut Environment<'static>) {
    // Jinja2 templates call Python's methods of str, dict and list; minijinja's values have
    // none of their own, and its Python compatibility layer supplies them.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    add_ansible_filters(env);
    env.add_filter("urlencode", |v: Value| -> String {
        let text = match v.as_str() {
            Some(s) => s.to_owned(),
            None => v.to_string(),
        };
        percent_encoding::utf8_percent_encode(&text, URL_SAFE).to_string()
    });
    env.add_filter("to_json", |v: Value| -> Result<String, minijinja::Error> {
        serde_json::to_string(&v)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_filter(
        "to_nice_json",
        |v: Value| -> Result<String, minijinja::Error> {
            serde_json::to_string_pretty(&v)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
        },
    );
    env.add_filter("to_yaml", |v: Value| -> Result<String, minijinja::Error> {
        serde_yaml::to_string(&v)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_filter("from_json", |s: &str| -> Result<Value, minijinja::Error> {
        serde_json::from_str::<serde_json::Value>(s)
            .map(|v| from_serde(&v))
            .map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("from_json: {e}"))
            })
    });
    // Ansible's `from_yaml` is PyYAML's: YAML 1.1 (`yes` a boolean, `0644` octal).
    env.add_filter("from_yaml", |s: &str| -> Result<Value, minijinja::Error> {
        crate::yaml::Source::from_text("from_yaml", s)
            .ansible()
            .documents()
            .map(|docs| {
                docs.first()
                    .map_or(Value::from(()), |d| from_serde(d.value.to_json()))
            })
            .map_err(|d| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("from_yaml: {}", d.message),
                )
            })
    });
    env.add_filter("b64encode", |s: &str| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    env.add_filter("b64decode", |s: &str| -> Result<String, minijinja::Error> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}"))
            })?;
        String::from_utf8(bytes).map_err(|_| {
            minijinja::Error::new(ErrorKind::InvalidOperation, "b64decode: not UTF-8 text")
        })
    });
    env.add_filter(
        "regex_replace",
        |s: &str, pattern: &str, replacement: Option<&str>| -> Result<String, minijinja::Error> {
            let re = compile_regex(pattern)?;
            Ok(re
                .replace_all(s, python_backrefs(replacement.unwrap_or("")))
                .into_owned())
        },
    );
    env.add_filter(
        "regex_search",
        |s: &str, pattern: &str| -> Result<Value, minijinja::Error> {
            let re = compile_regex(pattern)?;
            Ok(re
                .find(s)
                .map_or(Value::from(()), |m| Value::from(m.as_str())))
        },
    );
    env.add_filter("quote", |s: &str| shell_quote(s));
    // The `bool` filter: a string is true only when it is one of Ansible's true words; any
    // other value by its Jinja truthiness.
    env.add_filter("bool", |v: Value| -> bool {
        match v.as_str() {
            Some(s) => crate::boolean::parse(s) == Some(true),
            None => v.is_true(),
        }
    });
    env.add_filter("mandatory", |v: Value| -> Result<Value, minijinja::Error> {
        if v.is_undefined() {
            Err(minijinja::Error::new(
                ErrorKind::UndefinedError,
                "mandatory variable is not defined",
            ))
        } else {
            Ok(v)
        }
    });
    env.add_filter("basename", |s: &str| {
        s.rsplit('/').next().unwrap_or("").to_owned()
    });
    env.add_filter("dirname", |s: &str| match s.rfind('/') {
        Some(0) => "/".to_owned(),
        Some(i) => s[..i].to_owned(),
        None => String::new(),
    });
}

fn invalid(msg: impl Into<String>) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// Filters and tests of Ansible's that roles use often: `dict2items`, `items2dict`, `hash`,
/// `expanduser`; the tests `search`, `contains`, `version` (and `version_compare`).
fn add_ansible_filters(env: &mut Environment<'static>) {
    // `key_name=` and `value_name=` of dict2items and items2dict.
    fn names(kwargs: &Kwargs) -> Result<(String, String), minijinja::Error> {
        let k: Option<String> = kwargs.get("key_name")?;
        let v: Option<String> = kwargs.get("value_name")?;
        kwargs.assert_all_used()?;
        Ok((
            k.unwrap_or_else(|| "key".into()),
            v.unwrap_or_else(|| "value".into()),
        ))
    }
    env.add_filter(
        "dict2items",
        |v: Value, kwargs: Kwargs| -> Result<Value, minijinja::Error> {
            let (k, val) = names(&kwargs)?;
            let keys = v
                .try_iter()
                .map_err(|_| invalid("dict2items requires a dictionary"))?;
            if v.kind() != minijinja::value::ValueKind::Map {
                return Err(invalid("dict2items requires a dictionary"));
            }
            let items: Vec<Value> = keys
                .map(|key| {
                    let value = v.get_item(&key).unwrap_or(Value::UNDEFINED);
                    Value::from(std::collections::BTreeMap::from([
                        (k.clone(), key),
                        (val.clone(), value),
                    ]))
                })
                .collect();
            Ok(Value::from(items))
        },
    );
    env.add_filter(
        "items2dict",
        |v: Value, kwargs: Kwargs| -> Result<Value, minijinja::Error> {
            let (k, val) = names(&kwargs)?;
            let mut out = indexmap::IndexMap::new();
            for item in v
                .try_iter()
                .map_err(|_| invalid("items2dict requires a list"))?
            {
                let key = item.get_attr(&k).ok().filter(|x| !x.is_undefined());
                let value = item.get_attr(&val).ok().filter(|x| !x.is_undefined());
                match (key, value) {
                    (Some(key), Some(value)) => {
                        out.insert(key.to_string(), value);
                    }
                    _ => {
                        return Err(invalid(format!(
                            "items2dict: an item lacks `{k}` or `{val}`"
                        )));
                    }
                }
            }
            Ok(Value::from(
                out.into_iter()
                    .collect::<std::collections::BTreeMap<String, Value>>(),
            ))
        },
    );
    env.add_filter("hash", |v: Value, algo: Option<String>| -> Result<String, minijinja::Error> {
        use sha2::Digest;
        let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let hex = crate::definition::hex;
        match algo.as_deref().unwrap_or("sha1") {
            "sha1" => Ok(hex(&sha1::Sha1::digest(text.as_bytes()))),
            "sha256" => Ok(hex(&sha2::Sha256::digest(text.as_bytes()))),
            "sha512" => Ok(hex(&sha2::Sha512::digest(text.as_bytes()))),
            other => Err(invalid(format!(
                "hash('{other}') is not in the built-in subset (sha1, sha256, sha512); set `runner: ansible`"
            ))),
        }
    });
    // As Ansible's: the controller's home, where the playbook runs.
    env.add_filter("expanduser", |s: String| -> String {
        match (s.strip_prefix('~'), std::env::var("HOME")) {
            (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => {
                format!("{home}{rest}")
            }
            _ => s,
        }
    });
    env.add_test(
        "search",
        |s: String, pattern: String| -> Result<bool, minijinja::Error> {
            Ok(compile_regex(&pattern)?.is_match(&s))
        },
    );
    env.add_test("contains", |seq: Value, item: Value| -> bool {
        seq.try_iter().is_ok_and(|mut it| it.any(|x| x == item))
    });
    let version =
        |v: String, other: String, op: Option<String>| -> Result<bool, minijinja::Error> {
            let ord = compare_versions(&v, &other);
            Ok(match op.as_deref().unwrap_or("eq") {
                "<" | "lt" => ord.is_lt(),
                "<=" | "le" => ord.is_le(),
                ">" | "gt" => ord.is_gt(),
                ">=" | "ge" => ord.is_ge(),
                "==" | "=" | "eq" => ord.is_eq(),
                "!=" | "<>" | "ne" => ord.is_ne(),
                other => return Err(invalid(format!("version: unknown operator `{other}`"))),
            })
        };
    env.add_test("version", version);
    env.add_test("version_compare", version);
}

/// Versions compared as Ansible's default (loose) comparison does: runs of digits as
/// numbers, other runs as text, left to right (`1.10` > `1.9`; a number against text, which
/// Ansible's LooseVersion cannot compare, sorts first).
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(v: &str) -> Vec<Result<u64, String>> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut digits = false;
        for c in v.chars() {
            if c == '.' || c == '-' || c == '_' || c == '+' {
                if !cur.is_empty() {
                    out.push(if digits {
                        cur.parse().map_err(|_| cur.clone())
                    } else {
                        Err(cur.clone())
                    });
                    cur.clear();
                }
                continue;
            }
            if !cur.is_empty() && c.is_ascii_digit() != digits {
                out.push(if digits {
                    cur.parse().map_err(|_| cur.clone())
                } else {
                    Err(cur.clone())
                });
                cur.clear();
            }
            digits = c.is_ascii_digit();
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(if digits {
                cur.parse().map_err(|_| cur.clone())
            } else {
                Err(cur)
            });
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            (Ok(m), Ok(n)) => m.cmp(n),
            // As Python 2's LooseVersion: a number sorts before text.
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(s), Err(t)) => s.cmp(t),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn compile_regex(pattern: &str) -> Result<regex::Regex, minijinja::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("bad regex: {e}")))
}

/// Ansible writes back-references Python's way (`\1`); the regex crate wants `${1}`.
pub(crate) fn python_backrefs(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    n.push(d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// POSIX shell single-quoting: safe to paste into any `sh` command line.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}
