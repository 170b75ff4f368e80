//! The `examples/rest-devices` service, run as shipped against its device controller.

mod common;

#[path = "../examples/rest-devices/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::Path;

const TOKEN: &str = "example-token-Vx2";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if name == ".stepsync" {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

#[test]
fn the_example_service_syncs_its_devices() {
    let state = server::Shared::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let st = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, server::router(st, TOKEN.to_owned()))
                .await
                .unwrap();
        });
    });
    let addr = rx.recv().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rest-devices");
    copy_dir(&root, dir.path());
    let cfg = std::fs::read_to_string(dir.path().join("stepsync.yaml")).unwrap();
    std::fs::write(
        dir.path().join("stepsync.yaml"),
        cfg.replace("http://127.0.0.1:8787", &format!("http://{addr}")),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .env("DEVICES_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let out = run(&["run", "--once", "-f", "objects/"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let c = state.lock().unwrap();
        assert_eq!(c.networks["lab"]["cidr"], "10.0.0.0/24");
        assert_eq!(
            c.devices["leaf-1"]["config"],
            serde_json::json!({"network": "lab", "model": "edge", "ports": [1, 2]})
        );
        assert_eq!(c.devices["spine-1"]["config"]["model"], "core");
    }
    let out = run(&["get", "Device", "leaf-1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["fields"]["device_id"]
            .as_str()
            .unwrap()
            .starts_with("dev-")
    );

    // Converged: the plan is empty and a refresh agrees with the controller.
    let out = run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Deleting a device sends its DELETE.
    assert!(run(&["delete", "Device", "spine-1"]).status.success());
    assert!(run(&["run", "--once"]).status.success());
    assert!(!state.lock().unwrap().devices.contains_key("spine-1"));
}
