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
enum Grant {
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
        "/healthz" | "/readyz" => true,
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
    let grant = given.and_then(|g| {
        let g = g.as_bytes();
        if bool::from(g.ct_eq(tokens.write.as_bytes())) {
            Some(Grant::Write)
        } else if bool::from(g.ct_eq(tokens.read.as_bytes())) {
            Some(Grant::Read)
        } else {
            None
        }
    });
    match grant {
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
