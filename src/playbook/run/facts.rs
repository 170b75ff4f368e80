//! Gathering facts: the minimal fact set of SPEC §7.1 and the facts public roles read most
//! (`ansible_os_family`, the user, the kernel, the package manager), in one round trip.

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
                      uname -m; printf '\\0'; cat /etc/os-release 2>/dev/null; printf '\\0'; \
                      uname -s; uname -r; uname -n; id -un; id -u; id -g; \
                      for m in apt-get dnf yum zypper pacman apk; do command -v $m >/dev/null 2>&1 && echo $m && break; done || echo; \
                      cat /etc/debian_version 2>/dev/null; \
                      printf '\\0'; env -0";
        let out = match self.target_for(None).run(&[], Some(script), None, &[]) {
            Ok(o) if o.rc == 0 => o.stdout,
            Ok(o) => {
                self.fail_host(&format!("gathering facts failed: {}", o.stderr.trim()));
                return Flow::HostFailed;
            }
            Err(e) => return self.lost_or_failed(&format!("gathering facts failed: {e}")),
        };
        let mut parts = out.splitn(6, '\0');
        let mut next = || parts.next().unwrap_or("").to_owned();
        let (hostname, fqdn, arch, os, system, env_text) = (
            next().trim().to_owned(),
            next().trim().to_owned(),
            next().trim().to_owned(),
            next(),
            next(),
            next(),
        );
        let mut sys = system.lines().map(str::trim);
        let mut line = || Json::String(sys.next().unwrap_or("").to_owned());
        let (kernel_name, kernel, nodename, user, uid, gid, pkg, debian_version) = (
            line(),
            line(),
            line(),
            line(),
            line(),
            line(),
            line(),
            line(),
        );
        let number = |v: &Json| {
            v.as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(Json::Null, Json::from)
        };
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
        let home = env.get("HOME").cloned().unwrap_or(Json::Null);
        // As Ansible: Debian's point release is in /etc/debian_version (`12.11`), not in
        // os-release (`12`).
        let version = match debian_version.as_str() {
            Some(v)
                if field("ID") == "debian"
                    && !v.is_empty()
                    && v.chars().all(|c| c.is_ascii_digit() || c == '.') =>
            {
                v.to_owned()
            }
            _ => field("VERSION_ID"),
        };
        let major = version.split('.').next().unwrap_or("").to_owned();
        // Ansible's package manager names: apt-get is `apt`.
        let pkg_mgr = match pkg.as_str() {
            Some("apt-get") => Json::String("apt".into()),
            Some("") | None => Json::String("unknown".into()),
            _ => pkg,
        };
        let domain = fqdn
            .strip_prefix(&format!("{hostname}."))
            .unwrap_or("")
            .to_owned();
        let facts = [
            (
                "ansible_os_family",
                Json::String(os_family(&field("ID"), &field("ID_LIKE"))),
            ),
            ("ansible_distribution_major_version", Json::String(major)),
            (
                "ansible_distribution_release",
                Json::String(field("VERSION_CODENAME")),
            ),
            ("ansible_system", kernel_name),
            ("ansible_kernel", kernel),
            ("ansible_nodename", nodename),
            ("ansible_machine", Json::String(arch.clone())),
            ("ansible_domain", Json::String(domain)),
            ("ansible_user_id", user),
            ("ansible_user_uid", number(&uid)),
            ("ansible_user_gid", number(&gid)),
            ("ansible_user_dir", home),
            ("ansible_pkg_mgr", pkg_mgr),
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
            ("ansible_distribution_version", Json::String(version)),
            ("ansible_env", Json::Object(env)),
        ];
        // `ansible_facts` holds the same without the prefix (`ansible_facts['os_family']`).
        let mut all = Map::new();
        for (k, v) in facts {
            all.insert(k.trim_start_matches("ansible_").to_owned(), v.clone());
            self.facts_layer.insert(k.to_owned(), Val::Data(v));
        }
        self.facts_layer
            .insert("ansible_facts".to_owned(), Val::Data(Json::Object(all)));
        self.counts.ok += 1;
        self.log.push_str(&format!("ok: [{}]\n", self.host));
        Flow::Continue
    }
}

/// Ansible's `ansible_os_family` from os-release's `ID` and `ID_LIKE`.
fn os_family(id: &str, like: &str) -> String {
    let ids: Vec<&str> = std::iter::once(id).chain(like.split_whitespace()).collect();
    let has = |names: &[&str]| ids.iter().any(|i| names.contains(i));
    if has(&["debian", "ubuntu"]) {
        "Debian"
    } else if has(&[
        "rhel",
        "fedora",
        "centos",
        "rocky",
        "almalinux",
        "amzn",
        "ol",
    ]) {
        "RedHat"
    } else if has(&["suse", "opensuse", "sles"]) {
        "Suse"
    } else if has(&["arch"]) {
        "Archlinux"
    } else if has(&["alpine"]) {
        "Alpine"
    } else if has(&["gentoo"]) {
        "Gentoo"
    } else {
        return id.to_owned();
    }
    .to_owned()
}
