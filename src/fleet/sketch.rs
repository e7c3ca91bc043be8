//! A fixed-bucket logarithmic histogram for percentiles over any number of
//! samples in constant memory.
//!
//! Positive values fall into buckets whose bounds grow by a factor `GAMMA` = 1.02;
//! a quantile is answered with the geometric midpoint of the bucket that holds the
//! sample of that rank, so its **relative error is at most (√γ − 1) ≈ 0.995 %** for
//! values in `[MIN, MAX]` (values below `MIN`, zero included, are reported as 0;
//! values above `MAX` as `MAX`). The rank is the one ClickHouse's `quantileExact`
//! uses: the sample at 0-based index ⌊p·n⌋ of the sorted values (clamped to n − 1),
//! so the two agree within that bound.

/// Growth factor of the bucket bounds.
pub const GAMMA: f64 = 1.02;
/// Smallest value kept apart from zero (a microsecond, when values are milliseconds).
pub const MIN: f64 = 1e-3;
/// Largest value resolved (about 2.8 h in milliseconds).
pub const MAX: f64 = 1e7;
/// The worst relative error of a quantile inside `[MIN, MAX]`.
pub const RELATIVE_ERROR: f64 = 0.01;

const BUCKETS: usize = 1164; // ceil(ln(MAX/MIN)/ln(GAMMA)) + 1

/// Counts per logarithmic bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct LogHistogram {
    zero: u64,
    counts: Vec<u64>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            zero: 0,
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl LogHistogram {
    /// Adds one sample; NaN is ignored, negatives count as zero.
    pub fn add(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.total += 1;
        if v < MIN {
            self.zero += 1;
            return;
        }
        let i = ((v.min(MAX) / MIN).ln() / GAMMA.ln()).floor() as usize;
        self.counts[i.min(BUCKETS - 1)] += 1;
    }

    /// Samples added.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &LogHistogram) {
        self.zero += other.zero;
        self.total += other.total;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The `p` quantile (0 ≤ p ≤ 1), `None` when empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * self.total as f64).floor() as u64).min(self.total - 1);
        if rank < self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                let lo = MIN * GAMMA.powi(i as i32);
                return Some((lo * lo * GAMMA).sqrt().min(MAX));
            }
        }
        Some(MAX)
    }

    /// p50, p90 and p99.
    pub fn percentiles(&self) -> Option<Percentiles> {
        Some(Percentiles {
            p50: self.quantile(0.5)?,
            p90: self.quantile(0.9)?,
            p99: self.quantile(0.99)?,
        })
    }

    /// Non-empty buckets as (lower bound, upper bound, count), for charts.
    pub fn buckets(&self) -> Vec<(f64, f64, u64)> {
        let mut out = Vec::new();
        if self.zero > 0 {
            out.push((0.0, MIN, self.zero));
        }
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                let lo = MIN * GAMMA.powi(i as i32);
                out.push((lo, lo * GAMMA, c));
            }
        }
        out
    }
}

/// Three percentiles of a distribution.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], p: f64) -> f64 {
        let k = ((p * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
        sorted[k]
    }

    #[test]
    fn quantiles_stay_within_the_error_bound() {
        let mut h = LogHistogram::default();
        let mut v: Vec<f64> = (0..10_000)
            .map(|i| 0.5 + (i as f64 * 7.919).sin().abs() * 3000.0 + i as f64 * 0.01)
            .collect();
        for x in &v {
            h.add(*x);
        }
        v.sort_by(f64::total_cmp);
        for p in [0.0, 0.01, 0.5, 0.9, 0.99, 1.0] {
            let want = exact(&v, p);
            let got = h.quantile(p).unwrap();
            assert!(
                ((got - want) / want).abs() <= RELATIVE_ERROR,
                "p{p}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn zeros_empty_and_merge() {
        let mut a = LogHistogram::default();
        assert_eq!(a.quantile(0.5), None);
        a.add(0.0);
        a.add(-1.0);
        a.add(f64::NAN);
        assert_eq!(a.count(), 2);
        assert_eq!(a.quantile(0.99), Some(0.0));
        let mut b = LogHistogram::default();
        b.add(100.0);
        b.add(100.0);
        b.add(100.0);
        a.merge(&b);
        assert_eq!(a.count(), 5);
        let p90 = a.quantile(0.9).unwrap();
        assert!((p90 - 100.0).abs() <= 1.0, "{p90}");
        assert_eq!(a.quantile(0.2), Some(0.0));
        let huge = {
            let mut h = LogHistogram::default();
            h.add(1e12);
            h.quantile(0.5).unwrap()
        };
        assert!(huge <= MAX);
    }
}
