//! `lineinfile` and `blockinfile`: edit a text file on the target, changed only when a line
//! or the block really changes.

use serde_json::Value as Json;

use super::modules::{ModCtx, ModResult};

pub fn lineinfile(_args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("lineinfile is not implemented yet")
}

pub fn blockinfile(_args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("blockinfile is not implemented yet")
}
