//! `postern hash-password` on a real pseudo-terminal (driven by python3's pty
//! module): it asks twice without echo and compares, and Ctrl-C at the prompt
//! leaves the terminal's echo on.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// Runs `hash-password` on a pty; `script` is the python that talks to it
/// (with `fd`, `pid`, `read_until` and `wait_echo_off` defined). Returns its stdout.
fn on_pty(script: &str) -> String {
    let prelude = r#"
import os, pty, select, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "hash-password"])

seen = b""
def read_until(needle, timeout=30):
    global seen
    end = time.time() + timeout
    while needle not in seen:
        left = end - time.time()
        if left <= 0:
            sys.exit("timeout waiting for %r; got %r" % (needle, seen))
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            sys.exit("eof waiting for %r; got %r" % (needle, seen))
        seen += chunk

def read_rest(timeout=60):
    global seen
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen += chunk
        elif os.waitpid(pid, os.WNOHANG) != (0, 0):
            return

def wait_echo_off(timeout=30):
    end = time.time() + timeout
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > end:
            sys.exit("echo never went off")
        time.sleep(0.01)

def finish():
    _, status = os.waitpid(pid, 0)
    lflag = termios.tcgetattr(fd)[3]
    print("exit=%d" % os.waitstatus_to_exitcode(status))
    print("echo=%s" % ("on" if lflag & termios.ECHO else "off"))
    print("icanon=%s" % ("on" if lflag & termios.ICANON else "off"))
    print("output=%r" % seen.decode(errors="replace"))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}\n{script}"))
        .arg(BIN)
        .output()
        .expect("python3 is needed for the pty tests");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pty driver failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {out}"))
}

#[test]
fn ctrl_c_at_the_prompt_leaves_echo_on() {
    let out = on_pty(
        r#"
read_until(b"Password: ")
wait_echo_off()
os.write(fd, b"half-typ")
os.write(fd, b"\x03")
finish()
"#,
    );
    assert_eq!(field(&out, "echo"), "on", "{out}");
    assert_eq!(field(&out, "icanon"), "on", "{out}");
    assert_eq!(field(&out, "exit"), "130", "{out}");
    assert!(!field(&out, "output").contains("half-typ"), "{out}");
}

/// Types `first` at the first prompt and `second` at the second; returns the driver's report.
fn type_twice(first: &str, second: &str) -> String {
    on_pty(&format!(
        r#"
read_until(b"Password: ")
wait_echo_off()
os.write(fd, b"{first}\r")
read_until(b"Again: ")
wait_echo_off()
os.write(fd, b"{second}\r")
read_rest()
finish()
"#
    ))
}

#[test]
fn the_password_is_asked_twice_and_hashed_when_both_match() {
    let out = type_twice("s3cret-pw", "s3cret-pw");
    assert_eq!(field(&out, "exit"), "0", "{out}");
    assert_eq!(field(&out, "echo"), "on", "{out}");
    let output = field(&out, "output");
    assert!(
        !output.contains("s3cret-pw"),
        "the password was echoed: {out}"
    );
    let start = output.find("$argon2id$").unwrap_or_else(|| panic!("{out}"));
    let hash: String = output[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\\' && *c != '\'')
        .collect();
    let parsed = postern::password::PasswordHash::parse(&hash).expect("a hash postern accepts");
    assert!(parsed.verify("s3cret-pw"));
}

#[test]
fn two_different_passwords_hash_nothing() {
    let out = type_twice("first-one", "second-one");
    assert_eq!(field(&out, "exit"), "64", "{out}");
    assert_eq!(field(&out, "echo"), "on", "{out}");
    let output = field(&out, "output");
    assert!(output.contains("differ"), "{out}");
    assert!(!output.contains("$argon2id$"), "{out}");
}
