//! The `postern` binary: `check` on the shipped config and every example,
//! exit code 64 on a bad config, `hash-password`, and `run` stopping cleanly on
//! SIGTERM.

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// sysexits EX_USAGE: a bad configuration.
const EX_USAGE: i32 = 64;

/// Hash of "demo-password" (the shipped demo user).
const DEMO_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY";

fn postern(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A minimal valid config on `port` with its outbox in `dir`.
fn minimal_config(port: u16, dir: &Path) -> String {
    format!(
        r#"[server]
hostname = "cli-test.localhost"
shutdown_grace = "5s"

[[listener]]
name = "local"
addr = "127.0.0.1:{port}"

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "{outbox}"

[[user]]
name = "demo"
password_hash = "{DEMO_HASH}"
allowed_senders = ["*@example.com"]
"#,
        outbox = dir.join("outbox").display()
    )
}

/// `minimal_config` on a free port, written to `dir/postern.toml`: (port, path).
fn minimal_config_file(dir: &Path) -> (u16, PathBuf) {
    let port = free_port();
    (port, write(dir, "postern.toml", &minimal_config(port, dir)))
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

// ------------------------------------------------------------------ check

#[test]
fn check_accepts_the_shipped_config() {
    let out = postern(
        &["check", "--config", "config/postern.toml"],
        Path::new(MANIFEST_DIR),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(stdout.contains("config/postern.toml: OK"), "{stdout}");
    assert!(
        stdout.contains("listener local: 127.0.0.1:2525"),
        "{stdout}"
    );
    assert!(
        stdout.contains("metrics: http://127.0.0.1:9465/metrics"),
        "{stdout}"
    );
    // Relative to the config file's directory: config/../var/outbox.
    assert!(
        stdout.contains(&format!(
            "upstream outbox: outbox in {MANIFEST_DIR}/var/outbox\n"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("user demo: upstream outbox"), "{stdout}");
    assert!(stdout.contains("limits:"), "{stdout}");
    assert!(
        !stdout.contains("warning:"),
        "the shipped config should be clean: {stdout}"
    );
}

#[test]
fn check_defaults_to_config_postern_toml() {
    let out = postern(&["check"], Path::new(MANIFEST_DIR));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("config/postern.toml: OK"));
}

/// The `password_env` variables a config names.
fn password_envs(toml_text: &str) -> Vec<String> {
    let value: toml::Table = toml::from_str(toml_text).expect("example is TOML");
    value
        .get("upstream")
        .and_then(|u| u.as_array())
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("password_env")?.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn check_accepts_every_example() {
    let examples_dir = Path::new(MANIFEST_DIR).join("config/examples");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&examples_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", examples_dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    examples.sort();
    let names: Vec<String> = examples
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "directmail.toml",
        "gmail-m365.toml",
        "gmail-oauth2.toml",
        "koomessage.toml",
        "m365-oauth2.toml",
        "printer-lan.toml",
        "ses.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing example {expected}: {names:?}"
        );
    }

    // Each example names config/tls/{cert,key}.pem relative to where postern runs:
    // run it from a scratch directory that holds a fresh self-signed pair there.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(scratch.path().join("config/tls")).unwrap();
    std::fs::create_dir_all(scratch.path().join("config/examples")).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["relay.example.lan".to_owned()]).unwrap();
    write(scratch.path(), "config/tls/cert.pem", &cert.cert.pem());
    write(
        scratch.path(),
        "config/tls/key.pem",
        &cert.signing_key.serialize_pem(),
    );

    for (path, name) in examples.iter().zip(&names) {
        let body = std::fs::read_to_string(path).unwrap();
        assert!(
            body.starts_with('#'),
            "{name}: an example starts with a header comment explaining the setup"
        );
        let rel = format!("config/examples/{name}");
        write(scratch.path(), &rel, &body);

        let envs = password_envs(&body);
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "--config", &rel])
            .current_dir(scratch.path())
            .stdin(Stdio::null());
        // No provider secret is needed to check a config.
        for var in &envs {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            text(&out.stderr)
        );
        assert!(stdout.contains(&format!("{rel}: OK")), "{name}: {stdout}");
        for var in &envs {
            assert!(
                stdout.contains(&format!("environment variable {var} is not set")),
                "{name}: check should warn that {var} is unset: {stdout}"
            );
        }
        // The only warnings an example may produce are the unset secrets.
        for line in stdout.lines().filter(|l| l.starts_with("warning:")) {
            assert!(line.contains("is not set"), "{name}: unexpected {line}");
        }
    }
}

#[test]
fn check_rejects_a_bad_config_with_64_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(2525, dir.path()) + "\n[limits]\nmax_recipients = 0\n";
    let line = config
        .lines()
        .position(|l| l == "max_recipients = 0")
        .map(|i| i + 1)
        .unwrap();
    let path = write(dir.path(), "bad.toml", &config);
    let out = postern(&["check", "--config", path.to_str().unwrap()], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "stderr: {stderr}");
    assert!(stderr.contains("limits.max_recipients"), "{stderr}");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "no summary for a bad config");
}

#[test]
fn check_rejects_an_unknown_key_with_64_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(2525, dir.path()).replace(
        "name = \"local\"\n",
        "name = \"local\"\nstarttls_required = true\n",
    );
    let line = config
        .lines()
        .position(|l| l.starts_with("starttls_required"))
        .map(|i| i + 1)
        .unwrap();
    let path = write(dir.path(), "unknown.toml", &config);
    let out = postern(&["check", "--config", path.to_str().unwrap()], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "stderr: {stderr}");
    assert!(stderr.contains("starttls_required"), "{stderr}");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
}

#[test]
fn run_rejects_a_bad_config_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(free_port(), dir.path()).replace("\"*@example.com\"", "\"bogus\"");
    let path = write(dir.path(), "bad.toml", &config);
    let out = postern(&["run", "--config", path.to_str().unwrap()], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "stderr: {stderr}");
    assert!(stderr.contains("user.allowed_senders"), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");
}

#[test]
fn run_without_the_provider_secret_is_64_naming_the_variable() {
    // `check` only warns about an unset password_env; `run` needs it and says which.
    let dir = tempfile::tempdir().unwrap();
    let var = "POSTERN_CLI_TEST_UNSET_PASSWORD";
    let config = minimal_config(free_port(), dir.path())
        + "\n[[upstream]]\nname = \"provider\"\nkind = \"smtp\"\naddr = \"127.0.0.1:9\"\n\
           username = \"u@example.com\"\npassword_env = \"POSTERN_CLI_TEST_UNSET_PASSWORD\"\n";
    let config = config.replace(
        "allowed_senders = [\"*@example.com\"]\n",
        "allowed_senders = [\"*@example.com\"]\nupstream = \"provider\"\n",
    );
    let path = write(dir.path(), "secret.toml", &config);
    let out = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove(var)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "stderr: {stderr}");
    assert!(stderr.contains(var), "{stderr}");
}

#[test]
fn missing_config_file_is_64() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["check", "run"] {
        let out = postern(&[cmd, "--config", "does-not-exist.toml"], dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_USAGE), "{cmd}: {stderr}");
        assert!(stderr.contains("does-not-exist.toml"), "{cmd}: {stderr}");
    }
}

// ------------------------------------------------------------------ hash-password

#[test]
fn hash_password_prints_an_argon2id_phc_string() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let hash = stdout.trim();
    assert!(hash.starts_with("$argon2id$"), "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the hash on stdout: {stdout}"
    );
    let parsed =
        postern::password::PasswordHash::parse(hash).expect("a PHC string postern accepts");
    assert!(parsed.verify("pw"));
    assert!(
        !parsed.verify("pw\n"),
        "the newline is not part of the password"
    );
    assert!(!parsed.verify("other"));
}

#[test]
fn hash_password_refuses_an_empty_password() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stdout).is_empty());
}

// ------------------------------------------------------------------ run + SIGTERM

/// Kills the child on drop if the test failed before it exited.
struct Guard(Option<Child>);

/// `postern run --config <path>` in `dir`, stderr to `dir/stderr.log`; killed when dropped.
fn spawn_run(dir: &Path, path: &Path) -> Guard {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config", path.to_str().unwrap()]);
    spawn_logged(cmd, dir)
}

/// Starts `cmd` in `dir` with no stdin or stdout and stderr to `dir/stderr.log`.
fn spawn_logged(mut cmd: Command, dir: &Path) -> Guard {
    let stderr_log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_log)
        .spawn()
        .unwrap();
    Guard(Some(child))
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Connects until the server answers, or panics at the deadline. Returns the greeting.
fn wait_for_greeting(addr: SocketAddr, child: &mut Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("postern exited before it answered: {status}");
        }
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() && !line.is_empty() {
                let _ = (&stream).write_all(b"QUIT\r\n");
                return line;
            }
        }
        assert!(
            Instant::now() < deadline,
            "postern did not answer on {addr} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_serves_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, path) = minimal_config_file(dir.path());
    let mut guard = spawn_run(dir.path(), &path);
    let child = guard.0.as_mut().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let greeting = wait_for_greeting(addr, child, Duration::from_secs(30));
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(greeting.contains("cli-test.localhost"), "{greeting}");

    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "kill -TERM {pid}");
    let status = wait_for_exit(child, Duration::from_secs(10));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("postern still running 10 s after SIGTERM\n{log}"));
    assert_eq!(status.code(), Some(0), "exit status {status}\n{log}");
    // The port is free again.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

/// AUTH PLAIN as `user`/`pass` on a fresh connection; returns the reply code.
fn auth_code(addr: SocketAddr, user: &str, pass: &str) -> u16 {
    use base64::Engine as _;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut read_reply = || -> String {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    };
    read_reply();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    (&stream)
        .write_all(format!("EHLO t\r\nAUTH PLAIN {b64}\r\n").as_bytes())
        .unwrap();
    read_reply();
    let reply = read_reply();
    let _ = (&stream).write_all(b"QUIT\r\n");
    reply[..3].parse().unwrap()
}

#[test]
fn sighup_reloads_users_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let original = minimal_config(port, dir.path());
    let path = write(dir.path(), "postern.toml", &original);
    let mut guard = spawn_run(dir.path(), &path);
    let child = guard.0.as_mut().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for_greeting(addr, child, Duration::from_secs(30));
    assert_eq!(auth_code(addr, "newcomer", "fresh-pw"), 535);

    // A connection opened before the reload stays up through it.
    let held = TcpStream::connect(addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut held_reader = BufReader::new(&held);
    let mut greeting = String::new();
    held_reader.read_line(&mut greeting).unwrap();

    let hash = postern::password::hash_password("fresh-pw").unwrap();
    write(
        dir.path(),
        "postern.toml",
        &format!(
            "{original}\n[[user]]\nname = \"newcomer\"\npassword_hash = \"{hash}\"\nallowed_senders = [\"*\"]\n"
        ),
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while auth_code(addr, "newcomer", "fresh-pw") != 235 {
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the new user never worked after SIGHUP\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "postern exited on SIGHUP"
    );
    (&held).write_all(b"NOOP\r\n").unwrap();
    let mut reply = String::new();
    held_reader.read_line(&mut reply).unwrap();
    assert!(
        reply.starts_with("250 "),
        "held connection after reload: {reply:?}"
    );

    // A broken file is refused and the running configuration stays.
    write(dir.path(), "postern.toml", "[[listener]]\nname = 1\n");
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        if log.contains("reload failed") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload failure logged\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(auth_code(addr, "newcomer", "fresh-pw"), 235);
    assert_eq!(auth_code(addr, "demo", "demo-password"), 235);
}

/// `postern run` with the soft open-file limit at `soft` (and the hard one at
/// `hard`, when given), through the shell's `ulimit`, which `exec` keeps.
fn spawn_run_with_file_limit(dir: &Path, path: &Path, soft: u32, hard: Option<u32>) -> Guard {
    let limits = match hard {
        Some(h) => format!("ulimit -Sn {soft} && ulimit -Hn {h}"),
        None => format!("ulimit -Sn {soft}"),
    };
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("{limits} && exec \"$0\" run --config \"$1\""),
        BIN,
        path.to_str().unwrap(),
    ]);
    spawn_logged(cmd, dir)
}

/// "Max open files" of a process: (soft, hard), "unlimited" as `u64::MAX`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn run_raises_the_soft_file_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let (port, path) = minimal_config_file(dir.path());
    let mut guard = spawn_run_with_file_limit(dir.path(), &path, 256, None);
    let child = guard.0.as_mut().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for_greeting(addr, child, Duration::from_secs(30));
    let (soft, hard) = open_file_limits(child.id());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        hard > 256,
        "this machine's hard limit is {hard}: nothing to raise to"
    );
    assert_eq!(soft, hard.min(1 << 20), "{log}");
    assert!(
        log.contains("raised the open-file limit") && log.contains("before=256"),
        "{log}"
    );
    // The default max_connections (1000) fits under this machine's hard limit.
    if hard >= 1200 {
        assert!(!log.contains("open-file limit is below"), "{log}");
    }
}

#[test]
fn run_warns_when_the_hard_file_limit_is_below_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (port, path) = minimal_config_file(dir.path());
    // [limits] max_connections defaults to 1000: 200 descriptors cannot hold them.
    let mut guard = spawn_run_with_file_limit(dir.path(), &path, 200, Some(200));
    let child = guard.0.as_mut().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let greeting = wait_for_greeting(addr, child, Duration::from_secs(30));
    assert!(greeting.starts_with("220 "), "{greeting}");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(open_file_limits(child.id()), (200, 200));
    assert!(
        log.contains("open-file limit is below")
            && log.contains("limit=200")
            && log.contains("need=1074"),
        "{log}"
    );
    assert!(!log.contains("raised the open-file limit"), "{log}");
}

#[test]
fn run_takes_its_worker_threads_from_the_config() {
    // Unset: one fewer than the cores, at least one.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let auto = format!("workers={}", cores.saturating_sub(1).max(1));
    for (setting, want) in [
        ("", auto.as_str()),
        ("worker_threads = 1\n", "workers=1"),
        ("worker_threads = 3\n", "workers=3"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = minimal_config(port, dir.path()).replacen(
            "[server]\n",
            &format!("[server]\n{setting}"),
            1,
        );
        let path = write(dir.path(), "postern.toml", &config);
        let mut guard = spawn_run(dir.path(), &path);
        let child = guard.0.as_mut().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let greeting = wait_for_greeting(addr, child, Duration::from_secs(30));
        assert!(greeting.starts_with("220 "), "{greeting}");
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        assert!(
            log.lines()
                .any(|l| l.contains("runtime started") && l.split_whitespace().any(|w| w == want)),
            "{want}\n{log}"
        );
    }
}
