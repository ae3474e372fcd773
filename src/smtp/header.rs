//! Header `From:` rewriting for `rewrite_header_from` (RFC 5322 §3.6.2).
//!
//! The caller collects the header section (up to the empty line, bounded by
//! `MAX_HEADER_SECTION`) and hands it here; the body is never buffered. A
//! message leaves with exactly one `From:`, the rewritten one, whatever the
//! device sent: none, several, folded, in any case, or with white space before
//! the colon (`From :`, the obsolete syntax of RFC 5322 §4.5). The device's
//! first `From:` survives as `Reply-To:` when the message has none, so replies
//! still reach the device's owner.
//!
//! A field is recognised the way the most lenient reader would see it: its
//! name is what precedes the first colon, with surrounding white space
//! removed, compared without case. So nothing a downstream parser could take
//! for a second `From:` is left in place.

/// Upper bound on a header section postern buffers for rewriting.
pub const MAX_HEADER_SECTION: usize = 256 * 1024;

/// Splits a header section into fields: a line that starts with SP or HT
/// continues the field before it (folding, RFC 5322 §2.2.3). Lines end at
/// CRLF; each field keeps its line ends. A last line without CRLF is a field
/// of its own (or the end of the one it continues).
pub fn fields(headers: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < headers.len() {
        let end = memchr::memmem::find(&headers[i..], b"\r\n").map_or(headers.len(), |p| i + p + 2);
        if !matches!(headers.get(end), Some(b' ' | b'\t')) {
            fields.push(&headers[start..end]);
            start = end;
        }
        i = end;
    }
    fields
}

/// The name and the value of a field, if it has a colon: the name without
/// surrounding white space, the value everything after the colon.
pub fn split_field(field: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', field)?;
    let name = field[..colon].trim_ascii();
    Some((name, &field[colon + 1..]))
}

/// True if `field` is a `name` field (case-insensitive, white space around
/// the name ignored).
pub fn is_field(field: &[u8], name: &str) -> bool {
    split_field(field).is_some_and(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// Rewrites the header section `headers` (every line with its CRLF, without
/// the empty line that ends it). The first `From:` field (with its folded
/// continuation lines) is replaced by `From: <new_from>`, every other `From:`
/// is dropped, and a `Reply-To:` carrying the first original `From:` value is
/// added at the end when the message has none and that value is not blank.
/// With no `From:` at all, one is added at the end. Every field of the output
/// ends with CRLF.
pub fn rewrite_from(headers: &[u8], new_from: &str) -> Vec<u8> {
    let fields = fields(headers);
    let has_reply_to = fields.iter().any(|f| is_field(f, "reply-to"));
    let mut original: Option<&[u8]> = None;
    let mut out = Vec::with_capacity(headers.len() + 2 * new_from.len() + 32);
    let push_from = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"From: <");
        out.extend_from_slice(new_from.as_bytes());
        out.extend_from_slice(b">\r\n");
    };
    for field in &fields {
        match split_field(field) {
            Some((name, value)) if name.eq_ignore_ascii_case(b"from") => {
                if original.is_none() {
                    original = Some(value);
                    push_from(&mut out);
                }
            }
            _ => {
                out.extend_from_slice(field);
                if !field.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    match original {
        None => push_from(&mut out),
        Some(value) if !has_reply_to && !value.trim_ascii().is_empty() => {
            out.extend_from_slice(b"Reply-To:");
            out.extend_from_slice(value);
            if !value.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        Some(_) => {}
    }
    out
}

#[cfg(test)]
mod tests;
