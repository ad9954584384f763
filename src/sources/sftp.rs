//! Pulling raw files from a council's SFTP server (russh + russh-sftp, pure Rust; nothing is
//! shelled out). Each file in the remote folder matching the feed's glob that has finished
//! arriving (size and mtime unchanged across two looks `settle` apart, or a `<file>.done` /
//! `<file>.ok` marker) is downloaded into the landing folder, which the pipeline then reads like
//! a drop folder.
//!
//! Downloads are resume-safe: bytes go to `<landing>/.sftp/<name>.part`, which survives a
//! dropped connection and is continued from its length on the next attempt (or the next pull),
//! and is renamed to `<landing>/<name>` only once its length is the remote size. A small ledger
//! per file (`<landing>/.sftp/<name>.json`: remote path, size, mtime, sha256, state) records
//! what was landed; the pipeline marks it `stored` once the batch read from the file is in the
//! store, and only then is the remote file moved to the remote archive or removed
//! ([`SftpSource::finish`]). A file whose ledger matches its remote size and mtime is not
//! downloaded again.
//!
//! The server's host key must be known: pinned in the configuration or present in a known_hosts
//! file. An unknown or changed key is refused before authenticating, and nothing is downloaded.
//! Passwords, private keys and passphrases are [`Secret`]s: never logged, never in errors.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::http::Secret;
use super::{MARKERS, NotReady, RawFile, SourceError, describe, io as io_error};

/// Longest wait between two attempts when backing off.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes asked for per read.
const READ_CHUNK: usize = 64 * 1024;
/// The hidden folder in the landing folder holding partial downloads and ledgers.
pub const WORK_DIR: &str = ".sftp";

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum SftpAuth {
    /// A private key (OpenSSH or PuTTY format text), optionally encrypted.
    Key {
        /// The key text.
        key: Secret,
        /// Its passphrase, when encrypted.
        passphrase: Option<Secret>,
    },
    /// A password.
    Password {
        /// The password.
        password: Secret,
    },
}

impl SftpAuth {
    fn method(&self) -> &'static str {
        match self {
            SftpAuth::Key { .. } => "the private key",
            SftpAuth::Password { .. } => "the password",
        }
    }
}

/// What happens to a remote file once the batch read from it is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStore {
    /// Left where it is; the ledger (and the store's sha256 check) keep it from being taken
    /// again while it is unchanged.
    Leave,
    /// Removed (with its marker).
    Delete,
    /// Moved (with its marker) into this remote folder, as `<UTC timestamp>_<name>`.
    Move(String),
}

/// A council SFTP server to pull from.
#[derive(Debug, Clone)]
pub struct SftpSource {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name (not a secret: it may appear in errors).
    pub user: String,
    /// Credentials.
    pub auth: SftpAuth,
    /// An OpenSSH known_hosts file listing the server's key.
    pub known_hosts: Option<PathBuf>,
    /// Or: the server's key pinned, as `<algorithm> <base64> [comment]`.
    pub host_key: Option<String>,
    /// Remote folder to take files from.
    pub remote_dir: String,
    /// Glob on file names in that folder, e.g. `payroll_*.csv`.
    pub pattern: String,
    /// A file is complete once its size and mtime stay the same this long (or it has a marker).
    pub settle: Duration,
    /// Take a file only when its `.done`/`.ok` marker exists.
    pub require_marker: bool,
    /// What happens to a remote file once its batch is stored.
    pub after_store: AfterStore,
    /// Time allowed for connecting, authenticating and each SFTP request.
    pub timeout: Duration,
    /// Attempts per pull (at least 1); each continues the downloads where the last stopped.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles each time, up to 30 s.
    pub first_backoff: Duration,
}

/// Why a pull failed; carried inside [`SourceError::Io`] (action `pull over SFTP`, path the
/// `sftp://user@host:port/dir` address), from which it can be downcast.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The server's host key is in neither the pinned key nor the known_hosts file.
    #[error(
        "the server's host key is not known ({algorithm} {fingerprint}); refused, nothing was downloaded. Confirm the fingerprint with the council, then pin it with `host_key` or add it to the known_hosts file"
    )]
    UnknownHostKey {
        /// Key algorithm offered.
        algorithm: String,
        /// SHA256 fingerprint offered.
        fingerprint: String,
    },
    /// The server's host key differs from the one configured for it.
    #[error(
        "the server's host key has CHANGED ({algorithm} {fingerprint} does not match {expected}); refused, nothing was downloaded. This may be an attack or a rebuilt server: confirm with the council before changing the configuration"
    )]
    ChangedHostKey {
        /// Key algorithm offered.
        algorithm: String,
        /// SHA256 fingerprint offered.
        fingerprint: String,
        /// Where the expected key is configured.
        expected: String,
    },
    /// Authentication failed.
    #[error(
        "the server refused {method} for user {user}; check the configured secret and that it is authorised on the server"
    )]
    AuthRefused {
        /// User name.
        user: String,
        /// Which credential was tried (never its value).
        method: &'static str,
    },
    /// A remote operation failed in a way retrying will not fix.
    #[error("remote {path}: {message}")]
    Remote {
        /// Remote path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts; last: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: String,
    },
    /// The source is configured wrongly (or a configured file cannot be used).
    #[error("{0}")]
    Config(String),
}

impl SftpError {
    fn kind(&self) -> io::ErrorKind {
        match self {
            SftpError::UnknownHostKey { .. }
            | SftpError::ChangedHostKey { .. }
            | SftpError::AuthRefused { .. } => io::ErrorKind::PermissionDenied,
            SftpError::GaveUp { .. } => io::ErrorKind::TimedOut,
            SftpError::Config(_) => io::ErrorKind::InvalidInput,
            SftpError::Remote { .. } => io::ErrorKind::Other,
        }
    }
}

/// What one pull did.
#[derive(Debug, Clone, Default)]
pub struct SftpPull {
    /// Files landed by this pull, complete, in name order.
    pub landed: Vec<RawFile>,
    /// Of those, the ones continued from an earlier partial download, with the byte they
    /// resumed from.
    pub resumed: Vec<(String, u64)>,
    /// Remote files not taken yet, and why.
    pub waiting: Vec<NotReady>,
    /// Remote files moved or removed because their batch is stored.
    pub cleaned: Vec<String>,
}

/// The ledger of one landed file (`<landing>/.sftp/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ledger {
    /// The remote file.
    pub remote: String,
    /// Its marker, if it had one.
    pub marker: Option<String>,
    /// Remote size when downloaded.
    pub size: u64,
    /// Remote mtime (Unix seconds) when downloaded.
    pub mtime: Option<u32>,
    /// sha256 of the landed bytes.
    pub sha256: String,
    /// `landed` (waiting to be read), `stored` (its batch is in the store), `done` (the
    /// remote file was then moved or removed) or `failed` (the file could not be read at all;
    /// it is not downloaded again until it changes).
    pub state: String,
}

/// The remote state of a partial download (`<landing>/.sftp/<name>.part.json`), so that a
/// resume only continues the same remote file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct PartOf {
    remote: String,
    size: u64,
    mtime: Option<u32>,
}

/// One remote file seen in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    name: String,
    size: u64,
    mtime: Option<u32>,
}

/// How one attempt ended, when it did not succeed.
enum Failed {
    Retry(String),
    Fatal(SftpError),
}

fn ledger_path(landing: &Path, name: &str) -> PathBuf {
    landing.join(WORK_DIR).join(format!("{name}.json"))
}

/// The ledger of `name` in `landing`, if any.
pub fn read_ledger(landing: &Path, name: &str) -> Option<Ledger> {
    let text = std::fs::read_to_string(ledger_path(landing, name)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SourceError> {
    let temp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| SourceError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
    let mut f = std::fs::File::create(&temp).map_err(io_error("create", &temp))?;
    f.write_all(&bytes).map_err(io_error("write", &temp))?;
    f.sync_all().map_err(io_error("sync", &temp))?;
    std::fs::rename(&temp, path).map_err(io_error("rename", &temp))
}

/// Records that the batch read from the landed file `name` (with `sha256`) is in the store
/// (`stored: true`: processed, held or skipped as already processed) or could not be read at
/// all (`false`), so that [`SftpSource::finish`] may clean the remote file up. Does nothing
/// when the file did not come from this source (no ledger, or a different sha256). Returns
/// whether a ledger was marked.
pub fn mark_stored(
    landing: &Path,
    name: &str,
    sha256: &str,
    stored: bool,
) -> Result<bool, SourceError> {
    let Some(mut ledger) = read_ledger(landing, name) else {
        return Ok(false);
    };
    if ledger.sha256 != sha256 {
        return Ok(false);
    }
    ledger.state = if stored { "stored" } else { "failed" }.into();
    write_json(&ledger_path(landing, name), &ledger)?;
    Ok(true)
}

/// Whether `name` matches the glob `pattern` (file names only).
fn matches(pattern: &glob::Pattern, name: &str) -> bool {
    pattern.matches_with(
        name,
        glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        },
    )
}

fn is_marker(name: &str) -> bool {
    MARKERS
        .iter()
        .any(|m| name.strip_suffix(m).is_some_and(|s| s.ends_with('.')))
}

/// SHA256 fingerprint in OpenSSH's form.
fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parses a pinned host key (`<algorithm> <base64> [comment]`, or the bare base64).
fn parse_pinned(text: &str) -> Result<PublicKey, SftpError> {
    let mut parts = text.split_whitespace();
    let first = parts.next().unwrap_or_default();
    let b64 =
        if first.starts_with("ssh-") || first.starts_with("ecdsa-") || first.starts_with("sk-") {
            parts.next().unwrap_or_default()
        } else {
            first
        };
    russh::keys::parse_public_key_base64(b64).map_err(|e| {
        SftpError::Config(format!(
            "`host_key` is not an SSH public key ({e}); give it as the server's `<algorithm> <base64>` line, e.g. from `ssh-keyscan`"
        ))
    })
}

/// Decides whether to trust the key the server offered.
#[derive(Clone)]
struct HostCheck {
    host: String,
    port: u16,
    pinned: Option<PublicKey>,
    known_hosts: Option<PathBuf>,
}

impl HostCheck {
    /// Algorithms of the keys configured for this server.
    fn algorithms(&self) -> Vec<russh::keys::Algorithm> {
        let mut out: Vec<_> = self.pinned.iter().map(PublicKey::algorithm).collect();
        if let Some(path) = &self.known_hosts
            && let Ok(keys) =
                russh::keys::known_hosts::known_host_keys_path(&self.host, self.port, path)
        {
            out.extend(keys.iter().map(|(_, k)| k.algorithm()));
        }
        out
    }

    fn verify(&self, offered: &PublicKey) -> Result<(), SftpError> {
        let algorithm = offered.algorithm().to_string();
        let print = fingerprint(offered);
        let changed = |expected: String| SftpError::ChangedHostKey {
            algorithm: algorithm.clone(),
            fingerprint: print.clone(),
            expected,
        };
        let mut mismatch = None;
        if let Some(pinned) = &self.pinned {
            if pinned.key_data() == offered.key_data() {
                return Ok(());
            }
            if pinned.algorithm() == offered.algorithm() {
                mismatch = Some(changed(format!(
                    "the pinned host_key {}",
                    fingerprint(pinned)
                )));
            }
        }
        if let Some(path) = &self.known_hosts {
            let known = russh::keys::known_hosts::known_host_keys_path(&self.host, self.port, path)
                .map_err(|e| {
                    SftpError::Config(format!(
                        "the known_hosts file {} cannot be read: {e}",
                        path.display()
                    ))
                })?;
            if known
                .iter()
                .any(|(_, k)| k.key_data() == offered.key_data())
            {
                return Ok(());
            }
            if mismatch.is_none()
                && let Some((line, k)) = known
                    .iter()
                    .find(|(_, k)| k.algorithm() == offered.algorithm())
            {
                mismatch = Some(changed(format!(
                    "{} in {} line {}",
                    fingerprint(k),
                    path.display(),
                    file_line(path, *line)
                )));
            }
        }
        Err(mismatch.unwrap_or(SftpError::UnknownHostKey {
            algorithm,
            fingerprint: print,
        }))
    }
}

/// The line number in the file of russh's `entry`-th known_hosts entry (russh counts the lines
/// that are not comments).
fn file_line(path: &Path, entry: usize) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with('#') {
            seen += 1;
            if seen == entry {
                return i + 1;
            }
        }
    }
    entry
}

/// The SSH client's callbacks: only the host key check.
struct Handler {
    check: HostCheck,
    verdict: Arc<Mutex<Option<SftpError>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check.verify(key),
            PublicKeyOrCertificate::Certificate(_) => Err(SftpError::Config(
                "the server offered a host certificate; pin its plain host key instead".into(),
            )),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::error!(host = %self.check.host, port = self.check.port, error = %e, "host key refused");
                *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Ok(false)
            }
        }
    }
}

/// An open SFTP session.
struct Conn {
    handle: client::Handle<Handler>,
    sftp: SftpSession,
}

impl Conn {
    async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Whether an SFTP error is worth another attempt (transport trouble) or not.
fn sftp_failure(path: &str, e: russh_sftp::client::error::Error) -> Failed {
    use russh_sftp::client::error::Error as E;
    match e {
        E::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => Failed::Fatal(SftpError::Remote {
                path: path.into(),
                message: "no such file or folder".into(),
            }),
            StatusCode::PermissionDenied => Failed::Fatal(SftpError::Remote {
                path: path.into(),
                message: "permission denied for the configured user".into(),
            }),
            StatusCode::ConnectionLost | StatusCode::NoConnection => {
                Failed::Retry(format!("{path}: connection lost"))
            }
            other => Failed::Retry(format!("{path}: {other} {}", s.error_message)),
        },
        other => Failed::Retry(format!("{path}: {other}")),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

/// Wait before attempt `attempt + 1`: `first` doubled `attempt - 1` times, at most 30 s.
fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(31))
        .min(MAX_BACKOFF)
}

impl SftpSource {
    /// `sftp://user@host:port/dir`, for logs and errors (never a secret).
    pub fn address(&self) -> String {
        format!(
            "sftp://{}@{}:{}/{}",
            self.user,
            self.host,
            self.port,
            self.remote_dir.trim_start_matches('/')
        )
    }

    fn fail(&self, e: SftpError) -> SourceError {
        SourceError::Io {
            action: "pull over SFTP",
            path: PathBuf::from(self.address()),
            source: io::Error::new(e.kind(), e),
        }
    }

    fn check(&self) -> Result<(HostCheck, glob::Pattern), SftpError> {
        if self.pattern.contains('/') {
            return Err(SftpError::Config(format!(
                "the SFTP glob {:?} must match file names only; put the folder in remote_dir",
                self.pattern
            )));
        }
        let pattern = glob::Pattern::new(&self.pattern).map_err(|e| {
            SftpError::Config(format!(
                "the SFTP glob {:?} is not valid: {e}",
                self.pattern
            ))
        })?;
        if self.known_hosts.is_none() && self.host_key.is_none() {
            return Err(SftpError::Config(
                "the server's host key cannot be checked: configure `known_hosts` (a file) or `host_key` (the pinned key); unknown servers are never trusted".into(),
            ));
        }
        if let Some(path) = &self.known_hosts
            && !path.is_file()
        {
            return Err(SftpError::Config(format!(
                "the known_hosts file {} does not exist",
                path.display()
            )));
        }
        let pinned = self.host_key.as_deref().map(parse_pinned).transpose()?;
        if let AfterStore::Move(dir) = &self.after_store
            && dir.trim().is_empty()
        {
            return Err(SftpError::Config(
                "`remote_archive` is empty: name the remote folder files move to".into(),
            ));
        }
        Ok((
            HostCheck {
                host: self.host.clone(),
                port: self.port,
                pinned,
                known_hosts: self.known_hosts.clone(),
            },
            pattern,
        ))
    }

    async fn connect(&self, check: &HostCheck) -> Result<Conn, Failed> {
        let mut config = client::Config {
            inactivity_timeout: Some(self.timeout.max(Duration::from_secs(1)) * 2),
            ..Default::default()
        };
        // Ask first for the key types configured for this server, so that a server with several
        // host keys offers one that can be checked (as OpenSSH's client does).
        let known = check.algorithms();
        let (mut first, rest): (Vec<_>, Vec<_>) =
            config.preferred.key.iter().cloned().partition(|a| {
                known
                    .iter()
                    .any(|k| k == a || (k.clone().is_rsa() && a.clone().is_rsa()))
            });
        first.extend(rest);
        config.preferred.key = std::borrow::Cow::Owned(first);
        let verdict = Arc::new(Mutex::new(None));
        let handler = Handler {
            check: check.clone(),
            verdict: verdict.clone(),
        };
        let timeout = self.timeout;
        let connecting = tokio::time::timeout(
            timeout,
            client::connect(Arc::new(config), (self.host.as_str(), self.port), handler),
        )
        .await;
        let take_verdict = || verdict.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut handle = match connecting {
            Err(_) => {
                return Err(Failed::Retry(format!(
                    "connecting timed out after {}s",
                    timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                if let Some(v) = take_verdict() {
                    return Err(Failed::Fatal(v));
                }
                return Err(Failed::Retry(format!("cannot connect: {e}")));
            }
            Ok(Ok(h)) => h,
        };
        if let Some(v) = take_verdict() {
            return Err(Failed::Fatal(v));
        }
        let key = match &self.auth {
            SftpAuth::Key { key, passphrase } => Some(
                russh::keys::decode_secret_key(
                    key.expose(),
                    passphrase.as_ref().map(Secret::expose),
                )
                .map_err(|e| {
                    // The library's words name the problem (encrypted, wrong format), never
                    // the key or the passphrase.
                    Failed::Fatal(SftpError::Config(format!(
                        "the private key cannot be used ({e}); check the key and its passphrase"
                    )))
                })?,
            ),
            SftpAuth::Password { .. } => None,
        };
        let auth = tokio::time::timeout(timeout, async {
            match (&self.auth, key) {
                (SftpAuth::Password { password }, _) => {
                    handle
                        .authenticate_password(&self.user, password.expose())
                        .await
                }
                (SftpAuth::Key { .. }, None) => Err(russh::Error::NotAuthenticated),
                (SftpAuth::Key { .. }, Some(key)) => {
                    let hash = if key.algorithm().is_rsa() {
                        handle.best_supported_rsa_hash().await?.flatten()
                    } else {
                        None
                    };
                    handle
                        .authenticate_publickey(
                            &self.user,
                            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                        )
                        .await
                }
            }
        })
        .await;
        match auth {
            Err(_) => {
                return Err(Failed::Retry(format!(
                    "authenticating timed out after {}s",
                    timeout.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(Failed::Retry(format!("authenticating: {e}"))),
            Ok(Ok(r)) if !r.success() => {
                return Err(Failed::Fatal(SftpError::AuthRefused {
                    user: self.user.clone(),
                    method: self.auth.method(),
                }));
            }
            Ok(Ok(_)) => {}
        }
        let sftp = tokio::time::timeout(timeout, async {
            let channel = handle.channel_open_session().await?;
            channel.request_subsystem(true, "sftp").await?;
            Ok::<_, russh::Error>(channel)
        })
        .await
        .map_err(|_| Failed::Retry("opening the SFTP channel timed out".into()))?
        .map_err(|e| Failed::Retry(format!("opening the SFTP channel: {e}")))?;
        // 64 KiB reads, 8 in flight: data arrives (and is kept) steadily, so that a dropped
        // connection loses at most the reads in flight.
        let config = russh_sftp::client::Config {
            request_timeout_secs: timeout.as_secs().max(1),
            max_packet_len: READ_CHUNK as u32,
            max_concurrent_reads: 8,
            ..Default::default()
        };
        let sftp = tokio::time::timeout(
            timeout,
            SftpSession::new_with_config(sftp.into_stream(), config),
        )
        .await
        .map_err(|_| Failed::Retry("starting SFTP timed out".into()))?
        .map_err(|e| Failed::Retry(format!("starting SFTP: {e}")))?;
        Ok(Conn { handle, sftp })
    }

    /// Regular files in the remote folder: those matching the glob, and the marker names.
    async fn list(
        &self,
        conn: &Conn,
        pattern: &glob::Pattern,
    ) -> Result<(Vec<Remote>, Vec<String>), Failed> {
        let entries = conn
            .sftp
            .read_dir(self.remote_dir.clone())
            .await
            .map_err(|e| sftp_failure(&self.remote_dir, e))?;
        let mut files = Vec::new();
        let mut markers = Vec::new();
        for e in entries {
            let name = e.file_name();
            if !e.file_type().is_file() {
                continue;
            }
            if is_marker(&name) {
                markers.push(name);
                continue;
            }
            if matches(pattern, &name) {
                let m = e.metadata();
                files.push(Remote {
                    name,
                    size: m.len(),
                    mtime: m.mtime,
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((files, markers))
    }

    /// Moves or removes the remote files whose batches are stored (ledger state `stored`),
    /// unless they changed since they were downloaded. Returns the remote paths cleaned.
    pub async fn finish(&self, landing: &Path) -> Result<Vec<String>, SourceError> {
        if self.after_store == AfterStore::Leave || stored_ledgers(landing).is_empty() {
            return Ok(Vec::new());
        }
        let (check, _) = self.check().map_err(|e| self.fail(e))?;
        let conn = self.connect(&check).await.map_err(|f| match f {
            Failed::Fatal(e) => self.fail(e),
            Failed::Retry(last) => self.fail(SftpError::GaveUp { attempts: 1, last }),
        })?;
        let result = self.clean(&conn, landing).await;
        conn.close().await;
        result.map_err(|f| match f {
            Failed::Fatal(e) => self.fail(e),
            Failed::Retry(last) => self.fail(SftpError::GaveUp { attempts: 1, last }),
        })
    }

    async fn clean(&self, conn: &Conn, landing: &Path) -> Result<Vec<String>, Failed> {
        let mut cleaned = Vec::new();
        if self.after_store == AfterStore::Leave {
            return Ok(cleaned);
        }
        for (name, ledger) in stored_ledgers(landing) {
            let now = match conn.sftp.metadata(ledger.remote.clone()).await {
                Ok(m) => Some((m.len(), m.mtime)),
                Err(russh_sftp::client::error::Error::Status(s))
                    if s.status_code == StatusCode::NoSuchFile =>
                {
                    None
                }
                Err(e) => return Err(sftp_failure(&ledger.remote, e)),
            };
            match now {
                None => {
                    tracing::info!(remote = %ledger.remote, "remote file already gone");
                }
                Some(now) if now != (ledger.size, ledger.mtime) => {
                    tracing::warn!(remote = %ledger.remote, "remote file changed since it was downloaded; left in place and taken as a new file");
                }
                Some(_) => {
                    let mut paths = vec![ledger.remote.clone()];
                    paths.extend(ledger.marker.clone());
                    for path in paths {
                        self.put_away(conn, &path).await?;
                    }
                    cleaned.push(ledger.remote.clone());
                }
            }
            // The remote file is dealt with; a new file of the same name differs in size or
            // mtime from the ledger, so it is taken as new.
            let mut done = ledger;
            done.state = "done".into();
            write_json(&ledger_path(landing, &name), &done)
                .map_err(|e| Failed::Fatal(SftpError::Config(e.to_string())))?;
        }
        Ok(cleaned)
    }

    async fn put_away(&self, conn: &Conn, path: &str) -> Result<(), Failed> {
        match &self.after_store {
            AfterStore::Leave => Ok(()),
            AfterStore::Delete => {
                conn.sftp
                    .remove_file(path.to_string())
                    .await
                    .map_err(|e| sftp_failure(path, e))?;
                tracing::info!(remote = %path, "remote file removed after its batch was stored");
                Ok(())
            }
            AfterStore::Move(dir) => {
                let name = path.rsplit('/').next().unwrap_or(path);
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
                let target = join(dir, &format!("{stamp}_{name}"));
                conn.sftp
                    .rename(path.to_string(), target.clone())
                    .await
                    .map_err(|e| match sftp_failure(path, e) {
                        Failed::Fatal(SftpError::Remote { path, message }) => {
                            Failed::Fatal(SftpError::Remote {
                                path,
                                message: format!(
                                    "cannot move it to the remote archive {dir} ({message}); check that the folder exists and is writable"
                                ),
                            })
                        }
                        other => other,
                    })?;
                tracing::info!(remote = %path, to = %target, "remote file moved to the remote archive after its batch was stored");
                Ok(())
            }
        }
    }

    /// Cleans up the remote files whose batches are stored, then downloads every settled file
    /// into `landing`, retrying with backoff and resuming partial downloads. Files landed before
    /// a failure stay landed (they are complete); partial downloads stay as `.part` files to be
    /// continued.
    pub async fn pull(&self, landing: &Path) -> Result<SftpPull, SourceError> {
        let (check, pattern) = self.check().map_err(|e| self.fail(e))?;
        let work = landing.join(WORK_DIR);
        std::fs::create_dir_all(&work).map_err(io_error("create", &work))?;
        let mut out = SftpPull::default();
        let attempts = self.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(&check, &pattern, landing, &mut out).await {
                Ok(()) => return Ok(out),
                Err(Failed::Fatal(e)) => {
                    tracing::error!(source = %self.address(), error = %e, "SFTP pull failed");
                    return Err(self.fail(e));
                }
                Err(Failed::Retry(last)) => {
                    if attempt >= attempts {
                        tracing::error!(source = %self.address(), attempt, error = %last, "SFTP pull failed; giving up");
                        return Err(self.fail(SftpError::GaveUp {
                            attempts: attempt,
                            last,
                        }));
                    }
                    let wait = backoff(self.first_backoff, attempt);
                    tracing::warn!(source = %self.address(), attempt, error = %last, wait_ms = wait.as_millis() as u64, "SFTP attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        check: &HostCheck,
        pattern: &glob::Pattern,
        landing: &Path,
        out: &mut SftpPull,
    ) -> Result<(), Failed> {
        let conn = self.connect(check).await?;
        let result = self.attempt_on(&conn, pattern, landing, out).await;
        conn.close().await;
        result
    }

    async fn attempt_on(
        &self,
        conn: &Conn,
        pattern: &glob::Pattern,
        landing: &Path,
        out: &mut SftpPull,
    ) -> Result<(), Failed> {
        out.cleaned.extend(self.clean(conn, landing).await?);
        out.waiting.clear();
        let (first, markers) = self.list(conn, pattern).await?;
        let marker_of = |name: &str, markers: &[String]| {
            MARKERS
                .iter()
                .map(|m| format!("{name}.{m}"))
                .find(|m| markers.contains(m))
        };
        // Files needing no download, and those that need a second look to settle.
        let mut candidates = Vec::new();
        for f in first {
            if self.taken(landing, &f) {
                continue;
            }
            candidates.push(f);
        }
        let needs_look = !self.require_marker
            && !self.settle.is_zero()
            && candidates
                .iter()
                .any(|f| marker_of(&f.name, &markers).is_none());
        let (second, markers) = if needs_look {
            tokio::time::sleep(self.settle).await;
            self.list(conn, pattern).await?
        } else {
            (candidates.clone(), markers)
        };
        let remote_of = |f: &Remote| join(&self.remote_dir, &f.name);
        for f in candidates {
            let marker = marker_of(&f.name, &markers);
            let now = second.iter().find(|s| s.name == f.name);
            let ready = match (&marker, now) {
                (_, None) => {
                    out.waiting.push(NotReady {
                        path: PathBuf::from(remote_of(&f)),
                        reason: "disappeared from the remote folder while settling".into(),
                    });
                    continue;
                }
                (Some(_), Some(now)) => now.clone(),
                (None, _) if self.require_marker => {
                    out.waiting.push(NotReady {
                        path: PathBuf::from(remote_of(&f)),
                        reason: "no .done or .ok marker yet".into(),
                    });
                    continue;
                }
                (None, Some(now)) if *now == f => f,
                (None, Some(_)) => {
                    out.waiting.push(NotReady {
                        path: PathBuf::from(remote_of(&f)),
                        reason: format!(
                            "size or mtime changed within {}s; taken once unchanged",
                            self.settle.as_secs()
                        ),
                    });
                    continue;
                }
            };
            if landing.join(&ready.name).exists()
                && read_ledger(landing, &ready.name).is_none_or(|l| l.state == "landed")
            {
                out.waiting.push(NotReady {
                    path: PathBuf::from(remote_of(&ready)),
                    reason: "a file of this name is in the landing folder and has not been read yet; it is downloaded once that one is read".into(),
                });
                continue;
            }
            let marker = marker.map(|m| join(&self.remote_dir, &m));
            let (raw, resumed_from) = self.download(conn, landing, &ready, marker).await?;
            if let Some(from) = resumed_from {
                out.resumed.push((raw.name.clone(), from));
            }
            out.landed.push(raw);
        }
        for w in &out.waiting {
            tracing::info!(source = %self.address(), file = %w.path.display(), reason = %w.reason, "remote file not taken yet");
        }
        Ok(())
    }

    /// Whether a remote file was already taken (its ledger matches it): landed and waiting to
    /// be read, stored, or unreadable.
    fn taken(&self, landing: &Path, f: &Remote) -> bool {
        let Some(ledger) = read_ledger(landing, &f.name) else {
            return false;
        };
        if (ledger.size, ledger.mtime) != (f.size, f.mtime)
            || ledger.remote != join(&self.remote_dir, &f.name)
        {
            return false;
        }
        match ledger.state.as_str() {
            // Landed but gone from the landing folder without being marked: download again.
            "landed" => landing.join(&f.name).is_file(),
            "failed" => {
                tracing::warn!(source = %self.address(), file = %f.name, "this file could not be read last time; not downloaded again until it changes");
                true
            }
            _ => true,
        }
    }

    /// Downloads one remote file into `<landing>/.sftp/<name>.part` (continuing a partial one of
    /// the same remote file), checks its length, writes its ledger and renames it into the
    /// landing folder.
    async fn download(
        &self,
        conn: &Conn,
        landing: &Path,
        f: &Remote,
        marker: Option<String>,
    ) -> Result<(RawFile, Option<u64>), Failed> {
        let local = |e: SourceError| Failed::Fatal(SftpError::Config(e.to_string()));
        let remote = join(&self.remote_dir, &f.name);
        let target = landing.join(&f.name);
        let work = landing.join(WORK_DIR);
        let part = work.join(format!("{}.part", f.name));
        let part_meta = work.join(format!("{}.part.json", f.name));
        let this = PartOf {
            remote: remote.clone(),
            size: f.size,
            mtime: f.mtime,
        };
        let previous: Option<PartOf> = std::fs::read_to_string(&part_meta)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let from = if previous.as_ref() == Some(&this) && have <= f.size {
            have
        } else {
            if have > 0 {
                tracing::info!(file = %f.name, "partial download is of a different version of the remote file; starting again");
            }
            write_json(&part_meta, &this).map_err(local)?;
            0
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(io_error("open", &part))
            .map_err(local)?;
        if from == 0 {
            file.set_len(0)
                .map_err(io_error("truncate", &part))
                .map_err(local)?;
        }
        if from > 0 {
            tracing::info!(source = %self.address(), file = %f.name, from, size = f.size, "resuming a partial download");
        }
        let timeout = self.timeout;
        let mut rf = tokio::time::timeout(timeout, conn.sftp.open(remote.clone()))
            .await
            .map_err(|_| Failed::Retry(format!("{remote}: opening timed out")))?
            .map_err(|e| sftp_failure(&remote, e))?;
        if from > 0 {
            rf.seek(io::SeekFrom::Start(from))
                .await
                .map_err(|e| Failed::Retry(format!("{remote}: seek: {e}")))?;
        }
        let mut got = from;
        let mut buf = vec![0u8; READ_CHUNK];
        while got < f.size {
            let n = tokio::time::timeout(timeout, rf.read(&mut buf))
                .await
                .map_err(|_| {
                    Failed::Retry(format!(
                        "{remote}: no data for {}s at byte {got}",
                        timeout.as_secs()
                    ))
                })?
                .map_err(|e| Failed::Retry(format!("{remote}: read at byte {got}: {e}")))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .map_err(io_error("write", &part))
                .map_err(local)?;
            got += n as u64;
        }
        let _ = rf.close().await;
        file.sync_all()
            .map_err(io_error("sync", &part))
            .map_err(local)?;
        drop(file);
        if got < f.size {
            // The stream ended early (a dropped connection reads as the end): keep what came,
            // to be continued; if the remote file really shrank, its new size restarts it.
            return Err(Failed::Retry(format!(
                "{remote}: the transfer ended at byte {got} of {}",
                f.size
            )));
        }
        if got > f.size {
            // Longer than listed: it is still being written; start afresh next time.
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&part_meta);
            return Err(Failed::Retry(format!(
                "{remote}: received {got} bytes but the listing said {}; it is probably still being written",
                f.size
            )));
        }
        let mut raw = describe(&part).map_err(local)?;
        let ledger = Ledger {
            remote: remote.clone(),
            marker,
            size: f.size,
            mtime: f.mtime,
            sha256: raw.sha256.clone(),
            state: "landed".into(),
        };
        write_json(&ledger_path(landing, &f.name), &ledger).map_err(local)?;
        std::fs::rename(&part, &target)
            .map_err(io_error("rename", &part))
            .map_err(local)?;
        let _ = std::fs::remove_file(&part_meta);
        #[cfg(unix)]
        std::fs::File::open(landing)
            .and_then(|d| d.sync_all())
            .map_err(io_error("sync", landing))
            .map_err(local)?;
        raw.path = target;
        raw.name = f.name.clone();
        tracing::info!(source = %self.address(), file = %f.name, bytes = f.size, resumed_from = from, "downloaded");
        Ok((raw, (from > 0).then_some(from)))
    }
}

/// Ledgers in state `stored`, by file name.
fn stored_ledgers(landing: &Path) -> Vec<(String, Ledger)> {
    let Ok(entries) = std::fs::read_dir(landing.join(WORK_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Ledger)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_suffix(".json")?;
            if name.ends_with(".part") {
                return None;
            }
            let ledger = read_ledger(landing, name)?;
            (ledger.state == "stored").then(|| (name.to_string(), ledger))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_file_names_only_and_markers_are_recognised() {
        let p = glob::Pattern::new("payroll_*.csv").unwrap();
        assert!(matches(&p, "payroll_202610.csv"));
        assert!(!matches(&p, "payroll_202610.csv.done"));
        assert!(!matches(&p, ".payroll_x.csv"));
        assert!(is_marker("payroll_202610.csv.done") && is_marker("a.ok"));
        assert!(!is_marker("done") && !is_marker("a.csv"));
        assert_eq!(join("/outbound/", "a.csv"), "/outbound/a.csv");
        assert_eq!(join("", "a.csv"), "a.csv");
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let first = Duration::from_millis(200);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 3), Duration::from_millis(800));
        assert_eq!(backoff(first, 40), MAX_BACKOFF);
    }

    #[test]
    fn ledgers_are_marked_only_for_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(WORK_DIR)).unwrap();
        let ledger = Ledger {
            remote: "/out/a.csv".into(),
            marker: None,
            size: 3,
            mtime: Some(5),
            sha256: "abc".into(),
            state: "landed".into(),
        };
        write_json(&ledger_path(dir.path(), "a.csv"), &ledger).unwrap();
        assert!(!mark_stored(dir.path(), "a.csv", "other", true).unwrap());
        assert!(!mark_stored(dir.path(), "b.csv", "abc", true).unwrap());
        assert!(stored_ledgers(dir.path()).is_empty());
        assert!(mark_stored(dir.path(), "a.csv", "abc", true).unwrap());
        assert_eq!(stored_ledgers(dir.path())[0].1.state, "stored");
    }

    #[test]
    fn a_pinned_key_is_parsed_with_or_without_its_algorithm() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ comment";
        let a = parse_pinned(line).unwrap();
        let b =
            parse_pinned("AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ")
                .unwrap();
        assert_eq!(a.key_data(), b.key_data());
        let e = parse_pinned("ssh-ed25519 not-base64!")
            .unwrap_err()
            .to_string();
        assert!(e.contains("host_key"), "{e}");
    }
}
