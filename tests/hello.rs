//! The hello service at the repository root, end to end on this machine with the built-in
//! runner and with `ansible-playbook`: servers start and answer with their greeting, the
//! recipe run by hand with `ansible-playbook` changes nothing, a changed greeting restarts one
//! server only, delete stops it and removes its files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::common::{Service, copy_dir, free_port};

fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_owned)
}

fn pid(dir: &Path, server: &str) -> String {
    std::fs::read_to_string(dir.join(server).join("server.pid")).unwrap_or_default()
}

#[test]
fn hello_with_the_builtin_runner() {
    hello_servers_start_restart_on_change_and_stop_on_delete("builtin");
}

#[test]
fn hello_with_ansible_playbook() {
    hello_servers_start_restart_on_change_and_stop_on_delete("ansible");
}

fn hello_servers_start_restart_on_change_and_stop_on_delete(runner: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let svc = Service::empty();
    for d in ["schemas", "stepdefs", "playbooks"] {
        copy_dir(&root.join(d), &svc.path().join(d));
    }
    let cfg = std::fs::read_to_string(root.join("stepsync.yaml")).unwrap();
    svc.file("stepsync.yaml", &format!("{cfg}runner: {runner}\n"));
    let packages = svc.path().join("packages");
    let (p1, p2) = (free_port(), free_port());
    let objects = |greeting: &str| {
        format!(
            "Node:\n  - {{name: local}}\nHelloServer:\n  - {{name: hello-1, node: local, server_port: {p1}, greeting: '{greeting}', package_location: {pl}}}\n  - {{name: hello-2, node: local, server_port: {p2}, package_location: {pl}}}\n",
            pl = packages.display()
        )
    };
    svc.file("objects.yaml", &objects("Hello, world"));
    let out = svc
        .test()
        .args(["run", "--once", "-f", "objects.yaml"])
        .any_status()
        .run();
    let cleanup = || {
        for s in ["hello-1", "hello-2"] {
            let _ = std::process::Command::new("python3")
                .arg(packages.join("bin/hello_server.py"))
                .args(["stop", "--dir"])
                .arg(packages.join(s))
                .status();
        }
    };
    if out.code != 0 {
        cleanup();
        panic!("{}\n{}", out.stdout, out.stderr);
    }
    assert_eq!(get(p1).as_deref(), Some("Hello, world\n"));
    assert_eq!(get(p2).as_deref(), Some("Hello from stepsync\n"));
    assert_eq!(
        svc.object("HelloServer", "hello-1")["fields"]["url"],
        format!("http://127.0.0.1:{p1}/")
    );
    let (pid1, pid2) = (pid(&packages, "hello-1"), pid(&packages, "hello-2"));
    // A server started by its first run is not restarted by the handler the same run
    // notified: the handler is skipped.
    let runs = svc.path().join(".stepsync/sys/HelloServer/hello-1/runs");
    let first = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(first).unwrap();
    let handler = log.split("restart hello server]").nth(1).unwrap_or("");
    let result = handler
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if !result.is_empty() && !result.starts_with("skipping") {
        cleanup();
        panic!("the first run restarted the server it started:\n{log}");
    }

    // The recipe, run again by hand right after the engine: nothing changes, no restart.
    let dir = svc.path().join(".stepsync/sys/HelloServer/hello-1");
    let by_hand = std::process::Command::new("ansible-playbook")
        .args(["-i", "inventory.yml", "sync.yml"])
        .current_dir(&dir)
        .env(
            "ANSIBLE_CONFIG",
            svc.path().join(".stepsync/sys/ansible.cfg"),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&by_hand.stdout).into_owned();
    let ok = by_hand.status.success() && text.contains("changed=0") && text.contains("failed=0");
    if !ok {
        cleanup();
        panic!("{text}{}", String::from_utf8_lossy(&by_hand.stderr));
    }
    assert_eq!(pid(&packages, "hello-1"), pid1, "no restart");

    // A new greeting restarts that server only (its handler), and it answers with it.
    svc.file("objects.yaml", &objects("Bonjour"));
    let out = svc
        .test()
        .args(["run", "--once", "-f", "objects.yaml"])
        .any_status()
        .run();
    if out.code != 0 {
        cleanup();
        panic!("{}\n{}", out.stdout, out.stderr);
    }
    assert_eq!(get(p1).as_deref(), Some("Bonjour\n"));
    assert_ne!(pid(&packages, "hello-1"), pid1, "hello-1 restarted");
    assert_eq!(pid(&packages, "hello-2"), pid2, "hello-2 untouched");

    // Delete stops the server and removes its files.
    svc.ok(&["delete", "HelloServer", "hello-1"]);
    let out = svc.test().args(["run", "--once"]).any_status().run();
    let gone = get(p1).is_none() && !packages.join("hello-1").exists();
    cleanup();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(gone, "hello-1 still answers or left files");
    assert_eq!(svc.keys("HelloServer"), ["hello-2"]);
}
