//! The canary session's disconnect history and its diagnosis (pure: no I/O here).
//!
//! Every disconnect of the agent's long-lived MQTT session is recorded with when it
//! happened, how long the session had lived, how long the link had been silent
//! before the failure showed, its cause class and the time it took to get a session
//! back. [`diagnose`] looks at the series and names the IoT Hub 404104 cause family
//! it points to: token renewal (1), the network path's idle timeout or outages (2).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::model::canary::{
    CanaryReport, Diagnosis, DiagnosisKind, DisconnectCause, DisconnectEvent,
};

/// The kept history: the last disconnects, totals since the history began, and
/// what has been reported. Saved in the state directory (at most once per
/// [`super::session::HISTORY_SAVE_GAP`], and when the agent stops), so it survives
/// agent restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// This history's own id (made when it began: its creation time and a random
    /// number); with a disconnect's index it makes the disconnect's id.
    #[serde(default)]
    pub id: String,
    /// Sessions opened since the history began.
    pub sessions_total: u64,
    /// Disconnects recorded since the history began, by cause id.
    pub disconnects_total: BTreeMap<String, u64>,
    /// Disconnects ever recorded (the global index of the next one).
    pub recorded: u64,
    /// Disconnects already put in a report.
    pub reported: u64,
    /// Global indices of disconnects reported while the canary was still down and
    /// completed since: they go out again, under the same id.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub resend: BTreeSet<u64>,
    /// The last disconnects, oldest first (at most the configured count).
    pub events: std::collections::VecDeque<DisconnectEvent>,
}

/// A new history id: creation time (Unix seconds, hex) and 32 random bits.
fn new_history_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let r = (super::schedule::random_unit() * f64::from(u32::MAX)) as u32;
    format!("{now:x}{r:08x}")
}

impl History {
    /// A new, empty history with its own id.
    pub fn new() -> History {
        History {
            id: new_history_id(),
            ..History::default()
        }
    }

    /// Gives a history saved before ids existed an id of its own.
    pub fn ensure_id(&mut self) {
        if self.id.is_empty() {
            self.id = new_history_id();
        }
    }

    /// Global index of the first kept event.
    fn first_kept(&self) -> u64 {
        self.recorded - self.events.len() as u64
    }

    /// Records a disconnect (giving it its id), dropping the oldest beyond `keep`.
    pub fn record(&mut self, mut event: DisconnectEvent, keep: usize) {
        self.ensure_id();
        event.id = format!("{}-{}", self.id, self.recorded);
        *self
            .disconnects_total
            .entry(event.cause.as_str().to_string())
            .or_insert(0) += 1;
        self.events.push_back(event);
        while self.events.len() > keep.max(1) {
            self.events.pop_front();
        }
        self.recorded += 1;
        let first = self.first_kept();
        self.resend.retain(|i| *i >= first);
    }

    /// Counts a failed reconnect attempt on the last disconnect while it is open
    /// (the canary still down), with the attempt's class.
    pub fn attempt_failed(&mut self, class: &str) {
        if let Some(last) = self.events.back_mut() {
            if last.reconnect_s.is_none() {
                last.failed_attempts = last.failed_attempts.saturating_add(1);
                last.last_attempt_class = Some(class.to_string());
            }
        }
    }

    /// Completes the last disconnect once a session is back: how long it took. A
    /// record already reported goes out again, completed.
    pub fn reconnected(&mut self, reconnect_s: f64) {
        self.sessions_total += 1;
        let index = self.recorded.checked_sub(1);
        if let Some(last) = self.events.back_mut() {
            if last.reconnect_s.is_none() {
                last.reconnect_s = Some(reconnect_s.max(0.0));
                if let Some(i) = index.filter(|i| *i < self.reported) {
                    self.resend.insert(i);
                }
            }
        }
    }

    /// The disconnects not yet reported and the completed versions of those
    /// reported while open (oldest first), marking them reported.
    pub fn take_unreported(&mut self) -> Vec<DisconnectEvent> {
        let first_kept = self.first_kept();
        let from = self.reported.max(first_kept);
        let resend = std::mem::take(&mut self.resend);
        self.reported = self.recorded;
        self.events
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let global = first_kept + *i as u64;
                global >= from || resend.contains(&global)
            })
            .map(|(_, e)| e.clone())
            .collect()
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
    /// The session runs through a proxy (an in-order close is then the proxy's).
    pub via_proxy: bool,
}

/// Disconnects looked at for a pattern: the most recent ones.
const WINDOW: usize = 20;
/// Disconnects needed before a pattern is named.
const MIN_EVENTS: usize = 3;
/// Coefficient of variation under which a series counts as steady.
const STEADY_CV: f64 = 0.15;
/// Share of the window a pattern must cover.
const MAJORITY: f64 = 0.7;
/// The MQTT 5 DISCONNECT reason "session taken over".
pub const REASON_SESSION_TAKEN_OVER: u8 = 0x8E;
/// The MQTT 5 DISCONNECT reason "keep alive timeout".
pub const REASON_KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
/// The MQTT 5 DISCONNECT reasons of a server going away or refusing service
/// (server busy, server shutting down, use another server, server moved).
const REASONS_SERVER_GOING: [u8; 4] = [0x89, 0x8B, 0x9C, 0x9D];
/// Connect-attempt classes that show the hub's address answering but refusing.
const REFUSED_CLASSES: [&str; 3] = ["tcp.refused", "mqtt.server_unavailable", "tcp.reset"];

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

fn majority(part: usize, whole: usize) -> bool {
    whole > 0 && part as f64 >= MAJORITY * whole as f64
}

/// A failure the path can cause: silence, a reset, a close without DISCONNECT.
fn path_cause(c: DisconnectCause) -> bool {
    matches!(
        c,
        DisconnectCause::NoPingresp
            | DisconnectCause::TcpReset
            | DisconnectCause::EofWithoutDisconnect
            | DisconnectCause::IoError
    )
}

/// Whether the session had survived a silence as long as the one before its end
/// (then an idle timeout cannot have killed it). Records without the figure fall
/// back to the lifetime: one that lived 2.5 times that silence had lived through
/// at least one more like it.
fn survived_its_silence(e: &DisconnectEvent) -> bool {
    match e.longest_idle_survived_s {
        Some(m) => e.idle_before_s > 0.0 && m >= 0.9 * e.idle_before_s,
        None => e.session_lived_s >= 2.5 * e.idle_before_s.max(1.0),
    }
}

/// Ended by the server at its side: closed without DISCONNECT, a DISCONNECT that
/// says it goes away, or a reset.
fn server_closed(e: &DisconnectEvent) -> bool {
    match e.cause {
        DisconnectCause::EofWithoutDisconnect | DisconnectCause::TcpReset => true,
        DisconnectCause::ServerDisconnect => e
            .reason_code
            .is_none_or(|r| REASONS_SERVER_GOING.contains(&r)),
        _ => false,
    }
}

/// Reconnects refused by the hub's address until it came back.
fn refused_after(e: &DisconnectEvent) -> bool {
    e.failed_attempts > 0
        && e.last_attempt_class
            .as_deref()
            .is_some_and(|c| REFUSED_CLASSES.contains(&c))
}

fn lived_evidence(n: usize, median: f64, cv: f64) -> String {
    format!(
        "{n} disconnects, session lifetime median {median:.1} s, coefficient of variation {cv:.2}"
    )
}

/// Names the pattern in the history (pure). The recorded causes come first, the
/// timing second: a steady lifetime alone does not make a token renewal, nor a
/// steady silence an idle timeout.
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
    let ka = ctx.keepalive_s;

    // The server said so: another connection took the session over.
    let recent = &window[window.len().saturating_sub(MIN_EVENTS)..];
    if let Some(e) = recent
        .iter()
        .rev()
        .find(|e| e.reason_code == Some(REASON_SESSION_TAKEN_OVER))
    {
        return takeover(
            window,
            format!(
                "{} the server's DISCONNECT said 0x8E session taken over",
                e.at
            ),
        );
    }

    // Through a proxy, sessions closed in order (no DISCONNECT) while idle and
    // reconnected at once are the proxy's idle timer ending its tunnels (squid's
    // read_timeout): the broker never saw a reason to close them. The proxy's timer
    // ticks coarsely, so the idle lengths spread; the longest bounds the timeout.
    if ctx.via_proxy {
        let closed: Vec<&DisconnectEvent> = window
            .iter()
            .filter(|e| e.cause == DisconnectCause::EofWithoutDisconnect && e.failed_attempts == 0)
            .collect();
        if closed.len() >= MIN_EVENTS && majority(closed.len(), window.len()) {
            let mut idle: Vec<f64> = closed.iter().map(|e| e.idle_before_s).collect();
            let longest = idle.iter().copied().fold(0.0f64, f64::max);
            let med = median(&mut idle);
            return Diagnosis {
                kind: DiagnosisKind::IdleTimeout,
                iothub_cause: Some(2),
                summary: format!(
                    "the proxy closes idle tunnels after at most {longest:.0} s of silence (median {med:.1} s), sooner than the keep-alive ({ka:.0} s) refreshes them: its own idle timer (squid `read_timeout`, 15 min by default) ends the session (404104 cause 2); lower the keep-alive below it (`hubprobe tune --proxy` measures it) or raise the proxy's timeout"
                ),
                evidence: vec![
                    format!(
                        "{} of {} disconnects were in-order closes through the proxy after idle periods of median {med:.1} s, longest {longest:.1} s, reconnects at once",
                        closed.len(),
                        window.len()
                    ),
                    format!("keep-alive {ka:.0} s"),
                    format!("recorded causes: {}", causes_line(window)),
                ],
            };
        }
    }

    // The server said so: it heard nothing from the canary for 1.5 keep-alives
    // (MQTT 5 DISCONNECT 0x8D), the pings are lost on the way or come too late.
    let ka_timeouts = window
        .iter()
        .filter(|e| e.reason_code == Some(REASON_KEEP_ALIVE_TIMEOUT))
        .count();
    if ka_timeouts > 0 && majority(ka_timeouts, window.len()) {
        return Diagnosis {
            kind: DiagnosisKind::IdleTimeout,
            iothub_cause: None,
            summary: format!(
                "the server ended the session for keep-alive timeout (MQTT 5 DISCONNECT 0x8D): it heard nothing for 1.5 times the keep-alive; the canary pings every {ka:.0} s, so either the broker imposes a shorter keep-alive (its CONNACK's Server Keep Alive) or the pings are lost on the path"
            ),
            evidence: vec![
                format!(
                    "{ka_timeouts} of {} disconnects carry reason 0x8D keep alive timeout",
                    window.len()
                ),
                format!("recorded causes: {}", causes_line(window)),
            ],
        };
    }

    // The server went away and its address refused reconnects until it was back:
    // the path worked, the hub or broker restarted or refused.
    let restarts: Vec<&DisconnectEvent> = window
        .iter()
        .filter(|e| server_closed(e) && refused_after(e))
        .collect();
    let outages = window.iter().filter(|e| e.failed_attempts > 0).count();
    if !restarts.is_empty() && majority(restarts.len(), outages) {
        let longest = restarts
            .iter()
            .filter_map(|e| e.reconnect_s)
            .fold(0.0f64, f64::max);
        let classes: BTreeSet<&str> = restarts
            .iter()
            .filter_map(|e| e.last_attempt_class.as_deref())
            .collect();
        return Diagnosis {
            kind: DiagnosisKind::ServerRestart,
            iothub_cause: Some(3),
            summary: format!(
                "{} session(s) closed by the server, whose address then refused reconnects ({}) until it was back: the hub or broker restarted or refused service — not the device's network, which carried the refusals (404104 cause 3 when many devices drop at the same moments: compare with `hubprobe fleet summarize`)",
                restarts.len(),
                classes.into_iter().collect::<Vec<_>>().join(", ")
            ),
            evidence: restarts
                .iter()
                .map(|e| {
                    format!(
                        "{} {} after {:.0} s, then {} refused attempt(s){}",
                        e.at,
                        e.cause.as_str(),
                        e.session_lived_s,
                        e.failed_attempts,
                        e.reconnect_s
                            .map(|r| format!(", back after {r:.1} s"))
                            .unwrap_or_else(|| ", still down".into())
                    )
                })
                .chain(std::iter::once(format!("longest outage {longest:.1} s")))
                .collect(),
        };
    }

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
    let ttl = ctx.token_lifetime_s.filter(|t| *t > 0.0);

    // Cause 1: the canary's own renewals (or the hub closing at expiry), as recorded.
    let renewals = window
        .iter()
        .filter(|e| {
            matches!(
                e.cause,
                DisconnectCause::TokenRenewal | DisconnectCause::TokenExpired
            )
        })
        .count();
    if majority(renewals, window.len()) {
        let mut evidence = vec![
            format!(
                "{renewals} of {} disconnects were token renewals or expiries",
                window.len()
            ),
            lived_evidence(window.len(), lived_median, lived_cv),
        ];
        if let Some(t) = ttl {
            evidence.push(format!("SAS token lifetime {t:.0} s"));
        }
        return Diagnosis {
            kind: DiagnosisKind::TokenRenewal,
            iothub_cause: Some(1),
            summary: format!(
                "sessions end at a period of {lived_median:.0} s{}: token renewal (404104 cause 1); on MQTT every renewal is a reconnect — expected, but a longer token lifetime makes them rarer",
                ttl.map(|t| format!(", {:.0} % of the {t:.0} s SAS token lifetime", lived_median / t * 100.0))
                    .unwrap_or_default()
            ),
            evidence,
        };
    }

    // A take-over fight: the server closes the session each time the other client
    // connects, while every reconnect works at once.
    let fights = window
        .iter()
        .filter(|e| {
            e.cause == DisconnectCause::EofWithoutDisconnect
                && e.failed_attempts == 0
                && e.session_lived_s < 2.0 * ka.max(1.0)
        })
        .count();
    if fights >= MIN_EVENTS && majority(fights, window.len()) {
        return takeover(
            window,
            format!(
                "{fights} of {} sessions closed by the server without DISCONNECT before their second keep-alive ({ka:.0} s), each reconnect accepted at once",
                window.len()
            ),
        );
    }

    let path: Vec<&DisconnectEvent> = window.iter().filter(|e| path_cause(e.cause)).collect();
    let survivors = path.iter().filter(|e| survived_its_silence(e)).count();

    // Cause 2: a steady lifetime, ended by the path (not by the canary's renewals):
    // something on the path cuts connections at a fixed age.
    // Cut by a reset before the first keep-alive went out: nothing the canary sent
    // drew it, so it is the age (or an idle timeout that resets on its own; a
    // keep-alive below that age tells the two apart).
    let early = path
        .iter()
        .filter(|e| e.cause == DisconnectCause::TcpReset && e.session_lived_s < 0.9 * ka)
        .count();
    let early_cut = majority(early, path.len());
    if lived_cv < STEADY_CV
        && lived_median >= 1.0
        && majority(path.len(), window.len())
        && (majority(survivors, path.len()) || early_cut)
    {
        let mut evidence = vec![
            lived_evidence(window.len(), lived_median, lived_cv),
            format!("recorded causes: {}", causes_line(window)),
        ];
        if early_cut {
            evidence.push(format!(
                "{early} reset(s) before the first keep-alive ({ka:.0} s): an idle timeout that sends resets looks the same; a keep-alive below {lived_median:.0} s tells them apart"
            ));
        }
        if let Some(t) = ttl {
            evidence.push(format!(
                "SAS token lifetime {t:.0} s: the canary's renewals would be recorded as token_renewal, and none of these was"
            ));
        }
        return Diagnosis {
            kind: DiagnosisKind::Network,
            iothub_cause: Some(2),
            summary: format!(
                "sessions are cut at a fixed age of {lived_median:.0} s, {}, by the path: a firewall, load balancer or NAT with a maximum connection lifetime (404104 cause 2); not token renewal (the recorded causes are resets and closes, not renewals)",
                if early_cut {
                    "by a reset before their first keep-alive"
                } else {
                    "after surviving their idle periods"
                }
            ),
            evidence,
        };
    }

    // Cause 2 (path) with reconnects that work at once: only established flows die.
    let quick: Vec<&DisconnectEvent> = path
        .iter()
        .copied()
        .filter(|e| e.failed_attempts == 0)
        .collect();
    if quick.len() >= MIN_EVENTS && majority(quick.len(), window.len()) {
        let quick_survivors = quick.iter().filter(|e| survived_its_silence(e)).count();
        let idle: Vec<f64> = quick.iter().map(|e| e.idle_before_s).collect();
        let idle_cv = cv(&idle);
        let idle_median = median(&mut idle.clone());
        // An idle-dropping NAT kills a session at its first silence longer than its
        // timeout: the sessions must not have survived such a silence before.
        if idle_cv < STEADY_CV && idle_median >= 1.0 && !majority(quick_survivors, quick.len()) {
            return Diagnosis {
                kind: DiagnosisKind::IdleTimeout,
                iothub_cause: Some(2),
                summary: format!(
                    "the session dies at its first silence of {idle_median:.0} s, having survived none as long: a NAT or firewall on the path drops idle flows sooner than the keep-alive ({ka:.0} s) refreshes them (404104 cause 2); lower the keep-alive below the path's idle timeout (`hubprobe tune` measures it)"
                ),
                evidence: vec![
                    format!(
                        "{} of {} disconnects came after idle periods of median {idle_median:.1} s (coefficient of variation {idle_cv:.2}), reconnects at once",
                        quick.len(),
                        window.len()
                    ),
                    format!("{quick_survivors} of them had survived a silence as long before"),
                    format!("keep-alive {ka:.0} s"),
                ],
            };
        }
        if majority(quick_survivors, quick.len()) {
            return Diagnosis {
                kind: DiagnosisKind::Network,
                iothub_cause: Some(2),
                summary: format!(
                    "sessions that had survived many idle periods died ({}), with reconnects working at once: the path lost its state another way — a NAT or firewall failover, a state-table flush, a route or address change (404104 cause 2); not an idle timeout, so a shorter keep-alive would not help",
                    causes_line(window)
                ),
                evidence: vec![
                    format!(
                        "{quick_survivors} of {} such disconnects had survived a silence at least as long as the one before their end",
                        quick.len()
                    ),
                    lived_evidence(window.len(), lived_median, lived_cv),
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
                lived_evidence(window.len(), lived_median, lived_cv),
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
            "{} disconnects ({}) fit no device-side pattern; if many devices dropped at the same moments, the hub is the likely cause (404104 cause 3: compare with `hubprobe fleet summarize`)",
            window.len(),
            causes_line(window)
        ),
        evidence: vec![format!(
            "session lifetime median {lived_median:.1} s, coefficient of variation {lived_cv:.2}"
        )],
    }
}

/// Causes in the window with their counts, most frequent first.
fn causes_line(window: &[DisconnectEvent]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in window {
        *counts.entry(e.cause.as_str()).or_insert(0) += 1;
    }
    let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(c, n)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn takeover(window: &[DisconnectEvent], why: String) -> Diagnosis {
    Diagnosis {
        kind: DiagnosisKind::SessionTakeover,
        iothub_cause: None,
        summary: "another client uses this identity: the server drops the canary's session whenever the other connection (the device's own application, a second agent, a copied identity) connects with the same client id, and each reconnect drops the other one — give the canary an identity of its own (a module identity) or disable it".into(),
        evidence: vec![why, format!("recorded causes: {}", causes_line(window))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lived: f64, idle: f64, cause: DisconnectCause, failed: u32) -> DisconnectEvent {
        DisconnectEvent {
            id: String::new(),
            at: "2026-01-01T00:00:00Z".into(),
            at_unix_ms: 0,
            session_lived_s: lived,
            idle_before_s: idle,
            longest_idle_survived_s: None,
            cause,
            reason_code: None,
            detail: String::new(),
            reconnect_s: Some(if failed > 0 { 30.0 } else { 0.1 }),
            failed_attempts: failed,
            last_attempt_class: None,
        }
    }

    fn survived(mut e: DisconnectEvent, s: f64) -> DisconnectEvent {
        e.longest_idle_survived_s = Some(s);
        e
    }

    fn ctx(ttl: Option<f64>) -> DiagnosisContext {
        DiagnosisContext {
            via_proxy: false,
            token_lifetime_s: ttl,
            keepalive_s: 240.0,
        }
    }

    #[test]
    fn recorded_renewals_are_cause_1() {
        let e: Vec<_> = [2880.0, 2881.5, 2879.0, 2880.2]
            .iter()
            .map(|l| survived(ev(*l, 17.0, DisconnectCause::TokenRenewal, 0), 240.0))
            .collect();
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::TokenRenewal, "{d:?}");
        assert_eq!(d.iothub_cause, Some(1));
        assert!(d.summary.contains("80 %"), "{}", d.summary);
    }

    #[test]
    fn steady_resets_near_the_token_lifetime_are_the_network_not_renewal() {
        // Issue item 9: the canary recorded resets, not its own renewals.
        for cause in [
            DisconnectCause::TcpReset,
            DisconnectCause::EofWithoutDisconnect,
        ] {
            let e: Vec<_> = [2880.0, 2881.5, 2879.0, 2880.2, 2880.9]
                .iter()
                .map(|l| survived(ev(*l, 100.0 + l / 100.0, cause, 0), 240.0))
                .collect();
            let d = diagnose(&e, ctx(Some(3600.0)));
            assert_ne!(d.kind, DiagnosisKind::TokenRenewal, "{d:?}");
            assert_eq!(d.kind, DiagnosisKind::Network, "{d:?}");
            assert_eq!(d.iothub_cause, Some(2));
            assert!(d.summary.contains("fixed age"), "{}", d.summary);
            // Records without the survived figure: the lifetime says they lived
            // through many keep-alives.
            let old: Vec<_> = e
                .iter()
                .cloned()
                .map(|mut e| {
                    e.longest_idle_survived_s = None;
                    e
                })
                .collect();
            assert_eq!(diagnose(&old, ctx(None)).kind, DiagnosisKind::Network);
        }
    }

    #[test]
    fn steady_resets_before_the_first_keepalive_are_a_fixed_age() {
        // A long keep-alive: the sessions never pinged before the reset came.
        let e: Vec<_> = [48.0, 48.2, 47.9, 48.1]
            .iter()
            .map(|l| survived(ev(*l, *l, DisconnectCause::TcpReset, 0), 0.0))
            .collect();
        let d = diagnose(&e, ctx(Some(60.0)));
        assert_eq!(d.kind, DiagnosisKind::Network, "{d:?}");
        assert!(d.summary.contains("fixed age of 48 s"), "{}", d.summary);
        assert!(d.evidence.iter().any(|x| x.contains("tells them apart")));
        // A reset drawn by the PINGREQ after a keep-alive of silence (a NAT that
        // answers forgotten flows with a reset) stays an idle timeout.
        let e: Vec<_> = [241.0, 240.5, 241.2]
            .iter()
            .map(|l| survived(ev(*l, 240.0, DisconnectCause::TcpReset, 0), 0.0))
            .collect();
        assert_eq!(diagnose(&e, ctx(None)).kind, DiagnosisKind::IdleTimeout);
    }

    #[test]
    fn first_silence_deaths_are_an_idle_timeout() {
        // Each session dies at its first keep-alive silence, having survived none.
        let e: Vec<_> = [270.0, 271.0, 269.5, 270.4]
            .iter()
            .map(|l| survived(ev(*l, 240.0, DisconnectCause::NoPingresp, 0), 0.0))
            .collect();
        let d = diagnose(&e, ctx(Some(3600.0)));
        assert_eq!(d.kind, DiagnosisKind::IdleTimeout, "{d:?}");
        assert_eq!(d.iothub_cause, Some(2));
        assert!(d.summary.contains("240"), "{}", d.summary);
        assert!(d.summary.contains("lower the keep-alive"), "{}", d.summary);
    }

    #[test]
    fn deaths_after_many_idle_periods_are_path_state_loss() {
        // Issue item 10: the sessions survived many silences of the keep-alive's
        // length before one of the same length killed them.
        let e: Vec<_> = [2500.0, 7300.0, 1210.0, 4800.0, 980.0]
            .iter()
            .map(|l| survived(ev(*l, 240.0, DisconnectCause::NoPingresp, 0), 240.0))
            .collect();
        let d = diagnose(&e, ctx(Some(86_400.0)));
        assert_eq!(d.kind, DiagnosisKind::Network, "{d:?}");
        assert_eq!(d.iothub_cause, Some(2));
        assert!(d.summary.contains("failover"), "{}", d.summary);
        assert!(!d.summary.contains("lower the keep-alive"), "{}", d.summary);
        // Without the survived figure the lifetimes say the same.
        let old: Vec<_> = [2500.0, 7300.0, 1210.0, 4800.0, 980.0]
            .iter()
            .map(|l| ev(*l, 240.0, DisconnectCause::TcpReset, 0))
            .collect();
        assert_ne!(diagnose(&old, ctx(None)).kind, DiagnosisKind::IdleTimeout);
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
    fn server_close_then_refused_reconnects_is_the_server() {
        // Issue item 11: EOF without DISCONNECT, then tcp.refused until it is back.
        let restart = |lived: f64, failed: u32| {
            let mut e = ev(lived, 20.0, DisconnectCause::EofWithoutDisconnect, failed);
            e.last_attempt_class = Some("tcp.refused".into());
            e
        };
        for e in [
            vec![restart(3000.0, 4)],
            vec![restart(3000.0, 4), restart(120.0, 7), restart(900.0, 2)],
        ] {
            let d = diagnose(&e, ctx(Some(3600.0)));
            assert_eq!(d.kind, DiagnosisKind::ServerRestart, "{d:?}");
            assert_eq!(d.iothub_cause, Some(3));
            assert!(d.summary.contains("restarted"), "{}", d.summary);
            assert!(
                !d.summary.contains("the device's network ("),
                "{}",
                d.summary
            );
        }
        // Timeouts after a silent drop are the network, not the server.
        let mut e = ev(300.0, 240.0, DisconnectCause::NoPingresp, 3);
        e.last_attempt_class = Some("tcp.timeout".into());
        let d = diagnose(&[e.clone(), e.clone(), e], ctx(None));
        assert_ne!(d.kind, DiagnosisKind::ServerRestart, "{d:?}");
    }

    #[test]
    fn server_keep_alive_timeouts_are_named_from_their_reason_code() {
        let events: Vec<DisconnectEvent> = (0..4)
            .map(|_| {
                let mut e = ev(100.0, 30.0, DisconnectCause::ServerDisconnect, 0);
                e.reason_code = Some(REASON_KEEP_ALIVE_TIMEOUT);
                e
            })
            .collect();
        let d = diagnose(&events, ctx(None));
        assert_eq!(d.kind, DiagnosisKind::IdleTimeout, "{d:?}");
        assert!(d.summary.contains("0x8D"), "{}", d.summary);
        assert!(d.evidence[0].contains("4 of 4"), "{:?}", d.evidence);
    }

    #[test]
    fn takeover_by_reason_code_or_by_pattern() {
        let mut e = ev(12.0, 3.0, DisconnectCause::ServerDisconnect, 0);
        e.reason_code = Some(REASON_SESSION_TAKEN_OVER);
        let d = diagnose(&[e], ctx(None));
        assert_eq!(d.kind, DiagnosisKind::SessionTakeover, "{d:?}");
        assert!(d.summary.contains("another client uses this identity"));
        // MQTT 3.1.1: only the pattern — closed without DISCONNECT soon after
        // each connect, every reconnect accepted at once.
        let e: Vec<_> = [0.4, 1.3, 0.2, 2.5, 0.9]
            .iter()
            .map(|l| ev(*l, *l, DisconnectCause::EofWithoutDisconnect, 0))
            .collect();
        assert_eq!(diagnose(&e, ctx(None)).kind, DiagnosisKind::SessionTakeover);
    }

    #[test]
    fn in_order_closes_through_a_proxy_are_its_idle_timer_not_a_takeover() {
        // squid's read_timeout of 2 s, checked about once a second.
        let e: Vec<_> = [1.1, 2.0, 2.9, 1.6, 2.1, 2.6]
            .iter()
            .map(|l| ev(*l, *l, DisconnectCause::EofWithoutDisconnect, 0))
            .collect();
        let mut c = ctx(None);
        c.via_proxy = true;
        let d = diagnose(&e, c);
        assert_eq!(d.kind, DiagnosisKind::IdleTimeout, "{d:?}");
        assert_eq!(d.iothub_cause, Some(2));
        assert!(
            d.summary
                .contains("the proxy closes idle tunnels after at most 3 s"),
            "{d:?}"
        );
        // The same pattern directly is a take-over.
        assert_eq!(diagnose(&e, ctx(None)).kind, DiagnosisKind::SessionTakeover);
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
        assert!(d.summary.contains("server_disconnect"), "{}", d.summary);
    }

    #[test]
    fn history_reports_each_event_once_and_keeps_totals() {
        let mut h = History::new();
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
        assert_eq!(r[0].id, format!("{}-2", h.id));
        assert!(h.take_unreported().is_empty());
        let mut down = ev(9.0, 0.0, DisconnectCause::NoPingresp, 0);
        down.reconnect_s = None;
        h.record(down, 3);
        h.attempt_failed("tcp.refused");
        h.attempt_failed("tcp.refused");
        h.reconnected(1.5);
        let r = h.take_unreported();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reconnect_s, Some(1.5));
        assert_eq!(r[0].failed_attempts, 2);
        assert_eq!(r[0].last_attempt_class.as_deref(), Some("tcp.refused"));
        // Round trip through JSON (the state file).
        let j = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&j).unwrap(), h);
    }

    #[test]
    fn a_record_reported_while_down_goes_out_again_completed() {
        // Issue item 12.
        let mut h = History::new();
        let mut down = ev(600.0, 240.0, DisconnectCause::NoPingresp, 0);
        down.reconnect_s = None;
        h.record(down, 10);
        h.attempt_failed("tcp.timeout");
        let first = h.take_unreported();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].reconnect_s, None);
        assert_eq!(first[0].failed_attempts, 1);
        h.attempt_failed("tcp.refused");
        assert!(
            h.take_unreported().is_empty(),
            "nothing new while still down"
        );
        h.reconnected(42.0);
        let again = h.take_unreported();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].id, first[0].id);
        assert_eq!(again[0].reconnect_s, Some(42.0));
        assert_eq!(again[0].failed_attempts, 2);
        assert_eq!(again[0].last_attempt_class.as_deref(), Some("tcp.refused"));
        assert!(h.take_unreported().is_empty(), "completed once");
        // The re-send survives a restart (it is in the state file).
        let mut down = ev(5.0, 1.0, DisconnectCause::TcpReset, 0);
        down.reconnect_s = None;
        h.record(down, 10);
        let r = h.take_unreported();
        h.reconnected(3.0);
        let mut h2: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        let again = h2.take_unreported();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, r[0].id);
        assert_ne!(again[0].id, first[0].id);
    }

    #[test]
    fn ids_are_unique_across_histories() {
        let mut a = History::new();
        let mut b = History::new();
        a.record(ev(1.0, 1.0, DisconnectCause::TcpReset, 0), 5);
        b.record(ev(1.0, 1.0, DisconnectCause::TcpReset, 0), 5);
        assert_ne!(a.events[0].id, b.events[0].id);
        // A history saved before ids existed gets one.
        let mut old: History = serde_json::from_str(
            r#"{"sessions_total":1,"disconnects_total":{},"recorded":0,"reported":0,"events":[]}"#,
        )
        .unwrap();
        assert!(old.id.is_empty());
        old.ensure_id();
        assert!(!old.id.is_empty());
    }
}
