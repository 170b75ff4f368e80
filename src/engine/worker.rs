//! This worker's claims on object runs when several workers share the store (SPEC §17):
//! before a run is dispatched its object is claimed, the claims are renewed every
//! `lease.ttl / 3`, and the write of the run's outcome is fenced by the claim's epoch. A
//! worker that lost a claim (it was paused or cut off past the ttl and another took the
//! object over) writes nothing for that object. On a store only one runner drives (SQLite,
//! under the runner lease of SPEC §5.5) there are no claims: nothing else can run an object.
//!
//! One worker at a time is also the leader: it holds the runner lease of SPEC §5.5 (the
//! same lease code) and alone runs the pull and event steps, the watchers and policies. The
//! others try for it every `ttl / 3`, so a leader that dies is replaced within its ttl.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, warn};

use crate::error::Result;
use crate::store::{Claim, Millis, Store, WorkerInfo};

/// What a claim on an object's run has become, as this worker knows it.
#[derive(Debug, Clone, Copy)]
enum Held {
    Current(Claim),
    /// A renewal found another worker holding it: the run's outcome must not be written.
    Lost,
}

/// One worker process on a shared store: its claims and whether it leads. Shared by the
/// engines it reloads into.
pub(crate) struct Worker {
    store: Arc<dyn Store>,
    me: WorkerInfo,
    ttl: Duration,
    /// The claim of each object this worker is about to run or is running, by object id.
    held: Mutex<HashMap<i64, Held>>,
    leader: Arc<AtomicBool>,
    lease: Mutex<Option<super::lease::LeaseGuard>>,
    /// This worker's own order of equally ready runs (see [`Worker::spread`]).
    seed: u64,
}

/// What the fence of an outcome is, for the object it is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    /// The outcome is fenced by this claim (the run was claimed).
    Claim(Claim),
    /// The claim was lost to another worker: write nothing.
    Lost,
    /// Nothing was claimed for it (an outcome of no run: inline, blocked).
    Unclaimed,
}

impl Worker {
    /// Registers this process as a worker of `store`; its claims last `ttl` unrenewed. It
    /// leads at once if nobody else does.
    pub(crate) fn register(store: Arc<dyn Store>, ttl: Duration) -> Result<Arc<Worker>> {
        let now = Millis::now();
        let me = WorkerInfo {
            name: super::lease::process_name(now),
            host: super::lease::hostname(),
            pid: std::process::id(),
            since: now,
            heartbeat: now,
            claims: 0,
        };
        store.register_worker(&me)?;
        let seed = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            me.name.hash(&mut h);
            h.finish()
        };
        let w = Arc::new(Worker {
            store,
            me,
            ttl,
            seed,
            held: Mutex::new(HashMap::new()),
            leader: Arc::new(AtomicBool::new(false)),
            lease: Mutex::new(None),
        });
        w.try_to_lead()?;
        Ok(w)
    }

    /// Where run `id` goes among runs equally ready, in this worker's order. Workers that
    /// walked the same order would all ask for the same objects, and all but one would
    /// lose each claim, a round trip apiece (B11: three workers lost ~5,000 claims of one
    /// object each for 3,000 objects); each in its own order, they rarely meet.
    pub(crate) fn spread(&self, id: i64) -> u64 {
        // A multiplicative hash (Fibonacci hashing) of the id mixed with the seed.
        (self.seed ^ id.cast_unsigned()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Whether this worker runs the pull and event steps, watchers and policies now.
    pub(crate) fn leads(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Takes the runner lease when nobody else holds it.
    fn try_to_lead(&self) -> Result<()> {
        if self.leads() {
            return Ok(());
        }
        let demote = super::lease::OnLost::Demote(self.leader.clone());
        if let Ok(guard) = super::lease::try_acquire(self.store.clone(), self.ttl, demote)? {
            *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
            self.leader.store(true, Ordering::SeqCst);
            tracing::info!(worker = %self.me.name, "leading: pull and event steps, watchers and policies run here");
        }
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.me.name
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the runs of `ids`; the ids claimed (the others are another worker's now).
    pub(crate) fn take(&self, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let claims = self.store.claim(&self.me.name, ids, self.ttl)?;
        let mut held = self.held();
        Ok(claims
            .into_iter()
            .map(|c| {
                held.insert(c.obj, Held::Current(c));
                c.obj
            })
            .collect())
    }

    /// Gives back the claims on `ids` (their runs did not happen).
    pub(crate) fn give_back(&self, ids: &[i64]) -> Result<()> {
        let claims: Vec<Claim> = {
            let mut held = self.held();
            ids.iter()
                .filter_map(|id| match held.remove(id) {
                    Some(Held::Current(c)) => Some(c),
                    _ => None,
                })
                .collect()
        };
        if !claims.is_empty() {
            self.store.release(&self.me.name, &claims)?;
        }
        Ok(())
    }

    /// What fences the outcome for `id`, taken out of the held claims (the fence releases
    /// it with the outcome).
    pub(crate) fn fence(&self, id: i64) -> Fence {
        match self.held().remove(&id) {
            Some(Held::Current(c)) => Fence::Claim(c),
            Some(Held::Lost) => Fence::Lost,
            None => Fence::Unclaimed,
        }
    }

    /// Renews every held claim and the heartbeat, marks the claims another worker took as
    /// lost, and tries to lead if nobody does.
    pub(crate) fn renew(&self) -> Result<()> {
        // Only claims committed before the renewal can be missing from it for having been
        // taken over: one taken while it runs is not in what it read.
        let before: Vec<Claim> = self
            .held()
            .values()
            .filter_map(|h| match h {
                Held::Current(c) => Some(*c),
                Held::Lost => None,
            })
            .collect();
        let kept = self.store.renew(&self.me.name, self.ttl)?;
        let kept: HashMap<i64, i64> = kept.into_iter().map(|c| (c.obj, c.epoch)).collect();
        let mut held = self.held();
        for c in before {
            if kept.get(&c.obj) != Some(&c.epoch)
                && let Some(h) = held.get_mut(&c.obj)
                && matches!(h, Held::Current(now) if *now == c)
            {
                let id = c.obj;
                warn!(
                    object_id = id,
                    "lost the claim on an object to another worker; its outcome will not be written"
                );
                *h = Held::Lost;
            }
        }
        self.try_to_lead()
    }

    /// Renews in the background every `ttl / 3` for as long as the returned task lives.
    pub(crate) fn keep_renewed(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((me.ttl / 3).max(Duration::from_millis(10)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let c = me.clone();
                match tokio::task::spawn_blocking(move || c.renew()).await {
                    Ok(Ok(())) => {}
                    // Retried on the next tick, well before the ttl ends.
                    Ok(Err(e)) => error!(error = %e, "cannot renew this worker's claims"),
                    Err(e) => error!(error = %e, "the claim renewal task failed"),
                }
            }
        })
    }
}

impl Worker {
    /// A clean stop: the lead and every claim are handed over at once (a crash leaves them
    /// to expire).
    pub(crate) fn stop(&self) {
        drop(self.lease.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.leader.store(false, Ordering::SeqCst);
        if let Err(e) = self.store.retire_worker(&self.me.name) {
            warn!(error = %e, "cannot take this worker off the store's workers");
        }
    }
}
