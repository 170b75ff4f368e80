//! `stepsync serve` (SPEC §16): the HTTP side of the daemon — the JSON API under `/api/v1/`
//! with its OpenAPI document, `/metrics`, `/healthz` and `/readyz`.
//!
//! The server reads the store through a store handle of its own (SQLite in WAL mode lets it
//! read while the daemon writes), so a slow client never holds the daemon's connection.
//! Every response that shows model values passes through the service's secret masking.

mod api;
mod auth;
mod dashboard;
mod metrics;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::service::Service;
use crate::store::{Store, StoreError};

pub use metrics::Metrics;

/// What can stop `serve` from starting.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("serve: cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "serve: {addr} is not a loopback address and `serve.tokens` is not set in stepsync.yaml: set a read and a write token before listening beyond this host"
    )]
    OpenBeyondLoopback { addr: String },
    #[error("serve: {0}")]
    Token(String),
    #[error("serve: `{0}` is not HOST:PORT")]
    Address(String),
}

/// Everything a request handler reads.
pub(crate) struct AppState {
    pub(crate) svc: Service,
    pub(crate) store: Box<dyn Store>,
    pub(crate) tokens: Option<auth::Tokens>,
    pub(crate) open_metrics: bool,
    pub(crate) metrics: Arc<Metrics>,
    /// Writes made through the API: the store's change marker only moves for commits of
    /// other connections, so the events stream counts these itself.
    pub(crate) writes: std::sync::atomic::AtomicU64,
    /// Dashboard logins.
    pub(crate) sessions: auth::Sessions,
    /// Turns true when the server stops: the events streams end then, since a graceful
    /// shutdown waits for every connection and a stream would keep it waiting for ever.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// Whether this process drives the store now (`/readyz`, `lease_held`): it holds the
    /// runner lease, or, on a shared store, it is one of its workers (SPEC §17: only one
    /// of them leads, and every one of them is ready to run objects).
    pub(crate) fn holds_lease(&self) -> Result<bool, StoreError> {
        let me = std::process::id();
        if self.store.shared() {
            let host = crate::engine::hostname();
            return Ok(self
                .store
                .workers()?
                .iter()
                .any(|w| w.pid == me && w.host == host));
        }
        Ok(self
            .store
            .lease()?
            .is_some_and(|l| l.pid == me && l.expires > crate::store::Millis::now()))
    }

    pub(crate) fn wrote(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How much lower than the daemon the HTTP side runs (`nice` steps): readers get what the
/// engine leaves, so a busy dashboard or API client cannot slow the sync down much (B10: 20
/// readers doubled the time of 10,000 changes at equal priority).
const SERVE_NICENESS: i32 = 5;

/// The runtime the HTTP server runs on, apart from the daemon's: two workers and its own
/// blocking threads (the store reads), all at [`SERVE_NICENESS`].
pub fn runtime() -> Result<tokio::runtime::Runtime, crate::error::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve")
        .on_thread_start(|| {
            // On Linux a priority set with `who = 0` is the calling thread's own. A failure
            // leaves the thread at the daemon's priority: slower sync, nothing wrong.
            // SAFETY: setpriority only reads its integer arguments.
            let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SERVE_NICENESS) };
        })
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::failed(format!("serve: cannot start the runtime: {e}")))
}

/// A bound listener, before it serves: its address is known (port 0 picks one).
pub struct Listener {
    inner: tokio::net::TcpListener,
    app: Router,
    state: Arc<AppState>,
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Serves until `stop` turns true.
    pub async fn serve(self, mut stop: tokio::sync::watch::Receiver<bool>) -> std::io::Result<()> {
        let state = self.state;
        axum::serve(self.inner, self.app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
                state.stopping.send_replace(true);
            })
            .await
    }
}

impl From<ServeError> for crate::error::Error {
    fn from(e: ServeError) -> Self {
        crate::error::Error::failed(e.to_string())
    }
}

/// Binds `listen` (or `serve.listen`) for `svc`, with a store handle of its own, and builds
/// the routes. Refuses a non-loopback address without tokens (SPEC §16).
pub async fn bind(
    svc: Service,
    listen: Option<&str>,
    metrics: Arc<Metrics>,
) -> Result<Listener, crate::error::Error> {
    let cfg = svc.config.serve.clone().unwrap_or_default();
    let addr = listen.unwrap_or(&cfg.listen).to_owned();
    let tokens = match &cfg.tokens {
        Some(t) => Some(auth::Tokens::load(t, &svc.dir).map_err(ServeError::Token)?),
        None => None,
    };
    let inner = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let bound = inner
        .local_addr()
        .map_err(|_| ServeError::Address(addr.clone()))?;
    if tokens.is_none() && !bound.ip().is_loopback() {
        return Err(ServeError::OpenBeyondLoopback { addr }.into());
    }
    let store = svc.open_store()?;
    let state = Arc::new(AppState {
        svc,
        store,
        tokens,
        open_metrics: cfg.open_metrics,
        metrics,
        writes: Default::default(),
        sessions: Default::default(),
        stopping: tokio::sync::watch::Sender::new(false),
    });
    Ok(Listener {
        inner,
        app: routes(state.clone()),
        state,
    })
}

fn routes(state: Arc<AppState>) -> Router {
    let (api, doc) = api::router().split_for_parts();
    let doc = Arc::new(doc);
    let open = Router::new()
        .route("/healthz", axum::routing::get(api::healthz))
        .route("/readyz", axum::routing::get(api::readyz))
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route("/", axum::routing::get(dashboard::overview))
        .route("/models/{model}", axum::routing::get(dashboard::model))
        .route(
            "/objects/{model}/{key}",
            axum::routing::get(dashboard::object),
        )
        .route(
            "/objects/{model}/{key}/retry",
            axum::routing::post(dashboard::retry),
        )
        .route(
            "/login",
            axum::routing::get(dashboard::login_form).post(dashboard::login),
        );
    Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(open)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        .with_state(state)
}

/// An error as the API answers it: `{"error": "..."}` with the status, the message the CLI
/// prints for the same failure; for invalid input, each problem with where it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ApiError {
    #[serde(skip)]
    #[schema(ignore)]
    status: u16,
    /// What went wrong, as the CLI says it.
    error: String,
    /// Invalid input (422): every problem found, as `validate` and `apply` list them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<Problem>,
}

/// One problem of invalid input.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// What is wrong, naming the object and the field (`Site/a: field `enabled`: ...`).
    message: String,
    /// Where in the request body (1-based), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status: status.as_u16(),
            error: error.into(),
            problems: Vec::new(),
        }
    }
}

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> ApiError {
        use crate::error::Error;
        match e {
            Error::Invalid(diags) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY.as_u16(),
                error: diags.to_string(),
                problems: diags
                    .0
                    .iter()
                    .map(|d| Problem {
                        message: d.message.clone(),
                        line: d.pos.map(|p| p.line),
                        column: d.pos.map(|p| p.col),
                        hint: d.hint.clone(),
                    })
                    .collect(),
            },
            Error::Store(e) => e.into(),
            // Refused (a prune or delete that would orphan a dependent, say).
            Error::Failed(d) => ApiError::new(StatusCode::CONFLICT, d.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self)).into_response()
    }
}
