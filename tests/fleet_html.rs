//! The fleet HTML page renders in a real headless Chromium (Debian package
//! `chromium`) with no console error, and its charts are there. Chromium runs in a
//! network namespace of its own with no interface up (`unshare -n`), so the page
//! proves it needs no network; the test talks to it over the DevTools protocol on a
//! pipe (`--remote-debugging-pipe`, fds 3 and 4), not a port. A control page with a
//! deliberate console error and a missing image shows the detector sees errors.

mod support;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A headless Chromium driven over the DevTools pipe.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Console errors, exceptions and error log entries seen.
    errors: Vec<String>,
    loaded: bool,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe(2) writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2 failed");
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (to_read, to_write) = pipe(); // we write, Chromium reads on fd 3
        let (from_read, from_write) = pipe(); // Chromium writes on fd 4
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "--", "chromium"])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-extensions",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        use std::os::fd::AsRawFd;
        let (r, w) = (to_read.as_raw_fd(), from_write.as_raw_fd());
        // SAFETY: only async-signal-safe fcntl/dup2 calls between fork and exec.
        // Moved out of the way first (either may already be 3 or 4), then put on
        // 3 and 4 without close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 100);
                let w2 = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 100);
                if r2 < 0
                    || w2 < 0
                    || libc::dup2(r2, 3) < 0
                    || libc::dup2(w2, 4) < 0
                    || libc::fcntl(3, libc::F_SETFD, 0) < 0
                    || libc::fcntl(4, libc::F_SETFD, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("chromium starts (Debian package chromium; unshare from util-linux)");
        drop(to_read);
        drop(from_write);
        let (tx, rx) = channel();
        let mut reader = std::fs::File::from(from_read);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while let Some(p) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=p).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(to_write),
            from: rx,
            next_id: 0,
            session: None,
            errors: Vec::new(),
            loaded: false,
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, json!({}));
        }
        b
    }

    fn event(&mut self, v: &Value) {
        let params = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let kind = params["type"].as_str().unwrap_or("");
                if kind == "error" || kind == "assert" {
                    self.errors
                        .push(format!("console.{kind}: {}", params["args"]));
                }
            }
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(format!("exception: {}", params["exceptionDetails"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => self
                .errors
                .push(format!("log: {}", params["entry"]["text"])),
            Some("Page.loadEventFired") => self.loaded = true,
            _ => {}
        }
    }

    /// Sends a command and waits (at most 30 s) for its result, recording events.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("chromium reads its pipe");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// Collects events for `d`.
    fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(v) = self
            .from
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.event(&v);
        }
    }

    /// Opens a file and waits (at most 30 s) for its load event, then a little more.
    fn open(&mut self, path: &Path) {
        self.loaded = false;
        self.errors.clear();
        let url = format!("file://{}", path.display());
        self.call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.loaded {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{url} did not load within 30 s"));
            self.event(&v);
        }
        self.pump(Duration::from_millis(500));
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_html_page_renders_its_charts_in_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet.ndjson");
    let html = dir.path().join("fleet.html");
    let out = support::run(&[
        "fleet",
        "synth",
        "--devices",
        "80",
        "--duration",
        "6h",
        "--patterns",
        "-O",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    let out = support::run(&[
        "fleet",
        "summarize",
        data.to_str().unwrap(),
        "--by",
        "label.site",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to fetch.
    for needle in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(!page.contains(needle), "the page references {needle}");
    }

    let mut b = Browser::start();

    // The detector works: a page with a console error and a missing image.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><script>console.error('boom')</script><img src=\"missing.png\"></body></html>",
    )
    .unwrap();
    b.open(&control);
    assert!(
        b.errors.iter().any(|e| e.contains("boom")),
        "the console error was not seen: {:?}",
        b.errors
    );
    assert!(
        b.errors.len() >= 2,
        "the missing image was not seen: {:?}",
        b.errors
    );

    b.open(&html);
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
    let seen = b.eval(
        "JSON.stringify({
            charts: [...document.querySelectorAll('svg.chart')].map(s => [s.id, s.getBoundingClientRect().width, s.querySelectorAll('rect,circle,polyline').length]),
            incidents: document.querySelectorAll('#incidents li').length,
            hub: document.querySelector('#incidents .hub') ? document.querySelector('#incidents .hub').textContent : '',
            groups: document.querySelectorAll('#groups tr').length,
            title: document.title
        })",
    );
    let seen: Value = serde_json::from_str(seen.as_str().unwrap()).unwrap();
    assert_eq!(seen["title"], "hubprobe fleet summary");
    let charts = seen["charts"].as_array().unwrap();
    let ids: Vec<&str> = charts.iter().map(|c| c[0].as_str().unwrap()).collect();
    for want in [
        "timeline",
        "latency",
        "classes",
        "keepalive",
        "idle",
        "disconnects",
    ] {
        assert!(ids.contains(&want), "chart {want} missing: {ids:?}");
    }
    for c in charts {
        assert!(c[1].as_f64().unwrap() > 100.0, "chart not laid out: {c}");
        assert!(c[2].as_u64().unwrap() > 0, "chart draws nothing: {c}");
    }
    assert_eq!(seen["incidents"], 1);
    assert_eq!(seen["hub"], "HUB");
    assert_eq!(seen["groups"], 1 + 8); // header + one row per site

    operator_parts(&mut b, &data);
}

/// The parts an operator looks at first, checked against the JSON summary of the
/// same reports and the patterns the synthetic fleet injected (a firewall at
/// site-02's wired network, devices without the root CA, a hub incident, the
/// cell-b NAT dropping idle flows after 240 s).
fn operator_parts(b: &mut Browser, data: &Path) {
    let out = support::run(&[
        "fleet",
        "summarize",
        data.to_str().unwrap(),
        "--by",
        "label.site",
        "-o",
        "json",
    ]);
    assert!(out.code <= 2, "{}", out.all_output());
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let lv = &json["overall"]["latest_verdicts"];

    let seen = b.eval(
        "JSON.stringify({
            width: window.innerWidth,
            laidOut: ['verdicts','incidents','persistent','timeline','timeline-legend','groups','phases','devices','devsearch'].map(id => {
                const e = document.getElementById(id);
                const r = e ? e.getBoundingClientRect() : null;
                return [id, r ? r.width : 0, r ? r.height : 0];
            }),
            tiles: ['ok','warning','critical','unknown'].map(v => document.querySelector('#tile-' + v + ' .big').textContent),
            criticalNames: document.querySelector('#tile-critical details') ? document.querySelector('#tile-critical details').textContent : '',
            persistent: [...document.querySelectorAll('#persistent li')].map(li => [li.dataset.signature, li.dataset.scope, li.textContent]),
            groups: [...document.querySelectorAll('#groups tr')].slice(1).map(tr => [tr.cells[0].textContent, tr.querySelector('.warning').textContent, tr.querySelector('.critical').textContent, tr.querySelector('.outside').textContent, tr.className]),
            ticks: [...document.querySelectorAll('#timeline .tick')].map(t => t.textContent),
            fills: [...new Set([...document.querySelectorAll('#timeline rect.cause')].map(r => r.getAttribute('fill')))],
            legend: [...document.querySelectorAll('#timeline-legend span')].map(s => s.textContent),
            timelineWidth: document.getElementById('timeline').getBoundingClientRect().width,
            under: [...document.querySelectorAll('#phases tr.under')].map(tr => tr.cells[2].textContent),
            phaseRows: document.querySelectorAll('#phases tr').length - 1,
            devices: [...document.querySelectorAll('#devices tbody tr')].map(tr => [tr.cells[0].textContent, tr.cells[1].textContent, tr.cells[3].textContent, tr.cells[5].textContent, tr.textContent])
        })",
    );
    let seen: Value = serde_json::from_str(seen.as_str().unwrap()).unwrap();
    for e in seen["laidOut"].as_array().unwrap() {
        assert!(
            e[1].as_f64().unwrap() > 20.0 && e[2].as_f64().unwrap() > 10.0,
            "not laid out: {e}"
        );
    }
    // The page uses the window's width.
    let width = seen["width"].as_f64().unwrap();
    assert!(
        seen["timelineWidth"].as_f64().unwrap() > 0.85 * width,
        "the timeline does not use the width: {seen}"
    );

    // Headline counts are the JSON's; the critical tile names the critical devices.
    let want: Vec<String> = ["ok", "warning", "critical", "unknown"]
        .iter()
        .map(|k| lv[k].as_u64().unwrap().to_string())
        .collect();
    let tiles: Vec<String> = seen["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tiles, want);
    assert!(lv["critical"].as_u64().unwrap() > 0 && lv["warning"].as_u64().unwrap() > 0);
    let devices = seen["devices"].as_array().unwrap();
    assert_eq!(devices.len() as u64, json["devices"].as_u64().unwrap());
    let critical: Vec<&str> = devices
        .iter()
        .filter(|d| d[1] == "CRITICAL")
        .map(|d| d[0].as_str().unwrap())
        .collect();
    assert_eq!(critical.len() as u64, lv["critical"].as_u64().unwrap());
    for name in &critical {
        assert!(
            seen["criticalNames"].as_str().unwrap().contains(name),
            "{name} missing from the CRITICAL tile"
        );
    }
    // Worst first: every CRITICAL before every WARNING before every OK.
    let rank = |v: &str| match v {
        "CRITICAL" => 0,
        "WARNING" => 1,
        "UNKNOWN" => 2,
        _ => 3,
    };
    let ranks: Vec<i32> = devices
        .iter()
        .map(|d| rank(d[1].as_str().unwrap()))
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "not worst first: {ranks:?}"
    );
    // The devices without the root CA are critical, their latest failure says why.
    for d in devices.iter().filter(|d| d[1] == "CRITICAL") {
        assert!(d[3].as_str().unwrap().contains("tls.unknown_ca"), "{d}");
    }

    // Persistent patterns, attributed.
    let persistent = seen["persistent"].as_array().unwrap();
    let find = |sig: &str| {
        persistent
            .iter()
            .find(|p| p[0] == sig)
            .unwrap_or_else(|| panic!("no persistent {sig}: {persistent:#?}"))
    };
    let nat = find("disconnect:no_pingresp");
    assert_eq!(nat[1], "network");
    let text = nat[2].as_str().unwrap();
    let nat_json = json["persistent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["signature"] == "disconnect:no_pingresp")
        .unwrap();
    let rec = nat_json["recommended_keepalive_s"].as_u64().unwrap();
    assert!(
        rec < 240,
        "recommended {rec} s is not below the NAT's 240 s"
    );
    assert_eq!(nat_json["idle_timeout_s"], 240);
    for needle in [
        "network=cell-b".to_string(),
        "after 240 s idle".to_string(),
        "keep-alive too long for that NAT".to_string(),
        format!("tell them {rec} s"),
        format!("{} devices", nat_json["devices"]),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in {text:?}");
    }
    let fw = find("check:tcp.timeout");
    assert_eq!(fw[1], "network");
    assert!(
        fw[2].as_str().unwrap().contains("network=wired-site-02"),
        "{fw}"
    );
    assert!(fw[2].as_str().unwrap().contains("mqtt-tls"), "{fw}");
    let ca = find("check:tls.unknown_ca");
    assert_eq!(ca[1], "devices", "missing root CAs are everywhere: {ca}");
    // The text output tells the same persistent patterns, outside the incidents.
    let txt = support::run(&["fleet", "summarize", data.to_str().unwrap()]);
    assert!(txt.code <= 2, "{}", txt.all_output());
    let section = txt
        .stdout
        .split("persistent problems (outside the incident windows):")
        .nth(1)
        .unwrap_or_else(|| panic!("no persistent section in the text:\n{}", txt.stdout));
    assert!(
        section.contains("[network=cell-b]") && section.contains(&format!("tell them {rec} s")),
        "{section}"
    );
    assert!(
        section.contains("[network=wired-site-02]") && section.contains("tcp.timeout"),
        "{section}"
    );
    assert!(!section.contains("server_unavailable"), "{section}");
    // The hub incident's failure is not persistent.
    assert!(
        persistent
            .iter()
            .all(|p| p[0] != "check:mqtt.server_unavailable"),
        "the incident's failure shows as persistent: {persistent:#?}"
    );

    // Per group: warning and critical counts; the firewalled site stands out by its
    // top failure outside the incident window, although the incident touched every site.
    for g in seen["groups"].as_array().unwrap() {
        let site = g[0].as_str().unwrap();
        let jg = json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["value"] == site)
            .unwrap();
        assert_eq!(
            g[1].as_str().unwrap(),
            jg["summary"]["latest_verdicts"]["warning"].to_string()
        );
        assert_eq!(
            g[2].as_str().unwrap(),
            jg["summary"]["latest_verdicts"]["critical"].to_string()
        );
        assert!(
            !g[3].as_str().unwrap().contains("server_unavailable"),
            "the incident leaks into {site}'s top failure: {g}"
        );
        if site == "site-02" {
            assert!(g[3].as_str().unwrap().starts_with("tcp.timeout"), "{g}");
            assert_ne!(g[4], "", "site-02 is not highlighted");
        }
    }

    // A time axis with readable ticks (HH:MM or a date), bars split by cause.
    let ticks = seen["ticks"].as_array().unwrap();
    assert!((4..=16).contains(&ticks.len()), "ticks: {ticks:?}");
    for t in ticks {
        let t = t.as_str().unwrap();
        let hhmm = t.len() == 5 && t.as_bytes()[2] == b':';
        assert!(hhmm || t.len() == 10, "unreadable tick {t:?}");
    }
    assert!(seen["fills"].as_array().unwrap().len() >= 3, "{seen}");
    let legend = seen["legend"].to_string();
    for needle in [
        "disconnect:no_pingresp",
        "check:tcp.timeout",
        "disconnect:eof_without_disconnect",
    ] {
        assert!(
            legend.contains(needle),
            "{needle} not in the legend {legend}"
        );
    }

    // Rows under the success target are highlighted, and only those.
    let under = seen["under"].as_array().unwrap();
    assert!(!under.is_empty());
    for u in under {
        let pct: f64 = u.as_str().unwrap().trim_end_matches('%').parse().unwrap();
        assert!(pct < 99.0, "{u} highlighted");
    }
    let below = json["overall"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["success_share"].as_f64().is_some_and(|s| s < 0.99))
        .count();
    assert_eq!(under.len(), below);

    // The search box filters the device list (the inline script works offline).
    let shown = b.eval(
        "(() => { const q = document.getElementById('devsearch'); q.value = 'wired-site-02'; q.dispatchEvent(new Event('input')); return [...document.querySelectorAll('#devices tbody tr')].filter(tr => tr.style.display !== 'none').length; })()",
    );
    let want = devices
        .iter()
        .filter(|d| d.to_string().contains("wired-site-02"))
        .count();
    assert!(want > 0);
    assert_eq!(shown.as_u64().unwrap() as usize, want);
    b.pump(Duration::from_millis(200));
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
}
