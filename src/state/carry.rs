//! What a new policy takes over from the one it replaces, or is wired with
//! before anything uses it: daily quotas and OAuth2 tokens kept across a
//! reload, quotas shared through `[cluster]`, failover links between upstreams.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::upstream::Upstream;

/// A reload keeps an upstream's daily quotas (and what they have counted)
/// when their numbers are unchanged, so a SIGHUP cannot grant a second day.
pub(super) fn keep_quotas(upstreams: &mut [Arc<Upstream>], previous: &[Arc<Upstream>]) {
    for up in upstreams {
        let kept = previous
            .iter()
            .find(|o| o.name == up.name)
            .and_then(|o| o.quota.clone());
        if let (Some(kept), Some(new)) = (kept, up.quota.as_ref())
            && kept.numbers == new.numbers
            && let Some(u) = Arc::get_mut(up)
        {
            u.quota = Some(kept);
        }
    }
}

/// A reload keeps the OAuth2 token of every account (or upstream) whose
/// token settings are unchanged, so a SIGHUP does not fetch new tokens.
pub(super) fn keep_tokens(upstreams: &[Arc<Upstream>], previous: &[Arc<Upstream>]) {
    for up in upstreams {
        let Some(old) = previous.iter().find(|o| o.name == up.name) else {
            continue;
        };
        for pool in up.pools() {
            let Some((user, source)) = pool.dial().token_source() else {
                continue;
            };
            let kept = old
                .pools()
                .into_iter()
                .filter_map(|p| p.dial().token_source())
                .find(|(u, _)| *u == user);
            if let Some((_, old_source)) = kept
                && source.adopt_cache(old_source)
            {
                tracing::debug!(upstream = %up.name, account = %user, "reload: OAuth2 token kept");
            }
        }
    }
}

/// With `[cluster]`: every upstream's daily quotas are decided by Redis
/// for all replicas (the local limiters becoming the fallback share). Runs
/// on fresh upstreams, before anything else holds them.
pub(super) fn share_quotas(cluster: &Arc<Cluster>, upstreams: &mut [Arc<Upstream>]) {
    for up in upstreams {
        if let Some(u) = Arc::get_mut(up)
            && let Some(q) = &u.quota
        {
            u.quota =
                crate::upstream::quota::Quota::shared(cluster, &u.name, q.numbers).map(Arc::new);
        }
    }
}

/// `fallback = [...]`: gives each pool of an upstream the upstreams to fail
/// over to, in order (names were checked when the config was read).
pub(super) fn link_failover(config: &Config, upstreams: &[Arc<Upstream>]) {
    for u in &config.upstreams {
        if u.fallback.is_empty() {
            continue;
        }
        let Some(up) = upstreams.iter().find(|x| &*x.name == u.name()) else {
            continue;
        };
        let list: Vec<_> = u
            .fallback
            .iter()
            .filter_map(|f| upstreams.iter().find(|x| *x.name == **f.get_ref()))
            .map(Arc::downgrade)
            .collect();
        for pool in up.pools() {
            pool.set_failover(list.clone());
        }
    }
}
