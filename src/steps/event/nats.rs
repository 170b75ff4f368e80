//! An event step's NATS JetStream consumer: durable, pull-based, acknowledged explicitly
//! and cumulatively (`AckPolicy::All`: acknowledging a batch's last message acknowledges the
//! batch), only after the store commit.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use futures_util::StreamExt;

use super::Message;

/// How long an unacknowledged message waits before JetStream sends it again.
const ACK_WAIT: Duration = Duration::from_secs(10);

pub(super) struct Source {
    messages: pull::Stream,
    stream: String,
    /// The last message of the last batch, acknowledged after the commit.
    last: Option<jetstream::Message>,
    /// The messages JetStream still held for the consumer past the last one received.
    behind: u64,
}

impl Source {
    pub(super) async fn connect(
        endpoint: &str,
        group: &str,
        step: &str,
        subject: &str,
        recorded: &(dyn Fn(&str) -> Result<Option<i64>, String> + Sync),
    ) -> Result<Source, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(endpoint)
            .await
            .map_err(|e| format!("cannot connect to NATS at {endpoint}: {e}"))?;
        let js = jetstream::new(client);
        // The stream that captures the subject; one is made when none does, so messages
        // published from now on are kept for the consumer.
        let stream = match js.stream_by_subject(subject).await {
            Ok(name) => js
                .get_stream(&name)
                .await
                .map_err(|e| format!("NATS stream {name}: {e}"))?,
            Err(_) => {
                let name = name_token(subject);
                js.get_or_create_stream(jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![subject.to_owned()],
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create a NATS stream for `{subject}`: {e}"))?
            }
        };
        let stream_name = stream.cached_info().config.name.clone();
        let durable = name_token(&format!("{group}-{step}"));
        // The store, not the consumer, knows what was applied. A durable consumer that
        // delivered past the recorded position holds messages delivered but never written
        // (a stop or crash before their commit): JetStream would send them again only after
        // `ack_wait`, after newer ones whose cumulative ack drops them, and their position
        // would be below the recorded one, so they would be lost. Such a consumer is made
        // again, delivering from just after the recorded position.
        let after = recorded(&stream_name)?;
        let from = after.map_or(0, |p| u64::try_from(p).unwrap_or(0));
        if let Ok(c) = stream.get_consumer::<pull::Config>(&durable).await
            && c.cached_info().delivered.stream_sequence > from
        {
            stream
                .delete_consumer(&durable)
                .await
                .map_err(|e| format!("NATS consumer {durable} on {stream_name}: {e}"))?;
        }
        let deliver_policy = match after {
            Some(_) => DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            None => DeliverPolicy::All,
        };
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: subject.to_owned(),
                    ack_policy: AckPolicy::All,
                    deliver_policy,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: i64::try_from(super::BATCH * 10).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("NATS consumer {durable} on {stream_name}: {e}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(super::BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| format!("NATS consumer {durable}: {e}"))?;
        Ok(Source {
            messages,
            stream: stream_name,
            last: None,
            behind: 0,
        })
    }

    pub(super) async fn batch(
        &mut self,
        max: usize,
        gather: Duration,
    ) -> Result<Vec<Message>, String> {
        let mut out = Vec::new();
        let first = self.messages.next().await;
        self.take(first, &mut out)?;
        while out.len() < max {
            match tokio::time::timeout(gather, self.messages.next()).await {
                Ok(m) => self.take(m, &mut out)?,
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn take(
        &mut self,
        m: Option<Result<jetstream::Message, pull::MessagesError>>,
        out: &mut Vec<Message>,
    ) -> Result<(), String> {
        let m = match m {
            None => return Err("the NATS consumer ended".to_owned()),
            Some(Err(e)) => return Err(format!("NATS: {e}")),
            Some(Ok(m)) => m,
        };
        let info = m.info().map_err(|e| format!("NATS message: {e}"))?;
        out.push(Message {
            topic: m.subject.to_string(),
            part: self.stream.clone(),
            pos: i64::try_from(info.stream_sequence).unwrap_or(i64::MAX),
            payload: m.payload.to_vec(),
        });
        self.behind = info.pending;
        self.last = Some(m);
        Ok(())
    }

    /// How many messages the consumer is behind, as of the last message received.
    pub(super) fn behind(&self) -> u64 {
        self.behind
    }

    pub(super) async fn ack(&mut self) -> Result<(), String> {
        match self.last.take() {
            Some(m) => m.ack().await.map_err(|e| format!("NATS ack: {e}")),
            None => Ok(()),
        }
    }
}

/// `s` as a JetStream stream or consumer name: letters, digits, `-` and `_`, anything else
/// (`.`, `*`, `>`, spaces) as `_`.
fn name_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
