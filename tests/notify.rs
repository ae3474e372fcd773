//! systemd's readiness protocol as `Type=notify` uses it: `postern run` sends
//! READY=1 once it listens, RELOADING=1 then READY=1 around a SIGHUP reload,
//! and STOPPING=1 on SIGTERM, to the datagram socket in `$NOTIFY_SOCKET`
//! (a path, or `@name` in the abstract namespace).

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const DEMO_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// The next datagram, as text.
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn lifecycle(sock: &UnixDatagram, notify_socket: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nshutdown_grace = \"2s\"\n\n[[listener]]\nname = \"local\"\naddr = \"127.0.0.1:{port}\"\n\n\
         [[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"outbox\"\n\n\
         [[user]]\nname = \"demo\"\npassword_hash = \"{DEMO_HASH}\"\nallowed_senders = [\"*\"]\n"
    );
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(BIN)
        .args(["run", "-c", path.to_str().unwrap()])
        .env("NOTIFY_SOCKET", notify_socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);

    let ready = next(sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means listening.
    TcpStream::connect(("127.0.0.1", port)).expect("listening once READY=1 was sent");

    signal(&running.0, "-HUP");
    let reloading = next(sock);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    let again = next(sock);
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");

    signal(&running.0, "-TERM");
    let stopping = next(sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = running.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ready_reloading_stopping_to_a_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    lifecycle(&sock, path.to_str().unwrap());
}

#[cfg(target_os = "linux")]
#[test]
fn ready_reloading_stopping_to_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("postern-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    lifecycle(&sock, &format!("@{name}"));
}
