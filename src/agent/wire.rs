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

/// One chain this device delivered in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredChain {
    /// [`ChainRef::sha256`] of the chain.
    pub sha256: String,
    /// When its full form was last delivered, Unix seconds.
    pub full_at_unix_s: u64,
}

/// The fingerprints of the chains delivered in full, per endpoint and server
/// name; kept in `wire-state.json` in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireState {
    /// `"<endpoint> <server name>"` → the chain last delivered in full there.
    #[serde(default)]
    pub chains: BTreeMap<String, DeliveredChain>,
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
                while s.chains.len() > MAX_CHAINS {
                    s.chains.pop_last();
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

    /// Records what a delivered report carried in full.
    pub fn delivered(&mut self, sent: &[SentChain]) {
        for s in sent {
            self.chains.insert(
                s.key.clone(),
                DeliveredChain {
                    sha256: s.sha256.clone(),
                    full_at_unix_s: s.at_unix_s,
                },
            );
        }
        while self.chains.len() > MAX_CHAINS {
            self.chains.pop_first();
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
            let fresh = |d: &DeliveredChain| {
                d.sha256 == r.sha256
                    && now_unix_s.saturating_sub(d.full_at_unix_s) < FULL_CHAIN_EVERY.as_secs()
            };
            let known = state.chains.get(&key).is_some_and(fresh)
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
        s.save(&p).unwrap();
        assert_eq!(WireState::load(&p), s);
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(WireState::load(&p), WireState::default());
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
