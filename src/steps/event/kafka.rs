//! The event steps' Kafka consumer (librdkafka through rdkafka): one consumer in the group
//! named after the service reads every event step's topic. Offsets are never committed
//! automatically: a batch's offsets are committed after its store commit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::Message;
use crate::engine::progress::Progress;

/// How long a wait for messages goes before it asks whether librdkafka reported trouble.
const CHECK: Duration = Duration::from_secs(2);
/// How often librdkafka reports its statistics (milliseconds), where the consumer lag is.
const STATS_EVERY: &str = "1000";

/// librdkafka's errors and logs: into tracing, and the last error kept, so that a broker that
/// cannot be reached shows in `status` (librdkafka itself only retries, silently).
#[derive(Clone)]
struct Context {
    error: Arc<Mutex<Option<String>>>,
    lag: Lag,
}

/// Where the consumer's lag goes: to whom, and which step (`event/<name>`) reads each topic.
#[derive(Clone)]
pub(super) struct Lag {
    pub(super) to: Arc<dyn Progress>,
    pub(super) steps: Vec<(String, String)>,
}

impl rdkafka::ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => {
                tracing::info!(facility = fac, "librdkafka: {message}")
            }
            _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    /// librdkafka's statistics, every [`STATS_EVERY`]: each partition's `consumer_lag` is its
    /// high watermark less the group's committed offset, and offsets are committed only after
    /// the store commit, so the lag counts the messages not yet applied. Reported here, not
    /// per batch, so it comes down to 0 once the stream is idle.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, owner) in &self.lag.steps {
            let Some(t) = statistics.topics.get(topic) else {
                continue;
            };
            // Partition -1 is librdkafka's internal one; a lag of -1 is not known yet (no
            // offset committed).
            let known: Vec<i64> = t
                .partitions
                .iter()
                .filter(|(id, p)| **id >= 0 && p.consumer_lag >= 0)
                .map(|(_, p)| p.consumer_lag)
                .collect();
            if !known.is_empty() {
                let behind = known.iter().map(|&n| u64::try_from(n).unwrap_or(0)).sum();
                self.lag.to.event_lag(owner, behind);
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let msg = format!("Kafka: {error}: {reason}");
        tracing::debug!("{msg}");
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
    }
}

impl ConsumerContext for Context {
    /// A joined group's assignment is the moment messages start to flow (a new group's
    /// first join takes seconds): said in the log, so an operator (and B8) can tell.
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let names = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %names(tpl), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %names(tpl), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance failed"),
        }
    }
}

pub(super) struct Source {
    consumer: StreamConsumer<Context>,
    context: Context,
    /// The next offset to commit per (topic, partition), from the last batch.
    pending: BTreeMap<(String, i32), i64>,
}

impl Source {
    pub(super) fn connect(
        endpoint: &str,
        group: &str,
        topics: &[String],
        lag: Lag,
    ) -> Result<Source, String> {
        let context = Context {
            error: Arc::default(),
            lag,
        };
        let consumer: StreamConsumer<Context> = ClientConfig::new()
            .set("bootstrap.servers", endpoint)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning: nothing published before stepsync first
            // ran is skipped.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Static membership (KIP-345): a restarted stepsync takes the place of the one
            // that died at once, instead of waiting for the group to time the dead one out.
            .set("group.instance.id", group)
            .set("reconnect.backoff.max.ms", "5000")
            .set("statistics.interval.ms", STATS_EVERY)
            .create_with_context(context.clone())
            .map_err(|e| format!("cannot create the Kafka consumer for {endpoint}: {e}"))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| format!("cannot subscribe to {}: {e}", names.join(", ")))?;
        Ok(Source {
            consumer,
            context,
            pending: BTreeMap::new(),
        })
    }

    pub(super) async fn batch(
        &mut self,
        max: usize,
        gather: Duration,
    ) -> Result<Vec<Message>, String> {
        let mut out = Vec::new();
        // Waiting with nothing to read: fine while librdkafka says nothing is wrong.
        let first = loop {
            match tokio::time::timeout(CHECK, self.consumer.recv()).await {
                Ok(m) => {
                    // Messages flow: what librdkafka reported before is over.
                    self.context
                        .error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    break m;
                }
                Err(_) => {
                    if let Some(e) = self
                        .context
                        .error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                    {
                        return Err(e);
                    }
                }
            }
        };
        take(&mut self.pending, first, &mut out)?;
        while out.len() < max {
            match tokio::time::timeout(gather, self.consumer.recv()).await {
                Ok(m) => take(&mut self.pending, m, &mut out)?,
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Commits the offsets after the last batch. Asynchronous: a commit lost to a crash
    /// only brings messages again, which the store's positions skip.
    pub(super) fn ack(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.pending) {
            tpl.add_partition_offset(&topic, partition, Offset::Offset(next))
                .map_err(|e| format!("Kafka offsets: {e}"))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| format!("Kafka commit: {e}"))
    }
}

/// Adds a received message to `out`, noting its partition's next offset in `pending`.
fn take(
    pending: &mut BTreeMap<(String, i32), i64>,
    m: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
    out: &mut Vec<Message>,
) -> Result<(), String> {
    let m = m.map_err(|e| format!("Kafka: {e}"))?;
    let topic = m.topic().to_owned();
    out.push(Message {
        part: format!("{topic}/{}", m.partition()),
        pos: m.offset(),
        payload: m.payload().unwrap_or_default().to_vec(),
        topic: topic.clone(),
    });
    pending.insert((topic, m.partition()), m.offset() + 1);
    Ok(())
}
