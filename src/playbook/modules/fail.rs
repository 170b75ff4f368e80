//! `fail`: fails the task with a message.

use serde::Deserialize;

use super::params::Str;
use super::{ModCtx, ModResult, Module};

pub(super) struct Fail;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    msg: Option<Str>,
}

impl Module for Fail {
    type Params = Params;

    fn run(&self, p: Params, _mc: &ModCtx) -> ModResult {
        ModResult::fail(
            p.msg
                .map_or_else(|| "Failed as requested from task".into(), |m| m.0),
        )
    }
}
