//! Table tests for the `From:` rewriter: every shape of `From:` a device may
//! send leaves as exactly one rewritten `From:`.

use super::*;

const NEW: &str = "noreply@x.com";

#[test]
fn rewrite_table() {
    let rows: &[(&str, &str, &str)] = &[
        (
            "plain From, no Reply-To",
            "From: Scanner <scan@dev.lan>\r\nSubject: hi\r\n",
            "From: <noreply@x.com>\r\nSubject: hi\r\nReply-To: Scanner <scan@dev.lan>\r\n",
        ),
        (
            "folded, upper case, existing Reply-To kept",
            "Subject: a\r\nFROM:\r\n  folded <f@dev.lan>\r\nReply-To: r@dev.lan\r\n",
            "Subject: a\r\nFrom: <noreply@x.com>\r\nReply-To: r@dev.lan\r\n",
        ),
        (
            "no From at all",
            "Subject: none\r\n",
            "Subject: none\r\nFrom: <noreply@x.com>\r\n",
        ),
        (
            "a longer name starting with From is another field",
            "From-Extra: keep\r\nFrom: a@b\r\n",
            "From-Extra: keep\r\nFrom: <noreply@x.com>\r\nReply-To: a@b\r\n",
        ),
        (
            "space before the colon",
            "From : Scanner <scan@dev.lan>\r\nSubject: hi\r\n",
            "From: <noreply@x.com>\r\nSubject: hi\r\nReply-To: Scanner <scan@dev.lan>\r\n",
        ),
        (
            "tab before the colon, mixed case",
            "Subject: hi\r\nfRoM\t: a@dev.lan\r\n",
            "Subject: hi\r\nFrom: <noreply@x.com>\r\nReply-To: a@dev.lan\r\n",
        ),
        (
            "two From fields: one leaves, the first original goes to Reply-To",
            "From: first@dev.lan\r\nSubject: s\r\nFrom: second@dev.lan\r\n",
            "From: <noreply@x.com>\r\nSubject: s\r\nReply-To: first@dev.lan\r\n",
        ),
        (
            "three From fields of three shapes, one folded",
            "from: a@dev.lan\r\nFROM :\r\n\tb@dev.lan\r\nTo: t@x\r\nFrom:c@dev.lan\r\n",
            "From: <noreply@x.com>\r\nTo: t@x\r\nReply-To: a@dev.lan\r\n",
        ),
        (
            "folded From value keeps its folding in Reply-To",
            "From: Scanner\r\n <scan@dev.lan>\r\nSubject: hi\r\n",
            "From: <noreply@x.com>\r\nSubject: hi\r\nReply-To: Scanner\r\n <scan@dev.lan>\r\n",
        ),
        (
            "Reply-To in another case and with a space is still a Reply-To",
            "REPLY-TO : r@dev.lan\r\nFrom: a@dev.lan\r\n",
            "REPLY-TO : r@dev.lan\r\nFrom: <noreply@x.com>\r\n",
        ),
        (
            "an empty From value gives no empty Reply-To",
            "From:   \r\nSubject: s\r\n",
            "From: <noreply@x.com>\r\nSubject: s\r\n",
        ),
        (
            "a From line indented at the very start is still a From",
            " From: a@dev.lan\r\nSubject: s\r\n",
            "From: <noreply@x.com>\r\nSubject: s\r\nReply-To: a@dev.lan\r\n",
        ),
        (
            "a last line without CRLF gets one",
            "Subject: s\r\nFrom: a@dev.lan",
            "Subject: s\r\nFrom: <noreply@x.com>\r\nReply-To: a@dev.lan\r\n",
        ),
        (
            "a line without a colon passes untouched",
            "From a@dev.lan Mon Dec  1 10:00:00 2026\r\nSubject: s\r\n",
            "From a@dev.lan Mon Dec  1 10:00:00 2026\r\nSubject: s\r\nFrom: <noreply@x.com>\r\n",
        ),
        (
            "Resent-From is not From",
            "Resent-From: r@dev.lan\r\n",
            "Resent-From: r@dev.lan\r\nFrom: <noreply@x.com>\r\n",
        ),
        ("empty header section", "", "From: <noreply@x.com>\r\n"),
    ];
    for (what, input, want) in rows {
        let got = rewrite_from(input.as_bytes(), NEW);
        assert_eq!(String::from_utf8_lossy(&got), *want, "{what}: {input:?}");
        assert_eq!(from_fields(&got), 1, "{what}: {input:?}");
    }
}

/// How many fields of `headers` a lenient reader would take for `From:`.
fn from_fields(headers: &[u8]) -> usize {
    fields(headers)
        .iter()
        .filter(|f| is_field(f, "from"))
        .count()
}

#[test]
fn field_splitting_table() {
    let rows: &[(&[u8], &[&[u8]])] = &[
        (b"", &[]),
        (b"A: 1\r\n", &[b"A: 1\r\n"]),
        (b"A: 1\r\n 2\r\nB: 3\r\n", &[b"A: 1\r\n 2\r\n", b"B: 3\r\n"]),
        (b"A: 1\r\n\t2\r\n\t3\r\n", &[b"A: 1\r\n\t2\r\n\t3\r\n"]),
        (b"A: 1\r\nB", &[b"A: 1\r\n", b"B"]),
        (b"A: 1\r\n x", &[b"A: 1\r\n x"]),
    ];
    for (input, want) in rows {
        assert_eq!(fields(input), *want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn field_names_table() {
    assert!(is_field(b"From: a\r\n", "from"));
    assert!(is_field(b"from :a\r\n", "from"));
    assert!(is_field(b"FROM\t\t: a\r\n", "from"));
    assert!(!is_field(b"From-X: a\r\n", "from"));
    assert!(!is_field(b"X-From: a\r\n", "from"));
    assert!(!is_field(b"From a\r\n", "from"));
    assert!(!is_field(b"Fro m: a\r\n", "from"));
}
