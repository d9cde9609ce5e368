//! Command line: `run`, `check`, `validate`, and their exit codes. Nothing else lives here.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use egress_proxy::config::source::{LoadError, Loaded, Source};
use egress_proxy::serve;

#[derive(Parser)]
#[command(name = "egress-proxy", version, about = "Deny-by-default egress proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every listener in the config and serve until SIGTERM/SIGINT, then drain.
    Run {
        /// A file path, or ssm:/parameter/name.
        #[arg(long, env = "EGRESS_PROXY_CONFIG")]
        config: String,
    },
    /// Print the decision the proxy would make for HOST[:PORT] (exit 0 allow, 1 deny).
    Check {
        #[arg(long, env = "EGRESS_PROXY_CONFIG")]
        config: String,
        /// The client address asking (default 0.0.0.0).
        #[arg(long)]
        client: Option<IpAddr>,
        /// The workload the request carries valid credentials for (a name under `principals:`).
        #[arg(long)]
        principal: Option<String>,
        /// The SNI the client would send (checked against HOST).
        #[arg(long)]
        sni: Option<String>,
        /// Judge the name only; don't resolve and check its addresses.
        #[arg(long)]
        no_resolve: bool,
        /// Port when HOST has none.
        #[arg(long, default_value_t = 443)]
        port: u16,
        /// host, host:port, or [v6]:port.
        target: String,
    },
    /// Read decision lines (files, or stdin) and print the smallest config change that would
    /// allow what was denied or would have been (report mode): merged into the config's rules
    /// when one is given, never wider than what was seen.
    Suggest {
        /// The config to merge into: a file path, or ssm:/parameter/name.
        #[arg(long, env = "EGRESS_PROXY_CONFIG")]
        config: Option<String>,
        /// Decision log files; stdin when none or `-`.
        files: Vec<std::path::PathBuf>,
    },
    /// Parse and check the config; print every problem with its field path.
    Validate {
        #[arg(long, env = "EGRESS_PROXY_CONFIG")]
        config: String,
    },
}

const EXIT_CONFIG: u8 = 2;

/// `println!`/`eprintln!` without their panic when the stream is a closed pipe: a command
/// whose output nobody reads still exits with the status its outcome calls for.
macro_rules! say {
    ($stream:ident, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::$stream(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; log shippers get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EGRESS_PROXY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Configs are read and parsed on their own thread (`config::worker`); the blocking
        // pool only flushes the log at exit. A cap keeps anything that strays onto it from
        // leaving a burst's peak of threads, each with its own malloc arena.
        .max_blocking_threads(2)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say!(stderr, "egress-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Validate { config } => validate(&config).await,
            Command::Suggest { config, files } => suggest(config.as_deref(), &files).await,
            Command::Check {
                config,
                client,
                principal,
                sni,
                no_resolve,
                port,
                target,
            } => {
                let Ok(Loaded { config, .. }) = load(&config).await else {
                    return ExitCode::from(EXIT_CONFIG);
                };
                if let Some(name) = principal
                    .as_deref()
                    .filter(|n| !config.principals.contains(n))
                {
                    say!(
                        stderr,
                        "egress-proxy: --principal {name}: no such principal under principals:"
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
                let query = egress_proxy::check::Query {
                    client: SocketAddr::new(client.unwrap_or(IpAddr::from([0, 0, 0, 0])), 0),
                    principal: principal.as_deref(),
                    sni: sni.as_deref(),
                    resolve: !no_resolve,
                    target: &target,
                    default_port: port,
                };
                let outcome = egress_proxy::check::check(config, query).await;
                say!(stdout, "{}", outcome.summary());
                ExitCode::from(if outcome.allowed { 0 } else { 1 })
            }
        }
    })
}

/// Reads and checks a config, printing every problem to stderr.
/// Problems and warnings name the file with line and column (`egress.yaml:12:7: ...`), so
/// an editor or a terminal can jump there.
async fn load(source: &str) -> Result<Loaded, ()> {
    let name = source;
    let source = Source::parse(source);
    let loaded = source.load().await.map_err(|error| match error {
        LoadError::Read(e) => say!(stderr, "egress-proxy: {e}"),
        LoadError::Invalid(problems) => {
            say!(
                stderr,
                "egress-proxy: {source}: {} problem(s):",
                problems.0.len()
            );
            say!(stderr, "{}", problems.display_in(name));
        }
    })?;
    for warning in &loaded.config.warnings {
        say!(stderr, "warning: {}", warning.display_in(name));
    }
    Ok(loaded)
}

async fn suggest(source: Option<&str>, files: &[std::path::PathBuf]) -> ExitCode {
    use std::io::BufRead;
    // Line by line, so a log of any size costs only the distinct requests it denied.
    let mut lines = egress_proxy::suggest::Lines::default();
    let mut take = |mut input: Box<dyn BufRead>| -> std::io::Result<()> {
        let mut line = Vec::new();
        while input.read_until(b'\n', &mut line)? > 0 {
            lines.read(&String::from_utf8_lossy(&line));
            line.clear();
        }
        Ok(())
    };
    let stdin = [std::path::PathBuf::from("-")];
    for path in if files.is_empty() { &stdin[..] } else { files } {
        let read = if path == std::path::Path::new("-") {
            take(Box::new(std::io::stdin().lock()))
        } else {
            std::fs::File::open(path).and_then(|f| take(Box::new(std::io::BufReader::new(f))))
        };
        if let Err(e) = read {
            say!(
                stderr,
                "egress-proxy: reading decision lines from {}: {e}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let loaded = match source {
        Some(source) => match load(source).await {
            Ok(loaded) => Some(loaded),
            Err(()) => return ExitCode::from(EXIT_CONFIG),
        },
        None => None,
    };
    let base = source
        .zip(loaded.as_ref())
        .map(|(source, loaded)| egress_proxy::suggest::Base {
            source,
            text: &loaded.text,
            config: &loaded.config,
        });
    let out = lines.suggest(base.as_ref());
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    ExitCode::SUCCESS
}

async fn validate(source: &str) -> ExitCode {
    match load(source).await {
        Ok(Loaded { config, .. }) => {
            say!(
                stdout,
                "{source}: valid, {} rules",
                config.policy.rules().len()
            );
            ExitCode::SUCCESS
        }
        Err(()) => ExitCode::from(EXIT_CONFIG),
    }
}

async fn run(source: &str) -> ExitCode {
    let Ok(loaded) = load(source).await else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let started = async {
        // Signals are hooked before binding, so a SIGTERM right after start still drains.
        let stop = serve::stop_signal().await?;
        let bound = serve::Bound::bind(&loaded.config.listeners).await?;
        let serving = serve::Serving {
            source: Source::parse(source),
            loaded,
            bound,
            log: egress_proxy::log::DecisionLog::to_stdout(),
        };
        serve::run(serving, stop).await
    };
    match started.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
