//! rustls configurations: the server side for STARTTLS and implicit-TLS
//! listeners, the client side toward upstreams. PEM is read with
//! `rustls_pki_types::pem::PemObject` (rustls-pemfile is unmaintained).
//! Every config is built with the ring provider explicitly, so a second
//! provider compiled in by some dependency can never make rustls panic.
//!
//! Toward a provider, `ca_file` may hold CA certificates *or* the provider's
//! own (self-signed) certificate: a certificate presented that is byte for
//! byte one of `ca_file`'s is trusted as pinned (its validity dates are still
//! checked; its names are not, since the administrator chose that very
//! certificate), anything else is verified by webpki against `ca_file`'s
//! certificates as trust anchors. Verification failures are put in words an
//! administrator can act on (`explain`), for logs, `doctor` and the 4xx a
//! device gets.

pub mod cert;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::{CertificateError, OtherError};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// TLS set-up failures; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key.
pub fn load_cert_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Cert {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".to_owned()));
    }
    Ok(certs)
}

/// Reads extra trust anchors for an upstream.
pub fn load_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Cert {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The listener-side TLS configuration, answering handshakes with whatever
/// `certs` holds at the time (a reload swaps it).
///
/// # Errors
/// Only if rustls refuses its own defaults.
pub fn server_config(certs: Arc<server::ServerCerts>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    // Stateless session tickets (keys random per process, rotated every 6 h),
    // so a returning device resumes without a certificate and a signature
    // however many others connected since (docs/architecture.md). A reload
    // swaps the certificate, not this config: tickets stay valid across it.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}

/// Reads the listener's certificate and key (`[tls] cert`, `key`), checked to
/// belong together.
///
/// # Errors
/// Which file and why.
pub fn load_server_cert(cert: &Path, key: &Path) -> Result<server::Loaded, TlsError> {
    server::load(cert, key, &provider())
}

/// The upstream-side TLS configuration: webpki roots, or `ca_file` instead
/// (CAs, or the provider's own certificate, pinned); with `verify = false`, no
/// certificate check at all (only when configured).
pub fn client_config(ca_file: Option<&Path>, verify: bool) -> Result<Arc<ClientConfig>, TlsError> {
    Ok(Arc::new(client_config_with(provider_verifier(
        ca_file, verify,
    )?)?))
}

/// A client configuration with this verifier (`doctor` wraps the provider's).
///
/// # Errors
/// Only if rustls refuses its own defaults.
pub fn client_config_with(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// How a provider's certificate is checked: webpki roots, or `ca_file`
/// (CAs, or the provider's own certificate, pinned), or not at all.
///
/// # Errors
/// An unreadable `ca_file`.
pub fn provider_verifier(
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    if !verify {
        return Ok(Arc::new(NoVerify(provider())));
    }
    let (roots, pinned) = match ca_file {
        Some(path) => (load_ca(path)?, load_certs(path)?),
        None => (
            RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Vec::new(),
        ),
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    Ok(Arc::new(ProviderVerifier {
        webpki,
        pinned,
        from_ca_file: ca_file.is_some(),
    }))
}

/// Verifies a provider's certificate: pinned (exactly one of `ca_file`'s), or
/// by webpki; a self-signed certificate that is not pinned is said to be one.
#[derive(Debug)]
struct ProviderVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    from_ca_file: bool,
}

/// A certificate problem webpki has no words for.
#[derive(Debug, thiserror::Error)]
enum CertProblem {
    #[error(
        "the provider's certificate is self-signed (subject {subject:?}); put it in ca_file to pin it"
    )]
    SelfSigned { subject: String },
    #[error(
        "the provider's certificate is self-signed (subject {subject:?}) and is not the one in ca_file; \
         put its current certificate in ca_file"
    )]
    SelfSignedNotPinned { subject: String },
}

impl ServerCertVerifier for ProviderVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let info = cert::inspect(end_entity.as_ref());
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            if let Some(info) = &info {
                let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                let at = |t: i64| {
                    rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                        u64::try_from(t).unwrap_or(0),
                    ))
                };
                if secs > info.not_after {
                    return Err(CertificateError::ExpiredContext {
                        time: now,
                        not_after: at(info.not_after),
                    }
                    .into());
                }
                if secs < info.not_before {
                    return Err(CertificateError::NotValidYetContext {
                        time: now,
                        not_before: at(info.not_before),
                    }
                    .into());
                }
            }
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match (&e, info) {
                (
                    rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer | CertificateError::Other(_),
                    ),
                    Some(info),
                ) if info.self_issued => {
                    let subject = info.subject;
                    let problem = if self.from_ca_file {
                        CertProblem::SelfSignedNotPinned { subject }
                    } else {
                        CertProblem::SelfSigned { subject }
                    };
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(problem),
                    )))
                }
                _ => e,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A TLS failure toward a provider in words an administrator can act on.
/// `host` is the name postern expected.
pub fn explain(err: &std::io::Error, host: &str) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the provider closed the connection during the TLS handshake \
                 (wrong port, or a tls setting the provider does not use there?)"
                    .to_owned()
            }
            _ => format!("TLS handshake failed: {err}"),
        };
    };
    explain_rustls(tls, host)
}

/// `explain` for a rustls error.
pub fn explain_rustls(err: &rustls::Error, host: &str) -> String {
    use CertificateError as C;
    let date = |t: &rustls_pki_types::UnixTime| {
        cert::utc_date(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::ExpiredContext { not_after, .. } => format!(
                "the provider's certificate expired on {} (UTC); the provider must renew it \
                 (or this machine's clock is wrong)",
                date(not_after)
            ),
            C::Expired => "the provider's certificate has expired".to_owned(),
            C::NotValidYetContext { not_before, .. } => format!(
                "the provider's certificate is not valid before {} (UTC); check this machine's clock",
                date(not_before)
            ),
            C::NotValidYet => {
                "the provider's certificate is not valid yet; check this machine's clock".to_owned()
            }
            C::NotValidForNameContext { presented, .. } => format!(
                "name mismatch: the certificate is for {}, not {host}; use one of those names in addr",
                if presented.is_empty() {
                    "no DNS name".to_owned()
                } else {
                    presented.join(", ")
                }
            ),
            C::NotValidForName => format!("name mismatch: the certificate is not for {host}"),
            C::UnknownIssuer => "the provider's certificate is not signed by a CA postern trusts; \
                 put the provider's CA (or its own certificate, to pin it) in ca_file"
                .to_owned(),
            C::BadSignature => "the provider's certificate has a bad signature \
                 (is a different CA of the same name in ca_file?)"
                .to_owned(),
            C::Revoked => "the provider's certificate has been revoked".to_owned(),
            C::BadEncoding => "the provider's certificate is malformed".to_owned(),
            C::Other(OtherError(inner)) => match inner.downcast_ref::<CertProblem>() {
                Some(p) => p.to_string(),
                None => format!("the provider's certificate was refused: {inner}"),
            },
            other => format!("the provider's certificate was refused: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the provider did not answer in TLS: is tls right for this port? \
             (465: \"implicit\"; 587 and 25: \"starttls\")"
                .to_owned()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the provider refused the TLS handshake (alert {alert:?})")
        }
        rustls::Error::PeerIncompatible(why) => format!(
            "the provider's TLS is incompatible with postern's (TLS 1.2 and 1.3 only): {why:?}"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// `tls_verify = false`: accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
