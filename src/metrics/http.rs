//! The HTTP endpoint serving `/metrics` (the registry in the Prometheus text
//! format), `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

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

/// Answers `/readyz`: `Ok` when postern can take mail, else the reason.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// How long a client of the metrics endpoint may take to send its headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one metrics connection may stay open at all.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
/// `/healthz` says the process lives; `/readyz` asks `ready`: 200, or 503 with its reason.
pub async fn serve(listener: TcpListener, registry: Registry, ready: ReadyCheck) {
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
                async move { Ok::<_, Infallible>(respond(&req, &registry, &ready)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    registry: &Registry,
    ready: &ReadyCheck,
) -> Response<Full<Bytes>> {
    let known = matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz");
    let (status, content_type, body) = if !known {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        )
    } else if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else {
        match req.uri().path() {
            "/metrics" => (StatusCode::OK, prometheus::TEXT_FORMAT, render(registry)),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            _ => match ready() {
                Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                ),
            },
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
