//! Idle-timeout discovery: pure state machines (results in, decisions out) that find
//! the time T after which a NAT or firewall on the path forgets an idle TCP flow.
//!
//! Why: an MQTT keep-alive longer than T gets the connection silently dropped (IoT Hub
//! later logs 404104 DeviceConnectionClosedRemotely); T is what bounds the keep-alive.
//!
//! Two searches, one result type ([`Discovery`]):
//! - [`Ladder`] (reflector mode): many connections start together, each idle for a
//!   different duration on a geometric ladder. Since they all start at t = 0, results
//!   arrive in order of idle time and the first drop at d_k brackets T in
//!   (d_{k-1}, d_k]; with a ladder ratio ≤ 1 + precision that bracket is already
//!   tight, so T (±5 %) is known after about T·1.05^(1+confirm) of wall time.
//! - [`HubSearch`] (hub-only mode): one connection at a time (IoT Hub allows one MQTT
//!   connection per device), so the search ascends geometrically to the first drop
//!   and then bisects; it costs several T of wall time.
//!
//! The machines never touch the network or a clock: the driver starts connections,
//! waits, and feeds [`IdleOutcome`]s back.

pub use crate::model::keepalive::{Discovery, DropKind};

use std::collections::BTreeMap;
use std::time::Duration;

use super::{IdleOutcome, IdleResult};

/// Slack for comparing a relative bracket width with the target precision (the
/// durations are rounded to whole milliseconds).
const EPS: f64 = 1e-9;

impl DropKind {
    /// The kind of drop an outcome shows, `None` when it is not a drop.
    pub fn of(outcome: &IdleOutcome) -> Option<DropKind> {
        match outcome {
            IdleOutcome::SilentDrop => Some(DropKind::SilentDrop),
            IdleOutcome::Reset => Some(DropKind::Reset),
            IdleOutcome::OneWay => Some(DropKind::OneWay),
            IdleOutcome::Closed => Some(DropKind::Closed),
            IdleOutcome::Survived | IdleOutcome::Error(_) => None,
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// (shortest failed, longest survived below it) over decisive results.
fn bracket(results: &[IdleResult]) -> (Option<Duration>, Option<Duration>) {
    let failed = results
        .iter()
        .filter(|r| r.outcome.dropped())
        .map(|r| r.idle)
        .min();
    let survived = results
        .iter()
        .filter(|r| r.outcome == IdleOutcome::Survived && failed.is_none_or(|f| r.idle < f))
        .map(|r| r.idle)
        .max();
    (failed, survived)
}

fn relative_width(survived: Option<Duration>, failed: Duration) -> f64 {
    let f = failed.as_secs_f64();
    if f <= 0.0 {
        return 1.0;
    }
    (f - survived.unwrap_or_default().as_secs_f64()) / f
}

impl Discovery {
    /// Summarizes results in any order. Why public: both searches and any other
    /// driver (e.g. a re-run from a saved report) read results the same way.
    pub fn from_results(results: &[IdleResult], rounds: u32) -> Discovery {
        let mut sorted = results.to_vec();
        sorted.sort_by_key(|r| r.idle);
        let (failed, survived) = bracket(&sorted);
        let inconsistent = failed.is_some_and(|f| {
            sorted
                .iter()
                .any(|r| r.outcome == IdleOutcome::Survived && r.idle >= f)
        });
        let mut counts: BTreeMap<DropKind, usize> = BTreeMap::new();
        for k in sorted.iter().filter_map(|r| DropKind::of(&r.outcome)) {
            *counts.entry(k).or_default() += 1;
        }
        let first_kind = sorted.iter().find_map(|r| DropKind::of(&r.outcome));
        let top = counts.values().copied().max().unwrap_or(0);
        let drop_kind = match first_kind {
            Some(k) if counts.get(&k) == Some(&top) => Some(k),
            _ => counts.iter().find(|(_, n)| **n == top).map(|(k, _)| *k),
        };
        Discovery {
            longest_survived_ms: survived.map(ms),
            shortest_failed_ms: failed.map(ms),
            estimate_ms: match (survived, failed) {
                (Some(s), Some(f)) => Some((ms(s) + ms(f)) / 2),
                _ => None,
            },
            precision: failed.map(|f| relative_width(survived, f)),
            no_drop_up_to_ms: if failed.is_none() {
                survived.map(ms)
            } else {
                None
            },
            drop_kind,
            drop_kinds_seen: counts.keys().copied().collect(),
            inconsistent,
            errors: sorted
                .iter()
                .filter(|r| matches!(r.outcome, IdleOutcome::Error(_)))
                .count(),
            results: sorted,
            rounds,
        }
    }

    /// The longest survived idle time as a `Duration`.
    pub fn longest_survived(&self) -> Option<Duration> {
        self.longest_survived_ms.map(Duration::from_millis)
    }

    /// The shortest failed idle time as a `Duration`.
    pub fn shortest_failed(&self) -> Option<Duration> {
        self.shortest_failed_ms.map(Duration::from_millis)
    }

    /// The idle time up to which nothing dropped, as a `Duration`.
    pub fn no_drop_up_to(&self) -> Option<Duration> {
        self.no_drop_up_to_ms.map(Duration::from_millis)
    }
}

/// Settings of the reflector-mode ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LadderConfig {
    /// The shortest idle time tried. The search never goes below it: a path that
    /// drops flows faster than this is reported with no lower bound.
    pub min_idle: Duration,
    /// The longest idle time tried: a little above the profile's keep-alive cap (a
    /// timeout above the cap cannot change the answer).
    pub max_idle: Duration,
    /// How many connections may be open at once (the reflector and the device must
    /// cope with them).
    pub max_connections: usize,
    /// Wanted relative width of the bracket, (failed − survived)/failed.
    pub target_precision: f64,
    /// How many longer idle times must also have dropped before the answer stands
    /// (guards against one unlucky lost packet looking like a timeout).
    pub confirm: usize,
    /// At most this many rounds in all (round 1 plus refinements).
    pub max_rounds: u32,
}

impl Default for LadderConfig {
    /// 5 s to 1300 s (≈ 1.1 × IoT Hub's 1177 s cap), 128 connections, ±5 %, two
    /// confirmations, four rounds. With these the ladder needs 115 rungs at ratio
    /// 1.05, so round 1 alone meets the precision.
    fn default() -> Self {
        LadderConfig {
            min_idle: Duration::from_secs(5),
            max_idle: Duration::from_secs(1300),
            max_connections: 128,
            target_precision: 0.05,
            confirm: 2,
            max_rounds: 4,
        }
    }
}

impl LadderConfig {
    /// The default ladder reaching 10 % above a profile's keep-alive cap. Why: the
    /// issue asks for "a little above the cap" and a longer ladder only costs time.
    pub fn for_cap(cap: Duration) -> LadderConfig {
        LadderConfig {
            max_idle: cap.mul_f64(1.1),
            ..LadderConfig::default()
        }
    }
}

/// Shared sanitation of the knobs both searches take. Why: a config read from a
/// file or the command line must not make a machine loop or divide by zero.
fn sane_bounds(min: Duration, max: Duration, precision: f64) -> (Duration, Duration, f64) {
    let min = min.max(Duration::from_millis(1));
    let max = max.max(min);
    let p = if precision.is_finite() {
        precision.clamp(0.001, 0.5)
    } else {
        0.05
    };
    (min, max, p)
}

/// What the driver of a [`Ladder`] should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum LadderDecision {
    /// Results still outstanding are needed: keep waiting.
    Wait,
    /// Start these new connections now (idle times evenly spaced between the longest
    /// survived and the shortest failed); the ladder counts them as outstanding.
    Refine(Vec<Duration>),
    /// The answer stands; connections still outstanding may be abandoned.
    Done(Discovery),
}

/// Reflector-mode discovery: a geometric ladder of idle times run in parallel, then
/// refinement rounds if the ladder had to be coarser than the target precision.
///
/// Why this shape: all connections of round 1 start together, so the first drop
/// arrives at ≈ T and the bracket is as tight as the ladder ratio; with ratio
/// ≤ 1 + precision no refinement is needed and the search ends when `confirm` longer
/// rungs also dropped, at most ≈ T·(1 + precision)^(confirm + 1) ≈ 1.16 T.
///
/// Usage: [`Ladder::new`], start every idle time of [`Ladder::round1`] at once, and
/// after every [`Ladder::on_result`] ask [`Ladder::decision`].
#[derive(Debug, Clone)]
pub struct Ladder {
    cfg: LadderConfig,
    round1: Vec<Duration>,
    pending: Vec<Duration>,
    results: Vec<IdleResult>,
    rounds: u32,
}

impl Ladder {
    /// Plans round 1: `n` rungs from `min_idle` to `max_idle` with ratio
    /// r = (max/min)^(1/(n−1)) ≤ 1 + target_precision, where n is the fewest rungs
    /// that achieve that, capped at `max_connections` (then r is wider and a
    /// refinement round will follow the first drop). Rungs are whole milliseconds.
    /// All round-1 rungs count as outstanding from here on.
    pub fn new(cfg: LadderConfig) -> Ladder {
        let (min, max, p) = sane_bounds(cfg.min_idle, cfg.max_idle, cfg.target_precision);
        let cfg = LadderConfig {
            min_idle: min,
            max_idle: max,
            max_connections: cfg.max_connections.max(2),
            target_precision: p,
            confirm: cfg.confirm,
            max_rounds: cfg.max_rounds.max(1),
        };
        let round1 = geometric_ladder(min, max, 1.0 + p, cfg.max_connections);
        Ladder {
            cfg,
            pending: round1.clone(),
            round1,
            results: Vec::new(),
            rounds: 1,
        }
    }

    /// The (sanitized) configuration in use.
    pub fn config(&self) -> &LadderConfig {
        &self.cfg
    }

    /// The idle times of round 1, ascending: start one connection for each, all at once.
    pub fn round1(&self) -> Vec<Duration> {
        self.round1.clone()
    }

    /// Idle times started but without a result yet.
    pub fn outstanding(&self) -> &[Duration] {
        &self.pending
    }

    /// Records the result of the connection that was left idle for `idle`. Errors are
    /// kept but count neither as drop nor as survival. A result for an idle time
    /// that was never planned is kept too.
    pub fn on_result(&mut self, idle: Duration, outcome: IdleOutcome) {
        if let Some(i) = self.pending.iter().position(|p| *p == idle) {
            self.pending.swap_remove(i);
        }
        self.results.push(IdleResult { idle, outcome });
    }

    /// What is known so far, as a [`Discovery`].
    pub fn discovery(&self) -> Discovery {
        Discovery::from_results(&self.results, self.rounds)
    }

    /// The next step. Rules, with F the shortest failed idle time and S the longest
    /// survived below it:
    /// - no failure yet: `Wait` while anything is outstanding, else `Done` (no drop
    ///   up to the longest survivor);
    /// - a failure: `Wait` while an idle time shorter than F is outstanding (it could
    ///   fail too and lower F);
    /// - bracket (S, F] wider than the target and a survivor below F: `Refine` with
    ///   evenly spaced idle times inside it, so that the next bracket meets the target
    ///   (at most `max_connections` minus those outstanding, at least one; at most
    ///   `max_rounds` rounds; never an idle time already tried). This is returned once,
    ///   as soon as F is known, without waiting for the confirmations;
    /// - otherwise `Done` once `confirm` idle times longer than F also dropped or none
    ///   longer is outstanding, else `Wait`.
    pub fn decision(&mut self) -> LadderDecision {
        let (failed, survived) = bracket(&self.results);
        let Some(f) = failed else {
            return if self.pending.is_empty() {
                LadderDecision::Done(self.discovery())
            } else {
                LadderDecision::Wait
            };
        };
        if self.pending.iter().any(|p| *p < f) {
            return LadderDecision::Wait;
        }
        let p = self.cfg.target_precision;
        if let Some(s) = survived {
            if relative_width(survived, f) > p + EPS && self.rounds < self.cfg.max_rounds {
                let budget = self
                    .cfg
                    .max_connections
                    .saturating_sub(self.pending.len())
                    .max(1);
                let points: Vec<Duration> = refine_points(s, f, p, budget)
                    .into_iter()
                    .filter(|d| {
                        !self.pending.contains(d) && !self.results.iter().any(|r| r.idle == *d)
                    })
                    .collect();
                if !points.is_empty() {
                    self.rounds += 1;
                    self.pending.extend(points.iter().copied());
                    return LadderDecision::Refine(points);
                }
            }
        }
        let dropped_longer = self
            .results
            .iter()
            .filter(|r| r.idle > f && r.outcome.dropped())
            .count();
        let pending_longer = self.pending.iter().filter(|p| **p > f).count();
        if dropped_longer >= self.cfg.confirm || pending_longer == 0 {
            LadderDecision::Done(self.discovery())
        } else {
            LadderDecision::Wait
        }
    }
}

/// Geometric rungs from `min` to `max` (both included) with ratio ≤ `ratio`, at most
/// `cap` rungs (then the ratio is wider), rounded to whole ms and deduplicated.
fn geometric_ladder(min: Duration, max: Duration, ratio: f64, cap: usize) -> Vec<Duration> {
    let (lo, hi) = (min.as_secs_f64() * 1000.0, max.as_secs_f64() * 1000.0);
    if hi <= lo {
        return vec![min];
    }
    let span = (hi / lo).ln();
    // Plan for a ratio 0.05 % below the bound: rounding the rungs to whole ms (up to
    // ±0.5 ms on a 5 s rung) must not push one step above it.
    let needed = (span / (ratio / 1.0005).ln()).ceil().max(1.0) as usize + 1;
    let n = needed.min(cap.max(2));
    let r = (span / (n - 1) as f64).exp();
    let mut out: Vec<Duration> = (0..n)
        .map(|i| {
            if i == n - 1 {
                max
            } else {
                Duration::from_millis((lo * r.powi(i as i32)).round() as u64)
            }
        })
        .collect();
    out.dedup();
    out
}

/// Evenly spaced idle times strictly inside (s, f): q equal intervals where q makes
/// every possible new bracket width w satisfy w / (s + w) ≤ p (the tightest case is
/// a failure at the first new point), at most `budget` points.
fn refine_points(s: Duration, f: Duration, p: f64, budget: usize) -> Vec<Duration> {
    let (s_ms, f_ms) = (ms(s) as f64, ms(f) as f64);
    if f_ms - s_ms < 2.0 {
        return Vec::new();
    }
    // w / (s + w) ≤ p  ⇔  w ≤ p·s / (1 − p); 0.999 leaves room for ms rounding.
    let w_max = (0.999 * p * s_ms / (1.0 - p)).max(1.0);
    let q = (((f_ms - s_ms) / w_max).ceil() as usize).clamp(2, budget + 1);
    let step = (f_ms - s_ms) / q as f64;
    let mut out: Vec<Duration> = (1..q)
        .map(|i| Duration::from_millis((s_ms + step * i as f64).round() as u64))
        .filter(|d| *d > s && *d < f)
        .collect();
    out.dedup();
    out
}

/// Settings of the hub-only search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubSearchConfig {
    /// The first (shortest) idle time tried; the search never goes below it.
    pub min_idle: Duration,
    /// The longest idle time tried (a little above the profile's keep-alive cap).
    pub max_idle: Duration,
    /// Factor between successive idle times while ascending (> 1).
    pub growth: f64,
    /// Wanted relative width of the bracket, (failed − survived)/failed.
    pub target_precision: f64,
    /// How many times the shortest failed idle time is probed again once the bracket
    /// is tight (a survival there flags the path as inconsistent).
    pub confirm: usize,
    /// Give up after this many probe errors in all (each error is retried once more).
    pub max_errors: usize,
}

impl Default for HubSearchConfig {
    /// 5 s to 1300 s, growth 1.5, ±5 %, one confirmation, three errors. Growth
    /// hardly matters: the ascent costs ≈ g/(g−1) × the first failing idle and the
    /// bisection log2((1 − 1/g)/precision) probes near T, which trade off; in
    /// simulation the sum of idle times is ≈ 8 T on average for any growth from
    /// 1.4 to 2 (≈ 7 T without the confirmation), 1.5 having the smallest worst case.
    fn default() -> Self {
        HubSearchConfig {
            min_idle: Duration::from_secs(5),
            max_idle: Duration::from_secs(1300),
            growth: 1.5,
            target_precision: 0.05,
            confirm: 1,
            max_errors: 3,
        }
    }
}

impl HubSearchConfig {
    /// The default search reaching 10 % above a profile's keep-alive cap.
    pub fn for_cap(cap: Duration) -> HubSearchConfig {
        HubSearchConfig {
            max_idle: cap.mul_f64(1.1),
            ..HubSearchConfig::default()
        }
    }
}

/// Hub-only discovery: one connection at a time, so minimize the sum of idle times.
/// Ascend from `min_idle` by `growth` until the first drop (or `max_idle` survives),
/// bisect the bracket (longest survived, shortest failed] until it meets the target
/// precision, then probe the shortest failure `confirm` more times.
///
/// Why this shape: every probe costs its whole idle time, and probes near T cost
/// about T each whatever they show, so the best one can do is few probes near T;
/// the geometric ascent keeps the probes far below T cheap.
///
/// Usage: loop { `next_probe()` → None ends it; run the probe; `on_result()` };
/// then `result()`.
#[derive(Debug, Clone)]
pub struct HubSearch {
    cfg: HubSearchConfig,
    results: Vec<IdleResult>,
}

impl HubSearch {
    /// A new search (the config is sanitized: growth at least 1.01).
    pub fn new(cfg: HubSearchConfig) -> HubSearch {
        let (min, max, p) = sane_bounds(cfg.min_idle, cfg.max_idle, cfg.target_precision);
        let growth = if cfg.growth.is_finite() {
            cfg.growth.clamp(1.01, 16.0)
        } else {
            1.5
        };
        HubSearch {
            cfg: HubSearchConfig {
                min_idle: min,
                max_idle: max,
                growth,
                target_precision: p,
                confirm: cfg.confirm,
                max_errors: cfg.max_errors,
            },
            results: Vec::new(),
        }
    }

    /// The (sanitized) configuration in use.
    pub fn config(&self) -> &HubSearchConfig {
        &self.cfg
    }

    /// The idle time of the next probe, `None` when the search is over. Pure: asking
    /// twice without a result in between gives the same answer.
    pub fn next_probe(&self) -> Option<Duration> {
        let errors = self
            .results
            .iter()
            .filter(|r| matches!(r.outcome, IdleOutcome::Error(_)))
            .count();
        if errors >= self.cfg.max_errors {
            return None;
        }
        if let Some(last) = self.results.last() {
            if matches!(last.outcome, IdleOutcome::Error(_)) {
                return Some(last.idle);
            }
        }
        let (failed, survived) = bracket(&self.results);
        let Some(f) = failed else {
            return match survived {
                None => Some(self.cfg.min_idle),
                Some(s) if s >= self.cfg.max_idle => None,
                Some(s) => {
                    let next =
                        Duration::from_millis((ms(s) as f64 * self.cfg.growth).round() as u64)
                            .min(self.cfg.max_idle);
                    (next > s).then_some(next)
                }
            };
        };
        if let Some(s) = survived {
            if relative_width(survived, f) > self.cfg.target_precision + EPS {
                let mid = Duration::from_millis((ms(s) + ms(f)) / 2);
                if mid > s && mid < f {
                    return Some(mid);
                }
            }
        }
        let at_f = self
            .results
            .iter()
            .filter(|r| r.idle == f && !matches!(r.outcome, IdleOutcome::Error(_)))
            .count();
        (at_f < 1 + self.cfg.confirm).then_some(f)
    }

    /// Records a probe's result (errors are kept and retried, but count neither way).
    pub fn on_result(&mut self, idle: Duration, outcome: IdleOutcome) {
        self.results.push(IdleResult { idle, outcome });
    }

    /// Whether the search is over.
    pub fn is_done(&self) -> bool {
        self.next_probe().is_none()
    }

    /// What is known so far (`rounds` = probes run).
    pub fn result(&self) -> Discovery {
        let probes = u32::try_from(self.results.len()).unwrap_or(u32::MAX);
        Discovery::from_results(&self.results, probes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// A deterministic path: flows idle for less than `t` survive, others get `kind`.
    fn path(t: Duration, kind: IdleOutcome) -> impl Fn(Duration) -> IdleOutcome {
        move |d| {
            if d < t {
                IdleOutcome::Survived
            } else {
                kind.clone()
            }
        }
    }

    /// Drives a ladder as a discrete-event simulation: every connection reports at
    /// (its start time + its idle time); refinements start when asked. Returns the
    /// discovery and the wall time (when `Done` came) in seconds. Drop detection
    /// delay (the echo timeout) is not modelled.
    fn run_ladder(
        cfg: LadderConfig,
        outcome: impl Fn(Duration) -> IdleOutcome,
    ) -> (Discovery, f64) {
        let mut ladder = Ladder::new(cfg);
        let mut events: Vec<(Duration, Duration)> =
            ladder.round1().into_iter().map(|d| (d, d)).collect();
        for _ in 0..10_000 {
            let i = (0..events.len())
                .min_by_key(|&i| (events[i].0, events[i].1))
                .expect("the ladder waits for results that will never come");
            let (now, idle) = events.swap_remove(i);
            ladder.on_result(idle, outcome(idle));
            match ladder.decision() {
                LadderDecision::Wait => {}
                LadderDecision::Refine(v) => events.extend(v.into_iter().map(|d| (now + d, d))),
                LadderDecision::Done(d) => return (d, now.as_secs_f64()),
            }
        }
        panic!("ladder did not finish");
    }

    /// Drives a hub-only search; returns the discovery and the sum of idle times (s).
    fn run_hub(
        cfg: HubSearchConfig,
        mut outcome: impl FnMut(Duration) -> IdleOutcome,
    ) -> (Discovery, f64) {
        let mut h = HubSearch::new(cfg);
        let mut total = 0.0;
        for _ in 0..1000 {
            let Some(d) = h.next_probe() else {
                return (h.result(), total);
            };
            total += d.as_secs_f64();
            h.on_result(d, outcome(d));
        }
        panic!("hub search did not finish");
    }

    const TS: [u64; 5] = [20, 45, 240, 350, 1200];

    #[test]
    fn round1_ladder_is_geometric_within_precision() {
        let l = Ladder::new(LadderConfig::default());
        let r = l.round1();
        assert_eq!(r.first(), Some(&(5 * SEC)));
        assert_eq!(r.last(), Some(&(1300 * SEC)));
        assert!(r.len() <= 128, "{} rungs", r.len());
        for w in r.windows(2) {
            let ratio = w[1].as_secs_f64() / w[0].as_secs_f64();
            assert!(ratio > 1.0 && ratio <= 1.0501, "{ratio}");
        }
        assert_eq!(l.outstanding().len(), r.len());
    }

    #[test]
    fn ladder_finds_t_within_5_percent_in_125_percent_of_t() {
        // Wall time / T with the default ladder (5 s … 1300 s, 117 rungs, ratio
        // ≈ 1.049, confirm 2; printed with --nocapture): T=20 s → 1.105,
        // 45 s → 1.109, 240 s → 1.114, 350 s → 1.120, 1200 s → 1.083 (the ladder
        // ends at 1300 s, so only one confirmation exists). No refinement round is
        // needed; the time is the second rung above the first failure,
        // ≈ T·1.049^(≤ 3). Drop detection delay (echo timeout) comes on top.
        for t in TS {
            let t = Duration::from_secs(t);
            let (d, wall) = run_ladder(LadderConfig::default(), path(t, IdleOutcome::SilentDrop));
            let est = d.estimate_ms.unwrap() as f64 / 1000.0;
            let ts = t.as_secs_f64();
            println!(
                "ladder T={ts} s: estimate {est:.1} s ({:+.2} %), bracket ({:?}, {:?}] ms, wall {wall:.1} s = {:.3} T, rounds {}",
                100.0 * (est - ts) / ts,
                d.longest_survived_ms,
                d.shortest_failed_ms,
                wall / ts,
                d.rounds
            );
            assert!((est - ts).abs() <= 0.05 * ts, "T={ts}: estimate {est}");
            assert!(d.precision.unwrap() <= 0.05 + EPS);
            assert!(wall <= 1.25 * ts + 60.0, "T={ts}: wall {wall}");
            assert!(!d.inconsistent);
            assert_eq!(d.drop_kind, Some(DropKind::SilentDrop));
            assert_eq!(d.no_drop_up_to_ms, None);
        }
    }

    #[test]
    fn coarse_ladder_refines() {
        // 40 connections cannot reach ratio 1.05 from 1 s to 1300 s (ratio ≈ 1.2):
        // the first drop triggers a refinement round started at once.
        // Wall / T printed: 2.18, 2.07, 2.03, 2.01, 2.12 for the five T (round 1's
        // first drop + the refinement's longest idle): the price of too few connections.
        let cfg = LadderConfig {
            min_idle: SEC,
            max_connections: 40,
            ..LadderConfig::default()
        };
        for t in TS {
            let t = Duration::from_secs(t);
            let (d, wall) = run_ladder(cfg, path(t, IdleOutcome::SilentDrop));
            let ts = t.as_secs_f64();
            let est = d.estimate_ms.unwrap() as f64 / 1000.0;
            println!(
                "coarse ladder T={ts}: estimate {est:.1}, wall {:.2} T, rounds {}",
                wall / ts,
                d.rounds
            );
            assert!((est - ts).abs() <= 0.05 * ts);
            assert!(d.precision.unwrap() <= 0.05 + EPS);
            assert!(d.rounds >= 2);
            assert!(wall <= 2.5 * ts + 60.0);
        }
    }

    #[test]
    fn refine_decision_is_given_once_and_counted_outstanding() {
        let cfg = LadderConfig {
            min_idle: 10 * SEC,
            max_idle: 100 * SEC,
            max_connections: 3, // 10, ~31.6, 100
            ..LadderConfig::default()
        };
        let mut l = Ladder::new(cfg);
        let r = l.round1();
        assert_eq!(r.len(), 3);
        l.on_result(r[0], IdleOutcome::Survived);
        assert_eq!(l.decision(), LadderDecision::Wait);
        l.on_result(r[1], IdleOutcome::Reset);
        let LadderDecision::Refine(pts) = l.decision() else {
            panic!("expected a refinement");
        };
        assert!(pts.iter().all(|p| *p > r[0] && *p < r[1]));
        // Budget: 3 connections, one (100 s) still outstanding → 2 new ones.
        assert_eq!(pts.len(), 2);
        assert_eq!(l.decision(), LadderDecision::Wait);
        assert_eq!(l.outstanding().len(), 3);
    }

    #[test]
    fn ladder_no_drop_up_to_max() {
        let (d, wall) = run_ladder(LadderConfig::default(), |_| IdleOutcome::Survived);
        assert_eq!(d.no_drop_up_to_ms, Some(1_300_000));
        assert_eq!(d.shortest_failed_ms, None);
        assert_eq!(
            (d.estimate_ms, d.precision, d.drop_kind),
            (None, None, None)
        );
        assert_eq!(wall, 1300.0);
        assert!(!d.inconsistent);
    }

    /// A deterministic "random-ish" pattern: between 200 s and 300 s a flow survives
    /// when its idle time in whole seconds is 1 modulo 3 (unrelated to the ladder's
    /// rungs); above 300 s it always drops. On the default ladder: 200.5 s drops,
    /// 210.3 s drops, 220.6 s survives, 231.5 s drops. The ladder only sees a
    /// survivor that reports before its `confirm` longer drops (results arrive in
    /// idle order), so a path that drops the first three rungs in a row is not
    /// flagged: `inconsistent` is evidence of non-determinism, not proof of its absence.
    fn flaky(d: Duration) -> IdleOutcome {
        if d < 200 * SEC || (d < 300 * SEC && d.as_secs() % 3 == 1) {
            IdleOutcome::Survived
        } else {
            IdleOutcome::SilentDrop
        }
    }

    #[test]
    fn ladder_flags_non_deterministic_path() {
        let (d, _) = run_ladder(LadderConfig::default(), flaky);
        assert!(d.inconsistent);
        // The bracket still comes from the shortest failure.
        let f = d.shortest_failed_ms.unwrap();
        assert!((200_000..300_000).contains(&f));
        assert!(d.longest_survived_ms.unwrap() < f);
        // All results are kept, sorted by idle time.
        assert!(d.results.windows(2).all(|w| w[0].idle <= w[1].idle));
    }

    #[test]
    fn ladder_reports_reset_and_majority_kind() {
        let (d, _) = run_ladder(LadderConfig::default(), path(240 * SEC, IdleOutcome::Reset));
        assert_eq!(d.drop_kind, Some(DropKind::Reset));
        assert_eq!(d.drop_kinds_seen, vec![DropKind::Reset]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["drop_kind"], "reset");

        // Mixed: shortest failure one-way, two longer silent drops → silent is the majority.
        let r = |s: u64, o| IdleResult {
            idle: Duration::from_secs(s),
            outcome: o,
        };
        let d = Discovery::from_results(
            &[
                r(100, IdleOutcome::Survived),
                r(105, IdleOutcome::OneWay),
                r(110, IdleOutcome::SilentDrop),
                r(115, IdleOutcome::SilentDrop),
            ],
            1,
        );
        assert_eq!(d.drop_kind, Some(DropKind::SilentDrop));
        assert_eq!(
            d.drop_kinds_seen,
            vec![DropKind::SilentDrop, DropKind::OneWay]
        );
        // A tie goes to the kind of the shortest failure.
        let d = Discovery::from_results(
            &[r(105, IdleOutcome::OneWay), r(110, IdleOutcome::Reset)],
            1,
        );
        assert_eq!(d.drop_kind, Some(DropKind::OneWay));
        assert_eq!(d.longest_survived_ms, None);
        assert_eq!(d.precision, Some(1.0));
    }

    #[test]
    fn ladder_ignores_errors() {
        let t = 240 * SEC;
        // Every 5th rung errors (including, possibly, rungs next to T).
        let rungs = Ladder::new(LadderConfig::default()).round1();
        let err_at: Vec<Duration> = rungs.iter().copied().step_by(5).collect();
        let outcome = |d: Duration| {
            if err_at.contains(&d) {
                IdleOutcome::Error("connect refused".into())
            } else {
                path(t, IdleOutcome::SilentDrop)(d)
            }
        };
        let (d, _) = run_ladder(LadderConfig::default(), outcome);
        assert!(d.errors > 0);
        let est = d.estimate_ms.unwrap() as f64 / 1000.0;
        assert!((est - 240.0).abs() <= 12.0, "{est}");
        assert!(!d.inconsistent);
        assert!(d.precision.unwrap() <= 0.05 + EPS);
        // An error on every rung: done, nothing known, no panic.
        let (d, _) = run_ladder(LadderConfig::default(), |_| IdleOutcome::Error("x".into()));
        assert_eq!(d.shortest_failed_ms, None);
        assert_eq!(d.no_drop_up_to_ms, None);
        assert_eq!(d.errors, d.results.len());
    }

    #[test]
    fn ladder_drop_at_min_idle_ends_without_lower_bound() {
        let (d, _) = run_ladder(LadderConfig::default(), |_| IdleOutcome::SilentDrop);
        assert_eq!(d.shortest_failed_ms, Some(5000));
        assert_eq!(d.longest_survived_ms, None);
        assert_eq!(d.estimate_ms, None);
    }

    #[test]
    fn hub_search_finds_t_and_reports_cost() {
        // Sum of idle times / T with the default search (5 s up by ×1.5, bisect to
        // ±5 %, one confirmation of the shortest failure; printed with --nocapture):
        // T=20 s → 8.28, 45 s → 8.56, 240 s → 7.42, 350 s → 7.64, 1200 s → 7.47.
        // Growth 2: 6.28, 9.81, 7.35, 10.16, 6.83. Swept over T = 15…1250 s the
        // mean is ≈ 8.0 T for any growth from 1.4 to 2 (1.5: mean 8.05, worst
        // 9.95), of which ≈ 1 T is the confirmation. Each probe also pays a
        // reconnect and, when it fails, the PINGRESP timeout, not counted here.
        for t in TS {
            let t = Duration::from_secs(t);
            let ts = t.as_secs_f64();
            let (d, total) = run_hub(HubSearchConfig::default(), path(t, IdleOutcome::SilentDrop));
            let est = d.estimate_ms.unwrap() as f64 / 1000.0;
            println!(
                "hub T={ts} s: estimate {est:.1} s ({:+.2} %), probes {}, total idle {total:.0} s = {:.2} T",
                100.0 * (est - ts) / ts,
                d.rounds,
                total / ts
            );
            assert!((est - ts).abs() <= 0.05 * ts, "T={ts}: {est}");
            assert!(d.precision.unwrap() <= 0.05 + EPS);
            assert!(!d.inconsistent);
            assert!(total <= 10.0 * ts + 60.0);
            // Growth 2 for comparison.
            let cfg = HubSearchConfig {
                growth: 2.0,
                ..HubSearchConfig::default()
            };
            let (d2, total2) = run_hub(cfg, path(t, IdleOutcome::SilentDrop));
            assert!((d2.estimate_ms.unwrap() as f64 / 1000.0 - ts).abs() <= 0.05 * ts);
            println!("hub ×2 T={ts} s: total idle {:.2} T", total2 / ts);
        }
    }

    #[test]
    fn hub_search_no_drop_up_to_max() {
        let (d, total) = run_hub(HubSearchConfig::default(), |_| IdleOutcome::Survived);
        assert_eq!(d.no_drop_up_to_ms, Some(1_300_000));
        assert_eq!(d.results.last().unwrap().idle, 1300 * SEC);
        // 5 s × 1.5^k up to 972 s, then 1300 s: ≈ 4200 s.
        assert!(total < 4.0 * 1300.0, "{total}");
    }

    #[test]
    fn hub_search_flags_inconsistent_path() {
        // The path drops at ≥ 240 s, except that the confirmation probe survives.
        let mut seen_f = 0;
        let (d, _) = run_hub(HubSearchConfig::default(), |d| {
            if d < 240 * SEC {
                IdleOutcome::Survived
            } else if d < 260 * SEC {
                seen_f += 1;
                if seen_f == 2 {
                    IdleOutcome::Survived
                } else {
                    IdleOutcome::SilentDrop
                }
            } else {
                IdleOutcome::SilentDrop
            }
        });
        assert!(d.inconsistent);
        assert!(d.shortest_failed_ms.is_some());
        // A path that is random-ish above 200 s (a counter decides: every third probe
        // there survives), searched with three confirmations.
        let mut calls = 0u32;
        let (d, _) = run_hub(
            HubSearchConfig {
                confirm: 3,
                ..HubSearchConfig::default()
            },
            |d| {
                if d < 200 * SEC {
                    return IdleOutcome::Survived;
                }
                calls += 1;
                if calls % 3 == 0 {
                    IdleOutcome::Survived
                } else {
                    IdleOutcome::SilentDrop
                }
            },
        );
        assert!(d.inconsistent, "{d:?}");
    }

    #[test]
    fn hub_search_reset_kind_and_errors() {
        let t = 45 * SEC;
        let mut errors_left = 2;
        let (d, _) = run_hub(HubSearchConfig::default(), |d| {
            if d > 30 * SEC && errors_left > 0 {
                errors_left -= 1;
                IdleOutcome::Error("CONNACK refused".into())
            } else {
                path(t, IdleOutcome::Reset)(d)
            }
        });
        assert_eq!(d.errors, 2);
        assert_eq!(d.drop_kind, Some(DropKind::Reset));
        let est = d.estimate_ms.unwrap() as f64 / 1000.0;
        assert!((est - 45.0).abs() <= 0.05 * 45.0);
        // Too many errors: the search gives up with what it has, no panic.
        let (d, _) = run_hub(HubSearchConfig::default(), |_| {
            IdleOutcome::Error("x".into())
        });
        assert_eq!(d.errors, 3);
        assert_eq!(d.shortest_failed_ms, None);
    }

    #[test]
    fn hub_search_is_pure_between_results() {
        let mut h = HubSearch::new(HubSearchConfig::default());
        assert_eq!(h.next_probe(), Some(5 * SEC));
        assert_eq!(h.next_probe(), Some(5 * SEC));
        h.on_result(5 * SEC, IdleOutcome::Survived);
        assert_eq!(h.next_probe(), Some(Duration::from_millis(7500)));
        h.on_result(Duration::from_millis(7500), IdleOutcome::SilentDrop);
        // Bisect (5, 7.5] → 6.25.
        assert_eq!(h.next_probe(), Some(Duration::from_millis(6250)));
        assert!(!h.is_done());
    }

    #[test]
    fn discovery_serializes_snake_case_ms() {
        let d = Discovery::from_results(
            &[
                IdleResult {
                    idle: 228 * SEC,
                    outcome: IdleOutcome::Survived,
                },
                IdleResult {
                    idle: 240 * SEC,
                    outcome: IdleOutcome::SilentDrop,
                },
            ],
            1,
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["longest_survived_ms"], 228_000);
        assert_eq!(v["shortest_failed_ms"], 240_000);
        assert_eq!(v["estimate_ms"], 234_000);
        assert_eq!(v["drop_kind"], "silent_drop");
        assert_eq!(v["results"][1]["outcome"]["kind"], "silent_drop");
    }
}
