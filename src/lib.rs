//! postern: an SMTP-aware authenticating relay. Devices submit mail with local
//! accounts; postern checks and rewrites senders, and relays to a provider with
//! the provider's credentials (or stores it in an outbox).
//!
//! Crate map:
//! - `config`   — the TOML schema, `"8MiB"`/`"30s"` parsing, whole-config validation
//! - `error`    — start-up errors
//! - `server`   — listeners, accept loop, connection cap, drain on shutdown
//! - `session`  — the client-side SMTP state machine, one file per phase
//! - `smtp`     — the protocol, sans I/O: commands, replies, line and DATA framing, SASL
//! - `auth`     — local users, trusted networks, verification
//! - `password` — argon2 / bcrypt hashes (leaf)
//! - `addr`     — client address keys (leaf)
//! - `limits`   — rates, connection caps and the AUTH brute-force throttle
//! - `cluster`  — the same limits shared by several replicas through Redis (`[cluster]`)
//! - `policy`   — allowed senders
//! - `proxy`    — the HAProxy PROXY protocol header (v1, v2)
//! - `upstream` — the provider client and the outbox
//! - `tls`      — rustls configs and PEM loading
//! - `net`      — one stream type for plain TCP and TLS
//! - `metrics`  — Prometheus metrics and the /metrics, /healthz, /readyz endpoint
//! - `logging`  — the text and JSON log formats
//! - `secret`   — zeroizing, never-printed secrets (leaf)
//! - `doctor`   — `postern doctor`: each provider checked step by step
//! - `spool`    — the durable queue: group-committed files, recovery, delivery workers, queue commands

#![forbid(unsafe_code)]

pub mod addr;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod doctor;
pub mod error;
pub mod fdlimit;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod password;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod relay;
pub mod secret;
pub mod server;
pub mod session;
pub mod smtp;
pub mod spool;
pub mod state;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use error::Error;
pub use server::Server;
