//! The log formats (`[server] log_format`): one line per event either way.
//!
//! - `text`: `LEVEL target: message key=value ...`; string values are quoted
//!   and escaped (`user="printer-2f"`), numbers bare, so a parser can split
//!   on spaces outside quotes.
//! - `json`: one JSON object per line; the event's fields are top-level keys
//!   (`{"timestamp":…,"level":"INFO","message":"transaction","id":…,"user":…}`),
//!   the connection's span (`listener`, `peer`) under `span`.
//!
//! `RUST_LOG` overrides the `info` default filter.

use tracing_subscriber::fmt::MakeWriter;

mod fields;

use crate::config::LogFormat;

/// The subscriber postern logs with, writing to `writer` (stderr in `main`;
/// a buffer in tests, so they check the real format).
pub fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(
            builder
                .with_ansi(ansi)
                .fmt_fields(fields::TextFields::default())
                .finish(),
        ),
    }
}

/// Installs the process-wide subscriber on stderr (colour only on a terminal).
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stderr, ansi));
}
