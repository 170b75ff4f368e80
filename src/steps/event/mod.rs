//! Event steps at run time (SPEC §14): messages from the event bus become writes.
//!
//! Delivery is at least once, writes exactly once. A batch of messages is applied in one
//! store transaction together with each step's last position (Kafka: partition offset,
//! JetStream: stream sequence); the broker is acknowledged only after that commit. A
//! message at or below the recorded position is a redelivery and is skipped. A message
//! that cannot be decoded or mapped becomes a dead letter, in the same transaction, and the
//! stream goes on. A broker that is down or goes away is retried with backoff; the daemon
//! goes on syncing meanwhile.

mod kafka;
mod nats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, info_span, warn};

use super::feed::{self, FeedError, Written};
use crate::bookkeeping::Millis;
use crate::config::BusKind;
use crate::engine::Engine;
use crate::stepdef::{Decode, EventStep};
use crate::store::{DEAD_LETTER_LIMIT, DeadLetter, StepStatus, WriteTx};
use crate::template::from_serde;

/// Messages applied per store transaction, at most.
const BATCH: usize = 2000;
/// How long a batch waits for more messages once it has one.
const GATHER: Duration = Duration::from_millis(5);
/// Reconnecting to a broker: the first wait, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One message as the bus delivered it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// The Kafka topic or the NATS subject it came from.
    pub(crate) topic: String,
    /// Where its position counts: `topic/partition` (Kafka), the stream (NATS).
    pub(crate) part: String,
    /// The Kafka offset or the stream sequence.
    pub(crate) pos: i64,
    pub(crate) payload: Vec<u8>,
}

/// A connection to the bus for some of the event steps.
enum Source {
    /// Boxed: the JetStream pull stream is large beside the Kafka consumer's handle.
    Nats(Box<nats::Source>),
    Kafka(kafka::Source),
}

impl Source {
    async fn connect(engine: &Engine, steps: &[usize]) -> Result<Source, String> {
        let Some(bus) = &engine.svc.config.event_bus else {
            return Err("no event_bus in stepsync.yaml".into());
        };
        let group = bus
            .group
            .clone()
            .unwrap_or_else(|| engine.svc.config.name.clone());
        let events = &engine.svc.stepdefs.events;
        match bus.kind {
            BusKind::Nats => {
                let s = &events[steps[0]];
                let owner = s.owner();
                let recorded = |stream: &str| -> Result<Option<i64>, String> {
                    let tx = engine.store.write().map_err(|e| e.to_string())?;
                    tx.position(&owner, stream).map_err(|e| e.to_string())
                };
                nats::Source::connect(&bus.endpoint, &group, &s.name, &s.topic, &recorded)
                    .await
                    .map(|s| Source::Nats(Box::new(s)))
            }
            BusKind::Kafka => {
                let topics: Vec<String> = steps.iter().map(|&i| events[i].topic.clone()).collect();
                let lag = kafka::Lag {
                    to: engine.progress.clone(),
                    steps: steps
                        .iter()
                        .map(|&i| (events[i].topic.clone(), events[i].owner()))
                        .collect(),
                };
                kafka::Source::connect(&bus.endpoint, &group, &topics, lag).map(Source::Kafka)
            }
        }
    }

    /// The next messages: waits for one, then takes what else arrives at once.
    async fn batch(&mut self) -> Result<Vec<Message>, String> {
        match self {
            Source::Nats(s) => s.batch(BATCH, GATHER).await,
            Source::Kafka(s) => s.batch(BATCH, GATHER).await,
        }
    }

    /// How many messages the consumer is behind, as of the last batch (NATS: JetStream's
    /// pending count; Kafka reports its lag from librdkafka's statistics instead).
    fn behind(&self) -> Option<u64> {
        match self {
            Source::Nats(s) => Some(s.behind()),
            Source::Kafka(_) => None,
        }
    }

    /// Acknowledges every message of the last batch (after its commit).
    async fn ack(&mut self) -> Result<(), String> {
        match self {
            Source::Nats(s) => s.ack().await,
            Source::Kafka(s) => s.ack(),
        }
    }
}

/// The groups of event steps that share a connection: for Kafka one consumer (the group
/// named after the service) reads every topic; for NATS each step has its own durable
/// consumer.
pub(crate) fn sources(engine: &Engine) -> Vec<Vec<usize>> {
    let n = engine.svc.stepdefs.events.len();
    match engine.svc.config.event_bus.as_ref().map(|b| b.kind) {
        _ if n == 0 => Vec::new(),
        Some(BusKind::Kafka) => vec![(0..n).collect()],
        Some(BusKind::Nats) => (0..n).map(|i| vec![i]).collect(),
        None => Vec::new(),
    }
}

/// What a batch came to.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) written: usize,
    pub(crate) skipped: usize,
    pub(crate) dead: usize,
}

/// Applies `batch` for `steps` in `tx`: each message once per step that reads its topic,
/// past the recorded position only, with the positions and statuses.
pub(crate) fn apply(
    engine: &Engine,
    tx: &mut dyn WriteTx,
    steps: &[usize],
    batch: &[Message],
    now: Millis,
) -> Result<Applied, FeedError> {
    let events = &engine.svc.stepdefs.events;
    // The service vars as a template value once per batch, not once per message.
    let vars = from_serde(&engine.svc.config.vars);
    let mut out = Applied::default();
    let mut last: HashMap<(usize, String), Option<i64>> = HashMap::new();
    let mut counts: HashMap<usize, i64> = HashMap::new();
    for m in batch {
        for &i in steps.iter().filter(|&&i| events[i].topic_matches(&m.topic)) {
            let step = &events[i];
            let owner = step.owner();
            let at = match last.get(&(i, m.part.clone())) {
                Some(p) => *p,
                None => {
                    let p = tx.position(&owner, &m.part)?;
                    last.insert((i, m.part.clone()), p);
                    p
                }
            };
            if at.is_some_and(|p| m.pos <= p) {
                out.skipped += 1;
                continue;
            }
            match handle(engine, tx, step, &vars, m, now) {
                Ok(w) => {
                    if w.changed() {
                        out.written += 1;
                    }
                }
                Err(FeedError::Invalid(error)) => {
                    out.dead += 1;
                    tx.put_dead_letter(&DeadLetter {
                        id: 0,
                        step: owner.clone(),
                        part: m.part.clone(),
                        pos: m.pos,
                        at: now,
                        message: payload_text(&m.payload),
                        error: engine.clean_message(&error),
                    })?;
                }
                Err(e) => return Err(e),
            }
            *counts.entry(i).or_default() += 1;
            tx.put_position(&owner, &m.part, m.pos)?;
            last.insert((i, m.part.clone()), Some(m.pos));
        }
    }
    for (i, n) in counts {
        let name = events[i].owner();
        let mut s = tx.feed_status(&name)?.unwrap_or(StepStatus {
            name,
            ..StepStatus::default()
        });
        s.runs += n;
        s.last_run = Some(now);
        s.last_ok = Some(now);
        s.failures = 0;
        s.message.clear();
        tx.put_feed_status(&s)?;
    }
    Ok(out)
}

/// One message for one step: decoded, mapped, written.
fn handle(
    engine: &Engine,
    tx: &mut dyn WriteTx,
    step: &EventStep,
    vars: &minijinja::Value,
    m: &Message,
    now: Millis,
) -> Result<Written, FeedError> {
    let event = decode(step.decode, &m.payload).map_err(FeedError::Invalid)?;
    let svc = &engine.svc;
    let t = &svc.stepdefs.templates;
    let ctx = minijinja::Value::from(std::collections::BTreeMap::from([
        ("vars", vars.clone()),
        ("event", from_serde(&event)),
    ]));
    let action = match &step.action {
        None => "upsert".to_owned(),
        Some(a) => t
            .render_string(a, &ctx)
            .map_err(|e| FeedError::Invalid(format!("action: {e}")))?
            .trim()
            .to_owned(),
    };
    match action.as_str() {
        "upsert" => {
            let w = feed::render(svc, t, &step.map, &ctx).map_err(FeedError::Invalid)?;
            feed::upsert(svc, tx, &step.owner(), &w, !step.map.fields.is_empty(), now)
        }
        "delete" => {
            let key = t
                .render_string(&step.map.key, &ctx)
                .map_err(|e| FeedError::Invalid(format!("{} key: {e}", step.map.model)))?;
            feed::delete(svc, tx, &step.map.model, &key, now)
        }
        "ignore" => Ok(Written::Unchanged),
        other => Err(FeedError::Invalid(format!(
            "action rendered `{other}`: expected `upsert`, `delete` or `ignore`"
        ))),
    }
}

fn decode(how: Decode, payload: &[u8]) -> Result<Value, String> {
    match how {
        Decode::Json => serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}")),
        Decode::Yaml => {
            let text = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
            serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))
        }
        Decode::Text => std::str::from_utf8(payload)
            .map(|s| Value::String(s.to_owned()))
            .map_err(|e| format!("not UTF-8: {e}")),
    }
}

/// What a dead letter keeps of a payload.
fn payload_text(p: &[u8]) -> String {
    let p = &p[..p.len().min(DEAD_LETTER_LIMIT)];
    String::from_utf8_lossy(p).into_owned()
}

impl EventStep {
    /// Whether a message on `topic` is this step's: the same Kafka topic, or a NATS subject
    /// the step's subject (which may hold `*` and `>`) matches.
    pub(crate) fn topic_matches(&self, topic: &str) -> bool {
        if self.topic == topic {
            return true;
        }
        let mut want = self.topic.split('.');
        let mut got = topic.split('.');
        loop {
            match (want.next(), got.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(w), Some(g)) if w == g => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

/// Records a failure of the connection or of the store for `steps` (their messages stay
/// unacknowledged and come again).
fn record_failure(engine: &Engine, steps: &[usize], msg: &str) {
    let events = &engine.svc.stepdefs.events;
    let now = Millis::now();
    let result = (|| -> Result<(), crate::store::StoreError> {
        let mut tx = engine.store.write()?;
        for &i in steps {
            let name = events[i].owner();
            let mut s = tx.feed_status(&name)?.unwrap_or(StepStatus {
                name,
                ..StepStatus::default()
            });
            s.failures += 1;
            s.last_error_at = Some(now);
            s.message = engine.clean_message(msg);
            tx.put_feed_status(&s)?;
        }
        tx.commit()
    })();
    if let Err(e) = result {
        warn!(error = %e, "cannot record the event step's failure");
    }
}

/// The backoff of a consumer whose bus or store fails.
struct Retry {
    wait: Duration,
    failing: bool,
}

impl Retry {
    /// Records `msg` as the steps' failure and waits before the next try; `false` when
    /// `stop` came first.
    async fn failed(
        &mut self,
        engine: &Arc<Engine>,
        steps: &[usize],
        msg: String,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let (e, st) = (engine.clone(), steps.to_vec());
        let _ = tokio::task::spawn_blocking(move || record_failure(&e, &st, &msg)).await;
        self.failing = true;
        let wait = self.wait;
        self.wait = (self.wait * 2).min(RETRY_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = stop.changed() => false,
        }
    }
}

/// Consumes for `steps` until `stop`: connects (retrying with backoff), then applies batch
/// after batch, acknowledging each after its commit. `changed` hears of every batch that
/// wrote something.
pub(crate) async fn run(
    engine: Arc<Engine>,
    steps: Vec<usize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    changed: tokio::sync::mpsc::Sender<()>,
) {
    let names: Vec<&str> = steps
        .iter()
        .map(|&i| engine.svc.stepdefs.events[i].name.as_str())
        .collect();
    let span = info_span!("event", steps = %names.join(","));
    let mut retry = Retry {
        wait: RETRY_FIRST,
        failing: false,
    };
    'connect: loop {
        if *stop.borrow() {
            return;
        }
        let source = tokio::select! {
            s = Source::connect(&engine, &steps) => s,
            _ = stop.changed() => return,
        };
        let mut source = match source {
            Ok(s) => s,
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "cannot reach the event bus"));
                if !retry.failed(&engine, &steps, e, &mut stop).await {
                    return;
                }
                continue 'connect;
            }
        };
        span.in_scope(|| info!("consuming"));
        loop {
            let batch = tokio::select! {
                b = source.batch() => b,
                _ = stop.changed() => return,
            };
            let batch = match batch {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => b,
                Err(e) => {
                    span.in_scope(|| warn!(error = %e, "the event bus failed; reconnecting"));
                    if !retry.failed(&engine, &steps, e, &mut stop).await {
                        return;
                    }
                    continue 'connect;
                }
            };
            let (e2, st, n, t0) = (
                engine.clone(),
                steps.clone(),
                batch.len(),
                std::time::Instant::now(),
            );
            // The commit is not raced against `stop`: once started it ends, and the ack after
            // it is what a stop may lose (the redelivery is then skipped).
            let result = tokio::task::spawn_blocking(move || {
                let mut tx = e2.store.write()?;
                let applied = apply(&e2, &mut *tx, &st, &batch, Millis::now())?;
                tx.commit()?;
                Ok::<Applied, FeedError>(applied)
            })
            .await
            .map_err(|e| FeedError::Invalid(format!("the writer stopped: {e}")))
            .and_then(|r| r);
            match result {
                Ok(a) => {
                    span.in_scope(|| {
                        tracing::debug!(
                            messages = n,
                            written = a.written,
                            ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                            "batch committed"
                        )
                    });
                    if let Some(behind) = source.behind() {
                        for &i in &steps {
                            let owner = engine.svc.stepdefs.events[i].owner();
                            engine.progress.event_lag(&owner, behind);
                        }
                    }
                    if let Err(e) = source.ack().await {
                        span.in_scope(|| warn!(error = %e, "cannot acknowledge; the messages will come again and be skipped"));
                    }
                    if retry.failing {
                        span.in_scope(|| info!("consuming again"));
                    }
                    retry = Retry {
                        wait: RETRY_FIRST,
                        failing: false,
                    };
                    if a.dead > 0 {
                        span.in_scope(|| {
                            warn!(
                                dead_letters = a.dead,
                                "messages that cannot be applied were dead-lettered"
                            )
                        });
                    }
                    if a.written > 0 {
                        let _ = changed.try_send(());
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    span.in_scope(
                        || warn!(error = %msg, "cannot write the messages; they will come again"),
                    );
                    // Unacknowledged messages are delivered again to a new consumer session.
                    if !retry.failed(&engine, &steps, msg, &mut stop).await {
                        return;
                    }
                    continue 'connect;
                }
            }
        }
    }
}
