//! Listeners, the accept tasks, the global connection cap, and the drain on
//! shutdown: stop accepting, tell idle sessions `421 4.3.0`, let transactions in
//! flight finish until `shutdown_grace`, then cut what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prometheus::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Config;
use crate::error::Error;
use crate::limits::ip_key;
use crate::metrics;
use crate::session::Session;
pub use crate::state::Reloader;
use crate::state::{ListenerInfo, Shared, State};

/// How long a shutdown waits for the sessions it cut to end.
const CUT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How often limiter state for addresses that went quiet is dropped.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a start waits for the shared Redis before serving without it.
const CLUSTER_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Connections a listener holds that were not accepted yet. The standard
/// library's `bind` takes 128; a burst of devices at the top of the hour, or
/// a flood, overflows that before the accept loop is scheduled. The kernel
/// caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 1024;

/// A listening socket on `addr`, as `TcpListener::bind` makes one (with
/// `SO_REUSEADDR`), with `TCP_NODELAY` set on it: Linux copies it to every
/// connection accepted there, so a session does not pay a `setsockopt`.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)?;
    sock.listen(BACKLOG)
}

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
        let listener_configs = config.listeners.clone();
        let metrics_addr = config.metrics.as_ref().map(|m| m.addr);
        let State {
            shared,
            registry,
            shutdown: shutdown_tx,
        } = State::build(config)?;
        if let Some(c) = &shared.cluster
            && !c.connected(CLUSTER_CONNECT_WAIT).await
        {
            tracing::warn!(
                "shared Redis did not answer at start; starting with the fallback limits"
            );
        }
        let mut listeners = Vec::new();
        for l in &listener_configs {
            let addr = *l.addr.get_ref();
            let sock = listen(addr).map_err(|source| Error::Bind {
                what: format!("listener {}", l.name.get_ref()),
                addr,
                source,
            })?;
            let local = sock.local_addr().map_err(|source| Error::Bind {
                what: format!("listener {}", l.name.get_ref()),
                addr,
                source,
            })?;
            let info = ListenerInfo::from_config(l);
            listeners.push((info, sock, local));
        }
        let metrics_sock = match metrics_addr {
            Some(addr) => {
                let sock = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "metrics".to_owned(),
                        addr,
                        source,
                    })?;
                let local = sock.local_addr().map_err(|source| Error::Bind {
                    what: "metrics".to_owned(),
                    addr,
                    source,
                })?;
                Some((sock, local))
            }
            None => None,
        };
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
        Reloader::new(self.shared.clone())
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
            let (shared, ready) = (shared.clone(), ready.clone());
            let check: metrics::ReadyCheck = Arc::new(move || {
                if ready.load(Ordering::Acquire) {
                    shared.policy().readiness()
                } else {
                    Err("starting or stopping".to_owned())
                }
            });
            background.spawn(metrics::serve(sock, registry, check));
        }
        shared.policy().start_upstreams();
        let pruned = shared.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                pruned.policy().auth_throttle.prune();
            }
        });
        // Each listener's task accepts and spawns the session itself: a
        // hand-off to another task per connection (a channel to a loop that
        // spawned) made tokio's workers wake each other about four times a
        // message (`strace -c`: 4.2 futex calls per plain session, 0.8 after).
        let sessions = Sessions::new();
        for (info, sock, addr) in listeners {
            tracing::info!(listener = %info.name, %addr, tls = ?info.tls, "listening");
            let (shared, sessions) = (shared.clone(), sessions.clone());
            background.spawn(async move {
                loop {
                    match sock.accept().await {
                        Ok((tcp, peer)) => sessions.start(&shared, &info, tcp, peer),
                        Err(e) => {
                            // Out of descriptors and the like: pause rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        ready.store(true, Ordering::Release);
        shutdown.await;

        // Stop accepting; tell every session; give transactions in flight their grace.
        let grace = shared.policy().config.server.shutdown_grace.0;
        tracing::info!(open = sessions.len(), ?grace, "shutting down");
        ready.store(false, Ordering::Release);
        background.abort_all();
        let _ = shutdown_tx.send(true);
        let drained = tokio::time::timeout(grace, sessions.all_ended()).await;
        if drained.is_err() {
            tracing::warn!(
                cut = sessions.len(),
                "shutdown grace expired; closing remaining connections"
            );
            sessions.cut.send_replace(true);
            // A cut session ends at its next poll; its slots go back as it does.
            let _ = tokio::time::timeout(CUT_WAIT, sessions.all_ended()).await;
        }
        for up in &shared.policy().upstreams {
            up.close_pool().await;
        }
        if let Some(c) = &shared.cluster {
            // The slots of the sessions and connections just closed go back
            // now, not at the end of their TTL (a rolling restart).
            c.give_all_back().await;
        }
        Ok(())
    }
}

/// The open client sessions: how many (the global `max_connections` cap), a
/// signal when the last one ends, and the cut at the end of a shutdown's grace.
struct Sessions {
    open: AtomicUsize,
    none_left: Notify,
    cut: watch::Sender<bool>,
}

/// One session's place under the cap, given back when it is dropped (also
/// when the session's task panics or is cut).
struct Place(Arc<Sessions>);

impl Drop for Place {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

impl Sessions {
    fn new() -> Arc<Sessions> {
        Arc::new(Sessions {
            open: AtomicUsize::new(0),
            none_left: Notify::new(),
            cut: watch::channel(false).0,
        })
    }

    fn len(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place if fewer than `max` sessions are open.
    fn enter(self: &Arc<Self>, max: usize) -> Option<Place> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Place(self.clone()))
    }

    /// Returns once no session is open.
    async fn all_ended(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Starts a session for an accepted connection on its own task, or
    /// refuses it over `max_connections`.
    fn start(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        info: &ListenerInfo,
        tcp: TcpStream,
        peer: SocketAddr,
    ) {
        // Linux sets TCP_NODELAY on an accepted connection from its listener
        // (see `listen`); elsewhere it is set here.
        #[cfg(not(target_os = "linux"))]
        let _ = tcp.set_nodelay(true);
        let (max, max_per_ip) = {
            let policy = shared.policy();
            let limits = &policy.config.limits;
            (
                limits.max_connections as usize,
                limits.max_connections_per_ip,
            )
        };
        let Some(place) = self.enter(max) else {
            shared
                .metrics
                .connections_rejected
                .with_label_values(&[&info.name, "max_connections"])
                .inc();
            shared
                .metrics
                .limit_hit("max_connections", metrics::NONE, metrics::NONE);
            tokio::spawn(refuse(tcp, "Too many connections, try again later"));
            return;
        };
        shared
            .metrics
            .connections_opened
            .with_label_values(&[&info.name])
            .inc();
        // Spawned boxed and as it is: a future wrapped in another async
        // block is stored twice in it (callgrind: 8.7 KiB copied per spawn,
        // against the session task's 3.4 KiB), and tokio moves an unboxed
        // one four times on its way into the task (boxed: 172.4k -> 168.7k
        // instructions a plain 2 KB message).
        tokio::spawn(Box::pin(connection(
            shared.clone(),
            info.clone(),
            Accepted {
                tcp,
                peer,
                max_per_ip,
                place,
                cut: self.cut.subscribe(),
            },
        )));
    }
}

/// One accepted connection: the PROXY header where the listener expects one,
/// the per-address cap, then the SMTP session.
async fn connection(shared: Arc<Shared>, info: ListenerInfo, accepted: Accepted) {
    let Accepted {
        mut tcp,
        peer,
        max_per_ip,
        place,
        mut cut,
    } = accepted;
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
            // The header is read until its own timeout or the end of a
            // shutdown's grace, which cuts it as it cuts the sessions.
            let header = tokio::select! {
                biased;
                h = crate::proxy::read_header(&mut tcp) => h,
                _ = cut.wait_for(|c| *c) => return,
            };
            match header {
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
            .limit_hit("connections_per_ip", metrics::NONE, metrics::NONE);
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
    tokio::select! {
        biased;
        () = Session::serve(shared.clone(), info, Box::new(tcp), peer).instrument(span) => {}
        // The end of a shutdown's grace.
        _ = cut.wait_for(|c| *c) => {}
    }
    active.dec();
    drop(ip_slot);
    drop(place);
}

/// What `connection` gets with an accepted stream.
struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    max_per_ip: u32,
    place: Place,
    cut: watch::Receiver<bool>,
}

/// Over a connection cap: say so and close.
async fn refuse(mut tcp: TcpStream, why: &str) {
    let _ = tcp
        .write_all(format!("421 4.7.0 {why}\r\n").as_bytes())
        .await;
    let _ = tcp.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::listen;

    /// `start` sets no TCP_NODELAY on Linux: the listener's must reach every
    /// accepted connection, or each reply would wait for the last one's ACK.
    #[tokio::test]
    async fn accepted_connections_come_without_nagle() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
