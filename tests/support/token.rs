//! A loopback OAuth2 token endpoint (plain HTTP/1.1 on 127.0.0.1:0, which
//! postern allows for a loopback `token_url`): the client_credentials and
//! refresh_token grants, a chosen `expires_in`, rotated refresh tokens, and a
//! scripted error. Every token it issues is added to `accepted`, the set a
//! `FakeUpstream` checks bearer tokens against; `requests()` records each
//! request's form fields.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "postern-test-client";
pub const CLIENT_SECRET: &str = "client-secret-Zq81xK";
pub const FIRST_REFRESH_TOKEN: &str = "refresh-token-0-Jd73";

#[derive(Default)]
struct State {
    requests: Vec<HashMap<String, String>>,
    issued: u32,
    /// The refresh token that is valid now.
    refresh_token: String,
    /// (status, JSON body) answered instead of a token while set.
    failure: Option<(u16, String)>,
}

pub struct TokenEndpoint {
    pub addr: SocketAddr,
    /// Tokens a provider should accept.
    pub accepted: Arc<Mutex<HashSet<String>>>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the endpoint does.
#[derive(Clone, Copy)]
pub struct TokenConfig {
    pub expires_in: u64,
    /// Give a new refresh token with every refresh_token grant.
    pub rotate: bool,
}

impl TokenEndpoint {
    pub async fn start(cfg: TokenConfig) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(Mutex::new(HashSet::new()));
        let state = Arc::new(Mutex::new(State {
            refresh_token: FIRST_REFRESH_TOKEN.to_string(),
            ..State::default()
        }));
        let (acc, st) = (accepted.clone(), state.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (acc, st) = (acc.clone(), st.clone());
                tokio::spawn(async move {
                    let Some(form) = read_request(&mut tcp).await else {
                        return;
                    };
                    let (status, body) = answer(&cfg, &st, &acc, form);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(reply.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        TokenEndpoint {
            addr,
            accepted,
            state,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/tenant/oauth2/v2.0/token", self.addr)
    }

    /// Every request's form fields, in order.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u32 {
        self.state.lock().unwrap().issued
    }

    /// Answer `status` with `json` instead of tokens (None: issue tokens again).
    pub fn fail_with(&self, failure: Option<(u16, &str)>) {
        self.state.lock().unwrap().failure = failure.map(|(s, j)| (s, j.to_string()));
    }

    /// Stop the provider accepting every token issued so far (they were revoked).
    pub fn revoke_all(&self) {
        self.accepted.lock().unwrap().clear();
    }

    /// The refresh token the endpoint takes now.
    pub fn current_refresh_token(&self) -> String {
        self.state.lock().unwrap().refresh_token.clone()
    }
}

fn answer(
    cfg: &TokenConfig,
    st: &Mutex<State>,
    accepted: &Mutex<HashSet<String>>,
    form: HashMap<String, String>,
) -> (u16, String) {
    let mut s = st.lock().unwrap();
    s.requests.push(form.clone());
    if let Some((status, body)) = &s.failure {
        return (*status, body.clone());
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != CLIENT_ID {
        return (401, r#"{"error":"invalid_client"}"#.into());
    }
    let mut rotated = None;
    match get("grant_type") {
        "client_credentials" => {
            if get("client_secret") != CLIENT_SECRET {
                return (
                    401,
                    r#"{"error":"invalid_client","error_description":"bad secret"}"#.into(),
                );
            }
        }
        "refresh_token" => {
            if get("refresh_token") != s.refresh_token {
                return (
                    400,
                    r#"{"error":"invalid_grant","error_description":"refresh token unknown"}"#
                        .into(),
                );
            }
            if cfg.rotate {
                let next = format!("refresh-token-{}-Kp02", s.issued + 1);
                s.refresh_token = next.clone();
                rotated = Some(next);
            }
        }
        _ => return (400, r#"{"error":"unsupported_grant_type"}"#.into()),
    }
    s.issued += 1;
    let token = format!("access-token-{}-Vb9w", s.issued);
    accepted.lock().unwrap().insert(token.clone());
    let rt = rotated.map_or(String::new(), |r| format!(r#","refresh_token":"{r}""#));
    (
        200,
        format!(
            r#"{{"token_type":"Bearer","access_token":"{token}","expires_in":{}{rt}}}"#,
            cfg.expires_in
        ),
    )
}

/// Reads one request; returns its urlencoded form body.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<HashMap<String, String>> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    Some(
        body.split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (unescape(k), unescape(v)))
            .collect(),
    )
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("x");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
