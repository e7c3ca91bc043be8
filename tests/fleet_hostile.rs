//! `fleet summarize` on hostile input: deep nesting, times far outside any clock's
//! range, lines longer than the cap in gzip and on stdin, and a fixed-seed corpus of
//! nasty lines. Every bad line is counted with its file and line, the rest is read,
//! and memory is bounded: the binary runs under an address-space limit (`ulimit -v`)
//! so that an allocation sized by the input fails the test.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hubprobe::fleet::synth::{generate, SynthConfig};
use hubprobe::fleet::{summarize, FleetOptions, FleetSummary, Source};
use serde_json::{json, Value};

/// Address-space limit for the memory-bound runs. A summary of a small input runs
/// in well under half of it; the hostile inputs ask for several times more when
/// their size is not bounded.
const LIMIT_MIB: u64 = 256;

/// Some real reports (synthetic fleet, the real report types), one JSON line each.
fn reports(n: usize) -> Vec<String> {
    let cfg = SynthConfig {
        devices: 40,
        duration: Duration::from_secs(3 * 3600),
        ..SynthConfig::default()
    };
    let mut lines = Vec::new();
    generate(&cfg, |r| {
        if lines.len() < n {
            lines.push(serde_json::to_string(r).unwrap());
        }
    });
    assert_eq!(lines.len(), n);
    lines
}

/// A minimal valid report.
fn report(id: &str, device: &str, started_at: &str) -> Value {
    json!({
        "schema": "hubprobe.report/1", "id": id, "kind": "check", "host": "h",
        "started_at": started_at, "target": {"device_id": device}, "verdict": "critical",
        "endpoints": [{"name": "mqtt-tls", "phases": [
            {"phase": "tcp", "status": "failed", "class": "tcp.timeout", "duration_ms": 3000.0}
        ]}]
    })
}

fn gzip(path: &Path, data: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(data).unwrap();
    enc.finish().unwrap();
}

/// Runs `hubprobe fleet summarize ARGS -o json` under `ulimit -v`, stdin from
/// `stdin` (a file) or nothing. Returns the exit code and the parsed summary.
fn summarize_limited(args: &[&str], stdin: Option<&Path>) -> (i32, Value, String) {
    let mut script = format!(
        "ulimit -v {} && exec \"$0\" fleet summarize",
        LIMIT_MIB * 1024
    );
    for (i, _) in args.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    script.push_str(" -o json");
    if let Some(p) = stdin {
        script.push_str(&format!(" < '{}'", p.display()));
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(support::bin()).args(args);
    let run = support::run_cmd(&mut cmd, &[], Duration::from_secs(240));
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "fleet summarize {args:?} under a {LIMIT_MIB} MiB limit printed no summary ({e}), exit {}:\n{}",
            run.code, run.stderr
        )
    });
    (run.code, v, run.stderr)
}

fn problems(v: &Value) -> Vec<(String, u64, String, String)> {
    v["input"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["file"].as_str().unwrap().to_string(),
                p["line"].as_u64().unwrap(),
                p["kind"].as_str().unwrap().to_string(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn deep_nesting_is_a_malformed_line_on_every_input_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = reports(3);
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    // A valid report with a 20 000-deep field the summary does not read.
    let mut deep_report = report("deep", "dev-deep", "2026-11-26T10:00:00Z").to_string();
    deep_report.pop();
    deep_report.push_str(&format!(
        ",\"zz\":{}{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    ));
    let objects = format!("{}{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    let text = format!(
        "{}\n{nested}\n{}\n{deep_report}\n{objects}\n{}\n",
        good[0], good[1], good[2]
    );
    let plain = dir.path().join("deep.ndjson");
    std::fs::write(&plain, &text).unwrap();
    let gz = dir.path().join("deep.ndjson.gz");
    gzip(&gz, text.as_bytes());
    // Documents mode (pretty-printed, one report per file, the first line not a
    // whole object): the nested field spans lines.
    let pretty = dir.path().join("deep.json");
    std::fs::write(&pretty, format!("{{\n{}\n", &deep_report[1..])).unwrap();

    for (path, stdin) in [
        (plain.clone(), None),
        (gz.clone(), None),
        (PathBuf::from("-"), Some(plain.as_path())),
        (PathBuf::from("-"), Some(gz.as_path())),
    ] {
        let name = path.display().to_string();
        let (code, v, stderr) = summarize_limited(&[&name], stdin);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert_eq!(v["input"]["reports"], 3, "{name}");
        assert_eq!(v["input"]["malformed"], 3, "{name}");
        let got: Vec<(u64, String)> = problems(&v)
            .into_iter()
            .map(|(file, line, kind, msg)| {
                assert_eq!(file, if stdin.is_some() { "-" } else { name.as_str() });
                assert!(msg.contains("nested deeper than 128"), "{msg}");
                (line, kind)
            })
            .collect();
        let want: Vec<(u64, String)> = [2, 4, 5].map(|l| (l, "malformed".into())).into();
        assert_eq!(got, want, "{name}");
    }
    let (code, v, stderr) = summarize_limited(&[pretty.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(v["input"]["malformed"], 1);
    assert_eq!(problems(&v)[0].1, 1);
    assert!(problems(&v)[0].3.contains("nested deeper"));
}

/// Bad `\u` escapes where the summary reads nothing (a phase's evidence) make the
/// line malformed, as serde_json does: four non-hex digits, a lone surrogate
/// either half. Good escapes beside them (a pair, an escaped backslash before a
/// `u`) leave the report a report.
#[test]
fn bad_unicode_escapes_in_skipped_evidence_make_a_line_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let with_note = |note: &str| {
        let mut r = report("id-x", "dev-1", "2026-11-26T10:00:00Z");
        r["endpoints"][0]["phases"][0]["evidence"] = json!({"note": "NOTE"});
        r.to_string().replace("NOTE", note)
    };
    let bad = [
        r"\uzzzz",
        r"\u12",
        r"\ud800",
        r"\udc00",
        r"\ud800\u0041",
        r"\\\uZZ00",
    ];
    let good = [
        r"\u00e9",
        r"\ud83d\ude00",
        r"\\u",
        r"\\\\uzz",
        r#"\"\u0041"#,
    ];
    let mut lines = Vec::new();
    for (i, note) in bad.iter().enumerate() {
        assert!(
            serde_json::from_str::<Value>(&with_note(note)).is_err(),
            "{note}"
        );
        lines.push(with_note(note).replace("id-x", &format!("bad-{i}")));
    }
    for (i, note) in good.iter().enumerate() {
        assert!(
            serde_json::from_str::<Value>(&with_note(note)).is_ok(),
            "{note}"
        );
        lines.push(with_note(note).replace("id-x", &format!("good-{i}")));
    }
    let path = dir.path().join("escapes.ndjson");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (_, v, stderr) = summarize_limited(&[path.to_str().unwrap()], None);
    assert_eq!(v["input"]["reports"], good.len(), "{stderr}");
    assert_eq!(v["input"]["malformed"], bad.len());
    let lines: Vec<u64> = problems(&v).iter().map(|p| p.1).collect();
    assert_eq!(lines, (1..=bad.len() as u64).collect::<Vec<_>>());
    for p in problems(&v) {
        assert_eq!(p.2, "malformed");
        assert!(p.3.starts_with("not JSON:"), "{}", p.3);
    }
}

#[test]
fn times_outside_any_clock_never_panic_and_do_not_size_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        report("a", "dev-1970", "1970-01-01T00:00:00Z").to_string(),
        report("b", "dev-9999", "9999-12-31T23:59:59.999Z").to_string(),
        report("c", "dev-2200", "2200-06-01T00:00:00Z").to_string(),
        report("d", "dev-ok", "2026-11-26T12:00:00+02:00").to_string(),
        report("f", "dev-1969", "1969-07-20T20:17:40Z").to_string(),
        report("g", "dev-0000", "0000-01-01T00:00:00Z").to_string(),
    ];
    // Canary disconnects after year 9999, at the ends of u64, at 0.
    let mut canary = report("e", "dev-canary", "2026-11-26T10:05:00Z");
    canary["canary"] = json!({"recent": [
        {"at_unix_ms": 253_402_300_800_000u64, "cause": "io_error"},
        {"at_unix_ms": u64::MAX, "cause": "io_error"},
        {"at_unix_ms": i64::MAX as u64 + 1, "cause": "no_pingresp"},
        {"at_unix_ms": 0, "cause": "server_disconnect"},
        {"at_unix_ms": 1_795_687_500_000u64, "cause": "io_error"}
    ]});
    lines.push(canary.to_string());
    let path = dir.path().join("times.ndjson");
    std::fs::write(&path, lines.join("\n")).unwrap();

    for bucket in ["1s", "5m", "100years"] {
        let p = path.to_str().unwrap();
        let (code, v, stderr) = summarize_limited(&[p, "--bucket", bucket], None);
        assert_eq!(code, 0, "{bucket}: {stderr}");
        assert_eq!(v["input"]["reports"], 7);
        let t = &v["input"]["implausible_times"];
        assert_eq!(t["reports"], 5, "{t}");
        assert_eq!(t["disconnects"], 4, "{t}");
        assert_eq!(
            t["example_devices"],
            json!([
                "dev-0000",
                "dev-1969",
                "dev-1970",
                "dev-2200",
                "dev-9999",
                "dev-canary"
            ])
        );
        // The span and the timeline hold the believable times only.
        assert_eq!(v["span"]["from"], "2026-11-26T10:00:00.000Z");
        assert_eq!(v["span"]["to"], "2026-11-26T10:05:00.000Z");
        for b in v["incidents"]["timeline"].as_array().unwrap() {
            let s = b["start"].as_str().unwrap();
            assert!(s.starts_with("2026-"), "{bucket}: {b}");
        }
        // Every disconnect is still counted by cause.
        let disc: u64 = v["overall"]["disconnects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["events"].as_u64().unwrap())
            .sum();
        assert_eq!(disc, 5);
    }
    // The text summary says so.
    let run = support::run(&["fleet", "summarize", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("clock problems: 5 reports and 4 canary disconnects"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_device_clock_in_2200_leaves_the_fleet_summary_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = reports(400);
    let base = summarize_lines(dir.path(), "base.ndjson", &lines);
    lines.push(report("future", "dev-future", "2200-01-01T00:00:00Z").to_string());
    let s = summarize_lines(dir.path(), "future.ndjson", &lines);
    assert_eq!(s.input.implausible_times.reports, 1);
    assert_eq!(s.input.implausible_times.devices, 1);
    assert_eq!(s.incidents.timeline.len(), base.incidents.timeline.len());
    let span = |s: &FleetSummary| s.span.as_ref().map(|s| (s.from.clone(), s.to.clone()));
    assert_eq!(span(&s), span(&base));
}

fn summarize_lines(dir: &Path, name: &str, lines: &[String]) -> FleetSummary {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    summarize(&[Source::Path(path)], FleetOptions::default()).unwrap()
}

#[test]
fn an_over_long_line_is_capped_while_streaming_gzip_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let good = reports(4);
    // 600 MiB in one line (a few MB compressed): more than the limit allows to hold.
    let mut text = Vec::with_capacity(8 << 20);
    let gz = dir.path().join("long.ndjson.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(b"{\"schema\":\"hubprobe.report/1\",\"pad\":\"")
            .unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..600 {
            enc.write_all(&block).unwrap();
        }
        text.extend_from_slice(b"\"}\n");
        for l in &good[..2] {
            text.extend_from_slice(l.as_bytes());
            text.push(b'\n');
        }
        // A second long line, not the first of the file, without JSON at all.
        enc.write_all(&text).unwrap();
        for _ in 0..40 {
            enc.write_all(&block).unwrap();
        }
        enc.write_all(b"\n").unwrap();
        for l in &good[2..] {
            enc.write_all(l.as_bytes()).unwrap();
            enc.write_all(b"\n").unwrap();
        }
        enc.finish().unwrap();
    }
    assert!(std::fs::metadata(&gz).unwrap().len() < 16 << 20);
    for (arg, stdin) in [(gz.to_str().unwrap(), None), ("-", Some(gz.as_path()))] {
        let (code, v, stderr) = summarize_limited(&[arg], stdin);
        assert_eq!(code, 1, "{arg}: {stderr}");
        assert_eq!(v["input"]["reports"], 4, "{arg}");
        let got: Vec<(u64, String)> = problems(&v)
            .into_iter()
            .map(|(_, line, _, msg)| (line, msg))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1].0, 4);
        assert!(got.iter().all(|(_, m)| m.contains("longer than 16 MiB")));
    }
    // Not NDJSON at all: a first line of 600 MiB that is not an object.
    let plain = dir.path().join("junk.json.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&plain).unwrap(),
            flate2::Compression::fast(),
        );
        let block = vec![b'y'; 1 << 20];
        for _ in 0..600 {
            enc.write_all(&block).unwrap();
        }
        enc.write_all(b"\n").unwrap();
        enc.write_all(good[0].as_bytes()).unwrap();
        enc.finish().unwrap();
    }
    let (code, v, stderr) = summarize_limited(&[plain.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(v["input"]["reports"], 1);
    assert_eq!(problems(&v)[0].1, 1);
}

/// A small deterministic generator (SplitMix64), so the corpus is the same on
/// every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One nasty variant of a real report line.
fn nasty(rng: &mut Rng, line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let v: Value = serde_json::from_str(line).unwrap();
    let with = |path: &[&str], x: Value| {
        let mut v = v.clone();
        let mut at = &mut v;
        for k in &path[..path.len() - 1] {
            at = &mut at[*k];
        }
        at[path[path.len() - 1]] = x;
        v.to_string().into_bytes()
    };
    match rng.below(18) {
        0 => b[..rng.below(b.len())].to_vec(), // truncated
        1 => {
            let n = 100 + rng.below(50_000);
            format!("{}{}", "[".repeat(n), "]".repeat(rng.below(n + 1))).into_bytes()
        }
        2 => with(&["started_at"], json!("+275760-09-13T00:00:00Z")),
        3 => with(&["started_at"], json!(-1)),
        4 => with(&["verdict"], json!(["ok"])),
        5 => with(
            &["canary"],
            json!({"recent": [{"at_unix_ms": -5, "cause": "io_error"}]}),
        ),
        6 => {
            // Numbers beyond every integer type and float range.
            let mut s = v.to_string();
            s.pop();
            s.push_str(",\"keepalive\":{\"recommendation\":{\"keepalive_s\":1e400},\"discovery\":{\"estimate_ms\":184467440737095516160}}}");
            s.into_bytes()
        }
        7 => {
            let s = v
                .to_string()
                .replacen("\"duration_ms\":", "\"duration_ms\":NaN,\"x\":", 1);
            s.into_bytes()
        }
        8 => {
            let s =
                v.to_string()
                    .replacen("\"duration_ms\":", "\"duration_ms\":-Infinity,\"x\":", 1);
            s.into_bytes()
        }
        9 => {
            // Invalid UTF-8 inside a string.
            let mut out = b.to_vec();
            if let Some(p) = memchr_str(&out, b"\"host\":\"") {
                out.insert(p + 8, 0xff);
                out.insert(p + 9, 0xc0);
            }
            out
        }
        10 => [b"\xEF\xBB\xBF".as_slice(), b].concat(), // BOM
        11 => [b, b"\r".as_slice()].concat(),           // CRLF
        12 => Vec::new(),                               // empty line
        13 => b" \t \r".to_vec(),                       // blank
        14 => with(&["labels"], json!({"site": {"nested": 1}})),
        15 => with(&["endpoints"], json!([{"name": 7}])),
        16 => with(
            &["canary"],
            json!({"recent": [{"id": 5, "at_unix_ms": 1, "cause": "io_error"}]}),
        ),
        _ => b.to_vec(), // a good line
    }
}

fn memchr_str(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_fixed_seed_corpus_of_nasty_lines_is_counted_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = reports(60);
    let mut rng = Rng(0x5eed);
    let mut data = Vec::new();
    let mut lines = 0u64;
    let mut blank = 0u64;
    for i in 0..3000 {
        let l = nasty(&mut rng, &good[i % good.len()]);
        // A line must not contain a newline of its own (truncation cannot add one).
        assert!(!l.contains(&b'\n'));
        if l.iter().all(u8::is_ascii_whitespace) {
            blank += 1;
        }
        data.extend_from_slice(&l);
        data.push(b'\n');
        lines += 1;
    }
    let plain = dir.path().join("nasty.ndjson");
    std::fs::write(&plain, &data).unwrap();
    let gz = dir.path().join("nasty.ndjson.gz");
    gzip(&gz, &data);

    let check = |s: &Value, what: &str| {
        let i = &s["input"];
        let n = |k: &str| i[k].as_u64().unwrap();
        assert_eq!(n("records") + n("blank_lines"), lines, "{what}");
        assert_eq!(n("blank_lines"), blank, "{what}");
        assert_eq!(
            n("reports") + n("duplicates") + n("malformed") + n("foreign") + n("unknown_schema"),
            n("records"),
            "{what}"
        );
        assert!(n("reports") > 0 && n("malformed") > 0, "{what}: {i}");
    };
    // In process (a panic fails the test), on each input path, 1 and 2 threads.
    let mut first: Option<Value> = None;
    for (path, threads) in [(&plain, 1), (&plain, 2), (&gz, 2)] {
        let opts = FleetOptions {
            threads,
            ..FleetOptions::default()
        };
        let s = summarize(&[Source::Path(path.clone())], opts).unwrap();
        let mut v = serde_json::to_value(&s).unwrap();
        check(&v, &path.display().to_string());
        // The same numbers whatever the path.
        v["input"]["problems"] = Value::Null;
        v["options"] = Value::Null;
        match &first {
            None => first = Some(v),
            Some(f) => assert_eq!(&v, f, "{}", path.display()),
        }
    }
    // The binary, on stdin, under the memory limit; also the text output.
    let (code, v, stderr) = summarize_limited(&["-"], Some(&gz));
    assert_eq!(code, 1, "{stderr}");
    check(&v, "stdin");
    let run = support::run(&["fleet", "summarize", plain.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("malformed"), "{}", run.stdout);
}
