//! Gathering facts: the minimal fact set of SPEC §7.1, in one round trip to the host.

use serde_json::{Map, Value as Json};

use super::{Exec, Flow, banner};
use crate::playbook::vars::Val;

impl Exec {
    /// The minimal fact set of SPEC §7.1.
    pub(super) fn gather_facts(&mut self) -> Flow {
        self.log.push_str(&banner("TASK [Gathering Facts]"));
        // One round trip: the sections are separated by NULs, and `env -0` comes last since
        // its own separators are NULs too.
        let script = "hostname; printf '\\0'; hostname -f 2>/dev/null || hostname; printf '\\0'; \
                      uname -m; printf '\\0'; cat /etc/os-release 2>/dev/null; printf '\\0'; env -0";
        let out = match self.target_for(None).run(&[], Some(script), None, &[]) {
            Ok(o) if o.rc == 0 => o.stdout,
            Ok(o) => {
                self.fail_host(&format!("gathering facts failed: {}", o.stderr.trim()));
                return Flow::HostFailed;
            }
            Err(e) => return self.lost_or_failed(&format!("gathering facts failed: {e}")),
        };
        let mut parts = out.splitn(5, '\0');
        let mut next = || parts.next().unwrap_or("").to_owned();
        let (hostname, fqdn, arch, os, env_text) = (
            next().trim().to_owned(),
            next().trim().to_owned(),
            next().trim().to_owned(),
            next(),
            next(),
        );
        let field = |k: &str| {
            os.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let env: Map<String, Json> = env_text
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), Json::String(v.to_owned())))
            .collect();
        let facts = [
            ("ansible_hostname", Json::String(hostname)),
            ("ansible_fqdn", Json::String(fqdn)),
            ("ansible_architecture", Json::String(arch)),
            (
                "ansible_distribution",
                Json::String(
                    field("NAME")
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                ),
            ),
            (
                "ansible_distribution_version",
                Json::String(field("VERSION_ID")),
            ),
            ("ansible_env", Json::Object(env)),
        ];
        for (k, v) in facts {
            self.facts_layer.insert(k.to_owned(), Val::Data(v));
        }
        self.counts.ok += 1;
        self.log.push_str(&format!("ok: [{}]\n", self.host));
        Flow::Continue
    }
}
