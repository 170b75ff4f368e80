//! Secrets (SPEC §3, §6.1): read from the environment or a file, carried through rendering,
//! and masked as `********` in everything stepsync writes or prints.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, SecretSource, in_dir};

pub const MASK: &str = "********";

/// Every declared secret, resolved once. A secret whose source is missing is kept as the
/// reason, reported only when a template actually asks for it.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, Result<String, String>>,
    /// What [`Secrets::mask`] looks for, worked out on first use: `serve` masks every string
    /// of every answer, and building these per string was most of a masked page's cost.
    forms: std::sync::OnceLock<Vec<String>>,
}

/// The value `src` names (an environment variable, or a file's content without its final
/// newline), or why there is none; `what` names it in the message.
pub fn read(src: &SecretSource, dir: &Path, what: &str) -> Result<String, String> {
    match src {
        SecretSource::Env(var) => {
            std::env::var(var).map_err(|_| format!("{what}: environment variable {var} is not set"))
        }
        SecretSource::File(p) => std::fs::read_to_string(in_dir(dir, p))
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("{what}: cannot read {}: {e}", p.display())),
    }
}

impl Secrets {
    pub fn load(config: &Config, dir: &Path) -> Secrets {
        let values = config
            .secrets
            .iter()
            .map(|(name, src)| (name.clone(), read(src, dir, &format!("secret `{name}`"))))
            .collect();
        Secrets {
            values,
            forms: Default::default(),
        }
    }

    /// The value of `name`, or why there is none.
    pub fn get(&self, name: &str) -> Result<&str, String> {
        match self.values.get(name) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!(
                "secret `{name}` is not declared under `secrets:` in stepsync.yaml"
            )),
        }
    }

    /// The name of the environment variable a rendered recipe reads a secret from.
    pub fn env_var(name: &str) -> String {
        let upper: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("STEPSYNC_SECRET_{upper}")
    }

    /// The known secret values with their names, longest first so a secret that contains
    /// another is replaced whole.
    pub fn known(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .values
            .iter()
            .filter_map(|(n, v)| v.as_ref().ok().map(|v| (n.as_str(), v.as_str())))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        v.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        v
    }

    /// What a secret looks like inside any base64 text that encodes it (an `Authorization:
    /// Basic` header a backend echoes, say): at each of the three byte alignments it can take,
    /// the characters that only its own bytes decide. No encoding of a secret is less secret.
    fn base64_cores(v: &str) -> Vec<String> {
        use base64::Engine as _;
        let bytes = v.as_bytes();
        (0..3)
            .filter_map(|skip| {
                let rest = bytes.get(skip..)?;
                let whole = rest.len() / 3 * 3;
                // Shorter cores would mask unrelated text.
                (whole >= 6)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&rest[..whole]))
            })
            .collect()
    }

    /// `text` with every secret value replaced by `********`, including the escaped form a
    /// secret takes inside a JSON string.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for form in self.forms() {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), MASK);
            }
        }
        out
    }

    /// Whether there is nothing to mask: no secret with a value.
    pub fn is_empty(&self) -> bool {
        self.forms().is_empty()
    }

    /// Every form of every secret, in the order masking replaces them: secret by secret,
    /// longest first, each as itself, as its JSON-escaped text and as its base64 cores.
    fn forms(&self) -> &[String] {
        self.forms.get_or_init(|| {
            let mut all = Vec::new();
            for (_, v) in self.known() {
                let escaped = serde_json::to_string(v).unwrap_or_default();
                all.push(v.to_owned());
                all.push(escaped.trim_matches('"').to_owned());
                all.extend(Self::base64_cores(v));
            }
            all.retain(|f| !f.is_empty());
            all
        })
    }

    /// `v` with every secret masked in each string it holds (keys too), value by value, so
    /// no round trip through JSON text is needed.
    pub fn mask_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.mask_json(i)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (self.mask(k), self.mask_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `text` cut into literal pieces and secret references, for recipes that read secrets
    /// from the environment instead of holding them.
    pub fn split<'a>(&'a self, text: &'a str) -> Vec<Piece<'a>> {
        let known = self.known();
        let mut out = Vec::new();
        let mut rest = text;
        'outer: while !rest.is_empty() {
            // The earliest secret occurrence wins; at equal positions the longest.
            let mut best: Option<(usize, &str, &str)> = None;
            for (name, v) in &known {
                if let Some(i) = rest.find(v)
                    && best.is_none_or(|(bi, _, bv)| i < bi || (i == bi && v.len() > bv.len()))
                {
                    best = Some((i, name, v));
                }
            }
            match best {
                Some((i, name, v)) => {
                    if i > 0 {
                        out.push(Piece::Text(&rest[..i]));
                    }
                    out.push(Piece::Secret(name));
                    rest = &rest[i + v.len()..];
                }
                None => {
                    out.push(Piece::Text(rest));
                    break 'outer;
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        let mut values = BTreeMap::new();
        values.insert("tok".to_owned(), Ok("s3cr3t".to_owned()));
        values.insert("long".to_owned(), Ok("s3cr3t-and-more".to_owned()));
        values.insert("gone".to_owned(), Err("missing".to_owned()));
        Secrets {
            values,
            forms: Default::default(),
        }
    }

    #[test]
    fn masks_every_occurrence_longest_first() {
        let s = secrets();
        assert_eq!(
            s.mask("a s3cr3t b s3cr3t-and-more"),
            "a ******** b ********"
        );
    }

    #[test]
    fn masks_json_value_by_value() {
        let mut values = BTreeMap::new();
        // A secret with a quote: masking the JSON text would miss its escaped form's edges.
        values.insert("q".to_owned(), Ok("pa\"ss".to_owned()));
        let s = Secrets {
            values,
            forms: Default::default(),
        };
        let v = serde_json::json!({"a": ["x pa\"ss y", 1], "pa\"ss": {"b": "pa\"ss"}});
        assert_eq!(
            s.mask_json(&v),
            serde_json::json!({"a": ["x ******** y", 1], "********": {"b": "********"}})
        );
    }

    #[test]
    fn masks_base64_encodings_of_a_secret() {
        use base64::Engine as _;
        let s = secrets();
        for user in ["", "u", "us", "use"] {
            let header =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:s3cr3t-and-more"));
            let masked = s.mask(&format!("Basic {header}"));
            assert!(masked.contains("********"), "{user}: {masked}");
            // What is left cannot be decoded back to the secret's core.
            assert!(!masked.contains(&header), "{masked}");
        }
    }

    #[test]
    fn splits_into_text_and_references() {
        let s = secrets();
        assert_eq!(
            s.split("Bearer s3cr3t!"),
            vec![
                Piece::Text("Bearer "),
                Piece::Secret("tok"),
                Piece::Text("!")
            ]
        );
        assert_eq!(Secrets::env_var("onos-token"), "STEPSYNC_SECRET_ONOS_TOKEN");
    }

    #[test]
    fn missing_secret_is_reported_when_asked_for() {
        let s = secrets();
        assert_eq!(s.get("gone"), Err("missing".to_owned()));
        assert!(s.get("nope").unwrap_err().contains("not declared"));
    }
}
