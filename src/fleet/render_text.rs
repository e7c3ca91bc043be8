//! The fleet summary as text for a person.

use std::fmt::Write;

use super::summary::{FleetSummary, GroupSummary};

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

/// `1 device`, `2 devices`.
fn count(n: impl Into<u64>, noun: &str) -> String {
    let n: u64 = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Renders the summary.
pub fn render(s: &FleetSummary) -> String {
    let mut o = String::new();
    let i = &s.input;
    let _ = writeln!(
        o,
        "hubprobe fleet: {}, {} from {}{}",
        count(s.devices, "device"),
        count(i.reports, "report"),
        count(i.files, "file"),
        s.span
            .as_ref()
            .map(|sp| format!(" ({} → {})", sp.from, sp.to))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "input: {} records, {} repeats dropped, {} malformed, {} foreign, {} of an unknown schema version{}",
        i.records,
        i.duplicates,
        i.malformed,
        i.foreign,
        i.unknown_schema,
        if i.files_skipped.is_empty() {
            String::new()
        } else {
            format!(", {} files skipped (not .json/.ndjson/.jsonl/.avro)", i.files_skipped.len())
        }
    );
    for p in &i.problems {
        let _ = writeln!(o, "  {}:{}: {}: {}", p.file, p.line, p.kind, p.message);
    }
    let listed = i.problems.len() as u64;
    let all = i.malformed + i.foreign + i.unknown_schema;
    if all > listed {
        let _ = writeln!(o, "  … and {} more", all - listed);
    }
    let t = &i.implausible_times;
    if t.reports + t.disconnects > 0 {
        let _ = writeln!(
            o,
            "clock problems: {} reports and {} canary disconnects dated outside {} → {} ({} devices: {}); summarized, but left off the timeline",
            t.reports,
            t.disconnects,
            t.from,
            t.to,
            t.devices,
            t.example_devices.join(", ")
        );
    }
    group(&mut o, &s.overall, "");
    let v = &s.incidents;
    let _ = writeln!(
        o,
        "\nincidents ({} s buckets; a window needs ≥ {} devices failing the same way above their usual level; hub-side needs ≥ {} networks):",
        v.bucket_s, v.min_devices, v.min_networks
    );
    if v.windows.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for w in &v.windows {
        let mut nets: Vec<String> = w
            .networks
            .iter()
            .take(6)
            .map(|n| format!("{} {}", n.value, n.devices))
            .collect();
        if w.networks.len() > 6 {
            nets.push(format!("… ({} more)", w.networks.len() - 6));
        }
        let _ = writeln!(
            o,
            "  {} → {}  {} ({:.0}% of devices): {}\n    networks: {}",
            w.from,
            w.to,
            w.likely_cause.to_uppercase(),
            w.device_share * 100.0,
            w.summary,
            nets.join(", ")
        );
    }
    let _ = writeln!(o, "\npersistent problems (outside the incident windows):");
    if s.persistent.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for p in &s.persistent {
        let _ = writeln!(
            o,
            "  [{}] {}{}",
            p.confined_to.as_deref().unwrap_or("devices everywhere"),
            p.summary,
            if p.example_devices.is_empty() {
                String::new()
            } else {
                format!("\n    e.g. {}", p.example_devices.join(", "))
            }
        );
    }
    for g in &s.groups {
        let _ = writeln!(o, "\n== {}={} ==", g.label, g.value);
        group(&mut o, &g.summary, "  ");
    }
    o
}

fn group(o: &mut String, g: &GroupSummary, ind: &str) {
    let l = &g.latest_verdicts;
    let kinds: Vec<String> = g.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        o,
        "{ind}{} ({}) from {}; latest per device: OK {} · WARNING {} · CRITICAL {} · UNKNOWN {}",
        count(g.reports, "report"),
        kinds.join(", "),
        count(g.devices, "device"),
        l.ok,
        l.warning,
        l.critical,
        l.unknown
    );
    if !g.phases.is_empty() {
        let _ = writeln!(
            o,
            "{ind}endpoints (success share; p50/p90/p99 of successful phases):"
        );
    }
    for p in &g.phases {
        let d = p
            .duration_ms
            .map(|d| format!("{} / {} / {}", ms(d.p50), ms(d.p90), ms(d.p99)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "{ind}  {:<10} {:<9} {:>6} ({}/{})  {}",
            p.endpoint,
            p.phase,
            pct(p.success_share),
            p.ok,
            p.attempts,
            d
        );
    }
    if !g.failure_classes.is_empty() {
        let _ = writeln!(o, "{ind}failure classes (by devices affected):");
    }
    for c in &g.failure_classes {
        let _ = writeln!(
            o,
            "{ind}  {:<24} {} devices, {} failures on {}{}; e.g. {}",
            c.class,
            c.devices,
            c.reports,
            c.endpoints.join(", "),
            c.confined_to
                .as_ref()
                .map(|x| format!(" — all at {x}"))
                .unwrap_or_default(),
            c.example_device
        );
    }
    let t = &g.trust;
    if !t.anchors.is_empty() || t.unknown_ca_devices > 0 {
        let a: Vec<String> = t
            .anchors
            .iter()
            .map(|a| format!("{} ({} devices)", a.name, a.devices))
            .collect();
        let _ = writeln!(o, "{ind}trust anchors: {}", a.join(", "));
        if t.unknown_ca_devices > 0 {
            let _ = writeln!(
                o,
                "{ind}  TLS failed with unknown_ca on {} devices: {}",
                t.unknown_ca_devices,
                t.unknown_ca_examples.join(", ")
            );
        }
    }
    if let Some(p) = g.clock.abs_offset_s {
        let _ = writeln!(
            o,
            "{ind}clock offset |hub − device|: p50 {:.2} s, p90 {:.2} s, p99 {:.2} s; {} devices beyond {} s",
            p.p50, p.p90, p.p99, g.clock.devices_over_warning, g.clock.warning_s
        );
    }
    let k = &g.keepalive;
    if k.tune_reports > 0 {
        let rec: Vec<String> = k
            .recommended_s
            .iter()
            .map(|v| format!("{} s ×{}", v.value, v.reports))
            .collect();
        let _ = writeln!(o, "{ind}keep-alive recommended: {}", rec.join(", "));
        if let Some(p) = k.idle_timeout_s {
            let idle: Vec<String> = k
                .idle_timeouts_s
                .iter()
                .map(|v| format!("{} s ×{}", v.value, v.reports))
                .collect();
            let _ = writeln!(
                o,
                "{ind}idle timeouts measured: p50 {:.0} s, p90 {:.0} s, p99 {:.0} s ({})",
                p.p50,
                p.p90,
                p.p99,
                idle.join(", ")
            );
        }
    }
    if !g.disconnects.is_empty() {
        let d: Vec<String> = g
            .disconnects
            .iter()
            .map(|c| {
                let back = match &c.reconnect_s {
                    Some(p) => format!(
                        ", back after p50 {:.1} s / p90 {:.1} s / p99 {:.1} s",
                        p.p50, p.p90, p.p99
                    ),
                    None => String::new(),
                };
                format!("{} {} ({} devices{back})", c.cause, c.events, c.devices)
            })
            .collect();
        let _ = writeln!(o, "{ind}canary disconnects: {}", d.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1u64, "device"), "1 device");
        assert_eq!(count(0u64, "device"), "0 devices");
        assert_eq!(count(2u32, "file"), "2 files");
    }
}
