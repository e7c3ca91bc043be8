//! The explanation as one self-contained HTML page in the style of the fleet page:
//! inline CSS and SVG, no script, no external resource. Its lists stop at
//! [`MAX_LISTED`] rows (the devices with the most disconnects first; the page says
//! so when some are left out).

use std::fmt::Write;

use super::rules::Explanation;
use super::text::MAX_LISTED;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 860.0;

/// Renders the page.
pub fn render(e: &Explanation) -> String {
    let mut o = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hubprobe fleet explain</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;max-width:900px;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
figure{margin:1.5em 0}figcaption{font-weight:600;margin-bottom:.4em}\
.chart text{font-size:12px;fill:#333}.bar{fill:#4a78b0}.c1{fill:#4a78b0}.c2{fill:#d08040}.c3{fill:#e04040}.cn{fill:#999}\
.hub{color:#b00;font-weight:600}small{color:#666}</style></head><body>\n",
    );
    let _ = write!(
        o,
        "<h1>hubprobe fleet explain</h1><p id=\"overview\">{} devices, {} Connections records{}; {} bad records, {} foreign.</p><p id=\"totals\"><b>{}</b></p>",
        e.totals.devices,
        e.input.records,
        e.span
            .as_ref()
            .map(|s| format!(" from {} to {}", esc(&s.from), esc(&s.to)))
            .unwrap_or_default(),
        e.input.bad,
        e.input.foreign,
        esc(&e.totals.summary)
    );
    // Disconnects by cause.
    let rows: Vec<(&str, &str, u64)> = [
        ("cause 1: SAS token", "c1", "1"),
        ("cause 2: network", "c2", "2"),
        ("cause 3: hub transient", "c3", "3"),
        ("closed by the device", "cn", "none"),
    ]
    .iter()
    .map(|(l, c, k)| (*l, *c, e.totals.by_cause.get(*k).copied().unwrap_or(0)))
    .collect();
    let max = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1) as f64;
    let h = 24.0 * rows.len() as f64 + 10.0;
    let _ = write!(
        o,
        "<figure><figcaption>Disconnects by IoT Hub 404104 cause</figcaption><svg id=\"causes\" class=\"chart\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"disconnects by cause\">"
    );
    for (i, (label, class, n)) in rows.iter().enumerate() {
        let y = 5.0 + i as f64 * 24.0;
        let w = (*n as f64 / max) * (W - 400.0);
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect x=\"200\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" class=\"{class}\"><title>{}: {n}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{n}</text>",
            y + 14.0,
            esc(label),
            esc(label),
            206.0 + w,
            y + 14.0
        );
    }
    o.push_str("</svg></figure>\n<h2>Windows of many devices at once</h2>\n<ul id=\"windows\">");
    if e.windows.is_empty() {
        o.push_str("<li>none</li>");
    }
    for w in &e.windows {
        let _ = write!(
            o,
            "<li><span class=\"{}\">{}</span>: {}</li>",
            if w.iothub_cause == Some(3) { "hub" } else { "" },
            esc(&w.likely_cause.to_uppercase()),
            esc(&w.summary)
        );
    }
    if e.devices.len() > MAX_LISTED {
        let _ = write!(
            o,
            "</ul>\n<h2>Devices</h2>\n<p id=\"devices-bound\">The {MAX_LISTED} devices with the most disconnects of {} (the JSON document lists all).</p>",
            e.devices.len()
        );
    } else {
        o.push_str("</ul>\n<h2>Devices</h2>\n");
    }
    o.push_str("<table id=\"devices\"><tr><th>device</th><th>cause</th><th>class</th><th>disconnects</th><th>why, and the fix</th></tr>");
    for d in e.devices.iter().take(MAX_LISTED) {
        let id = match &d.module_id {
            Some(m) => format!("{}/{m}", d.device_id),
            None => d.device_id.clone(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}<br><small>{}</small><br><i>{}</i></td></tr>",
            esc(&id),
            d.iothub_cause.map(|c| c.to_string()).unwrap_or_else(|| "–".into()),
            esc(&d.dominant_class),
            d.disconnects,
            esc(&d.summary),
            esc(&d.evidence.join("; ")),
            esc(&d.fix)
        );
    }
    o.push_str("</table>\n");
    if let Some(j) = &e.join {
        let _ = write!(
            o,
            "<h2>Joined with the devices' reports</h2><p id=\"join\">{} reports; {} devices; {} hub disconnects matched a device record, {} hub only, {} device only.</p><table id=\"matched\"><tr><th>time</th><th>device</th><th>hub</th><th>device saw</th><th>fix</th></tr>",
            j.reports,
            j.devices_joined,
            j.matched,
            j.hub_only.len(),
            j.device_only.len()
        );
        for a in e
            .disconnects
            .iter()
            .filter(|a| a.device_record.is_some())
            .take(MAX_LISTED)
        {
            let r = a.device_record.as_ref().expect("filtered");
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({:?}, {:+.1} s): {}</td><td>{}</td></tr>",
                esc(&a.time),
                esc(&a.device_id),
                esc(&a.class),
                esc(&r.class),
                r.quality,
                r.residual_s,
                esc(&r.summary),
                esc(&r.fix)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("</body></html>\n");
    o
}
