//! The fleet summary as one self-contained HTML page: inline CSS and SVG charts
//! drawn here, no script, no external resource, so it opens offline and anywhere.

use std::fmt::Write;

use super::summary::{FleetSummary, GroupSummary, IncidentView};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 860.0;

/// Horizontal bars: (label, value, note).
fn bars(id: &str, title: &str, rows: &[(String, f64, String)]) -> String {
    let mut o = String::new();
    let h = 24.0 * rows.len().max(1) as f64 + 10.0;
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let _ = write!(
        o,
        "<figure><figcaption>{}</figcaption><svg id=\"{id}\" class=\"chart\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    if rows.is_empty() {
        let _ = write!(o, "<text x=\"10\" y=\"20\">none</text>");
    }
    for (i, (label, v, note)) in rows.iter().enumerate() {
        let y = 5.0 + i as f64 * 24.0;
        let w = (v / max) * (W - 500.0);
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\" class=\"l\">{}</text><rect x=\"260\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" class=\"bar\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 14.0,
            esc(label),
            esc(label),
            esc(note),
            266.0 + w,
            y + 14.0,
            esc(note)
        );
    }
    o.push_str("</svg></figure>\n");
    o
}

/// Phase latency: p50–p99 ranges on a log axis.
fn latency(g: &GroupSummary) -> String {
    let rows: Vec<_> = g
        .phases
        .iter()
        .filter(|p| p.duration_ms.is_some())
        .collect();
    let h = 24.0 * rows.len().max(1) as f64 + 40.0;
    let mut o = format!(
        "<figure><figcaption>Phase latency of successful phases (p50 ● p90 ▮ p99 |, log scale)</figcaption><svg id=\"latency\" class=\"chart\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"phase latency\">"
    );
    let (lo, hi) = (0.1f64.log10(), 100_000f64.log10());
    let x = |v: f64| 260.0 + (v.max(0.1).log10() - lo) / (hi - lo) * (W - 280.0);
    for t in [1.0, 10.0, 100.0, 1000.0, 10_000.0] {
        let _ = write!(
            o,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{1:.1}\" class=\"grid\"/><text x=\"{0:.1}\" y=\"{2:.1}\" class=\"t\">{3} ms</text>",
            x(t),
            h - 25.0,
            h - 8.0,
            t
        );
    }
    for (i, p) in rows.iter().enumerate() {
        let d = p.duration_ms.expect("filtered");
        let y = 5.0 + i as f64 * 24.0;
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\" class=\"l\">{} {}</text><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"range\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" class=\"p50\"><title>p50 {:.1} ms</title></circle><rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"14\" class=\"p90\"><title>p90 {:.1} ms</title></rect><rect x=\"{:.1}\" y=\"{:.1}\" width=\"2\" height=\"18\" class=\"p99\"><title>p99 {:.1} ms</title></rect>",
            y + 14.0,
            esc(&p.endpoint),
            esc(&p.phase),
            x(d.p50),
            x(d.p99),
            y + 9.0,
            y + 9.0,
            x(d.p50),
            y + 9.0,
            d.p50,
            x(d.p90),
            y + 2.0,
            d.p90,
            x(d.p99),
            y,
            d.p99
        );
    }
    o.push_str("</svg></figure>\n");
    o
}

/// Success share of checks and devices disconnecting per bucket, incidents shaded.
fn timeline(v: &IncidentView) -> String {
    let h = 260.0;
    let mut o = format!(
        "<figure><figcaption>Over time ({} s buckets): share of checks that succeeded (line), devices disconnecting (bars), flagged windows (shaded)</figcaption><svg id=\"timeline\" class=\"chart\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"timeline\">",
        v.bucket_s
    );
    let (Some(first), Some(last)) = (v.timeline.first(), v.timeline.last()) else {
        o.push_str("<text x=\"10\" y=\"20\">no data</text></svg></figure>\n");
        return o;
    };
    let t0 = first.start_ms as f64;
    let t1 = last.start_ms as f64 + v.bucket_s as f64 * 1000.0;
    let x = |t: f64| 40.0 + (t - t0) / (t1 - t0).max(1.0) * (W - 50.0);
    let plot = h - 40.0;
    for w in &v.windows {
        let a = super::record::parse_time_ms(&w.from).unwrap_or(0) as f64;
        let b = super::record::parse_time_ms(&w.to).unwrap_or(0) as f64;
        let _ = write!(
            o,
            "<rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{plot}\" class=\"win {}\"><title>{}</title></rect>",
            x(a),
            (x(b) - x(a)).max(2.0),
            esc(&w.likely_cause),
            esc(&w.summary)
        );
    }
    let maxd = v
        .timeline
        .iter()
        .map(|b| b.disconnected_devices)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bw = ((W - 50.0) / ((t1 - t0) / (v.bucket_s as f64 * 1000.0)).max(1.0)).max(1.0);
    let mut line = String::new();
    for b in &v.timeline {
        let bx = x(b.start_ms as f64);
        let bh = b.disconnected_devices as f64 / maxd * plot * 0.9;
        let _ = write!(
            o,
            "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" class=\"disc\"><title>{}: {} devices disconnected</title></rect>",
            plot - bh,
            esc(&b.start),
            b.disconnected_devices
        );
        if b.checks > 0 {
            let share = 1.0 - b.failed_checks as f64 / b.checks as f64;
            let _ = write!(line, "{:.1},{:.1} ", bx + bw / 2.0, plot - share * plot);
        }
    }
    let _ = write!(
        o,
        "<polyline points=\"{line}\" class=\"succ\"/><text x=\"0\" y=\"12\" class=\"t\">100%</text><text x=\"0\" y=\"{plot}\" class=\"t\">0%</text><text x=\"40\" y=\"{:.1}\" class=\"t\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"t\" text-anchor=\"end\">{}</text></svg></figure>",
        h - 12.0,
        esc(&first.start),
        W - 10.0,
        h - 12.0,
        esc(&last.start)
    );
    o
}

/// Renders the page.
pub fn render(s: &FleetSummary) -> String {
    let g = &s.overall;
    let mut o = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hubprobe fleet summary</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;max-width:900px;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}\
figure{margin:1.5em 0}figcaption{font-weight:600;margin-bottom:.4em}\
.chart text{font-size:12px;fill:#333}.chart .t{font-size:10px;fill:#777}\
.bar{fill:#4a78b0}.disc{fill:#d08040}.succ{fill:none;stroke:#2a8a3a;stroke-width:2}\
.win{fill:#e04040;opacity:.18}.win.network{fill:#e0a000}.grid{stroke:#eee}\
.range{stroke:#4a78b0;stroke-width:2}.p50{fill:#4a78b0}.p90{fill:#223}.p99{fill:#c33}\
.hub{color:#b00;font-weight:600}</style></head><body>\n",
    );
    let _ = write!(
        o,
        "<h1>hubprobe fleet summary</h1><p id=\"overview\">{} devices, {} reports{}; {} repeats dropped, {} lines not used.</p>",
        s.devices,
        s.input.reports,
        s.span
            .as_ref()
            .map(|sp| format!(" from {} to {}", esc(&sp.from), esc(&sp.to)))
            .unwrap_or_default(),
        s.input.duplicates,
        s.input.malformed + s.input.foreign + s.input.unknown_schema
    );
    o.push_str("<h2>Incidents</h2>\n");
    if s.incidents.windows.is_empty() {
        o.push_str("<p>No window where many devices failed the same way at once.</p>\n");
    }
    o.push_str("<ul id=\"incidents\">");
    for w in &s.incidents.windows {
        let _ = write!(
            o,
            "<li><span class=\"{}\">{}</span>: {}</li>",
            if w.likely_cause == "hub" { "hub" } else { "" },
            esc(&w.likely_cause.to_uppercase()),
            esc(&w.summary)
        );
    }
    o.push_str("</ul>\n");
    o.push_str(&timeline(&s.incidents));
    o.push_str("<h2>Endpoints</h2>\n<table id=\"phases\"><tr><th>endpoint</th><th>phase</th><th>success</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th></tr>");
    for p in &g.phases {
        let d = p.duration_ms;
        let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{} ({}/{})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.endpoint),
            esc(&p.phase),
            p.success_share
                .map(|x| format!("{:.1}%", x * 100.0))
                .unwrap_or_else(|| "-".into()),
            p.ok,
            p.attempts,
            f(d.map(|d| d.p50)),
            f(d.map(|d| d.p90)),
            f(d.map(|d| d.p99))
        );
    }
    o.push_str("</table>\n");
    o.push_str(&latency(g));
    let classes: Vec<(String, f64, String)> = g
        .failure_classes
        .iter()
        .map(|c| {
            (
                c.class.clone(),
                c.devices as f64,
                format!(
                    "{} devices{}",
                    c.devices,
                    c.confined_to
                        .as_ref()
                        .map(|x| format!(", all at {x}"))
                        .unwrap_or_default()
                ),
            )
        })
        .collect();
    o.push_str("<h2>Failures</h2>\n");
    o.push_str(&bars(
        "classes",
        "Failure classes by devices affected",
        &classes,
    ));
    let anchors: Vec<(String, f64, String)> = g
        .trust
        .anchors
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                a.devices as f64,
                format!("{} devices", a.devices),
            )
        })
        .collect();
    o.push_str(&bars(
        "anchors",
        "Trust anchors that validated the hub",
        &anchors,
    ));
    if g.trust.unknown_ca_devices > 0 {
        let _ = write!(
            o,
            "<p>TLS failed with unknown_ca on {} devices: {}</p>",
            g.trust.unknown_ca_devices,
            esc(&g.trust.unknown_ca_examples.join(", "))
        );
    }
    o.push_str("<h2>Keep-alive</h2>\n");
    let rec: Vec<(String, f64, String)> =
        g.keepalive.recommended_s.iter().map(seconds_bar).collect();
    o.push_str(&bars("keepalive", "Recommended keep-alive", &rec));
    let idle: Vec<(String, f64, String)> = g
        .keepalive
        .idle_timeouts_s
        .iter()
        .map(seconds_bar)
        .collect();
    o.push_str(&bars("idle", "Measured path idle timeouts", &idle));
    let disc: Vec<(String, f64, String)> = g
        .disconnects
        .iter()
        .map(|c| {
            (
                c.cause.clone(),
                c.events as f64,
                format!("{} disconnects, {} devices", c.events, c.devices),
            )
        })
        .collect();
    o.push_str(&bars("disconnects", "Canary disconnects by cause", &disc));
    if !s.groups.is_empty() {
        o.push_str("<h2>Groups</h2>\n<table id=\"groups\"><tr><th>group</th><th>devices</th><th>reports</th><th>critical (latest)</th><th>top failure</th></tr>");
        for e in &s.groups {
            let _ = write!(
                o,
                "<tr><td>{}={}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.label),
                esc(&e.value),
                e.summary.devices,
                e.summary.reports,
                e.summary.latest_verdicts.critical,
                e.summary
                    .failure_classes
                    .first()
                    .map(|c| esc(&format!("{} ({} devices)", c.class, c.devices)))
                    .unwrap_or_default()
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("</body></html>\n");
    o
}

/// One bar of a chart of seconds values: (label, height, tooltip).
fn seconds_bar(v: &super::summary::ValueCount) -> (String, f64, String) {
    (
        format!("{} s", v.value),
        v.reports as f64,
        format!("{} reports", v.reports),
    )
}
