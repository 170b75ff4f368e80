//! The bookkeeping state machine (SPEC §5.1, §5.3, §5.4): what makes an object due and why,
//! and what each event — an apply, a delete, a retry, a run's outcome — does to its
//! bookkeeping. Everything here is a pure function over [`Bookkeeping`]; the scheduler,
//! `plan`, `status` and every store use these and nothing else, so the rules live once.
//! Stores only persist what these functions return (see [`crate::store::WriteTx`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Backoff;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Millis {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// RFC 3339, UTC, whole seconds (`2026-01-01T00:00:00Z`).
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0));
        humantime::format_rfc3339_seconds(t).to_string()
    }

    /// `self + d`, saturating.
    pub fn after(self, d: Duration) -> Millis {
        Millis(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// The engine's view of an object (SPEC §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Ok,
    Error,
    Deferred,
    Blocked,
    Deleting,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Ok,
        Status::Error,
        Status::Deferred,
        Status::Blocked,
        Status::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Deferred => "deferred",
            Status::Blocked => "blocked",
            Status::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The original framework's `backend_code`: 0 pending/deferred, 1 ok, 2 error/blocked.
    pub fn backend_code(self) -> u8 {
        match self {
            Status::Ok => 1,
            Status::Error | Status::Blocked => 2,
            Status::Pending | Status::Deferred | Status::Deleting => 0,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bookkeeping owned by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Bookkeeping {
    pub status: Status,
    pub message: String,
    pub generation: i64,
    pub synced_generation: i64,
    pub failures: u32,
    pub next_retry_at: Option<Millis>,
    pub deleted: bool,
    pub created: Millis,
    pub updated: Millis,
    pub enacted: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_error_at: Option<Millis>,
    /// A sync payload was ever sent for it: the backend may hold it, so deleting it runs
    /// the delete payload. One never sent is purged without a backend call (SPEC §5.4).
    pub attempted: bool,
}

/// The intent a run acted on: what it read of the object when it started. An outcome is
/// weighed against the intent the object holds when the outcome arrives, so a run never
/// overwrites a newer one (SPEC §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent {
    pub generation: i64,
    /// Whether the run was the object's delete.
    pub deleted: bool,
}

impl Intent {
    pub fn of(b: &Bookkeeping) -> Intent {
        Intent {
            generation: b.generation,
            deleted: b.deleted,
        }
    }

    /// Whether `b` holds a newer intent than this one: a change or a delete (or a revival)
    /// arrived while the run was in flight.
    fn superseded_in(self, b: &Bookkeeping) -> bool {
        b.generation > self.generation || b.deleted != self.deleted
    }
}

/// What a run (or a pass's check of an object) leaves in the bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRecord {
    /// The sync or delete completed. A sync's `feedback` replaces the feedback fields.
    Success {
        intent: Intent,
        feedback: Option<Map<String, Value>>,
    },
    /// Failed: retried after the backoff that [`on_run`] computes from the failure count.
    /// `dispatched`: the payload reached the backend (it was rendered and sent), so the
    /// backend may hold the object.
    Failure {
        intent: Intent,
        message: String,
        dispatched: bool,
    },
    Deferred {
        intent: Intent,
        message: String,
    },
    Blocked {
        message: String,
    },
}

/// What becomes of the object after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Keep,
    /// Its delete completed and nothing newer wants it: remove it from the store.
    Purge,
}

/// Why an object is due (the `status.reason` of SPEC §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Due {
    /// Never synced.
    Created,
    /// Its declarative fields changed since it last synced.
    Changed,
    /// Deleted, and its delete has not completed.
    Deleted,
    /// Its last run failed or was deferred.
    Retry,
    /// Its actuator's `resync` period has passed.
    Resync,
}

impl Due {
    pub fn as_str(self) -> &'static str {
        match self {
            Due::Created => "created",
            Due::Changed => "changed",
            Due::Deleted => "deleted",
            Due::Retry => "retry",
            Due::Resync => "resync",
        }
    }

    /// Whether the work is a delete (reverse dependency order) rather than a sync.
    pub fn is_delete(self) -> bool {
        self == Due::Deleted
    }
}

impl fmt::Display for Due {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inputs besides the bookkeeping that decide what is due and what a failure costs.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub backoff: &'a Backoff,
    /// The model's resync period (zero: never).
    pub resync: Duration,
    /// How soon a deferred object is tried again by the daemon.
    pub defer_retry: Duration,
}

/// A new object's bookkeeping: generation 1, pending.
pub fn created(now: Millis) -> Bookkeeping {
    Bookkeeping {
        status: Status::Pending,
        message: String::new(),
        generation: 1,
        synced_generation: 0,
        failures: 0,
        next_retry_at: None,
        deleted: false,
        created: now,
        updated: now,
        enacted: None,
        last_success_at: None,
        last_error_at: None,
        attempted: false,
    }
}

/// Why `b` has work whatever the clock says, if it has: the store keeps this as the
/// object's `pending` mark, so an idle pass is one aggregate query.
pub fn work(b: &Bookkeeping) -> Option<Due> {
    if b.deleted {
        Some(Due::Deleted)
    } else if matches!(b.status, Status::Error | Status::Deferred) {
        Some(Due::Retry)
    } else if b.synced_generation < b.generation {
        Some(if b.last_success_at.is_none() {
            Due::Created
        } else {
            Due::Changed
        })
    } else {
        None
    }
}

/// When an in-sync object next resyncs, if its rules ask for resyncs.
pub fn resync_at(b: &Bookkeeping, rules: &Rules<'_>) -> Option<Millis> {
    let last = b.last_success_at?;
    (!rules.resync.is_zero()).then(|| last.after(rules.resync))
}

/// Why `b` is pending at `now`, backoff aside (see [`waiting_until`]): `plan` lists these.
pub fn pending(b: &Bookkeeping, now: Millis, rules: &Rules<'_>) -> Option<Due> {
    work(b).or_else(|| {
        resync_at(b, rules)
            .is_some_and(|t| t <= now)
            .then_some(Due::Resync)
    })
}

/// Until when a failed object waits before it is tried again, if it must wait at `now`.
pub fn waiting_until(b: &Bookkeeping, now: Millis, rules: &Rules<'_>) -> Option<Millis> {
    if rules.backoff.disabled || b.status != Status::Error {
        return None;
    }
    b.next_retry_at.filter(|t| *t > now)
}

/// When the clock alone next makes `b` due — its retry, its resync, a deferred object's next
/// try — for the daemon to sleep until then.
pub fn wake_at(b: &Bookkeeping, now: Millis, rules: &Rules<'_>) -> Option<Millis> {
    match b.status {
        Status::Deferred => Some(now.after(rules.defer_retry)),
        Status::Error => b.next_retry_at,
        Status::Ok => resync_at(b, rules),
        _ => None,
    }
}

/// What the scheduler runs at `now`: pending and not waiting on its backoff.
pub fn due(b: &Bookkeeping, now: Millis, rules: &Rules<'_>) -> Option<Due> {
    if waiting_until(b, now, rules).is_some() {
        return None;
    }
    pending(b, now, rules)
}

/// Whether deleting `b` runs its delete payload: only when a sync was ever sent, since one
/// never sent left nothing in the backend (SPEC §5.4).
pub fn delete_needs_payload(b: &Bookkeeping) -> bool {
    b.attempted
}

/// Bookkeeping read from a store written before `attempted` was kept: an object with any
/// recorded outcome may be in the backend.
pub fn upgrade_v1(b: &mut Bookkeeping) {
    b.attempted = b.last_success_at.is_some() || b.last_error_at.is_some() || b.deleted;
}

/// Whether `b` is in sync: ok at its current generation and not being deleted. Only such
/// objects let their dependents run.
pub fn in_sync(b: &Bookkeeping) -> bool {
    b.status == Status::Ok && b.synced_generation >= b.generation && !b.deleted
}

/// Its declarative fields were replaced: a new generation, pending, backoff and any pending
/// delete cleared (an apply revives an object being deleted).
pub fn on_change(b: &mut Bookkeeping, now: Millis) {
    b.generation += 1;
    b.status = Status::Pending;
    b.message.clear();
    b.failures = 0;
    b.next_retry_at = None;
    b.deleted = false;
    b.updated = now;
}

/// Marked deleted: the engine runs its delete payload, then purges it.
pub fn on_delete(b: &mut Bookkeeping, now: Millis) {
    b.deleted = true;
    b.status = Status::Deleting;
    b.message.clear();
    b.failures = 0;
    b.next_retry_at = None;
    b.updated = now;
}

/// `stepsync retry`: tried on the next pass.
pub fn on_retry(b: &mut Bookkeeping) {
    b.next_retry_at = None;
}

/// A run's outcome. `jitter` is a sample in [0, 1) for the backoff's spread (0.5: none),
/// passed in so the transition stays a function of its inputs. An outcome whose intent was
/// superseded while it ran records what happened but leaves the newer intent in charge: no
/// backoff, no purge, no `ok` for an object now being deleted.
pub fn on_run(
    b: &mut Bookkeeping,
    run: &RunRecord,
    now: Millis,
    rules: &Rules<'_>,
    jitter: f64,
) -> Disposition {
    match run {
        RunRecord::Success { intent, .. } if intent.deleted => {
            if b.deleted {
                return Disposition::Purge;
            }
            // Re-applied while its delete ran: the backend no longer has it, so it is
            // created again from the newer intent.
            b.synced_generation = 0;
            b.attempted = false;
            b.status = Status::Pending;
            b.message = "deleted from the backend while re-applied; re-creating".to_owned();
        }
        RunRecord::Success { intent, .. } => {
            b.attempted = true;
            b.synced_generation = b.synced_generation.max(intent.generation);
            b.enacted = Some(now);
            b.last_success_at = Some(now);
            b.failures = 0;
            b.next_retry_at = None;
            if b.deleted {
                // Deleted while this sync ran: the delete runs next.
                b.status = Status::Deleting;
            } else {
                b.status = Status::Ok;
                b.message = "OK".to_owned();
            }
        }
        RunRecord::Failure {
            intent,
            message,
            dispatched,
        } => {
            b.attempted |= *dispatched;
            b.message.clone_from(message);
            b.last_error_at = Some(now);
            if intent.superseded_in(b) {
                // The failure was of an older intent: the newer one is tried at once.
                b.status = if b.deleted {
                    Status::Deleting
                } else {
                    Status::Pending
                };
                b.next_retry_at = None;
            } else {
                b.status = Status::Error;
                b.failures = b.failures.saturating_add(1);
                b.next_retry_at = (!rules.backoff.disabled).then(|| {
                    now.after(crate::backoff::delay_with(
                        rules.backoff,
                        b.failures,
                        jitter,
                    ))
                });
            }
        }
        // A deleted object keeps `deleting` while it waits or is blocked: that is its state.
        RunRecord::Deferred { message, .. } => {
            b.attempted = true;
            b.status = if b.deleted {
                Status::Deleting
            } else {
                Status::Deferred
            };
            b.message.clone_from(message);
            b.next_retry_at = None;
        }
        RunRecord::Blocked { message } => {
            b.status = if b.deleted {
                Status::Deleting
            } else {
                Status::Blocked
            };
            b.message.clone_from(message);
        }
    }
    Disposition::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Factor, Jitter};
    use crate::duration::Dur;

    const T0: Millis = Millis(1_000_000);

    fn backoff(disabled: bool) -> Backoff {
        Backoff {
            initial: Dur::secs(10),
            factor: Factor(2.0),
            max: Dur::secs(60),
            jitter: Jitter(0.0),
            disabled,
        }
    }

    fn failure(generation: i64) -> RunRecord {
        RunRecord::Failure {
            intent: Intent {
                generation,
                deleted: false,
            },
            message: "x".into(),
            dispatched: true,
        }
    }

    fn book(f: impl FnOnce(&mut Bookkeeping)) -> Bookkeeping {
        let mut b = created(T0);
        f(&mut b);
        b
    }

    fn synced(b: &mut Bookkeeping) {
        b.status = Status::Ok;
        b.synced_generation = b.generation;
        b.last_success_at = Some(T0);
    }

    #[test]
    fn what_is_due_and_why() {
        let off = backoff(false);
        let plain = Rules {
            backoff: &off,
            resync: Duration::ZERO,
            defer_retry: Duration::ZERO,
        };
        let hourly = Rules {
            backoff: &off,
            resync: Duration::from_secs(3600),
            defer_retry: Duration::ZERO,
        };
        let later = T0.after(Duration::from_secs(30));
        let much_later = T0.after(Duration::from_secs(7200));
        // (what, bookkeeping, rules, now, due, pending)
        type Case<'a> = (
            &'a str,
            Bookkeeping,
            Rules<'a>,
            Millis,
            Option<Due>,
            Option<Due>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "new",
                created(T0),
                plain,
                T0,
                Some(Due::Created),
                Some(Due::Created),
            ),
            ("in sync", book(synced), plain, T0, None, None),
            (
                "changed",
                book(|b| {
                    synced(b);
                    b.generation = 2;
                }),
                plain,
                T0,
                Some(Due::Changed),
                Some(Due::Changed),
            ),
            (
                "deleted",
                book(|b| {
                    synced(b);
                    b.deleted = true;
                }),
                plain,
                T0,
                Some(Due::Deleted),
                Some(Due::Deleted),
            ),
            (
                "failed, in backoff",
                book(|b| {
                    b.status = Status::Error;
                    b.failures = 1;
                    b.next_retry_at = Some(T0.after(Duration::from_secs(10)));
                }),
                plain,
                T0,
                None,
                Some(Due::Retry),
            ),
            (
                "failed, backoff over",
                book(|b| {
                    b.status = Status::Error;
                    b.failures = 1;
                    b.next_retry_at = Some(T0.after(Duration::from_secs(10)));
                }),
                plain,
                later,
                Some(Due::Retry),
                Some(Due::Retry),
            ),
            (
                "failed a resync at the synced generation",
                book(|b| {
                    synced(b);
                    b.status = Status::Error;
                    b.failures = 1;
                }),
                plain,
                T0,
                Some(Due::Retry),
                Some(Due::Retry),
            ),
            (
                "deferred",
                book(|b| b.status = Status::Deferred),
                plain,
                T0,
                Some(Due::Retry),
                Some(Due::Retry),
            ),
            (
                "deferred resync",
                book(|b| {
                    synced(b);
                    b.status = Status::Deferred;
                }),
                plain,
                T0,
                Some(Due::Retry),
                Some(Due::Retry),
            ),
            ("resync not yet", book(synced), hourly, later, None, None),
            (
                "resync due",
                book(synced),
                hourly,
                much_later,
                Some(Due::Resync),
                Some(Due::Resync),
            ),
        ];
        for (what, b, rules, now, want_due, want_pending) in cases {
            assert_eq!(due(&b, now, &rules), want_due, "due: {what}");
            assert_eq!(pending(&b, now, &rules), want_pending, "pending: {what}");
        }
    }

    #[test]
    fn backoff_disabled_never_waits() {
        let on = backoff(true);
        let rules = Rules {
            backoff: &on,
            resync: Duration::ZERO,
            defer_retry: Duration::ZERO,
        };
        let mut b = created(T0);
        on_run(&mut b, &failure(1), T0, &rules, 0.5);
        assert_eq!(b.next_retry_at, None);
        assert_eq!(due(&b, T0, &rules), Some(Due::Retry));
    }

    #[test]
    fn outcomes() {
        let off = backoff(false);
        let rules = Rules {
            backoff: &off,
            resync: Duration::ZERO,
            defer_retry: Duration::ZERO,
        };
        let t1 = T0.after(Duration::from_secs(1));
        let intent = |generation| Intent {
            generation,
            deleted: false,
        };
        let fail = RunRecord::Failure {
            intent: intent(1),
            message: "boom".into(),
            dispatched: true,
        };
        let success = |generation| RunRecord::Success {
            intent: intent(generation),
            feedback: Some(Map::new()),
        };
        // A first failure waits `initial`, the next ones grow by `factor` up to `max`.
        let mut b = created(T0);
        let mut waits = Vec::new();
        for _ in 0..4 {
            on_run(&mut b, &fail, t1, &rules, 0.5);
            waits.push((b.next_retry_at.map_or(0, |t| t.0) - t1.0) / 1000);
        }
        assert_eq!(waits, [10, 20, 40, 60]);
        assert_eq!(
            (b.status, b.failures, b.last_error_at),
            (Status::Error, 4, Some(t1))
        );
        assert_eq!(b.message, "boom");

        // Success resets the failures and records the generation read at the run's start.
        b.generation = 3;
        on_run(&mut b, &success(2), t1, &rules, 0.5);
        assert_eq!(b.status, Status::Ok);
        assert_eq!((b.failures, b.next_retry_at), (0, None));
        assert_eq!((b.synced_generation, b.generation), (2, 3));
        assert_eq!(b.message, "OK");
        assert_eq!(
            work(&b),
            Some(Due::Changed),
            "a change during the run keeps it pending"
        );
        // An older success never moves synced_generation back.
        on_run(&mut b, &success(1), t1, &rules, 0.5);
        assert_eq!(b.synced_generation, 2);

        // Deferral keeps the failure count and clears the backoff.
        let mut b = book(|b| {
            b.failures = 2;
            b.next_retry_at = Some(T0);
        });
        let deferred = RunRecord::Deferred {
            intent: intent(1),
            message: "deferred: status 503".into(),
        };
        on_run(&mut b, &deferred, t1, &rules, 0.5);
        assert_eq!(
            (b.status, b.failures, b.next_retry_at),
            (Status::Deferred, 2, None)
        );

        // Blocking never counts as a failure.
        let blocked = RunRecord::Blocked {
            message: "blocked by Site/a: boom".into(),
        };
        let mut b = created(T0);
        on_run(&mut b, &blocked, t1, &rules, 0.5);
        assert_eq!((b.status, b.failures), (Status::Blocked, 0));
        assert_eq!(b.status.backend_code(), 2);

        // A deleted object stays `deleting` while it is blocked or deferred.
        for run in [&blocked, &deferred] {
            let mut b = created(T0);
            on_delete(&mut b, T0);
            on_run(&mut b, run, t1, &rules, 0.5);
            assert_eq!(b.status, Status::Deleting);
            assert_eq!(work(&b), Some(Due::Deleted));
        }
    }

    #[test]
    fn user_events() {
        let off = backoff(false);
        let rules = Rules {
            backoff: &off,
            resync: Duration::ZERO,
            defer_retry: Duration::ZERO,
        };
        let t1 = T0.after(Duration::from_secs(1));
        let mut b = created(T0);
        on_run(&mut b, &failure(1), T0, &rules, 0.5);
        // A change clears the backoff and the failures and moves the generation.
        on_change(&mut b, t1);
        assert_eq!(
            (b.generation, b.status, b.failures),
            (2, Status::Pending, 0)
        );
        assert_eq!((b.next_retry_at, b.updated), (None, t1));
        assert_eq!(due(&b, t1, &rules), Some(Due::Created));

        // Deleting marks it and clears any backoff; a change revives it.
        on_delete(&mut b, t1);
        assert_eq!((b.deleted, b.status), (true, Status::Deleting));
        on_change(&mut b, t1);
        assert!(!b.deleted);

        // Retry clears the backoff only.
        let now_failing = failure(b.generation);
        on_run(&mut b, &now_failing, T0, &rules, 0.5);
        assert!(waiting_until(&b, T0, &rules).is_some());
        on_retry(&mut b);
        assert_eq!(waiting_until(&b, T0, &rules), None);
        assert_eq!(b.failures, 1);
    }

    #[test]
    fn outcomes_never_overwrite_a_newer_intent() {
        let off = backoff(false);
        let rules = Rules {
            backoff: &off,
            resync: Duration::ZERO,
            defer_retry: Duration::ZERO,
        };
        let t1 = T0.after(Duration::from_secs(1));
        let sync = Intent {
            generation: 1,
            deleted: false,
        };
        let delete = Intent {
            generation: 1,
            deleted: true,
        };
        // A change applied while a failing run was in flight: no backoff, tried at once.
        let mut b = created(T0);
        on_change(&mut b, T0);
        let failed = RunRecord::Failure {
            intent: sync,
            message: "boom".into(),
            dispatched: true,
        };
        assert_eq!(on_run(&mut b, &failed, t1, &rules, 0.5), Disposition::Keep);
        assert_eq!(
            (b.status, b.failures, b.next_retry_at),
            (Status::Pending, 0, None)
        );
        assert_eq!(due(&b, t1, &rules), Some(Due::Created));
        assert!(b.attempted);

        // Deleted while its sync was in flight: the sync's success leaves it deleting.
        let mut b = created(T0);
        on_delete(&mut b, T0);
        let ok = RunRecord::Success {
            intent: sync,
            feedback: Some(Map::new()),
        };
        on_run(&mut b, &ok, t1, &rules, 0.5);
        assert_eq!(b.status, Status::Deleting);
        assert_eq!(due(&b, t1, &rules), Some(Due::Deleted));
        assert!(delete_needs_payload(&b));

        // Re-applied while its delete was in flight: kept, and created again.
        let mut b = book(synced);
        b.attempted = true;
        on_delete(&mut b, T0);
        on_change(&mut b, T0);
        let gone = RunRecord::Success {
            intent: delete,
            feedback: None,
        };
        assert_eq!(on_run(&mut b, &gone, t1, &rules, 0.5), Disposition::Keep);
        assert_eq!(
            (b.status, b.synced_generation, b.deleted),
            (Status::Pending, 0, false)
        );
        assert!(!b.attempted);
        assert_eq!(due(&b, t1, &rules), Some(Due::Changed));

        // A completed delete with nothing newer purges.
        let mut b = book(synced);
        on_delete(&mut b, T0);
        assert_eq!(on_run(&mut b, &gone, t1, &rules, 0.5), Disposition::Purge);

        // A failure before anything was sent leaves nothing to delete in the backend.
        let mut b = created(T0);
        let unrendered = RunRecord::Failure {
            intent: sync,
            message: "`object.x` is undefined".into(),
            dispatched: false,
        };
        on_run(&mut b, &unrendered, t1, &rules, 0.5);
        on_delete(&mut b, t1);
        assert!(!delete_needs_payload(&b));
    }

    #[test]
    fn in_sync_needs_ok_at_the_current_generation() {
        assert!(in_sync(&book(synced)));
        assert!(!in_sync(&created(T0)));
        assert!(!in_sync(&book(|b| {
            synced(b);
            b.generation += 1;
        })));
        assert!(!in_sync(&book(|b| {
            synced(b);
            b.deleted = true;
        })));
    }
}
