//! Logging setup: structured `tracing` events, human-readable on a terminal, JSON lines
//! otherwise (production, cron, containers). Log lines carry counts, file names, line numbers,
//! field names and rules; never a record's values (see `pipeline` and `pii`).

use std::io::IsTerminal;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (to stderr). `RUST_LOG` refines the level.
pub fn init(format: LogFormat, default_level: &str) {
    // lapin logs its own connection errors (ACCESS_REFUSED, "backoff attempts exhausted") as raw
    // lines before council-bridge says the same thing plainly; keep them for RUST_LOG users.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default_level},lapin=off"))
        })
        // lapin logs a returned (unroutable) message whole, body included: personal data.
        // council-bridge logs the return itself, without the body.
        .add_directive(
            "lapin::returned_messages=off"
                .parse()
                .expect("valid directive"),
        )
        // The PostgreSQL driver logs every statement's parameters at debug level: record
        // values, personal data included.
        .add_directive("tokio_postgres=info".parse().expect("valid directive"))
        .add_directive("postgres=info".parse().expect("valid directive"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
