//! Event steps through the real binary, on both buses (SPEC §14): NATS JetStream (the
//! nats-server on 127.0.0.1:4222, or one the test starts) and Kafka (a `tansu` broker each
//! test starts on a free port with throw-away storage).
//!
//! Every scenario is written once, parameterised by `Kind`, and run for each bus: actions,
//! fields and feedback; exactly once across SIGTERM and kill -9 restarts; a poisoned message
//! among 1,000; a broker that is down; redelivered messages skipped.
//!
//! The broker for Kafka is found through `STEPSYNC_TANSU`, `TANSU_BIN`, the PATH or
//! `~/.cache/stepsync/tansu-0.6.0/bin` (scripts/test.sh installs it there, `ensure_kafka_broker`); it must be
//! built with a storage engine (`tansu --help` ends with `Storage engines: dynostore, ...`).

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::http::TestServer;
use crate::common::{Service, free_port};

// ---- the buses ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Nats,
    Kafka,
}

/// The NATS server every NATS test shares (scripts/test.sh starts it when it is not running).
const NATS: &str = "127.0.0.1:4222";

/// One bus for one test: the broker (started by the test for Kafka), a client to publish
/// with, and what the test created on it (removed on drop).
struct Bus {
    kind: Kind,
    endpoint: String,
    rt: tokio::runtime::Runtime,
    /// The broker process this test started, if any.
    broker: Option<Broker>,
    nats: Option<async_nats::jetstream::Context>,
    producer: Option<rdkafka::producer::FutureProducer>,
    /// NATS streams this test made, deleted on drop.
    streams: std::sync::Mutex<Vec<String>>,
    /// The prefix of every name this test uses.
    tag: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (nor an earlier run of this one) uses.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "{test}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Bus {
    /// The bus of `kind` for the test `test`, up and reachable.
    fn up(kind: Kind, test: &str) -> Bus {
        let endpoint = match kind {
            Kind::Nats => NATS.to_owned(),
            Kind::Kafka => format!("127.0.0.1:{}", free_port()),
        };
        let mut bus = Bus::on(kind, test, endpoint);
        bus.start();
        bus
    }

    /// The bus of `kind` configured on a port nothing listens on yet (`start` brings it
    /// there): for NATS another nats-server, for Kafka a tansu, both on that port.
    fn down(kind: Kind, test: &str) -> Bus {
        Bus::on(kind, test, format!("127.0.0.1:{}", free_port()))
    }

    fn on(kind: Kind, test: &str, endpoint: String) -> Bus {
        Bus {
            kind,
            endpoint,
            rt: runtime(),
            broker: None,
            nats: None,
            producer: None,
            streams: std::sync::Mutex::new(Vec::new()),
            tag: unique(test),
        }
    }

    /// Starts the broker (when the test owns it) and connects the publishing client.
    fn start(&mut self) {
        match self.kind {
            Kind::Nats => {
                if self.endpoint != NATS {
                    self.broker = Some(Broker::nats(&self.endpoint));
                } else {
                    assert!(
                        wait_port(NATS, Duration::from_secs(5)),
                        "no NATS server on {NATS}: start one with JetStream \
                         (`nats-server -a 127.0.0.1 -p 4222 -js`; scripts/test.sh does)"
                    );
                }
                let endpoint = self.endpoint.clone();
                // the JetStream context spawns a task: made inside the runtime
                let js = self.rt.block_on(async {
                    let client = async_nats::connect(endpoint)
                        .await
                        .expect("connect to NATS");
                    async_nats::jetstream::new(client)
                });
                self.nats = Some(js);
            }
            Kind::Kafka => {
                self.broker = Some(Broker::tansu(&self.endpoint));
                let producer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &self.endpoint)
                    .set("acks", "all")
                    .set("linger.ms", "2")
                    .set("message.timeout.ms", "30000")
                    .set("enable.idempotence", "false")
                    // one request in flight per partition: retries never reorder
                    .set("max.in.flight.requests.per.connection", "1")
                    .create()
                    .expect("Kafka producer");
                self.producer = Some(producer);
            }
        }
    }

    /// The `event_bus:` line of stepsync.yaml.
    fn config(&self) -> String {
        let kind = match self.kind {
            Kind::Nats => "nats",
            Kind::Kafka => "kafka",
        };
        format!(
            "event_bus: {{kind: {kind}, endpoint: \"{}\"}}\n",
            self.endpoint
        )
    }

    /// A topic (Kafka, `partitions` of them) or a subject with its stream (NATS) for this
    /// test, made now so what is published before stepsync first connects is kept.
    fn topic(&self, name: &str, partitions: i32) -> String {
        match self.kind {
            Kind::Nats => {
                let subject = format!("ss.{}.{name}", self.tag.replace('.', "_"));
                let stream = format!("SS_{}_{name}", self.tag).replace(['.', '-'], "_");
                let js = self.nats.as_ref().expect("connected");
                self.rt
                    .block_on(js.create_stream(async_nats::jetstream::stream::Config {
                        name: stream.clone(),
                        subjects: vec![subject.clone()],
                        ..Default::default()
                    }))
                    .expect("create the NATS stream");
                self.streams.lock().unwrap().push(stream);
                subject
            }
            Kind::Kafka => {
                let topic = format!("{}-{name}", self.tag);
                self.rt
                    .block_on(create_kafka_topic(&self.endpoint, &topic, partitions));
                topic
            }
        }
    }

    /// Publishes `(key, payload)` messages in order, waiting until the broker has them all.
    fn publish(&self, topic: &str, msgs: &[(String, Vec<u8>)]) {
        match self.kind {
            Kind::Nats => {
                let js = self.nats.as_ref().expect("connected");
                self.rt.block_on(async {
                    // One at a time, each acknowledged before the next: a message sent again
                    // must not land after the ones behind it (the tests check the order).
                    for (_, p) in msgs {
                        let deadline = Instant::now() + Duration::from_secs(10);
                        loop {
                            let r = js
                                .publish(topic.to_owned(), p.clone().into())
                                .await
                                .expect("publish");
                            match r.await {
                                Ok(_) => break,
                                // A server that has just started (the broker-down test) may
                                // not yet route the stream's subject though the stream
                                // exists: the publish finds no responder.
                                Err(e)
                                    if e.kind()
                                        == async_nats::jetstream::context::PublishErrorKind::StreamNotFound
                                        && Instant::now() < deadline =>
                                {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => panic!("JetStream stored the message: {e:?}"),
                            }
                        }
                    }
                });
            }
            Kind::Kafka => {
                use rdkafka::producer::FutureRecord;
                let p = self.producer.as_ref().expect("producer");
                self.rt.block_on(async {
                    let sends = msgs.iter().map(|(k, v)| {
                        p.send(
                            FutureRecord::to(topic).key(k).payload(v),
                            Duration::from_secs(30),
                        )
                    });
                    for r in futures_util::future::join_all(sends).await {
                        r.map_err(|(e, _)| e).expect("Kafka delivery");
                    }
                });
            }
        }
    }

    /// Publishes `msgs` in small chunks, pausing between them: a stream that goes on while
    /// the test stops the daemon.
    fn publish_slowly(&self, topic: &str, msgs: &[(String, Vec<u8>)]) {
        for chunk in msgs.chunks(20) {
            self.publish(topic, chunk);
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    /// Makes the next consumer of `step` (service `group`) get every message of `topic`
    /// again, as after a lost acknowledgement: NATS deletes the durable consumer (it is
    /// made again delivering the whole stream); Kafka commits offset 0 for the group.
    fn redeliver(&self, group: &str, step: &str, topic: &str) {
        match self.kind {
            Kind::Nats => {
                let js = self.nats.as_ref().expect("connected");
                let durable = format!("{group}-{step}");
                self.rt.block_on(async {
                    let name = js.stream_by_subject(topic).await.expect("the stream");
                    let stream = js.get_stream(&name).await.expect("the stream");
                    stream
                        .delete_consumer(&durable)
                        .await
                        .expect("delete the durable consumer");
                });
            }
            Kind::Kafka => {
                use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
                let c: BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &self.endpoint)
                    .set("group.id", group)
                    .set("enable.auto.commit", "false")
                    .create()
                    .expect("consumer");
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(0))
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match c.commit(&tpl, CommitMode::Sync) {
                        Ok(()) => break,
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("commit offset 0 for {group}: {e}; again");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err(e) => panic!("commit offset 0 for {group}: {e}"),
                    }
                }
            }
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(js) = &self.nats {
            for s in self.streams.lock().unwrap().drain(..) {
                let _ = self.rt.block_on(js.delete_stream(&s));
            }
        }
    }
}

async fn create_kafka_topic(endpoint: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", endpoint)
        .create()
        .expect("Kafka admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in res {
        if let Err((t, e)) = r {
            assert_eq!(
                e,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "create topic {t}"
            );
        }
    }
    let md: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", endpoint)
        .create()
        .expect("metadata client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = md
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0);
        if n == partitions as usize {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} shows {n} partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `addr` accepts TCP connections within `timeout`.
fn wait_port(addr: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A broker process the test started, with its throw-away storage; killed on drop.
struct Broker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// A nats-server with JetStream on `endpoint`.
    fn nats(endpoint: &str) -> Broker {
        let (host, port) = endpoint.rsplit_once(':').expect("HOST:PORT");
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let log = File::create(dir.path().join("nats.log")).expect("log");
        let child = Command::new(bin)
            .args(["-a", host, "-p", port, "-js", "-sd"])
            .arg(dir.path().join("js"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        Broker::wait(child, dir, endpoint, "nats.log")
    }

    /// tansu on `endpoint`, its storage in memory.
    fn tansu(endpoint: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("tcp://{endpoint}");
        let log = File::create(dir.path().join("tansu.log")).expect("log");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "stepsync",
            ])
            // tansu reads a .env in its working directory: the empty temp dir has none
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        Broker::wait(child, dir, endpoint, "tansu.log")
    }

    fn wait(mut child: Child, dir: tempfile::TempDir, endpoint: &str, log: &str) -> Broker {
        let until = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(endpoint).is_err() {
            let gone = child.try_wait().expect("try_wait");
            if gone.is_some() || Instant::now() > until {
                let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
                let _ = child.kill();
                panic!("the broker did not come up on {endpoint} ({gone:?}):\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, _dir: dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `bin` is a tansu with a storage engine (the default build has none: it accepts
/// records and returns nothing).
fn has_storage(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|h| {
            h.lines()
                .find(|l| l.starts_with("Storage engines:"))
                .map(|l| l.contains("dynostore"))
        })
        .unwrap_or(false)
}

/// The tansu to run: `STEPSYNC_TANSU`, `TANSU_BIN`, the PATH, then where
/// `ensure_kafka_broker` installs it (`~/.cache/stepsync/tansu-0.6.0`).
fn tansu_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let mut tried = Vec::new();
        let mut candidates: Vec<PathBuf> = ["STEPSYNC_TANSU", "TANSU_BIN"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .collect();
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("tansu")));
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        if let Some(c) = cache {
            candidates.push(c.join("stepsync/tansu-0.6.0/bin/tansu"));
        }
        for c in candidates {
            if c.is_file() {
                if has_storage(&c) {
                    return Ok(c);
                }
                tried.push(c.display().to_string());
            }
        }
        Err(format!(
            "no tansu with a storage engine (tried: {}); set STEPSYNC_TANSU or run \
             scripts/test.sh (ensure_kafka_broker)",
            tried.join(", ")
        ))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

// ---- the daemon --------------------------------------------------------------------------

/// `stepsync run` on a service, its log in the service directory; killed on drop.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(svc: &Service) -> Daemon {
        Daemon::command(svc, "run")
    }

    /// `stepsync COMMAND` (`run` or `serve`), its output into a log file.
    fn command(svc: &Service, command: &str) -> Daemon {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let log = svc.path().join(format!("daemon-{n}.log"));
        let f = File::create(&log).expect("log file");
        let child = svc
            .command(&[command])
            .env("STEPSYNC_LOG", "info")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start the daemon");
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) unless the daemon is still running.
    #[track_caller]
    fn assert_running(&mut self) {
        let st = self.child.as_mut().unwrap().try_wait().expect("try_wait");
        assert!(st.is_none(), "the daemon exited ({st:?}):\n{}", self.log());
    }

    /// SIGTERM; the daemon must exit 0 soon.
    #[track_caller]
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                assert!(
                    st.success(),
                    "SIGTERM: the daemon exited {st}:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- daemon log {}:\n{}", self.log.display(), self.log());
            }
        }
    }
}

// ---- helpers -----------------------------------------------------------------------------

/// Polls `cond` until it holds or `timeout` passes; panics with `what` (and `detail()`).
#[track_caller]
fn until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_json(svc: &Service) -> Value {
    let out = svc.ok(&["status", "-o", "json"]);
    serde_json::from_str(&out.stdout).expect("status -o json prints JSON")
}

/// The `event_steps` entry of `step` in `status -o json`.
fn step_status(svc: &Service, step: &str) -> Option<Value> {
    let name = format!("event/{step}");
    status_json(svc)["event_steps"]
        .as_array()
        .expect("event_steps is an array")
        .iter()
        .find(|s| s["name"] == name.as_str())
        .cloned()
}

/// How many messages the step has taken (applied or dead-lettered), 0 before its first.
fn runs(svc: &Service, step: &str) -> i64 {
    step_status(svc, step).map_or(0, |s| s["runs"].as_i64().expect("runs"))
}

/// Every object of `model`: key -> `get -o json` element.
fn objects(svc: &Service, model: &str) -> std::collections::BTreeMap<String, Value> {
    let out = svc.ok(&["get", model, "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|o| (o["key"].as_str().unwrap().to_owned(), o.clone()))
        .collect()
}

fn msg(key: &str, v: Value) -> (String, Vec<u8>) {
    (key.to_owned(), v.to_string().into_bytes())
}

/// A service named `name` on `bus` with the given schema and stepdefs.
fn service(name: &str, bus: &Bus, schema: &str, stepdefs: &[(&str, String)]) -> Service {
    let svc = Service::new(schema);
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: {name}\nbackoff: {{initial: 1s, max: 2s}}\n{}",
            bus.config()
        ),
    );
    for (file, text) in stepdefs {
        svc.file(&format!("stepdefs/{file}.yaml"), text);
    }
    svc.ok(&["validate"]);
    svc
}

// ---- 1. actions, fields, feedback --------------------------------------------------------

const DEVICES: &str = "models:
  Device:
    fields:
      name: {type: string, required: true}
      vendor: string
      oper_status: {type: string, feedback: true}
";

fn actions_fields_and_feedback(kind: Kind) {
    let bus = Bus::up(kind, "actions");
    let devices = bus.topic("devices", 1);
    let states = bus.topic("states", 1);
    let svc = service(
        &format!("{}-svc", bus.tag),
        &bus,
        DEVICES,
        &[
            (
                "devices",
                format!(
                    "kind: EventStep
name: devices
topic: {devices}
decode: json
model: Device
action: \"{{{{ 'delete' if event.status == 'removed' else ('ignore' if event.status == 'noise' else 'upsert') }}}}\"
key: \"{{{{ event.serial }}}}\"
fields: {{vendor: \"{{{{ event.vendor }}}}\"}}
feedback: {{oper_status: \"{{{{ event.status }}}}\"}}
"
                ),
            ),
            (
                "states",
                format!(
                    "kind: EventStep
name: states
topic: {states}
decode: yaml
model: Device
key: \"{{{{ event.serial }}}}\"
feedback: {{oper_status: \"{{{{ event.status }}}}\"}}
"
                ),
            ),
        ],
    );
    let mut d = Daemon::start(&svc);
    bus.publish(
        &devices,
        &[
            msg(
                "a",
                json!({"serial": "a", "vendor": "acme", "status": "up"}),
            ),
            msg(
                "b",
                json!({"serial": "b", "vendor": "acme", "status": "up"}),
            ),
            msg(
                "c",
                json!({"serial": "c", "vendor": "initech", "status": "up"}),
            ),
            msg(
                "b",
                json!({"serial": "b", "vendor": "acme", "status": "removed"}),
            ),
            msg(
                "c",
                json!({"serial": "c", "vendor": "changed", "status": "noise"}),
            ),
        ],
    );
    let log = || d_log(&svc);
    until(
        "5 messages",
        Duration::from_secs(30),
        || runs(&svc, "devices") == 5,
        log,
    );
    let objs = objects(&svc, "Device");
    assert_eq!(
        objs.keys().collect::<Vec<_>>(),
        ["a", "c"],
        "b deleted: {objs:#?}"
    );
    let a = &objs["a"];
    assert_eq!(a["fields"]["vendor"], "acme");
    assert_eq!(a["fields"]["oper_status"], "up");
    assert_eq!(a["status"]["generation"], 1);
    // `ignore` left c as it was
    assert_eq!(objs["c"]["fields"]["vendor"], "initech");
    assert_eq!(objs["c"]["fields"]["oper_status"], "up");
    let yaml = svc.ok(&["get", "Device", "a", "-o", "yaml"]).stdout;
    assert!(yaml.contains("event/devices"), "owned by the step: {yaml}");

    // the same fields, another feedback value: feedback only, no new generation
    bus.publish(
        &devices,
        &[msg(
            "a",
            json!({"serial": "a", "vendor": "acme", "status": "down"}),
        )],
    );
    until(
        "message 6",
        Duration::from_secs(30),
        || runs(&svc, "devices") == 6,
        log,
    );
    let a = svc.object("Device", "a");
    assert_eq!(a["fields"]["oper_status"], "down");
    assert_eq!(
        a["status"]["generation"], 1,
        "feedback bumped the generation: {a:#}"
    );

    // a declarative change is a new generation
    bus.publish(
        &devices,
        &[msg(
            "a",
            json!({"serial": "a", "vendor": "zeta", "status": "down"}),
        )],
    );
    until(
        "message 7",
        Duration::from_secs(30),
        || runs(&svc, "devices") == 7,
        log,
    );
    let a = svc.object("Device", "a");
    assert_eq!(a["fields"]["vendor"], "zeta");
    assert_eq!(a["status"]["generation"], 2, "{a:#}");

    // a feedback-only step (YAML payloads) writes feedback of existing objects, makes none
    bus.publish(
        &states,
        &[
            ("a".into(), b"serial: a\nstatus: degraded\n".to_vec()),
            ("ghost".into(), b"{serial: ghost, status: up}".to_vec()),
        ],
    );
    until(
        "2 state messages",
        Duration::from_secs(30),
        || runs(&svc, "states") == 2,
        log,
    );
    let objs = objects(&svc, "Device");
    assert_eq!(objs.keys().collect::<Vec<_>>(), ["a", "c"], "{objs:#?}");
    assert_eq!(objs["a"]["fields"]["oper_status"], "degraded");
    assert_eq!(objs["a"]["fields"]["vendor"], "zeta");
    assert_eq!(
        objs["a"]["status"]["generation"], 2,
        "feedback bumped the generation"
    );
    let st = step_status(&svc, "devices").unwrap();
    assert_eq!(st["failures"], 0, "{st}");
    assert_eq!(status_json(&svc)["dead_letters"]["total"], 0);
    d.assert_running();
    d.stop();
}

/// The newest daemon log of `svc`, for failure messages.
fn d_log(svc: &Service) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(svc.path())
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    logs.retain(|p| p.to_string_lossy().contains("daemon-"));
    logs.sort();
    let text = logs
        .last()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    let status = svc.test().args(["status"]).status(0).run().stdout;
    format!(
        "status:\n{status}\ndaemon log (last lines, newest first):\n{}",
        tail.join("\n")
    )
}

#[test]
fn nats_actions_upsert_delete_ignore_fields_and_feedback() {
    actions_fields_and_feedback(Kind::Nats);
}

#[test]
fn kafka_actions_upsert_delete_ignore_fields_and_feedback() {
    actions_fields_and_feedback(Kind::Kafka);
}

// ---- 2. exactly once across restarts -----------------------------------------------------

const COUNTERS: &str = "models:
  Counter:
    fields:
      name: {type: string, required: true}
      seq: int
";

/// Keys the messages spread over: message `i` sets `seq: i` on `k{i % KEYS}`, so each key's
/// generation counts the messages applied to it and its `seq` is the last one's.
const KEYS: usize = 100;

fn counter_step(topic: &str) -> String {
    format!(
        "kind: EventStep
name: count
topic: {topic}
model: Counter
key: \"{{{{ event.key }}}}\"
fields: {{seq: \"{{{{ event.seq }}}}\"}}
"
    )
}

fn counter_msgs(range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| {
            let k = format!("k{}", i % KEYS);
            msg(&k, json!({"key": k, "seq": i}))
        })
        .collect()
}

/// Every message in `0..n` applied exactly once: `runs == n`, and each key's generation is
/// the number of messages that set it, its `seq` the last of them.
#[track_caller]
fn assert_applied_once(svc: &Service, n: usize) {
    assert_eq!(runs(svc, "count"), n as i64, "messages taken");
    let objs = objects(svc, "Counter");
    assert_eq!(objs.len(), KEYS.min(n));
    for (k, o) in &objs {
        let j: usize = k[1..].parse().unwrap();
        let count = (0..n).filter(|i| i % KEYS == j).count();
        let last = (0..n).filter(|i| i % KEYS == j).max().unwrap();
        assert_eq!(o["fields"]["seq"], last, "{k}: {o:#}");
        assert_eq!(
            o["status"]["generation"], count,
            "{k}: a message applied twice or lost: {o:#}"
        );
    }
}

/// Publishes `first..first+1000` slowly; stops the daemon (`stop`) once it has taken some
/// of them, while the rest are still being published; publishes 500 more; restarts it.
fn interrupt(
    bus: &Bus,
    svc: &Service,
    topic: &str,
    first: usize,
    stop: impl FnOnce(Daemon),
) -> Daemon {
    let d = Daemon::start(svc);
    let batch = counter_msgs(first..first + 1000);
    let mut d = Some(d);
    let mut stop = Some(stop);
    std::thread::scope(|s| {
        let publisher = s.spawn(|| bus.publish_slowly(topic, &batch));
        let base = first as i64;
        until(
            "the daemon to take some messages",
            Duration::from_secs(60),
            || runs(svc, "count") > base || publisher.is_finished(),
            || d_log(svc),
        );
        let taken = runs(svc, "count") - base;
        let mid = !publisher.is_finished();
        (stop.take().unwrap())(d.take().unwrap());
        eprintln!("stopped after {taken} of 1000 messages (mid-stream: {mid})");
        publisher.join().expect("publisher");
    });
    let stopped_at = runs(svc, "count");
    assert!(
        stopped_at <= (first + 1000) as i64,
        "more runs than messages"
    );
    bus.publish(topic, &counter_msgs(first + 1000..first + 1500));
    let d = Daemon::start(svc);
    let total = (first + 1500) as i64;
    until(
        &format!("{total} messages"),
        Duration::from_secs(60),
        || runs(svc, "count") >= total,
        || d_log(svc),
    );
    d
}

fn exactly_once_across_restarts(kind: Kind) {
    let bus = Bus::up(kind, "once");
    let topic = bus.topic("count", 3);
    let svc = service(
        &format!("{}-svc", bus.tag),
        &bus,
        COUNTERS,
        &[("count", counter_step(&topic))],
    );
    let d = interrupt(&bus, &svc, &topic, 0, Daemon::stop);
    // settled: no redelivery applied meanwhile
    std::thread::sleep(Duration::from_millis(300));
    assert_applied_once(&svc, 1500);
    d.stop();
    assert_applied_once(&svc, 1500);

    let d = interrupt(&bus, &svc, &topic, 1500, Daemon::kill);
    std::thread::sleep(Duration::from_millis(300));
    assert_applied_once(&svc, 3000);
    d.stop();
    let st = step_status(&svc, "count").unwrap();
    assert_eq!(st["failures"], 0, "{st}");
    assert_eq!(status_json(&svc)["dead_letters"]["total"], 0);
}

#[test]
fn nats_every_message_applied_exactly_once_across_sigterm_and_kill_9() {
    exactly_once_across_restarts(Kind::Nats);
}

#[test]
fn kafka_every_message_applied_exactly_once_across_sigterm_and_kill_9() {
    exactly_once_across_restarts(Kind::Kafka);
}

// ---- 3. a poisoned message ---------------------------------------------------------------

fn poisoned_message(kind: Kind) {
    let bus = Bus::up(kind, "poison");
    let topic = bus.topic("count", 1);
    let svc = service(
        &format!("{}-svc", bus.tag),
        &bus,
        COUNTERS,
        &[(
            "count",
            "kind: EventStep\nname: count\ntopic: TOPIC\nmodel: Counter\n\
             key: \"{{ event.key }}\"\nfields: {seq: \"{{ event.seq }}\"}\n"
                .replace("TOPIC", &topic),
        )],
    );
    let mut msgs: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let k = format!("m{i:04}");
            msg(&k, json!({"key": k, "seq": i}))
        })
        .collect();
    msgs[500] = (
        "m0500".into(),
        b"{\"key\": \"m0500\", \"seq\": oops".to_vec(),
    );
    let d = Daemon::start(&svc);
    bus.publish(&topic, &msgs);
    until(
        "1000 messages",
        Duration::from_secs(60),
        || runs(&svc, "count") == 1000,
        || d_log(&svc),
    );
    let objs = objects(&svc, "Counter");
    assert_eq!(objs.len(), 999);
    assert!(!objs.contains_key("m0500"));
    assert!(objs.contains_key("m0499") && objs.contains_key("m0501") && objs.contains_key("m0999"));
    let st = status_json(&svc);
    let dead = &st["dead_letters"];
    assert_eq!(dead["total"], 1, "{dead:#}");
    let letter = &dead["newest"][0];
    assert_eq!(letter["step"], "event/count", "{letter:#}");
    assert_eq!(
        letter["message"], "{\"key\": \"m0500\", \"seq\": oops",
        "{letter:#}"
    );
    assert!(
        letter["error"].as_str().unwrap().contains("JSON"),
        "the error says why: {letter:#}"
    );
    // the 501st message: NATS stream sequence 501, Kafka offset 500
    let want = if kind == Kind::Nats { 501 } else { 500 };
    assert_eq!(letter["position"], want, "{letter:#}");
    let step = st["event_steps"][0].clone();
    assert_eq!(
        step["failures"], 0,
        "a dead letter is no failure of the step: {step:#}"
    );
    let text = svc.ok(&["status"]).stdout;
    assert!(text.contains("Event steps:"), "{text}");
    assert!(text.contains("event/count: 1000 messages"), "{text}");
    assert!(text.contains("Dead letters: 1"), "{text}");
    assert!(
        text.contains("message: {\"key\": \"m0500\", \"seq\": oops"),
        "{text}"
    );
    assert!(text.contains("not JSON"), "{text}");
    d.stop();
}

#[test]
fn nats_a_poisoned_message_among_1000_is_dead_lettered_and_the_stream_goes_on() {
    poisoned_message(Kind::Nats);
}

#[test]
fn kafka_a_poisoned_message_among_1000_is_dead_lettered_and_the_stream_goes_on() {
    poisoned_message(Kind::Kafka);
}

// ---- 4. a broker that is down ------------------------------------------------------------

fn broker_down(kind: Kind) {
    let server = TestServer::start();
    let mut bus = Bus::down(kind, "down");
    let svc = Service::new(
        "models:
  Site:
    fields: {name: {type: string, required: true}, login_base: string}
  Counter:
    fields: {name: {type: string, required: true}, seq: int}
",
    );
    // the topic's name is known before the broker is there
    let topic = match kind {
        Kind::Nats => format!("ss.{}.count", bus.tag.replace('.', "_")),
        Kind::Kafka => format!("{}-count", bus.tag),
    };
    svc.file(
        "stepsync.yaml",
        &format!(
            "name: {}-svc\nvars: {{base: \"{}\"}}\n{}",
            bus.tag,
            server.url,
            bus.config()
        ),
    );
    svc.file(
        "stepdefs/site.yaml",
        &crate::common::fixtures::rest_stepdef("Site", "sites", ""),
    );
    svc.file("stepdefs/count.yaml", &counter_step(&topic));
    svc.ok(&["validate"]);
    let mut d = Daemon::start(&svc);
    svc.file("sites.yaml", "Site:\n  - {name: s1}\n");
    svc.ok(&["apply", "-f", "sites.yaml"]);
    // other models still sync
    assert!(
        server
            .wait_for("PUT /sites/s1", Duration::from_secs(20))
            .is_some(),
        "the actuator did not run while the bus is down\n{}",
        d_log(&svc)
    );
    until(
        "Site/s1 ok",
        Duration::from_secs(20),
        || svc.object("Site", "s1")["status"]["status"] == "ok",
        || d_log(&svc),
    );
    // the step's failure shows, and it is retried
    until(
        "the step's failures to show in status",
        Duration::from_secs(30),
        || {
            step_status(&svc, "count")
                .is_some_and(|s| s["failures"].as_i64() >= Some(2) && s["message"] != "")
        },
        || d_log(&svc),
    );
    let st = step_status(&svc, "count").unwrap();
    let message = st["message"].as_str().unwrap();
    // NATS: "cannot connect to NATS at HOST:PORT"; Kafka: librdkafka's transport failure
    assert!(
        message.contains(&bus.endpoint) || message.contains("BrokerTransportFailure"),
        "the message names the problem: {st:#}"
    );
    let text = svc.ok(&["status"]).stdout;
    assert!(text.contains("event/count: 0 messages"), "{text}");
    assert!(text.contains("failing"), "{text}");
    d.assert_running();

    // the broker comes: the messages are taken
    bus.start();
    match kind {
        // the step makes the stream when none captures its subject; publish once it has
        Kind::Nats => {
            let js = bus.nats.clone().unwrap();
            let t = topic.clone();
            until(
                "the step's stream",
                Duration::from_secs(30),
                || bus.rt.block_on(js.stream_by_subject(t.clone())).is_ok(),
                || d_log(&svc),
            );
        }
        Kind::Kafka => {
            bus.topic("count", 1);
        }
    }
    bus.publish(&topic, &counter_msgs(0..200));
    until(
        "200 messages once the broker is up",
        Duration::from_secs(60),
        || runs(&svc, "count") == 200,
        || d_log(&svc),
    );
    assert_applied_once(&svc, 200);
    let st = step_status(&svc, "count").unwrap();
    assert_eq!(st["failures"], 0, "a success clears the failures: {st:#}");
    d.assert_running();
    d.stop();
}

#[test]
fn nats_a_broker_that_is_down_is_retried_and_never_stops_the_daemon() {
    broker_down(Kind::Nats);
}

#[test]
fn kafka_a_broker_that_is_down_is_retried_and_never_stops_the_daemon() {
    broker_down(Kind::Kafka);
}

// ---- 5. redelivery -----------------------------------------------------------------------

fn redelivery_is_skipped(kind: Kind) {
    let bus = Bus::up(kind, "redeliver");
    let topic = bus.topic("count", 1);
    let name = format!("{}-svc", bus.tag);
    let svc = service(&name, &bus, COUNTERS, &[("count", counter_step(&topic))]);
    let d = Daemon::start(&svc);
    bus.publish(&topic, &counter_msgs(0..300));
    until(
        "300 messages",
        Duration::from_secs(60),
        || runs(&svc, "count") == 300,
        || d_log(&svc),
    );
    d.stop();
    assert_applied_once(&svc, 300);
    // an operator changes an object the messages wrote: a redelivery must not undo it
    svc.file("o.yaml", "Counter:\n  - {name: k7, seq: -1}\n");
    svc.ok(&["apply", "-f", "o.yaml"]);
    let k7 = svc.object("Counter", "k7")["fields"].clone();

    bus.redeliver(&name, "count", &topic);
    // one more after them: once it is applied, the redelivered ones have been seen
    bus.publish(&topic, &[msg("k0", json!({"key": "k0", "seq": 300}))]);
    let d = Daemon::start(&svc);
    until(
        "the message after the redelivered ones",
        Duration::from_secs(60),
        || svc.object("Counter", "k0")["fields"]["seq"] == 300,
        || d_log(&svc),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        runs(&svc, "count"),
        301,
        "redelivered messages were applied again"
    );
    assert_eq!(
        svc.object("Counter", "k7")["fields"],
        k7,
        "a redelivery undid a change"
    );
    let objs = objects(&svc, "Counter");
    for (k, o) in &objs {
        // 3 messages each; k0 one more message, k7 the operator's change
        let want = if k == "k0" || k == "k7" { 4 } else { 3 };
        assert_eq!(o["status"]["generation"], want, "{k}: {o:#}");
    }
    d.stop();
}

#[test]
fn nats_redelivered_messages_are_skipped() {
    redelivery_is_skipped(Kind::Nats);
}

#[test]
fn kafka_redelivered_messages_are_skipped() {
    redelivery_is_skipped(Kind::Kafka);
}

// ---- 6. consumer lag in /metrics ---------------------------------------------------------

/// One `GET /metrics` from `serve` at `addr` (no tokens: loopback only, open).
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of `stepsync_event_consumer_lag{step="event/count"}` in a scrape.
fn lag(scrape: &str) -> Option<f64> {
    let name = "stepsync_event_consumer_lag{step=\"event/count\"} ";
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// Messages waiting when `serve` starts: the lag shows them being worked off and is 0 once
/// every one is applied. NATS reports it per batch (at most 2,000 messages), Kafka each
/// second from librdkafka's statistics: enough messages for Kafka to take a few seconds.
fn consumer_lag(kind: Kind) {
    let n = match kind {
        Kind::Nats => 10_000,
        Kind::Kafka => 60_000,
    };
    let bus = Bus::up(kind, "lag");
    let topic = bus.topic("count", 1);
    let svc = service(
        &format!("{}-svc", bus.tag),
        &bus,
        COUNTERS,
        &[("count", counter_step(&topic))],
    );
    let config = std::fs::read_to_string(svc.path().join("stepsync.yaml")).unwrap();
    svc.file(
        "stepsync.yaml",
        &format!("{config}serve: {{listen: 127.0.0.1:0}}\n"),
    );
    bus.publish(&topic, &counter_msgs(0..n));
    let d = Daemon::command(&svc, "serve");
    let mut addr = String::new();
    until(
        "serve to listen",
        Duration::from_secs(30),
        || {
            addr = d
                .log()
                .lines()
                .find_map(|l| l.trim().strip_prefix("serve: listening on http://"))
                .unwrap_or_default()
                .to_owned();
            !addr.is_empty()
        },
        || d.log(),
    );
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let last = lag(&scrape(&addr));
        seen.extend(last);
        if last == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the lag did not come to 0 in 120 s; seen: {seen:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.iter().any(|&l| l > 0.0 && l < n as f64),
        "the lag never showed messages still to apply: {seen:?}"
    );
    // 0 is reported after the last batch's commit: every message is applied by then.
    assert_applied_once(&svc, n);
    d.stop();
}

#[test]
fn nats_the_consumer_lag_is_in_metrics_and_comes_to_0() {
    consumer_lag(Kind::Nats);
}

#[test]
fn kafka_the_consumer_lag_is_in_metrics_and_comes_to_0() {
    consumer_lag(Kind::Kafka);
}
