//! One module per handshake. Every probe returns a [`PhaseResult`]: a failure is
//! data (status, duration, evidence, class), never an `Err` that escapes.

pub mod amqp;
pub mod dns;
pub mod http;
pub mod mqtt;
pub mod ntp;
pub mod route;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod ws;
pub mod ws_io;

use std::time::{Duration, Instant};

/// Times a phase: started at construction, read with [`Stopwatch::elapsed`].
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts timing now.
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }
    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Classifies an I/O error seen on an established stream (after connect) into
/// the phase's `closed`/`reset`/`timeout` family. Returns `None` for other kinds.
pub fn stream_error_kind(err: &std::io::Error) -> Option<StreamFault> {
    use std::io::ErrorKind::*;
    match err.kind() {
        UnexpectedEof => Some(StreamFault::Closed),
        ConnectionReset | ConnectionAborted | BrokenPipe => Some(StreamFault::Reset),
        TimedOut | WouldBlock => Some(StreamFault::Timeout),
        _ => None,
    }
}

/// What went wrong on an established stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// The peer closed the connection (EOF).
    Closed,
    /// The peer reset the connection (RST).
    Reset,
    /// Nothing arrived in time.
    Timeout,
}
