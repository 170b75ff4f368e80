//! A small cloud with a REST API, for the `cloud-sites` example service and its test: it
//! lists its availability zones as EC2's `DescribeAvailabilityZones` does, and keeps the
//! sites the service creates in them. State lives in memory; every request to the API needs
//! the bearer token, except `GET /`, so an operator can look with plain `curl`.
//!
//! - zones: `GET /zones` lists them a page at a time (`?per_page=N`, default 2, then
//!   `?page=K`): `{"AvailabilityZones": [{"ZoneName", "ZoneId", "State", "RegionName"}],
//!   "next": "/zones?page=2&per_page=2"}`; `next` is `""` on the last page. `PUT
//!   /zones/{name}` (`{"State", "RegionName"}`, both optional) adds or changes one and `DELETE
//!   /zones/{name}` removes one: what the cloud's operator does, which the service sees on
//!   its next poll.
//! - sites: `GET`/`PUT`/`DELETE /sites/{name}` with `{"login_base", "enabled"}`. A site can
//!   only be put in a zone that exists (its name is the zone's); the answer holds the
//!   `site_id` the cloud gave it, which the service reads back as feedback.
//! - `GET /`: everything.

// Handlers return the axum `Response` they reject a request with: an early `?` per check,
// as axum examples do; the size of that error is not worth boxing in a demo server.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub struct Cloud {
    /// ZoneName -> `{ZoneName, ZoneId, State, RegionName}`
    pub zones: BTreeMap<String, Value>,
    /// name -> `{login_base, enabled, site_id, puts}`: what the last put set, and how many
    /// puts there were.
    pub sites: BTreeMap<String, Value>,
    /// How many times `GET /zones` was answered (pages, not polls).
    pub zone_pages: u64,
    next_id: u64,
}

/// The zones a new cloud has: two regions, one zone impaired.
pub const ZONES: &[(&str, &str, &str)] = &[
    ("us-east-1a", "us-east-1", "available"),
    ("us-east-1b", "us-east-1", "available"),
    ("us-east-1c", "us-east-1", "impaired"),
    ("eu-west-1a", "eu-west-1", "available"),
    ("eu-west-1b", "eu-west-1", "available"),
];

impl Default for Cloud {
    fn default() -> Self {
        let mut c = Cloud {
            zones: BTreeMap::new(),
            sites: BTreeMap::new(),
            zone_pages: 0,
            next_id: 1,
        };
        for (name, region, state) in ZONES {
            c.put_zone(name, region, state);
        }
        c
    }
}

impl Cloud {
    /// Adds zone `name` or changes its region and state.
    pub fn put_zone(&mut self, name: &str, region: &str, state: &str) {
        let id = match self.zones.get(name) {
            Some(z) => z["ZoneId"].clone(),
            None => {
                let n = self.zones.len() + 1;
                json!(format!(
                    "{}-az{n}",
                    region.split('-').next().unwrap_or("az")
                ))
            }
        };
        self.zones.insert(
            name.to_owned(),
            json!({"ZoneName": name, "ZoneId": id, "State": state, "RegionName": region}),
        );
    }
}

pub type Shared = Arc<Mutex<Cloud>>;

struct App {
    state: Shared,
    token: String,
}

pub fn router(state: Shared, token: String) -> Router {
    let app = Arc::new(App { state, token });
    Router::new()
        .route("/", get(get_all))
        .route("/zones", get(list_zones))
        .route(
            "/zones/{name}",
            get(get_zone).put(put_zone).delete(delete_zone),
        )
        .route(
            "/sites/{name}",
            get(get_site).put(put_site).delete(delete_site),
        )
        .with_state(app)
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, Cloud> {
    app.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Err(response)` unless the request carries the cloud's bearer token.
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

async fn get_all(State(app): State<Arc<App>>) -> Response {
    let c = lock(&app);
    reply(StatusCode::OK, json!({"zones": c.zones, "sites": c.sites}))
}

// ---- zones --------------------------------------------------------------------------------

async fn list_zones(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let number = |name: &str, default: usize| -> Result<usize, Response> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad_request(format!("`{name}` must be a positive number"))),
        }
    };
    let (per_page, page) = match (number("per_page", 2), number("page", 1)) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let mut c = lock(&app);
    c.zone_pages += 1;
    let zones: Vec<&Value> = c
        .zones
        .values()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let next = if page * per_page < c.zones.len() {
        format!("/zones?page={}&per_page={per_page}", page + 1)
    } else {
        String::new()
    };
    reply(
        StatusCode::OK,
        json!({"AvailabilityZones": zones, "next": next}),
    )
}

async fn get_zone(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match lock(&app).zones.get(&name) {
        Some(z) => reply(StatusCode::OK, z.clone()),
        None => not_found("zone"),
    }
}

async fn put_zone(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Option<axum::Json<Value>>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let body = body.map(|b| b.0).unwrap_or_else(|| json!({}));
    let mut c = lock(&app);
    let old = c.zones.get(&name).cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str, default: String| {
        body.get(k)
            .or_else(|| old.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(default)
    };
    // A zone name is its region and a letter: us-east-1a is in us-east-1.
    let region = pick(
        "RegionName",
        name[..name.len().saturating_sub(1)].to_owned(),
    );
    let state = pick("State", "available".to_owned());
    c.put_zone(&name, &region, &state);
    reply(StatusCode::OK, c.zones[&name].clone())
}

async fn delete_zone(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match lock(&app).zones.remove(&name) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found("zone"),
    }
}

// ---- sites --------------------------------------------------------------------------------

async fn get_site(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match lock(&app).sites.get(&name) {
        Some(s) => reply(StatusCode::OK, s.clone()),
        None => not_found("site"),
    }
}

async fn put_site(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Some(login_base) = body.get("login_base").and_then(Value::as_str) else {
        return bad_request("`login_base` (a string) is required".to_owned());
    };
    let Some(enabled) = body.get("enabled").and_then(Value::as_bool) else {
        return bad_request("`enabled` (a boolean) is required".to_owned());
    };
    let mut c = lock(&app);
    if !c.zones.contains_key(&name) {
        return reply(
            StatusCode::CONFLICT,
            json!({"error": format!("no zone {name} to put the site in")}),
        );
    }
    let (site_id, puts) = match c.sites.get(&name) {
        Some(s) => (s["site_id"].clone(), s["puts"].as_u64().unwrap_or(0)),
        None => {
            let id = json!(format!("site-{:04}", c.next_id));
            c.next_id += 1;
            (id, 0)
        }
    };
    let site = json!({
        "login_base": login_base,
        "enabled": enabled,
        "site_id": site_id,
        "puts": puts + 1,
    });
    c.sites.insert(name, site.clone());
    reply(StatusCode::OK, site)
}

async fn delete_site(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    // Gone already is as good as deleted: the zone may have taken its site with it.
    lock(&app).sites.remove(&name);
    StatusCode::NO_CONTENT.into_response()
}
