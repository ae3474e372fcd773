//! OAuth2 bearer tokens toward a provider (`auth = "xoauth2" | "oauthbearer"`):
//! fetched from `[upstream.oauth2]`'s token endpoint with the
//! `client_credentials` or `refresh_token` grant, cached per account, fetched
//! again shortly before `expires_in` runs out and once after the provider
//! refused a cached token. A refresh token the endpoint rotates is written
//! back to `refresh_token_file` atomically (temp file, fsync, rename, fsync of
//! the directory).
//!
//! The HTTP client is hyper's own connection-level HTTP/1.1 client over the
//! same `Connector` and tokio-rustls (ring) stack the SMTP side uses: hyper 1
//! is already in the tree for `/metrics`, so this costs hyper's `client`
//! feature and two small crates (want, try-lock). reqwest 0.13 with rustls and no default features, measured
//! against this lock file, adds 65 crates to the normal build graph (161 →
//! 226: tower, tower-http, url, idna and the icu tables, hyper-rustls,
//! rustls-platform-verifier, ...) for what is one form POST and one JSON reply
//! per hour; the `oauth2` crate would bring reqwest and more. So: hyper.
//!
//! Secrets (client secret, refresh token, access token) are never formatted
//! into an error, a log line or a metric: errors carry the HTTP status and the
//! endpoint's `error` / `error_description` words only.

pub mod reply;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use crate::config::{Grant, OAuth2Config};
use crate::metrics::Metrics;
use crate::net::{BoxIo, Connector};
use crate::secret::SecretString;

/// A token request (connect, TLS, request, reply) must finish within this.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest token endpoint reply read.
const MAX_REPLY: usize = 64 * 1024;
/// A token is fetched again this long before it expires (or at 90 % of a
/// shorter lifetime).
const EARLY: Duration = Duration::from_secs(60);

/// Why no token could be had. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint {host}: cannot connect: {reason}")]
    Connect { host: String, reason: String },
    #[error("token endpoint {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("token endpoint {host}: timed out")]
    Timeout { host: String },
    #[error("token endpoint {host}: HTTP {reason}")]
    Http { host: String, reason: String },
    #[error("token endpoint {host} answered {status}: {error}{description}")]
    Refused {
        host: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("token endpoint {1}: unusable reply: {0}")]
    BadReply(&'static str, String),
    #[error("cannot read {0}")]
    Secret(String),
    #[error("cannot write the rotated refresh token to {path}: {reason}")]
    WriteBack { path: String, reason: String },
}

/// The parts of `token_url` postern uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    https: bool,
    host: String,
    /// `host:port` for the connector.
    addr: String,
    /// Path and query.
    target: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        crate::config::check_token_url(url)?;
        let (https, rest) = match url.strip_prefix("https://") {
            Some(r) => (true, r),
            None => (false, url.strip_prefix("http://").unwrap_or(url)),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = if target.starts_with('/') {
            target.to_owned()
        } else {
            format!("/{target}")
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = match authority.strip_prefix('[') {
            Some(r) => {
                let (h, after) = r.split_once(']').unwrap_or((r, ""));
                let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
                (h.to_owned(), port.unwrap_or(default_port))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (authority.to_owned(), default_port),
            },
        };
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Endpoint {
            https,
            host,
            addr,
            target,
        })
    }
}

/// A token in the cache.
#[derive(Clone)]
struct Cached {
    token: Arc<SecretString>,
    /// When to fetch a new one (before it actually expires).
    renew_at: Instant,
}

/// Where one account's tokens come from, and the one it holds now.
pub struct TokenSource {
    upstream: Arc<str>,
    endpoint: Endpoint,
    grant: Grant,
    client_id: String,
    client_secret: Option<SecretString>,
    scope: Option<String>,
    refresh_token_file: Option<PathBuf>,
    /// The current refresh token (grant = refresh_token).
    refresh_token: Mutex<Option<SecretString>>,
    /// Held across a fetch, so that concurrent connections wait for one
    /// request instead of each making their own.
    cached: tokio::sync::Mutex<Option<Cached>>,
    tls: Arc<ClientConfig>,
    connector: Arc<dyn Connector>,
    metrics: Metrics,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("upstream", &self.upstream)
            .field("token_url_host", &self.endpoint.host)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Reads the client secret and the refresh token now.
    ///
    /// # Errors
    /// A message naming what could not be read (never its content).
    pub fn from_config(
        upstream: &Arc<str>,
        cfg: &OAuth2Config,
        connector: &Arc<dyn Connector>,
        metrics: &Metrics,
    ) -> Result<TokenSource, String> {
        let endpoint = Endpoint::parse(cfg.token_url.get_ref())?;
        let client_secret = cfg.client_secret().map(|s| s.resolve()).transpose()?;
        let refresh_token_file = cfg.refresh_token_file.as_ref().map(|p| p.get_ref().clone());
        let refresh_token = match (&cfg.grant.get_ref(), &refresh_token_file) {
            (Grant::RefreshToken, Some(path)) => Some(read_refresh_token(path)?),
            _ => None,
        };
        let tls = crate::tls::client_config(None, true).map_err(|e| e.to_string())?;
        Ok(TokenSource {
            upstream: upstream.clone(),
            endpoint,
            grant: *cfg.grant.get_ref(),
            client_id: cfg.client_id.get_ref().clone(),
            client_secret,
            scope: cfg.scope.as_ref().map(|s| s.get_ref().clone()),
            refresh_token_file,
            refresh_token: Mutex::new(refresh_token),
            cached: tokio::sync::Mutex::new(None),
            tls,
            connector: connector.clone(),
            metrics: metrics.clone(),
        })
    }

    /// Whether `other` gets its tokens the same way: the same endpoint, grant,
    /// client, client secret, scope and refresh token file.
    fn same_settings(&self, other: &TokenSource) -> bool {
        self.upstream == other.upstream
            && self.endpoint == other.endpoint
            && self.grant == other.grant
            && self.client_id == other.client_id
            && self.client_secret == other.client_secret
            && self.scope == other.scope
            && self.refresh_token_file == other.refresh_token_file
    }

    /// A reload: takes over the token `old` holds when both get their tokens
    /// the same way, so the new policy does not fetch a token the old one
    /// already had. The refresh token stays the one read from the file now
    /// (a rotated one was written back to it). Returns whether a token was
    /// taken over; false too while either is fetching one.
    pub fn adopt_cache(&self, old: &TokenSource) -> bool {
        if !self.same_settings(old) {
            return false;
        }
        let (Ok(mut mine), Ok(theirs)) = (self.cached.try_lock(), old.cached.try_lock()) else {
            return false;
        };
        if mine.is_none() {
            mine.clone_from(&theirs);
        }
        mine.is_some()
    }

    /// A token to use now: the cached one while it is fresh, else a new one.
    /// The flag says whether it came from the cache (so a refusal is worth one retry).
    ///
    /// # Errors
    /// What the token endpoint (or the way to it) did wrong.
    pub async fn token(&self) -> Result<(Arc<SecretString>, bool), TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok((c.token.clone(), true));
        }
        let fresh = self.fetch_counted().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok((token, false))
    }

    /// The provider refused `refused`: forget it (unless another connection
    /// already replaced it) and get a new one.
    ///
    /// # Errors
    /// As `token`.
    pub async fn renew_after_refusal(
        &self,
        refused: &str,
    ) -> Result<Arc<SecretString>, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.token.expose() != refused
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        *cached = None;
        let fresh = self.fetch_counted().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn fetch_counted(&self) -> Result<Cached, TokenError> {
        let r = match timeout(TOKEN_TIMEOUT, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(TokenError::Timeout {
                host: self.endpoint.host.clone(),
            }),
        };
        let result = if r.is_ok() { "ok" } else { "error" };
        self.metrics
            .oauth2_token_fetches
            .with_label_values(&[&self.upstream, result])
            .inc();
        match &r {
            Ok(_) => tracing::info!(upstream = %self.upstream, "OAuth2 token fetched"),
            Err(e) => {
                tracing::warn!(upstream = %self.upstream, error = %e, "OAuth2 token fetch failed")
            }
        }
        r
    }

    /// The form body of the token request (it carries the client secret or
    /// the refresh token: built in a buffer that is wiped on drop).
    fn form(&self) -> SecretString {
        let refresh = match self.grant {
            Grant::ClientCredentials => None,
            Grant::RefreshToken => Some(
                self.refresh_token
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_default(),
            ),
        };
        let grant = match self.grant {
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken => "refresh_token",
        };
        let mut pairs: Vec<(&str, &str)> = vec![("grant_type", grant)];
        if let Some(rt) = &refresh {
            pairs.push(("refresh_token", rt.expose()));
        }
        pairs.push(("client_id", &self.client_id));
        if let Some(s) = &self.client_secret {
            pairs.push(("client_secret", s.expose()));
        }
        if let Some(s) = &self.scope {
            pairs.push(("scope", s));
        }
        // Room for the worst escaping (3 octets each), so the buffer never
        // moves and leaves an unwiped copy behind.
        let room = pairs.iter().map(|(k, v)| k.len() + 3 * v.len() + 2).sum();
        let mut body = zeroize::Zeroizing::new(String::with_capacity(room));
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                body.push('&');
            }
            body.push_str(k);
            body.push('=');
            body.push_str(&zeroize::Zeroizing::new(form_escape(v)));
        }
        SecretString::new(std::mem::take(&mut *body))
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let host = self.endpoint.host.clone();
        let io = self
            .connector
            .connect(&self.endpoint.addr)
            .await
            .map_err(|e| TokenError::Connect {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let io: BoxIo = if self.endpoint.https {
            let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                TokenError::Tls {
                    host: host.clone(),
                    reason: "not a valid TLS server name".into(),
                }
            })?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, io)
                .await
                .map_err(|e| TokenError::Tls {
                    host: host.clone(),
                    reason: crate::tls::explain(&e, &host),
                })?;
            Box::new(tls)
        } else {
            io
        };
        let http = |e: hyper::Error| TokenError::Http {
            host: host.clone(),
            reason: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::post(self.endpoint.target.as_str())
            .header(hyper::header::HOST, self.endpoint.host.as_str())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::copy_from_slice(
                self.form().expose().as_bytes(),
            )))
            .map_err(|_| TokenError::BadReply("cannot build the request", host.clone()))?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|_| TokenError::BadReply("reply too large or cut short", host.clone()))?
            .to_bytes();
        driver.abort();
        let reply = reply::parse(status, &body, &host)?;
        let token = Arc::new(reply.access_token);
        let lifetime = reply.lifetime;
        let early = EARLY.min(lifetime / 10);
        if let Some(new) = &reply.refresh_token
            && self.grant == Grant::RefreshToken
        {
            self.rotate(new.expose()).await?;
        }
        Ok(Cached {
            token,
            renew_at: Instant::now() + lifetime.saturating_sub(early),
        })
    }

    /// Keeps a rotated refresh token, in memory and in its file.
    async fn rotate(&self, new: &str) -> Result<(), TokenError> {
        {
            let mut rt = self.refresh_token.lock().unwrap_or_else(|e| e.into_inner());
            if rt.as_ref().is_some_and(|t| t.expose() == new) {
                return Ok(());
            }
            *rt = Some(SecretString::from(new));
        }
        let Some(path) = self.refresh_token_file.clone() else {
            return Ok(());
        };
        let text = SecretString::new(format!("{new}\n"));
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || write_atomically(&path, text.expose().as_bytes()))
            .await
            .map_err(|e| TokenError::WriteBack {
                path: shown.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| TokenError::WriteBack {
                path: shown,
                reason: e.to_string(),
            })?;
        tracing::info!(upstream = %self.upstream, "OAuth2 refresh token rotated and saved");
        Ok(())
    }
}

fn read_refresh_token(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map(SecretString::new)
        .map_err(|e| format!("cannot read refresh_token_file {}: {e}", path.display()))?;
    let token = SecretString::from(text.expose().trim());
    if token.is_empty() {
        return Err(format!("refresh_token_file {} is empty", path.display()));
    }
    Ok(token)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new
/// one, never a mix: a temporary file beside it (mode 0600), fsync, rename,
/// fsync of the directory.
///
/// # Errors
/// Any I/O error; the old file is then untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "token".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The SASL initial response of `mech` for `user` with `token`, base64.
pub fn initial_response(
    mech: crate::config::UpstreamAuth,
    user: &str,
    token: &str,
) -> SecretString {
    use base64::Engine as _;
    let raw = SecretString::new(match mech {
        crate::config::UpstreamAuth::Oauthbearer => {
            format!("n,a={},\x01auth=Bearer {token}\x01\x01", saslname(user))
        }
        _ => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
    });
    SecretString::new(base64::engine::general_purpose::STANDARD.encode(raw.expose()))
}

/// RFC 5801 saslname: `,` and `=` escaped.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("https://login.example.com/t/oauth2/v2.0/token").unwrap();
        assert!(e.https);
        assert_eq!(e.addr, "login.example.com:443");
        assert_eq!(e.target, "/t/oauth2/v2.0/token");
        let e = Endpoint::parse("http://127.0.0.1:8080/token?x=1").unwrap();
        assert_eq!(
            (e.https, e.addr.as_str(), e.target.as_str()),
            (false, "127.0.0.1:8080", "/token?x=1")
        );
        let e = Endpoint::parse("http://[::1]:9/").unwrap();
        assert_eq!(e.addr, "[::1]:9");
        assert!(Endpoint::parse("http://login.example.com/token").is_err());
        assert!(Endpoint::parse("ftp://x/").is_err());
    }

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_escape("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn sasl_initial_responses() {
        use base64::Engine as _;
        let dec = |s: SecretString| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(s.expose())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            dec(initial_response(
                crate::config::UpstreamAuth::Xoauth2,
                "a@b.c",
                "tok"
            )),
            "user=a@b.c\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(
            dec(initial_response(
                crate::config::UpstreamAuth::Oauthbearer,
                "a,b=c@d",
                "tok"
            )),
            "n,a=a=2Cb=3Dc@d,\x01auth=Bearer tok\x01\x01"
        );
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt");
        std::fs::write(&p, "old\n").unwrap();
        write_atomically(&p, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}
