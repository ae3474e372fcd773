//! The header `From:` rewriter over arbitrary header sections: no panic; the
//! output has exactly one field that a lenient reader would take for `From:`,
//! the rewritten one; at most one `Reply-To:` is added, and only when there
//! was none; every other field passes through unchanged and in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::header::{fields, is_field, rewrite_from};

const NEW: &str = "noreply@mail.example.com";

fuzz_target!(|headers: &[u8]| {
    let out = rewrite_from(headers, NEW);
    let out_fields = fields(&out);
    let froms: Vec<&&[u8]> = out_fields.iter().filter(|f| is_field(f, "from")).collect();
    assert_eq!(
        froms.len(),
        1,
        "From fields in {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(*froms[0], format!("From: <{NEW}>\r\n").as_bytes());
    assert!(out_fields.iter().all(|f| f.ends_with(b"\r\n")));

    let in_fields = fields(headers);
    let reply_to = |fs: &[&[u8]]| fs.iter().filter(|f| is_field(f, "reply-to")).count();
    let added = reply_to(&out_fields) - reply_to(&in_fields);
    assert!(added <= 1);
    if added == 1 {
        assert_eq!(reply_to(&in_fields), 0);
    }
    // Everything that is neither From nor an added Reply-To is kept, in order.
    let kept_in: Vec<&[u8]> = in_fields
        .iter()
        .filter(|f| !is_field(f, "from"))
        .map(|f| f.strip_suffix(b"\r\n").unwrap_or(f))
        .collect();
    let mut kept_out: Vec<&[u8]> = out_fields
        .iter()
        .filter(|f| !is_field(f, "from"))
        .map(|f| f.strip_suffix(b"\r\n").unwrap_or(f))
        .collect();
    if added == 1 {
        kept_out.pop();
    }
    assert_eq!(kept_in, kept_out);
});
