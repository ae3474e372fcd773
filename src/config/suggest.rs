//! What to say about a key a table does not have: the table it belongs in,
//! a near spelling ("did you mean"), or the keys that are there.

use super::keys::{self, Kind, Table};

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
pub(super) fn unknown_key(def: &Table, name: &str) -> String {
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
}
