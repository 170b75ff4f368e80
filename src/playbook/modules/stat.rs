//! `stat`: what is at a path on the target.

use serde::Deserialize;
use serde_json::json;

use super::params::{Flag, Str};
use super::{ModCtx, ModResult, Module, io};

pub(super) struct Stat;

/// Ansible's parameters; the checksum and MIME ones are accepted and not acted on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct Params {
    #[serde(alias = "dest", alias = "name")]
    path: Option<Str>,
    follow: Option<Flag>,
    get_checksum: Option<Flag>,
    #[serde(alias = "checksum", alias = "checksum_algo")]
    checksum_algorithm: Option<Str>,
    #[serde(alias = "mime", alias = "mime_type", alias = "mime-type")]
    get_mime: Option<Flag>,
    #[serde(alias = "attr", alias = "attributes")]
    get_attributes: Option<Flag>,
    get_md5: Option<Flag>,
}

impl Module for Stat {
    type Params = Params;

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(path)) = p.path else {
            return ModResult::fail("path is required");
        };
        let mut r = ModResult::ok(false);
        let st = match mc.target.stat(&path) {
            Ok(Some(s)) => json!({
                "exists": true, "isdir": s.is_dir, "isreg": s.is_file,
                "mode": format!("{:04o}", s.mode), "size": s.size, "path": path,
            }),
            Ok(None) => json!({"exists": false}),
            Err(e) => return io("cannot stat", &path, e),
        };
        r.data.insert("stat".into(), st);
        r
    }
}
