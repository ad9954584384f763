//! `council-bridge store copy`: every table of one store into another, on either engine (an
//! SQLite store that outgrew one machine into PostgreSQL, or back). Rows are copied by column
//! name, values as they are (payloads stay bytes), ids kept, in foreign-key order, in one
//! transaction on the target; PostgreSQL's identity sequences are then moved past the ids
//! copied. `seq` (PostgreSQL's insertion order of `batches` and `runs`, SQLite's `rowid`) is
//! carried by copying those tables in insertion order.

use super::db::{self, Db, DbError, Engine, Param};
use super::{Result, Store, StoreError};

/// The tables copied, in foreign-key order. Leases are not: they belong to running processes.
pub const COPIED_TABLES: &[&str] = &[
    "batches",
    "header_sets",
    "outbox",
    "failures",
    "failure_events",
    "audit",
    "feed_schedule",
    "feed_state",
    "feed_state_head",
    "snapshot_batches",
    "snapshot_changes",
    "runs",
    "api_tokens",
    "replay_jobs",
];

/// Tables whose integer `id` is an identity (copied as is, then the sequence reset).
const ID_TABLES: &[&str] = &[
    "header_sets",
    "outbox",
    "failures",
    "failure_events",
    "audit",
    "api_tokens",
];

/// Rows copied, per table, in the order copied.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// `(table, rows)`.
    pub tables: Vec<(String, u64)>,
}

/// Rows read from the source at a time.
const PAGE: i64 = 1_000;
/// Rows per INSERT statement.
const ROWS_PER_INSERT: usize = 50;

/// How a table's rows are paged, in a stable order.
fn order(table: &str, engine: Engine) -> (&'static str, bool) {
    // (ORDER BY, whether it is the integer `id`, paged by key rather than by offset)
    match table {
        t if ID_TABLES.contains(&t) => ("id", true),
        "batches" | "runs" => (engine.insertion_order(), false),
        "feed_schedule" | "feed_state_head" => ("council, feed", false),
        "feed_state" => ("council, feed, record_key", false),
        "snapshot_batches" => ("batch_id", false),
        "snapshot_changes" => ("batch_id, record_key", false),
        _ => ("id", false),
    }
}

impl Store {
    /// Copies every table of this store into `target` (see the module's documentation).
    /// Refused when the target already holds batches or outbox rows.
    pub fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        let src_failed = |source: DbError| StoreError::Database {
            location: self.location.to_string(),
            source,
        };
        let dst_failed = |source: DbError| StoreError::Database {
            location: target.location.to_string(),
            source,
        };
        let mut src = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut dst = target.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (src, dst): (&mut Db, &mut Db) = (&mut src, &mut dst);
        db::off_async(|| {
            let mut tx = dst.transaction().map_err(dst_failed)?;
            for table in ["batches", "outbox"] {
                let n: i64 = tx
                    .query_value(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .map_err(dst_failed)?;
                if n > 0 {
                    return Err(StoreError::Refused(format!(
                        "the target store {} already holds {n} {table} rows: copy into a new, empty store",
                        target.location
                    )));
                }
            }
            let mut report = CopyReport::default();
            for table in COPIED_TABLES {
                let from = src.columns(table).map_err(src_failed)?;
                let to = tx.columns(table).map_err(dst_failed)?;
                if let Some(missing) = from.iter().find(|c| *c != "seq" && !to.contains(c)) {
                    return Err(StoreError::Refused(format!(
                        "the target store {} has no column {table}.{missing}: bring both stores to the same release first (`store migrate`)",
                        target.location
                    )));
                }
                let columns: Vec<&String> = to.iter().filter(|c| from.contains(c)).collect();
                let list = columns
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let (order_by, keyset) = order(table, src.engine());
                let mut copied = 0u64;
                let mut last_id = i64::MIN;
                loop {
                    let rows = if keyset {
                        src.query(
                            &format!(
                                "SELECT {list}, id FROM {table} WHERE id > ?1 ORDER BY id LIMIT ?2"
                            ),
                            &[Param::Int(last_id), Param::Int(PAGE)],
                        )
                    } else {
                        src.query(
                            &format!(
                                "SELECT {list} FROM {table} ORDER BY {order_by} LIMIT ?1 OFFSET ?2"
                            ),
                            &[Param::Int(PAGE), Param::Int(copied as i64)],
                        )
                    }
                    .map_err(src_failed)?;
                    if rows.is_empty() {
                        break;
                    }
                    if keyset {
                        last_id = rows
                            .last()
                            .map(|r| r.get::<i64>(columns.len()))
                            .transpose()
                            .map_err(src_failed)?
                            .unwrap_or(last_id);
                    }
                    for chunk in rows.chunks(ROWS_PER_INSERT) {
                        let mut sql = format!("INSERT INTO {table} ({list}) VALUES ");
                        let mut params = Vec::with_capacity(chunk.len() * columns.len());
                        for (i, row) in chunk.iter().enumerate() {
                            sql.push_str(if i == 0 { "(" } else { ", (" });
                            for c in 0..columns.len() {
                                if c > 0 {
                                    sql.push_str(", ");
                                }
                                params.push(row.values()[c].as_param());
                                sql.push_str(&format!("?{}", params.len()));
                            }
                            sql.push(')');
                        }
                        tx.execute(&sql, &params).map_err(dst_failed)?;
                    }
                    copied += rows.len() as u64;
                    if (rows.len() as i64) < PAGE {
                        break;
                    }
                }
                let identity = match *table {
                    t if ID_TABLES.contains(&t) => Some("id"),
                    "batches" | "runs" => Some("seq"),
                    _ => None,
                };
                if let Some(sql) = identity.and_then(|c| tx.engine().reset_identity(table, c)) {
                    tx.query(&sql, &[]).map_err(dst_failed)?;
                }
                report.tables.push((table.to_string(), copied));
            }
            tx.commit().map_err(dst_failed)?;
            Ok(report)
        })
    }
}
