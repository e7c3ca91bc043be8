//! The one clock verdict of a check: every time source (SNTP, the hub's HTTPS
//! `Date`, a TLS certificate validity error) combined into one offset with its
//! uncertainty, what that offset breaks, and the device identity's validity (X.509
//! certificate, SAS token) judged against the device clock *and* the measured
//! true time. Pure functions over typed evidence; the SNTP queries themselves are
//! `probe::ntp`.
//!
//! Thresholds (seconds of true time minus device time):
//! - [`CLOCK_WARNING_S`] (10 s, as aziot's `check`): beyond it, by more than the
//!   reading's uncertainty, the clock is off and a warning names what it breaks.
//! - [`SAS_SKEW_TOLERANCE_S`] (5 min): IoT Hub tolerates minutes of skew on a SAS
//!   token; a device further ahead makes tokens the hub sees as not yet valid
//!   (401003). A device behind by its tokens' lifetime makes them expired on arrival.
//! - [`TLS_SKEW_S`] (1 day): certificate validity is counted in days; beyond it
//!   certificates issued (or expiring) within the offset fail TLS, and beyond
//!   [`MAX_LEAF_LIFETIME_DAYS`] (398 days, the CA/Browser Forum limit) every server
//!   certificate does.
//!
//! No false alarm: SNTP blocked or refused is an info finding, never a warning.

use crate::model::class::E401003;
use crate::model::{
    ClockReport, ClockSource, ClockSourceKind, ClockState, DeviceCertHealth, EndpointReport,
    Evidence, FailureClass, Finding, NtpEvidence, NtpStatus, Phase, SasTokenInfo, Severity,
};

/// Offset (beyond its uncertainty) above which the clock is reported as off.
pub const CLOCK_WARNING_S: f64 = 10.0;
/// The skew IoT Hub tolerates on a SAS token that looks not yet valid.
pub const SAS_SKEW_TOLERANCE_S: f64 = 300.0;
/// The offset from which certificate validity checks start to fail.
pub const TLS_SKEW_S: f64 = 86_400.0;
/// The longest a publicly trusted server certificate lives.
pub const MAX_LEAF_LIFETIME_DAYS: f64 = 398.0;
/// A device certificate closer than this to expiry is a warning.
pub const DEVICE_CERT_WARNING_DAYS: f64 = 30.0;

/// What the verdict needs besides the SNTP evidence and the endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClockInputs<'a> {
    /// The device clock when the check started, Unix seconds.
    pub device_now_unix: f64,
    /// The SAS token of the run, when one was used.
    pub sas_token: Option<&'a SasTokenInfo>,
    /// Whether the hub takes SAS tokens (IoT Hub profiles).
    pub sas_tokens: bool,
}

/// Combines every source into the verdict.
pub fn verdict(
    ntp: Vec<NtpEvidence>,
    endpoints: &[EndpointReport],
    inp: &ClockInputs<'_>,
) -> ClockReport {
    let mut sources: Vec<ClockSource> = Vec::new();
    // SNTP: the sample with the smallest delay first.
    let mut ntp_ok: Vec<&NtpEvidence> = ntp.iter().filter(|n| n.status == NtpStatus::Ok).collect();
    ntp_ok.sort_by(|a, b| {
        a.delay_s
            .unwrap_or(f64::MAX)
            .total_cmp(&b.delay_s.unwrap_or(f64::MAX))
    });
    for n in ntp_ok {
        if let Some(off) = n.offset_s {
            let unc = n.delay_s.unwrap_or(0.0) / 2.0 + n.root_dispersion_s.unwrap_or(0.0) + 0.001;
            sources.push(ClockSource {
                kind: ClockSourceKind::Ntp,
                origin: n.server.clone(),
                offset_s: off,
                uncertainty_s: Some(round3(unc)),
                bound: false,
            });
        }
    }
    // HTTPS Date: 1 s resolution plus the request's time.
    for e in endpoints {
        let Some(p) = e.phase(Phase::Http) else {
            continue;
        };
        let Some(off) = p
            .evidence()
            .and_then(Evidence::http)
            .and_then(|h| h.clock_offset_s)
        else {
            continue;
        };
        let unc = 0.5 + p.duration_ms.unwrap_or(0.0) / 2000.0;
        sources.push(ClockSource {
            kind: ClockSourceKind::HttpsDate,
            origin: e.name.clone(),
            offset_s: off,
            uncertainty_s: Some(round3(unc)),
            bound: false,
        });
    }
    // TLS validity errors: a bound from the violated validity date.
    for e in endpoints {
        if let Some(b) = tls_bound(e, inp.device_now_unix) {
            sources.push(b);
        }
    }
    let best = sources
        .iter()
        .find(|s| !s.bound)
        .or_else(|| sources.first())
        .cloned();
    let mut report = ClockReport {
        state: ClockState::Unknown,
        offset_s: None,
        uncertainty_s: None,
        source: None,
        sources,
        ntp,
        consequences: Vec::new(),
        sas_expires_in_true_s: None,
    };
    if let Some(b) = best {
        report.offset_s = Some(round3(b.offset_s));
        report.uncertainty_s = b.uncertainty_s;
        report.source = Some(b.kind);
        let off_beyond = b.offset_s.abs() - b.uncertainty_s.unwrap_or(0.0);
        report.state = if b.bound || off_beyond > CLOCK_WARNING_S {
            if b.offset_s > 0.0 {
                ClockState::Behind
            } else {
                ClockState::Ahead
            }
        } else {
            ClockState::Ok
        };
        if !b.bound {
            if let Some(sas) = inp.sas_token {
                report.sas_expires_in_true_s = Some(sas.expires_in_s - b.offset_s.round() as i64);
            }
        }
        report.consequences = consequences(&report, inp);
    }
    report
}

/// The least offset that explains a TLS `not_yet_valid` / `expired` failure of `e`.
fn tls_bound(e: &EndpointReport, now: f64) -> Option<ClockSource> {
    let p = e.phase(Phase::Tls)?;
    let class = p.class?;
    if !matches!(
        class,
        FailureClass::TlsNotYetValid | FailureClass::TlsExpired
    ) {
        return None;
    }
    let tls = p.evidence().and_then(Evidence::tls)?;
    let mut bound: Option<f64> = None;
    for c in &tls.chain {
        if class == FailureClass::TlsNotYetValid {
            if let Some(nb) = parse_rfc3339(&c.not_before) {
                let need = nb as f64 - now;
                if need > 0.0 {
                    bound = Some(bound.map_or(need, |b: f64| b.max(need)));
                }
            }
        } else if let Some(na) = parse_rfc3339(&c.not_after) {
            let need = na as f64 - now;
            if need < 0.0 {
                bound = Some(bound.map_or(need, |b: f64| b.min(need)));
            }
        }
    }
    Some(ClockSource {
        kind: ClockSourceKind::TlsValidity,
        origin: e.name.clone(),
        offset_s: round3(bound?),
        uncertainty_s: None,
        bound: true,
    })
}

/// Parses the report's RFC 3339 UTC form `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// An offset in words: `6 min`, `3 years`, `42 s`.
pub fn human(secs: f64) -> String {
    let a = secs.abs();
    if a < 120.0 {
        format!("{a:.1} s")
    } else if a < 2.0 * 3600.0 {
        format!("{:.0} min", a / 60.0)
    } else if a < 2.0 * 86_400.0 {
        format!("{:.1} h", a / 3600.0)
    } else if a < 2.0 * 365.0 * 86_400.0 {
        format!("{:.0} days", a / 86_400.0)
    } else {
        format!("{:.1} years", a / (365.25 * 86_400.0))
    }
}

fn consequences(r: &ClockReport, inp: &ClockInputs<'_>) -> Vec<String> {
    let Some(off) = r.offset_s else { return vec![] };
    if r.state == ClockState::Ok || r.state == ClockState::Unknown {
        return vec![];
    }
    let mut out = Vec::new();
    let a = off.abs();
    let ahead = off < 0.0;
    if inp.sas_tokens || inp.sas_token.is_some() {
        if ahead && a > SAS_SKEW_TOLERANCE_S {
            out.push(
                "SAS tokens made here look not-yet-valid to the hub (401003 Unauthorized)"
                    .to_string(),
            );
        } else if ahead {
            out.push(format!(
                "SAS tokens made here live {} longer than intended",
                human(a)
            ));
        } else {
            let ttl = inp.sas_token.and_then(|s| s.ttl_s).map(|t| t as f64);
            match ttl {
                Some(t) if a >= t => out.push(format!(
                    "SAS tokens made here (lifetime {}) are already expired when the hub sees them (401003 Unauthorized)",
                    human(t)
                )),
                _ => out.push(format!(
                    "SAS tokens made here expire {} early by the hub's clock: the hub closes the connection sooner than planned (404104, cause 1)",
                    human(a)
                )),
            }
        }
    }
    if a > MAX_LEAF_LIFETIME_DAYS * 86_400.0 {
        out.push(if ahead {
            "every server certificate looks expired: TLS fails (tls.expired) on every endpoint"
                .into()
        } else {
            "every certificate looks not yet valid: TLS fails (tls.not_yet_valid) on every endpoint"
                .into()
        });
    } else if a > TLS_SKEW_S {
        out.push(if ahead {
            format!(
                "certificates expiring within the next {} look expired here (tls.expired)",
                human(a)
            )
        } else {
            format!(
                "certificates issued in the last {} look not yet valid here (tls.not_yet_valid)",
                human(a)
            )
        });
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn source_words(r: &ClockReport) -> String {
    let Some(best) = r.sources.iter().find(|s| Some(s.kind) == r.source) else {
        return "no source".into();
    };
    match best.kind {
        ClockSourceKind::Ntp => format!(
            "NTP {} (±{:.3} s)",
            best.origin,
            best.uncertainty_s.unwrap_or(0.0)
        ),
        ClockSourceKind::HttpsDate => format!(
            "the hub's HTTPS Date on {} (±{:.1} s)",
            best.origin,
            best.uncertainty_s.unwrap_or(0.0)
        ),
        ClockSourceKind::TlsValidity => {
            format!("the certificate validity error on {}", best.origin)
        }
    }
}

/// The findings of the clock verdict and the device identity's health.
pub fn findings(
    r: &ClockReport,
    cert: Option<&DeviceCertHealth>,
    inp: &ClockInputs<'_>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    // 1. The offset and what it breaks.
    if let (Some(off), ClockState::Ahead | ClockState::Behind) = (r.offset_s, r.state) {
        let dir = if r.state == ClockState::Ahead {
            "ahead"
        } else {
            "behind"
        };
        let bound = r.source == Some(ClockSourceKind::TlsValidity);
        let amount = if bound {
            format!("at least {}", human(off))
        } else {
            human(off)
        };
        let a = off.abs();
        // Critical only for what certainly fails: this run's own SAS token already
        // expired when the hub sees it, or every server certificate outside its
        // validity. A clock ahead past the SAS tolerance is named (401003), as a warning.
        let sas_expired_at_hub = inp
            .sas_token
            .and_then(|s| s.ttl_s)
            .is_some_and(|t| r.state == ClockState::Behind && a >= t as f64);
        let sas_not_yet_valid = (inp.sas_tokens || inp.sas_token.is_some())
            && r.state == ClockState::Ahead
            && a > SAS_SKEW_TOLERANCE_S;
        // A validity error alone cannot tell a wrong clock from a certificate that
        // really is expired or not yet valid: it is a hint, not an alarm.
        let severity = if bound {
            Severity::Info
        } else if sas_expired_at_hub || a > MAX_LEAF_LIFETIME_DAYS * 86_400.0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut summary = if bound {
            format!(
                "if the server's certificate is right, the clock is {amount} {dir} (from {}; no NTP or HTTPS Date reading)",
                source_words(r)
            )
        } else {
            format!("the clock is {amount} {dir} (by {})", source_words(r))
        };
        if !r.consequences.is_empty() {
            summary.push_str(": ");
            summary.push_str(&r.consequences.join("; "));
        }
        out.push(Finding {
            code: "clock_offset".into(),
            severity,
            class: None,
            endpoints: vec![],
            summary,
            hint: "fix time sync: enable an NTP client (chrony, systemd-timesyncd) with a reachable server, check the RTC battery; a wrong clock breaks certificate checks and SAS token validity".into(),
            iothub_error: (sas_expired_at_hub || sas_not_yet_valid)
                .then(|| E401003.unwrap_or("401003").to_string()),
        });
    }
    // 2. SNTP that did not give a sample.
    let blocked: Vec<&NtpEvidence> = r.ntp.iter().filter(|n| n.status.is_blocked()).collect();
    let any_ntp_ok = r.ntp.iter().any(|n| n.status == NtpStatus::Ok);
    if !any_ntp_ok && !blocked.is_empty() {
        let list: Vec<String> = blocked
            .iter()
            .map(|n| format!("{} ({})", n.server, n.status.as_str()))
            .collect();
        let instead = match r.source {
            Some(ClockSourceKind::HttpsDate) => {
                "the clock was checked against the hub's HTTPS Date instead (1 s resolution)"
            }
            Some(ClockSourceKind::TlsValidity) => {
                "the clock was judged from a certificate validity error only"
            }
            _ => "the clock was not checked at all (no HTTPS Date either)",
        };
        out.push(Finding {
            code: "ntp_unreachable".into(),
            severity: Severity::Info,
            class: None,
            endpoints: vec![],
            summary: format!("NTP (UDP) did not answer: {}; {instead}", list.join(", ")),
            hint: "if the device syncs its clock over NTP, allow UDP 123 to its server; otherwise give --ntp-server a server the network allows (or none)".into(),
            iothub_error: None,
        });
    }
    let untrusted: Vec<String> = r
        .ntp
        .iter()
        .filter(|n| !n.status.is_blocked() && n.status != NtpStatus::Ok)
        .map(|n| {
            format!(
                "{} ({}: {})",
                n.server,
                n.status.as_str(),
                n.message.as_deref().unwrap_or("")
            )
        })
        .collect();
    if !untrusted.is_empty() {
        out.push(Finding {
            code: "ntp_untrusted".into(),
            severity: Severity::Info,
            class: None,
            endpoints: vec![],
            summary: format!("NTP answers not trusted: {}", untrusted.join("; ")),
            hint: "a server that sends Kiss-o'-Death or says it is unsynchronized gives no time; a device syncing from it drifts. Use another server".into(),
            iothub_error: None,
        });
    }
    // 3. Sources that disagree (e.g. an NTP server that is itself wrong).
    let firm: Vec<&ClockSource> = r.sources.iter().filter(|s| !s.bound).collect();
    if let (Some(a), Some(b)) = (
        firm.iter().find(|s| s.kind == ClockSourceKind::Ntp),
        firm.iter().find(|s| s.kind == ClockSourceKind::HttpsDate),
    ) {
        let tol = a.uncertainty_s.unwrap_or(0.0) + b.uncertainty_s.unwrap_or(0.0) + 2.0;
        if (a.offset_s - b.offset_s).abs() > tol {
            out.push(Finding {
                code: "clock_sources_disagree".into(),
                severity: Severity::Info,
                class: None,
                endpoints: vec![b.origin.clone()],
                summary: format!(
                    "NTP {} says the offset is {:+.1} s, the hub's Date says {:+.1} s",
                    a.origin, a.offset_s, b.offset_s
                ),
                hint: "the NTP server or the hub's clock is wrong; the hub's clock is what SAS tokens are judged by".into(),
                iothub_error: None,
            });
        }
    }
    // 4. The SAS token by true time.
    if let (Some(sas), Some(true_left)) = (inp.sas_token, r.sas_expires_in_true_s) {
        if true_left <= 0 && sas.expires_in_s > 0 {
            out.push(Finding {
                code: "sas_token_expired_true_time".into(),
                severity: Severity::Critical,
                class: None,
                endpoints: vec![],
                summary: format!(
                    "the SAS token expired {} ago by true time (it expires at {}; by the device clock it has {} s left)",
                    human(true_left as f64),
                    sas.expires_at,
                    sas.expires_in_s
                ),
                hint: "fix the device clock, then generate a new token".into(),
                iothub_error: E401003.map(str::to_string),
            });
        } else if true_left > 0 && sas.expires_in_s <= 0 {
            out.push(Finding {
                code: "sas_token_valid_true_time".into(),
                severity: Severity::Info,
                class: None,
                endpoints: vec![],
                summary: format!(
                    "the SAS token looks expired by the device clock but has {true_left} s left by true time"
                ),
                hint: "the device clock is ahead: fix time sync rather than the token".into(),
                iothub_error: None,
            });
        }
    }
    // 5. The X.509 device certificate.
    if let Some(c) = cert {
        out.extend(cert_findings(c));
    }
    out
}

fn cert_findings(c: &DeviceCertHealth) -> Vec<Finding> {
    let mut out = Vec::new();
    let by_true = c.state_true.as_deref();
    let dev = c.state_device.as_str();
    let bad = |s: &str| s == "expired" || s == "not_yet_valid";
    let finding = |code: &str, severity, summary: String, hint: &str| Finding {
        code: code.into(),
        severity,
        class: None,
        endpoints: vec![],
        summary,
        hint: hint.into(),
        iothub_error: None,
    };
    let judged = by_true.unwrap_or(dev);
    let clock_words = if by_true.is_some() {
        "by the device clock and by true time"
    } else {
        "by the device clock (true time not measured)"
    };
    if bad(judged) && (by_true.is_none() || bad(dev)) {
        let (code, what) = if judged == "expired" {
            ("device_cert_expired", format!("expired at {}", c.not_after))
        } else {
            (
                "device_cert_not_yet_valid",
                format!("is valid only from {}", c.not_before),
            )
        };
        out.push(finding(
            code,
            Severity::Critical,
            format!(
                "the device certificate '{}' {what} {clock_words}",
                c.subject
            ),
            "issue a new device certificate (and register it, or its CA, with the hub)",
        ));
    } else if bad(judged) {
        // True time says invalid, the device clock says valid: the hub refuses it.
        let (code, what) = if judged == "expired" {
            ("device_cert_expired", format!("expired at {}", c.not_after))
        } else {
            (
                "device_cert_not_yet_valid",
                format!("is valid only from {}", c.not_before),
            )
        };
        out.push(finding(
            code,
            Severity::Critical,
            format!(
                "the device certificate '{}' {what} by true time; the device clock hides it",
                c.subject
            ),
            "issue a new device certificate, and fix the device clock",
        ));
    } else if bad(dev) {
        out.push(finding(
            "device_cert_invalid_by_device_clock",
            Severity::Warning,
            format!(
                "the device certificate '{}' is valid by true time but {} by the device clock",
                c.subject,
                dev.replace('_', " ")
            ),
            "the certificate is fine: fix the device clock (software that checks its own certificate will refuse it)",
        ));
    } else {
        let days = c.days_left_true.unwrap_or(c.days_left_device);
        if days < DEVICE_CERT_WARNING_DAYS {
            out.push(finding(
                "device_cert_expiring",
                Severity::Warning,
                format!(
                    "the device certificate '{}' expires in {days:.1} days ({})",
                    c.subject, c.not_after
                ),
                "renew the device certificate before it expires; the hub refuses an expired one",
            ));
        }
    }
    out
}

/// The device certificate's validity by the device clock and, when `offset_s`
/// is known, by true time. `None` when `der` does not parse.
pub fn device_cert_health(
    der: &[u8],
    device_now_unix: f64,
    offset_s: Option<f64>,
) -> Option<DeviceCertHealth> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let state = |now: f64| -> String {
        if now < nb as f64 {
            "not_yet_valid".into()
        } else if now > na as f64 {
            "expired".into()
        } else if (na as f64 - now) / 86_400.0 < DEVICE_CERT_WARNING_DAYS {
            "expiring".into()
        } else {
            "valid".into()
        }
    };
    let days = |now: f64| ((na as f64 - now) / 86_400.0 * 100.0).round() / 100.0;
    let true_now = offset_s.map(|o| device_now_unix + o);
    Some(DeviceCertHealth {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sha256: sha_hex(der),
        not_before: crate::model::rfc3339_unix(nb.max(0) as u64),
        not_after: crate::model::rfc3339_unix(na.max(0) as u64),
        not_after_unix: na,
        days_left_device: days(device_now_unix),
        days_left_true: true_now.map(days),
        state_device: state(device_now_unix),
        state_true: true_now.map(state),
        key_matches: true,
        chains_to_ca: None,
        chain_error: None,
    })
}

fn sha_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ntp(off: f64) -> NtpEvidence {
        NtpEvidence {
            server: "ntp.test".into(),
            status: NtpStatus::Ok,
            offset_s: Some(off),
            delay_s: Some(0.002),
            root_dispersion_s: Some(0.0),
            ..NtpEvidence::default()
        }
    }

    fn sas(ttl: u64) -> SasTokenInfo {
        SasTokenInfo {
            resource: "hub/devices/d".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
            expires_in_s: ttl as i64,
            ttl_s: Some(ttl),
        }
    }

    #[test]
    fn rfc3339_parses_what_the_report_writes() {
        for t in [0i64, 951_782_400, 1_764_000_000, 4_102_444_800] {
            assert_eq!(
                parse_rfc3339(&crate::model::rfc3339_unix(t as u64)),
                Some(t)
            );
        }
        assert_eq!(parse_rfc3339("2025-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn six_minutes_ahead_breaks_sas_tokens() {
        let s = sas(3600);
        let inp = ClockInputs {
            device_now_unix: 1e9,
            sas_token: Some(&s),
            sas_tokens: true,
        };
        let r = verdict(vec![ntp(-360.0)], &[], &inp);
        assert_eq!(r.state, ClockState::Ahead);
        assert_eq!(r.source, Some(ClockSourceKind::Ntp));
        let f = findings(&r, None, &inp);
        let c = f.iter().find(|f| f.code == "clock_offset").unwrap();
        assert_eq!(c.severity, Severity::Warning);
        assert!(c.iothub_error.as_deref().unwrap().contains("401003"));
        assert!(
            c.summary.contains("6 min ahead") && c.summary.contains("not-yet-valid"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn three_years_behind_breaks_every_certificate() {
        let inp = ClockInputs {
            device_now_unix: 1e9,
            ..Default::default()
        };
        let r = verdict(vec![ntp(3.0 * 365.25 * 86_400.0)], &[], &inp);
        assert_eq!(r.state, ClockState::Behind);
        let f = findings(&r, None, &inp);
        let c = f.iter().find(|f| f.code == "clock_offset").unwrap();
        assert!(
            c.summary.contains("3.0 years behind")
                && c.summary.contains("every certificate looks not yet valid"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn small_offsets_and_blocked_ntp_raise_no_warning() {
        let inp = ClockInputs {
            device_now_unix: 1e9,
            ..Default::default()
        };
        let r = verdict(vec![ntp(2.0)], &[], &inp);
        assert_eq!(r.state, ClockState::Ok);
        assert!(findings(&r, None, &inp).is_empty());
        let blocked = NtpEvidence {
            server: "x".into(),
            status: NtpStatus::Timeout,
            ..Default::default()
        };
        let r = verdict(vec![blocked], &[], &inp);
        assert_eq!(r.state, ClockState::Unknown);
        let f = findings(&r, None, &inp);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, "ntp_unreachable");
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].summary.contains("not checked at all"));
    }

    #[test]
    fn sas_expiry_is_judged_by_true_time() {
        let s = sas(100);
        let inp = ClockInputs {
            device_now_unix: 1e9,
            sas_token: Some(&s),
            sas_tokens: true,
        };
        let r = verdict(vec![ntp(600.0)], &[], &inp);
        assert_eq!(r.sas_expires_in_true_s, Some(-500));
        let f = findings(&r, None, &inp);
        assert!(f
            .iter()
            .any(|f| f.code == "sas_token_expired_true_time" && f.severity == Severity::Critical));
        let c = f.iter().find(|f| f.code == "clock_offset").unwrap();
        assert!(c.summary.contains("already expired"), "{}", c.summary);
    }
}
