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
    /// A NUL or other control byte in the line: 500 5.5.2.
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
mod tests {
    use super::*;
    use ParseError::*;

    fn mail(path: &str, params: MailParams) -> Result<Command, ParseError> {
        Ok(Command::Mail(MailFrom {
            path: path.into(),
            params,
        }))
    }

    fn mail0(path: &str) -> Result<Command, ParseError> {
        mail(path, MailParams::default())
    }

    fn rcpt(path: &str, params: RcptParams) -> Result<Command, ParseError> {
        Ok(Command::Rcpt(RcptTo {
            path: path.into(),
            params,
        }))
    }

    fn rcpt0(path: &str) -> Result<Command, ParseError> {
        rcpt(path, RcptParams::default())
    }

    fn auth(mechanism: &str, initial: Option<&str>) -> Result<Command, ParseError> {
        Ok(Command::Auth {
            mechanism: mechanism.into(),
            initial: initial.map(Into::into),
        })
    }

    fn unknown_param(p: &str) -> Result<Command, ParseError> {
        Err(UnknownParameter(p.into()))
    }

    fn check(rows: &[(&str, Result<Command, ParseError>)]) {
        for (line, want) in rows {
            assert_eq!(parse(line.as_bytes()), *want, "{line:?}");
        }
    }

    #[test]
    fn verbs() {
        check(&[
            (
                "EHLO client.example",
                Ok(Command::Ehlo("client.example".into())),
            ),
            (
                "ehlo client.example",
                Ok(Command::Ehlo("client.example".into())),
            ),
            ("EhLo [192.0.2.1]", Ok(Command::Ehlo("[192.0.2.1]".into()))),
            ("EHLO  printer_01 ", Ok(Command::Ehlo("printer_01".into()))),
            ("HELO client", Ok(Command::Helo("client".into()))),
            ("helo client", Ok(Command::Helo("client".into()))),
            ("STARTTLS", Ok(Command::StartTls)),
            ("starttls", Ok(Command::StartTls)),
            ("AUTH PLAIN", auth("PLAIN", None)),
            ("auth plain AGEAYg==", auth("PLAIN", Some("AGEAYg=="))),
            ("AUTH LOGIN =", auth("LOGIN", Some("="))),
            ("auth cram-md5", auth("CRAM-MD5", None)),
            ("AUTH X_OAUTH2", auth("X_OAUTH2", None)),
            ("MAIL FROM:<a@b.c>", mail0("a@b.c")),
            ("mail from:<a@b.c>", mail0("a@b.c")),
            ("RCPT TO:<a@b.c>", rcpt0("a@b.c")),
            ("rcpt to:<a@b.c>", rcpt0("a@b.c")),
            ("DATA", Ok(Command::Data)),
            ("data", Ok(Command::Data)),
            ("RSET", Ok(Command::Rset)),
            ("rset", Ok(Command::Rset)),
            ("NOOP", Ok(Command::Noop)),
            ("noop whatever you like", Ok(Command::Noop)),
            ("HELP", Ok(Command::Help)),
            ("help mail", Ok(Command::Help)),
            ("VRFY", Ok(Command::Vrfy)),
            ("vrfy someone", Ok(Command::Vrfy)),
            ("QUIT", Ok(Command::Quit)),
            ("quit", Ok(Command::Quit)),
            ("QUIT ", Ok(Command::Quit)),
            ("  QUIT\t", Ok(Command::Quit)),
            ("EXPN x", Err(NotImplemented)),
            ("expn", Err(NotImplemented)),
            ("TURN", Err(NotImplemented)),
            ("BDAT 100 LAST", Err(NotImplemented)),
            ("ETRN example.com", Err(NotImplemented)),
            ("ATRN", Err(NotImplemented)),
            ("SEND FROM:<a@b>", Err(NotImplemented)),
            ("SOML FROM:<a@b>", Err(NotImplemented)),
            ("saml FROM:<a@b>", Err(NotImplemented)),
            ("VERB", Err(NotImplemented)),
            ("ONEX", Err(NotImplemented)),
            ("FOO", Err(Unrecognized)),
            ("", Err(Unrecognized)),
            ("   ", Err(Unrecognized)),
            ("MAILFROM:<a@b>", Err(Unrecognized)),
            ("QUITX", Err(Unrecognized)),
            ("DATAü", Err(Unrecognized)),
        ]);
    }

    #[test]
    fn verb_errors() {
        check(&[
            ("EHLO", Err(Syntax("EHLO needs a domain"))),
            ("EHLO   ", Err(Syntax("EHLO needs a domain"))),
            ("HELO", Err(Syntax("HELO needs a domain"))),
            ("EHLO a b", Err(Syntax("too many arguments"))),
            ("EHLO bücher.de", Err(Syntax("domain must be ASCII"))),
            (
                &format!("EHLO {}", "a".repeat(256)),
                Err(Syntax("domain too long")),
            ),
            (
                "STARTTLS now",
                Err(Syntax("this command takes no arguments")),
            ),
            ("DATA x", Err(Syntax("this command takes no arguments"))),
            ("RSET x", Err(Syntax("this command takes no arguments"))),
            ("QUIT x", Err(Syntax("this command takes no arguments"))),
            ("AUTH", Err(Syntax("AUTH needs a mechanism"))),
            ("AUTH PLAIN a b", Err(Syntax("too many arguments"))),
            ("AUTH PL@IN", Err(Syntax("bad mechanism name"))),
            (
                "AUTH ABCDEFGHIJKLMNOPQRSTU",
                Err(Syntax("bad mechanism name")),
            ),
            (
                "AUTH PLAIN a*b",
                Err(Syntax("initial response must be base64")),
            ),
            ("AUTH PLÄIN", Err(Syntax("bad mechanism name"))),
        ]);
    }

    #[test]
    fn control_and_encoding() {
        let rows: &[(&[u8], Result<Command, ParseError>)] = &[
            (b"NOOP\0", Err(ControlCharacter)),
            (b"MAIL FROM:<a\0@b>", Err(ControlCharacter)),
            (b"QUIT\r", Err(ControlCharacter)),
            (b"RCPT TO:<a@b>\n", Err(ControlCharacter)),
            (b"HELP \x1b[2J", Err(ControlCharacter)),
            (b"DATA\x7f", Err(ControlCharacter)),
            (b"\xff\xfe", Err(Unrecognized)),
            (b"QU\xc3\x8fT", Err(Unrecognized)),
            (b"MAIL FROM:<\xff@b>", Err(Syntax("invalid UTF-8"))),
            (b"RCPT TO:<a@b> NOTIFY=\xc3", Err(Syntax("invalid UTF-8"))),
            (b"EHLO \xff", Err(Syntax("invalid UTF-8"))),
            (b"NOOP \xff", Ok(Command::Noop)),
            (b"MAIL\tFROM:<a@b>", mail0("a@b")),
        ];
        for (line, want) in rows {
            assert_eq!(parse(line), *want, "{line:?}");
        }
    }

    #[test]
    fn mail_paths() {
        let long_local = "a".repeat(65);
        let ok_local = "a".repeat(64);
        let long_domain = format!("{}.com", "d".repeat(252));
        let ok_domain = format!("{}.com", "d".repeat(180));
        // 64 + 1 + 189 = 254 octets, 256 with the brackets.
        let max_path = format!("{ok_local}@{}.com", "d".repeat(185));
        let long_path = format!("{ok_local}@{}.com", "d".repeat(186));
        check(&[
            ("MAIL FROM:<>", mail0("")),
            ("MAIL FROM: <>", mail0("")),
            ("MAIL FROM: <a@b.c>", mail0("a@b.c")),
            ("MAIL FROM:<A.B@Example.COM>", mail0("A.B@Example.COM")),
            ("MAIL  FROM:<a@b>", mail0("a@b")),
            ("MAIL FROM:<a@b>   ", mail0("a@b")),
            ("MAIL FROM:<\"a>b\"@c.d>", mail0("\"a>b\"@c.d")),
            ("MAIL FROM:<\"a b@c\"@d.e>", mail0("\"a b@c\"@d.e")),
            ("MAIL FROM:<\"a\\\"b\"@c.d>", mail0("\"a\\\"b\"@c.d")),
            ("MAIL FROM:<\"\"@c.d>", mail0("\"\"@c.d")),
            (
                "MAIL FROM:<!#$%&'*+-/=?^_`{|}~@x.y>",
                mail0("!#$%&'*+-/=?^_`{|}~@x.y"),
            ),
            ("MAIL FROM:<a@[192.0.2.1]>", mail0("a@[192.0.2.1]")),
            (
                "MAIL FROM:<a@[IPv6:2001:db8::1]>",
                mail0("a@[IPv6:2001:db8::1]"),
            ),
            ("MAIL FROM:<a@[x-tag:stuff]>", mail0("a@[x-tag:stuff]")),
            ("MAIL FROM:<@a,@b:user@d>", mail0("user@d")),
            ("MAIL FROM:<@[IPv6:::1]:user@d>", mail0("user@d")),
            (
                "MAIL FROM:<a@xn--bcher-kva.de>",
                mail0("a@xn--bcher-kva.de"),
            ),
            ("MAIL FROM:<a@b-c.d>", mail0("a@b-c.d")),
            (
                "MAIL FROM:<ü@例え.jp> SMTPUTF8",
                mail(
                    "ü@例え.jp",
                    MailParams {
                        smtputf8: true,
                        ..Default::default()
                    },
                ),
            ),
            (
                &format!("MAIL FROM:<{ok_local}@x>"),
                mail0(&format!("{ok_local}@x")),
            ),
            (
                &format!("MAIL FROM:<a@{ok_domain}>"),
                mail0(&format!("a@{ok_domain}")),
            ),
            (&format!("MAIL FROM:<{max_path}>"), mail0(&max_path)),
            // Syntax errors: the command's shape is wrong.
            ("MAIL", Err(Syntax("expected FROM:<address>"))),
            ("MAIL TO:<a@b>", Err(Syntax("expected FROM:<address>"))),
            ("MAIL FROM <a@b>", Err(Syntax("expected FROM:<address>"))),
            ("MAIL FROM:", Err(Syntax("missing address"))),
            (
                "MAIL FROM:a@b",
                Err(Syntax("address must be in angle brackets")),
            ),
            (
                "MAIL FROM:  <a@b>",
                Err(Syntax("address must be in angle brackets")),
            ),
            ("MAIL FROM:<a@b", Err(Syntax("unterminated address"))),
            ("MAIL FROM:<\"a>b@c", Err(Syntax("unterminated address"))),
            ("MAIL FROM:<a@b>SIZE=1", Err(Syntax("junk after address"))),
            // Bad addresses.
            ("MAIL FROM:<postmaster>", Err(BadAddress("missing domain"))),
            ("MAIL FROM:<a@>", Err(BadAddress("missing domain"))),
            ("MAIL FROM:<\"a\">", Err(BadAddress("missing domain"))),
            ("MAIL FROM:<\"a\"b@c>", Err(BadAddress("bad local part"))),
            ("MAIL FROM:<a..b@c>", Err(BadAddress("bad local part"))),
            ("MAIL FROM:<.a@c>", Err(BadAddress("bad local part"))),
            ("MAIL FROM:<a.@c>", Err(BadAddress("bad local part"))),
            ("MAIL FROM:<a b@c>", Err(BadAddress("bad local part"))),
            ("MAIL FROM:<a(b)@c>", Err(BadAddress("bad local part"))),
            ("MAIL FROM:<@c>", Err(BadAddress("bad source route"))),
            ("MAIL FROM:<a@b@c>", Err(BadAddress("bad domain"))),
            ("MAIL FROM:<a@b..c>", Err(BadAddress("bad domain"))),
            ("MAIL FROM:<a@b.c.>", Err(BadAddress("bad domain"))),
            ("MAIL FROM:<a@-b.c>", Err(BadAddress("bad domain"))),
            ("MAIL FROM:<a@b_c.d>", Err(BadAddress("bad domain"))),
            (
                "MAIL FROM:<a@[1.2.3]>",
                Err(BadAddress("bad address literal")),
            ),
            (
                "MAIL FROM:<a@[IPv6:zz]>",
                Err(BadAddress("bad address literal")),
            ),
            (
                "MAIL FROM:<a@[1.2.3.4>",
                Err(BadAddress("bad address literal")),
            ),
            ("MAIL FROM:<@a:b>", Err(BadAddress("missing domain"))),
            ("MAIL FROM:<@a;b:c@d>", Err(BadAddress("bad source route"))),
            ("MAIL FROM:<@a,b:c@d>", Err(BadAddress("bad source route"))),
            (
                &format!("MAIL FROM:<{long_local}@x>"),
                Err(BadAddress("local part too long")),
            ),
            (
                &format!("MAIL FROM:<a@{long_domain}>"),
                Err(BadAddress("domain too long")),
            ),
            (
                &format!("MAIL FROM:<{long_path}>"),
                Err(BadAddress("address too long")),
            ),
        ]);
    }

    #[test]
    fn mail_params() {
        check(&[
            (
                "mail from:<A.B@Example.COM> SIZE=1000 BODY=8BITMIME SMTPUTF8",
                mail(
                    "A.B@Example.COM",
                    MailParams {
                        size: Some(1000),
                        body: Some(Body::EightBitMime),
                        smtputf8: true,
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b>  size=0\tbody=7bit  smtputf8 ",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(0),
                        body: Some(Body::SevenBit),
                        smtputf8: true,
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> SIZE=18446744073709551615",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(u64::MAX),
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> SIZE=00000000000000000001",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(1),
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> RET=HDRS ENVID=x+0D+0ARCPT",
                mail(
                    "a@b",
                    MailParams {
                        ret: Some(Ret::Hdrs),
                        envid: Some("x+0D+0ARCPT".into()),
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> ENVID=x+0D+0ARCPT",
                mail(
                    "a@b",
                    MailParams {
                        envid: Some("x+0D+0ARCPT".into()),
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> ret=full",
                mail(
                    "a@b",
                    MailParams {
                        ret: Some(Ret::Full),
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> AUTH=<>",
                mail(
                    "a@b",
                    MailParams {
                        auth: Some("<>".into()),
                        ..Default::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> AUTH=e+3Dmc2@example.com",
                mail(
                    "a@b",
                    MailParams {
                        auth: Some("e+3Dmc2@example.com".into()),
                        ..Default::default()
                    },
                ),
            ),
            (
                &format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(100)),
                mail(
                    "a@b",
                    MailParams {
                        envid: Some("e".repeat(100)),
                        ..Default::default()
                    },
                ),
            ),
            // Bad values.
            (
                "MAIL FROM:<a@b> ENVID=a+zz",
                Err(Syntax("ENVID must be xtext")),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a+0d",
                Err(Syntax("ENVID must be xtext")),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a+0",
                Err(Syntax("ENVID must be xtext")),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a=b",
                Err(Syntax("ENVID must be xtext")),
            ),
            (
                "MAIL FROM:<a@b> ENVID=é",
                Err(Syntax("ENVID must be xtext")),
            ),
            ("MAIL FROM:<a@b> ENVID=", Err(Syntax("ENVID needs a value"))),
            (
                &format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(101)),
                Err(Syntax("ENVID too long")),
            ),
            ("MAIL FROM:<a@b> SIZE", Err(Syntax("SIZE needs a value"))),
            ("MAIL FROM:<a@b> SIZE=", Err(Syntax("SIZE needs a value"))),
            ("MAIL FROM:<a@b> SIZE=-1", Err(Syntax("bad SIZE value"))),
            ("MAIL FROM:<a@b> SIZE=1k", Err(Syntax("bad SIZE value"))),
            (
                "MAIL FROM:<a@b> SIZE=18446744073709551616",
                Err(Syntax("bad SIZE value")),
            ),
            (
                "MAIL FROM:<a@b> SIZE=000000000000000000001",
                Err(Syntax("bad SIZE value")),
            ),
            (
                "MAIL FROM:<a@b> BODY=BINARYMIME",
                Err(Syntax("BODY must be 7BIT or 8BITMIME")),
            ),
            ("MAIL FROM:<a@b> BODY", Err(Syntax("BODY needs a value"))),
            (
                "MAIL FROM:<a@b> SMTPUTF8=yes",
                Err(Syntax("SMTPUTF8 takes no value")),
            ),
            (
                "MAIL FROM:<a@b> RET=ALL",
                Err(Syntax("RET must be FULL or HDRS")),
            ),
            ("MAIL FROM:<a@b> RET", Err(Syntax("RET needs a value"))),
            ("MAIL FROM:<a@b> AUTH=a b", unknown_param("B")),
            (
                "MAIL FROM:<a@b> AUTH=a=b",
                Err(Syntax("AUTH= must be xtext or <>")),
            ),
            ("MAIL FROM:<a@b> AUTH", Err(Syntax("AUTH needs a value"))),
            // Duplicates.
            (
                "MAIL FROM:<a@b> SIZE=1 SIZE=2",
                Err(Syntax("duplicate parameter")),
            ),
            (
                "MAIL FROM:<a@b> BODY=7BIT body=7bit",
                Err(Syntax("duplicate parameter")),
            ),
            (
                "MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8",
                Err(Syntax("duplicate parameter")),
            ),
            (
                "MAIL FROM:<a@b> RET=FULL RET=FULL",
                Err(Syntax("duplicate parameter")),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a ENVID=a",
                Err(Syntax("duplicate parameter")),
            ),
            (
                "MAIL FROM:<a@b> AUTH=<> AUTH=<>",
                Err(Syntax("duplicate parameter")),
            ),
            // Unknown or malformed keywords.
            ("MAIL FROM:<a@b> FOO=1", unknown_param("FOO")),
            ("MAIL FROM:<a@b> x-foo", unknown_param("X-FOO")),
            ("MAIL FROM:<a@b> NOTIFY=NEVER", unknown_param("NOTIFY")),
            (
                &format!("MAIL FROM:<a@b> {}=1", "K".repeat(40)),
                unknown_param(&"K".repeat(32)),
            ),
            ("MAIL FROM:<a@b> =1", Err(Syntax("bad parameter keyword"))),
            ("MAIL FROM:<a@b> -X=1", Err(Syntax("bad parameter keyword"))),
            ("MAIL FROM:<a@b> ü=1", Err(Syntax("bad parameter keyword"))),
            // The address is checked before the parameters.
            (
                "MAIL FROM:<a..b@c> FOO=1",
                Err(BadAddress("bad local part")),
            ),
        ]);
    }

    #[test]
    fn rcpt_paths_and_params() {
        check(&[
            ("RCPT TO:<postmaster>", rcpt0("postmaster")),
            ("RCPT TO:<PostMaster>", rcpt0("PostMaster")),
            ("RCPT TO: <x@y>", rcpt0("x@y")),
            ("RCPT TO:<@relay:x@y>", rcpt0("x@y")),
            ("RCPT TO:<ü@例え.jp>", rcpt0("ü@例え.jp")),
            (
                "RCPT TO:<Postmaster@Example.com>",
                rcpt0("Postmaster@Example.com"),
            ),
            (
                "RCPT TO:<x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: Some("SUCCESS,FAILURE".into()),
                        orcpt: Some("rfc822;x@y".into()),
                    },
                ),
            ),
            (
                "rcpt to:<x@y> notify=never",
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: Some("NEVER".into()),
                        orcpt: None,
                    },
                ),
            ),
            (
                "RCPT TO:<x@y> NOTIFY=delay,Success,FAILURE",
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: Some("DELAY,SUCCESS,FAILURE".into()),
                        orcpt: None,
                    },
                ),
            ),
            (
                "RCPT TO:<x@y> ORCPT=rfc822;a+2Bb@y",
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: None,
                        orcpt: Some("rfc822;a+2Bb@y".into()),
                    },
                ),
            ),
            (
                "RCPT TO:<x@y> ORCPT=utf-8;ü@例え.jp",
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: None,
                        orcpt: Some("utf-8;ü@例え.jp".into()),
                    },
                ),
            ),
            ("RCPT TO:<>", Err(BadAddress("null recipient not allowed"))),
            ("RCPT TO: <>", Err(BadAddress("null recipient not allowed"))),
            ("RCPT TO:<postmaster@>", Err(BadAddress("missing domain"))),
            ("RCPT TO:<abuse>", Err(BadAddress("missing domain"))),
            ("RCPT FROM:<x@y>", Err(Syntax("expected TO:<address>"))),
            (
                "RCPT TO:x@y",
                Err(Syntax("address must be in angle brackets")),
            ),
            ("RCPT", Err(Syntax("expected TO:<address>"))),
            (
                "RCPT TO:<x@y> NOTIFY=NEVER,SUCCESS",
                Err(Syntax(
                    "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                )),
            ),
            (
                "RCPT TO:<x@y> NOTIFY=SUCCESS,SUCCESS",
                Err(Syntax(
                    "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                )),
            ),
            (
                "RCPT TO:<x@y> NOTIFY=SUCCESS,",
                Err(Syntax(
                    "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                )),
            ),
            (
                "RCPT TO:<x@y> NOTIFY=ALWAYS",
                Err(Syntax(
                    "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                )),
            ),
            ("RCPT TO:<x@y> NOTIFY", Err(Syntax("NOTIFY needs a value"))),
            (
                "RCPT TO:<x@y> ORCPT=x@y",
                Err(Syntax("ORCPT must be addr-type;xtext")),
            ),
            (
                "RCPT TO:<x@y> ORCPT=;x@y",
                Err(Syntax("ORCPT must be addr-type;xtext")),
            ),
            (
                "RCPT TO:<x@y> ORCPT=rfc822;",
                Err(Syntax("ORCPT must be addr-type;xtext")),
            ),
            (
                "RCPT TO:<x@y> ORCPT=rfc822;a+zz",
                Err(Syntax("ORCPT must be addr-type;xtext")),
            ),
            (
                "RCPT TO:<x@y> ORCPT=rfc 822;a",
                Err(Syntax("ORCPT must be addr-type;xtext")),
            ),
            (
                "RCPT TO:<x@y> ORCPT=rfc822;a 822;a",
                Err(Syntax("bad parameter keyword")),
            ),
            (
                &format!("RCPT TO:<x@y> ORCPT=rfc822;{}", "a".repeat(500)),
                Err(Syntax("ORCPT too long")),
            ),
            (
                "RCPT TO:<x@y> NOTIFY=NEVER NOTIFY=NEVER",
                Err(Syntax("duplicate parameter")),
            ),
            (
                "RCPT TO:<x@y> ORCPT=rfc822;a ORCPT=rfc822;a",
                Err(Syntax("duplicate parameter")),
            ),
            ("RCPT TO:<x@y> SIZE=1", unknown_param("SIZE")),
            ("RCPT TO:<x@y> foo", unknown_param("FOO")),
        ]);
    }

    #[test]
    fn error_replies() {
        let rows: &[(ParseError, &str)] = &[
            (Unrecognized, "500 5.5.1 Command unrecognized\r\n"),
            (NotImplemented, "502 5.5.1 Command not implemented\r\n"),
            (
                Syntax("duplicate parameter"),
                "501 5.5.4 Syntax error: duplicate parameter\r\n",
            ),
            (
                BadAddress("local part too long"),
                "553 5.1.7 Bad address syntax: local part too long\r\n",
            ),
            (
                UnknownParameter("FOO".into()),
                "555 5.5.4 Unsupported parameter FOO\r\n",
            ),
            (
                UnknownParameter("X".repeat(100)),
                "555 5.5.4 Unsupported parameter XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n",
            ),
            (
                ControlCharacter,
                "500 5.5.2 Control characters are not allowed in commands\r\n",
            ),
        ];
        for (error, want) in rows {
            let mut out = Vec::new();
            error.reply().encode(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{error:?}");
        }
    }

    #[test]
    fn replies_never_echo_much_input() {
        // Every error from a hostile line must produce a short, single reply line.
        let long = "Z".repeat(2000);
        let lines = [
            format!("AUTH PLAIN {long} extra"),
            format!("MAIL FROM:<a@b> {long}=1"),
            format!("MAIL FROM:<{long}@b>"),
            format!("RCPT TO:<a@b> NOTIFY={long}"),
            long.clone(),
        ];
        for line in &lines {
            let error = parse(line.as_bytes()).unwrap_err();
            let mut out = Vec::new();
            error.reply().encode(&mut out);
            assert!(out.len() <= 64 + 32, "{error:?}");
            assert!(
                !String::from_utf8(out)
                    .unwrap()
                    .contains("ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ")
            );
        }
    }
}
