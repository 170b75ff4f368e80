//! B8's publisher: `nats_pub --url 127.0.0.1:4222 --subject S --count N`. Makes a JetStream
//! stream for the subject when none captures it (named after it, as stepsync does), then
//! publishes N small JSON messages `{"name": "ev-000001", "value": "v1"}` on it, a window of
//! them in flight at a time, each acknowledged by the stream. Prints the Unix time in ns of
//! the first publish and of the last acknowledgement, and the stream's last sequence.
//! `--delete 1` instead deletes the stream capturing the subject.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let (mut url, mut subject, mut count) = ("127.0.0.1:4222".to_owned(), String::new(), 0usize);
    let mut delete = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--url" => url = v,
            "--subject" => subject = v,
            "--delete" => delete = v == "1",
            "--count" => count = v.parse().unwrap_or_else(|_| usage("bad --count")),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if subject.is_empty() {
        usage("--subject is required");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let client = async_nats::connect(&url).await.expect("connect to NATS");
        let js = jetstream::new(client);
        if delete {
            if let Ok(name) = js.stream_by_subject(&subject).await {
                js.delete_stream(&name).await.expect("delete the stream");
            }
            return;
        }
        if js.stream_by_subject(&subject).await.is_err() {
            let name: String = subject
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            js.get_or_create_stream(jetstream::stream::Config {
                name,
                subjects: vec![subject.clone()],
                ..Default::default()
            })
            .await
            .expect("create the stream");
        }
        const WINDOW: usize = 1000;
        let t0 = now_ns();
        let mut pending = Vec::with_capacity(WINDOW);
        let mut last = 0u64;
        for i in 0..count {
            let body = format!("{{\"name\": \"ev-{i:06}\", \"value\": \"v{i}\"}}");
            pending.push(
                js.publish(subject.clone(), body.into())
                    .await
                    .expect("publish"),
            );
            if pending.len() == WINDOW || i + 1 == count {
                for p in pending.drain(..) {
                    last = last.max(p.await.expect("acknowledged").sequence);
                }
            }
        }
        let t1 = now_ns();
        println!("{t0} {t1} {last}");
    });
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "nats_pub: {msg}\nusage: nats_pub [--url HOST:PORT] --subject S (--count N | --delete 1)"
    );
    std::process::exit(2);
}
