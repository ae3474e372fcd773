//! Listeners, the accept loop, the global connection cap, and the drain on
//! shutdown: stop accepting, tell idle sessions `421 4.3.0`, let transactions in
//! flight finish until `shutdown_grace`, then cut what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::auth::Users;
use crate::config::Config;
use crate::error::Error;
use crate::limits::{Limiters, ip_key};
use crate::metrics::{self, Metrics};
use crate::net::Stream;
use crate::session::{ListenerInfo, Policy, Session, Shared};
use crate::upstream::Upstream;

/// How often limiter state for addresses that went quiet is dropped.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A server whose sockets are bound, ready to `run`.
pub struct Server {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    listeners: Vec<(ListenerInfo, TcpListener, SocketAddr)>,
    metrics: Option<(TcpListener, SocketAddr)>,
    registry: Registry,
}

impl Server {
    /// Loads users and upstream secrets, builds TLS, and binds every socket.
    ///
    /// # Errors
    /// A missing secret, a bad certificate, or an address that cannot be bound.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        let config = Arc::new(config);
        let (registry, metrics) = Metrics::new_registry()?;
        let users = Arc::new(Users::from_config(&config).map_err(Error::Setup)?);
        let upstreams = Upstream::all_from_config(&config, &metrics).map_err(Error::Setup)?;
        let tls = match &config.tls {
            Some(t) => Some(TlsAcceptor::from(crate::tls::server_config(
                t.cert.get_ref(),
                t.key.get_ref(),
            )?)),
            None => None,
        };
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let addr = *l.addr.get_ref();
            let sock = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    what: format!("listener {}", l.name.get_ref()),
                    addr,
                    source,
                })?;
            let local = sock.local_addr().map_err(|source| Error::Bind {
                what: format!("listener {}", l.name.get_ref()),
                addr,
                source,
            })?;
            let info = ListenerInfo {
                name: Arc::from(l.name.get_ref().as_str()),
                tls: *l.tls.get_ref(),
                auth: l.auth,
                plaintext_auth: l.plaintext_auth_allowed(),
                proxy_from: l
                    .proxy_protocol
                    .as_ref()
                    .is_some_and(|p| *p.get_ref())
                    .then(|| Arc::new(l.proxy_from.clone())),
            };
            listeners.push((info, sock, local));
        }
        let metrics_sock = match &config.metrics {
            Some(m) => {
                let sock = TcpListener::bind(m.addr)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "metrics".to_owned(),
                        addr: m.addr,
                        source,
                    })?;
                let local = sock.local_addr().map_err(|source| Error::Bind {
                    what: "metrics".to_owned(),
                    addr: m.addr,
                    source,
                })?;
                Some((sock, local))
            }
            None => None,
        };
        let limiters = Limiters::new(config.limits.auth_failures_per_ip_per_minute);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            policy: RwLock::new(Arc::new(Policy {
                config,
                users,
                upstreams,
            })),
            metrics,
            limiters,
            tls,
            shutdown: shutdown_rx,
        });
        Ok(Server {
            shared,
            shutdown_tx,
            listeners,
            metrics: metrics_sock,
            registry,
        })
    }

    /// The bound address of a listener (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(info, _, _)| &*info.name == name)
            .map(|(_, _, a)| *a)
    }

    /// The bound address of the metrics endpoint.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// A handle that reloads users, limits and upstream credentials while serving.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` completes, then drains.
    ///
    /// # Errors
    /// None today once bound; the type leaves room for fatal accept errors.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            shared,
            shutdown_tx,
            listeners,
            metrics: metrics_sock,
            registry,
        } = self;
        let ready = Arc::new(AtomicBool::new(false));
        let mut background = JoinSet::new();
        if let Some((sock, addr)) = metrics_sock {
            tracing::info!(%addr, "metrics endpoint listening");
            background.spawn(metrics::serve(sock, registry, ready.clone()));
        }
        for up in &shared.policy().upstreams {
            background.spawn(probe(up.clone()));
            background.spawn(crate::upstream::pool::maintain(Arc::downgrade(up)));
        }
        let pruned = shared.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                pruned.limiters.prune();
            }
        });
        let (accepted_tx, mut accepted) =
            mpsc::channel::<(ListenerInfo, TcpStream, SocketAddr)>(64);
        for (info, sock, addr) in listeners {
            tracing::info!(listener = %info.name, %addr, tls = ?info.tls, "listening");
            let tx = accepted_tx.clone();
            background.spawn(async move {
                loop {
                    match sock.accept().await {
                        Ok((tcp, peer)) => {
                            if tx.send((info.clone(), tcp, peer)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // Out of descriptors and the like: pause rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        drop(accepted_tx);
        ready.store(true, Ordering::Release);

        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some((info, tcp, peer)) = accepted.recv() => {
                    let _ = tcp.set_nodelay(true);
                    let limits = shared.policy().config.limits.clone();
                    if sessions.len() >= limits.max_connections as usize {
                        shared.metrics.connections_rejected.with_label_values(&[&info.name, "max_connections"]).inc();
                        shared.metrics.limit_hits.with_label_values(&["max_connections"]).inc();
                        tokio::spawn(refuse(tcp, "Too many connections, try again later"));
                        continue;
                    }
                    shared.metrics.connections_opened.with_label_values(&[&info.name]).inc();
                    sessions.spawn(connection(shared.clone(), info, tcp, peer, limits.max_connections_per_ip));
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }

        // Stop accepting; tell every session; give transactions in flight their grace.
        let grace = shared.policy().config.server.shutdown_grace.0;
        tracing::info!(open = sessions.len(), ?grace, "shutting down");
        ready.store(false, Ordering::Release);
        background.abort_all();
        let _ = shutdown_tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                cut = sessions.len(),
                "shutdown grace expired; closing remaining connections"
            );
            sessions.abort_all();
        }
        for up in &shared.policy().upstreams {
            up.close_pool().await;
        }
        Ok(())
    }
}

/// One accepted connection: the PROXY header where the listener expects one,
/// the per-address cap, then the SMTP session.
async fn connection(
    shared: Arc<Shared>,
    info: ListenerInfo,
    mut tcp: TcpStream,
    peer: SocketAddr,
    max_per_ip: u32,
) {
    let refused = |reason: &str| {
        shared
            .metrics
            .connections_rejected
            .with_label_values(&[&info.name, reason])
            .inc();
    };
    let peer = match &info.proxy_from {
        None => peer,
        Some(allowed) => {
            let source = crate::auth::canonical_ip(peer.ip());
            if !allowed.iter().any(|n| n.contains(&source)) {
                tracing::warn!(listener = %info.name, %peer, "PROXY header from a source not in proxy_from; closed");
                refused("proxy_source");
                return;
            }
            match crate::proxy::read_header(&mut tcp).await {
                Ok(Some(client)) => client,
                Ok(None) => peer,
                Err(e) => {
                    tracing::warn!(listener = %info.name, %peer, error = %e, "bad PROXY header; closed");
                    refused("proxy_header");
                    return;
                }
            }
        }
    };
    let Some(ip_slot) = shared
        .limiters
        .connections_per_ip
        .try_acquire(ip_key(peer.ip()), max_per_ip)
    else {
        refused("connections_per_ip");
        shared
            .metrics
            .limit_hits
            .with_label_values(&["connections_per_ip"])
            .inc();
        refuse(
            tcp,
            "Too many connections from your address, try again later",
        )
        .await;
        return;
    };
    let span = tracing::info_span!("conn", listener = %info.name, %peer);
    let active = shared
        .metrics
        .connections_active
        .with_label_values(&[&info.name]);
    active.inc();
    Session::serve(shared.clone(), info, Stream::Plain(tcp), peer)
        .instrument(span)
        .await;
    active.dec();
    drop(ip_slot);
}

/// Connects to an upstream once, so the EHLO postern offers mirrors it from the first client on.
async fn probe(up: Arc<Upstream>) {
    match up.probe().await {
        Ok(()) => tracing::info!(upstream = %up.name, "upstream reachable; capabilities learned"),
        Err(e) => {
            tracing::warn!(upstream = %up.name, error = %e, "upstream probe failed; will retry on first use")
        }
    }
}

/// Reloads the parts of the configuration that can change while serving
/// (SIGHUP): users, limits and upstreams with their credentials. Open
/// connections keep the policy they started with; new ones get the new one.
/// Listeners, `[tls]` and `[metrics]` need a restart.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    /// Installs `config`. On error nothing changes.
    ///
    /// # Errors
    /// A missing secret or another set-up failure, as a message.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let result = self.apply(config);
        let label = if result.is_ok() { "ok" } else { "error" };
        self.shared
            .metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        result
    }

    /// Reads `path` and installs it; a config that does not load counts as a failed reload.
    ///
    /// # Errors
    /// The config error or the set-up failure, as a message.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<(), String> {
        match Config::load(path) {
            Ok(config) => self.reload(config),
            Err(e) => {
                self.shared
                    .metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                Err(e.to_string())
            }
        }
    }

    fn apply(&self, config: Config) -> Result<(), String> {
        let old = self.shared.policy();
        let restart_needed = listeners_differ(&old.config, &config)
            || old
                .config
                .tls
                .as_ref()
                .map(|t| (t.cert.get_ref(), t.key.get_ref()))
                != config
                    .tls
                    .as_ref()
                    .map(|t| (t.cert.get_ref(), t.key.get_ref()))
            || old.config.metrics.as_ref().map(|m| m.addr)
                != config.metrics.as_ref().map(|m| m.addr);
        if restart_needed {
            tracing::warn!("listener, [tls] or [metrics] changes take effect only after a restart");
        }
        let users = Arc::new(Users::from_config(&config)?);
        let upstreams = Upstream::all_from_config(&config, &self.shared.metrics)?;
        for up in &upstreams {
            // Keep what the same upstream already told us, and ask again in the background.
            if let Some(prev) = old
                .upstreams
                .iter()
                .find(|o| o.name == up.name && o.addr == up.addr)
                && let Some(caps) = prev.capabilities()
            {
                up.learn(&caps);
            }
            tokio::spawn(probe(up.clone()));
            tokio::spawn(crate::upstream::pool::maintain(Arc::downgrade(up)));
        }
        for old_up in &old.upstreams {
            old_up.retire();
        }
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            users = config.users.len(),
            upstreams = upstreams.len(),
            "configuration reloaded"
        );
        self.shared.set_policy(Policy {
            config: Arc::new(config),
            users,
            upstreams,
        });
        Ok(())
    }
}

fn listeners_differ(a: &Config, b: &Config) -> bool {
    let key = |c: &Config| -> Vec<(String, std::net::SocketAddr)> {
        c.listeners
            .iter()
            .map(|l| (l.name.get_ref().clone(), *l.addr.get_ref()))
            .collect()
    };
    key(a) != key(b)
}

/// Over a connection cap: say so and close.
async fn refuse(mut tcp: TcpStream, why: &str) {
    let _ = tcp
        .write_all(format!("421 4.7.0 {why}\r\n").as_bytes())
        .await;
    let _ = tcp.shutdown().await;
}
