//! `assert`: conditions that must hold, each a Jinja expression.

use serde::Deserialize;
use serde_json::Value as Json;

use super::params::{Flag, Str};
use super::{ModCtx, ModResult, Module, texts};

pub(super) struct Assert;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    that: Option<Json>,
    fail_msg: Option<Str>,
    msg: Option<Str>,
    success_msg: Option<Str>,
    /// Ansible's; the built-in log shows the result either way.
    #[allow(dead_code)]
    quiet: Option<Flag>,
}

impl Module for Assert {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let that: Vec<String> = match p.that {
            Some(Json::Array(a)) => texts(&a),
            Some(Json::String(s)) => vec![s],
            Some(Json::Bool(b)) => vec![b.to_string()],
            _ => return ModResult::fail("assert needs `that:`"),
        };
        for cond in &that {
            match mc.templar.condition(cond, mc.vars) {
                Ok(true) => {}
                Ok(false) => {
                    let msg = p
                        .fail_msg
                        .or(p.msg)
                        .map_or_else(|| "Assertion failed".into(), |m| m.0);
                    let mut r = ModResult::fail(msg);
                    r.data
                        .insert("assertion".into(), Json::String(cond.clone()));
                    return r;
                }
                Err(e) => return ModResult::fail(format!("assert: {e}")),
            }
        }
        let mut r = ModResult::ok(false);
        r.msg = Some(
            p.success_msg
                .map_or_else(|| "All assertions passed".into(), |m| m.0),
        );
        r
    }
}
