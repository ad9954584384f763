//! Leases: which process works on what, across every process that opens one store.
//!
//! Reading a feed must be done by one worker at a time, whether that worker is `serve`, `run`,
//! `outbox flush` or a cron job: two readers of one feed read its files twice. (Publishing is
//! shared: publishers claim outbox rows, see `claims.rs`.) A lease is a row in
//! the `leases` table naming its holder (a random id per process, with its pid, host and
//! purpose) and an expiry. The holder renews it while it works; a holder that died stops
//! renewing and its lease expires, or is taken over at once when the holder's pid is gone from
//! this host. A worker that finds its lease taken over stops (fencing): it never writes on.

use std::sync::OnceLock;
use std::time::Duration;

use super::db::p;

use super::{Result, Store};

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(60);

/// The lease on reading one feed.
pub fn feed(council: &str, feed: &str) -> String {
    format!("feed:{council}/{feed}")
}

/// This process, as a lease holder.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Unique per process.
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// What the process is (`serve`, `run`, `outbox flush`...).
    pub purpose: String,
}

static OWNER: OnceLock<Owner> = OnceLock::new();

/// Names what this process is, for the messages other processes show when they find a lease
/// taken (`run`, `serve`...). Only the first call counts.
pub fn set_purpose(purpose: &str) {
    let _ = OWNER.set(Owner::new(purpose));
}

/// This process as a lease holder.
pub fn owner() -> &'static Owner {
    OWNER.get_or_init(|| Owner::new("council-bridge"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

impl Owner {
    fn new(purpose: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            pid: std::process::id(),
            host: host_name(),
            purpose: purpose.to_string(),
        }
    }
}

/// Who holds a lease.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Holder {
    /// The lease (`feed:<council>/<feed>`).
    pub name: String,
    /// What the holding process is.
    pub purpose: String,
    /// Its pid.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Since when (RFC 3339).
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, since {})",
            self.purpose, self.pid, self.host, self.since
        )
    }
}

/// What asking for a lease gave.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// This process holds it now.
    Acquired,
    /// Another live process holds it.
    HeldBy(Holder),
}

/// What renewing a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Held by this process, and extended.
    Renewed,
    /// Nobody holds it (the caller never asked for it, e.g. a library caller or a benchmark).
    Unheld,
    /// Another process took it over: stop writing.
    Lost,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether a process of this host with this pid is gone.
pub(super) fn is_dead_here(host: &str, pid: u32) -> bool {
    host == owner().host
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Store {
    /// Takes the lease `name` for this process unless another live process holds it. An expired
    /// lease, or one whose holder's pid is gone from this host, is taken over.
    pub fn try_lease(&self, name: &str) -> Result<Attempt> {
        let me = owner();
        self.with(|db| {
            let mut tx = db.transaction()?;
            let current = tx
                .query_opt(
                    "SELECT holder, purpose, pid, host, acquired_at, expires_at FROM leases WHERE name = ?1",
                    p![name],
                    |r| {
                        Ok((
                            r.get::<String>(0)?,
                            Holder {
                                name: name.to_string(),
                                purpose: r.get(1)?,
                                pid: r.get::<i64>(2)? as u32,
                                host: r.get(3)?,
                                since: r.get(4)?,
                            },
                            r.get::<i64>(5)?,
                        ))
                    },
                )?;
            if let Some((holder, h, expires)) = &current
                && holder != &me.id
                && *expires > now_ms()
                && !is_dead_here(&h.host, h.pid)
            {
                return Ok(Attempt::HeldBy(h.clone()));
            }
            if let Some((holder, h, _)) = &current
                && holder != &me.id
            {
                tracing::warn!(lease = name, previous = %h, "took over a lease its holder no longer keeps");
            }
            tx.execute(
                "INSERT INTO leases (name, holder, purpose, pid, host, acquired_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, purpose = excluded.purpose,
                   pid = excluded.pid, host = excluded.host, acquired_at = excluded.acquired_at,
                   expires_at = excluded.expires_at",
                p![
                    name,
                    me.id,
                    me.purpose,
                    me.pid as i64,
                    me.host,
                    super::now(),
                    now_ms() + TTL.as_millis() as i64
                ],
            )?;
            tx.commit()?;
            Ok(Attempt::Acquired)
        })
    }

    /// Extends this process's lease `name`; says whether another process took it over.
    pub fn renew_lease(&self, name: &str) -> Result<Renewal> {
        let me = owner();
        self.with(|db| {
            let n = db.execute(
                "UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2",
                p![name, me.id, now_ms() + TTL.as_millis() as i64],
            )?;
            if n == 1 {
                return Ok(Renewal::Renewed);
            }
            let other: Option<String> =
                db.query_opt("SELECT holder FROM leases WHERE name = ?1", p![name], |r| {
                    r.get(0)
                })?;
            Ok(if other.is_some() {
                Renewal::Lost
            } else {
                Renewal::Unheld
            })
        })
    }

    /// Gives the lease `name` back, if this process holds it.
    pub fn release_lease(&self, name: &str) -> Result<()> {
        let me = owner();
        self.with(|db| {
            db.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                p![name, me.id],
            )
            .map(|_| ())
        })
    }

    /// The leases held now by live processes (for `status`).
    pub fn leases(&self) -> Result<Vec<Holder>> {
        self.with(|db| {
            db.query_map("SELECT name, purpose, pid, host, acquired_at FROM leases WHERE expires_at > ?1 ORDER BY name", p![now_ms()], |r| {
                Ok(Holder {
                    name: r.get(0)?,
                    purpose: r.get(1)?,
                    pid: r.get::<i64>(2)? as u32,
                    host: r.get(3)?,
                    since: r.get(4)?,
                })
            })
        })
        .map(|all: Vec<Holder>| {
            all.into_iter()
                .filter(|h| !is_dead_here(&h.host, h.pid))
                .collect()
        })
    }
}

/// A lease this process holds; given back when dropped.
pub struct Lease<'a> {
    store: &'a Store,
    name: String,
}

impl<'a> Lease<'a> {
    /// Takes the lease `name`, or says who holds it.
    pub fn try_take(store: &'a Store, name: &str) -> Result<std::result::Result<Self, Holder>> {
        Ok(match store.try_lease(name)? {
            Attempt::Acquired => Ok(Self {
                store,
                name: name.to_string(),
            }),
            Attempt::HeldBy(h) => Err(h),
        })
    }

    /// Extends it; `false` when another process took it over (stop writing).
    pub fn renew(&self) -> Result<bool> {
        Ok(self.store.renew_lease(&self.name)? != Renewal::Lost)
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.release_lease(&self.name) {
            tracing::warn!(lease = %self.name, error = %e, "could not give a lease back; it expires by itself");
        }
    }
}
