//! Differential compatibility: every playbook of `tests/compat/` runs with the built-in
//! runner and with the real `ansible-playbook` against separate fresh target directories,
//! twice. The recap counts (ok, changed, failed, skipped) and the resulting file trees
//! (paths, contents, modes) must match, on the first run and on the second.
//!
//! Both run on this host (`connection: local`); the SSH connection of the built-in runner is
//! not built yet.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use stepsync::inventory::Inventory;
use stepsync::playbook::run::{Options, run};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Recap {
    ok: u64,
    changed: u64,
    failed: u64,
    skipped: u64,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn attributes(target: &Path) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("target".into(), Json::String(target.display().to_string()));
    m.insert("color".into(), Json::String("from-extra".into()));
    m
}

fn builtin(playbook: &Path, target: &Path) -> Recap {
    let inv = Inventory::default();
    let attrs = attributes(target);
    let opts = Options {
        playbooks_dir: &corpus(),
        inventory: &inv,
        attributes: &attrs,
        hosts: None,
    };
    let (r, log) = run(playbook, &opts).unwrap_or_else(|e| panic!("{}: {e}", playbook.display()));
    assert_eq!(r.unreachable, 0, "{log}");
    Recap {
        ok: r.ok,
        changed: r.changed,
        failed: r.failed,
        skipped: r.skipped,
    }
}

fn ansible(playbook: &Path, target: &Path, work: &Path) -> Recap {
    let vars = work.join("vars.json");
    std::fs::write(&vars, Json::Object(attributes(target)).to_string()).unwrap();
    let inventory = work.join("inventory.ini");
    std::fs::write(&inventory, "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n").unwrap();
    let out = std::process::Command::new("ansible-playbook")
        .arg("-i")
        .arg(&inventory)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .arg(playbook)
        .env("ANSIBLE_ROLES_PATH", corpus().join("roles"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .output()
        .expect("ansible-playbook (installed by scripts/test.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("localhost") && l.contains("ok="))
        .unwrap_or_else(|| {
            panic!(
                "no recap for {}:\n{text}{}",
                playbook.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let n = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Recap {
        ok: n("ok"),
        changed: n("changed"),
        failed: n("failed"),
        skipped: n("skipped"),
    }
}

/// Every path under `dir` with its content (files) and mode.
fn tree(dir: &Path) -> BTreeMap<String, (Option<Vec<u8>>, u32)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Option<Vec<u8>>, u32)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = std::fs::metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (None, mode));
                walk(root, &p, out);
            } else {
                out.insert(rel, (Some(std::fs::read(&p).unwrap()), mode));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

#[test]
fn builtin_runner_matches_ansible_playbook() {
    let mut playbooks: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
        })
        .collect();
    playbooks.sort();
    assert!(
        playbooks.len() >= 15,
        "the corpus has {} playbooks",
        playbooks.len()
    );
    let mut failures = Vec::new();
    for pb in &playbooks {
        let work = tempfile::tempdir().unwrap();
        let (tb, ta) = (work.path().join("builtin"), work.path().join("ansible"));
        std::fs::create_dir_all(&tb).unwrap();
        std::fs::create_dir_all(&ta).unwrap();
        for round in ["first", "second"] {
            let b = builtin(pb, &tb);
            let a = ansible(pb, &ta, work.path());
            let name = pb.file_name().unwrap().to_string_lossy();
            if a != b {
                failures.push(format!(
                    "{name} ({round} run): ansible {a:?}, builtin {b:?}"
                ));
            }
            if tree(&ta) != tree(&tb) {
                let (ta_t, tb_t) = (tree(&ta), tree(&tb));
                let diff: Vec<String> = ta_t
                    .keys()
                    .chain(tb_t.keys())
                    .filter(|k| ta_t.get(*k) != tb_t.get(*k))
                    .map(|k| {
                        format!(
                            "{k}: ansible {:?} builtin {:?}",
                            ta_t.get(k).map(show),
                            tb_t.get(k).map(show)
                        )
                    })
                    .collect();
                failures.push(format!(
                    "{name} ({round} run): trees differ: {}",
                    diff.join("; ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn show(e: &(Option<Vec<u8>>, u32)) -> String {
    match &e.0 {
        Some(c) => format!("{:?} {:o}", String::from_utf8_lossy(c), e.1),
        None => format!("dir {:o}", e.1),
    }
}
