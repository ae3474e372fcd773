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
    let want = postern::config::markdown_reference();
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

#[test]
fn license_files_match_cargo_toml() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let license = manifest["package"]["license"].as_str().unwrap();
    assert_eq!(license, "MIT OR Apache-2.0");
    assert!(read("LICENSE-MIT").starts_with("MIT License"));
    let apache = read("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(deb["license-file"][0].as_str(), Some("LICENSE-MIT"));
}

#[test]
fn the_systemd_unit_has_what_the_service_needs() {
    let unit = read("contrib/systemd/postern.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/postern run --config /etc/postern/postern.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=postern",
        "StateDirectory=postern",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "RestartPreventExitStatus=64",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    // The unit's config is the packaged conffile, and the package ships both.
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let conf: Vec<&str> = deb["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(conf, ["/etc/postern/postern.toml"]);
    let assets = deb["assets"].as_array().unwrap();
    let dest = |src: &str| {
        assets
            .iter()
            .filter_map(|a| a.as_array())
            .find(|a| a[0].as_str() == Some(src))
            .and_then(|a| a[1].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{src} is not packaged"))
    };
    assert_eq!(
        dest("contrib/debian/postern.toml"),
        "etc/postern/postern.toml"
    );
    assert_eq!(
        dest("contrib/systemd/postern.service"),
        "lib/systemd/system/postern.service"
    );
}

#[test]
fn the_sample_mistakes_in_configuration_md_are_what_check_prints() {
    let doc = read("docs/configuration.md");
    let at = doc
        .find("and for a file with mistakes, `five.toml`:")
        .expect("the sample in configuration.md");
    let rest = &doc[at..];
    let file_start = rest.find("```toml\n").unwrap() + "```toml\n".len();
    let file_end = file_start + rest[file_start..].find("```").unwrap();
    let out_start = file_end + 3 + rest[file_end + 3..].find("```\n").unwrap() + 4;
    let out_end = out_start + rest[out_start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("five.toml"), &rest[file_start..file_end]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check", "-c", "five.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        &rest[out_start..out_end]
    );
}
