//! Helpers for the spool and fallback tests: a config with `[spool]` and the
//! in-memory provider, a logged-in transcript, one message, the spool's files,
//! waiting in paused time, and the queue commands run in-process.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;

use super::memory_upstream::MemoryUpstream;
use super::transcript::{Server, Transcript};

pub const PASSWORD: &str = "device-password";

/// A cheap argon2id hash (1 MiB, one pass): these tests run in paused time,
/// and while a password check runs on a blocking thread tokio's paused clock
/// jumps from timer to timer (the spool's loops tick every second), so a
/// check at the full cost on a loaded machine could outlast the transcript's
/// hour of virtual reply wait.
pub fn hash() -> &'static str {
    use argon2::password_hash::PasswordHasher;
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let cheap = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(1024, 1, 1, None).expect("argon2 params"),
        );
        cheap
            .hash_password(PASSWORD.as_bytes())
            .expect("hash_password")
            .to_string()
    })
}

/// A loopback listener, `[spool]` in `{dir}/spool` (with `spool` keys added),
/// the in-memory provider "mem" (with `upstream` keys added) and user "dev".
pub fn config(spool: &str, upstream: &str) -> String {
    format!(
        r#"
[server]
hostname = "relay.test"

[[listener]]
name = "smtp"
addr = "127.0.0.1:2525"

[limits]
messages_per_minute = 100000
recipients_per_hour = 100000
max_connections_per_user = 100

[spool]
dir = "{{dir}}/spool"
retry_initial = "10s"
retry_max = "80s"
{spool}

{up}

[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#,
        up = MemoryUpstream::postern_toml(upstream),
        hash = hash()
    )
}

pub fn server(up: &MemoryUpstream, spool: &str, upstream: &str) -> Server {
    let s = Server::build(&config(spool, upstream), up.connector());
    s.state.shared.policy().start_upstreams();
    s
}

/// One AUTH at a time in this test binary. The password check waits for one
/// of the process-wide verifier's permits, shared by every test running in
/// parallel; in paused time a wait on another test's work lets tokio's clock
/// jump straight to the transcript's reply timeout. Holding this lock (a
/// blocked thread stops its own clock too) keeps the permits uncontended.
static AUTH_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Only for paused-time (current-thread) tests, one `logged_in` at a time:
/// a second one on the same thread would wait for the first forever.
#[allow(clippy::await_holding_lock)] // on purpose: see AUTH_TURN
pub async fn logged_in(server: &Server) -> Transcript {
    let _turn = AUTH_TURN.lock().unwrap_or_else(|e| e.into_inner());
    logged_in_unlocked(server).await
}

/// `logged_in` without the turn, for real-time tests in a binary of their own.
pub async fn logged_in_unlocked(server: &Server) -> Transcript {
    let mut t = server.connect();
    t.expect("220").await;
    t.cmd("EHLO printer", "250").await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0dev\0{PASSWORD}"));
    t.cmd(&format!("AUTH PLAIN {auth}"), "235").await;
    t
}

/// One message to `rcpts`; returns the final reply.
pub async fn send(t: &mut Transcript, rcpts: &[&str], body: &str) -> String {
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    for r in rcpts {
        t.cmd(&format!("RCPT TO:<{r}>"), "250").await;
    }
    t.cmd("DATA", "354").await;
    t.line(&format!("Subject: scan\r\n\r\n{body}\r\n.")).await;
    t.reply().await
}

pub fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0 Queued as "), "{reply}");
    reply.rsplit(' ').next().unwrap().to_owned()
}

pub fn spool_dir(s: &Server) -> std::path::PathBuf {
    s.dir.path().join("spool")
}

pub fn count(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(ext))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Lets paused time run until `cond` holds (at most `limit` of virtual time).
pub async fn until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let step = Duration::from_millis(500);
    let mut waited = Duration::ZERO;
    while !cond() {
        assert!(waited < limit, "condition not reached within {limit:?}");
        tokio::time::sleep(step).await;
        waited += step;
    }
}

/// `postern queue ...` as the command line runs it, on this server's spool,
/// on a thread of its own (as a separate process would be: its lock waits
/// must not stop the daemon's tasks).
pub async fn queue(s: &Server, args: &[&str]) -> Result<String, String> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: postern::spool::cli::QueueCmd,
    }
    let cli = Cli::try_parse_from(std::iter::once("queue").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let dir = spool_dir(s);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        postern::spool::cli::run(&dir, cli.cmd, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    })
    .await
    .unwrap()
}

/// Ends `first` as a crash would leave its spool (the files kept, the lock
/// released once its last tasks end: a real crash ends them at once) and
/// starts a new daemon on the same files. `upstream` as for `config`. Returns
/// the new daemon and the kept directory (its `spool/` is the spool).
pub async fn restart(
    mut first: Server,
    up: &MemoryUpstream,
    upstream: &str,
) -> (Server, tempfile::TempDir) {
    let toml = config("", upstream).replace("{dir}", &first.dir.path().display().to_string());
    let files = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
    let lock = files.path().join("spool/lock");
    drop(first);
    until(Duration::from_secs(10), || {
        std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_ok())
    })
    .await;
    let second = Server::build(&toml, up.connector());
    second.state.shared.policy().start_upstreams();
    (second, files)
}
