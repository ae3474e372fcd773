//! AUTH PLAIN and AUTH LOGIN (RFC 4954, RFC 4616), against the local users.
//! Nothing of a response line, decoded or not, is ever logged.

use super::{Next, Phase, Session};
use crate::auth::Verdict;
use crate::refusal::Refusal;
use crate::secret::SecretString;
use crate::smtp::reply::Reply;
use crate::smtp::sasl::{self, Credentials, SaslError};

/// Where an open SASL exchange stands.
pub(super) enum Sasl {
    Plain,
    LoginUser,
    LoginPass { username: String },
}

impl Sasl {
    pub(super) fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain => "plain",
            Sasl::LoginUser | Sasl::LoginPass { .. } => "login",
        }
    }
}

impl Session {
    pub(super) async fn auth(&mut self, mechanism: &str, initial: Option<SecretString>) -> Next {
        if self.helo.is_none() {
            return self.refuse(Refusal::NeedEhloForAuth);
        }
        if self.user.is_some() {
            return self.refuse(Refusal::AlreadyAuthenticated);
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::AuthInTransaction);
        }
        if self.auth_locked().await {
            return self.auth_throttled(mechanism);
        }
        if !self.auth_allowed() {
            return self.refuse(Refusal::EncryptionRequired);
        }
        match (mechanism, initial) {
            ("PLAIN", Some(resp)) => self.finish_plain(resp.expose()).await,
            ("PLAIN", None) => {
                self.phase = Phase::Sasl(Sasl::Plain);
                self.push(Reply::plain(334, ""));
                Next::Continue
            }
            ("LOGIN", Some(resp)) => match sasl::decode_login_field(resp.expose()) {
                Ok(username) => {
                    let username = username.expose().to_owned();
                    self.phase = Phase::Sasl(Sasl::LoginPass { username });
                    self.push(Reply::plain(334, sasl::LOGIN_PASSWORD_PROMPT));
                    Next::Continue
                }
                Err(e) => self.sasl_error(e, "login"),
            },
            ("LOGIN", None) => {
                self.phase = Phase::Sasl(Sasl::LoginUser);
                self.push(Reply::plain(334, sasl::LOGIN_USERNAME_PROMPT));
                Next::Continue
            }
            _ => self.refuse(Refusal::UnknownMechanism),
        }
    }

    /// A line received while a SASL exchange is open (as text: a base64
    /// response has nothing else, and anything else is refused as bad base64).
    pub(super) async fn sasl_line(&mut self, state: Sasl, text: SecretString) -> Next {
        let text = text.expose();
        match state {
            Sasl::Plain => self.finish_plain(text).await,
            Sasl::LoginUser => match sasl::decode_login_field(text) {
                Ok(username) => {
                    let username = username.expose().to_owned();
                    self.phase = Phase::Sasl(Sasl::LoginPass { username });
                    self.push(Reply::plain(334, sasl::LOGIN_PASSWORD_PROMPT));
                    Next::Continue
                }
                Err(e) => self.sasl_error(e, "login"),
            },
            Sasl::LoginPass { username } => match sasl::decode_login_field(text) {
                Ok(password) => {
                    let creds = Credentials {
                        authzid: String::new(),
                        username,
                        password,
                    };
                    self.check_credentials(creds, "login").await
                }
                Err(e) => self.sasl_error(e, "login"),
            },
        }
    }

    async fn finish_plain(&mut self, response: &str) -> Next {
        match sasl::decode_plain(response) {
            Ok(creds) => self.check_credentials(creds, "plain").await,
            Err(e) => self.sasl_error(e, "plain"),
        }
    }

    fn sasl_error(&mut self, e: SaslError, mechanism: &str) -> Next {
        match e {
            SaslError::Cancelled => {
                self.record_auth(mechanism, "cancelled");
                self.push(Refusal::SaslCancelled.reply());
                Next::Continue
            }
            SaslError::BadBase64 => {
                self.push(Refusal::SaslBadBase64.reply());
                self.auth_failed(mechanism)
            }
            SaslError::Malformed => {
                self.push(Refusal::BadCredentials.reply());
                self.auth_failed(mechanism)
            }
        }
    }

    async fn check_credentials(&mut self, creds: Credentials, mechanism: &str) -> Next {
        // No impersonation: an authorization identity must be the user itself.
        if !creds.authzid.is_empty() && creds.authzid != creds.username {
            self.log_auth_failure(&creds.username, mechanism, "authzid differs");
            self.push(Refusal::BadCredentials.reply());
            return self.auth_failed(mechanism);
        }
        if self.auth_locked().await {
            return self.auth_throttled(mechanism);
        }
        let users = self.policy.users.clone();
        let queued = &self.shared.metrics.auth_checks_queued;
        let (verdict, cache_use) = users
            .verify(&creds.username, creds.password.expose(), queued)
            .await;
        if let Some(result) = cache_use.label() {
            self.shared
                .metrics
                .auth_cache
                .with_label_values(&[result])
                .inc();
        }
        match verdict {
            Verdict::Ok(user) => {
                tracing::info!(user = %user.name, mechanism, "authenticated");
                self.record_auth(mechanism, "ok");
                if self.claim_user_slot(&user).await.is_err() {
                    return Next::Close;
                }
                self.user = Some(user);
                self.push(Reply::new(235, "2.7.0", "Authentication successful"));
                Next::Continue
            }
            Verdict::Busy => {
                // Not a failure: nothing was checked, and the throttle must
                // not lock out an address for the server being busy. The
                // reply is held back a while (no CPU, no place in the queue):
                // answered at once, a flood would come straight back with a
                // new connection and TLS handshake, which costs more of the
                // runtime than the check it was refused.
                self.record_auth(mechanism, "busy");
                tokio::time::sleep(crate::auth::pool::busy_delay()).await;
                self.push(Refusal::AuthBusy.reply());
                self.count_error()
            }
            Verdict::Denied => {
                self.log_auth_failure(&creds.username, mechanism, "bad credentials");
                self.push(Refusal::BadCredentials.reply());
                self.auth_failed(mechanism)
            }
        }
    }

    /// One line per failed AUTH: the username tried (bounded; quoted and
    /// escaped by the log format) and the client address. Never the password.
    fn log_auth_failure(&self, username: &str, mechanism: &str, why: &'static str) {
        let client = self.peer.to_string();
        tracing::info!(
            username = super::record::bounded(username),
            client = client.as_str(),
            mechanism,
            reason = why,
            "authentication failed"
        );
    }

    /// Too many failures from this address lately: refuse without looking at a password.
    fn auth_throttled(&mut self, mechanism: &str) -> Next {
        // The label is a fixed word: the mechanism name comes from the client.
        let label = match mechanism {
            "PLAIN" | "plain" => "plain",
            "LOGIN" | "login" => "login",
            _ => "other",
        };
        self.record_auth(label, "throttled");
        self.decline(Refusal::AuthThrottled);
        self.count_error()
    }

    fn record_auth(&self, mechanism: &str, result: &str) {
        self.shared
            .metrics
            .auth_attempts
            .with_label_values(&[mechanism, result])
            .inc();
    }

    /// Counts a failed attempt; too many close the session.
    pub(super) fn auth_failed(&mut self, mechanism: &str) -> Next {
        self.record_auth(mechanism, "fail");
        self.note_auth_failure();
        self.auth_failures += 1;
        if self.auth_failures >= super::MAX_AUTH_FAILURES {
            self.push(Refusal::TooManyAuthFailures.reply());
            return Next::Close;
        }
        self.count_error()
    }
}
