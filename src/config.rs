//! The installation's configuration: `council-bridge.yaml` (store, mappings, schemas, broker)
//! and one `council.yaml` per council folder under the mappings folder (its feeds).
//!
//! Onboarding a council is adding a folder: nothing in the root file lists councils, so a new
//! partner's mappings, samples and feeds travel together. Secrets never live here: the broker
//! URL comes from `AMQP_URL` (or `broker.url`/`broker.urls` for a password-less local broker);
//! a cluster's node addresses are `broker.urls`, or comma-separated in `AMQP_URL`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootFile {
    #[serde(default = "default_store")]
    store: PathBuf,
    #[serde(default = "default_mappings")]
    mappings: PathBuf,
    #[serde(default = "default_schemas")]
    schemas: PathBuf,
    #[serde(default)]
    broker: BrokerSettings,
    #[serde(default)]
    modulus: Option<ModulusFiles>,
    /// Address of `serve`'s HTTP endpoints (/metrics, /health, /ready).
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    serve: ServeSettings,
    #[serde(default)]
    retention: RetentionSettings,
    /// Folders (besides each council's own) that councils' paths may point into.
    #[serde(default = "default_allowed_roots")]
    allowed_roots: Vec<PathBuf>,
}

fn default_allowed_roots() -> Vec<PathBuf> {
    vec!["var".into()]
}

/// The `retention:` section: how long the store keeps what is done.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days a sent message keeps its body and headers (its id and content hash stay).
    #[serde(default = "default_sent_days")]
    pub sent_payload_days: u32,
    /// Days a run report is kept.
    #[serde(default = "default_run_days")]
    pub run_report_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            sent_payload_days: default_sent_days(),
            run_report_days: default_run_days(),
        }
    }
}

impl RetentionSettings {
    /// As the store applies it.
    pub fn policy(&self) -> crate::store::Retention {
        crate::store::Retention {
            sent_payload_days: self.sent_payload_days,
            run_report_days: self.run_report_days,
        }
    }
}

fn default_sent_days() -> u32 {
    7
}
fn default_run_days() -> u32 {
    90
}

/// The `serve:` section: how the daemon works.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Seconds between looks at the drop folders of watched feeds.
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    /// Longest pause between attempts to reach the broker while it is away.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            poll_seconds: default_poll(),
            max_backoff_seconds: default_max_backoff(),
        }
    }
}

fn default_poll() -> u64 {
    2
}
fn default_max_backoff() -> u64 {
    30
}

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Vocalink's modulus-checking files (Pay.UK publishes them; reload when they change).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulusFiles {
    /// `valacdos.txt`.
    pub valacdos: PathBuf,
    /// `scsubtab.txt`.
    #[serde(default)]
    pub scsubtab: Option<PathBuf>,
}

fn default_store() -> PathBuf {
    "var/council-bridge.db".into()
}
fn default_mappings() -> PathBuf {
    "mappings".into()
}
fn default_schemas() -> PathBuf {
    "schemas".into()
}

/// The `broker:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// Broker URL; `AMQP_URL` overrides it. None = no broker: messages wait in the outbox.
    #[serde(default)]
    pub url: Option<String>,
    /// A cluster's node addresses, instead of `url` (`AMQP_URL` overrides them with its own
    /// comma-separated list); connections try them in turn and move on when a node is down.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Replicas of each quorum queue (`x-quorum-initial-group-size`); default: the number of
    /// node addresses when there are several, else the broker decides.
    #[serde(default)]
    pub quorum_group_size: Option<u32>,
    /// Consumer queues `broker setup` declares as quorum queues, each with the routing-key
    /// patterns it is bound to on the events exchange (`payroll-northshire: ["payroll.#.northshire"]`).
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, Vec<String>>,
    /// Events exchange.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Dead-letter exchange.
    #[serde(default = "default_dlx")]
    pub dead_letter_exchange: String,
    /// Dead-letter queue.
    #[serde(default = "default_dlq")]
    pub dead_letter_queue: String,
    /// How long `run`, `outbox flush` and replays keep trying to reach the broker before they
    /// leave the messages waiting (exit 3); the default rides out a routine broker restart.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
}

fn default_retry_seconds() -> u64 {
    150
}

impl BrokerSettings {
    /// The configured node addresses as one setting (comma-separated), if any.
    pub fn url_setting(&self) -> Option<String> {
        match (&self.url, self.urls.is_empty()) {
            (Some(u), _) => Some(u.clone()),
            (None, false) => Some(self.urls.join(",")),
            (None, true) => None,
        }
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            url: None,
            urls: Vec::new(),
            quorum_group_size: None,
            queues: Default::default(),
            exchange: default_exchange(),
            dead_letter_exchange: default_dlx(),
            dead_letter_queue: default_dlq(),
            retry_seconds: default_retry_seconds(),
        }
    }
}

fn default_exchange() -> String {
    "council-bridge.events".into()
}
fn default_dlx() -> String {
    "council-bridge.dlx".into()
}
fn default_dlq() -> String {
    "council-bridge.dead-letters".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CouncilFile {
    council: String,
    name: String,
    #[serde(default)]
    feeds: indexmap::IndexMap<String, FeedFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedFile {
    mapping: PathBuf,
    /// Drop-folder glob; for an HTTP feed, defaults to `<landing>/*.json`.
    #[serde(default)]
    input: Option<String>,
    /// Pull the feed from an HTTP API into its landing folder before reading it.
    #[serde(default)]
    http: Option<HttpFeed>,
    /// Pull the feed from an SFTP server into its landing folder before reading it.
    #[serde(default)]
    sftp: Option<SftpFeed>,
    /// Seconds a file must stay unchanged before it is taken (unless it has a marker).
    #[serde(default = "default_settle")]
    settle_seconds: u64,
    #[serde(default)]
    require_marker: bool,
    #[serde(default)]
    archive: Option<PathBuf>,
    #[serde(default)]
    rejected: Option<PathBuf>,
    /// What one file may make the bridge hold or do (`limits:`; each key optional).
    #[serde(default)]
    limits: crate::formats::Limits,
    /// When `serve` runs the feed: a cron expression in London time (`0 2 * * *`).
    #[serde(default)]
    schedule: Option<String>,
    /// Take each file as soon as it settles (the default for a feed without a schedule).
    #[serde(default)]
    watch: Option<bool>,
    /// Time of day (London, `HH:MM`) by which a file must have arrived, else an alert.
    #[serde(default)]
    expected_by: Option<String>,
    #[serde(default)]
    mode: FeedMode,
    #[serde(default = "default_max_delete")]
    max_delete_percent: f64,
    #[serde(default)]
    reject_threshold_percent: Option<f64>,
    #[serde(default)]
    drift: DriftPolicy,
    #[serde(default)]
    duplicate_keys: DuplicateKeyPolicy,
    #[serde(default)]
    as_at: Option<AsAt>,
    /// How the feed's records go out (`publish: { batched: true, batch_size: 500 }`).
    #[serde(default)]
    publish: PublishSpec,
}

/// The "as at" date a feed supplies to its mapping (`$as_at`) for snapshots whose rows state
/// none: a date in the configuration, or the day the file was received. The mapping records the
/// provenance (`$as_at_source`: `configuration` or `received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum AsAt {
    /// `as_at: 2024-03-31`.
    Date(chrono::NaiveDate),
    /// `as_at: received`: the day (UTC) the file was written to the feed's folder.
    Received,
}

impl TryFrom<String> for AsAt {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim() == "received" {
            return Ok(AsAt::Received);
        }
        chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(AsAt::Date)
            .map_err(|_| format!("`as_at` is a date (`2024-03-31`) or `received`, not `{s}`"))
    }
}

impl From<AsAt> for String {
    fn from(a: AsAt) -> String {
        match a {
            AsAt::Date(d) => d.format("%Y-%m-%d").to_string(),
            AsAt::Received => "received".into(),
        }
    }
}

/// `publish:` of a feed as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishSpec {
    #[serde(default)]
    batched: bool,
    #[serde(default)]
    batch_size: Option<u32>,
}

/// Most records in one batch message (a batch must fit in one page of the flush).
pub const MAX_PUBLISH_BATCH: u32 = 2000;
/// Records per batch message when `batch_size` is not given.
pub const DEFAULT_PUBLISH_BATCH: u32 = 500;

/// What to do when two records of one batch have the same key and different content (published
/// as upserts, a consumer keyed on it would keep only the last).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateKeyPolicy {
    /// Publish both, and name the key and its lines in the batch report and the log.
    #[default]
    Warn,
    /// Hold the batch for an operator.
    Hold,
    /// Reject every record of the key (kept as failures naming the other lines); the rest of
    /// the batch publishes.
    Reject,
}

/// How a feed's files are read: each row an event (today's behaviour), or each file a full
/// snapshot compared with the feed's last accepted state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedMode {
    /// Every valid row is published with the mapping's action.
    #[default]
    Events,
    /// The file is the whole population: only created / updated / deleted records are
    /// published (delta mode).
    Snapshot,
}

/// What to do when a file's shape differs from the feed's last accepted batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Hold the batch for an operator (the default: an unattended feed should not publish
    /// data whose layout changed without anyone noticing).
    #[default]
    Hold,
    /// Publish, and name the change in the batch summary and the log.
    Warn,
    /// Do not compare.
    Off,
}

/// Per-feed batch policies (keys of a feed in council.yaml).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedPolicy {
    /// `mode`: `events` (default) or `snapshot` (delta mode).
    pub mode: FeedMode,
    /// `max_delete_percent`: snapshot feeds hold a snapshot that would delete more than this
    /// share of the state (default 10).
    pub max_delete_percent: f64,
    /// `reject_threshold_percent`: hold a batch with more than this share of rejected rows
    /// (default: none, never held for that).
    pub reject_threshold_percent: Option<f64>,
    /// `drift`: header set, column order or value shapes changed against the last accepted
    /// batch (default hold).
    pub drift: DriftPolicy,
    /// `duplicate_keys`: two records of a batch with one key and different content: `warn`
    /// (default: both published, named in the batch report), `hold` or `reject`.
    pub duplicate_keys: DuplicateKeyPolicy,
    /// `as_at`: the "as at" date the feed supplies to its mapping's `$as_at` (default none).
    pub as_at: Option<AsAt>,
    /// `publish: { batched: true, batch_size: N }`: records go out as CloudEvents batches of up
    /// to N records per message; `None` (the default): one message per record.
    pub publish_batch_size: Option<u32>,
}

impl Default for FeedPolicy {
    fn default() -> Self {
        Self {
            mode: FeedMode::Events,
            max_delete_percent: default_max_delete(),
            reject_threshold_percent: None,
            drift: DriftPolicy::Hold,
            duplicate_keys: DuplicateKeyPolicy::Warn,
            as_at: None,
            publish_batch_size: None,
        }
    }
}

fn default_max_delete() -> f64 {
    10.0
}

fn default_settle() -> u64 {
    10
}

/// An HTTP API feed (`http:` in a feed of council.yaml). Secrets are named, never written:
/// they are read from the environment or a file when the feed is pulled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFeed {
    /// The API's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Or: the environment variable holding it (unset: the feed is not pulled this run).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Authentication.
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// Pagination.
    #[serde(default)]
    pub pagination: Option<PaginationSpec>,
    /// JSON pointer to the records in each page.
    #[serde(default)]
    pub records_at: String,
    /// Seconds before a request is abandoned (and retried).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Tries per request.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First pause between tries, doubling.
    #[serde(default = "default_backoff")]
    pub first_backoff_ms: u64,
    /// Most pages per pull.
    #[serde(default = "default_pages")]
    pub max_pages: u32,
    /// Extra request headers (never secrets: use `auth`).
    #[serde(default)]
    pub headers: indexmap::IndexMap<String, String>,
    /// Folder each response is written to, as received, before it is read.
    pub landing: PathBuf,
    /// Largest response body read (default 64 MiB); a larger page fails the pull.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
}

fn default_max_page_bytes() -> u64 {
    crate::sources::http::DEFAULT_MAX_PAGE_BYTES
}

fn default_timeout() -> u64 {
    30
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    1000
}
fn default_pages() -> u32 {
    1000
}

/// An SFTP feed (`sftp:` in a feed of council.yaml). The feed's `settle_seconds` and
/// `require_marker` apply to the remote files; landed files are read at once. Secrets are
/// named, never written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpFeed {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// User name.
    pub user: String,
    /// Private key: `file` (the key file) or `env` (a variable holding the key text).
    #[serde(default)]
    pub private_key: Option<SecretSpec>,
    /// The private key's passphrase, when it is encrypted.
    #[serde(default)]
    pub passphrase: Option<SecretSpec>,
    /// Or a password.
    #[serde(default)]
    pub password: Option<SecretSpec>,
    /// OpenSSH known_hosts file listing the server's host key (relative to the council folder).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Or the server's host key pinned: `<algorithm> <base64>`.
    #[serde(default)]
    pub host_key: Option<String>,
    /// Remote folder to take files from.
    #[serde(default = "default_remote_dir")]
    pub remote_dir: String,
    /// Glob on the remote file names, e.g. `payroll_*.csv`.
    pub glob: String,
    /// Remote folder files are moved to once their batch is stored.
    #[serde(default)]
    pub remote_archive: Option<String>,
    /// `move` (to `remote_archive`), `delete` or `leave`; default: `move` when
    /// `remote_archive` is set, else `leave`.
    #[serde(default)]
    pub after_store: Option<AfterStoreSpec>,
    /// Seconds allowed to connect, authenticate and answer each request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Attempts per pull, each resuming where the last stopped.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First pause between attempts, doubling.
    #[serde(default = "default_backoff")]
    pub first_backoff_ms: u64,
    /// Folder files are downloaded to before they are read.
    pub landing: PathBuf,
    /// The feed's `settle_seconds`.
    #[serde(skip)]
    pub settle_seconds: u64,
    /// The feed's `require_marker`.
    #[serde(skip)]
    pub require_marker: bool,
}

/// What happens to a remote file once its batch is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterStoreSpec {
    /// Move it to `remote_archive`.
    Move,
    /// Remove it.
    Delete,
    /// Leave it (a file unchanged since it was taken is not taken again).
    Leave,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_remote_dir() -> String {
    ".".into()
}

impl SftpFeed {
    /// The pull source, with its secrets read.
    pub fn source(&self) -> Result<crate::sources::sftp::SftpSource, String> {
        use crate::sources::http::Secret;
        use crate::sources::sftp::{AfterStore, SftpAuth, SftpSource};
        let secret = |what: &str, s: &SecretSpec| -> Result<Secret, String> {
            match (&s.env, &s.file) {
                (Some(var), _) => Secret::from_env(var).map_err(|e| e.to_string()),
                (None, Some(file)) => Secret::from_file(file).map_err(|e| e.to_string()),
                (None, None) => Err(format!("`{what}` needs `env` or `file`")),
            }
        };
        let auth = match (&self.private_key, &self.password) {
            (Some(key), None) => SftpAuth::Key {
                key: secret("private_key", key)?,
                passphrase: self
                    .passphrase
                    .as_ref()
                    .map(|p| secret("passphrase", p))
                    .transpose()?,
            },
            (None, Some(password)) => SftpAuth::Password {
                password: secret("password", password)?,
            },
            (Some(_), Some(_)) => {
                return Err("an sftp feed takes `private_key` or `password`, not both".into());
            }
            (None, None) => return Err("an sftp feed needs `private_key` or `password`".into()),
        };
        let after_store = match (self.after_store, &self.remote_archive) {
            (Some(AfterStoreSpec::Move) | None, Some(dir)) => AfterStore::Move(dir.clone()),
            (Some(AfterStoreSpec::Move), None) => {
                return Err(
                    "`after_store: move` needs `remote_archive` (the remote folder)".into(),
                );
            }
            (Some(AfterStoreSpec::Delete), _) => AfterStore::Delete,
            (Some(AfterStoreSpec::Leave) | None, _) => AfterStore::Leave,
        };
        Ok(SftpSource {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            auth,
            known_hosts: self.known_hosts.clone(),
            host_key: self.host_key.clone(),
            remote_dir: self.remote_dir.clone(),
            pattern: self.glob.clone(),
            settle: std::time::Duration::from_secs(self.settle_seconds),
            require_marker: self.require_marker,
            after_store,
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            max_attempts: self.max_attempts,
            first_backoff: std::time::Duration::from_millis(self.first_backoff_ms),
        })
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// File (e.g. a mounted secret).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `auth:` of an HTTP feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: SecretSpec,
    },
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: SecretSpec,
    },
    /// A key in a header.
    ApiKey {
        /// Header name.
        header: String,
        /// The key.
        key: SecretSpec,
    },
}

/// `pagination:` of an HTTP feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationSpec {
    /// The next page's URL is in the body at this JSON pointer.
    NextLink(String),
    /// RFC 8288 `Link: <...>; rel="next"` headers.
    LinkHeader(bool),
    /// Page numbers.
    Page {
        /// Query parameter.
        param: String,
        /// First page number.
        #[serde(default = "one")]
        start: u64,
        /// Page-size parameter and size.
        #[serde(default)]
        size_param: Option<String>,
        /// Page size.
        #[serde(default)]
        size: Option<u64>,
    },
    /// Offsets.
    Offset {
        /// Offset parameter.
        param: String,
        /// Limit parameter.
        limit_param: String,
        /// Records per page.
        limit: u64,
    },
}

fn one() -> u64 {
    1
}

impl HttpFeed {
    /// The pull source, with its secrets read; `Ok(None)` when the URL comes from an
    /// environment variable that is not set (the feed is then not pulled this run).
    pub fn source(&self) -> Result<Option<crate::sources::http::HttpSource>, String> {
        use crate::sources::http::{Auth, HttpSource, Pagination, Secret};
        let url = match (&self.url, &self.url_env) {
            (Some(u), _) => u.clone(),
            (None, Some(var)) => match std::env::var(var) {
                Ok(u) if !u.trim().is_empty() => u,
                _ => return Ok(None),
            },
            (None, None) => return Err("an http feed needs `url` or `url_env`".into()),
        };
        let url = url::Url::parse(&url).map_err(|e| format!("`url` is not a URL ({e})"))?;
        let secret = |s: &SecretSpec| -> Result<Secret, String> {
            match (&s.env, &s.file) {
                (Some(var), _) => Secret::from_env(var).map_err(|e| e.to_string()),
                (None, Some(file)) => Secret::from_file(file).map_err(|e| e.to_string()),
                (None, None) => Err("a secret needs `env` or `file`".into()),
            }
        };
        let auth = match &self.auth {
            None => Auth::None,
            Some(AuthSpec::Bearer { token }) => Auth::Bearer {
                token: secret(token)?,
            },
            Some(AuthSpec::Basic { user, password }) => Auth::Basic {
                user: user.clone(),
                password: secret(password)?,
            },
            Some(AuthSpec::ApiKey { header, key }) => Auth::ApiKey {
                header: header.clone(),
                key: secret(key)?,
            },
        };
        let pagination = match &self.pagination {
            None | Some(PaginationSpec::LinkHeader(false)) => Pagination::None,
            Some(PaginationSpec::NextLink(pointer)) => Pagination::NextLink {
                pointer: pointer.clone(),
            },
            Some(PaginationSpec::LinkHeader(true)) => Pagination::LinkHeader,
            Some(PaginationSpec::Page {
                param,
                start,
                size_param,
                size,
            }) => Pagination::Page {
                param: param.clone(),
                start: *start,
                size_param: size_param.clone().zip(*size),
            },
            Some(PaginationSpec::Offset {
                param,
                limit_param,
                limit,
            }) => Pagination::Offset {
                param: param.clone(),
                limit_param: limit_param.clone(),
                limit: *limit,
            },
        };
        let mut source = HttpSource::new(url);
        source.auth = auth;
        source.pagination = pagination;
        source.records_at = self.records_at.clone();
        source.timeout = std::time::Duration::from_secs(self.timeout_secs);
        source.max_attempts = self.max_attempts;
        source.first_backoff = std::time::Duration::from_millis(self.first_backoff_ms);
        source.max_pages = self.max_pages;
        source.max_page_bytes = self.max_page_bytes;
        source.headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Some(source))
    }
}

/// One feed of one council.
#[derive(Debug, Clone)]
pub struct Feed {
    /// Feed id (`payroll`).
    pub id: String,
    /// The mapping file.
    pub mapping: PathBuf,
    /// Glob of the files to take (absolute, or relative to the council folder).
    pub input: String,
    /// The drop folder: when a file is taken, where it goes afterwards.
    pub drop: crate::sources::DropFolder,
    /// The HTTP API pulled into the drop folder first, if the feed has one.
    pub http: Option<HttpFeed>,
    /// When `serve` runs it (pull, then read), if on a schedule.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Whether `serve` takes each file as soon as it settles.
    pub watch: bool,
    /// By when a file must have arrived each day.
    pub expected_by: Option<crate::schedule::ExpectedBy>,
    /// Delta mode and batch policies.
    pub policy: FeedPolicy,
    /// The SFTP server pulled into the drop folder first, if the feed has one.
    pub sftp: Option<SftpFeed>,
    /// The feed's limits on one file (sizes, depth, counts).
    pub limits: crate::formats::Limits,
}

/// One partner council.
#[derive(Debug, Clone)]
pub struct Council {
    /// Council id (`northshire`), used in routing keys.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Its folder under the mappings folder.
    pub dir: PathBuf,
    /// Its feeds, in file order.
    pub feeds: Vec<Feed>,
}

/// The whole configuration, paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store: an SQLite file (resolved against the configuration's folder) or a
    /// PostgreSQL address (`postgres://…`).
    pub store: crate::store::Location,
    /// The mappings folder.
    pub mappings: PathBuf,
    /// The schemas folder.
    pub schemas: PathBuf,
    /// Broker settings.
    pub broker: BrokerSettings,
    /// Modulus-checking tables, when configured: bank details are then checked.
    pub modulus: Option<ModulusFiles>,
    /// Councils, by id order.
    pub councils: Vec<Council>,
    /// Where `serve` listens (`listen:`), if set.
    pub listen: Option<String>,
    /// How `serve` works.
    pub serve: ServeSettings,
    /// How long the store keeps what is done.
    pub retention: RetentionSettings,
    /// Folders besides each council's own that council paths may point into (`allowed_roots`,
    /// default the installation's `var/`).
    pub allowed_roots: Vec<PathBuf>,
}

impl Config {
    /// Reads `path` and every `<mappings>/<council>/council.yaml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let root: RootFile = read_yaml(path)?;
        if root.broker.url.is_some() && !root.broker.urls.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message:
                    "broker: set either `url` (one broker) or `urls` (a cluster's nodes), not both"
                        .into(),
            });
        }
        if root.broker.quorum_group_size == Some(0) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "broker.quorum_group_size must be at least 1".into(),
            });
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mappings = resolve(&root.mappings);
        let allowed_roots: Vec<PathBuf> = root.allowed_roots.iter().map(|p| resolve(p)).collect();
        let mut councils = Vec::new();
        let entries = std::fs::read_dir(&mappings).map_err(|source| ConfigError::Io {
            path: mappings.clone(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("council.yaml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let file = dir.join("council.yaml");
            let c: CouncilFile = read_yaml(&file)?;
            if !c
                .council
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                || c.council.is_empty()
            {
                return Err(ConfigError::Invalid {
                    path: file,
                    message: format!(
                        "council id `{}` must be lower-case letters, digits and `-` (it is part of routing keys)",
                        c.council
                    ),
                });
            }
            let feeds = c
                .feeds
                .into_iter()
                .map(|(id, mut f)| {
                    if let Some(h) = f.http.as_mut() {
                        h.landing = dir.join(&h.landing);
                    }
                    let (mut settle, mut require_marker) = (f.settle_seconds, f.require_marker);
                    if let Some(s) = f.sftp.as_mut() {
                        s.landing = dir.join(&s.landing);
                        s.known_hosts = s.known_hosts.as_ref().map(|k| dir.join(k));
                        // The settle rules are the remote server's; landed files are complete.
                        (s.settle_seconds, s.require_marker) = (settle, require_marker);
                        (settle, require_marker) = (0, false);
                        if f.http.is_some() {
                            return Err(ConfigError::Invalid {
                                path: file.clone(),
                                message: format!("feed `{id}` has both `http` and `sftp`; choose one"),
                            });
                        }
                    }
                    let input = match (&f.input, &f.http, &f.sftp) {
                        (Some(i), _, _) if Path::new(i).is_absolute() => i.clone(),
                        (Some(i), _, _) => dir.join(i).to_string_lossy().into_owned(),
                        (None, Some(h), _) => {
                            h.landing.join("*.json").to_string_lossy().into_owned()
                        }
                        (None, None, Some(s)) => s.landing.join(&s.glob).to_string_lossy().into_owned(),
                        (None, None, None) => {
                            return Err(ConfigError::Invalid {
                                path: file.clone(),
                                message: format!(
                                    "feed `{id}` needs `input` (a drop-folder glob), `http` or `sftp`"
                                ),
                            });
                        }
                    };
                    let invalid = |what: String| ConfigError::Invalid {
                        path: file.clone(),
                        message: format!("feed `{id}`: {what}"),
                    };
                    let schedule = f
                        .schedule
                        .as_deref()
                        .map(crate::schedule::Schedule::parse)
                        .transpose()
                        .map_err(|e| invalid(format!("`schedule`: {e}")))?;
                    let expected_by = f
                        .expected_by
                        .as_deref()
                        .map(crate::schedule::ExpectedBy::parse)
                        .transpose()
                        .map_err(|e| invalid(format!("`expected_by`: {e}")))?;
                    let watch = f.watch.unwrap_or(schedule.is_none());
                    for (key, value) in [
                        ("max_delete_percent", Some(f.max_delete_percent)),
                        ("reject_threshold_percent", f.reject_threshold_percent),
                    ] {
                        if let Some(v) = value
                            && !(0.0..=100.0).contains(&v)
                        {
                            return Err(ConfigError::Invalid {
                                path: file.clone(),
                                message: format!(
                                    "feed `{id}`: `{key}` is a percentage from 0 to 100, not {v}"
                                ),
                            });
                        }
                    }
                    let publish_batch_size = match (f.publish.batched, f.publish.batch_size) {
                        (false, None) => None,
                        (false, Some(_)) => {
                            return Err(ConfigError::Invalid {
                                path: file.clone(),
                                message: format!(
                                    "feed `{id}`: `publish.batch_size` applies to batched publishing; add `batched: true` to `publish`, or remove `batch_size`"
                                ),
                            });
                        }
                        (true, n) => {
                            let n = n.unwrap_or(DEFAULT_PUBLISH_BATCH);
                            if !(1..=MAX_PUBLISH_BATCH).contains(&n) {
                                return Err(ConfigError::Invalid {
                                    path: file.clone(),
                                    message: format!(
                                        "feed `{id}`: `publish.batch_size` is a number of records from 1 to {MAX_PUBLISH_BATCH}, not {n}"
                                    ),
                                });
                            }
                            Some(n)
                        }
                    };
                    let feed_paths = [
                        ("mapping", Some(dir.join(&f.mapping))),
                        ("input", Some(PathBuf::from(glob_base(&input)))),
                        ("archive", f.archive.as_ref().map(|p| dir.join(p))),
                        ("rejected", f.rejected.as_ref().map(|p| dir.join(p))),
                        ("http.landing", f.http.as_ref().map(|h| h.landing.clone())),
                        ("sftp.landing", f.sftp.as_ref().map(|s| s.landing.clone())),
                    ];
                    for (key, path) in feed_paths {
                        let Some(path) = path else { continue };
                        if !confined(&path, &dir, &allowed_roots) {
                            return Err(ConfigError::Invalid {
                                path: file.clone(),
                                message: format!(
                                    "feed `{id}`: `{key}` points outside the council's folder and the allowed roots ({}); keep it inside {} or add its folder to `allowed_roots` in the root configuration",
                                    path.display(),
                                    dir.display()
                                ),
                            });
                        }
                    }
                    Ok(Feed {
                        schedule,
                        watch,
                        expected_by,
                        id,
                        mapping: dir.join(f.mapping),
                        drop: crate::sources::DropFolder {
                            pattern: input.clone(),
                            settle: std::time::Duration::from_secs(settle),
                            require_marker,
                            archive: f.archive.map(|p| dir.join(p)),
                            rejected: f.rejected.map(|p| dir.join(p)),
                        },
                        input,
                        http: f.http,
                        policy: FeedPolicy {
                            mode: f.mode,
                            max_delete_percent: f.max_delete_percent,
                            reject_threshold_percent: f.reject_threshold_percent,
                            drift: f.drift,
                            duplicate_keys: f.duplicate_keys,
                            as_at: f.as_at,
                            publish_batch_size,
                        },
                        sftp: f.sftp,
                        limits: f.limits,
                    })
                })
                .collect::<Result<_, _>>()?;
            councils.push(Council {
                id: c.council,
                name: c.name,
                dir,
                feeds,
            });
        }
        Ok(Config {
            store: match crate::store::Location::from(&root.store) {
                crate::store::Location::Sqlite(p) => crate::store::Location::Sqlite(resolve(&p)),
                postgres => postgres,
            },
            mappings,
            schemas: resolve(&root.schemas),
            broker: root.broker,
            modulus: root.modulus.map(|m| ModulusFiles {
                valacdos: resolve(&m.valacdos),
                scsubtab: m.scsubtab.map(|p| resolve(&p)),
            }),
            councils,
            listen: root.listen,
            serve: root.serve,
            retention: root.retention,
            allowed_roots,
        })
    }

    /// A council by id.
    pub fn council(&self, id: &str) -> Option<&Council> {
        self.councils.iter().find(|c| c.id == id)
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

/// The part of a glob before its first wildcard, as a folder (`in/*.csv` → `in`).
fn glob_base(pattern: &str) -> String {
    let cut = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let head = &pattern[..cut];
    if cut == pattern.len() {
        return head.to_string();
    }
    match head.rfind(['/', std::path::MAIN_SEPARATOR]) {
        Some(i) => head[..i.max(1)].to_string(),
        None => ".".to_string(),
    }
}

/// `path` with `.` and `..` resolved without touching the disk, then with the longest part of it
/// that exists resolved on disk (so a symbolic link cannot lead out either).
pub fn normalise_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    let absolute = if out.is_absolute() {
        out
    } else {
        std::env::current_dir().unwrap_or_default().join(out)
    };
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => {
                rest.push(name.to_os_string());
                existing.pop();
            }
            None => break,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    resolved
}

/// Whether `path` lies inside the council's folder or one of the allowed roots.
pub fn confined(path: &Path, council_dir: &Path, allowed_roots: &[PathBuf]) -> bool {
    let path = normalise_path(path);
    std::iter::once(council_dir)
        .chain(allowed_roots.iter().map(PathBuf::as_path))
        .any(|root| path.starts_with(normalise_path(root)))
}

#[cfg(test)]
mod broker_tests {
    use super::*;

    fn load(broker: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
        let path = dir.path().join("council-bridge.yaml");
        std::fs::write(&path, format!("broker:\n{broker}")).unwrap();
        Config::load(&path)
    }

    #[test]
    fn a_cluster_is_a_list_of_urls_and_never_also_a_url() {
        let c = load("  urls: [\"amqp://a:5681/%2f\", \"amqp://b:5682/%2f\"]\n  queues:\n    platform: [\"payroll.#\"]\n").unwrap();
        assert_eq!(
            c.broker.url_setting().as_deref(),
            Some("amqp://a:5681/%2f,amqp://b:5682/%2f")
        );
        assert_eq!(c.broker.queues["platform"], vec!["payroll.#".to_string()]);
        let one = load("  url: amqp://a:5672/%2f\n").unwrap();
        assert_eq!(
            one.broker.url_setting().as_deref(),
            Some("amqp://a:5672/%2f")
        );
        let both = load("  url: amqp://a/%2f\n  urls: [\"amqp://b/%2f\"]\n")
            .unwrap_err()
            .to_string();
        assert!(both.contains("not both"), "{both}");
        assert!(load("  quorum_group_size: 0\n").is_err());
    }
}
