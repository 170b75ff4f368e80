//! Modules that read or wait on the target's system: `slurp`, `wait_for`, `pause`,
//! `service`/`systemd` and `package`/`apt`.

use serde_json::Value as Json;

use super::modules::{ModCtx, ModResult};

pub fn slurp(_args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("slurp is not implemented yet")
}

pub fn wait_for(_args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("wait_for is not implemented yet")
}

pub fn pause(_args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("pause is not implemented yet")
}

pub fn service(_name: &str, _args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("service is not implemented yet")
}

pub fn package(_name: &str, _args: &Json, _mc: &ModCtx) -> ModResult {
    ModResult::fail("package is not implemented yet")
}
