//! The ready queue of one pass (SPEC §5.2): jobs that wait on other jobs, started in key
//! order as soon as nothing they wait on is left, within an overall limit and a limit per
//! group (a model's `concurrency`); a job that fails or is blocked blocks, in turn, every
//! job waiting on it, and nothing else. It knows nothing of objects, stores or payloads —
//! it is generic over the job id, key and group — so it is tested on its own under tokio's
//! paused clock, the way kube-runtime tests its scheduler.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;

struct Entry<K, G> {
    key: K,
    group: G,
    /// Jobs it still waits on.
    unresolved: usize,
    /// Completes without being started (nothing to dispatch): handed out by
    /// [`ReadyQueue::take_inline`] instead of [`ReadyQueue::take`].
    inline: bool,
}

pub(crate) struct ReadyQueue<I, K, G> {
    jobs: HashMap<I, Entry<K, G>>,
    /// Who waits on whom: filled as jobs are added, read when one completes or is blocked.
    waiters: HashMap<I, Vec<I>>,
    ready: BTreeSet<(K, I)>,
    inline: Vec<I>,
    in_flight: HashSet<I>,
    running: HashMap<G, usize>,
}

impl<I, K, G> Default for ReadyQueue<I, K, G> {
    fn default() -> Self {
        ReadyQueue {
            jobs: HashMap::new(),
            waiters: HashMap::new(),
            ready: BTreeSet::new(),
            inline: Vec::new(),
            in_flight: HashSet::new(),
            running: HashMap::new(),
        }
    }
}

impl<I, K, G> ReadyQueue<I, K, G>
where
    I: Copy + Eq + Hash + Ord,
    K: Clone + Ord,
    G: Clone + Eq + Hash,
{
    /// Adds a job that may start once every job in `waits_on` has completed. The jobs it
    /// names may be added later; one never added keeps it waiting until it is blocked.
    pub(crate) fn add(&mut self, id: I, key: K, group: G, inline: bool, waits_on: &[I]) {
        for w in waits_on {
            self.waiters.entry(*w).or_default().push(id);
        }
        self.jobs.insert(
            id,
            Entry {
                key,
                group,
                unresolved: waits_on.len(),
                inline,
            },
        );
        if waits_on.is_empty() {
            self.make_ready(id);
        }
    }

    pub(crate) fn contains(&self, id: I) -> bool {
        self.jobs.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether `id` was taken and has not ended yet.
    pub(crate) fn is_in_flight(&self, id: I) -> bool {
        self.in_flight.contains(&id)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn make_ready(&mut self, id: I) {
        if let Some(e) = self.jobs.get(&id) {
            if e.inline {
                self.inline.push(id);
            } else {
                self.ready.insert((e.key.clone(), id));
            }
        }
    }

    /// The ready jobs to start now, in key order, within `limit` jobs in flight overall and
    /// `group_limit(group)` per group; they are in flight from now on.
    pub(crate) fn take(&mut self, limit: usize, group_limit: impl Fn(&G) -> usize) -> Vec<I> {
        let mut out = Vec::new();
        for (_, id) in &self.ready {
            if self.in_flight.len() + out.len() >= limit {
                break;
            }
            let Some(e) = self.jobs.get(id) else {
                continue;
            };
            let running = self.running.get(&e.group).copied().unwrap_or(0);
            if running >= group_limit(&e.group) {
                continue;
            }
            *self.running.entry(e.group.clone()).or_default() += 1;
            out.push(*id);
        }
        for id in &out {
            if let Some(e) = self.jobs.get(id) {
                self.ready.remove(&(e.key.clone(), *id));
            }
            self.in_flight.insert(*id);
        }
        out
    }

    /// The ready jobs with nothing to dispatch; the caller completes each.
    pub(crate) fn take_inline(&mut self) -> Vec<I> {
        std::mem::take(&mut self.inline)
    }

    /// Removes a job that ended (started or inline) and frees its group's slot.
    fn remove(&mut self, id: I) -> Option<Entry<K, G>> {
        let e = self.jobs.remove(&id)?;
        self.ready.remove(&(e.key.clone(), id));
        if self.in_flight.remove(&id)
            && let Some(n) = self.running.get_mut(&e.group)
        {
            *n = n.saturating_sub(1);
        }
        Some(e)
    }

    /// `id` completed: the jobs waiting on it may now be ready.
    pub(crate) fn complete(&mut self, id: I) {
        if self.remove(id).is_none() {
            return;
        }
        for w in self.waiters.remove(&id).unwrap_or_default() {
            let now_ready = self.jobs.get_mut(&w).is_some_and(|e| {
                e.unresolved = e.unresolved.saturating_sub(1);
                e.unresolved == 0
            });
            if now_ready {
                self.make_ready(w);
            }
        }
    }

    /// `id` failed or cannot run: it leaves the queue and so does, transitively, every job
    /// waiting on it. Returns each job blocked that way with the job that blocked it, in an
    /// order where a blocker comes before those it blocks.
    pub(crate) fn block(&mut self, id: I) -> Vec<(I, I)> {
        let mut out = Vec::new();
        if self.remove(id).is_none() {
            return out;
        }
        let mut work = vec![id];
        while let Some(b) = work.pop() {
            for w in self.waiters.remove(&b).unwrap_or_default() {
                if self.remove(w).is_some() {
                    out.push((w, b));
                    work.push(w);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::task::JoinSet;
    use tokio::time::Instant;

    /// A job of the test world: how long it runs and whether it fails.
    struct Work {
        id: u8,
        group: char,
        waits_on: Vec<u8>,
        ms: u64,
        fails: bool,
    }

    fn job(id: u8, waits_on: &[u8], ms: u64) -> Work {
        Work {
            id,
            group: 'a',
            waits_on: waits_on.to_vec(),
            ms,
            fails: false,
        }
    }

    #[derive(Debug, Default)]
    struct Trace {
        /// (id, start ms, end ms) of every job that ran.
        ran: Vec<(u8, u64, u64)>,
        blocked: Vec<(u8, u8)>,
        max_in_flight: usize,
    }

    /// Drives a queue the way the scheduler does: start what may start, wait for the next
    /// run to end, complete or block it. Time is tokio's paused clock.
    async fn drive(work: Vec<Work>, limit: usize, group_limit: impl Fn(&char) -> usize) -> Trace {
        let t0 = Instant::now();
        let ms = |t: Instant| u64::try_from((t - t0).as_millis()).unwrap_or(u64::MAX);
        let mut q: ReadyQueue<u8, u8, char> = ReadyQueue::default();
        let mut spec = HashMap::new();
        for w in work {
            q.add(w.id, w.id, w.group, false, &w.waits_on);
            spec.insert(w.id, (w.ms, w.fails));
        }
        let mut trace = Trace::default();
        let mut tasks = JoinSet::new();
        loop {
            for id in q.take(limit, &group_limit) {
                let (dur, fails) = spec[&id];
                tasks.spawn(async move {
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(dur)).await;
                    (id, start, fails)
                });
            }
            trace.max_in_flight = trace.max_in_flight.max(q.in_flight());
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (id, start, fails) = done.expect("task");
            trace.ran.push((id, ms(start), ms(Instant::now())));
            if fails {
                trace.blocked.extend(q.block(id));
            } else {
                q.complete(id);
            }
        }
        trace
    }

    fn start_of(t: &Trace, id: u8) -> u64 {
        t.ran.iter().find(|r| r.0 == id).map(|r| r.1).expect("ran")
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_starts_when_the_last_job_it_waits_on_ends() {
        // 1 -> 2 -> 4, 1 -> 3 -> 4: 4 waits for the slower of 2 and 3.
        let t = drive(
            vec![
                job(1, &[], 10),
                job(2, &[1], 30),
                job(3, &[1], 5),
                job(4, &[2, 3], 1),
            ],
            16,
            |_| usize::MAX,
        )
        .await;
        assert_eq!(start_of(&t, 1), 0);
        assert_eq!((start_of(&t, 2), start_of(&t, 3)), (10, 10));
        assert_eq!(start_of(&t, 4), 40);
        assert!(t.blocked.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_limit_holds_and_key_order_decides() {
        let work = (1..=5).rev().map(|i| job(i, &[], 10)).collect();
        let t = drive(work, 2, |_| usize::MAX).await;
        assert_eq!(t.max_in_flight, 2);
        let starts: Vec<u64> = (1..=5).map(|i| start_of(&t, i)).collect();
        assert_eq!(starts, [0, 0, 10, 10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_limit_holds_without_holding_other_groups() {
        let mut work: Vec<Work> = (1..=3).map(|i| job(i, &[], 10)).collect();
        for i in 4..=6 {
            work.push(Work {
                group: 'b',
                ..job(i, &[], 10)
            });
        }
        let t = drive(work, 16, |g| if *g == 'a' { 1 } else { usize::MAX }).await;
        let a: Vec<u64> = (1..=3).map(|i| start_of(&t, i)).collect();
        let b: Vec<u64> = (4..=6).map(|i| start_of(&t, i)).collect();
        assert_eq!(a, [0, 10, 20]);
        assert_eq!(b, [0, 0, 0]);
        assert_eq!(t.max_in_flight, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_blocks_its_dependents_only() {
        // 1 fails: 2 (waits on 1) and 3 (waits on 2) are blocked; 4 and 5 run.
        let t = drive(
            vec![
                Work {
                    fails: true,
                    ..job(1, &[], 10)
                },
                job(2, &[1], 10),
                job(3, &[2, 4], 10),
                job(4, &[], 50),
                job(5, &[4], 10),
            ],
            16,
            |_| usize::MAX,
        )
        .await;
        let ran: BTreeSet<u8> = t.ran.iter().map(|r| r.0).collect();
        assert_eq!(ran, BTreeSet::from([1, 4, 5]));
        assert_eq!(t.blocked, [(2, 1), (3, 2)]);
        assert_eq!(start_of(&t, 5), 50);
    }

    #[test]
    fn inline_jobs_are_handed_out_apart_and_release_their_waiters() {
        let mut q: ReadyQueue<u8, u8, char> = ReadyQueue::default();
        q.add(1, 1, 'a', true, &[]);
        q.add(2, 2, 'a', false, &[1]);
        assert!(q.take(16, |_| usize::MAX).is_empty());
        assert_eq!(q.take_inline(), [1]);
        q.complete(1);
        assert_eq!(q.take(16, |_| usize::MAX), [2]);
        q.complete(2);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn blocking_a_waiting_job_frees_nothing_it_waited_on() {
        let mut q: ReadyQueue<u8, u8, char> = ReadyQueue::default();
        q.add(1, 1, 'a', false, &[]);
        q.add(2, 2, 'a', false, &[1]);
        q.add(3, 3, 'a', false, &[2]);
        assert_eq!(q.block(2), [(3, 2)]);
        assert!(q.contains(1) && !q.contains(2) && !q.contains(3));
        assert_eq!(q.take(16, |_| usize::MAX), [1]);
    }
}
