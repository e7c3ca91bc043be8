//! The fleet summary's JSON Schema (docs/fleet.schema.json, `hubprobe.fleet/1`):
//! `hubprobe fleet schema` prints it, and real summaries of every kind (incident
//! windows and groups, bad and hostile lines, clock problems, completed disconnect
//! records, an empty input) validate against it.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fleet.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("the shipped fleet schema compiles")
}

fn violations(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

/// `fleet summarize ARGS -o json`, validated.
fn summary(v: &jsonschema::Validator, args: &[&str]) -> Value {
    let mut all = vec!["fleet", "summarize"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let run = support::run_with_env(&all, &[], Duration::from_secs(120));
    assert!(run.code == 0 || run.code == 1, "{args:?}: {}", run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let errors = violations(v, &doc);
    assert!(
        errors.is_empty(),
        "{args:?}: the summary violates docs/fleet.schema.json:\n{}",
        errors.join("\n")
    );
    assert_eq!(doc["schema"], "hubprobe.fleet/1");
    doc
}

#[test]
fn fleet_schema_prints_the_shipped_schema() {
    let run = support::run(&["fleet", "schema"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(printed, schema());
    assert_eq!(printed["properties"]["schema"]["const"], "hubprobe.fleet/1");
    validator();
}

#[test]
fn real_summaries_of_every_kind_validate() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();

    // A fleet with every pattern: failure classes, groups, an incident window.
    let fleet = d("fleet.ndjson.gz");
    let run = support::run(&[
        "fleet",
        "synth",
        "--devices",
        "80",
        "--duration",
        "8h",
        "--patterns",
        "--repeat-share",
        "0.02",
        "-O",
        &fleet,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = summary(&v, &[&fleet, "--by", "label.site"]);
    assert!(!s["incidents"]["windows"].as_array().unwrap().is_empty());
    assert!(!s["groups"].as_array().unwrap().is_empty());
    assert!(s["input"]["duplicates"].as_u64().unwrap() > 0);

    // Bad and hostile lines, clock problems, completed disconnect records, a
    // directory with a file that is not read.
    let report = |id: &str, at: &str, recent: Value| {
        json!({"schema": "hubprobe.report/1", "id": id, "kind": "check", "host": "h",
               "started_at": at, "target": {"device_id": "dev-1"}, "verdict": "warning",
               "endpoints": [], "canary": {"recent": recent}})
        .to_string()
    };
    let open = json!({"id": "x", "at_unix_ms": 1_795_651_300_000u64, "cause": "tcp_reset"});
    let mut done = open.clone();
    done["reconnect_s"] = json!(12.5);
    done["failed_attempts"] = json!(2);
    let lines = [
        report("a", "2026-11-26T00:05:00Z", json!([open])),
        report("b", "2026-11-26T00:20:00Z", json!([done])),
        report(
            "c",
            "2200-01-01T00:00:00Z",
            json!([{"at_unix_ms": u64::MAX, "cause": "io_error"}]),
        ),
        "{not json".to_string(),
        json!({"hello": 1}).to_string(),
        json!({"schema": "hubprobe.report/7"}).to_string(),
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
        String::new(),
    ];
    let sub = dir.path().join("in");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("a.ndjson"), lines.join("\n")).unwrap();
    std::fs::write(sub.join("notes.txt"), "not a report").unwrap();
    let s = summary(&v, &[sub.to_str().unwrap()]);
    assert_eq!(s["input"]["malformed"], 2);
    assert_eq!(s["input"]["implausible_times"]["reports"], 1);
    let reset = s["overall"]["disconnects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cause"] == "tcp_reset")
        .unwrap();
    assert_eq!(
        (&reset["events"], &reset["reconnected"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(s["input"]["files_skipped"].as_array().unwrap().len(), 1);

    // Nothing usable at all: no span, no timeline.
    let empty = d("empty.ndjson");
    std::fs::write(&empty, "\n\n").unwrap();
    let s = summary(&v, &[&empty]);
    assert_eq!(s["span"], Value::Null);

    // The validator is not a formality: drift in the document is caught.
    let mut bad = s.clone();
    bad["input"]["surprise"] = json!(1);
    assert!(!violations(&v, &bad).is_empty());
    let mut bad = s.clone();
    bad["devices"] = json!(-1);
    assert!(!violations(&v, &bad).is_empty());
    let mut bad = s;
    bad["schema"] = json!("hubprobe.fleet/2");
    assert!(!violations(&v, &bad).is_empty());
}
