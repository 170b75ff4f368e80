//! A small fabric controller with a REST API, for the `fabric-net` example service and its
//! test. State lives in memory; every write needs the bearer token, reads are open so an
//! operator can look with plain `curl`.
//!
//! - instances: `GET /instances/{name}`, `POST /instances` (`{name, subnet}`), `PUT`/`DELETE
//!   /instances/{name}`. The controller assigns each instance an `ip` in its subnet and keeps
//!   it while the subnet stays the same; moving the instance to another subnet gives it a
//!   new one. The ip is what the service reads back as feedback.
//! - fabric routes: `GET`/`PUT`/`DELETE /fabric/{name}` with `{"instance": NAME}`. The
//!   controller resolves the instance's *current* ip itself and records it with the route,
//!   as a real fabric controller programs the address it finds at push time. A route whose
//!   instance later moves is stale until it is pushed again: that is the watcher's job.
//! - networks (`{mtu}`) and interfaces (`{network, mtu}`): `GET`/`PUT`/`DELETE
//!   /networks/{name}` and `/interfaces/{name}`. An interface needs its network to exist, and
//!   a network with interfaces cannot be deleted, so the service must order its calls.
//! - `GET /`: everything.

// Handlers return the axum `Response` they reject a request with: an early `?` per check,
// as axum examples do; the size of that error is not worth boxing in a demo server.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Controller {
    /// name -> `{name, subnet, ip}`
    pub instances: BTreeMap<String, Value>,
    /// name -> `{instance, ip, pushes}`: the ip the last push programmed, and how many
    /// pushes there were.
    pub fabric: BTreeMap<String, Value>,
    /// name -> `{mtu}`
    pub networks: BTreeMap<String, Value>,
    /// name -> `{network, mtu}`
    pub interfaces: BTreeMap<String, Value>,
    /// Per subnet, the next host number to hand out. Addresses are never reused, so a moved
    /// instance always gets an ip different from every one it had before.
    next_host: BTreeMap<String, u32>,
}

pub type Shared = Arc<Mutex<Controller>>;

struct App {
    state: Shared,
    token: String,
}

pub fn router(state: Shared, token: String) -> Router {
    let app = Arc::new(App { state, token });
    Router::new()
        .route("/", get(get_all))
        .route("/instances", post(create_instance))
        .route(
            "/instances/{name}",
            get(get_instance)
                .put(update_instance)
                .delete(delete_instance),
        )
        .route(
            "/fabric/{name}",
            get(get_route).put(put_route).delete(delete_route),
        )
        .route(
            "/networks/{name}",
            get(get_network).put(put_network).delete(delete_network),
        )
        .route(
            "/interfaces/{name}",
            get(get_interface)
                .put(put_interface)
                .delete(delete_interface),
        )
        .with_state(app)
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, Controller> {
    app.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Err(response)` unless the request carries the controller's bearer token.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", app.token));
    if ok {
        Ok(())
    } else {
        Err(reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "bad token"}),
        ))
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn not_found(what: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no such {what}")}),
    )
}

fn bad_request(msg: String) -> Response {
    reply(StatusCode::BAD_REQUEST, json!({"error": msg}))
}

fn found(v: Option<&Value>, what: &str) -> Response {
    match v {
        Some(v) => reply(StatusCode::OK, v.clone()),
        None => not_found(what),
    }
}

fn gone(v: Option<Value>, what: &str) -> Response {
    match v {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(what),
    }
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Response> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(format!("`{name}` (a string) is required")))
}

async fn get_all(State(app): State<Arc<App>>) -> Response {
    let c = lock(&app);
    reply(
        StatusCode::OK,
        json!({
            "instances": c.instances,
            "fabric": c.fabric,
            "networks": c.networks,
            "interfaces": c.interfaces,
        }),
    )
}

// ---- instances ----------------------------------------------------------------------------

impl Controller {
    /// The next free address of `subnet` (`10.1.0.0/24`): host 1 is the gateway, so hosts
    /// are handed out from 2 on.
    fn assign_ip(&mut self, subnet: &str) -> Result<String, Response> {
        let bad = || bad_request(format!("`{subnet}` is not an IPv4 subnet like 10.1.0.0/24"));
        let (addr, len) = subnet.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&len) {
            return Err(bad_request(format!(
                "`{subnet}`: the prefix length must be 8 to 30"
            )));
        }
        let mask = u32::MAX << (32 - len);
        let net = u32::from(addr) & mask;
        let host = self.next_host.entry(subnet.to_owned()).or_insert(2);
        // The broadcast address (all host bits set) is not handed out either.
        if *host >= !mask {
            return Err(reply(
                StatusCode::CONFLICT,
                json!({"error": format!("subnet {subnet} is full")}),
            ));
        }
        let ip = Ipv4Addr::from(net | *host);
        *host += 1;
        Ok(ip.to_string())
    }
}

async fn get_instance(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    found(lock(&app).instances.get(&name), "instance")
}

async fn create_instance(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let (name, subnet) = match (str_field(&body, "name"), str_field(&body, "subnet")) {
        (Ok(n), Ok(s)) => (n.to_owned(), s.to_owned()),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let mut c = lock(&app);
    if c.instances.contains_key(&name) {
        return reply(StatusCode::CONFLICT, json!({"error": "exists"}));
    }
    let ip = match c.assign_ip(&subnet) {
        Ok(ip) => ip,
        Err(r) => return r,
    };
    let instance = json!({"name": name, "subnet": subnet, "ip": ip});
    c.instances.insert(name, instance.clone());
    reply(StatusCode::CREATED, instance)
}

async fn update_instance(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let subnet = match str_field(&body, "subnet") {
        Ok(s) => s.to_owned(),
        Err(r) => return r,
    };
    let mut c = lock(&app);
    let Some(old) = c.instances.get(&name).cloned() else {
        return not_found("instance");
    };
    // Idempotent: the same subnet keeps the address; only a move assigns a new one.
    if old["subnet"] == subnet.as_str() {
        return reply(StatusCode::OK, old);
    }
    let ip = match c.assign_ip(&subnet) {
        Ok(ip) => ip,
        Err(r) => return r,
    };
    let instance = json!({"name": name, "subnet": subnet, "ip": ip});
    c.instances.insert(name, instance.clone());
    reply(StatusCode::OK, instance)
}

async fn delete_instance(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    gone(lock(&app).instances.remove(&name), "instance")
}

// ---- fabric routes ------------------------------------------------------------------------

async fn get_route(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    found(lock(&app).fabric.get(&name), "fabric route")
}

async fn put_route(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let instance = match str_field(&body, "instance") {
        Ok(i) => i.to_owned(),
        Err(r) => return r,
    };
    let mut c = lock(&app);
    // The controller looks the address up now: the route holds the ip of this moment.
    let Some(ip) = c.instances.get(&instance).map(|i| i["ip"].clone()) else {
        return reply(
            StatusCode::CONFLICT,
            json!({"error": format!("no instance `{instance}` to route to")}),
        );
    };
    let pushes = c
        .fabric
        .get(&name)
        .and_then(|r| r["pushes"].as_u64())
        .unwrap_or(0)
        + 1;
    let route = json!({"instance": instance, "ip": ip, "pushes": pushes});
    c.fabric.insert(name, route.clone());
    reply(StatusCode::OK, route)
}

async fn delete_route(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    gone(lock(&app).fabric.remove(&name), "fabric route")
}

// ---- networks and interfaces --------------------------------------------------------------

async fn get_network(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    found(lock(&app).networks.get(&name), "network")
}

async fn put_network(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Some(mtu) = body.get("mtu").and_then(Value::as_u64) else {
        return bad_request("`mtu` (a number) is required".to_owned());
    };
    let network = json!({"mtu": mtu});
    lock(&app).networks.insert(name, network.clone());
    reply(StatusCode::OK, network)
}

async fn delete_network(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let mut c = lock(&app);
    let users: Vec<&String> = c
        .interfaces
        .iter()
        .filter(|(_, i)| i["network"] == name.as_str())
        .map(|(k, _)| k)
        .collect();
    if !users.is_empty() {
        return reply(
            StatusCode::CONFLICT,
            json!({"error": format!("network {name} still has interfaces {users:?}")}),
        );
    }
    gone(c.networks.remove(&name), "network")
}

async fn get_interface(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    found(lock(&app).interfaces.get(&name), "interface")
}

async fn put_interface(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let network = match str_field(&body, "network") {
        Ok(n) => n.to_owned(),
        Err(r) => return r,
    };
    let Some(mtu) = body.get("mtu").and_then(Value::as_u64) else {
        return bad_request("`mtu` (a number) is required".to_owned());
    };
    let mut c = lock(&app);
    if !c.networks.contains_key(&network) {
        return reply(
            StatusCode::CONFLICT,
            json!({"error": format!("no network `{network}`")}),
        );
    }
    let interface = json!({"network": network, "mtu": mtu});
    c.interfaces.insert(name, interface.clone());
    reply(StatusCode::OK, interface)
}

async fn delete_interface(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    gone(lock(&app).interfaces.remove(&name), "interface")
}
