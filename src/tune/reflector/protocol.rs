//! The `HPR1` wire format: line framing, request and reply parsing, and the
//! stream type both ends use (plain TCP or TLS over TCP).
//!
//! Everything here is shared by the server and the client; the protocol itself
//! is described in the parent module's documentation.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::probe::stream::MaybeTls;

/// The protocol version tag every request starts with.
pub const VERSION: &str = "HPR1";

/// Longest line either side accepts, newline included. Longer lines are a
/// protocol error (`ERR line too long`).
pub const MAX_LINE: usize = 128;

/// Longest nonce, in characters. A nonce is 1..=64 characters of
/// `[A-Za-z0-9_-]`.
pub const MAX_NONCE: usize = 64;

/// A request line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// `HPR1 IDLE <idle_ms> <nonce>`.
    Idle { idle: Duration, nonce: String },
    /// `HPR1 ECHO <nonce>`.
    Echo { nonce: String },
}

/// What the client may send after the server's `PING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterPing {
    /// `PONG <nonce>`: the client received the PING.
    Pong(String),
    /// `UP <nonce>`: the client never received the PING and tests upstream.
    Up(String),
}

/// A line from the server, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `OK <nonce>`: the idle period starts now.
    Ok(String),
    /// `PING <nonce>`: the idle period is over (server → client).
    Ping(String),
    /// `BYE`: the PONG arrived; the server closes.
    Bye,
    /// `UPOK`: the client's `UP` arrived.
    UpOk,
    /// `ECHO <nonce>`: answer to `HPR1 ECHO <nonce>`.
    Echo(String),
    /// `ERR <reason>`: the server refused; it closes after this line.
    Err(String),
}

/// True for a nonce of 1..=[`MAX_NONCE`] characters of `[A-Za-z0-9_-]`.
pub(crate) fn valid_nonce(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NONCE
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses a request line (without its newline). The error is the text the
/// server sends after `ERR `; it never echoes more than a short, sanitized
/// prefix of what the client sent.
pub(crate) fn parse_request(line: &str, max_idle: Duration) -> Result<Request, String> {
    let mut words = line.split(' ');
    let version = words.next().unwrap_or("");
    if version != VERSION {
        if version.starts_with("HPR") && version.len() <= 8 {
            return Err(format!(
                "unsupported protocol version {} (this reflector speaks {VERSION})",
                sanitize(version, 8)
            ));
        }
        return Err(format!("not an {VERSION} request"));
    }
    let command = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    match command {
        "IDLE" => {
            let [ms, nonce] = args[..] else {
                return Err("usage: HPR1 IDLE <idle_ms> <nonce>".into());
            };
            if ms.is_empty() || ms.len() > 20 || !ms.bytes().all(|b| b.is_ascii_digit()) {
                return Err("idle_ms must be a decimal number of milliseconds".into());
            }
            let ms: u64 = ms
                .parse()
                .map_err(|_| "idle_ms is out of range".to_string())?;
            let idle = Duration::from_millis(ms);
            if idle > max_idle {
                return Err(format!(
                    "idle too long: {ms} ms (this reflector allows at most {} ms)",
                    max_idle.as_millis()
                ));
            }
            check_nonce(nonce)?;
            Ok(Request::Idle {
                idle,
                nonce: nonce.to_string(),
            })
        }
        "ECHO" => {
            let [nonce] = args[..] else {
                return Err("usage: HPR1 ECHO <nonce>".into());
            };
            check_nonce(nonce)?;
            Ok(Request::Echo {
                nonce: nonce.to_string(),
            })
        }
        "" => Err("missing command (IDLE or ECHO)".into()),
        other => Err(format!(
            "unknown command {} (expected IDLE or ECHO)",
            sanitize(other, 16)
        )),
    }
}

fn check_nonce(nonce: &str) -> Result<(), String> {
    if valid_nonce(nonce) {
        Ok(())
    } else {
        Err(format!(
            "bad nonce (1 to {MAX_NONCE} characters of A-Z a-z 0-9 - _)"
        ))
    }
}

/// Parses what the client sends after `PING`.
pub(crate) fn parse_after_ping(line: &str) -> Option<AfterPing> {
    match line.split_once(' ') {
        Some(("PONG", n)) if valid_nonce(n) => Some(AfterPing::Pong(n.to_string())),
        Some(("UP", n)) if valid_nonce(n) => Some(AfterPing::Up(n.to_string())),
        _ => None,
    }
}

/// Parses a server line; `None` for anything that is not an `HPR1` reply.
pub(crate) fn parse_reply(line: &str) -> Option<Reply> {
    match line {
        "BYE" => return Some(Reply::Bye),
        "UPOK" => return Some(Reply::UpOk),
        "ERR" => return Some(Reply::Err(String::new())),
        _ => {}
    }
    let (word, rest) = line.split_once(' ')?;
    match word {
        "OK" if valid_nonce(rest) => Some(Reply::Ok(rest.to_string())),
        "PING" if valid_nonce(rest) => Some(Reply::Ping(rest.to_string())),
        "ECHO" if valid_nonce(rest) => Some(Reply::Echo(rest.to_string())),
        "ERR" => Some(Reply::Err(sanitize(rest, MAX_LINE))),
        _ => None,
    }
}

/// At most `max` characters of `s`, non-printable characters replaced by `?`:
/// safe to put into a message or a log line.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Why [`LineReader::read_line`] returned no line.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The peer closed the stream (EOF), possibly in the middle of a line.
    Eof,
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
    /// The line is not ASCII text.
    NotText,
    /// The stream failed (reset, TLS error ...).
    Io(io::Error),
}

/// Reads `\n`-terminated lines of at most [`MAX_LINE`] bytes, keeping bytes
/// that arrive after a newline for the next call.
///
/// Cancel-safe: the only await point is the stream read, and bytes it returned
/// are stored before the next await, so a `read_line` dropped by a timeout
/// loses nothing.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    pub(crate) fn new() -> Self {
        LineReader {
            buf: Vec::with_capacity(MAX_LINE),
        }
    }

    /// The next line, without its `\n` (and without a `\r` before it).
    pub(crate) async fn read_line<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<String, LineError> {
        // Each pass reads at least one byte or returns, and a line is at most
        // MAX_LINE bytes, so this is bounded by MAX_LINE + 1 passes.
        for _ in 0..=MAX_LINE + 1 {
            if let Some(line) = self.take_line()? {
                return Ok(line);
            }
            let mut chunk = [0u8; MAX_LINE];
            let room = (MAX_LINE + 1).saturating_sub(self.buf.len()).max(1);
            let n = r
                .read(&mut chunk[..room.min(MAX_LINE)])
                .await
                .map_err(LineError::Io)?;
            if n == 0 {
                return Err(LineError::Eof);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Err(LineError::TooLong)
    }

    fn take_line(&mut self) -> Result<Option<String>, LineError> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i + 1 > MAX_LINE => Err(LineError::TooLong),
            Some(i) => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !line.iter().all(|b| b.is_ascii() && !b.is_ascii_control()) {
                    return Err(LineError::NotText);
                }
                // All bytes are ASCII, so this cannot fail.
                Ok(Some(
                    String::from_utf8(line).map_err(|_| LineError::NotText)?,
                ))
            }
            None if self.buf.len() >= MAX_LINE => Err(LineError::TooLong),
            None => Ok(None),
        }
    }
}

/// Writes `line` plus `\n` and flushes (TLS records go out at once).
pub(crate) async fn send_line<W: AsyncWrite + Unpin>(w: &mut W, line: &str) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    w.write_all(&bytes).await?;
    w.flush().await
}

/// One reflector connection, plain or TLS, client or server side.
pub(crate) type Conn = MaybeTls<tokio_rustls::TlsStream<TcpStream>>;

impl Conn {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Closes at once with a reset (SO_LINGER 0), so no state lingers in the
    /// kernel retransmitting into a dead path. (A zero linger time never
    /// blocks the close.)
    pub(crate) fn abort(self) {
        let _ = socket2::SockRef::from(self.tcp()).set_linger(Some(Duration::ZERO));
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(7200);

    #[test]
    fn parses_requests() {
        assert_eq!(
            parse_request("HPR1 IDLE 1500 abc-1_Z", MAX),
            Ok(Request::Idle {
                idle: Duration::from_millis(1500),
                nonce: "abc-1_Z".into()
            })
        );
        assert_eq!(
            parse_request("HPR1 ECHO n1", MAX),
            Ok(Request::Echo { nonce: "n1".into() })
        );
    }

    #[test]
    fn rejects_bad_requests_with_a_reason() {
        let bad = [
            ("", "not an HPR1"),
            ("GET / HTTP/1.1", "not an HPR1"),
            ("HPR2 IDLE 1 n", "unsupported protocol version HPR2"),
            ("HPR1", "missing command"),
            ("HPR1 SLEEP 1 n", "unknown command SLEEP"),
            ("HPR1 IDLE n", "usage"),
            ("HPR1 IDLE 1 n extra", "usage"),
            ("HPR1 IDLE -1 n", "decimal"),
            ("HPR1 IDLE 1e3 n", "decimal"),
            ("HPR1 IDLE 99999999999999999999 n", "out of range"),
            ("HPR1 IDLE 7200001 n", "idle too long"),
            ("HPR1 IDLE 10 bad!nonce", "bad nonce"),
            ("HPR1 ECHO", "usage"),
            ("HPR1  ECHO n", "missing command"),
        ];
        for (line, want) in bad {
            let err = parse_request(line, MAX).unwrap_err();
            assert!(err.contains(want), "{line:?} -> {err:?}, want {want:?}");
        }
        let long = format!("HPR1 ECHO {}", "a".repeat(MAX_NONCE + 1));
        assert!(parse_request(&long, MAX).unwrap_err().contains("bad nonce"));
        // The maximum idle itself is allowed.
        assert!(parse_request("HPR1 IDLE 7200000 n", MAX).is_ok());
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_reply("OK x"), Some(Reply::Ok("x".into())));
        assert_eq!(parse_reply("PING x"), Some(Reply::Ping("x".into())));
        assert_eq!(parse_reply("ECHO x"), Some(Reply::Echo("x".into())));
        assert_eq!(parse_reply("BYE"), Some(Reply::Bye));
        assert_eq!(parse_reply("UPOK"), Some(Reply::UpOk));
        assert_eq!(parse_reply("ERR busy"), Some(Reply::Err("busy".into())));
        assert_eq!(parse_reply("PING"), None);
        assert_eq!(parse_reply("OK a b"), None);
        assert_eq!(parse_reply("hello"), None);
        assert_eq!(
            parse_after_ping("PONG x"),
            Some(AfterPing::Pong("x".into()))
        );
        assert_eq!(parse_after_ping("UP x"), Some(AfterPing::Up("x".into())));
        assert_eq!(parse_after_ping("PONG"), None);
    }

    #[tokio::test]
    async fn line_reader_splits_joins_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"one\r\ntw").await.unwrap();
        let mut r = LineReader::new();
        assert_eq!(r.read_line(&mut b).await.unwrap(), "one");
        a.write_all(b"o\nthree\n").await.unwrap();
        assert_eq!(r.read_line(&mut b).await.unwrap(), "two");
        assert_eq!(r.read_line(&mut b).await.unwrap(), "three");
        a.write_all(&[b'x'; MAX_LINE]).await.unwrap();
        assert!(matches!(r.read_line(&mut b).await, Err(LineError::TooLong)));

        let mut r = LineReader::new();
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"\x00\x01\n").await.unwrap();
        assert!(matches!(r.read_line(&mut b).await, Err(LineError::NotText)));
        a.write_all("é\n".as_bytes()).await.unwrap();
        assert!(matches!(r.read_line(&mut b).await, Err(LineError::NotText)));
        drop(a);
        assert!(matches!(r.read_line(&mut b).await, Err(LineError::Eof)));

        // A line of exactly MAX_LINE bytes with its newline is accepted.
        let mut r = LineReader::new();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut line = vec![b'y'; MAX_LINE - 1];
        line.push(b'\n');
        a.write_all(&line).await.unwrap();
        assert_eq!(r.read_line(&mut b).await.unwrap().len(), MAX_LINE - 1);
    }

    #[test]
    fn sanitize_strips_control_characters() {
        assert_eq!(sanitize("a\x1b[31mb\u{7f}", 64), "a?[31mb?");
        assert_eq!(sanitize("abcdef", 3), "abc");
    }
}
