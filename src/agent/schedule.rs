//! When things happen: check intervals with a random spread (so a fleet does not
//! probe in lockstep) and reconnect back-off with jitter. Pure functions of a
//! uniform random number, so they are tested without a clock.

use std::time::Duration;

/// A uniform random number in [0, 1) from the system's entropy source.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No entropy: fall back to the clock's low bits, still different per device.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        return f64::from(t % 1_000_000) / 1_000_000.0;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Delay before the first check: anywhere in [0, spread).
pub fn first_delay(spread: Duration, u: f64) -> Duration {
    spread.mul_f64(u.clamp(0.0, 1.0))
}

/// Delay between checks: `interval` moved by up to ± `spread`.
pub fn next_delay(interval: Duration, spread: Duration, u: f64) -> Duration {
    let shift = spread.as_secs_f64() * (2.0 * u.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((interval.as_secs_f64() + shift).max(0.0))
}

/// Reconnect delay after `failures` failed attempts in a row: doubling from `min`
/// up to `max`, with "equal jitter" (half fixed, half random) so that devices that
/// lost the hub together do not come back together.
pub fn backoff(failures: u32, min: Duration, max: Duration, u: f64) -> Duration {
    let base = min
        .saturating_mul(1u32 << failures.min(20))
        .min(max)
        .max(min);
    base / 2 + (base / 2).mul_f64(u.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_bounds() {
        let i = Duration::from_secs(300);
        let s = Duration::from_secs(30);
        assert_eq!(next_delay(i, s, 0.0), Duration::from_secs(270));
        assert_eq!(next_delay(i, s, 0.5), Duration::from_secs(300));
        assert!(next_delay(i, s, 0.999_999) <= Duration::from_secs(330));
        assert_eq!(first_delay(s, 0.0), Duration::ZERO);
        assert!(first_delay(s, 0.999) < s);
        assert_eq!(next_delay(i, Duration::ZERO, 0.9), i);
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let v: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let distinct = v
            .iter()
            .map(|x| x.to_bits())
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 60);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, min, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(0, min, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, min, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, min, max, 1.0), max);
        assert!(backoff(30, min, max, 0.0) >= max / 2);
    }
}
