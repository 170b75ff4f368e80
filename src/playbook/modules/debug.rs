//! `debug`: a message, or a variable's value, in the log.

use serde::Deserialize;
use serde_json::Value as Json;

use super::params::Int;
use super::{ModCtx, ModResult, Module};

pub(super) struct Debug;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    msg: Option<Json>,
    var: Option<Json>,
    /// The run's verbosity this message needs: the built-in runner runs at 0 (as
    /// ansible-playbook without `-v`), so a message above it is skipped.
    verbosity: Option<Int>,
}

impl Module for Debug {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let mut r = ModResult::ok(false);
        if p.verbosity.is_some_and(|v| v.0 > 0) {
            r.skipped = true;
            r.data.insert(
                "skipped_reason".into(),
                Json::String("Verbosity threshold not met.".into()),
            );
            return r;
        }
        match (p.msg, p.var) {
            (Some(m), _) => {
                r.data.insert("msg".into(), m);
            }
            (None, Some(Json::String(var))) => {
                let v = mc
                    .templar
                    .eval(&var, mc.vars)
                    .ok()
                    .and_then(|v| serde_json::to_value(&v).ok());
                r.data.insert(
                    var,
                    v.unwrap_or(Json::String("VARIABLE IS NOT DEFINED!".into())),
                );
            }
            _ => {
                r.data
                    .insert("msg".into(), Json::String("Hello world!".into()));
            }
        }
        r
    }
}
