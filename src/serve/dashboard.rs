//! The web dashboard (SPEC §16): server-rendered HTML (maud, checked at compile time), one
//! stylesheet and a few lines of script inline, nothing fetched from elsewhere. Pages: the
//! overview (counts by model and status, the objects in error with their message, the
//! steps), a model's objects (filters, server-side pages), and one object (fields,
//! bookkeeping, what it depends on and what depends on it, a retry button).
//!
//! Every value shown is escaped by maud and masked for secrets first.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::AppState;
use super::view::{Node, TREE_DEPTH, sys_files, tree};
use crate::output::ObjectView;
use crate::store::{Millis, ObjectRecord, PageQuery, Status};

const PAGE: usize = 50;

const STYLE: &str = r#"
:root { --fg:#1d2430; --muted:#5b6676; --line:#e3e7ee; --bg:#f6f8fb; --card:#fff;
  --ok:#1a7f37; --error:#cf222e; --pending:#9a6700; --blocked:#6e7781; --deferred:#0969da; --deleting:#8250df; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1d2430; color:#fff; padding:10px 24px; display:flex; gap:24px; align-items:baseline; }
header a { color:#fff; text-decoration:none; font-weight:600; }
header .svc { color:#aeb8c6; font-size:13px; }
main { max-width:1200px; margin:0 auto; padding:20px 24px 48px; }
h1 { font-size:22px; margin:4px 0 16px; } h2 { font-size:17px; margin:28px 0 10px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:4px 0; overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:7px 14px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); font-weight:600; }
tr:last-child td { border-bottom:none; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
a { color:#0969da; }
.chip { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px; font-weight:600; color:#fff; }
.s-ok { background:var(--ok); } .s-error { background:var(--error); } .s-pending { background:var(--pending); }
.s-blocked { background:var(--blocked); } .s-deferred { background:var(--deferred); } .s-deleting { background:var(--deleting); }
.dot { display:inline-block; width:10px; height:10px; border-radius:50%; background:var(--error); margin-right:8px; }
.msg { color:var(--error); font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:13px; white-space:pre-wrap; }
.muted { color:var(--muted); }
form.filters { display:flex; gap:10px; margin-bottom:12px; flex-wrap:wrap; }
input, select, button { font:inherit; padding:5px 10px; border:1px solid var(--line); border-radius:6px; background:#fff; }
button { background:#1d2430; color:#fff; border-color:#1d2430; cursor:pointer; }
dl { display:grid; grid-template-columns: max-content 1fr; gap:4px 18px; margin:0; padding:10px 14px; }
dt { color:var(--muted); } dd { margin:0; font-family: ui-monospace, Menlo, monospace; font-size:13px; }
ul.tree { list-style:none; margin:0; padding:6px 14px; } ul.tree ul { list-style:none; padding-left:22px; }
ul.tree li { padding:2px 0; }
td:first-child { white-space:nowrap; }
.pager { margin-top:12px; display:flex; gap:14px; }
details.file { border-bottom:1px solid var(--line); padding:6px 14px; } details.file:last-child { border-bottom:none; }
details.file summary { cursor:pointer; }
details.file pre { margin:8px 0 4px; padding:10px; background:var(--bg); border-radius:6px; overflow-x:auto;
  font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; max-height:420px; }
"#;

/// Reloads `<main>` when the counts change, or when an object the page shows (an element
/// with its `data-obj`) changes: the events stream says when. A change that arrives while a
/// reload is under way reloads once more after it, so the page never rests on stale data.
const LIVE: &str = r#"
(function () {
  if (!window.EventSource) return;
  var es = new EventSource('/api/v1/events'), first = true, busy = false, again = false;
  function reload() {
    if (busy) { again = true; return; }
    busy = true; again = false;
    fetch(location.href, {credentials: 'same-origin'}).then(function (r) { return r.text(); }).then(function (t) {
      var d = new DOMParser().parseFromString(t, 'text/html'), m = d.querySelector('main');
      if (m) document.querySelector('main').innerHTML = m.innerHTML;
      busy = false; if (again) reload();
    }, function () { busy = false; });
  }
  es.addEventListener('counts', function () {
    if (first) { first = false; return; }
    reload();
  });
  es.addEventListener('object', function (e) {
    var o; try { o = JSON.parse(e.data); } catch (x) { return; }
    var name = o.model + '/' + o.key, shown = document.querySelectorAll('[data-obj]');
    for (var i = 0; i < shown.length; i++) {
      if (shown[i].getAttribute('data-obj') === name) { reload(); return; }
    }
  });
})();
"#;

fn page(state: &AppState, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · stepsync" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/" { "stepsync" }
                    span.svc { (state.svc.config.name) }
                }
                main { (body) }
                script { (PreEscaped(LIVE)) }
            }
        }
    }
}

fn chip(s: Status) -> Markup {
    html! { span class={ "chip s-" (s.as_str()) } { (s.as_str()) } }
}

fn object_href(model: &str, key: &str) -> String {
    format!("/objects/{}/{}", enc(model), enc(key))
}

/// A path segment or query value, percent-encoded (a key may hold `/`, `?`, `#`, spaces).
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn fail(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(fail)
}

/// `GET /`: the overview.
pub(crate) async fn overview(State(state): State<Arc<AppState>>) -> Response {
    blocking(move || {
        let counts = match state.store.counts_by_model_status() {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let errors = match state.store.page(&PageQuery {
            status: Some(Status::Error),
            limit: PAGE,
            ..PageQuery::default()
        }) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let steps = state.store.feed_statuses().unwrap_or_default();
        let watchers = state.store.watcher_statuses().unwrap_or_default();
        let mut by: BTreeMap<&str, BTreeMap<Status, usize>> = BTreeMap::new();
        for (m, s, n) in &counts {
            by.entry(m.as_str()).or_default().insert(*s, *n);
        }
        let now = Millis::now();
        let body = html! {
            h1 { "Overview" }
            div.card { table {
                tr { th { "Model" } th.num { "Objects" }
                     @for s in Status::ALL { th.num { (s.as_str()) } } }
                @for name in state.svc.schema.models.keys() {
                    @let c = by.get(name.as_str());
                    tr {
                        td { a href={ "/models/" (enc(name)) } { (name) } }
                        td.num { (c.map(|c| c.values().sum::<usize>()).unwrap_or(0)) }
                        @for s in Status::ALL {
                            @let n = c.and_then(|c| c.get(&s)).copied().unwrap_or(0);
                            td.num data-count={ (name) "/" (s.as_str()) } {
                                @if n > 0 { a href={ "/models/" (enc(name)) "?status=" (s.as_str()) } { (n) } }
                                @else { span.muted { "0" } }
                            }
                        }
                    }
                }
            } }
            h2 { "In error" }
            @if errors.is_empty() {
                p.muted { "Nothing is in error." }
            } @else {
                div.card { table {
                    tr { th { "Object" } th { "Message" } th { "Failures" } th { "Next retry" } }
                    @for o in &errors {
                        tr.error data-obj=(o.name()) {
                            td { span.dot {} a href=(object_href(&o.model, &o.key)) { (o.model) "/" (o.key) } }
                            td.msg { (state.svc.secrets.mask(&o.book.message)) }
                            td.num { (o.book.failures) }
                            td { (retry_text(o.book.next_retry_at, now)) }
                        }
                    }
                } }
            }
            @if !steps.is_empty() || !watchers.is_empty() {
                h2 { "Steps" }
                div.card { table {
                    tr { th { "Step" } th { "Runs" } th { "Last ok" } th { "Last outcome" } }
                    @for s in steps.iter().chain(watchers.iter()) {
                        tr {
                            td { (s.name) }
                            td.num { (s.runs) }
                            td { (s.last_ok.map(|t| t.rfc3339()).unwrap_or_else(|| "never".into())) }
                            td {
                                @if s.failures > 0 {
                                    span.dot {} span.msg { (s.failures) " failing: " (state.svc.secrets.mask(&s.message)) }
                                } @else { (chip(Status::Ok)) }
                            }
                        }
                    }
                } }
            }
        };
        page(&state, "Overview", body).into_response()
    })
    .await
}

fn retry_text(at: Option<Millis>, now: Millis) -> String {
    match at {
        None => "—".into(),
        Some(t) if t <= now => "due now".into(),
        Some(t) => format!("in {} s ({})", (t.0 - now.0 + 999) / 1000, t.rfc3339()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
}

/// `GET /models/{model}`: a model's objects, filtered, a page at a time.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    Query(q): Query<ListParams>,
) -> Response {
    blocking(move || {
        let Some(m) = state.svc.schema.model(&model) else {
            return (StatusCode::NOT_FOUND, format!("no model `{model}`")).into_response();
        };
        let status = q
            .status
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(Status::parse);
        let prefix = q.prefix.as_deref().filter(|p| !p.is_empty());
        let recs = match state.store.page(&PageQuery {
            model: Some(&m.name),
            status,
            prefix,
            after: q.after.as_deref().map(|k| (m.name.as_str(), k)),
            limit: PAGE + 1,
        }) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let more = recs.len() > PAGE;
        let shown = &recs[..recs.len().min(PAGE)];
        let fields: Vec<&String> = m.fields.keys().filter(|f| **f != m.key).take(4).collect();
        let now = Millis::now();
        let next = more.then(|| {
            let last = &shown[shown.len() - 1].key;
            format!(
                "/models/{}?status={}&prefix={}&after={}",
                enc(&m.name),
                status.map(|s| s.as_str()).unwrap_or(""),
                enc(prefix.unwrap_or("")),
                enc(last)
            )
        });
        let body = html! {
            h1 { (m.name) }
            form.filters method="get" {
                select name="status" {
                    option value="" { "any status" }
                    @for s in Status::ALL {
                        option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) }
                    }
                }
                input name="prefix" placeholder="key prefix" value=(prefix.unwrap_or(""));
                button type="submit" { "Filter" }
            }
            div.card { table {
                tr { th { (m.key) } th { "Status" } @for f in &fields { th { (f) } } th { "Message" } th { "Next retry" } }
                @for o in shown {
                    @let v = masked_view(&state, o);
                    tr data-obj=(o.name()) {
                        td { @if o.book.status == Status::Error { span.dot {} }
                             a href=(object_href(&o.model, &o.key)) { (o.key) } }
                        td { (chip(o.book.status)) }
                        @for f in &fields { td { (value_text(v["fields"].get(f.as_str()))) } }
                        td class=@if o.book.status == Status::Error { "msg" } @else { "muted" } {
                            (v["status"]["message"].as_str().unwrap_or(""))
                        }
                        td { (retry_text(o.book.next_retry_at, now)) }
                    }
                }
            } }
            @if shown.is_empty() { p.muted { "No objects match." } }
            div.pager {
                @if q.after.is_some() { a href={ "/models/" (enc(&m.name)) } { "« first page" } }
                @if let Some(n) = &next { a href=(n) { "next page »" } }
            }
        };
        page(&state, &m.name, body).into_response()
    })
    .await
}

/// The object's JSON view with secrets masked.
fn masked_view(state: &AppState, o: &ObjectRecord) -> serde_json::Value {
    let v = serde_json::to_value(ObjectView::new(&state.svc.schema, o)).unwrap_or_default();
    if state.svc.secrets.is_empty() {
        return v;
    }
    state.svc.secrets.mask_json(&v)
}

fn value_text(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn tree_html(nodes: &[Node]) -> Markup {
    html! {
        ul {
            @for n in nodes {
                li {
                    a href=(object_href(&n.obj.model, &n.obj.key)) { (n.obj.model) "/" (n.obj.key) }
                    " " (chip(n.obj.book.status))
                    @if n.worst != n.obj.book.status { span.muted { " worst below: " } (chip(n.worst)) }
                    @if !n.children.is_empty() { (tree_html(&n.children)) }
                }
            }
        }
    }
}

/// `GET /objects/{model}/{key}`.
pub(crate) async fn object(
    State(state): State<Arc<AppState>>,
    Path((model, key)): Path<(String, String)>,
) -> Response {
    blocking(move || {
        let o = match state.store.get(&model, &key) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return (StatusCode::NOT_FOUND, format!("{model}/{key} not found")).into_response();
            }
            Err(e) => return fail(e),
        };
        let v = masked_view(&state, &o);
        let up = tree(&state, &o, true, TREE_DEPTH);
        let down = tree(&state, &o, false, TREE_DEPTH);
        let now = Millis::now();
        let files = sys_files(&state, &o);
        let body = html! {
            h1 data-obj=(o.name()) { (o.model) "/" (o.key) " " (chip(o.book.status)) }
            @if o.book.status == Status::Error {
                p { span.dot {} span.msg { (v["status"]["message"].as_str().unwrap_or("")) } }
            } @else if o.book.status != Status::Ok {
                p.muted { (v["status"]["message"].as_str().unwrap_or("")) }
            }
            form method="post" action={ (object_href(&o.model, &o.key)) "/retry" } {
                button type="submit" { "Retry now" }
                span.muted { "  clears the backoff: the daemon's next pass runs it" }
            }
            h2 { "Fields" }
            div.card { dl {
                @if let Some(f) = v["fields"].as_object() {
                    @for (k, val) in f { dt { (k) } dd { (value_text(Some(val))) } }
                }
            } }
            h2 { "Bookkeeping" }
            div.card { dl {
                dt { "why pending" } dd { (v["status"]["reason"].as_str().unwrap_or("— (in sync)")) }
                dt { "next retry" } dd { (retry_text(o.book.next_retry_at, now)) }
                dt { "generation" } dd { (o.book.generation) " (synced " (o.book.synced_generation) ")" }
                dt { "failures" } dd { (o.book.failures) }
                dt { "last success" } dd { (o.book.last_success_at.map(|t| t.rfc3339()).unwrap_or_else(|| "never".into())) }
                dt { "last error" } dd { (o.book.last_error_at.map(|t| t.rfc3339()).unwrap_or_else(|| "never".into())) }
                dt { "updated" } dd { (o.book.updated.rfc3339()) }
                @if let Some(owner) = &o.owner { dt { "owner" } dd { (owner) } }
            } }
            h2 { "Depends on" }
            div.card { @if up.is_empty() { p.muted style="padding:0 14px" { "Nothing." } } @else { ul.tree { li { (tree_html(&up)) } } } }
            h2 { "Depended on by" }
            div.card { @if down.is_empty() { p.muted style="padding:0 14px" { "Nothing." } } @else { ul.tree { li { (tree_html(&down)) } } } }
            h2 { "Recipes" }
            p.muted { "In " code { (files.folder) } ": what the last sync rendered, to read and re-run." }
            div.card {
                @if files.recipes.is_empty() { p.muted style="padding:0 14px" { "Nothing rendered yet." } }
                @for f in &files.recipes { (file_html(f, false)) }
            }
            h2 { "Run logs" }
            div.card {
                @if files.runs.is_empty() { p.muted style="padding:0 14px" { "No run yet." } }
                // The newest open: what happened last is what one came to read.
                @for (i, f) in files.runs.iter().enumerate() { (file_html(f, i == 0)) }
            }
        };
        page(&state, &format!("{model}/{key}"), body).into_response()
    })
    .await
}

/// One sys dir file, folded.
fn file_html(f: &super::view::SysFile, open: bool) -> Markup {
    html! {
        details.file open[open] {
            summary { code { (f.name) } @if f.truncated { span.muted { " (first 256 KiB)" } } }
            pre { (f.content) }
        }
    }
}

/// `POST /objects/{model}/{key}/retry` from the object page's button.
pub(crate) async fn retry(
    State(state): State<Arc<AppState>>,
    Path((model, key)): Path<(String, String)>,
) -> Response {
    let (m, k) = (model.clone(), key.clone());
    let st = state.clone();
    let done = tokio::task::spawn_blocking(move || {
        crate::retry::retry(&st.svc, &*st.store, &m, Some(&k)).map(|_| st.wrote())
    })
    .await;
    match done {
        Ok(Ok(())) => Redirect::to(&object_href(&model, &key)).into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, e.to_string()).into_response(),
        Err(e) => fail(e),
    }
}

/// `GET /login`: a token field.
pub(crate) async fn login_form(State(state): State<Arc<AppState>>) -> Response {
    login_page(&state, None).into_response()
}

fn login_page(state: &AppState, error: Option<&str>) -> Markup {
    page(
        state,
        "Log in",
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.msg { (e) } }
            form method="post" action="/login" {
                input type="password" name="token" placeholder="read or write token" autofocus;
                " "
                button type="submit" { "Log in" }
            }
            p.muted { "The tokens are serve.tokens.read and serve.tokens.write in stepsync.yaml." }
        },
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /login`: a session for a valid token, as an HttpOnly, SameSite=Strict cookie.
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let Some(tokens) = &state.tokens else {
        return Redirect::to("/").into_response();
    };
    let Some(grant) = tokens.grant(f.token.trim()) else {
        return (
            StatusCode::UNAUTHORIZED,
            login_page(
                &state,
                Some("That token is neither the read nor the write token."),
            ),
        )
            .into_response();
    };
    match state.sessions.open(grant) {
        Ok(id) => (
            [(
                axum::http::header::SET_COOKIE,
                format!(
                    "{}={id}; HttpOnly; SameSite=Strict; Path=/",
                    super::auth::SESSION_COOKIE
                ),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => fail(e),
    }
}
