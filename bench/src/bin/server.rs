//! The benchmarks' backend: an HTTP server on 127.0.0.1 (a free port unless `--port`) that
//! answers every request with `200 {}` after a fixed delay (`--delay-ms`, default 2), and
//! records when each request arrived.
//!
//! It prints its port on stdout, then serves until killed. Control endpoints, which are not
//! delayed and not recorded:
//!   GET  /_bench/first?path=/sites/a&after=NS  the first arrival (Unix ns) at `path` at or
//!                                               after `after`; 404 when there is none yet
//!   GET  /_bench/stats                         {"requests": N, "max_inflight": M,
//!                                               "held": H, "holding": h}
//!   POST /_bench/hold?path=/sites/a&ms=10000   hold every later request to `path` for `ms`
//!                                               instead of the delay (a hung backend call);
//!                                               `ms=0` removes the hold and answers the
//!                                               requests held at `path` at once
//!   POST /_bench/reset                         forget everything recorded (not the holds)
//!   GET  /_bench/list?total=10000&per_page=1000&page=1
//!                                               a paginated listing for pull steps (B9):
//!                                               {"items": [{"name": "item-00000", "value":
//!                                               "v0"}, ...], "next": "/_bench/list?...&page=2"}
//!                                               (`next` is "" on the last page); not delayed
//!   POST /_bench/list/bump                     a new value for every listed item
//!
//! `--hold PATH=SECONDS` (repeatable) sets a hold from the start, like `/_bench/hold`.
//! `--threads N` picks the runtime's worker threads (default 1: the server stays out of the
//! way of what it measures on a small machine). `held` in the stats counts the requests held
//! so far, `holding` those held right now.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

#[derive(Default)]
struct Recorder {
    /// path -> arrival times (Unix ns), in arrival order.
    arrivals: Mutex<HashMap<String, Vec<u64>>>,
    requests: AtomicU64,
    inflight: AtomicU64,
    max_inflight: AtomicU64,
    held: AtomicU64,
    holding: AtomicU64,
    /// The listing's version: every item's `value` is `v<version>`.
    list_version: AtomicU64,
}

/// Paths whose requests are held (a hung backend call), and how long.
#[derive(Default)]
struct Holds {
    by_path: Mutex<HashMap<String, Duration>>,
    /// Woken when a hold is removed: the requests it holds are answered at once.
    released: tokio::sync::Notify,
}

#[derive(Clone)]
struct App {
    rec: Arc<Recorder>,
    holds: Arc<Holds>,
    delay: Duration,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn backend(State(app): State<App>, uri: Uri) -> Response {
    let t = now_ns();
    let rec = &app.rec;
    rec.requests.fetch_add(1, Ordering::Relaxed);
    let now = rec.inflight.fetch_add(1, Ordering::Relaxed) + 1;
    rec.max_inflight.fetch_max(now, Ordering::Relaxed);
    rec.arrivals
        .lock()
        .unwrap()
        .entry(uri.path().to_owned())
        .or_default()
        .push(t);
    let hold = app.holds.by_path.lock().unwrap().get(uri.path()).copied();
    if let Some(hold) = hold {
        rec.held.fetch_add(1, Ordering::Relaxed);
        rec.holding.fetch_add(1, Ordering::Relaxed);
        let sleep = tokio::time::sleep(hold);
        tokio::pin!(sleep);
        loop {
            let released = app.holds.released.notified();
            tokio::select! {
                _ = &mut sleep => break,
                _ = released => {
                    if !app.holds.by_path.lock().unwrap().contains_key(uri.path()) {
                        break;
                    }
                }
            }
        }
        rec.holding.fetch_sub(1, Ordering::Relaxed);
    } else if !app.delay.is_zero() {
        tokio::time::sleep(app.delay).await;
    }
    rec.inflight.fetch_sub(1, Ordering::Relaxed);
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

#[derive(serde::Deserialize)]
struct FirstQuery {
    path: String,
    #[serde(default)]
    after: u64,
}

async fn first(State(app): State<App>, Query(q): Query<FirstQuery>) -> Response {
    let arrivals = app.rec.arrivals.lock().unwrap();
    match arrivals
        .get(&q.path)
        .and_then(|v| v.iter().find(|&&t| t >= q.after))
    {
        Some(t) => t.to_string().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stats(State(app): State<App>) -> Response {
    let r = &app.rec;
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"requests\":{},\"max_inflight\":{},\"held\":{},\"holding\":{}}}",
            r.requests.load(Ordering::Relaxed),
            r.max_inflight.load(Ordering::Relaxed),
            r.held.load(Ordering::Relaxed),
            r.holding.load(Ordering::Relaxed)
        ),
    )
        .into_response()
}

async fn reset(State(app): State<App>) -> Response {
    let r = &app.rec;
    r.arrivals.lock().unwrap().clear();
    r.requests.store(0, Ordering::Relaxed);
    r.max_inflight.store(0, Ordering::Relaxed);
    r.held.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
struct HoldQuery {
    path: String,
    ms: u64,
}

async fn hold(State(app): State<App>, Query(q): Query<HoldQuery>) -> Response {
    let mut by_path = app.holds.by_path.lock().unwrap();
    if q.ms == 0 {
        by_path.remove(&q.path);
        drop(by_path);
        app.holds.released.notify_waiters();
    } else {
        by_path.insert(q.path, Duration::from_millis(q.ms));
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default = "default_total")]
    total: usize,
    #[serde(default = "default_per_page")]
    per_page: usize,
    #[serde(default = "default_page")]
    page: usize,
}
fn default_total() -> usize {
    10_000
}
fn default_per_page() -> usize {
    1000
}
fn default_page() -> usize {
    1
}

async fn list(State(app): State<App>, Query(q): Query<ListQuery>) -> Response {
    let v = app.rec.list_version.load(Ordering::Relaxed);
    let per = q.per_page.max(1);
    let start = (q.page.max(1) - 1) * per;
    let end = (start + per).min(q.total);
    let items: Vec<serde_json::Value> = (start..end)
        .map(|i| serde_json::json!({"name": format!("item-{i:05}"), "value": format!("v{v}")}))
        .collect();
    let next = if end < q.total {
        format!(
            "/_bench/list?total={}&per_page={per}&page={}",
            q.total,
            q.page.max(1) + 1
        )
    } else {
        String::new()
    };
    let body = serde_json::json!({"items": items, "next": next});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn list_bump(State(app): State<App>) -> Response {
    app.rec.list_version.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

fn main() {
    let mut delay_ms = 2.0f64;
    let mut port = 0u16;
    let mut threads = 1usize;
    let mut holds = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--delay-ms" => delay_ms = val().parse().unwrap_or_else(|_| usage("bad --delay-ms")),
            "--port" => port = val().parse().unwrap_or_else(|_| usage("bad --port")),
            "--threads" => threads = val().parse().unwrap_or_else(|_| usage("bad --threads")),
            "--hold" => {
                let v = val();
                let (path, secs) = v
                    .rsplit_once('=')
                    .and_then(|(p, s)| Some((p, s.parse::<f64>().ok()?)))
                    .filter(|(p, s)| p.starts_with('/') && s.is_finite() && *s > 0.0)
                    .unwrap_or_else(|| usage("bad --hold (PATH=SECONDS, e.g. /sites/a=10)"));
                holds.insert(path.to_owned(), Duration::from_secs_f64(secs));
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let app = App {
            rec: Arc::new(Recorder::default()),
            holds: Arc::new(Holds {
                by_path: Mutex::new(holds),
                released: tokio::sync::Notify::new(),
            }),
            delay: Duration::from_secs_f64(delay_ms / 1000.0),
        };
        let router = Router::new()
            .route("/_bench/first", get(first))
            .route("/_bench/stats", get(stats))
            .route("/_bench/reset", post(reset))
            .route("/_bench/hold", post(hold))
            .route("/_bench/list", get(list))
            .route("/_bench/list/bump", post(list_bump))
            .fallback(backend)
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let mut out = std::io::stdout();
        writeln!(out, "{port}").and_then(|_| out.flush()).ok();
        axum::serve(listener, router).await.expect("serve");
    });
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "server: {msg}\nusage: server [--delay-ms MS] [--port PORT] [--threads N] [--hold PATH=SECONDS]..."
    );
    std::process::exit(2);
}
