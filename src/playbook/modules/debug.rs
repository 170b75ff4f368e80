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
    /// Ansible's; the built-in runner has one verbosity.
    #[allow(dead_code)]
    verbosity: Option<Int>,
}

impl Module for Debug {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let mut r = ModResult::ok(false);
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
