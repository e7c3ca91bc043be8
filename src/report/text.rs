//! The human view of a report: one line per endpoint phase with ✓/✗ and its time,
//! then the findings and the verdict. Colour only on a terminal without `NO_COLOR`.

use std::fmt::Write as _;

use crate::model::Severity;
use crate::model::{DnsSource, Evidence, FamilyStatus, PhaseResult, Status};
use crate::model::{Report, Verdict};

/// How much to show.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// ANSI colours.
    pub color: bool,
    /// 0: summary lines; 1: + evidence details; 2: + every phase's evidence as JSON.
    pub verbose: u8,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
}

/// Renders the report for a terminal or a log.
pub fn render(report: &Report, opts: TextOptions) -> String {
    let p = Paint { on: opts.color };
    let mut out = String::new();
    let t = &report.target;
    let identity = match (&t.device_id, t.auth.as_str()) {
        (Some(d), auth) => format!("device {}, auth {auth}", clean(d)),
        (None, _) => "no device identity".to_string(),
    };
    let _ = writeln!(
        out,
        "{} {} (profile {}, {identity})",
        p.bold(&format!("hubprobe {}", report.kind)),
        p.bold(&clean(&t.host)),
        clean(&t.profile)
    );
    if let Some(px) = &t.proxy {
        let how = if px.bypassed {
            format!(
                "bypassed: NO_PROXY entry {:?} matches the host, connections go direct",
                px.bypassed_by.as_deref().unwrap_or("")
            )
        } else {
            "every connection goes through it".to_string()
        };
        let _ = writeln!(
            out,
            "proxy {} (from {}): {how}",
            clean(&px.url),
            clean(&px.source)
        );
    }
    for e in &report.endpoints {
        let _ = writeln!(
            out,
            "{} ({} over {}, port {})",
            p.bold(&clean(&e.name)),
            protocol_name(e.protocol),
            transport_name(e.transport),
            e.port
        );
        for ph in &e.phases {
            let _ = writeln!(out, "  {}", phase_line(ph, &p));
            if opts.verbose >= 1 {
                for d in details(ph) {
                    let _ = writeln!(out, "      {}", p.dim(&clean(&d)));
                }
            }
            if opts.verbose >= 2 {
                if let Some(ev) = &ph.evidence {
                    // JSON escapes control characters, but not bidi or invisible ones.
                    let json = serde_json::to_string_pretty(ev).unwrap_or_default();
                    for l in json.lines() {
                        let _ = writeln!(out, "      {}", p.dim(&clean(l)));
                    }
                }
            }
        }
    }
    if let Some(k) = &report.keepalive {
        keepalive_section(&mut out, k, &p);
    }
    if let Some(prov) = &report.provisioning {
        provisioning_section(&mut out, prov, &p, opts);
    }
    if !report.findings.is_empty() {
        let _ = writeln!(out, "{}", p.bold("findings"));
        for f in &report.findings {
            let (mark, label) = match f.severity {
                Severity::Critical => (p.red("✗"), p.red("critical")),
                Severity::Warning => (p.yellow("‼"), p.yellow("warning")),
                Severity::Info => (p.dim("i"), p.dim("info")),
            };
            let scope = if f.endpoints.is_empty() {
                String::new()
            } else {
                format!(" [{}]", clean(&f.endpoints.join(", ")))
            };
            let _ = writeln!(
                out,
                "  {mark} {label} {}{scope}: {}",
                clean(&f.code),
                clean(&f.summary)
            );
            let _ = writeln!(out, "      → {}", clean(&f.hint));
            if let Some(code) = &f.iothub_error {
                let _ = writeln!(out, "      IoT Hub: {}", clean(code));
            }
        }
    }
    let verdict = match report.verdict {
        Verdict::Ok => p.green("OK"),
        Verdict::Warning => p.yellow("WARNING"),
        Verdict::Critical => p.red("CRITICAL"),
        Verdict::Unknown => p.yellow("UNKNOWN"),
    };
    let _ = writeln!(out, "verdict: {verdict} ({})", run_time(report.duration_ms));
    out
}

fn protocol_name(p: crate::model::Protocol) -> &'static str {
    match p {
        crate::model::Protocol::Mqtt => "MQTT",
        crate::model::Protocol::Amqp => "AMQP",
        crate::model::Protocol::Http => "HTTP",
    }
}

fn transport_name(t: crate::model::Transport) -> &'static str {
    match t {
        crate::model::Transport::Tcp => "TCP",
        crate::model::Transport::Tls => "TLS",
        crate::model::Transport::Ws => "WebSocket",
        crate::model::Transport::Wss => "WebSocket/TLS",
    }
}

fn phase_line(ph: &PhaseResult, p: &Paint) -> String {
    let name = format!("{:<9}", ph.phase.as_str());
    match ph.status {
        Status::Ok => format!(
            "{} {name} {:>9}  {}",
            p.green("✓"),
            fmt_ms(ph.duration_ms),
            clean(&summary(ph))
        ),
        Status::Failed => format!(
            "{} {name} {:>9}  {} {}",
            p.red("✗"),
            fmt_ms(ph.duration_ms),
            p.red(ph.class.map(|c| c.id()).unwrap_or("failed")),
            clean(ph.message.as_deref().unwrap_or(""))
        ),
        Status::Skipped => format!(
            "{} {name} {:>9}  {}",
            p.dim("-"),
            "",
            p.dim(&clean(ph.message.as_deref().unwrap_or("skipped")))
        ),
    }
}

/// Milliseconds as seconds with one decimal below 100 s.
fn secs1(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 100.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.0}")
    }
}

/// The tuner's section: the recommendation first, then the measurements behind it.
/// The DPS registration and the chained hub check (indented, rendered as a report).
fn provisioning_section(
    out: &mut String,
    prov: &crate::model::ProvisioningReport,
    p: &Paint,
    opts: TextOptions,
) {
    let status = serde_json::to_value(prov.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} (id scope {}, registration {}{})",
        p.bold("provisioning"),
        clean(&prov.id_scope),
        clean(&prov.registration_id),
        if prov.enrollment_group {
            ", enrollment group key"
        } else {
            ""
        }
    );
    let mut line = format!("  registration: {}", clean(&status));
    if let Some(s) = prov.http_status {
        line.push_str(&format!(" (status {s}"));
        if let Some(c) = prov.error_code {
            line.push_str(&format!(", error {c}"));
        }
        line.push(')');
    }
    if prov.polls > 0 {
        line.push_str(&format!(", {} polls", prov.polls));
    }
    if let Some(ep) = &prov.endpoint {
        line.push_str(&format!(" on {}", clean(ep)));
    }
    let _ = writeln!(out, "{line}");
    if let (Some(hub), Some(dev)) = (&prov.assigned_hub, &prov.device_id) {
        let _ = writeln!(
            out,
            "  assigned hub {} as device {}",
            clean(hub),
            clean(dev)
        );
    }
    if let Some(c) = prov.class {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            p.red("✗"),
            c.id(),
            clean(prov.message.as_deref().unwrap_or(""))
        );
    } else if let Some(m) = &prov.message {
        let _ = writeln!(out, "  {}", clean(m));
    }
    if let Some(s) = prov.retry_after_s {
        let _ = writeln!(out, "  retry-after {s} s");
    }
    if let Some(hub) = &prov.hub {
        let _ = writeln!(out, "  {}", p.bold("hub check"));
        for l in render(hub, opts).lines() {
            let _ = writeln!(out, "    {l}");
        }
    }
}

fn keepalive_section(out: &mut String, k: &crate::tune::run::KeepaliveReport, p: &Paint) {
    let r = &k.recommendation;
    let path = match &k.discovery {
        Some(d) => match (
            d.longest_survived_ms,
            d.shortest_failed_ms,
            d.no_drop_up_to_ms,
        ) {
            (Some(ok), Some(fail), _) => format!(
                "; the path drops idle flows after {}–{} s",
                secs1(ok),
                secs1(fail)
            ),
            (None, Some(fail), _) => {
                format!("; the path drops flows idle for {} s or less", secs1(fail))
            }
            (_, None, Some(upto)) => format!("; no idle drop up to {} s", upto / 1000),
            _ => String::new(),
        },
        None => "; idle timeout not measured".to_string(),
    };
    let confidence = format!("{:?}", r.confidence).to_lowercase();
    let _ = writeln!(
        out,
        "{}",
        p.bold(&format!(
            "keep-alive ({} mode, endpoint {})",
            clean(&k.mode.to_string()),
            clean(&k.endpoint)
        ))
    );
    let _ = writeln!(
        out,
        "  {} keep-alive {} s (PINGRESP timeout {} s, TCP_USER_TIMEOUT {} s){path}; confidence {confidence}",
        p.green("→"),
        r.keepalive_s,
        r.pingresp_timeout_s,
        r.tcp_user_timeout_s
    );
    let _ = writeln!(
        out,
        "    per device {}–{} s (random spread), about {} bytes a day",
        r.spread.min_s, r.spread.max_s, r.bytes_per_day
    );
    let st = &k.stability;
    let loss = st
        .loss_rate
        .map(|l| format!("{:.1} %", l * 100.0))
        .unwrap_or_else(|| "-".into());
    let warm = &st.warm;
    let pct = warm
        .rtt_percentiles
        .map(|q| {
            format!(
                "RTT p50/p95/p99 {:.1}/{:.1}/{:.1} ms",
                q.p50_ms, q.p95_ms, q.p99_ms
            )
        })
        .unwrap_or_else(|| "no RTT".into());
    let rto = warm
        .rto
        .map(|r| format!(", SRTT {:.1} ms, RTO {:.0} ms", r.srtt_ms, r.rto_ms))
        .unwrap_or_default();
    let jitter = warm
        .jitter_ms
        .map(|j| format!(", jitter {j:.1} ms"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  stability: {} samples ({} cold), loss {loss}, {} outage(s); {pct}{rto}{jitter}",
        st.samples,
        st.cold.samples,
        st.outages.len()
    );
    if let Some(d) = &k.discovery {
        let secs = k
            .discovery_ms
            .map(|m| format!(" in {:.0} s", m / 1000.0))
            .unwrap_or_default();
        let kind = match d.drop_kind {
            Some(crate::tune::discovery::DropKind::SilentDrop) => ", silent drop",
            Some(crate::tune::discovery::DropKind::Reset) => ", dropped with a TCP reset",
            Some(crate::tune::discovery::DropKind::OneWay) => ", one-way (downstream lost)",
            Some(crate::tune::discovery::DropKind::Closed) => {
                ", closed in order (a proxy's idle timer)"
            }
            None => "",
        };
        let _ = writeln!(
            out,
            "  discovery{secs}: {} idle probes in {} round(s){kind}{}",
            d.results.len(),
            d.rounds,
            if d.inconsistent {
                ", INCONSISTENT path"
            } else {
                ""
            }
        );
    }
    for reason in &r.reasons {
        let _ = writeln!(out, "    - {}", clean(reason));
    }
    for c in &r.conflicts {
        let _ = writeln!(out, "    {} {}", p.yellow("‼"), clean(c));
    }
}

/// Escapes what could drive or spoof the operator's terminal in strings that came
/// from the network (status lines, certificate subjects, server headers, messages
/// and findings quoting them): every control character (C0, DEL, C1: ESC
/// sequences, carriage returns, ...) and the invisible format characters: the
/// bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C)
/// that reorder a line, zero-width characters, line and paragraph separators, the
/// byte-order mark, interlinear annotations and tag characters. Each becomes its
/// `\u{...}` escape, so what was sent stays readable and visible.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode format (Cf), separator (Zl, Zp) and other default-ignorable characters
/// that render as nothing or change how the rest of a line is shown.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD // soft hyphen
            | 0x034F // combining grapheme joiner
            | 0x061C // Arabic letter mark (bidi)
            | 0x115F | 0x1160 | 0x3164 | 0xFFA0 // Hangul fillers
            | 0x17B4 | 0x17B5
            | 0x180B..=0x180F // Mongolian selectors and vowel separator
            | 0x200B..=0x200F // zero-width space/joiners, LRM, RLM
            | 0x2028..=0x202E // line/paragraph separators, bidi embeddings and overrides
            | 0x2060..=0x206F // word joiner, invisible operators, bidi isolates, deprecated formats
            | 0xFE00..=0xFE0F // variation selectors
            | 0xFEFF // byte-order mark / zero-width no-break space
            | 0xFFF9..=0xFFFB // interlinear annotations
            | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A // musical symbol format characters
            | 0xE0000..=0xE0FFF // tags and variation selectors supplement
    )
}

/// A run's wall time: sub-millisecond runs keep a decimal (not "0 ms"), long ones
/// are in seconds.
fn run_time(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn fmt_ms(d: Option<f64>) -> String {
    match d {
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{ms:.1} ms"),
        None => String::new(),
    }
}

/// The one-line gist of a successful phase's evidence.
fn summary(ph: &PhaseResult) -> String {
    let Some(ev) = ph.evidence() else {
        return String::new();
    };
    match ev {
        Evidence::Dns(ev) => {
            let addrs: Vec<String> = ev.addresses.iter().map(|a| a.to_string()).collect();
            match &ev.left_to_proxy {
                Some(hub) => format!(
                    "proxy {} → {} ({}); {hub} left to the proxy",
                    ev.query,
                    addrs.join(", "),
                    dns_source(ev.source)
                ),
                None => format!("{} ({})", addrs.join(", "), dns_source(ev.source)),
            }
        }
        Evidence::Tcp(ev) => format!(
            "{} from {}",
            ev.remote_address.as_deref().unwrap_or("?"),
            ev.local_address.as_deref().unwrap_or("?")
        ),
        Evidence::Tls(ev) => {
            let anchor = ev.trust_anchor.as_ref().map_or("?", |a| a.name.as_str());
            let days = ev.leaf_days_left.unwrap_or(f64::NAN);
            let mut out = format!(
                "{} {}, root \"{anchor}\", leaf expires in {days:.0} d",
                ev.version.as_deref().unwrap_or("?"),
                ev.cipher_suite.as_deref().unwrap_or("?")
            );
            if let Some(alpn) = &ev.alpn {
                let _ = write!(out, ", ALPN {alpn}");
            }
            out
        }
        Evidence::Websocket(ev) => format!(
            "HTTP {} subprotocol {}",
            ev.status.unwrap_or(0),
            ev.subprotocol.as_deref().unwrap_or("-")
        ),
        Evidence::Mqtt(ev) => {
            let connack = ev.connack.as_ref().map_or("?", |c| c.name.as_str());
            let mut out = format!("CONNACK {connack}");
            if !ev.ping_rtts_ms.is_empty() {
                let v = &ev.ping_rtts_ms;
                let avg = v.iter().sum::<f64>() / v.len() as f64;
                let _ = write!(out, ", {} pings avg {avg:.1} ms", v.len());
            }
            if let Some(note) = &ev.note {
                let _ = write!(out, " — {note}");
            }
            out
        }
        Evidence::Amqp(ev) => amqp_line(ev),
        Evidence::Proxy(ev) => {
            let mut out = match (ev.status, ev.socks_reply) {
                (Some(st), _) => format!(
                    "{} → {st} {}",
                    ev.request_line.as_deref().unwrap_or("CONNECT"),
                    ev.reason.as_deref().unwrap_or("")
                )
                .trim_end()
                .to_string(),
                (None, Some(r)) => format!("SOCKS5 CONNECT {} → reply {r}", ev.target),
                (None, None) => format!("{} tunnel to {}", ev.scheme, ev.target),
            };
            let _ = write!(
                out,
                " via {} (hub name resolved by the {})",
                ev.proxy_address.as_deref().unwrap_or("?"),
                ev.resolved_by
            );
            out
        }
        Evidence::Http(ev) => {
            let mut out = ev.status_line.as_deref().unwrap_or("?").to_string();
            if let Some(off) = ev.clock_offset_s {
                let _ = write!(out, ", clock offset {off:+.1} s");
            }
            out
        }
    }
}

fn dns_source(s: DnsSource) -> &'static str {
    match s {
        DnsSource::Dns => "dns",
        DnsSource::Hosts => "hosts",
        DnsSource::Literal => "literal",
    }
}

/// Extra lines for `-v`.
fn details(ph: &PhaseResult) -> Vec<String> {
    let Some(ev) = ph.evidence() else {
        return vec![];
    };
    let mut out = Vec::new();
    match ev {
        Evidence::Dns(ev) => {
            if !ev.servers.is_empty() {
                out.push(format!("servers: {}", ev.servers.join(", ")));
            }
            if !ev.cname_chain.is_empty() {
                out.push(format!("CNAME chain: {}", ev.cname_chain.join(" → ")));
            }
            if let Some(hub) = &ev.left_to_proxy {
                out.push(format!(
                    "resolved the proxy's name; the hub name {hub} is left to the proxy"
                ));
            }
            for (fam, f) in [("A", &ev.a), ("AAAA", &ev.aaaa)] {
                let Some(f) = f else { continue };
                let recs: Vec<String> = f
                    .records
                    .iter()
                    .map(|r| format!("{} ttl {}", r.address, r.ttl))
                    .collect();
                let status = match f.status {
                    FamilyStatus::Ok => "ok",
                    FamilyStatus::Failed => "failed",
                };
                let class = f.class.map(|c| format!(" {c}")).unwrap_or_default();
                out.push(format!("{fam}: {status}{class} {}", recs.join(", ")));
            }
        }
        Evidence::Proxy(ev) => {
            for (k, v) in [
                ("Server", &ev.server),
                ("Via", &ev.via),
                ("Proxy-Agent", &ev.proxy_agent),
            ] {
                if let Some(v) = v {
                    out.push(format!("{k}: {v}"));
                }
            }
            if !ev.auth_schemes.is_empty() {
                out.push(format!("proxy asks for: {}", ev.auth_schemes.join(", ")));
            }
            if let Some(m) = &ev.socks_method {
                out.push(format!("SOCKS5 method: {m}"));
            }
            out.push(format!(
                "credentials sent: {}",
                if ev.auth_sent { "yes" } else { "no" }
            ));
        }
        Evidence::Tcp(ev) => {
            for a in &ev.attempts {
                let why = match (a.class, &a.message) {
                    (Some(c), _) => c.id(),
                    (None, Some(m)) => m.as_str(),
                    (None, None) => "",
                };
                out.push(format!("{} {} {why}", a.address, a.status));
            }
        }
        Evidence::Tls(ev) => {
            for (i, c) in ev.chain.iter().enumerate() {
                out.push(format!(
                    "[{i}] {} (issuer {}), valid {} → {}, sha256 {}",
                    c.subject, c.issuer, c.not_before, c.not_after, c.sha256
                ));
            }
            if let Some(a) = &ev.trust_anchor {
                out.push(format!("trust anchor: {} ({})", a.subject, a.origin));
            }
            if let Some(m) = &ev.mtu {
                let tries: Vec<String> = m
                    .attempts
                    .iter()
                    .map(|a| {
                        let mss = a.mss.map_or("?".to_string(), |v| v.to_string());
                        let what = if a.clamped { "MSS" } else { "full MSS" };
                        let class = a.class.map(|c| format!(" {c}")).unwrap_or_default();
                        format!("{what} {mss} {}{class}", a.status)
                    })
                    .collect();
                let num = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
                out.push(format!(
                    "MTU probe to {}: {}; largest working MSS {}, smallest failing {}; interface {} MTU {}, kernel path MTU {}{}",
                    m.address,
                    tries.join(", "),
                    num(m.largest_working_mss),
                    num(m.smallest_failing_mss),
                    m.interface.as_deref().unwrap_or("?"),
                    num(m.interface_mtu),
                    num(m.path_mtu),
                    if m.cut_short { " (cut short by the deadline)" } else { "" }
                ));
            }
        }
        _ => {}
    }
    out
}

/// The AMQP evidence on one line: the header, SASL, put-token, the attached address
/// and the server's container id (or its error condition).
fn amqp_line(ev: &crate::model::AmqpEvidence) -> String {
    let mut out = format!("server header {}", ev.received.as_deref().unwrap_or("?"));
    if let Some(m) = &ev.sasl_mechanism {
        let _ = write!(out, ", SASL {m}");
        if let Some(o) = &ev.sasl_outcome {
            let _ = write!(out, " {o}");
        }
        if !ev.sasl_mechanisms.is_empty() {
            let _ = write!(out, " (offered {})", ev.sasl_mechanisms.join(" "));
        }
    }
    if let Some(c) = ev.cbs_status {
        let _ = write!(out, ", put-token {c}");
    }
    if let Some(a) = &ev.address {
        let attached = ev
            .steps
            .iter()
            .any(|s| s.step == "attach" && s.outcome == "ok");
        let _ = write!(
            out,
            ", {} {a}",
            if attached { "attached" } else { "attach" }
        );
    }
    if let Some(c) = &ev.container_id {
        let _ = write!(out, ", container {c}");
    }
    if let Some(c) = &ev.error_condition {
        let _ = write!(out, ", error {c}");
    }
    if let Some(note) = &ev.note {
        let _ = write!(out, " — {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{clean, run_time};

    #[test]
    fn run_times_read_well() {
        assert_eq!(run_time(0.25), "0.2 ms");
        assert_eq!(run_time(54.4), "54 ms");
        assert_eq!(run_time(61_500.0), "61.5 s");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            clean("HTTP/1.1 200 OK\x1b[2J\r\n"),
            "HTTP/1.1 200 OK\\u{1b}[2J\\r\\n"
        );
        assert_eq!(clean("CN=héllo, O=x"), "CN=héllo, O=x");
    }

    #[test]
    fn bidi_controls_and_invisible_characters_are_escaped() {
        let spoofers = [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200E}',
            '\u{200F}',
            '\u{061C}',
            '\u{200B}',
            '\u{200D}',
            '\u{2028}',
            '\u{2029}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
            '\u{9B}',
            '\u{85}',
            '\u{7F}',
            '\u{0}',
        ];
        for c in spoofers {
            let got = clean(&format!("a{c}b"));
            assert!(!got.contains(c), "U+{:04X} kept raw", c as u32);
            assert_eq!(got, format!("a{}b", c.escape_default()));
        }
        // Ordinary text in any script, and emoji, stay as they are.
        for s in ["Zürich", "東京", "مرحبا", "Ωmega", "✓ ok"] {
            assert_eq!(clean(s), s);
        }
    }
}
