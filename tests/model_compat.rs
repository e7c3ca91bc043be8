//! The typed report model reads and writes exactly what the report looked like before
//! evidence was typed: real reports captured from the previous build (a lab check of
//! every endpoint kind with its failures, one with an unknown CA, and a synthetic fleet
//! with canary sections) are read into the model and written back, field by field; the
//! text and Prometheus renderers, fed the same reports, print exactly what that build
//! printed for them.

use hubprobe::model::Report;
use hubprobe::report::{prometheus, text};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Reads `json` into the model and back; panics naming the first differing path.
fn round_trip(json: &str) -> Report {
    let before: Value = serde_json::from_str(json).expect("fixture is JSON");
    let report: Report = serde_json::from_str(json).expect("the model reads the old report");
    let after = serde_json::to_value(&report).expect("serializes");
    if let Some(path) = first_difference(&before, &after, String::new()) {
        panic!("the report differs at {path}");
    }
    report
}

fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (xa, yb) = (x.get(k), y.get(k));
                match (xa, yb) {
                    (Some(xa), Some(yb)) => {
                        if let Some(p) = first_difference(xa, yb, format!("{at}.{k}")) {
                            return Some(p);
                        }
                    }
                    _ => return Some(format!("{at}.{k} (present on one side only)")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at} (length {} vs {})", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (xa, yb))| first_difference(xa, yb, format!("{at}[{i}]")))
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}

#[test]
fn lab_check_reports_keep_every_field() {
    for name in [
        "check-before-typed-model.json",
        "check-unknown-ca-before-typed-model.json",
        "check-prometheus-before-typed-model.json",
    ] {
        let r = round_trip(&fixture(name));
        // The fixtures really carry evidence of every phase kind.
        let phases: std::collections::BTreeSet<_> = r
            .endpoints
            .iter()
            .flat_map(|e| &e.phases)
            .filter(|p| p.evidence.is_some())
            .map(|p| p.phase.as_str())
            .collect();
        assert!(phases.len() >= 5, "{name}: {phases:?}");
    }
}

#[test]
fn synthetic_fleet_reports_keep_every_field() {
    let text = fixture("reports-before-typed-model.ndjson");
    let mut canaries = 0;
    for line in text.lines() {
        let r = round_trip(line);
        canaries += usize::from(r.canary.is_some());
    }
    assert!(canaries > 0, "the fixture holds canary sections");
}

#[test]
fn text_renders_as_before() {
    for (json, txt, verbose) in [
        (
            "check-before-typed-model.json",
            "check-before-typed-model.txt",
            0,
        ),
        (
            "check-unknown-ca-before-typed-model.json",
            "check-unknown-ca-before-typed-model.txt",
            1,
        ),
    ] {
        let report: Report = serde_json::from_str(&fixture(json)).unwrap();
        let opts = text::TextOptions {
            color: false,
            verbose,
        };
        assert_eq!(text::render(&report, opts), fixture(txt), "{json}");
    }
}

#[test]
fn prometheus_renders_as_before() {
    let report: Report =
        serde_json::from_str(&fixture("check-prometheus-before-typed-model.json")).unwrap();
    assert_eq!(
        prometheus::render(&report, None),
        fixture("check-prometheus-before-typed-model.prom")
    );
}
