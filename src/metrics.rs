//! Prometheus metrics: one `Metrics` struct registered into a registry that is
//! passed in (no globals), and the HTTP endpoint serving `/metrics`, `/healthz`
//! and `/readyz`.
//!
//! Label sets are bounded: listener, upstream and user names come from the
//! config; results and reasons are fixed words. Nothing is labelled by client
//! address, sender or recipient.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

/// Every metric postern exports.
#[derive(Clone)]
pub struct Metrics {
    pub connections_opened: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub connections_rejected: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub auth_attempts: IntCounterVec,
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

impl Metrics {
    /// Creates every metric and registers it into `r` (which should carry the `postern` prefix).
    ///
    /// # Errors
    /// If a name is registered twice in `r`.
    pub fn register(r: &Registry) -> prometheus::Result<Metrics> {
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        Ok(Metrics {
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
            messages: counter(
                r,
                "messages_total",
                "Messages by user and result",
                &["user", "result"],
            )?,
            recipients: counter(
                r,
                "recipients_total",
                "Recipients by user and result",
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
                "Upstream connections established (connected, TLS, authenticated)",
                &["upstream"],
            )?,
            upstream_connections_failed: counter(
                r,
                "upstream_connections_failed_total",
                "Upstream connection failures by stage",
                &["upstream", "stage"],
            )?,
            upstream_connections_active: gauge(
                r,
                "upstream_connections_active",
                "Upstream connections open now",
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
                "Upstream replies by command and class (2xx, 3xx, 4xx, 5xx)",
                &["upstream", "command", "class"],
            )?,
            upstream_command_duration: histogram(
                r,
                "upstream_command_duration_seconds",
                "Time from sending an upstream command to its reply",
                &["upstream", "command"],
                latency.clone(),
            )?,
            relay_duration: histogram(
                r,
                "message_relay_duration_seconds",
                "Time from the client's end-of-data to the upstream's final reply",
                &["upstream"],
                latency,
            )?,
            limit_hits: counter(
                r,
                "limit_hits_total",
                "Requests refused by a limit",
                &["limit"],
            )?,
            config_reloads: counter(
                r,
                "config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            )?,
        })
    }

    /// Every exported metric name, with the `postern_` prefix (histograms without
    /// their `_bucket`/`_sum`/`_count` suffixes).
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 17] = [
            &self.connections_opened,
            &self.connections_active,
            &self.connections_rejected,
            &self.tls_handshakes,
            &self.auth_attempts,
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
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| format!("postern_{}", d.fq_name))
            .collect()
    }

    /// A fresh registry with the `postern_` prefix and the metrics in it.
    ///
    /// # Errors
    /// Only on a programming error (a duplicate name).
    pub fn new_registry() -> prometheus::Result<(Registry, Metrics)> {
        let registry = Registry::new_custom(Some("postern".to_owned()), None)?;
        let metrics = Metrics::register(&registry)?;
        Ok((registry, metrics))
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
/// `/readyz` answers 200 once `ready` is set (every SMTP listener bound), 503 before.
pub async fn serve(listener: TcpListener, registry: Registry, ready: Arc<AtomicBool>) {
    let registry = Arc::new(registry);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                let ready = ready.clone();
                async move { Ok::<_, Infallible>(respond(req.uri().path(), &registry, &ready)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(path: &str, registry: &Registry, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, prometheus::TEXT_FORMAT, render(registry)),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if ready.load(Ordering::Acquire) => {
            (StatusCode::OK, "text/plain", "ready\n".to_owned())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
