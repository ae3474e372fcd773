//! How to reach one SMTP upstream: address, TLS, credentials, EHLO name,
//! timeouts and the connector that opens the byte stream. Immutable once
//! built, shared by the pool and every connection it opens (`Arc<Dial>`), so a
//! connection never points back at the upstream or the pool that owns it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use super::UpstreamError;
use super::oauth2::TokenSource;
use crate::config::{TlsMode, UpstreamAuth};
use crate::metrics::Metrics;
use crate::net::{BoxIo, Connector};
use crate::secret::SecretString;

/// Everything needed to open and authenticate a connection to one upstream.
pub struct Dial {
    pub name: Arc<str>,
    /// `host:port`.
    pub addr: String,
    /// The name the upstream's certificate must carry.
    pub host: String,
    pub tls_mode: TlsMode,
    pub(super) tls: Option<Arc<ClientConfig>>,
    /// (username, password) for AUTH; never logged.
    pub(super) credentials: Option<(String, SecretString)>,
    /// The SASL mechanism asked for (`auto`: PLAIN or LOGIN as offered).
    pub auth: UpstreamAuth,
    /// (username, token source) for XOAUTH2 / OAUTHBEARER; tokens never logged.
    pub(super) oauth: Option<(String, Arc<TokenSource>)>,
    /// EHLO name postern gives.
    pub helo_name: String,
    /// A kept connection quiet this long is replaced rather than reused.
    pub idle_timeout: Duration,
    pub(super) connector: Arc<dyn Connector>,
    pub metrics: Metrics,
}

impl fmt::Debug for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dial")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("tls_mode", &self.tls_mode)
            .field(
                "username",
                &self
                    .credentials
                    .as_ref()
                    .map(|c| &c.0)
                    .or(self.oauth.as_ref().map(|o| &o.0)),
            )
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Dial {
    /// The account this dial authenticates as, if any.
    pub fn username(&self) -> Option<&str> {
        self.credentials
            .as_ref()
            .map(|c| c.0.as_str())
            .or(self.oauth.as_ref().map(|o| o.0.as_str()))
    }

    /// The OAuth2 account and its token source, with XOAUTH2 / OAUTHBEARER.
    pub fn token_source(&self) -> Option<(&str, &Arc<TokenSource>)> {
        self.oauth.as_ref().map(|(u, t)| (u.as_str(), t))
    }

    /// The same settings, for another account of the same upstream (the
    /// caller replaces the credentials).
    pub(super) fn clone_settings(&self) -> Dial {
        Dial {
            name: self.name.clone(),
            addr: self.addr.clone(),
            host: self.host.clone(),
            tls_mode: self.tls_mode,
            tls: self.tls.clone(),
            credentials: None,
            auth: self.auth,
            oauth: None,
            helo_name: self.helo_name.clone(),
            idle_timeout: self.idle_timeout,
            connector: self.connector.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Opens the byte stream (TCP in production).
    pub(super) async fn open(&self) -> Result<BoxIo, UpstreamError> {
        self.connector
            .connect(&self.addr)
            .await
            .map_err(UpstreamError::Connect)
    }

    /// TLS handshake toward the upstream, verifying its certificate against `host`.
    pub(super) async fn tls_handshake(&self, io: BoxIo) -> Result<BoxIo, UpstreamError> {
        let cfg = self.tls.clone().ok_or(UpstreamError::Protocol(
            "no TLS configuration for this upstream",
        ))?;
        let server_name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| UpstreamError::Protocol("upstream host is not a valid TLS server name"))?;
        let tls = TlsConnector::from(cfg)
            .connect(server_name, io)
            .await
            .map_err(|e| UpstreamError::Tls(crate::tls::explain(&e, &self.host)))?;
        Ok(Box::new(tls))
    }
}
