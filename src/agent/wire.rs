//! Compact wire reports: what the uploader publishes instead of the full report.
//!
//! A routine report repeats what the hub already has: the certificate chains the
//! endpoints presented (most of a report's bytes). On the wire a chain the device
//! delivered before becomes a [`ChainRef`] (SHA-256 of the chain and of each
//! certificate, plus the leaf's subject and expiry and the root's name, which is
//! all fleet tooling reads of it); the full chain goes out when it changed and at
//! least once every [`FULL_CHAIN_EVERY`]. A full chain carries its `chain_ref`
//! too, so a consumer can key chains by it. The report stays `hubprobe.report/1`:
//! the only changes are the additive `chain_ref` and an empty `chain`.
//!
//! "Delivered before" is remembered in a [`WireState`] file in the state
//! directory, written atomically (like the spool's files) after each PUBACK, so a
//! restarted agent does not resend chains. The spool and the NDJSON log keep full
//! reports; only the upload is compact (`[upload] compact = false` turns it off).
//! Compact JSON (no pretty printing) on the wire, optionally gzip (see
//! [`Encoding`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{CertInfo, ChainRef, Evidence, Report};

/// A chain is sent in full at least this often, even unchanged (a consumer that
/// lost it, or joined late, gets it back within a day).
pub const FULL_CHAIN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How the upload's body is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// JSON as is (`$.ce=utf-8`: IoT Hub routing queries can read the body).
    #[default]
    Identity,
    /// gzip of the JSON (`contentEncoding: gzip`; IoT Hub cannot route on the body).
    Gzip,
}

/// SHA-256 reference of a chain (see [`ChainRef::sha256`]).
pub fn chain_ref(chain: &[CertInfo]) -> ChainRef {
    let mut h = Sha256::new();
    for c in chain {
        h.update(c.sha256.as_bytes());
        h.update(b"\n");
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    ChainRef {
        sha256,
        certs: chain.iter().map(|c| c.sha256.clone()).collect(),
        len: chain.len(),
        leaf_subject: chain.first().map(|c| c.subject.clone()),
        leaf_not_after: chain.first().map(|c| c.not_after.clone()),
        root_issuer: chain.last().map(|c| c.issuer.clone()),
    }
}

/// The fingerprints of the chains this device delivered in full, and when;
/// kept in `wire-state.json` in the state directory. Keyed by the chain, not by
/// the endpoint: endpoints behind one certificate share one full chain, and an
/// endpoint whose chain changed finds the new one unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireState {
    /// [`ChainRef::sha256`] → when that chain was last delivered in full, Unix
    /// seconds.
    #[serde(default)]
    pub chains: BTreeMap<String, u64>,
    /// `endpoint <name>` / `target` → the digest of what was last delivered in
    /// full there, and when (see [`compact_json`]).
    #[serde(default)]
    pub sections: BTreeMap<String, Section>,
}

/// A report section delivered in full: its digest and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// [`digest`] of the section.
    pub digest: String,
    /// When, Unix seconds.
    pub at_unix_s: u64,
}

/// The most chains a state file keeps (an endpoint list is short; a corrupted or
/// hostile file cannot make the agent hold more).
const MAX_CHAINS: usize = 256;

/// The state file in `state_dir`.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("wire-state.json")
}

impl WireState {
    /// Reads the state file; a missing, unreadable or malformed one is an empty
    /// state (the next report then carries every chain in full: never wrong, only
    /// larger).
    pub fn load(path: &Path) -> WireState {
        let Ok(bytes) = crate::fsio::read_bounded(path, crate::fsio::InputKind::Config) else {
            return WireState::default();
        };
        match serde_json::from_slice::<WireState>(&bytes) {
            Ok(mut s) => {
                s.trim();
                while s.sections.len() > MAX_CHAINS {
                    s.sections.pop_first();
                }
                s
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "ignoring an unreadable wire state (chains are sent in full again): {e}");
                WireState::default()
            }
        }
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::fsio::write_atomic(path, &json)
    }

    /// Records what a delivered report carried in full; forgets chains whose full
    /// form is older than [`FULL_CHAIN_EVERY`] (they go in full again anyway).
    pub fn delivered(&mut self, sent: &[SentChain]) {
        for s in sent {
            self.chains.insert(s.sha256.clone(), s.at_unix_s);
        }
        if let Some(now) = sent.iter().map(|s| s.at_unix_s).max() {
            self.chains
                .retain(|_, at| now.saturating_sub(*at) < FULL_CHAIN_EVERY.as_secs());
        }
        self.trim();
    }

    /// Records the sections a delivered report carried in full.
    pub fn delivered_sections(&mut self, sent: &[SentSection]) {
        for s in sent {
            self.sections.insert(
                s.key.clone(),
                Section {
                    digest: s.digest.clone(),
                    at_unix_s: s.at_unix_s,
                },
            );
        }
        while self.sections.len() > MAX_CHAINS {
            self.sections.pop_first();
        }
    }

    fn knows(&self, key: &str, digest: &str, now: u64) -> bool {
        self.sections.get(key).is_some_and(|s| {
            s.digest == digest && now.saturating_sub(s.at_unix_s) < FULL_CHAIN_EVERY.as_secs()
        })
    }

    /// At most [`MAX_CHAINS`], the oldest dropped first.
    fn trim(&mut self) {
        while self.chains.len() > MAX_CHAINS {
            let Some(oldest) = self
                .chains
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.chains.remove(&oldest);
        }
    }
}

/// A chain a wire report carries in full (recorded once the report is delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentChain {
    /// Endpoint and server name.
    pub key: String,
    /// [`ChainRef::sha256`].
    pub sha256: String,
    /// When, Unix seconds.
    pub at_unix_s: u64,
}

/// A report made compact for the wire.
#[derive(Debug, Clone)]
pub struct Compacted {
    /// The compact report.
    pub report: Report,
    /// The chains it still carries in full.
    pub full: Vec<SentChain>,
    /// The chains it carries as references only.
    pub referenced: usize,
}

/// Leaves out of `report` every chain `state` says was delivered in full, the
/// same, less than [`FULL_CHAIN_EVERY`] before `now_unix_s`. Two endpoints that
/// presented the same chain in one report: the second refers to the first.
pub fn compact(report: &Report, state: &WireState, now_unix_s: u64) -> Compacted {
    let mut out = report.clone();
    let mut full: Vec<SentChain> = Vec::new();
    let mut referenced = 0;
    for ep in &mut out.endpoints {
        for phase in &mut ep.phases {
            let Some(Evidence::Tls(tls)) = phase.evidence.as_mut() else {
                continue;
            };
            if tls.chain.is_empty() {
                continue;
            }
            let r = chain_ref(&tls.chain);
            let key = format!("{} {}", ep.name, tls.server_name);
            let known = state
                .chains
                .get(&r.sha256)
                .is_some_and(|at| now_unix_s.saturating_sub(*at) < FULL_CHAIN_EVERY.as_secs())
                || full.iter().any(|s| s.sha256 == r.sha256);
            if known {
                tls.chain.clear();
                referenced += 1;
            } else {
                full.push(SentChain {
                    key,
                    sha256: r.sha256.clone(),
                    at_unix_s: now_unix_s,
                });
            }
            tls.chain_ref = Some(r);
        }
    }
    Compacted {
        report: out,
        full,
        referenced,
    }
}

/// A report section a wire report carries in full (recorded once delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSection {
    /// `endpoint <name>` or `target`.
    pub key: String,
    /// Its [`digest`].
    pub digest: String,
    /// When, Unix seconds.
    pub at_unix_s: u64,
}

/// Keys whose values change from run to run without saying anything new: timings,
/// ephemeral ports, TTL countdowns, expiry countdowns, the chain itself (its
/// `chain_ref` stands for it).
fn volatile(key: &str) -> bool {
    // Timings: `…_ms`, and the bare `ms` of an AMQP step.
    key == "ms"
        || key.ends_with("_ms")
        || matches!(
            key,
            "local_address"
                | "leaf_days_left"
                | "clock_offset_s"
                | "expires_in_s"
                | "date"
                | "ttl"
                | "chain"
        )
}

fn stable(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !volatile(k))
                .map(|(k, v)| (k.clone(), stable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
        other => other.clone(),
    }
}

/// The digest of a section: the first 12 hex digits of the SHA-256 of its JSON
/// without the volatile keys (timings, ephemeral ports, countdowns).
pub fn digest(v: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(&stable(v)).unwrap_or_default();
    Sha256::digest(&bytes)[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an unchanged phase message reads on the wire.
pub const UNCHANGED: &str = "=";

/// The target's fields every report keeps (the rest is its `details_ref` section).
const TARGET_KEPT: &[&str] = &[
    "host",
    "hub_host",
    "profile",
    "device_id",
    "module_id",
    "auth",
    "timeout_ms",
    "deadline_ms",
];

/// Leaves out of a (chain-compacted) report's JSON the sections unchanged since
/// the last delivered report: an endpoint whose evidence has the digest the hub
/// got in full (its `evidence_ref`) goes without evidence, except what fleet
/// tooling reads of it (the endpoint's `trust_anchors`, each name once per
/// report; an HTTP clock offset); the target's details go likewise
/// (`details_ref`); a phase message of such an endpoint reads [`UNCHANGED`]; a
/// canary with no disconnect records the hub got the same goes by `canary_ref`;
/// zero counts are left out of the canary (absent means zero) and the traffic's
/// running totals (`since_start`) stay on the device. Returns the sections it
/// carries in full.
pub fn compact_json(
    v: &mut serde_json::Value,
    state: &WireState,
    now_unix_s: u64,
) -> Vec<SentSection> {
    use serde_json::{Map, Value};
    let mut sent = Vec::new();
    let mut anchors_kept: Vec<String> = Vec::new();
    if let Some(eps) = v.get_mut("endpoints").and_then(Value::as_array_mut) {
        for ep in eps {
            let name = ep["name"].as_str().unwrap_or("").to_string();
            let evidence: Vec<Value> = ep["phases"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            serde_json::json!([
                                p["phase"],
                                p["status"],
                                p.get("message"),
                                p.get("evidence")
                            ])
                        })
                        .collect()
                })
                .unwrap_or_default();
            let d = digest(&Value::Array(evidence));
            let key = format!("endpoint {name}");
            let known = state.knows(&key, &d, now_unix_s);
            ep["evidence_ref"] = Value::String(d.clone());
            if !known {
                sent.push(SentSection {
                    key,
                    digest: d,
                    at_unix_s: now_unix_s,
                });
                continue;
            }
            let Some(phases) = ep.get_mut("phases").and_then(Value::as_array_mut) else {
                continue;
            };
            let mut anchors: Vec<Value> = Vec::new();
            for p in phases.iter_mut() {
                let Some(obj) = p.as_object_mut() else {
                    continue;
                };
                // A message the hub got with this digest reads "=" (the schema
                // wants one on skipped and failed phases).
                if let Some(m) = obj.get_mut("message") {
                    *m = Value::String(UNCHANGED.into());
                }
                let Some(ev) = obj.remove("evidence") else {
                    continue;
                };
                match obj.get("phase").and_then(Value::as_str) {
                    Some("tls") => {
                        if let Some(a) = ev["trust_anchor"]["name"].as_str() {
                            if !anchors_kept.iter().any(|x| x == a) {
                                anchors_kept.push(a.to_string());
                                anchors.push(Value::String(a.to_string()));
                            }
                        }
                    }
                    Some("http") if ev.get("clock_offset_s").is_some_and(|x| !x.is_null()) => {
                        let mut m = Map::new();
                        m.insert("request".into(), ev["request"].clone());
                        m.insert("clock_offset_s".into(), ev["clock_offset_s"].clone());
                        obj.insert("evidence".into(), Value::Object(m));
                    }
                    _ => {}
                }
            }
            if !anchors.is_empty() {
                ep["trust_anchors"] = Value::Array(anchors);
            }
        }
    }
    if let Some(t) = v.get_mut("target").and_then(Value::as_object_mut) {
        let details: Map<String, Value> = t
            .iter()
            .filter(|(k, _)| !TARGET_KEPT.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !details.is_empty() {
            let d = digest(&Value::Object(details.clone()));
            if state.knows("target", &d, now_unix_s) {
                for k in details.keys() {
                    t.remove(k);
                }
            } else {
                sent.push(SentSection {
                    key: "target".into(),
                    digest: d.clone(),
                    at_unix_s: now_unix_s,
                });
            }
            t.insert("details_ref".into(), Value::String(d));
        }
    }
    // A microsecond is precision enough for the report's own duration.
    if let Some(d) = v.get("duration_ms").and_then(Value::as_f64) {
        if let Some(n) = serde_json::Number::from_f64((d * 1000.0).round() / 1000.0) {
            v["duration_ms"] = Value::Number(n);
        }
    }
    // A whole number of seconds reads as one ("300", not "300.0").
    if let Some(p) = v.get_mut("traffic").and_then(|t| t.get_mut("period_s")) {
        if let Some(n) = p
            .as_f64()
            .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n < 1e15)
        {
            *p = Value::from(n as u64);
        }
    }
    // The hub needs what each report cost; the running totals are for the
    // device's own counters.
    if let Some(t) = v.get_mut("traffic").and_then(Value::as_object_mut) {
        t.remove("since_start");
    }
    if let Some(c) = v.get_mut("canary").and_then(Value::as_object_mut) {
        if let Some(totals) = c
            .get_mut("disconnects_total")
            .and_then(Value::as_object_mut)
        {
            totals.retain(|_, n| n.as_u64() != Some(0));
        }
        if c.get("connect_failures").and_then(Value::as_u64) == Some(0) {
            c.remove("connect_failures");
        }
    }
    // A canary with nothing new (the same session, counts and diagnosis the hub
    // got, no disconnect records) goes by its reference.
    if let Some(c) = v.get("canary") {
        let d = digest(c);
        let quiet = c["recent"].as_array().is_none_or(Vec::is_empty);
        if quiet && state.knows("canary", &d, now_unix_s) {
            if let Some(o) = v.as_object_mut() {
                o.remove("canary");
            }
        } else {
            sent.push(SentSection {
                key: "canary".into(),
                digest: d.clone(),
                at_unix_s: now_unix_s,
            });
        }
        v["canary_ref"] = Value::String(d);
    }
    sent
}

/// The body to publish: compact JSON, gzip-compressed for [`Encoding::Gzip`].
pub fn encode(report: &Report, encoding: Encoding) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    encode_bytes(&json, encoding)
}

/// Encodes an already serialized body.
pub fn encode_bytes(json: &[u8], encoding: Encoding) -> std::io::Result<Vec<u8>> {
    match encoding {
        Encoding::Identity => Ok(json.to_vec()),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(json.len() / 3),
                flate2::Compression::best(),
            );
            gz.write_all(json)?;
            gz.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TlsEvidence;

    fn cert(n: u8) -> CertInfo {
        CertInfo {
            subject: format!("CN=c{n}"),
            issuer: format!("CN=c{}", n + 1),
            not_after: "2030-01-01T00:00:00Z".into(),
            sha256: format!("{n:064x}"),
            ..Default::default()
        }
    }

    fn report(chains: &[(&str, Vec<CertInfo>)]) -> Report {
        let mut eps = Vec::new();
        for (name, chain) in chains {
            let tls = TlsEvidence {
                server_name: "hub.example".into(),
                chain: chain.clone(),
                ..Default::default()
            };
            let phase = crate::model::PhaseResult::ok(
                crate::model::Phase::Tls,
                Duration::from_millis(5),
                Evidence::Tls(Box::new(tls)),
            );
            eps.push(serde_json::json!({
                "name": name, "protocol": "mqtt", "transport": "tls", "port": 8883,
                "verdict": "ok", "phases": [phase]
            }));
        }
        serde_json::from_value(serde_json::json!({
            "schema": "hubprobe.report/1", "id": "r1", "kind": "check",
            "hubprobe_version": "0", "host": "h", "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:01Z", "duration_ms": 1.0,
            "target": {"host": "hub.example", "profile": "p", "auth": "none",
                       "timeout_ms": 1, "deadline_ms": 1},
            "verdict": "ok", "endpoints": eps, "findings": []
        }))
        .unwrap()
    }

    fn tls_of(r: &Report, i: usize) -> &TlsEvidence {
        r.endpoints[i].phases[0]
            .evidence
            .as_ref()
            .unwrap()
            .tls()
            .unwrap()
    }

    #[test]
    fn first_full_then_references_then_full_again_after_a_day() {
        let r = report(&[("a", vec![cert(1), cert(2)])]);
        let mut state = WireState::default();
        let c = compact(&r, &state, 1000);
        assert_eq!((c.full.len(), c.referenced), (1, 0));
        assert_eq!(tls_of(&c.report, 0).chain.len(), 2);
        state.delivered(&c.full);

        let c = compact(&r, &state, 2000);
        assert_eq!((c.full.len(), c.referenced), (0, 1));
        let t = tls_of(&c.report, 0);
        assert!(t.chain.is_empty());
        let cr = t.chain_ref.as_ref().unwrap();
        assert_eq!(cr.len, 2);
        assert_eq!(cr.certs, vec![cert(1).sha256, cert(2).sha256]);
        assert_eq!(cr.leaf_not_after.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(cr.root_issuer.as_deref(), Some("CN=c3"));

        let c = compact(&r, &state, 1000 + FULL_CHAIN_EVERY.as_secs());
        assert_eq!(c.full.len(), 1, "a day later the chain goes in full");
    }

    #[test]
    fn a_changed_chain_goes_in_full() {
        let mut state = WireState::default();
        let c = compact(&report(&[("a", vec![cert(1), cert(2)])]), &state, 10);
        state.delivered(&c.full);
        let c = compact(&report(&[("a", vec![cert(7), cert(2)])]), &state, 20);
        assert_eq!(c.full.len(), 1);
        assert_eq!(tls_of(&c.report, 0).chain.len(), 2);
    }

    #[test]
    fn an_undelivered_report_changes_nothing() {
        // Compacting alone records nothing: only `delivered` (after a PUBACK) does.
        let state = WireState::default();
        let r = report(&[("a", vec![cert(1)])]);
        let _ = compact(&r, &state, 10);
        assert_eq!(compact(&r, &state, 20).full.len(), 1);
    }

    #[test]
    fn a_chain_delivered_on_one_endpoint_is_known_on_another() {
        let chain = vec![cert(1), cert(2)];
        let mut state = WireState::default();
        let c = compact(
            &report(&[("a", chain.clone()), ("b", chain.clone())]),
            &state,
            10,
        );
        state.delivered(&c.full);
        let c = compact(&report(&[("a", chain.clone()), ("b", chain)]), &state, 20);
        assert_eq!((c.full.len(), c.referenced), (0, 2));
    }

    #[test]
    fn the_state_stays_bounded() {
        let mut s = WireState::default();
        for i in 0..(MAX_CHAINS as u64 + 10) {
            s.delivered(&[SentChain {
                key: "k".into(),
                sha256: format!("{i}"),
                at_unix_s: 1_000 + i,
            }]);
        }
        assert_eq!(s.chains.len(), MAX_CHAINS);
        assert!(!s.chains.contains_key("0"), "the oldest went first");
        // A day later only the new one is kept.
        s.delivered(&[SentChain {
            key: "k".into(),
            sha256: "new".into(),
            at_unix_s: 1_000 + FULL_CHAIN_EVERY.as_secs() + 10_000,
        }]);
        assert_eq!(s.chains.len(), 1);
    }

    #[test]
    fn the_same_chain_twice_in_one_report_goes_in_full_once() {
        let chain = vec![cert(1), cert(2)];
        let c = compact(
            &report(&[("a", chain.clone()), ("b", chain)]),
            &WireState::default(),
            10,
        );
        assert_eq!((c.full.len(), c.referenced), (1, 1));
        assert_eq!(tls_of(&c.report, 0).chain.len(), 2);
        assert!(tls_of(&c.report, 1).chain.is_empty());
        assert_eq!(
            tls_of(&c.report, 0).chain_ref,
            tls_of(&c.report, 1).chain_ref
        );
    }

    #[test]
    fn state_survives_a_round_trip_and_a_corrupt_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = state_path(dir.path());
        assert_eq!(WireState::load(&p), WireState::default());
        let mut s = WireState::default();
        s.delivered(&[SentChain {
            key: "a h".into(),
            sha256: "ab".into(),
            at_unix_s: 5,
        }]);
        assert_eq!(s.chains.get("ab"), Some(&5));
        s.save(&p).unwrap();
        assert_eq!(WireState::load(&p), s);
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(WireState::load(&p), WireState::default());
    }

    fn routine_json(r: &Report) -> (serde_json::Value, serde_json::Value) {
        let first = compact(r, &WireState::default(), 10);
        let mut v = serde_json::to_value(&first.report).unwrap();
        let sent = compact_json(&mut v, &WireState::default(), 10);
        let mut state = WireState::default();
        state.delivered(&first.full);
        state.delivered_sections(&sent);
        let again = compact(r, &state, 20);
        let mut routine = serde_json::to_value(&again.report).unwrap();
        compact_json(&mut routine, &state, 20);
        (v, routine)
    }

    #[test]
    fn a_routine_report_keeps_what_fleet_reads_and_refers_to_the_rest() {
        let mut r = report(&[("a", vec![cert(1), cert(2)]), ("b", vec![cert(1), cert(2)])]);
        for ep in &mut r.endpoints {
            if let Some(Evidence::Tls(t)) = ep.phases[0].evidence.as_mut() {
                t.trust_anchor = Some(crate::model::AnchorEvidence {
                    name: "Root A".into(),
                    ..Default::default()
                });
            }
        }
        let mut v = serde_json::to_value(&r).unwrap();
        v["canary"] = serde_json::json!({
            "endpoint": "a", "keepalive_s": 240, "connected": true, "sessions_total": 1,
            "disconnects_total": {"tcp_reset": 0}, "recent": [], "connect_failures": 0,
            "diagnosis": {"kind": "stable", "summary": "no disconnects", "evidence": []}
        });
        let r: Report = serde_json::from_value(v).unwrap();
        let (first, routine) = routine_json(&r);
        // The first carries everything, with the references.
        assert!(first["canary"].is_object());
        assert!(first["canary_ref"].is_string());
        assert!(first["endpoints"][0]["phases"][0]["evidence"].is_object());
        // The routine one: phase, status and duration stay, the evidence goes; the
        // anchor once per report; the quiet canary by its reference.
        let p = &routine["endpoints"][0]["phases"][0];
        assert!(p.get("evidence").is_none(), "{routine:#}");
        assert_eq!(p["status"], "ok");
        assert!(p["duration_ms"].is_number());
        assert_eq!(
            routine["endpoints"][0]["trust_anchors"],
            serde_json::json!(["Root A"])
        );
        assert!(routine["endpoints"][1].get("trust_anchors").is_none());
        assert!(routine.get("canary").is_none(), "{routine:#}");
        assert_eq!(routine["canary_ref"], first["canary_ref"]);
        // fleet reads the same of both.
        let a = crate::fleet::record::parse(&serde_json::to_vec(&first).unwrap()).unwrap();
        let b = crate::fleet::record::parse(&serde_json::to_vec(&routine).unwrap()).unwrap();
        assert_eq!(a, b);
        let anchors: Vec<&str> = b.anchors.iter().map(|t| b.str(*t)).collect();
        assert_eq!(anchors, vec!["Root A"]);
    }

    #[test]
    fn a_canary_with_disconnect_records_goes_in_full() {
        let r = report(&[("a", vec![cert(1)])]);
        let mut v = serde_json::to_value(&r).unwrap();
        v["canary"] = serde_json::json!({
            "endpoint": "a", "keepalive_s": 240, "connected": true, "sessions_total": 2,
            "disconnects_total": {"tcp_reset": 1},
            "recent": [{"at": "2026-01-01T00:00:00Z", "at_unix_ms": 1767225600000u64,
                        "session_lived_s": 60.0, "idle_before_s": 30.0,
                        "cause": "tcp_reset", "detail": "x"}],
            "diagnosis": {"kind": "stable", "summary": "s", "evidence": []}
        });
        let r: Report = serde_json::from_value(v).unwrap();
        let (_, routine) = routine_json(&r);
        assert_eq!(
            routine["canary"]["recent"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(routine["canary_ref"].is_string());
    }

    #[test]
    fn timings_anywhere_in_the_evidence_leave_the_digest_alone() {
        // An AMQP phase's evidence as the probe writes it: step timings are `ms`.
        let amqp = |ms: [f64; 3], outcome: &str| {
            serde_json::json!({
                "phase": "amqp", "status": "ok", "duration_ms": ms[0] + ms[1] + ms[2],
                "evidence": {
                    "container_id": "hub", "received": "AMQP 3 1.0.0",
                    "steps": [
                        {"step": "open", "outcome": "ok", "ms": ms[0]},
                        {"step": "begin", "outcome": outcome, "ms": ms[1]},
                        {"step": "close", "outcome": "ok", "ms": ms[2]}
                    ]
                }
            })
        };
        let mqtt = |rtts: [f64; 2]| serde_json::json!({"evidence": {"client_id": "d", "connack_ms": rtts[0], "ping_rtts_ms": rtts}});
        assert_eq!(
            digest(&amqp([5.5, 0.9, 4.1], "ok")),
            digest(&amqp([3.0, 0.7, 1.4], "ok"))
        );
        assert_ne!(
            digest(&amqp([5.5, 0.9, 4.1], "ok")),
            digest(&amqp([5.5, 0.9, 4.1], "refused"))
        );
        assert_eq!(digest(&mqtt([1.0, 2.0])), digest(&mqtt([7.5, 0.25])));
    }

    #[test]
    fn gzip_round_trips() {
        let r = report(&[("a", vec![cert(1), cert(2)])]);
        let body = encode(&r, Encoding::Gzip).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut back)
            .unwrap();
        assert_eq!(back, serde_json::to_vec(&r).unwrap());
        assert_eq!(
            encode(&r, Encoding::Identity).unwrap(),
            serde_json::to_vec(&r).unwrap()
        );
    }
}
