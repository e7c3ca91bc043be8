//! The reflector: a small server the operator runs near the hub
//! (`hubprobe reflect --listen ADDR [--cert PEM --key PEM]`), and the client
//! primitives the tuner uses against it.
//!
//! An IoT hub allows one MQTT connection per device, so it cannot be used to
//! leave many connections idle at once; the reflector can. The tuner opens
//! connections that each stay silent for a different time, and the reflector
//! then sends a line *down* (server → device, the direction cloud-to-device
//! traffic needs). Whether that line arrives, and what happens to a line sent
//! *up* when it does not, tells survived, silent drop, reset and one-way apart
//! ([`IdleOutcome`](crate::tune::IdleOutcome)). The same server answers echo
//! requests for RTT samples.
//!
//! # Protocol `HPR1`
//!
//! One TCP connection (TLS over TCP when the reflector has a certificate) per
//! exchange. Everything is ASCII lines ending in `\n` (a `\r` before it is
//! tolerated), at most [`MAX_LINE`] = 128 bytes with the newline. A `<nonce>`
//! is 1 to 64 characters of `A-Z a-z 0-9 - _`, chosen by the client and echoed
//! by the server, so every answer can be matched to its request. Every request
//! starts with the version tag `HPR1`; a server that does not speak the
//! version answers `ERR unsupported protocol version ...`.
//!
//! ## Idle probe
//! ```text
//! C → S   HPR1 IDLE <idle_ms> <nonce>
//! S → C   OK <nonce>
//!         ... both sides silent for idle_ms (server: from sending OK,
//!             client: from receiving it; no keep-alive, no TLS traffic) ...
//! S → C   PING <nonce>
//! C → S   PONG <nonce>
//! S → C   BYE                      (server closes)          → Survived
//! ```
//! When the client has no `PING` by `idle + grace`, it probes upstream:
//! ```text
//! C → S   UP <nonce>
//! S → C   UPOK                     (server closes)          → OneWay
//!         (no answer within grace)                          → SilentDrop
//!         (a TCP reset at any point after OK)               → Reset
//! ```
//! A `PING` that arrives only after the client's `UP` also counts as
//! `OneWay` (downstream was broken until upstream traffic revived the flow).
//! A `PING` whose `PONG` is never answered with `BYE` within `grace` counts as
//! `SilentDrop` (the flow died in the upstream direction). Failures before the
//! idle period (connect, TLS, `ERR`, a garbled reply) and a reflector that
//! closes the connection are `Error(reason)`: no verdict on the path.
//!
//! The server waits [`ReflectorConfig::reply_timeout`] (default 120 s) after
//! `PING` for `PONG` or `UP`, then resets the connection; a client's grace
//! must be well below that.
//!
//! ## Echo
//! ```text
//! C → S   HPR1 ECHO <nonce>
//! S → C   ECHO <nonce>             (at once)
//! ```
//! A connection may send any number of `ECHO` requests (up to 100 000), one
//! after another or pipelined; each is answered in order. Gaps between them may
//! be as long as the maximum idle. An `IDLE` request may follow echoes on the
//! same connection (the idle exchange then ends it).
//!
//! ## Errors
//! `ERR <reason>` and the server closes: unknown version or command, bad
//! number or nonce, idle longer than the server's maximum, a line over 128
//! bytes or not ASCII, no request within the request timeout, anything sent
//! during the idle period, a wrong nonce, too many connections in all or from
//! one source address (`ERR busy: ...`, plain TCP only; a TLS client just sees
//! the connection close).
//!
//! # Safety limits (server)
//! See [`ReflectorConfig`]: at most `max_connections` at once (default 1024),
//! at most `max_per_address` of them from one source address (an IPv6 /64;
//! default 256), so one client holding long idles cannot lock others out; idle
//! at most `max_idle` (default 2 h), `request_timeout` (default 10 s) for
//! the TLS handshake, the first request and every write, `reply_timeout`
//! (default 120 s) after `PING`. Connections are served by tasks; the server
//! never panics on input. Both ends switch TCP keep-alive off (the kernel
//! default) because keep-alive probes would refresh the NAT state being
//! measured, and Nagle off so each line leaves at once.

mod client;
mod protocol;
mod server;

#[cfg(test)]
mod tests;

pub use client::{probe_idle, EchoSession, ReflectorTarget, ReflectorTls, MAX_PROBE_DURATION};
pub use protocol::{MAX_LINE, MAX_NONCE, VERSION};
pub use server::{
    serve, server_tls_config, ReflectorConfig, ReflectorTlsError, DEFAULT_MAX_PER_ADDRESS,
    MAX_REQUESTS_PER_CONNECTION,
};
