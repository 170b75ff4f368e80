//! The `examples/fabric-net` service, run as shipped against its fabric controller: the
//! original framework's documented watcher case (a fabric route re-pushed when its
//! instance's address changes) and policy case (every network gets an interface).

#[path = "../examples/fabric-net/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::Path;

use serde_json::Value;

use crate::common::{Service, copy_dir};

const TOKEN: &str = "example-token-Fq7";

/// Starts the controller on a free port, in a thread of its own for the test's lifetime.
fn start_controller() -> (server::Shared, std::net::SocketAddr) {
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
    (state, rx.recv().unwrap())
}

/// A copy of the shipped service, pointed at the controller at `addr`.
fn example_service(addr: std::net::SocketAddr) -> Service {
    let svc = Service::empty();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fabric-net");
    copy_dir(&root, svc.path());
    let cfg = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    assert!(cfg.contains("http://127.0.0.1:8788"), "{cfg}");
    svc.file(
        "stepsync.yaml",
        &cfg.replace("http://127.0.0.1:8788", &format!("http://{addr}")),
    );
    svc
}

/// `get MODEL KEY -o yaml`, parsed: the format the spec shows `owner:` in.
fn get_yaml(svc: &Service, model: &str, key: &str) -> Value {
    let out = svc
        .test()
        .env("FABRIC_TOKEN", TOKEN)
        .args(["get", model, key, "-o", "yaml"])
        .run();
    serde_yaml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The `owner:` of an object as `get -o yaml` prints it, beside its model and key.
fn owner(v: &Value) -> Option<&str> {
    v.get("owner").and_then(Value::as_str)
}

/// The watcher case. The route's recipe names the instance, not its address (the controller
/// resolves that at push time), so only the watcher on `Instance.ip` can tell the route that
/// its instance moved.
#[test]
fn the_fabric_route_follows_its_instance() {
    let (state, addr) = start_controller();
    let svc = example_service(addr);
    let run = |args: &[&str]| svc.test().env("FABRIC_TOKEN", TOKEN).args(args);
    run(&["apply", "-f", "objects/fabric.yaml"]).run();
    run(&["run", "--once"]).run();

    // The controller assigned the address; it came back as feedback.
    let vm1_ip = {
        let c = state.lock().unwrap();
        assert_eq!(c.instances["vm-1"]["subnet"], "10.1.0.0/24");
        c.instances["vm-1"]["ip"].as_str().unwrap().to_owned()
    };
    assert!(vm1_ip.starts_with("10.1.0."), "{vm1_ip}");
    assert_eq!(
        svc.object("Instance", "vm-1")["fields"]["ip"],
        vm1_ip.as_str()
    );

    // The route programmed the address the instance had when it was pushed.
    let pushes = |c: &server::Controller, route: &str| c.fabric[route]["pushes"].as_u64().unwrap();
    let (vm1_pushes, vm2_pushes) = {
        let c = state.lock().unwrap();
        let route = &c.fabric["route-vm-1"];
        assert_eq!(route["instance"], "vm-1");
        assert_eq!(route["ip"], vm1_ip.as_str());
        (pushes(&c, "route-vm-1"), pushes(&c, "route-vm-2"))
    };

    // Moving vm-1 to another subnet, with the file the README uses: the controller gives it
    // a new address.
    run(&["apply", "-f", "move-vm-1.yaml"]).run();
    // Nothing the route's recipe reads has changed yet: it is not pending before the run.
    assert_eq!(svc.object("Fabric", "route-vm-1")["status"]["status"], "ok");
    run(&["run", "--once"]).run();

    let new_ip = {
        let c = state.lock().unwrap();
        c.instances["vm-1"]["ip"].as_str().unwrap().to_owned()
    };
    assert!(new_ip.starts_with("10.2.0."), "{new_ip}");
    // Without stepdefs/fabric-watcher.yaml the route would still hold the old address here.
    assert_eq!(
        svc.object("Instance", "vm-1")["fields"]["ip"],
        new_ip.as_str()
    );
    {
        let c = state.lock().unwrap();
        let route = &c.fabric["route-vm-1"];
        assert_eq!(
            route["ip"],
            new_ip.as_str(),
            "the route was not re-pushed: {route}"
        );
        assert!(pushes(&c, "route-vm-1") > vm1_pushes, "{route}");
        // vm-2 did not move: its route was not pushed again.
        assert_eq!(pushes(&c, "route-vm-2"), vm2_pushes, "{:?}", c.fabric);
    }
    assert_eq!(svc.object("Fabric", "route-vm-1")["status"]["status"], "ok");

    // Converged: nothing is pending, so the plan is empty.
    run(&["plan", "--detailed-exitcode"]).run();
}

/// The policy case: every network gets an interface it owns. The whole of `objects/` is
/// applied, as the README does, so the two cases also run side by side.
#[test]
fn every_network_gets_an_interface_it_owns() {
    let (state, addr) = start_controller();
    let svc = example_service(addr);
    let run = |args: &[&str]| svc.test().env("FABRIC_TOKEN", TOKEN).args(args);
    run(&["apply", "-f", "objects/"]).run();
    run(&["run", "--once"]).run();

    {
        let c = state.lock().unwrap();
        assert_eq!(c.networks["mgmt"]["mtu"], 1500);
        assert_eq!(c.networks["data"]["mtu"], 9000);
    }
    // One interface per network, owned by it, with the network's mtu, and actuated like any
    // object (after its network: the controller refuses it otherwise).
    for (network, mtu) in [("mgmt", 1500), ("data", 9000)] {
        let key = format!("{network}-if0");
        let v = get_yaml(&svc, "Interface", &key);
        assert_eq!(v["fields"]["network"], network, "{v:?}");
        assert_eq!(v["fields"]["mtu"], mtu, "{v:?}");
        assert_eq!(
            owner(&v),
            Some(format!("Network/{network}").as_str()),
            "{v:?}"
        );
        assert_eq!(v["status"]["status"], "ok", "{v:?}");
        let c = state.lock().unwrap();
        assert_eq!(
            c.interfaces.get(&key),
            Some(&serde_json::json!({"network": network, "mtu": mtu})),
            "{:?}",
            c.interfaces
        );
    }
    assert_eq!(
        svc.keys("Interface"),
        ["data-if0", "mgmt-if0"].map(String::from)
    );
    // Objects that were applied have no owner.
    assert_eq!(owner(&get_yaml(&svc, "Network", "mgmt")), None);
    run(&["plan", "--detailed-exitcode"]).run();

    // The interface follows its network's mtu (`on_update` repeats `on_create`).
    let objects = svc.path().join("objects/networks.yaml");
    let text = std::fs::read_to_string(&objects).unwrap();
    let bigger = text.replace("{name: mgmt}", "{name: mgmt, mtu: 4000}");
    assert_ne!(text, bigger, "the objects file changed shape");
    std::fs::write(&objects, bigger).unwrap();
    run(&["apply", "-f", "objects/networks.yaml"]).run();
    run(&["run", "--once"]).run();
    assert_eq!(state.lock().unwrap().interfaces["mgmt-if0"]["mtu"], 4000);

    // Deleting a network deletes the interface it owns, interface first (the controller
    // refuses to delete a network that still has interfaces).
    run(&["delete", "Network", "data"]).run();
    run(&["run", "--once"]).run();
    {
        let c = state.lock().unwrap();
        assert!(!c.networks.contains_key("data"), "{:?}", c.networks);
        assert!(!c.interfaces.contains_key("data-if0"), "{:?}", c.interfaces);
        assert!(c.interfaces.contains_key("mgmt-if0"), "{:?}", c.interfaces);
    }
    assert_eq!(svc.keys("Interface"), ["mgmt-if0"].map(String::from));
}
