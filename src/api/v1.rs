//! `/api/v1`: failures (list with filters and paging, show, replay, discard), bulk replay jobs
//! (dry run, start, progress, resume), held batches (list, release, discard), feed and outbox
//! status, and the audit log. Every endpoint needs a token; every answer is cut to the token's
//! councils, and anything of another council is answered exactly like something that does not
//! exist (404).

// Handlers answer errors as ready-made HTTP responses (axum's idiom); boxing them buys nothing.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{ApiCaller, Caller};
use crate::store::{AuditEntry, FailureFilter, FailureRow, StoreError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/failures", get(list_failures))
        .route("/api/v1/failures/{id}", get(show_failure))
        .route("/api/v1/failures/{id}/replay", post(replay_failure))
        .route("/api/v1/failures/{id}/discard", post(discard_failure))
        .route("/api/v1/replays", post(bulk_replay))
        .route("/api/v1/replays/{id}", get(show_job))
        .route("/api/v1/replays/{id}/resume", post(resume_job))
        .route("/api/v1/batches/held", get(held_batches))
        .route("/api/v1/batches/{id}/release", post(release_batch))
        .route("/api/v1/batches/{id}/discard", post(discard_batch))
        .route("/api/v1/feeds", get(feeds))
        .route("/api/v1/outbox", get(outbox))
        .route("/api/v1/audit", get(audit))
}

pub(super) fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, axum::Json(json!({"error": message.into()}))).into_response()
}

pub(super) fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no {what}"))
}

fn forbidden() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "this token's role is viewer: replay, discard, release and reveal need an operator token",
    )
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        StoreError::Refused(m) => error(StatusCode::CONFLICT, m),
        other => {
            tracing::error!(error = %other, "store error in the API");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store cannot be read; see the server log",
            )
        }
    }
}

/// Runs store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")))
}

/// The filters of `GET /api/v1/failures` (and of a bulk replay).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(super) struct Filters {
    pub council: Option<String>,
    pub feed: Option<String>,
    pub entity: Option<String>,
    pub kind: Option<String>,
    pub rule: Option<String>,
    pub field: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub text: Option<String>,
    pub status: Option<String>,
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

impl Filters {
    pub(super) fn filter(&self, caller: &Caller, state: &ApiState) -> FailureFilter {
        let blank = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let mut f = FailureFilter {
            scope: caller.scope().map(<[String]>::to_vec),
            council: blank(&self.council),
            feed: blank(&self.feed),
            entity: blank(&self.entity),
            entity_feeds: None,
            kind: blank(&self.kind),
            rule: blank(&self.rule),
            field: blank(&self.field),
            since: blank(&self.since),
            until: blank(&self.until),
            text: blank(&self.text),
            status: blank(&self.status),
            ids: None,
        };
        state.operator.resolve(&mut f);
        f
    }
}

/// A failure in a list: where, what kind, which rules and fields; no record values.
pub(super) fn list_item(f: &FailureRow) -> Value {
    let errors: Vec<Value> = f
        .errors
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            json!({"field": e.get("field"), "column": e.get("column"), "rule": e.get("rule"), "message": e.get("message")})
        })
        .collect();
    json!({
        "id": f.id, "council": f.council, "feed": f.feed, "kind": f.stage, "status": f.status,
        "file": f.file_name, "line": f.line, "row": f.row, "batch_id": f.batch_id,
        "mapping": {"id": f.mapping_id, "version": f.mapping_version},
        "message_id": f.message_id, "errors": errors, "created_at": f.created_at,
    })
}

/// One page of failures, the total and the counts by reason.
pub(super) fn failures_page(
    state: &ApiState,
    filter: &FailureFilter,
    after: i64,
    limit: u32,
) -> Result<Value, StoreError> {
    let limit = limit.clamp(1, 500);
    let rows = state.store.failures_matching(filter, after, limit)?;
    let total = state.store.count_failures(filter)?;
    let reasons: Vec<Value> = state
        .store
        .failure_reasons(filter)?
        .into_iter()
        .map(|(kind, rule, count)| json!({"kind": kind, "rule": rule, "count": count}))
        .collect();
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(json!({
        "items": rows.iter().map(list_item).collect::<Vec<_>>(),
        "total": total,
        "reasons": reasons,
        "next_after": next,
    }))
}

async fn openapi(ApiCaller(_): ApiCaller) -> Response {
    axum::Json(super::openapi::document()).into_response()
}

async fn list_failures(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Query(q): Query<Filters>,
) -> Response {
    let filter = q.filter(&caller, &s);
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(100));
    match blocking(move || failures_page(&s, &filter, after, limit).map_err(store_error)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct ShowQuery {
    reveal: Option<bool>,
}

/// A failure's view (masked unless revealed) and history; the reveal audited.
pub(super) fn failure_detail(
    state: &ApiState,
    caller: &Caller,
    id: i64,
    reveal: bool,
) -> Result<Value, Response> {
    let f = state
        .store
        .failure_in_scope(id, caller.scope())
        .map_err(store_error)?
        .ok_or_else(|| not_found(&format!("failure {id}")))?;
    if reveal {
        if !caller.can_operate() {
            return Err(forbidden());
        }
        state
            .store
            .record_audit(
                &AuditEntry {
                    actor: &caller.actor(),
                    action: "failure.reveal",
                    target: &id.to_string(),
                    detail: "personal data shown on the record page",
                    council: Some(&f.council),
                    outcome: "shown",
                    records: 1,
                },
                Some(id),
            )
            .map_err(store_error)?;
    }
    let mut view = state.operator.view(&f, reveal);
    view["history"] = json!(state.store.failure_history(id).map_err(store_error)?);
    Ok(view)
}

async fn show_failure(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<i64>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let reveal = q.reveal.unwrap_or(false);
    match blocking(move || failure_detail(&s, &caller, id, reveal)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ActionBody {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Replays (or previews the replay of) one failure in the caller's scope.
pub(super) fn replay_one(
    state: &ApiState,
    caller: &Caller,
    id: i64,
    reason: &str,
    dry_run: bool,
) -> Result<Value, Response> {
    let f = state
        .store
        .failure_in_scope(id, caller.scope())
        .map_err(store_error)?
        .ok_or_else(|| not_found(&format!("failure {id}")))?;
    if !caller.can_operate() {
        return Err(forbidden());
    }
    let filter = FailureFilter {
        scope: caller.scope().map(<[String]>::to_vec),
        ids: Some(vec![f.id]),
        status: Some("all".into()),
        ..FailureFilter::default()
    };
    if dry_run {
        let d = state
            .operator
            .dry_run(&state.store, &filter, 1)
            .map_err(|e| error(StatusCode::CONFLICT, e.to_string()))?;
        return Ok(json!({"dry_run": true, "records": d.records}));
    }
    match state
        .operator
        .replay_one(&state.store, id, &caller.actor(), reason)
    {
        Ok(crate::pipeline::ReplayOutcome::Queued { message_id }) => {
            (state.queued)();
            Ok(json!({"id": id, "outcome": "queued", "message_id": message_id}))
        }
        Ok(crate::pipeline::ReplayOutcome::StillFailing { errors }) => Ok(json!({
            "id": id, "outcome": "still failing",
            "errors": crate::pipeline::without_values(&errors),
        })),
        Err(crate::pipeline::PipelineError::Store(e)) => Err(store_error(e)),
        Err(e) => Err(error(StatusCode::CONFLICT, e.to_string())),
    }
}

async fn replay_failure(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<i64>,
    body: Option<axum::Json<ActionBody>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or_default();
    let reason = body
        .reason
        .unwrap_or_else(|| "mapping or data fixed".into());
    match blocking(move || replay_one(&s, &caller, id, &reason, body.dry_run)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// Discards one failure in the caller's scope.
pub(super) fn discard_one(
    state: &ApiState,
    caller: &Caller,
    id: i64,
    reason: &str,
) -> Result<Value, Response> {
    state
        .store
        .failure_in_scope(id, caller.scope())
        .map_err(store_error)?
        .ok_or_else(|| not_found(&format!("failure {id}")))?;
    if !caller.can_operate() {
        return Err(forbidden());
    }
    if reason.trim().is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "a discard needs a reason"));
    }
    state
        .store
        .discard_failure(id, &caller.actor(), reason)
        .map_err(store_error)?;
    Ok(json!({"id": id, "status": "discarded"}))
}

async fn discard_failure(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<i64>,
    body: Option<axum::Json<ActionBody>>,
) -> Response {
    let reason = body.and_then(|b| b.0.reason).unwrap_or_default();
    match blocking(move || discard_one(&s, &caller, id, &reason)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct BulkBody {
    #[serde(flatten)]
    filters: Filters,
    #[serde(default)]
    ids: Option<Vec<i64>>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
    /// Per-record detail in a dry run (default 100).
    #[serde(default)]
    detail: Option<usize>,
}

async fn bulk_replay(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    axum::Json(body): axum::Json<BulkBody>,
) -> Response {
    if !caller.can_operate() {
        return forbidden();
    }
    let mut filter = body.filters.filter(&caller, &s);
    filter.ids = body.ids.clone();
    let reason = body
        .reason
        .clone()
        .unwrap_or_else(|| "mapping or data fixed".into());
    if body.dry_run {
        let detail = body.detail.unwrap_or(100);
        return match blocking(move || {
            s.operator
                .dry_run(&s.store, &filter, detail)
                .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        })
        .await
        {
            Ok(d) => axum::Json(json!({"dry_run": true, "result": d})).into_response(),
            Err(r) => r,
        };
    }
    // The job runs in the background; its id comes back at once and GET shows its progress.
    let job_id = uuid::Uuid::new_v4().to_string();
    let (store, actor) = (s.store.clone(), caller.actor());
    let created = {
        let (filter, job_id, reason) = (filter.clone(), job_id.clone(), reason.clone());
        blocking(move || {
            let n = store.count_failures(&filter).map_err(store_error)?;
            store
                .create_replay_job(&job_id, &actor, &reason, &filter, n)
                .map_err(store_error)?;
            Ok(n)
        })
        .await
    };
    let matching = match created {
        Ok(n) => n,
        Err(r) => return r,
    };
    spawn_job(&s, job_id.clone());
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"job": job_id, "matching": matching, "status": "running"})),
    )
        .into_response()
}

/// Jobs running in this process (a second resume of one of them is a no-op).
static RUNNING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub(super) fn spawn_job(s: &ApiState, job: String) {
    {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains(&job) {
            return;
        }
        running.push(job.clone());
    }
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        struct Done(String);
        impl Drop for Done {
            fn drop(&mut self) {
                RUNNING
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|j| *j != self.0);
            }
        }
        let _done = Done(job.clone());
        let stop = crate::pipeline::stop_requested;
        match s.operator.resume(&s.store, &job, &stop) {
            Ok(j) => {
                tracing::info!(job = %j.id, queued = j.queued, still_failing = j.still_failing, status = %j.status, "bulk replay finished")
            }
            Err(e) => tracing::error!(job = %job, error = %e, "bulk replay stopped"),
        }
        (s.queued)();
    });
}

pub(super) fn job_visible(caller: &Caller, job: &crate::store::ReplayJob) -> bool {
    let Some(mine) = caller.scope() else {
        return true;
    };
    let filter: FailureFilter = serde_json::from_value(job.filter.clone()).unwrap_or_default();
    filter
        .scope
        .is_some_and(|s| s.iter().all(|c| mine.contains(c)))
}

async fn show_job(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> Response {
    match blocking(move || match s.store.replay_job(&id) {
        Ok(j) if job_visible(&caller, &j) => Ok(json!(j)),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(not_found(&format!("replay job {id}"))),
        Err(e) => Err(store_error(e)),
    })
    .await
    {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn resume_job(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> Response {
    let s2 = s.clone();
    let job = {
        let id = id.clone();
        blocking(move || match s2.store.replay_job(&id) {
            Ok(j) if job_visible(&caller, &j) => {
                if !caller.can_operate() {
                    Err(forbidden())
                } else if j.status == "done" {
                    Err(error(
                        StatusCode::CONFLICT,
                        format!("replay job {id} is already done"),
                    ))
                } else {
                    Ok(j)
                }
            }
            Ok(_) | Err(StoreError::NotFound(_)) => Err(not_found(&format!("replay job {id}"))),
            Err(e) => Err(store_error(e)),
        })
        .await
    };
    match job {
        Ok(_) => {
            spawn_job(&s, id.clone());
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"job": id, "status": "running"})),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

async fn held_batches(State(s): State<ApiState>, ApiCaller(caller): ApiCaller) -> Response {
    match blocking(move || s.store.held_batches(caller.scope()).map_err(store_error)).await {
        Ok(v) => axum::Json(json!({"items": v})).into_response(),
        Err(r) => r,
    }
}

/// Releases or discards a held batch in the caller's scope.
pub(super) fn batch_action(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    release: bool,
    reason: &str,
) -> Result<Value, Response> {
    let batch = s
        .store
        .batch_in_scope(id, caller.scope())
        .map_err(store_error)?
        .ok_or_else(|| not_found(&format!("batch {id}")))?;
    if !caller.can_operate() {
        return Err(forbidden());
    }
    if batch.status != crate::store::batch_status::HELD {
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "batch {id} is {}, not held: only a held batch can be released or discarded",
                batch.status
            ),
        ));
    }
    if reason.trim().is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a release or discard needs a reason",
        ));
    }
    if release {
        let n = s
            .store
            .release_batch(id, &caller.actor(), reason)
            .map_err(store_error)?;
        (s.queued)();
        Ok(json!({"batch": id, "status": "released", "messages": n}))
    } else {
        let n = s
            .store
            .discard_batch(id, &caller.actor(), reason)
            .map_err(store_error)?;
        Ok(json!({"batch": id, "status": "discarded", "messages_dropped": n}))
    }
}

async fn release_batch(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    body: Option<axum::Json<ActionBody>>,
) -> Response {
    let reason = body.and_then(|b| b.0.reason).unwrap_or_default();
    match blocking(move || batch_action(&s, &caller, &id, true, &reason)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn discard_batch(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    body: Option<axum::Json<ActionBody>>,
) -> Response {
    let reason = body.and_then(|b| b.0.reason).unwrap_or_default();
    match blocking(move || batch_action(&s, &caller, &id, false, &reason)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// Feed statuses in the caller's scope.
pub(super) fn feeds_in_scope(s: &ApiState, caller: &Caller) -> Vec<Value> {
    (s.feeds)()
        .into_iter()
        .filter(|f| f["council"].as_str().is_some_and(|c| caller.sees(c)))
        .collect()
}

async fn feeds(State(s): State<ApiState>, ApiCaller(caller): ApiCaller) -> Response {
    match blocking(move || Ok(feeds_in_scope(&s, &caller))).await {
        Ok(v) => axum::Json(json!({"items": v})).into_response(),
        Err(r) => r,
    }
}

async fn outbox(State(s): State<ApiState>, ApiCaller(caller): ApiCaller) -> Response {
    match blocking(move || {
        s.store
            .outbox_counts_in(caller.scope())
            .map_err(store_error)
    })
    .await
    {
        Ok(v) => axum::Json(json!(v)).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AuditQuery {
    pub action: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

async fn audit(
    State(s): State<ApiState>,
    ApiCaller(caller): ApiCaller,
    Query(q): Query<AuditQuery>,
) -> Response {
    match blocking(move || {
        s.store
            .audit_entries(
                caller.scope(),
                q.action.as_deref(),
                q.before,
                q.limit.unwrap_or(100).clamp(1, 1000),
            )
            .map_err(store_error)
    })
    .await
    {
        Ok(v) => axum::Json(json!({"items": v})).into_response(),
        Err(r) => r,
    }
}
