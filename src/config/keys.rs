//! The schema as data: every table and key, its kind, default, example and
//! meaning. `shape.rs` checks a file against it before serde sees it (so all
//! mistakes are reported, in words, at the key's line), and
//! `docs/configuration.md` is generated from it and checked against it by a
//! test. A test also checks these tables against the serde structs in
//! `types.rs`, so a key cannot exist in one and not in the other.

/// What a key's value must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any string.
    Text,
    /// A non-empty name, unique among its kind.
    Name,
    /// The greeting / EHLO name: non-empty, no spaces.
    Hostname,
    Bool,
    /// A whole number from 0 to 4294967295.
    Count,
    /// Bytes: an integer or `"8MiB"`.
    Size,
    /// Seconds: an integer or `"30s"`.
    Duration,
    /// `IP:port` to listen on.
    ListenAddr,
    /// `host:port` to connect to.
    HostPort,
    /// A file or directory; relative to the config file's directory.
    Path,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A list of addresses or networks (`"192.168.10.23"`, `"10.0.0.0/8"`).
    Networks,
    /// A list of sender patterns.
    Senders,
    /// A list of names of other blocks (`fallback = ["backup"]`).
    Names,
    /// An e-mail address.
    Address,
    /// A PHC (`$argon2id$...`) or bcrypt (`$2b$...`) hash.
    PasswordHash,
    /// A single table (`[server]`).
    Section(&'static str),
    /// An array of tables (`[[user]]`).
    Blocks(&'static str),
}

impl Kind {
    /// The type as the docs say it.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Text | Kind::Name | Kind::Hostname | Kind::Address => "string",
            Kind::Bool => "boolean",
            Kind::Count => "integer",
            Kind::Size => "size",
            Kind::Duration => "duration",
            Kind::ListenAddr => "IP:port",
            Kind::HostPort => "host:port",
            Kind::Path => "path",
            Kind::Choice(_) => "one of",
            Kind::Networks => "list of networks",
            Kind::Senders => "list of patterns",
            Kind::Names => "list of names",
            Kind::PasswordHash => "hash string",
            Kind::Section(_) => "table",
            Kind::Blocks(_) => "array of tables",
        }
    }

    /// The unit, for the docs.
    pub fn unit(self) -> &'static str {
        match self {
            Kind::Size => "bytes",
            Kind::Duration => "seconds",
            Kind::Count => "count",
            _ => "-",
        }
    }
}

/// One key of a table.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// What applies when the key is left out (`REQUIRED` when it cannot be).
    pub default: &'static str,
    pub example: &'static str,
    pub doc: &'static str,
}

/// One table: `server`, `listener`, `user.limits`, ... (`""` is the top level).
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub path: &'static str,
    pub array: bool,
    pub keys: &'static [Key],
}

impl Table {
    /// `[server]`, `[[user]]`, `[user.limits]`, "the top level".
    pub fn display(&self) -> String {
        match (self.path, self.array) {
            ("", _) => "the top level".to_owned(),
            (p, true) => format!("[[{p}]]"),
            (p, false) => format!("[{p}]"),
        }
    }

    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }
}

const fn key(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        example,
        doc,
    }
}

/// The `default` of a key that must be given.
pub const REQUIRED: &str = "(required)";

pub const TLS_MODES: &[&str] = &["none", "starttls", "implicit"];
pub const UPSTREAM_AUTHS: &[&str] = &["auto", "plain", "login", "xoauth2", "oauthbearer"];
pub const GRANTS: &[&str] = &["client_credentials", "refresh_token"];
pub const AUTH_MODES: &[&str] = &["required", "optional"];
pub const LOG_FORMATS: &[&str] = &["text", "json"];
pub const UPSTREAM_KINDS: &[&str] = &["smtp", "outbox"];
pub const DELIVERY_MODES: &[&str] = &["relay", "spool", "fallback"];
pub const ON_REDIS_ERROR: &[&str] = &["local", "refuse"];

// One line per key, so the schema reads as a table (rustfmt would spread each
// call over seven lines).
#[rustfmt::skip]
const LIMIT_KEYS: &[Key] = &[
    key("max_message_size", Kind::Size, "8MiB", "\"8MiB\"", "SIZE advertised and enforced while the message streams; the upstream's max_message_size and advertised SIZE lower it"),
    key("max_recipients", Kind::Count, "100", "100", "recipients per message; the next RCPT gets 452 4.5.3; the upstream's max_recipients lowers it"),
    key("messages_per_minute", Kind::Count, "60", "60", "messages per user per minute (burst the same); the next MAIL gets 450 4.7.1"),
    key("recipients_per_hour", Kind::Count, "1000", "1000", "recipients per user per hour; the next RCPT gets 450 4.7.1"),
    key("max_connections_per_user", Kind::Count, "10", "10", "concurrent sessions of one user; the AUTH over it gets 421 4.7.0"),
    key("max_connections_per_ip", Kind::Count, "20", "20", "concurrent connections from one IPv4 address or IPv6 /64; refused at connect with 421 4.7.0"),
    key("max_connections", Kind::Count, "1000", "1000", "concurrent connections to the whole server"),
    key("idle_timeout", Kind::Duration, "5m", "\"5m\"", "a client silent this long gets 421 4.4.2 and is closed"),
    key("auth_failures_per_ip_per_minute", Kind::Count, "10", "10", "failed AUTHs from one address before further AUTHs get 454 4.7.0 unchecked"),
];

/// Every table of the file, the top level first.
#[rustfmt::skip]
pub const TABLES: &[Table] = &[
    Table {
        path: "",
        array: false,
        keys: &[
            key("server", Kind::Section("server"), "defaults", "[server]", "greeting name, shutdown, logs"),
            key("listener", Kind::Blocks("listener"), REQUIRED, "[[listener]]", "one block per address postern listens on"),
            key("tls", Kind::Section("tls"), "none", "[tls]", "the certificate for STARTTLS and implicit-TLS listeners"),
            key("metrics", Kind::Section("metrics"), "none (no metrics endpoint)", "[metrics]", "the Prometheus endpoint"),
            key("limits", Kind::Section("limits"), "defaults", "[limits]", "server-wide limits, each overridable per user"),
            key("upstream", Kind::Blocks("upstream"), REQUIRED, "[[upstream]]", "one block per provider or outbox"),
            key("user", Kind::Blocks("user"), "none", "[[user]]", "one block per device or application"),
            key("spool", Kind::Section("spool"), "none (no spool)", "[spool]", "the durable queue for delivery = \"spool\" and \"fallback\" (docs/delivery.md)"),
            key("cluster", Kind::Section("cluster"), "none (limits are this replica's own)", "[cluster]", "replicas sharing their limits through one Redis"),
        ],
    },
    Table {
        path: "server",
        array: false,
        keys: &[
            key("hostname", Kind::Hostname, "postern.localdomain", "\"relay.example.lan\"", "the name in the greeting and the EHLO reply, and the EHLO name postern gives upstream"),
            key("shutdown_grace", Kind::Duration, "30s", "\"30s\"", "on SIGTERM, transactions in flight may finish for this long"),
            key("log_format", Kind::Choice(LOG_FORMATS), "text", "\"json\"", "log lines as text or JSON, on standard error"),
            key("auth_cache_ttl", Kind::Duration, "10m", "\"10m\"", "a successful AUTH is remembered this long: the same user, password hash and password skip the argon2 check (failures never are); 0 = off"),
            key("auth_workers", Kind::Count, "0", "1", "password checks (argon2) run at once; 0 = one fewer than the cores, at least one"),
            key("auth_queue", Kind::Count, "64", "64", "password checks that may wait for a worker; an AUTH beyond them gets 454 4.7.0 without a check"),
            key("worker_threads", Kind::Count, "0", "1", "threads that run the sessions and the pools, read at start (a reload keeps the running number); 0 = one fewer than the cores, at least one"),
        ],
    },
    Table {
        path: "listener",
        array: true,
        keys: &[
            key("name", Kind::Name, REQUIRED, "\"submission\"", "label in logs and metrics"),
            key("addr", Kind::ListenAddr, REQUIRED, "\"0.0.0.0:587\"", "IP address and port to listen on (no host names)"),
            key("tls", Kind::Choice(TLS_MODES), "none", "\"starttls\"", "\"starttls\" and \"implicit\" need [tls]"),
            key("auth", Kind::Choice(AUTH_MODES), "required", "\"optional\"", "\"optional\": a client in a user's networks sends as that user without AUTH"),
            key("allow_plaintext_auth", Kind::Bool, "true on loopback addresses, else false", "false", "AUTH before TLS"),
            key("proxy_protocol", Kind::Bool, "false", "true", "read a HAProxy PROXY v1/v2 header first"),
            key("proxy_from", Kind::Networks, "[]", "[\"10.0.0.0/8\"]", "sources allowed to send a PROXY header (required with proxy_protocol)"),
        ],
    },
    Table {
        path: "tls",
        array: false,
        keys: &[
            key("cert", Kind::Path, REQUIRED, "\"/etc/letsencrypt/live/relay/fullchain.pem\"", "PEM certificate chain; read again on reload (SIGHUP), a pair that does not load keeps the running one"),
            key("key", Kind::Path, REQUIRED, "\"/etc/letsencrypt/live/relay/privkey.pem\"", "PEM private key of that certificate (check refuses one that is not); read again on reload"),
        ],
    },
    Table {
        path: "metrics",
        array: false,
        keys: &[key(
            "addr",
            Kind::ListenAddr,
            "required",
            "\"127.0.0.1:9465\"",
            "serves GET /metrics, /healthz and /readyz",
        )],
    },
    Table {
        path: "limits",
        array: false,
        keys: LIMIT_KEYS,
    },
    Table {
        path: "upstream",
        array: true,
        keys: &[
            key("name", Kind::Name, REQUIRED, "\"aliyun\"", "what users name in upstream; label in metrics"),
            key("kind", Kind::Choice(UPSTREAM_KINDS), REQUIRED, "\"smtp\"", "a provider (smtp) or a directory of .eml files (outbox)"),
            key("addr", Kind::HostPort, "required for smtp", "\"smtpdm.aliyun.com:465\"", "the provider's submission server"),
            key("tls", Kind::Choice(TLS_MODES), "implicit on port 465, starttls otherwise", "\"starttls\"", "TLS toward the provider; \"none\" only when written out"),
            key("tls_verify", Kind::Bool, "true", "true", "verify the provider's certificate (false: lab use only, warned about)"),
            key("ca_file", Kind::Path, "the webpki roots", "\"provider-ca.pem\"", "PEM: the provider's CA, or its own self-signed certificate (pinned), instead of the webpki roots"),
            key("username", Kind::Text, "none (no AUTH)", "\"noreply@mail.example.com\"", "the provider account"),
            key("auth", Kind::Choice(UPSTREAM_AUTHS), "auto", "\"xoauth2\"", "auto: PLAIN or LOGIN as offered; xoauth2 and oauthbearer take a token from [upstream.oauth2]"),
            key("account", Kind::Blocks("upstream.account"), "none", "[[upstream.account]]", "one credential per sender address, instead of username and password"),
            key("oauth2", Kind::Section("upstream.oauth2"), "none", "[upstream.oauth2]", "where OAuth2 tokens come from (auth = \"xoauth2\" or \"oauthbearer\")"),
            key("password", Kind::Text, "none", "\"secret\"", "inline password: demos only, warned about"),
            key("password_env", Kind::Text, "none", "\"ALIYUN_SMTP_PASSWORD\"", "environment variable holding the password, read when run starts"),
            key("password_file", Kind::Path, "none", "\"/etc/postern/aliyun.secret\"", "file holding the password (trailing newline ignored)"),
            key("max_connections", Kind::Count, "10", "10", "the provider's per-account connection cap"),
            key("pool", Kind::Bool, "true", "true", "keep authenticated connections warm and reuse them"),
            key("pool_wait", Kind::Duration, "10s", "\"10s\"", "a client waits this long for a free connection, then 451 4.4.5"),
            key("health_check_interval", Kind::Duration, "5m", "\"5m\"", "EHLO+AUTH+QUIT probe of the credentials; 0 = off"),
            key("idle_timeout", Kind::Duration, "25s", "\"25s\"", "a pooled connection idle this long is closed (under the provider's cut)"),
            key("max_recipients", Kind::Count, "no cap of its own", "100", "caps every user's max_recipients toward this upstream"),
            key("max_message_size", Kind::Size, "no cap of its own", "\"8MiB\"", "caps every user's max_message_size toward this upstream"),
            key("dir", Kind::Path, "required for outbox", "\"/var/lib/postern/outbox\"", "outbox directory: <id>.eml plus <id>.json per message"),
            key("delivery", Kind::Choice(DELIVERY_MODES), "relay", "\"fallback\"", "relay: the device hears the provider's verdict; spool: 250 once durably spooled, delivered in the background; fallback: relay, and spool what the provider cannot take now (needs [spool])"),
            key("fallback", Kind::Names, "[]", "[\"aliyun-backup\"]", "other smtp upstreams tried in order when this one cannot be set up (connect, TLS, greeting, EHLO, AUTH), in every delivery mode"),
            key("max_upstream_connections_per_user", Kind::Count, "half of max_connections, at least 1", "5", "provider connections one user's sessions may hold at once, then pool_wait and 451 4.4.5; also the spool's deliveries at once"),
            key("messages_per_day", Kind::Count, "0 (none)", "2000", "provider quota (GCRA, a day's quota as the burst): relay mode answers 451 4.7.1 over it; spool and fallback mode keep the mail until it allows; with [cluster], one quota for every replica"),
            key("recipients_per_day", Kind::Count, "0 (none)", "10000", "provider quota of recipients, as messages_per_day (relay mode refuses the RCPT with 451 4.7.1)"),
        ],
    },
    Table {
        path: "spool",
        array: false,
        keys: &[
            key("dir", Kind::Path, REQUIRED, "\"/var/lib/postern/spool\"", "the spool directory, created if missing; one postern run per directory"),
            key("max_size", Kind::Size, "1GiB", "\"1GiB\"", "message bytes waiting; over it new spooled messages get 452 4.3.1 (relay still works)"),
            key("max_age", Kind::Duration, "5d", "\"5d\"", "undelivered this long: dead letter in dir/dead/"),
            key("retry_initial", Kind::Duration, "1m", "\"1m\"", "first retry delay; doubles per attempt, plus up to 25 % jitter"),
            key("retry_max", Kind::Duration, "1h", "\"1h\"", "the longest retry delay"),
            key("notify", Kind::Address, "none", "\"postmaster@example.lan\"", "one notice per dead letter to this address, through the same upstream; never to the device's sender"),
        ],
    },
    Table {
        path: "upstream.account",
        array: true,
        keys: &[
            key("username", Kind::Text, REQUIRED, "\"alerts@mail.example.com\"", "the AUTH user, used when the envelope sender (after rewrite_sender) equals it"),
            key("password", Kind::Text, "none", "\"secret\"", "inline password: demos only, warned about"),
            key("password_env", Kind::Text, "none", "\"DM_ALERTS\"", "environment variable holding the password, read when run starts"),
            key("password_file", Kind::Path, "none", "\"/etc/postern/dm-alerts.secret\"", "file holding the password (trailing newline ignored)"),
            key("auth", Kind::Choice(UPSTREAM_AUTHS), "auto", "\"xoauth2\"", "this account's mechanism; xoauth2 and oauthbearer take a token from [upstream.account.oauth2] instead of a password"),
            key("oauth2", Kind::Section("upstream.account.oauth2"), "none", "[upstream.account.oauth2]", "where this account's OAuth2 tokens come from; cached for this account alone"),
        ],
    },
    Table {
        path: "upstream.account.oauth2",
        array: false,
        keys: OAUTH2_KEYS,
    },
    Table {
        path: "upstream.oauth2",
        array: false,
        keys: OAUTH2_KEYS,
    },
    Table {
        path: "user",
        array: true,
        keys: &[
            key("name", Kind::Name, REQUIRED, "\"printer-2f\"", "the AUTH user name; label in metrics"),
            key("password_hash", Kind::PasswordHash, "none (networks only)", "\"$argon2id$v=19$...\"", "from `postern hash-password`"),
            key("networks", Kind::Networks, "[]", "[\"192.168.10.23\"]", "may send from these without AUTH on an auth = \"optional\" listener; a bare address is /32"),
            key("upstream", Kind::Text, "the only upstream", "\"aliyun\"", "the upstream this user relays through"),
            key("allowed_senders", Kind::Senders, "[] (none)", "[\"*@example.com\"]", "envelope senders: a@b, *@domain, or *"),
            key("rewrite_sender", Kind::Address, "none", "\"noreply@mail.example.com\"", "envelope MAIL FROM sent upstream instead of the device's"),
            key("rewrite_header_from", Kind::Bool, "false", "true", "also replace the From: header (the original goes to Reply-To:)"),
            key("limits", Kind::Section("user.limits"), "[limits]", "[user.limits]", "this user's overrides of [limits]"),
        ],
    },
    Table {
        path: "cluster",
        array: false,
        keys: &[
            key("redis", Kind::Text, REQUIRED, "\"redis://10.0.0.5:6379/0\"", "redis:// or rediss:// (TLS) URL of the shared Redis; no password in it"),
            key("username", Kind::Text, "none", "\"postern\"", "the Redis ACL user"),
            key("password_env", Kind::Text, "none", "\"POSTERN_REDIS_PASSWORD\"", "environment variable holding the Redis password, read when run starts"),
            key("password_file", Kind::Path, "none", "\"/etc/postern/redis.secret\"", "file holding the Redis password (trailing newline ignored)"),
            key("ca_file", Kind::Path, "the system roots", "\"redis-ca.pem\"", "PEM CA (or the Redis server's own self-signed certificate) for rediss://, instead of the system roots"),
            key("on_redis_error", Kind::Choice(ON_REDIS_ERROR), "local", "\"refuse\"", "Redis down or slow: \"local\" decides with this replica's limits divided by replicas; \"refuse\" answers 451 4.3.0"),
            key("replicas", Kind::Count, "1", "2", "how many replicas share the limits; the local fallback divides every shared limit by it"),
            key("timeout", Kind::Duration, "250ms", "\"250ms\"", "a Redis decision slower than this falls back (on_redis_error)"),
            key("lease_ttl", Kind::Duration, "15s", "\"15s\"", "a connection lease not renewed for this long is freed (a dead replica's slots)"),
            key("key_prefix", Kind::Text, "postern", "\"site-a\"", "first part of every Redis key"),
        ],
    },
    Table {
        path: "user.limits",
        array: false,
        keys: LIMIT_KEYS,
    },
];

/// The table at `path`.
pub fn table(path: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.path == path)
}

/// The keys of `[upstream.oauth2]` and `[upstream.account.oauth2]`.
#[rustfmt::skip]
const OAUTH2_KEYS: &[Key] = &[
            key("token_url", Kind::Text, REQUIRED, "\"https://login.microsoftonline.com/TENANT/oauth2/v2.0/token\"", "the token endpoint: https, or http only to a loopback address"),
            key("grant", Kind::Choice(GRANTS), REQUIRED, "\"client_credentials\"", "client_credentials (app-only) or refresh_token (delegated)"),
            key("client_id", Kind::Text, REQUIRED, "\"00000000-0000-0000-0000-000000000000\"", "the application (client) id"),
            key("client_secret_env", Kind::Text, "none", "\"M365_CLIENT_SECRET\"", "environment variable holding the client secret, read when run starts"),
            key("client_secret_file", Kind::Path, "none", "\"/etc/postern/m365.secret\"", "file holding the client secret (trailing newline ignored)"),
            key("refresh_token_file", Kind::Path, "required for refresh_token", "\"/var/lib/postern/gmail.refresh\"", "the refresh token; a rotated one is written back atomically"),
            key("scope", Kind::Text, "none", "\"https://outlook.office365.com/.default\"", "the scope asked for"),
];
