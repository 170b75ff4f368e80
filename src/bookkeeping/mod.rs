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
    /// What its last successful sync applied: a digest of the rendered recipe and every file
    /// and value it was rendered from (SPEC §5.1 rule 4). `None`: never synced, or synced by
    /// a stepsync that kept no digest.
    pub applied: Option<String>,
    /// An input of its recipe changed since it last synced (rules 4–5), or a watcher fired
    /// for it (rule 6).
    pub drift: Option<Drift>,
    /// The generation its model's policies last ran on successfully (SPEC §12).
    pub policed_generation: i64,
    /// Why its policies last failed; `None` when they succeeded or never ran.
    pub policy_error: Option<String>,
    /// Policy failures in a row, for the policies' own backoff.
    pub policy_failures: u32,
    /// Not before then are its policies tried again after a failure.
    pub policy_retry_at: Option<Millis>,
}

/// Which input of an object's recipe changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Its model's definitions: stepdef, playbook, role, vars, inventory, schema.
    Definition,
    /// An object it follows through a ref (`Model/key`) changed a field.
    Reference(String),
    /// A watcher fired for it: `Model/key.field` changed (SPEC §11).
    Watch(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Definition => f.write_str("definition"),
            Cause::Reference(name) => write!(f, "reference {name}"),
            Cause::Watch(what) => write!(f, "watch {what}"),
        }
    }
}

impl Cause {
    /// Reads back what [`fmt::Display`] wrote (the store keeps causes as text).
    pub fn parse(s: &str) -> Option<Cause> {
        match s {
            "definition" => Some(Cause::Definition),
            _ => s
                .strip_prefix("reference ")
                .map(|n| Cause::Reference(n.to_owned()))
                .or_else(|| s.strip_prefix("watch ").map(|w| Cause::Watch(w.to_owned()))),
        }
    }
}

/// An input of an in-sync object's recipe changed. Until its recipe is rendered again
/// nobody knows whether the recipe changed: it is a *suspect*, checked on the next pass
/// (and by `plan`); a check that finds the recipe changed makes it pending (`found`), one
/// that finds it byte-identical clears it and the object stays ok, unactuated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub cause: Cause,
    pub found: bool,
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
        /// The digest of what a sync applied ([`Bookkeeping::applied`]); `None` for a
        /// delete or a model without a payload.
        digest: Option<String>,
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
    /// A suspect was rendered again without running: `digest` is what it would apply.
    Checked {
        digest: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// Its recipe changed with its model's definitions.
    Definition,
    /// Its recipe changed with a field of `Model/key`, which it refers to.
    Reference(String),
    /// A watcher fired for it: `Model/key.field` changed.
    Watch(String),
}

impl Due {
    /// Whether the work is a delete (reverse dependency order) rather than a sync.
    pub fn is_delete(&self) -> bool {
        *self == Due::Deleted
    }
}

impl fmt::Display for Due {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Due::Created => f.write_str("created"),
            Due::Changed => f.write_str("changed"),
            Due::Deleted => f.write_str("deleted"),
            Due::Retry => f.write_str("retry"),
            Due::Resync => f.write_str("resync"),
            Due::Definition => f.write_str("definition"),
            Due::Reference(name) => write!(f, "reference {name}"),
            Due::Watch(what) => write!(f, "watch {what}"),
        }
    }
}

impl Due {
    /// Whether the work comes from inside the system — a watcher, a changed reference — and
    /// not from a person or a definition: what the run-time loop guard counts (SPEC §15).
    pub fn is_internal(&self) -> bool {
        matches!(self, Due::Watch(_) | Due::Reference(_))
    }
}

impl From<&Cause> for Due {
    fn from(c: &Cause) -> Due {
        match c {
            Cause::Definition => Due::Definition,
            Cause::Reference(name) => Due::Reference(name.clone()),
            Cause::Watch(what) => Due::Watch(what.clone()),
        }
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
        applied: None,
        drift: None,
        policed_generation: 0,
        policy_error: None,
        policy_failures: 0,
        policy_retry_at: None,
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
        b.drift
            .as_ref()
            .filter(|d| d.found)
            .map(|d| (&d.cause).into())
    }
}

/// Whether `b` can be due without a resync: it has work or is a suspect (what the store's
/// `pending` and `suspect` marks hold). Without resyncs, a pass need look at no other
/// object.
pub fn active(b: &Bookkeeping) -> bool {
    work(b).is_some() || suspect(b).is_some()
}

/// Why `b` must be rendered again to know whether it is pending: an input of its recipe
/// changed while it was in sync (see [`Drift`]).
pub fn suspect(b: &Bookkeeping) -> Option<&Cause> {
    match &b.drift {
        Some(d) if !d.found && work(b).is_none() => Some(&d.cause),
        _ => None,
    }
}

/// An input of `b`'s recipe changed (`cause`). An object with work already on it is
/// rendered anew anyway; a failed one has its backoff cleared, since the new inputs may be
/// the fix (SPEC §5.3); an in-sync one becomes a suspect. Returns whether `b` changed.
pub fn on_inputs_changed(b: &mut Bookkeeping, cause: Cause) -> bool {
    if b.deleted {
        return false;
    }
    if b.status == Status::Error {
        return b.next_retry_at.take().is_some();
    }
    if b.last_success_at.is_none() || work(b).is_some() || b.drift.is_some() {
        return false;
    }
    b.drift = Some(Drift {
        cause,
        found: false,
    });
    true
}

/// A watcher with `on_change: resync` fired for `b` (SPEC §11): it is actuated again even
/// if its recipe renders as before. One with work on it already runs anyway (a failed one
/// loses its backoff: the watched change may be the fix); one never synced or being deleted
/// has nothing to resync. Returns whether `b` changed.
pub fn on_watch(b: &mut Bookkeeping, cause: Cause) -> bool {
    if b.deleted {
        return false;
    }
    if b.status == Status::Error {
        return b.next_retry_at.take().is_some();
    }
    if b.last_success_at.is_none() || work(b).is_some() {
        return false;
    }
    b.drift = Some(Drift { cause, found: true });
    b.status = Status::Pending;
    true
}

/// Whether `b`'s model policies are due at `now` (SPEC §12): its generation moved past the
/// one they last ran on, and no failure's backoff holds them.
pub fn needs_policy(b: &Bookkeeping, now: Millis, backoff: &Backoff) -> bool {
    !b.deleted
        && b.policed_generation < b.generation
        && (backoff.disabled || b.policy_retry_at.is_none_or(|t| t <= now))
}

/// Its policies ran and their writes are in the same transaction.
pub fn on_policed(b: &mut Bookkeeping) {
    b.policed_generation = b.generation;
    b.policy_error = None;
    b.policy_failures = 0;
    b.policy_retry_at = None;
}

/// Its policies failed: nothing they would write was written; tried again after a backoff
/// of their own (the object's actuation keeps its own bookkeeping). The `updated` stamp does
/// not move: an error is not a change (the original framework's error path bumped it and
/// so made the object dirty again, a loop of its own).
pub fn on_policy_failed(
    b: &mut Bookkeeping,
    message: String,
    now: Millis,
    backoff: &Backoff,
    jitter: f64,
) {
    b.policy_error = Some(message);
    b.policy_failures = b.policy_failures.saturating_add(1);
    b.policy_retry_at = (!backoff.disabled).then(|| {
        now.after(crate::backoff::delay_with(
            backoff,
            b.policy_failures,
            jitter,
        ))
    });
}

/// Its model's policies were edited: they run again (as an update) on the next pass, at
/// once, whatever backoff an earlier failure set.
pub fn on_policies_changed(b: &mut Bookkeeping) -> bool {
    if b.deleted || b.policed_generation == 0 {
        return false;
    }
    b.policed_generation = b.policed_generation.min(b.generation - 1);
    b.policy_retry_at = None;
    true
}

/// When the clock alone next makes `b`'s policies due: after their backoff.
pub fn policy_wake_at(b: &Bookkeeping) -> Option<Millis> {
    b.policy_error.as_ref().and(b.policy_retry_at)
}

/// A suspect was rendered again: `digest` is what its recipe would now apply. The same as
/// applied: it stays in sync and the suspicion ends; different: it is pending. A store
/// written before digests were kept has none: the recipe as it renders now is taken as the
/// one applied (there is nothing to compare it with).
pub fn on_check(b: &mut Bookkeeping, digest: &str) {
    let Some(d) = &mut b.drift else { return };
    // Found pending meanwhile (a watcher fired while the check was queued): that work is
    // not the check's to clear.
    if d.found {
        return;
    }
    match &b.applied {
        Some(a) if a != digest => {
            d.found = true;
            b.status = Status::Pending;
        }
        _ => {
            b.applied = Some(digest.to_owned());
            b.drift = None;
            // A suspect has no other work, so it was in sync before its check was blocked
            // by a dependency; left `blocked`, nothing would ever make it due again.
            if b.status == Status::Blocked {
                b.status = Status::Ok;
                b.message = "OK".to_owned();
            }
        }
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
    // The new state may be what the policies needed.
    b.policy_retry_at = None;
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

/// A pass that had `b` among its jobs was cut short (a killed runner): its sync may have
/// reached the backend without an outcome being recorded, so a later delete must run the
/// delete payload (SPEC §5.4).
pub fn on_interrupted(b: &mut Bookkeeping) {
    b.attempted = true;
}

/// `stepsync retry`: tried on the next pass, its policies too.
pub fn on_retry(b: &mut Bookkeeping) {
    b.next_retry_at = None;
    b.policy_retry_at = None;
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
        RunRecord::Success { intent, digest, .. } => {
            b.attempted = true;
            // What was applied is now what later renders are compared with; whatever drift
            // was suspected, this run rendered from the inputs as they now stand.
            b.applied.clone_from(digest);
            b.drift = None;
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
        RunRecord::Checked { digest } => on_check(b, digest),
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
mod tests;
