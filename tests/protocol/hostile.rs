//! Hostile input: SMTP smuggling, STARTTLS injection, AUTH before TLS, line limits.

use crate::support::postern::{outbox_toml, spawn_postern};
use crate::support::upstream::{FakeUpstream, UpstreamConfig};

use crate::common::*;

// ---------------------------------------------------------------------------------------
// 1. SMTP smuggling

#[tokio::test]
async fn smuggling_end_of_data_variants_are_refused_and_never_relayed() {
    let variants: [(&str, &[u8]); 5] = [
        ("LF.LF", b"\n.\n"),
        ("LF.CRLF", b"\n.\r\n"),
        ("CRLF.LF", b"\r\n.\n"),
        ("CR.CRLF", b"\r.\r\n"),
        ("CRLF.CR", b"\r\n.\r"),
    ];
    for (name, seq) in variants {
        let up = FakeUpstream::start(UpstreamConfig::default()).await;
        let p = spawn_postern(&config("", "", &up.postern_toml(), "")).await;
        up.wait_probe().await;
        let mut c = login(&p).await;

        c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            .await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "354", name).await;
        let mut body = b"Subject: smuggling\r\n\r\nfirst line".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(
            b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.net>\r\nDATA\r\nsmuggled\r\n",
        );
        body.extend_from_slice(b"\r\n.\r\n");
        c.send(&body).await;
        next(&mut c, "554 5.6.0 ", &format!("{name}: end of data")).await;
        nothing_pending(&mut c, &format!("{name}: the smuggling attempt")).await;

        // The upstream transaction was abandoned (connection closed, no final dot).
        up.wait_until(
            &format!("{name}: the abandoned upstream connection to close"),
            WAIT,
            |u| u.closed_connections() >= 2,
        )
        .await;
        assert!(
            up.messages().is_empty(),
            "{name}: a message reached the upstream: {:#?}",
            up.messages()
        );
        assert_eq!(
            mail_commands(&up),
            ["MAIL FROM:<dev@example.com>"],
            "{name}: upstream MAIL commands"
        );
        assert_no_bare_cr_lf(&up.raw(), name);

        // The session is still usable.
        c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            .await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "354", name).await;
        c.send(b"Subject: clean\r\n\r\nclean body\r\n.\r\n").await;
        next(&mut c, "250 ", &format!("{name}: clean message")).await;
        let m = only_message(&up).await;
        assert_eq!(m.mail_from, "MAIL FROM:<dev@example.com>", "{name}");
        assert_eq!(m.rcpts, ["RCPT TO:<rcpt@example.net>"], "{name}");
        assert_eq!(
            m.data, b"Subject: clean\r\n\r\nclean body\r\n",
            "{name}: clean message content"
        );
        let cmds = up.commands();
        assert!(
            !cmds
                .iter()
                .any(|l| l.contains("evil") || l.contains("v@example.net")),
            "{name}: smuggled commands reached the upstream: {cmds:#?}"
        );
        assert_eq!(mail_commands(&up).len(), 2, "{name}: {cmds:#?}");
        assert_no_bare_cr_lf(&up.raw(), name);
        expect(&mut c, "QUIT", "221 ").await;
        p.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. STARTTLS injection

#[tokio::test]
async fn starttls_discards_pipelined_plaintext_and_resets_the_session() {
    let p = spawn_postern(&config("tls = \"starttls\"", "", &outbox_toml(), "")).await;
    let (mut c, ehlo) = connect(&p).await;
    assert!(
        keywords(&ehlo).iter().any(|k| k == "STARTTLS"),
        "STARTTLS not offered before TLS: {ehlo:?}"
    );
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        .await;
    next(&mut c, "220 2.0.0", "STARTTLS").await;
    let mut t = tls_upgrade(c.stream, &p).await;

    // The first thing postern says inside TLS answers what is sent inside TLS.
    // No EHLO since the handshake: MAIL is out of sequence (the session was reset).
    expect(&mut t, "MAIL FROM:<a@example.com>", "503 5.5.1").await;
    expect(&mut t, "NOOP", "250 2.0.0").await;
    nothing_pending(&mut t, "NOOP over TLS").await;

    let ehlo = t.cmd("EHLO client.test").await;
    let kw = keywords(&ehlo);
    assert!(
        !kw.iter().any(|k| k.eq_ignore_ascii_case("STARTTLS")),
        "STARTTLS offered again inside TLS: {ehlo:?}"
    );
    assert!(
        kw.iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "AUTH not offered inside TLS: {ehlo:?}"
    );
    expect(&mut t, "STARTTLS", "503 5.5.1").await;
    expect(
        &mut t,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(&mut t, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut t, "QUIT", "221 ").await;
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. AUTH before TLS

#[tokio::test]
async fn auth_needs_tls_where_plaintext_auth_is_off() {
    let p = spawn_postern(&config(
        "tls = \"starttls\"\nallow_plaintext_auth = false",
        "",
        &outbox_toml(),
        "",
    ))
    .await;
    let (mut c, ehlo) = connect(&p).await;
    let kw = keywords(&ehlo);
    assert!(
        !kw.iter()
            .any(|k| k.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH offered before TLS: {ehlo:?}"
    );
    assert!(kw.iter().any(|k| k == "STARTTLS"), "{ehlo:?}");
    let creds = plain("", "dev", PASSWORD);
    expect(&mut c, &format!("AUTH PLAIN {creds}"), "538 5.7.11").await;
    expect(&mut c, "AUTH LOGIN", "538 5.7.11").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "530 5.7.0").await;

    expect(&mut c, "STARTTLS", "220 2.0.0").await;
    let mut t = tls_upgrade(c.stream, &p).await;
    let ehlo = t.cmd("EHLO client.test").await;
    assert!(
        keywords(&ehlo).iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "AUTH not offered after STARTTLS: {ehlo:?}"
    );
    expect(&mut t, &format!("AUTH PLAIN {creds}"), "235 2.7.0").await;
    expect(&mut t, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut t, "QUIT", "221 ").await;
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Line limits

#[tokio::test]
async fn over_long_and_bare_lf_lines_are_refused_and_the_session_continues() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let (mut c, _) = connect(&p).await;

    // A 600-byte command line.
    let long = format!("NOOP {}", "x".repeat(600 - 5 - 2));
    assert_eq!(long.len() + 2, 600);
    expect(&mut c, &long, "500 5.5.2").await;
    expect(&mut c, "NOOP", "250 ").await;

    // 1 MiB without a line end, in chunks, then CRLF and a NOOP.
    let chunk = vec![b'A'; 64 * 1024];
    for _ in 0..16 {
        c.send(&chunk).await;
    }
    c.send(b"\r\nNOOP\r\n").await;
    next(&mut c, "500 5.5.2", "1 MiB line").await;
    next(&mut c, "250 ", "NOOP after the 1 MiB line").await;
    nothing_pending(&mut c, "the 1 MiB line").await;

    // A command ended by a bare LF.
    c.send(b"NOOP\n").await;
    next(&mut c, "500 5.5.2", "NOOP<LF>").await;
    nothing_pending(&mut c, "NOOP<LF>").await;

    // A SASL response over 12288 bytes.
    expect(&mut c, "AUTH PLAIN", "334").await;
    let huge = "A".repeat(13_000);
    expect(&mut c, &huge, "500 5.5.6").await;
    expect(&mut c, "NOOP", "250 ").await;
    p.stop().await;
}

#[tokio::test]
async fn data_line_over_1000_octets_refuses_the_message() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let mut c = login(&p).await;

    // 999 octets + CRLF = 1001: refused at end of data, not stored.
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 999));
    body.extend_from_slice(b"\r\nafter\r\n.\r\n");
    c.send(&body).await;
    next(&mut c, "500 5.5.2", "end of data after a 1001-octet line").await;
    nothing_pending(&mut c, "the refused message").await;
    assert!(
        p.files("outbox", "eml").is_empty(),
        "refused message stored"
    );

    // 998 octets + CRLF = 1000: accepted, byte-exact.
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'y', 998));
    body.extend_from_slice(b"\r\n");
    let content = body.clone();
    body.extend_from_slice(b".\r\n");
    c.send(&body).await;
    next(&mut c, "250 ", "end of data after a 1000-octet line").await;
    let eml = p.files("outbox", "eml");
    assert_eq!(eml.len(), 1, "{eml:?}");
    assert_eq!(std::fs::read(&eml[0]).expect("read eml"), content);
    p.stop().await;
}
