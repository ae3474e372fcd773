//! The listener's certificate, replaceable while serving.
//!
//! The server-side `ServerConfig` is built once, with `ServerCerts` as its
//! certificate resolver. A reload (SIGHUP) reads `[tls] cert` and `key` again
//! and swaps the certified key for handshakes that start from then on; a
//! handshake under way, and every TLS session already set up, keep the one
//! they started with. A new pair that does not load — unreadable, not PEM, a
//! key that is not the certificate's — or whose certificate has already
//! expired is refused, and the running one stays.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::TlsError;

/// A loaded certificate chain and key, with the leaf's expiry.
pub struct Loaded {
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl Loaded {
    /// Why this certificate must not replace a running one: it has expired
    /// at `now` (Unix seconds).
    pub fn unfit_at(&self, now: i64) -> Option<String> {
        (self.not_after < now).then(|| {
            format!(
                "the certificate expired on {}",
                super::cert::utc_date(self.not_after)
            )
        })
    }
}

/// Reads `cert` and `key` and checks that they belong together.
///
/// # Errors
/// The file that failed and why, in words; never key material.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let (chain, private) = super::load_cert_and_key(cert, key)?;
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let leaf = chain
        .first()
        .ok_or_else(|| cert_err("no PEM certificate found".into()))?;
    let info = super::cert::inspect(leaf)
        .ok_or_else(|| cert_err("the first PEM block is not an X.509 certificate".into()))?;
    let not_after = info.not_after;
    let certified =
        CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsError::Key {
            path: key.display().to_string(),
            reason: match e {
                tokio_rustls::rustls::Error::InconsistentKeys(_) => format!(
                    "this key does not belong to the certificate in {}",
                    cert.display()
                ),
                other => other.to_string(),
            },
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

/// The certificate handshakes are answered with; `replace` swaps it.
pub struct ServerCerts {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCerts {
    pub fn new(loaded: Loaded) -> ServerCerts {
        ServerCerts {
            current: RwLock::new(loaded.key),
        }
    }

    /// Serves `loaded` to handshakes from now on.
    pub fn replace(&self, loaded: Loaded) {
        match self.current.write() {
            Ok(mut k) => *k = loaded.key,
            Err(poisoned) => *poisoned.into_inner() = loaded.key,
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerCerts")
    }
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
