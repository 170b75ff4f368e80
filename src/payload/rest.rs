//! The REST payload (SPEC §6.2): rendering a stepdef's requests and executing them with
//! reqwest, simple form or observe → create / update / nothing.

use std::time::Duration;

use jsonpath_rust::JsonPath;
use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::stepdef::{Auth, Request, Rest};
use crate::template::{RenderError, Templates};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client and the limits of REST payloads (`http:` of stepsync.yaml).
pub struct Http {
    pub client: reqwest::Client,
    /// Larger responses fail the run (SPEC §6.2).
    pub max_response: u64,
}

/// What a run log keeps of each response body (SPEC §6.2).
const LOG_BODY_LIMIT: usize = 64 * 1024;

/// One concrete request, every template already rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// `auth: {basic: ...}`, kept apart from the headers so no recipe or log ever holds its
    /// encoding: recipes write the user and password (secrets as environment references),
    /// the request is encoded only when sent.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// The exact bytes sent (JSON for YAML bodies).
    pub body: Option<String>,
    pub timeout_ms: u64,
    /// Accepted statuses; `None` accepts any 2xx.
    pub expect: Option<Vec<u16>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

/// A rendered REST recipe.
// One lives per object run, never in bulk, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestPlan {
    Simple(HttpRequest),
    Delta {
        observe: HttpRequest,
        absent: Vec<u16>,
        create: Option<HttpRequest>,
        update: HttpRequest,
        compare: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    None,
    Delete,
}

/// `result` for feedback and `defer_when` (SPEC §6.4).
#[derive(Debug, Clone, Serialize)]
pub struct RestResult {
    pub status: u16,
    pub headers: Map<String, Json>,
    pub body: Json,
    pub text: String,
    pub action: Action,
}

/// What a REST run came to.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The last response, if any request got one.
    pub result: Option<RestResult>,
    /// Why the run failed: a transport error, or a status outside `expect`.
    pub failure: Option<String>,
    /// Every request sent and the status it got, for the run log.
    pub log: Vec<(HttpRequest, Option<u16>, String)>,
}

pub fn render(
    t: &Templates,
    rest: &Rest,
    ctx: &Value,
    default_timeout: Duration,
) -> Result<RestPlan, RenderError> {
    let r = |req: &Request| render_request(t, req, ctx, default_timeout);
    Ok(match rest {
        Rest::Simple(req) => RestPlan::Simple(r(req)?),
        Rest::Delta {
            observe,
            absent,
            create,
            update,
            compare,
        } => RestPlan::Delta {
            observe: r(observe)?,
            absent: absent.clone(),
            create: create.as_ref().map(r).transpose()?,
            update: r(update)?,
            compare: compare.clone(),
        },
    })
}

/// Renders one request (a pull step's, SPEC §13).
pub fn render_request(
    t: &Templates,
    req: &Request,
    ctx: &Value,
    default_timeout: Duration,
) -> Result<HttpRequest, RenderError> {
    let mut headers = Vec::new();
    for (k, v) in &req.headers {
        headers.push((k.clone(), t.render_string(v, ctx)?));
    }
    match &req.auth {
        Some(Auth::Bearer(tok)) => {
            headers.push((
                "Authorization".into(),
                format!("Bearer {}", t.render_string(tok, ctx)?),
            ));
        }
        Some(Auth::Basic { .. }) | None => {}
    }
    let basic_auth = match &req.auth {
        Some(Auth::Basic { user, password }) => Some(BasicAuth {
            user: t.render_string(user, ctx)?,
            password: t.render_string(password, ctx)?,
        }),
        _ => None,
    };
    let body = match &req.body {
        Some(b) => {
            let v = t.render_value(b, ctx)?;
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(serde_json::to_string(&v).map_err(|e| RenderError {
                origin: None,
                message: format!("body: {e}"),
            })?)
        }
        None => None,
    };
    let timeout = req.timeout.map_or(default_timeout, |d| d.0);
    // A value with a line break or a space (a key, a field) must stay inside the URL:
    // encoded, it is sent as it is written to the recipes, and cannot start a line there.
    let url = encode_controls(&t.render_string(&req.url, ctx)?);
    Ok(HttpRequest {
        basic_auth,
        method: req.method.as_str().to_owned(),
        url,
        headers,
        body,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        expect: req.expect.clone(),
    })
}

/// `s` with control characters and spaces percent-encoded (what the HTTP client would send
/// for them), everything else as it is. A plan's `(known after apply)` stays readable: it
/// is a placeholder, never sent.
fn encode_controls(s: &str) -> String {
    let parts: Vec<String> = s
        .split(crate::template::KNOWN_AFTER_APPLY)
        .map(encode_controls_in)
        .collect();
    parts.join(crate::template::KNOWN_AFTER_APPLY)
}

fn encode_controls_in(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == ' ' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl HttpRequest {
    pub fn accepts(&self, status: u16) -> bool {
        match &self.expect {
            Some(codes) => codes.contains(&status),
            None => (200..300).contains(&status),
        }
    }

    /// The desired state this request carries, for the delta comparison.
    pub fn body_json(&self) -> Json {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Json::Null)
    }
}

async fn send(http: &Http, req: &HttpRequest) -> Result<(u16, Map<String, Json>, String), String> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut rb = http
        .client
        .request(method, &req.url)
        .timeout(Duration::from_millis(req.timeout_ms));
    for (k, v) in &req.headers {
        rb = rb.header(k, v);
    }
    if let Some(a) = &req.basic_auth {
        rb = rb.basic_auth(&a.user, Some(&a.password));
    }
    if let Some(b) = &req.body {
        rb = rb.body(b.clone());
    }
    let resp = rb.send().await.map_err(|e| describe_reqwest(&e, req))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Json::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    // Read in chunks against the limit: a huge answer fails the run instead of being held.
    let mut resp = resp;
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe_reqwest(&e, req))? {
        if (bytes.len() + chunk.len()) as u64 > http.max_response {
            return Err(format!(
                "{} {}: the response is larger than http.max_response ({})",
                req.method,
                req.url,
                crate::duration::Size(http.max_response)
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

fn describe_reqwest(e: &reqwest::Error, req: &HttpRequest) -> String {
    let what = if e.is_timeout() {
        format!("timed out after {} ms", req.timeout_ms)
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut msg = format!("{} {}: {what}", req.method, req.url);
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

fn result_of(status: u16, headers: Map<String, Json>, text: String, action: Action) -> RestResult {
    let body = serde_json::from_str(&text).unwrap_or(Json::Null);
    RestResult {
        status,
        headers,
        body,
        text,
        action,
    }
}

fn unexpected(req: &HttpRequest, r: &RestResult) -> String {
    let mut snippet: String = r.text.chars().take(200).collect();
    if r.text.chars().count() > 200 {
        snippet.push('…');
    }
    let reason = reqwest::StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!(
        "{} {}: unexpected status {} {reason}: {}",
        req.method,
        req.url,
        r.status,
        snippet.trim()
    )
}

/// Sends one request, recording it in `log`.
async fn exchange_one(
    http: &Http,
    req: &HttpRequest,
    action: Action,
    log: &mut Vec<(HttpRequest, Option<u16>, String)>,
) -> Result<RestResult, String> {
    match send(http, req).await {
        Ok((status, headers, text)) => {
            log.push((req.clone(), Some(status), text.clone()));
            Ok(result_of(status, headers, text, action))
        }
        Err(e) => {
            log.push((req.clone(), None, e.clone()));
            Err(e)
        }
    }
}

/// Sends the request that decides the outcome: a status outside `expect` is a failure.
async fn act(
    http: &Http,
    req: &HttpRequest,
    action: Action,
    mut log: Vec<(HttpRequest, Option<u16>, String)>,
) -> Exchange {
    match exchange_one(http, req, action, &mut log).await {
        Ok(r) => Exchange {
            failure: (!req.accepts(r.status)).then(|| unexpected(req, &r)),
            result: Some(r),
            log,
        },
        Err(e) => Exchange {
            result: None,
            failure: Some(e),
            log,
        },
    }
}

/// Runs a rendered recipe. `is_delete` marks the outcome's action.
pub async fn execute(http: &Http, plan: &RestPlan, is_delete: bool) -> Exchange {
    let single = |action: Action| if is_delete { Action::Delete } else { action };
    match plan {
        RestPlan::Simple(req) => act(http, req, single(Action::Update), Vec::new()).await,
        RestPlan::Delta {
            observe,
            absent,
            create,
            update,
            compare,
        } => {
            let mut log = Vec::new();
            let (result, failure) = match exchange_one(http, observe, Action::None, &mut log).await
            {
                Err(e) => (None, Some(e)),
                Ok(observed) => match decide(
                    observe,
                    &observed,
                    absent,
                    create.as_ref(),
                    update,
                    compare.as_deref(),
                ) {
                    Ok(Some((req, action))) => return act(http, req, single(action), log).await,
                    Ok(None) => (Some(observed), None),
                    Err(e) => (Some(observed), Some(e)),
                },
            };
            Exchange {
                result,
                failure,
                log,
            }
        }
    }
}

/// Sends one read request and returns its answer, a status outside `expect` being an
/// error (a pull step's page, SPEC §13).
pub async fn fetch(http: &Http, req: &HttpRequest) -> Result<RestResult, String> {
    let mut log = Vec::new();
    let r = exchange_one(http, req, Action::None, &mut log).await?;
    if !req.accepts(r.status) {
        return Err(unexpected(req, &r));
    }
    Ok(r)
}

/// `plan --refresh`: sends only the read-only observe request of a delta recipe and says
/// what the run would do (`None`: the backend already matches).
pub async fn refresh(http: &Http, plan: &RestPlan) -> Result<Option<Action>, String> {
    let RestPlan::Delta {
        observe,
        absent,
        create,
        update,
        compare,
    } = plan
    else {
        return Ok(Some(Action::Update));
    };
    let mut log = Vec::new();
    let observed = exchange_one(http, observe, Action::None, &mut log).await?;
    Ok(decide(
        observe,
        &observed,
        absent,
        create.as_ref(),
        update,
        compare.as_deref(),
    )?
    .map(|(_, a)| a))
}

/// The delta decision: which request to send after observing, if any.
#[allow(clippy::type_complexity)]
pub fn decide<'a>(
    observe: &HttpRequest,
    observed: &RestResult,
    absent: &[u16],
    create: Option<&'a HttpRequest>,
    update: &'a HttpRequest,
    compare: Option<&str>,
) -> Result<Option<(&'a HttpRequest, Action)>, String> {
    if absent.contains(&observed.status) {
        return Ok(Some(match create {
            Some(c) => (c, Action::Create),
            None => (update, Action::Update),
        }));
    }
    if !(200..300).contains(&observed.status) {
        return Err(unexpected(observe, observed));
    }
    let observed_part = match compare {
        Some(path) => observed
            .body
            .query(path)
            .ok()
            .and_then(|v| v.first().map(|x| (*x).clone()))
            .unwrap_or(Json::Null),
        None => observed.body.clone(),
    };
    let desired = update.body_json();
    if is_subset(&desired, &observed_part) {
        Ok(None)
    } else {
        Ok(Some((update, Action::Update)))
    }
}

/// `desired` is contained in `observed`: every key of a desired map is present with a
/// contained value; lists and scalars compare equal (numbers by value).
pub fn is_subset(desired: &Json, observed: &Json) -> bool {
    match (desired, observed) {
        (Json::Object(d), Json::Object(o)) => d
            .iter()
            .all(|(k, v)| o.get(k).is_some_and(|ov| is_subset(v, ov))),
        (Json::Array(d), Json::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// `text` cut to what a run log keeps, saying how much was left out.
fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= LOG_BODY_LIMIT {
        return text.into();
    }
    let mut end = LOG_BODY_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n< … ({} more bytes not kept)",
        &text[..end],
        text.len() - end
    )
    .into()
}

/// The run log of a REST run: every request sent and what came back.
pub fn log(ex: &Exchange) -> String {
    let mut out = String::new();
    for (req, status, text) in &ex.log {
        out.push_str(&format!("> {} {}\n", req.method, req.url));
        for (k, v) in &req.headers {
            out.push_str(&format!("> {k}: {v}\n"));
        }
        if let Some(a) = &req.basic_auth {
            // The user only: the password, in any encoding, never reaches a log.
            out.push_str(&format!("> Authorization: Basic {}:********\n", a.user));
        }
        if let Some(b) = &req.body {
            out.push_str(&format!(">\n> {b}\n"));
        }
        match status {
            Some(s) => out.push_str(&format!("< {s}\n< {}\n\n", clip(text.trim_end()))),
            None => out.push_str(&format!("! {text}\n\n")),
        }
    }
    match &ex.failure {
        Some(f) => out.push_str(&format!("FAILED: {f}\n")),
        None => out.push_str("OK\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_comparison() {
        assert!(is_subset(&json!({"a": 1}), &json!({"a": 1.0, "b": 2})));
        assert!(!is_subset(
            &json!({"a": 1, "c": 3}),
            &json!({"a": 1, "b": 2})
        ));
        assert!(is_subset(
            &json!({"a": {"x": [1, 2]}}),
            &json!({"a": {"x": [1, 2], "y": 0}})
        ));
        assert!(!is_subset(&json!({"a": [1]}), &json!({"a": [1, 2]})));
        assert!(is_subset(&Json::Null, &Json::Null));
    }

    fn req(body: Option<&str>) -> HttpRequest {
        HttpRequest {
            basic_auth: None,
            method: "PUT".into(),
            url: "http://x/d".into(),
            headers: vec![],
            body: body.map(str::to_owned),
            timeout_ms: 1000,
            expect: None,
        }
    }

    #[test]
    fn decision_follows_observation() {
        let obs = req(None);
        let update = req(Some(r#"{"name":"a"}"#));
        let create = req(Some(r#"{"name":"a","new":true}"#));
        let absent = result_of(404, Map::new(), String::new(), Action::None);
        let (r, a) = decide(&obs, &absent, &[404], Some(&create), &update, None)
            .unwrap()
            .unwrap();
        assert_eq!((r, a), (&create, Action::Create));
        let same = result_of(
            200,
            Map::new(),
            r#"{"name":"a","id":3}"#.into(),
            Action::None,
        );
        assert!(
            decide(&obs, &same, &[404], Some(&create), &update, None)
                .unwrap()
                .is_none()
        );
        let differs = result_of(200, Map::new(), r#"{"name":"b"}"#.into(), Action::None);
        assert_eq!(
            decide(&obs, &differs, &[404], None, &update, None)
                .unwrap()
                .unwrap()
                .1,
            Action::Update
        );
        let nested = result_of(
            200,
            Map::new(),
            r#"{"config":{"name":"a"}}"#.into(),
            Action::None,
        );
        assert!(
            decide(&obs, &nested, &[404], None, &update, Some("$.config"))
                .unwrap()
                .is_none()
        );
        let broken = result_of(500, Map::new(), "boom".into(), Action::None);
        assert!(decide(&obs, &broken, &[404], None, &update, None).is_err());
    }
}
