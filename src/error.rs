//! Top-level errors of start-up and serving. Errors met while serving a client
//! never reach here: each becomes one SMTP reply in the session.

use crate::config::ConfigError;
use crate::tls::TlsError;

/// Why postern could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl Error {
    /// True for mistakes in the configuration (exit code 64, EX_USAGE).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Setup(_) | Error::Tls(_))
    }
}
