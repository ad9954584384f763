//! The command line: parse arguments, call the library, render results. No business logic
//! lives here. Errors become `anyhow` reports with context an IT officer can act on.
//!
//! Exit codes: 0 done; 1 a feed or command could not be carried out; 2 usage; 3 messages are
//! waiting in the outbox because the configured broker could not be reached; 4 a batch was held
//! (control totals, reject threshold, drift or mass delete; docs/operations.md).

mod render;
mod toolkit;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::amqp::BrokerConfig;
use crate::canonical::Registry;
use crate::config::Config;
use crate::pipeline::{self, flush::Retry};
use crate::store::{Location, Store};
use crate::telemetry::{self, LogFormat};

/// council-bridge: council exports → canonical model → RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "council-bridge", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "COUNCIL_BRIDGE_CONFIG",
        default_value = "council-bridge.yaml"
    )]
    pub config: PathBuf,
    /// Broker URL, or a cluster's node URLs separated by commas (overrides `broker.url` and
    /// `broker.urls`); without one, messages wait in the outbox.
    #[arg(long, global = true, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// The store: an SQLite file or a PostgreSQL address, `postgres://user@host:port/database`
    /// (overrides `store`).
    #[arg(
        long,
        global = true,
        env = "COUNCIL_BRIDGE_STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
// Parsed once per process: the size of the largest variant (the failure filters) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process the configured feeds' files once, then publish what waits in the outbox.
    Run {
        /// Only this council.
        #[arg(long)]
        council: Option<String>,
        /// Only this feed.
        #[arg(long)]
        feed: Option<String>,
        /// Read files again even if already processed (same sha256).
        #[arg(long)]
        force: bool,
    },
    /// Run unattended: every feed on its schedule or as files arrive, publishing continuously,
    /// dead letters kept as failures, /metrics /health /ready served. Stops cleanly on SIGTERM.
    Serve {
        /// Address for /metrics, /health and /ready (default: `listen:` in the configuration,
        /// else 127.0.0.1:9464).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Each feed's schedule, next run, last arrival and outcome, held batches and lateness,
    /// and the outbox.
    Status,
    /// The store itself.
    Store {
        /// init | prune | migrate | copy
        #[command(subcommand)]
        action: StoreCmd,
    },
    /// The outbox: messages waiting for the broker.
    Outbox {
        /// status | flush
        #[command(subcommand)]
        action: OutboxCmd,
    },
    /// Rejected rows and undeliverable messages: list, show, replay.
    Failures {
        /// list | show | replay
        #[command(subcommand)]
        action: FailuresCmd,
    },
    /// Batches (one per file processed).
    Batches {
        /// list | release | discard
        #[command(subcommand)]
        action: BatchesCmd,
    },
    /// Run reports: each pass over a feed, the files it took and what became of them.
    Runs {
        /// list | show
        #[command(subcommand)]
        action: RunsCmd,
    },
    /// Mapping files.
    Mapping {
        /// check | test | coverage
        #[command(subcommand)]
        action: MappingCmd,
    },
    /// Partner councils.
    Council {
        /// init
        #[command(subcommand)]
        action: CouncilCmd,
    },
    /// The canonical model.
    Schema {
        /// list | show | docs | lock
        #[command(subcommand)]
        action: SchemaCmd,
    },
    /// The broker.
    Broker {
        /// setup
        #[command(subcommand)]
        action: BrokerCmd,
    },
    /// The operators' API (/api/v1) and web console (/console) alone: no feeds are read and
    /// nothing is published (replayed messages wait for `serve` or `outbox flush`).
    Console {
        /// Address to listen on (default: `listen:` in the configuration, else 127.0.0.1:9464).
        #[arg(long)]
        listen: Option<String>,
    },
    /// API tokens for the console and /api/v1.
    Tokens {
        /// create | list | revoke
        #[command(subcommand)]
        action: TokensCmd,
    },
    /// The audit log: replays, discards, releases, reveals, token changes.
    Audit {
        /// list
        #[command(subcommand)]
        action: AuditCmd,
    },
}

/// `tokens` actions.
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create a token; its secret is printed once (as `token` with --json) and stored only as
    /// a hash.
    Create {
        /// viewer (read, personal data masked) | operator (replay, discard, release, reveal) |
        /// admin.
        #[arg(long)]
        role: String,
        /// Councils it may see: one, several (`a,b`) or `*` for every council.
        #[arg(long)]
        council: String,
        /// A name for people (who holds it).
        #[arg(long, default_value = "unnamed")]
        name: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: i64,
    },
}

/// `audit` actions.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Newest first.
    List {
        /// Only this council's entries.
        #[arg(long)]
        council: Option<String>,
        /// Only actions starting with this (`failure.`, `token.`).
        #[arg(long)]
        action: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Which failures (`failures list`, `failures replay --matching`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FailureFilterArgs {
    /// Only this council.
    #[arg(long)]
    pub council: Option<String>,
    /// Only this feed.
    #[arg(long)]
    pub feed: Option<String>,
    /// Only this canonical entity (e.g. payroll.pay_result).
    #[arg(long)]
    pub entity: Option<String>,
    /// Only this kind: decode, mapping, validation, unroutable, refused, dead-lettered.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only failures with an error of this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only failures with an error on this canonical field.
    #[arg(long)]
    pub field: Option<String>,
    /// Failed at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Failed before (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Text in the file name or an error message.
    #[arg(long)]
    pub text: Option<String>,
    /// open (default), replayed, discarded or all.
    #[arg(long)]
    pub status: Option<String>,
}

impl FailureFilterArgs {
    fn filter(&self) -> crate::store::FailureFilter {
        crate::store::FailureFilter {
            council: self.council.clone(),
            feed: self.feed.clone(),
            entity: self.entity.clone(),
            kind: self.kind.clone(),
            rule: self.rule.clone(),
            field: self.field.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            text: self.text.clone(),
            status: self.status.clone(),
            ..Default::default()
        }
    }
}

/// `store` actions.
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Create the store (at --store, COUNCIL_BRIDGE_STORE or the configured path) if it does not
    /// exist, and bring its schema up to date.
    Init,
    /// Drop the payloads of messages sent longer ago than `retention.sent_payload_days` (ids and
    /// content hashes stay) and run reports older than `retention.run_report_days`. `serve`
    /// does this every hour.
    Prune,
    /// Apply the schema migrations the store has not had yet (every command also does on
    /// opening it) and show its schema version before and after.
    Migrate,
    /// Copy every table of one store into a new, empty one (SQLite or PostgreSQL, either way),
    /// in one transaction on the target. Stop the instances using the source first.
    Copy {
        /// The store copied (default: the store in use, --store or the configured one).
        #[arg(long)]
        from: Option<String>,
        /// The store written: an SQLite file or a `postgres://` address; it must hold no
        /// batches or outbox rows.
        #[arg(long)]
        to: String,
    },
}

/// `outbox` actions.
#[derive(Debug, Subcommand)]
pub enum OutboxCmd {
    /// Count messages by state.
    Status,
    /// Publish every pending message now.
    Flush,
}

/// `failures` actions.
#[derive(Debug, Subcommand)]
pub enum FailuresCmd {
    /// List open failures (filters narrow the list).
    List {
        /// Which failures.
        #[command(flatten)]
        filter: FailureFilterArgs,
        /// Include replayed and discarded ones (same as --status all).
        #[arg(long)]
        all: bool,
        /// After this failure id (paging).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one failure (personal data masked).
    Show {
        /// Failure id.
        id: i64,
    },
    /// Re-map failures' raw records with the current mapping and queue them (or re-queue a
    /// stored message); by id, or every failure matching the filters with --matching (a
    /// resumable bulk job).
    Replay {
        /// Failure ids.
        ids: Vec<i64>,
        /// Replay every open failure matching the filters (a bulk job, resumable).
        #[arg(long)]
        matching: bool,
        /// Which failures, with --matching.
        #[command(flatten)]
        filter: FailureFilterArgs,
        /// Resume an interrupted bulk job.
        #[arg(long)]
        resume: Option<String>,
        /// Report what would happen per record; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "mapping or data fixed")]
        reason: String,
    },
    /// Discard failures: kept, marked discarded, never replayed. Audited.
    Discard {
        /// Failure ids.
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// `batches` actions.
#[derive(Debug, Subcommand)]
pub enum BatchesCmd {
    /// List batches, newest first.
    List {
        /// Only this council.
        #[arg(long)]
        council: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Release a held batch so its messages are published (a snapshot's changes are then
    /// applied to the feed's state).
    Release {
        /// Batch id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Discard a held batch: its messages are dropped, never published; a snapshot leaves the
    /// feed's state unchanged; the file counts as processed (`run --force` reads it again).
    Discard {
        /// Batch id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// `runs` actions.
#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// List runs, newest first.
    List {
        /// Only this council.
        #[arg(long)]
        council: Option<String>,
        /// Only this feed.
        #[arg(long)]
        feed: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one run: each file's report (counts, held reasons, delta, control totals).
    Show {
        /// Run id.
        id: String,
    },
}

/// `mapping` actions.
#[derive(Debug, Subcommand)]
pub enum MappingCmd {
    /// Compile mapping files against the canonical model and report every problem.
    Check {
        /// Mapping files (default: every feed's mapping in the configuration).
        paths: Vec<PathBuf>,
    },
    /// Run the golden tests kept next to mappings (`<mapping>.tests.yaml`); exit 1 if any fails.
    Test {
        /// Tests files, mapping files (their `.tests.yaml`) or folders (every `*.tests.yaml`
        /// under them); default: every `*.tests.yaml` under the mappings folder.
        paths: Vec<PathBuf>,
    },
    /// Draft a mapping from a sample export: detects format, encoding, delimiter, header,
    /// trailer, date formats and money columns, and matches columns to canonical fields.
    Scaffold {
        /// The sample export.
        #[arg(long)]
        sample: PathBuf,
        /// The canonical entity, e.g. `finance.supplier_payment`.
        #[arg(long)]
        entity: String,
        /// Council id for the mapping id (default: `draft`).
        #[arg(long, default_value = "draft")]
        council: String,
        /// Write the draft here (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a sample's first rows beside the canonical values a mapping makes of them.
    Preview {
        /// The mapping file.
        mapping: PathBuf,
        /// The sample export.
        #[arg(long)]
        sample: PathBuf,
        /// How many records.
        #[arg(long, default_value_t = 10)]
        rows: usize,
    },
    /// Which canonical fields a mapping fills and leaves empty, and (with --sample) which
    /// columns of a sample file it does not read.
    Coverage {
        /// The mapping file.
        mapping: PathBuf,
        /// A sample export, read with the mapping's format options.
        #[arg(long)]
        sample: Option<PathBuf>,
    },
}

/// `council` actions.
#[derive(Debug, Subcommand)]
pub enum CouncilCmd {
    /// Create a council's folder under the mappings folder: council.yaml (no feeds yet),
    /// README.md with the onboarding steps, and samples/.
    Init {
        /// Council id: lower-case letters, digits and `-` (it is part of routing keys).
        id: String,
        /// Full name (default: from the id, e.g. `north-vale` → "North Vale").
        #[arg(long)]
        name: Option<String>,
    },
}

/// `schema` actions.
#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// List the canonical entities.
    List,
    /// Show one entity's reference page (or its JSON Schema with --json).
    Show {
        /// Entity, e.g. `payroll.pay_result`.
        entity: String,
    },
    /// Write one reference page per entity (and an index) from the schemas.
    Docs {
        /// Folder to write to.
        #[arg(long, default_value = "docs/canonical")]
        out: PathBuf,
    },
    /// Record the shape of every schema version in <schemas>/compat.lock.json, after an
    /// additive change (a breaking change needs a new major version file instead).
    Lock,
}

/// `broker` actions.
#[derive(Debug, Subcommand)]
pub enum BrokerCmd {
    /// Declare the exchanges, the dead-letter queue and the configured consumer queues
    /// (`broker.queues`), all quorum queues (idempotent; an existing queue is never changed).
    Setup,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    telemetry::init(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each cause said once: a library error that already
/// quotes its cause (`cannot read X: No such file or directory (os error 2)`) is not followed by
/// the same cause again.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// How hard one-shot commands try to reach the broker (`broker.retry_seconds`).
fn retry(env: &Env) -> Retry {
    Retry {
        budget: Duration::from_secs(env.config.broker.retry_seconds),
        ..Retry::default()
    }
}

fn unknown_council(config: &Config, c: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no council `{c}` is configured (councils: {})",
        config
            .councils
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

struct Env {
    config: Config,
    broker: Option<BrokerConfig>,
    store: Location,
}

fn env(cli: &Cli) -> Result<Env> {
    let config = Config::load(&cli.config).with_context(|| {
        format!(
            "cannot load the configuration {} (use --config or COUNCIL_BRIDGE_CONFIG)",
            cli.config.display()
        )
    })?;
    let url = cli
        .amqp_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| config.broker.url_setting());
    if let Some(url) = &url {
        // Before the URL is printed, logged or sent anywhere (a malformed one would otherwise
        // reach the broker as a vhost name, or an error message, with its password).
        crate::amqp::validate_urls(url)?;
    }
    let broker = url.map(|url| {
        let mut b = BrokerConfig::new(url);
        b.exchange = config.broker.exchange.clone();
        b.dead_letter_exchange = config.broker.dead_letter_exchange.clone();
        b.dead_letter_queue = config.broker.dead_letter_queue.clone();
        if config.broker.quorum_group_size.is_some() {
            b.quorum_group_size = config.broker.quorum_group_size;
        }
        b.queues = config
            .broker
            .queues
            .iter()
            .map(|(name, patterns)| (name.clone(), patterns.clone()))
            .collect();
        b.connection_name = format!("council-bridge pid {}", std::process::id());
        b.timeout = Duration::from_secs(30);
        b
    });
    let store = cli
        .store
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(Location::parse)
        .unwrap_or_else(|| config.store.clone());
    Ok(Env {
        config,
        broker,
        store,
    })
}

/// Opens the store. The configured store is created on first use; any other path (from
/// `--store` or `COUNCIL_BRIDGE_STORE`) must exist, so a mistyped path is an error rather than a
/// new, empty store that hides the real one (`store init` creates one on purpose).
fn open_store(env: &Env) -> Result<Store> {
    existing_store(&env.store, &env.config.store)?;
    Store::open(&env.store).with_context(|| format!("cannot open the store {}", env.store))
}

/// Refuses a store other than the configured one that does not exist.
fn existing_store(location: &Location, configured: &Location) -> Result<()> {
    if location != configured && !location.exists() {
        bail!(
            "there is no store at {location} (the configured store is {configured}); check --store or COUNCIL_BRIDGE_STORE, or create a new store there with `council-bridge store init`",
        );
    }
    Ok(())
}

fn registry(env: &Env) -> Result<Registry> {
    let registry = Registry::load(&env.config.schemas).with_context(|| {
        format!(
            "cannot load the canonical schemas from {}",
            env.config.schemas.display()
        )
    })?;
    Ok(match &env.config.modulus {
        None => registry,
        Some(m) => {
            let table =
                crate::canonical::modulus::ModulusTable::load(&m.valacdos, m.scsubtab.as_deref())
                    .with_context(|| {
                    format!("cannot load the modulus table {}", m.valacdos.display())
                })?;
            registry.with_modulus(table)
        }
    })
}

fn operator(env: &Env) -> Result<pipeline::Operator> {
    Ok(pipeline::Operator::new(
        std::sync::Arc::new(env.config.clone()),
        std::sync::Arc::new(registry(env)?),
    ))
}

fn actor() -> String {
    std::env::var("COUNCIL_BRIDGE_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

async fn flush_if_configured(
    env: &Env,
    store: &Store,
    retry: &Retry,
) -> Result<Option<pipeline::FlushReport>> {
    match &env.broker {
        None => Ok(None),
        Some(b) => Ok(Some(
            pipeline::flush(store, b, retry)
                .await
                .context("the store failed while publishing")?,
        )),
    }
}

/// What this process is, as other processes see it when it holds a lease.
fn purpose(command: &Command) -> &'static str {
    match command {
        Command::Run { .. } => "run",
        Command::Serve { .. } => "serve",
        Command::Status => "status",
        Command::Outbox { .. } => "outbox flush",
        Command::Failures { .. } => "failures replay",
        Command::Batches { .. } => "batches release",
        Command::Console { .. } => "console",
        _ => "council-bridge",
    }
}

/// `run` on a terminal: a spinner per file with rows read and the rate (stderr, so the summary
/// on stdout stays clean).
struct Spinner(std::sync::Mutex<Option<indicatif::ProgressBar>>);

impl pipeline::progress::Progress for Spinner {
    fn file_started(&self, council: &str, feed: &str, file: &str, bytes: u64) {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix}: {human_pos} rows read, {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!(
            "{council}/{feed} {file} ({:.1} MB)",
            bytes as f64 / 1e6
        ));
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
    fn rows_read(&self, rows: u64) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            bar.set_position(rows);
        }
    }
    fn file_finished(&self) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

async fn execute(cli: &Cli) -> Result<u8> {
    crate::store::lease::set_purpose(purpose(&cli.command));
    if matches!(cli.command, Command::Run { .. })
        && !cli.json
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        pipeline::progress::set(Box::new(Spinner(std::sync::Mutex::new(None))));
    }
    let env = env(cli)?;
    match &cli.command {
        Command::Run {
            council,
            feed,
            force,
        } => {
            if let Some(c) = council
                && env.config.council(c).is_none()
            {
                return Err(unknown_council(&env.config, c));
            }
            if let Some(f) = feed {
                let feeds: Vec<String> = env
                    .config
                    .councils
                    .iter()
                    .filter(|c| council.as_ref().is_none_or(|want| *want == c.id))
                    .flat_map(|c| c.feeds.iter().map(move |f| format!("{}/{}", c.id, f.id)))
                    .collect();
                if !feeds.iter().any(|id| id.ends_with(&format!("/{f}"))) {
                    bail!("no feed `{f}` is configured (feeds: {})", feeds.join(", "));
                }
            }
            let registry = registry(&env)?;
            let store = open_store(&env)?;
            let mut pulls = pipeline::pull(&env.config, council.as_deref(), feed.as_deref()).await;
            let mut reports = pipeline::process(
                &env.config,
                &registry,
                &store,
                council.as_deref(),
                feed.as_deref(),
                *force,
            );
            if reports.is_empty() {
                bail!("no feed matches (check --council and --feed)");
            }
            pulls.extend(
                pipeline::finish_pulls(&env.config, council.as_deref(), feed.as_deref()).await,
            );
            let retry = retry(&env);
            let flush = flush_if_configured(&env, &store, &retry).await?;
            pipeline::delivery_status(&store, &mut reports)?;
            let counts = store.outbox_counts()?;
            render::run(
                cli.json,
                &pulls,
                &reports,
                flush.as_ref(),
                &counts,
                env.broker.is_some(),
            );
            let mut code = 0;
            if flush
                .as_ref()
                .is_some_and(|f| f.error.is_some() && f.still_pending > 0)
            {
                code = 3;
            }
            if reports
                .iter()
                .flat_map(|r| &r.files)
                .any(|f| f.status == "held")
            {
                code = 4;
            }
            if pulls.iter().any(|p| p.error.is_some())
                || reports
                    .iter()
                    .any(|r| r.error.is_some() || r.files.iter().any(|f| f.status == "failed"))
            {
                code = 1;
            }
            Ok(code)
        }
        Command::Serve { listen } => {
            let registry = registry(&env)?;
            let store = open_store(&env)?;
            let listen = listen
                .clone()
                .or_else(|| env.config.listen.clone())
                .unwrap_or_else(|| crate::config::DEFAULT_LISTEN.to_string());
            crate::daemon::run(crate::daemon::Serve {
                config: std::sync::Arc::new(env.config.clone()),
                registry: std::sync::Arc::new(registry),
                store: std::sync::Arc::new(store),
                broker: env.broker.clone(),
                listen,
                clock: std::sync::Arc::new(crate::schedule::SystemClock),
            })
            .await?;
            Ok(0)
        }
        Command::Store {
            action: StoreCmd::Init,
        } => {
            let (before, _) = crate::store::schema_version_of(&env.store)
                .with_context(|| format!("cannot open the store {}", env.store))?;
            let existed = before > 0;
            Store::open(&env.store)
                .with_context(|| format!("cannot create the store {}", env.store))?;
            println!(
                "{} {}",
                if existed {
                    "store up to date:"
                } else {
                    "store created:"
                },
                env.store
            );
            Ok(0)
        }
        Command::Store {
            action: StoreCmd::Migrate,
        } => {
            existing_store(&env.store, &env.config.store)?;
            let (before, latest) = crate::store::schema_version_of(&env.store)
                .with_context(|| format!("cannot open the store {}", env.store))?;
            let store = open_store(&env)?;
            let (after, _) = store.schema_version()?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "store": env.store.to_string(), "before": before, "after": after, "latest": latest })
                );
            } else {
                println!("store {}: schema version {before} of {latest}", env.store);
                if after == before {
                    println!("up to date: schema version {after} of {latest}");
                } else {
                    println!(
                        "migrated: schema version {after} of {latest} ({} applied)",
                        after - before
                    );
                }
            }
            Ok(0)
        }
        Command::Store {
            action: StoreCmd::Copy { from, to },
        } => {
            let from = from
                .as_deref()
                .map_or_else(|| env.store.clone(), Location::parse);
            let to = Location::parse(to);
            if from == to {
                bail!("--from and --to are the same store ({from})");
            }
            if !from.exists() {
                bail!("there is no store at {from} to copy from");
            }
            let source =
                Store::open(&from).with_context(|| format!("cannot open the store {from}"))?;
            let target = Store::open(&to).with_context(|| format!("cannot open the store {to}"))?;
            let report = source
                .copy_into(&target)
                .with_context(|| format!("cannot copy {from} into {to}"))?;
            if cli.json {
                let tables: serde_json::Map<String, serde_json::Value> = report
                    .tables
                    .iter()
                    .map(|(t, n)| (t.clone(), (*n).into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "from": from.to_string(), "to": to.to_string(), "rows": tables })
                );
            } else {
                println!("copied {from} into {to}:");
                for (table, n) in &report.tables {
                    println!("  {table:<18} {n:>10} rows");
                }
            }
            Ok(0)
        }
        Command::Store {
            action: StoreCmd::Prune,
        } => {
            let store = open_store(&env)?;
            let before = store.payload_bytes()?;
            let report = store.prune(&env.config.retention.policy(), chrono::Utc::now())?;
            let after = store.payload_bytes()?;
            let total = |v: &[(String, u64)]| v.iter().map(|(_, b)| b).sum::<u64>();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "pruned": report, "payload_bytes_before": total(&before), "payload_bytes_after": total(&after) })
                );
            } else {
                println!(
                    "pruned: {} sent message payloads (older than {} days), {} run reports (older than {} days); message payloads held: {} → {} bytes",
                    report.payloads_dropped,
                    env.config.retention.sent_payload_days,
                    report.runs_deleted,
                    env.config.retention.run_report_days,
                    total(&before),
                    total(&after)
                );
            }
            Ok(0)
        }
        Command::Status => {
            let store = open_store(&env)?;
            let feeds =
                crate::daemon::status::feed_statuses(&env.config, &store, chrono::Utc::now())?;
            render::status(cli.json, &feeds, &store.outbox_counts()?, &store.leases()?);
            Ok(0)
        }
        Command::Outbox { action } => {
            let store = open_store(&env)?;
            match action {
                OutboxCmd::Status => {
                    render::outbox(cli.json, &store.outbox_counts()?, env.broker.is_some());
                    Ok(0)
                }
                OutboxCmd::Flush => {
                    let Some(broker) = &env.broker else {
                        bail!(
                            "no broker is configured: set AMQP_URL (or --amqp-url, or broker.url in the configuration)"
                        );
                    };
                    let report = pipeline::flush(&store, broker, &retry(&env)).await?;
                    render::flush(cli.json, &report);
                    Ok(if report.error.is_some() && report.still_pending > 0 {
                        3
                    } else {
                        0
                    })
                }
            }
        }
        Command::Failures { action } => {
            let store = open_store(&env)?;
            match action {
                FailuresCmd::List {
                    filter,
                    all,
                    after,
                    limit,
                } => {
                    if let Some(c) = &filter.council
                        && env.config.council(c).is_none()
                    {
                        return Err(unknown_council(&env.config, c));
                    }
                    let mut f = filter.filter();
                    if *all {
                        f.status = Some("all".into());
                    }
                    if f.entity.is_some() {
                        operator(&env)?.resolve(&mut f);
                    }
                    render::failures(cli.json, &store.failures_matching(&f, *after, *limit)?);
                    Ok(0)
                }
                FailuresCmd::Discard { ids, reason } => {
                    let mut code = 0;
                    for id in ids {
                        match store.discard_failure(*id, &actor(), reason) {
                            Ok(()) => println!("failure {id}: discarded (audited)"),
                            Err(e) => {
                                code = 1;
                                println!("failure {id}: not discarded: {e}");
                            }
                        }
                    }
                    Ok(code)
                }
                FailuresCmd::Replay {
                    ids,
                    matching,
                    filter,
                    resume,
                    dry_run,
                    reason,
                } if *matching || resume.is_some() || *dry_run => {
                    let op = operator(&env)?;
                    let mut f = filter.filter();
                    if !ids.is_empty() {
                        f.ids = Some(ids.clone());
                    } else if !*matching && resume.is_none() {
                        bail!("name failure ids, or --matching with filters");
                    }
                    op.resolve(&mut f);
                    if *dry_run {
                        let d = op.dry_run(&store, &f, 1000)?;
                        render::dry_run(cli.json, &d);
                        return Ok(0);
                    }
                    let stop = || pipeline::stop_requested();
                    tokio::spawn(async {
                        if tokio::signal::ctrl_c().await.is_ok() {
                            pipeline::request_stop();
                        }
                    });
                    let job = match resume {
                        Some(j) => op.resume(&store, j, &stop)?,
                        None => op.bulk_replay(&store, &f, &actor(), reason, &stop)?,
                    };
                    let flush = flush_if_configured(&env, &store, &Retry::default()).await?;
                    render::replay_job(cli.json, &job, flush.as_ref());
                    Ok(if job.status == "done" { 0 } else { 1 })
                }
                FailuresCmd::Show { id } => {
                    let failure = store.failure(*id)?;
                    let registry = registry(&env)?;
                    render::failure(cli.json, &failure, &env.config, &registry);
                    Ok(0)
                }
                FailuresCmd::Replay { ids, reason, .. } => {
                    if ids.is_empty() {
                        bail!("name failure ids, or --matching with filters");
                    }
                    let registry = registry(&env)?;
                    let mut code = 0;
                    let mut outcomes = Vec::new();
                    for id in ids {
                        match pipeline::replay_failure(
                            &env.config,
                            &registry,
                            &store,
                            *id,
                            &actor(),
                            reason,
                        ) {
                            Ok(o) => outcomes.push((*id, Ok(o))),
                            Err(e) => {
                                code = 1;
                                outcomes.push((*id, Err(e.to_string())));
                            }
                        }
                    }
                    if outcomes
                        .iter()
                        .any(|(_, o)| matches!(o, Ok(pipeline::ReplayOutcome::StillFailing { .. })))
                    {
                        code = 1;
                    }
                    let flush = flush_if_configured(&env, &store, &retry(&env)).await?;
                    render::replays(cli.json, &outcomes, flush.as_ref());
                    Ok(code)
                }
            }
        }
        Command::Batches { action } => {
            let store = open_store(&env)?;
            match action {
                BatchesCmd::List { council, limit } => {
                    render::batches(cli.json, &store.batches(council.as_deref(), *limit)?);
                    Ok(0)
                }
                BatchesCmd::Release { id, reason } => {
                    let n = store.release_batch(id, &actor(), reason)?;
                    println!("released batch {id}: {n} messages are now pending");
                    let flush = flush_if_configured(&env, &store, &retry(&env)).await?;
                    if let Some(f) = flush {
                        render::flush(cli.json, &f);
                    }
                    Ok(0)
                }
                BatchesCmd::Discard { id, reason } => {
                    let n = store.discard_batch(id, &actor(), reason)?;
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({"discarded": id, "messages_dropped": n})
                        );
                    } else {
                        println!(
                            "discarded batch {id}: {n} messages dropped, never published (audited)"
                        );
                    }
                    Ok(0)
                }
            }
        }
        Command::Runs { action } => {
            let store = open_store(&env)?;
            match action {
                RunsCmd::List {
                    council,
                    feed,
                    limit,
                } => {
                    render::runs(
                        cli.json,
                        &store.runs(council.as_deref(), feed.as_deref(), *limit)?,
                    );
                    Ok(0)
                }
                RunsCmd::Show { id } => {
                    render::run_report(cli.json, &store.run(id)?);
                    Ok(0)
                }
            }
        }
        Command::Mapping {
            action: MappingCmd::Check { paths },
        } => {
            let registry = registry(&env)?;
            let paths: Vec<PathBuf> = if paths.is_empty() {
                env.config
                    .councils
                    .iter()
                    .flat_map(|c| c.feeds.iter().map(|f| f.mapping.clone()))
                    .collect()
            } else {
                paths.clone()
            };
            let mut bad = 0;
            // Feeds may share a mapping file; two files may not share a mapping id (it names
            // the mapping in every message's provenance).
            let mut seen_files = std::collections::HashSet::new();
            let mut ids: std::collections::HashMap<String, PathBuf> = Default::default();
            for p in &paths {
                if !seen_files.insert(p.clone()) {
                    continue;
                }
                match crate::mapping::load(p, &registry) {
                    Ok(m) => match ids.get(&m.id) {
                        Some(first) => {
                            bad += 1;
                            println!(
                                "FAIL  {}: mapping id `{}` is already the id of {}; give each mapping its own `mapping:` id",
                                p.display(),
                                m.id,
                                first.display()
                            );
                        }
                        None => {
                            ids.insert(m.id.clone(), p.clone());
                            println!(
                                "ok    {} ({} v{} → {}, {} fields)",
                                p.display(),
                                m.id,
                                m.version,
                                m.entity,
                                m.field_paths().count()
                            );
                        }
                    },
                    Err(e) => {
                        bad += 1;
                        println!("FAIL  {e}");
                    }
                }
            }
            Ok(if bad > 0 { 1 } else { 0 })
        }
        Command::Mapping {
            action: MappingCmd::Test { paths },
        } => toolkit::mapping_test(cli.json, &env, paths),
        Command::Mapping {
            action: MappingCmd::Coverage { mapping, sample },
        } => toolkit::mapping_coverage(cli.json, &env, mapping, sample.as_deref()),
        Command::Mapping {
            action:
                MappingCmd::Scaffold {
                    sample,
                    entity,
                    council,
                    out,
                },
        } => {
            let registry = registry(&env)?;
            let Some(e) = registry.get(entity) else {
                let names: Vec<String> = registry.iter().map(|e| e.name.clone()).collect();
                bail!(
                    "no canonical entity `{entity}` (entities: {})",
                    names.join(", ")
                );
            };
            let draft = crate::toolkit::scaffold::scaffold(sample, e, council)?;
            match out {
                Some(path) => {
                    if path.exists() {
                        bail!("{} exists; not overwritten", path.display());
                    }
                    std::fs::write(path, &draft.yaml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote a draft mapping to {}: {} field(s) matched, {} required field(s) to fill in; next: `council-bridge mapping preview {} --sample {}`",
                        path.display(),
                        draft.fields.len(),
                        draft.missing_required.len(),
                        path.display(),
                        sample.display()
                    );
                }
                None => print!("{}", draft.yaml),
            }
            Ok(0)
        }
        Command::Mapping {
            action:
                MappingCmd::Preview {
                    mapping,
                    sample,
                    rows,
                },
        } => {
            let registry = registry(&env)?;
            // A draft that does not compile yet is previewed with the fields that do, after
            // its problems: a preview never refuses a draft whose YAML reads.
            let (m, problems) = match crate::mapping::load(mapping, &registry) {
                Ok(m) => (m, Vec::new()),
                Err(crate::mapping::MappingError::Invalid { .. }) => {
                    crate::mapping::load_draft(mapping, &registry)?
                }
                Err(e) => return Err(e.into()),
            };
            let name = sample
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // One preview per record each row makes: the mapping's own, then those of `also:`.
            let mut previews = Vec::new();
            for m in m.records() {
                let e = registry
                    .get(&m.entity)
                    .with_context(|| format!("no schema for {}", m.entity))?;
                let bytes = std::fs::File::open(sample)
                    .with_context(|| format!("cannot open {}", sample.display()))?;
                previews.push(if problems.is_empty() {
                    crate::toolkit::preview::preview(m, e, &name, bytes, *rows)?
                } else {
                    crate::toolkit::preview::preview_draft(m, e, &name, bytes, *rows)?
                });
            }
            if cli.json {
                let mut json = previews[0].to_json();
                if let Some(o) = json.as_object_mut() {
                    o.insert("draft_problems".into(), serde_json::to_value(&problems)?);
                    if previews.len() > 1 {
                        o.insert(
                            "also".into(),
                            serde_json::Value::Array(
                                previews[1..].iter().map(|p| p.to_json()).collect(),
                            ),
                        );
                    }
                }
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                if !problems.is_empty() {
                    println!(
                        "DRAFT  {} problem(s) to fix before `mapping check` passes; previewing the fields that compile:",
                        problems.len()
                    );
                    for p in &problems {
                        println!("  {p}");
                    }
                    println!();
                }
                for (i, preview) in previews.iter().enumerate() {
                    if previews.len() > 1 {
                        if i > 0 {
                            println!();
                        }
                        println!(
                            "RECORDS OF {} ({} of {} per row)",
                            preview.entity,
                            i + 1,
                            previews.len()
                        );
                    }
                    print!("{}", preview.render_table(120));
                }
            }
            Ok(
                if problems.is_empty() && previews.iter().all(|p| p.records.iter().all(|r| r.ok)) {
                    0
                } else {
                    1
                },
            )
        }
        Command::Council {
            action: CouncilCmd::Init { id, name },
        } => toolkit::council_init(cli.json, &env, id, name.as_deref()),
        Command::Schema { action } => schema_command(cli, &env, action),
        Command::Console { listen } => {
            let registry = registry(&env)?;
            let store = open_store(&env)?;
            let listen = listen
                .clone()
                .or_else(|| env.config.listen.clone())
                .unwrap_or_else(|| crate::config::DEFAULT_LISTEN.to_string());
            crate::daemon::console(
                std::sync::Arc::new(env.config.clone()),
                std::sync::Arc::new(registry),
                std::sync::Arc::new(store),
                &listen,
            )
            .await?;
            Ok(0)
        }
        Command::Tokens { action } => {
            let store = open_store(&env)?;
            match action {
                TokensCmd::Create {
                    role,
                    council,
                    name,
                } => {
                    if !crate::api::auth::ROLES.contains(&role.as_str()) {
                        bail!("unknown role `{role}` (roles: viewer, operator, admin)");
                    }
                    let councils: Option<Vec<String>> = if council.trim() == "*" {
                        None
                    } else {
                        let list: Vec<String> = council
                            .split(',')
                            .map(|c| c.trim().to_string())
                            .filter(|c| !c.is_empty())
                            .collect();
                        for c in &list {
                            if env.config.council(c).is_none() {
                                bail!(
                                    "no council `{c}` is configured (councils: {}; `*` for all)",
                                    env.config
                                        .councils
                                        .iter()
                                        .map(|c| c.id.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                );
                            }
                        }
                        if list.is_empty() {
                            bail!("--council needs a council id, a list `a,b`, or `*`");
                        }
                        Some(list)
                    };
                    let secret = crate::api::auth::new_secret().map_err(anyhow::Error::msg)?;
                    let id = store.create_token(
                        name,
                        role,
                        councils.as_deref(),
                        &crate::api::auth::hash_secret(&secret),
                        &actor(),
                    )?;
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({"id": id, "name": name, "role": role, "councils": councils, "token": secret})
                        );
                    } else {
                        println!("token {id} ({name}, {role}, councils {council}):\n{secret}");
                        println!(
                            "This secret is shown once and stored only as a hash: keep it now."
                        );
                    }
                    Ok(0)
                }
                TokensCmd::List => {
                    render::tokens(cli.json, &store.tokens()?);
                    Ok(0)
                }
                TokensCmd::Revoke { id } => {
                    store.revoke_token(*id, &actor())?;
                    println!("token {id} revoked (audited)");
                    Ok(0)
                }
            }
        }
        Command::Audit {
            action:
                AuditCmd::List {
                    council,
                    action,
                    limit,
                },
        } => {
            let store = open_store(&env)?;
            let scope = council.clone().map(|c| vec![c]);
            render::audit(
                cli.json,
                &store.audit_entries(scope.as_deref(), action.as_deref(), None, *limit)?,
            );
            Ok(0)
        }
        Command::Broker {
            action: BrokerCmd::Setup,
        } => {
            let Some(broker) = &env.broker else {
                bail!(
                    "no broker is configured: set AMQP_URL (or --amqp-url, or broker.url in the configuration)"
                );
            };
            let report = crate::amqp::setup(broker).await?;
            println!(
                "topology declared on {}: exchange {}, dead-letter exchange {}",
                broker.redacted_url(),
                broker.exchange,
                broker.dead_letter_exchange,
            );
            let replicas = broker.quorum_group_size.map_or_else(
                || "a replica on every node".to_string(),
                |n| format!("{n} replicas"),
            );
            for (name, state) in &report.queues {
                match state {
                    crate::amqp::QueueState::Declared => {
                        println!("queue {name}: quorum, {replicas}")
                    }
                    crate::amqp::QueueState::Differs(why) => eprintln!(
                        "queue {name}: exists with other arguments and was left as it is ({why}); to make it a quorum queue, move its consumers and messages to a new queue name (or delete it once empty) and run `broker setup` again"
                    ),
                }
            }
            Ok(0)
        }
    }
}

fn schema_command(cli: &Cli, env: &Env, action: &SchemaCmd) -> Result<u8> {
    use crate::canonical::{compat, docs};
    let registry = registry(env)?;
    match action {
        SchemaCmd::List => {
            if cli.json {
                let list: Vec<serde_json::Value> = registry
                    .iter()
                    .map(
                        |e| serde_json::json!({"entity": e.name, "version": e.version, "id": e.id}),
                    )
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = registry
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            format!("v{}", e.version),
                            e.schema
                                .get("title")
                                .and_then(serde_json::Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                        ]
                    })
                    .collect();
                render::table(&["ENTITY", "VERSION", "TITLE"], &rows);
            }
            Ok(0)
        }
        SchemaCmd::Show { entity } => {
            let Some(e) = registry.get(entity) else {
                let names: Vec<String> = registry.iter().map(|e| e.name.clone()).collect();
                bail!(
                    "no canonical entity `{entity}` (entities: {})",
                    names.join(", ")
                );
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&e.schema)?);
            } else {
                print!("{}", docs::render(e));
            }
            Ok(0)
        }
        SchemaCmd::Docs { out } => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for e in registry.iter() {
                let path = out.join(docs::page_name(e));
                std::fs::write(&path, docs::render(e))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            std::fs::write(out.join("README.md"), docs::render_index(registry.iter()))?;
            println!(
                "wrote {} entity pages and an index to {}",
                registry.iter().count(),
                out.display()
            );
            Ok(0)
        }
        SchemaCmd::Lock => {
            let files = crate::canonical::schema_files(&env.config.schemas)?;
            let lock: std::collections::BTreeMap<String, compat::Shape> = files
                .iter()
                .map(|(name, schema)| (name.clone(), compat::shape(schema)))
                .collect();
            let path = env.config.schemas.join("compat.lock.json");
            let old: std::collections::BTreeMap<String, compat::Shape> =
                std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let mut refused = Vec::new();
            for (name, before) in &old {
                if let Some(now) = lock.get(name) {
                    for p in compat::breaking_changes(before, now) {
                        refused.push(format!("{name}: {p}"));
                    }
                }
            }
            if !refused.is_empty() {
                bail!(
                    "not recorded: these changes break consumers of a published version; put them in a new major version file instead:\n  {}",
                    refused.join("\n  ")
                );
            }
            std::fs::write(&path, serde_json::to_string_pretty(&lock)? + "\n")?;
            println!(
                "recorded the shape of {} schema files in {}",
                lock.len(),
                path.display()
            );
            Ok(0)
        }
    }
}
