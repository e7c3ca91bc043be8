//! The clock check against real peers: chrony (`chronyd -x`, never touching this
//! machine's clock) as an SNTP server on a loopback port, run under libfaketime
//! so its clock is off by a known amount; NTP refused, silent, and black-holed by
//! nftables in a network namespace; in-process fault servers (Kiss-o'-Death,
//! stratum 0, leap 3, truncated, wrong origin); device certificates made here.
//!
//! libfaketime reaches chronyd through LD_PRELOAD with `FAKETIME=-6m` (relative
//! form): chronyd reads the time with clock_gettime(CLOCK_REALTIME), which
//! libfaketime offsets; no extra flag (FAKETIME_DONT_FAKE_MONOTONIC ...) is needed.
//! (With the `faketime` wrapper the relative form is `faketime -f -6m`; a plain
//! `-6m` is taken for an absolute date and refused.)

mod common;
mod support;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Mosquitto, HUB_HOST};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use serde_json::Value;
use support::{finding, lab_profile, run_with_env};

const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const EXPIRY: u64 = 4_102_444_800;

/// chronyd under faketime, killed on drop.
struct Chrony {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Chrony {
    fn drop(&mut self) {
        // EOF on the watcher's stdin stops chronyd; then the watcher exits.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn program(name: &str) -> PathBuf {
    common::find_program(name)
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install chrony faketime"))
}

/// libfaketime from Debian's `faketime` package.
fn libfaketime() -> PathBuf {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let p = PathBuf::from(dir).join("faketime/libfaketime.so.1");
        if p.is_file() {
            return p;
        }
    }
    panic!("libfaketime.so.1 not found: apt-get install faketime")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One SNTP request from the test itself: the server answers.
fn answers(port: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut p = [0u8; 48];
    p[0] = 0x23;
    p[40] = 1;
    if s.send_to(&p, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 100];
    matches!(s.recv_from(&mut buf), Ok((48, _)))
}

impl Chrony {
    /// chronyd on 127.0.0.1 with its clock shifted by `shift` (faketime's `-f` form).
    fn start(shift: &str) -> Chrony {
        let chronyd = program("chronyd");
        let libfaketime = libfaketime();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_udp_port();
            let conf = dir.path().join("chrony.conf");
            let d = dir.path().display();
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbindaddress 127.0.0.1\nlocal stratum 8\nallow 127.0.0.1\ncmdport 0\n\
                     pidfile {d}/chronyd.pid\ndriftfile {d}/drift\n"
                ),
            )
            .unwrap();
            // The fixture lives in a static (never dropped): a shell watches its
            // stdin, which closes when this test process exits, and then stops chronyd.
            let child = Command::new("sh")
                .args([
                    "-c",
                    "exec 3<&0; \"$0\" -x -d -f \"$1\" </dev/null & p=$!; read _ <&3; kill $p; wait $p",
                ])
                .arg(&chronyd)
                .arg(&conf)
                // libfaketime preloaded straight into chronyd (not through the
                // faketime wrapper, which forks): the watcher's kill reaches chronyd.
                .env("LD_PRELOAD", &libfaketime)
                .env("FAKETIME", shift)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start faketime chronyd");
            let mut c = Chrony {
                child,
                port,
                _dir: dir,
            };
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if answers(port) {
                    return c;
                }
                if let Ok(Some(_)) = c.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("chronyd under faketime {shift} did not answer SNTP on a loopback port");
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// chrony 6 minutes behind this machine: the device looks 6 min ahead.
fn chrony_behind() -> &'static Chrony {
    static C: OnceLock<Chrony> = OnceLock::new();
    C.get_or_init(|| Chrony::start("-6m"))
}

/// chrony 1100 days ahead: the device looks three years behind.
fn chrony_ahead() -> &'static Chrony {
    static C: OnceLock<Chrony> = OnceLock::new();
    C.get_or_init(|| Chrony::start("+1100d"))
}

fn lab() -> &'static Mosquitto {
    static M: OnceLock<Mosquitto> = OnceLock::new();
    M.get_or_init(|| {
        let resource = resource_uri(HUB_HOST, "dev1", None);
        let token = generate_sas_token(&resource, &Secret::new(DEVICE_KEY), EXPIRY)
            .unwrap()
            .token
            .expose()
            .to_string();
        Mosquitto::start(&[(common::hub_username("dev1"), token)])
    })
}

/// A check of the lab broker's MQTT/TLS endpoint by IP (no DNS server needed).
fn check(ntp: &[&str], extra: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let m = lab();
    let ca = m.certs().ca_pem().display().to_string();
    let mut args: Vec<String> = [
        "check",
        "127.0.0.1",
        "--profile",
        &lab_profile(),
        "--endpoint",
        "mqtt-tls",
        "--trust",
        "none",
        "--ca-file",
        &ca,
        "--timeout",
        "5s",
        "--ntp-timeout",
        "2s",
        "-o",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--port".into());
    args.push(format!("mqtt-tls={}", m.port("tls")));
    for n in ntp {
        args.push("--ntp-server".into());
        args.push(n.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_with_env(&argv, env, Duration::from_secs(60));
    let report = out.report();
    (out.code, report)
}

fn sas_env() -> Vec<(&'static str, String)> {
    vec![(
        "IOTHUB_DEVICE_CONNECTION_STRING",
        format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}"),
    )]
}

fn envs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

fn offset(report: &Value) -> f64 {
    report["clock"]["offset_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no clock offset: {:#}", report["clock"]))
}

#[test]
fn sas_device_six_minutes_ahead_is_measured_and_named() {
    let c = chrony_behind();
    let env = sas_env();
    let (code, r) = check(
        &[&c.server()],
        &["--sas-expiry", &EXPIRY.to_string()],
        &envs(&env),
    );
    assert_eq!(r["clock"]["source"], "ntp", "{:#}", r["clock"]);
    assert_eq!(r["clock"]["state"], "ahead");
    let off = offset(&r);
    assert!((off - -360.0).abs() < 0.5, "offset {off}, injected -360");
    let ntp = &r["clock"]["ntp"][0];
    assert_eq!(ntp["status"], "ok");
    assert_eq!(ntp["stratum"], 8);
    assert_eq!(ntp["leap"], 0);
    assert_eq!(ntp["address"], c.server());
    let f = finding(&r, "clock_offset").expect("clock finding");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.contains("6 min ahead") && s.contains("not-yet-valid") && s.contains("401003"),
        "{s}"
    );
    assert_eq!(f["severity"], "warning");
    assert_eq!(r["verdict"], "warning");
    assert_eq!(code, 1);
}

#[test]
fn x509_device_three_years_behind_sees_every_certificate_not_yet_valid() {
    let c = chrony_ahead();
    let certs = lab().certs();
    let cert = certs.client.cert_pem.display().to_string();
    let key = certs.client.key_pem.display().to_string();
    let (_, r) = check(&[&c.server()], &["--cert", &cert, "--key", &key], &[]);
    let off = offset(&r);
    let injected = 1100.0 * 86_400.0;
    assert!(
        (off - injected).abs() < 0.5,
        "offset {off}, injected {injected}"
    );
    assert_eq!(r["clock"]["state"], "behind");
    let f = finding(&r, "clock_offset").expect("clock finding");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.contains("3.0 years behind") && s.contains("every certificate looks not yet valid"),
        "{s}"
    );
    // The lab device certificate (valid for years by the device clock) is judged by true time too.
    let dc = &r["device_certificate"];
    assert_eq!(dc["state_device"], "valid", "{dc:#}");
    assert!(
        dc["days_left_true"].as_f64().unwrap() < dc["days_left_device"].as_f64().unwrap() - 1000.0
    );
    assert_eq!(r["verdict"], "critical");
}

#[test]
fn ntp_refused_or_silent_raises_no_warning() {
    let (code0, base) = check(&["none"], &[], &[]);
    assert_eq!(base["verdict"], "ok", "{base:#}");
    assert!(base["clock"]["ntp"].as_array().is_none_or(|a| a.is_empty()));

    // Refused: nothing listens on that UDP port (ICMP port unreachable).
    let refused = format!("127.0.0.1:{}", free_udp_port());
    // Silent: a socket that reads and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    for (server, status) in [
        (refused.as_str(), "refused"),
        (silent_addr.as_str(), "timeout"),
    ] {
        let (code, r) = check(&[server], &[], &[]);
        assert_eq!(
            r["verdict"], base["verdict"],
            "{server}: {:#}",
            r["findings"]
        );
        assert_eq!(code, code0);
        assert_eq!(r["clock"]["ntp"][0]["status"], status, "{:#}", r["clock"]);
        let f = finding(&r, "ntp_unreachable").expect("info finding");
        assert_eq!(f["severity"], "info");
        assert!(finding(&r, "clock_offset").is_none());
        // Bounded by the NTP timeout (2 s), with slack for a loaded machine.
        assert!(r["clock"]["ntp"][0]["duration_ms"].as_f64().unwrap() < 2_000.0 + 3_000.0);
    }
    drop(silent);
}

#[test]
fn ntp_black_holed_by_nftables_in_a_namespace_is_info_only() {
    // Dropped on input: the request leaves, nothing answers, no ICMP comes back.
    let ns = common::Netns::new();
    let port = 20123;
    ns.nft(&format!(
        "add table inet ntp_blackhole\n\
         add chain inet ntp_blackhole input {{ type filter hook input priority 0; policy accept; }}\n\
         add rule inet ntp_blackhole input udp dport {{ 123, {port} }} drop\n"
    ));
    let run = |ntp: &str| -> Value {
        let e = ns.exec(
            &[
                support::bin(),
                "check",
                "127.0.0.1",
                "--profile",
                "mqtt-broker",
                "--endpoint",
                "mqtt",
                "--port",
                "mqtt=1883",
                "--timeout",
                "2s",
                "--ntp-timeout",
                "2s",
                "--ntp-server",
                ntp,
                "-o",
                "json",
            ],
            Duration::from_secs(30),
        );
        assert!(!e.timed_out, "{}", e.stderr);
        let v: Value = serde_json::from_str(&e.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}\n{}", e.stdout, e.stderr));
        support::assert_valid(&v);
        v
    };
    let without = run("none");
    let with = run(&format!("127.0.0.1:{port}"));
    assert_eq!(with["verdict"], without["verdict"]);
    assert_eq!(
        with["clock"]["ntp"][0]["status"], "timeout",
        "{:#}",
        with["clock"]
    );
    assert_eq!(
        finding(&with, "ntp_unreachable").unwrap()["severity"],
        "info"
    );
    let codes = |r: &Value| -> Vec<String> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] != "ntp_unreachable")
            .map(|f| f["code"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(codes(&with), codes(&without));
}

/// An in-process SNTP server that answers each request with `reply(request)`.
fn fault_server(reply: fn(&[u8]) -> Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let addr = format!("127.0.0.1:{}", s.local_addr().unwrap().port());
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 100];
        for _ in 0..4 {
            let Ok((n, peer)) = s.recv_from(&mut buf) else {
                return;
            };
            let _ = s.send_to(&reply(&buf[..n]), peer);
        }
    });
    (addr, h)
}

fn ntp_now() -> [u8; 8] {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    ((secs << 32) | frac).to_be_bytes()
}

fn good(req: &[u8], stratum: u8, leap: u8, refid: &[u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = (leap << 6) | (4 << 3) | 4;
    p[1] = stratum;
    p[12..16].copy_from_slice(refid);
    p[24..32].copy_from_slice(&req[40..48]);
    p[32..40].copy_from_slice(&ntp_now());
    p[40..48].copy_from_slice(&ntp_now());
    p
}

#[test]
fn fault_ntp_servers_are_classified_not_trusted() {
    type Reply = fn(&[u8]) -> Vec<u8>;
    let cases: [(Reply, &str, Option<&str>); 6] = [
        (|r| good(r, 0, 3, b"RATE"), "kiss_of_death", Some("RATE")),
        (|r| good(r, 0, 3, b"DENY"), "kiss_of_death", Some("DENY")),
        (|r| good(r, 16, 0, b"\0\0\0\0"), "unsynchronized", None),
        (|r| good(r, 2, 3, b"\x7f\0\0\x01"), "unsynchronized", None),
        (|r| good(r, 2, 0, b"LOCL")[..40].to_vec(), "malformed", None),
        (
            |r| {
                let mut p = good(r, 2, 0, b"GPS\0");
                p[31] ^= 0xff; // not this request's origin
                p
            },
            "wrong_origin",
            None,
        ),
    ];
    for (reply, status, kiss) in cases {
        let (server, h) = fault_server(reply);
        let (_, r) = check(&[&server], &[], &[]);
        let n = &r["clock"]["ntp"][0];
        assert_eq!(n["status"], status, "{n:#}");
        assert!(n.get("offset_s").is_none(), "{n:#}");
        if let Some(k) = kiss {
            assert_eq!(n["kiss_code"], k);
        }
        assert_ne!(r["clock"]["source"], "ntp");
        assert_eq!(finding(&r, "ntp_untrusted").unwrap()["severity"], "info");
        assert_eq!(r["verdict"], "ok", "{:#}", r["findings"]);
        drop(h);
    }
}

/// `YYYY, MM, DD` of now + `days`.
fn ymd_in(days: i64) -> (i32, u8, u8) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + days * 86_400;
    let s = hubprobe::model::rfc3339_unix(t as u64);
    (
        s[0..4].parse().unwrap(),
        s[5..7].parse().unwrap(),
        s[8..10].parse().unwrap(),
    )
}

#[test]
fn device_certificates_expiring_expired_and_not_yet_valid() {
    let certs = lab().certs();
    for (stem, from, to, code, severity) in [
        ("soon", -10, 10, "device_cert_expiring", "warning"),
        ("expired", -40, -5, "device_cert_expired", "critical"),
        ("future", 5, 400, "device_cert_not_yet_valid", "critical"),
    ] {
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("dev-{stem}"));
        let (y, m, d) = ymd_in(from);
        p.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd_in(to);
        p.not_after = rcgen::date_time_ymd(y, m, d);
        let id = certs.issue(&format!("device-{stem}"), p);
        let cert = id.cert_pem.display().to_string();
        let key = id.key_pem.display().to_string();
        let (_, r) = check(&["none"], &["--cert", &cert, "--key", &key], &[]);
        let f = finding(&r, code).unwrap_or_else(|| panic!("{stem}: {:#}", r["findings"]));
        assert_eq!(f["severity"], severity, "{stem}");
        assert!(f["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("dev-{stem}")));
        let dc = &r["device_certificate"];
        assert!(dc["not_after_unix"].as_i64().is_some(), "{dc:#}");
    }
}

/// A check of one in-process MQTT/TLS peer with `profile`, trusting `ca` only.
fn check_anchor(profile: &std::path::Path, ca: &std::path::Path, port: u16) -> Value {
    let argv = [
        "check".to_string(),
        "127.0.0.1".into(),
        "--profile".into(),
        profile.display().to_string(),
        "--endpoint".into(),
        "mqtt-tls".into(),
        "--port".into(),
        format!("mqtt-tls={port}"),
        "--trust".into(),
        "none".into(),
        "--ca-file".into(),
        ca.display().to_string(),
        "--timeout".into(),
        "5s".into(),
        "-o".into(),
        "json".into(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_with_env(&argv, &[], Duration::from_secs(60)).report()
}

fn anchor(r: &Value) -> &Value {
    &support::endpoint(r, "mqtt-tls")["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "tls")
        .expect("tls phase")["evidence"]["trust_anchor"]
}

#[test]
fn a_root_with_the_real_g2_name_and_another_key_is_an_impostor() {
    let certs = lab().certs();
    let (root, server) = certs.look_alike_root("g2-impostor", "DigiCert Global Root G2");
    let peer = common::tls_then_with(certs, &server, common::TlsThen::Connack(0));
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("impostor.toml");
    let lab_text = std::fs::read_to_string(lab_profile()).unwrap();
    std::fs::write(
        &profile,
        format!(
            "{lab_text}\n[[trust.anchors]]\nname = \"DigiCert Global Root G2\"\nrole = \"expected\"\n\
             spki_sha256 = \"8bb593a93be1d0e8a822bb887c547890c3e706aad2dab76254f97fb36b82fc26\"\n"
        ),
    )
    .unwrap();
    let r = check_anchor(&profile, &root.cert_pem, peer.port());
    let a = anchor(&r);
    assert_eq!(a["name"], "DigiCert Global Root G2", "{a:#}");
    assert_eq!(a["impostor"], true, "{a:#}");
    assert_eq!(a["expected"], false);
    let f = finding(&r, "trust_anchor_impostor").expect("impostor finding");
    assert_eq!(f["severity"], "warning");
    assert!(f["hint"].as_str().unwrap().contains("TLS-inspecting proxy"));
    assert!(f["summary"].as_str().unwrap().contains("8bb593a9"));
    assert_eq!(r["verdict"], "warning");
}

#[test]
fn the_labs_own_profile_lists_its_root_by_file_and_it_is_expected() {
    let certs = lab().certs();
    let peer = common::tls_then(certs, common::TlsThen::Connack(0));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(certs.ca_pem(), dir.path().join("lab-root.pem")).unwrap();
    let profile = dir.path().join("lab-by-key.toml");
    let lab_text = std::fs::read_to_string(lab_profile()).unwrap();
    std::fs::write(
        &profile,
        format!("{lab_text}\n[[trust.anchors]]\nname = \"hubprobe Test Root CA\"\nrole = \"expected\"\nfile = \"lab-root.pem\"\n"),
    )
    .unwrap();
    let r = check_anchor(&profile, certs.ca_pem(), peer.port());
    let a = anchor(&r);
    assert_eq!(a["expected"], true, "{a:#}");
    assert!(a.get("impostor").is_none());
    let key = a["spki_sha256"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert!(finding(&r, "trust_anchor_unexpected").is_none());
    assert!(finding(&r, "trust_anchor_impostor").is_none());

    // The same profile, a root with the lab root's name and another key: an impostor.
    let (root, server) = certs.look_alike_root("lab-impostor", common::TEST_CA_CN);
    let fake = common::tls_then_with(certs, &server, common::TlsThen::Connack(0));
    let r = check_anchor(&profile, &root.cert_pem, fake.port());
    assert_eq!(anchor(&r)["impostor"], true);
    assert_ne!(anchor(&r)["spki_sha256"].as_str().unwrap(), key);
    assert!(finding(&r, "trust_anchor_impostor").is_some());
}
