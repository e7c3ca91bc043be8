//! `hubprobe check` through real proxies — squid (HTTP CONNECT, Basic auth with
//! `basic_ncsa_auth`), tinyproxy and dante (SOCKS5, with and without user name and
//! password) — inside a network namespace whose nftables drop every direct SYN from
//! hubprobe (uid 0) to the hub's ports: a pass proves the traffic went through the
//! proxy, and the proxy's own log shows the tunnel. Each proxy failure class is
//! caused for real, and the proxy password is in no output, even at trace level.

mod common;
mod support;

use std::time::Duration;

use common::proxies::{self, ProxyProc, SquidConfig, SystemUser};
use common::{Dns, Mosquitto, Netns, HUB_HOST};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use serde_json::Value;
use support::{finding, lab_profile, phase, Run};

const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const EXPIRY: u64 = 4_102_444_800;
const PROXY_PASSWORD: &str = "Pr0xy-pw-7f3a9c";
const LIMIT: Duration = Duration::from_secs(60);

fn lab_token(device: &str) -> String {
    let resource = resource_uri(HUB_HOST, device, None);
    generate_sas_token(&resource, &Secret::new(DEVICE_KEY), EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

/// The hub (mosquitto) and its DNS inside a namespace that drops hubprobe's
/// direct SYNs to the hub's ports.
struct Lab {
    broker: Mosquitto,
    dns: Dns,
    ns: Netns,
}

impl Lab {
    fn start() -> Lab {
        let ns = Netns::new();
        let (broker, dns) = ns.run(|| {
            let users = [(common::hub_username("dev1"), lab_token("dev1"))];
            (Mosquitto::start(&users), Dns::start())
        });
        let ports: Vec<String> = broker.ports().iter().map(|(_, p)| p.to_string()).collect();
        ns.nft(&format!(
            "add table inet hp_proxy\n\
             add chain inet hp_proxy output {{ type filter hook output priority 0; policy accept; }}\n\
             add rule inet hp_proxy output meta skuid 0 ip daddr 127.0.0.1 tcp dport {{ {} }} tcp flags & (syn | ack) == syn drop\n",
            ports.join(", ")
        ));
        Lab { broker, dns, ns }
    }

    fn base_args(&self, endpoints: &str, ports: &str) -> Vec<String> {
        [
            "check",
            "--profile",
            &lab_profile(),
            "--dns-server",
            &self.dns.addr().to_string(),
            "--trust",
            "none",
            "--ca-file",
            &self.broker.certs().ca_pem().display().to_string(),
            "--endpoint",
            endpoints,
            "--port",
            ports,
            "--timeout",
            "3s",
            "--sas-expiry",
            &EXPIRY.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs hubprobe inside the namespace with the lab device's connection string.
    fn run(&self, args: &[String], env: &[(&str, &str)]) -> Run {
        let cs = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}");
        let mut env = env.to_vec();
        env.push(("IOTHUB_DEVICE_CONNECTION_STRING", &cs));
        let mut cmd = self.ns.command(support::bin());
        cmd.args(args);
        support::run_cmd(&mut cmd, &env, LIMIT)
    }

    fn json(&self, mut args: Vec<String>, env: &[(&str, &str)]) -> (Run, Value) {
        args.extend(["-o".into(), "json".into()]);
        let out = self.run(&args, env);
        let report = out.report();
        (out, report)
    }
}

fn class(report: &Value, ep: &str, ph: &str) -> String {
    let p = phase(report, ep, ph);
    assert_eq!(p["status"], "failed", "{ep}/{ph}: {p:#}");
    p["class"].as_str().unwrap().to_string()
}

fn phases(report: &Value, ep: &str) -> Vec<String> {
    support::endpoint(report, ep)["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["phase"].as_str().unwrap(),
                p["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn no_secret(out: &Run) {
    let all = out.all_output();
    assert!(
        !all.contains(PROXY_PASSWORD),
        "the proxy password leaked:\n{all}"
    );
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("alice:{PROXY_PASSWORD}"),
    );
    assert!(
        !all.contains(&basic),
        "the Basic credentials leaked:\n{all}"
    );
}

#[test]
fn squid_carries_the_check_and_names_every_refusal() {
    let lab = Lab::start();
    let tls = lab.broker.port("tls");
    let wss = lab.broker.port("wss");
    let forbidden_port = lab.broker.port("tls_anon");
    let (squid, refused, silent, ntlm) = lab.ns.run(|| {
        let refused = common::refused_port().port();
        let squid = proxies::squid(&SquidConfig {
            connect_ports: vec![tls, wss, refused],
            users: vec![("alice".into(), PROXY_PASSWORD.into())],
            hosts: vec![HUB_HOST.into()],
            read_timeout: None,
        });
        let ntlm = common::garbage(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\nServer: corp-gateway\r\nContent-Length: 0\r\n\r\n".to_vec(),
        );
        (squid, refused, common::silent(), ntlm)
    });
    let sq = squid.port();
    let user_url = format!("http://alice@127.0.0.1:{sq}");
    let pw = [("HUBPROBE_PROXY_PASSWORD", PROXY_PASSWORD)];

    // 1. Through squid: every phase passes although the direct path is dropped.
    let mut args = lab.base_args("mqtt-tls,mqtt-ws", &format!("mqtt-tls={tls},mqtt-ws={wss}"));
    args.extend([HUB_HOST.into(), "--proxy".into(), user_url.clone()]);
    let (out, r) = lab.json(args, &pw);
    no_secret(&out);
    assert_eq!(r["verdict"], "ok", "{}", out.all_output());
    assert_eq!(
        phases(&r, "mqtt-tls"),
        ["dns:ok", "tcp:ok", "proxy:ok", "tls:ok", "mqtt:ok"]
    );
    assert_eq!(
        phases(&r, "mqtt-ws"),
        [
            "dns:ok",
            "tcp:ok",
            "proxy:ok",
            "tls:ok",
            "websocket:ok",
            "mqtt:ok"
        ]
    );
    let px = &phase(&r, "mqtt-tls", "proxy")["evidence"];
    assert_eq!(px["status"], 200);
    assert_eq!(px["scheme"], "http");
    assert_eq!(px["resolved_by"], "proxy");
    assert_eq!(
        px["request_line"],
        format!("CONNECT {HUB_HOST}:{tls} HTTP/1.1")
    );
    assert_eq!(px["auth_sent"], true);
    assert_eq!(px["proxy_address"], format!("127.0.0.1:{sq}"));
    let dns = &phase(&r, "mqtt-tls", "dns")["evidence"];
    assert_eq!(dns["query"], "127.0.0.1");
    assert_eq!(dns["left_to_proxy"], HUB_HOST);
    assert_eq!(
        phase(&r, "mqtt-tls", "tcp")["evidence"]["remote_address"],
        format!("127.0.0.1:{sq}")
    );
    // The password came from HUBPROBE_PROXY_PASSWORD: the URL shows that there is one.
    assert_eq!(
        r["target"]["proxy"]["url"],
        format!("http://alice:***@127.0.0.1:{sq}")
    );
    assert_eq!(r["target"]["proxy"]["source"], "--proxy");
    assert!(
        squid.wait_log(
            &format!("CONNECT {HUB_HOST}:{tls}"),
            Duration::from_secs(10)
        ),
        "squid's access log shows no tunnel:\n{}",
        squid.access_log()
    );

    // 2. The direct path really is dropped.
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([HUB_HOST.into(), "--proxy".into(), "none".into()]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "tcp"), "tcp.timeout");
    assert!(r["target"].get("proxy").is_none());

    // 3. A wrong password, and none.
    let wrong = format!("http://alice:wrong-pass@127.0.0.1:{sq}");
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([HUB_HOST.into(), "--proxy".into(), wrong]);
    let (out, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.auth_required");
    assert!(
        !out.all_output().contains("wrong-pass"),
        "{}",
        out.all_output()
    );
    assert_eq!(
        r["target"]["proxy"]["url"],
        format!("http://alice:***@127.0.0.1:{sq}")
    );
    let ev = &phase(&r, "mqtt-tls", "proxy")["evidence"];
    assert_eq!(ev["status"], 407);
    assert_eq!(ev["auth_schemes"][0], "Basic");
    assert_eq!(phase(&r, "mqtt-tls", "tls")["status"], "skipped");
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("http://127.0.0.1:{sq}"),
    ]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.auth_required");
    assert!(phase(&r, "mqtt-tls", "proxy")["message"]
        .as_str()
        .unwrap()
        .contains("none were given"));

    // 4. A port squid's SSL_ports does not allow (the 8883 case).
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={forbidden_port}"));
    args.extend([HUB_HOST.into(), "--proxy".into(), user_url.clone()]);
    let (_, r) = lab.json(args, &pw);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.forbidden");
    assert_eq!(phase(&r, "mqtt-tls", "proxy")["evidence"]["status"], 403);
    let f = finding(&r, "proxy_only_443").expect("the only-443 finding");
    assert!(f["hint"].as_str().unwrap().contains("WebSocket"), "{f:#}");

    // 5. The proxy cannot reach the hub (nothing listens on an allowed port).
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={refused}"));
    args.extend([HUB_HOST.into(), "--proxy".into(), user_url.clone()]);
    let (_, r) = lab.json(args, &pw);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.target_unreachable");
    let st = phase(&r, "mqtt-tls", "proxy")["evidence"]["status"]
        .as_u64()
        .unwrap();
    assert!((502..=504).contains(&st), "{st}");

    // 6. Ports that are not a proxy: an SSH banner, a server that closes at once.
    let (ssh, closes) = lab.ns.run(|| {
        (
            common::garbage(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec()),
            common::closes(),
        )
    });
    for not_proxy in [ssh.addr(), closes.addr()] {
        let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
        args.extend([
            HUB_HOST.into(),
            "--proxy".into(),
            format!("http://{not_proxy}"),
        ]);
        let (_, r) = lab.json(args, &[]);
        assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.protocol_error");
    }
    // SOCKS5 spoken to squid: squid waits for the rest of an HTTP request, so it
    // is a timeout, and the message points at the scheme.
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("socks5h://127.0.0.1:{sq}"),
    ]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.timeout");
    assert!(phase(&r, "mqtt-tls", "proxy")["message"]
        .as_str()
        .unwrap()
        .contains("scheme"));

    // 7. A silent proxy: named within the timeout.
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("http://{}", silent.addr()),
    ]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.timeout");

    // 8. An NTLM/Negotiate-only proxy.
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("http://{}", ntlm.addr()),
    ]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.auth_unsupported");
    let ev = &phase(&r, "mqtt-tls", "proxy")["evidence"];
    assert_eq!(ev["auth_schemes"], serde_json::json!(["NTLM", "Negotiate"]));
    assert_eq!(ev["server"], "corp-gateway");

    // 9. A proxy that is not there: TCP to the proxy fails, and says it is the proxy.
    let gone = lab.ns.run(|| common::refused_port().port());
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("http://127.0.0.1:{gone}"),
    ]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "tcp"), "tcp.refused");
    assert!(phase(&r, "mqtt-tls", "tcp")["message"]
        .as_str()
        .unwrap()
        .starts_with("proxy 127.0.0.1:"));
    assert!(finding(&r, "proxy_unreachable").is_some());

    // 10. From the environment, password in the URL, at trace level with -vv: the
    //     password is in no output, and the report says where the proxy came from.
    let env_url = format!("http://alice:{PROXY_PASSWORD}@127.0.0.1:{sq}");
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([HUB_HOST.into(), "-vv".into()]);
    let out = lab.run(&args, &[("HTTPS_PROXY", &env_url), ("RUST_LOG", "trace")]);
    no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(out.stdout.contains("(from HTTPS_PROXY)"), "{}", out.stdout);
    assert!(out.stdout.contains("proxy "), "{}", out.stdout);
    let (out, r) = lab.json(
        {
            let mut a = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
            a.push(HUB_HOST.into());
            a
        },
        &[("https_proxy", &env_url), ("RUST_LOG", "trace")],
    );
    no_secret(&out);
    assert_eq!(r["target"]["proxy"]["source"], "https_proxy");
    assert_eq!(r["verdict"], "ok");

    // 11. NO_PROXY sends the hub direct (which the namespace drops).
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.push(HUB_HOST.into());
    let (_, r) = lab.json(
        args,
        &[("HTTPS_PROXY", &env_url), ("NO_PROXY", ".hubprobe.test")],
    );
    assert_eq!(r["target"]["proxy"]["bypassed"], true);
    assert_eq!(r["target"]["proxy"]["bypassed_by"], ".hubprobe.test");
    assert_eq!(class(&r, "mqtt-tls", "tcp"), "tcp.timeout");
    drop(squid);
}

#[test]
fn tinyproxy_is_a_second_http_proxy() {
    let lab = Lab::start();
    let tls_anon = lab.broker.port("tls_anon");
    let other = lab.broker.port("tls");
    let tp: ProxyProc = lab.ns.run(|| proxies::tinyproxy(&[tls_anon]));
    // tinyproxy resolves with the system resolver: the hub is reached as localhost
    // (a name on the lab certificate), anonymously.
    let args = |port: u16| {
        let mut a: Vec<String> = lab.base_args("mqtt-tls", &format!("mqtt-tls={port}"));
        a.extend([
            "localhost".into(),
            "--proxy".into(),
            format!("http://127.0.0.1:{}", tp.port()),
        ]);
        a
    };
    let out = {
        let mut a = args(tls_anon);
        a.extend(["-o".into(), "json".into()]);
        let mut cmd = lab.ns.command(support::bin());
        cmd.args(&a);
        support::run_cmd(&mut cmd, &[], LIMIT)
    };
    let r = out.report();
    assert_eq!(
        phases(&r, "mqtt-tls"),
        ["dns:ok", "tcp:ok", "proxy:ok", "tls:ok", "mqtt:ok"],
        "{}",
        out.all_output()
    );
    assert!(
        tp.wait_log("localhost", Duration::from_secs(10)),
        "{}",
        tp.access_log()
    );
    // A port tinyproxy's ConnectPort does not list.
    let out = {
        let mut a = args(other);
        a.extend(["-o".into(), "json".into()]);
        let mut cmd = lab.ns.command(support::bin());
        cmd.args(&a);
        support::run_cmd(&mut cmd, &[], LIMIT)
    };
    let r = out.report();
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.forbidden");
}

#[test]
fn dante_socks5_resolves_on_the_device_socks5h_on_the_proxy() {
    let lab = Lab::start();
    let tls = lab.broker.port("tls");
    let blocked = lab.broker.port("tls_anon");
    let password = "S0cks-pw-41d2";
    let user = SystemUser::create(password);
    let (open, authed) = lab
        .ns
        .run(|| (proxies::dante(false, &[blocked]), proxies::dante(true, &[])));

    // socks5://: the device resolves the hub (dnsmasq) and sends the address.
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("socks5://127.0.0.1:{}", open.port()),
    ]);
    let (out, r) = lab.json(args, &[]);
    assert_eq!(r["verdict"], "ok", "{}", out.all_output());
    let ev = &phase(&r, "mqtt-tls", "proxy")["evidence"];
    assert_eq!(ev["resolved_by"], "device");
    assert_eq!(ev["socks_reply"], 0);
    assert_eq!(ev["target"], format!("127.0.0.1:{tls}"));
    assert_eq!(phase(&r, "mqtt-tls", "dns")["evidence"]["query"], HUB_HOST);
    assert!(
        open.wait_log(&format!(".{tls}"), Duration::from_secs(10)),
        "{}",
        open.access_log()
    );

    // socks5h://: the proxy resolves the name, and dante cannot (it is the lab's).
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("socks5h://127.0.0.1:{}", open.port()),
    ]);
    let (_, r) = lab.json(args, &[]);
    let ev = &phase(&r, "mqtt-tls", "proxy")["evidence"];
    assert_eq!(ev["resolved_by"], "proxy", "{ev:#}");
    assert_eq!(ev["target"], format!("{HUB_HOST}:{tls}"));
    let c = class(&r, "mqtt-tls", "proxy");
    assert!(
        c == "proxy.target_unreachable" || c == "proxy.rejected",
        "{c}: {:#}",
        phase(&r, "mqtt-tls", "proxy")
    );
    assert_eq!(
        phase(&r, "mqtt-tls", "dns")["evidence"]["left_to_proxy"],
        HUB_HOST
    );

    // A ruleset refusal.
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={blocked}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        format!("socks5://127.0.0.1:{}", open.port()),
    ]);
    let (_, r) = lab.json(args, &[]);
    assert_eq!(class(&r, "mqtt-tls", "proxy"), "proxy.forbidden");
    assert_eq!(phase(&r, "mqtt-tls", "proxy")["evidence"]["socks_reply"], 2);

    // RFC 1929: right, wrong and no credentials.
    let url = |pw: Option<&str>| match pw {
        Some(p) => format!("socks5://{}:{p}@127.0.0.1:{}", user.name, authed.port()),
        None => format!("socks5://127.0.0.1:{}", authed.port()),
    };
    let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
    args.extend([
        HUB_HOST.into(),
        "--proxy".into(),
        url(Some(password)),
        "-vv".into(),
    ]);
    let out = lab.run(&args, &[("RUST_LOG", "trace")]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(!out.all_output().contains(password), "{}", out.all_output());
    for (pw, what) in [(Some("not-it"), "wrong"), (None, "none")] {
        let mut args = lab.base_args("mqtt-tls", &format!("mqtt-tls={tls}"));
        args.extend([HUB_HOST.into(), "--proxy".into(), url(pw)]);
        let (out, r) = lab.json(args, &[]);
        assert_eq!(
            class(&r, "mqtt-tls", "proxy"),
            "proxy.auth_required",
            "{what}"
        );
        assert!(!out.all_output().contains("not-it"));
    }
}

#[test]
fn bad_proxy_settings_are_one_clear_error() {
    for (url, needle) in [
        ("ftp://p:1", "scheme"),
        ("https://p:1", "not supported"),
        ("http://u:topsecret@p:notaport", "port"),
        ("http://p:1/path", "path"),
    ] {
        let out = support::run(&["check", "hub.example", "--proxy", url]);
        assert_eq!(out.code, 3, "{url}: {}", out.all_output());
        assert!(out.stderr.contains(needle), "{url}: {}", out.stderr);
        assert!(out.stderr.contains("--proxy"), "{url}: {}", out.stderr);
        assert!(
            !out.all_output().contains("topsecret"),
            "{}",
            out.all_output()
        );
    }
    // From the environment the error names the variable.
    let out = support::run_with_env(
        &["check", "hub.example"],
        &[("HTTPS_PROXY", "ftp://u:topsecret@p:1")],
        LIMIT,
    );
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("set in HTTPS_PROXY"), "{}", out.stderr);
    assert!(!out.all_output().contains("topsecret"));
    // From the agent's config the error names `[proxy] url`.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[hub]\nhost = \"hub.example\"\n[proxy]\nurl = \"ftp://u:topsecret@p:1\"\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = support::run(&[
        "agent",
        "--config",
        cfg.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--once",
    ]);
    assert!(out.stderr.contains("[proxy] url"), "{}", out.all_output());
    assert!(!out.all_output().contains("topsecret"));
}
