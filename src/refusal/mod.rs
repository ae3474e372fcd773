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

mod reply;
#[cfg(test)]
mod tests;
