//! The schema in `keys.rs` against the code: exactly the keys serde accepts,
//! and the defaults the code fills in.

use super::*;

const BASE: &str = r#"[[listener]]
name = "local"
addr = "127.0.0.1:2525"

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "var/outbox"
"#;

/// The keys serde accepts in the table at `path`, from its unknown-field message.
fn serde_keys(path: &str) -> Vec<String> {
    let probe = "zz_not_a_key";
    let text = match path {
        "" => format!("{probe} = 1\n"),
        "user.limits" => format!("[[user]]\n[user.limits]\n{probe} = 1\n"),
        "upstream.oauth2" => format!("[[upstream]]\n[upstream.oauth2]\n{probe} = 1\n"),
        "upstream.account" => format!("[[upstream]]\n[[upstream.account]]\n{probe} = 1\n"),
        "upstream.account.oauth2" => {
            format!("[[upstream]]\n[[upstream.account]]\n[upstream.account.oauth2]\n{probe} = 1\n")
        }
        p if keys::table(p).is_some_and(|t| t.array) => format!("[[{p}]]\n{probe} = 1\n"),
        p => format!("[{p}]\n{probe} = 1\n"),
    };
    let err = match toml::from_str::<types::RawConfig>(&text) {
        Ok(_) => panic!("serde accepted {probe} in [{path}]"),
        Err(e) => e.to_string(),
    };
    let expected = err
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("[{path}]: no list of fields in {err}"));
    let mut names: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn the_schema_lists_exactly_the_keys_serde_accepts() {
    for t in keys::TABLES {
        let mut schema: Vec<String> = t.keys.iter().map(|k| k.name.to_owned()).collect();
        schema.sort();
        assert_eq!(schema, serde_keys(t.path), "table [{}]", t.path);
    }
}

#[test]
fn schema_defaults_match_the_code() {
    let d = Limits::default();
    let limits = keys::table("limits").unwrap();
    let default = |k: &str| limits.key(k).unwrap().default.to_owned();
    assert_eq!(
        ByteSize::parse(&default("max_message_size")).unwrap().0,
        d.max_message_size
    );
    assert_eq!(default("max_recipients"), d.max_recipients.to_string());
    assert_eq!(
        default("messages_per_minute"),
        d.messages_per_minute.to_string()
    );
    assert_eq!(
        default("recipients_per_hour"),
        d.recipients_per_hour.to_string()
    );
    assert_eq!(
        default("max_connections_per_user"),
        d.max_connections_per_user.to_string()
    );
    assert_eq!(
        default("max_connections_per_ip"),
        d.max_connections_per_ip.to_string()
    );
    assert_eq!(default("max_connections"), d.max_connections.to_string());
    assert_eq!(
        Seconds::parse(&default("idle_timeout")).unwrap().0,
        d.idle_timeout
    );
    assert_eq!(
        default("auth_failures_per_ip_per_minute"),
        d.auth_failures_per_ip_per_minute.to_string()
    );
    let server = keys::table("server").unwrap();
    assert_eq!(server.key("hostname").unwrap().default, DEFAULT_HOSTNAME);
    assert_eq!(
        Seconds::parse(server.key("shutdown_grace").unwrap().default)
            .unwrap()
            .0,
        DEFAULT_SHUTDOWN_GRACE
    );
    assert_eq!(
        Seconds::parse(server.key("auth_cache_ttl").unwrap().default)
            .unwrap()
            .0,
        DEFAULT_AUTH_CACHE_TTL
    );
    let sd = ServerConfig::default();
    assert_eq!(
        server.key("auth_workers").unwrap().default,
        sd.auth_workers.to_string()
    );
    assert_eq!(
        server.key("worker_threads").unwrap().default,
        sd.worker_threads.to_string()
    );
    assert_eq!(
        server.key("auth_queue").unwrap().default,
        sd.auth_queue.to_string()
    );
    let up = keys::table("upstream").unwrap();
    let udefault = |k: &str| up.key(k).unwrap().default;
    assert_eq!(
        udefault("max_connections"),
        DEFAULT_UPSTREAM_MAX_CONNECTIONS.to_string()
    );
    assert_eq!(
        Seconds::parse(udefault("pool_wait")).unwrap().0,
        DEFAULT_POOL_WAIT
    );
    assert_eq!(
        Seconds::parse(udefault("health_check_interval")).unwrap().0,
        DEFAULT_HEALTH_CHECK_INTERVAL
    );
    assert_eq!(
        Seconds::parse(udefault("idle_timeout")).unwrap().0,
        DEFAULT_UPSTREAM_IDLE_TIMEOUT
    );
    // What an empty [server] and [[listener]] give is what the schema says.
    let c = Config::from_toml_str(BASE, "t.toml").unwrap();
    assert_eq!(*c.listeners[0].tls.get_ref(), TlsMode::None);
    assert_eq!(
        keys::table("listener").unwrap().key("tls").unwrap().default,
        "none"
    );
    assert_eq!(c.listeners[0].auth, AuthMode::Required);
    assert_eq!(
        keys::table("listener")
            .unwrap()
            .key("auth")
            .unwrap()
            .default,
        "required"
    );
}

#[test]
fn zero_worker_threads_leave_a_core_and_keep_at_least_one() {
    assert_eq!(one_fewer_than(1), 1);
    assert_eq!(one_fewer_than(2), 1);
    assert_eq!(one_fewer_than(8), 7);
    let mut server = ServerConfig::default();
    assert_eq!(server.runtime_workers(), one_fewer_than(cores()));
    server.worker_threads = 3;
    assert_eq!(server.runtime_workers(), 3);
}
