//! The JSON API's handlers (SPEC §16). Each carries its OpenAPI description
//! (`#[utoipa::path]`), built from the same types it answers with, so the document at
//! `/api/v1/openapi.json` cannot drift from what the handlers do.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::view::{GraphNode, SysFiles, TREE_DEPTH, TREE_DEPTH_MAX, sys_files, tree};
use super::{ApiError, AppState};
use crate::output::ObjectView;
use crate::store::{Millis, ObjectRecord, PageQuery, Status};

/// `Query`, with a malformed query string answered as every other error is: JSON, 400.
struct ApiQuery<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// `Path`, likewise.
struct ApiPath<T>(T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S>
    for ApiPath<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// Objects per page when the caller does not say, and at most.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;

#[derive(OpenApi)]
#[openapi(
    info(title = "stepsync API", description = "The data model and its sync state (SPEC §16)."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ApiError, ObjectEvent))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_models))
        .routes(routes!(list_objects))
        .routes(routes!(get_object))
        .routes(routes!(status))
        .routes(routes!(apply))
        .routes(routes!(delete_object))
        .routes(routes!(retry_object))
        .routes(routes!(object_files))
        .routes(routes!(object_graph))
        .routes(routes!(plan))
        .routes(routes!(events))
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Masks every secret value the service knows in `v` (SPEC §16: no secret is returned).
fn masked<T: Serialize>(state: &AppState, v: &T) -> MaskedJson {
    let secrets = &state.svc.secrets;
    // With no secret to mask, the answer is written straight from its typed value: the
    // detour through a `Value` and its masked copy was most of a list page's cost (B10).
    let body = if secrets.is_empty() {
        serde_json::to_vec(v)
    } else {
        serde_json::to_value(v).and_then(|v| serde_json::to_vec(&secrets.mask_json(&v)))
    };
    MaskedJson(body.unwrap_or_else(|_| b"null".to_vec()))
}

/// A JSON answer whose every string had its secrets masked ([`masked`]).
pub(crate) struct MaskedJson(Vec<u8>);

impl axum::response::IntoResponse for MaskedJson {
    fn into_response(self) -> axum::response::Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0,
        )
            .into_response()
    }
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store is open and this process holds the runner lease.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    let held = blocking(move || Ok(state.holds_lease()?)).await;
    match held {
        Ok(true) => (StatusCode::OK, "ready\n"),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the runner lease is not held\n",
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store cannot be read\n",
        ),
    }
}

/// A model and how many of its objects are in each status.
#[derive(Debug, Serialize, ToSchema)]
struct ModelInfo {
    name: String,
    /// Its fields, in schema order.
    fields: Vec<String>,
    /// Objects by status (zero counts left out).
    counts: BTreeMap<String, usize>,
    total: usize,
}

/// The models of the schema with their objects' counts by status.
#[utoipa::path(
    get,
    path = "/api/v1/models",
    responses(
        (status = 200, body = Vec<ModelInfo>),
        (status = 401, body = ApiError),
    )
)]
async fn list_models(State(state): State<Arc<AppState>>) -> Result<Json<Vec<ModelInfo>>, ApiError> {
    blocking(move || {
        let counts = state.store.counts_by_model_status()?;
        let models = state
            .svc
            .schema
            .models
            .iter()
            .map(|(name, m)| {
                let by: BTreeMap<String, usize> = counts
                    .iter()
                    .filter(|(model, ..)| model == name)
                    .map(|(_, s, n)| (s.as_str().to_owned(), *n))
                    .collect();
                ModelInfo {
                    name: name.clone(),
                    fields: m.fields.keys().cloned().collect(),
                    total: by.values().sum(),
                    counts: by,
                }
            })
            .collect();
        Ok(Json(models))
    })
    .await
}

/// The list's filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this model's objects.
    model: Option<String>,
    /// Only objects in this status: pending, ok, error, deferred, blocked, deleting.
    status: Option<String>,
    /// Only keys that start with this.
    prefix: Option<String>,
    /// Objects per page (default 50, at most 500).
    limit: Option<usize>,
    /// Where the previous page ended: its `next`.
    after: Option<String>,
}

/// A page of objects.
#[derive(Debug, Serialize, ToSchema)]
struct ObjectPage {
    items: Vec<ObjectView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Objects in (model, key) order, filtered, a page at a time (the page after the previous
/// is a seek on the store's index, as fast at the 2,000th page as at the first).
#[utoipa::path(
    get,
    path = "/api/v1/objects",
    params(ListQuery),
    responses(
        (status = 200, body = ObjectPage),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError, description = "no such model"),
    )
)]
async fn list_objects(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<MaskedJson, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    if let Some(m) = &q.model
        && state.svc.schema.model(m).is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model `{m}` in the schema"),
        ));
    }
    let status = match &q.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            bad(format!(
                "unknown status `{s}`: expected one of {}",
                Status::ALL.map(|s| s.as_str()).join(", ")
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(bad(format!("limit must be 1 to {PAGE_MAX}")));
    }
    let after = match &q.after {
        None => None,
        Some(a) => Some(
            a.split_once('/')
                .map(|(m, k)| (m.to_owned(), k.to_owned()))
                .ok_or_else(|| bad(format!("after `{a}` is not MODEL/KEY (a page's `next`)")))?,
        ),
    };
    blocking(move || {
        // One more than the page: whether there is a next one.
        let recs = state.store.page(&PageQuery {
            model: q.model.as_deref(),
            status,
            prefix: q.prefix.as_deref(),
            after: after.as_ref().map(|(m, k)| (m.as_str(), k.as_str())),
            limit: limit + 1,
        })?;
        let more = recs.len() > limit;
        let items: Vec<ObjectView> = recs
            .iter()
            .take(limit)
            .map(|r| ObjectView::new(&state.svc.schema, r))
            .collect();
        let next = more
            .then(|| items.last().map(|o| format!("{}/{}", o.model, o.key)))
            .flatten();
        Ok(masked(&state, &ObjectPage { items, next }))
    })
    .await
}

/// One object: its fields, feedback and bookkeeping.
#[utoipa::path(
    get,
    path = "/api/v1/objects/{model}/{key}",
    params(("model" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, body = ObjectView),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
    )
)]
async fn get_object(
    State(state): State<Arc<AppState>>,
    ApiPath((model, key)): ApiPath<(String, String)>,
) -> Result<MaskedJson, ApiError> {
    blocking(move || {
        let rec = found(&state, &model, &key)?;
        Ok(masked(&state, &ObjectView::new(&state.svc.schema, &rec)))
    })
    .await
}

/// The store's totals, and the lease.
#[derive(Debug, Serialize, ToSchema)]
struct StatusReport {
    /// Objects by status, all models together.
    counts: BTreeMap<String, usize>,
    /// Objects with work on them.
    pending: usize,
    /// The runner holding the store, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseInfo>,
    /// The workers of a shared store (SPEC §17); empty on a store one runner drives.
    workers: Vec<WorkerReport>,
}

/// One worker of a shared store: who, since when, its last heartbeat, the object claims it
/// holds now, and whether it leads (holds the runner lease).
#[derive(Debug, Serialize, ToSchema)]
struct WorkerReport {
    name: String,
    host: String,
    pid: u32,
    #[schema(value_type = String, format = DateTime)]
    since: Millis,
    #[schema(value_type = String, format = DateTime)]
    heartbeat: Millis,
    claims: usize,
    leads: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct LeaseInfo {
    holder: String,
    pid: u32,
    host: String,
    #[schema(value_type = String, format = DateTime)]
    expires: Millis,
}

/// Totals by status and who holds the store.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    responses((status = 200, body = StatusReport), (status = 401, body = ApiError))
)]
async fn status(State(state): State<Arc<AppState>>) -> Result<Json<StatusReport>, ApiError> {
    blocking(move || {
        let c = state.store.counts()?;
        let held = state.store.lease()?;
        let now = Millis::now();
        let workers = state
            .store
            .workers()?
            .into_iter()
            .map(|w| WorkerReport {
                leads: w.leads(held.as_ref(), now),
                name: w.name,
                host: w.host,
                pid: w.pid,
                since: w.since,
                heartbeat: w.heartbeat,
                claims: w.claims,
            })
            .collect();
        let lease = held.map(|l| LeaseInfo {
            holder: l.holder,
            pid: l.pid,
            host: l.host,
            expires: l.expires,
        });
        Ok(Json(StatusReport {
            counts: c
                .by_status
                .iter()
                .map(|(s, n)| (s.as_str().to_owned(), *n))
                .collect(),
            pending: c.pending,
            lease,
            workers,
        }))
    })
    .await
}

/// `apply`'s options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ApplyQuery {
    /// Delete stored objects of the applied models that the body does not list.
    #[serde(default)]
    prune: bool,
    /// Check and report, write nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What an apply did to one object.
#[derive(Debug, Serialize, ToSchema)]
struct Applied {
    /// `Model/key`.
    object: String,
    /// `created`, `configured`, `unchanged`, or `pruned (...)`.
    outcome: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct ApplyAnswer {
    objects: Vec<Applied>,
    dry_run: bool,
}

/// Applies an objects file (YAML or JSON, the format of `stepsync apply -f`) as
/// `stepsync apply` does: checked whole, then written in one transaction, all or nothing.
/// Invalid input is 422 with every problem, its line and column in the body.
#[utoipa::path(
    post,
    path = "/api/v1/apply",
    params(ApplyQuery),
    request_body(content = String, content_type = "application/yaml", description = "An objects file: `Model: [{name: ..., field: ...}]`"),
    responses(
        (status = 200, body = ApplyAnswer),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 409, body = ApiError),
        (status = 422, body = ApiError),
    )
)]
async fn apply(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ApplyQuery>,
    body: axum::body::Bytes,
) -> Result<Json<ApplyAnswer>, ApiError> {
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the request body is not UTF-8"))?;
    blocking(move || {
        let src = crate::yaml::Source::from_text("(request body)", body);
        let opts = crate::apply::ApplyOptions {
            prune: q.prune,
            dry_run: q.dry_run,
        };
        let report = crate::apply::apply_sources(&state.svc, &*state.store, vec![src], opts)?;
        state.wrote();
        Ok(Json(ApplyAnswer {
            objects: report
                .lines
                .into_iter()
                .map(|(object, o)| Applied {
                    object,
                    outcome: o.to_string(),
                })
                .collect(),
            dry_run: q.dry_run,
        }))
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Delete what depends on it too.
    #[serde(default)]
    cascade: bool,
    /// Purge at once, without any backend call.
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct Removed {
    object: String,
    /// `marked for deletion`, `deleted`, `already being deleted`, ...
    removal: String,
}

/// Deletes an object as `stepsync delete` does (its dependents only with `cascade`).
#[utoipa::path(
    delete,
    path = "/api/v1/objects/{model}/{key}",
    params(("model" = String, Path), ("key" = String, Path), DeleteQuery),
    responses(
        (status = 200, body = Vec<Removed>),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError),
    )
)]
async fn delete_object(
    State(state): State<Arc<AppState>>,
    ApiPath((model, key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<Vec<Removed>>, ApiError> {
    blocking(move || {
        found(&state, &model, &key)?;
        let removed = crate::deletion::delete(
            &state.svc,
            &*state.store,
            &model,
            crate::deletion::Which::One(&key),
            q.cascade,
            q.force,
        )?;
        state.wrote();
        Ok(Json(
            removed
                .into_iter()
                .map(|(object, r)| Removed {
                    object,
                    removal: r.to_string(),
                })
                .collect(),
        ))
    })
    .await
}

/// The stored `model/key`, or a 404.
fn found(state: &AppState, model: &str, key: &str) -> Result<ObjectRecord, ApiError> {
    state
        .store
        .get(model, key)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{model}/{key} not found")))
}

#[derive(Debug, Serialize, ToSchema)]
struct RetryAnswer {
    /// What was done, as `stepsync retry` says it.
    lines: Vec<String>,
}

/// Clears the object's backoff so the daemon's next pass tries it (`stepsync retry`).
#[utoipa::path(
    post,
    path = "/api/v1/objects/{model}/{key}/retry",
    params(("model" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, body = RetryAnswer),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    )
)]
async fn retry_object(
    State(state): State<Arc<AppState>>,
    ApiPath((model, key)): ApiPath<(String, String)>,
) -> Result<Json<RetryAnswer>, ApiError> {
    blocking(move || {
        found(&state, &model, &key)?;
        let lines = crate::retry::retry(&state.svc, &*state.store, &model, Some(&key))?;
        state.wrote();
        Ok(Json(RetryAnswer { lines }))
    })
    .await
}

/// An object's recipes (the rendered files of its sys dir folder, to read and re-run) and
/// its run logs, newest first; secrets masked.
#[utoipa::path(
    get,
    path = "/api/v1/objects/{model}/{key}/files",
    params(("model" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, body = SysFiles),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
    )
)]
async fn object_files(
    State(state): State<Arc<AppState>>,
    ApiPath((model, key)): ApiPath<(String, String)>,
) -> Result<Json<SysFiles>, ApiError> {
    blocking(move || {
        let rec = found(&state, &model, &key)?;
        // `sys_files` masks each file's text already, for the dashboard too.
        Ok(Json(sys_files(&state, &rec)))
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GraphQuery {
    /// Levels each way (default 3, at most 6); each level lists 50 objects at most.
    depth: Option<usize>,
}

/// The dependency graph around an object.
#[derive(Debug, Serialize, ToSchema)]
struct Graph {
    object: String,
    status: String,
    /// What it depends on, and what those depend on.
    depends_on: Vec<GraphNode>,
    /// What depends on it, and what depends on those.
    depended_on_by: Vec<GraphNode>,
}

/// What an object depends on and what depends on it, with the worst status at or below
/// each node (the reason an object waits is the worst status on its path).
#[utoipa::path(
    get,
    path = "/api/v1/objects/{model}/{key}/graph",
    params(("model" = String, Path), ("key" = String, Path), GraphQuery),
    responses(
        (status = 200, body = Graph),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
    )
)]
async fn object_graph(
    State(state): State<Arc<AppState>>,
    ApiPath((model, key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<GraphQuery>,
) -> Result<Json<Graph>, ApiError> {
    let depth = q.depth.unwrap_or(TREE_DEPTH);
    if depth == 0 || depth > TREE_DEPTH_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("depth must be 1 to {TREE_DEPTH_MAX}"),
        ));
    }
    blocking(move || {
        let rec = found(&state, &model, &key)?;
        let nodes = |up| {
            tree(&state, &rec, up, depth)
                .iter()
                .map(GraphNode::from)
                .collect()
        };
        Ok(Json(Graph {
            object: rec.name(),
            status: rec.book.status.as_str().to_owned(),
            depends_on: nodes(true),
            depended_on_by: nodes(false),
        }))
    })
    .await
}

/// What a run would do now, as `stepsync plan -o json` prints it: every pending object's
/// recipe rendered into the plan dir, nothing sent. A write call: like `plan`, it holds
/// the store's writer for its length (its pretend writes are rolled back) and writes the
/// plan dir.
#[utoipa::path(
    post,
    path = "/api/v1/plan",
    responses(
        (status = 200, body = serde_json::Value, description = "the plan, as `stepsync plan -o json`"),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 422, body = ApiError, description = "the service's files do not load"),
    )
)]
async fn plan(State(state): State<Arc<AppState>>) -> Result<MaskedJson, ApiError> {
    let rt = tokio::runtime::Handle::current();
    blocking(move || {
        // The service as its files now stand, as the daemon runs it after a reload.
        let engine =
            crate::engine::Engine::open(crate::service::Service::load(&state.svc.dir)?, None)?;
        let p = rt.block_on(crate::plan::plan(
            &engine,
            crate::plan::PlanOptions::default(),
        ))?;
        Ok(masked(&state, &p))
    })
    .await
}

/// How often the events stream looks for a change in the store.
const EVENTS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// One server-sent event.
#[derive(Debug, Serialize, ToSchema)]
struct SseEvent {
    /// `counts` or `object`.
    event: String,
    /// JSON. `counts`: objects by model and status, `{"Site": {"ok": 3, "error": 1}}`.
    /// `object`: an [`ObjectEvent`].
    data: String,
}

/// What an `object` event carries: one object's visible change (its status, message,
/// fields, feedback or deletion), or its purge. `rev` is the store's revision at the
/// change; the stream sends each object once per poll, at its latest.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ObjectEvent {
    rev: i64,
    model: String,
    key: String,
    /// Absent when the object was purged.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<bool>,
    /// True when the object is gone from the store.
    purged: bool,
}

impl From<crate::store::ObjectChange> for ObjectEvent {
    fn from(c: crate::store::ObjectChange) -> Self {
        ObjectEvent {
            rev: c.rev,
            model: c.model,
            key: c.key,
            purged: c.state.is_none(),
            status: c.state.as_ref().map(|s| s.status.as_str().to_owned()),
            deleted: c.state.as_ref().map(|s| s.deleted),
            message: c.state.map(|s| s.message),
        }
    }
}

/// Changes read per poll at most: a stream far behind catches up over several polls
/// instead of one huge read.
const EVENTS_BATCH: usize = 500;

type ModelCounts = BTreeMap<String, BTreeMap<String, usize>>;

fn model_counts(state: &AppState) -> Result<ModelCounts, ApiError> {
    let mut out: ModelCounts = BTreeMap::new();
    for (model, status, n) in state.store.counts_by_model_status()? {
        out.entry(model)
            .or_default()
            .insert(status.as_str().to_owned(), n);
    }
    Ok(out)
}

/// Server-sent events for live views: a `counts` event (objects by model and status, as
/// JSON) at once and whenever they change, and an `object` event for each object's visible
/// change after the stream opened, oldest first (the store's revision order, SPEC §16). The
/// store is looked at every 250 ms, and only when something committed since (one `PRAGMA
/// data_version`), so an idle stream costs nothing at 100,000 objects.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    responses(
        (status = 200, content_type = "text/event-stream", body = SseEvent),
        (status = 401, body = ApiError),
    )
)]
async fn events(
    State(state): State<Arc<AppState>>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let mut stopping = state.stopping.subscribe();
    struct Cursor {
        state: Arc<AppState>,
        marker: Option<(i64, u64)>,
        sent: Option<ModelCounts>,
        /// The revision of the last change sent (or the store's when the stream opened).
        rev: Option<i64>,
        queue: std::collections::VecDeque<Event>,
    }
    let start = Cursor {
        state,
        marker: None,
        sent: None,
        rev: None,
        queue: std::collections::VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(start, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                return Some((Ok(e), c));
            }
            let st = c.state.clone();
            let marker = (
                blocking(move || Ok(st.store.change_marker()?))
                    .await
                    .unwrap_or(-1),
                c.state.writes.load(std::sync::atomic::Ordering::Relaxed),
            );
            if c.rev.is_none() {
                let st = c.state.clone();
                c.rev = blocking(move || Ok(st.store.revision()?)).await.ok();
            }
            if c.marker != Some(marker) {
                let st = c.state.clone();
                let after = c.rev.unwrap_or(0);
                let changes = blocking(move || Ok(st.store.changes(after, EVENTS_BATCH)?)).await;
                if let Ok(changes) = changes {
                    // A full batch: more may wait, so the marker is left to read again.
                    if changes.len() < EVENTS_BATCH {
                        c.marker = Some(marker);
                    }
                    for change in changes {
                        c.rev = Some(change.rev);
                        let body = masked(&c.state, &ObjectEvent::from(change));
                        let data = String::from_utf8_lossy(&body.0).into_owned();
                        c.queue
                            .push_back(Event::default().event("object").data(data));
                    }
                }
                let st = c.state.clone();
                if let Ok(counts) = blocking(move || model_counts(&st)).await
                    && c.sent.as_ref() != Some(&counts)
                {
                    let data = serde_json::to_string(&counts).unwrap_or_default();
                    c.sent = Some(counts);
                    c.queue
                        .push_back(Event::default().event("counts").data(data));
                }
                if !c.queue.is_empty() {
                    continue;
                }
            }
            tokio::time::sleep(EVENTS_POLL).await;
        }
    });
    let stream = stream.take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
