//! Fixed-seed fuzzing of the two parsers that read operator input: connection
//! strings and hub profiles. A corpus of nasty inputs (empty, huge, NUL bytes,
//! duplicated keys, `=` in values, whitespace, over-long values, unicode, deep
//! nesting) plus seeded mutations of valid inputs: never a panic, always either a
//! value or one clear, single-line error that never echoes the device key. The
//! seed is fixed, so a failure reproduces; the counts are bounded.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use hubprobe::auth::ConnectionString;
use hubprobe::profile::{Profile, BUILTIN};

const KEY: &str = "S0VZTUFSSy1zZWNyZXQta2V5LTEyMzQ1Njc4OTA=";
const MUTATIONS: usize = 4_000;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Pieces a mutation may insert: separators, quotes, NUL, controls, unicode,
/// bidi controls, long runs.
const PIECES: &[&str] = &[
    ";",
    "=",
    "==",
    ";;",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\0",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "#",
    "\\",
    "\u{202E}",
    "\u{FEFF}",
    "é",
    "東",
    "🙂",
    "\u{10FFFF}",
    "HostName=",
    "DeviceId=",
    "SharedAccessKey=",
    "x509=true",
    "ModuleId=",
    "GatewayHostName=",
    "[[endpoints]]",
    "port = 0",
    "port = 70000",
    "name = \"\"",
    "keepalive = \"-1s\"",
    "= =",
    "\x7f",
    "\x1b[2J",
];

fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(s.len() + 1);
        match rng.below(5) {
            0 if !s.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(s.len());
                s.drain(at.min(s.len())..end);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                for (i, c) in piece.chars().enumerate() {
                    s.insert(at + i, c);
                }
            }
            2 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] = char::from_u32(rng.below(0x3000) as u32).unwrap_or('?');
            }
            3 if !s.is_empty() => {
                // Duplicate a slice (a duplicated key or section, often).
                let start = at.min(s.len() - 1);
                let end = (start + 1 + rng.below(40)).min(s.len());
                let copy: Vec<char> = s[start..end].to_vec();
                for (i, c) in copy.into_iter().enumerate() {
                    s.insert(end + i, c);
                }
            }
            _ => {
                let run = "A".repeat(1 + rng.below(5_000));
                for (i, c) in run.chars().enumerate() {
                    s.insert(at + i, c);
                }
            }
        }
    }
    s.into_iter().collect()
}

fn check_connection_string(input: &str) {
    let got = catch_unwind(AssertUnwindSafe(|| input.parse::<ConnectionString>()));
    let got = got.unwrap_or_else(|_| panic!("the parser panicked on {:?}", short(input)));
    if let Err(e) = got {
        let msg = e.to_string();
        assert!(!msg.is_empty(), "empty error for {:?}", short(input));
        assert!(
            !msg.chars().any(char::is_control),
            "one clean line: {msg:?}"
        );
        assert!(
            !msg.contains("S0VZTUFSSy1zZWNyZXQ") && !msg.contains("KEYMARK"),
            "the key leaked into {msg:?}"
        );
        assert!(
            msg.len() < 400,
            "a short message, not an echo: {} bytes",
            msg.len()
        );
    }
}

fn check_profile(input: &str) {
    let got = catch_unwind(AssertUnwindSafe(|| Profile::parse(input, "fuzz.toml")));
    let got = got.unwrap_or_else(|_| panic!("the parser panicked on {:?}", short(input)));
    match got {
        Ok(p) => {
            // What parses is valid: it has endpoints with real ports and names.
            assert!(!p.endpoints.is_empty());
            assert!(p.endpoints.iter().all(|e| e.port > 0 && !e.name.is_empty()));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("invalid profile fuzz.toml"), "{msg:?}");
            assert!(
                !msg.chars().any(char::is_control),
                "one clean line: {msg:?}"
            );
            assert!(
                msg.chars().count() < 500,
                "a short message, not an echo of the input: {}",
                short(&msg)
            );
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

fn nasty_connection_strings() -> Vec<String> {
    let long = "a".repeat(1 << 20);
    vec![
        String::new(),
        " ".into(),
        "\t\r\n".into(),
        ";".into(),
        ";;;;".into(),
        "=".into(),
        "==;==".into(),
        "\0".into(),
        format!("HostName=h\0;DeviceId=d;SharedAccessKey={KEY}"),
        format!("HostName=h;DeviceId=d;SharedAccessKey={KEY};SharedAccessKey={KEY}"),
        format!("HostName=h;HostName=h;DeviceId=d;SharedAccessKey={KEY}"),
        format!("hostname=h;DEVICEID=d;sharedaccesskey={KEY}"),
        format!("HostName=h;DeviceId=a=b=c;SharedAccessKey={KEY}"),
        "HostName=h;DeviceId=d;SharedAccessKey=KEYMARK==notbase64".into(),
        "HostName=h;DeviceId=d;SharedAccessKey=".into(),
        "HostName=h;DeviceId=d;x509=maybe".into(),
        "HostName=;DeviceId=d;x509=true".into(),
        "HostName=h h;DeviceId=d;x509=true".into(),
        "HostName=h/x;DeviceId=d;x509=true".into(),
        format!("   HostName = h ; DeviceId = d ; SharedAccessKey = {KEY} ;  "),
        format!("HostName={long};DeviceId=d;SharedAccessKey={KEY}"),
        format!("HostName=h;DeviceId={long};SharedAccessKey={KEY}"),
        format!("HostName=h;DeviceId=d;SharedAccessKey={KEY};{long}"),
        format!("{long}=x"),
        long.clone(),
        format!("HostName=h;DeviceId=d;{KEY}"),
        "HostName=hub.example;DeviceId=dévice-東京-🙂;x509=true".into(),
        "HostName=h;DeviceId=\u{202E}d;x509=true".into(),
        format!("\u{FEFF}HostName=h;DeviceId=d;SharedAccessKey={KEY}"),
        "HostName=h;DeviceId=d;Unknown=KEYMARK;x509=true".into(),
        "KEYMARK;HostName=h;DeviceId=d;x509=true".into(),
        ";".repeat(100_000),
        "=;".repeat(100_000),
    ]
}

fn nasty_profiles() -> Vec<String> {
    let good = BUILTIN[0].1;
    vec![
        String::new(),
        " \n\t".into(),
        "\0".into(),
        "name = \"x\"".into(),
        format!("{good}\n{good}"),
        good.replace("port = ", "port = -"),
        good.replace("port = ", "port = 99999"),
        good.replace("keepalive = \"", "keepalive = \"x"),
        format!("a = {}", "[".repeat(100_000)),
        format!("a = {}", "{ b = ".repeat(50_000)),
        format!("{}x = 1", "[a.".repeat(10_000)),
        format!("name = \"{}\"", "n".repeat(1 << 20)),
        format!("name = \"{}\n", "n".repeat(1 << 20)),
        format!("{} = 1", "k".repeat(1 << 20)),
        "name = \"x\u{1b}[31mred\" junk".into(),
        format!("{good}\nname = \"again\""),
        "[[endpoints]]\n".repeat(10_000),
        good.replace("name = \"", "name = \"\u{202E}\0"),
        format!("\u{FEFF}{good}"),
        good.replace('\n', "\r\n"),
        "x = \"\\uD800\"".into(),
        "x = 1979-05-27T07:32:00Z\ny = 1e999999".into(),
        "x = 99999999999999999999999999".into(),
    ]
}

#[test]
fn connection_string_parser_survives_the_corpus() {
    for input in nasty_connection_strings() {
        check_connection_string(&input);
    }
    // The key never shows in the error, whatever is wrong next to it.
    let e = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY};Bogus")
        .parse::<ConnectionString>()
        .unwrap_err()
        .to_string();
    assert!(!e.contains(KEY), "{e}");
}

#[test]
fn connection_string_parser_survives_seeded_mutations() {
    let mut rng = Rng(0x5EED_C0DE_2026_0001);
    let bases = [
        format!("HostName=hub.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY}"),
        "HostName=hub.azure-devices.net;DeviceId=dev1;ModuleId=m;x509=true".to_string(),
        format!(
            "HostName=h;DeviceId=d;GatewayHostName=g;SharedAccessKeyName=p;SharedAccessKey={KEY}"
        ),
    ];
    for i in 0..MUTATIONS {
        let input = mutate(&mut rng, &bases[i % bases.len()]);
        check_connection_string(&input);
    }
}

#[test]
fn profile_parser_survives_the_corpus() {
    for input in nasty_profiles() {
        check_profile(&input);
    }
}

#[test]
fn profile_parser_survives_seeded_mutations() {
    let mut rng = Rng(0x5EED_C0DE_2026_0002);
    for i in 0..MUTATIONS {
        let (_, base) = BUILTIN[i % BUILTIN.len()];
        let input = mutate(&mut rng, base);
        check_profile(&input);
    }
}

#[test]
fn invalid_utf8_files_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cs = dir.path().join("cs");
    std::fs::write(&cs, b"HostName=h;DeviceId=\xff\xfe;x509=true").unwrap();
    let out = support::run(&["check", "--connection-string-file", cs.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("not UTF-8"), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, b"name = \"\xc3\x28\"\n").unwrap();
    let out = support::run(&["check", "127.0.0.1", "--profile", profile.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("not UTF-8"), "{}", out.stderr);
}
