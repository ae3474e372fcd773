//! The documents cannot drift from the code: the key reference in
//! `docs/configuration.md` is the one generated from the schema (which a unit
//! test keeps equal to the serde structs), and the README links the docs.
//!
//! After changing a key: `POSTERN_WRITE_DOCS=1 cargo test --test docs` rewrites
//! the reference block, then review the diff.

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const BEGIN: &str =
    "<!-- keys:begin (generated from src/config/keys.rs; do not edit by hand) -->\n";
const END: &str = "<!-- keys:end -->";

fn read(rel: &str) -> String {
    let p = format!("{MANIFEST_DIR}/{rel}");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn configuration_md_lists_exactly_the_keys_of_the_code() {
    let path = format!("{MANIFEST_DIR}/docs/configuration.md");
    let doc = read("docs/configuration.md");
    let start = doc.find(BEGIN).expect("the keys:begin marker") + BEGIN.len();
    let end = doc[start..].find(END).expect("the keys:end marker") + start;
    let want = postern::config::keys::markdown_reference();
    if doc[start..end] != want {
        if std::env::var_os("POSTERN_WRITE_DOCS").is_some() {
            let new = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, new).unwrap();
            return;
        }
        let have: Vec<&str> = doc[start..end].lines().collect();
        let diff: Vec<String> = want
            .lines()
            .filter(|l| !have.contains(l))
            .map(|l| format!("missing or different in the doc: {l}"))
            .chain(
                have.iter()
                    .filter(|l| !want.lines().any(|w| w == **l))
                    .map(|l| format!("in the doc, not in the code: {l}")),
            )
            .collect();
        panic!(
            "docs/configuration.md is out of date (POSTERN_WRITE_DOCS=1 cargo test --test docs rewrites it):\n{}",
            diff.join("\n")
        );
    }
    // Every key of every table is in a row of its own.
    for t in postern::config::keys::TABLES
        .iter()
        .filter(|t| !t.path.is_empty())
    {
        for k in t.keys {
            if k.kind.type_name().contains("table") {
                continue;
            }
            assert!(
                want.contains(&format!("| `{}` |", k.name)),
                "[{}] {}",
                t.path,
                k.name
            );
        }
    }
}

#[test]
fn readme_links_the_documents_and_they_exist() {
    let readme = read("README.md");
    for doc in ["docs/configuration.md", "docs/operations.md"] {
        assert!(readme.contains(doc), "README.md does not link {doc}");
        assert!(!read(doc).trim().is_empty(), "{doc} is empty");
    }
}

#[test]
fn operations_md_covers_the_operators_questions() {
    let ops = read("docs/operations.md");
    for heading in [
        "## Install",
        "## Run as a service",
        "## Upgrade",
        "## Logs",
        "## Reload",
        "## TLS certificate renewal",
        "## Troubleshooting",
    ] {
        assert!(
            ops.contains(heading),
            "docs/operations.md lacks {heading:?}"
        );
    }
    for symptom in ["535", "451 4.4.1", "5.7."] {
        assert!(
            ops.contains(symptom),
            "no troubleshooting entry for {symptom}"
        );
    }
}
