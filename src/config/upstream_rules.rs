//! The rules of `[[upstream]]` blocks: names, caps, and the keys that belong to
//! one kind only (an outbox has no `addr`, an SMTP provider no `dir`), a
//! password that comes with a username from exactly one source, and the
//! warnings about TLS toward the provider.

use toml::Spanned;

use super::validate::Validator;
use super::*;

impl Validator<'_> {
    pub(super) fn upstreams(&mut self) {
        let c = self.config.clone();
        if c.upstreams.is_empty() {
            self.err(&(0..0), "upstream", "at least one [[upstream]] is required");
        }
        for (i, u) in c.upstreams.iter().enumerate() {
            let at = |k: &str| format!("upstream.{i}.{k}");
            let head = u.name.span();
            let earlier: Vec<String> = c.upstreams[..i]
                .iter()
                .map(|o| o.name().to_owned())
                .collect();
            self.unique_name("upstream", &u.name, &earlier);
            if u.max_recipients == Some(0) {
                let s = self.at(&at("max_recipients"), &head);
                self.err(&s, "upstream.max_recipients", "must be at least 1");
            }
            if let Some(ByteSize(n)) = u.max_message_size
                && n < 64 * 1024
            {
                let s = self.at(&at("max_message_size"), &head);
                self.err(
                    &s,
                    "upstream.max_message_size",
                    format!("{n} bytes is below the 64 KiB every SMTP server must accept"),
                );
            }
            match *u.kind.get_ref() {
                UpstreamKind::Outbox => self.outbox_upstream(i, u),
                UpstreamKind::Smtp => self.smtp_upstream(i, u),
            }
        }
    }

    fn outbox_upstream(&mut self, i: usize, u: &UpstreamConfig) {
        let smtp_only: [(&str, bool); 16] = [
            ("account", !u.account.is_empty()),
            ("auth", u.auth.is_some()),
            ("oauth2", u.oauth2.is_some()),
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
        for (key, _) in smtp_only.iter().filter(|(_, set)| *set) {
            let s = self.at(&format!("upstream.{i}.{key}"), &u.name.span());
            self.err(
                &s,
                format!("upstream.{key}"),
                format!(
                    "upstream {:?} is kind = \"outbox\"; {key} applies only to kind = \"smtp\"",
                    u.name()
                ),
            );
        }
        if u.dir.is_none() {
            self.err(
                u.kind.span(),
                "upstream.dir",
                format!(
                    "outbox upstream {:?} needs dir (the directory for the .eml files)",
                    u.name()
                ),
            );
        }
    }

    fn smtp_upstream(&mut self, i: usize, u: &UpstreamConfig) {
        if let Some(dir) = &u.dir {
            self.err(
                dir.span(),
                "upstream.dir",
                format!(
                    "upstream {:?} is kind = \"smtp\"; dir applies only to kind = \"outbox\"",
                    u.name()
                ),
            );
        }
        if u.addr.is_none() {
            self.err(
                u.kind.span(),
                "upstream.addr",
                format!("smtp upstream {:?} needs addr = \"host:port\"", u.name()),
            );
        }
        let sources = [
            u.password.as_ref().map(InlinePassword::span),
            u.password_env.as_ref().map(Spanned::span),
            u.password_file.as_ref().map(Spanned::span),
        ];
        let given: Vec<_> = sources.iter().flatten().cloned().collect();
        if given.len() > 1 {
            self.err(
                &given[1],
                "upstream.password",
                "give only one of password, password_env, password_file",
            );
        }
        let oauth = u.auth_mode().is_oauth();
        self.oauth2(u);
        if !u.account.is_empty() {
            self.accounts(u, &given);
            return self.smtp_tls_rules(i, u);
        }
        match (&u.username, given.is_empty()) {
            (Some(_), true) if oauth => {}
            (_, false) if oauth => self.err(
                &given[0],
                "upstream.password",
                format!(
                    "upstream {:?} uses auth = {:?}: its token comes from [upstream.oauth2], not a password",
                    u.name(),
                    u.auth_mode()
                ),
            ),
            (Some(user), true) => self.err(
                user.span(),
                "upstream.password_env",
                format!(
                    "upstream {:?} has a username but no password_env, password_file or password",
                    u.name()
                ),
            ),
            (None, false) => self.err(
                &given[0],
                "upstream.username",
                format!("upstream {:?} has a password but no username", u.name()),
            ),
            _ => {}
        }
        if let Some(p) = &u.password {
            self.warn(
                Some(p.span().into()),
                format!(
                    "upstream {:?} has an inline password; use password_env or password_file outside demos",
                    u.name()
                ),
            );
        }
        self.smtp_tls_rules(i, u);
    }

    /// Caps, durations and TLS of an SMTP upstream.
    fn smtp_tls_rules(&mut self, i: usize, u: &UpstreamConfig) {
        let at = |k: &str| format!("upstream.{i}.{k}");
        let head = u.name.span();
        if u.max_connections == Some(0) {
            let s = self.at(&at("max_connections"), &head);
            self.err(&s, "upstream.max_connections", "must be at least 1");
        }
        for (key, d) in [("pool_wait", u.pool_wait), ("idle_timeout", u.idle_timeout)] {
            if d.is_some_and(|d| d.0.is_zero()) {
                let s = self.at(&at(key), &head);
                self.err(&s, format!("upstream.{key}"), "must be longer than 0s");
            }
        }
        if let Some(ca) = &u.ca_file
            && let Err(e) = crate::tls::load_ca(ca.get_ref())
        {
            self.err(ca.span(), "upstream.ca_file", e.to_string());
        }
        if u.tls_verify == Some(false) {
            let s = self.at(&at("tls_verify"), &head);
            self.warn(
                Some(s),
                format!(
                    "upstream {:?}: tls_verify = false; the provider's certificate is not checked",
                    u.name()
                ),
            );
        }
        if u.tls_mode() == TlsMode::None && u.username.is_some() {
            self.warn(
                u.tls.as_ref().map(|t| t.span().into()),
                format!(
                    "upstream {:?}: tls = \"none\" sends the provider password in clear text",
                    u.name()
                ),
            );
        }
    }

    /// `[[upstream.account]]`: instead of the upstream's own credentials; each
    /// with a sender address and exactly one password source; no two alike.
    fn accounts(&mut self, u: &UpstreamConfig, upstream_secrets: &[std::ops::Range<usize>]) {
        let name = u.name();
        let own = [
            u.username.as_ref().map(Spanned::span),
            upstream_secrets.first().cloned(),
            u.auth.as_ref().map(Spanned::span),
        ];
        if let Some(span) = own.iter().flatten().next() {
            self.err(
                span,
                "upstream.account",
                format!(
                    "upstream {name:?} has [[upstream.account]] entries: its credentials go in each account, \
                     not in username, password or auth of the upstream"
                ),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        for a in &u.account {
            let user = a.username.get_ref();
            if !user.contains('@') {
                self.err(
                    a.username.span(),
                    "upstream.account.username",
                    format!(
                        "account {user:?}: username must be the sender address it is used for (e.g. alerts@mail.example.com)"
                    ),
                );
            }
            let lower = user.to_ascii_lowercase();
            if seen.contains(&lower) {
                self.err(
                    a.username.span(),
                    "upstream.account.username",
                    format!("upstream {name:?} has two accounts for {user:?}"),
                );
            }
            seen.push(lower);
            let sources: Vec<_> = [
                a.password.as_ref().map(InlinePassword::span),
                a.password_env.as_ref().map(Spanned::span),
                a.password_file.as_ref().map(Spanned::span),
            ]
            .into_iter()
            .flatten()
            .collect();
            let oauth = a.auth_mode().is_oauth();
            match (oauth, &a.oauth2) {
                (true, None) => self.err(
                    a.auth.as_ref().map_or(a.username.span(), Spanned::span),
                    "upstream.account.oauth2",
                    format!(
                        "account {user:?} uses auth = {:?} but has no [upstream.account.oauth2] section (token_url, grant, client_id)",
                        a.auth_mode()
                    ),
                ),
                (false, Some(o)) => self.err(
                    o.token_url.span(),
                    "upstream.account.auth",
                    format!(
                        "account {user:?} has [upstream.account.oauth2] but its auth is not \"xoauth2\" or \"oauthbearer\""
                    ),
                ),
                (true, Some(o)) => {
                    self.oauth2_section(o, &format!("account {user:?}"), "upstream.account.oauth2");
                }
                (false, None) => {}
            }
            match sources.len() {
                0 if oauth => {}
                0 => self.err(
                    a.username.span(),
                    "upstream.account.password_env",
                    format!("account {user:?} has no password_env, password_file or password"),
                ),
                _ if oauth => self.err(
                    &sources[0],
                    "upstream.account.password",
                    format!(
                        "account {user:?} uses auth = {:?}: its token comes from [upstream.account.oauth2], not a password",
                        a.auth_mode()
                    ),
                ),
                1 => {}
                _ => self.err(
                    &sources[1],
                    "upstream.account.password",
                    "give only one of password, password_env, password_file",
                ),
            }
            if let Some(p) = &a.password {
                self.warn(
                    Some(p.span().into()),
                    format!(
                        "account {user:?} has an inline password; use password_env or password_file outside demos"
                    ),
                );
            }
        }
    }

    /// `auth = "xoauth2" | "oauthbearer"` and `[upstream.oauth2]` go together;
    /// the grant has what it needs; tokens travel over TLS except to loopback.
    fn oauth2(&mut self, u: &UpstreamConfig) {
        let head = u.name.span();
        let name = u.name();
        let auth_span = u.auth.as_ref().map_or(head.clone(), Spanned::span);
        match (u.auth_mode().is_oauth(), &u.oauth2) {
            (true, None) => self.err(
                &auth_span,
                "upstream.oauth2",
                format!(
                    "upstream {name:?} uses auth = {:?} but has no [upstream.oauth2] section (token_url, grant, client_id)",
                    u.auth_mode()
                ),
            ),
            (false, Some(o)) => self.err(
                o.token_url.span(),
                "upstream.auth",
                format!(
                    "upstream {name:?} has [upstream.oauth2] but auth is not \"xoauth2\" or \"oauthbearer\""
                ),
            ),
            _ => {}
        }
        if u.auth_mode().is_oauth() && u.username.is_none() {
            self.err(
                &auth_span,
                "upstream.username",
                format!("upstream {name:?}: OAuth2 needs username (the mailbox the token is for)"),
            );
        }
        if let Some(o) = &u.oauth2 {
            self.oauth2_section(o, &format!("upstream {name:?}"), "upstream.oauth2");
        }
    }

    /// One `[upstream.oauth2]` or `[upstream.account.oauth2]` section: the
    /// grant has what it needs; tokens travel over TLS except to loopback.
    /// `who` names its owner in messages, `path` is the section's key path.
    fn oauth2_section(&mut self, o: &OAuth2Config, who: &str, path: &str) {
        if let Err(why) = check_token_url(o.token_url.get_ref()) {
            self.err(o.token_url.span(), format!("{path}.token_url"), why);
        }
        if let (Some(_), Some(f)) = (&o.client_secret_env, &o.client_secret_file) {
            self.err(
                f.span(),
                format!("{path}.client_secret_file"),
                "give only one of client_secret_env, client_secret_file",
            );
        }
        match *o.grant.get_ref() {
            Grant::ClientCredentials => {
                if o.client_secret().is_none() {
                    self.err(
                        o.grant.span(),
                        format!("{path}.client_secret_env"),
                        format!(
                            "{who}: grant = \"client_credentials\" needs client_secret_env or client_secret_file"
                        ),
                    );
                }
                if let Some(f) = &o.refresh_token_file {
                    self.err(
                        f.span(),
                        format!("{path}.refresh_token_file"),
                        "refresh_token_file applies only to grant = \"refresh_token\"",
                    );
                }
            }
            Grant::RefreshToken => {
                if o.refresh_token_file.is_none() {
                    self.err(
                        o.grant.span(),
                        format!("{path}.refresh_token_file"),
                        format!(
                            "{who}: grant = \"refresh_token\" needs refresh_token_file (postern writes a rotated token back to it)"
                        ),
                    );
                }
            }
        }
    }
}

/// A token URL postern will use: `https://host[:port]/path`, or `http://` only
/// to a loopback address (a local token helper, tests). Returns the reason otherwise.
///
/// # Errors
/// Words for the administrator.
pub fn check_token_url(url: &str) -> Result<(), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} is not an https:// URL"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no host (or has user info in it)"));
    }
    if !https {
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "{url:?}: tokens and secrets travel only over https (plain http only to a loopback address)"
            ));
        }
    }
    Ok(())
}
