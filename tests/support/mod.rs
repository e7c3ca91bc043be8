//! Running the real `hubprobe` binary in tests: bounded in time, output captured,
//! every JSON report validated against the shipped JSON Schema.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hubprobe")
}

/// What one run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The stdout parsed as a JSON report, validated against docs/report.schema.json.
    pub fn report(&self) -> Value {
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        });
        assert_valid(&v);
        v
    }

    /// Everything the process printed.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs hubprobe with `args` and extra environment, killed after `limit`.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    run_cmd(Command::new(bin()).args(args), env, limit)
}

/// Runs hubprobe with `args`, killed after 60 s.
pub fn run(args: &[&str]) -> Run {
    run_with_env(args, &[], Duration::from_secs(60))
}

/// Runs a prepared command (e.g. `ip netns exec NS hubprobe ...`).
pub fn run_cmd(cmd: &mut Command, env: &[(&str, &str)], limit: Duration) -> Run {
    cmd.env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
        .env_remove("HUBPROBE_SAS_TOKEN")
        .env_remove("HUBPROBE_PROFILE")
        .env_remove("HUBPROBE_MQTT_PASSWORD")
        .env_remove("RUST_LOG")
        // The machine's own proxy settings never leak into a test run.
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("HUBPROBE_PROXY_PASSWORD")
        .env("NO_COLOR", "1")
        // Test traffic stays on this machine: no clock check against a public
        // NTP server unless a test names one (tests/clock.rs does).
        .env("HUBPROBE_NTP_SERVER", "none");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hubprobe");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hubprobe {:?} did not finish within {limit:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        elapsed,
    }
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the shipped schema compiles")
    })
}

/// Panics with every violation when `report` does not match the shipped schema.
pub fn assert_valid(report: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "report violates the schema:\n{}\n{report:#}",
        errors.join("\n")
    );
}

/// The endpoint named `name` in a report.
pub fn endpoint<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {report:#}"))
}

/// The phase `phase` of endpoint `name`.
pub fn phase<'a>(report: &'a Value, name: &str, phase: &str) -> &'a Value {
    endpoint(report, name)["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == phase)
        .unwrap_or_else(|| panic!("no phase {phase} in endpoint {name}: {report:#}"))
}

/// `(status, class)` of a phase, for compact assertions.
pub fn outcome(report: &Value, name: &str, ph: &str) -> (String, String) {
    let p = phase(report, name, ph);
    (
        p["status"].as_str().unwrap_or("").to_string(),
        p["class"].as_str().unwrap_or("").to_string(),
    )
}

/// The finding with `code`, if any.
pub fn finding<'a>(report: &'a Value, code: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
}

/// The lab profile file.
pub fn lab_profile() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lab-hub.toml")
        .display()
        .to_string()
}
