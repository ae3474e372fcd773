//! The TLS step of `postern doctor`: its own handshake with the upstream's real
//! verifier, wrapped to keep the certificate it was shown.

use super::*;

/// Keeps the certificate it is shown, then lets the real verifier decide.
#[derive(Debug)]
struct Capture {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub(super) async fn tls_step(config: &Config, u: &UpstreamConfig, addr: &str) -> Step {
    let mode = u.tls_mode();
    if mode == TlsMode::None {
        return step("tls", true, "none (tls = \"none\"): clear text");
    }
    match timeout(STEP_TIMEOUT, tls_probe(config, u, addr, mode)).await {
        Ok(s) => s,
        Err(_) => step("tls", false, "timed out"),
    }
}

async fn tls_probe(config: &Config, u: &UpstreamConfig, addr: &str, mode: TlsMode) -> Step {
    let host = u.host().unwrap_or_default();
    let inner = match crate::tls::provider_verifier(
        u.ca_file.as_ref().map(|p| p.get_ref().as_path()),
        u.tls_verify.unwrap_or(true),
    ) {
        Ok(v) => v,
        Err(e) => return step("tls", false, e.to_string()),
    };
    let capture = Arc::new(Capture {
        inner,
        seen: Mutex::new(None),
    });
    let cfg = match crate::tls::client_config_with(capture.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => return step("tls", false, e.to_string()),
    };
    let mut tcp = match TcpStream::connect(addr).await {
        Ok(t) => t,
        Err(e) => return step("tls", false, e.to_string()),
    };
    if mode == TlsMode::Starttls {
        let helo = format!("EHLO {}\r\n", config.server.hostname);
        let ok = async {
            let greeting = read_reply(&mut tcp).await?;
            if !greeting.starts_with("220") {
                return Err(format!("greeting: {greeting}"));
            }
            tcp.write_all(helo.as_bytes()).await.map_err(|e| e.to_string())?;
            let ehlo = read_reply(&mut tcp).await?;
            if !ehlo.to_ascii_uppercase().contains("STARTTLS") {
                return Err("the provider does not offer STARTTLS (tls = \"starttls\"; is it \"implicit\", port 465?)".into());
            }
            tcp.write_all(b"STARTTLS\r\n").await.map_err(|e| e.to_string())?;
            let r = read_reply(&mut tcp).await?;
            if !r.starts_with("220") {
                return Err(format!("STARTTLS refused: {r}"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = ok {
            return step("tls", false, e);
        }
    }
    let Ok(name) = ServerName::try_from(host.clone()) else {
        return step("tls", false, format!("{host:?} is not a TLS server name"));
    };
    let result = TlsConnector::from(cfg).connect(name, tcp).await;
    let seen = capture
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let about = seen
        .as_ref()
        .and_then(|c| cert::inspect(c.as_ref()))
        .map(|i| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            format!(
                "certificate for {:?} issued by {:?}, expires {} ({} days)",
                i.subject,
                i.issuer,
                cert::utc_date(i.not_after),
                (i.not_after - now).div_euclid(86_400)
            )
        });
    let about = about.unwrap_or_else(|| "no certificate seen".to_owned());
    match result {
        Ok(stream) => {
            let version = stream
                .get_ref()
                .1
                .protocol_version()
                .map_or("TLS".to_owned(), |v| format!("{v:?}"));
            step(
                "tls",
                true,
                format!("{version} ({mode:?}); {about}; verified"),
            )
        }
        Err(e) => step(
            "tls",
            false,
            format!("{}; {about}", crate::tls::explain(&e, &host)),
        ),
    }
}

/// Reads one (possibly multi-line) SMTP reply in clear text, byte by byte so
/// nothing past it is taken from the stream the TLS handshake will use.
async fn read_reply(tcp: &mut TcpStream) -> Result<String, String> {
    let mut text = String::new();
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = tcp.read(&mut b).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the provider closed the connection".into());
        }
        line.push(b[0]);
        if line.len() > 1024 || text.len() > 16 * 1024 {
            return Err("reply too long".into());
        }
        if line.ends_with(b"\r\n") {
            let l = String::from_utf8_lossy(&line).trim_end().to_owned();
            text.push_str(&l);
            text.push('\n');
            line.clear();
            if l.len() < 4 || l.as_bytes()[3] == b' ' {
                return Ok(text.trim_end().to_owned());
            }
        }
    }
}
