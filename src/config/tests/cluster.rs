//! The `[cluster]` table.

use super::*;

fn with_cluster(keys: &str) -> String {
    base_with(&format!("[cluster]\n{keys}"))
}

#[test]
fn cluster_is_optional_and_fills_its_defaults() {
    assert!(parse(BASE).unwrap().cluster.is_none());
    let c = parse(&with_cluster("redis = \"redis://127.0.0.1:6379/0\"\n"))
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(c.on_redis_error, OnRedisError::Local);
    assert_eq!(c.replicas(), 1);
    assert_eq!(c.timeout(), DEFAULT_CLUSTER_TIMEOUT);
    assert_eq!(c.lease_ttl(), DEFAULT_LEASE_TTL);
    assert_eq!(c.key_prefix(), DEFAULT_KEY_PREFIX);
    assert_eq!(c.secret(), None);
    let c = parse(&with_cluster(
        "redis = \"rediss://r.example:6380/2\"\npassword_env = \"RP\"\non_redis_error = \"refuse\"\nreplicas = 3\ntimeout = \"100ms\"\n",
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(c.on_redis_error, OnRedisError::Refuse);
    assert_eq!(c.replicas(), 3);
    assert_eq!(c.secret(), Some(Secret::Env("RP".into())));
}

#[test]
fn cluster_url_needs_the_scheme_and_no_password() {
    for url in ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://"] {
        let text = with_cluster(&format!("redis = \"{url}\"\n"));
        assert_invalid(&text, "cluster.redis", line_of(&text, "redis ="));
    }
    let text = with_cluster("redis = \"redis://:hunter2@127.0.0.1:6379\"\n");
    assert_invalid(&text, "cluster.redis", line_of(&text, "redis ="));
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        !err.contains("hunter2"),
        "the password is not repeated: {err}"
    );
}

#[test]
fn cluster_rules_across_keys() {
    let text = with_cluster(
        "redis = \"redis://127.0.0.1:6379\"\npassword_env = \"P\"\npassword_file = \"/run/p\"\n",
    );
    assert_invalid(&text, "cluster.password", line_of(&text, "password_file"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\nreplicas = 0\n");
    assert_invalid(&text, "cluster.replicas", line_of(&text, "replicas"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\nlease_ttl = \"1s\"\n");
    assert_invalid(&text, "cluster.lease_ttl", line_of(&text, "lease_ttl"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\nca_file = \"ca.pem\"\n");
    assert_invalid(&text, "cluster.ca_file", line_of(&text, "ca_file"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\non_redis_error = \"ignore\"\n");
    assert!(parse(&text).is_err());
}
