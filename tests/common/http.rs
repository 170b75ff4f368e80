//! A real HTTP server for tests (axum on 127.0.0.1, port 0): it records every request and
//! answers from rules the test sets, or as a small in-memory REST resource store.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When the request arrived and when its response was sent.
    pub start: Instant,
    pub end: Option<Instant>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `METHOD /path`, for compact assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// (method, path) -> (status, body); checked before the resource store.
    rules: HashMap<(String, String), (u16, String)>,
    /// path -> stored JSON body, for GET/PUT/POST/DELETE as a REST resource.
    resources: HashMap<String, String>,
    delay: Duration,
    /// path -> how long to hold responses to it.
    holds: HashMap<String, Duration>,
}

#[derive(Clone)]
pub struct TestServer {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    flight: Arc<Flight>,
}

/// Requests being handled now, and the most ever at once.
#[derive(Default)]
struct Flight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl TestServer {
    pub fn start() -> TestServer {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let flight = Arc::new(Flight::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let state = (inner.clone(), flight.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum::serve(listener, app).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("server address");
        TestServer {
            url: format!("http://{addr}"),
            inner,
            flight,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("server state")
    }

    /// Answer `method path` with `status` and `body` from now on.
    pub fn respond(&self, method: &str, path: &str, status: u16, body: &str) {
        self.lock().rules.insert(
            (method.to_owned(), path.to_owned()),
            (status, body.to_owned()),
        );
    }

    pub fn forget(&self, method: &str, path: &str) {
        self.lock()
            .rules
            .remove(&(method.to_owned(), path.to_owned()));
    }

    /// Puts a resource in the store, as if an earlier run had created it.
    pub fn store(&self, path: &str, body: &str) {
        self.lock()
            .resources
            .insert(path.to_owned(), body.to_owned());
    }

    /// Hold responses to `path` this long (after recording the request).
    pub fn hold(&self, path: &str, d: Duration) {
        self.lock().holds.insert(path.to_owned(), d);
    }

    /// The most requests ever handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.flight.max.load(Ordering::SeqCst)
    }

    /// Waits until a request for `line` (`METHOD /path`) has arrived, up to `timeout`.
    pub fn wait_for(&self, line: &str, timeout: Duration) -> Option<Recorded> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(r) = self.requests().into_iter().find(|r| r.line() == line) {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Hold every response this long (after recording the request).
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::line).collect()
    }

    pub fn clear(&self) {
        self.lock().requests.clear();
    }
}

async fn handle(
    State((st, flight)): State<(Arc<Mutex<Inner>>, Arc<Flight>)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
    flight.max.fetch_max(now, Ordering::SeqCst);
    let response = respond(&st, method, uri, headers, body).await;
    flight.now.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn respond(
    st: &Arc<Mutex<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rec = Recorded {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        start: Instant::now(),
        end: None,
    };
    let index;
    let (status, text) = {
        let mut s = st.lock().expect("server state");
        index = s.requests.len();
        s.requests.push(rec.clone());
        if let Some((code, b)) = s.rules.get(&(rec.method.clone(), rec.path.clone())) {
            (*code, b.clone())
        } else {
            match rec.method.as_str() {
                "GET" => match s.resources.get(&rec.path) {
                    Some(b) => (200, b.clone()),
                    None => (404, "{\"error\":\"not found\"}".to_owned()),
                },
                "PUT" | "POST" | "PATCH" => {
                    // The stored resource gets an id, as a backend would assign one.
                    let mut v: serde_json::Value =
                        serde_json::from_str(&rec.body).unwrap_or(serde_json::json!({}));
                    if let Some(o) = v.as_object_mut() {
                        o.entry("id").or_insert_with(|| {
                            serde_json::json!(format!(
                                "id-{}",
                                rec.path.rsplit('/').next().unwrap_or("")
                            ))
                        });
                    }
                    let stored = v.to_string();
                    s.resources.insert(rec.path.clone(), stored.clone());
                    (if rec.method == "POST" { 201 } else { 200 }, stored)
                }
                "DELETE" => match s.resources.remove(&rec.path) {
                    Some(_) => (204, String::new()),
                    None => (404, String::new()),
                },
                _ => (405, String::new()),
            }
        }
    };
    let delay = {
        let s = st.lock().expect("server state");
        s.holds.get(&rec.path).copied().unwrap_or(s.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(r) = st.lock().expect("server state").requests.get_mut(index) {
        r.end = Some(Instant::now());
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [("content-type", "application/json")], text).into_response()
}
