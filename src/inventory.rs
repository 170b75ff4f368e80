//! The Ansible YAML inventory (SPEC §7.4): hosts, groups (with children) and their vars,
//! flattened so each host has its effective vars, and host patterns resolved against it.

use std::path::Path;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::diag::Diagnostics;
use crate::yaml::{Node, Source, Spanned};

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Every host with its vars (all < parent groups < child groups < the host's own).
    pub hosts: IndexMap<String, Map<String, Value>>,
    /// Every group with all its hosts, children's included.
    pub groups: IndexMap<String, Vec<String>>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, Diagnostics> {
        let src = Source::read_ansible(path)?;
        let docs = src.documents()?;
        let mut inv = Inventory::default();
        let mut diags = Diagnostics::default();
        for doc in &docs {
            match &doc.value {
                Node::Null => {}
                Node::Map(entries) => {
                    for (name, group) in entries {
                        inv.group(&src, &name.value, group, &Map::new(), &mut diags);
                    }
                }
                other => diags.push(src.diag_at(
                    format!(
                        "an inventory is a map of groups (like `all:`), not a {}",
                        other.kind()
                    ),
                    doc,
                )),
            }
        }
        diags.into_result().map(|()| inv)
    }

    fn group(
        &mut self,
        src: &Source,
        name: &str,
        node: &Spanned<Node>,
        inherited: &Map<String, Value>,
        diags: &mut Diagnostics,
    ) -> Vec<String> {
        let entries = match &node.value {
            Node::Map(e) => e.as_slice(),
            Node::Null => &[],
            other => {
                diags.push(src.diag_at(
                    format!("group `{name}` must be a map, not a {}", other.kind()),
                    node,
                ));
                return Vec::new();
            }
        };
        let mut vars = inherited.clone();
        if let Some((_, v)) = entries.iter().find(|(k, _)| k.value == "vars") {
            match v.value.to_json() {
                Value::Object(m) => vars.extend(m),
                Value::Null => {}
                _ => diags.push(src.diag_at(format!("`vars` of group `{name}` must be a map"), v)),
            }
        }
        let mut members = Vec::new();
        for (k, v) in entries {
            match k.value.as_str() {
                "vars" => {}
                "hosts" => match &v.value {
                    Node::Map(hosts) => {
                        for (h, hv) in hosts {
                            let mut hvars = self
                                .hosts
                                .get(&h.value)
                                .cloned()
                                .unwrap_or_else(|| vars.clone());
                            for (vk, vv) in &vars {
                                hvars.entry(vk.clone()).or_insert_with(|| vv.clone());
                            }
                            match hv.value.to_json() {
                                Value::Object(m) => hvars.extend(m),
                                Value::Null => {}
                                _ => diags.push(src.diag_at(
                                    format!("host `{}` must map to its vars", h.value),
                                    hv,
                                )),
                            }
                            self.hosts.insert(h.value.clone(), hvars);
                            members.push(h.value.clone());
                        }
                    }
                    Node::Null => {}
                    _ => diags.push(src.diag_at("`hosts` must be a map of host names", v)),
                },
                "children" => match &v.value {
                    Node::Map(children) => {
                        for (c, cv) in children {
                            members.extend(self.group(src, &c.value, cv, &vars, diags));
                        }
                    }
                    Node::Null => {}
                    _ => diags.push(src.diag_at("`children` must be a map of groups", v)),
                },
                other => diags.push(
                    src.diag_at(format!("unknown key `{other}` in group `{name}`"), k)
                        .with_hint(
                            match crate::diag::suggest(other, ["hosts", "vars", "children"]) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => "a group holds `hosts`, `vars` and `children`".to_owned(),
                            },
                        ),
                ),
            }
        }
        members.dedup();
        let entry = self.groups.entry(name.to_owned()).or_default();
        for m in &members {
            if !entry.contains(m) {
                entry.push(m.clone());
            }
        }
        members
    }

    /// The hosts a play's `hosts:` pattern names: `all`, groups, hosts, or addresses,
    /// separated by `,` or `:`.
    pub fn resolve(&self, pattern: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for part in pattern
            .split([',', ':'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let found: Vec<String> = if part == "all" {
                self.hosts.keys().cloned().collect()
            } else if let Some(g) = self.groups.get(part) {
                g.clone()
            } else {
                vec![part.to_owned()]
            };
            for h in found {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_children_and_vars_flatten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inventory.yaml");
        std::fs::write(
            &p,
            "all:\n  vars: {ansible_user: ops}\n  hosts:\n    h0: {ansible_host: 10.0.0.1}\n  children:\n    nodes:\n      vars: {ansible_port: 2222}\n      hosts:\n        n1: {ansible_host: 10.0.0.2}\n        n2: {ansible_port: 22}\n",
        )
        .unwrap();
        let inv = Inventory::load(&p).unwrap();
        assert_eq!(inv.resolve("nodes"), ["n1", "n2"]);
        assert_eq!(inv.resolve("all").len(), 3);
        assert_eq!(inv.hosts["n1"]["ansible_port"], 2222);
        assert_eq!(inv.hosts["n1"]["ansible_user"], "ops");
        assert_eq!(inv.hosts["n2"]["ansible_port"], 22);
        assert_eq!(inv.resolve("h0,10.9.9.9"), ["h0", "10.9.9.9"]);
    }

    #[test]
    fn inventories_are_read_as_yaml_1_1() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inventory.yaml");
        std::fs::write(
            &p,
            "all:\n  hosts:\n    h: {ansible_become: yes, umask: 0022, label: 'no', c: no}\n",
        )
        .unwrap();
        let h = &Inventory::load(&p).unwrap().hosts["h"];
        assert_eq!(h["ansible_become"], true);
        assert_eq!(h["umask"], 0o22);
        assert_eq!(h["label"], "no");
        assert_eq!(h["c"], false);
    }
}
