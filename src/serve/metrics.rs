//! `/metrics` (SPEC §16) in the Prometheus text format, with prometheus-client. Run counts
//! and durations are counted as runs end (the engine tells [`Metrics`] through its
//! `Progress`); objects by status, steps and the lease are read from the store at each
//! scrape. Labels are models, phases, results and step names: never an object.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use crate::engine::progress::Progress;
use crate::store::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    model: String,
    phase: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    model: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

/// The metric families; one per `serve` process.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_errors: Family<ModelLabel, Counter>,
    run_seconds: Family<ModelLabel, Histogram>,
    in_flight: Gauge,
    queue: Gauge,
    objects: Family<ObjectLabels, Gauge>,
    step_last_success: Family<StepLabel, Gauge<f64, AtomicU64>>,
    step_failures: Family<StepLabel, Gauge>,
    dead_letters: Gauge,
    event_lag: Family<StepLabel, Gauge>,
    lease_held: Gauge,
}

fn histogram() -> Histogram {
    // 1 ms to about 65 s: a REST call to a playbook run.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stepsync");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Object runs ended, by model, phase (sync, delete) and result (ok, error, deferred, unchanged)",
            runs.clone(),
        );
        let run_errors = Family::<ModelLabel, Counter>::default();
        registry.register(
            "run_errors",
            "Object runs that ended in error, by model",
            run_errors.clone(),
        );
        let run_seconds =
            Family::<ModelLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register_with_unit(
            "run_duration",
            "How long object runs took, rendering and the backend call, by model",
            prometheus_client::registry::Unit::Seconds,
            run_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "runs_in_flight",
            "Object runs in flight now",
            in_flight.clone(),
        );
        let queue = Gauge::default();
        registry.register(
            "queue_depth",
            "Objects the current pass has yet to finish",
            queue.clone(),
        );
        let objects = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "objects",
            "Objects in the store, by model and status",
            objects.clone(),
        );
        let step_last_success = Family::<StepLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "step_last_success_timestamp",
            "When each pull or event step last succeeded (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            step_last_success.clone(),
        );
        let step_failures = Family::<StepLabel, Gauge>::default();
        registry.register(
            "step_consecutive_failures",
            "Failures in a row of each pull or event step",
            step_failures.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letters",
            "Event messages kept as dead letters",
            dead_letters.clone(),
        );
        let event_lag = Family::<StepLabel, Gauge>::default();
        registry.register(
            "event_consumer_lag",
            "Messages on the bus each event step has yet to apply, as of its last batch",
            event_lag.clone(),
        );
        let lease_held = Gauge::default();
        registry.register(
            "lease_held",
            "1 while this process holds the store's runner lease",
            lease_held.clone(),
        );
        Metrics {
            registry,
            runs,
            run_errors,
            run_seconds,
            in_flight,
            queue,
            objects,
            step_last_success,
            step_failures,
            dead_letters,
            event_lag,
            lease_held,
        }
    }
}

impl Progress for Metrics {
    fn start(&self, jobs: usize) {
        self.queue.inc_by(i64::try_from(jobs).unwrap_or(i64::MAX));
    }

    fn advance(&self, n: usize) {
        self.queue.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn finish(&self) {
        self.queue.set(0);
    }

    fn run_started(&self, _model: &str) {
        self.in_flight.inc();
    }

    fn run_finished(&self, model: &str, phase: &str, result: &str, secs: f64) {
        self.in_flight.dec();
        self.runs
            .get_or_create(&RunLabels {
                model: model.to_owned(),
                phase: phase.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        let m = ModelLabel {
            model: model.to_owned(),
        };
        if result == "error" {
            self.run_errors.get_or_create(&m).inc();
        }
        self.run_seconds.get_or_create(&m).observe(secs);
    }

    fn event_lag(&self, step: &str, behind: u64) {
        self.event_lag
            .get_or_create(&StepLabel {
                step: step.to_owned(),
            })
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
    }
}

impl Metrics {
    /// Reads what the store knows into the gauges.
    fn refresh(&self, state: &AppState) -> Result<(), crate::store::StoreError> {
        let store = &*state.store;
        self.objects.clear();
        for name in state.svc.schema.models.keys() {
            for s in Status::ALL {
                // Every status of every model, zeros too: a series that appears only
                // once it is nonzero breaks `rate()` and alerts on absence.
                self.objects
                    .get_or_create(&ObjectLabels {
                        model: name.clone(),
                        status: s.as_str().to_owned(),
                    })
                    .set(0);
            }
        }
        for (model, status, n) in store.counts_by_model_status()? {
            self.objects
                .get_or_create(&ObjectLabels {
                    model,
                    status: status.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for s in store.feed_statuses()? {
            let l = StepLabel { step: s.name };
            if let Some(ok) = s.last_ok {
                self.step_last_success
                    .get_or_create(&l)
                    .set(ok.0 as f64 / 1000.0);
            }
            self.step_failures.get_or_create(&l).set(s.failures);
        }
        let (dead, _) = store.dead_letters(0)?;
        self.dead_letters
            .set(i64::try_from(dead).unwrap_or(i64::MAX));
        let held = state.holds_lease()?;
        self.lease_held.set(i64::from(held));
        Ok(())
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let st = state.clone();
    let text = tokio::task::spawn_blocking(move || {
        st.metrics.refresh(&st)?;
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &st.metrics.registry).map_err(|e| {
            crate::store::StoreError::Invalid {
                path: "/metrics".into(),
                message: e.to_string(),
            }
        })?;
        Ok::<String, crate::store::StoreError>(out)
    })
    .await;
    match text {
        Ok(Ok(t)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        Ok(Err(e)) => super::ApiError::from(e).into_response(),
        Err(e) => {
            super::ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}
