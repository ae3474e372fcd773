//! The key reference of `docs/configuration.md`, generated from the schema
//! in `keys.rs`; `tests/docs.rs` keeps the file equal to it.

use super::keys::{Kind, TABLES, Table};

/// How a table is written in a file.
fn header(t: &Table) -> String {
    match (t.path, t.array) {
        ("", _) => "top level".to_owned(),
        (p, true) => format!("`[[{p}]]`"),
        (p, false) => format!("`[{p}]`"),
    }
}

fn type_text(kind: Kind) -> String {
    match kind {
        Kind::Choice(words) => {
            let w: Vec<String> = words.iter().map(|w| format!("`\"{w}\"`")).collect();
            format!("one of {}", w.join(", "))
        }
        Kind::Size => "size: integer or `\"8MiB\"`".to_owned(),
        Kind::Duration => "duration: integer or `\"30s\"`".to_owned(),
        other => other.type_name().to_owned(),
    }
}

/// The key reference of `docs/configuration.md`: one table per section, every
/// key with its type, unit, default, an example and its meaning. A test keeps
/// the file equal to this.
pub fn markdown_reference() -> String {
    let mut out = String::new();
    for t in TABLES.iter().filter(|t| !t.path.is_empty()) {
        out.push_str(&format!("### {}\n\n", header(t)));
        out.push_str("| key | type | unit | default | example | meaning |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        for k in t.keys {
            if matches!(k.kind, Kind::Section(_) | Kind::Blocks(_)) {
                continue;
            }
            let default = if t.path == "user.limits" {
                "the `[limits]` value".to_owned()
            } else if k.default == super::keys::REQUIRED {
                "required".to_owned()
            } else if k.default.contains(' ') {
                k.default.to_owned()
            } else {
                format!("`{}`", k.default)
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | `{}` | {} |\n",
                k.name,
                type_text(k.kind),
                k.kind.unit(),
                default,
                k.example,
                k.doc.replace('|', "\\|"),
            ));
        }
        out.push('\n');
    }
    out
}
