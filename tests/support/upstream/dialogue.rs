//! The fake upstream's side of the SMTP dialogue: commands, AUTH, DATA,
//! and the scripted replies and faults.

use super::conn::*;
use super::*;

#[derive(Default)]
struct Session {
    tls_active: bool,
    greeted: bool,
    auth_user: Option<String>,
    mail: Option<String>,
    rcpts: Vec<String>,
    /// The BDAT chunks of the message so far.
    bdat: Vec<u8>,
    chunks: Vec<usize>,
    /// A chunk of this transaction was refused: the rest get 503.
    bdat_failed: bool,
}

impl Session {
    fn reset_transaction(&mut self) {
        self.mail = None;
        self.rcpts.clear();
        self.bdat.clear();
        self.chunks.clear();
        self.bdat_failed = false;
    }
}

fn positive(reply: &str) -> bool {
    reply.starts_with('2')
}

/// True if `line` starts with `prefix`, ASCII case-insensitively.
fn starts_with_ci(line: &str, prefix: &str) -> bool {
    line.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The address in "<addr> params" (or "addr params"), lower-cased.
fn path_address(rest: &str) -> String {
    let rest = rest.trim_start();
    let addr = match rest.strip_prefix('<') {
        Some(r) => r.split('>').next().unwrap_or(r),
        None => rest.split(' ').next().unwrap_or(rest),
    };
    addr.to_ascii_lowercase()
}

/// How a bearer token is recorded in `auths()`: (user, "bearer:" + token).
pub const BEARER: &str = "bearer:";

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s == "=" {
        return Some(Vec::new());
    }
    B64.decode(s).ok()
}

fn is_auth_keyword(ext: &str) -> bool {
    starts_with_ci(ext, "AUTH") && matches!(ext.as_bytes().get(4), None | Some(b' ') | Some(b'='))
}

pub(super) async fn serve(server: &Server, tcp: TcpStream, id: usize) -> io::Result<()> {
    let cfg = &server.cfg;
    let mut session = Session::default();
    let stream = match (cfg.tls, &server.acceptor) {
        (UpTls::Implicit, Some(acceptor)) => {
            session.tls_active = true;
            Stream::Tls(Box::new(acceptor.accept(tcp).await?))
        }
        _ => Stream::Plain(tcp),
    };
    let mut conn = Conn {
        id,
        stream,
        buf: Vec::new(),
        start: 0,
        out: Vec::new(),
        shared: server.shared.clone(),
    };
    conn.reply(&format!("220 {} ESMTP", cfg.hostname));
    if let Some(inject) = &cfg.inject_after_greeting {
        conn.out.extend_from_slice(inject);
    }
    conn.flush().await?;

    loop {
        let line = match conn.read_line().await? {
            LineRead::Line(l) => String::from_utf8_lossy(&l).into_owned(),
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                conn.reply("500 5.5.2 line too long");
                return conn.close_gracefully().await;
            }
        };
        server.shared.update(|r| r.commands.push(line.clone()));
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" => {
                session.greeted = true;
                session.reset_transaction();
                let offer_auth = cfg.tls == UpTls::None || session.tls_active;
                let mut exts: Vec<&str> = cfg
                    .extensions
                    .iter()
                    .map(String::as_str)
                    .filter(|e| offer_auth || !is_auth_keyword(e))
                    .filter(|e| !(session.tls_active && e.eq_ignore_ascii_case("STARTTLS")))
                    .collect();
                if cfg.tls == UpTls::StartTls
                    && !session.tls_active
                    && !exts.iter().any(|e| e.eq_ignore_ascii_case("STARTTLS"))
                {
                    exts.push("STARTTLS");
                }
                let mut reply = String::new();
                let mut lines = std::iter::once(cfg.hostname.as_str())
                    .chain(exts)
                    .peekable();
                while let Some(l) = lines.next() {
                    let sep = if lines.peek().is_some() { '-' } else { ' ' };
                    reply.push_str(&format!("250{sep}{l}\r\n"));
                }
                conn.reply(&reply);
            }
            "HELO" => {
                session.greeted = true;
                session.reset_transaction();
                conn.reply(&format!("250 {}", cfg.hostname));
            }
            "STARTTLS" => {
                let acceptor = match &server.acceptor {
                    Some(a) if cfg.tls == UpTls::StartTls => a,
                    _ => {
                        conn.reply("454 4.7.0 TLS not available");
                        continue;
                    }
                };
                if !session.greeted {
                    conn.reply("503 5.5.1 send EHLO first");
                    continue;
                }
                if session.tls_active {
                    conn.reply("503 5.5.1 TLS already active");
                    continue;
                }
                conn.reply("220 2.0.0 ready");
                if let Some(inject) = &cfg.inject_after_starttls_220 {
                    conn.out.extend_from_slice(inject);
                }
                conn.flush().await?;
                conn.discard_input();
                let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Gone) else {
                    unreachable!("STARTTLS on a TLS stream");
                };
                conn.stream = Stream::Tls(Box::new(acceptor.accept(tcp).await?));
                session = Session {
                    tls_active: true,
                    ..Session::default()
                };
            }
            "AUTH" => {
                if !session.greeted {
                    conn.reply("503 5.5.1 send EHLO first");
                } else if cfg.tls == UpTls::StartTls && !session.tls_active {
                    conn.reply("530 5.7.0 Must issue a STARTTLS command first");
                } else if session.auth_user.is_some() {
                    conn.reply("503 5.5.1 already authenticated");
                } else if session.mail.is_some() {
                    conn.reply("503 5.5.1 AUTH not permitted during a mail transaction");
                } else {
                    let Some(creds) = sasl(&mut conn, arg).await? else {
                        continue;
                    };
                    let bearer = creds.1.strip_prefix(BEARER).map(str::to_owned);
                    let ok = match (&bearer, &cfg.oauth_tokens) {
                        (Some(t), Some(tokens)) => {
                            (creds.0 == cfg.username || cfg.accounts.contains_key(&creds.0))
                                && tokens.lock().unwrap_or_else(|e| e.into_inner()).contains(t)
                        }
                        (Some(_), None) => false,
                        (None, _) => {
                            (creds.0 == cfg.username && creds.1 == cfg.password)
                                || cfg.accounts.get(&creds.0) == Some(&creds.1)
                        }
                    };
                    let user = creds.0.clone();
                    server.shared.update(|r| r.auths.push(creds));
                    if ok {
                        session.auth_user = Some(user);
                        conn.reply("235 2.7.0 ok");
                    } else if bearer.is_some() {
                        // Gmail: the error as a base64 JSON challenge, 535 after the client's answer.
                        conn.reply(&format!(
                            "334 {}",
                            B64.encode(r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#)
                        ));
                        match conn.read_line().await? {
                            LineRead::Line(_) => {
                                conn.reply("535 5.7.8 Username and Password not accepted")
                            }
                            _ => return Ok(()),
                        }
                    } else {
                        conn.reply("535 5.7.8 bad credentials");
                    }
                }
            }
            "MAIL" => {
                if !session.greeted {
                    conn.reply("503 5.5.1 send EHLO first");
                } else if session.mail.is_some() {
                    conn.reply("503 5.5.1 nested MAIL command");
                } else if !cfg.username.is_empty() && session.auth_user.is_none() {
                    conn.reply("530 5.7.0 authentication required");
                } else if !starts_with_ci(&line, "MAIL FROM:") {
                    conn.reply("501 5.5.4 syntax: MAIL FROM:<address>");
                } else {
                    let reply = cfg.mail_reply.as_deref().unwrap_or("250 2.1.0 ok");
                    if positive(reply) {
                        session.mail = Some(line.clone());
                    }
                    conn.reply(reply);
                }
            }
            "RCPT" => {
                if session.mail.is_none() {
                    conn.reply("503 5.5.1 need MAIL command");
                } else if !starts_with_ci(&line, "RCPT TO:") {
                    conn.reply("501 5.5.4 syntax: RCPT TO:<address>");
                } else {
                    let addr = path_address(&line["RCPT TO:".len()..]);
                    let reply = server
                        .rcpt_replies
                        .get(&addr)
                        .map(String::as_str)
                        .unwrap_or("250 2.1.5 ok");
                    if positive(reply) {
                        session.rcpts.push(line.clone());
                    }
                    conn.reply(reply);
                }
            }
            "DATA" => {
                if session.rcpts.is_empty() {
                    conn.reply("554 5.5.1 no valid recipients");
                    continue;
                }
                if let Some(r) = &cfg.data_reply {
                    conn.reply(r);
                    continue;
                }
                server.shared.update(|r| r.data_commands += 1);
                conn.reply("354 go ahead");
                let (raw_data, data) = match conn.read_data(cfg.drop_after_data_bytes).await? {
                    DataRead::Done(raw, data) => (raw, data),
                    DataRead::Eof => return Ok(()),
                    DataRead::Dropped => {
                        // Replies to earlier commands still go out; the message gets none.
                        conn.flush().await?;
                        return Ok(());
                    }
                    DataRead::TooLong => {
                        conn.reply("500 5.5.2 line too long");
                        return conn.close_gracefully().await;
                    }
                };
                if let Some(delay) = cfg.data_end_delay {
                    conn.flush().await?;
                    tokio::time::sleep(delay).await;
                }
                let mail_from = session.mail.take().unwrap_or_default();
                let rcpts = std::mem::take(&mut session.rcpts);
                let scripted = cfg.data_end_reply.clone();
                let accepted = scripted.as_deref().is_none_or(positive);
                let auth_user = session.auth_user.clone();
                let reply = server.shared.update(|rec| {
                    if accepted {
                        rec.queued += 1;
                        rec.messages.push(Message {
                            mail_from,
                            rcpts,
                            data,
                            raw_data,
                            chunks: Vec::new(),
                            auth_user,
                        });
                    }
                    scripted.unwrap_or_else(|| format!("250 2.0.0 queued as {}", rec.queued))
                });
                conn.reply(&reply);
            }
            "BDAT" => {
                let mut words = arg.split_ascii_whitespace();
                let size = words.next().and_then(|n| n.parse::<usize>().ok());
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                let Some(size) = size else {
                    conn.reply("501 5.5.4 syntax: BDAT size [LAST]");
                    continue;
                };
                server.shared.update(|r| r.bdat_commands += 1);
                let offered = cfg
                    .extensions
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case("CHUNKING"));
                let before = session.bdat.len();
                let chunk = match conn
                    .read_chunk(size, before, cfg.drop_after_data_bytes)
                    .await?
                {
                    ChunkRead::Done(c) => c,
                    ChunkRead::Eof => return Ok(()),
                    ChunkRead::Dropped => {
                        conn.flush().await?;
                        return Ok(());
                    }
                };
                if !offered {
                    conn.reply("502 5.5.1 BDAT not offered");
                    continue;
                }
                if session.rcpts.is_empty() {
                    conn.reply("554 5.5.1 no valid recipients");
                    session.reset_transaction();
                    continue;
                }
                if session.bdat_failed {
                    conn.reply("503 5.5.1 transaction failed");
                    if last {
                        session.reset_transaction();
                    }
                    continue;
                }
                session.bdat.extend_from_slice(&chunk);
                session.chunks.push(size);
                if !last {
                    let reply = cfg
                        .bdat_reply
                        .clone()
                        .unwrap_or_else(|| format!("250 2.0.0 {size} octets received"));
                    if !positive(&reply) {
                        session.bdat_failed = true;
                    }
                    conn.reply(&reply);
                    continue;
                }
                if let Some(delay) = cfg.data_end_delay {
                    conn.flush().await?;
                    tokio::time::sleep(delay).await;
                }
                let mail_from = session.mail.take().unwrap_or_default();
                let rcpts = std::mem::take(&mut session.rcpts);
                let data = std::mem::take(&mut session.bdat);
                let chunks = std::mem::take(&mut session.chunks);
                session.reset_transaction();
                let scripted = cfg.data_end_reply.clone();
                let accepted = scripted.as_deref().is_none_or(positive);
                let auth_user = session.auth_user.clone();
                let reply = server.shared.update(|rec| {
                    if accepted {
                        rec.queued += 1;
                        rec.messages.push(Message {
                            mail_from,
                            rcpts,
                            raw_data: data.clone(),
                            data,
                            chunks,
                            auth_user,
                        });
                    }
                    scripted.unwrap_or_else(|| format!("250 2.0.0 queued as {}", rec.queued))
                });
                conn.reply(&reply);
            }
            "RSET" => {
                session.reset_transaction();
                conn.reply("250 2.0.0 ok");
            }
            "NOOP" => conn.reply("250 2.0.0 ok"),
            "QUIT" => {
                conn.reply("221 2.0.0 bye");
                conn.flush().await?;
                return conn.stream.shutdown().await;
            }
            _ => conn.reply("500 5.5.2 command not recognized"),
        }
    }
}

/// Runs the AUTH exchange. Returns the decoded (username, password), or None after
/// having replied with an error (unknown mechanism, cancelled, malformed).
async fn sasl(conn: &mut Conn, arg: &str) -> io::Result<Option<(String, String)>> {
    let (mech, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim())),
        None => (arg.to_ascii_uppercase(), None),
    };
    match mech.as_str() {
        "PLAIN" => {
            let Some(resp) = sasl_step(conn, initial, "334 ").await? else {
                return Ok(None);
            };
            let mut parts = resp.split(|&b| b == 0);
            let (Some(_authzid), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                conn.reply("501 5.5.2 malformed PLAIN response");
                return Ok(None);
            };
            Ok(Some((
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            )))
        }
        "LOGIN" => {
            let Some(user) = sasl_step(conn, initial, "334 VXNlcm5hbWU6").await? else {
                return Ok(None);
            };
            let Some(pass) = sasl_step(conn, None, "334 UGFzc3dvcmQ6").await? else {
                return Ok(None);
            };
            Ok(Some((
                String::from_utf8_lossy(&user).into_owned(),
                String::from_utf8_lossy(&pass).into_owned(),
            )))
        }
        "XOAUTH2" | "OAUTHBEARER" => {
            let Some(resp) = sasl_step(conn, initial, "334 ").await? else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&resp).into_owned();
            let mut user = None;
            let mut token = None;
            for (i, field) in text.split('\x01').enumerate() {
                if let Some(u) = field.strip_prefix("user=") {
                    user = Some(u.to_string());
                } else if let Some(t) = field.strip_prefix("auth=Bearer ") {
                    token = Some(t.to_string());
                } else if i == 0 && mech == "OAUTHBEARER" {
                    // gs2 header: "n,a=user,"
                    user = field
                        .strip_prefix("n,a=")
                        .and_then(|r| r.strip_suffix(','))
                        .map(|u| u.replace("=2C", ",").replace("=3D", "="));
                }
            }
            match (user, token) {
                (Some(u), Some(t)) if text.ends_with("\x01\x01") => {
                    Ok(Some((u, format!("{BEARER}{t}"))))
                }
                _ => {
                    conn.reply("501 5.5.2 malformed OAuth response");
                    Ok(None)
                }
            }
        }
        "" => {
            conn.reply("501 5.5.4 syntax: AUTH mechanism");
            Ok(None)
        }
        _ => {
            conn.reply("504 5.5.4 mechanism not supported");
            Ok(None)
        }
    }
}

/// One SASL response: `initial` if given, else send `challenge` and read a line.
/// Returns the decoded bytes, or None after replying with an error.
async fn sasl_step(
    conn: &mut Conn,
    initial: Option<&str>,
    challenge: &str,
) -> io::Result<Option<Vec<u8>>> {
    let resp = match initial {
        Some(i) => i.to_string(),
        None => {
            conn.reply(challenge);
            match conn.read_line().await? {
                LineRead::Line(l) => String::from_utf8_lossy(&l).into_owned(),
                LineRead::TooLong => {
                    conn.reply("500 5.5.2 line too long");
                    conn.close_gracefully().await?;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
                }
                LineRead::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF during AUTH",
                    ));
                }
            }
        }
    };
    if resp.trim() == "*" {
        conn.reply("501 5.0.0 authentication cancelled");
        return Ok(None);
    }
    match decode_b64(&resp) {
        Some(b) => Ok(Some(b)),
        None => {
            conn.reply("501 5.5.2 invalid base64");
            Ok(None)
        }
    }
}
