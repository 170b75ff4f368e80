//! The run-time loop guard (SPEC §15): an object actuated more than [`LIMIT`] times within
//! [`WINDOW`] with no outside change — every one of those runs due to a watcher, a changed
//! reference or a policy's write, none to a person's change or a definition — is stopped in
//! error with
//! `loop detected: ...` and the chain of triggers, so a loop that `validate` could not rule
//! out (or one accepted with `converges: true` that does not settle) costs a minute, not a
//! backend hammered for ever.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::bookkeeping::{Due, Millis};

pub(crate) const LIMIT: usize = 10;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// How far the chain of triggers is followed back in a message.
const CHAIN: usize = 8;

#[derive(Default)]
pub(crate) struct Guard {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per object (`Model/key`), the times of its recent internal actuations.
    runs: HashMap<String, VecDeque<Millis>>,
    /// Per object, why it last ran.
    last: HashMap<String, String>,
    /// Objects a policy changed, and which (`policy stepdefs/p.yaml of Network/n1`): their
    /// next run is not an outside change.
    written: HashMap<String, String>,
    /// Per object, the times of its recent policy runs caused by another policy's write.
    policed: HashMap<String, VecDeque<Millis>>,
}

impl Guard {
    /// `name`'s sync is about to run because of `due`: `Some(message)` if that would be one
    /// run too many, and it must stop instead.
    pub(crate) fn check(&self, name: &str, due: &Due, now: Millis) -> Option<String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let by_policy = g.written.remove(name);
        let why = match (due, by_policy) {
            (Due::Changed | Due::Created, Some(w)) => w,
            (d, _) if d.is_internal() => d.to_string(),
            // A retry after a failure — the guard's own stop, say — is no outside change
            // either: it neither counts nor wipes the count, so a loop that resumes after
            // its backoff is stopped again at its first internal run.
            (Due::Retry, _) => return None,
            (d, _) => {
                // An outside change: whatever came before was not a loop.
                g.last.insert(name.to_owned(), d.to_string());
                g.runs.remove(name);
                return None;
            }
        };
        g.last.insert(name.to_owned(), why);
        let n = count(g.runs.entry(name.to_owned()).or_default(), now)?;
        Some(format!(
            "loop detected: {name} was actuated {n} times within {}s with no outside change; triggers: {}",
            WINDOW.as_secs(),
            chain(&g.last, name)
        ))
    }

    /// A policy changed `name` (`why`: which, of what source).
    pub(crate) fn note_written(&self, name: &str, why: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.written.insert(name.to_owned(), why);
    }

    /// `name`'s policies are about to run: `Some(message)` if another policy's writes made
    /// them run too often (a ring of policies that never settles).
    pub(crate) fn check_policy(&self, name: &str, now: Millis) -> Option<String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(why) = g.written.get(name).cloned() else {
            g.policed.remove(name);
            return None;
        };
        g.last.insert(name.to_owned(), why);
        let n = count(g.policed.entry(name.to_owned()).or_default(), now)?;
        Some(format!(
            "loop detected: the policies of {name} ran {n} times within {}s with no outside change; triggers: {}",
            WINDOW.as_secs(),
            chain(&g.last, name)
        ))
    }
}

/// Adds a run at `now` to `q`; `Some(n)` when that makes more than [`LIMIT`] within
/// [`WINDOW`]. The count is kept: until the runs age out of the window, every further
/// internal run is stopped too.
fn count(q: &mut VecDeque<Millis>, now: Millis) -> Option<usize> {
    let since = Millis(
        now.0
            .saturating_sub(i64::try_from(WINDOW.as_millis()).unwrap_or(0)),
    );
    q.retain(|t| *t > since);
    q.push_back(now);
    (q.len() > LIMIT).then_some(q.len())
}

/// `Fabric/f1 (watch Instance/i1.fabric_ip) <- Instance/i1 (watch Fabric/f1.ip) <- ...`:
/// each object's last trigger, followed to the object that caused it.
fn chain(last: &HashMap<String, String>, start: &str) -> String {
    let mut parts = Vec::new();
    let mut at = start.to_owned();
    for _ in 0..CHAIN {
        let Some(why) = last.get(&at) else {
            parts.push(at);
            break;
        };
        parts.push(format!("{at} ({why})"));
        // `watch Model/key.field` or `reference Model/key`: the object that caused it.
        let cause = why
            .strip_prefix("watch ")
            .map(|w| w.rsplit_once('.').map_or(w, |(obj, _)| obj))
            .or_else(|| why.strip_prefix("reference "))
            .or_else(|| {
                why.strip_prefix("policy ")
                    .and_then(|p| p.rsplit_once(" of "))
                    .map(|(_, src)| src)
            });
        match cause {
            Some(next) if next != start || parts.len() == 1 => at = next.to_owned(),
            Some(next) => {
                parts.push(next.to_owned());
                break;
            }
            None => break,
        }
    }
    parts.join(" <- ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_internal_run_within_a_minute_stops_with_the_chain() {
        let g = Guard::default();
        let due = Due::Watch("Instance/i1.ip".into());
        for i in 0..LIMIT {
            assert_eq!(g.check("Fabric/f1", &due, Millis(1000 + i as i64)), None);
            g.check(
                "Instance/i1",
                &Due::Watch("Fabric/f1.port".into()),
                Millis(1000),
            );
        }
        let msg = g.check("Fabric/f1", &due, Millis(2000)).unwrap();
        assert!(
            msg.starts_with("loop detected: Fabric/f1 was actuated 11 times"),
            "{msg}"
        );
        assert!(
            msg.contains("Fabric/f1 (watch Instance/i1.ip) <- Instance/i1 (watch Fabric/f1.port) <- Fabric/f1"),
            "{msg}"
        );
    }

    #[test]
    fn an_outside_change_or_a_minute_resets_the_count() {
        let g = Guard::default();
        let due = Due::Reference("Site/a".into());
        for i in 0..LIMIT {
            assert_eq!(g.check("Slice/s", &due, Millis(i as i64)), None);
        }
        assert_eq!(g.check("Slice/s", &Due::Changed, Millis(20)), None);
        for i in 0..LIMIT {
            assert_eq!(g.check("Slice/s", &due, Millis(30 + i as i64)), None);
        }
        // Runs older than the window no longer count.
        assert_eq!(g.check("Slice/s", &due, Millis(100_000)), None);
    }

    #[test]
    fn a_stopped_loop_that_resumes_after_its_backoff_is_stopped_at_once() {
        let g = Guard::default();
        let due = Due::Watch("Peer/p1.n".into());
        for i in 0..LIMIT {
            assert_eq!(g.check("Peer/p1", &due, Millis(i as i64)), None);
        }
        assert!(g.check("Peer/p1", &due, Millis(20)).is_some());
        // The retry after the stop's backoff runs; the loop's next turn does not.
        assert_eq!(g.check("Peer/p1", &Due::Retry, Millis(30)), None);
        assert!(g.check("Peer/p1", &due, Millis(40)).is_some());
        // A person's change is a fresh start.
        assert_eq!(g.check("Peer/p1", &Due::Changed, Millis(50)), None);
        assert_eq!(g.check("Peer/p1", &due, Millis(60)), None);
    }

    #[test]
    fn a_ring_of_policies_is_stopped_with_its_chain() {
        let g = Guard::default();
        let mut msg = None;
        for i in 0..=LIMIT {
            g.note_written("B/b", "policy stepdefs/a.yaml of A/a".into());
            g.note_written("A/a", "policy stepdefs/b.yaml of B/b".into());
            msg = g.check_policy("A/a", Millis(i as i64));
        }
        let msg = msg.unwrap();
        assert!(
            msg.starts_with("loop detected: the policies of A/a ran 11 times"),
            "{msg}"
        );
        assert!(
            msg.contains("A/a (policy stepdefs/b.yaml of B/b) <- B/b"),
            "{msg}"
        );
        // A person's change of a policy-written object resets nothing it should not: its
        // next actuation after a policy's write counts as internal.
        g.note_written("C/c", "policy stepdefs/a.yaml of A/a".into());
        assert_eq!(g.check("C/c", &Due::Changed, Millis(0)), None);
        assert_eq!(g.inner.lock().unwrap().runs["C/c"].len(), 1);
    }
}
