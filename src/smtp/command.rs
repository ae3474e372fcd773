//! SMTP command parsing (RFC 5321 §4.1, with the parameters of RFC 1870 SIZE,
//! RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461 DSN and RFC 4954 AUTH=), and
//! RFC 3030 `BDAT`.
//! Pure: one command line (without its CRLF) in, a `Command` or a `ParseError` out.
//!
//! The parser is strict where it matters for relaying (control bytes, address
//! syntax and lengths, parameter values) and lenient where real clients are
//! sloppy: verbs and keywords are case-insensitive, arguments may be separated
//! by several spaces or tabs, surrounding whitespace is ignored, and one space
//! is tolerated after `FROM:` / `TO:`.
//!
//! This file holds the commands, the errors and the dispatcher; paths are
//! checked in `path.rs`, MAIL/RCPT parameters in `params.rs`.

use super::reply::Reply;
use crate::secret::SecretString;

mod params;
mod path;

use params::{mail_param, rcpt_param};
use path::{MAX_DOMAIN, PathKind, check_path, split_path};

/// Longest AUTH mechanism name (RFC 4422 §3.1).
const MAX_MECHANISM: usize = 20;
/// Most characters of an unknown parameter keyword echoed back in a reply.
const MAX_PARAM_ECHO: usize = 32;

/// SMTP verbs postern knows but does not offer.
const NOT_IMPLEMENTED: &[&[u8]] = &[
    b"EXPN", b"TURN", b"ETRN", b"ATRN", b"SEND", b"SOML", b"SAML", b"VERB", b"ONEX",
];

/// A parsed client command. Verbs are case-insensitive; addresses keep their case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    /// `mechanism` is upper-cased; `initial` is the initial response as sent
    /// (base64 or `=`), wiped on drop and never printed.
    Auth {
        mechanism: String,
        initial: Option<SecretString>,
    },
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    /// `BDAT size [LAST]` (RFC 3030): `size` octets of content follow the line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Help,
    Vrfy,
    Quit,
}

/// `MAIL FROM:<path> params`. `path` is empty for the null sender `<>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailFrom {
    pub path: String,
    pub params: MailParams,
}

/// `BODY=` values (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// `RET=` values (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// The MAIL parameters postern understands. Anything else is `ParseError::UnknownParameter`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// Kept xtext-encoded, validated (RFC 3461 §4): never decoded into a command line.
    pub envid: Option<String>,
    /// RFC 4954 §5 `AUTH=`: parsed so it is accepted, never forwarded.
    pub auth: Option<String>,
}

/// `RCPT TO:<path> params`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptTo {
    pub path: String,
    pub params: RcptParams,
}

/// The RCPT parameters postern understands (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NEVER` or a comma list of `SUCCESS`,`FAILURE`,`DELAY`, upper-cased.
    pub notify: Option<String>,
    /// Kept xtext-encoded, validated: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

/// Why a command line was refused. Each maps to exactly one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a verb postern knows: 500 5.5.1.
    #[error("command unrecognized")]
    Unrecognized,
    /// A known SMTP verb postern does not offer (EXPN, TURN, ETRN...): 502 5.5.1.
    #[error("command not implemented")]
    NotImplemented,
    /// Bad arguments: 501 5.5.4 with the reason.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// Bad address syntax or length in MAIL/RCPT: 553 5.1.7 (for both).
    #[error("bad address: {0}")]
    BadAddress(&'static str),
    /// A MAIL/RCPT parameter postern does not know: 555 5.5.4.
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    /// A BDAT line without a usable chunk size: 501 5.5.4. Where the chunk
    /// ends is then unknown, so the session closes after the reply: the
    /// chunk's octets must never be read as commands.
    #[error("bad BDAT: {0}")]
    BadChunk(&'static str),
    /// A NUL byte in the line (RFC 5321 §4.1.1 commands are text): 500 5.5.2.
    /// Its own error, so a NUL-smuggling attempt can be told from other controls.
    #[error("NUL byte in command")]
    Nul,
    /// Another control byte in the line: 500 5.5.2.
    #[error("control character in command")]
    ControlCharacter,
}

impl ParseError {
    /// The one reply this error gets. It never echoes more than
    /// `MAX_PARAM_ECHO` characters of client input (an unknown keyword).
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::Unrecognized => Reply::new(500, "5.5.1", "Command unrecognized"),
            ParseError::NotImplemented => Reply::new(502, "5.5.1", "Command not implemented"),
            ParseError::Syntax(reason) => {
                Reply::new(501, "5.5.4", format!("Syntax error: {reason}"))
            }
            ParseError::BadChunk(reason) => {
                Reply::new(501, "5.5.4", format!("Syntax error: {reason}"))
            }
            ParseError::BadAddress(reason) => {
                Reply::new(553, "5.1.7", format!("Bad address syntax: {reason}"))
            }
            ParseError::UnknownParameter(param) => Reply::new(
                555,
                "5.5.4",
                format!("Unsupported parameter {}", cut(param, MAX_PARAM_ECHO)),
            ),
            ParseError::Nul => Reply::new(500, "5.5.2", "NUL bytes are not allowed in commands"),
            ParseError::ControlCharacter => Reply::new(
                500,
                "5.5.2",
                "Control characters are not allowed in commands",
            ),
        }
    }
}

/// Parses one command line (CRLF already removed).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    if memchr::memchr(0, line).is_some() {
        return Err(ParseError::Nul);
    }
    if line.iter().any(|&b| is_control_byte(b)) {
        return Err(ParseError::ControlCharacter);
    }
    let line = line.trim_ascii_start();
    let (verb, args) = match line.iter().position(|&b| is_ws(b)) {
        Some(i) => (&line[..i], trim_ws(&line[i..])),
        None => (line, &line[line.len()..]),
    };
    let verb = verb.to_ascii_uppercase();
    match verb.as_slice() {
        b"EHLO" => hello(args, "EHLO needs a domain").map(Command::Ehlo),
        b"HELO" => hello(args, "HELO needs a domain").map(Command::Helo),
        b"STARTTLS" => no_args(args, Command::StartTls),
        b"AUTH" => auth(args),
        b"MAIL" => mail(args).map(Command::Mail),
        b"RCPT" => rcpt(args).map(Command::Rcpt),
        b"DATA" => no_args(args, Command::Data),
        b"BDAT" => bdat(args),
        b"RSET" => no_args(args, Command::Rset),
        b"QUIT" => no_args(args, Command::Quit),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        b"VRFY" => Ok(Command::Vrfy),
        v if NOT_IMPLEMENTED.contains(&v) => Err(ParseError::NotImplemented),
        _ => Err(ParseError::Unrecognized),
    }
}

/// A byte no command line may contain: ASCII controls except TAB, and DEL.
fn is_control_byte(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Argument separators: space, and tab for sloppy clients.
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_ws_char(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `b` without leading and trailing spaces and tabs.
fn trim_ws(b: &[u8]) -> &[u8] {
    // No other ASCII whitespace survives the control-byte check.
    b.trim_ascii()
}

/// The non-empty words of `s`.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_ws_char).filter(|w| !w.is_empty())
}

fn utf8(b: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(b).map_err(|_| ParseError::Syntax("invalid UTF-8"))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cut(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

fn no_args(args: &[u8], command: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::Syntax("this command takes no arguments"))
    }
}

/// EHLO / HELO: exactly one ASCII word, a domain or an address literal. Its
/// syntax is not checked further: devices send all sorts of names.
fn hello(args: &[u8], missing: &'static str) -> Result<String, ParseError> {
    let args = utf8(args)?;
    let mut words = words(args);
    let domain = words.next().ok_or(ParseError::Syntax(missing))?;
    if words.next().is_some() {
        return Err(ParseError::Syntax("too many arguments"));
    }
    if !domain.is_ascii() {
        return Err(ParseError::Syntax("domain must be ASCII"));
    }
    if domain.len() > MAX_DOMAIN {
        return Err(ParseError::Syntax("domain too long"));
    }
    Ok(domain.to_owned())
}

/// `AUTH mechanism [initial-response]` (RFC 4954 §4).
fn auth(args: &[u8]) -> Result<Command, ParseError> {
    let args = utf8(args)?;
    let mut words = words(args);
    let mechanism = words
        .next()
        .ok_or(ParseError::Syntax("AUTH needs a mechanism"))?
        .to_ascii_uppercase();
    let initial = words.next();
    if words.next().is_some() {
        return Err(ParseError::Syntax("too many arguments"));
    }
    let mechanism_ok = mechanism.len() <= MAX_MECHANISM
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !mechanism_ok {
        return Err(ParseError::Syntax("bad mechanism name"));
    }
    if let Some(initial) = initial
        && !initial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(ParseError::Syntax("initial response must be base64"));
    }
    Ok(Command::Auth {
        mechanism,
        initial: initial.map(SecretString::from),
    })
}

/// `BDAT chunk-size [LAST]` (RFC 3030 §2): `chunk-size` is 1*DIGIT, and it
/// must fit in 64 bits.
fn bdat(args: &[u8]) -> Result<Command, ParseError> {
    let args = utf8(args).map_err(|_| ParseError::BadChunk("invalid UTF-8"))?;
    let mut words = words(args);
    let size = words
        .next()
        .ok_or(ParseError::BadChunk("BDAT needs a chunk size"))?;
    if !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadChunk("chunk size must be digits"));
    }
    let size = size
        .parse::<u64>()
        .map_err(|_| ParseError::BadChunk("chunk size too large"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::BadChunk("expected LAST after the chunk size")),
    };
    if words.next().is_some() {
        return Err(ParseError::BadChunk("too many arguments"));
    }
    Ok(Command::Bdat { size, last })
}

/// `MAIL FROM:<path> [params]`.
fn mail(args: &[u8]) -> Result<MailFrom, ParseError> {
    let args = utf8(args)?;
    let rest = strip_keyword(args, "FROM:").ok_or(ParseError::Syntax("expected FROM:<address>"))?;
    let (path, rest) = split_path(rest)?;
    let path = check_path(path, PathKind::Mail)?;
    let mut params = MailParams::default();
    for word in words(rest) {
        mail_param(&mut params, word)?;
    }
    Ok(MailFrom { path, params })
}

/// `RCPT TO:<path> [params]`.
fn rcpt(args: &[u8]) -> Result<RcptTo, ParseError> {
    let args = utf8(args)?;
    let rest = strip_keyword(args, "TO:").ok_or(ParseError::Syntax("expected TO:<address>"))?;
    let (path, rest) = split_path(rest)?;
    let path = check_path(path, PathKind::Rcpt)?;
    let mut params = RcptParams::default();
    for word in words(rest) {
        rcpt_param(&mut params, word)?;
    }
    Ok(RcptTo { path, params })
}

/// `s` after `keyword` (ASCII, case-insensitive), if it starts with it.
fn strip_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    let head = s.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &s[keyword.len()..])
}

#[cfg(test)]
mod tests;
