//! Setting up a `Client`: TCP, TLS (implicit or STARTTLS, never a plaintext
//! fallback), the greeting, EHLO, then AUTH with the provider's credentials
//! (PLAIN, LOGIN, or XOAUTH2/OAUTHBEARER with a token from the account's source).

use std::sync::Arc;

use tokio::time::{Instant, timeout};

use super::{ActiveGuard, COMMAND_TIMEOUT, CONNECT_TIMEOUT, Client};
use crate::config::{TlsMode, UpstreamAuth};
use crate::secret::SecretString;
use crate::smtp::sasl;
use crate::upstream::dial::Dial;
use crate::upstream::oauth2::{self, TokenSource};
use crate::upstream::pool::Purpose;
use crate::upstream::{Capabilities, UpstreamError};

impl Client {
    /// Opens a connection: TCP, TLS per `tls`, greeting, EHLO, AUTH.
    ///
    /// # Errors
    /// `UpstreamError` with the stage that failed; nothing of the password is in it.
    pub async fn connect(dial: Arc<Dial>, purpose: Purpose) -> Result<Client, UpstreamError> {
        let metrics = dial.metrics.clone();
        let name = dial.name.clone();
        let traffic = purpose == Purpose::Traffic;
        let started = Instant::now();
        let result = match timeout(CONNECT_TIMEOUT, Client::connect_inner(dial, traffic)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout("connect")),
        };
        let word = result.as_ref().err().map_or("ok", UpstreamError::stage);
        if traffic {
            match &result {
                Ok(_) => {
                    metrics
                        .upstream_connections_opened
                        .with_label_values(&[&name])
                        .inc();
                    metrics
                        .upstream_connection_setup_duration
                        .with_label_values(&[&name])
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(_) => metrics
                    .upstream_connections_failed
                    .with_label_values(&[&name, word])
                    .inc(),
            }
        } else {
            metrics
                .upstream_health_checks
                .with_label_values(&[&name, word])
                .inc();
        }
        result
    }

    async fn connect_inner(dial: Arc<Dial>, traffic: bool) -> Result<Client, UpstreamError> {
        let io = dial.open().await?;
        let mode = dial.tls_mode;
        let (stream, tls) = if mode == TlsMode::Implicit {
            (dial.tls_handshake(io).await?, true)
        } else {
            (io, false)
        };
        let mut c = Client {
            _active: ActiveGuard::new(&dial),
            dial,
            stream,
            tls,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            caps: Capabilities::default(),
            last_used: Instant::now(),
            replies: 0,
            reply_metrics: Vec::new(),
            last_batch: Vec::new(),
            permit: None,
            traffic,
            user_permit: None,
            chunks: None,
            data_owed: None,
            data_refused: None,
            hold: None,
        };
        let greeting = c.read_reply_within(COMMAND_TIMEOUT).await?;
        if greeting.code != 220 {
            return Err(UpstreamError::Rejected("greeting", greeting));
        }
        c.ehlo().await?;
        if mode == TlsMode::Starttls {
            if !c.caps.starttls {
                // No opportunistic fallback: a man in the middle can strip STARTTLS.
                return Err(UpstreamError::Protocol("upstream does not offer STARTTLS"));
            }
            let reply = c.command("STARTTLS", "STARTTLS").await?;
            if reply.code != 220 {
                return Err(UpstreamError::Rejected("starttls", reply));
            }
            if !c.rbuf.is_empty() {
                // Response injection: bytes after the 220 came in clear text.
                return Err(UpstreamError::Protocol(
                    "upstream sent data after its STARTTLS 220 (response injection)",
                ));
            }
            if c.tls {
                return Err(UpstreamError::Protocol("STARTTLS inside TLS"));
            }
            let plain = std::mem::replace(&mut c.stream, Box::new(tokio::io::empty()));
            c.stream = c.dial.tls_handshake(plain).await?;
            c.tls = true;
            // RFC 3207 §4.2: forget what was learned before TLS.
            c.caps = Capabilities::default();
            c.ehlo().await?;
        }
        c.authenticate().await?;
        c.replies = 0;
        Ok(c)
    }

    async fn ehlo(&mut self) -> Result<(), UpstreamError> {
        let line = format!("EHLO {}", self.dial.helo_name);
        let reply = self.command(&line, "EHLO").await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        let line = format!("HELO {}", self.dial.helo_name);
        let reply = self.command(&line, "HELO").await?;
        if reply.code != 250 {
            return Err(UpstreamError::Rejected("ehlo", reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn authenticate(&mut self) -> Result<(), UpstreamError> {
        if let Some((user, tokens)) = self.dial.oauth.clone() {
            return self.authenticate_oauth(&user, &tokens).await;
        }
        let Some((user, password)) = self.dial.credentials.clone() else {
            return Ok(());
        };
        let auth = self.dial.auth;
        let plain =
            auth == UpstreamAuth::Plain || (auth == UpstreamAuth::Auto && self.caps.auth_plain);
        let login =
            auth == UpstreamAuth::Login || (auth == UpstreamAuth::Auto && self.caps.auth_login);
        let reply = if plain {
            let line = SecretString::new(format!(
                "AUTH PLAIN {}",
                sasl::encode_plain(&user, password.expose()).expose()
            ));
            self.secret_command(line.expose()).await?
        } else if login {
            let r = self.command("AUTH LOGIN", "AUTH").await?;
            if r.code != 334 {
                return Err(UpstreamError::Rejected("auth", r));
            }
            let r = self.command(&sasl::encode(&user), "AUTH").await?;
            if r.code != 334 {
                return Err(UpstreamError::Rejected("auth", r));
            }
            self.secret_command(sasl::encode_secret(password.expose()).expose())
                .await?
        } else {
            return Err(UpstreamError::Protocol(
                "upstream offers neither AUTH PLAIN nor AUTH LOGIN",
            ));
        };
        if reply.code != 235 {
            return Err(UpstreamError::Rejected("auth", reply));
        }
        Ok(())
    }

    /// XOAUTH2 or OAUTHBEARER with a token from the account's source; a cached
    /// token the provider refuses is replaced once and tried again.
    async fn authenticate_oauth(
        &mut self,
        user: &str,
        tokens: &TokenSource,
    ) -> Result<(), UpstreamError> {
        let bearer = self.dial.auth == UpstreamAuth::Oauthbearer;
        let offered = if bearer {
            self.caps.auth_oauthbearer
        } else {
            self.caps.auth_xoauth2
        };
        if !offered {
            return Err(UpstreamError::Protocol(if bearer {
                "upstream does not offer AUTH OAUTHBEARER"
            } else {
                "upstream does not offer AUTH XOAUTH2"
            }));
        }
        let token_error = |e: oauth2::TokenError| UpstreamError::Token(e.to_string());
        let (mut token, mut cached) = tokens.token().await.map_err(token_error)?;
        loop {
            let name = if bearer { "OAUTHBEARER" } else { "XOAUTH2" };
            let line = SecretString::new(format!(
                "AUTH {name} {}",
                oauth2::initial_response(self.dial.auth, user, token.expose()).expose()
            ));
            let mut reply = self.secret_command(line.expose()).await?;
            if reply.code == 334 {
                // The provider's error, as a base64 JSON challenge; the client
                // answers with an empty response (RFC 7628 §3.2.3: %x01) and
                // hears the final 535.
                reply = self
                    .command(if bearer { "AQ==" } else { "" }, "AUTH")
                    .await?;
            }
            if reply.code == 235 {
                return Ok(());
            }
            if !cached || reply.class() != 5 {
                return Err(UpstreamError::Rejected("auth", reply));
            }
            tracing::info!(
                upstream = %self.dial.name,
                "provider refused the cached OAuth2 token; fetching a new one"
            );
            token = tokens
                .renew_after_refusal(token.expose())
                .await
                .map_err(token_error)?;
            cached = false;
        }
    }
}
