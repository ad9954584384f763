//! Human and JSON renderings of results. Personal data is masked here by the schemas'
//! `x-pii` classification, through the mapping's column binding.

use serde_json::{Value, json};

use crate::canonical::Registry;
use crate::config::Config;
use crate::pii;
use crate::pipeline::{FeedReport, FileReport, FlushReport, PullReport, ReplayOutcome};
use crate::store::{BatchRow, FailureRow, OutboxCounts, RunRow};

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(super) fn run(
    as_json: bool,
    pulls: &[PullReport],
    reports: &[FeedReport],
    flush: Option<&FlushReport>,
    counts: &OutboxCounts,
    broker: bool,
) {
    if as_json {
        print_json(&json!({ "pulls": pulls, "feeds": reports, "flush": flush, "outbox": counts }));
        return;
    }
    for p in pulls {
        match (&p.error, &p.note) {
            (Some(e), _) => println!("{} / {}  PULL FAILED: {e}", p.council, p.feed),
            (None, Some(n)) => println!("{} / {}  {n}", p.council, p.feed),
            (None, None) => println!(
                "{} / {}  pulled {} page(s) from the API",
                p.council, p.feed, p.pages
            ),
        }
    }
    for r in reports {
        println!("{} / {}", r.council, r.feed);
        if let Some(e) = &r.error {
            println!("  FAILED: {e}");
        }
        if let Some(b) = &r.busy {
            println!("  {b}");
        }
        if r.files.is_empty() && r.error.is_none() && r.busy.is_none() {
            println!("  no files waiting");
        }
        for f in &r.files {
            file_lines(f);
        }
    }
    if let Some(f) = flush {
        self::flush(false, f);
    }
    outbox(false, counts, broker);
}

pub(super) fn outbox(as_json: bool, c: &OutboxCounts, broker: bool) {
    if as_json {
        print_json(c);
        return;
    }
    println!(
        "outbox: {} pending, {} held, {} sent, {} failed{}",
        c.pending,
        c.held,
        c.sent,
        c.failed,
        if c.staged > 0 {
            format!(
                ", {} staged (in batches being read now, or left by a reading that stopped: the next run reads that file again)",
                c.staged
            )
        } else {
            String::new()
        }
    );
    if c.pending > 0 {
        if broker {
            println!(
                "{} wait{} in the outbox; `council-bridge outbox flush` delivers them when the broker is reachable",
                plural(c.pending, "message"),
                if c.pending == 1 { "s" } else { "" }
            );
        } else {
            println!(
                "{} wait{} in the outbox: no broker is configured (set AMQP_URL, then run `council-bridge outbox flush`)",
                plural(c.pending, "message"),
                if c.pending == 1 { "s" } else { "" }
            );
        }
    }
}

pub(super) fn flush(as_json: bool, f: &FlushReport) {
    if as_json {
        print_json(f);
        return;
    }
    println!(
        "published {} (broker confirmed); {} still pending",
        plural(f.published, "message"),
        f.still_pending
    );
    if f.unroutable > 0 {
        println!(
            "{} unroutable and kept as failures",
            if f.unroutable == 1 {
                "1 message was".to_string()
            } else {
                format!("{} messages were", f.unroutable)
            }
        );
    }
    match (&f.error, &f.published_by) {
        (Some(e), Some(_)) => println!("not published here: {e}"),
        (Some(e), None) => println!("broker problem: {e}"),
        (None, Some(by)) => println!("another process published the outbox meanwhile: {by}"),
        (None, None) => {}
    }
}

fn errors_summary(errors: &Value) -> String {
    errors
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["field"].as_str().unwrap_or("?"),
                        e["rule"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub(super) fn failures(as_json: bool, rows: &[FailureRow]) {
    if as_json {
        let masked: Vec<Value> = rows
            .iter()
            .map(|f| json!({"id": f.id, "council": f.council, "feed": f.feed, "stage": f.stage, "file": f.file_name,
                "line": f.line, "row": f.row, "errors": errors_summary(&f.errors), "message_id": f.message_id, "status": f.status, "created_at": f.created_at}))
            .collect();
        print_json(&masked);
        return;
    }
    if rows.is_empty() {
        println!("no failures");
        return;
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|f| {
            vec![
                f.id.to_string(),
                f.council.clone(),
                f.feed.clone(),
                f.stage.clone(),
                f.file_name.clone().unwrap_or_else(|| "-".into()),
                f.line.map(|l| l.to_string()).unwrap_or_default(),
                format!(
                    "{}{}",
                    errors_summary(&f.errors),
                    if f.status != "open" {
                        format!(" [{}]", f.status)
                    } else {
                        String::new()
                    }
                ),
            ]
        })
        .collect();
    table(
        &["ID", "COUNCIL", "FEED", "STAGE", "FILE", "LINE", "PROBLEM"],
        &rows,
    );
}

/// Which raw columns may be shown: only those that feed non-personal canonical fields of the
/// feed's current mapping. Anything else (personal, unmapped, or no mapping) is masked.
fn public_columns(
    f: &FailureRow,
    config: &Config,
    registry: &Registry,
    header: &crate::formats::Header,
) -> Vec<bool> {
    let mapping = config
        .council(&f.council)
        .and_then(|c| c.feeds.iter().find(|feed| feed.id == f.feed))
        .and_then(|feed| crate::mapping::load(&feed.mapping, registry).ok());
    let binding = mapping.and_then(|m| m.bind_for(header).ok());
    (0..header.names().len())
        .map(|i| binding.as_ref().is_some_and(|b| b.is_public_column(i)))
        .collect()
}

pub(super) fn failure(as_json: bool, f: &FailureRow, config: &Config, registry: &Registry) {
    let record = f.raw_record.as_ref().and_then(|raw| {
        crate::formats::SourceRecord::from_raw_json_for_display(
            crate::formats::Locator {
                file: String::new(),
                line: 0,
                row: 0,
            },
            raw,
        )
    });
    let mut columns = Vec::new();
    let mut public_names = Vec::new();
    if let Some(rec) = &record {
        let public = public_columns(f, config, registry, &rec.header);
        for (i, name) in rec.header.names().iter().enumerate() {
            let value = rec.values.get(i).map(String::as_str).unwrap_or("");
            let shown = if public[i] {
                value.to_string()
            } else {
                pii::mask(value)
            };
            if public[i] {
                public_names.push(name.clone());
            }
            columns.push((name.clone(), shown));
        }
    }
    let errors: Vec<Value> = f
        .errors
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            let column_public = e["column"]
                .as_str()
                .is_some_and(|c| public_names.iter().any(|p| p == c));
            if let Some(v) = e.get("value").and_then(Value::as_str).map(str::to_owned) {
                e["value"] = Value::String(if column_public { v } else { pii::mask(&v) });
            }
            e
        })
        .collect();
    if as_json {
        print_json(&json!({
            "id": f.id, "council": f.council, "feed": f.feed, "stage": f.stage, "batch_id": f.batch_id,
            "file": f.file_name, "line": f.line, "row": f.row, "mapping": {"id": f.mapping_id, "version": f.mapping_version},
            "errors": errors, "raw_record": columns.iter().map(|(k, v)| json!({"column": k, "value": v})).collect::<Vec<_>>(),
            "message_id": f.message_id, "status": f.status, "created_at": f.created_at,
        }));
        return;
    }
    println!("failure {} [{}]", f.id, f.status);
    println!("  council/feed: {} / {}", f.council, f.feed);
    println!("  stage:        {}", f.stage);
    println!(
        "  where:        {}, line {}, row {}",
        f.file_name.as_deref().unwrap_or("-"),
        f.line.unwrap_or(0),
        f.row.unwrap_or(0)
    );
    println!(
        "  mapping:      {} v{}",
        f.mapping_id.as_deref().unwrap_or("-"),
        f.mapping_version.unwrap_or(0)
    );
    println!("  batch:        {}", f.batch_id.as_deref().unwrap_or("-"));
    if let Some(m) = &f.message_id {
        println!("  message:      {m}");
    }
    println!("  problems:");
    for e in &errors {
        let column = e["column"]
            .as_str()
            .map(|c| format!(" (column \"{c}\")"))
            .unwrap_or_default();
        let value = e
            .get("value")
            .and_then(Value::as_str)
            .map(|v| format!(" — value: {v}"))
            .unwrap_or_default();
        println!(
            "    field `{}`{column}: {} [{}]{value}",
            e["field"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or(""),
            e["rule"].as_str().unwrap_or("")
        );
    }
    if !columns.is_empty() {
        println!("  raw record (personal data masked):");
        for (k, v) in &columns {
            println!("    {k}: {v}");
        }
    }
}

pub(super) fn replays(
    as_json: bool,
    outcomes: &[(i64, Result<ReplayOutcome, String>)],
    flush: Option<&FlushReport>,
) {
    if as_json {
        let list: Vec<Value> = outcomes
            .iter()
            .map(|(id, o)| match o {
                Ok(o) => json!({"id": id, "outcome": o}),
                Err(e) => json!({"id": id, "error": e}),
            })
            .collect();
        print_json(&json!({"replays": list, "flush": flush}));
        return;
    }
    for (id, o) in outcomes {
        match o {
            Ok(ReplayOutcome::Queued { message_id }) => {
                println!("failure {id}: replayed, message {message_id} queued")
            }
            Ok(ReplayOutcome::StillFailing { errors }) => println!(
                "failure {id}: still fails with the current mapping: {}",
                errors_summary(errors)
            ),
            Err(e) => println!("failure {id}: not replayed: {e}"),
        }
    }
    if let Some(f) = flush {
        self::flush(false, f);
    }
}

pub(super) fn batches(as_json: bool, rows: &[BatchRow]) {
    if as_json {
        print_json(&rows);
        return;
    }
    if rows.is_empty() {
        println!("no batches");
        return;
    }
    let count = |b: &BatchRow, k: &str| {
        b.summary
            .as_ref()
            .and_then(|s| s.get("counts"))
            .and_then(|c| c.get(k))
            .and_then(Value::as_u64)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.status.clone(),
                format!("{}/{}", b.council, b.feed),
                b.file_name.clone(),
                b.started_at
                    .get(..19)
                    .unwrap_or(&b.started_at)
                    .replace('T', " "),
                count(b, "read"),
                count(b, "valid"),
                count(b, "rejected"),
                count(b, "new_messages"),
            ]
        })
        .collect();
    let header = [
        "ID",
        "STATUS",
        "FEED",
        "FILE",
        "STARTED (UTC)",
        "READ",
        "VALID",
        "REJECTED",
        "NEW",
    ];
    let widths = column_widths(&header, &cells);
    println!("{}", padded(header.iter().copied(), &widths));
    for (b, row) in rows.iter().zip(&cells) {
        println!("{}", padded(row.iter().map(String::as_str), &widths));
        // Held reasons are long: they go under their batch, outside the columns.
        for reason in b
            .summary
            .as_ref()
            .and_then(|s| s.get("held_reasons"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let label = if b.status == "held" {
                "held"
            } else {
                "was held"
            };
            println!("    {label}: {reason}");
        }
    }
}

/// One file's report, as `run` and `runs show` print it.
fn file_lines(f: &FileReport) {
    match f.status.as_str() {
        "skipped" => println!(
            "  {}  skipped: {}",
            f.file,
            f.reason.as_deref().unwrap_or("")
        ),
        "abandoned" => println!(
            "  {}  abandoned, will be read again: {}",
            f.file,
            f.reason.as_deref().unwrap_or("")
        ),
        "failed" => println!(
            "  {}  FAILED: {}",
            f.file,
            f.reason.as_deref().unwrap_or("")
        ),
        status => {
            println!(
                "  {}  {status}: read {}, valid {}, rejected {}, new messages {}{}",
                f.file,
                f.read,
                f.valid,
                f.rejected,
                f.new_messages,
                if f.resent > 0 {
                    format!(
                        " ({} already in the outbox; --force: {} already delivered go out again under their same ids)",
                        f.already_known,
                        plural(f.resent, "message")
                    )
                } else if f.already_known > 0 {
                    format!(" ({} already in the outbox)", f.already_known)
                } else {
                    String::new()
                }
            );
            if let Some(items) = f.resumed_after {
                println!(
                    "      continued the unfinished reading of batch {} after its last committed chunk ({} items of the file; those were not written again)",
                    f.batch_id.as_deref().unwrap_or("?"),
                    items
                );
            }
            if let Some(d) = &f.delivery {
                println!(
                    "      messages (with the batch manifest): {} published, {} waiting, {} held",
                    d.sent, d.pending, d.held
                );
            }
            if let Some(d) = &f.delta {
                println!(
                    "      delta{}: created {}, updated {}, deleted {}, unchanged {}; starters {}, leavers {}",
                    if d.baseline { " (first snapshot)" } else { "" },
                    d.created,
                    d.updated,
                    d.deleted,
                    d.unchanged,
                    d.starters,
                    d.leavers
                );
                if d.leavers_without_date > 0 {
                    println!(
                        "      {} employment(s) gone without an end date: no leaver event (no leaving date to give)",
                        d.leavers_without_date
                    );
                }
                if d.deletions_deferred > 0 {
                    println!(
                        "      {} record(s) absent from the snapshot not deleted: rows were rejected and may be among them",
                        d.deletions_deferred
                    );
                }
            }
            if !f.rejected_by_reason.is_empty() {
                let reasons: Vec<String> = f
                    .rejected_by_reason
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect();
                println!("      rejected: {}", reasons.join(", "));
            }
            if let Some(c) = &f.control
                && c.get("matches") == Some(&Value::Bool(true))
            {
                println!("      control: the trailer agrees with what was read");
            }
            if !f.money_totals.is_empty() {
                let totals: Vec<String> = f
                    .money_totals
                    .iter()
                    .map(|(k, p)| format!("{k} {p}"))
                    .collect();
                println!("      money totals (pence): {}", totals.join(", "));
            }
            for d in &f.duplicate_keys {
                let lines: Vec<String> = d.lines.iter().map(u64::to_string).collect();
                println!(
                    "      duplicate key {} on lines {} ({})",
                    d.key,
                    lines.join(", "),
                    if d.same_content {
                        "identical records"
                    } else {
                        "different content: a consumer keeps only the last"
                    }
                );
            }
            if let Some(reason) = &f.reason {
                println!("      CONTROL MISMATCH: {reason}");
            }
            for change in &f.drift {
                println!("      drift: {change}");
            }
            for reason in &f.held_reasons {
                println!("      HELD: {reason}");
            }
            if status == "held" {
                println!(
                    "      nothing from this file is published until `council-bridge batches release {id} --reason ...` (or `batches discard {id} --reason ...`)",
                    id = f.batch_id.as_deref().unwrap_or("")
                );
            }
        }
    }
    if let Some(to) = &f.moved_to {
        println!("      moved to {to}");
    }
}

pub(super) fn runs(as_json: bool, rows: &[RunRow]) {
    if as_json {
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({"id": r.id, "council": r.council, "feed": r.feed, "trigger": r.trigger,
                    "started_at": r.started_at, "finished_at": r.finished_at, "outcome": r.outcome,
                    "files": r.report["files"].as_array().map(|f| f.len()).unwrap_or(0)})
            })
            .collect();
        print_json(&list);
        return;
    }
    if rows.is_empty() {
        println!("no runs");
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.started_at
                    .get(..19)
                    .unwrap_or(&r.started_at)
                    .replace('T', " "),
                format!("{}/{}", r.council, r.feed),
                r.trigger.clone(),
                r.outcome.clone(),
                r.report["files"]
                    .as_array()
                    .map(|f| f.len())
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "STARTED (UTC)", "FEED", "TRIGGER", "OUTCOME", "FILES"],
        &cells,
    );
}

pub(super) fn run_report(as_json: bool, r: &RunRow) {
    if as_json {
        print_json(r);
        return;
    }
    println!("run {} [{}]", r.id, r.outcome);
    println!("  council/feed: {} / {}", r.council, r.feed);
    println!("  trigger:      {}", r.trigger);
    println!("  started:      {}", r.started_at);
    println!("  finished:     {}", r.finished_at);
    let report: Option<FeedReport> = serde_json::from_value(r.report.clone()).ok();
    match report {
        Some(feed) => {
            if let Some(e) = &feed.error {
                println!("  FAILED: {e}");
            }
            if feed.files.is_empty() && feed.error.is_none() {
                println!("  no files waiting");
            }
            for f in &feed.files {
                if let Some(b) = &f.batch_id {
                    println!("  batch {b}");
                }
                file_lines(f);
            }
        }
        None => println!("  report: {}", r.report),
    }
}

pub(super) fn status(
    as_json: bool,
    feeds: &[crate::daemon::status::FeedStatus],
    counts: &OutboxCounts,
    leases: &[crate::store::lease::Holder],
) {
    if as_json {
        print_json(&json!({ "feeds": feeds, "outbox": counts, "leases": leases }));
        return;
    }
    let late = feeds.iter().filter(|f| f.late_since.is_some()).count();
    let held: u64 = feeds.iter().map(|f| f.held).sum();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for f in feeds {
        let mut note = Vec::new();
        if let Some(since) = &f.late_since {
            note.push(format!(
                "LATE: nothing by {} (deadline {since})",
                f.expected_by.as_deref().unwrap_or("?")
            ));
        }
        if f.held > 0 {
            note.push(format!("{} held batch(es): see `batches list`", f.held));
        }
        if let Some(r) = &f.running {
            note.push(format!("being read by {r}"));
        }
        rows.push(vec![
            format!("{}/{}", f.council, f.feed),
            f.mode.clone(),
            f.next_run_london.clone().unwrap_or_else(|| "-".into()),
            f.last_arrival
                .as_deref()
                .map(|t| t.get(..19).unwrap_or(t).replace('T', " "))
                .unwrap_or_else(|| "never".into()),
            f.last_status.clone().unwrap_or_else(|| "-".into()),
            note.join("; "),
        ]);
    }
    table(
        &[
            "FEED",
            "MODE",
            "NEXT RUN (LONDON)",
            "LAST ARRIVAL",
            "LAST",
            "NOTE",
        ],
        &rows,
    );
    println!(
        "outbox: {} pending, {} held, {} sent, {} failed, {} staged (batches being read)",
        counts.pending, counts.held, counts.sent, counts.failed, counts.staged
    );
    for l in leases {
        println!("lease {}: held by {l}", l.name);
    }
    if late > 0 || held > 0 {
        println!("attention: {late} late feed(s), {held} held batch(es)");
    }
}

pub(super) fn dry_run(as_json: bool, d: &crate::pipeline::DryRun) {
    if as_json {
        print_json(d);
        return;
    }
    println!(
        "dry run (nothing changed): {} matching; {} would be queued, {} still fail with the current mapping, {} cannot be replayed",
        d.matching, d.would_queue, d.still_failing, d.refused
    );
    for r in &d.records {
        let extra = r
            .get("message_id")
            .and_then(Value::as_str)
            .map(|m| format!(" message {m}"))
            .or_else(|| r.get("errors").map(|e| format!(": {}", errors_summary(e))))
            .or_else(|| {
                r.get("reason")
                    .and_then(Value::as_str)
                    .map(|x| format!(": {x}"))
            })
            .unwrap_or_default();
        println!(
            "  failure {}: {}{extra}",
            r["id"],
            r["outcome"].as_str().unwrap_or("?")
        );
    }
}

pub(super) fn replay_job(
    as_json: bool,
    job: &crate::store::ReplayJob,
    flush: Option<&FlushReport>,
) {
    if as_json {
        print_json(&json!({"job": job, "flush": flush}));
        return;
    }
    println!(
        "replay job {} {}: {} queued, {} still failing, {} cannot be replayed (audited)",
        job.id, job.status, job.queued, job.still_failing, job.refused
    );
    if job.status == "interrupted" {
        println!(
            "resume it with `council-bridge failures replay --resume {}`",
            job.id
        );
    }
    if let Some(f) = flush {
        self::flush(false, f);
    }
}

pub(super) fn tokens(as_json: bool, rows: &[crate::store::TokenRow]) {
    if as_json {
        print_json(&rows);
        return;
    }
    for t in rows {
        println!(
            "{:>4}  {:<24} {:<9} {:<30} created {} by {}{}",
            t.id,
            t.name,
            t.role,
            t.councils
                .as_ref()
                .map_or_else(|| "*".to_string(), |c| c.join(",")),
            t.created_at,
            t.created_by,
            t.revoked_at
                .as_ref()
                .map(|r| format!(", REVOKED {r}"))
                .unwrap_or_default()
        );
    }
}

pub(super) fn audit(as_json: bool, rows: &[Value]) {
    if as_json {
        print_json(&rows);
        return;
    }
    for r in rows {
        println!(
            "{}  {:<28} {:<22} {:<38} {:<12} {} ({} record(s)): {}",
            r["at"].as_str().unwrap_or(""),
            r["actor"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or(""),
            r["council"].as_str().unwrap_or("-"),
            r["outcome"].as_str().unwrap_or("-"),
            r["records"].as_i64().unwrap_or(0),
            r["detail"].as_str().unwrap_or("")
        );
    }
}

/// "1 message", "2 messages".
pub(super) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Each column's width: its widest cell or header.
fn column_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// One table line, cells padded to their column's width, no trailing spaces.
fn padded<'a>(cells: impl Iterator<Item = &'a str>, widths: &[usize]) -> String {
    let cells: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
    cells.join("  ").trim_end().to_string()
}

/// Prints rows under a header, each column as wide as its widest cell.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let widths = column_widths(header, rows);
    println!("{}", padded(header.iter().copied(), &widths));
    for r in rows {
        println!("{}", padded(r.iter().map(String::as_str), &widths));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_message_is_not_one_messages() {
        assert_eq!(super::plural(1, "message"), "1 message");
        assert_eq!(super::plural(0, "message"), "0 messages");
        assert_eq!(super::plural(222, "message"), "222 messages");
    }
}
