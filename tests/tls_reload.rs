//! The listener certificate is read again on reload (SIGHUP), as certbot
//! renews it in place: new handshakes get the new certificate; a broken one,
//! a key that is not the certificate's, or an expired certificate is refused,
//! and the running certificate stays. Checked with a real rustls client that
//! verifies the chain, against the in-process server and against the binary.

// Deadlines of a test that drives the real binary, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use support::certs::{CertSpec, TestCert};
use support::postern::PosternBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

fn der(cert: &TestCert) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .expect("test certificate PEM")
        .as_ref()
        .to_vec()
}

/// A client that trusts exactly these (self-signed) certificates and never
/// resumes a session.
fn client(trusted: &[&TestCert]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots
            .add(CertificateDer::from(der(c)))
            .expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session reports the certificate of the session it resumes:
    // every connection here must make a full handshake.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// Opens an implicit-TLS session, reads the greeting and returns the leaf
/// certificate the server presented (DER), or the handshake error.
fn served(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap())
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    let mut greeting = String::new();
    BufReader::new(&mut tls)
        .read_line(&mut greeting)
        .map_err(|e| e.to_string())?;
    assert!(
        greeting.starts_with("220 "),
        "greeting over TLS: {greeting:?}"
    );
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or("no peer certificate")?;
    let _ = tls.write_all(b"QUIT\r\n");
    Ok(leaf)
}

fn cert_for_localhost() -> TestCert {
    CertSpec {
        common_name: "postern test listener".into(),
        ..CertSpec::default()
    }
    .self_signed()
}

fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str) {
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
}

fn config(dir: &Path, listen: &str) -> String {
    format!(
        r#"[server]
hostname = "tls-reload.localhost"
shutdown_grace = "2s"
[tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"
[[listener]]
name = "smtps"
addr = "{listen}"
tls = "implicit"
[metrics]
addr = "127.0.0.1:0"
[[upstream]]
name = "outbox"
kind = "outbox"
dir = "{dir}/outbox"
"#,
        dir = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate_and_refuses_a_bad_one() {
    let a = cert_for_localhost();
    let b = cert_for_localhost();
    let p = PosternBuilder::new(&config(Path::new("{dir}"), "127.0.0.1:0"))
        .start()
        .await;
    let dir = p.dir.path().to_owned();
    // The builder wrote its own test certificate; start from `a`.
    write_pair(&dir, &a.cert_pem, &a.key_pem);
    let file = dir.join("reload.toml");
    std::fs::write(&file, config(&dir, "127.0.0.1:0")).unwrap();
    let reload = |p: &support::postern::Postern| p.reloader.reload_file(&file);
    reload(&p).expect("reload");
    let addr = p.addr("smtps");
    let trust = client(&[&a, &b]);
    let leaf = tokio::task::spawn_blocking({
        let trust = trust.clone();
        move || served(addr, &trust)
    });
    assert_eq!(
        leaf.await.unwrap().unwrap(),
        der(&a),
        "serves a after the first reload"
    );
    assert_eq!(
        p.metric("postern_tls_certificate_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );

    // certbot renews in place: b's files over a's.
    write_pair(&dir, &b.cert_pem, &b.key_pem);
    reload(&p).expect("reload");
    let t = trust.clone();
    let leaf = tokio::task::spawn_blocking(move || served(addr, &t));
    assert_eq!(
        leaf.await.unwrap().unwrap(),
        der(&b),
        "new handshakes get b"
    );
    let expiry = p
        .metric("postern_tls_certificate_expiry_timestamp_seconds{listener=\"smtps\"}")
        .await;
    // CertSpec's default notAfter: 2090-01-01.
    assert_eq!(expiry, 3_786_912_000.0);

    // Three bad renewals: not PEM and a key that is not the certificate's fail
    // the whole reload (the file does not validate); an expired certificate
    // is refused while the rest of the reload goes ahead.
    let expired = CertSpec {
        not_before: (2020, 1, 1),
        not_after: (2021, 1, 1),
        ..CertSpec::default()
    }
    .self_signed();
    let c = cert_for_localhost();
    for (n, (cert_pem, key_pem, validates)) in [
        ("not a certificate\n".to_owned(), b.key_pem.clone(), false),
        (c.cert_pem.clone(), b.key_pem.clone(), false),
        (expired.cert_pem.clone(), expired.key_pem.clone(), true),
    ]
    .into_iter()
    .enumerate()
    {
        write_pair(&dir, &cert_pem, &key_pem);
        let result = reload(&p);
        assert_eq!(result.is_ok(), validates, "renewal {n}: {result:?}");
        if let Err(e) = &result {
            assert!(e.contains("tls."), "names the key: {e}");
            assert!(!e.contains("BEGIN"), "no PEM in the message: {e}");
        }
        let t = client(&[&a, &b, &c, &expired]);
        let leaf = tokio::task::spawn_blocking(move || served(addr, &t));
        assert_eq!(
            leaf.await.unwrap().unwrap(),
            der(&b),
            "bad renewal {n} must keep b"
        );
        assert_eq!(
            p.metric("postern_tls_certificate_reloads_total{result=\"error\"}")
                .await,
            (n + 1) as f64
        );
    }
    assert_eq!(
        p.metric("postern_tls_certificate_reloads_total{result=\"ok\"}")
            .await,
        2.0
    );
    p.stop().await;
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn hup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

/// Waits until a handshake presents `want`, or panics with the log.
fn wait_for_cert(addr: SocketAddr, cfg: &Arc<ClientConfig>, want: &[u8], log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if served(addr, cfg).is_ok_and(|leaf| leaf == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the expected certificate was never served\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_makes_the_binary_serve_the_renewed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (a, b) = (cert_for_localhost(), cert_for_localhost());
    write_pair(dir, &a.cert_pem, &a.key_pem);
    let port = free_port();
    let path = dir.join("postern.toml");
    std::fs::write(&path, config(dir, &format!("127.0.0.1:{port}"))).unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = Guard(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let trust = client(&[&a, &b]);
    wait_for_cert(addr, &trust, &der(&a), &log);

    write_pair(dir, &b.cert_pem, &b.key_pem);
    hup(&child.0);
    wait_for_cert(addr, &trust, &der(&b), &log);

    // A half-written renewal (the key file truncated) is refused; b stays.
    std::fs::write(dir.join("key.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    hup(&child.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listener certificate not reloaded")
    {
        assert!(Instant::now() < deadline, "no refusal logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(served(addr, &trust).unwrap(), der(&b));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains("BEGIN PRIVATE KEY"),
        "no key material in the log:\n{log_text}"
    );
}
