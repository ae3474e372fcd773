//! The open-file limit. Every client connection, provider connection, spool
//! file, listener and log file is a descriptor, and a process starts with the
//! soft limit its parent left (1024 from most shells and from systemd, whose
//! hard limit is far higher, and which leaves raising the soft one to the
//! program that needs it). `postern run` raises the soft limit to the hard one
//! at start, as Go's runtime and nginx's `worker_rlimit_nofile` do, and warns
//! when even that is below what the configuration can hold open at once: past
//! the limit, `accept` fails (`EMFILE`) and new connections wait in the listen
//! queue while the accept loop pauses.

use std::io;

use crate::Config;

/// Descriptors postern keeps for itself beyond its connections: listeners,
/// the metrics endpoint and its scrapers, the spool's files, Redis, logs.
const MARGIN: u64 = 64;

/// The soft limit before and after `raise`, and the hard one (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub before: u64,
    pub now: u64,
    pub hard: Option<u64>,
}

/// What an unlimited hard limit is taken as: Linux's default `fs.nr_open`.
const UNLIMITED_AS: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one.
///
/// # Errors
/// The limit cannot be read, or the kernel refuses the new soft limit.
pub fn raise() -> io::Result<FileLimit> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let before = now.current.unwrap_or(u64::MAX);
    let target = now.maximum.unwrap_or(UNLIMITED_AS);
    if before >= target {
        return Ok(FileLimit {
            before,
            now: before,
            hard: now.maximum,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: now.maximum,
        },
    )?;
    Ok(FileLimit {
        before,
        now: target,
        hard: now.maximum,
    })
}

/// The descriptors the configuration can hold open at once: `[limits]
/// max_connections` clients, every upstream pool full, and `MARGIN`.
pub fn needed(config: &Config) -> u64 {
    let upstreams: u64 = config
        .upstreams
        .iter()
        .map(|u| {
            u64::from(
                u.max_connections
                    .unwrap_or(crate::config::DEFAULT_UPSTREAM_MAX_CONNECTIONS),
            )
        })
        .sum();
    u64::from(config.limits.max_connections) + upstreams + MARGIN
}

/// Raises the limit and logs what an operator should know: the raise, and a
/// limit below what the configuration needs.
pub fn raise_and_report(config: &Config) {
    match raise() {
        Ok(limit) => {
            if limit.now > limit.before {
                tracing::info!(
                    before = limit.before,
                    now = limit.now,
                    "raised the open-file limit to the hard limit"
                );
            }
            let need = needed(config);
            if limit.now < need {
                tracing::warn!(
                    limit = limit.now,
                    need,
                    "the open-file limit is below what [limits] max_connections and the upstream \
                     pools can hold open at once; connections past it wait in the listen queue \
                     (raise the hard limit, LimitNOFILE= under systemd, or lower max_connections)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_ends_at_the_hard_limit_and_is_idempotent() {
        let first = raise().expect("raise");
        assert!(first.now >= first.before);
        if let Some(hard) = first.hard {
            assert_eq!(first.now, hard.max(first.before));
        }
        let again = raise().expect("raise again");
        assert_eq!(again.before, first.now);
        assert_eq!(again.now, first.now);
    }
}
