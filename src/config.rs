//! The installation's configuration: `council-bridge.yaml` (store, mappings, schemas, broker)
//! and one `council.yaml` per council folder under the mappings folder (its feeds).
//!
//! Onboarding a council is adding a folder: nothing in the root file lists councils, so a new
//! partner's mappings, samples and feeds travel together. Secrets never live here: the broker
//! URL comes from `AMQP_URL` (or `broker.url` for a password-less local broker).

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
    /// Events exchange.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Dead-letter exchange.
    #[serde(default = "default_dlx")]
    pub dead_letter_exchange: String,
    /// Dead-letter queue.
    #[serde(default = "default_dlq")]
    pub dead_letter_queue: String,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            url: None,
            exchange: default_exchange(),
            dead_letter_exchange: default_dlx(),
            dead_letter_queue: default_dlq(),
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
    input: String,
    /// Seconds a file must stay unchanged before it is taken (unless it has a marker).
    #[serde(default = "default_settle")]
    settle_seconds: u64,
    #[serde(default)]
    require_marker: bool,
    #[serde(default)]
    archive: Option<PathBuf>,
    #[serde(default)]
    rejected: Option<PathBuf>,
}

fn default_settle() -> u64 {
    10
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
    /// The SQLite file.
    pub store: PathBuf,
    /// The mappings folder.
    pub mappings: PathBuf,
    /// The schemas folder.
    pub schemas: PathBuf,
    /// Broker settings.
    pub broker: BrokerSettings,
    /// Councils, by id order.
    pub councils: Vec<Council>,
}

impl Config {
    /// Reads `path` and every `<mappings>/<council>/council.yaml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let root: RootFile = read_yaml(path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mappings = resolve(&root.mappings);
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
                .map(|(id, f)| {
                    let input = if Path::new(&f.input).is_absolute() {
                        f.input
                    } else {
                        dir.join(&f.input).to_string_lossy().into_owned()
                    };
                    Feed {
                        id,
                        mapping: dir.join(f.mapping),
                        drop: crate::sources::DropFolder {
                            pattern: input.clone(),
                            settle: std::time::Duration::from_secs(f.settle_seconds),
                            require_marker: f.require_marker,
                            archive: f.archive.map(|p| dir.join(p)),
                            rejected: f.rejected.map(|p| dir.join(p)),
                        },
                        input,
                    }
                })
                .collect();
            councils.push(Council {
                id: c.council,
                name: c.name,
                dir,
                feeds,
            });
        }
        Ok(Config {
            store: resolve(&root.store),
            mappings,
            schemas: resolve(&root.schemas),
            broker: root.broker,
            councils,
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
