//! The text format's fields, written without tracing-subscriber's per-field
//! styling when the output has no colour.
//!
//! The default field formatter paints every field name and `=` through
//! `nu_ansi_term` even when colour is off, and writes a `&str` with `{:?}`,
//! which escapes it character by character. Callgrind put the transaction
//! line at a sixth of a plain 2 KB message's instructions, most of it there.
//! [`TextFields`] writes the same bytes: `name=value`, separated by spaces,
//! a string quoted as `{:?}` would quote it. A string with any character
//! that `{:?}` would escape (anything outside printable ASCII, `"` and `\`),
//! the `message`, errors and everything else are handed to the default
//! visitor, so their output is the default's by construction.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};

/// Field formatter for the text format (see the module note).
#[derive(Debug, Default)]
pub struct TextFields {
    default: DefaultFields,
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return self.default.format_fields(writer, fields);
        }
        let mut v = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

/// Whether `{:?}` writes `s` unchanged between its quotes.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl PlainVisitor<'_> {
    /// A name the default visitor treats specially (or skips).
    fn special(name: &str) -> bool {
        name == "message" || name.starts_with("r#") || name.starts_with("log.")
    }

    /// The default visitor's output for one field, padded as it would be.
    fn by_default(&mut self, f: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut d = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        f(&mut d);
        self.result = tracing_subscriber::field::VisitOutput::finish(d);
        // `log.` fields are skipped by the default visitor and add nothing.
        self.is_empty = false;
    }

    fn write_name(&mut self, field: &Field) -> fmt::Result {
        if !self.is_empty {
            self.writer.write_char(' ')?;
        }
        self.is_empty = false;
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if Self::special(field.name()) || !plain(value) {
            return self.by_default(|d| d.record_str(field, value));
        }
        self.result = self.write_name(field).and_then(|()| {
            self.writer.write_char('"')?;
            self.writer.write_str(value)?;
            self.writer.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_err() {
            return;
        }
        if Self::special(field.name()) {
            return self.by_default(|d| d.record_u64(field, value));
        }
        self.result = self
            .write_name(field)
            .and_then(|()| write!(self.writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_err() {
            return;
        }
        if Self::special(field.name()) {
            return self.by_default(|d| d.record_bool(field, value));
        }
        self.result = self
            .write_name(field)
            .and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.by_default(|d| d.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.by_default(|d| d.record_debug(field, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same events through the default formatter and through
    /// `TextFields`: byte for byte the same lines.
    #[test]
    fn same_bytes_as_the_default_fields() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        fn emit() {
            let span = tracing::info_span!("connection", listener = "plain", peer = "127.0.0.1:5");
            let _g = span.enter();
            let err = std::io::Error::other("boom");
            tracing::info!(
                id = "abc",
                user = "printer-2f",
                quote = "a\"b",
                back = "a\\b",
                tab = "a\tb",
                uni = "café ✓",
                apostrophe = "it's",
                empty = "",
                n = 42u64,
                neg = -3i64,
                ok = true,
                none = Option::<&str>::None,
                some = Some("x"),
                r#type = "raw",
                error = &err as &(dyn std::error::Error + 'static),
                "transaction {}",
                "done"
            );
        }
        let run = |ours: bool| {
            let buf = Buf::default();
            let w = buf.clone();
            let b = tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .without_time();
            let sub: Box<dyn tracing::Subscriber + Send + Sync> = if ours {
                Box::new(b.fmt_fields(TextFields::default()).finish())
            } else {
                Box::new(b.finish())
            };
            tracing::subscriber::with_default(sub, emit);
            String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
        };
        let (default, ours) = (run(false), run(true));
        assert!(default.contains("user=\"printer-2f\""), "{default}");
        assert_eq!(ours, default);
    }
}
