//! Wire behaviour and hostile input, over raw sockets: SMTP smuggling, STARTTLS
//! injection, AUTH before TLS, line limits, SASL edge cases, command order,
//! pipelining, SIZE, recipient limits, idle timeout, open relay, metrics.
//!
//! Every reply postern gives (except the greeting, EHLO/HELO, 334 and 354) is
//! also checked for an RFC 3463 enhanced status code of the matching class.

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

#[path = "protocol/common.rs"]
mod common;
#[path = "protocol/dialogue.rs"]
mod dialogue;
#[path = "protocol/hostile.rs"]
mod hostile;
#[path = "protocol/sasl.rs"]
mod sasl;
