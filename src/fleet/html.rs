//! The fleet summary as one self-contained HTML page: inline CSS, SVG charts drawn
//! here and one small inline script (the device search), no external resource, so it
//! opens offline and anywhere. It answers first what an operator asks first: how
//! many devices are OK / WARNING / CRITICAL / UNKNOWN, what is broken where (the
//! incident windows, then the persistent patterns outside them, attributed to a
//! network, a site or the devices), and what to do; then the details.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::model::Verdict;

use super::summary::{DeviceRow, FleetSummary, GroupSummary, IncidentView};

/// HTML-escapes text for element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page's style sheet: full-width layout, verdict colours, tables, charts.
/// Other fleet pages use it too, so they look the same.
pub(crate) const STYLE: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,sans-serif;margin:0;padding:1em 2em;color:#222;background:#fafafa}\
h1{margin:.2em 0}h2{margin:1.2em 0 .4em;border-bottom:2px solid #ddd;padding-bottom:.2em}\
section{background:#fff;border:1px solid #e4e4e4;border-radius:6px;padding:.6em 1em;margin:1em 0}\
table{border-collapse:collapse;margin:.6em 0;width:100%}td,th{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}\
th{background:#f2f2f2;position:sticky;top:0}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.under td{background:#fff0f0}tr.warn td{background:#fff8e6}\
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.4em}\
.note{color:#555;font-size:.9em;margin:.2em 0}\
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:0 2em}\
.chart{width:100%;height:auto;display:block}\
.chart text{font-size:13px;fill:#333}.chart .t{font-size:12px;fill:#555}.chart .ax{stroke:#999}\
.bar{fill:#4a78b0}.succ{fill:none;stroke:#2a8a3a;stroke-width:2}\
.win{fill:#e04040;opacity:.15}.win.network{fill:#e0a000}.grid{stroke:#eee}\
.range{stroke:#4a78b0;stroke-width:2}.p50{fill:#4a78b0}.p90{fill:#223}.p99{fill:#c33}\
.tiles{display:flex;flex-wrap:wrap;gap:1em;margin:.6em 0}\
.tile{flex:1 1 180px;border-radius:6px;padding:.5em 1em;color:#fff}\
.tile .big{font-size:2.2em;font-weight:700;line-height:1.1}.tile summary{cursor:pointer}\
.tile details{font-size:.85em;word-break:break-all}\
.v-ok{background:#2a8a3a}.v-warning{background:#c77800}.v-critical{background:#c0262d}.v-unknown{background:#666}\
.badge{display:inline-block;border-radius:3px;padding:0 .4em;color:#fff;font-size:.85em;font-weight:600}\
.hub{color:#b00;font-weight:600}.scope{font-weight:600}\
ul.todo li{margin:.3em 0}.legend span{display:inline-block;margin-right:1.2em;font-size:.85em}\
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}\
#devsearch{width:100%;max-width:40em;padding:.3em;font-size:1em}\
.scroll{max-height:32em;overflow:auto;border:1px solid #eee}";

/// Width of the charts' coordinate system (they scale to the page's width).
const W: f64 = 1200.0;

/// The success share of a phase below which its row is highlighted.
pub const SUCCESS_TARGET: f64 = 0.99;

/// The most devices listed on the page.
pub const DEVICES_LISTED: usize = 20_000;

/// Opening tag of a chart that scales to the width of its container.
fn svg_open(id: &str, w: f64, h: f64, label: &str) -> String {
    format!(
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"xMinYMin meet\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    )
}

/// Horizontal bars with a value scale: (label, value, note).
fn bars(id: &str, title: &str, unit: &str, rows: &[(String, f64, String)]) -> String {
    let w = 700.0;
    let (left, right) = (220.0, 190.0);
    let plot_w = w - left - right;
    let h = 24.0 * rows.len().max(1) as f64 + 48.0;
    let max = nice_max(rows.iter().map(|r| r.1).fold(0.0, f64::max));
    let mut o = format!(
        "<figure><figcaption>{}</figcaption>{}",
        esc(title),
        svg_open(id, w, h, title)
    );
    if rows.is_empty() {
        let _ = write!(o, "<text x=\"10\" y=\"20\">none</text>");
    }
    let axis_y = h - 36.0;
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let x = left + plot_w * i as f64 / 4.0;
        let _ = write!(
            o,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"{axis_y:.1}\" class=\"grid\"/><text x=\"{x:.1}\" y=\"{:.1}\" class=\"t\" text-anchor=\"middle\">{}</text>",
            axis_y + 14.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"t\" text-anchor=\"middle\">{}</text>",
        left + plot_w / 2.0,
        axis_y + 30.0,
        esc(unit)
    );
    for (i, (label, v, note)) in rows.iter().enumerate() {
        let y = 5.0 + i as f64 * 24.0;
        let bw = if max > 0.0 { v / max * plot_w } else { 0.0 };
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\" class=\"l\">{}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"18\" class=\"bar\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 14.0,
            esc(&shorten(label, 34)),
            esc(label),
            esc(note),
            left + bw + 6.0,
            y + 14.0,
            esc(note)
        );
    }
    o.push_str("</svg></figure>\n");
    o
}

/// A round upper bound of a scale (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
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
        "<figure><figcaption>Phase latency of successful phases (p50 ● p90 ▮ p99 |, log scale)</figcaption>{}",
        svg_open("latency", W, h, "phase latency")
    );
    let (lo, hi) = (0.1f64.log10(), 100_000f64.log10());
    let x = |v: f64| 260.0 + (v.max(0.1).log10() - lo) / (hi - lo) * (W - 300.0);
    for t in [1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0] {
        let _ = write!(
            o,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{1:.1}\" class=\"grid\"/><text x=\"{0:.1}\" y=\"{2:.1}\" class=\"t\" text-anchor=\"middle\">{3} ms</text>",
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

/// Colours of the timeline's causes, in order of first use (most devices first).
const PALETTE: [&str; 9] = [
    "#d08040", "#8e44ad", "#2e86c1", "#c0392b", "#16a085", "#b7950b", "#7f8c8d", "#d35400",
    "#34495e",
];

/// Tick step for a span of `span_ms`: the smallest of the usual steps giving at
/// most `max_ticks` ticks.
pub(crate) fn tick_step_ms(span_ms: f64, max_ticks: f64) -> i64 {
    const MIN: i64 = 60_000;
    let steps = [
        MIN,
        2 * MIN,
        5 * MIN,
        10 * MIN,
        15 * MIN,
        30 * MIN,
        60 * MIN,
        120 * MIN,
        180 * MIN,
        360 * MIN,
        720 * MIN,
        1440 * MIN,
        2 * 1440 * MIN,
        7 * 1440 * MIN,
        14 * 1440 * MIN,
        30 * 1440 * MIN,
        91 * 1440 * MIN,
        365 * 1440 * MIN,
    ];
    for s in steps {
        if span_ms / s as f64 <= max_ticks {
            return s;
        }
    }
    (span_ms / max_ticks).ceil().max(1.0) as i64
}

/// Success share of checks, devices per cause per bucket (stacked), flagged
/// windows shaded; a time axis in UTC and a device scale.
fn timeline(v: &IncidentView) -> String {
    let h = 300.0;
    let (left, right, top) = (60.0, 60.0, 10.0);
    let plot = h - 60.0; // bottom of the plot area
    let mut o = format!(
        "<figure><figcaption>Over time, {} s buckets (UTC): devices failing per cause (stacked bars, left scale; a device failing two ways counts in both), share of checks that succeeded (green line, right scale), flagged incident windows (shaded)</figcaption>{}",
        v.bucket_s,
        svg_open("timeline", W, h, "timeline")
    );
    let (Some(first), Some(last)) = (v.timeline.first(), v.timeline.last()) else {
        o.push_str("<text x=\"10\" y=\"20\">no data</text></svg></figure>\n");
        return o;
    };
    let bucket_ms = v.bucket_s as f64 * 1000.0;
    let t0 = first.start_ms as f64;
    let t1 = last.start_ms as f64 + bucket_ms;
    let pw = W - left - right;
    let x = |t: f64| left + (t - t0) / (t1 - t0).max(1.0) * pw;
    // Causes by total devices, most first; beyond the palette: "other".
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for b in &v.timeline {
        for (sig, n) in &b.by_signature {
            *totals.entry(sig.as_str()).or_default() += n;
        }
    }
    let mut order: Vec<(&str, u64)> = totals.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let colour = |sig: &str| -> usize {
        order
            .iter()
            .position(|(s, _)| *s == sig)
            .unwrap_or(PALETTE.len() - 1)
            .min(PALETTE.len() - 1)
    };
    let maxd = nice_max(
        v.timeline
            .iter()
            .map(|b| b.by_signature.iter().map(|s| s.1).sum::<u64>())
            .max()
            .unwrap_or(0) as f64,
    );
    let y_dev = |n: f64| plot - n / maxd * (plot - top);
    // Grid and device scale (left), success scale (right).
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let y = y_dev(maxd * f);
        let _ = write!(
            o,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"t\" text-anchor=\"end\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"t\">{}%</text>",
            W - right,
            left - 6.0,
            y + 4.0,
            fmt_num(maxd * f),
            W - right + 6.0,
            y + 4.0,
            (f * 100.0).round()
        );
    }
    let _ = write!(
        o,
        "<text x=\"12\" y=\"{:.1}\" class=\"t\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">devices</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"t\" transform=\"rotate(90 {:.1} {:.1})\" text-anchor=\"middle\">checks OK</text>",
        (plot + top) / 2.0,
        (plot + top) / 2.0,
        W - 12.0,
        (plot + top) / 2.0,
        W - 12.0,
        (plot + top) / 2.0
    );
    for w in &v.windows {
        let a = super::record::parse_time_ms(&w.from).unwrap_or(0) as f64;
        let b = super::record::parse_time_ms(&w.to).unwrap_or(0) as f64;
        let _ = write!(
            o,
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" class=\"win {}\"><title>{}</title></rect>",
            x(a),
            (x(b) - x(a)).max(2.0),
            plot - top,
            esc(&w.likely_cause),
            esc(&w.summary)
        );
    }
    let bw = (pw / ((t1 - t0) / bucket_ms).max(1.0) - 0.5).max(1.0);
    let mut line = String::new();
    for b in &v.timeline {
        let bx = x(b.start_ms as f64);
        let mut acc = 0.0;
        let mut sigs: Vec<&(String, u64)> = b.by_signature.iter().collect();
        sigs.sort_by_key(|s| colour(&s.0));
        for (sig, n) in sigs {
            let y1 = y_dev(acc);
            acc += *n as f64;
            let y2 = y_dev(acc);
            let _ = write!(
                o,
                "<rect x=\"{bx:.1}\" y=\"{y2:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\" class=\"cause\"><title>{}: {n} devices {}</title></rect>",
                (y1 - y2).max(0.0),
                PALETTE[colour(sig)],
                esc(&b.start),
                esc(sig)
            );
        }
        if b.checks > 0 {
            let share = 1.0 - b.failed_checks as f64 / b.checks as f64;
            let _ = write!(
                line,
                "{:.1},{:.1} ",
                bx + bw / 2.0,
                plot - share * (plot - top)
            );
        }
    }
    let _ = write!(o, "<polyline points=\"{line}\" class=\"succ\"/>");
    // Time axis.
    let _ = write!(
        o,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{plot}\" y2=\"{plot}\" class=\"ax\"/>",
        W - right
    );
    let step = tick_step_ms(t1 - t0, 12.0);
    let mut t = (t0 as i64).div_euclid(step) * step;
    if (t as f64) < t0 {
        t += step;
    }
    let mut last_day = String::new();
    let mut n = 0;
    while (t as f64) <= t1 && n < 40 {
        let s = super::summary::rfc3339_ms(t);
        let day = s[..10].to_string();
        let (l1, l2) = if step >= 86_400_000 {
            (day.clone(), String::new())
        } else if day != last_day {
            (s[11..16].to_string(), day.clone())
        } else {
            (s[11..16].to_string(), String::new())
        };
        last_day = day;
        let tx = x(t as f64);
        let _ = write!(
            o,
            "<line x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{plot}\" y2=\"{:.1}\" class=\"ax\"/><text x=\"{tx:.1}\" y=\"{:.1}\" class=\"t tick\" text-anchor=\"middle\">{}</text><text x=\"{tx:.1}\" y=\"{:.1}\" class=\"t\" text-anchor=\"middle\">{}</text>",
            plot + 5.0,
            plot + 18.0,
            esc(&l1),
            plot + 32.0,
            esc(&l2)
        );
        t = t.saturating_add(step);
        n += 1;
    }
    o.push_str("</svg>");
    // Legend.
    o.push_str("<div class=\"legend\" id=\"timeline-legend\">");
    for (sig, _) in order.iter().take(PALETTE.len()) {
        let _ = write!(
            o,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[colour(sig)],
            esc(sig)
        );
    }
    o.push_str("<span><i style=\"background:#2a8a3a;height:.25em\"></i>checks OK</span><span><i style=\"background:#e04040;opacity:.3\"></i>window flagged: hub-side</span><span><i style=\"background:#e0a000;opacity:.3\"></i>window flagged: network-side</span></div></figure>\n");
    o
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "v-ok",
        Verdict::Warning => "v-warning",
        Verdict::Critical => "v-critical",
        Verdict::Unknown => "v-unknown",
    }
}

/// The headline: devices per verdict of their latest report, each tile listing them.
fn verdict_tiles(s: &FleetSummary) -> String {
    let lv = &s.overall.latest_verdicts;
    let mut o = String::from("<div class=\"tiles\" id=\"verdicts\">");
    for (v, n) in [
        (Verdict::Ok, lv.ok),
        (Verdict::Warning, lv.warning),
        (Verdict::Critical, lv.critical),
        (Verdict::Unknown, lv.unknown),
    ] {
        let names: Vec<&str> = s
            .device_rows
            .iter()
            .filter(|d| d.verdict == v)
            .map(|d| d.device.as_str())
            .collect();
        let _ = write!(
            o,
            "<div class=\"tile {}\" id=\"tile-{}\"><div class=\"big\">{n}</div>{} device{}",
            verdict_class(v),
            v.label().to_lowercase(),
            v.label(),
            if n == 1 { "" } else { "s" }
        );
        if !names.is_empty() && v != Verdict::Ok {
            let shown = names.len().min(200);
            let _ = write!(
                o,
                "<details><summary>which</summary>{}{}</details>",
                names[..shown]
                    .iter()
                    .map(|n| esc(n))
                    .collect::<Vec<_>>()
                    .join(", "),
                if names.len() > shown {
                    format!(" … and {} more (see the device list)", names.len() - shown)
                } else {
                    String::new()
                }
            );
        }
        o.push_str("</div>");
    }
    o.push_str("</div>\n");
    o
}

/// The device list, worst first, with a search box (inline script, offline).
fn device_list(rows: &[DeviceRow]) -> String {
    let mut o = String::from(
        "<h2 id=\"devices-h\">Devices, worst first</h2><section><p class=\"note\">Latest verdict of each device and its latest failed phase (endpoint/phase class). Type to filter by any part of a row (device, site, network, failure).</p><input id=\"devsearch\" type=\"search\" placeholder=\"filter devices: name, site, network, failure class…\" aria-label=\"filter devices\"> <span id=\"devcount\" class=\"note\"></span><div class=\"scroll\"><table id=\"devices\"><thead><tr><th>device</th><th>latest verdict</th><th>latest report</th><th>site</th><th>network</th><th>latest failure (any report)</th><th>failed at</th></tr></thead><tbody>",
    );
    for d in rows.iter().take(DEVICES_LISTED) {
        let _ = write!(
            o,
            "<tr><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.device),
            verdict_class(d.verdict),
            d.verdict.label(),
            esc(&d.latest),
            esc(&d.site),
            esc(&d.network),
            esc(d.last_failure.as_deref().unwrap_or("–")),
            esc(d.last_failure_at.as_deref().unwrap_or(""))
        );
    }
    o.push_str("</tbody></table></div>");
    if rows.len() > DEVICES_LISTED {
        let _ = write!(
            o,
            "<p class=\"note\">The {} healthiest devices are not listed.</p>",
            rows.len() - DEVICES_LISTED
        );
    }
    o.push_str(
        "<script>(function(){var q=document.getElementById('devsearch'),c=document.getElementById('devcount'),rows=document.querySelectorAll('#devices tbody tr');\
function f(){var s=q.value.toLowerCase(),n=0;for(var i=0;i<rows.length;i++){var m=!s||rows[i].textContent.toLowerCase().indexOf(s)>=0;rows[i].style.display=m?'':'none';if(m)n++;}c.textContent=n+' of '+rows.length+' shown';}\
q.addEventListener('input',f);f();})();</script></section>\n",
    );
    o
}

/// Renders the page.
pub fn render(s: &FleetSummary) -> String {
    let g = &s.overall;
    let mut o = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>hubprobe fleet summary</title><style>{STYLE}</style></head><body>\n"
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
    o.push_str(
        "<p class=\"note\">Each device counts once, by the verdict of its latest report.</p>",
    );
    o.push_str(&verdict_tiles(s));

    o.push_str("<h2>What is broken where, and what to do</h2><section>\n<h3>Incidents: many devices failing the same way at once</h3>\n");
    if s.incidents.windows.is_empty() {
        o.push_str("<p>No window where many devices failed the same way at once.</p>\n");
    }
    o.push_str("<ul id=\"incidents\" class=\"todo\">");
    for w in &s.incidents.windows {
        let _ = write!(
            o,
            "<li><span class=\"{}\">{}</span>: {}</li>",
            if w.likely_cause == "hub" {
                "hub"
            } else {
                "scope"
            },
            esc(&w.likely_cause.to_uppercase()),
            esc(&w.summary)
        );
    }
    o.push_str("</ul>\n<h3>Persistent problems (outside the incident windows)</h3>\n");
    if s.persistent.is_empty() {
        o.push_str("<p>Nothing that stays once the incident windows are taken away.</p>\n");
    }
    o.push_str("<ul id=\"persistent\" class=\"todo\">");
    for p in &s.persistent {
        let _ = write!(
            o,
            "<li data-signature=\"{}\" data-scope=\"{}\"><span class=\"scope\">{}</span>: {}</li>",
            esc(&p.signature),
            esc(&p.scope),
            esc(&match &p.confined_to {
                Some(c) => c.clone(),
                None => "devices everywhere".into(),
            }),
            esc(&p.summary)
        );
    }
    o.push_str("</ul></section>\n");
    o.push_str(&timeline(&s.incidents));

    if !s.groups.is_empty() {
        let key = s.groups.first().map(|e| e.label.as_str()).unwrap_or("");
        let _ = write!(
            o,
            "<h2>By {}</h2><p class=\"note\">Devices by the verdict of their latest report; the top failure outside the incident windows shows a group's own trouble even when an incident touched every group. Rows with a critical device are highlighted.</p>\n<table id=\"groups\"><tr><th>{}</th><th class=\"n\">devices</th><th class=\"n\">reports</th><th class=\"n\">OK</th><th class=\"n\">warning</th><th class=\"n\">critical</th><th class=\"n\">unknown</th><th>top failure outside incidents</th><th>top failure, all reports</th></tr>",
            esc(key),
            esc(key)
        );
        for e in &s.groups {
            let lv = &e.summary.latest_verdicts;
            let cls = if lv.critical > 0 {
                " class=\"under\""
            } else if lv.warning > 0 {
                " class=\"warn\""
            } else {
                ""
            };
            let _ = write!(
                o,
                "<tr{cls}><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n warning\">{}</td><td class=\"n critical\">{}</td><td class=\"n\">{}</td><td class=\"outside\">{}</td><td>{}</td></tr>",
                esc(&e.value),
                e.summary.devices,
                e.summary.reports,
                lv.ok,
                lv.warning,
                lv.critical,
                lv.unknown,
                e.top_failure_outside_incidents
                    .as_ref()
                    .map(|c| esc(&format!("{} ({} devices)", c.class, c.devices)))
                    .unwrap_or_else(|| "–".into()),
                e.summary
                    .failure_classes
                    .first()
                    .map(|c| esc(&format!("{} ({} devices)", c.class, c.devices)))
                    .unwrap_or_else(|| "–".into())
            );
        }
        o.push_str("</table>\n");
    }

    let _ = write!(
        o,
        "<h2>Endpoints</h2><p class=\"note\">Rows below the {:.0} % success target are highlighted.</p>\n<table id=\"phases\"><tr><th>endpoint</th><th>phase</th><th class=\"n\">success</th><th class=\"n\">ok / attempts</th><th class=\"n\">p50 ms</th><th class=\"n\">p90 ms</th><th class=\"n\">p99 ms</th></tr>",
        SUCCESS_TARGET * 100.0
    );
    for p in &g.phases {
        let d = p.duration_ms;
        let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
        let under = p.success_share.is_some_and(|x| x < SUCCESS_TARGET);
        let _ = write!(
            o,
            "<tr{}><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            if under { " class=\"under\"" } else { "" },
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
    o.push_str("<h2>Failures, trust, keep-alive</h2>\n<div class=\"grid2\">");
    o.push_str(&bars(
        "classes",
        "Failure classes by devices affected (all reports)",
        "devices",
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
        "devices",
        &anchors,
    ));
    let rec: Vec<(String, f64, String)> =
        g.keepalive.recommended_s.iter().map(seconds_bar).collect();
    o.push_str(&bars(
        "keepalive",
        "Recommended keep-alive (tune reports)",
        "reports",
        &rec,
    ));
    let idle: Vec<(String, f64, String)> = g
        .keepalive
        .idle_timeouts_s
        .iter()
        .map(seconds_bar)
        .collect();
    o.push_str(&bars(
        "idle",
        "Measured path idle timeouts (tune reports)",
        "reports",
        &idle,
    ));
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
    o.push_str(&bars(
        "disconnects",
        "Canary disconnects by cause",
        "disconnects",
        &disc,
    ));
    o.push_str("</div>");
    if g.trust.unknown_ca_devices > 0 {
        let _ = write!(
            o,
            "<p>TLS failed with unknown_ca on {} devices: {}</p>",
            g.trust.unknown_ca_devices,
            esc(&g.trust.unknown_ca_examples.join(", "))
        );
    }
    o.push_str(&device_list(&s.device_rows));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round_and_ticks_few() {
        assert!((nice_max(0.0) - 1.0).abs() < 1e-9);
        assert!((nice_max(7.0) - 10.0).abs() < 1e-9);
        assert!((nice_max(13.0) - 20.0).abs() < 1e-9);
        assert!((nice_max(41.0) - 50.0).abs() < 1e-9);
        assert_eq!(tick_step_ms(6.0 * 3_600_000.0, 12.0), 30 * 60_000);
        assert_eq!(tick_step_ms(24.0 * 3_600_000.0, 12.0), 120 * 60_000);
        assert_eq!(tick_step_ms(30.0 * 86_400_000.0, 12.0), 7 * 86_400_000);
        assert!(tick_step_ms(1e15, 12.0) > 0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
