//! The `examples/cloud-sites` service, run as shipped (the daemon) against its cloud and the
//! NATS server: the original documentation's "external step" (Sites made from the cloud's
//! availability zones by a pull step, SPEC §13), a Site actuator, and an event step feeding
//! the Sites' operational status from NATS (SPEC §14).
//!
//! Needs a NATS server with JetStream on 127.0.0.1:4222 (`nats-server -js`), as the other
//! event step tests do. Each run uses a subject (and so a stream) of its own.

#[path = "../examples/cloud-sites/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Service, copy_dir};

const TOKEN: &str = "example-token-Zq4";
const NATS: &str = "127.0.0.1:4222";

/// Starts the cloud on a free port, in a thread of its own for the test's lifetime.
fn start_cloud() -> (server::Shared, std::net::SocketAddr) {
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

/// Replaces `from` (which must be there) by `to` in the service's file `rel`.
fn rewrite(svc: &Service, rel: &str, from: &str, to: &str) {
    let text = std::fs::read_to_string(svc.path().join(rel)).unwrap();
    assert!(text.contains(from), "{rel} no longer has {from:?}:\n{text}");
    svc.file(rel, &text.replace(from, to));
}

/// A copy of the shipped service, pointed at the cloud at `addr`, its events on `subject`,
/// polling every half second instead of every minute.
fn example_service(addr: std::net::SocketAddr, subject: &str) -> Service {
    let svc = Service::empty();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-sites");
    copy_dir(&root, svc.path());
    rewrite(
        &svc,
        "stepsync.yaml",
        "http://127.0.0.1:8789",
        &format!("http://{addr}"),
    );
    rewrite(&svc, "stepsync.yaml", "127.0.0.1:4222", NATS);
    rewrite(
        &svc,
        "stepdefs/zones.yaml",
        "interval: 1m",
        "interval: 500ms",
    );
    rewrite(
        &svc,
        "stepdefs/site-events.yaml",
        "topic: cloud.site-events",
        &format!("topic: {subject}"),
    );
    svc
}

/// Kills the daemon when the test ends, however it ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every Site, by key, as `get -o json` shows them.
fn sites(svc: &Service) -> serde_json::Map<String, Value> {
    let out = svc
        .test()
        .env("CLOUD_TOKEN", TOKEN)
        .args(["get", "Site", "-o", "json"])
        .run();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| (o["key"].as_str().unwrap().to_owned(), o.clone()))
        .collect()
}

/// Waits (up to 20 s) until `ok` holds of the Sites; panics with `what` and the last Sites.
#[track_caller]
fn wait_sites(
    svc: &Service,
    what: &str,
    ok: impl Fn(&serde_json::Map<String, Value>) -> bool,
) -> serde_json::Map<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sites(svc);
        if ok(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within 20 s; the Sites: {s:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn in_sync(o: &Value) -> bool {
    o["status"]["status"] == "ok" && o["fields"]["site_id"].is_string()
}

/// Publishes `payloads` on `subject` through JetStream (each acknowledged by the stream), and
/// with `delete_stream` removes the stream the service made for the subject instead.
fn nats(subject: &str, payloads: &[&str], delete_stream: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(NATS)
            .await
            .unwrap_or_else(|e| panic!("no NATS server on {NATS} (start `nats-server -js`): {e}"));
        let js = async_nats::jetstream::new(client);
        if delete_stream {
            if let Ok(name) = js.stream_by_subject(subject).await {
                let _ = js.delete_stream(&name).await;
            }
            return;
        }
        for p in payloads {
            js.publish(subject.to_owned(), p.as_bytes().to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

/// Removes the run's stream when the test ends.
struct Stream(String);

impl Drop for Stream {
    fn drop(&mut self) {
        nats(&self.0, &[], true);
    }
}

#[test]
fn sites_follow_the_cloud_zones_and_the_site_events() {
    let (cloud, addr) = start_cloud();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let subject = format!("cloud.site-events-{}-{nanos}", std::process::id());
    let _stream = Stream(subject.clone());
    let svc = example_service(addr, &subject);
    svc.test()
        .env("CLOUD_TOKEN", TOKEN)
        .args(["validate"])
        .stderr_lacks("warning")
        .run();

    let log = svc.path().join("daemon.log");
    let child = svc
        .command(&["run"])
        .env("CLOUD_TOKEN", TOKEN)
        .stdout(std::fs::File::create(svc.path().join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let zones: Vec<&str> = server::ZONES.iter().map(|z| z.0).collect();

    // One Site per zone, made by the pull step (five zones, three pages), each synced to the
    // cloud: the actuator's PUT, and the site id back as feedback.
    let s = wait_sites(&svc, "a Site per zone, in sync", |s| {
        s.len() == zones.len() && s.values().all(in_sync)
    });
    assert_eq!(s.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut z = zones.clone();
        z.sort();
        z
    });
    let site = &s["us-east-1c"];
    assert_eq!(site["fields"]["login_base"], "us-east-1c", "{site}");
    assert_eq!(site["fields"]["enabled"], true, "{site}");
    assert_eq!(site["fields"]["zone_state"], "impaired", "{site}");
    assert_eq!(s["us-east-1a"]["fields"]["zone_state"], "available");
    {
        let c = cloud.lock().unwrap();
        assert!(
            c.zone_pages >= 3,
            "the listing was not paged: {}",
            c.zone_pages
        );
        assert_eq!(c.sites.len(), zones.len(), "{:?}", c.sites);
        for (name, o) in &s {
            let cs = &c.sites[name];
            assert_eq!(cs["login_base"], name.as_str(), "{cs}");
            assert_eq!(cs["enabled"], true, "{cs}");
            assert_eq!(o["fields"]["site_id"], cs["site_id"], "{o} {cs}");
        }
    }
    let v: Value = serde_yaml::from_str(
        &svc.test()
            .args(["get", "Site", "eu-west-1a", "-o", "yaml"])
            .run()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["owner"], "pull/zones", "{v:?}");

    // The cloud changes: a zone recovers and another goes away. The next poll writes the new
    // state as feedback (the Site is not synced again for it) and prunes the gone zone's
    // Site, whose delete removes it from the cloud.
    let puts = |c: &server::Cloud, site: &str| c.sites[site]["puts"].as_u64().unwrap();
    let before = puts(&cloud.lock().unwrap(), "us-east-1c");
    {
        let mut c = cloud.lock().unwrap();
        c.put_zone("us-east-1c", "us-east-1", "available");
        c.zones.remove("eu-west-1b");
    }
    wait_sites(&svc, "the removed zone's Site pruned, the state new", |s| {
        !s.contains_key("eu-west-1b")
            && s.len() == zones.len() - 1
            && s["us-east-1c"]["fields"]["zone_state"] == "available"
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while cloud.lock().unwrap().sites.contains_key("eu-west-1b") {
        assert!(
            Instant::now() < deadline,
            "the pruned Site is still in the cloud"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(puts(&cloud.lock().unwrap(), "us-east-1c"), before);

    // Events on NATS: each sets a Site's oper_status. A heartbeat is ignored, an event for a
    // Site that does not exist writes nothing, and one that is not JSON is a dead letter
    // that does not stop the ones after it.
    nats(
        &subject,
        &[
            r#"{"site": "us-east-1a", "status": "up"}"#,
            r#"{"site": "us-east-1b", "status": "down"}"#,
            r#"{"type": "heartbeat", "site": "us-east-1a", "status": "ignored"}"#,
            "not json",
            r#"{"site": "eu-west-1b", "status": "up"}"#,
            r#"{"site": "eu-west-1a", "status": "degraded"}"#,
        ],
        false,
    );
    let s = wait_sites(&svc, "the events' oper_status", |s| {
        s["us-east-1a"]["fields"]["oper_status"] == "up"
            && s["us-east-1b"]["fields"]["oper_status"] == "down"
            && s["eu-west-1a"]["fields"]["oper_status"] == "degraded"
    });
    assert!(!s.contains_key("eu-west-1b"), "{s:#?}");
    assert!(s["us-east-1c"]["fields"]["oper_status"].is_null(), "{s:#?}");
    // Feedback only: the other feedback stays, and nothing was synced again for it.
    for o in s.values() {
        assert!(in_sync(o), "{o}");
        assert_eq!(o["status"]["generation"], 1, "{o}");
        assert_eq!(o["status"]["synced_generation"], 1, "{o}");
    }
    {
        let c = cloud.lock().unwrap();
        assert!(c.sites.values().all(|cs| cs["puts"] == 1), "{:?}", c.sites);
    }

    let out = svc.test().env("CLOUD_TOKEN", TOKEN).args(["status"]).run();
    assert!(
        out.stdout.contains("Pull steps:\n  pull/zones: "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("Event steps:\n  event/site-events: 6 messages"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Dead letters: 1"), "{}", out.stdout);
    assert!(out.stdout.contains("not json"), "{}", out.stdout);
    let v: Value = serde_json::from_str(
        &svc.test()
            .env("CLOUD_TOKEN", TOKEN)
            .args(["status", "-o", "json"])
            .run()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["dead_letters"]["total"], 1, "{v}");
    assert_eq!(v["dead_letters"]["newest"][0]["message"], "not json", "{v}");
    assert_eq!(v["pull_steps"][0]["failures"], 0, "{v}");
    drop(daemon);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(" ERROR "), "{text}");
}
