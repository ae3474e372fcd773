//! The `postern` command: `run`, `check`, `hash-password`, `queue`.
//!
//! The config file is `-c/--config FILE` (before or after the subcommand),
//! else `$POSTERN_CONFIG`, else the built-in default. Under systemd
//! (`Type=notify`), `run` reports READY, RELOADING and STOPPING over
//! `$NOTIFY_SOCKET` (`notify` below).

#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern::config::{CONFIG_ENV, Config, ConfigError, DEFAULT_CONFIG_PATH, LogFormat};

/// Exit code for a bad configuration or usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit code after Ctrl-C (128 + SIGINT), as a shell reports it.
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "SMTP-aware authenticating relay: local device accounts in, provider credentials out",
    after_help = "Relative paths inside the config file resolve against the directory of that file.\n\
                  Exit codes: 0 ok, 64 bad configuration or usage, 1 other failures."
)]
struct Cli {
    #[arg(short = 'c', long, global = true, value_name = "FILE", help = config_flag_help())]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on the configured listeners; SIGHUP reloads, SIGTERM or Ctrl-C stops.
    #[command(after_help = run_help())]
    Run,
    /// Validate a config file and print a summary with the limits that will be enforced.
    #[command(after_help = run_help())]
    Check,
    /// Check every SMTP upstream step by step: DNS, TCP, TLS and certificate, EHLO, AUTH.
    #[command(
        after_help = "Exit codes: 0 every step passed, 1 a step failed, 64 bad configuration."
    )]
    Doctor {
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// After the checks, send one small test message to ADDRESS through each
        /// upstream and account, and print the provider's reply.
        #[arg(long, value_name = "ADDRESS")]
        send_test: Option<String>,
        /// The test message's sender [default: the account's user name when it
        /// is an address, else ADDRESS].
        #[arg(long, value_name = "ADDRESS", requires = "send_test")]
        from: Option<String>,
    },
    /// Print an argon2id hash for `password_hash`: asks twice on a terminal, else reads one line from stdin.
    HashPassword,
    /// Look at and change the spool; safe while `postern run` runs.
    Queue {
        #[command(subcommand)]
        cmd: postern::spool::cli::QueueCmd,
    },
}

fn config_flag_help() -> String {
    format!("Config file [default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH}]")
}

fn run_help() -> String {
    format!(
        "The config file is -c/--config FILE, else ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH}.\n\
         Relative paths inside it resolve against its directory."
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = config_path(cli.config);
    match cli.command {
        Cmd::Run => run(config),
        Cmd::Check => check(config),
        Cmd::Doctor {
            json,
            send_test,
            from,
        } => doctor(config, json, send_test, from),
        Cmd::HashPassword => hash_password(),
        Cmd::Queue { cmd } => queue(config, cmd),
    }
}

/// `postern queue ...` on the spool of the config at `path`.
fn queue(path: PathBuf, cmd: postern::spool::cli::QueueCmd) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match postern::spool::cli::for_config(&config, cmd, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(path: PathBuf, json: bool, send_test: Option<String>, from: Option<String>) -> ExitCode {
    for a in send_test.iter().chain(from.iter()) {
        if !plausible_address(a) {
            eprintln!("postern: {a:?} is not a mail address (local@domain)");
            return ExitCode::from(EX_USAGE);
        }
    }
    let send = send_test.map(|to| postern::doctor::SendTest { to, from });
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = rt.block_on(postern::doctor::diagnose_with(&config, send.as_ref()));
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("postern: {e}"),
        }
    } else {
        print!("{}", postern::doctor::render(&rows));
    }
    if rows.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether `a` can go in `MAIL FROM:<…>` / `RCPT TO:<…>` as it is.
fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>\"(),;:[]\\".contains(&b))
}

/// `--config`, else `$POSTERN_CONFIG`, else the default.
fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn init_logging(format: LogFormat) {
    postern::logging::init(format);
}

/// Prints every problem of a config error on its own line.
fn report_config_error(e: &ConfigError) {
    let problems = e.problems();
    for p in &problems {
        eprintln!("postern: {p}");
    }
    if problems.len() > 1 {
        eprintln!("postern: {} mistakes; nothing was changed", problems.len());
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        report_config_error(&e);
        ExitCode::from(EX_USAGE)
    })
}

fn run(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dirs = config.check_dirs(true);
    if !dirs.is_empty() {
        for e in &dirs {
            eprintln!("postern: {e}");
        }
        return ExitCode::from(EX_USAGE);
    }
    init_logging(config.server.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    postern::fdlimit::raise_and_report(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.runtime_workers())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(workers = runtime.metrics().num_workers(), "runtime started");
    let chosen_by = config.clone();
    runtime.block_on(async move {
        let server = match postern::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                let (hint, key) = match &e {
                    postern::Error::Bind { addr, source, .. } => (
                        postern::config::bind_hint(addr, source),
                        chosen_by.key_of_addr(addr),
                    ),
                    _ => (None, None),
                };
                tracing::error!("{e}");
                eprintln!("postern: {e}");
                if let Some(k) = key {
                    eprintln!("postern: set by {k}");
                }
                if let Some(h) = hint {
                    eprintln!("postern: hint: {h}");
                }
                return if e.is_config() {
                    ExitCode::from(EX_USAGE)
                } else {
                    ExitCode::FAILURE
                };
            }
        };
        // Every handler is in place before READY=1: a SIGHUP or SIGTERM right
        // after it must not find the default action (which ends the process).
        let stop = match StopSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("postern: cannot listen for SIGTERM/SIGINT: {e}");
                return ExitCode::FAILURE;
            }
        };
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_on_sighup(hup, server.reloader(), path));
            }
            Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}); reload by restarting"),
        }
        notify::send("READY=1\nSTATUS=serving");
        match server.run(stop.wait()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Re-reads the config file on every SIGHUP and installs what can change while serving.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    reloader: postern::server::Reloader,
    path: PathBuf,
) {
    while hup.recv().await.is_some() {
        tracing::info!(config = %path.display(), "SIGHUP: reloading");
        notify::send("RELOADING=1\nSTATUS=reloading");
        match reloader.reload_file(&path) {
            Ok(()) => notify::send("READY=1\nSTATUS=serving (reloaded)"),
            Err(e) => {
                for line in e.lines() {
                    tracing::error!("reload failed, keeping the running configuration: {line}");
                }
                notify::send("READY=1\nSTATUS=serving (last reload failed; see the log)");
            }
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered at once so none is missed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes on the first of them.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        notify::send("STOPPING=1\nSTATUS=stopping");
        tracing::info!("stop requested");
    }
}

fn check(path: PathBuf) -> ExitCode {
    match load(&path) {
        Ok(config) => {
            print!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        match read_password_twice() {
            Ok(p) => p,
            Err(code) => return code,
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("postern: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("postern: empty password");
        return ExitCode::from(EX_USAGE);
    }
    match postern::password::hash_password(&password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Asks on the terminal, without echo, twice, and compares.
///
/// rpassword turns echo and signals off while it reads and, on Ctrl-C, raises
/// SIGINT *before* it puts the terminal back: with the default action the
/// process would die with echo still off. So SIGINT is caught for the time of
/// the prompts; rpassword then returns `Interrupted`, restores the terminal as
/// it unwinds, and we exit 130. A SIGINT from elsewhere (`kill -INT`) while
/// the read blocks is answered the same way, the terminal restored with `stty`.
fn read_password_twice() -> Result<String, ExitCode> {
    let guard = interrupt::Guard::install();
    let ask = |prompt: &str| -> Result<String, ExitCode> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        rpassword::read_password().map_err(|e| {
            if e.kind() == std::io::ErrorKind::Interrupted {
                eprintln!();
                std::process::exit(EXIT_INTERRUPTED);
            }
            eprintln!("postern: cannot read the password: {e}");
            ExitCode::FAILURE
        })
    };
    let first = ask("Password: ")?;
    if first.is_empty() {
        eprintln!("postern: empty password");
        return Err(ExitCode::from(EX_USAGE));
    }
    let second = ask("Again: ")?;
    drop(guard);
    if first != second {
        eprintln!("postern: the two passwords differ; nothing was hashed");
        return Err(ExitCode::from(EX_USAGE));
    }
    Ok(first)
}

/// Catching SIGINT while the password prompts are up.
mod interrupt {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// While alive, SIGINT does not kill the process.
    pub struct Guard {
        done: Arc<AtomicBool>,
    }

    impl Guard {
        pub fn install() -> Option<Guard> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let mut sig = {
                let _enter = rt.enter();
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()?
            };
            let done = Arc::new(AtomicBool::new(false));
            let watch = done.clone();
            std::thread::spawn(move || {
                rt.block_on(async {
                    while sig.recv().await.is_some() {
                        // rpassword's own Ctrl-C path returns and exits within moments;
                        // if we are still here, the signal came from outside.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if watch.load(Ordering::SeqCst) {
                            continue;
                        }
                        restore_echo();
                        eprintln!();
                        std::process::exit(super::EXIT_INTERRUPTED);
                    }
                });
            });
            Some(Guard { done })
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.done.store(true, Ordering::SeqCst);
        }
    }

    fn restore_echo() {
        if let Ok(tty) = std::fs::File::open("/dev/tty") {
            let _ = std::process::Command::new("stty")
                .arg("echo")
                .arg("icanon")
                .arg("isig")
                .stdin(tty)
                .status();
        }
    }
}

/// systemd's readiness protocol (sd_notify): one datagram per state change to
/// the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
/// abstract namespace). Without the variable, nothing is sent.
mod notify {
    use std::os::unix::net::UnixDatagram;

    pub fn send(state: &str) {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        if let Err(e) = send_to(&target, state) {
            tracing::warn!("sd_notify to {}: {e}", target.to_string_lossy());
        }
    }

    fn send_to(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let sock = UnixDatagram::unbound()?;
        let bytes = target.as_bytes();
        #[cfg(target_os = "linux")]
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        sock.send_to(state.as_bytes(), std::path::Path::new(target))?;
        Ok(())
    }
}
