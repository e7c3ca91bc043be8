//! Stability statistics of a round-trip probe (MQTT PINGREQ/PINGRESP or a reflector
//! echo) sampled at randomized times: RFC 6298 SRTT/RTTVAR/RTO, RFC 3550 jitter,
//! RFC 5481 packet delay variation, loss, loss bursts and outages.
//!
//! Why: the keep-alive recommendation needs the retransmission timeout (how long one
//! lost PINGREQ costs), the tail of the round trip after an idle period (how long to
//! wait for a PINGRESP) and whether the link loses packets or goes dark for a while
//! (then a long keep-alive leaves dead connections unnoticed). Samples taken after
//! an idle period ("cold": radio wake-up, NAT state re-creation) behave differently
//! from back-to-back ones ("warm"), so the two groups are kept apart.
//!
//! Everything here is pure: samples in, figures out; time is passed in as numbers.
//! Non-finite or negative round-trip times are ignored (they can only come from a
//! broken clock, and one bad value must not poison every figure).

pub use crate::model::keepalive::{
    GroupStats, LossBursts, Outage, Percentiles, Rto, Sample, Stability, StabilityConfig,
};

/// The largest RTO this module reports: RFC 6298 (2.5) allows an upper bound on the
/// RTO provided it is at least 60 s.
pub const MAX_RTO_MS: f64 = 60_000.0;

impl Sample {
    /// The round-trip time if it is a usable number (answered, finite, not negative).
    /// Why: a lost sample and a corrupt one are both "no RTT" for the statistics.
    pub fn rtt(&self) -> Option<f64> {
        self.rtt_ms.filter(|r| r.is_finite() && *r >= 0.0)
    }
}

impl Default for StabilityConfig {
    /// Cold after 10 s idle (cellular radios drop to idle after roughly 5–12 s of
    /// silence, so a probe after 10 s pays the wake-up), outage from 5 s of
    /// consecutive losses (longer than any sane RTO-driven retransmission gap), the
    /// RFC 6298 RTO floor of 1 s and a 1 ms clock.
    fn default() -> Self {
        StabilityConfig {
            cold_after_ms: 10_000.0,
            outage_min_ms: 5_000.0,
            min_rto_ms: 1_000.0,
            granularity_ms: 1.0,
        }
    }
}

/// RFC 6298 section 2 over `rtts` in order.
///
/// First sample R: SRTT = R, RTTVAR = R/2. Each later sample R':
/// RTTVAR = 3/4·RTTVAR + 1/4·|SRTT − R'| (with the *old* SRTT), then
/// SRTT = 7/8·SRTT + 1/8·R'. RTO = SRTT + max(G, 4·RTTVAR), raised to `min_rto_ms`
/// and capped at [`MAX_RTO_MS`]. Why: this is what the TCP stack itself will use to
/// retransmit a lost PINGREQ. `None` when no usable sample.
pub fn rfc6298(rtts: &[f64], g_ms: f64, min_rto_ms: f64) -> Option<Rto> {
    let mut it = rtts.iter().copied().filter(|r| r.is_finite() && *r >= 0.0);
    let first = it.next()?;
    let (mut srtt, mut rttvar) = (first, first / 2.0);
    for r in it {
        rttvar = 0.75 * rttvar + 0.25 * (srtt - r).abs();
        srtt = 0.875 * srtt + 0.125 * r;
    }
    let g = if g_ms.is_finite() { g_ms.max(0.0) } else { 0.0 };
    let floor = if min_rto_ms.is_finite() {
        min_rto_ms.max(0.0)
    } else {
        0.0
    };
    let rto = (srtt + g.max(4.0 * rttvar)).max(floor).min(MAX_RTO_MS);
    Some(Rto {
        srtt_ms: srtt,
        rttvar_ms: rttvar,
        rto_ms: rto,
    })
}

/// RFC 3550 (A.8) interarrival jitter over consecutive round-trip times:
/// J starts at 0 and for each difference D between consecutive samples
/// J += (|D| − J)/16. Why: the figure every VoIP/RTP tool reports, so operators can
/// compare. `None` with fewer than two usable samples.
pub fn rfc3550_jitter(rtts: &[f64]) -> Option<f64> {
    let mut it = rtts.iter().copied().filter(|r| r.is_finite() && *r >= 0.0);
    let mut prev = it.next()?;
    let mut j = 0.0;
    let mut n = 0usize;
    for r in it {
        j += ((r - prev).abs() - j) / 16.0;
        prev = r;
        n += 1;
    }
    (n > 0).then_some(j)
}

/// The nearest-rank percentile of already **sorted** values: the value at 1-based rank
/// ⌈p/100 · N⌉ (at least rank 1), i.e. the smallest value such that at least p % of
/// the values are ≤ it. Why nearest-rank: it always returns a value that was
/// actually observed (no interpolation), and with few samples p99 is simply the
/// maximum. `None` when empty or `p` is outside 0..=100.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    // p·N/100 rather than p/100·N: exact for whole p and N (95·100/100 = 95, not 95.000…1).
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// p50/p95/p99 (nearest rank, see [`percentile`]) of the usable values. Why: one call
/// for the three figures a report shows. `None` when there is no usable value.
pub fn percentiles(values: &[f64]) -> Option<Percentiles> {
    let mut v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .collect();
    v.sort_by(f64::total_cmp);
    Some(Percentiles {
        p50_ms: percentile(&v, 50.0)?,
        p95_ms: percentile(&v, 95.0)?,
        p99_ms: percentile(&v, 99.0)?,
    })
}

/// RFC 5481 packet delay variation: each round-trip time minus the minimum one, as
/// percentiles. Why: PDV separates the fixed path delay from the queueing and radio
/// delay on top of it, which is what varies and what a timeout must absorb.
pub fn pdv(rtts: &[f64]) -> Option<Percentiles> {
    let usable: Vec<f64> = rtts
        .iter()
        .copied()
        .filter(|r| r.is_finite() && *r >= 0.0)
        .collect();
    let min = usable.iter().copied().min_by(f64::total_cmp)?;
    let d: Vec<f64> = usable.iter().map(|r| r - min).collect();
    percentiles(&d)
}

/// The fraction (0..=1) of samples that got no answer. Why: the headline loss figure.
/// `None` for no samples (no samples is not "no loss").
pub fn loss_rate(samples: &[Sample]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let lost = samples.iter().filter(|s| s.rtt().is_none()).count();
    Some(lost as f64 / samples.len() as f64)
}

/// Loss bursts over samples in send order (see [`LossBursts`]).
pub fn loss_bursts(samples: &[Sample]) -> LossBursts {
    let mut b = LossBursts::default();
    let mut run = 0usize;
    for s in samples {
        if s.rtt().is_none() {
            run += 1;
            if run == 1 {
                b.count += 1;
            }
            b.longest_samples = b.longest_samples.max(run);
        } else {
            run = 0;
        }
    }
    b
}

/// Outages over samples in send order: runs of consecutive lost samples whose span
/// (see [`Outage`]) is at least `outage_min_ms`. Why the span and not the count: with
/// randomized probe times the count of lost samples says little about how long the
/// link was gone; the last good and the next good sample bound it.
pub fn outages(samples: &[Sample], outage_min_ms: f64) -> Vec<Outage> {
    let mut out = Vec::new();
    let mut last_ok: Option<f64> = None;
    // (first lost send time, last lost send time) of the run in progress.
    let mut run: Option<(f64, f64)> = None;
    for s in samples {
        if s.rtt().is_none() {
            run = Some(match run {
                None => (s.at_ms, s.at_ms),
                Some((first, _)) => (first, s.at_ms),
            });
        } else {
            if let Some((first, _)) = run.take() {
                let start = last_ok.unwrap_or(first);
                let length = s.at_ms - start;
                if length >= outage_min_ms {
                    out.push(Outage {
                        start_ms: start,
                        length_ms: length,
                        ongoing: false,
                    });
                }
            }
            last_ok = Some(s.at_ms);
        }
    }
    if let Some((first, last)) = run {
        let start = last_ok.unwrap_or(first);
        let length = last - start;
        if length >= outage_min_ms {
            out.push(Outage {
                start_ms: start,
                length_ms: length,
                ongoing: true,
            });
        }
    }
    out
}

/// The figures of one group of samples (already in send order).
/// Why public: a caller can summarize any subset the same way.
pub fn group_stats(samples: &[Sample], cfg: &StabilityConfig) -> GroupStats {
    let rtts: Vec<f64> = samples.iter().filter_map(Sample::rtt).collect();
    let answered = rtts.len();
    let (min, max, mean) = if rtts.is_empty() {
        (None, None, None)
    } else {
        (
            rtts.iter().copied().min_by(f64::total_cmp),
            rtts.iter().copied().max_by(f64::total_cmp),
            Some(rtts.iter().sum::<f64>() / answered as f64),
        )
    };
    GroupStats {
        samples: samples.len(),
        answered,
        lost: samples.len() - answered,
        loss_rate: loss_rate(samples),
        rtt_min_ms: min,
        rtt_mean_ms: mean,
        rtt_max_ms: max,
        rtt_percentiles: percentiles(&rtts),
        pdv: pdv(&rtts),
        rto: rfc6298(&rtts, cfg.granularity_ms, cfg.min_rto_ms),
        jitter_ms: rfc3550_jitter(&rtts),
    }
}

/// Summarizes samples in any order (they are put in send order first). Why: the one
/// call the tuner makes after sampling. Empty and all-lost input give zero counts and
/// absent figures, never a panic.
pub fn summarize(samples: &[Sample], cfg: &StabilityConfig) -> Stability {
    let mut sorted: Vec<Sample> = samples.to_vec();
    sorted.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let (cold, warm): (Vec<Sample>, Vec<Sample>) = sorted
        .iter()
        .partition(|s| s.idle_before_ms >= cfg.cold_after_ms);
    let answered = sorted.iter().filter(|s| s.rtt().is_some()).count();
    let span_ms = match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) if (b.at_ms - a.at_ms).is_finite() => b.at_ms - a.at_ms,
        _ => 0.0,
    };
    Stability {
        samples: sorted.len(),
        answered,
        lost: sorted.len() - answered,
        loss_rate: loss_rate(&sorted),
        span_ms,
        loss_bursts: loss_bursts(&sorted),
        outages: outages(&sorted, cfg.outage_min_ms),
        warm: group_stats(&warm, cfg),
        cold: group_stats(&cold, cfg),
        config: *cfg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn s(at_ms: f64, rtt: Option<f64>) -> Sample {
        Sample {
            at_ms,
            rtt_ms: rtt,
            idle_before_ms: 0.0,
        }
    }

    #[test]
    fn rfc6298_known_sequence_100_100_200() {
        // By hand (G = 1 ms):
        // R=100: SRTT=100, RTTVAR=50.
        // R=100: RTTVAR = 0.75·50 + 0.25·|100−100| = 37.5;  SRTT = 0.875·100 + 0.125·100 = 100.
        // R=200: RTTVAR = 0.75·37.5 + 0.25·|100−200| = 28.125 + 25 = 53.125;
        //        SRTT = 0.875·100 + 0.125·200 = 87.5 + 25 = 112.5.
        // RTO = 112.5 + max(1, 4·53.125 = 212.5) = 325 → above Linux's 200 floor,
        // below RFC 6298's 1000 floor.
        let linux = rfc6298(&[100.0, 100.0, 200.0], 1.0, 200.0).unwrap();
        assert!(close(linux.srtt_ms, 112.5));
        assert!(close(linux.rttvar_ms, 53.125));
        assert!(close(linux.rto_ms, 325.0));
        let rfc = rfc6298(&[100.0, 100.0, 200.0], 1.0, 1000.0).unwrap();
        assert!(close(rfc.rto_ms, 1000.0));
        assert!(close(rfc.srtt_ms, 112.5));
    }

    #[test]
    fn rfc6298_first_sample_granularity_and_cap() {
        // One sample 50: SRTT 50, RTTVAR 25, RTO = 50 + 100 = 150 (no floor).
        let one = rfc6298(&[50.0], 1.0, 0.0).unwrap();
        assert!(close(one.srtt_ms, 50.0) && close(one.rttvar_ms, 25.0) && close(one.rto_ms, 150.0));
        // 40 identical samples of 10 ms: RTTVAR = 5·0.75^39 ≈ 6.5e-5, so 4·RTTVAR < G=100
        // and RTO = SRTT + G = 110.
        let flat = rfc6298(&[10.0; 40], 100.0, 0.0).unwrap();
        assert!(close(flat.srtt_ms, 10.0));
        assert!((flat.rto_ms - 110.0).abs() < 1e-3);
        // 30 s RTT: 30000 + 4·15000 = 90000 → capped at 60 s.
        assert!(close(
            rfc6298(&[30_000.0], 1.0, 1000.0).unwrap().rto_ms,
            60_000.0
        ));
        // Nothing usable.
        assert_eq!(rfc6298(&[], 1.0, 1000.0), None);
        assert_eq!(rfc6298(&[f64::NAN, -1.0], 1.0, 1000.0), None);
        // A NaN in the middle is skipped, not propagated.
        assert_eq!(
            rfc6298(&[100.0, f64::NAN, 100.0, 200.0], 1.0, 200.0),
            rfc6298(&[100.0, 100.0, 200.0], 1.0, 200.0)
        );
    }

    #[test]
    fn rfc3550_jitter_known_sequence() {
        // 100 → 116: |D| = 16, J = 0 + (16 − 0)/16 = 1.
        // 116 → 100: |D| = 16, J = 1 + (16 − 1)/16 = 1.9375.
        // 100 → 100: |D| = 0,  J = 1.9375 − 1.9375/16 = 1.81640625.
        let j = rfc3550_jitter(&[100.0, 116.0, 100.0, 100.0]).unwrap();
        assert!(close(j, 1.816_406_25));
        assert_eq!(rfc3550_jitter(&[100.0]), None);
        assert_eq!(rfc3550_jitter(&[]), None);
        assert!(close(rfc3550_jitter(&[5.0, 5.0]).unwrap(), 0.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100: p50 = rank 50 → 50, p95 = rank 95 → 95, p99 = rank 99 → 99.
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms), (50.0, 95.0, 99.0));
        // Five values, unsorted: p50 = rank ⌈2.5⌉ = 3 → 30; p95 = rank ⌈4.75⌉ = 5 → 50.
        let p = percentiles(&[50.0, 10.0, 40.0, 20.0, 30.0]).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms), (30.0, 50.0, 50.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 100.0), Some(2.0));
        assert_eq!(percentile(&[1.0], 101.0), None);
        assert_eq!(percentiles(&[]), None);
    }

    #[test]
    fn pdv_is_relative_to_the_minimum() {
        // min 20: deltas 0, 10, 30, 80 → p50 = rank 2 → 10, p95 = p99 = rank 4 → 80.
        let p = pdv(&[30.0, 20.0, 100.0, 50.0]).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms), (10.0, 80.0, 80.0));
        assert_eq!(pdv(&[]), None);
    }

    #[test]
    fn loss_rate_and_bursts() {
        let x = None;
        let o = Some(10.0);
        let seq: Vec<Sample> = [o, x, x, o, x, o, x, x, x, o]
            .iter()
            .enumerate()
            .map(|(i, r)| s(i as f64 * 1000.0, *r))
            .collect();
        assert!(close(loss_rate(&seq).unwrap(), 0.6));
        assert_eq!(
            loss_bursts(&seq),
            LossBursts {
                count: 3,
                longest_samples: 3
            }
        );
        assert_eq!(loss_rate(&[]), None);
        assert_eq!(loss_bursts(&[]), LossBursts::default());
    }

    #[test]
    fn outages_span_from_last_good_to_next_good() {
        // ok@0, lost@1000, lost@2000, ok@7000 → span 0..7000 = 7 s ≥ 5 s: an outage.
        // lost@8000, ok@9000 → span 7000..9000 = 2 s: a loss, not an outage.
        // lost@12000, lost@20000 at the end → span 9000..20000 = 11 s, ongoing.
        let seq = vec![
            s(0.0, Some(10.0)),
            s(1000.0, None),
            s(2000.0, None),
            s(7000.0, Some(10.0)),
            s(8000.0, None),
            s(9000.0, Some(10.0)),
            s(12_000.0, None),
            s(20_000.0, None),
        ];
        let o = outages(&seq, 5000.0);
        assert_eq!(
            o,
            vec![
                Outage {
                    start_ms: 0.0,
                    length_ms: 7000.0,
                    ongoing: false
                },
                Outage {
                    start_ms: 9000.0,
                    length_ms: 11_000.0,
                    ongoing: true
                },
            ]
        );
        // Losses from the very start: the run starts at the first lost sample.
        let seq = vec![s(0.0, None), s(6000.0, None), s(8000.0, Some(5.0))];
        assert_eq!(
            outages(&seq, 5000.0),
            vec![Outage {
                start_ms: 0.0,
                length_ms: 8000.0,
                ongoing: false
            }]
        );
    }

    #[test]
    fn summarize_keeps_warm_and_cold_apart() {
        let cfg = StabilityConfig::default();
        let mut seq = vec![];
        // Warm: 100, 100, 200 (the RFC 6298 sequence above), sent out of order.
        for (at, rtt) in [(2000.0, 200.0), (0.0, 100.0), (1000.0, 100.0)] {
            seq.push(Sample {
                at_ms: at,
                rtt_ms: Some(rtt),
                idle_before_ms: 500.0,
            });
        }
        // Cold: 300 and a lost one.
        seq.push(Sample {
            at_ms: 30_000.0,
            rtt_ms: Some(300.0),
            idle_before_ms: 28_000.0,
        });
        seq.push(Sample {
            at_ms: 60_000.0,
            rtt_ms: None,
            idle_before_ms: 30_000.0,
        });
        let st = summarize(&seq, &cfg);
        assert_eq!((st.samples, st.answered, st.lost), (5, 4, 1));
        assert!(close(st.loss_rate.unwrap(), 0.2));
        assert!(close(st.span_ms, 60_000.0));
        assert_eq!(st.warm.samples, 3);
        assert_eq!(st.warm.rto.unwrap().srtt_ms, 112.5);
        assert_eq!(st.warm.rto.unwrap().rto_ms, 1000.0);
        assert!(close(st.warm.rtt_mean_ms.unwrap(), 400.0 / 3.0));
        assert_eq!(
            (st.warm.rtt_min_ms, st.warm.rtt_max_ms),
            (Some(100.0), Some(200.0))
        );
        assert_eq!((st.cold.samples, st.cold.answered, st.cold.lost), (2, 1, 1));
        assert_eq!(st.cold.rtt_percentiles.unwrap().p99_ms, 300.0);
        assert_eq!(st.cold.jitter_ms, None);
        // The trailing loss 30 s after the last good sample is an ongoing outage.
        assert_eq!(st.outages.len(), 1);
        assert!(st.outages[0].ongoing);
        assert_eq!(st.loss_bursts.count, 1);
        let json = serde_json::to_value(&st).unwrap();
        assert!(json["warm"]["rto"]["rto_ms"].is_number());
        assert!(json["cold_after_ms"].is_null() && json["config"]["cold_after_ms"].is_number());
    }

    #[test]
    fn summarize_empty_and_all_lost() {
        let cfg = StabilityConfig::default();
        let st = summarize(&[], &cfg);
        assert_eq!((st.samples, st.answered, st.lost), (0, 0, 0));
        assert_eq!(st.loss_rate, None);
        assert_eq!(st.warm, GroupStats::default());
        assert!(st.outages.is_empty());
        let lost: Vec<Sample> = (0..10).map(|i| s(i as f64 * 1000.0, None)).collect();
        let st = summarize(&lost, &cfg);
        assert_eq!((st.samples, st.answered, st.lost), (10, 0, 10));
        assert_eq!(st.loss_rate, Some(1.0));
        assert_eq!(st.warm.rto, None);
        assert_eq!(st.warm.rtt_percentiles, None);
        assert_eq!(st.loss_bursts.longest_samples, 10);
        assert_eq!(
            st.outages,
            vec![Outage {
                start_ms: 0.0,
                length_ms: 9000.0,
                ongoing: true
            }]
        );
        // Serializes without the absent figures.
        let json = serde_json::to_value(&st).unwrap();
        assert!(json["warm"].get("rto").is_none());
        assert!(json.get("loss_rate").is_some() && json["cold"].get("loss_rate").is_none());
    }
}
