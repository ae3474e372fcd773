//! Upstream rules: kinds, addresses, credentials, TLS defaults.

use super::*;

#[test]
fn no_upstream() {
    let text = BASE.replace(
        "[[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"var/outbox\"\n",
        "",
    );
    assert_invalid(&text, "upstream", 1);
}

#[test]
fn duplicate_upstream_name() {
    let text =
        base_with("\n[[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"var/other\"\n");
    assert_invalid(
        &text,
        "upstream.name",
        line_of_nth(&text, "name = \"outbox\"", 1),
    );
}

#[test]
fn smtp_upstream_without_addr() {
    let text = with_smtp_upstream("username = \"u@example.com\"\npassword_env = \"P\"\n");
    assert_invalid(&text, "upstream.addr", line_of(&text, "kind = \"smtp\""));
}

#[test]
fn smtp_upstream_addr_without_port() {
    let text = with_smtp_upstream("addr = \"nohostport\"\n");
    assert_invalid(&text, "upstream.addr", line_of(&text, "nohostport"));
}

#[test]
fn smtp_upstream_addr_port_zero_or_no_host() {
    for bad in ["smtp.example.com:0", ":587", "smtp.example.com:99999"] {
        let text = with_smtp_upstream(&format!("addr = \"{bad}\"\n"));
        assert_invalid(&text, "upstream.addr", line_of(&text, bad));
    }
}

#[test]
fn smtp_upstream_with_dir() {
    let text = with_smtp_upstream("addr = \"smtp.example.com:587\"\ndir = \"var/x\"\n");
    assert_invalid(&text, "upstream.dir", line_of(&text, "dir = \"var/x"));
}

#[test]
fn outbox_without_dir() {
    let text = BASE.replace("dir = \"var/outbox\"\n", "");
    assert_invalid(&text, "upstream.dir", line_of(&text, "kind = \"outbox\""));
}

#[test]
fn outbox_with_smtp_only_key() {
    let text = BASE.replace(
        "dir = \"var/outbox\"\n",
        "dir = \"var/outbox\"\nusername = \"u@example.com\"\n",
    );
    assert_invalid(&text, "upstream.username", line_of(&text, "username ="));
    let text = BASE.replace(
        "dir = \"var/outbox\"\n",
        "dir = \"var/outbox\"\naddr = \"smtp.example.com:25\"\n",
    );
    assert_invalid(&text, "upstream.addr", line_of(&text, "addr = \"smtp"));
}

#[test]
fn two_password_sources() {
    let text = with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword_env = \"P\"\npassword_file = \"/run/secrets/p\"\n",
    );
    assert_invalid(&text, "upstream.password", line_of(&text, "password_file"));
    let text = with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword = \"x\"\npassword_env = \"P\"\n",
    );
    assert_invalid(&text, "upstream.password", line_of(&text, "password_env"));
}

#[test]
fn username_without_password() {
    let text =
        with_smtp_upstream("addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\n");
    assert_invalid(&text, "upstream.password_env", line_of(&text, "username ="));
}

#[test]
fn password_without_username() {
    let text = with_smtp_upstream("addr = \"smtp.example.com:465\"\npassword_env = \"P\"\n");
    assert_invalid(&text, "upstream.username", line_of(&text, "password_env ="));
}

#[test]
fn upstream_max_connections_zero() {
    let text = with_smtp_upstream("addr = \"smtp.example.com:465\"\nmax_connections = 0\n");
    assert_invalid(
        &text,
        "upstream.max_connections",
        line_of(&text, "max_connections ="),
    );
}

#[test]
fn upstream_missing_ca_file() {
    let text = with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nca_file = \"/nonexistent/postern-ca.pem\"\n",
    );
    assert_invalid(&text, "upstream.ca_file", line_of(&text, "ca_file"));
}

#[test]
fn smtp_upstream_without_credentials_is_fine() {
    // An internal relay that needs no AUTH.
    let c = ok(&with_smtp_upstream(
        "addr = \"10.0.0.5:25\"\ntls = \"none\"\n",
    ));
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.secret(), None);
    assert_eq!(up.host().as_deref(), Some("10.0.0.5"));
}

#[test]
fn smtp_upstream_tls_defaults_by_port() {
    for (addr, want) in [
        ("smtp.example.com:465", TlsMode::Implicit),
        ("smtp.example.com:587", TlsMode::Starttls),
        ("smtp.example.com:25", TlsMode::Starttls),
        ("[2001:db8::1]:465", TlsMode::Implicit),
        ("[2001:db8::1]:2525", TlsMode::Starttls),
    ] {
        let c = ok(&with_smtp_upstream(&format!("addr = \"{addr}\"\n")));
        assert_eq!(c.upstream("provider").unwrap().tls_mode(), want, "{addr}");
    }
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\ntls = \"starttls\"\n",
    ));
    assert_eq!(
        c.upstream("provider").unwrap().tls_mode(),
        TlsMode::Starttls,
        "a written tls wins over the port"
    );
}

#[test]
fn password_env_is_not_needed_to_parse() {
    let var = "POSTERN_TEST_SURELY_UNSET_VARIABLE_4711";
    assert!(std::env::var_os(var).is_none());
    let c = ok(&with_smtp_upstream(&format!(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword_env = \"{var}\"\n"
    )));
    let secret = c.upstream("provider").unwrap().secret().unwrap();
    assert_eq!(secret, Secret::Env(var.to_owned()));
    // Only resolving it (what `run` does) needs the variable, and the error names it.
    let err = secret.resolve().unwrap_err();
    assert!(err.contains(var), "{err}");
}

#[test]
fn password_file_is_not_read_while_parsing() {
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword_file = \"/nonexistent/postern-secret\"\n",
    ));
    assert!(matches!(
        c.upstream("provider").unwrap().secret(),
        Some(Secret::File(_))
    ));
}
