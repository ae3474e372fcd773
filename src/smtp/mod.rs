//! The SMTP protocol, sans I/O: command parsing, replies, line, DATA and BDAT framing,
//! SASL decoding and header rewriting. Nothing here imports tokio or touches a
//! socket; every entry point takes bytes and returns a value or "need more".
//!
//! Why our own parser and not `smtp-proto`: postern must refuse what a lenient
//! parser accepts (bare CR/LF, over-long lines, xtext that decodes to CRLF) and
//! keep every buffer bounded, and the set of commands a relay needs is small.
//! Writing it here keeps those rules in one place with table tests beside them.

pub mod bdat;
pub mod command;
pub mod data;
pub mod header;
pub mod line;
pub mod reply;
pub mod sasl;

pub use command::{Command, MailFrom, ParseError, RcptTo};
pub use reply::Reply;
