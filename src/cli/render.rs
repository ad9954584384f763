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
        "outbox: {} pending, {} held, {} sent, {} failed",
        c.pending, c.held, c.sent, c.failed
    );
    if c.pending > 0 {
        if broker {
            println!(
                "{} messages wait in the outbox; `council-bridge outbox flush` delivers them when the broker is reachable",
                c.pending
            );
        } else {
            println!(
                "{} messages wait in the outbox: no broker is configured (set AMQP_URL, then run `council-bridge outbox flush`)",
                c.pending
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
        "published {} messages (broker confirmed); {} still pending",
        f.published, f.still_pending
    );
    if f.unroutable > 0 {
        println!(
            "{} messages were unroutable and are kept as failures",
            f.unroutable
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
    println!(
        "{:>5}  {:<12} {:<18} {:<10} {:<34} {:>6}  problem",
        "id", "council", "feed", "stage", "file", "line"
    );
    for f in rows {
        println!(
            "{:>5}  {:<12} {:<18} {:<10} {:<34} {:>6}  {}{}",
            f.id,
            f.council,
            f.feed,
            f.stage,
            f.file_name.as_deref().unwrap_or("-"),
            f.line.map(|l| l.to_string()).unwrap_or_default(),
            errors_summary(&f.errors),
            if f.status != "open" {
                format!(" [{}]", f.status)
            } else {
                String::new()
            }
        );
    }
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
        crate::formats::SourceRecord::from_raw_json(
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
    for b in rows {
        let counts = b
            .summary
            .as_ref()
            .and_then(|s| s.get("counts"))
            .map(|c| c.to_string())
            .unwrap_or_default();
        println!(
            "{}  {:<10} {} / {}  {}  {}  {counts}",
            b.id, b.status, b.council, b.feed, b.file_name, b.started_at
        );
        let reasons = b
            .summary
            .as_ref()
            .and_then(|s| s.get("held_reasons"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for reason in reasons.iter().filter_map(Value::as_str) {
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
                if f.already_known > 0 {
                    format!(" ({} already in the outbox)", f.already_known)
                } else {
                    String::new()
                }
            );
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
    println!(
        "{:<36}  {:<24} {:<12} {:<18} {:<8} {:<7} {:>5}",
        "id", "started", "council", "feed", "trigger", "outcome", "files"
    );
    for r in rows {
        println!(
            "{:<36}  {:<24} {:<12} {:<18} {:<8} {:<7} {:>5}",
            r.id,
            r.started_at,
            r.council,
            r.feed,
            r.trigger,
            r.outcome,
            r.report["files"].as_array().map(|f| f.len()).unwrap_or(0)
        );
    }
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
    println!(
        "{:<28} {:<28} {:<22} {:<24} {:<10} {}",
        "FEED", "MODE", "NEXT RUN (LONDON)", "LAST ARRIVAL", "LAST", "NOTE"
    );
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
        println!(
            "{:<28} {:<28} {:<22} {:<24} {:<10} {}",
            format!("{}/{}", f.council, f.feed),
            f.mode,
            f.next_run_london.as_deref().unwrap_or("-"),
            f.last_arrival
                .as_deref()
                .map(|t| t.get(..19).unwrap_or(t).replace('T', " "))
                .unwrap_or_else(|| "never".into()),
            f.last_status.as_deref().unwrap_or("-"),
            note.join("; ")
        );
    }
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
