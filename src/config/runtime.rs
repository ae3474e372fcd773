//! What touches the machine rather than the file: whether the outbox
//! directories can be written, what to do when a low port is refused, and
//! how many threads a `0` stands for on this machine's cores.
//! Each finding names the key and its line, and the path, so "Permission
//! denied" never comes without the directory and the key that chose it.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use super::shape::line_at;
use super::*;

/// Creates `dir` when `create`, then writes and removes a probe file in it.
fn probe_dir(dir: &Path, create: bool) -> io::Result<()> {
    if create {
        std::fs::create_dir_all(dir)?;
    } else if !dir.exists() {
        // `run` creates it; whether it will be able to is for `run` to say.
        return Ok(());
    }
    let probe = dir.join(format!(".postern-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

impl Config {
    /// The outbox directories that cannot be written (created first when `create`).
    /// `run` calls it with `create = true` before serving; `check` with false, as warnings.
    pub fn check_dirs(&self, create: bool) -> Vec<ConfigError> {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        self.upstreams
            .iter()
            .filter_map(|u| {
                let dir = u.dir.as_ref()?;
                let e = probe_dir(dir.get_ref(), create).err()?;
                Some(ConfigError::Invalid {
                    path: self.source.clone(),
                    line: line_at(&text, dir.span().start),
                    key: "upstream.dir".to_owned(),
                    message: format!(
                        "outbox directory {} of upstream {:?} is not writable: {e}{}",
                        dir.get_ref().display(),
                        u.name(),
                        match e.kind() {
                            io::ErrorKind::PermissionDenied => {
                                " (the shipped systemd unit gives postern /var/lib/postern as its StateDirectory)"
                            }
                            io::ErrorKind::ReadOnlyFilesystem => {
                                " (under the shipped systemd unit only /var/lib/postern is writable: ProtectSystem=strict; add ReadWritePaths= in a drop-in)"
                            }
                            _ => "",
                        }
                    ),
                })
            })
            .collect()
    }
}

impl Config {
    /// Which key chose `addr`: "FILE: line N: listener.addr", or the metrics one.
    pub fn key_of_addr(&self, addr: &SocketAddr) -> Option<String> {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        if let Some(l) = self.listeners.iter().find(|l| l.addr.get_ref() == addr) {
            return Some(format!(
                "{}: line {}: listener.addr",
                self.source,
                line_at(&text, l.addr.span().start)
            ));
        }
        self.metrics
            .as_ref()
            .filter(|m| m.addr == *addr)
            .map(|_| format!("{}: metrics.addr", self.source))
    }
}

/// What to do when binding `addr` failed with `err`, if there is something to say.
pub fn bind_hint(addr: &SocketAddr, err: &io::Error) -> Option<String> {
    match err.kind() {
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => Some(format!(
            "port {} is below 1024 and needs CAP_NET_BIND_SERVICE: start postern from the shipped systemd unit \
             (contrib/systemd/postern.service has AmbientCapabilities=CAP_NET_BIND_SERVICE), \
             or `setcap cap_net_bind_service=+ep` on the binary, or listen on a port above 1023",
            addr.port()
        )),
        io::ErrorKind::AddrInUse => Some(format!(
            "another process listens on {addr} already (`ss -ltnp 'sport = :{}'` shows which)",
            addr.port()
        )),
        io::ErrorKind::AddrNotAvailable => Some(format!(
            "{} is not an address of this machine (`ip -br addr` lists them); 0.0.0.0 listens on all",
            addr.ip()
        )),
        _ => None,
    }
}

impl ServerConfig {
    /// The runtime's worker threads: `worker_threads`, or for 0 one fewer
    /// than this machine's cores, at least one.
    pub fn runtime_workers(&self) -> usize {
        match self.worker_threads {
            0 => one_fewer_than(cores()),
            n => n as usize,
        }
    }
}

/// The cores this process may run on (2 when that cannot be read).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What `0` means for `worker_threads` and `auth_workers`: a core is left to
/// the kernel's network work and whatever else runs on the machine.
pub fn one_fewer_than(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_for_low_ports_only() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let low: SocketAddr = "0.0.0.0:25".parse().unwrap();
        let high: SocketAddr = "0.0.0.0:2525".parse().unwrap();
        let hint = bind_hint(&low, &denied).unwrap();
        assert!(hint.contains("CAP_NET_BIND_SERVICE"), "{hint}");
        assert!(bind_hint(&high, &denied).is_none());
        let busy = io::Error::from(io::ErrorKind::AddrInUse);
        assert!(bind_hint(&high, &busy).unwrap().contains("already"));
    }
}
