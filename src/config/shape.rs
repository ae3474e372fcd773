//! The first pass over a file: every table and key against the schema in
//! `keys.rs`, before serde sees it. Each mistake is reported at the line of
//! its key, in words a sysadmin can act on ("use [[user]]", "expected IP:port,
//! e.g. 0.0.0.0:587", "did you mean ..."), and all of them in one run.
//!
//! A key whose value is wrong is blanked out (same length, newlines kept, so
//! every span stays where it was) so the second pass, serde and the
//! cross-key rules, can still run over the rest of the file. A mistake in a
//! table's shape (`[user]` for `[[user]]`) cannot be blanked; then only this
//! pass's findings are reported.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::keys::{self, Kind, Table};
use super::units::{ByteSize, Seconds};

/// What the first pass found.
pub(super) struct Shape {
    pub(super) errors: Vec<ConfigError>,
    /// The file with every wrong key = value blanked out (or a required value
    /// replaced by a placeholder); its lines are the original's lines.
    pub(super) cleaned: String,
    /// Whether `cleaned` may be parsed again (false after a table-shape mistake).
    pub(super) second_pass: bool,
    /// Dotted keys that were blanked ("upstream.addr"): the second pass says nothing about them.
    pub(super) blanked: Vec<String>,
    /// The same with their place ("user.0.networks"), for rules that would only repeat them.
    pub(super) blanked_at: Vec<String>,
    /// The line of each key: "server.hostname", "user.0.limits.max_recipients", ...
    pub(super) lines: HashMap<String, usize>,
}

/// 1-based line of a byte offset.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Checks `text` against the schema.
///
/// # Errors
/// A TOML syntax error (nothing else can be checked then).
pub(super) fn check(text: &str, source: &str) -> Result<Shape, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| ConfigError::Parse {
        path: source.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut w = Walker {
        text,
        source,
        errors: Vec::new(),
        blank: Vec::new(),
        blanked: Vec::new(),
        blanked_at: Vec::new(),
        structural: false,
        lines: HashMap::new(),
        replace: Vec::new(),
        placeholders: 0,
    };
    let top = keys::table("").expect("the top-level table is in the schema");
    w.table(top, "", doc.get_ref());
    // Blank each wrong key = value, or put a placeholder where the key is required;
    // every newline stays, so a line number means the same in both texts.
    let mut edits: Vec<(Range<usize>, String)> = w
        .blank
        .iter()
        .map(|r| (r.clone(), String::new()))
        .chain(w.replace.iter().cloned())
        .collect();
    edits.sort_by_key(|(r, _)| r.start);
    let mut cleaned = String::with_capacity(text.len());
    let mut pos = 0;
    let mut ok = true;
    for (r, with) in &edits {
        let (start, end) = (r.start.min(text.len()), r.end.min(text.len()));
        if start < pos || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            ok = false;
            break;
        }
        cleaned.push_str(&text[pos..start]);
        cleaned.push_str(with);
        cleaned.extend(text[start..end].chars().filter(|&c| c == '\n'));
        pos = end;
    }
    if ok {
        cleaned.push_str(&text[pos..]);
    } else {
        cleaned = text.to_owned();
    }
    Ok(Shape {
        errors: w.errors,
        cleaned,
        second_pass: ok && !w.structural,
        blanked: w.blanked,
        blanked_at: w.blanked_at,
        lines: w.lines,
    })
}

struct Walker<'a> {
    text: &'a str,
    source: &'a str,
    errors: Vec<ConfigError>,
    blank: Vec<Range<usize>>,
    blanked: Vec<String>,
    blanked_at: Vec<String>,
    structural: bool,
    lines: HashMap<String, usize>,
    /// Values replaced by a valid placeholder, so a required key stays present for the second pass.
    replace: Vec<(Range<usize>, String)>,
    placeholders: usize,
}

/// `"user"` + `"name"` → `"user.name"`.
fn dotted(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

impl Walker<'_> {
    /// A valid value for a required key whose own value was wrong (names stay unique).
    fn placeholder(&mut self, kind: Kind) -> Option<String> {
        self.placeholders += 1;
        match kind {
            Kind::Name => Some(format!("\"(line with an error {})\"", self.placeholders)),
            Kind::ListenAddr => Some("\"127.0.0.1:0\"".to_owned()),
            _ => None,
        }
    }

    fn error(&mut self, span: &Range<usize>, key: String, message: String) {
        self.errors.push(ConfigError::Invalid {
            path: self.source.to_owned(),
            line: line_at(self.text, span.start),
            key,
            message,
        });
    }

    /// `def` is the schema of `table`; `at` is its place ("user.0"), for spans.
    fn table(&mut self, def: &Table, at: &str, table: &DeTable<'_>) {
        for (k, v) in table.iter() {
            let name: &str = k.get_ref();
            let key = dotted(def.path, name);
            let whole = k.span().start..v.span().end;
            let Some(kdef) = def.key(name) else {
                let msg = unknown_key(def, name);
                self.error(&k.span(), key.clone(), msg);
                if v.get_ref().is_table() || is_blocks(v.get_ref()) {
                    self.structural = true;
                } else {
                    self.blank.push(whole);
                    self.blanked_at.push(dotted(at, name));
                }
                continue;
            };
            self.lines
                .insert(dotted(at, name), line_at(self.text, k.span().start));
            match kdef.kind {
                Kind::Section(path) => {
                    let sub = keys::table(path).expect("every section is in the schema");
                    match v.get_ref() {
                        DeValue::Table(t) => self.table(sub, &dotted(at, name), t),
                        DeValue::Array(_) => {
                            let msg = format!(
                                "use [{path}] (single brackets): there is one {} section{}",
                                sub.display(),
                                if def.array {
                                    format!(" per {}", def.display())
                                } else {
                                    String::new()
                                }
                            );
                            self.error(&k.span(), key, msg);
                            self.structural = true;
                        }
                        other => {
                            let msg = format!(
                                "{name} is a table: write a [{path}] line and its keys below it, not {}",
                                describe(other)
                            );
                            self.error(&k.span(), key.clone(), msg);
                            self.blank.push(whole);
                            self.blanked.push(key);
                            self.blanked_at.push(dotted(at, name));
                        }
                    }
                }
                Kind::Blocks(path) => {
                    let sub = keys::table(path).expect("every block is in the schema");
                    match v.get_ref() {
                        DeValue::Array(items) if items.iter().all(|i| i.get_ref().is_table()) => {
                            for (i, item) in items.iter().enumerate() {
                                if let DeValue::Table(t) = item.get_ref() {
                                    self.table(sub, &format!("{}.{i}", dotted(at, name)), t);
                                }
                            }
                        }
                        DeValue::Table(_) => {
                            let msg = format!(
                                "use [[{path}]] (double brackets) — one block per {path}, even for a single one"
                            );
                            self.error(&k.span(), key, msg);
                            self.structural = true;
                        }
                        other => {
                            let msg = format!(
                                "{name} is a list of blocks: write one [[{path}]] line per {path}, not {}",
                                describe(other)
                            );
                            self.error(&k.span(), key.clone(), msg);
                            self.blank.push(whole);
                            self.blanked.push(key);
                            self.blanked_at.push(dotted(at, name));
                        }
                    }
                }
                kind => {
                    let checked = value(kind, v).and_then(|()| {
                        // An inline password may hold any characters; nothing else
                        // written as a string means its surrounding spaces.
                        if name == "password" {
                            Ok(())
                        } else {
                            untrimmed(kind, v.get_ref())
                        }
                    });
                    if let Err(msg) = checked {
                        self.error(&k.span(), key.clone(), msg);
                        match (kdef.default, self.placeholder(kind)) {
                            ("required", Some(p)) => self.replace.push((v.span(), p)),
                            ("required", None) => self.structural = true,
                            _ => self.blank.push(whole),
                        }
                        self.blanked.push(key);
                        self.blanked_at.push(dotted(at, name));
                    }
                }
            }
        }
    }
}

fn is_blocks(v: &DeValue<'_>) -> bool {
    matches!(v, DeValue::Array(items) if !items.is_empty() && items.iter().all(|i| i.get_ref().is_table()))
}

/// The value in words: `the string "x"`, `the number 3`, `true`, ...
fn describe(v: &DeValue<'_>) -> String {
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
fn untrimmed(kind: Kind, v: &DeValue<'_>) -> Result<(), String> {
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
fn value(kind: Kind, v: &Spanned<DeValue<'_>>) -> Result<(), String> {
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
        Kind::Senders => {
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

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The message for a key `def` does not have.
fn unknown_key(def: &Table, name: &str) -> String {
    let here = def.display();
    // A limit written straight into [[user]] belongs in its [user.limits].
    for k in def.keys {
        if let Kind::Section(sub) = k.kind
            && keys::table(sub).is_some_and(|t| t.key(name).is_some())
        {
            return format!(
                "{name} belongs in [{sub}], not directly in {here}: add a [{sub}] line after this block's other keys and put {name} below it"
            );
        }
    }
    let near = def
        .keys
        .iter()
        .map(|k| (distance(name, k.name), k.name))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    if let Some((_, k)) = near {
        return format!("unknown key {name:?} in {here}; did you mean {k:?}?");
    }
    let elsewhere: Vec<String> = keys::TABLES
        .iter()
        .filter(|t| t.path != def.path && t.key(name).is_some())
        .filter(|t| t.path != "user.limits" || def.path == "user")
        .map(Table::display)
        .collect();
    if !elsewhere.is_empty() {
        let mut msg = format!(
            "{name} is not a key of {here}; it belongs in {}",
            elsewhere.join(" or ")
        );
        if def.path.is_empty() {
            msg.push_str(" (a key above the first [table] line is at the top level)");
        } else {
            msg.push_str(&format!(
                " (keys below a {here} line belong to it until the next [table] line)"
            ));
        }
        return msg;
    }
    if def.path.is_empty() {
        let tables: Vec<String> = def
            .keys
            .iter()
            .filter_map(|k| match k.kind {
                Kind::Section(p) => Some(format!("[{p}]")),
                Kind::Blocks(p) => Some(format!("[[{p}]]")),
                _ => None,
            })
            .collect();
        return format!(
            "unknown table {name:?}; the file's tables are: {}",
            tables.join(", ")
        );
    }
    let all: Vec<&str> = def.keys.iter().map(|k| k.name).collect();
    format!(
        "unknown key {name:?} in {here}; the keys there are: {}",
        all.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("pasword_hash", "password_hash"), 1);
        assert_eq!(distance("hostnme", "hostname"), 1);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn blanking_keeps_lines() {
        let text = "[server]\nhostname = true\nshutdown_grace = \"30s\"\n";
        let s = check(text, "t.toml").unwrap();
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.cleaned.lines().count(), text.lines().count());
        assert!(!s.cleaned.contains("hostname"));
        assert!(s.cleaned.contains("shutdown_grace"));
        assert!(s.second_pass);
        assert_eq!(s.blanked, vec!["server.hostname".to_owned()]);
    }
}
