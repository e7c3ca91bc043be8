//! Bad input gets one clear message and exit code 3 (UNKNOWN), loses nothing and
//! leaks no secret; the small commands (sas-token, schema, profiles) do what they say.

mod support;

use std::time::Duration;

use support::{run, run_with_env};

const KEY: &str = "c2VjcmV0LWtleS0xMjM0NTY3ODkwYWJjZGVmZ2hpams=";

fn assert_usage_error(out: &support::Run, needle: &str) {
    assert_eq!(out.code, 3, "exit 3 expected: {}", out.all_output());
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    assert!(
        out.stderr.contains(needle),
        "stderr should say {needle:?}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn wrong_flags_and_values_exit_3() {
    assert_usage_error(
        &run(&["check", "h.example.test", "--bogus"]),
        "unexpected argument",
    );
    assert_usage_error(
        &run(&["check", "h.example.test", "--timeout", "soon"]),
        "not a duration",
    );
    assert_usage_error(
        &run(&["check", "h.example.test", "--timeout", "0s"]),
        "above zero",
    );
    assert_usage_error(
        &run(&["check", "h.example.test", "-o", "xml"]),
        "invalid value",
    );
    assert_usage_error(&run(&["check", "h.example.test", "--pings", "99"]), "99");
    assert_usage_error(
        &run(&["check", "h.example.test", "--cert", "c.pem"]),
        "--key",
    );
    assert_usage_error(&run(&["frobnicate"]), "unrecognized subcommand");
    let none = run(&[]);
    assert_eq!(none.code, 3, "{}", none.all_output());
}

#[test]
fn help_and_version_exit_0() {
    let help = run(&["check", "--help"]);
    assert_eq!(help.code, 0);
    for flag in [
        "--profile",
        "--endpoint",
        "--port",
        "--dns-server",
        "--interface",
        "--source-ip",
        "--ca-file",
        "--timeout",
        "--deadline",
        "--connection-string",
        "--sas-token",
        "--cert",
        "--key",
    ] {
        assert!(help.stdout.contains(flag), "--help lacks {flag}");
    }
    let version = run(&["--version"]);
    assert_eq!(version.code, 0);
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_never_shows_secret_environment_values() {
    let cs = format!("HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={KEY}");
    let out = run_with_env(
        &["check", "--help"],
        &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, 0);
    assert!(!out.all_output().contains(KEY));
}

#[test]
fn malformed_connection_strings_are_named_not_echoed() {
    for (cs, needle) in [
        (
            "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=not*base64*SECRETISH"
                .to_string(),
            "not valid base64",
        ),
        (
            format!("DeviceId=d;SharedAccessKey={KEY}"),
            "HostName is missing",
        ),
        (
            format!("HostName=h;DeviceId=d;SharedAccessKey={KEY};Extra=1"),
            "part 4 has an unknown key",
        ),
        // A pasted key alone: its '=' padding makes it look like key=value.
        (KEY.to_string(), "part 1 has an unknown key"),
        (
            "HostName=h;DeviceId=d;SharedAccessKey".to_string(),
            "not Key=Value",
        ),
    ] {
        let out = run_with_env(
            &["check", "-o", "json"],
            &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
            Duration::from_secs(10),
        );
        assert_usage_error(&out, needle);
        assert!(
            !out.all_output().contains(KEY) && !out.all_output().contains("SECRETISH"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn unknown_endpoints_ports_and_profiles_exit_3() {
    let out = run(&[
        "check",
        "h.azure-devices.net",
        "--endpoint",
        "mqtt-tls,nope",
    ]);
    assert_usage_error(&out, "no endpoint \"nope\"");
    assert!(
        out.stderr.contains("mqtt-ws"),
        "lists the endpoints it has: {}",
        out.stderr
    );
    assert_usage_error(
        &run(&["check", "h.azure-devices.net", "--port", "mqtt-tls=0"]),
        "ENDPOINT=PORT",
    );
    assert_usage_error(
        &run(&["check", "h.azure-devices.net", "--port", "mqtt-tls"]),
        "ENDPOINT=PORT",
    );
    assert_usage_error(
        &run(&["check", "h.azure-devices.net", "--port", "amqp=1"]),
        "no endpoint \"amqp\"",
    );
    assert_usage_error(
        &run(&["check", "h.example.test", "--profile", "nope"]),
        "unknown profile",
    );
    assert_usage_error(
        &run(&[
            "check",
            "h.example.test",
            "--profile",
            "/nonexistent/p.toml",
        ]),
        "cannot read profile file",
    );
    assert_usage_error(
        &run(&["check", "h.example.test", "--dns-server", "dns.example"]),
        "--dns-server",
    );
    assert_usage_error(&run(&["check", "not a host"]), "not a valid host name");
    assert_usage_error(&run(&["check"]), "no hub host");
    assert_usage_error(
        &run(&[
            "check",
            "h.example.test",
            "--ca-file",
            "/nonexistent/ca.pem",
        ]),
        "/nonexistent/ca.pem",
    );
}

#[test]
fn a_profile_with_a_typo_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/probes/mqtt-broker.toml"
    ))
    .unwrap()
    .replace("keepalive_max", "keepalive_maximum");
    std::fs::write(&path, text).unwrap();
    let out = run(&[
        "check",
        "h.example.test",
        "--profile",
        path.to_str().unwrap(),
    ]);
    assert_usage_error(&out, "keepalive_maximum");
}

#[test]
fn unwritable_report_file_fails_before_probing_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: no user, root included, can write below it.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let target = blocker.join("report.json");
    let out = run(&[
        "check",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--report-file",
        target.to_str().unwrap(),
    ]);
    assert_usage_error(&out, "cannot write the report");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "fails before any probe: {:?}",
        out.elapsed
    );

    let missing = dir.path().join("missing/report.json");
    let out = run(&[
        "check",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--report-file",
        missing.to_str().unwrap(),
    ]);
    assert_usage_error(&out, "cannot write the report");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the blocker file remains");
}

#[test]
fn report_file_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.json");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("mqtt={}", listener.local_addr().unwrap().port());
    drop(listener);
    let out = run(&[
        "check",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &port,
        "--report-file",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.all_output());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    support::assert_valid(&report);
    assert_eq!(report["endpoints"][0]["phases"][1]["class"], "tcp.refused");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["report.json"], "no temporary file left behind");
}

#[test]
fn sas_token_command_matches_the_reference() {
    let cs = format!("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY}");
    let out = run_with_env(
        &["sas-token", "--expiry", "1900000000"],
        &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(
        out.stdout.trim(),
        "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=tKCRwQzBysUph5v0OdvwNUZHHOE3DVZwAjk%2FjH227n4%3D&se=1900000000"
    );
    assert!(out.stderr.is_empty());

    let out = run(&["sas-token"]);
    assert_usage_error(&out, "no connection string");
    let x509 = "HostName=h.azure-devices.net;DeviceId=d;x509=true";
    let out = run_with_env(
        &["sas-token"],
        &[("IOTHUB_DEVICE_CONNECTION_STRING", x509)],
        Duration::from_secs(10),
    );
    assert_usage_error(&out, "no SharedAccessKey");
}

#[test]
fn schema_command_prints_the_shipped_schema() {
    let out = run(&["schema"]);
    assert_eq!(out.code, 0);
    let printed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/report.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, shipped);
    assert!(jsonschema::validator_for(&printed).is_ok());
}

#[test]
fn profiles_command_lists_and_prints() {
    let out = run(&["profiles"]);
    assert_eq!(out.code, 0);
    for name in ["azure-iot-hub", "aws-iot-core", "mqtt-broker"] {
        assert!(out.stdout.contains(name), "{}", out.stdout);
    }
    let out = run(&["profiles", "azure-iot-hub"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("/$iothub/websocket"));
    let out = run(&[
        "profiles",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab-hub.toml"),
    ]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(out.stdout.contains("hubprobe Test Root CA"));
}

#[test]
fn command_line_credentials_win_over_the_environment() {
    // A connection string in the environment and a token on the command line: the
    // command line is used, no conflict (the probe targets a refused port: no network).
    let cs = format!("HostName=h.azure-devices.net;DeviceId=envdev;SharedAccessKey={KEY}");
    let token =
        "SharedAccessSignature sr=h.azure-devices.net%2Fdevices%2Fclidev&sig=abc&se=4102444800";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("mqtt-tls={}", listener.local_addr().unwrap().port());
    drop(listener);
    let out = run_with_env(
        &[
            "check",
            "127.0.0.1",
            "--profile",
            "azure-iot-hub",
            "--endpoint",
            "mqtt-tls",
            "--port",
            &port,
            "--sas-token",
            token,
            "-o",
            "json",
        ],
        &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
        Duration::from_secs(30),
    );
    let report = out.report();
    assert_eq!(
        report["target"]["auth"],
        "sas-token",
        "{}",
        out.all_output()
    );
    assert_eq!(report["target"]["device_id"], "clidev");

    // Both in the environment, nothing on the command line: ambiguous, exit 3.
    let out = run_with_env(
        &["check", "127.0.0.1"],
        &[
            ("IOTHUB_DEVICE_CONNECTION_STRING", &cs),
            ("HUBPROBE_SAS_TOKEN", token),
        ],
        Duration::from_secs(10),
    );
    assert_usage_error(&out, "give only one of");
    // Two on the command line: exit 3.
    let out = run(&[
        "check",
        "127.0.0.1",
        "--sas-token",
        token,
        "--username",
        "u",
    ]);
    assert_usage_error(&out, "give only one of");
}

#[test]
fn options_that_cannot_work_are_refused() {
    let x509 = "HostName=h.azure-devices.net;DeviceId=d;x509=true";
    let out = run_with_env(
        &["check"],
        &[("IOTHUB_DEVICE_CONNECTION_STRING", x509)],
        Duration::from_secs(10),
    );
    assert_usage_error(&out, "x509=true");
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--device-id", "d"]),
        "--device-id goes with a credential",
    );
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--password-file", "/tmp/x"]),
        "--username",
    );
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--keepalive", "500ms"]),
        "at least 1s",
    );
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--interface", "nosuchif0"]),
        "no such network interface",
    );
    assert_usage_error(
        &run(&[
            "check",
            "127.0.0.1",
            "--sas-token",
            "SharedAccessSignature sr=h&sig=x&se=1",
        ]),
        "no device id",
    );
}

#[test]
fn absurd_durations_and_times_are_errors_not_panics() {
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--deadline", "300000000000y"]),
        "",
    );
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--deadline", "2d"]),
        "--deadline",
    );
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--timeout", "2h"]),
        "--timeout",
    );
    let cs = format!("HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={KEY}");
    let env = [("IOTHUB_DEVICE_CONNECTION_STRING", cs.as_str())];
    let out = run_with_env(
        &["check", "127.0.0.1", "--sas-expiry", "253402300800"],
        &env,
        Duration::from_secs(10),
    );
    assert_usage_error(&out, "--sas-expiry");
    let out = run_with_env(
        &["check", "127.0.0.1", "--sas-ttl", "18446744073709551615s"],
        &env,
        Duration::from_secs(10),
    );
    assert_usage_error(&out, "");
    let out = run_with_env(
        &["sas-token", "--ttl", "500000y"],
        &env,
        Duration::from_secs(10),
    );
    assert_usage_error(&out, "9999");
    // A token that claims an expiry far in the future is reported, clamped, not a crash.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("mqtt-tls={}", listener.local_addr().unwrap().port());
    drop(listener);
    let token =
        "SharedAccessSignature sr=h.azure-devices.net%2Fdevices%2Fd&sig=abc&se=99999999999999";
    let out = run(&[
        "check",
        "127.0.0.1",
        "--profile",
        "azure-iot-hub",
        "--endpoint",
        "mqtt-tls",
        "--port",
        &port,
        "--sas-token",
        token,
        "-o",
        "json",
    ]);
    let report = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert!(report["target"]["sas_token"]["expires_at"]
        .as_str()
        .unwrap()
        .starts_with("9999-12-31"));
}

#[test]
fn labels_go_into_the_report_and_bad_ones_exit_3() {
    // A refused loopback port: the run is quick and still makes a report.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = format!("mqtt={port}");
    let out = run(&[
        "check",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &p,
        "--label",
        "site=berlin-3",
        "--label",
        "network.type=lte",
        "-o",
        "json",
    ]);
    assert_eq!(out.code, 2, "{}", out.all_output());
    let r = out.report();
    assert_eq!(r["labels"]["site"], "berlin-3");
    assert_eq!(r["labels"]["network.type"], "lte");
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--label", "no-equals-sign"]),
        "expected KEY=VALUE",
    );
    assert_usage_error(
        &run(&["check", "127.0.0.1", "--label", "bad key=x"]),
        "label key",
    );
}

/// Every argument of every (sub)command: (`hubprobe SUB …`, the argument).
fn all_args() -> Vec<(String, clap::Arg)> {
    use clap::CommandFactory as _;
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut cmd = hubprobe::cli::Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, "hubprobe", &mut out);
    out
}

/// Whether `value` gets through the argument's own value parser.
fn accepts(arg: &clap::Arg, value: &str) -> bool {
    let probe = clap::Command::new("probe").no_binary_name(true).arg(
        clap::Arg::new("x")
            .long("x")
            .action(clap::ArgAction::Set)
            .value_parser(arg.get_value_parser().clone()),
    );
    probe.try_get_matches_from(["--x", value]).is_ok()
}

/// A duration option is found by what it parses, not by its name or text: it takes
/// "90s" and "1h 30m" and refuses "banana". Its help (short and long) must say what a
/// value looks like, so a new duration option without it fails here.
#[test]
fn every_duration_option_says_its_format() {
    const FORMAT: &str = "a duration like 30s, 5m, 1h";
    let mut durations = Vec::new();
    for (path, arg) in all_args() {
        if !arg.get_action().takes_values() {
            continue;
        }
        if !(accepts(&arg, "90s") && accepts(&arg, "1h 30m") && !accepts(&arg, "banana")) {
            continue;
        }
        let name = format!(
            "{path} --{}",
            arg.get_long().unwrap_or(arg.get_id().as_str())
        );
        for help in [arg.get_help(), arg.get_long_help()].into_iter().flatten() {
            assert!(
                help.to_string().to_lowercase().contains(FORMAT),
                "{name}: the help should say {FORMAT:?}: {help}"
            );
        }
        assert!(arg.get_help().is_some(), "{name} has no help");
        assert_eq!(
            arg.get_value_names().map(|v| v[0].as_str()),
            Some("DURATION"),
            "{name}: the value name"
        );
        durations.push(name);
    }
    // The detection itself: known duration options are found, others are not.
    for known in [
        "hubprobe check --timeout",
        "hubprobe check --deadline",
        "hubprobe agent --spread",
        "hubprobe tune --operator-floor",
        "hubprobe sas-token --ttl",
    ] {
        assert!(
            durations.iter().any(|d| d == known),
            "{known} not found: {durations:?}"
        );
    }
    for not in [
        "hubprobe check --pings",
        "hubprobe check --profile",
        "hubprobe check --label",
    ] {
        assert!(!durations.iter().any(|d| d == not), "{not} is no duration");
    }
    eprintln!("{} duration options", durations.len());
}

/// clap writes `[env: NAME=]` for an unset variable and `[env: NAME=value]` for a set
/// one unless the argument hides values: every argument with a variable hides it, and
/// the rendered help of every (sub)command reads `[env: NAME]` whether the variable is
/// set or not, never showing its value.
#[test]
fn environment_hints_read_cleanly_and_never_show_values() {
    use clap::CommandFactory as _;
    let mut envs = Vec::new();
    for (path, arg) in all_args() {
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy().into_owned();
            assert!(
                arg.is_hide_env_values_set(),
                "{path} --{}: hide_env_values",
                arg.get_id()
            );
            envs.push((path, env));
        }
    }
    assert!(envs.len() >= 6, "{envs:?}");

    const SENTINEL: &str = "/sentinel-value-xyzzy";
    let set: Vec<(&str, &str)> = envs.iter().map(|(_, e)| (e.as_str(), SENTINEL)).collect();
    let mut paths: Vec<Vec<String>> = Vec::new();
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    walk(&hubprobe::cli::Cli::command(), Vec::new(), &mut paths);
    for path in paths
        .iter()
        .filter(|p| p.last().is_none_or(|l| l != "help"))
    {
        for env in [&[][..], &set[..]] {
            for flag in ["-h", "--help"] {
                let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
                args.push(flag);
                let out = run_with_env(&args, env, Duration::from_secs(30));
                assert_eq!(out.code, 0, "{args:?}: {}", out.all_output());
                let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
                assert!(!text.contains("=]"), "{args:?} has a dangling '=': {text}");
                assert!(!text.contains(SENTINEL), "{args:?} shows a value: {text}");
                let here = format!("hubprobe {}", path.join(" "));
                for (p, name) in &envs {
                    if p.trim() == here.trim() {
                        assert!(
                            text.contains(&format!("[env: {name}]")),
                            "{args:?} should say [env: {name}]: {text}"
                        );
                    }
                }
            }
        }
    }
}

/// The help names the paths a packaged install has, not the source tree's.
#[test]
fn help_names_installed_paths_not_the_source_tree() {
    let out = run(&["agent", "--help"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("/etc/hubprobe/config.toml"),
        "{}",
        out.stdout
    );
    for (path, arg) in all_args() {
        for help in [arg.get_help(), arg.get_long_help()].into_iter().flatten() {
            let help = help.to_string();
            for tree in ["packaging/", "docs/", "probes/", "src/", "tests/"] {
                assert!(
                    !help.contains(tree)
                        || help.contains(&format!("/usr/share/doc/hubprobe/{tree}")),
                    "{path} --{}: names a source-tree path ({tree}): {help}",
                    arg.get_id()
                );
            }
        }
        for value in arg.get_possible_values() {
            if let Some(help) = value.get_help() {
                assert!(!help.to_string().contains("docs/"), "{path}: {help}");
            }
        }
    }
}
