//! Prometheus metrics: one `Metrics` struct registered into a registry that is
//! passed in (no globals). The fixed label words, and the series created at 0
//! from the config, are in `labels`; the HTTP endpoint serving `/metrics`,
//! `/healthz` and `/readyz` is in `http`.

mod http;
mod labels;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub use http::{ReadyCheck, render, serve};
pub use labels::{
    AUTH_CACHE_RESULTS, AUTH_MECHANISMS, AUTH_RESULTS, NONE, PROXY_REJECT_REASONS, REJECT_REASONS,
    RELOAD_RESULTS, REPLY_CLASSES, SERVER_LIMITS, TLS_RESULTS, TLS_VERSIONS, UPSTREAM_COMMANDS,
    UPSTREAM_LIMIT, UPSTREAM_QUOTAS, USER_LIMITS,
};

/// Every metric postern exports.
#[derive(Clone)]
pub struct Metrics {
    pub connections_opened: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub connections_rejected: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub auth_attempts: IntCounterVec,
    /// Password checks answered from the verified-credential cache (`hit`) or by the hash (`miss`).
    pub auth_cache: IntCounterVec,
    /// Password checks running or waiting for a worker (`[server] auth_workers`, `auth_queue`).
    pub auth_checks_queued: IntGauge,
    pub messages: IntCounterVec,
    pub recipients: IntCounterVec,
    pub message_bytes: IntCounterVec,
    pub upstream_connections_opened: IntCounterVec,
    pub upstream_connections_failed: IntCounterVec,
    pub upstream_connections_active: IntGaugeVec,
    pub upstream_connections_idle: IntGaugeVec,
    pub upstream_replies: IntCounterVec,
    pub upstream_command_duration: HistogramVec,
    pub relay_duration: HistogramVec,
    pub limit_hits: IntCounterVec,
    pub config_reloads: IntCounterVec,
    /// Listener certificate reloads (SIGHUP) by result.
    pub tls_certificate_reloads: IntCounterVec,
    // --- Health and readiness (issue 6) ---
    /// 1, labelled with the crate version.
    pub build_info: IntGaugeVec,
    /// 1 after a successful set-up (probe or traffic), 0 before the first and after a failed one.
    pub upstream_up: IntGaugeVec,
    /// When an upstream last accepted postern's credentials (Unix seconds).
    pub upstream_last_auth_success: IntGaugeVec,
    /// Health probes by result; kept apart from the traffic families.
    pub upstream_health_checks: IntCounterVec,
    /// TCP + TLS + greeting + EHLO + AUTH of traffic connections.
    pub upstream_connection_setup_duration: HistogramVec,
    /// The pool's cap (`max_connections`).
    pub upstream_pool_max: IntGaugeVec,
    /// Connections taken from a `fallback` upstream because `upstream` could
    /// not be set up, by `upstream` and `fallback`.
    pub upstream_failovers: IntCounterVec,
    /// Pool slots taken (checked out, or held by a probe).
    pub upstream_pool_in_use: IntGaugeVec,
    /// Sessions waiting for a free slot now.
    pub upstream_pool_waiters: IntGaugeVec,
    /// How long sessions waited for a slot (timeouts included).
    pub upstream_pool_wait_duration: HistogramVec,
    /// 1 when the last reload (or the start) succeeded, 0 after a failed one.
    pub config_last_reload_success: IntGauge,
    /// When the configuration was last loaded successfully (Unix seconds).
    pub config_last_reload_success_timestamp: IntGauge,
    /// The `notAfter` of the certificate each TLS listener presents (Unix seconds).
    pub tls_certificate_expiry: IntGaugeVec,
    /// Client TLS sessions by the protocol version negotiated.
    pub tls_versions: IntCounterVec,
    // --- OAuth2 toward providers (issue 11) ---
    /// Token endpoint requests by `upstream` and `result` (`ok`, `error`).
    pub oauth2_token_fetches: IntCounterVec,
    /// The spool's families (issue 12), defined in `spool/metrics.rs`.
    pub spool: crate::spool::SpoolMetrics,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn plain_gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

/// SMTP latency buckets (seconds): 5 ms up to the 300 s command timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// End-of-data buckets: the latency ones and the 600 s final-dot timeout.
pub const RELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Metrics {
    /// Creates every metric and registers it into `r` (which should carry the `postern` prefix).
    ///
    /// # Errors
    /// If a name is registered twice in `r`.
    pub fn register(r: &Registry) -> prometheus::Result<Metrics> {
        let latency = LATENCY_BUCKETS.to_vec();
        let m = Metrics {
            connections_opened: counter(
                r,
                "connections_opened_total",
                "Client connections accepted",
                &["listener"],
            )?,
            connections_active: gauge(
                r,
                "connections_active",
                "Client connections open now",
                &["listener"],
            )?,
            connections_rejected: counter(
                r,
                "connections_rejected_total",
                "Client connections refused, by reason",
                &["listener", "reason"],
            )?,
            tls_handshakes: counter(
                r,
                "tls_handshakes_total",
                "Client TLS handshakes (STARTTLS and implicit), by result",
                &["listener", "result"],
            )?,
            auth_attempts: counter(
                r,
                "auth_attempts_total",
                "Client AUTH attempts by mechanism and result",
                &["mechanism", "result"],
            )?,
            auth_cache: counter(
                r,
                "auth_cache_total",
                "Password checks answered from the cache of recent successes (hit) or by the password hash (miss)",
                &["result"],
            )?,
            auth_checks_queued: plain_gauge(
                r,
                "auth_checks_queued",
                "Password checks running or waiting for a worker; at auth_workers + auth_queue an AUTH gets 454 unchecked",
            )?,
            messages: counter(
                r,
                "messages_total",
                "Mail transactions by user and outcome (one count per transaction)",
                &["user", "result"],
            )?,
            recipients: counter(
                r,
                "recipients_total",
                "RCPT commands by user and outcome",
                &["user", "result"],
            )?,
            message_bytes: counter(
                r,
                "message_bytes_total",
                "Message bytes accepted by the upstream, by user",
                &["user"],
            )?,
            upstream_connections_opened: counter(
                r,
                "upstream_connections_opened_total",
                "Upstream connections established for traffic (connected, TLS, authenticated)",
                &["upstream"],
            )?,
            upstream_connections_failed: counter(
                r,
                "upstream_connections_failed_total",
                "Upstream connection failures for traffic, by stage",
                &["upstream", "stage"],
            )?,
            upstream_connections_active: gauge(
                r,
                "upstream_connections_active",
                "Upstream connections open now (health probes included: they count against the cap)",
                &["upstream"],
            )?,
            upstream_connections_idle: gauge(
                r,
                "upstream_connections_idle",
                "Upstream connections waiting in the pool",
                &["upstream"],
            )?,
            upstream_replies: counter(
                r,
                "upstream_replies_total",
                "Upstream replies to traffic by command and class (2xx, 3xx, 4xx, 5xx)",
                &["upstream", "command", "class"],
            )?,
            upstream_command_duration: histogram(
                r,
                "upstream_command_duration_seconds",
                "Time from sending an upstream command to its reply (traffic only)",
                &["upstream", "command"],
                latency.clone(),
            )?,
            relay_duration: histogram(
                r,
                "message_relay_duration_seconds",
                "Time from the client's end-of-data to the upstream's final reply",
                &["upstream"],
                RELAY_BUCKETS.to_vec(),
            )?,
            limit_hits: counter(
                r,
                "limit_hits_total",
                "Requests refused by a limit, with the user (or -) and upstream (or -) it hit",
                &["limit", "user", "upstream"],
            )?,
            config_reloads: counter(
                r,
                "config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            )?,
            tls_certificate_reloads: counter(
                r,
                "tls_certificate_reloads_total",
                "Listener certificate reloads by result (error: the old certificate stays)",
                &["result"],
            )?,
            build_info: gauge(r, "build_info", "postern's version; always 1", &["version"])?,
            upstream_up: gauge(
                r,
                "upstream_up",
                "1 when the upstream's last connection set-up (health probe or traffic) succeeded",
                &["upstream"],
            )?,
            upstream_last_auth_success: gauge(
                r,
                "upstream_last_auth_success_timestamp_seconds",
                "When the upstream last accepted postern's credentials (Unix time)",
                &["upstream"],
            )?,
            upstream_health_checks: counter(
                r,
                "upstream_health_checks_total",
                "Health probes (EHLO, AUTH, QUIT) by result: ok or the stage that failed",
                &["upstream", "result"],
            )?,
            upstream_connection_setup_duration: histogram(
                r,
                "upstream_connection_setup_duration_seconds",
                "TCP, TLS, greeting, EHLO and AUTH of a new traffic connection",
                &["upstream"],
                latency.clone(),
            )?,
            upstream_pool_max: gauge(
                r,
                "upstream_pool_max_connections",
                "The pool's cap (max_connections)",
                &["upstream"],
            )?,
            upstream_failovers: counter(
                r,
                "upstream_failovers_total",
                "Connections taken from a fallback upstream because the upstream could not be set up",
                &["upstream", "fallback"],
            )?,
            upstream_pool_in_use: gauge(
                r,
                "upstream_pool_connections_in_use",
                "Pool slots taken now (by sessions or a health probe)",
                &["upstream"],
            )?,
            upstream_pool_waiters: gauge(
                r,
                "upstream_pool_waiters",
                "Sessions waiting for a free upstream connection now",
                &["upstream"],
            )?,
            upstream_pool_wait_duration: histogram(
                r,
                "upstream_pool_wait_seconds",
                "How long sessions waited for an upstream connection (timeouts included)",
                &["upstream"],
                latency,
            )?,
            config_last_reload_success: plain_gauge(
                r,
                "config_last_reload_success",
                "1 when the last configuration load (start or reload) succeeded, 0 after a failed reload",
            )?,
            config_last_reload_success_timestamp: plain_gauge(
                r,
                "config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully (Unix time)",
            )?,
            tls_certificate_expiry: gauge(
                r,
                "tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate a TLS listener presents (Unix time)",
                &["listener"],
            )?,
            tls_versions: counter(
                r,
                "tls_sessions_total",
                "Client TLS handshakes that succeeded, by protocol version",
                &["listener", "version"],
            )?,
            // --- OAuth2 toward providers (issue 11) ---
            oauth2_token_fetches: counter(
                r,
                "oauth2_token_fetches_total",
                "OAuth2 token endpoint requests by upstream and result",
                &["upstream", "result"],
            )?,
            spool: crate::spool::SpoolMetrics::register(r)?,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.config_last_reload_success.set(1);
        m.config_last_reload_success_timestamp.set(unix_now());
        Ok(m)
    }

    /// Counts one limit hit. `user` and `upstream` are `NONE` where they do not apply.
    pub fn limit_hit(&self, limit: &str, user: &str, upstream: &str) {
        self.limit_hits
            .with_label_values(&[limit, user, upstream])
            .inc();
    }

    /// Records the outcome of a configuration load (start or reload).
    pub fn reload_result(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.config_last_reload_success.set(i64::from(ok));
        if ok {
            self.config_last_reload_success_timestamp.set(unix_now());
        }
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.connections_opened,
            &self.connections_active,
            &self.connections_rejected,
            &self.tls_handshakes,
            &self.auth_attempts,
            &self.auth_cache,
            &self.auth_checks_queued,
            &self.messages,
            &self.recipients,
            &self.message_bytes,
            &self.upstream_connections_opened,
            &self.upstream_connections_failed,
            &self.upstream_connections_active,
            &self.upstream_connections_idle,
            &self.upstream_replies,
            &self.upstream_command_duration,
            &self.relay_duration,
            &self.limit_hits,
            &self.config_reloads,
            &self.tls_certificate_reloads,
            // issue 6
            &self.build_info,
            &self.upstream_up,
            &self.upstream_last_auth_success,
            &self.upstream_health_checks,
            &self.upstream_connection_setup_duration,
            &self.upstream_pool_max,
            &self.upstream_failovers,
            &self.upstream_pool_in_use,
            &self.upstream_pool_waiters,
            &self.upstream_pool_wait_duration,
            &self.config_last_reload_success,
            &self.config_last_reload_success_timestamp,
            &self.tls_certificate_expiry,
            &self.tls_versions,
            // issue 11
            &self.oauth2_token_fetches,
            // issue 12: the spool
            &self.spool.messages,
            &self.spool.bytes,
            &self.spool.oldest,
            &self.spool.attempts,
            &self.spool.dead_letters,
        ]
    }

    /// Every metric name postern itself exports, with the `postern_` prefix
    /// (histograms without their `_bucket`/`_sum`/`_count` suffixes). The
    /// process metrics are not in it: see `PROCESS_METRICS`.
    pub fn names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| format!("postern_{}", d.fq_name))
            .collect()
    }

    /// A fresh registry with the `postern_` prefix, the metrics and the
    /// process collector (where the platform has one) in it.
    ///
    /// # Errors
    /// Only on a programming error (a duplicate name).
    pub fn new_registry() -> prometheus::Result<(Registry, Metrics)> {
        let registry = Registry::new_custom(Some("postern".to_owned()), None)?;
        let metrics = Metrics::register(&registry)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok((registry, metrics))
    }
}

/// The process metrics (Linux), as exported under the `postern_` prefix.
pub const PROCESS_METRICS: &[&str] = &[
    "postern_process_cpu_seconds_total",
    "postern_process_open_fds",
    "postern_process_max_fds",
    "postern_process_virtual_memory_bytes",
    "postern_process_virtual_memory_max_bytes",
    "postern_process_resident_memory_bytes",
    "postern_process_start_time_seconds",
    "postern_process_threads",
];
