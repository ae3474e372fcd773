//! Listener rules: names, addresses, TLS, the PROXY protocol.

use super::*;

#[test]
fn no_listener() {
    let text = BASE.replace(
        "[[listener]]\nname = \"local\"\naddr = \"127.0.0.1:2525\"\n",
        "",
    );
    assert_invalid(&text, "listener", 1);
}

#[test]
fn duplicate_listener_name() {
    let text = format!("[[listener]]\nname = \"local\"\naddr = \"127.0.0.1:2526\"\n{BASE}");
    assert_invalid(
        &text,
        "listener.name",
        line_of_nth(&text, "name = \"local\"", 1),
    );
}

#[test]
fn duplicate_listener_addr() {
    let text = format!("[[listener]]\nname = \"other\"\naddr = \"127.0.0.1:2525\"\n{BASE}");
    assert_invalid(
        &text,
        "listener.addr",
        line_of_nth(&text, "addr = \"127.0.0.1:2525\"", 1),
    );
}

#[test]
fn port_zero_listeners_may_share_an_addr() {
    // Tests bind several listeners on 127.0.0.1:0; that is not a duplicate.
    let text = BASE.replace("127.0.0.1:2525", "127.0.0.1:0");
    let text = format!("[[listener]]\nname = \"other\"\naddr = \"127.0.0.1:0\"\n{text}");
    assert_eq!(ok(&text).listeners.len(), 2);
}

#[test]
fn tls_listener_without_tls_section() {
    for mode in ["starttls", "implicit"] {
        let text = BASE.replace(
            "addr = \"127.0.0.1:2525\"\n",
            &format!("addr = \"127.0.0.1:2525\"\ntls = \"{mode}\"\n"),
        );
        assert_invalid(&text, "listener.tls", line_of(&text, mode));
    }
}

#[test]
fn tls_section_with_missing_cert() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_with(&format!(
        "[tls]\ncert = \"{0}/nope-cert.pem\"\nkey = \"{0}/nope-key.pem\"\n",
        dir.path().display()
    ));
    assert_invalid(&text, "tls.cert", line_of(&text, "nope-cert.pem"));
    match parse(&text) {
        Err(e) => assert!(e.to_string().contains("nope-cert.pem"), "{e}"),
        Ok(_) => unreachable!(),
    }
}

#[test]
fn tls_section_with_missing_key() {
    // The certificate is fine, the key file is missing: the error should point at `key`.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    let text = base_with(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}/nope-key.pem\"\n",
        cert_path.display(),
        dir.path().display()
    ));
    assert_invalid(&text, "tls.key", line_of(&text, "nope-key.pem"));
}

#[test]
fn tls_listener_with_real_cert_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\ntls = \"starttls\"\n",
    );
    let text = format!(
        "{text}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        c.display(),
        k.display()
    );
    let config = ok(&text);
    assert_eq!(*config.listeners[0].tls.get_ref(), TlsMode::Starttls);
}

#[test]
fn proxy_protocol_without_proxy_from() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = true\n",
    );
    assert_invalid(
        &text,
        "listener.proxy_from",
        line_of(&text, "proxy_protocol"),
    );
}

#[test]
fn proxy_protocol_with_proxy_from_is_accepted() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = true\nproxy_from = [\"10.0.0.0/8\"]\n",
    );
    let c = ok(&text);
    assert_eq!(
        c.listeners[0].proxy_from,
        vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
    );
}

#[test]
fn proxy_protocol_false_is_fine() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = false\n",
    );
    ok(&text);
}
