//! Self-signed TLS material for tests.

use std::path::{Path, PathBuf};

/// A self-signed certificate (valid for `localhost` and `127.0.0.1`) and its key, as PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a fresh self-signed certificate for `localhost` and `127.0.0.1`.
///
/// The certificate is not a CA; trust it directly as a root (rustls accepts a
/// self-signed end-entity certificate as its own trust anchor).
pub fn test_cert() -> TestCert {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen: generating a self-signed test certificate");
    TestCert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}

impl TestCert {
    /// Writes `cert.pem` and `key.pem` into `dir` and returns their paths (cert, key).
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", cert.display()));
        std::fs::write(&key, &self.key_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", key.display()));
        (cert, key)
    }
}
