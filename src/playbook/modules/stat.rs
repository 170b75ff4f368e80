//! `stat`: what is at a path on the target.

use super::params::Inert;
use serde::Deserialize;
use serde_json::json;

use super::params::{Flag, Str, is};
use super::{ModCtx, ModResult, Module, io};

pub(super) struct Stat;

/// Ansible's parameters. `follow` and `get_checksum` (SHA-1, the only algorithm the built-in
/// runner computes) act; the MIME and attribute ones are accepted and not acted on.
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

    /// Only SHA-1 checksums; MIME types and attributes are not returned (reading them fails, as undefined).
    const INERT: &'static [Inert] = &[
        Inert::only("checksum_algorithm", &["sha1"]),
        Inert::only("checksum", &["sha1"]),
        Inert::only("checksum_algo", &["sha1"]),
        Inert::any("get_mime"),
        Inert::any("mime"),
        Inert::any("mime_type"),
        Inert::any("mime-type"),
        Inert::any("get_attributes"),
        Inert::any("attr"),
        Inert::any("attributes"),
        Inert::only("get_md5", &["false"]),
    ];

    fn run(&self, p: Params, mc: &ModCtx) -> ModResult {
        let Some(Str(path)) = p.path else {
            return ModResult::fail("path is required");
        };
        let mut r = ModResult::ok(false);
        let follow = is(p.follow);
        let checksum = p.get_checksum.is_none_or(|f| f.0);
        let st = match mc.target.describe(&path, follow, checksum) {
            Ok(Some(fields)) => serde_json::Value::Object(fields),
            Ok(None) => json!({"exists": false}),
            Err(e) => return io("cannot stat", &path, e),
        };
        r.data.insert("stat".into(), st);
        r
    }
}
