//! The reply each refusal is answered with.

use super::{Refusal, SetupFailure};
use crate::smtp::reply::Reply;

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
}
