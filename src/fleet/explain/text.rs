//! The explanation for a person: totals, windows, the devices with the most
//! disconnects, then the first disconnects that are not routine token renewals.
//! Each list stops at [`MAX_LISTED`] lines (the output says how many are left out;
//! the JSON document has them all).

use std::fmt::Write;

use super::rules::Explanation;

/// The most devices, disconnects or refused connects one list shows (in text and
/// HTML).
pub const MAX_LISTED: usize = 200;

/// Renders the text output.
pub fn render(e: &Explanation) -> String {
    let mut o = String::new();
    let i = &e.input;
    let _ = writeln!(
        o,
        "hubprobe fleet explain: {} files, {} Connections records, {} foreign, {} bad{}",
        i.files,
        i.records,
        i.foreign,
        i.bad,
        e.span
            .as_ref()
            .map(|s| format!(", {} to {}", s.from, s.to))
            .unwrap_or_default()
    );
    for b in &i.bad_records {
        let _ = writeln!(
            o,
            "  bad record {}:{}: {} ({})",
            b.file, b.line, b.message, b.kind
        );
    }
    if i.bad > i.bad_records.len() as u64 {
        let _ = writeln!(o, "  … and {} more", i.bad - i.bad_records.len() as u64);
    }
    let _ = writeln!(o, "\n{} devices; {}", e.totals.devices, e.totals.summary);
    o.push_str("\nWindows of many devices at once:\n");
    if e.windows.is_empty() {
        o.push_str("  none\n");
    }
    for w in &e.windows {
        let _ = writeln!(o, "  [{}] {}", w.likely_cause, w.summary);
    }
    if e.devices.len() > MAX_LISTED {
        let _ = writeln!(
            o,
            "\nDevices (the {MAX_LISTED} with the most disconnects of {}; -o json lists all):",
            e.devices.len()
        );
    } else {
        o.push_str("\nDevices:\n");
    }
    for d in e.devices.iter().take(MAX_LISTED) {
        let id = match &d.module_id {
            Some(m) => format!("{}/{m}", d.device_id),
            None => d.device_id.clone(),
        };
        let cause = d
            .iothub_cause
            .map(|c| format!("cause {c}"))
            .unwrap_or_else(|| "no 404104 cause".into());
        let _ = writeln!(o, "  {id}: {} ({cause}): {}", d.dominant_class, d.summary);
        for ev in &d.evidence {
            let _ = writeln!(o, "      - {ev}");
        }
        if let Some(off) = d.clock_offset_s {
            let _ = writeln!(o, "      - device clock {off:+.1} s from the hub's");
        }
        let _ = writeln!(o, "      fix: {}", d.fix);
    }
    o.push_str("\nDisconnects (token renewals left out; device by device, in the order above):\n");
    let mut more = 0u64;
    for (n, a) in e
        .disconnects
        .iter()
        .filter(|a| a.class != "token_renewal" || a.device_record.is_some())
        .enumerate()
    {
        if n >= MAX_LISTED {
            more += 1;
            continue;
        }
        let cause = a
            .iothub_cause
            .map(|c| format!("cause {c}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(o, "  {} {}: {} ({cause})", a.time, a.device_id, a.class);
        for ev in a.evidence.iter().skip(1) {
            let _ = writeln!(o, "      - {ev}");
        }
        if let Some(r) = &a.device_record {
            let _ = writeln!(o, "      device: {} — {}", r.class, r.summary);
            let _ = writeln!(o, "      fix: {}", r.fix);
        }
    }
    if more > 0 {
        let _ = writeln!(o, "  … and {more} more (-o json lists all)");
    }
    if e.totals.refused_connects > 0 {
        o.push_str("\nRefused connects:\n");
        for a in e.refused_connects.iter().take(MAX_LISTED) {
            let _ = writeln!(
                o,
                "  {} {}: {} ({})",
                a.time,
                a.device_id,
                a.class,
                a.result_type.as_deref().unwrap_or("")
            );
        }
        let listed = e.totals.refused_connects.min(MAX_LISTED as u64);
        if e.totals.refused_connects > listed {
            let _ = writeln!(
                o,
                "  … and {} more (-o json lists all)",
                e.totals.refused_connects - listed
            );
        }
    }
    if let Some(j) = &e.join {
        let _ = writeln!(
            o,
            "\nJoined with {} reports: {} devices, {} of their hub disconnects matched a device record",
            j.reports, j.devices_joined, j.matched
        );
        for h in &j.hub_only {
            let _ = writeln!(o, "  hub only: {} {} ({})", h.time, h.device_id, h.class);
        }
        for d in &j.device_only {
            let _ = writeln!(o, "  device only: {} {} ({})", d.at, d.device_id, d.cause);
        }
    }
    o
}
