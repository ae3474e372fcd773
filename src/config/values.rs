//! One value against its kind (`keys::Kind`), with the mistake in words:
//! `tls = true` lists the words it may be, `addr = "0.0.0.0"` asks for a port,
//! a fraction gets its whole-number spelling, a count that does not fit says
//! the limit.

use std::net::{IpAddr, SocketAddr};

use toml::Spanned;
use toml::de::DeValue;

use super::keys::Kind;
use super::units::{ByteSize, Seconds};

/// The value in words: `the string "x"`, `the number 3`, `true`, ...
pub(super) fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

fn integer(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

fn string<'v>(v: &'v DeValue<'_>) -> Option<&'v str> {
    match v {
        DeValue::String(s) => Some(s.as_ref()),
        _ => None,
    }
}

/// A string with a space or line break at either end (pasted?) is refused.
pub(super) fn untrimmed(kind: Kind, v: &DeValue<'_>) -> Result<(), String> {
    let stringy = matches!(
        kind,
        Kind::Text | Kind::Name | Kind::Address | Kind::HostPort | Kind::Path | Kind::ListenAddr
    );
    match string(v) {
        Some(s) if stringy && s != s.trim() => Err(format!(
            "{s:?} has a space or line break at its start or end (pasted?); remove it"
        )),
        _ => Ok(()),
    }
}

/// Checks one value against its kind; the message is in words.
pub(super) fn value(kind: Kind, v: &Spanned<DeValue<'_>>) -> Result<(), String> {
    let v = v.get_ref();
    let got = describe(v);
    let need_string = |what: &str| -> Result<&str, String> {
        string(v).ok_or_else(|| format!("expected {what} in quotes, got {got}"))
    };
    match kind {
        Kind::Text | Kind::Address => {
            need_string("a string")?;
        }
        Kind::Name => {
            if need_string("a name")?.is_empty() {
                return Err("must not be empty".to_owned());
            }
        }
        Kind::Hostname => {
            let h = need_string("a host name")?;
            if h.trim().is_empty() {
                return Err("must not be empty: it is the name in the greeting and in EHLO, e.g. \"relay.example.lan\"".to_owned());
            }
            if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "{h:?} contains a space; a host name is one word like \"relay.example.lan\""
                ));
            }
        }
        Kind::Bool => match v {
            DeValue::Boolean(_) => {}
            DeValue::String(s) if s == "true" || s == "false" => {
                return Err(format!("write {s} without quotes"));
            }
            _ => return Err(format!("expected true or false, got {got}")),
        },
        Kind::Count => count(v, &got)?,
        Kind::Size => match v {
            DeValue::String(s) => {
                ByteSize::parse(s)?;
            }
            DeValue::Float(f) => {
                return Err(format!(
                    "{} is a fraction; write whole bytes or a string like \"1536KiB\"",
                    f.as_str()
                ));
            }
            _ => match integer(v) {
                Some(n) if n < 0 => return Err(format!("a size must not be negative, got {n}")),
                Some(n) if u64::try_from(n).is_err() => return Err(format!("{n} is too large")),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "expected a size like \"8MiB\" or a number of bytes, got {got}"
                    ));
                }
            },
        },
        Kind::Duration => match v {
            DeValue::String(s) => {
                Seconds::parse(s)?;
            }
            DeValue::Float(f) => {
                return Err(format!(
                    "{} is a fraction; write whole seconds or a string like \"1500ms\"",
                    f.as_str()
                ));
            }
            _ => match integer(v) {
                Some(n) if n < 0 => {
                    return Err(format!("a duration must not be negative, got {n}"));
                }
                Some(n) if u64::try_from(n).is_err() => return Err(format!("{n} is too large")),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "expected a duration like \"30s\", \"5m\" or a number of seconds, got {got}"
                    ));
                }
            },
        },
        Kind::ListenAddr => listen_addr(need_string("IP:port")?)?,
        Kind::HostPort => host_port(need_string("host:port")?)?,
        Kind::Path => {
            if need_string("a path")?.is_empty() {
                return Err("must not be empty".to_owned());
            }
        }
        Kind::Choice(words) => {
            let list = words
                .iter()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            match string(v) {
                Some(s) if words.contains(&s) => {}
                Some(s) if words.contains(&s.to_ascii_lowercase().as_str()) => {
                    return Err(format!(
                        "write {:?} in lower case (one of {list})",
                        s.to_ascii_lowercase()
                    ));
                }
                _ => return Err(format!("expected one of {list}; got {got}")),
            }
        }
        Kind::Networks => {
            let DeValue::Array(items) = v else {
                return Err(format!(
                    "expected a list in brackets, e.g. [\"192.168.10.23\", \"10.0.0.0/8\"], got {got}"
                ));
            };
            let mut problems = Vec::new();
            for item in items.iter() {
                match string(item.get_ref()) {
                    Some(s) => {
                        if let Err(e) = super::types::parse_network(s) {
                            problems.push(e);
                        }
                    }
                    None => problems.push(format!(
                        "expected \"address\" or \"network/prefix\" in quotes, got {}",
                        describe(item.get_ref())
                    )),
                }
            }
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
        }
        Kind::Senders | Kind::Names => {
            let DeValue::Array(items) = v else {
                return Err(format!(
                    "expected a list in brackets, e.g. [\"scanner@example.com\", \"*@example.com\"], got {got}"
                ));
            };
            if let Some(bad) = items.iter().find(|i| !i.get_ref().is_str()) {
                return Err(format!(
                    "every entry is a string in quotes, got {}",
                    describe(bad.get_ref())
                ));
            }
        }
        Kind::PasswordHash => {
            let h = need_string("a hash from `postern hash-password`")?;
            if h != h.trim() {
                return Err(
                    "has spaces or a line break at its start or end (pasted?); remove them"
                        .to_owned(),
                );
            }
        }
        Kind::Section(_) | Kind::Blocks(_) => {}
    }
    Ok(())
}

fn count(v: &DeValue<'_>, got: &str) -> Result<(), String> {
    match v {
        DeValue::Float(f) => Err(format!("expected a whole number, got {}", f.as_str())),
        DeValue::String(s) if s.trim().parse::<u64>().is_ok() => {
            Err(format!("write the number without quotes: {}", s.trim()))
        }
        _ => match integer(v) {
            Some(n) if n < 0 => Err(format!("must not be negative, got {n}")),
            Some(n) if u32::try_from(n).is_err() => {
                Err(format!("{n} is too large: at most {}", u32::MAX))
            }
            Some(_) => Ok(()),
            None => Err(format!("expected a whole number, got {got}")),
        },
    }
}

fn listen_addr(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        let example = match ip {
            IpAddr::V4(_) => format!("{ip}:587"),
            IpAddr::V6(_) => format!("[{ip}]:587"),
        };
        return Err(format!(
            "{s:?} has no port: expected IP:port, e.g. \"{example}\""
        ));
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && port.parse::<u16>().is_ok()
        && !host.is_empty()
        && host.parse::<IpAddr>().is_err()
    {
        return Err(format!(
            "{s:?}: a host name is not accepted here, only an IP address (postern does not resolve names to listen on): e.g. \"127.0.0.1:{port}\" or \"0.0.0.0:{port}\""
        ));
    }
    Err(format!("{s:?} is not IP:port, e.g. \"0.0.0.0:587\""))
}

fn host_port(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "{s:?}: the port must be a number from 1 to 65535, e.g. \"smtp.example.com:465\""
            )),
            Ok(_) => Ok(()),
        },
        _ => Err(format!(
            "{s:?} has no port: expected host:port, e.g. \"{}:465\"",
            if s.is_empty() { "smtp.example.com" } else { s }
        )),
    }
}
