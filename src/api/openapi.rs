//! The OpenAPI 3.1 document of `/api/v1`, written by hand beside the routes it describes
//! (`tests/console.rs` checks that every route is in it and every path in it answers).

use serde_json::{Value, json};

fn op(summary: &str, params: &[&str], body: Option<&str>, ok: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params.iter().map(|p| json!({"$ref": format!("#/components/parameters/{p}")})).collect::<Vec<_>>(),
        "responses": {
            "200": {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "404": {"$ref": "#/components/responses/NotFound"},
        },
    });
    if let Some(b) = body {
        o["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        o["responses"]["403"] = json!({"$ref": "#/components/responses/Forbidden"});
        o["responses"]["409"] =
            json!({"description": "refused (already resolved, snapshot feed, not held...)"});
    }
    o
}

/// The document.
pub fn document() -> Value {
    let filters = [
        "council", "feed", "entity", "kind", "rule", "field", "since", "until", "text", "status",
        "after", "limit",
    ];
    let string = |d: &str| json!({"type": "string", "description": d});
    let mut parameters = serde_json::Map::new();
    for (name, desc, kind) in [
        ("council", "council id", "string"),
        ("feed", "feed id", "string"),
        (
            "entity",
            "canonical entity, e.g. payroll.pay_result",
            "string",
        ),
        (
            "kind",
            "decode | mapping | validation | unroutable | refused | dead-lettered",
            "string",
        ),
        (
            "rule",
            "rule of one of the errors (required, format, ...)",
            "string",
        ),
        ("field", "canonical field of one of the errors", "string"),
        ("since", "created at or after (RFC 3339)", "string"),
        ("until", "created before (RFC 3339)", "string"),
        (
            "text",
            "text in the file name or an error message (never in record values)",
            "string",
        ),
        (
            "status",
            "open (default) | replayed | discarded | all",
            "string",
        ),
        (
            "after",
            "page after this failure id (next_after of the previous page)",
            "integer",
        ),
        ("limit", "page size (1-500, default 100)", "integer"),
    ] {
        parameters.insert(
            name.into(),
            json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": kind}}),
        );
    }
    parameters.insert(
        "id".into(),
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}),
    );
    parameters.insert("reveal".into(), json!({"name": "reveal", "in": "query", "required": false, "description": "operator: show personal data (audited)", "schema": {"type": "boolean"}}));
    parameters.insert("action".into(), json!({"name": "action", "in": "query", "required": false, "description": "action prefix, e.g. failure.", "schema": {"type": "string"}}));
    parameters.insert("before".into(), json!({"name": "before", "in": "query", "required": false, "description": "entries older than this id", "schema": {"type": "integer"}}));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "council-bridge operators' API",
            "version": "1",
            "description": "Failed records, replays, held batches, feed and outbox status, and the audit log. Every endpoint needs `Authorization: Bearer <token>` (`council-bridge tokens create`). A token scoped to some councils gets 404 for anything of another council, exactly as for something that does not exist.",
        },
        "paths": {
            "/api/v1/failures": {"get": op("Failures matching the filters, a page at a time, with the total and counts by reason", &filters, None, "{items: [{id, council, feed, kind, status, errors, ...}], total, reasons, next_after}")},
            "/api/v1/failures/{id}": {"get": op("One failure: source values (personal data masked unless revealed), errors, history", &["id", "reveal"], None, "the failure")},
            "/api/v1/failures/{id}/replay": {"post": op("Replay one failure (re-map with the current mapping, or re-queue the stored message); dry_run reports what would happen", &["id"], Some("Action"), "{id, outcome} or {dry_run, records}")},
            "/api/v1/failures/{id}/discard": {"post": op("Discard one failure with a reason", &["id"], Some("Action"), "{id, status}")},
            "/api/v1/replays": {"post": op("Bulk replay of the failures matching the filters (or ids): dry_run reports per record; otherwise a resumable job starts (202)", &[], Some("BulkReplay"), "{dry_run, result} or {job, matching, status}")},
            "/api/v1/replays/{id}": {"get": op("A bulk replay job's progress", &["id"], None, "the job")},
            "/api/v1/replays/{id}/resume": {"post": op("Resume an interrupted bulk replay job", &["id"], Some("Action"), "{job, status}")},
            "/api/v1/batches/held": {"get": op("Held batches with their drift or control report", &[], None, "{items}")},
            "/api/v1/batches/{id}/release": {"post": op("Release a held batch", &["id"], Some("Action"), "{batch, status, messages}")},
            "/api/v1/batches/{id}/discard": {"post": op("Discard a held batch", &["id"], Some("Action"), "{batch, status, messages_dropped}")},
            "/api/v1/feeds": {"get": op("Each feed's schedule, last arrival and outcome, held batches, lateness", &[], None, "{items}")},
            "/api/v1/outbox": {"get": op("Outbox counts by state", &[], None, "{pending, held, sent, failed, staged}")},
            "/api/v1/audit": {"get": op("The audit log, newest first", &["action", "before", "limit"], None, "{items: [{at, actor, action, target, detail, council, outcome, records}]}")},
            "/api/v1/openapi.json": {"get": op("This document", &[], None, "OpenAPI 3.1")},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": parameters,
            "responses": {
                "Unauthorized": {"description": "no valid token"},
                "NotFound": {"description": "no such thing in this token's councils"},
                "Forbidden": {"description": "the token's role (viewer) may not do this"},
            },
            "schemas": {
                "Action": {"type": "object", "properties": {"reason": string("why (kept in the audit log)"), "dry_run": {"type": "boolean"}}},
                "BulkReplay": {"type": "object", "properties": {
                    "council": string("council"), "feed": string("feed"), "entity": string("entity"), "kind": string("kind"),
                    "rule": string("rule"), "field": string("field"), "since": string("RFC 3339"), "until": string("RFC 3339"),
                    "text": string("text"), "ids": {"type": "array", "items": {"type": "integer"}},
                    "reason": string("why (kept in the audit log)"), "dry_run": {"type": "boolean"},
                    "detail": {"type": "integer", "description": "per-record lines in a dry run (default 100)"},
                }},
            },
        },
    })
}
