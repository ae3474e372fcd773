//! Relative paths in a config file resolve against the directory of that
//! file (as Prometheus does), so `postern run --config /etc/postern/postern.toml`
//! means the same from any working directory. This happens once, at load time:
//! the rest of the program only ever sees resolved paths.

use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::Config;

/// `base` joined with `p` (unless `p` is absolute), with `.` and `..` removed lexically.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn resolve_spanned(base: &Path, p: &mut Spanned<PathBuf>) {
    let span = p.span();
    let resolved = resolve(base, p.get_ref());
    *p = Spanned::new(span, resolved);
}

/// Resolves every path key of `config` against `base`.
pub(super) fn resolve_all(config: &mut Config, base: &Path) {
    if let Some(tls) = &mut config.tls {
        resolve_spanned(base, &mut tls.cert);
        resolve_spanned(base, &mut tls.key);
    }
    if let Some(c) = &mut config.cluster {
        for p in [&mut c.password_file, &mut c.ca_file].into_iter().flatten() {
            resolve_spanned(base, p);
        }
    }
    for u in &mut config.upstreams {
        for p in [&mut u.ca_file, &mut u.password_file, &mut u.dir]
            .into_iter()
            .flatten()
        {
            resolve_spanned(base, p);
        }
        for a in &mut u.account {
            if let Some(p) = &mut a.password_file {
                resolve_spanned(base, p);
            }
        }
        if let Some(o) = &mut u.oauth2 {
            for p in [&mut o.client_secret_file, &mut o.refresh_token_file]
                .into_iter()
                .flatten()
            {
                resolve_spanned(base, p);
            }
        }
    }
    if let Some(s) = &mut config.spool {
        resolve_spanned(base, &mut s.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_join_then_clean() {
        let base = Path::new("/etc/postern");
        assert_eq!(
            resolve(base, Path::new("tls/cert.pem")),
            Path::new("/etc/postern/tls/cert.pem")
        );
        assert_eq!(
            resolve(base, Path::new("../var/outbox")),
            Path::new("/etc/var/outbox")
        );
        assert_eq!(resolve(base, Path::new("./x")), Path::new("/etc/postern/x"));
        assert_eq!(
            resolve(base, Path::new("/var/lib/postern")),
            Path::new("/var/lib/postern")
        );
    }
}
