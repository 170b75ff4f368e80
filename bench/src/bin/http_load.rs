//! B10: concurrent readers of `stepsync serve`. Each of `--clients` clients has its own
//! connection and loops over the `--path`s in turn; each path is a first page that the client
//! pages through as a person or a tool would, following its `next` (the API's JSON field,
//! the dashboard's "next page" link) and starting again from the first page after the last.
//!
//! http_load --base http://127.0.0.1:PORT --token T --clients 20 --path NAME=PATH ...
//!           --stop-file F [--max-s 600] [--samples DIR]
//!
//! Runs until the stop file exists (or `--max-s` passes), then prints one line per path:
//! `NAME requests=N p50_ms=.. p99_ms=.. max_ms=.. errors=E` (nearest-rank percentiles over
//! every request of every client). Any answer but 200 counts as an error and is printed to
//! stderr once per path. `--samples DIR` writes each path's latencies (ms), one a line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    base: String,
    token: Option<String>,
    clients: usize,
    paths: Vec<(String, String)>,
    stop_file: PathBuf,
    max: Duration,
    samples: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        base: String::new(),
        token: None,
        clients: 20,
        paths: Vec::new(),
        stop_file: PathBuf::new(),
        max: Duration::from_secs(600),
        samples: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--base" => a.base = val()?.trim_end_matches('/').to_owned(),
            "--token" => a.token = Some(val()?),
            "--clients" => a.clients = val()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--path" => {
                let v = val()?;
                let (name, path) = v.split_once('=').ok_or("--path is NAME=PATH")?;
                a.paths.push((name.to_owned(), path.to_owned()));
            }
            "--stop-file" => a.stop_file = val()?.into(),
            "--max-s" => {
                a.max = Duration::from_secs(val()?.parse().map_err(|e| format!("--max-s: {e}"))?)
            }
            "--samples" => a.samples = Some(val()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.base.is_empty() || a.paths.is_empty() || a.stop_file.as_os_str().is_empty() {
        return Err("--base, --path and --stop-file are required".into());
    }
    Ok(a)
}

/// The next page's path in an answer: the API's `"next"` cursor or the dashboard's link.
fn next_page(first: &str, body: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let after = v.get("next")?.as_str()?;
        let sep = if first.contains('?') { '&' } else { '?' };
        // A cursor is MODEL/KEY: both parts as the API's query wants them, escaped.
        return Some(format!("{first}{sep}after={}", escape(after)));
    }
    let end = body.find("\">next page")?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    Some(body[start..end].replace("&amp;", "&"))
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("http_load: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            // One connection a client, kept alive, as a browser tab or a tool would have.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("an HTTP client");
            let mut at: Vec<String> = a.paths.iter().map(|(_, p)| p.clone()).collect();
            let mut lat: Vec<Vec<f64>> = vec![Vec::new(); a.paths.len()];
            let mut errors: Vec<(usize, Option<String>)> = vec![(0, None); a.paths.len()];
            'outer: loop {
                for (i, (_, first)) in a.paths.iter().enumerate() {
                    if a.stop_file.exists() || started.elapsed() > a.max {
                        break 'outer;
                    }
                    let mut req = http.get(format!("{}{}", a.base, at[i]));
                    if let Some(t) = &a.token {
                        req = req.bearer_auth(t);
                    }
                    let t0 = Instant::now();
                    let res = req.send().await;
                    let (status, body) = match res {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            (s, r.text().await.unwrap_or_default())
                        }
                        Err(e) => (0, e.to_string()),
                    };
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    if status != 200 {
                        errors[i].0 += 1;
                        errors[i].1.get_or_insert_with(|| {
                            format!("{} -> {status}: {}", at[i], body.chars().take(200).collect::<String>())
                        });
                        at[i] = first.clone();
                        continue;
                    }
                    lat[i].push(ms);
                    at[i] = next_page(first, &body).unwrap_or_else(|| first.clone());
                }
            }
            (lat, errors)
        }));
    }
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); a.paths.len()];
    let mut errs: HashMap<usize, (usize, Option<String>)> = HashMap::new();
    for t in tasks {
        let (lat, errors) = t.await.expect("a client task");
        for (i, l) in lat.into_iter().enumerate() {
            all[i].extend(l);
        }
        for (i, (n, first)) in errors.into_iter().enumerate() {
            let e = errs.entry(i).or_insert((0, None));
            e.0 += n;
            if e.1.is_none() {
                e.1 = first;
            }
        }
    }
    for (i, (name, _)) in a.paths.iter().enumerate() {
        let l = &mut all[i];
        l.sort_by(f64::total_cmp);
        let (n_err, first_err) = errs.remove(&i).unwrap_or((0, None));
        if let Some(e) = first_err {
            eprintln!("http_load: {name}: {e}");
        }
        if let Some(dir) = &a.samples {
            let text: String = l.iter().map(|v| format!("{v:.3}\n")).collect();
            let _ = std::fs::write(dir.join(format!("{name}.txt")), text);
        }
        println!(
            "{name} requests={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={n_err}",
            l.len(),
            percentile(l, 50.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(0.0)
        );
    }
}
