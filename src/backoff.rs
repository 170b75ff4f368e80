//! Retry timing (SPEC §5.3): `min(initial * factor^(failures-1), max)` with ± jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::Backoff;

/// The wait before retry number `failures` (1 for the first failure), with a random spread.
#[cfg(test)]
fn delay(cfg: &Backoff, failures: u32) -> Duration {
    delay_with(cfg, failures, unit_random())
}

/// The wait before retry number `failures` (1 for the first failure); `unit` is the jitter's
/// random sample in [0, 1) (0.5: no spread), passed in so callers can be deterministic.
pub fn delay_with(cfg: &Backoff, failures: u32, unit: f64) -> Duration {
    let base = cfg.initial.0.as_secs_f64()
        * cfg
            .factor
            .0
            .powi(i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX));
    let capped = base.min(cfg.max.0.as_secs_f64());
    let spread = cfg.jitter.0 * (2.0 * unit - 1.0);
    Duration::from_secs_f64((capped * (1.0 + spread)).max(0.0))
}

/// A number in [0, 1) that differs between calls; jitter needs spread, not cryptography.
pub(crate) fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Factor, Jitter};
    use crate::duration::Dur;

    #[test]
    fn grows_by_factor_up_to_max() {
        let cfg = Backoff {
            initial: Dur::secs(10),
            factor: Factor(2.0),
            max: Dur::secs(60),
            jitter: Jitter(0.0),
            disabled: false,
        };
        let secs: Vec<u64> = (1..=5).map(|f| delay(&cfg, f).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 60, 60]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let cfg = Backoff {
            jitter: Jitter(0.5),
            ..Backoff::default()
        };
        for _ in 0..100 {
            let d = delay(&cfg, 1).as_secs_f64();
            assert!((5.0..=15.0).contains(&d), "{d}");
        }
    }
}
