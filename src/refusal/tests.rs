//! Every refusal is a well-formed failure reply, counted under documented words.

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
