//! Schema migrations for each engine, applied in order: on SQLite recorded in `user_version`,
//! on PostgreSQL in the `schema_migrations` table. Never edit a migration that has shipped: add
//! the next one (to both lists, when the change concerns both engines).

use super::db::{Db, DbResult, Engine, p};

const SQLITE: &[&str] = &[
    // 1: batches, outbox, failures, audit.
    "CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        file_name TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        mapping_id TEXT,
        mapping_version INTEGER,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        summary TEXT
    );
    CREATE INDEX batches_by_file ON batches (council, feed, file_sha256);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        batch_id TEXT REFERENCES batches (id),
        council TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        correlation_id TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbox_by_status ON outbox (status, id);
    CREATE INDEX outbox_by_batch ON outbox (batch_id, status);
    CREATE TABLE failures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT REFERENCES batches (id),
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        stage TEXT NOT NULL,
        file_name TEXT,
        line INTEGER,
        row INTEGER,
        raw_record TEXT,
        mapping_id TEXT,
        mapping_version INTEGER,
        errors TEXT NOT NULL,
        message_id TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE INDEX failures_by_council ON failures (council, status, id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 2: leases (one reader per feed, one publisher per store, across processes).
    "CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        purpose TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 3: what the daemon remembers per scheduled feed.
    "CREATE TABLE feed_schedule (
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        since TEXT NOT NULL,
        last_fire TEXT,
        alerted_for TEXT,
        PRIMARY KEY (council, feed)
    );",
    // 4 (delta mode, runs): the last accepted state of snapshot feeds, the state changes a
    // snapshot batch applies once accepted, and one row per run of a feed.
    "CREATE TABLE feed_state (
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        record_key TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        body TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (council, feed, record_key)
    ) WITHOUT ROWID;
    CREATE TABLE feed_state_head (
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        advanced_at TEXT NOT NULL,
        PRIMARY KEY (council, feed)
    );
    CREATE TABLE snapshot_batches (
        batch_id TEXT PRIMARY KEY REFERENCES batches (id),
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        base_batch_id TEXT
    );
    CREATE TABLE snapshot_changes (
        batch_id TEXT NOT NULL REFERENCES batches (id),
        record_key TEXT NOT NULL,
        action TEXT NOT NULL,
        content_hash TEXT,
        body TEXT,
        PRIMARY KEY (batch_id, record_key)
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX runs_by_feed ON runs (council, feed, started_at);",
    // 5: retention (a sent message keeps its id and content hash, not its payload).
    "ALTER TABLE outbox ADD COLUMN content_sha256 TEXT;
    ALTER TABLE outbox ADD COLUMN pruned_at TEXT;",
    // 6 (operators' console): API tokens (only the sha256 of the secret), the audit log's
    // council, outcome and record count, each failure's history, and resumable bulk replays.
    "CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        councils TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT,
        last_used_at TEXT
    );
    ALTER TABLE audit ADD COLUMN council TEXT;
    ALTER TABLE audit ADD COLUMN outcome TEXT;
    ALTER TABLE audit ADD COLUMN records INTEGER;
    CREATE INDEX audit_by_council ON audit (council, id);
    CREATE TABLE failure_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        failure_id INTEGER NOT NULL REFERENCES failures (id),
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX failure_events_by_failure ON failure_events (failure_id, id);
    CREATE INDEX failures_by_status ON failures (status, id);
    CREATE TABLE replay_jobs (
        id TEXT PRIMARY KEY,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        filter TEXT NOT NULL,
        status TEXT NOT NULL,
        last_id INTEGER NOT NULL DEFAULT 0,
        queued INTEGER NOT NULL DEFAULT 0,
        still_failing INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );",
    // 7 (throughput): a batch being read gates its rows by its own state, so finishing it
    // rewrites no row: a `pending` row of a `processing` batch is staged (never published).
    // Headers that a chunk's messages share are stored once (`header_sets`: those values, the
    // varying ones as null); the row keeps only its own (`outbox.header_set` names the set).
    "UPDATE outbox SET status = 'pending' WHERE status = 'staged';
    CREATE TABLE header_sets (
        id INTEGER PRIMARY KEY,
        headers TEXT NOT NULL UNIQUE
    );
    ALTER TABLE outbox ADD COLUMN header_set INTEGER;
    CREATE INDEX batches_processing ON batches (id) WHERE status = 'processing';",
    // 8 (batched publishing): records per CloudEvents batch message for a batch's records, when
    // its feed publishes batches (NULL: one message per record).
    "ALTER TABLE batches ADD COLUMN publish_batch_size INTEGER;",
    // 9 (several publishers): a pending row is claimed by the process publishing it until the
    // claim expires (epoch milliseconds), so publishers share the outbox without sending a row
    // twice; the index holds only claimed rows.
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claim_expires INTEGER;
    CREATE INDEX outbox_claimed ON outbox (claimed_by) WHERE claimed_by IS NOT NULL;",
    // 10 (resumable readings): the process reading a batch (`reader`, its lease holder id: the
    // fence a process that lost its feed checks before it writes) and the batch's last
    // committed chunk (`checkpoint`, JSON: items read, counts so far), which a process taking
    // the feed over resumes from.
    "ALTER TABLE batches ADD COLUMN reader TEXT;
    ALTER TABLE batches ADD COLUMN checkpoint TEXT;",
];

/// PostgreSQL's schema. Migration 1 is the schema SQLite reached at its migration 8, with
/// PostgreSQL's types: every integer is a BIGINT (the store binds 64-bit integers), JSON is
/// kept as text (as on SQLite) and cast to `jsonb` where a query looks inside it, payloads are
/// BYTEA, and `batches` and `runs` have a `seq` identity column that orders rows by insertion
/// (SQLite's `rowid`).
const POSTGRES: &[&str] = &[
    // 1: the whole schema of SQLite's migrations 1-8.
    "CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        file_name TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        mapping_id TEXT,
        mapping_version BIGINT,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        summary TEXT,
        publish_batch_size BIGINT,
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE
    );
    CREATE INDEX batches_by_file ON batches (council, feed, file_sha256);
    CREATE INDEX batches_processing ON batches (id) WHERE status = 'processing';
    CREATE TABLE header_sets (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        headers TEXT NOT NULL UNIQUE
    );
    CREATE TABLE outbox (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        batch_id TEXT REFERENCES batches (id),
        council TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BYTEA NOT NULL,
        correlation_id TEXT NOT NULL,
        timestamp BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        content_sha256 TEXT,
        pruned_at TEXT,
        header_set BIGINT
    );
    CREATE INDEX outbox_by_status ON outbox (status, id);
    CREATE INDEX outbox_by_batch ON outbox (batch_id, status);
    CREATE TABLE failures (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        batch_id TEXT REFERENCES batches (id),
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        stage TEXT NOT NULL,
        file_name TEXT,
        line BIGINT,
        row BIGINT,
        raw_record TEXT,
        mapping_id TEXT,
        mapping_version BIGINT,
        errors TEXT NOT NULL,
        message_id TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE INDEX failures_by_council ON failures (council, status, id);
    CREATE INDEX failures_by_status ON failures (status, id);
    CREATE TABLE audit (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        council TEXT,
        outcome TEXT,
        records BIGINT
    );
    CREATE INDEX audit_by_council ON audit (council, id);
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        purpose TEXT NOT NULL,
        pid BIGINT NOT NULL,
        host TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE feed_schedule (
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        since TEXT NOT NULL,
        last_fire TEXT,
        alerted_for TEXT,
        PRIMARY KEY (council, feed)
    );
    CREATE TABLE feed_state (
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        record_key TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        body TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (council, feed, record_key)
    );
    CREATE TABLE feed_state_head (
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        advanced_at TEXT NOT NULL,
        PRIMARY KEY (council, feed)
    );
    CREATE TABLE snapshot_batches (
        batch_id TEXT PRIMARY KEY REFERENCES batches (id),
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        base_batch_id TEXT
    );
    CREATE TABLE snapshot_changes (
        batch_id TEXT NOT NULL REFERENCES batches (id),
        record_key TEXT NOT NULL,
        action TEXT NOT NULL,
        content_hash TEXT,
        body TEXT,
        PRIMARY KEY (batch_id, record_key)
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        council TEXT NOT NULL,
        feed TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        report TEXT NOT NULL,
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE
    );
    CREATE INDEX runs_by_feed ON runs (council, feed, started_at);
    CREATE TABLE api_tokens (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        councils TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT,
        last_used_at TEXT
    );
    CREATE TABLE failure_events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        failure_id BIGINT NOT NULL REFERENCES failures (id),
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX failure_events_by_failure ON failure_events (failure_id, id);
    CREATE TABLE replay_jobs (
        id TEXT PRIMARY KEY,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        filter TEXT NOT NULL,
        status TEXT NOT NULL,
        last_id BIGINT NOT NULL DEFAULT 0,
        queued BIGINT NOT NULL DEFAULT 0,
        still_failing BIGINT NOT NULL DEFAULT 0,
        refused BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );",
    // 2 (several publishers): SQLite's migration 9, outbox claims.
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claim_expires BIGINT;
    CREATE INDEX outbox_claimed ON outbox (claimed_by) WHERE claimed_by IS NOT NULL;",
    // 3 (resumable readings): SQLite's migration 10.
    "ALTER TABLE batches ADD COLUMN reader TEXT;
    ALTER TABLE batches ADD COLUMN checkpoint TEXT;",
];

/// The migrations of `engine`, numbered from 1.
pub fn migrations(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Sqlite => SQLITE,
        Engine::Postgres => POSTGRES,
    }
}

/// The number of migrations a database has had.
pub fn version(db: &mut Db) -> DbResult<usize> {
    Ok(match db.engine() {
        Engine::Sqlite => db.query_value::<i64>("PRAGMA user_version", p![])? as usize,
        Engine::Postgres => {
            if !db
                .query_value::<bool>("SELECT to_regclass('schema_migrations') IS NOT NULL", p![])?
            {
                return Ok(0);
            }
            db.query_value::<i64>(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                p![],
            )? as usize
        }
    })
}

/// Applies the migrations the database has not had yet, each in its own transaction; returns
/// the numbers applied. Each transaction takes the write lock first and reads the version
/// inside it, so processes that open a new store at the same moment apply each migration once
/// (the others wait, then see it).
pub fn run(db: &mut Db) -> DbResult<Vec<usize>> {
    let last = migrations(db.engine()).len();
    run_to(db, last)
}

/// Applies the migrations up to `last` (numbered from 1): a store as an older release left it.
pub fn run_to(db: &mut Db, last: usize) -> DbResult<Vec<usize>> {
    let engine = db.engine();
    if engine == Engine::Postgres {
        // Under the writer lock: two processes opening a new database at once would otherwise
        // race on the table's creation (PostgreSQL refuses the second `CREATE … IF NOT EXISTS`).
        let mut tx = db.transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        tx.commit()?;
    }
    let mut applied = Vec::new();
    for (i, sql) in migrations(engine).iter().enumerate().take(last) {
        let mut tx = db.transaction()?;
        if version(&mut tx)? > i {
            continue;
        }
        tx.execute_batch(sql)?;
        match engine {
            Engine::Sqlite => tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?,
            Engine::Postgres => {
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    p![(i + 1) as i64, super::now()],
                )?;
            }
        }
        tx.commit()?;
        applied.push(i + 1);
    }
    Ok(applied)
}
