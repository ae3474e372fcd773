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

/// What a made-to-order certificate looks like.
#[derive(Clone, Debug)]
pub struct CertSpec {
    /// Subject alternative names (DNS names or IP addresses).
    pub names: Vec<String>,
    /// The subject common name.
    pub common_name: String,
    /// Marked as a CA (`basicConstraints cA=TRUE`), as `openssl req -x509` makes them.
    pub is_ca: bool,
    /// Validity, as (year, month, day) UTC.
    pub not_before: (i32, u8, u8),
    pub not_after: (i32, u8, u8),
}

impl Default for CertSpec {
    fn default() -> Self {
        CertSpec {
            names: vec!["localhost".to_string(), "127.0.0.1".to_string()],
            common_name: "fake provider".to_string(),
            is_ca: false,
            not_before: (2020, 1, 1),
            not_after: (2090, 1, 1),
        }
    }
}

impl CertSpec {
    fn params(&self) -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::new(self.names.clone()).expect("rcgen: names");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, self.common_name.clone());
        if self.is_ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let (y, m, d) = self.not_before;
        p.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = self.not_after;
        p.not_after = rcgen::date_time_ymd(y, m, d);
        p
    }

    /// A self-signed certificate of this description.
    pub fn self_signed(&self) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("rcgen: key");
        let cert = self.params().self_signed(&key).expect("rcgen: self-signed");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A private CA and a server certificate it signed: (CA certificate PEM, server cert and key).
pub fn ca_signed(server: &CertSpec) -> (String, TestCert) {
    let ca_key = rcgen::KeyPair::generate().expect("rcgen: CA key");
    let ca_spec = CertSpec {
        names: Vec::new(),
        common_name: "Test Private CA".to_string(),
        is_ca: true,
        ..CertSpec::default()
    };
    let ca_params = ca_spec.params();
    let ca_cert = ca_params.self_signed(&ca_key).expect("rcgen: CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("rcgen: key");
    let cert = server
        .params()
        .signed_by(&key, &issuer)
        .expect("rcgen: signed");
    (
        ca_cert.pem(),
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    )
}
