//! The listener certificate across reloads: read `[tls]` again on SIGHUP and
//! swap it in, or keep the running one and say why.

use crate::config::{Config, TlsMode};
use crate::metrics::{Metrics, unix_now};
use crate::tls::server::ServerCerts;

/// Sets `postern_tls_certificate_expiry_timestamp_seconds` for every TLS listener.
pub(super) fn set_certificate_expiry(metrics: &Metrics, config: &Config, not_after: i64) {
    for l in config
        .listeners
        .iter()
        .filter(|l| *l.tls.get_ref() != TlsMode::None)
    {
        metrics
            .tls_certificate_expiry
            .with_label_values(&[l.name.get_ref().as_str()])
            .set(not_after);
    }
}

/// Reads `config`'s `[tls] cert` and `key` into `certs` for handshakes from
/// now on. A certificate that has expired (or a pair that changed since the
/// config was validated and no longer loads) is refused: the running
/// certificate stays, the reason is logged, and
/// `postern_tls_certificate_reloads_total{result="error"}` counts it; the rest
/// of the reload goes ahead. A pair that does not load when the file is read
/// fails the whole reload (`Reloader::reload_file`), and is counted here too.
pub(super) fn reload(certs: &ServerCerts, config: &Config, metrics: &Metrics) {
    let Some(t) = &config.tls else {
        return;
    };
    let (cert, key) = (t.cert.get_ref(), t.key.get_ref());
    let loaded = crate::tls::load_server_cert(cert, key)
        .map_err(|e| e.to_string())
        .and_then(|l| match l.unfit_at(unix_now()) {
            Some(why) => Err(format!("{}: {why}", cert.display())),
            None => Ok(l),
        });
    match loaded {
        Ok(l) => {
            set_certificate_expiry(metrics, config, l.not_after);
            tracing::info!(
                cert = %cert.display(),
                not_after = %crate::tls::cert::utc_date(l.not_after),
                "listener certificate reloaded"
            );
            certs.replace(l);
            metrics
                .tls_certificate_reloads
                .with_label_values(&["ok"])
                .inc();
        }
        Err(why) => refused(metrics, &why),
    }
}

/// Logs and counts a certificate that was not taken.
pub(super) fn refused(metrics: &Metrics, why: &str) {
    tracing::error!("listener certificate not reloaded, the running one stays: {why}");
    metrics
        .tls_certificate_reloads
        .with_label_values(&["error"])
        .inc();
}
