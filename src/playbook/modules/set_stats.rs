//! `set_stats`: custom stats of the run, the result the engine records.

use serde::Deserialize;
use serde_json::Value as Json;

use super::params::Flag;
use super::{ModCtx, ModResult, Module};

pub(super) struct SetStats;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    data: Option<Json>,
    /// Ansible's; a stepdef run has one host and keeps the last value of each stat.
    #[allow(dead_code)]
    per_host: Option<Flag>,
    #[allow(dead_code)]
    aggregate: Option<Flag>,
}

impl Module for SetStats {
    type Params = Params;

    fn run(&self, p: Params, _mc: &ModCtx) -> ModResult {
        let mut r = ModResult::ok(false);
        if let Some(Json::Object(m)) = p.data {
            r.stats = m;
        }
        r
    }
}
