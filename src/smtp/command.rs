//! SMTP command parsing (RFC 5321 §4.1, with the parameters of RFC 1870 SIZE,
//! RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461 DSN and RFC 4954 AUTH=).
//! Pure: one command line (without its CRLF) in, a `Command` or a `ParseError` out.
//!
//! The parser is strict where it matters for relaying (control bytes, address
//! syntax and lengths, parameter values) and lenient where real clients are
//! sloppy: verbs and keywords are case-insensitive, arguments may be separated
//! by several spaces or tabs, surrounding whitespace is ignored, and one space
//! is tolerated after `FROM:` / `TO:`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::reply::Reply;

/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2).
const MAX_DOMAIN: usize = 255;
/// Longest path, angle brackets included (RFC 5321 §4.5.3.1.3).
const MAX_PATH: usize = 256;
/// Longest `ENVID=` value (RFC 3461 §4.4).
const MAX_ENVID: usize = 100;
/// Longest `ORCPT=` value (RFC 3461 §4.2: 500 characters).
const MAX_ORCPT: usize = 500;
/// Longest `SIZE=` value (RFC 1870: 20 digits).
const MAX_SIZE_DIGITS: usize = 20;
/// Longest AUTH mechanism name (RFC 4422 §3.1).
const MAX_MECHANISM: usize = 20;
/// Most characters of an unknown parameter keyword echoed back in a reply.
const MAX_PARAM_ECHO: usize = 32;

/// SMTP verbs postern knows but does not offer.
const NOT_IMPLEMENTED: &[&[u8]] = &[
    b"EXPN", b"TURN", b"BDAT", b"ETRN", b"ATRN", b"SEND", b"SOML", b"SAML", b"VERB", b"ONEX",
];

/// A parsed client command. Verbs are case-insensitive; addresses keep their case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    /// `mechanism` is upper-cased; `initial` is the initial response as sent (base64 or `=`).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
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
    /// A known SMTP verb postern does not offer (EXPN, TURN, BDAT, ETRN...): 502 5.5.1.
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
        initial: initial.map(str::to_owned),
    })
}

/// Which command a path belongs to: they differ on `<>` and `<postmaster>`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Mail,
    Rcpt,
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

/// Splits `[SP]<path> rest` into the text between the angle brackets and what
/// follows the closing bracket. A `>` inside a quoted local part does not close.
fn split_path(s: &str) -> Result<(&str, &str), ParseError> {
    let s = s.strip_prefix(is_ws_char).unwrap_or(s);
    if s.is_empty() {
        return Err(ParseError::Syntax("missing address"));
    }
    let inner = s
        .strip_prefix('<')
        .ok_or(ParseError::Syntax("address must be in angle brackets"))?;
    let bytes = inner.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => {
                let rest = &inner[i + 1..];
                if !rest.is_empty() && !rest.starts_with(is_ws_char) {
                    return Err(ParseError::Syntax("junk after address"));
                }
                return Ok((&inner[..i], rest));
            }
            _ => {}
        }
        i += 1;
    }
    Err(ParseError::Syntax("unterminated address"))
}

/// Checks the text between the angle brackets and returns the path to keep:
/// empty for `<>`, the mailbox without any source route otherwise.
fn check_path(path: &str, kind: PathKind) -> Result<String, ParseError> {
    if path.is_empty() {
        return match kind {
            PathKind::Mail => Ok(String::new()),
            PathKind::Rcpt => Err(ParseError::BadAddress("null recipient not allowed")),
        };
    }
    let mailbox = if path.starts_with('@') {
        strip_route(path)?
    } else {
        path
    };
    if kind == PathKind::Rcpt && mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok(mailbox.to_owned());
    }
    check_mailbox(mailbox)?;
    // `path` plus its two angle brackets.
    if path.len() + 2 > MAX_PATH {
        return Err(ParseError::BadAddress("address too long"));
    }
    Ok(mailbox.to_owned())
}

/// Checks and removes a source route: `@a,@b:user@d` gives `user@d`.
fn strip_route(path: &str) -> Result<&str, ParseError> {
    const BAD: ParseError = ParseError::BadAddress("bad source route");
    let bytes = path.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) != Some(&b'@') {
            return Err(BAD);
        }
        i += 1;
        let rest = &path[i..];
        let len = if rest.starts_with('[') {
            rest.find(']').map(|end| end + 1)
        } else {
            rest.find([',', ':'])
        }
        .ok_or(BAD)?;
        check_domain(&rest[..len]).map_err(|_| BAD)?;
        i += len;
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b':') => return Ok(&path[i + 1..]),
            _ => return Err(BAD),
        }
    }
}

/// Checks `local-part@domain` (RFC 5321 §4.1.2, with RFC 6531 UTF-8).
fn check_mailbox(mailbox: &str) -> Result<(), ParseError> {
    const BAD_LOCAL: ParseError = ParseError::BadAddress("bad local part");
    const NO_DOMAIN: ParseError = ParseError::BadAddress("missing domain");
    let (local, domain) = if mailbox.starts_with('"') {
        let end = quoted_string_end(mailbox).ok_or(BAD_LOCAL)?;
        let domain = match &mailbox[end..] {
            "" => return Err(NO_DOMAIN),
            rest => rest.strip_prefix('@').ok_or(BAD_LOCAL)?,
        };
        (&mailbox[..end], domain)
    } else {
        let (local, domain) = mailbox.split_once('@').ok_or(NO_DOMAIN)?;
        if !is_dot_string(local) {
            return Err(BAD_LOCAL);
        }
        (local, domain)
    };
    if local.len() > MAX_LOCAL_PART {
        return Err(ParseError::BadAddress("local part too long"));
    }
    check_domain(domain)
}

/// The index just after the closing quote of the quoted string `s` starts with.
fn quoted_string_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    loop {
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match bytes.get(i + 1) {
                Some(32..=126) => i += 2,
                _ => return None,
            },
            32 | 33 | 35..=91 | 93..=126 | 0x80.. => i += 1,
            _ => return None,
        }
    }
}

/// `Atom *("." Atom)` with UTF-8 allowed (RFC 5321 Dot-string, RFC 6531).
fn is_dot_string(s: &str) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(|b| is_atext(b) || b >= 0x80))
}

/// RFC 5322 atext, ASCII part.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Checks a domain: dot-separated labels, or an address literal.
fn check_domain(domain: &str) -> Result<(), ParseError> {
    if domain.is_empty() {
        return Err(ParseError::BadAddress("missing domain"));
    }
    if domain.len() > MAX_DOMAIN {
        return Err(ParseError::BadAddress("domain too long"));
    }
    if let Some(literal) = domain.strip_prefix('[') {
        return match literal.strip_suffix(']') {
            Some(inner) if is_address_literal(inner) => Ok(()),
            _ => Err(ParseError::BadAddress("bad address literal")),
        };
    }
    if domain.split('.').all(is_label) {
        Ok(())
    } else {
        Err(ParseError::BadAddress("bad domain"))
    }
}

/// A domain label: letters, digits, hyphens and UTF-8, not starting or ending with a hyphen.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
}

/// The inside of `[...]`: IPv4, `IPv6:...` or a general `tag:content` literal.
fn is_address_literal(inner: &str) -> bool {
    if let Some(v6) = strip_keyword(inner, "IPv6:") {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    if let Some((tag, content)) = inner.split_once(':') {
        let tag_ok = tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && !tag.ends_with('-')
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let content_ok =
            !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
        return tag_ok && content_ok;
    }
    inner.parse::<Ipv4Addr>().is_ok()
}

/// Splits `KEY=VALUE` / `KEY`, checks the keyword (RFC 5321 esmtp-keyword) and upper-cases it.
fn split_param(word: &str) -> Result<(String, Option<&str>), ParseError> {
    let (key, value) = match word.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (word, None),
    };
    let key_ok = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !key_ok {
        return Err(ParseError::Syntax("bad parameter keyword"));
    }
    Ok((key.to_ascii_uppercase(), value))
}

/// The unknown-parameter error for an (upper-cased) keyword, cut for echoing.
fn unknown(key: &str) -> ParseError {
    ParseError::UnknownParameter(cut(key, MAX_PARAM_ECHO).to_owned())
}

/// Fails if a parameter was already given.
fn once(already: bool) -> Result<(), ParseError> {
    if already {
        Err(ParseError::Syntax("duplicate parameter"))
    } else {
        Ok(())
    }
}

/// The non-empty value of a parameter that needs one.
fn value<'a>(value: Option<&'a str>, missing: &'static str) -> Result<&'a str, ParseError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(ParseError::Syntax(missing))
}

fn mail_param(params: &mut MailParams, word: &str) -> Result<(), ParseError> {
    let (key, raw) = split_param(word)?;
    match key.as_str() {
        "SIZE" => {
            once(params.size.is_some())?;
            let v = value(raw, "SIZE needs a value")?;
            let size = (v.len() <= MAX_SIZE_DIGITS && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or(ParseError::Syntax("bad SIZE value"))?;
            params.size = Some(size);
        }
        "BODY" => {
            once(params.body.is_some())?;
            let v = value(raw, "BODY needs a value")?;
            params.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(ParseError::Syntax("BODY must be 7BIT or 8BITMIME"));
            });
        }
        "SMTPUTF8" => {
            once(params.smtputf8)?;
            if raw.is_some() {
                return Err(ParseError::Syntax("SMTPUTF8 takes no value"));
            }
            params.smtputf8 = true;
        }
        "RET" => {
            once(params.ret.is_some())?;
            let v = value(raw, "RET needs a value")?;
            params.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if v.eq_ignore_ascii_case("HDRS") {
                Ret::Hdrs
            } else {
                return Err(ParseError::Syntax("RET must be FULL or HDRS"));
            });
        }
        "ENVID" => {
            once(params.envid.is_some())?;
            let v = value(raw, "ENVID needs a value")?;
            if v.len() > MAX_ENVID {
                return Err(ParseError::Syntax("ENVID too long"));
            }
            if !is_xtext(v, false) {
                return Err(ParseError::Syntax("ENVID must be xtext"));
            }
            params.envid = Some(v.to_owned());
        }
        "AUTH" => {
            once(params.auth.is_some())?;
            let v = value(raw, "AUTH needs a value")?;
            if v != "<>" && !is_xtext(v, false) {
                return Err(ParseError::Syntax("AUTH= must be xtext or <>"));
            }
            params.auth = Some(v.to_owned());
        }
        _ => return Err(unknown(&key)),
    }
    Ok(())
}

fn rcpt_param(params: &mut RcptParams, word: &str) -> Result<(), ParseError> {
    let (key, raw) = split_param(word)?;
    match key.as_str() {
        "NOTIFY" => {
            once(params.notify.is_some())?;
            let v = value(raw, "NOTIFY needs a value")?.to_ascii_uppercase();
            if !is_notify(&v) {
                return Err(ParseError::Syntax(
                    "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                ));
            }
            params.notify = Some(v);
        }
        "ORCPT" => {
            once(params.orcpt.is_some())?;
            let v = value(raw, "ORCPT needs a value")?;
            if v.len() > MAX_ORCPT {
                return Err(ParseError::Syntax("ORCPT too long"));
            }
            let ok = v.split_once(';').is_some_and(|(addr_type, addr)| {
                !addr_type.is_empty() && addr_type.bytes().all(is_atext) && is_xtext(addr, true)
            });
            if !ok {
                return Err(ParseError::Syntax("ORCPT must be addr-type;xtext"));
            }
            params.orcpt = Some(v.to_owned());
        }
        _ => return Err(unknown(&key)),
    }
    Ok(())
}

/// `NEVER`, or a comma list of distinct `SUCCESS`, `FAILURE`, `DELAY` (upper-cased input).
fn is_notify(v: &str) -> bool {
    if v == "NEVER" {
        return true;
    }
    let items: Vec<&str> = v.split(',').collect();
    items.iter().enumerate().all(|(i, item)| {
        matches!(*item, "SUCCESS" | "FAILURE" | "DELAY") && !items[..i].contains(item)
    })
}

/// RFC 3461 §4 xtext: `!`..`~` except `+` and `=`, or `+` and two upper-case hex
/// digits. `utf8` also allows non-ASCII characters (RFC 6533 `ORCPT=utf-8;`).
fn is_xtext(s: &str, utf8: bool) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                let hex = |j: usize| {
                    bytes
                        .get(j)
                        .is_some_and(|&h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
                };
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            0x21..=0x7e => i += 1,
            0x80.. if utf8 => i += 1,
            _ => return false,
        }
    }
    !s.is_empty()
}

#[cfg(test)]
mod tests;
