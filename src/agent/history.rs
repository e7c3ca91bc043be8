//! The canary session's disconnect history and its diagnosis (pure: no I/O here).
//!
//! Every disconnect of the agent's long-lived MQTT session is recorded with when it
//! happened, how long the session had lived, how long the link had been silent
//! before the failure showed, its cause class and the time it took to get a session
//! back. [`diagnose`] looks at the series and names the IoT Hub 404104 cause family
//! it points to: token renewal (1), the network path's idle timeout or outages (2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::model::canary::{
    CanaryReport, Diagnosis, DiagnosisKind, DisconnectCause, DisconnectEvent,
};

/// The kept history: the last disconnects, totals since the history began, and
/// what has been reported. Saved in the state directory after every change, so it
/// survives agent restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Sessions opened since the history began.
    pub sessions_total: u64,
    /// Disconnects recorded since the history began, by cause id.
    pub disconnects_total: BTreeMap<String, u64>,
    /// Disconnects ever recorded (the global index of the next one).
    pub recorded: u64,
    /// Disconnects already put in a report.
    pub reported: u64,
    /// The last disconnects, oldest first (at most the configured count).
    pub events: std::collections::VecDeque<DisconnectEvent>,
}

impl History {
    /// Records a disconnect, dropping the oldest beyond `keep`.
    pub fn record(&mut self, event: DisconnectEvent, keep: usize) {
        *self
            .disconnects_total
            .entry(event.cause.as_str().to_string())
            .or_insert(0) += 1;
        self.events.push_back(event);
        while self.events.len() > keep.max(1) {
            self.events.pop_front();
        }
        self.recorded += 1;
    }

    /// Fills in the reconnect figures of the last disconnect once a session is back.
    pub fn reconnected(
        &mut self,
        reconnect_s: f64,
        failed_attempts: u32,
        last_class: Option<String>,
    ) {
        self.sessions_total += 1;
        if let Some(last) = self.events.back_mut() {
            if last.reconnect_s.is_none() {
                last.reconnect_s = Some(reconnect_s.max(0.0));
                last.failed_attempts = failed_attempts;
                last.last_attempt_class = last_class;
            }
        }
    }

    /// The disconnects not yet reported (oldest first), marking them reported.
    pub fn take_unreported(&mut self) -> Vec<DisconnectEvent> {
        let first_kept = self.recorded - self.events.len() as u64;
        let from = self.reported.max(first_kept);
        let skip = (from - first_kept) as usize;
        self.reported = self.recorded;
        self.events.iter().skip(skip).cloned().collect()
    }

    /// Totals with every cause present (zeros included).
    pub fn totals(&self) -> BTreeMap<String, u64> {
        DisconnectCause::ALL
            .iter()
            .map(|c| {
                let id = c.as_str().to_string();
                let n = self.disconnects_total.get(&id).copied().unwrap_or(0);
                (id, n)
            })
            .collect()
    }
}

/// What the diagnosis needs besides the events.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiagnosisContext {
    /// Lifetime of the SAS tokens the session uses, when known.
    pub token_lifetime_s: Option<f64>,
    /// The session's keep-alive, seconds.
    pub keepalive_s: f64,
}

/// Disconnects looked at for a pattern: the most recent ones.
const WINDOW: usize = 20;
/// Disconnects needed before a pattern is named.
const MIN_EVENTS: usize = 3;
/// Coefficient of variation under which a series counts as steady.
const STEADY_CV: f64 = 0.15;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cv(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    if n < 2.0 {
        return f64::INFINITY;
    }
    let mean = v.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return f64::INFINITY;
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}

/// Names the pattern in the history (pure).
pub fn diagnose(events: &[DisconnectEvent], ctx: DiagnosisContext) -> Diagnosis {
    let n = events.len();
    if n == 0 {
        return Diagnosis {
            kind: DiagnosisKind::Stable,
            iothub_cause: None,
            summary: "no disconnects recorded".into(),
            evidence: vec![],
        };
    }
    let window = &events[n.saturating_sub(WINDOW)..];
    if window.len() < MIN_EVENTS {
        return Diagnosis {
            kind: DiagnosisKind::Stable,
            iothub_cause: None,
            summary: format!(
                "{} disconnect(s) recorded: too few for a pattern",
                window.len()
            ),
            evidence: window
                .iter()
                .map(|e| {
                    format!(
                        "{} {} after {:.0} s",
                        e.at,
                        e.cause.as_str(),
                        e.session_lived_s
                    )
                })
                .collect(),
        };
    }
    let lived: Vec<f64> = window.iter().map(|e| e.session_lived_s).collect();
    let lived_cv = cv(&lived);
    let lived_median = median(&mut lived.clone());

    // Cause 1: a steady period close to the token lifetime (renewal at ~80 % as the
    // SDKs do, or the hub closing at expiry).
    if let Some(ttl) = ctx.token_lifetime_s.filter(|t| *t > 0.0) {
        let ratio = lived_median / ttl;
        if lived_cv < STEADY_CV && (0.6..=1.1).contains(&ratio) {
            return Diagnosis {
                kind: DiagnosisKind::TokenRenewal,
                iothub_cause: Some(1),
                summary: format!(
                    "sessions end at a steady period of {lived_median:.0} s, {:.0} % of the {ttl:.0} s SAS token lifetime: token renewal (404104 cause 1); on MQTT every renewal is a reconnect — expected, but a longer token lifetime makes them rarer",
                    ratio * 100.0
                ),
                evidence: vec![
                    format!("{} disconnects, session lifetime median {lived_median:.1} s, coefficient of variation {lived_cv:.2}", window.len()),
                    format!("SAS token lifetime {ttl:.0} s"),
                ],
            };
        }
    }

    // Cause 2 (path): failures that show after an idle period of near-constant
    // length, with the path fine again at once (the next connect works): only idle
    // flows die. Failed reconnects point to outages instead (below).
    let after_idle: Vec<&DisconnectEvent> = window
        .iter()
        .filter(|e| {
            matches!(
                e.cause,
                DisconnectCause::NoPingresp
                    | DisconnectCause::TcpReset
                    | DisconnectCause::EofWithoutDisconnect
            ) && e.failed_attempts == 0
        })
        .collect();
    if after_idle.len() >= MIN_EVENTS && after_idle.len() * 10 >= window.len() * 7 {
        let idle: Vec<f64> = after_idle.iter().map(|e| e.idle_before_s).collect();
        let idle_cv = cv(&idle);
        let idle_median = median(&mut idle.clone());
        if idle_cv < STEADY_CV && idle_median >= 1.0 {
            let ka = ctx.keepalive_s;
            return Diagnosis {
                kind: DiagnosisKind::IdleTimeout,
                iothub_cause: Some(2),
                summary: format!(
                    "the session dies each time after {idle_median:.0} s of silence: a NAT or firewall on the path drops idle flows sooner than the keep-alive ({ka:.0} s) refreshes them (404104 cause 2); lower the keep-alive below the path's idle timeout (`hubprobe tune` measures it)"
                ),
                evidence: vec![
                    format!(
                        "{} of {} disconnects came after idle periods of median {idle_median:.1} s (coefficient of variation {idle_cv:.2})",
                        after_idle.len(),
                        window.len()
                    ),
                    format!("keep-alive {ka:.0} s"),
                ],
            };
        }
    }

    // Cause 2 (network): irregular drops with outages (reconnects that failed).
    let with_outage: Vec<&DisconnectEvent> =
        window.iter().filter(|e| e.failed_attempts > 0).collect();
    if !with_outage.is_empty() && lived_cv >= STEADY_CV {
        let longest = with_outage
            .iter()
            .filter_map(|e| e.reconnect_s)
            .fold(0.0f64, f64::max);
        return Diagnosis {
            kind: DiagnosisKind::Network,
            iothub_cause: Some(2),
            summary: format!(
                "irregular drops, {} of them followed by an outage (reconnect took up to {longest:.0} s): the device's network (404104 cause 2)",
                with_outage.len()
            ),
            evidence: vec![
                format!(
                    "{} disconnects, session lifetime median {lived_median:.1} s, coefficient of variation {lived_cv:.2}",
                    window.len()
                ),
                format!(
                    "failed reconnect attempts: {}",
                    with_outage.iter().map(|e| e.failed_attempts).sum::<u32>()
                ),
            ],
        };
    }

    Diagnosis {
        kind: DiagnosisKind::Unexplained,
        iothub_cause: None,
        summary: format!(
            "{} disconnects fit no device-side pattern; if many devices dropped at the same moments, the hub is the likely cause (404104 cause 3: compare with `hubprobe fleet summarize`)",
            window.len()
        ),
        evidence: vec![format!(
            "session lifetime median {lived_median:.1} s, coefficient of variation {lived_cv:.2}"
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lived: f64, idle: f64, cause: DisconnectCause, failed: u32) -> DisconnectEvent {
        DisconnectEvent {
            at: "2026-01-01T00:00:00Z".into(),
            at_unix_ms: 0,
            session_lived_s: lived,
            idle_before_s: idle,
            cause,
            detail: String::new(),
            reconnect_s: Some(if failed > 0 { 30.0 } else { 0.1 }),
            failed_attempts: failed,
            last_attempt_class: None,
        }
    }

    fn ctx(ttl: Option<f64>) -> DiagnosisContext {
        DiagnosisContext {
            token_lifetime_s: ttl,
            keepalive_s: 240.0,
        }
    }

    #[test]
    fn steady_period_near_token_lifetime_is_cause_1() {
        let e: Vec<_> = [2880.0, 2881.5, 2879.0, 2880.2]
            .iter()
            .map(|l| {
                ev(
                    *l,
                    17.0 + l / 1000.0,
                    DisconnectCause::EofWithoutDisconnect,
                    0,
                )
            })
            .collect();
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::TokenRenewal, "{d:?}");
        assert_eq!(d.iothub_cause, Some(1));
        // The same series with no token lifetime known is not blamed on tokens.
        let d = diagnose(&e, ctx(None));
        assert_ne!(d.kind, DiagnosisKind::TokenRenewal);
    }

    #[test]
    fn constant_idle_before_failure_is_the_path() {
        let e: Vec<_> = [250.0, 500.0, 740.0, 260.0]
            .iter()
            .map(|l| ev(*l, 240.0 + l / 500.0, DisconnectCause::NoPingresp, 0))
            .collect();
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::IdleTimeout, "{d:?}");
        assert_eq!(d.iothub_cause, Some(2));
        assert!(d.summary.contains("240"), "{}", d.summary);
    }

    #[test]
    fn outages_after_keepalive_silence_are_not_an_idle_timeout() {
        // An outage is also seen as a missing PINGRESP after one keep-alive of
        // silence, but the reconnects fail: the network, not an idle timeout.
        let e: Vec<_> = [5.0, 11.0, 3.0, 8.0]
            .iter()
            .map(|l| ev(*l, 1.0, DisconnectCause::NoPingresp, 3))
            .collect();
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::Network, "{d:?}");
    }

    #[test]
    fn irregular_with_outages_is_the_network() {
        let e = vec![
            ev(30.0, 3.0, DisconnectCause::NoPingresp, 2),
            ev(400.0, 100.0, DisconnectCause::TcpReset, 0),
            ev(90.0, 12.0, DisconnectCause::NoPingresp, 5),
        ];
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::Network, "{d:?}");
    }

    #[test]
    fn few_or_patternless() {
        assert_eq!(diagnose(&[], ctx(None)).kind, DiagnosisKind::Stable);
        let two = vec![ev(10.0, 1.0, DisconnectCause::TcpReset, 0); 2];
        assert_eq!(diagnose(&two, ctx(None)).kind, DiagnosisKind::Stable);
        let e = vec![
            ev(30.0, 3.0, DisconnectCause::ServerDisconnect, 0),
            ev(400.0, 100.0, DisconnectCause::ServerDisconnect, 0),
            ev(90.0, 12.0, DisconnectCause::TlsAlert, 0),
        ];
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::Unexplained);
        assert!(d.summary.contains("cause 3"));
    }

    #[test]
    fn history_reports_each_event_once_and_keeps_totals() {
        let mut h = History::default();
        for i in 0..5 {
            h.record(ev(i as f64, 0.0, DisconnectCause::TcpReset, 0), 3);
        }
        assert_eq!(h.events.len(), 3);
        assert_eq!(h.totals()["tcp_reset"], 5);
        assert_eq!(h.totals()["no_pingresp"], 0);
        assert_eq!(h.totals().len(), DisconnectCause::ALL.len());
        // Two were dropped before being reported: only the kept three come out.
        let r = h.take_unreported();
        assert_eq!(r.len(), 3);
        assert!(h.take_unreported().is_empty());
        let mut down = ev(9.0, 0.0, DisconnectCause::NoPingresp, 0);
        down.reconnect_s = None;
        h.record(down, 3);
        h.reconnected(1.5, 2, Some("tcp.refused".into()));
        let r = h.take_unreported();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reconnect_s, Some(1.5));
        assert_eq!(r[0].failed_attempts, 2);
        // Round trip through JSON (the state file).
        let j = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&j).unwrap(), h);
    }
}
