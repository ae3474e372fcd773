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
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::keys::{self, Kind, Table};
use super::suggest::unknown_key;
use super::values::{describe, untrimmed, value};

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
    w.table(top, "", doc.get_ref(), &(0..0));
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
    /// `head` is where the table starts (its header), for a key it lacks.
    fn table(&mut self, def: &Table, at: &str, table: &DeTable<'_>, head: &Range<usize>) {
        if !def.path.is_empty() {
            for k in def.keys.iter().filter(|k| k.default == keys::REQUIRED) {
                if !table.iter().any(|(name, _)| name.get_ref() == k.name) {
                    let msg = format!(
                        "this {} has no {}, which is required (e.g. {} = {})",
                        def.display(),
                        k.name,
                        k.name,
                        k.example
                    );
                    self.error(head, dotted(def.path, k.name), msg);
                    self.structural = true;
                }
            }
        }
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
                        DeValue::Table(t) => self.table(sub, &dotted(at, name), t, &k.span()),
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
                                    self.table(
                                        sub,
                                        &format!("{}.{i}", dotted(at, name)),
                                        t,
                                        &item.span(),
                                    );
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
                            (keys::REQUIRED, Some(p)) => self.replace.push((v.span(), p)),
                            (keys::REQUIRED, None) => self.structural = true,
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

#[cfg(test)]
mod tests {
    use super::*;

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
