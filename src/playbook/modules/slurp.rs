//! `slurp`: a file of the target, base64-encoded into the result.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value as Json;

use super::params::Str;
use super::{ModCtx, ModResult, Module, io};

pub(super) struct Slurp;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    #[serde(alias = "path")]
    src: Option<Str>,
}

impl Module for Slurp {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(src)) = p.src else {
            return ModResult::fail("missing required arguments: src");
        };
        match mc.target.stat(&src) {
            Ok(Some(s)) if s.is_dir => {
                return ModResult::fail(format!("Source is a directory and must be a file: {src}"));
            }
            Ok(_) => {}
            Err(e) => return io("cannot stat", &src, e),
        }
        let data = match mc.target.read(&src) {
            Ok(Some(d)) => d,
            Ok(None) => return ModResult::fail(format!("File not found: {src}")),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return ModResult::fail(format!("File is not readable: {src}"));
            }
            Err(e) => return ModResult::fail(format!("Unable to slurp file: {src}: {e}")),
        };
        let mut r = ModResult::ok(false);
        r.data.insert(
            "content".into(),
            Json::String(base64::engine::general_purpose::STANDARD.encode(data)),
        );
        r.data.insert("source".into(), Json::String(src));
        r.data
            .insert("encoding".into(), Json::String("base64".into()));
        r
    }
}
