//! `set_fact`: variables of the host, above every other layer.

use serde_json::{Map, Value as Json};

use super::{ModCtx, ModResult, Module};

pub(super) struct SetFact;

impl Module for SetFact {
    /// Any key is a fact's name, except `cacheable`.
    type Params = Map<String, Json>;

    fn run(&self, p: Map<String, Json>, _mc: &ModCtx) -> ModResult {
        let mut r = ModResult::ok(false);
        r.facts = p.into_iter().filter(|(k, _)| k != "cacheable").collect();
        r
    }
}
