use super::*;

const TTL: Duration = Duration::from_secs(600);
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

fn name(s: &str) -> Arc<str> {
    Arc::from(s)
}

#[tokio::test(start_paused = true)]
async fn a_remembered_password_hits_until_the_ttl() {
    let c = AuthCache::new().expect("cache");
    let now = Instant::now();
    assert!(!c.hit("dev", HASH, "pw", TTL, now), "empty cache");
    c.remember(&name("dev"), HASH, "pw", TTL, now);
    assert!(c.hit("dev", HASH, "pw", TTL, now));
    assert!(c.hit("dev", HASH, "pw", TTL, now + TTL - Duration::from_secs(1)));
    assert!(
        !c.hit("dev", HASH, "pw", TTL, now + TTL),
        "expired at the TTL"
    );
    assert!(c.is_empty(), "the expired entry is dropped");
}

#[tokio::test(start_paused = true)]
async fn only_the_same_user_hash_and_password_hit() {
    let c = AuthCache::new().expect("cache");
    let now = Instant::now();
    c.remember(&name("dev"), HASH, "pw", TTL, now);
    assert!(!c.hit("dev", HASH, "pW", TTL, now), "other password");
    assert!(!c.hit("dev", HASH, "pw ", TTL, now), "longer password");
    assert!(!c.hit("dev", HASH, "", TTL, now), "empty password");
    assert!(!c.hit("dev2", HASH, "pw", TTL, now), "other user");
    assert!(
        !c.hit("dev", "$2b$other", "pw", TTL, now),
        "other stored hash"
    );
    // Moving bytes between fields does not collide.
    c.remember(&name("ab"), "c", "d", TTL, now);
    assert!(!c.hit("ab", "cd", "", TTL, now));
    assert!(c.hit("dev", HASH, "pw", TTL, now), "misses leave the entry");
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_keeps_nothing() {
    let c = AuthCache::new().expect("cache");
    let now = Instant::now();
    c.remember(&name("dev"), HASH, "pw", Duration::ZERO, now);
    assert!(c.is_empty());
    c.remember(&name("dev"), HASH, "pw", TTL, now);
    assert!(!c.hit("dev", HASH, "pw", Duration::ZERO, now));
}

#[tokio::test(start_paused = true)]
async fn retain_drops_removed_users_and_changed_hashes() {
    let c = AuthCache::new().expect("cache");
    let now = Instant::now();
    for u in ["kept", "changed", "removed"] {
        c.remember(&name(u), HASH, "pw", TTL, now);
    }
    c.retain(|user, hash| match user {
        "kept" => hash == HASH,
        "changed" => hash == "$argon2id$new",
        _ => false,
    });
    assert_eq!(c.len(), 1);
    assert!(c.hit("kept", HASH, "pw", TTL, now));
    c.clear();
    assert!(c.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_map_is_bounded_expired_then_oldest_first() {
    let c = AuthCache::with_capacity(3).expect("cache");
    let t0 = Instant::now();
    c.remember(&name("a"), HASH, "pw", TTL, t0);
    c.remember(&name("b"), HASH, "pw", TTL, t0 + Duration::from_secs(1));
    c.remember(&name("c"), HASH, "pw", TTL, t0 + Duration::from_secs(2));
    // Full: the oldest ("a") makes room.
    c.remember(&name("d"), HASH, "pw", TTL, t0 + Duration::from_secs(3));
    assert_eq!(c.len(), 3);
    let t = t0 + Duration::from_secs(3);
    assert!(!c.hit("a", HASH, "pw", TTL, t));
    assert!(c.hit("b", HASH, "pw", TTL, t) && c.hit("d", HASH, "pw", TTL, t));
    // Refreshing a present user does not evict anyone.
    c.remember(&name("b"), HASH, "pw", TTL, t0 + Duration::from_secs(10));
    assert_eq!(c.len(), 3);
    // Past the TTL of c and d, the expired go together.
    let later = t0 + TTL + Duration::from_secs(5);
    c.remember(&name("e"), HASH, "pw", TTL, later);
    assert_eq!(
        c.len(),
        2,
        "b (refreshed at +10 s) is still fresh, c and d expired"
    );
    assert!(c.hit("e", HASH, "pw", TTL, later));
}

#[test]
fn same_bytes_compares_whole_slices() {
    assert!(same_bytes(b"abc", b"abc"));
    assert!(!same_bytes(b"abc", b"abd"));
    assert!(!same_bytes(b"abc", b"ab"));
    assert!(same_bytes(b"", b""));
}
