//! The `examples/rest-devices` service, run as shipped against its device controller.

#[path = "../examples/rest-devices/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::Path;

use crate::common::{Service, copy_dir};

const TOKEN: &str = "example-token-Vx2";

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

    let svc = Service::empty();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rest-devices");
    copy_dir(&root, svc.path());
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &cfg.replace("http://127.0.0.1:8787", &format!("http://{addr}")),
    );
    let run = |args: &[&str]| svc.test().env("DEVICES_TOKEN", TOKEN).args(args);
    run(&["run", "--once", "-f", "objects/"]).run();
    {
        let c = state.lock().unwrap();
        assert_eq!(c.networks["lab"]["cidr"], "10.0.0.0/24");
        assert_eq!(
            c.devices["leaf-1"]["config"],
            serde_json::json!({"network": "lab", "model": "edge", "ports": [1, 2]})
        );
        assert_eq!(c.devices["spine-1"]["config"]["model"], "core");
    }
    let out = run(&["get", "Device", "leaf-1", "-o", "json"])
        .any_status()
        .run();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        v["fields"]["device_id"]
            .as_str()
            .unwrap()
            .starts_with("dev-")
    );

    // Converged: the plan is empty and a refresh agrees with the controller.
    run(&["plan", "--refresh", "--detailed-exitcode"]).run();

    // Deleting a device sends its DELETE.
    run(&["delete", "Device", "spine-1"]).run();
    run(&["run", "--once"]).run();
    assert!(!state.lock().unwrap().devices.contains_key("spine-1"));
}
