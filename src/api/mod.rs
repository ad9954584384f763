//! The HTTP endpoints of a running bridge (axum): `/health` (the process answers), `/ready`
//! (the store answers, and the broker, when one is configured, was reachable at the last
//! attempt) and `/metrics` (Prometheus text format; see [`crate::metrics`]).
//!
//! None of them needs a token and none shows a record: counts, states and times only.
//!
//! The operators' API under `/api/v1` ([`v1`], described by `/api/v1/openapi.json`) and the
//! web console under `/console` ([`console`]) need a token ([`auth`]): a token scoped to some
//! councils gets "not found" for anything of another council, so existence does not leak.

pub mod auth;
mod console;
mod openapi;
mod v1;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::store::Store;

/// What the daemon last saw of the broker.
#[derive(Debug, Default)]
pub struct BrokerState(AtomicU8); // 0: not tried yet

impl BrokerState {
    const UP: u8 = 1;
    const DOWN: u8 = 2;
    const NONE: u8 = 3;

    /// No broker is configured.
    pub fn not_configured(&self) {
        self.0.store(Self::NONE, Ordering::SeqCst);
    }
    /// The last attempt reached it.
    pub fn up(&self) {
        self.0.store(Self::UP, Ordering::SeqCst);
    }
    /// The last attempt failed.
    pub fn down(&self) {
        self.0.store(Self::DOWN, Ordering::SeqCst);
    }
    fn describe(&self) -> (&'static str, bool) {
        match self.0.load(Ordering::SeqCst) {
            Self::UP => ("connected", true),
            Self::DOWN => ("unreachable", false),
            Self::NONE => ("not configured (messages wait in the outbox)", true),
            _ => ("not tried yet", true),
        }
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<Store>,
    /// Renders the metrics.
    pub metrics: PrometheusHandle,
    /// The broker as last seen.
    pub broker: Arc<BrokerState>,
    /// Refreshes the scrape-time gauges (outbox depth, held batches, lateness) before a render.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
    /// Replays and masking, with the configuration the API does not read itself.
    pub operator: Arc<crate::pipeline::Operator>,
    /// Every configured feed's status (JSON objects with at least `council` and `feed`).
    pub feeds: Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>,
    /// Called when messages were queued (wakes the publisher, when one runs in this process).
    pub queued: Arc<dyn Fn() + Send + Sync>,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(v1::routes())
        .merge(console::routes())
        .with_state(state)
}

/// Resumes the bulk replay jobs a stopped process left `running` or `interrupted` (each record
/// is replayed at most once, whoever resumes it). Returns how many were resumed.
pub fn resume_unfinished_jobs(state: &ApiState) -> usize {
    let jobs = state.store.replay_jobs(1_000).unwrap_or_default();
    let mut n = 0;
    for j in jobs.into_iter().filter(|j| j.status != "done") {
        tracing::info!(job = %j.id, status = %j.status, "resuming a bulk replay");
        v1::spawn_job(state, j.id);
        n += 1;
    }
    n
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" })))
}

async fn ready(State(s): State<ApiState>) -> Response {
    let store = s.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || store.outbox_counts().is_ok())
        .await
        .unwrap_or(false);
    let (broker, broker_ok) = s.broker.describe();
    let ok = store_ok && broker_ok;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({
            "ready": ok,
            "store": if store_ok { "ok" } else { "cannot be read" },
            "broker": broker,
        })),
    )
        .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let refresh = s.refresh.clone();
    let _ = tokio::task::spawn_blocking(move || refresh()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
