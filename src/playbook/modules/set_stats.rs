//! `set_stats`: custom stats of the run, the result the engine records.

use serde::Deserialize;
use serde_json::Value as Json;

use super::params::{self, Flag};
use super::{ModCtx, ModResult, Module};

pub(super) struct SetStats;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    data: Option<Json>,
    /// Ansible's; a stepdef run has one host and keeps the last value of each stat. Both are
    /// reported back in the result as Ansible reports them.
    per_host: Option<Flag>,
    aggregate: Option<Flag>,
}

impl Module for SetStats {
    type Params = Params;

    fn run(&self, p: Params, _mc: &ModCtx) -> ModResult {
        let mut r = ModResult::ok(false);
        let data = match p.data {
            Some(Json::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        // What ansible-core registers: the stats and how they are kept.
        r.data.insert(
            "ansible_stats".into(),
            serde_json::json!({
                "data": data,
                "per_host": params::is(p.per_host),
                "aggregate": p.aggregate.is_none_or(|a| a.0),
            }),
        );
        r.stats = data;
        r
    }
}
