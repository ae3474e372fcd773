//! Whole-config validation: the rules that span keys. Every rule runs, and
//! each finding is reported with the key and the line of the offending key
//! (the table header only when the key is absent), so one run lists every
//! mistake of a file. The upstream rules are in `upstream_rules.rs`.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::shape::line_at;
use super::*;

/// A place in the file: a span of the second pass, or a line from the first.
#[derive(Clone)]
pub(super) enum Where {
    Span(Range<usize>),
    Line(usize),
}

impl From<&Range<usize>> for Where {
    fn from(r: &Range<usize>) -> Where {
        Where::Span(r.clone())
    }
}

impl From<&Where> for Where {
    fn from(w: &Where) -> Where {
        w.clone()
    }
}

impl From<Range<usize>> for Where {
    fn from(r: Range<usize>) -> Where {
        Where::Span(r)
    }
}

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) config: Config,
    /// Where `[limits]` is, for messages about it.
    pub(super) limits_span: Range<usize>,
    /// The line of each key ("user.0.limits.max_recipients"), from the first pass.
    pub(super) lines: HashMap<String, usize>,
    /// Keys the first pass already reported; nothing more is said about them.
    pub(super) blanked: Vec<String>,
    /// The same with their place ("user.0.networks").
    pub(super) blanked_at: Vec<String>,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator<'_> {
    /// The line of the key at `at` ("upstream.1.max_recipients"), else of `fallback`.
    pub(super) fn at(&self, at: &str, fallback: &Range<usize>) -> Where {
        Where::Line(
            self.lines
                .get(at)
                .copied()
                .unwrap_or_else(|| line_at(self.text, fallback.start)),
        )
    }

    pub(super) fn err(
        &mut self,
        at: impl Into<Where>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        let key = key.into();
        if self.blanked.contains(&key) {
            return;
        }
        let line = match at.into() {
            Where::Line(l) => l,
            Where::Span(s) => line_at(self.text, s.start),
        };
        self.errors.push(ConfigError::Invalid {
            path: self.config.source.clone(),
            line,
            key,
            message: msg.into(),
        });
    }

    /// Whether the first pass already reported a key under `prefix` ("user.0.").
    pub(super) fn reported(&self, prefix: &str) -> bool {
        self.blanked_at.iter().any(|b| b.starts_with(prefix))
    }

    pub(super) fn warn(&mut self, at: Option<Where>, msg: String) {
        let msg = match at {
            Some(Where::Line(l)) => format!("line {l}: {msg}"),
            Some(Where::Span(s)) => format!("line {}: {msg}", line_at(self.text, s.start)),
            None => msg,
        };
        self.config.warnings.push(msg);
    }

    /// A `name` must be non-empty and differ from every `earlier` one of its kind.
    pub(super) fn unique_name(&mut self, kind: &str, name: &Spanned<String>, earlier: &[String]) {
        let key = format!("{kind}.name");
        if name.get_ref().is_empty() {
            self.err(name.span(), key, "must not be empty");
        } else if earlier.iter().any(|o| o == name.get_ref()) {
            let msg = format!("duplicate {kind} name {:?}", name.get_ref());
            self.err(name.span(), key, msg);
        }
    }

    pub(super) fn run(mut self) -> Result<Config, Vec<ConfigError>> {
        self.listeners();
        self.tls();
        self.upstreams();
        self.users();
        self.limits();
        self.spool();
        self.cluster();
        self.reachability();
        if self.errors.is_empty() {
            Ok(self.config)
        } else {
            Err(self.errors)
        }
    }

    fn cluster(&mut self) {
        let Some(c) = self.config.cluster.clone() else {
            return;
        };
        if let Some(problem) = c.url_problem() {
            self.err(c.redis.span(), "cluster.redis", problem);
        }
        if let (Some(_), Some(f)) = (&c.password_env, &c.password_file) {
            self.err(
                f.span(),
                "cluster.password",
                "give password_env or password_file, not both",
            );
        }
        if let Some(r) = &c.replicas
            && *r.get_ref() == 0
        {
            self.err(r.span(), "cluster.replicas", "must be at least 1");
        }
        if let Some(t) = &c.lease_ttl
            && t.get_ref().0 < std::time::Duration::from_secs(3)
        {
            self.err(
                t.span(),
                "cluster.lease_ttl",
                "must be at least 3s (it is renewed every third of it)",
            );
        }
        if c.ca_file.is_some() && c.redis.get_ref().starts_with("redis://") {
            self.err(
                c.ca_file.as_ref().map_or(0..0, Spanned::span),
                "cluster.ca_file",
                "only used with rediss:// (TLS)",
            );
        }
    }

    fn listeners(&mut self) {
        let c = self.config.clone();
        if c.listeners.is_empty() {
            self.err(&(0..0), "listener", "at least one [[listener]] is required");
        }
        for (i, l) in c.listeners.iter().enumerate() {
            let earlier: Vec<String> = c.listeners[..i]
                .iter()
                .map(|o| o.name.get_ref().clone())
                .collect();
            self.unique_name("listener", &l.name, &earlier);
            let dup_addr = c.listeners[..i]
                .iter()
                .any(|o| o.addr.get_ref() == l.addr.get_ref() && l.addr.get_ref().port() != 0);
            if dup_addr {
                self.err(
                    l.addr.span(),
                    "listener.addr",
                    format!("{} is used by two listeners", l.addr.get_ref()),
                );
            }
            if let Some(m) = &c.metrics
                && m.addr == *l.addr.get_ref()
                && m.addr.port() != 0
            {
                self.err(
                    l.addr.span(),
                    "listener.addr",
                    format!("{} is also the [metrics] addr", m.addr),
                );
            }
            if *l.tls.get_ref() != TlsMode::None && c.tls.is_none() {
                self.err(
                    l.tls.span(),
                    "listener.tls",
                    format!(
                        "listener {:?} uses TLS but there is no [tls] section with cert and key",
                        l.name.get_ref()
                    ),
                );
            }
            if let Some(proxy) = l.proxy_protocol.as_ref().filter(|p| *p.get_ref())
                && l.proxy_from.is_empty()
            {
                self.err(
                    proxy.span(),
                    "listener.proxy_from",
                    "proxy_protocol = true needs proxy_from (the sources allowed to send a PROXY header)",
                );
            }
        }
    }

    fn tls(&mut self) {
        let Some(tls) = self.config.tls.clone() else {
            return;
        };
        match crate::tls::load_server_cert(tls.cert.get_ref(), tls.key.get_ref()) {
            Ok(loaded) => {
                if let Some(why) = loaded.unfit_at(crate::metrics::unix_now()) {
                    self.warn(
                        Some(Where::Span(tls.cert.span())),
                        format!("tls.cert: {why}; clients that check it will refuse STARTTLS"),
                    );
                }
            }
            Err(e @ crate::tls::TlsError::Key { .. }) => {
                self.err(tls.key.span(), "tls.key", e.to_string());
            }
            Err(e) => self.err(tls.cert.span(), "tls.cert", e.to_string()),
        }
    }

    fn users(&mut self) {
        let c = self.config.clone();
        let optional = c.listeners.iter().any(|l| l.auth == AuthMode::Optional);
        if c.users.is_empty() {
            self.warn(
                None,
                "there is no [[user]]: nobody can send until you add one".to_owned(),
            );
        }
        for (i, u) in c.users.iter().enumerate() {
            let at = |k: &str| format!("user.{i}.{k}");
            let head = u.name.span();
            let earlier: Vec<String> = c.users[..i].iter().map(|o| o.name().to_owned()).collect();
            self.unique_name("user", &u.name, &earlier);
            match &u.upstream {
                Some(up) if c.upstream(up.get_ref()).is_none() => {
                    let names: Vec<&str> = c.upstreams.iter().map(UpstreamConfig::name).collect();
                    self.err(
                        up.span(),
                        "user.upstream",
                        format!(
                            "user {:?} names upstream {:?}, which is not defined (there are: {})",
                            u.name(),
                            up.get_ref(),
                            names.join(", ")
                        ),
                    );
                }
                None if c.upstreams.len() > 1 => self.err(
                    &head,
                    "user.upstream",
                    format!(
                        "user {:?} must name its upstream: there are several",
                        u.name()
                    ),
                ),
                _ => {}
            }
            if let Some(hash) = &u.password_hash {
                if let Err(e) = crate::password::PasswordHash::parse(hash.get_ref()) {
                    self.err(hash.span(), "user.password_hash", e);
                }
            } else if u.networks.is_empty() && !self.reported(&format!("user.{i}.")) {
                self.err(
                    &head,
                    "user.password_hash",
                    format!(
                        "user {:?} has neither password_hash nor networks and could never send",
                        u.name()
                    ),
                );
            }
            if !u.networks.is_empty() && !optional {
                let s = self.at(&at("networks"), &head);
                let msg = if u.password_hash.is_none() {
                    format!(
                        "user {:?} has only networks (no password_hash), but no listener has auth = \"optional\": it can never send",
                        u.name()
                    )
                } else {
                    format!(
                        "user {:?}: networks apply only on a listener with auth = \"optional\", and there is none",
                        u.name()
                    )
                };
                self.warn(Some(s), msg);
            }
            for s in &u.allowed_senders {
                if let Err(e) = crate::policy::SenderPattern::parse(s.get_ref()) {
                    self.err(s.span(), "user.allowed_senders", e);
                }
            }
            if let Some(r) = &u.rewrite_sender {
                if !crate::policy::is_plain_address(r.get_ref()) {
                    self.err(
                        r.span(),
                        "user.rewrite_sender",
                        format!("{:?} is not an address like user@example.com", r.get_ref()),
                    );
                }
            } else if u.rewrite_header_from {
                let s = self.at(&at("rewrite_header_from"), &head);
                self.err(
                    &s,
                    "user.rewrite_header_from",
                    "rewrite_header_from needs rewrite_sender (the address to put in From:)",
                );
            }
            if u.allowed_senders.is_empty() && u.rewrite_sender.is_none() {
                self.warn(
                    Some(head.clone().into()),
                    format!(
                        "user {:?} has no allowed_senders and no rewrite_sender: every MAIL FROM will be refused",
                        u.name()
                    ),
                );
            }
            for (key, msg) in check_limits(&u.limits) {
                let s = self.at(&at(&format!("limits.{key}")), &head);
                self.err(&s, format!("user.limits.{key}"), msg);
            }
        }
        if optional && !c.users.iter().any(|u| !u.networks.is_empty()) {
            self.warn(
                None,
                "a listener has auth = \"optional\" but no user has networks: every client must still AUTH"
                    .to_owned(),
            );
        }
    }

    fn limits(&mut self) {
        let l = &self.config.limits;
        let raw = LimitsConfig {
            max_message_size: Some(ByteSize(l.max_message_size)),
            max_recipients: Some(l.max_recipients),
            messages_per_minute: Some(l.messages_per_minute),
            recipients_per_hour: Some(l.recipients_per_hour),
            max_connections_per_user: Some(l.max_connections_per_user),
            max_connections_per_ip: Some(l.max_connections_per_ip),
            max_connections: Some(l.max_connections),
            idle_timeout: Some(Seconds(l.idle_timeout)),
            auth_failures_per_ip_per_minute: Some(l.auth_failures_per_ip_per_minute),
        };
        for (key, msg) in check_limits(&raw) {
            let s = self.at(&format!("limits.{key}"), &self.limits_span.clone());
            self.err(&s, format!("limits.{key}"), msg);
        }
    }

    /// A listener that nobody could ever send through is a mistake, not a choice.
    fn reachability(&mut self) {
        let c = self.config.clone();
        let network_users = c.users.iter().any(|u| !u.networks.is_empty());
        for l in &c.listeners {
            let can_auth = *l.tls.get_ref() != TlsMode::None || l.plaintext_auth_allowed();
            let can_trust = l.auth == AuthMode::Optional && network_users;
            if !can_auth && !can_trust {
                self.err(
                    l.addr.span(),
                    "listener.tls",
                    format!(
                        "listener {:?} on {} cannot be used by anyone: tls = \"none\", AUTH without TLS is refused off loopback, and no user may send here without AUTH. \
                         Use tls = \"starttls\" (with [tls]), or auth = \"optional\" with users' networks, or allow_plaintext_auth = true on a trusted segment",
                        l.name.get_ref(),
                        l.addr.get_ref()
                    ),
                );
            }
        }
    }
}

/// Every limit that is set must be positive; a message must be able to hold 64 KiB (RFC 5321 §4.5.3.1.7).
fn check_limits(l: &LimitsConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let counts = [
        ("max_recipients", l.max_recipients),
        ("messages_per_minute", l.messages_per_minute),
        ("recipients_per_hour", l.recipients_per_hour),
        ("max_connections_per_user", l.max_connections_per_user),
        ("max_connections_per_ip", l.max_connections_per_ip),
        ("max_connections", l.max_connections),
        (
            "auth_failures_per_ip_per_minute",
            l.auth_failures_per_ip_per_minute,
        ),
    ];
    for (key, v) in counts {
        if v == Some(0) {
            out.push((key, "must be at least 1".to_owned()));
        }
    }
    if let Some(ByteSize(n)) = l.max_message_size
        && n < 64 * 1024
    {
        out.push((
            "max_message_size",
            format!("{n} bytes is below the 64 KiB every SMTP server must accept"),
        ));
    }
    if let Some(Seconds(d)) = l.idle_timeout
        && d.is_zero()
    {
        out.push(("idle_timeout", "must be longer than 0s".to_owned()));
    }
    out
}
