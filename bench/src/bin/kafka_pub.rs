//! B8's Kafka publisher: `kafka_pub --brokers 127.0.0.1:9092 --topic T --count N
//! [--partitions P]`. Makes the topic with P partitions (1 by default) when it does not
//! exist, then produces N small JSON messages `{"name": "ev-000001", "value": "v1"}` keyed by
//! their name, a window of them in flight at a time, each acknowledged by the broker
//! (`acks=all`). Prints the Unix time in ns of the first send and of the last delivery, then
//! `TOPIC/PARTITION:OFFSET` of the last message delivered to each partition, which is what
//! stepsync records as the step's position for that partition.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let (mut brokers, mut topic) = ("127.0.0.1:9092".to_owned(), String::new());
    let (mut count, mut partitions) = (0usize, 1i32);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--brokers" => brokers = v,
            "--topic" => topic = v,
            "--count" => count = v.parse().unwrap_or_else(|_| usage("bad --count")),
            "--partitions" => {
                partitions = v.parse().unwrap_or_else(|_| usage("bad --partitions"))
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if topic.is_empty() {
        usage("--topic is required");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("Kafka admin client");
        let made = admin
            .create_topics(
                &[NewTopic::new(&topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create the topic");
        for r in made {
            if let Err((t, e)) = r
                && e != RDKafkaErrorCode::TopicAlreadyExists
            {
                panic!("create topic {t}: {e}");
            }
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            .create()
            .expect("Kafka producer");
        const WINDOW: usize = 1000;
        let t0 = now_ns();
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        let mut pending = Vec::with_capacity(WINDOW);
        for i in 0..count {
            let key = format!("ev-{i:06}");
            let body = format!("{{\"name\": \"{key}\", \"value\": \"v{i}\"}}");
            // send_result queues the message now; its future resolves on delivery, so a
            // window of them is in flight at once.
            let fut = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&body))
                .map_err(|(e, _)| e)
                .expect("queue the message");
            pending.push(fut);
            if pending.len() == WINDOW || i + 1 == count {
                for f in pending.drain(..) {
                    let d = f
                        .await
                        .expect("delivery report")
                        .map_err(|(e, _)| e)
                        .expect("delivered");
                    let e = last.entry(d.partition).or_insert(d.offset);
                    *e = (*e).max(d.offset);
                }
            }
        }
        let t1 = now_ns();
        let parts: Vec<String> = last
            .iter()
            .map(|(p, o)| format!("{topic}/{p}:{o}"))
            .collect();
        println!("{t0} {t1} {}", parts.join(" "));
    });
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "kafka_pub: {msg}\nusage: kafka_pub [--brokers HOST:PORT] --topic T --count N [--partitions P]"
    );
    std::process::exit(2);
}
