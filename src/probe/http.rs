//! HTTP phase: one `GET` over the endpoint's stream. Any HTTP answer below 500 proves
//! the HTTPS path; its `Date` header also gives the device clock's offset, which
//! matters for certificate validity and SAS token expiry.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::model::{FailureClass, HttpEvidence, Phase, PhaseResult};

/// Most response header bytes read.
const MAX_HEAD: usize = 16 * 1024;

/// Sends `GET path` to `host` and reads the response head.
pub async fn probe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    timeout: Duration,
) -> PhaseResult {
    let clock = Stopwatch::start();
    let request_line = format!("GET {path} HTTP/1.1");
    let mut ev = HttpEvidence {
        request: request_line.clone(),
        status: None,
        status_line: None,
        server: None,
        date: None,
        clock_offset_s: None,
    };
    let request = format!(
        "{request_line}\r\nHost: {host}\r\nUser-Agent: hubprobe/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let sent_at = SystemTime::now();
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return PhaseResult::failed(
                Phase::Http,
                clock.elapsed(),
                FailureClass::HttpTimeout,
                format!(
                    "no HTTP response within {}",
                    humantime::format_duration(timeout)
                ),
                &ev,
            )
        }
        Ok(Err(e)) => {
            let class = match stream_error_kind(&e) {
                Some(StreamFault::Timeout) => FailureClass::HttpTimeout,
                Some(_) => FailureClass::HttpClosed,
                None => FailureClass::HttpProtocolError,
            };
            return PhaseResult::failed(
                Phase::Http,
                clock.elapsed(),
                class,
                format!("HTTP request: {e}"),
                &ev,
            );
        }
        Ok(Ok(h)) => h,
    };
    let received_at = SystemTime::now();
    if head.is_empty() {
        return PhaseResult::failed(
            Phase::Http,
            clock.elapsed(),
            FailureClass::HttpClosed,
            "the server closed the connection without an HTTP response",
            &ev,
        );
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = parse_status(&status_line);
    let Some(status) = status else {
        let shown: String = status_line.chars().take(60).collect();
        return PhaseResult::failed(
            Phase::Http,
            clock.elapsed(),
            FailureClass::HttpProtocolError,
            format!("the answer is not HTTP: {shown:?}"),
            &ev,
        );
    };
    ev.status = Some(status);
    ev.status_line = Some(status_line.chars().take(200).collect());
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().chars().take(200).collect::<String>();
            match k.trim().to_ascii_lowercase().as_str() {
                "server" => ev.server = Some(v),
                "date" => ev.date = Some(v),
                _ => {}
            }
        }
    }
    if let Some(date) = ev
        .date
        .as_deref()
        .and_then(|d| httpdate::parse_http_date(d).ok())
    {
        ev.clock_offset_s = Some(clock_offset(sent_at, received_at, date));
    }
    if status >= 500 {
        return PhaseResult::failed(
            Phase::Http,
            clock.elapsed(),
            FailureClass::HttpServerError,
            format!("the server answered {status}"),
            &ev,
        );
    }
    PhaseResult::ok(Phase::Http, clock.elapsed(), &ev)
}

fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..1000).contains(&code).then_some(code)
}

/// Server time minus the device time at the middle of the exchange, in seconds.
/// `Date` has one-second resolution and is truncated, so half a second is added.
pub fn clock_offset(sent: SystemTime, received: SystemTime, server: SystemTime) -> f64 {
    let secs = |t: SystemTime| match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let mid = (secs(sent) + secs(received)) / 2.0;
    ((secs(server) + 0.5 - mid) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(parse_status("HTTP/1.0 200"), Some(200));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 abc"), None);
    }

    #[test]
    fn clock_offset_is_server_minus_device() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t1 = t0 + Duration::from_millis(200);
        let server = t0 + Duration::from_secs(300);
        let off = clock_offset(t0, t1, server);
        assert!((off - 300.4).abs() < 0.01, "{off}");
    }

    #[tokio::test]
    async fn reads_date_and_status() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await.unwrap();
            let date = httpdate::fmt_http_date(SystemTime::now());
            let resp = format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nServer: test\r\n\r\n");
            server.write_all(resp.as_bytes()).await.unwrap();
        });
        let r = probe(&mut client, "h", "/", Duration::from_secs(2)).await;
        assert!(r.is_ok(), "{r:?}");
        let ev = r.evidence().and_then(crate::model::Evidence::http).unwrap();
        assert_eq!(ev.status, Some(404));
        assert!(ev.clock_offset_s.unwrap().abs() < 2.0);
    }
}
