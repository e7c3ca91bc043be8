//! `hubprobe fleet explain` over a day of IoT Hub Connections logs of 10 000 devices
//! (storage archive format, one JSON record per line, `properties` a JSON string):
//! every device renews its 1 h SAS token every 48 min, every tenth also drops at
//! random three times, and 300 devices on 30 prefixes drop at once with 500xxx.
//! Prints the wall time, records and MiB per second and the peak RSS (wait4), and
//! checks the causes came out as generated. A benchmark, not a timed assertion.
//!
//!     cargo bench --bench explain        # ~600 000 records, ~300 MB in target/explain-bench

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T0: i64 = 1_764_460_800_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
        .to_string()
}

fn line(out: &mut impl Write, t: i64, op: &str, result: Option<&str>, dev: &str, ip: &str) {
    let props = serde_json::json!({
        "deviceId": dev, "protocol": "Mqtt", "authType": "{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\",\"acceptingIpFilterRule\":null}",
        "maskedIpAddress": ip, "sdkVersion": "iothubclient/1.14.0 (native; Linux; x86_64)"
    });
    let mut r = serde_json::json!({
        "time": rfc3339(t), "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/BENCH/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/BENCH",
        "operationName": op, "category": "Connections", "level": "Information",
        "properties": props.to_string(), "location": "westeurope"
    });
    if let Some(code) = result {
        r["resultType"] = code.into();
        r["resultDescription"] = "DeviceConnectionClosedRemotely".into();
        r["level"] = "Error".into();
    }
    writeln!(out, "{r}").unwrap();
}

fn generate(path: &Path, devices: i64) -> u64 {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let end = T0 + 24 * HOUR;
    let mut n = 0u64;
    let wave = T0 + 13 * HOUR + 20 * MIN;
    for i in 0..devices {
        let dev = format!("dev-{i:05}");
        let ip = format!("10.{}.{}.XXX", i / 250 % 250, i % 250);
        let mut t = T0 + (i * 997) % HOUR;
        line(&mut out, t, "deviceConnect", None, &dev, &ip);
        n += 1;
        let mut drops: Vec<i64> = Vec::new();
        if i % 10 == 1 {
            drops = vec![
                T0 + 3 * HOUR + (i * 7_919) % HOUR,
                T0 + 9 * HOUR + (i * 104_729) % HOUR,
                T0 + 19 * HOUR + (i * 1_299_709) % HOUR,
            ];
        }
        if i % 33 == 0 && i / 33 < 300 {
            drops.push(wave + (i / 33) * 400);
        }
        loop {
            let next = t + 48 * MIN;
            if let Some(k) = drops.iter().position(|d| *d < next && *d > t) {
                let d = drops.remove(k);
                let code = if d >= wave && d < wave + 5 * MIN && i % 2 == 0 {
                    "500001"
                } else {
                    "404104"
                };
                line(&mut out, d, "deviceDisconnect", Some(code), &dev, &ip);
                t = d + 20_000;
                line(&mut out, t, "deviceConnect", None, &dev, &ip);
                n += 2;
                continue;
            }
            if next >= end {
                break;
            }
            t = next;
            line(&mut out, t, "deviceDisconnect", Some("404104"), &dev, &ip);
            t += 2_000;
            line(&mut out, t, "deviceConnect", None, &dev, &ip);
            n += 2;
        }
    }
    line(
        &mut out,
        end,
        "deviceConnect",
        None,
        "dev-00000",
        "10.0.0.XXX",
    );
    out.flush().unwrap();
    n + 1
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/explain-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("PT24H.json");
    let records = generate(&log, 10_000);
    let size = std::fs::metadata(&log).unwrap().len();
    let out = dir.join("explain.json");
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_hubprobe"))
        .args(["fleet", "explain", log.to_str().unwrap(), "-o", "json"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4, on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid, "wait4");
    std::mem::forget(child);
    let wall = start.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "explain failed"
    );
    let v: serde_json::Value =
        serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(&out).unwrap()))
            .unwrap();
    assert_eq!(v["input"]["records"].as_u64().unwrap(), records);
    let by = &v["totals"]["devices_by_class"];
    assert_eq!(by["token_renewal"].as_u64().unwrap(), 10_000, "{by}");
    let w = v["windows"].as_array().unwrap();
    assert!(w.iter().any(|w| w["iothub_cause"] == 3), "{w:#?}");
    println!(
        "fleet explain: {records} records ({:.0} MiB), {} disconnects, in {wall:.2} s: {:.0} records/s, {:.1} MiB/s, peak RSS {:.1} MiB",
        size as f64 / 1048576.0,
        v["totals"]["disconnects"],
        records as f64 / wall,
        size as f64 / 1048576.0 / wall,
        ru.ru_maxrss as f64 / 1024.0
    );
    println!("{}", v["totals"]["summary"]);
}
