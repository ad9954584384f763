//! What the operators' console reads and writes: API tokens (the sha256 of the secret only),
//! failures found by filter and page, a failure's history, discards, the audit log by council,
//! and resumable bulk replay jobs.
//!
//! Every read takes a council scope (`None`: every council): a row of a council outside it is
//! never returned, counted or changed, so callers answer "not found" for it.

use serde_json::{Value, json};

use super::db::{Db, DbResult, Engine, Param, Row, p};

use super::{
    FAILURE_SELECT, FailureRow, OutboxCounts, Result, Store, StoreError, failure_row, now,
};

/// A token as stored (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRow {
    /// Token id.
    pub id: i64,
    /// A name for people (`alice at Northshire`).
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// Councils it may see; `None` for every council.
    pub councils: Option<Vec<String>>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When revoked, if it was.
    pub revoked_at: Option<String>,
    /// When last used.
    pub last_used_at: Option<String>,
}

/// Which failures: every field narrows the selection; `scope` is the caller's councils.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct FailureFilter {
    /// Councils the caller may see (`None`: every council). Not a user filter: set from the token.
    #[serde(default)]
    pub scope: Option<Vec<String>>,
    /// Council.
    #[serde(default)]
    pub council: Option<String>,
    /// Feed.
    #[serde(default)]
    pub feed: Option<String>,
    /// Canonical entity (resolved by the pipeline to `entity_feeds`).
    #[serde(default)]
    pub entity: Option<String>,
    /// (council, feed) pairs whose mapping makes `entity`.
    #[serde(default)]
    pub entity_feeds: Option<Vec<(String, String)>>,
    /// Failure kind: `decode`, `mapping`, `validation`, `unroutable`, `refused`, `dead-lettered`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Rule of one of its errors (`required`, `format`, `dead-lettered`...).
    #[serde(default)]
    pub rule: Option<String>,
    /// Canonical field of one of its errors.
    #[serde(default)]
    pub field: Option<String>,
    /// Failed at or after (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Failed before (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// Text in the file name or an error message (never searched in record values).
    #[serde(default)]
    pub text: Option<String>,
    /// `open` (default), `replayed`, `discarded` or `all`.
    #[serde(default)]
    pub status: Option<String>,
    /// Only these ids.
    #[serde(default)]
    pub ids: Option<Vec<i64>>,
}

impl FailureFilter {
    /// Whether a council is inside the scope.
    pub fn sees(&self, council: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.iter().any(|c| c == council))
    }

    fn sql(&self, e: Engine) -> (String, Vec<Param<'static>>) {
        let mut w = vec!["1 = 1".to_string()];
        let mut p: Vec<Param<'static>> = Vec::new();
        let text = |v: &str| Param::from(v.to_string());
        if let Some(scope) = &self.scope {
            if scope.is_empty() {
                w.push("0 = 1".into());
            } else {
                w.push(format!(
                    "f.council IN ({})",
                    vec!["?"; scope.len()].join(", ")
                ));
                p.extend(scope.iter().map(|c| text(c)));
            }
        }
        for (col, v) in [
            ("f.council", &self.council),
            ("f.feed", &self.feed),
            ("f.stage", &self.kind),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                w.push(format!("{col} = ?"));
                p.push(text(v));
            }
        }
        if self.entity.as_deref().is_some_and(|e| !e.is_empty()) {
            let pairs = self.entity_feeds.clone().unwrap_or_default();
            if pairs.is_empty() {
                w.push("0 = 1".into());
            } else {
                let mut ors = Vec::new();
                for (c, f) in pairs {
                    ors.push("(f.council = ? AND f.feed = ?)");
                    p.push(text(&c));
                    p.push(text(&f));
                }
                w.push(format!("({})", ors.join(" OR ")));
            }
        }
        for (key, v) in [("rule", &self.rule), ("field", &self.field)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                w.push(format!(
                    "EXISTS (SELECT 1 FROM {} WHERE {} = ?)",
                    e.json_each("f.errors", "e"),
                    e.json_text("e.value", key)
                ));
                p.push(text(v));
            }
        }
        if let Some(v) = self.since.as_deref().filter(|v| !v.is_empty()) {
            w.push("f.created_at >= ?".into());
            p.push(text(v));
        }
        if let Some(v) = self.until.as_deref().filter(|v| !v.is_empty()) {
            w.push("f.created_at < ?".into());
            p.push(text(v));
        }
        if let Some(v) = self.text.as_deref().filter(|v| !v.is_empty()) {
            w.push(format!(
                "({} OR EXISTS (SELECT 1 FROM {} WHERE {}))",
                e.contains_ci("COALESCE(f.file_name, '')", "?"),
                e.json_each("f.errors", "e"),
                e.contains_ci(
                    &format!("COALESCE({}, '')", e.json_text("e.value", "message")),
                    "?"
                )
            ));
            p.push(text(v));
            p.push(text(v));
        }
        match self.status.as_deref().unwrap_or("open") {
            "all" | "" => {}
            s => {
                w.push("f.status = ?".into());
                p.push(text(s));
            }
        }
        if let Some(ids) = &self.ids {
            if ids.is_empty() {
                w.push("0 = 1".into());
            } else {
                w.push(format!("f.id IN ({})", vec!["?"; ids.len()].join(", ")));
                p.extend(ids.iter().map(|i| Param::Int(*i)));
            }
        }
        (w.join(" AND "), p)
    }
}

/// A resumable bulk replay.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayJob {
    /// Job id.
    pub id: String,
    /// Who started it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Which failures (JSON of a [`FailureFilter`], the caller's scope included).
    pub filter: Value,
    /// `running`, `interrupted`, `done`.
    pub status: String,
    /// The last failure id it went through (it resumes after it).
    pub last_id: i64,
    /// Records queued for publishing.
    pub queued: i64,
    /// Records that still fail with the current mapping.
    pub still_failing: i64,
    /// Records that could not be replayed (snapshot feeds, feed gone...).
    pub refused: i64,
    /// When it started.
    pub created_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
}

/// What the audit log records of one action.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry<'a> {
    /// Who.
    pub actor: &'a str,
    /// What (`failure.replay`, `failure.reveal`, `token.create`...).
    pub action: &'a str,
    /// On what (a failure id, a batch id, a token id, a job id).
    pub target: &'a str,
    /// Why, and anything else worth knowing (never a record value).
    pub detail: &'a str,
    /// The council it concerns (`None`: the installation, seen by all-council tokens only).
    pub council: Option<&'a str>,
    /// `done`, `refused`, `still failing`...
    pub outcome: &'a str,
    /// How many records.
    pub records: i64,
}

fn token_row(r: &Row) -> DbResult<TokenRow> {
    let councils: String = r.get(3)?;
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        councils: (councils != "*").then(|| councils.split(',').map(str::to_string).collect()),
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        revoked_at: r.get(6)?,
        last_used_at: r.get(7)?,
    })
}

const TOKEN_SELECT: &str = "SELECT id, name, role, councils, created_by, created_at, revoked_at, last_used_at FROM api_tokens";

fn job_row(r: &Row) -> DbResult<ReplayJob> {
    let filter: String = r.get(3)?;
    Ok(ReplayJob {
        id: r.get(0)?,
        actor: r.get(1)?,
        reason: r.get(2)?,
        filter: serde_json::from_str(&filter).unwrap_or(Value::Null),
        status: r.get(4)?,
        last_id: r.get(5)?,
        queued: r.get(6)?,
        still_failing: r.get(7)?,
        refused: r.get(8)?,
        created_at: r.get(9)?,
        finished_at: r.get(10)?,
    })
}

const JOB_SELECT: &str = "SELECT id, actor, reason, filter, status, last_id, queued, still_failing, refused, created_at, finished_at FROM replay_jobs";

pub(super) fn write_audit(tx: &mut Db, e: &AuditEntry<'_>) -> DbResult<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, detail, council, outcome, records)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        p![
            now(),
            e.actor,
            e.action,
            e.target,
            e.detail,
            e.council,
            e.outcome,
            e.records
        ],
    )
    .map(|_| ())
}

pub(super) fn failure_event(
    tx: &mut Db,
    failure_id: i64,
    actor: &str,
    action: &str,
    outcome: &str,
    detail: &str,
) -> DbResult<()> {
    tx.execute(
        "INSERT INTO failure_events (failure_id, at, actor, action, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        p![failure_id, now(), actor, action, outcome, detail],
    )
    .map(|_| ())
}

impl Store {
    /// Stores a new token (the secret's sha256, hex) and audits it. Returns its id.
    pub fn create_token(
        &self,
        name: &str,
        role: &str,
        councils: Option<&[String]>,
        secret_sha256: &str,
        actor: &str,
    ) -> Result<i64> {
        let councils = councils.map_or_else(|| "*".to_string(), |c| c.join(","));
        self.with(|db| {
            let mut tx = db.transaction()?;
            tx.execute(
                "INSERT INTO api_tokens (name, role, councils, secret_sha256, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                p![name, role, councils, secret_sha256, actor, now()],
            )?;
            let id: i64 = tx.query_value("SELECT id FROM api_tokens WHERE secret_sha256 = ?1", p![secret_sha256])?;
            write_audit(
                &mut tx,
                &AuditEntry {
                    actor,
                    action: "token.create",
                    target: &id.to_string(),
                    detail: &format!("{name}: role {role}, councils {councils}"),
                    council: None,
                    outcome: "done",
                    records: 0,
                },
            )?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// The live (not revoked) token with this secret hash, marking it used.
    pub fn token_by_hash(&self, secret_sha256: &str) -> Result<Option<TokenRow>> {
        self.with(|db| {
            let row = db.query_opt(
                &format!("{TOKEN_SELECT} WHERE secret_sha256 = ?1 AND revoked_at IS NULL"),
                p![secret_sha256],
                token_row,
            )?;
            if let Some(t) = &row {
                db.execute(
                    "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
                    p![t.id, now()],
                )?;
            }
            Ok(row)
        })
    }

    /// Every token, newest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.with(|db| db.query_map(&format!("{TOKEN_SELECT} ORDER BY id DESC"), p![], token_row))
    }

    /// Revokes a token (audited).
    pub fn revoke_token(&self, id: i64, actor: &str) -> Result<()> {
        let n = self.with(|db| {
            let mut tx = db.transaction()?;
            let n = tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                p![id, now()],
            )?;
            if n == 1 {
                write_audit(
                    &mut tx,
                    &AuditEntry {
                        actor,
                        action: "token.revoke",
                        target: &id.to_string(),
                        detail: "revoked",
                        council: None,
                        outcome: "done",
                        records: 0,
                    },
                )?;
            }
            tx.commit()?;
            Ok(n)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no live token {id} (`council-bridge tokens list` shows them)"
            )));
        }
        Ok(())
    }

    /// Failures matching `f` with an id above `after`, by id, at most `limit`.
    pub fn failures_matching(
        &self,
        f: &FailureFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<FailureRow>> {
        let (w, mut p) = f.sql(self.engine);
        p.push(Param::Int(after));
        p.push(Param::Int(limit as i64));
        let select = FAILURE_SELECT.replace(" FROM failures", " FROM failures f");
        let select = select.replacen("SELECT id,", "SELECT f.id,", 1);
        self.with(|db| {
            db.query_map(
                &format!("{select} WHERE {w} AND f.id > ? ORDER BY f.id LIMIT ?"),
                &p,
                failure_row,
            )
        })
    }

    /// How many failures match.
    pub fn count_failures(&self, f: &FailureFilter) -> Result<u64> {
        let (w, p) = f.sql(self.engine);
        self.with(|db| {
            db.query_row(
                &format!("SELECT COUNT(*) FROM failures f WHERE {w}"),
                &p,
                |r| r.get::<i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// Matching failures counted by kind and rule, most frequent first.
    pub fn failure_reasons(&self, f: &FailureFilter) -> Result<Vec<(String, String, u64)>> {
        let (w, p) = f.sql(self.engine);
        let e = self.engine;
        let sql = format!(
            "SELECT f.stage, COALESCE({}, '?'), COUNT(DISTINCT f.id)
             FROM failures f CROSS JOIN {} WHERE {w}
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            e.json_text("e.value", "rule"),
            e.json_each("f.errors", "e")
        );
        self.with(|db| {
            db.query_map(&sql, &p, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<i64>(2)? as u64))
            })
        })
    }

    /// One failure, if it exists and its council is in `scope` (else `None`: the caller says
    /// "not found" either way, so existence does not leak).
    pub fn failure_in_scope(
        &self,
        id: i64,
        scope: Option<&[String]>,
    ) -> Result<Option<FailureRow>> {
        match self.failure(id) {
            Ok(f) if scope.is_none_or(|s| s.contains(&f.council)) => Ok(Some(f)),
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A failure's history: each replay attempt, discard and reveal, oldest first.
    pub fn failure_history(&self, id: i64) -> Result<Vec<Value>> {
        self.with(|db| {
            db.query_map("SELECT at, actor, action, outcome, detail FROM failure_events WHERE failure_id = ?1 ORDER BY id", p![id], |r| {
                Ok(json!({
                    "at": r.get::<String>(0)?, "actor": r.get::<String>(1)?,
                    "action": r.get::<String>(2)?, "outcome": r.get::<String>(3)?,
                    "detail": r.get::<String>(4)?,
                }))
            })
        })
    }

    /// Discards an open failure with a reason: it is kept, marked discarded, never replayed.
    /// Audited.
    pub fn discard_failure(&self, id: i64, actor: &str, reason: &str) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            let row: Option<(String, String)> = tx.query_opt(
                "SELECT status, council FROM failures WHERE id = ?1",
                p![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some((status, council)) = row else {
                return Ok(Err(StoreError::NotFound(format!("no failure {id}"))));
            };
            if status != "open" {
                return Ok(Err(StoreError::Refused(format!(
                    "failure {id} is already {status}"
                ))));
            }
            tx.execute(
                "UPDATE failures SET status = 'discarded', resolved_at = ?2 WHERE id = ?1",
                p![id, now()],
            )?;
            failure_event(&mut tx, id, actor, "discard", "discarded", reason)?;
            write_audit(
                &mut tx,
                &AuditEntry {
                    actor,
                    action: "failure.discard",
                    target: &id.to_string(),
                    detail: reason,
                    council: Some(&council),
                    outcome: "discarded",
                    records: 1,
                },
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })?
    }

    /// Writes one audit entry (and, for a failure, a history event).
    pub fn record_audit(&self, e: &AuditEntry<'_>, failure: Option<i64>) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            write_audit(&mut tx, e)?;
            if let Some(id) = failure {
                failure_event(&mut tx, id, e.actor, e.action, e.outcome, e.detail)?;
            }
            tx.commit()
        })
    }

    /// The audit log, newest first, entries of councils in `scope` only (installation-wide
    /// entries, such as token changes, only for an all-council scope); `before` pages back.
    pub fn audit_entries(
        &self,
        scope: Option<&[String]>,
        action: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Value>> {
        let mut w = vec!["1 = 1".to_string()];
        let mut p: Vec<Param<'static>> = Vec::new();
        if let Some(scope) = scope {
            w.push(format!(
                "council IN ({})",
                if scope.is_empty() {
                    "NULL".to_string()
                } else {
                    vec!["?"; scope.len()].join(", ")
                }
            ));
            p.extend(scope.iter().map(|c| Param::from(c.clone())));
        }
        if let Some(a) = action.filter(|a| !a.is_empty()) {
            w.push("action LIKE ?".into());
            p.push(Param::from(format!("{a}%")));
        }
        if let Some(b) = before {
            w.push("id < ?".into());
            p.push(Param::Int(b));
        }
        p.push(Param::Int(limit as i64));
        self.with(|db| {
            db.query_map(
                &format!(
                "SELECT id, at, actor, action, target, detail, council, outcome, records FROM audit
                 WHERE {} ORDER BY id DESC LIMIT ?",
                w.join(" AND ")
            ),
                &p,
                |r| {
                    Ok(json!({
                        "id": r.get::<i64>(0)?, "at": r.get::<String>(1)?,
                        "actor": r.get::<String>(2)?, "action": r.get::<String>(3)?,
                        "target": r.get::<String>(4)?, "detail": r.get::<String>(5)?,
                        "council": r.get::<Option<String>>(6)?,
                        "outcome": r.get::<Option<String>>(7)?,
                        "records": r.get::<Option<i64>>(8)?,
                    }))
                },
            )
        })
    }

    /// Outbox counts of the councils in `scope`.
    pub fn outbox_counts_in(&self, scope: Option<&[String]>) -> Result<OutboxCounts> {
        self.with(|db| {
            let rows = db.query_map(
                "SELECT council, status, COUNT(*) FROM outbox GROUP BY council, status
                 UNION ALL SELECT council, 'staged', COUNT(*) FROM outbox WHERE status = 'pending'
                 AND batch_id IN (SELECT id FROM batches WHERE status = 'processing') GROUP BY council",
                p![],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<i64>(2)? as u64,
                    ))
                },
            )?;
            let mut counts = OutboxCounts::default();
            for (council, status, n) in rows {
                if scope.is_some_and(|s| !s.contains(&council)) {
                    continue;
                }
                counts.add(&status, n);
            }
            Ok(counts.staged_apart())
        })
    }

    /// Starts a bulk replay job.
    pub fn create_replay_job(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
        filter: &FailureFilter,
        matching: u64,
    ) -> Result<()> {
        let filter_json = serde_json::to_string(filter).unwrap_or_default();
        let council = filter.council.clone().or_else(|| {
            filter
                .scope
                .as_ref()
                .filter(|s| s.len() == 1)
                .map(|s| s[0].clone())
        });
        self.with(|db| {
            let mut tx = db.transaction()?;
            tx.execute(
                "INSERT INTO replay_jobs (id, actor, reason, filter, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                p![id, actor, reason, filter_json, now()],
            )?;
            write_audit(
                &mut tx,
                &AuditEntry {
                    actor,
                    action: "replay.bulk-start",
                    target: id,
                    detail: reason,
                    council: council.as_deref(),
                    outcome: "started",
                    records: matching as i64,
                },
            )?;
            tx.commit()
        })
    }

    /// A bulk replay job.
    pub fn replay_job(&self, id: &str) -> Result<ReplayJob> {
        self.with(|db| db.query_opt(&format!("{JOB_SELECT} WHERE id = ?1"), p![id], job_row))?
            .ok_or_else(|| StoreError::NotFound(format!("no replay job {id}")))
    }

    /// Bulk replay jobs, newest first.
    pub fn replay_jobs(&self, limit: u32) -> Result<Vec<ReplayJob>> {
        self.with(|db| {
            db.query_map(
                &format!("{JOB_SELECT} ORDER BY created_at DESC LIMIT ?1"),
                p![limit],
                job_row,
            )
        })
    }

    /// Marks a job `done` or `interrupted` and audits the totals.
    pub fn finish_replay_job(&self, id: &str, status: &str) -> Result<ReplayJob> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            tx.execute(
                "UPDATE replay_jobs SET status = ?2, finished_at = CASE WHEN ?2 = 'done' THEN ?3 END WHERE id = ?1",
                p![id, status, now()],
            )?;
            let job = tx.query_row(&format!("{JOB_SELECT} WHERE id = ?1"), p![id], job_row)?;
            let filter: FailureFilter = serde_json::from_value(job.filter.clone()).unwrap_or_default();
            let council = filter.council.clone().or_else(|| {
                filter
                    .scope
                    .as_ref()
                    .filter(|s| s.len() == 1)
                    .map(|s| s[0].clone())
            });
            write_audit(
                &mut tx,
                &AuditEntry {
                    actor: &job.actor,
                    action: "replay.bulk",
                    target: id,
                    detail: &format!(
                        "{}; {} queued, {} still failing, {} refused",
                        job.reason, job.queued, job.still_failing, job.refused
                    ),
                    council: council.as_deref(),
                    outcome: status,
                    records: job.queued,
                },
            )?;
            tx.commit()?;
            Ok(job)
        })
    }

    /// Held batches of the councils in `scope`, newest first.
    pub fn held_batches(&self, scope: Option<&[String]>) -> Result<Vec<super::BatchRow>> {
        Ok(self
            .batches(None, 10_000)?
            .into_iter()
            .filter(|b| b.status == super::batch_status::HELD)
            .filter(|b| scope.is_none_or(|s| s.contains(&b.council)))
            .collect())
    }

    /// One batch, if its council is in `scope`.
    pub fn batch_in_scope(
        &self,
        id: &str,
        scope: Option<&[String]>,
    ) -> Result<Option<super::BatchRow>> {
        let row = self.with(|db| {
            db.query_opt(
                "SELECT id, council, feed, file_name, file_sha256, status, started_at, summary
                 FROM batches WHERE id = ?1",
                p![id],
                super::batch_row,
            )
        })?;
        Ok(row.filter(|b| scope.is_none_or(|s| s.contains(&b.council))))
    }
}
