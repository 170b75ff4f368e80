//! Bearer tokens (SPEC §16): a read token for reads, a write token for reads and writes.
//! Compared in constant time; never logged, never returned.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::ServeTokens;

/// The two tokens, read once at start.
pub(crate) struct Tokens {
    read: String,
    write: String,
}

impl Tokens {
    /// What `given` is: the write token, the read token, or neither (constant time).
    pub(crate) fn grant(&self, given: &str) -> Option<Grant> {
        let g = given.as_bytes();
        if bool::from(g.ct_eq(self.write.as_bytes())) {
            Some(Grant::Write)
        } else if bool::from(g.ct_eq(self.read.as_bytes())) {
            Some(Grant::Read)
        } else {
            None
        }
    }

    pub(crate) fn load(t: &ServeTokens, dir: &Path) -> Result<Tokens, String> {
        let read = crate::secrets::read(&t.read, dir, "serve.tokens.read")?;
        let write = crate::secrets::read(&t.write, dir, "serve.tokens.write")?;
        if read.is_empty() || write.is_empty() {
            return Err("serve.tokens: a token is empty".into());
        }
        if read == write {
            return Err("serve.tokens: the read and the write token are the same".into());
        }
        Ok(Tokens { read, write })
    }
}

/// What a request's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    Read,
    Write,
}

/// A write is any method but GET and HEAD.
fn needs_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

/// Whether `path` may answer without a token: the probes and, with `open_metrics`, the
/// metrics.
fn open_path(path: &str, open_metrics: bool) -> bool {
    match path {
        "/healthz" | "/readyz" | "/login" => true,
        "/metrics" => open_metrics,
        _ => false,
    }
}

/// The middleware: 401 without a valid token, 403 for a read token on a write.
pub(crate) async fn check(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(tokens) = &state.tokens else {
        // No tokens: `bind` only listens on loopback then (SPEC §16).
        return next.run(req).await;
    };
    if open_path(req.uri().path(), state.open_metrics) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // The dashboard's pages (and its events stream) ride on a session cookie made from a
    // token at /login.
    let grant = given
        .and_then(|g| tokens.grant(g))
        .or_else(|| session_of(&req).and_then(|id| state.sessions.get(&id)));
    let page = !path_is_api(req.uri().path());
    match grant {
        None if page && req.method() == Method::GET => {
            axum::response::Redirect::to("/login").into_response()
        }
        None => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required: Authorization: Bearer <serve.tokens.read or .write>",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
        Some(Grant::Read) if needs_write(req.method()) => ApiError::new(
            StatusCode::FORBIDDEN,
            "this call writes: it needs the write token",
        )
        .into_response(),
        Some(_) => next.run(req).await,
    }
}

/// Whether `path` is the API's or the metrics' (answered 401, never sent to the login page).
fn path_is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "stepsync_session";

/// The session id the request's cookie carries, if any.
fn session_of(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Dashboard sessions: a random id per login, kept in memory (a restart logs everyone
/// out), mapped to what the token it was made from allows. The token itself never leaves
/// the login request.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Grant> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    /// A new session for `grant`: its id, 128 random bits in hex.
    pub(crate) fn open(&self, grant: Grant) -> std::io::Result<String> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), grant);
        Ok(id)
    }
}
