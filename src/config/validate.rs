//! Whole-config validation: the rules that span keys, each reported with the
//! key and the line of the offending value.

use std::ops::Range;

use toml::Spanned;

use super::*;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) config: Config,
    /// Where `[limits]` is, for messages about it.
    pub(super) limits_span: Range<usize>,
}

impl Validator<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.config.source.clone(),
            line: self.line(span),
            key: key.into(),
            message: msg.into(),
        }
    }

    /// A `name` must be non-empty and differ from every `earlier` one of its kind.
    fn unique_name<'n>(
        &self,
        kind: &str,
        name: &Spanned<String>,
        mut earlier: impl Iterator<Item = &'n str>,
    ) -> Result<(), ConfigError> {
        let key = format!("{kind}.name");
        if name.get_ref().is_empty() {
            return Err(self.err(&name.span(), key, "must not be empty"));
        }
        if earlier.any(|o| o == name.get_ref()) {
            let msg = format!("duplicate {kind} name {:?}", name.get_ref());
            return Err(self.err(&name.span(), key, msg));
        }
        Ok(())
    }

    pub(super) fn run(mut self) -> Result<Config, ConfigError> {
        self.listeners()?;
        self.tls()?;
        self.upstreams()?;
        self.users()?;
        self.limits()?;
        Ok(self.config)
    }

    fn listeners(&mut self) -> Result<(), ConfigError> {
        let c = &self.config;
        if c.listeners.is_empty() {
            return Err(self.err(&(0..0), "listener", "at least one [[listener]] is required"));
        }
        for (i, l) in c.listeners.iter().enumerate() {
            let earlier = c.listeners[..i].iter().map(|o| o.name.get_ref().as_str());
            self.unique_name("listener", &l.name, earlier)?;
            let dup_addr = c.listeners[..i]
                .iter()
                .any(|o| o.addr.get_ref() == l.addr.get_ref() && l.addr.get_ref().port() != 0);
            if dup_addr {
                return Err(self.err(
                    &l.addr.span(),
                    "listener.addr",
                    format!("{} is used by two listeners", l.addr.get_ref()),
                ));
            }
            if let Some(m) = &c.metrics
                && m.addr == *l.addr.get_ref()
                && m.addr.port() != 0
            {
                return Err(self.err(
                    &l.addr.span(),
                    "listener.addr",
                    format!("{} is also the [metrics] addr", m.addr),
                ));
            }
            if *l.tls.get_ref() != TlsMode::None && c.tls.is_none() {
                return Err(self.err(
                    &l.tls.span(),
                    "listener.tls",
                    format!(
                        "listener {:?} uses TLS but there is no [tls] section with cert and key",
                        l.name.get_ref()
                    ),
                ));
            }
            if let Some(proxy) = l.proxy_protocol.as_ref().filter(|p| *p.get_ref())
                && l.proxy_from.is_empty()
            {
                return Err(self.err(
                        &proxy.span(),
                        "listener.proxy_from",
                        "proxy_protocol = true needs proxy_from (the sources allowed to send a PROXY header)",
                    ));
            }
        }
        Ok(())
    }

    fn tls(&mut self) -> Result<(), ConfigError> {
        let Some(tls) = &self.config.tls else {
            return Ok(());
        };
        match crate::tls::load_cert_and_key(tls.cert.get_ref(), tls.key.get_ref()) {
            Ok(_) => Ok(()),
            Err(e @ crate::tls::TlsError::Key { .. }) => {
                Err(self.err(&tls.key.span(), "tls.key", e.to_string()))
            }
            Err(e) => Err(self.err(&tls.cert.span(), "tls.cert", e.to_string())),
        }
    }

    fn upstreams(&mut self) -> Result<(), ConfigError> {
        let c = &self.config;
        if c.upstreams.is_empty() {
            return Err(self.err(&(0..0), "upstream", "at least one [[upstream]] is required"));
        }
        let mut warnings = Vec::new();
        for (i, u) in c.upstreams.iter().enumerate() {
            let span = u.name.span();
            self.unique_name(
                "upstream",
                &u.name,
                c.upstreams[..i].iter().map(UpstreamConfig::name),
            )?;
            let sources = [
                u.password.as_ref().map(|p| p.span()),
                u.password_env.as_ref().map(|p| p.span()),
                u.password_file.as_ref().map(|p| p.span()),
            ];
            let given: Vec<_> = sources.iter().flatten().collect();
            if u.max_recipients == Some(0) {
                return Err(self.err(&span, "upstream.max_recipients", "must be at least 1"));
            }
            if let Some(ByteSize(n)) = u.max_message_size
                && n < 64 * 1024
            {
                return Err(self.err(
                    &span,
                    "upstream.max_message_size",
                    format!("{n} bytes is below the 64 KiB every SMTP server must accept"),
                ));
            }
            match *u.kind.get_ref() {
                UpstreamKind::Outbox => {
                    let smtp_only: [(&str, bool); 13] = [
                        ("addr", u.addr.is_some()),
                        ("tls", u.tls.is_some()),
                        ("tls_verify", u.tls_verify.is_some()),
                        ("ca_file", u.ca_file.is_some()),
                        ("username", u.username.is_some()),
                        ("password", u.password.is_some()),
                        ("password_env", u.password_env.is_some()),
                        ("password_file", u.password_file.is_some()),
                        ("max_connections", u.max_connections.is_some()),
                        ("pool", u.pool.is_some()),
                        ("pool_wait", u.pool_wait.is_some()),
                        ("health_check_interval", u.health_check_interval.is_some()),
                        ("idle_timeout", u.idle_timeout.is_some()),
                    ];
                    if let Some((key, _)) = smtp_only.iter().find(|(_, set)| *set) {
                        return Err(self.err(
                            &span,
                            format!("upstream.{key}"),
                            format!("upstream {:?} is kind = \"outbox\"; {key} applies only to kind = \"smtp\"", u.name()),
                        ));
                    }
                    if u.dir.is_none() {
                        return Err(self.err(
                            &u.kind.span(),
                            "upstream.dir",
                            format!("outbox upstream {:?} needs dir", u.name()),
                        ));
                    }
                }
                UpstreamKind::Smtp => {
                    if u.dir.is_some() {
                        return Err(self.err(
                            &span,
                            "upstream.dir",
                            format!("upstream {:?} is kind = \"smtp\"; dir applies only to kind = \"outbox\"", u.name()),
                        ));
                    }
                    let Some(addr) = &u.addr else {
                        return Err(self.err(
                            &u.kind.span(),
                            "upstream.addr",
                            format!("smtp upstream {:?} needs addr = \"host:port\"", u.name()),
                        ));
                    };
                    let port_ok = addr.get_ref().rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0)
                    });
                    if !port_ok {
                        return Err(self.err(
                            &addr.span(),
                            "upstream.addr",
                            format!("{:?} is not host:port", addr.get_ref()),
                        ));
                    }
                    if given.len() > 1 {
                        return Err(self.err(
                            given[1],
                            "upstream.password",
                            "give only one of password, password_env, password_file",
                        ));
                    }
                    match (&u.username, given.is_empty()) {
                        (Some(_), true) => {
                            return Err(self.err(
                                &span,
                                "upstream.password_env",
                                format!("upstream {:?} has a username but no password_env, password_file or password", u.name()),
                            ));
                        }
                        (None, false) => {
                            return Err(self.err(
                                &span,
                                "upstream.username",
                                format!("upstream {:?} has a password but no username", u.name()),
                            ));
                        }
                        _ => {}
                    }
                    if let Some(p) = &u.password {
                        warnings.push(format!(
                            "line {}: upstream {:?} has an inline password; use password_env or password_file outside demos",
                            self.line(&p.span()),
                            u.name()
                        ));
                    }
                    if u.max_connections == Some(0) {
                        return Err(self.err(
                            &span,
                            "upstream.max_connections",
                            "must be at least 1",
                        ));
                    }
                    let zero_durations =
                        [("pool_wait", u.pool_wait), ("idle_timeout", u.idle_timeout)];
                    if let Some((key, _)) = zero_durations
                        .iter()
                        .find(|(_, d)| d.is_some_and(|d| d.0.is_zero()))
                    {
                        return Err(self.err(
                            &span,
                            format!("upstream.{key}"),
                            "must be longer than 0s",
                        ));
                    }
                    if let Some(ca) = &u.ca_file
                        && let Err(e) = crate::tls::load_ca(ca.get_ref())
                    {
                        return Err(self.err(&ca.span(), "upstream.ca_file", e.to_string()));
                    }
                    if u.tls_verify == Some(false) {
                        warnings.push(format!(
                            "upstream {:?}: tls_verify = false; the provider's certificate is not checked",
                            u.name()
                        ));
                    }
                    if u.tls_mode() == TlsMode::None && u.username.is_some() {
                        warnings.push(format!(
                            "upstream {:?}: tls = \"none\" sends the provider password in clear text",
                            u.name()
                        ));
                    }
                }
            }
        }
        self.config.warnings.extend(warnings);
        Ok(())
    }

    fn users(&mut self) -> Result<(), ConfigError> {
        let c = &self.config;
        let mut warnings = Vec::new();
        for (i, u) in c.users.iter().enumerate() {
            let span = u.name.span();
            self.unique_name("user", &u.name, c.users[..i].iter().map(UserConfig::name))?;
            match &u.upstream {
                Some(up) if c.upstream(up.get_ref()).is_none() => {
                    return Err(self.err(
                        &up.span(),
                        "user.upstream",
                        format!(
                            "user {:?} names upstream {:?}, which is not defined",
                            u.name(),
                            up.get_ref()
                        ),
                    ));
                }
                None if c.upstreams.len() > 1 => {
                    return Err(self.err(
                        &span,
                        "user.upstream",
                        format!(
                            "user {:?} must name its upstream: there are several",
                            u.name()
                        ),
                    ));
                }
                _ => {}
            }
            if let Some(hash) = &u.password_hash {
                if let Err(e) = crate::password::PasswordHash::parse(hash.get_ref()) {
                    return Err(self.err(&hash.span(), "user.password_hash", e));
                }
            } else if u.networks.is_empty() {
                return Err(self.err(
                    &span,
                    "user.password_hash",
                    format!(
                        "user {:?} has neither password_hash nor networks and could never send",
                        u.name()
                    ),
                ));
            }
            for s in &u.allowed_senders {
                if let Err(e) = crate::policy::SenderPattern::parse(s.get_ref()) {
                    return Err(self.err(&s.span(), "user.allowed_senders", e));
                }
            }
            if let Some(r) = &u.rewrite_sender {
                if !crate::policy::is_plain_address(r.get_ref()) {
                    return Err(self.err(
                        &r.span(),
                        "user.rewrite_sender",
                        format!("{:?} is not an address like user@example.com", r.get_ref()),
                    ));
                }
            } else if u.rewrite_header_from {
                return Err(self.err(
                    &span,
                    "user.rewrite_header_from",
                    "rewrite_header_from needs rewrite_sender (the address to put in From:)",
                ));
            }
            if u.allowed_senders.is_empty() && u.rewrite_sender.is_none() {
                warnings.push(format!(
                    "user {:?} has no allowed_senders and no rewrite_sender: every MAIL FROM will be refused",
                    u.name()
                ));
            }
            if let Err((key, msg)) = check_limits(&u.limits) {
                return Err(self.err(&span, format!("user.limits.{key}"), msg));
            }
        }
        let optional = c.listeners.iter().any(|l| l.auth == AuthMode::Optional);
        if optional && !c.users.iter().any(|u| !u.networks.is_empty()) {
            warnings.push(
                "a listener has auth = \"optional\" but no user has networks: every client must still AUTH"
                    .to_owned(),
            );
        }
        self.config.warnings.extend(warnings);
        Ok(())
    }

    fn limits(&mut self) -> Result<(), ConfigError> {
        let raw = LimitsConfig {
            max_message_size: Some(ByteSize(self.config.limits.max_message_size)),
            max_recipients: Some(self.config.limits.max_recipients),
            messages_per_minute: Some(self.config.limits.messages_per_minute),
            recipients_per_hour: Some(self.config.limits.recipients_per_hour),
            max_connections_per_user: Some(self.config.limits.max_connections_per_user),
            max_connections_per_ip: Some(self.config.limits.max_connections_per_ip),
            max_connections: Some(self.config.limits.max_connections),
            idle_timeout: Some(Seconds(self.config.limits.idle_timeout)),
            auth_failures_per_ip_per_minute: Some(
                self.config.limits.auth_failures_per_ip_per_minute,
            ),
        };
        if let Err((key, msg)) = check_limits(&raw) {
            return Err(self.err(&self.limits_span, format!("limits.{key}"), msg));
        }
        Ok(())
    }
}

/// Every limit that is set must be positive; a message must be able to hold 64 KiB (RFC 5321 §4.5.3.1.7).
fn check_limits(l: &LimitsConfig) -> Result<(), (&'static str, String)> {
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
            return Err((key, "must be at least 1".to_owned()));
        }
    }
    if let Some(ByteSize(n)) = l.max_message_size
        && n < 64 * 1024
    {
        return Err((
            "max_message_size",
            format!("{n} bytes is below the 64 KiB every SMTP server must accept"),
        ));
    }
    if let Some(Seconds(d)) = l.idle_timeout
        && d.is_zero()
    {
        return Err(("idle_timeout", "must be longer than 0s".to_owned()));
    }
    Ok(())
}
