//! A string the MQTT CONNECT would carry above 65 535 bytes (its length prefix is
//! 16 bits) is refused at input with exit 3, whichever input it comes from: a
//! device or module id, a user name, a password, a SAS token, or what the
//! profile's templates build from them. The message names the string and its
//! length, never its value.

mod common;
mod support;

use std::time::Duration;

use common::certs::Certs;
use support::{run_with_env, Run};

const KEY: &str = "c2VjcmV0LWtleS0xMjM0NTY3ODkwYWJjZGVmZ2hpams=";
// Loopback, so that a build which does not refuse only ever talks to 127.0.0.1.
const HUB: &str = "127.0.0.1";

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    // Bounded even on a build that does not refuse (it would try the network).
    let mut all = args.to_vec();
    all.extend(["--timeout", "2s", "--deadline", "5s", "-o", "json"]);
    run_with_env(&all, env, Duration::from_secs(60))
}

fn assert_refused(out: &Run, what: &str, len: usize, marker: &str) {
    assert_eq!(out.code, 3, "{what}: exit 3 expected: {}", out.all_output());
    assert!(out.stdout.is_empty(), "{what}: {}", out.stdout);
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    assert!(err.contains(what), "{what}: names the string: {err}");
    assert!(err.contains(&len.to_string()), "{what}: says {len}: {err}");
    assert!(err.contains("65535"), "{what}: gives the limit: {err}");
    assert!(!err.contains(marker), "{what}: never the value: {err}");
    assert!(!err.contains(KEY), "{what}: never the key: {err}");
}

#[test]
fn over_long_identity_strings_are_refused_at_input() {
    let long_id = format!("IDMARK{}", "d".repeat(69_994));
    let cs = format!("HostName={HUB};DeviceId={long_id};SharedAccessKey={KEY}");
    let out = run(&["check", "--connection-string", &cs], &[]);
    assert_refused(&out, "the device id", 70_000, "IDMARK");
    assert!(out.stderr.contains("128 characters"), "{}", out.stderr);

    let cs = format!("HostName={HUB};DeviceId=d1;ModuleId={long_id};SharedAccessKey={KEY}");
    let out = run(&["check", "--connection-string", &cs], &[]);
    assert_refused(&out, "the module id", 70_000, "IDMARK");

    let certs = Certs::generate();
    let out = run(
        &[
            "check",
            HUB,
            "--cert",
            certs.client.cert_pem.to_str().unwrap(),
            "--key",
            certs.client.key_pem.to_str().unwrap(),
            "--device-id",
            &long_id,
        ],
        &[],
    );
    assert_refused(&out, "the device id", 70_000, "IDMARK");

    let user = format!("USERMARK{}", "u".repeat(69_992));
    let out = run(&["check", "127.0.0.1", "--username", &user], &[]);
    assert_refused(&out, "--username", 70_000, "USERMARK");
}

#[test]
fn over_long_passwords_and_tokens_are_refused_and_never_shown() {
    let secret = format!("PWMARK{}", "p".repeat(69_994));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, &secret).unwrap();
    let out = run(
        &[
            "check",
            "127.0.0.1",
            "--username",
            "u",
            "--password-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_refused(&out, "the MQTT password", 70_000, "PWMARK");

    let out = run(
        &["check", "127.0.0.1", "--username", "u"],
        &[("HUBPROBE_MQTT_PASSWORD", &secret)],
    );
    assert_refused(&out, "the MQTT password", 70_000, "PWMARK");

    let sig = format!("SIGMARK{}", "A".repeat(69_000));
    let token = format!("SharedAccessSignature sr={HUB}%2Fdevices%2Fd1&sig={sig}&se=4102444800");
    let out = run(&["check", "--sas-token", &token], &[]);
    assert_refused(&out, "the SAS token", token.len(), "SIGMARK");
}

#[test]
fn strings_built_by_the_templates_are_checked_too() {
    // The device id fits, but the user name `{host}/{device_id}/?api-version=...`
    // does not.
    let id = "d".repeat(65_520);
    let cs = format!("HostName={HUB};DeviceId={id};SharedAccessKey={KEY}");
    let out = run(&["check", "--connection-string", &cs], &[]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(
        out.stderr.contains("the MQTT user name") && out.stderr.contains("65535"),
        "{}",
        out.stderr
    );

    // The device id, client id and user name fit, but the SAS token generated for
    // it does not: the resource in it is URL-encoded ('/' becomes "%2F").
    let id = "/".repeat(30_000);
    let cs = format!("HostName={HUB};DeviceId={id};SharedAccessKey={KEY}");
    let out = run(&["check", "--connection-string", &cs], &[]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(
        out.stderr
            .contains("the MQTT password (the SAS token generated"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("sig="), "{}", out.stderr);

    // At the limit itself nothing is refused at input: a 128-character id is fine.
    let cs = format!(
        "HostName=127.0.0.1;DeviceId={};SharedAccessKey={KEY}",
        "d".repeat(128)
    );
    let out = run(
        &[
            "check",
            "--connection-string",
            &cs,
            "--profile",
            "mqtt-broker",
        ],
        &[],
    );
    assert_ne!(out.code, 3, "{}", out.all_output());
}
