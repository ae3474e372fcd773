//! Header `From:` rewriting for `rewrite_header_from` (RFC 5322 §3.6.2).
//!
//! The caller collects the header section (up to the empty line, bounded) and
//! hands it here; the body is never buffered. The original `From:` survives as
//! `Reply-To:` when the message has none, so replies still reach the device's
//! owner.

/// Upper bound on a header section postern buffers for rewriting.
pub const MAX_HEADER_SECTION: usize = 256 * 1024;

/// Rewrites the header section `headers` (every line with its CRLF, without
/// the empty line that ends it): each `From:` field (with its folded
/// continuation lines) is replaced by `From: <new_from>`, and a `Reply-To:`
/// carrying the original `From:` value is added when there is none.
pub fn rewrite_from(headers: &[u8], new_from: &str) -> Vec<u8> {
    let mut fields: Vec<&[u8]> = Vec::new();
    // Split into fields: a line starting with SP/HT continues the previous field.
    let mut start = 0;
    let mut i = 0;
    while i < headers.len() {
        let end = headers[i..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| i + p + 2)
            .unwrap_or(headers.len());
        let continues = matches!(headers.get(end), Some(b' ' | b'\t'));
        if !continues {
            fields.push(&headers[start..end]);
            start = end;
        }
        i = end;
    }
    if start < headers.len() {
        fields.push(&headers[start..]);
    }

    let has_name =
        |f: &[u8], name: &[u8]| f.len() > name.len() && f[..name.len()].eq_ignore_ascii_case(name);
    let has_reply_to = fields.iter().any(|f| has_name(f, b"reply-to:"));
    let mut original: Option<&[u8]> = None;
    let mut out = Vec::with_capacity(headers.len() + new_from.len() + 16);
    for field in &fields {
        if has_name(field, b"from:") {
            original.get_or_insert(&field[5..]);
            out.extend_from_slice(b"From: <");
            out.extend_from_slice(new_from.as_bytes());
            out.extend_from_slice(b">\r\n");
        } else {
            out.extend_from_slice(field);
        }
    }
    if let (Some(value), false) = (original, has_reply_to) {
        out.extend_from_slice(b"Reply-To:");
        out.extend_from_slice(value);
        if !value.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if original.is_none() {
        out.extend_from_slice(b"From: <");
        out.extend_from_slice(new_from.as_bytes());
        out.extend_from_slice(b">\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_table() {
        let rows: &[(&str, &str)] = &[
            (
                "From: Scanner <scan@dev.lan>\r\nSubject: hi\r\n",
                "From: <noreply@x.com>\r\nSubject: hi\r\nReply-To: Scanner <scan@dev.lan>\r\n",
            ),
            (
                "Subject: a\r\nFROM:\r\n  folded <f@dev.lan>\r\nReply-To: r@dev.lan\r\n",
                "Subject: a\r\nFrom: <noreply@x.com>\r\nReply-To: r@dev.lan\r\n",
            ),
            (
                "Subject: none\r\n",
                "Subject: none\r\nFrom: <noreply@x.com>\r\n",
            ),
            (
                "From-Extra: keep\r\nFrom: a@b\r\n",
                "From-Extra: keep\r\nFrom: <noreply@x.com>\r\nReply-To: a@b\r\n",
            ),
        ];
        for (input, want) in rows {
            let got = rewrite_from(input.as_bytes(), "noreply@x.com");
            assert_eq!(String::from_utf8_lossy(&got), *want, "input {input:?}");
        }
    }
}
