//! The signals the agent obeys: SIGTERM and SIGINT stop it, SIGHUP reloads the
//! configuration.

/// What a signal asks for.
pub(crate) enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// The agent's signal handlers (a handler that cannot be installed never fires).
pub(crate) struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers.
    pub(crate) fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next signal.
    pub(crate) async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => { tracing::info!("SIGTERM: stopping"); Signal::Stop }
            _ = recv(&mut self.int) => { tracing::info!("SIGINT: stopping"); Signal::Stop }
            _ = recv(&mut self.hup) => { tracing::info!("SIGHUP: reloading the configuration"); Signal::Reload }
        }
    }

    /// The next stop signal (a reload during a check waits for the check).
    pub(crate) async fn next_stop(&mut self) -> Signal {
        loop {
            if let Signal::Stop = self.next().await {
                return Signal::Stop;
            }
            tracing::info!("reload deferred until the running check ends");
        }
    }
}
