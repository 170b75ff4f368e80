//! Pull steps at run time (SPEC §13). Each step has a task of its own that polls on its own
//! timer (the interval with ±10% jitter), one poll at a time, so a slow or hanging backend
//! delays nothing but its own step. A poll reads every page first and renders every item;
//! only then are the writes made, in one store transaction with the step's status: a poll
//! that fails anywhere writes nothing but its failure, and is tried again with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonpath_rust::JsonPath;
use serde_json::Value;
use tracing::{debug, info, info_span, warn};

use super::feed::{self, FeedError, Write, Written};
use crate::bookkeeping::Millis;
use crate::engine::Engine;
use crate::payload::rest;
use crate::stepdef::PullStep;
use crate::store::StepStatus;
use crate::template::from_serde;

/// More pages than this in one poll is taken for a `next` that never ends.
const MAX_PAGES: usize = 100_000;

/// What one poll listed and would write.
pub(crate) struct Listing {
    pub(crate) writes: Vec<Write>,
    pub(crate) pages: usize,
}

/// What one poll wrote, object by object.
#[derive(Debug, Default)]
pub(crate) struct Polled {
    pub(crate) effects: Vec<(Written, String, String)>,
}

impl Polled {
    pub(crate) fn changed(&self) -> usize {
        self.effects.iter().filter(|(w, ..)| w.changed()).count()
    }
}

/// Sends the step's request, follows `next` to the last page, and renders every item.
pub(crate) async fn list(engine: &Engine, step: &PullStep) -> Result<Listing, String> {
    let svc = &engine.svc;
    let t = &svc.stepdefs.templates;
    let vars = from_serde(&svc.config.vars);
    let ctx = minijinja::Value::from(std::collections::BTreeMap::from([("vars", vars.clone())]));
    let mut req = rest::render_request(t, &step.request, &ctx, rest::DEFAULT_TIMEOUT)
        .map_err(|e| format!("request: {e}"))?;
    let mut writes = Vec::new();
    let mut keys = HashSet::new();
    let mut seen_urls = HashSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        if pages > MAX_PAGES || !seen_urls.insert(req.url.clone()) {
            return Err(format!(
                "{}: `next` leads back to a page already read",
                req.url
            ));
        }
        let page = rest::fetch(engine.payloads.http(), &req).await?;
        let body: Value = serde_json::from_str(&page.text)
            .map_err(|e| format!("{} {}: the answer is not JSON: {e}", req.method, req.url))?;
        let items = body
            .query(&step.items)
            .map_err(|e| format!("items {}: {e}", step.items))?;
        // A page without the list the items come from is no listing (an error object, an API
        // that changed): a failed poll, never an empty listing that `prune` would act on.
        if items.is_empty()
            && let Some(list) = container(&step.items)
            && body.query(list).map_or(true, |found| found.is_empty())
        {
            return Err(format!(
                "{} {}: items {}: the page has nothing at {list}",
                req.method, req.url, step.items
            ));
        }
        for item in items {
            let c = minijinja::Value::from(std::collections::BTreeMap::from([
                ("vars", vars.clone()),
                ("item", from_serde(item)),
            ]));
            let w = feed::render(svc, t, &step.map, &c)?;
            if !keys.insert(w.key.clone()) {
                return Err(format!("the listing has {}/{} twice", w.model, w.key));
            }
            writes.push(w);
        }
        let next = match &step.next {
            None => None,
            Some(path) => match body.query(path) {
                Ok(found) => found.first().and_then(|v| match v {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                }),
                Err(e) => return Err(format!("next {path}: {e}")),
            },
        };
        let Some(next) = next else { break };
        // A relative `next` is resolved against the page that gave it, as a browser would.
        let url = reqwest::Url::parse(&req.url)
            .and_then(|base| base.join(&next))
            .map_err(|e| format!("next page `{next}`: {e}"))?;
        req.url = url.to_string();
        req.body = None;
    }
    Ok(Listing { writes, pages })
}

/// The path of the list an items path takes its items from (`$.zones` of `$.zones[*]`, of
/// `$.zones.*` or of `$.zones[?@.up]`), when it has that shape and is not the root.
fn container(items: &str) -> Option<&str> {
    let p = items.trim_end();
    let list = p
        .strip_suffix("[*]")
        .or_else(|| p.strip_suffix(".*"))
        .or_else(|| {
            p.ends_with(']')
                .then(|| p.rfind("[?"))
                .flatten()
                .map(|i| &p[..i])
        })?;
    (list.trim() != "$").then_some(list)
}

/// Writes a listing in `tx`: every item, then (`prune`) the deletion of the objects the step
/// owns that it no longer lists.
pub(crate) fn apply(
    engine: &Engine,
    tx: &mut dyn crate::store::WriteTx,
    step: &PullStep,
    listing: &Listing,
    now: Millis,
) -> Result<Polled, FeedError> {
    let svc = &engine.svc;
    let owner = step.owner();
    let has_fields = !step.map.fields.is_empty();
    let mut out = Polled::default();
    for w in &listing.writes {
        let done = feed::upsert(svc, tx, &owner, w, has_fields, now)?;
        out.effects.push((done, w.model.clone(), w.key.clone()));
    }
    if step.prune {
        let listed: HashSet<&str> = listing.writes.iter().map(|w| w.key.as_str()).collect();
        for o in tx.owned_by(&owner)? {
            if o.model == step.map.model && !o.book.deleted && !listed.contains(o.key.as_str()) {
                let done = feed::delete(svc, tx, &o.model, &o.key, now)?;
                out.effects.push((done, o.model.clone(), o.key.clone()));
            }
        }
    }
    Ok(out)
}

/// One poll, recorded: the writes and the step's status in one transaction, or only the
/// failure. Returns how many objects changed.
pub(crate) async fn poll(engine: &Arc<Engine>, step: usize) -> Result<usize, String> {
    let s = &engine.svc.stepdefs.pulls[step];
    let name = s.owner();
    let listing = list(engine, s).await;
    let e = engine.clone();
    let record = move || -> Result<usize, String> {
        let s = &e.svc.stepdefs.pulls[step];
        let now = Millis::now();
        let mut tx = e.store.write().map_err(|x| x.to_string())?;
        let mut status = tx
            .feed_status(&name)
            .map_err(|x| x.to_string())?
            .unwrap_or(StepStatus {
                name: name.clone(),
                ..StepStatus::default()
            });
        status.runs += 1;
        status.last_run = Some(now);
        let result = listing.and_then(|l| {
            apply(&e, &mut *tx, s, &l, now)
                .map(|p| (p, l.pages))
                .map_err(|x| x.to_string())
        });
        let out = match result {
            Ok((polled, pages)) => {
                status.failures = 0;
                status.last_ok = Some(now);
                status.message = String::new();
                debug!(pages, changed = polled.changed(), "polled");
                Ok(polled.changed())
            }
            Err(msg) => {
                // Nothing of a failed poll is written: start again from the store as it is.
                drop(tx);
                tx = e.store.write().map_err(|x| x.to_string())?;
                status.failures += 1;
                status.last_error_at = Some(now);
                status.message = e.clean_message(&msg);
                Err(status.message.clone())
            }
        };
        tx.put_feed_status(&status).map_err(|x| x.to_string())?;
        tx.commit().map_err(|x| x.to_string())?;
        out
    };
    tokio::task::spawn_blocking(record)
        .await
        .map_err(|e| format!("the poll's writer stopped: {e}"))?
}

/// The wait before the next poll: the interval with ±10% jitter, or after `failures`
/// failures the service's backoff, never longer than the interval (or the backoff's
/// first step, when that is longer): a failing backend is asked no more often than a
/// healthy one, and a recovered one is seen within one interval.
pub(crate) fn next_wait(engine: &Engine, step: &PullStep, failures: u32) -> Duration {
    let unit = crate::backoff::unit_random();
    let interval = step.interval.mul_f64(0.9 + 0.2 * unit);
    if failures == 0 {
        return interval;
    }
    let b = &engine.svc.config.backoff;
    let cap = step.interval.max(b.initial.0);
    crate::backoff::delay_with(b, failures, unit).min(cap)
}

/// Runs pull step `step` until `stop`: polls at once, then on its timer. `changed` hears of
/// every poll that wrote something, so the daemon starts a pass at once.
pub(crate) async fn run(
    engine: Arc<Engine>,
    step: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
    changed: tokio::sync::mpsc::Sender<()>,
) {
    let s = &engine.svc.stepdefs.pulls[step];
    let span = info_span!("pull", step = %s.name);
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let result = {
            let _g = span.enter();
            debug!("polling");
            drop(_g);
            tokio::select! {
                r = poll(&engine, step) => r,
                _ = stop.changed() => return,
            }
        };
        match result {
            Ok(n) => {
                if failures > 0 {
                    span.in_scope(|| info!("poll succeeded again"));
                }
                failures = 0;
                if n > 0 {
                    span.in_scope(|| info!(changed = n, "poll wrote changes"));
                    let _ = changed.try_send(());
                }
            }
            Err(msg) => {
                failures = failures.saturating_add(1);
                span.in_scope(|| warn!(failures, error = %msg, "poll failed"));
            }
        }
        let wait = next_wait(&engine, s, failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
