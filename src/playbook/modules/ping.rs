//! `ping`: the host answers (`ping: pong`, or the `data` given); `data: crash` fails, as in
//! Ansible, for testing failure handling.

use serde::Deserialize;
use serde_json::Value as Json;

use super::params::Str;
use super::{ModCtx, ModResult, Module};

pub(super) struct Ping;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    data: Option<Str>,
}

impl Module for Ping {
    type Params = Params;

    fn run(&self, p: Params, _mc: &ModCtx) -> ModResult {
        let data = p.data.map_or_else(|| "pong".to_owned(), |d| d.0);
        if data == "crash" {
            return ModResult::fail("boom");
        }
        let mut r = ModResult::ok(false);
        r.data.insert("ping".into(), Json::String(data));
        r
    }
}
