//! The built-in `service` module against a real (throw-away) sysvinit service: this
//! container runs no systemd, so the module takes its `service`/`/etc/init.d` path, and
//! `ansible-playbook` cannot be compared here. Needs root to install the init script; skips
//! (with a note) otherwise.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use stepsync::config::Ssh;
use stepsync::inventory::Inventory;
use stepsync::payload::playbook::PlaybookResult;
use stepsync::playbook::run::{Options, run};

/// The init script: a `sleep` as the daemon, its pid in a file, LSB exit codes for status.
fn init_script(pidfile: &Path) -> String {
    format!(
        r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          {{name}}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: stepsync test service
### END INIT INFO
PIDFILE={pid}
alive() {{ [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }}
case "$1" in
  start) alive && exit 0; sleep 1000 >/dev/null 2>&1 & echo $! > "$PIDFILE" ;;
  stop) if alive; then kill "$(cat "$PIDFILE")"; fi; rm -f "$PIDFILE" ;;
  restart) "$0" stop; "$0" start ;;
  reload) alive || exit 7; echo reloaded >> "$PIDFILE.reloads" ;;
  status) if alive; then echo "running"; exit 0; else echo "not running"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|restart|reload|status" >&2; exit 2 ;;
esac
"#,
        pid = pidfile.display()
    )
}

/// Removes the service however the test ends.
struct Installed {
    name: String,
    script: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .status();
        let _ = std::process::Command::new("update-rc.d")
            .args(["-f", &self.name, "remove"])
            .output();
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Whether a process runs (a zombie left for an absent reaper does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Whether `pid` is gone within 5 s: the test's init script sends SIGTERM and returns, and
/// on a loaded machine the process may take a moment to exit.
fn gone(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

fn pid_of(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

struct Runner {
    dir: tempfile::TempDir,
    svc: String,
}

impl Runner {
    /// Runs one `service` task with the given arguments (YAML flow mapping, without name).
    fn service(&self, args: &str) -> (PlaybookResult, String) {
        self.play(&format!(
            "- name: manage the service\n  service: {{name: \"{{{{ svc }}}}\", {args}}}\n"
        ))
    }

    /// Runs `tasks` (a YAML task list) on localhost; `svc` is a variable.
    fn play(&self, tasks: &str) -> (PlaybookResult, String) {
        let pb = self.dir.path().join("play.yml");
        let indented: String = tasks.lines().map(|l| format!("    {l}\n")).collect();
        std::fs::write(
            &pb,
            format!(
                "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n{indented}"
            ),
        )
        .unwrap();
        let mut attrs = Map::new();
        attrs.insert("svc".into(), Json::String(self.svc.clone()));
        let inv = Inventory::default();
        let ssh = Ssh::default();
        let opts = Options {
            playbooks_dir: self.dir.path(),
            inventory: &inv,
            attributes: &attrs,
            hosts: None,
            ssh_pool: None,
            ssh: &ssh,
        };
        run(&pb, &opts).unwrap()
    }

    fn expect(&self, args: &str, changed: u64) {
        let (r, log) = self.service(args);
        assert_eq!((r.failed, r.changed), (0, changed), "{args}:\n{log}");
    }
}

#[test]
fn service_manages_a_sysvinit_service() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("skipped: this host runs systemd; the test drives the sysvinit path");
        return;
    }
    let name = format!("stepsync-test-{}", std::process::id());
    let script = PathBuf::from(format!("/etc/init.d/{name}"));
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("svc.pid");
    if let Err(e) = std::fs::write(&script, init_script(&pidfile).replace("{name}", &name)) {
        eprintln!(
            "skipped: cannot install {} ({e}); needs root",
            script.display()
        );
        return;
    }
    let _installed = Installed {
        name: name.clone(),
        script: script.clone(),
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = Runner {
        dir,
        svc: name.clone(),
    };

    r.expect("state: started", 1);
    let first = pid_of(&pidfile).expect("the service wrote its pid");
    assert!(alive(first), "the daemon runs after start");
    r.expect("state: started", 0);
    assert_eq!(pid_of(&pidfile), Some(first), "started twice starts once");

    r.expect("state: restarted", 1);
    let second = pid_of(&pidfile).expect("pid after restart");
    assert!(second != first && alive(second) && gone(first));

    r.expect("state: reloaded", 1);
    assert!(
        dir_has(&pidfile, ".reloads"),
        "a running service is reloaded"
    );

    r.expect("state: stopped", 1);
    assert!(gone(second), "the daemon is gone after stop");
    r.expect("state: stopped", 0);

    // Ansible starts a stopped service that it is asked to reload.
    r.expect("state: reloaded", 1);
    let third = pid_of(&pidfile).expect("pid after reload of a stopped service");
    assert!(alive(third));
    r.expect("state: stopped", 1);
    assert!(gone(third));

    if which("update-rc.d") {
        r.expect("enabled: true", 1);
        r.expect("enabled: true", 0);
        r.expect("enabled: false", 1);
        r.expect("enabled: false", 0);
    } else {
        eprintln!("no update-rc.d: enabled not tested");
    }
}

#[test]
fn service_of_a_missing_script_fails() {
    if Path::new("/run/systemd/system").exists() {
        return;
    }
    let r = Runner {
        dir: tempfile::tempdir().unwrap(),
        svc: format!("stepsync-absent-{}", std::process::id()),
    };
    let (res, log) = r.service("state: started");
    assert_eq!(res.failed, 1, "{log}");
}

fn dir_has(pidfile: &Path, suffix: &str) -> bool {
    PathBuf::from(format!("{}{suffix}", pidfile.display())).exists()
}

fn which(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn wait_for_an_open_port_and_its_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = Runner {
        dir: tempfile::tempdir().unwrap(),
        svc: String::new(),
    };
    let (res, log) = r.play(&format!(
        "- wait_for: {{port: {port}, timeout: 3}}\n  register: up\n\
         - assert: {{that: [\"up.elapsed < 3\", \"up.port == {port}\", \"not up.changed\"]}}\n"
    ));
    assert_eq!((res.ok, res.failed), (2, 0), "{log}");
    let (res, log) = r.play(&format!(
        "- wait_for: {{port: {port}, state: stopped, timeout: 1}}\n"
    ));
    assert_eq!(res.failed, 1, "{log}");
    assert!(
        log.contains(&format!(
            "Timeout when waiting for 127.0.0.1:{port} to stop."
        )),
        "{log}"
    );
    drop(listener);
}

#[test]
fn pause_does_not_prompt() {
    let r = Runner {
        dir: tempfile::tempdir().unwrap(),
        svc: String::new(),
    };
    let (res, log) = r.play("- pause: {prompt: \"Continue?\"}\n");
    assert_eq!(res.failed, 1, "{log}");
    assert!(log.contains("does not prompt"), "{log}");
}
