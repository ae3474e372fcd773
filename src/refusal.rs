//! Every reply postern itself refuses with, as a value. A `Refusal` knows its
//! reply (code, enhanced code, text), which side caused it, and the words it
//! is counted under, so the reply, the log line and the counter come from one
//! place. The upstream's own refusals are not here: they are passed through
//! with the provider's code and text (`relay::from_upstream`).

use std::sync::Arc;
use std::time::Duration;

use crate::smtp::data::DataError;
use crate::smtp::reply::Reply;

/// Who caused a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client broke the protocol (sequence, syntax, encoding).
    Client,
    /// Local policy said no: credentials, senders, limits.
    Policy,
    /// The upstream could not be reached, set up, or finish.
    Upstream,
    /// postern itself: a disk error, shutdown, no TLS configured.
    Local,
}

/// Why an upstream could not be set up for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFailure {
    /// The provider refused postern's own credentials.
    Credentials,
    /// Every allowed connection stayed busy for `pool_wait`.
    PoolFull,
    /// The user held `max_upstream_connections_per_user` for `pool_wait`.
    UserShare,
    /// Connect, greeting, EHLO or a timeout.
    Unavailable,
    /// No OAuth2 token: the token endpoint is down or refused postern.
    Token,
}

/// A refusal postern decides itself.
#[derive(Debug, Clone)]
pub enum Refusal {
    // The client's protocol.
    /// A command line that did not parse; the parser chose the reply.
    Syntax(Reply),
    LineTooLong,
    SaslLineTooLong,
    BareLf,
    TooManyErrors,
    NeedHelo,
    NeedEhloForAuth,
    NestedMail,
    NeedMailForRcpt,
    NeedMailForData,
    NeedRcptForData,
    NeedMailForBdat,
    NeedRcptForBdat,
    /// DATA after BDAT in one transaction (RFC 3030 §2).
    DataAfterBdat,
    /// A command other than BDAT, RSET, EHLO/HELO, NOOP, HELP, VRFY or QUIT
    /// between the chunks of a message.
    BdatInProgress,
    AlreadyAuthenticated,
    AuthInTransaction,
    TlsAlreadyActive,
    NonAsciiSender,
    NonAsciiRecipient,
    UnknownMechanism,
    SaslBadBase64,
    SaslCancelled,
    /// The message body broke the DATA rules (bare CR/LF, line length, size).
    Data(DataError),
    // Local policy.
    AuthRequired,
    EncryptionRequired,
    BadCredentials,
    TooManyAuthFailures,
    AuthThrottled,
    /// Every password-check worker is busy and the queue is full.
    AuthBusy,
    UserConnections(Arc<str>),
    SizeDeclaredTooBig,
    SenderNotAllowed(Arc<str>),
    /// The upstream has `[[upstream.account]]` entries and none is for this
    /// envelope sender (after `rewrite_sender`).
    NoAccountForSender {
        upstream: Arc<str>,
    },
    MessageRate {
        user: Arc<str>,
        wait: Duration,
    },
    RecipientRate {
        user: Arc<str>,
        wait: Duration,
    },
    /// Relay mode: the upstream's `messages_per_day` or `recipients_per_day`
    /// (`what`) is used up for now.
    UpstreamQuota {
        upstream: Arc<str>,
        what: &'static str,
        wait: Duration,
    },
    TooManyRecipients,
    NoValidRecipients,
    HeaderTooLarge,
    // The upstream.
    UpstreamSetup {
        upstream: Arc<str>,
        failure: SetupFailure,
    },
    /// TLS toward the provider failed (or could not be used safely);
    /// `problem` says why in words an administrator can act on.
    UpstreamTls {
        upstream: Arc<str>,
        problem: Arc<str>,
    },
    UpstreamNoSmtputf8(Arc<str>),
    UpstreamLost,
    /// No connection left for a RCPT (an earlier failure closed it).
    UpstreamGone,
    UpstreamLostInData,
    UpstreamUnconfirmed,
    // postern itself.
    /// `[cluster]` with `on_redis_error = "refuse"`: Redis did not answer,
    /// so a shared limit could not be checked.
    SharedLimitsUnavailable,
    /// `[cluster]`: the session's `max_connections_per_user` lease could not
    /// be renewed, so another replica may have its slot; the session closes
    /// (at its next MAIL, after the transaction it was in).
    SharedSlotLost,
    TlsUnavailable,
    /// The spool is over `max_size`, or its disk is full.
    SpoolFull,
    LocalError,
    ShuttingDown,
    IdleTimeout,
    Internal,
}

impl Refusal {
    /// The reply the client gets.
    pub fn reply(&self) -> Reply {
        use Refusal as R;
        match self {
            R::Syntax(r) => r.clone(),
            R::LineTooLong => Reply::new(500, "5.5.2", "Line too long"),
            R::SaslLineTooLong => {
                Reply::new(500, "5.5.6", "Authentication Exchange line is too long")
            }
            R::BareLf => Reply::new(500, "5.5.2", "Bare LF: lines must end with CRLF"),
            R::TooManyErrors => Reply::new(421, "4.7.0", "Too many errors, closing connection"),
            R::NeedHelo => Reply::new(503, "5.5.1", "Send HELO or EHLO first"),
            R::NeedEhloForAuth => Reply::new(503, "5.5.1", "Send EHLO first"),
            R::NestedMail => Reply::new(503, "5.5.1", "Nested MAIL command"),
            R::NeedMailForRcpt => Reply::new(503, "5.5.1", "Need MAIL before RCPT"),
            R::NeedMailForData => Reply::new(503, "5.5.1", "Need MAIL before DATA"),
            R::NeedRcptForData => Reply::new(503, "5.5.1", "Need RCPT before DATA"),
            R::NeedMailForBdat => Reply::new(503, "5.5.1", "Need MAIL before BDAT"),
            R::NeedRcptForBdat => Reply::new(503, "5.5.1", "Need RCPT before BDAT"),
            R::DataAfterBdat => Reply::new(
                503,
                "5.5.1",
                "DATA cannot follow BDAT in one transaction; send RSET",
            ),
            R::BdatInProgress => Reply::new(
                503,
                "5.5.1",
                "Message in BDAT chunks in progress; send BDAT with LAST, or RSET",
            ),
            R::AlreadyAuthenticated => Reply::new(503, "5.5.1", "Already authenticated"),
            R::AuthInTransaction => {
                Reply::new(503, "5.5.1", "AUTH not allowed during a mail transaction")
            }
            R::TlsAlreadyActive => Reply::new(503, "5.5.1", "TLS already active"),
            R::NonAsciiSender => Reply::new(
                550,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter",
            ),
            R::NonAsciiRecipient => Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter",
            ),
            R::UnknownMechanism => Reply::new(504, "5.5.4", "Unrecognized authentication type"),
            R::SaslBadBase64 => Reply::new(501, "5.5.2", "Cannot decode response"),
            R::SaslCancelled => Reply::new(501, "5.7.0", "Authentication cancelled"),
            R::Data(e) => e.reply(),
            R::AuthRequired => Reply::new(530, "5.7.0", "Authentication required"),
            R::EncryptionRequired => Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ),
            R::BadCredentials => Reply::new(535, "5.7.8", "Authentication credentials invalid"),
            R::TooManyAuthFailures => Reply::new(
                421,
                "4.7.0",
                "Too many failed authentications, closing connection",
            ),
            R::AuthThrottled => Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure: too many failed attempts, try again later",
            ),
            R::AuthBusy => Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure: too many checks in progress, try again later",
            ),
            R::UserConnections(user) => Reply::new(
                421,
                "4.7.0",
                format!("Too many connections for user {user}, try again later"),
            ),
            R::SizeDeclaredTooBig => Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            R::NoAccountForSender { upstream } => Reply::new(
                550,
                "5.7.1",
                format!("upstream {upstream} has no account for this sender address"),
            ),
            R::SenderNotAllowed(user) => Reply::new(
                550,
                "5.7.1",
                format!("Sender address not allowed for user {user}"),
            ),
            R::MessageRate { user, wait } => Reply::new(
                450,
                "4.7.1",
                format!(
                    "Message rate limit for user {user} reached, retry in {} s",
                    wait.as_secs().max(1)
                ),
            ),
            R::UpstreamQuota {
                upstream,
                what,
                wait,
            } => Reply::new(
                451,
                "4.7.1",
                format!(
                    "Daily quota ({what}) of upstream {upstream} reached, retry in {} s",
                    wait.as_secs().max(1)
                ),
            ),
            R::RecipientRate { user, wait } => Reply::new(
                450,
                "4.7.1",
                format!(
                    "Recipient rate limit for user {user} reached, retry in {} s",
                    wait.as_secs().max(1)
                ),
            ),
            R::TooManyRecipients => Reply::new(452, "4.5.3", "Too many recipients"),
            R::NoValidRecipients => Reply::new(554, "5.5.1", "No valid recipients"),
            R::HeaderTooLarge => Reply::new(552, "5.3.4", "Header section too large to rewrite"),
            R::UpstreamSetup { upstream, failure } => match failure {
                SetupFailure::Credentials => Reply::new(
                    451,
                    "4.3.0",
                    format!("upstream {upstream} refused the relay's credentials; try again later"),
                ),
                SetupFailure::PoolFull => Reply::new(
                    451,
                    "4.4.5",
                    format!("upstream {upstream}: no connection free; try again later"),
                ),
                SetupFailure::UserShare => Reply::new(
                    451,
                    "4.4.5",
                    format!(
                        "upstream {upstream}: this user's share of connections is in use; try again later"
                    ),
                ),
                SetupFailure::Token => Reply::new(
                    451,
                    "4.7.0",
                    format!("upstream {upstream}: cannot get an OAuth2 token; try again later"),
                ),
                SetupFailure::Unavailable => Reply::new(
                    451,
                    "4.4.1",
                    format!("upstream {upstream} unavailable; try again later"),
                ),
            },
            R::UpstreamTls { upstream, problem } => Reply::new(
                451,
                "4.7.5",
                format!(
                    "upstream {upstream}: secure connection failed: {problem}; try again later"
                ),
            ),
            R::UpstreamNoSmtputf8(upstream) => Reply::new(
                550,
                "5.6.7",
                format!("upstream {upstream} does not support SMTPUTF8"),
            ),
            R::UpstreamLost => {
                Reply::new(451, "4.4.2", "Upstream connection lost; try again later")
            }
            R::UpstreamGone => Reply::new(451, "4.4.2", "Upstream connection lost"),
            R::UpstreamLostInData => Reply::new(
                451,
                "4.4.2",
                "Upstream connection lost during DATA; try again later",
            ),
            R::UpstreamUnconfirmed => Reply::new(
                451,
                "4.4.2",
                "Upstream did not confirm the message; try again later",
            ),
            R::SharedLimitsUnavailable => {
                Reply::new(451, "4.3.0", "Shared limits unavailable; try again later")
            }
            R::SharedSlotLost => Reply::new(
                421,
                "4.3.0",
                "Shared connection count lost; closing connection, reconnect",
            ),
            R::TlsUnavailable => Reply::new(454, "4.7.0", "TLS not available on this listener"),
            R::SpoolFull => Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage: the spool is full; try again later",
            ),
            R::LocalError => Reply::new(451, "4.3.0", "Local error in processing; try again later"),
            R::ShuttingDown => Reply::new(421, "4.3.0", "Server shutting down, try again later"),
            R::IdleTimeout => Reply::new(421, "4.4.2", "Idle timeout, closing connection"),
            R::Internal => Reply::new(451, "4.3.0", "Internal error"),
        }
    }

    /// Who caused it.
    pub fn side(&self) -> Side {
        use Refusal as R;
        match self {
            R::Syntax(_)
            | R::LineTooLong
            | R::SaslLineTooLong
            | R::BareLf
            | R::TooManyErrors
            | R::NeedHelo
            | R::NeedEhloForAuth
            | R::NestedMail
            | R::NeedMailForRcpt
            | R::NeedMailForData
            | R::NeedRcptForData
            | R::NeedMailForBdat
            | R::NeedRcptForBdat
            | R::DataAfterBdat
            | R::BdatInProgress
            | R::AlreadyAuthenticated
            | R::AuthInTransaction
            | R::TlsAlreadyActive
            | R::NonAsciiSender
            | R::NonAsciiRecipient
            | R::UnknownMechanism
            | R::SaslBadBase64
            | R::SaslCancelled
            | R::Data(_) => Side::Client,
            R::AuthRequired
            | R::EncryptionRequired
            | R::BadCredentials
            | R::TooManyAuthFailures
            | R::AuthThrottled
            | R::AuthBusy
            | R::UserConnections(_)
            | R::SizeDeclaredTooBig
            | R::SenderNotAllowed(_)
            | R::NoAccountForSender { .. }
            | R::MessageRate { .. }
            | R::RecipientRate { .. }
            | R::UpstreamQuota { .. }
            | R::TooManyRecipients
            | R::NoValidRecipients
            | R::HeaderTooLarge => Side::Policy,
            R::UpstreamSetup { .. }
            | R::UpstreamTls { .. }
            | R::UpstreamNoSmtputf8(_)
            | R::UpstreamLost
            | R::UpstreamGone
            | R::UpstreamLostInData
            | R::UpstreamUnconfirmed => Side::Upstream,
            R::SharedLimitsUnavailable
            | R::SharedSlotLost
            | R::TlsUnavailable
            | R::SpoolFull
            | R::LocalError
            | R::ShuttingDown
            | R::IdleTimeout
            | R::Internal => Side::Local,
        }
    }

    /// The `limit` label of `postern_limit_hits_total` when this refusal is a limit hit.
    pub fn limit(&self) -> Option<&'static str> {
        use Refusal as R;
        match self {
            R::UserConnections(_) => Some("connections_per_user"),
            R::SizeDeclaredTooBig | R::Data(DataError::TooBig) => Some("message_size"),
            R::MessageRate { .. } => Some("messages_per_minute"),
            R::RecipientRate { .. } => Some("recipients_per_hour"),
            R::UpstreamQuota { what, .. } => Some(what),
            R::TooManyRecipients => Some("max_recipients"),
            R::AuthThrottled => Some("auth_failures"),
            R::SpoolFull => Some("spool_size"),
            R::UpstreamSetup {
                failure: SetupFailure::PoolFull,
                ..
            } => Some("upstream_connections"),
            R::UpstreamSetup {
                failure: SetupFailure::UserShare,
                ..
            } => Some("upstream_connections_per_user"),
            _ => None,
        }
    }

    /// The user a refusal names, for the `user` label of a limit hit.
    pub fn user(&self) -> Option<&str> {
        match self {
            Refusal::UserConnections(user)
            | Refusal::SenderNotAllowed(user)
            | Refusal::MessageRate { user, .. }
            | Refusal::RecipientRate { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The upstream a refusal concerns, for the `upstream` label of a limit hit.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Refusal::UpstreamSetup { upstream, .. }
            | Refusal::UpstreamNoSmtputf8(upstream)
            | Refusal::UpstreamQuota { upstream, .. } => Some(upstream),
            _ => None,
        }
    }

    /// The `result` word a transaction ended by this refusal is counted under
    /// (`postern_messages_total`): at MAIL, at DATA or at end-of-data. Always
    /// one of `MESSAGE_RESULTS` (or `NO_USER_RESULT`).
    pub fn message_result(&self) -> &'static str {
        use Refusal as R;
        match self {
            R::Data(DataError::BareLineEnding) => "rejected_bare_line_ending",
            R::Data(DataError::Nul) => "rejected_nul",
            R::Data(DataError::LineTooLong) => "rejected_line_too_long",
            R::Data(DataError::TooBig) | R::HeaderTooLarge | R::SizeDeclaredTooBig => {
                "rejected_too_big"
            }
            R::SenderNotAllowed(_) | R::NoAccountForSender { .. } => "rejected_sender",
            R::MessageRate { .. } | R::UpstreamQuota { .. } => "rejected_rate",
            R::UserConnections(_) => "rejected_connections",
            R::NoValidRecipients => "rejected_no_recipients",
            R::UpstreamNoSmtputf8(_) | R::NonAsciiSender => "rejected_smtputf8",
            R::AuthRequired => NO_USER_RESULT,
            R::UpstreamSetup { failure, .. } => match failure {
                SetupFailure::Credentials => "upstream_auth_failed",
                SetupFailure::PoolFull | SetupFailure::UserShare => "pool_timeout",
                // No OAuth2 token: postern's own credentials did not work out.
                SetupFailure::Token => "upstream_auth_failed",
                SetupFailure::Unavailable => "upstream_unavailable",
            },
            R::UpstreamTls { .. } => "upstream_tls_failed",
            R::LocalError => "outbox_failed",
            R::SpoolFull => "spool_full",
            R::UpstreamLost | R::UpstreamGone | R::UpstreamLostInData | R::UpstreamUnconfirmed => {
                "upstream_failed"
            }
            R::IdleTimeout | R::ShuttingDown => "abandoned",
            R::SharedLimitsUnavailable | R::SharedSlotLost => "shared_limits_unavailable",
            _ => "refused",
        }
    }

    /// The `result` word a RCPT refused by postern is counted under
    /// (`postern_recipients_total`); one of `RECIPIENT_RESULTS`.
    pub fn recipient_result(&self) -> &'static str {
        use Refusal as R;
        match self {
            R::TooManyRecipients => "rejected_too_many",
            R::RecipientRate { .. } | R::UpstreamQuota { .. } => "rejected_rate",
            R::NonAsciiRecipient => "rejected_smtputf8",
            R::UpstreamLost | R::UpstreamGone => "upstream_failed",
            R::SharedLimitsUnavailable => "shared_limits_unavailable",
            _ => "refused",
        }
    }
}

/// The `result` word of an upstream's own verdict (MAIL, RCPT, DATA or
/// end-of-data): `accepted`, `upstream_tempfail` (4xx) or `upstream_rejected` (5xx).
pub fn upstream_result(reply: &Reply) -> &'static str {
    match reply.class() {
        2 | 3 => "accepted",
        4 => "upstream_tempfail",
        _ => "upstream_rejected",
    }
}

/// Every `result` of `postern_messages_total` for a user; each transaction is
/// counted once, under one of these. `spooled` is reserved for the spool.
pub const MESSAGE_RESULTS: &[&str] = &[
    "accepted",
    "upstream_tempfail",
    "upstream_rejected",
    "upstream_failed",
    "upstream_unavailable",
    "upstream_auth_failed",
    "upstream_tls_failed",
    "pool_timeout",
    "rejected_sender",
    "rejected_rate",
    "rejected_too_big",
    "rejected_bare_line_ending",
    "rejected_nul",
    "rejected_line_too_long",
    "rejected_no_recipients",
    "rejected_smtputf8",
    "rejected_connections",
    "outbox_failed",
    "spooled",
    "spool_full",
    "shared_limits_unavailable",
    "abandoned",
    "refused",
];

/// The one `result` counted under `user="-"`: MAIL from a client that is
/// neither authenticated nor trusted by its network.
pub const NO_USER_RESULT: &str = "rejected_auth_required";

/// Every `result` of `postern_recipients_total`.
pub const RECIPIENT_RESULTS: &[&str] = &[
    "accepted",
    "upstream_tempfail",
    "upstream_rejected",
    "upstream_failed",
    "rejected_too_many",
    "rejected_rate",
    "rejected_smtputf8",
    "spooled",
    "shared_limits_unavailable",
    "refused",
];

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.reply().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_failure_reply_with_an_enhanced_code() {
        let user: Arc<str> = Arc::from("printer");
        let all = [
            Refusal::LineTooLong,
            Refusal::BareLf,
            Refusal::NeedHelo,
            Refusal::NeedMailForBdat,
            Refusal::NeedRcptForBdat,
            Refusal::DataAfterBdat,
            Refusal::BdatInProgress,
            Refusal::AuthRequired,
            Refusal::BadCredentials,
            Refusal::SenderNotAllowed(user.clone()),
            Refusal::MessageRate {
                user,
                wait: Duration::from_millis(10),
            },
            Refusal::UpstreamSetup {
                upstream: Arc::from("up"),
                failure: SetupFailure::PoolFull,
            },
            Refusal::UpstreamLostInData,
            Refusal::LocalError,
            Refusal::SpoolFull,
            Refusal::Data(DataError::BareLineEnding),
        ];
        for r in all {
            let reply = r.reply();
            assert!(reply.code >= 400, "{r}");
            assert!(reply.enhanced.is_some(), "{r}");
            let class = reply.code / 100;
            assert!(
                reply
                    .enhanced
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&class.to_string())),
                "{r}"
            );
        }
    }

    #[test]
    fn result_words_come_from_the_documented_sets() {
        let user: Arc<str> = Arc::from("u");
        let up: Arc<str> = Arc::from("up");
        let mut all = vec![
            Refusal::LineTooLong,
            Refusal::AuthRequired,
            Refusal::SizeDeclaredTooBig,
            Refusal::SenderNotAllowed(user.clone()),
            Refusal::MessageRate {
                user: user.clone(),
                wait: Duration::ZERO,
            },
            Refusal::RecipientRate {
                user: user.clone(),
                wait: Duration::ZERO,
            },
            Refusal::UserConnections(user),
            Refusal::TooManyRecipients,
            Refusal::NoValidRecipients,
            Refusal::HeaderTooLarge,
            Refusal::NonAsciiSender,
            Refusal::NonAsciiRecipient,
            Refusal::UpstreamNoSmtputf8(up.clone()),
            Refusal::UpstreamLost,
            Refusal::UpstreamGone,
            Refusal::UpstreamLostInData,
            Refusal::UpstreamUnconfirmed,
            Refusal::LocalError,
            Refusal::IdleTimeout,
            Refusal::SharedSlotLost,
            Refusal::ShuttingDown,
            Refusal::Internal,
            Refusal::Data(DataError::BareLineEnding),
            Refusal::Data(DataError::Nul),
            Refusal::Data(DataError::LineTooLong),
            Refusal::Data(DataError::TooBig),
            Refusal::UpstreamTls {
                upstream: up.clone(),
                problem: Arc::from("the provider's certificate has expired"),
            },
            Refusal::NoAccountForSender {
                upstream: up.clone(),
            },
        ];
        for failure in [
            SetupFailure::Credentials,
            SetupFailure::PoolFull,
            SetupFailure::UserShare,
            SetupFailure::Token,
            SetupFailure::Unavailable,
        ] {
            all.push(Refusal::UpstreamSetup {
                upstream: up.clone(),
                failure,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &all {
            let m = r.message_result();
            assert!(
                MESSAGE_RESULTS.contains(&m) || m == NO_USER_RESULT,
                "{r}: {m}"
            );
            seen.insert(m);
            let rc = r.recipient_result();
            assert!(RECIPIENT_RESULTS.contains(&rc), "{r}: {rc}");
        }
        // Distinct causes get distinct words.
        assert!(seen.len() >= 16, "{seen:?}");
        for code in [250, 354, 451, 550] {
            let w = upstream_result(&Reply::new(code, "2.0.0", "x"));
            assert!(MESSAGE_RESULTS.contains(&w) && RECIPIENT_RESULTS.contains(&w));
        }
        assert_eq!(
            upstream_result(&Reply::new(451, "4.3.0", "x")),
            "upstream_tempfail"
        );
        assert_eq!(
            upstream_result(&Reply::new(554, "5.0.0", "x")),
            "upstream_rejected"
        );
    }

    #[test]
    fn rate_hints_never_say_zero_seconds() {
        let r = Refusal::MessageRate {
            user: Arc::from("u"),
            wait: Duration::from_millis(200),
        };
        assert!(r.reply().to_string().contains("retry in 1 s"), "{r}");
        assert_eq!(r.limit(), Some("messages_per_minute"));
        assert_eq!(r.side(), Side::Policy);
    }
}
