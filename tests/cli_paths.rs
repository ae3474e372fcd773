//! The command line as an operator meets it: relative paths resolve against
//! the config file's directory whatever the working directory, `-c/--config`
//! before or after the subcommand, `POSTERN_CONFIG`, `--help` for every flag,
//! every mistake of a file in one run, and run-time errors that name the key.

// Wall-clock deadlines of a test run against a real process, not postern's timeouts.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const EX_USAGE: i32 = 64;
/// Hash of "demo-password".
const DEMO_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A config whose outbox is the *relative* `outbox_dir`.
fn config(port: u16, outbox_dir: &str) -> String {
    format!(
        r#"[server]
hostname = "paths-test.localhost"
shutdown_grace = "5s"

[[listener]]
name = "local"
addr = "127.0.0.1:{port}"

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "{outbox_dir}"

[[user]]
name = "demo"
password_hash = "{DEMO_HASH}"
allowed_senders = ["*@example.com"]
networks = ["192.168.10.23", "10.1.0.0/16"]
"#
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// `postern ARGS` in `cwd`, with `env` set and POSTERN_CONFIG unset unless given.
fn postern(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("POSTERN_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads one SMTP reply (all its lines); returns the last line.
fn reply(r: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line;
        }
    }
}

/// Sends one message as demo; returns the reply to the end of DATA.
fn send_one(addr: SocketAddr) -> String {
    use base64::Engine as _;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(&s);
    let mut w = &s;
    reply(&mut r);
    let auth = base64::engine::general_purpose::STANDARD.encode("\0demo\0demo-password".as_bytes());
    for (cmd, want) in [
        ("EHLO t".to_owned(), "250"),
        (format!("AUTH PLAIN {auth}"), "235"),
        ("MAIL FROM:<demo@example.com>".to_owned(), "250"),
        ("RCPT TO:<you@example.net>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = reply(&mut r);
        assert!(got.starts_with(want), "{cmd}: {got}");
    }
    w.write_all(b"Subject: paths\r\n\r\nhello\r\n.\r\n")
        .unwrap();
    let end = reply(&mut r);
    let _ = w.write_all(b"QUIT\r\n");
    end
}

fn wait_until_listening(addr: SocketAddr, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "postern exited ({st}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "not listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_from_another_directory_finds_the_relative_outbox_next_to_the_config() {
    let confdir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write(
        confdir.path(),
        "postern.toml",
        &config(port, "spool/outbox"),
    );
    let log = elsewhere.path().join("stderr.log");
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .current_dir(elsewhere.path())
        .env_remove("POSTERN_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_listening(addr, &mut running.0, &log);
    let end = send_one(addr);
    assert!(end.starts_with("250"), "{end}");

    let outbox = confdir.path().join("spool/outbox");
    let emls: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap_or_else(|e| panic!("{}: {e}", outbox.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(emls.len(), 1, "one message in {}", outbox.display());
    assert!(
        !elsewhere.path().join("spool").exists(),
        "nothing is written relative to the working directory"
    );
}

/// Arguments, environment, and the config file `check` should report.
type Run<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn config_flag_goes_before_or_after_the_subcommand_and_env_sets_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", &config(2525, "out-a"));
    let b = write(dir.path(), "b.toml", &config(2525, "out-b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let runs: [Run; 6] = [
        (&["check", "--config", a], &[], a),
        (&["--config", a, "check"], &[], a),
        (&["-c", a, "check"], &[], a),
        (&["check", "-c", b], &[], b),
        (&["check"], &[("POSTERN_CONFIG", b)], b),
        // The flag wins over the environment.
        (&["check", "-c", a], &[("POSTERN_CONFIG", b)], a),
    ];
    for (args, env, want) in runs {
        let out = postern(args, cwd.path(), env);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(
            stdout.starts_with(&format!("{want}: OK")),
            "{args:?} {env:?}: {stdout}"
        );
    }
    // Without either, the built-in default is looked for in the working directory.
    let out = postern(&["check"], cwd.path(), &[]);
    assert_eq!(out.status.code(), Some(EX_USAGE));
    assert!(
        text(&out.stderr).contains(postern::config::DEFAULT_CONFIG_PATH),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_describes_every_flag_of_every_command() {
    let cwd = tempfile::tempdir().unwrap();
    for sub in [&[][..], &["run"], &["check"], &["hash-password"]] {
        let mut args: Vec<&str> = sub.to_vec();
        args.push("--help");
        let out = postern(&args, cwd.path(), &[]);
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        let mut flags = 0;
        for line in help.lines().map(str::trim_start) {
            if line.starts_with('-') {
                flags += 1;
                // "-c, --config <FILE>  Config file ..." : a description follows the flag.
                let words: Vec<&str> = line.split("  ").filter(|w| !w.trim().is_empty()).collect();
                assert!(words.len() >= 2, "{args:?}: flag without help: {line:?}");
            }
        }
        assert!(flags >= 2, "{args:?}: {help}");
        assert!(help.contains("--config"), "{args:?}: {help}");
        assert!(help.contains("POSTERN_CONFIG"), "{args:?}: {help}");
    }
}

#[test]
fn check_prints_every_users_networks() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "p.toml", &config(2525, "out"));
    let out = postern(&["check", "-c", path.to_str().unwrap()], dir.path(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "user demo: upstream outbox auth=password networks=[192.168.10.23/32, 10.1.0.0/16]"
        ),
        "{stdout}"
    );
}

#[test]
fn check_reports_five_mistakes_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let body = config(2525, "out")
        .replace("hostname = \"paths-test.localhost\"", "hostname = \"\"")
        .replace("addr = \"127.0.0.1:2525\"", "addr = \"0.0.0.0\"")
        .replace(
            "kind = \"outbox\"\n",
            "kind = \"outbox\"\nmax_recipients = \"10\"\n",
        )
        .replace("password_hash", "pasword_hash")
        .replace("\"10.1.0.0/16\"", "\"10.1.2.3/16\"");
    let path = write(dir.path(), "five.toml", &body);
    let out = postern(&["check", "-c", path.to_str().unwrap()], dir.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "{stderr}");
    assert!(text(&out.stdout).is_empty());
    let line = |needle: &str| body.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (needle, key) in [
        ("hostname", "server.hostname"),
        ("addr = \"0.0.0.0\"", "listener.addr"),
        ("max_recipients", "upstream.max_recipients"),
        ("pasword_hash", "user.pasword_hash"),
        ("networks", "user.networks"),
    ] {
        let want = format!("five.toml: line {}: {key}: ", line(needle));
        assert!(stderr.contains(&want), "no {want:?} in:\n{stderr}");
    }
    assert!(stderr.contains("5 mistakes"), "{stderr}");
}

#[test]
fn an_unwritable_outbox_names_the_directory_and_the_key() {
    // A regular file where a directory should be: refused even for root.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "blocker", "not a directory");
    let body = config(free_port(), "blocker/outbox");
    let path = write(dir.path(), "p.toml", &body);
    let out = postern(&["run", "-c", path.to_str().unwrap()], dir.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "{stderr}");
    let line = body.lines().position(|l| l.starts_with("dir =")).unwrap() + 1;
    assert!(
        stderr.contains(&format!("line {line}: upstream.dir")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}/blocker/outbox", dir.path().display())),
        "{stderr}"
    );
}

#[test]
fn a_refused_low_port_gets_the_capability_hint() {
    // Needs an unprivileged process and a kernel that keeps ports below 1024 privileged.
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start < 25 {
        eprintln!("skipped: ip_unprivileged_port_start is {start}, any user may bind port 25");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = config(25, "/tmp/postern-low-port-test-outbox");
    let path = write(dir.path(), "p.toml", &body);
    let is_root = text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    let mut cmd = if is_root {
        // Drop to nobody for this run; the config must then be readable by it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A copy of the binary where nobody can reach it, wherever the build tree is.
        let bin = dir.path().join("postern");
        std::fs::copy(BIN, &bin).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(BIN)
    };
    cmd.args(["run", "-c", path.to_str().unwrap()])
        .current_dir("/")
        .stdin(Stdio::null());
    // The copy's write descriptor lives on, until their exec, in the children
    // other tests fork meanwhile: exec then fails with ETXTBSY for a moment.
    let mut out = cmd.output().unwrap();
    for _ in 0..50 {
        if !text(&out.stderr).contains("Text file busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = cmd.output().unwrap();
    }
    let _ = std::fs::remove_dir_all("/tmp/postern-low-port-test-outbox");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("127.0.0.1:25"), "{stderr}");
    assert!(stderr.contains("CAP_NET_BIND_SERVICE"), "{stderr}");
    assert!(stderr.contains("postern.service"), "{stderr}");
    let line = body
        .lines()
        .position(|l| l.contains("127.0.0.1:25"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("line {line}: listener.addr")),
        "{stderr}"
    );
}

#[test]
fn the_packaged_config_passes_check_and_is_safe() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let path = format!("{manifest}/contrib/debian/postern.toml");
    let out = postern(&["check", "-c", &path], Path::new("/"), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("upstream outbox: outbox in /var/lib/postern/outbox"),
        "{stdout}"
    );
    // Loopback only, and no user: nothing can relay until the operator adds one.
    for line in stdout.lines().filter(|l| l.starts_with("listener ")) {
        assert!(line.contains(": 127.0.0.1:"), "{line}");
    }
    assert!(!stdout.lines().any(|l| l.starts_with("user ")), "{stdout}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(warnings[0].contains("no [[user]]"), "{stdout}");
}
