//! The B1 baseline: a plain reqwest client sending the requests `gen --requests` wrote, with
//! at most `--concurrency` in flight, level by level (every request of level 0 completes
//! before level 1 starts, and so on), which respects the same ordering stepsync must.
//!
//! raw_client --requests FILE [--concurrency 16]
//!
//! Prints `requests=N errors=E ms=T` on stdout; exits 1 if any request failed.

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(serde::Deserialize)]
struct Req {
    level: u8,
    method: String,
    url: String,
    body: String,
}

fn usage(msg: &str) -> ! {
    eprintln!("raw_client: {msg}\nusage: raw_client --requests FILE [--concurrency N]");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut file = None;
    let mut concurrency = 16usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--requests" => file = Some(v),
            "--concurrency" => {
                concurrency = v.parse().unwrap_or_else(|_| usage("bad --concurrency"))
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let file = file.unwrap_or_else(|| usage("--requests is required"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| usage(&format!("{file}: {e}")));
    let mut levels: BTreeMap<u8, Vec<Req>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: Req = serde_json::from_str(line).unwrap_or_else(|e| usage(&format!("{file}: {e}")));
        levels.entry(r.level).or_default().push(r);
    }
    let client = reqwest::Client::builder()
        .user_agent("stepsync-bench-raw/0")
        .build()
        .expect("reqwest client");
    let start = Instant::now();
    let (mut total, mut errors) = (0usize, 0usize);
    for (_, reqs) in levels {
        let mut set: tokio::task::JoinSet<bool> = tokio::task::JoinSet::new();
        for r in reqs {
            while set.len() >= concurrency.max(1) {
                if !set.join_next().await.expect("task").expect("join") {
                    errors += 1;
                }
            }
            let client = client.clone();
            let method = reqwest::Method::from_bytes(r.method.as_bytes()).expect("method");
            total += 1;
            set.spawn(async move {
                match client
                    .request(method, &r.url)
                    .header("content-type", "application/json")
                    .body(r.body)
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        ok && resp.bytes().await.is_ok()
                    }
                    Err(_) => false,
                }
            });
        }
        while let Some(r) = set.join_next().await {
            if !r.expect("join") {
                errors += 1;
            }
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("requests={total} errors={errors} ms={ms:.1}");
    if errors > 0 {
        std::process::exit(1);
    }
}
