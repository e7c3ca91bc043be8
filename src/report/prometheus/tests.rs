//! Unit tests of the Prometheus renderer: escaping, label names, values, and a whole
//! report (endpoints, canary, keep-alive) checked line by line and for the format's
//! structure. `promtool` and node_exporter read the output in tests/prometheus.rs.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use super::*;
use crate::model::canary::{Diagnosis, DiagnosisKind};
use crate::model::keepalive::{
    Discovery, DropKind, Limit, LimitKind, LossBursts, Outage, Percentiles, Recommendation, Rto,
    Spread, Stability, StabilityConfig,
};

fn mqtt_tls() -> serde_json::Value {
    json!({
        "name": "mqtt-tls", "protocol": "mqtt", "transport": "tls", "port": 8883,
        "verdict": "ok",
        "phases": [
            {"phase": "dns", "status": "ok", "duration_ms": 1.5, "evidence": {
                "query": "hub.example.net", "literal": false, "source": "dns",
                "servers": ["127.0.0.1:53"], "cname_chain": [],
                "a": {"status": "ok", "duration_ms": 1.0, "records": [
                    {"address": "127.0.0.1", "ttl": 60}, {"address": "127.0.0.2", "ttl": 60}]},
                "aaaa": {"status": "failed", "duration_ms": 1.2, "class": "dns.no_records",
                         "message": "no AAAA", "records": []},
                "addresses": ["127.0.0.1", "127.0.0.2"]}},
            {"phase": "tcp", "status": "ok", "duration_ms": 0.25},
            {"phase": "tls", "status": "ok", "duration_ms": 12.0, "evidence": {
                "server_name": "hub.example.net", "alpn_offered": [], "alpn": null,
                "version": "TLSv1.3", "cipher_suite": "TLS13_AES_256_GCM_SHA384",
                "chain": [
                    {"subject": "CN=hub \"evil\"\\, O=x\ny", "issuer": "CN=Lab CA",
                     "sans": [], "not_before": "2026-01-01T00:00:00Z",
                     "not_after": "2027-01-01T00:00:00Z", "sha256": "ab12",
                     "is_ca": false, "serial": "01"},
                    {"subject": "CN=Lab CA", "issuer": "CN=Lab CA", "sans": [],
                     "not_before": "2026-01-01T00:00:00Z",
                     "not_after": "2026-12-01T00:00:00Z", "sha256": "cd34",
                     "is_ca": true, "serial": "02"}],
                "trust_anchor": {"name": "Lab CA", "subject": "CN=Lab CA",
                                 "origin": "ca-file:/tmp/a\"b", "expected": true,
                                 "legacy": false},
                "leaf_days_left": 36.0, "client_certificate": null}},
            {"phase": "mqtt", "status": "ok", "duration_ms": 3.0, "evidence": {
                "client_id": "dev1", "auth": "sas-key", "auth_tested": true,
                "keep_alive_s": 60, "connack": {"code": 0, "name": "accepted",
                "session_present": false}, "ping_rtts_ms": [], "disconnect_sent": true}}
        ]
    })
}

fn https() -> serde_json::Value {
    json!({
        "name": "https", "protocol": "http", "transport": "tls", "port": 443,
        "verdict": "critical",
        "phases": [
            {"phase": "dns", "status": "ok", "duration_ms": 1.0},
            {"phase": "tcp", "status": "failed", "duration_ms": 0.5,
             "class": "tcp.refused", "message": "connection refused"},
            {"phase": "tls", "status": "skipped", "message": "tcp failed"},
            {"phase": "http", "status": "skipped", "message": "tcp failed"}
        ]
    })
}

fn amqps() -> serde_json::Value {
    json!({
        "name": "amqps", "protocol": "amqp", "transport": "tls", "port": 5671,
        "verdict": "ok",
        "phases": [
            {"phase": "http", "status": "ok", "duration_ms": 2.0,
             "evidence": {"request": "GET /", "clock_offset_s": -3.0}}
        ]
    })
}

/// A check report with one working and one failing endpoint; strings with quotes,
/// backslashes and newlines where the network could put them.
fn report() -> Report {
    serde_json::from_value(json!({
        "schema": "hubprobe.report/1",
        "id": "0f0e0d0c-0b0a-4908-8706-050403020100",
        "kind": "check",
        "hubprobe_version": "0.1.0",
        "host": "dev\"box\\1\nline2",
        "started_at": "2026-11-26T04:00:00.000Z",
        "finished_at": "2026-11-26T04:00:01.500Z",
        "duration_ms": 1500.25,
        "target": {
            "host": "hub.example.net",
            "profile": "azure-iot-hub",
            "device_id": "dev1",
            "auth": "sas-key",
            "timeout_ms": 5000,
            "deadline_ms": 60000,
            "sas_token": {
                "resource": "hub.example.net/devices/dev1",
                "expires_at": "2100-01-01T00:00:00Z",
                "expires_in_s": 2_312_000_000i64,
            }
        },
        "verdict": "warning",
        "endpoints": [mqtt_tls(), https(), amqps()],
        "findings": [
            {"code": "tcp.refused", "severity": "warning", "class": "tcp.refused",
             "endpoints": ["https"], "summary": "s", "hint": "h"},
            {"code": "leaf_expiry", "severity": "warning", "endpoints": ["mqtt-tls"],
             "summary": "s", "hint": "h"}
        ],
        "labels": {"site": "berlin \"3\"", "net.type": "lte", "net-type": "5g", "9x": "y"}
    }))
    .expect("fixture is a valid report")
}

fn canary() -> CanaryReport {
    let mut totals = BTreeMap::new();
    totals.insert("no_pingresp".to_string(), 4);
    totals.insert("token_renewal".to_string(), 2);
    totals.insert("from_the_future".to_string(), 1);
    CanaryReport {
        endpoint: "mqtt-tls".into(),
        keepalive_s: 240,
        connected: true,
        connected_since: Some("2026-11-26T03:00:00.000Z".into()),
        sessions_total: 7,
        disconnects_total: totals,
        recent: vec![],
        diagnosis: Diagnosis {
            kind: DiagnosisKind::IdleTimeout,
            iothub_cause: Some(2),
            summary: "idle".into(),
            evidence: vec![],
        },
        connect_failures: 0,
        connect_error: None,
    }
}

fn keepalive(endpoint: &str, k: u64) -> KeepaliveReport {
    let group = |p50: f64| GroupStats {
        samples: 10,
        answered: 10,
        rtt_percentiles: Some(Percentiles {
            p50_ms: p50,
            p95_ms: p50 * 2.0,
            p99_ms: p50 * 3.0,
        }),
        rto: Some(Rto {
            srtt_ms: p50,
            rttvar_ms: 1.0,
            rto_ms: 1000.0,
        }),
        ..GroupStats::default()
    };
    KeepaliveReport {
        mode: "reflector".into(),
        reflector: Some("refl.example:7\"".into()),
        endpoint: endpoint.into(),
        sample_interval_ms: 1000,
        stability: Stability {
            samples: 20,
            answered: 19,
            lost: 1,
            loss_rate: Some(0.05),
            span_ms: 20_000.0,
            loss_bursts: LossBursts {
                count: 1,
                longest_samples: 1,
            },
            outages: vec![
                Outage {
                    start_ms: 1.0,
                    length_ms: 6000.0,
                    ongoing: false,
                },
                Outage {
                    start_ms: 9.0,
                    length_ms: 7500.0,
                    ongoing: false,
                },
            ],
            warm: group(20.0),
            cold: group(80.0),
            config: StabilityConfig::default(),
        },
        discovery: Some(Discovery {
            longest_survived_ms: Some(230_000),
            shortest_failed_ms: Some(250_000),
            estimate_ms: Some(240_000),
            precision: Some(0.08),
            no_drop_up_to_ms: None,
            drop_kind: Some(DropKind::SilentDrop),
            drop_kinds_seen: vec![DropKind::SilentDrop],
            inconsistent: false,
            errors: 0,
            results: vec![],
            rounds: 3,
        }),
        discovery_ms: Some(300_000.0),
        recommendation: Recommendation {
            keepalive_s: k,
            pingresp_timeout_s: 10,
            tcp_user_timeout_s: k + 10,
            spread: Spread {
                min_s: k * 9 / 10,
                max_s: k,
            },
            bytes_per_round: 256,
            bytes_per_day: 105_326,
            confidence: Confidence::Medium,
            binding: LimitKind::Nat,
            limits: vec![
                Limit {
                    kind: LimitKind::Nat,
                    value_s: k,
                    reason: "r".into(),
                },
                Limit {
                    kind: LimitKind::Cap,
                    value_s: 1177,
                    reason: "r".into(),
                },
            ],
            reasons: vec![],
            conflicts: vec![],
        },
    }
}

/// Checks the structure the format demands and returns the samples (name with labels
/// → value): every sample's family has exactly one HELP and one TYPE before its
/// samples, a family's samples are contiguous, no series repeats, every family is in
/// [`METRICS`] with the declared type, and counters end in `_total`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut helped = HashSet::new();
    let mut typed = HashSet::new();
    let mut finished = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "ends with a line feed");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(helped.insert(name.clone()), "HELP twice for {name}");
            if let Some(prev) = current.replace(name) {
                finished.insert(prev);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(Some(name), current.as_deref(), "TYPE right after HELP");
            assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            let def = METRICS
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} not in METRICS"));
            assert_eq!(kind, def.kind.as_str(), "{name}");
            if def.kind == MetricType::Counter {
                assert!(name.ends_with("_total"), "{name}");
            } else {
                assert!(!name.ends_with("_total"), "{name}");
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert_eq!(
            Some(&name),
            current.as_ref(),
            "sample outside its family: {line}"
        );
        assert!(!finished.contains(&name), "family {name} not contiguous");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "series twice: {series}"
        );
    }
    samples
}

#[test]
fn label_values_escape_backslash_quote_and_newline_only() {
    assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label_value("x\ny"), "x\\ny");
    assert_eq!(escape_label_value("tab\tü✓"), "tab\tü✓");
    assert_eq!(escape_label_value(""), "");
}

#[test]
fn operator_label_keys_become_valid_label_names() {
    assert_eq!(label_name("site"), "label_site");
    assert_eq!(label_name("net.type-x"), "label_net_type_x");
    assert_eq!(label_name("9lives"), "label_9lives");
    assert_eq!(label_name("__x"), "label___x");
    assert_eq!(label_name("ü"), "label__");
    let valid = |s: &str| {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    };
    for k in ["a", "1", "-", ".", "a b", "\"", "\n"] {
        assert!(valid(&label_name(k)), "{k:?}");
    }
}

#[test]
fn values_use_go_syntax_for_special_floats() {
    assert_eq!(format_value(1.0), "1");
    assert_eq!(format_value(0.0015), "0.0015");
    assert_eq!(format_value(-3.5), "-3.5");
    assert_eq!(format_value(f64::NAN), "NaN");
    assert_eq!(format_value(f64::INFINITY), "+Inf");
    assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    assert_eq!(format_value(1e21).parse::<f64>().unwrap(), 1e21);
}

#[test]
fn a_check_report_renders_every_figure_it_holds() {
    let text = render(&report(), None);
    let m = parse(&text);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no series {k} in\n{text}"))
    };
    assert_eq!(get("hubprobe_success"), 1.0, "warning still connects");
    assert_eq!(get("hubprobe_verdict_code"), 1.0);
    assert_eq!(get("hubprobe_duration_seconds"), 1.50025);
    assert_eq!(get("hubprobe_finished_timestamp_seconds"), 1_795_665_601.5);
    assert_eq!(
        get(
            r#"hubprobe_info{kind="check",version="0.1.0",host="dev\"box\\1\nline2",target="hub.example.net",profile="azure-iot-hub",auth="sas-key",device_id="dev1",label_9x="y",label_net_type="5g",label_net_type_2="lte",label_site="berlin \"3\""}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"hubprobe_endpoint_success{endpoint="mqtt-tls"}"#),
        1.0
    );
    assert_eq!(get(r#"hubprobe_endpoint_success{endpoint="https"}"#), 0.0);
    assert_eq!(
        get(
            r#"hubprobe_endpoint_info{endpoint="mqtt-tls",protocol="mqtt",transport="tls",port="8883"}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"hubprobe_phase_duration_seconds{endpoint="mqtt-tls",phase="tls"}"#),
        0.012
    );
    assert_eq!(
        get(r#"hubprobe_phase_duration_seconds{endpoint="https",phase="tcp"}"#),
        0.0005
    );
    assert_eq!(
        get(r#"hubprobe_phase_success{endpoint="https",phase="tcp"}"#),
        0.0
    );
    assert_eq!(
        get(r#"hubprobe_phase_failure_info{endpoint="https",phase="tcp",class="tcp.refused"}"#),
        1.0
    );
    assert!(
        !text.contains(r#"endpoint="https",phase="tls""#),
        "skipped phases have no series"
    );
    assert_eq!(
        get(r#"hubprobe_dns_answer_records{endpoint="mqtt-tls",family="a"}"#),
        2.0
    );
    assert_eq!(
        get(r#"hubprobe_dns_answer_records{endpoint="mqtt-tls",family="aaaa"}"#),
        0.0
    );
    assert_eq!(
        get(r#"hubprobe_dns_lookup_success{endpoint="mqtt-tls",family="aaaa"}"#),
        0.0
    );
    assert_eq!(
        get(r#"hubprobe_tls_leaf_not_after_timestamp_seconds{endpoint="mqtt-tls"}"#),
        1_798_761_600.0
    );
    assert_eq!(
        get(r#"hubprobe_tls_chain_earliest_not_after_timestamp_seconds{endpoint="mqtt-tls"}"#),
        1_796_083_200.0
    );
    assert_eq!(
        get(
            r#"hubprobe_tls_trust_anchor_info{endpoint="mqtt-tls",anchor="Lab CA",subject="CN=Lab CA",origin="ca-file:/tmp/a\"b",expected="true",legacy="false"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"hubprobe_tls_leaf_info{endpoint="mqtt-tls",subject="CN=hub \"evil\"\\, O=x\ny",issuer="CN=Lab CA",serial="01",fingerprint_sha256="ab12"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"hubprobe_tls_version_info{endpoint="mqtt-tls",version="TLSv1.3",cipher_suite="TLS13_AES_256_GCM_SHA384"}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"hubprobe_mqtt_connack_code{endpoint="mqtt-tls"}"#),
        0.0
    );
    assert_eq!(
        get(r#"hubprobe_clock_offset_seconds{endpoint="amqps"}"#),
        -3.0
    );
    assert_eq!(
        get("hubprobe_sas_token_expiry_timestamp_seconds"),
        4_102_444_800.0
    );
    assert_eq!(get(r#"hubprobe_findings{severity="warning"}"#), 2.0);
    assert_eq!(get(r#"hubprobe_findings{severity="critical"}"#), 0.0);
    assert_eq!(get(r#"hubprobe_findings{severity="info"}"#), 0.0);
    assert_eq!(
        get(r#"hubprobe_findings_by_code{code="tcp.refused",severity="warning"}"#),
        1.0
    );
    assert!(!text.contains("hubprobe_canary"), "no canary section");
    assert!(
        !text.contains("hubprobe_keepalive"),
        "no keep-alive section"
    );
}

#[test]
fn no_raw_newline_escapes_a_sample_line() {
    let text = render(&report(), None);
    for line in text.lines() {
        assert!(
            line.starts_with("# ") || line.starts_with("hubprobe_"),
            "a value split a line: {line:?}"
        );
    }
}

#[test]
fn the_canary_lists_every_cause_as_a_counter() {
    let mut r = report();
    r.canary = Some(canary());
    let text = render(&r, None);
    let m = parse(&text);
    assert_eq!(m[r#"hubprobe_canary_up{endpoint="mqtt-tls"}"#], 1.0);
    assert_eq!(
        m[r#"hubprobe_canary_keepalive_seconds{endpoint="mqtt-tls"}"#],
        240.0
    );
    assert_eq!(
        m[r#"hubprobe_canary_connected_since_timestamp_seconds{endpoint="mqtt-tls"}"#],
        1_795_662_000.0
    );
    assert_eq!(
        m[r#"hubprobe_canary_sessions_total{endpoint="mqtt-tls"}"#],
        7.0
    );
    for cause in DisconnectCause::ALL {
        let key = format!(
            r#"hubprobe_canary_disconnects_total{{endpoint="mqtt-tls",cause="{}"}}"#,
            cause.as_str()
        );
        let want = match cause {
            DisconnectCause::NoPingresp => 4.0,
            DisconnectCause::TokenRenewal => 2.0,
            _ => 0.0,
        };
        assert_eq!(m[&key], want, "{key}");
    }
    assert_eq!(
        m[r#"hubprobe_canary_disconnects_total{endpoint="mqtt-tls",cause="from_the_future"}"#],
        1.0
    );
    assert_eq!(
        m[r#"hubprobe_canary_diagnosis_info{endpoint="mqtt-tls",kind="idle_timeout",iothub_cause="2"}"#],
        1.0
    );
    assert!(text.contains("# TYPE hubprobe_canary_disconnects_total counter\n"));
}

#[test]
fn the_keepalive_recommendation_and_its_measurements() {
    let r = report();
    let k = keepalive("mqtt-tls", 210);
    let text = render(&r, Some(&k));
    let m = parse(&text);
    let e = r#"{endpoint="mqtt-tls"}"#;
    let get = |name: &str| m[&format!("{name}{e}")];
    assert_eq!(get("hubprobe_keepalive_recommended_seconds"), 210.0);
    assert_eq!(get("hubprobe_keepalive_spread_min_seconds"), 189.0);
    assert_eq!(get("hubprobe_keepalive_pingresp_timeout_seconds"), 10.0);
    assert_eq!(get("hubprobe_keepalive_tcp_user_timeout_seconds"), 220.0);
    assert_eq!(get("hubprobe_keepalive_confidence"), 1.0);
    assert_eq!(get("hubprobe_keepalive_bytes_per_day"), 105_326.0);
    assert_eq!(get("hubprobe_path_idle_timeout_seconds"), 240.0);
    assert_eq!(get("hubprobe_path_idle_survived_seconds"), 230.0);
    assert_eq!(get("hubprobe_path_idle_failed_seconds"), 250.0);
    assert_eq!(get("hubprobe_path_idle_inconsistent"), 0.0);
    assert_eq!(get("hubprobe_link_loss_ratio"), 0.05);
    assert_eq!(get("hubprobe_link_outages"), 2.0);
    assert_eq!(get("hubprobe_link_longest_outage_seconds"), 7.5);
    assert!(!text.contains("hubprobe_path_idle_no_drop_up_to_seconds"));
    assert_eq!(
        m[r#"hubprobe_keepalive_info{endpoint="mqtt-tls",mode="reflector",reflector="refl.example:7\"",confidence="medium",binding="k_nat"}"#],
        1.0
    );
    assert_eq!(
        m[r#"hubprobe_keepalive_limit_seconds{endpoint="mqtt-tls",limit="k_cap"}"#],
        1177.0
    );
    assert_eq!(
        m[r#"hubprobe_path_idle_drop_info{endpoint="mqtt-tls",kind="silent_drop"}"#],
        1.0
    );
    assert_eq!(
        m[r#"hubprobe_link_rtt_seconds{endpoint="mqtt-tls",group="cold",percentile="99"}"#],
        0.24
    );
    assert_eq!(
        m[r#"hubprobe_link_srtt_seconds{endpoint="mqtt-tls",group="warm"}"#],
        0.02
    );
    assert_eq!(
        m[r#"hubprobe_link_rto_seconds{endpoint="mqtt-tls",group="warm"}"#],
        1.0
    );
    assert_eq!(
        m[r#"hubprobe_link_probes{endpoint="mqtt-tls",result="lost"}"#],
        1.0
    );
}

#[test]
fn the_reports_own_keepalive_section_wins_over_the_argument() {
    let mut r = report();
    r.keepalive = Some(keepalive("mqtt-tls", 120));
    let text = render(&r, Some(&keepalive("mqtt-tls", 300)));
    let m = parse(&text);
    assert_eq!(
        m[r#"hubprobe_keepalive_recommended_seconds{endpoint="mqtt-tls"}"#],
        120.0
    );
    assert!(!text.contains(" 300\n"), "{text}");
}

#[test]
fn an_empty_report_is_still_valid_exposition() {
    let mut r = report();
    r.endpoints.clear();
    r.findings.clear();
    r.labels.clear();
    r.target.sas_token = None;
    r.finished_at = "not a time".into();
    let m = parse(&render(&r, None));
    assert!(m.contains_key("hubprobe_success"));
    assert!(!m.contains_key("hubprobe_finished_timestamp_seconds"));
}

#[test]
fn families_follow_the_metrics_table_order() {
    let mut r = report();
    r.canary = Some(canary());
    let text = render(&r, Some(&keepalive("mqtt-tls", 60)));
    let order: Vec<usize> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let name = l.split(' ').next().unwrap();
            METRICS.iter().position(|m| m.name == name).unwrap()
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted);
    assert!(order.len() > 40, "most families present: {}", order.len());
}

#[test]
fn every_metric_is_documented_and_names_are_unique() {
    let doc = include_str!("../../../docs/metrics.md");
    let mut names = HashSet::new();
    for m in METRICS {
        assert!(names.insert(m.name), "{} twice", m.name);
        assert!(
            doc.contains(&format!("`{}`", m.name)),
            "docs/metrics.md lacks {}",
            m.name
        );
        assert!(m.name.starts_with("hubprobe_"));
        assert!(!m.help.contains('\n') && !m.help.contains('\\'));
    }
}

#[test]
fn write_textfile_replaces_the_file_whole_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hubprobe.prom");
    write_textfile(&path, "a 1\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\n");
    write_textfile(&path, "b 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hubprobe.prom"]);
}

#[test]
fn write_textfile_into_a_missing_directory_fails_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("hubprobe.prom");
    let err = write_textfile(&path, "a 1\n").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(write_textfile(Path::new("/"), "x").is_err(), "no file name");
}
