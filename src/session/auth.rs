//! AUTH PLAIN and AUTH LOGIN (RFC 4954, RFC 4616), against the local users.
//! Nothing of a response line, decoded or not, is ever logged.

use super::{Next, Sasl, Session};
use crate::auth::Verdict;
use crate::smtp::reply::Reply;
use crate::smtp::sasl::{self, Credentials, SaslError};

impl Session {
    pub(super) async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        if self.helo.is_none() {
            self.push(Reply::new(503, "5.5.1", "Send EHLO first"));
            return self.count_error();
        }
        if self.user.is_some() {
            self.push(Reply::new(503, "5.5.1", "Already authenticated"));
            return self.count_error();
        }
        if self.txn.is_some() {
            self.push(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
            return self.count_error();
        }
        if self.shared.limiters.auth_locked(self.peer.ip()) {
            return self.auth_throttled(mechanism);
        }
        if !self.auth_allowed() {
            self.push(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
            return self.count_error();
        }
        match (mechanism, initial) {
            ("PLAIN", Some(resp)) => self.finish_plain(&resp).await,
            ("PLAIN", None) => {
                self.sasl = Some(Sasl::Plain);
                self.push(Reply::plain(334, ""));
                Next::Continue
            }
            ("LOGIN", Some(resp)) => match sasl::decode_login_field(&resp) {
                Ok(username) => {
                    self.sasl = Some(Sasl::LoginPass { username });
                    self.push(Reply::plain(334, sasl::LOGIN_PASSWORD_PROMPT));
                    Next::Continue
                }
                Err(e) => self.sasl_error(e, "login"),
            },
            ("LOGIN", None) => {
                self.sasl = Some(Sasl::LoginUser);
                self.push(Reply::plain(334, sasl::LOGIN_USERNAME_PROMPT));
                Next::Continue
            }
            _ => {
                self.push(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
                self.count_error()
            }
        }
    }

    /// A line received while a SASL exchange is open.
    pub(super) async fn sasl_line(&mut self, line: &[u8]) -> Next {
        let Some(state) = self.sasl.take() else {
            return Next::Continue;
        };
        let text = String::from_utf8_lossy(line).into_owned();
        match state {
            Sasl::Plain => self.finish_plain(&text).await,
            Sasl::LoginUser => match sasl::decode_login_field(&text) {
                Ok(username) => {
                    self.sasl = Some(Sasl::LoginPass { username });
                    self.push(Reply::plain(334, sasl::LOGIN_PASSWORD_PROMPT));
                    Next::Continue
                }
                Err(e) => self.sasl_error(e, "login"),
            },
            Sasl::LoginPass { username } => match sasl::decode_login_field(&text) {
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
                self.push(Reply::new(501, "5.7.0", "Authentication cancelled"));
                Next::Continue
            }
            SaslError::BadBase64 => {
                self.push(Reply::new(501, "5.5.2", "Cannot decode response"));
                self.auth_failed(mechanism)
            }
            SaslError::Malformed => {
                self.push(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
                self.auth_failed(mechanism)
            }
        }
    }

    async fn check_credentials(&mut self, creds: Credentials, mechanism: &str) -> Next {
        // No impersonation: an authorization identity must be the user itself.
        if !creds.authzid.is_empty() && creds.authzid != creds.username {
            self.push(Reply::new(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            ));
            return self.auth_failed(mechanism);
        }
        if self.shared.limiters.auth_locked(self.peer.ip()) {
            return self.auth_throttled(mechanism);
        }
        let users = self.policy.users.clone();
        match users.verify(&creds.username, &creds.password).await {
            Verdict::Ok(user) => {
                tracing::info!(user = %user.name, mechanism, "authenticated");
                self.record_auth(mechanism, "ok");
                if !self.claim_user_slot(&user) {
                    return Next::Close;
                }
                self.user = Some(user);
                self.push(Reply::new(235, "2.7.0", "Authentication successful"));
                Next::Continue
            }
            Verdict::Denied => {
                tracing::info!(mechanism, "authentication failed");
                self.push(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
                self.auth_failed(mechanism)
            }
        }
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
        self.shared
            .metrics
            .limit_hits
            .with_label_values(&["auth_failures"])
            .inc();
        self.push(Reply::new(
            454,
            "4.7.0",
            "Temporary authentication failure: too many failed attempts, try again later",
        ));
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
        self.shared.limiters.auth_failed(self.peer.ip());
        self.auth_failures += 1;
        if self.auth_failures >= super::MAX_AUTH_FAILURES {
            self.push(Reply::new(
                421,
                "4.7.0",
                "Too many failed authentications, closing connection",
            ));
            return Next::Close;
        }
        self.count_error()
    }
}
