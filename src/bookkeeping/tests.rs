//! Table-driven tests of every due-reason and transition.

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
        digest: Some("d1".into()),
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
        digest: Some("d1".into()),
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
        digest: None,
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

/// Rules 4–5: a changed input makes an in-sync object a suspect; the check either clears it
/// (same recipe) or makes it pending with the cause as its reason; a success ends it.
#[test]
fn drift_suspect_check_and_success() {
    let b0 = backoff(false);
    let rules = Rules {
        backoff: &b0,
        resync: Duration::ZERO,
        defer_retry: Duration::from_secs(5),
    };
    let t1 = Millis(T0.0 + 1000);
    let applied = |b: &mut Bookkeeping| {
        synced(b);
        b.applied = Some("d1".into());
    };
    let site_a = || Cause::Reference("Site/a".into());
    let site = site_a();
    // (start, cause, check digest) -> (suspect before check, due after check, applied after)
    type Case<'a> = (
        Bookkeeping,
        Cause,
        &'a str,
        bool,
        Option<Due>,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            book(applied),
            Cause::Definition,
            "d1",
            true,
            None,
            Some("d1"),
        ),
        (
            book(applied),
            Cause::Definition,
            "d2",
            true,
            Some(Due::Definition),
            Some("d1"),
        ),
        (
            book(applied),
            site.clone(),
            "d2",
            true,
            Some(Due::Reference("Site/a".into())),
            Some("d1"),
        ),
        // Written by a stepsync that kept no digest: the current recipe is adopted.
        (
            book(synced),
            Cause::Definition,
            "d2",
            true,
            None,
            Some("d2"),
        ),
        // Never synced, or with work on it already: rendered anyway, never a suspect.
        (
            created(T0),
            Cause::Definition,
            "d2",
            false,
            Some(Due::Created),
            None,
        ),
        (
            book(|b| {
                applied(b);
                on_change(b, T0)
            }),
            site,
            "d2",
            false,
            Some(Due::Changed),
            Some("d1"),
        ),
    ];
    for (i, (mut b, cause, digest, is_suspect, due_after, applied_after)) in
        cases.into_iter().enumerate()
    {
        on_inputs_changed(&mut b, cause.clone());
        assert_eq!(suspect(&b).is_some(), is_suspect, "case {i}");
        if is_suspect {
            on_run(
                &mut b,
                &RunRecord::Checked {
                    digest: digest.into(),
                },
                t1,
                &rules,
                0.5,
            );
            assert!(suspect(&b).is_none(), "case {i}: checked");
        }
        assert_eq!(due(&b, t1, &rules), due_after, "case {i}");
        assert_eq!(b.applied.as_deref(), applied_after, "case {i}");
        if due_after == Some(Due::Definition) {
            assert_eq!(
                b.status,
                Status::Pending,
                "case {i}: drift found is pending"
            );
            assert!(!in_sync(&b));
        }
    }

    // A found drift ends with the success that applies the new recipe.
    let mut b = book(applied);
    on_inputs_changed(&mut b, Cause::Definition);
    on_run(
        &mut b,
        &RunRecord::Checked {
            digest: "d2".into(),
        },
        t1,
        &rules,
        0.5,
    );
    let ok = RunRecord::Success {
        intent: Intent::of(&b),
        feedback: Some(Map::new()),
        digest: Some("d2".into()),
    };
    on_run(&mut b, &ok, t1, &rules, 0.5);
    assert_eq!(
        (b.status, work(&b), b.applied.as_deref()),
        (Status::Ok, None, Some("d2"))
    );

    // A suspect blocked by its dependency, then checked unchanged once the dependency is
    // back, is in sync again: nothing else would ever make it due (a crash-test finding).
    let mut b = book(applied);
    on_inputs_changed(&mut b, site_a());
    let blocked = RunRecord::Blocked {
        message: "blocked by Site/a: boom".into(),
    };
    on_run(&mut b, &blocked, t1, &rules, 0.5);
    assert_eq!((b.status, suspect(&b).is_some()), (Status::Blocked, true));
    let checked = RunRecord::Checked {
        digest: "d1".into(),
    };
    on_run(&mut b, &checked, t1, &rules, 0.5);
    assert_eq!((b.status, b.message.as_str()), (Status::Ok, "OK"));
    assert!(in_sync(&b) && work(&b).is_none());

    // A failed object's backoff is cleared by a changed input (SPEC §5.3); it is not a
    // suspect, since it is retried anyway.
    let mut b = book(applied);
    let gen_now = b.generation;
    on_run(&mut b, &failure(gen_now), t1, &rules, 0.5);
    assert!(b.next_retry_at.is_some());
    assert!(on_inputs_changed(&mut b, Cause::Definition));
    assert_eq!((b.next_retry_at, suspect(&b)), (None, None));
    assert_eq!(due(&b, t1, &rules), Some(Due::Retry));

    // Causes read back as they are written.
    for c in [Cause::Definition, Cause::Reference("Switch/s 1".into())] {
        assert_eq!(Cause::parse(&c.to_string()), Some(c));
    }
}

#[test]
fn a_watcher_makes_an_in_sync_object_pending_with_its_reason() {
    let mut b = book(synced);
    assert!(on_watch(&mut b, Cause::Watch("Instance/i1.ip".into())));
    assert_eq!(work(&b), Some(Due::Watch("Instance/i1.ip".into())));
    assert_eq!(b.status, Status::Pending);
    assert_eq!(
        Cause::parse("watch Instance/i1.ip"),
        Some(Cause::Watch("Instance/i1.ip".into()))
    );
    // Its success ends it; a second fire before then changes nothing.
    assert!(!on_watch(&mut b, Cause::Watch("Instance/i1.mac".into())));
    let ok = RunRecord::Success {
        intent: Intent::of(&b),
        feedback: None,
        digest: Some("d".into()),
    };
    on_run(&mut b, &ok, T0, &rules(&backoff(false)), 0.5);
    assert_eq!(work(&b), None);
}

#[test]
fn a_watcher_leaves_new_and_deleted_objects_alone_and_clears_a_failure_s_backoff() {
    let mut new = created(T0);
    assert!(!on_watch(&mut new, Cause::Watch("A/a.x".into())));
    let mut gone = book(|b| {
        synced(b);
        on_delete(b, T0);
    });
    assert!(!on_watch(&mut gone, Cause::Watch("A/a.x".into())));
    let mut failed = book(synced);
    on_run(&mut failed, &failure(1), T0, &rules(&backoff(false)), 0.5);
    assert!(failed.next_retry_at.is_some());
    assert!(on_watch(&mut failed, Cause::Watch("A/a.x".into())));
    assert_eq!(failed.next_retry_at, None);
}

#[test]
fn policies_are_due_after_a_change_and_wait_out_their_backoff() {
    let bo = backoff(false);
    let mut b = created(T0);
    assert!(needs_policy(&b, T0, &bo));
    on_policed(&mut b);
    assert!(!needs_policy(&b, T0, &bo));
    on_change(&mut b, T0);
    assert!(needs_policy(&b, T0, &bo));
    on_policy_failed(&mut b, "bad".into(), T0, &bo, 0.5);
    assert_eq!(b.policy_failures, 1);
    assert_eq!(policy_wake_at(&b), Some(T0.after(Duration::from_secs(10))));
    assert!(!needs_policy(&b, T0, &bo));
    assert!(needs_policy(&b, T0.after(Duration::from_secs(10)), &bo));
    assert!(needs_policy(&b, T0, &backoff(true)));
    // A failure moves nothing of the object's own: an error is not a change.
    assert_eq!(b.updated, T0);
    assert_eq!(b.generation, 2);
    // A new change is tried at once.
    on_change(&mut b, T0);
    assert!(needs_policy(&b, T0, &bo));
    on_policed(&mut b);
    assert_eq!(b.policy_error, None);
    assert_eq!(b.policed_generation, b.generation);
    assert!(on_policies_changed(&mut b));
    assert!(needs_policy(&b, T0, &bo));
}

fn rules(b: &Backoff) -> Rules<'_> {
    Rules {
        backoff: b,
        resync: Duration::ZERO,
        defer_retry: Duration::ZERO,
    }
}

#[test]
fn a_check_queued_before_a_watcher_fired_leaves_the_watch_in_charge() {
    let mut b = book(|b| {
        synced(b);
        b.applied = Some("d".into());
    });
    assert!(on_inputs_changed(
        &mut b,
        Cause::Reference("Instance/i1".into())
    ));
    assert!(on_watch(&mut b, Cause::Watch("Instance/i1.ip".into())));
    on_check(&mut b, "d");
    assert_eq!(work(&b), Some(Due::Watch("Instance/i1.ip".into())));
}
