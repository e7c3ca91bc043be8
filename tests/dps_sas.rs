//! DPS SAS tokens: `hubprobe sas-token --dps` against the Azure IoT device SDK for
//! Python (`azure-iot-device`, in target/fleet-venv, or the Python named by
//! HUBPROBE_FLEET_PYTHON) with the clock fixed, for individual and
//! enrollment-group keys; and the key never shows in an error.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

const KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const GROUP_KEY: &str = "Z3JvdXAta2V5LW9mLXRoZS1sYWItZW5yb2xsbWVudC0xMjM0NTY3ODkwYWJjZGVmZ2hpams=";

fn python() -> PathBuf {
    let p = std::env::var_os("HUBPROBE_FLEET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fleet-venv/bin/python")
        });
    let ok = Command::new(&p)
        .args(["-c", "import azure.iot.device"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import azure.iot.device: scripts/test.sh installs azure-iot-device in target/fleet-venv (or set HUBPROBE_FLEET_PYTHON)",
        p.display()
    );
    p
}

fn hubprobe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hubprobe"));
    c.args(args)
        .env_remove("PROVISIONING_SYMMETRIC_KEY")
        .env_remove("PROVISIONING_IDSCOPE")
        .env_remove("PROVISIONING_REGISTRATION_ID")
        .env_remove("IOTHUB_DEVICE_CONNECTION_STRING");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run hubprobe")
}

#[test]
fn dps_tokens_equal_the_python_sdks() {
    let cases = [
        ("0ne00000001", "dev1", KEY, false, 1_900_000_000u64),
        (
            "0ne00ABCDEF",
            "sensor-42.line_3:a",
            KEY,
            false,
            4_102_444_800,
        ),
        ("0ne00000001", "dev1", GROUP_KEY, true, 1_900_000_000),
        (
            "0ne0009F00D",
            "group-member-7",
            GROUP_KEY,
            true,
            1_700_000_123,
        ),
    ];
    let input: Vec<_> = cases
        .iter()
        .map(|(s, r, k, g, e)| {
            json!({"id_scope": s, "registration_id": r, "key": k, "group": g, "expiry": e})
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dps_sdk_tokens.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(serde_json::to_string(&input).unwrap())
        .output()
        .expect("run the SDK script");
    assert!(
        out.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sdk: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(sdk.len(), cases.len());
    let dir = tempfile::tempdir().unwrap();
    for (i, ((scope, reg, key, group, expiry), want)) in cases.iter().zip(&sdk).enumerate() {
        let expiry = expiry.to_string();
        let mut args = vec![
            "sas-token",
            "--dps",
            "--id-scope",
            scope,
            "--registration-id",
            reg,
            "--expiry",
            &expiry,
        ];
        if *group {
            args.push("--enrollment-group");
        }
        // Every other case reads the key from a file, the rest from the environment.
        let key_file = dir.path().join(format!("key{i}"));
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let key_path = key_file.to_str().unwrap().to_string();
        let out = if i % 2 == 0 {
            args.extend(["--symmetric-key-file", &key_path]);
            hubprobe(&args, &[])
        } else {
            hubprobe(&args, &[("PROVISIONING_SYMMETRIC_KEY", key)])
        };
        assert!(
            out.status.success(),
            "case {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = String::from_utf8(out.stdout).unwrap().trim().to_string();
        // The SDK for Python leaves out the key name; DPS documents skn=registration
        // (and the C, Node and .NET SDKs send it). The key name is not signed.
        assert_eq!(ours, format!("{want}&skn=registration"), "case {i}");
        assert!(ours.contains(&format!("se={expiry}")));
        assert!(!ours.contains(key), "case {i}: the key is in the token");
    }
    // The group's key and the device key it derives sign differently.
    assert_ne!(sdk[0], sdk[2]);
}

#[test]
fn env_names_and_bad_keys_are_clear_errors_without_the_key() {
    let ok = hubprobe(
        &["sas-token", "--dps", "--expiry", "1900000000"],
        &[
            ("PROVISIONING_IDSCOPE", "0ne00000001"),
            ("PROVISIONING_REGISTRATION_ID", "dev1"),
            ("PROVISIONING_SYMMETRIC_KEY", KEY),
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout)
        .starts_with("SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdev1&sig="));

    let bad_key = "this is not base64 but a secret!";
    for (args, env, want) in [
        (
            vec![
                "sas-token",
                "--dps",
                "--id-scope",
                "0ne1",
                "--registration-id",
                "dev1",
            ],
            vec![("PROVISIONING_SYMMETRIC_KEY", bad_key)],
            "not valid base64",
        ),
        (
            vec![
                "sas-token",
                "--dps",
                "--id-scope",
                "0ne1",
                "--registration-id",
                "dev1",
                "--enrollment-group",
            ],
            vec![("PROVISIONING_SYMMETRIC_KEY", bad_key)],
            "not valid base64",
        ),
        (
            vec!["sas-token", "--dps", "--registration-id", "dev1"],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "id scope",
        ),
        (
            vec![
                "sas-token",
                "--dps",
                "--id-scope",
                "0ne1",
                "--registration-id",
                "bad id!",
            ],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "registration id",
        ),
        (
            vec![
                "sas-token",
                "--dps",
                "--id-scope",
                "0ne1",
                "--registration-id",
                "dev1",
            ],
            vec![],
            "PROVISIONING_SYMMETRIC_KEY",
        ),
    ] {
        let out = hubprobe(&args, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains(bad_key) && !err.contains(KEY),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
