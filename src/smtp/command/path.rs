//! Paths in MAIL and RCPT (RFC 5321 §4.1.2): the angle-bracketed path, source
//! routes, local parts (dot-string or quoted, UTF-8 under RFC 6531), domains and
//! address literals, with the length limits of §4.5.3.1.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ParseError, is_ws_char, strip_keyword};

/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2).
pub(super) const MAX_DOMAIN: usize = 255;
/// Longest path, angle brackets included (RFC 5321 §4.5.3.1.3).
const MAX_PATH: usize = 256;

/// Which command a path belongs to: they differ on `<>` and `<postmaster>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PathKind {
    Mail,
    Rcpt,
}

/// Splits `[SP]<path> rest` into the text between the angle brackets and what
/// follows the closing bracket. A `>` inside a quoted local part does not close.
pub(super) fn split_path(s: &str) -> Result<(&str, &str), ParseError> {
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
pub(super) fn check_path(path: &str, kind: PathKind) -> Result<String, ParseError> {
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
pub(super) fn is_atext(b: u8) -> bool {
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
