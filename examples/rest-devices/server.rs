//! A small device controller with a REST API, for the `rest-devices` example service and
//! its test: networks (`PUT`/`DELETE /networks/{name}`) and devices (`GET`/`POST`/`PUT`/
//! `DELETE /devices/{name}`, bearer token required). State lives in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Controller {
    pub networks: BTreeMap<String, Value>,
    pub devices: BTreeMap<String, Value>,
    next_id: u64,
}

pub type Shared = Arc<Mutex<Controller>>;

struct App {
    state: Shared,
    token: String,
}

pub fn router(state: Shared, token: String) -> Router {
    let app = Arc::new(App { state, token });
    Router::new()
        .route("/networks/{name}", put(put_network).delete(delete_network))
        .route(
            "/devices/{name}",
            axum::routing::get(get_device)
                .post(create_device)
                .put(update_device)
                .delete(delete_device),
        )
        .with_state(app)
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, Controller> {
    app.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", app.token))
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn put_network(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    lock(&app).networks.insert(name, body.clone());
    reply(StatusCode::OK, body)
}

async fn delete_network(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match lock(&app).networks.remove(&name) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => reply(StatusCode::NOT_FOUND, json!({"error": "no such network"})),
    }
}

async fn get_device(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !authorized(&app, &headers) {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}));
    }
    match lock(&app).devices.get(&name) {
        Some(d) => reply(StatusCode::OK, d.clone()),
        None => reply(StatusCode::NOT_FOUND, json!({"error": "no such device"})),
    }
}

async fn create_device(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&app, &headers) {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}));
    }
    let mut c = lock(&app);
    if c.devices.contains_key(&name) {
        return reply(StatusCode::CONFLICT, json!({"error": "exists"}));
    }
    c.next_id += 1;
    let device = json!({"id": format!("dev-{}", c.next_id), "config": body});
    c.devices.insert(name, device.clone());
    reply(StatusCode::CREATED, device)
}

async fn update_device(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&app, &headers) {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}));
    }
    let mut c = lock(&app);
    match c.devices.get_mut(&name) {
        Some(d) => {
            d["config"] = body;
            reply(StatusCode::OK, d.clone())
        }
        None => reply(StatusCode::NOT_FOUND, json!({"error": "no such device"})),
    }
}

async fn delete_device(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !authorized(&app, &headers) {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}));
    }
    match lock(&app).devices.remove(&name) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => reply(StatusCode::NOT_FOUND, json!({"error": "no such device"})),
    }
}
