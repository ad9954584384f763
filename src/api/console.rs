//! The web console: server-rendered HTML under `/console`, readable without JavaScript (there
//! is none). Sign in with a token (kept in an HttpOnly, SameSite=Strict cookie); every form
//! that changes something carries a CSRF value derived from the token, asks for a reason, and
//! is audited. Pages show only the token's councils; personal data is masked except on the
//! record page after an explicit, audited reveal (operators).

// Handlers answer errors as ready-made HTTP responses (axum's idiom); boxing them buys nothing.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::ApiState;
use super::auth::{Caller, PageCaller, hash_secret};
use super::v1::{self, Filters, blocking};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/failures") }))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/failures") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/failures", get(failures))
        .route("/console/failures/{id}", get(failure))
        .route("/console/failures/{id}/reveal", post(reveal))
        .route("/console/failures/{id}/replay", post(replay))
        .route("/console/failures/{id}/discard", post(discard))
        .route("/console/replays", post(bulk))
        .route("/console/replays/{id}", get(job))
        .route("/console/replays/{id}/resume", post(resume_job))
        .route("/console/batches", get(batches))
        .route("/console/batches/{id}/{action}", post(batch_action))
        .route("/console/feeds", get(feeds))
        .route("/console/audit", get(audit))
}

/// HTML-escapes text.
fn e(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Filters {
    /// The failure filters as hidden form fields, so a bulk action acts on what the list shows.
    fn hidden_fields(&self) -> String {
        let mut hidden = String::new();
        for (k, val) in [
            ("council", &self.council),
            ("feed", &self.feed),
            ("entity", &self.entity),
            ("kind", &self.kind),
            ("rule", &self.rule),
            ("field", &self.field),
            ("since", &self.since),
            ("until", &self.until),
            ("text", &self.text),
        ] {
            if let Some(x) = val.as_deref().filter(|x| !x.is_empty()) {
                hidden.push_str(&format!(
                    "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                    e(x)
                ));
            }
        }
        hidden
    }
}

fn v(x: &Value) -> String {
    match x {
        Value::Null => String::new(),
        Value::String(s) => e(s),
        other => e(&other.to_string()),
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b}
header{background:#1d3557;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#fff}header .who{margin-left:auto;font-size:.9rem}
main{padding:1rem 1.5rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccd;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eef}.masked{color:#777;font-style:italic}.bad{background:#fde8e8}
form.inline{display:inline}.filters input,.filters select{margin:.2rem .4rem .2rem 0}
.notice{background:#e8f4fd;border:1px solid #9cc;padding:.5rem 1rem;margin:.5rem 0}
.error{background:#fde8e8;border:1px solid #c99;padding:.5rem 1rem;margin:.5rem 0}
button{padding:.3rem .8rem}";

fn page(title: &str, caller: Option<&Caller>, body: &str) -> Html<String> {
    let nav = match caller {
        Some(c) => format!(
            "<nav><a href=\"/console/failures\">Failures</a> <a href=\"/console/batches\">Held batches</a> \
             <a href=\"/console/feeds\">Feeds</a> <a href=\"/console/audit\">Audit log</a></nav>\
             <span class=\"who\">{} · {} · {}</span>\
             <form class=\"inline\" method=\"post\" action=\"/console/logout\"><button>Sign out</button></form>",
            e(&c.token.name),
            e(&c.token.role),
            e(&c.scope()
                .map_or_else(|| "all councils".to_string(), |s| s.join(", ")))
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · council-bridge</title>\
         <style>{STYLE}</style></head><body><header><strong>council-bridge</strong>{nav}</header>\
         <main><h1>{}</h1>{body}</main></body></html>",
        e(title),
        e(title)
    ))
}

fn csrf_field(c: &Caller) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        c.csrf()
    )
}

fn check_csrf(c: &Caller, given: &str) -> Result<(), Response> {
    if given == c.csrf() {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            page(
                "Form expired",
                Some(c),
                "<p class=\"error\">This form was not made for your session; go back, reload the page and try again.</p>",
            ),
        )
            .into_response())
    }
}

fn error_page(c: &Caller, r: Response) -> Response {
    let status = r.status();
    let title = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Not done"
    };
    (
        status,
        page(
            title,
            Some(c),
            &format!("<p class=\"error\">{}</p>", e(&status.to_string())),
        ),
    )
        .into_response()
}

async fn login_page() -> Html<String> {
    page(
        "Sign in",
        None,
        "<p>Sign in with the API token an administrator gave you (<code>council-bridge tokens create</code>).</p>\
         <form method=\"post\" action=\"/console/login\"><label>Token <input type=\"password\" name=\"token\" id=\"token\" size=\"70\" autocomplete=\"off\"></label> \
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<ApiState>, Form(f): Form<LoginForm>) -> Response {
    let secret = f.token.trim().to_string();
    let hash = hash_secret(&secret);
    let store = s.store.clone();
    let ok = blocking(move || Ok(store.token_by_hash(&hash).ok().flatten().is_some()))
        .await
        .unwrap_or(false);
    if !ok || secret.contains(';') || secret.contains(',') {
        return (
            StatusCode::UNAUTHORIZED,
            page("Sign in", None, "<p class=\"error\">That token is not valid (or was revoked).</p><p><a href=\"/console/login\">Try again</a></p>"),
        )
            .into_response();
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("cb_token={secret}; HttpOnly; SameSite=Strict; Path=/"),
            ),
            (header::LOCATION, "/console/failures".to_string()),
        ],
    )
        .into_response()
}

async fn logout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                "cb_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0".to_string(),
            ),
            (header::LOCATION, "/console/login".to_string()),
        ],
    )
        .into_response()
}

fn input(name: &str, label: &str, value: &Option<String>) -> String {
    format!(
        "<label>{} <input name=\"{name}\" id=\"f-{name}\" value=\"{}\" size=\"12\"></label>",
        e(label),
        e(value.as_deref().unwrap_or(""))
    )
}

async fn failures(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Query(q): Query<Filters>,
) -> Response {
    let filter = q.filter(&c, &s);
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(50);
    let s2 = s.clone();
    let data = match blocking(move || {
        v1::failures_page(&s2, &filter, after, limit)
            .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    {
        Ok(d) => d,
        Err(r) => return error_page(&c, r),
    };
    let mut b = String::new();
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/console/failures\">");
    for (name, label, value) in [
        ("council", "Council", &q.council),
        ("feed", "Feed", &q.feed),
        ("entity", "Entity", &q.entity),
        ("kind", "Kind", &q.kind),
        ("rule", "Rule", &q.rule),
        ("field", "Field", &q.field),
        ("since", "Since", &q.since),
        ("until", "Until", &q.until),
        ("text", "Text", &q.text),
    ] {
        b.push_str(&input(name, label, value));
    }
    let status = q.status.clone().unwrap_or_else(|| "open".into());
    b.push_str("<label>Status <select name=\"status\" id=\"f-status\">");
    for st in ["open", "replayed", "discarded", "all"] {
        b.push_str(&format!(
            "<option{}>{st}</option>",
            if st == status { " selected" } else { "" }
        ));
    }
    b.push_str(
        "</select></label> <button type=\"submit\" id=\"apply-filters\">Filter</button></form>",
    );
    b.push_str(&format!(
        "<p id=\"total\">{} failure(s) match.</p><h2>By reason</h2><table id=\"reasons\"><tr><th>Kind</th><th>Rule</th><th>Records</th></tr>",
        data["total"]
    ));
    for r in data["reasons"].as_array().into_iter().flatten() {
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            v(&r["kind"]),
            v(&r["rule"]),
            v(&r["count"])
        ));
    }
    b.push_str("</table><h2>Records</h2><table id=\"failures\"><tr><th>Id</th><th>Council / feed</th><th>Kind</th><th>Where</th><th>Problem</th><th>Status</th><th>When</th></tr>");
    for f in data["items"].as_array().into_iter().flatten() {
        let problems: Vec<String> = f["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|er| {
                format!(
                    "{}: {} [{}]",
                    v(&er["field"]),
                    v(&er["message"]),
                    v(&er["rule"])
                )
            })
            .collect();
        b.push_str(&format!(
            "<tr class=\"failure\"><td><a href=\"/console/failures/{id}\" id=\"failure-{id}\">{id}</a></td><td>{} / {}</td><td>{}</td><td>{} line {} row {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v(&f["council"]),
            v(&f["feed"]),
            v(&f["kind"]),
            v(&f["file"]),
            v(&f["line"]),
            v(&f["row"]),
            problems.join("<br>"),
            v(&f["status"]),
            v(&f["created_at"]),
            id = v(&f["id"]),
        ));
    }
    b.push_str("</table>");
    if c.can_operate() && data["total"].as_u64().unwrap_or(0) > 0 && status == "open" {
        let hidden = q.hidden_fields();
        b.push_str(&format!(
            "<form method=\"post\" action=\"/console/replays\">{}{hidden}<input type=\"hidden\" name=\"step\" value=\"preview\">\
             <button type=\"submit\" id=\"preview-bulk\">Preview replay of all {} matching</button></form>",
            csrf_field(&c),
            data["total"]
        ));
    }
    if let Some(next) = data["next_after"].as_i64() {
        let mut qs: Vec<String> = Vec::new();
        for (k, val) in [
            ("council", &q.council),
            ("feed", &q.feed),
            ("entity", &q.entity),
            ("kind", &q.kind),
            ("rule", &q.rule),
            ("field", &q.field),
            ("since", &q.since),
            ("until", &q.until),
            ("text", &q.text),
            ("status", &q.status),
        ] {
            if let Some(x) = val {
                qs.push(format!("{k}={}", url_encode(x)));
            }
        }
        qs.push(format!("after={next}"));
        b.push_str(&format!(
            "<p><a href=\"/console/failures?{}\">Next page</a></p>",
            e(&qs.join("&"))
        ));
    }
    page("Failures", Some(&c), &b).into_response()
}

fn failure_body(c: &Caller, f: &Value, notice: &str) -> String {
    let id = v(&f["id"]);
    let mut b = String::new();
    if !notice.is_empty() {
        b.push_str(notice);
    }
    b.push_str(&format!(
        "<table id=\"summary\"><tr><th>Council / feed</th><td>{} / {}</td></tr><tr><th>Kind</th><td>{}</td></tr>\
         <tr><th>Status</th><td id=\"status\">{}</td></tr><tr><th>Where</th><td>{}, line {}, row {}</td></tr>\
         <tr><th>Mapping</th><td>{} v{}</td></tr><tr><th>Batch</th><td>{}</td></tr><tr><th>Message</th><td>{}</td></tr>\
         <tr><th>Failed at</th><td>{}</td></tr></table>",
        v(&f["council"]),
        v(&f["feed"]),
        v(&f["kind"]),
        v(&f["status"]),
        v(&f["file"]),
        v(&f["line"]),
        v(&f["row"]),
        v(&f["mapping"]["id"]),
        v(&f["mapping"]["version"]),
        v(&f["batch_id"]),
        v(&f["message_id"]),
        v(&f["created_at"]),
    ));
    // The source values beside the problems of their column.
    let errors: Vec<Value> = f["errors"].as_array().cloned().unwrap_or_default();
    b.push_str("<h2>Source record and problems</h2><table id=\"record\"><tr><th>Source column</th><th>Value</th><th>Canonical field and problem</th></tr>");
    let mut shown = std::collections::HashSet::new();
    for col in f["raw_record"].as_array().into_iter().flatten() {
        let name = col["column"].as_str().unwrap_or_default();
        let problems: Vec<String> = errors
            .iter()
            .enumerate()
            .filter(|(_, er)| er["column"].as_str() == Some(name))
            .map(|(i, er)| {
                shown.insert(i);
                format!(
                    "<strong>{}</strong>: {} [{}]",
                    v(&er["field"]),
                    v(&er["message"]),
                    v(&er["rule"])
                )
            })
            .collect();
        let masked =
            col["personal"].as_bool().unwrap_or(false) && f["masked"].as_bool().unwrap_or(true);
        b.push_str(&format!(
            "<tr{}><td>{}</td><td{}>{}</td><td>{}</td></tr>",
            if problems.is_empty() {
                ""
            } else {
                " class=\"bad\""
            },
            e(name),
            if masked { " class=\"masked\"" } else { "" },
            v(&col["value"]),
            problems.join("<br>")
        ));
    }
    for (i, er) in errors.iter().enumerate() {
        if !shown.contains(&i) {
            b.push_str(&format!(
                "<tr class=\"bad\"><td>{}</td><td></td><td><strong>{}</strong>: {} [{}]</td></tr>",
                v(&er["column"]),
                v(&er["field"]),
                v(&er["message"]),
                v(&er["rule"])
            ));
        }
    }
    b.push_str("</table>");
    if f["masked"].as_bool().unwrap_or(true) {
        b.push_str("<p>Personal data is masked (by the canonical schema's <code>x-pii</code> classes).</p>");
    } else {
        b.push_str("<p class=\"notice\">Personal data is shown: this reveal is recorded in the audit log.</p>");
    }
    if c.can_operate() && f["status"] == "open" {
        let csrf = csrf_field(c);
        b.push_str(&format!(
            "<h2>Act</h2>\
             <form method=\"post\" action=\"/console/failures/{id}/replay\">{csrf}<input type=\"hidden\" name=\"step\" value=\"preview\">\
             <button type=\"submit\" id=\"preview-replay\">Preview replay</button></form>\
             <form method=\"post\" action=\"/console/failures/{id}/discard\">{csrf}\
             <label>Reason <input name=\"reason\" id=\"discard-reason\" required></label> <button type=\"submit\" id=\"discard\">Discard</button></form>"
        ));
        if f["masked"].as_bool().unwrap_or(true) {
            b.push_str(&format!(
                "<form method=\"post\" action=\"/console/failures/{id}/reveal\">{csrf}<button type=\"submit\" id=\"reveal\">Reveal personal data (audited)</button></form>"
            ));
        }
    }
    b.push_str("<h2>History</h2><table id=\"history\"><tr><th>When</th><th>Who</th><th>What</th><th>Outcome</th><th>Detail</th></tr>");
    for h in f["history"].as_array().into_iter().flatten() {
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v(&h["at"]),
            v(&h["actor"]),
            v(&h["action"]),
            v(&h["outcome"]),
            v(&h["detail"])
        ));
    }
    b.push_str("</table>");
    b
}

async fn show(s: ApiState, c: Caller, id: i64, reveal: bool, notice: String) -> Response {
    let c2 = c.clone();
    match blocking(move || v1::failure_detail(&s, &c2, id, reveal)).await {
        Ok(f) => page(
            &format!("Failure {id}"),
            Some(&c),
            &failure_body(&c, &f, &notice),
        )
        .into_response(),
        Err(r) => error_page(&c, r),
    }
}

async fn failure(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path(id): Path<i64>,
) -> Response {
    show(s, c, id, false, String::new()).await
}

#[derive(serde::Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    step: String,
}

async fn reveal(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = check_csrf(&c, &f.csrf) {
        return r;
    }
    show(s, c, id, true, String::new()).await
}

async fn replay(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = check_csrf(&c, &f.csrf) {
        return r;
    }
    let preview = f.step != "confirm";
    let reason = if f.reason.trim().is_empty() {
        "mapping or data fixed".to_string()
    } else {
        f.reason.clone()
    };
    let (s2, c2) = (s.clone(), c.clone());
    let result = blocking(move || v1::replay_one(&s2, &c2, id, &reason, preview)).await;
    match result {
        Err(r) => error_page(&c, r),
        Ok(res) if preview => {
            let r = &res["records"][0];
            let what = match r["outcome"].as_str().unwrap_or("") {
                "would queue" => format!(
                    "The record maps and validates with the current mapping: message <code>{}</code> would be queued to <code>{}</code>.",
                    v(&r["message_id"]),
                    v(&r["routing_key"])
                ),
                "would requeue" => format!(
                    "The stored message <code>{}</code> would be published again, unchanged.",
                    v(&r["message_id"])
                ),
                "still failing" => "The record still fails with the current mapping: a replay would change nothing but its errors.".to_string(),
                _ => format!("It cannot be replayed: {}", v(&r["reason"])),
            };
            let body = format!(
                "<div class=\"notice\" id=\"preview\"><p><strong>Dry run</strong> (nothing changed): {what}</p>\
                 <form method=\"post\" action=\"/console/failures/{id}/replay\">{}<input type=\"hidden\" name=\"step\" value=\"confirm\">\
                 <label>Reason <input name=\"reason\" id=\"replay-reason\" value=\"mapping or data fixed\"></label> \
                 <button type=\"submit\" id=\"confirm-replay\">Replay now</button></form>\
                 <p><a href=\"/console/failures/{id}\">Cancel</a></p></div>",
                csrf_field(&c)
            );
            page(&format!("Replay failure {id}?"), Some(&c), &body).into_response()
        }
        Ok(res) => {
            let outcome = &res["outcome"];
            let text = if outcome == "queued" {
                format!(
                    "Replayed: message <code>{}</code> queued for publishing.",
                    v(&res["message_id"])
                )
            } else {
                "Still failing with the current mapping; the failure stays open with its new errors.".into()
            };
            show(
                s,
                c,
                id,
                false,
                format!("<p class=\"notice\" id=\"result\">{text}</p>"),
            )
            .await
        }
    }
}

async fn discard(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = check_csrf(&c, &f.csrf) {
        return r;
    }
    if f.step != "confirm" {
        let body = format!(
            "<div class=\"notice\" id=\"confirm\"><p>Discard failure {id}? It stays in the store, marked \
             discarded, and is never replayed. Reason: <em>{}</em></p>\
             <form method=\"post\" action=\"/console/failures/{id}/discard\">{}<input type=\"hidden\" name=\"step\" value=\"confirm\">\
             <input type=\"hidden\" name=\"reason\" value=\"{}\"><button type=\"submit\" id=\"confirm-discard\">Discard</button></form>\
             <p><a href=\"/console/failures/{id}\">Cancel</a></p></div>",
            e(&f.reason),
            csrf_field(&c),
            e(&f.reason)
        );
        return page(&format!("Discard failure {id}?"), Some(&c), &body).into_response();
    }
    let (s2, c2, reason) = (s.clone(), c.clone(), f.reason.clone());
    match blocking(move || v1::discard_one(&s2, &c2, id, &reason)).await {
        Ok(_) => {
            show(
                s,
                c,
                id,
                false,
                "<p class=\"notice\" id=\"result\">Discarded.</p>".into(),
            )
            .await
        }
        Err(r) => error_page(&c, r),
    }
}

async fn batches(State(s): State<ApiState>, PageCaller(c): PageCaller) -> Response {
    let (s2, c2) = (s.clone(), c.clone());
    let rows = match blocking(move || {
        s2.store
            .held_batches(c2.scope())
            .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return error_page(&c, r),
    };
    let mut b = format!("<p>{} batch(es) held for an operator.</p>", rows.len());
    for r in rows {
        let summary = r.summary.clone().unwrap_or(Value::Null);
        let reasons: Vec<String> = summary["held_reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(v)
            .collect();
        b.push_str(&format!(
            "<section class=\"batch\"><h2>{} / {} · {}</h2><p>Batch <code>{}</code>, read {}</p><ul>{}</ul>\
             <details><summary>Control and drift report</summary><pre>{}</pre></details>",
            e(&r.council),
            e(&r.feed),
            e(&r.file_name),
            e(&r.id),
            e(&r.started_at),
            reasons.iter().map(|x| format!("<li>{x}</li>")).collect::<String>(),
            e(&serde_json::to_string_pretty(&summary).unwrap_or_default())
        ));
        if c.can_operate() {
            for action in ["release", "discard"] {
                b.push_str(&format!(
                    "<form method=\"post\" action=\"/console/batches/{}/{action}\">{}<label>Reason <input name=\"reason\" required></label> <button type=\"submit\">{}</button></form>",
                    e(&r.id),
                    csrf_field(&c),
                    if action == "release" { "Release (publish)" } else { "Discard (never publish)" }
                ));
            }
        }
        b.push_str("</section>");
    }
    page("Held batches", Some(&c), &b).into_response()
}

async fn batch_action(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = check_csrf(&c, &f.csrf) {
        return r;
    }
    let release = match action.as_str() {
        "release" => true,
        "discard" => false,
        _ => return error_page(&c, v1::not_found("such action")),
    };
    let (s2, c2) = (s.clone(), c.clone());
    match blocking(move || v1::batch_action(&s2, &c2, &id, release, &f.reason)).await {
        Ok(_) => Redirect::to("/console/batches").into_response(),
        Err(r) => error_page(&c, r),
    }
}

async fn feeds(State(s): State<ApiState>, PageCaller(c): PageCaller) -> Response {
    let (s2, c2) = (s.clone(), c.clone());
    let (feeds, outbox) = match blocking(move || {
        let o = s2
            .store
            .outbox_counts_in(c2.scope())
            .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok((v1::feeds_in_scope(&s2, &c2), o))
    })
    .await
    {
        Ok(x) => x,
        Err(r) => return error_page(&c, r),
    };
    let mut b = format!(
        "<p id=\"outbox\">Outbox: {} pending, {} held, {} sent, {} failed.</p><table id=\"feeds\"><tr><th>Council / feed</th><th>Mode</th><th>Next run (London)</th><th>Last arrival</th><th>Last success</th><th>Last status</th><th>Held</th><th>Late since</th></tr>",
        outbox.pending, outbox.held, outbox.sent, outbox.failed
    );
    for f in feeds {
        b.push_str(&format!(
            "<tr><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v(&f["council"]),
            v(&f["feed"]),
            v(&f["mode"]),
            v(&f["next_run_london"]),
            v(&f["last_arrival"]),
            v(&f["last_success"]),
            v(&f["last_status"]),
            v(&f["held"]),
            v(&f["late_since"])
        ));
    }
    b.push_str("</table>");
    page("Feeds", Some(&c), &b).into_response()
}

async fn audit(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Query(q): Query<v1::AuditQuery>,
) -> Response {
    let (s2, c2) = (s.clone(), c.clone());
    let rows = match blocking(move || {
        s2.store
            .audit_entries(
                c2.scope(),
                q.action.as_deref(),
                q.before,
                q.limit.unwrap_or(100).clamp(1, 1000),
            )
            .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return error_page(&c, r),
    };
    let mut b = String::from(
        "<table id=\"audit\"><tr><th>When</th><th>Who</th><th>What</th><th>On</th><th>Council</th><th>Outcome</th><th>Records</th><th>Why / detail</th></tr>",
    );
    for r in &rows {
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v(&r["at"]),
            v(&r["actor"]),
            v(&r["action"]),
            v(&r["target"]),
            v(&r["council"]),
            v(&r["outcome"]),
            v(&r["records"]),
            v(&r["detail"])
        ));
    }
    b.push_str("</table>");
    page("Audit log", Some(&c), &b).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::e("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(crate::api::auth::csrf_for("a").len(), 32);
    }
}

#[derive(serde::Deserialize, Default)]
struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    reason: String,
    #[serde(flatten)]
    filters: Filters,
}

/// Bulk replay of everything matching the list's filters: a dry run with counts and the first
/// records, then, confirmed with a reason, a resumable job whose progress has its own page.
async fn bulk(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Form(f): Form<BulkForm>,
) -> Response {
    if let Err(r) = check_csrf(&c, &f.csrf) {
        return r;
    }
    if !c.can_operate() {
        return error_page(&c, v1::error(StatusCode::FORBIDDEN, "viewer"));
    }
    let mut filters = f.filters.clone();
    filters.status = Some("open".into());
    let filter = filters.filter(&c, &s);
    if f.step != "confirm" {
        let (s2, filter2) = (s.clone(), filter.clone());
        let d = match blocking(move || {
            s2.operator
                .dry_run(&s2.store, &filter2, 20)
                .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        })
        .await
        {
            Ok(d) => d,
            Err(r) => return error_page(&c, r),
        };
        let hidden = filters.hidden_fields();
        let mut rows = String::new();
        for r in &d.records {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                v(&r["id"]),
                v(&r["outcome"]),
                v(&r["message_id"])
            ));
        }
        let body = format!(
            "<div class=\"notice\" id=\"bulk-preview\"><p><strong>Dry run</strong> (nothing changed): {} matching; \
             <strong>{}</strong> would be queued, {} still fail with the current mapping, {} cannot be replayed.</p>\
             <table><tr><th>Failure</th><th>Would</th><th>Message</th></tr>{rows}</table>\
             <form method=\"post\" action=\"/console/replays\">{}{hidden}<input type=\"hidden\" name=\"step\" value=\"confirm\">\
             <label>Reason <input name=\"reason\" id=\"bulk-reason\" value=\"mapping or data fixed\"></label> \
             <button type=\"submit\" id=\"confirm-bulk\">Replay all {} now</button></form>\
             <p><a href=\"/console/failures\">Cancel</a></p></div>",
            d.matching,
            d.would_queue,
            d.still_failing,
            d.refused,
            csrf_field(&c),
            d.matching
        );
        return page("Replay all matching?", Some(&c), &body).into_response();
    }
    let job_id = uuid::Uuid::new_v4().to_string();
    let reason = if f.reason.trim().is_empty() {
        "mapping or data fixed".to_string()
    } else {
        f.reason.clone()
    };
    let (s2, actor, id2) = (s.clone(), c.actor(), job_id.clone());
    let created = blocking(move || {
        let n = s2
            .store
            .count_failures(&filter)
            .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        s2.store
            .create_replay_job(&id2, &actor, &reason, &filter, n)
            .map_err(|e| v1::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await;
    if let Err(r) = created {
        return error_page(&c, r);
    }
    v1::spawn_job(&s, job_id.clone());
    Redirect::to(&format!("/console/replays/{job_id}")).into_response()
}

async fn job(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> Response {
    let (s2, c2, id2) = (s.clone(), c.clone(), id.clone());
    let j = match blocking(move || match s2.store.replay_job(&id2) {
        Ok(j) if v1::job_visible(&c2, &j) => Ok(j),
        _ => Err(v1::not_found("replay job")),
    })
    .await
    {
        Ok(j) => j,
        Err(r) => return error_page(&c, r),
    };
    let resume = if j.status == "interrupted" && c.can_operate() {
        format!(
            "<p>This job was interrupted. Resuming it replays the rest; records already replayed are not queued again.</p>\
             <form method=\"post\" action=\"/console/replays/{}/resume\">{}<button type=\"submit\" id=\"resume\">Resume</button></form>",
            e(&j.id),
            csrf_field(&c)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<table id=\"job\"><tr><th>Job</th><td>{}</td></tr><tr><th>Status</th><td id=\"job-status\">{}</td></tr>\
         <tr><th>Queued</th><td id=\"job-queued\">{}</td></tr><tr><th>Still failing</th><td>{}</td></tr>\
         <tr><th>Cannot be replayed</th><td>{}</td></tr><tr><th>By</th><td>{}</td></tr><tr><th>Why</th><td>{}</td></tr>\
         <tr><th>Started</th><td>{}</td></tr></table>{resume}<p><a href=\"/console/replays/{}\">Refresh</a> · <a href=\"/console/failures\">Failures</a></p>",
        e(&j.id),
        e(&j.status),
        j.queued,
        j.still_failing,
        j.refused,
        e(&j.actor),
        e(&j.reason),
        e(&j.created_at),
        e(&j.id)
    );
    page("Bulk replay", Some(&c), &body).into_response()
}

async fn resume_job(
    State(s): State<ApiState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Err(r) = check_csrf(&c, &f.csrf) {
        return r;
    }
    let (s2, c2, id2) = (s.clone(), c.clone(), id.clone());
    let found = blocking(move || match s2.store.replay_job(&id2) {
        Ok(j) if v1::job_visible(&c2, &j) && c2.can_operate() && j.status == "interrupted" => {
            Ok(())
        }
        Ok(j) if v1::job_visible(&c2, &j) => {
            Err(v1::error(StatusCode::CONFLICT, "not interrupted"))
        }
        _ => Err(v1::not_found("replay job")),
    })
    .await;
    if let Err(r) = found {
        return error_page(&c, r);
    }
    v1::spawn_job(&s, id.clone());
    Redirect::to(&format!("/console/replays/{id}")).into_response()
}
