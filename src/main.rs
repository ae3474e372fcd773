//! The `postern` command: `run`, `check`, `hash-password`.

#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern::config::{Config, DEFAULT_CONFIG_PATH, LogFormat, UpstreamKind};

/// Exit code for a bad configuration or usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "postern", version, about = "SMTP-aware authenticating relay")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on the configured listeners.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a config file and print a summary.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Read a password from stdin and print an argon2id hash for `password_hash`.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config } => run(config),
        Cmd::Check { config } => check(config),
        Cmd::HashPassword => hash_password(),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    init_logging(config.server.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match postern::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("postern: {e}");
                return if e.is_config() {
                    ExitCode::from(EX_USAGE)
                } else {
                    ExitCode::FAILURE
                };
            }
        };
        #[cfg(unix)]
        tokio::spawn(reload_on_sighup(server.reloader(), path));
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Re-reads the config file on every SIGHUP and installs what can change while serving.
#[cfg(unix)]
async fn reload_on_sighup(reloader: postern::server::Reloader, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by restarting");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!(config = %path.display(), "SIGHUP: reloading");
        if let Err(e) = reloader.reload_file(&path) {
            tracing::error!("reload failed, keeping the running configuration: {e}");
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("stop requested");
}

fn check(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let mut out = String::new();
    out.push_str(&format!("{}: OK\n", path.display()));
    out.push_str(&format!("server: hostname {}\n", config.server.hostname));
    for l in &config.listeners {
        out.push_str(&format!(
            "listener {}: {} tls={:?} auth={:?} plaintext_auth={}{}\n",
            l.name.get_ref(),
            l.addr.get_ref(),
            l.tls.get_ref(),
            l.auth,
            l.plaintext_auth_allowed(),
            if l.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()) {
                format!(" proxy_protocol from {} source(s)", l.proxy_from.len())
            } else {
                String::new()
            }
        ));
    }
    if let Some(m) = &config.metrics {
        out.push_str(&format!("metrics: http://{}/metrics\n", m.addr));
    }
    let mut warnings = config.warnings.clone();
    for u in &config.upstreams {
        match u.kind.get_ref() {
            UpstreamKind::Outbox => out.push_str(&format!(
                "upstream {}: outbox in {}\n",
                u.name(),
                u.dir
                    .as_ref()
                    .map(|d| d.get_ref().display().to_string())
                    .unwrap_or_default()
            )),
            UpstreamKind::Smtp => {
                let secret = u.secret();
                out.push_str(&format!(
                    "upstream {}: smtp {} tls={:?} user={} password from {}\n",
                    u.name(),
                    u.addr.as_ref().map(|a| a.get_ref().as_str()).unwrap_or(""),
                    u.tls_mode(),
                    u.username
                        .as_ref()
                        .map(|s| s.get_ref().as_str())
                        .unwrap_or("(none)"),
                    secret
                        .as_ref()
                        .map_or("nowhere".to_owned(), ToString::to_string),
                ));
                out.push_str(&format!(
                    "  pool={} max_connections={} pool_wait={}s idle_timeout={}s health_check_interval={}s\n",
                    u.pool.unwrap_or(true),
                    u.max_connections
                        .unwrap_or(postern::config::DEFAULT_UPSTREAM_MAX_CONNECTIONS),
                    u.pool_wait
                        .map_or(postern::config::DEFAULT_POOL_WAIT, |s| s.0)
                        .as_secs(),
                    u.idle_timeout
                        .map_or(postern::config::DEFAULT_UPSTREAM_IDLE_TIMEOUT, |s| s.0)
                        .as_secs(),
                    u.health_check_interval
                        .map_or(postern::config::DEFAULT_HEALTH_CHECK_INTERVAL, |s| s.0)
                        .as_secs(),
                ));
                if let Some(Err(e)) = secret.map(|s| s.resolve()) {
                    warnings.push(format!(
                        "upstream {}: {e} (needed by `postern run`)",
                        u.name()
                    ));
                }
            }
        }
    }
    for u in &config.users {
        let up = config.user_upstream(u).map_or("?", |x| x.name());
        let limits = config.user_limits(u);
        out.push_str(&format!(
            "user {}: upstream {} auth={} networks={} senders=[{}] rewrite_sender={}\n",
            u.name(),
            up,
            if u.password_hash.is_some() {
                "password"
            } else {
                "none"
            },
            u.networks.len(),
            u.allowed_senders
                .iter()
                .map(|s| s.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", "),
            u.rewrite_sender
                .as_ref()
                .map_or("-", |s| s.get_ref().as_str()),
        ));
        out.push_str(&format!(
            "  limits: max_message_size={} max_recipients={} messages_per_minute={} recipients_per_hour={}\n",
            limits.max_message_size, limits.max_recipients, limits.messages_per_minute, limits.recipients_per_hour
        ));
    }
    let l = &config.limits;
    out.push_str(&format!(
        "limits: max_message_size={} max_recipients={} max_connections={} idle_timeout={}s\n",
        l.max_message_size,
        l.max_recipients,
        l.max_connections,
        l.idle_timeout.as_secs()
    ));
    for w in &warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
        match rpassword::read_password() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("postern: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
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
    match postern::auth::hash_password(&password) {
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
