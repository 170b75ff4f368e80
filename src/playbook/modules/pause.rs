//! `pause`: waits a number of seconds or minutes (never for keyboard input).

use std::time::{Duration, Instant};

use serde::de::{self, Deserialize, Deserializer};
use serde_json::{Value as Json, json};

use super::params::{Flag, Str};
use super::{ModCtx, ModResult, Module};

pub(super) struct Pause;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    minutes: Option<Whole>,
    seconds: Option<Whole>,
    /// Ansible's; a prompt waits for input, which the built-in runner never does.
    #[allow(dead_code)]
    prompt: Option<Str>,
    #[allow(dead_code)]
    echo: Option<Flag>,
}

/// A number as Ansible reads these with Python's `int()`: a float is cut to its whole part.
#[derive(Debug, Clone, Copy)]
struct Whole(i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Json::deserialize(d)?;
        let n = match &v {
            Json::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.abs() < 1e15)
                    .map(|f| f.trunc() as i64)
            }),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.map(Whole)
            .ok_or_else(|| de::Error::custom(format!("is not an integer: {v}")))
    }
}

/// A float as Python's `str()` writes it: `1.0`, `1.25`.
fn py_float(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

impl Module for Pause {
    type Params = Params;

    fn run(&self, p: Params, _mc: &ModCtx) -> ModResult {
        let (minutes, seconds) = (p.minutes.map(|w| w.0), p.seconds.map(|w| w.0));
        let (total, unit) = match (minutes, seconds) {
            (Some(_), Some(_)) => {
                return ModResult::fail("parameters are mutually exclusive: minutes|seconds");
            }
            (Some(m), None) => (m.saturating_mul(60), "minutes"),
            (None, Some(s)) => (s, "seconds"),
            (None, None) => {
                return ModResult::fail(
                    "pause without seconds or minutes waits for keyboard input, and the built-in \
                 runner does not prompt; give `seconds:` or `minutes:`, or set `runner: ansible`",
                );
            }
        };
        let start = Instant::now();
        // Like Ansible, never less than a second.
        std::thread::sleep(Duration::from_secs(total.max(1).unsigned_abs()));
        let took = start.elapsed().as_secs_f64();
        let shown = if unit == "minutes" { took / 60.0 } else { took };
        let mut r = ModResult::ok(false);
        r.data.insert("rc".into(), json!(0));
        r.data.insert("stderr".into(), json!(""));
        r.data.insert(
            "stdout".into(),
            json!(format!(
                "Paused for {} {unit}",
                py_float((shown * 100.0).round() / 100.0)
            )),
        );
        r.data.insert("delta".into(), json!(took as u64));
        r.data.insert("echo".into(), json!(true));
        r.data.insert("user_input".into(), json!(""));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_python_int_and_str_read_and_write_them() {
        let p: Params =
            super::super::params::parse(&json!({"seconds": 5.7, "minutes": "2"})).expect("params");
        assert_eq!(
            (p.seconds.map(|w| w.0), p.minutes.map(|w| w.0)),
            (Some(5), Some(2))
        );
        assert!(super::super::params::parse::<Params>(&json!({"seconds": "x"})).is_err());
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(1.25), "1.25");
    }
}
