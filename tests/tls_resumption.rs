//! TLS session resumption for returning devices: postern's server config
//! issues stateless session tickets, so a client that kept its ticket resumes
//! (an abbreviated handshake: no certificate, no signature) however many other
//! clients connected in between.

mod support;

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use tokio_rustls::rustls;

use rustls::client::Resumption;
use rustls::{ClientConfig, ClientConnection, Connection, HandshakeKind, ServerConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::certs::{TestCert, test_cert};
use support::postern::spawn_postern;

fn client_config(cert: &TestCert) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .expect("test cert PEM");
    roots.add(der).expect("trust the test cert");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    // rustls's default, spelled out: an in-memory store of tickets.
    config.resumption = Resumption::in_memory_sessions(32);
    Arc::new(config)
}

async fn reply<R: AsyncBufReadExt + Unpin>(r: &mut R) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).await.expect("read") > 0, "closed");
        let last = line.as_bytes().get(3) != Some(&b'-');
        all.push_str(&line);
        if last {
            return all;
        }
    }
}

/// One STARTTLS session: EHLO, STARTTLS, the handshake, EHLO again (which
/// also reads the tickets the server sends after a TLS 1.3 handshake), QUIT.
async fn starttls_session(addr: std::net::SocketAddr, config: &Arc<ClientConfig>) -> HandshakeKind {
    let mut plain = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    assert!(reply(&mut plain).await.starts_with("220 "));
    plain
        .write_all(b"EHLO device.test\r\n")
        .await
        .expect("write");
    assert!(reply(&mut plain).await.starts_with("250"));
    plain.write_all(b"STARTTLS\r\n").await.expect("write");
    assert!(reply(&mut plain).await.starts_with("220 "));
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, plain.into_inner())
        .await
        .expect("TLS handshake with postern");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    let mut tls = BufReader::new(tls);
    tls.write_all(b"EHLO device.test\r\n").await.expect("write");
    assert!(reply(&mut tls).await.starts_with("250"));
    tls.write_all(b"QUIT\r\n").await.expect("write");
    assert!(reply(&mut tls).await.starts_with("221 "));
    kind
}

#[tokio::test]
async fn a_returning_device_resumes_its_tls_session_over_starttls() {
    let toml = "[[listener]]\nname = \"sub\"\naddr = \"127.0.0.1:0\"\ntls = \"starttls\"\n\n\
                [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
                [[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"{dir}/outbox\"\n";
    let p = spawn_postern(toml).await;
    let device = client_config(&p.cert);
    assert_eq!(
        starttls_session(p.addr("sub"), &device).await,
        HandshakeKind::Full
    );
    for _ in 0..3 {
        assert_eq!(
            starttls_session(p.addr("sub"), &device).await,
            HandshakeKind::Resumed
        );
    }
    // A device without a ticket still gets a full handshake.
    assert_eq!(
        starttls_session(p.addr("sub"), &client_config(&p.cert)).await,
        HandshakeKind::Full
    );
}

/// Moves the TLS records `from` has to send into `to`; whether there were any.
fn transfer(from: &mut Connection, to: &mut Connection) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).expect("write_tls");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("TLS records");
    }
    !buf.is_empty()
}

/// Runs both sides until neither has more to say (the tickets a TLS 1.3
/// server sends after the handshake included).
fn pump(client: &mut Connection, server: &mut Connection) {
    for _ in 0..20 {
        let a = transfer(client, server);
        let b = transfer(server, client);
        if !a && !b {
            return;
        }
    }
    panic!("the handshake did not settle");
}

fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> HandshakeKind {
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut c = Connection::Client(ClientConnection::new(client.clone(), name).expect("client"));
    let mut s = Connection::Server(ServerConnection::new(server.clone()).expect("server"));
    pump(&mut c, &mut s);
    assert!(!c.is_handshaking() && !s.is_handshaking());
    c.handshake_kind().expect("done")
}

/// The tickets are stateless (sealed with the server's rotating key), so no
/// cache on the server forgets them: a device resumes after 200 others have
/// connected. rustls's default (a 256-entry stateful cache, two entries per
/// TLS 1.3 handshake) has forgotten it by then, which this checks too, so
/// the test would fail if postern's config fell back to the default.
#[test]
fn resumption_survives_many_other_clients_unlike_the_stateful_default() {
    let cert = test_cert();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = cert.write_to(dir.path());
    let loaded = postern::tls::load_server_cert(&cert_path, &key_path).expect("certificate");
    let certs = std::sync::Arc::new(postern::tls::server::ServerCerts::new(loaded));
    let ours = postern::tls::server_config(certs).expect("server config");
    let default = {
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(&cert_path)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key_path).expect("key");
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("cert"),
        )
    };
    for (server, survives) in [(&ours, true), (&default, false)] {
        let device = client_config(&cert);
        assert_eq!(handshake(server, &device), HandshakeKind::Full);
        assert_eq!(handshake(server, &device), HandshakeKind::Resumed);
        for _ in 0..200 {
            handshake(server, &client_config(&cert));
        }
        let expected = if survives {
            HandshakeKind::Resumed
        } else {
            HandshakeKind::Full
        };
        assert_eq!(handshake(server, &device), expected, "survives: {survives}");
    }
}
