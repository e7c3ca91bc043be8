//! `fleet summarize` shows its progress (bytes read of the total, reports/s) on
//! stderr when stderr is a terminal, and nothing otherwise or under `--quiet`; the
//! summary on stdout is the same either way. The terminal is a real pty, made by
//! `script` (util-linux; Debian package bsdutils, listed in scripts/test.sh).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn synth(path: &Path) {
    let run = support::run(&[
        "fleet",
        "synth",
        "--devices",
        "30",
        "--duration",
        "4h",
        "-O",
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// Runs `sh -c CMD` with stderr on a pty (stdout redirected inside `cmd`);
/// returns what the pty showed.
fn on_a_terminal(cmd: &str) -> String {
    let found = Command::new("script").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "`script` (util-linux, Debian package bsdutils) is missing: scripts/test.sh installs it"
    );
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"]);
    let run = support::run_cmd(&mut c, &[], Duration::from_secs(120));
    assert_eq!(run.code, 0, "{cmd}: {}\n{}", run.stdout, run.stderr);
    run.stdout
}

#[test]
fn progress_shows_on_a_terminal_only_and_leaves_stdout_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet.ndjson");
    synth(&data);
    let data_s = data.to_str().unwrap();
    let bin = support::bin();

    // Not a terminal: nothing on stderr.
    let plain = support::run(&["fleet", "summarize", data_s, "-o", "json"]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(plain.stderr, "", "progress shown without a terminal");
    let reports = serde_json::from_str::<serde_json::Value>(&plain.stdout).unwrap()["input"]
        ["reports"]
        .as_u64()
        .unwrap();

    // A terminal: progress lines, ending with the whole input read.
    let out = dir.path().join("pty.json");
    let shown = on_a_terminal(&format!(
        "{bin} fleet summarize {data_s} -o json > {}",
        out.display()
    ));
    assert!(shown.contains("fleet summarize: read"), "{shown:?}");
    assert!(shown.contains("reports/s"), "{shown:?}");
    let size = std::fs::metadata(&data).unwrap().len() as f64 / (1024.0 * 1024.0);
    let last = shown
        .rsplit('\r')
        .find(|l| l.contains("fleet summarize"))
        .unwrap();
    assert!(
        last.contains(&format!(
            "read {size:.1} MiB of {size:.1} MiB (100 %), {reports} reports"
        )),
        "{last:?}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), plain.stdout);

    // stdin: the total is not known, the bytes read are.
    let shown = on_a_terminal(&format!(
        "{bin} fleet summarize - -o json < {data_s} > {}",
        out.display()
    ));
    assert!(
        shown.contains(&format!("read {size:.1} MiB, {reports} reports")),
        "{shown:?}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), plain.stdout);

    // --quiet on a terminal: nothing.
    let shown = on_a_terminal(&format!(
        "{bin} fleet summarize --quiet {data_s} -o json > {}",
        out.display()
    ));
    assert!(!shown.contains("fleet summarize"), "{shown:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), plain.stdout);
}
