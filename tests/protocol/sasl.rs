//! SASL edge cases: cancel, bad base64, initial responses, identities, failures.

use crate::support::postern::{Raw, outbox_toml, spawn_postern};

use crate::common::*;

// ---------------------------------------------------------------------------------------
// 5. SASL edge cases

/// A config with the normal listener and an `auth = "optional"` one ("lan"), where
/// user "lan" may send from 127.0.0.1 without AUTH.
fn sasl_config() -> String {
    config(
        "",
        "",
        &outbox_toml(),
        r#"
[[user]]
name = "lan"
networks = ["127.0.0.1/32"]
allowed_senders = ["*@example.com"]
"#,
    )
    .replacen(
        "[tls]",
        "[[listener]]\nname = \"lan\"\naddr = \"127.0.0.1:0\"\nauth = \"optional\"\n\n[tls]",
        1,
    )
}

#[tokio::test]
async fn sasl_cancel_and_bad_base64() {
    let p = spawn_postern(&sasl_config()).await;
    let good = format!("AUTH PLAIN {}", plain("", "dev", PASSWORD));

    // PLAIN, then '*' at the prompt: cancelled; not a failure, AUTH still works.
    let (mut c, _) = connect(&p).await;
    let r = expect(&mut c, "AUTH PLAIN", "334").await;
    assert!(r == "334" || r == "334 ", "PLAIN challenge {r:?}");
    expect(&mut c, "*", "501 ").await;
    expect(&mut c, &good, "235 2.7.0").await;

    // Bad base64 at the prompt and as the initial response.
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "AUTH PLAIN", "334").await;
    expect(&mut c, "not base64!", "501 5.5.2").await;
    // Base64 alphabet, but the padding is missing.
    expect(&mut c, "AUTH PLAIN AGRldgBwdw", "501 5.5.2").await;
    expect(&mut c, &good, "235 2.7.0").await;

    // LOGIN, '*' at the user-name prompt and at the password prompt.
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    expect(&mut c, "*", "501 ").await;
    expect(&mut c, "AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    expect(&mut c, &b64("dev"), "334 UGFzc3dvcmQ6").await;
    expect(&mut c, "*", "501 ").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "530 5.7.0").await;
    p.stop().await;
}

#[tokio::test]
async fn sasl_login_initial_response_twice_and_in_transaction() {
    let p = spawn_postern(&sasl_config()).await;

    // LOGIN with the user name as initial response, then AUTH again.
    let (mut c, _) = connect(&p).await;
    expect(
        &mut c,
        &format!("AUTH LOGIN {}", b64("dev")),
        "334 UGFzc3dvcmQ6",
    )
    .await;
    expect(&mut c, &b64(PASSWORD), "235 2.7.0").await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "503 5.5.1",
    )
    .await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;

    // AUTH inside a transaction (opened without AUTH on the trusted-network listener).
    let mut c = Raw::connect(p.addr("lan")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250-"));
    expect(&mut c, "MAIL FROM:<lan@example.com>", "250 ").await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "503 5.5.1",
    )
    .await;
    expect(&mut c, "RSET", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;
    p.stop().await;
}

#[tokio::test]
async fn sasl_identity_mechanism_and_pipelining_edges() {
    let p = spawn_postern(&sasl_config()).await;

    // authzid different from authcid: no impersonation. Equal: fine.
    let (mut c, _) = connect(&p).await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("lan", "dev", PASSWORD)),
        "535 5.7.8",
    )
    .await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("dev", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;

    // Unknown mechanism.
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "AUTH CRAM-MD5", "504 5.5.4").await;

    // While a SASL exchange is open, the next line is a response, not a command.
    let (mut c, _) = connect(&p).await;
    c.send(b"AUTH LOGIN\r\nMAIL FROM:<a@example.com>\r\n").await;
    next(&mut c, "334 VXNlcm5hbWU6", "AUTH LOGIN").await;
    next(&mut c, "501 5.5.2", "MAIL line read as a SASL response").await;
    nothing_pending(&mut c, "pipelined AUTH LOGIN + MAIL").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "530 5.7.0").await;
    p.stop().await;
}

#[tokio::test]
async fn sasl_failures_look_alike_and_three_close_the_session() {
    let p = spawn_postern(&sasl_config()).await;

    // Wrong password and unknown user: the same reply, word for word.
    let (mut c, _) = connect(&p).await;
    let wrong = expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", "wrong-password")),
        "535 5.7.8 ",
    )
    .await;
    let unknown = expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "nobody", PASSWORD)),
        "535 5.7.8 ",
    )
    .await;
    assert_eq!(
        wrong, unknown,
        "unknown user distinguishable from wrong password"
    );

    // Three failures: 421 and close.
    let (mut c, _) = connect(&p).await;
    for i in 1..=2 {
        expect(
            &mut c,
            &format!("AUTH PLAIN {}", plain("", "dev", &format!("bad{i}"))),
            "535 5.7.8",
        )
        .await;
    }
    c.send(format!("AUTH PLAIN {}\r\n", plain("", "dev", "bad3")).as_bytes())
        .await;
    let mut replies = Vec::new();
    loop {
        let r = c.reply().await;
        let done = r.starts_with("421");
        replies.push(r);
        if done || replies.len() > 2 {
            break;
        }
    }
    let (last, before) = replies.split_last().expect("a reply");
    check(last, "421 4.7.0", "third failed AUTH");
    assert!(
        before.iter().all(|r| r.starts_with("535 5.7.8")) && before.len() <= 1,
        "third failed AUTH: replies {replies:?}"
    );
    assert!(c.closed().await, "connection still open after 421");
    p.stop().await;
}
