//! Every file option goes through one bounded reader: a FIFO, a directory, an
//! over-size file or a missing file is one clear line naming the option and the
//! path, exit 3, within seconds, never the file's content, the OS error once.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::Certs;
use support::{run_with_env, Run};

/// Generous: a FIFO must not block, but the machine may be loaded.
const LIMIT: Duration = Duration::from_secs(30);

/// Builds the command line with the path in the option's place.
type ArgsFor = Box<dyn Fn(&str) -> Vec<String>>;

/// A file-taking option and how to run hubprobe with `path` in its place.
struct Case {
    option: &'static str,
    args: ArgsFor,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cases(certs: &Certs) -> Vec<Case> {
    let cert = certs.client.cert_pem.display().to_string();
    let key = certs.client.key_pem.display().to_string();
    let (c1, k1, c2, k2) = (cert.clone(), key.clone(), cert.clone(), key.clone());
    vec![
        Case {
            option: "--ca-file",
            args: Box::new(|p| strings(&["check", "h.example.test", "--ca-file", p])),
        },
        Case {
            option: "--profile",
            args: Box::new(|p| strings(&["check", "h.example.test", "--profile", p])),
        },
        Case {
            option: "--connection-string-file",
            args: Box::new(|p| strings(&["check", "--connection-string-file", p])),
        },
        Case {
            option: "--password-file",
            args: Box::new(|p| {
                strings(&[
                    "check",
                    "h.example.test",
                    "--username",
                    "u",
                    "--password-file",
                    p,
                ])
            }),
        },
        Case {
            option: "--cert",
            args: Box::new(move |p| {
                strings(&["check", "h.example.test", "--cert", p, "--key", &k1])
            }),
        },
        Case {
            option: "--key",
            args: Box::new(move |p| {
                strings(&["check", "h.example.test", "--cert", &c1, "--key", p])
            }),
        },
        Case {
            option: "--config",
            args: Box::new(|p| strings(&["agent", "--config", p, "--check-config"])),
        },
        Case {
            option: "--cert",
            args: Box::new(move |p| {
                strings(&[
                    "reflect",
                    "--listen",
                    "127.0.0.1:0",
                    "--cert",
                    p,
                    "--key",
                    &k2,
                ])
            }),
        },
        Case {
            option: "--key",
            args: Box::new(move |p| {
                strings(&[
                    "reflect",
                    "--listen",
                    "127.0.0.1:0",
                    "--cert",
                    &c2,
                    "--key",
                    p,
                ])
            }),
        },
        Case {
            option: "--connection-string-file",
            args: Box::new(|p| strings(&["sas-token", "--connection-string-file", p])),
        },
    ]
}

fn run_case(case: &Case, path: &Path) -> Run {
    let args = (case.args)(path.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with_env(&args, &[], LIMIT)
}

fn assert_one_line_error(out: &Run, case: &Case, path: &Path, needle: &str) {
    let what = format!("{} with {}", case.option, path.display());
    assert_eq!(out.code, 3, "{what}: exit 3 expected: {}", out.all_output());
    assert!(out.stdout.is_empty(), "{what}: stdout: {}", out.stdout);
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    assert!(err.contains(case.option), "{what}: names the option: {err}");
    assert!(
        err.contains(&path.display().to_string()),
        "{what}: names the path: {err}"
    );
    assert!(err.contains(needle), "{what}: says {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn a_fifo_for_any_file_option_is_refused_without_blocking() {
    let certs = Certs::generate();
    let dir = tempfile::tempdir().unwrap();
    // A path with a '/' so `--profile` takes it as a file.
    let fifo = dir.path().join("input.toml");
    mkfifo(&fifo);
    for case in cases(&certs) {
        let out = run_case(&case, &fifo);
        assert_one_line_error(&out, &case, &fifo, "FIFO");
    }
}

#[test]
fn a_directory_for_any_file_option_is_refused() {
    let certs = Certs::generate();
    let dir = tempfile::tempdir().unwrap();
    let sub: PathBuf = dir.path().join("a-directory.toml");
    std::fs::create_dir(&sub).unwrap();
    for case in cases(&certs) {
        let out = run_case(&case, &sub);
        assert_one_line_error(&out, &case, &sub, "directory");
    }
}

#[test]
fn an_oversize_file_is_refused_and_its_content_never_shown() {
    let certs = Certs::generate();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    // Above every cap (the CA bundle's is the largest, 16 MiB); sparse, so cheap.
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(17 << 20).unwrap();
    drop(f);
    for case in cases(&certs) {
        let out = run_case(&case, &big);
        assert_one_line_error(&out, &case, &big, "limit");
    }
    // Just above the 1 MiB cap of secrets: a marker inside is never echoed.
    let secret = dir.path().join("secret.toml");
    let mut bytes = b"SECRET-MARKER-".repeat((1 << 20) / 14 + 1);
    bytes.truncate((1 << 20) + 1);
    std::fs::write(&secret, &bytes).unwrap();
    for case in cases(&certs)
        .into_iter()
        .filter(|c| c.option != "--ca-file")
    {
        let out = run_case(&case, &secret);
        assert_one_line_error(&out, &case, &secret, "1 MiB");
        assert!(!out.all_output().contains("SECRET-MARKER"));
    }
}

#[test]
fn a_missing_file_prints_the_os_error_once() {
    let certs = Certs::generate();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for case in cases(&certs) {
        let out = run_case(&case, &missing);
        assert_one_line_error(&out, &case, &missing, "No such file or directory");
        assert_eq!(
            out.stderr.matches("No such file or directory").count(),
            1,
            "{}: the OS error once: {}",
            case.option,
            out.stderr
        );
    }
}

#[test]
fn a_malformed_pem_file_is_described_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = run_with_env(
        &[
            "check",
            "h.example.test",
            "--ca-file",
            bad.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("bad base64"), "{}", out.stderr);
    assert!(out.stderr.contains("'!'"), "{}", out.stderr);
    assert!(!out.stderr.contains("InvalidCharacter"), "{}", out.stderr);
    let der = dir.path().join("bad.der");
    std::fs::write(&der, [0x30, 0x03, 0x02, 0x01, 0x01, 0xAA]).unwrap();
    let out = run_with_env(
        &[
            "check",
            "h.example.test",
            "--ca-file",
            der.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("not a well-formed"), "{}", out.stderr);
    assert!(!out.stderr.contains("BadDer"), "{}", out.stderr);
}
