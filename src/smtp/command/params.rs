//! MAIL and RCPT parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
//! (RFC 6531), RET, ENVID, NOTIFY, ORCPT (RFC 3461) and AUTH= (RFC 4954 §5).
//! xtext values are validated and kept encoded, never decoded into a line.

use super::path::is_atext;
use super::{Body, MAX_PARAM_ECHO, MailParams, ParseError, RcptParams, Ret, cut};

/// Longest `ENVID=` value (RFC 3461 §4.4).
const MAX_ENVID: usize = 100;
/// Longest `ORCPT=` value (RFC 3461 §4.2: 500 characters).
const MAX_ORCPT: usize = 500;
/// Longest `SIZE=` value (RFC 1870: 20 digits).
const MAX_SIZE_DIGITS: usize = 20;

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

pub(super) fn mail_param(params: &mut MailParams, word: &str) -> Result<(), ParseError> {
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

pub(super) fn rcpt_param(params: &mut RcptParams, word: &str) -> Result<(), ParseError> {
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
