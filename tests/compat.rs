//! Differential compatibility: every playbook of `tests/compat/` runs with the built-in
//! runner and with the real `ansible-playbook` against separate fresh target directories,
//! twice, both through the test sshd (two inventory aliases of it, `target1` and `target2`).
//! The recap counts (ok, changed, failed, skipped) of every host and the resulting file trees
//! (paths, contents, modes, owners) must match, on the first run and on the second. A run
//! that ansible-playbook stops with an error (no recap) must stop with it in the built-in
//! runner too.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use stepsync::config::{KnownHosts, Ssh};
use stepsync::inventory::Inventory;
use stepsync::playbook::run::{Options, run};
use stepsync::playbook::ssh::SshPool;

use crate::common::sshd::TestSshd;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Recap {
    ok: u64,
    changed: u64,
    failed: u64,
    skipped: u64,
    unreachable: u64,
}

/// Every host's recap, from a `PLAY RECAP` section (both runners print the same format).
fn recaps(log: &str) -> BTreeMap<String, Recap> {
    let mut out = BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains(" ok=") && l.contains(':'))
    {
        let Some((host, counts)) = line.split_once(':') else {
            continue;
        };
        let n = |k: &str| -> u64 {
            counts
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let r = Recap {
            ok: n("ok"),
            changed: n("changed"),
            failed: n("failed"),
            skipped: n("skipped"),
            unreachable: n("unreachable"),
        };
        // Several plays: a host's counts add up, as in ansible-playbook's single recap.
        let e = out.entry(host.trim().to_owned()).or_insert(Recap {
            ok: 0,
            changed: 0,
            failed: 0,
            skipped: 0,
            unreachable: 0,
        });
        e.ok += r.ok;
        e.changed += r.changed;
        e.failed += r.failed;
        e.skipped += r.skipped;
        e.unreachable += r.unreachable;
    }
    out
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

struct Harness {
    sshd: TestSshd,
    inventory_file: PathBuf,
    inventory: Inventory,
    ssh: Ssh,
    pool: SshPool,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let sshd = TestSshd::start();
        let dir = tempfile::tempdir().unwrap();
        let inventory_file = dir.path().join("inventory.yml");
        std::fs::write(
            &inventory_file,
            sshd.inventory(&[
                ("target1", "slot: one, inv_flag: yes, inv_mode: 0640"),
                ("target2", "slot: two"),
            ]),
        )
        .unwrap();
        let inventory = Inventory::load(&inventory_file).unwrap();
        let ssh = Ssh {
            known_hosts: KnownHosts::Strict,
            known_hosts_file: Some(sshd.known_hosts.clone()),
            ..Ssh::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pool = SshPool::new(rt.handle().clone());
        Harness {
            sshd,
            inventory_file,
            inventory,
            ssh,
            pool,
            _rt: rt,
            _dir: dir,
        }
    }

    fn builtin(&self, playbook: &Path, target: &Path) -> (BTreeMap<String, Recap>, String) {
        let attrs = attributes(target);
        let opts = Options {
            playbooks_dir: &corpus(),
            inventory: &self.inventory,
            attributes: &attrs,
            hosts: None,
            ssh_pool: Some(&self.pool),
            ssh: &self.ssh,
        };
        let (_, log) =
            run(playbook, &opts).unwrap_or_else(|e| panic!("{}: {e}", playbook.display()));
        (recaps(&log), log)
    }

    fn ansible(
        &self,
        playbook: &Path,
        target: &Path,
        work: &Path,
    ) -> (BTreeMap<String, Recap>, String) {
        let vars = work.join("vars.json");
        std::fs::write(&vars, Json::Object(attributes(target)).to_string()).unwrap();
        let out = std::process::Command::new("ansible-playbook")
            .arg("-i")
            .arg(&self.inventory_file)
            .arg("-e")
            .arg(format!("@{}", vars.display()))
            .arg(playbook)
            .env("ANSIBLE_ROLES_PATH", corpus().join("roles"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_PIPELINING", "1")
            .env("ANSIBLE_HOST_KEY_CHECKING", "1")
            .env("ANSIBLE_SSH_ARGS", self.sshd.ansible_ssh_args())
            .output()
            .expect("ansible-playbook (installed by scripts/test.sh)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let r = recaps(&text);
        // No recap: ansible-playbook stopped the run with an error (a notified handler
        // that does not exist); the comparison expects the built-in runner to stop too.
        assert!(
            !r.is_empty() || stopped_with(&text).is_some(),
            "no recap for {}:\n{text}",
            playbook.display()
        );
        (r, text)
    }
}

/// Every path under `dir` with its content (files) and mode.
type Tree = BTreeMap<String, (Option<Vec<u8>>, u32, u32)>;

fn tree(dir: &Path) -> Tree {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = std::fs::metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (None, mode, meta.uid()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (Some(std::fs::read(&p).unwrap()), mode, meta.uid()));
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
    // For working on one playbook: STEPSYNC_COMPAT_ONLY=23 runs the names containing "23".
    let only = std::env::var("STEPSYNC_COMPAT_ONLY").ok();
    assert!(
        playbooks.len() >= 15,
        "the corpus has {} playbooks",
        playbooks.len()
    );
    let h = Harness::new();
    let mut failures = Vec::new();
    for pb in &playbooks {
        if let Some(o) = &only
            && !o.split(',').any(|o| pb.to_string_lossy().contains(o))
        {
            continue;
        }
        let work = tempfile::tempdir().unwrap();
        let (tb, ta) = (work.path().join("builtin"), work.path().join("ansible"));
        std::fs::create_dir_all(&tb).unwrap();
        std::fs::create_dir_all(&ta).unwrap();
        // Room for tasks that become an unprivileged user.
        for t in [&tb, &ta] {
            std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        for round in ["first", "second"] {
            let (b, blog) = h.builtin(pb, &tb);
            let (a, alog) = h.ansible(pb, &ta, work.path());
            let name = pb.file_name().unwrap().to_string_lossy();
            if std::env::var_os("STEPSYNC_COMPAT_VERBOSE").is_some() {
                eprintln!("=== {name} ({round} run)\n--- ansible:\n{alog}\n--- builtin:\n{blog}");
            }
            // ansible-playbook stopped the run: the built-in runner must fail the host with
            // the same error and stop too (its recap is there, with the failure).
            let stopped = a.is_empty()
                && stopped_with(&alog).is_some_and(|e| blog.contains(e))
                && b.values().any(|r| r.failed > 0);
            if a != b && !stopped {
                failures.push(format!(
                    "{name} ({round} run): ansible {a:?}, builtin {b:?}\n--- ansible:\n{alog}\n--- builtin:\n{blog}"
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

/// The error that made ansible-playbook stop a run without a recap.
fn stopped_with(log: &str) -> Option<&str> {
    if recaps(log).is_empty() {
        log.lines().rev().find_map(|l| l.strip_prefix("[ERROR]: "))
    } else {
        None
    }
}

fn show(e: &(Option<Vec<u8>>, u32, u32)) -> String {
    match &e.0 {
        Some(c) => format!("{:?} {:o} uid {}", String::from_utf8_lossy(c), e.1, e.2),
        None => format!("dir {:o} uid {}", e.1, e.2),
    }
}
