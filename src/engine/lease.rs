//! The runner's lease on the store (SPEC §5.5): a `run` (daemon or `--once`) holds it for as
//! long as it drives the store and renews it every `ttl / 3`; a second `run` is refused with
//! the holder's name; a holder that is gone — a PID that no longer exists on this host, or a
//! lease nobody renewed within its `ttl` — is taken over at once. The decision is a pure
//! function ([`verdict`]); the store only swaps the record atomically.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::store::{Lease, Millis, Store};

/// What a runner may do about the lease it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nobody holds it, or its holder is gone: take it.
    Take,
    /// Another live runner holds it.
    Held(Lease),
}

/// Whether `me` may take the lease given what the store holds at `now`. `alive` says
/// whether a PID exists on this host.
pub(crate) fn verdict(
    found: Option<&Lease>,
    me: &Lease,
    now: Millis,
    alive: impl Fn(u32) -> bool,
) -> Verdict {
    match found {
        None => Verdict::Take,
        Some(l) if l.holder == me.holder => Verdict::Take,
        Some(l) if l.expires <= now => Verdict::Take,
        Some(l) if l.host == me.host && !alive(l.pid) => Verdict::Take,
        Some(l) => Verdict::Held(l.clone()),
    }
}

/// Whether a process with this PID exists here.
fn pid_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This process's name as a lease holder and a worker: host, pid and start time.
pub(crate) fn process_name(now: Millis) -> String {
    format!("{}:{}:{}", hostname(), std::process::id(), now.0)
}

/// A held lease: renewed in the background while it lives, released when dropped.
pub(crate) struct LeaseGuard {
    store: Arc<dyn Store>,
    lease: Arc<std::sync::Mutex<Lease>>,
    renewer: tokio::task::JoinHandle<()>,
}

/// What a holder does when a renewal finds the lease taken by another (it was paused or
/// cut off past its ttl).
pub(crate) enum OnLost {
    /// The one runner of a store: stops before any outcome of its can overwrite the new
    /// runner's work.
    Exit,
    /// A leading worker of a shared store: it stops leading (this turns false) and goes on
    /// as a worker, its outcomes fenced by their claims.
    Demote(Arc<std::sync::atomic::AtomicBool>),
}

/// Takes the store's lease for this process, or says who holds it.
pub(crate) fn acquire(store: Arc<dyn Store>, ttl: Duration) -> Result<LeaseGuard> {
    match try_acquire(store, ttl, OnLost::Exit)? {
        Ok(guard) => Ok(guard),
        Err(l) => Err(Error::failed(format!(
            "store is driven by another stepsync run (pid {} on host {}, since {})",
            l.pid,
            l.host,
            l.since.rfc3339()
        ))),
    }
}

/// Takes the store's lease for this process when nobody else holds it; the holder's lease
/// when another live runner does.
pub(crate) fn try_acquire(
    store: Arc<dyn Store>,
    ttl: Duration,
    on_lost: OnLost,
) -> Result<std::result::Result<LeaseGuard, Lease>> {
    let now = Millis::now();
    let pid = std::process::id();
    let host = hostname();
    let me = Lease {
        holder: process_name(now),
        pid,
        host,
        since: now,
        expires: now.after(ttl),
    };
    // Two tries: the record may change between reading it and swapping it.
    for _ in 0..2 {
        let found = store.lease()?;
        match verdict(found.as_ref(), &me, now, pid_alive) {
            Verdict::Held(l) => return Ok(Err(l)),
            Verdict::Take => {
                if store.swap_lease(found.as_ref(), Some(&me))? {
                    if let Some(old) = found.filter(|l| l.holder != me.holder) {
                        info!(pid = old.pid, host = %old.host, "took over the lease of a runner that is gone");
                    }
                    return Ok(Ok(start(store, me, ttl, on_lost)));
                }
            }
        }
    }
    Err(Error::failed(
        "another stepsync run took the store's lease at the same moment",
    ))
}

fn start(store: Arc<dyn Store>, me: Lease, ttl: Duration, on_lost: OnLost) -> LeaseGuard {
    let lease = Arc::new(std::sync::Mutex::new(me));
    let renewer = {
        let (store, lease) = (store.clone(), lease.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(10)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let current = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let renewed = Lease {
                    expires: Millis::now().after(ttl),
                    ..current.clone()
                };
                let store = store.clone();
                let swapped = {
                    let renewed = renewed.clone();
                    tokio::task::spawn_blocking(move || {
                        store.swap_lease(Some(&current), Some(&renewed))
                    })
                    .await
                };
                match swapped {
                    Ok(Ok(true)) => *lease.lock().unwrap_or_else(|p| p.into_inner()) = renewed,
                    Ok(Ok(false)) => match &on_lost {
                        // Another runner took the store over (this one was paused past its
                        // ttl): stop before any outcome of ours can overwrite its work.
                        OnLost::Exit => {
                            error!("lost the store's lease to another stepsync run; stopping");
                            std::process::exit(1);
                        }
                        OnLost::Demote(leads) => {
                            warn!("lost the lead to another worker; going on as a worker");
                            leads.store(false, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                    },
                    // A store error is retried on the next tick, well before the ttl ends.
                    Ok(Err(e)) => error!(error = %e, "cannot renew the store's lease"),
                    Err(e) => error!(error = %e, "the lease renewal task failed"),
                }
            }
        })
    };
    LeaseGuard {
        store,
        lease,
        renewer,
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let mine = self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Released so the next run need not wait; a failure here only means the next run
        // finds a lease whose PID is gone, which it takes over at once.
        let _ = self.store.swap_lease(Some(&mine), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, pid: u32, host: &str, expires: i64) -> Lease {
        Lease {
            holder: holder.into(),
            pid,
            host: host.into(),
            since: Millis(0),
            expires: Millis(expires),
        }
    }

    #[test]
    fn who_may_take_the_lease() {
        let me = lease("h1:2:0", 2, "h1", 100);
        let now = Millis(50);
        let alive = |pid: u32| pid == 7;
        let cases = [
            ("free", None, true),
            ("mine", Some(lease("h1:2:0", 2, "h1", 60)), true),
            (
                "live holder here",
                Some(lease("h1:7:0", 7, "h1", 60)),
                false,
            ),
            ("dead holder here", Some(lease("h1:8:0", 8, "h1", 60)), true),
            (
                "holder elsewhere",
                Some(lease("h2:8:0", 8, "h2", 60)),
                false,
            ),
            (
                "expired elsewhere",
                Some(lease("h2:8:0", 8, "h2", 50)),
                true,
            ),
        ];
        for (what, found, take) in cases {
            let v = verdict(found.as_ref(), &me, now, alive);
            assert_eq!(v == Verdict::Take, take, "{what}: {v:?}");
        }
    }
}
