//! Shell completions and manual pages, generated from the clap definitions
//! (`hubprobe completions SHELL`, `hubprobe man --out-dir DIR`): the bash script loads
//! and completes subcommands, flags and values through its own `complete -F`
//! function; the zsh script parses (`zsh -n`); the fish script parses
//! (`fish --no-execute`) and completes (`complete -C`); every page passes
//! `mandoc -T lint` without a warning, one page per subcommand.
//!
//! Real tools (Debian packages bash, zsh, fish, mandoc; scripts/test.sh installs
//! them): a missing one fails the test.

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory as _;
use support::{run, run_cmd, Run};

fn program(name: &str, package: &str) -> PathBuf {
    common::find_program(name).unwrap_or_else(|| {
        panic!("{name} is not installed: scripts/test.sh installs the Debian package {package}")
    })
}

/// Runs a tool (not hubprobe) with the same bounds and capture as hubprobe runs.
fn tool(program: &Path, args: &[&str]) -> Run {
    run_cmd(
        Command::new(program).args(args),
        &[],
        Duration::from_secs(60),
    )
}

/// `hubprobe completions SHELL` written to a file in `dir`.
fn script(shell: &str, dir: &Path) -> PathBuf {
    let out = run(&["completions", shell]);
    assert_eq!(out.code, 0, "completions {shell}: {}", out.all_output());
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let path = dir.join(format!("hubprobe.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// Asks bash for the completions of a command line whose last word is being typed,
/// as bash's programmable completion does: the function is the one the script
/// registers with `complete -F` for `hubprobe`, called with COMP_WORDS, COMP_CWORD,
/// COMP_LINE and COMP_POINT set.
const BASH_DRIVER: &str = r#"
set -u
source "$1"; shift
spec=$(complete -p hubprobe) || { echo "no completion for hubprobe" >&2; exit 2; }
fn=$(printf '%s\n' "$spec" | sed -n 's/.*-F \([^ ]*\).*/\1/p')
[ -n "$fn" ] || { echo "not a function completion: $spec" >&2; exit 2; }
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMPREPLY=()
prev=""
[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
"$fn" hubprobe "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;

/// The words bash offers for `line` (split on spaces; a trailing space means a new,
/// empty word).
fn bash_complete(bash: &Path, script: &Path, line: &str) -> BTreeSet<String> {
    let mut words: Vec<&str> = line.split(' ').collect();
    if words.last() == Some(&"") {
        words.pop();
        words.push("");
    }
    let mut args = vec!["-c", BASH_DRIVER, "bash", script.to_str().unwrap()];
    args.extend(words);
    let out = tool(bash, &args);
    assert_eq!(
        out.code,
        0,
        "bash completion of {line:?}: {}",
        out.all_output()
    );
    out.stdout
        .lines()
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

fn assert_offers(got: &BTreeSet<String>, line: &str, want: &[&str]) {
    for w in want {
        assert!(got.contains(*w), "{line:?} should offer {w}: {got:?}");
    }
}

#[test]
fn bash_completion_completes_subcommands_flags_and_values() {
    let bash = program("bash", "bash");
    let dir = tempfile::tempdir().unwrap();
    let script = script("bash", dir.path());

    // Every visible subcommand of the clap tree is offered at the top level.
    let top = bash_complete(&bash, &script, "hubprobe ");
    let subcommands: Vec<String> = hubprobe::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(subcommands.len() >= 10, "{subcommands:?}");
    for name in &subcommands {
        assert!(top.contains(name), "top level lacks {name}: {top:?}");
    }

    let got = bash_complete(&bash, &script, "hubprobe ch");
    assert_eq!(
        got,
        BTreeSet::from(["check".to_string()]),
        "prefix filtering"
    );
    let got = bash_complete(&bash, &script, "hubprobe check --ti");
    assert_eq!(got, BTreeSet::from(["--timeout".to_string()]));
    let line = "hubprobe check --";
    assert_offers(
        &bash_complete(&bash, &script, line),
        line,
        &[
            "--profile",
            "--endpoint",
            "--deadline",
            "--output",
            "--report-file",
        ],
    );
    let line = "hubprobe check -o ";
    assert_offers(
        &bash_complete(&bash, &script, line),
        line,
        &["text", "json", "prometheus"],
    );
    let line = "hubprobe agent --c";
    assert_offers(
        &bash_complete(&bash, &script, line),
        line,
        &["--config", "--cycles", "--check-config"],
    );
    let line = "hubprobe fleet ";
    assert_offers(
        &bash_complete(&bash, &script, line),
        line,
        &["summarize", "synth"],
    );
    let line = "hubprobe completions ";
    assert_offers(
        &bash_complete(&bash, &script, line),
        line,
        &["bash", "zsh", "fish"],
    );
    // The tune subcommand's own flags, not check's.
    let got = bash_complete(&bash, &script, "hubprobe tune --refl");
    assert_eq!(
        got,
        BTreeSet::from(["--reflector".to_string(), "--reflector-tls".to_string()])
    );
}

#[test]
fn zsh_completion_parses_and_a_broken_one_does_not() {
    let zsh = program("zsh", "zsh");
    let dir = tempfile::tempdir().unwrap();
    let script = script("zsh", dir.path());
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#compdef hubprobe"), "{}", &text[..80]);
    assert!(text.contains("'--timeout=["), "flags are in the script");
    let out = tool(&zsh, &["-n", script.to_str().unwrap()]);
    assert!(
        out.code == 0 && out.stderr.is_empty(),
        "zsh -n: {}",
        out.all_output()
    );
    // The control: zsh -n does see a script cut in the middle.
    let cut = dir.path().join("cut.zsh");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let out = tool(&zsh, &["-n", cut.to_str().unwrap()]);
    assert_ne!(out.code, 0, "zsh -n should refuse half a script");
}

#[test]
fn fish_completion_parses_and_completes() {
    let fish = program("fish", "fish");
    let dir = tempfile::tempdir().unwrap();
    let script = script("fish", dir.path());
    let path = script.to_str().unwrap();
    let out = tool(&fish, &["--no-execute", path]);
    assert!(
        out.code == 0 && out.stderr.is_empty(),
        "fish --no-execute: {}",
        out.all_output()
    );
    let complete = |line: &str| -> BTreeSet<String> {
        let cmd = format!("source {path}; complete -C '{line}'");
        let out = tool(&fish, &["--no-config", "-c", &cmd]);
        assert_eq!(
            out.code,
            0,
            "fish complete -C {line:?}: {}",
            out.all_output()
        );
        // "word\tdescription" lines.
        out.stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    assert_offers(
        &complete("hubprobe "),
        "hubprobe ",
        &["check", "tune", "man"],
    );
    assert_offers(
        &complete("hubprobe check --ti"),
        "hubprobe check --ti",
        &["--timeout"],
    );
    assert_offers(
        &complete("hubprobe check -o "),
        "hubprobe check -o ",
        &["text", "json", "prometheus"],
    );
    // The control: the same harness on a cut script.
    let cut = dir.path().join("cut.fish");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&cut, format!("{}\nfunction broken\n", &text[..200])).unwrap();
    let out = tool(&fish, &["--no-execute", cut.to_str().unwrap()]);
    assert_ne!(
        out.code, 0,
        "fish --no-execute should refuse a broken script"
    );
}

/// The file names the pages must have: hubprobe.1 and hubprobe-SUB[-SUB].1 for every
/// visible subcommand, from the clap tree.
fn expected_pages() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        out.insert(format!("{prefix}.1"));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                walk(sub, &format!("{prefix}-{}", sub.get_name()), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&hubprobe::cli::Cli::command(), "hubprobe", &mut out);
    out
}

/// `mandoc -T lint -W warning PAGE`: exit 0 and no message.
fn lint(mandoc: &Path, page: &Path) -> Run {
    tool(
        mandoc,
        &["-T", "lint", "-W", "warning", page.to_str().unwrap()],
    )
}

#[test]
fn one_man_page_per_subcommand_and_mandoc_lint_finds_no_warning() {
    let mandoc = program("mandoc", "mandoc");
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = run(&[
        "man",
        "--out-dir",
        pages.to_str().unwrap(),
        "--date",
        "2026-01-31",
    ]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    let written: BTreeSet<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected = expected_pages();
    assert!(
        expected.contains("hubprobe-fleet-summarize.1"),
        "{expected:?}"
    );
    assert_eq!(written, expected, "one page per (sub)command");

    for name in &written {
        let page = pages.join(name);
        let out = lint(&mandoc, &page);
        assert!(
            out.code == 0 && out.all_output().trim().is_empty(),
            "mandoc -T lint {name}:\n{}",
            out.all_output()
        );
        let text = std::fs::read_to_string(&page).unwrap();
        let title = name.trim_end_matches(".1").to_uppercase();
        assert!(
            text.contains(&format!(
                ".TH {title} 1 2026-01-31 \"hubprobe {}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{name}: title line"
        );
        assert!(text.contains(".SH \"SEE ALSO\""), "{name}: SEE ALSO");
        assert!(text.contains(".SH \"EXIT STATUS\""), "{name}: EXIT STATUS");
    }

    // What a reader sees: the rendered check page has the duration format and the
    // trust choices with their meaning.
    let out = tool(
        &mandoc,
        &[
            "-T",
            "utf8",
            pages.join("hubprobe-check.1").to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    let plain: String = strip_overstrike(&out.stdout);
    assert!(
        plain.contains("hubprobe-check - Probe every endpoint"),
        "{plain}"
    );
    assert!(plain.contains("a duration like 30s, 5m, 1h"), "{plain}");
    assert!(plain.contains("Only the --ca-file anchors"), "{plain}");
    assert!(plain.contains("hubprobe(1)"), "{plain}");

    // The main page lists every environment variable an option reads, from the
    // clap tree, and the packaged files.
    let out = tool(
        &mandoc,
        &["-T", "utf8", pages.join("hubprobe.1").to_str().unwrap()],
    );
    let plain = strip_overstrike(&out.stdout);
    let mut envs = BTreeSet::new();
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    walk(&hubprobe::cli::Cli::command(), &mut envs);
    assert!(envs.contains("HUBPROBE_CONFIG"), "{envs:?}");
    let environment = plain
        .split("ENVIRONMENT")
        .nth(1)
        .and_then(|s| s.split("FILES").next())
        .unwrap_or_else(|| panic!("no ENVIRONMENT section: {plain}"));
    for var in envs
        .iter()
        .map(String::as_str)
        .chain(["IOTHUB_DEVICE_CONNECTION_STRING"])
    {
        assert!(
            environment.contains(var),
            "hubprobe(1) lacks {var}: {environment}"
        );
    }
    assert!(plain.contains("/etc/hubprobe/config.toml"), "{plain}");
}

/// The control for the lint test: the harness reports what clap_mangen writes
/// unpatched (a break, an empty line, a break before "Possible values:").
#[test]
fn mandoc_lint_harness_catches_an_empty_line_between_breaks() {
    let mandoc = program("mandoc", "mandoc");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.1");
    std::fs::write(
        &page,
        ".TH BAD 1 2026-01-31 \"hubprobe\" \"hubprobe manual\"\n.SH NAME\nbad \\- a test\n.SH OPTIONS\n.TP\n\\fB\\-\\-x\\fR\nsome help\n.br\n\n.br\n\\fIPossible values:\\fR\n",
    )
    .unwrap();
    let out = lint(&mandoc, &page);
    assert!(
        out.all_output().contains("WARNING"),
        "mandoc should warn: {}",
        out.all_output()
    );
}

/// Bold and underline in mandoc's terminal output are overstrikes (c\bc, _\bc).
fn strip_overstrike(s: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{8}' {
            out.pop();
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn completions_and_man_refuse_bad_input_with_exit_3() {
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stdout.is_empty() && out.stderr.contains("invalid value"));

    let out = run(&["man"]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("--out-dir"), "{}", out.stderr);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = run(&["man", "--out-dir", file.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("a-file"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    let out = run(&[
        "man",
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--date",
        "31.01.2026",
    ]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("not a date"), "{}", out.stderr);
}

#[test]
fn man_pages_take_their_date_from_source_date_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_with_env(
        &["man", "--out-dir", dir.path().to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1767139200")], // 2025-12-31 00:00:00 UTC
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    let page = std::fs::read_to_string(dir.path().join("hubprobe.1")).unwrap();
    assert!(
        page.contains(".TH HUBPROBE 1 2025-12-31 "),
        "{}",
        &page[..200]
    );
}
