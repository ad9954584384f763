//! `council-bridge serve`: the long-running process that runs feeds by itself.
//!
//! - Scheduled feeds (`schedule:`, cron in London time) are pulled (HTTP/SFTP) and read when
//!   due; an occurrence missed while the daemon was down runs once at start.
//! - Watched feeds (no schedule, or `watch: true`) are read as soon as a file settles.
//! - One run per feed at a time (here, and across processes through the store's feed lease).
//! - The outbox is published continuously, with back-off while the broker is away.
//! - The dead-letter queue is consumed into the failure store.
//! - Feeds with `expected_by:` raise one missing-feed alert a day when nothing arrived.
//! - `/health`, `/ready` and `/metrics` are served ([`crate::api`]).
//! - SIGTERM or SIGINT: the file being read is abandoned at its next chunk (nothing half
//!   written; it is read again next time), publishing stops after the confirms in flight,
//!   and the process exits 0.

pub mod status;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::amqp::{BrokerConfig, DeadLetterConsumer};
use crate::api::{self, ApiState, BrokerState};
use crate::canonical::Registry;
use crate::canonical::envelope;
use crate::config::Config;
use crate::pipeline::{self, flush::Retry};
use crate::schedule::{Clock, london};
use crate::store::{DeadLetter, Store, StoreError};

/// Feeds read at the same time (the machine's cores, not the number of feeds).
const PARALLEL_FEEDS: usize = 2;
/// How often the daemon looks at its clock.
const TICK: Duration = Duration::from_millis(500);

/// The daemon cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP address is unusable.
    #[error(
        "cannot listen on {addr}: {source} (is another council-bridge serving there? set `listen:` in the configuration or pass --listen)"
    )]
    Listen {
        /// The address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else, said plainly.
    #[error("{0}")]
    Other(String),
}

/// What the daemon runs with.
pub struct Serve {
    /// The configuration.
    pub config: Arc<Config>,
    /// The canonical model.
    pub registry: Arc<Registry>,
    /// The store.
    pub store: Arc<Store>,
    /// The broker, if configured (else messages wait in the outbox).
    pub broker: Option<BrokerConfig>,
    /// Address for /health, /ready and /metrics.
    pub listen: String,
    /// Where the time comes from.
    pub clock: Arc<dyn Clock>,
}

/// Why a feed runs.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// Its schedule's occurrence at this time.
    Schedule(DateTime<Utc>),
    /// A file settled in its drop folder.
    Watch,
}

impl Trigger {
    /// As the pipeline records it in the run report.
    fn pipeline(&self) -> pipeline::Trigger {
        match self {
            Trigger::Schedule(_) => pipeline::Trigger::Schedule,
            Trigger::Watch => pipeline::Trigger::Watch,
        }
    }

    fn name(&self) -> &'static str {
        self.pipeline().as_str()
    }
}

type FeedKey = (String, String);

fn parse_time(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Every configured feed's status as JSON, for the API.
fn feed_lister(
    config: &Arc<Config>,
    store: &Arc<Store>,
    clock: &Arc<dyn Clock>,
) -> Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync> {
    let (config, store, clock) = (config.clone(), store.clone(), clock.clone());
    Arc::new(move || {
        status::feed_statuses(&config, &store, clock.now())
            .map(|v| {
                v.iter()
                    .filter_map(|f| serde_json::to_value(f).ok())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// `council-bridge console`: the operators' API and web console alone (no feeds read, nothing
/// published: replayed messages wait in the outbox for `serve` or `outbox flush`), until
/// SIGTERM or SIGINT.
pub async fn console(
    config: Arc<Config>,
    registry: Arc<Registry>,
    store: Arc<Store>,
    listen: &str,
) -> Result<(), DaemonError> {
    let handle = crate::metrics::install().map_err(DaemonError::Other)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen.to_string(),
            source,
        })?;
    let broker = Arc::new(BrokerState::default());
    broker.not_configured();
    let clock: Arc<dyn Clock> = Arc::new(crate::schedule::SystemClock);
    let refresh = {
        let (config, store, clock) = (config.clone(), store.clone(), clock.clone());
        Arc::new(move || status::refresh_metrics(&config, &store, clock.now()))
    };
    let state = ApiState {
        store: store.clone(),
        metrics: handle,
        broker,
        refresh,
        operator: Arc::new(pipeline::Operator::new(config.clone(), registry)),
        feeds: feed_lister(&config, &store, &clock),
        queued: Arc::new(|| {}),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Other(format!("cannot watch for SIGTERM: {e}")))?;
    tracing::info!(listen, "console serving");
    api::serve(listener, state, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        pipeline::request_stop();
    })
    .await
    .map_err(|e| DaemonError::Other(format!("the console stopped: {e}")))
}

/// Runs until SIGTERM or SIGINT; returns `Ok` after a clean stop.
pub async fn run(s: Serve) -> Result<(), DaemonError> {
    let handle = crate::metrics::install().map_err(DaemonError::Other)?;
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: s.listen.clone(),
            source,
        })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let broker_state = Arc::new(BrokerState::default());
    if s.broker.is_none() {
        broker_state.not_configured();
    }

    // Signals: stop everything at the next safe point.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Other(format!("cannot watch for SIGTERM: {e}")))?;
    let stop_on_signal = stop_tx.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        tracing::info!(
            signal = which,
            "stopping: finishing the confirms in flight; a file being read is abandoned and read again next time"
        );
        pipeline::request_stop();
        let _ = stop_on_signal.send(true);
    });

    // HTTP endpoints.
    let refresh = {
        let (config, store, clock) = (s.config.clone(), s.store.clone(), s.clock.clone());
        Arc::new(move || status::refresh_metrics(&config, &store, clock.now()))
    };
    let wake = Arc::new(Notify::new());
    let state = ApiState {
        store: s.store.clone(),
        metrics: handle,
        broker: broker_state.clone(),
        refresh,
        operator: Arc::new(pipeline::Operator::new(
            s.config.clone(),
            s.registry.clone(),
        )),
        feeds: feed_lister(&s.config, &s.store, &s.clock),
        queued: {
            let wake = wake.clone();
            Arc::new(move || wake.notify_one())
        },
    };
    // Bulk replays a stop interrupted carry on where they were.
    api::resume_unfinished_jobs(&state);
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(api::serve(listener, state, async move {
        let _ = api_stop.wait_for(|stop| *stop).await;
    }));

    let mut background = JoinSet::new();
    if let Some(broker) = &s.broker {
        background.spawn(publish_loop(
            s.store.clone(),
            broker.clone(),
            broker_state.clone(),
            wake.clone(),
            stop_rx.clone(),
            Duration::from_secs(s.config.serve.max_backoff_seconds.max(1)),
        ));
        background.spawn(dead_letter_loop(
            s.store.clone(),
            broker.clone(),
            stop_rx.clone(),
            Duration::from_secs(s.config.serve.max_backoff_seconds.max(1)),
        ));
    }

    let feeds: Vec<_> = s
        .config
        .councils
        .iter()
        .flat_map(|c| c.feeds.iter().map(move |f| (c.id.clone(), f.clone())))
        .collect();
    tracing::info!(
        listen = %s.listen,
        feeds = feeds.len(),
        scheduled = feeds.iter().filter(|(_, f)| f.schedule.is_some()).count(),
        watched = feeds.iter().filter(|(_, f)| f.watch).count(),
        broker = %s.broker.as_ref().map(BrokerConfig::redacted_url).unwrap_or_else(|| "none: messages wait in the outbox".into()),
        "serving"
    );

    // What the daemon remembers per scheduled feed: since when it knows the schedule, and the
    // occurrence it last ran for.
    let mut schedule_memory: HashMap<FeedKey, (DateTime<Utc>, Option<DateTime<Utc>>)> =
        HashMap::new();
    for (council, f) in &feeds {
        if f.schedule.is_some() {
            let st = s
                .store
                .schedule_state(council, &f.id, &s.clock.now().to_rfc3339())?;
            let since = parse_time(&st.since).unwrap_or_else(|| s.clock.now());
            schedule_memory.insert(
                (council.clone(), f.id.clone()),
                (since, parse_time(&st.last_fire)),
            );
        }
    }

    let running: Arc<Mutex<HashSet<FeedKey>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(PARALLEL_FEEDS));
    let mut jobs: JoinSet<(FeedKey, Trigger, Vec<PathBuf>, bool)> = JoinSet::new();
    let mut seen: HashMap<FeedKey, HashMap<PathBuf, (u64, Option<SystemTime>)>> = HashMap::new();
    let poll = Duration::from_secs(s.config.serve.poll_seconds.max(1));
    let mut next_poll = tokio::time::Instant::now();
    let mut next_alert_check = tokio::time::Instant::now();
    let mut next_prune = tokio::time::Instant::now();
    let mut stop = stop_rx.clone();

    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        if pipeline::stop_requested() {
            // Asked to stop from inside the process (an embedding program, a test).
            let _ = stop_tx.send(true);
            break;
        }
        while let Some(done) = jobs.try_join_next() {
            match done {
                Ok((key, trigger, taken, clean)) => {
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    if let (Trigger::Schedule(fire), true) = (trigger, clean) {
                        s.store.set_last_fire(&key.0, &key.1, &fire.to_rfc3339())?;
                        if let Some(m) = schedule_memory.get_mut(&key) {
                            m.1 = Some(fire);
                        }
                    }
                    if clean {
                        let marks = seen.entry(key).or_default();
                        for p in taken {
                            if let Ok(meta) = std::fs::metadata(&p) {
                                marks.insert(p, (meta.len(), meta.modified().ok()));
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "a feed run panicked"),
            }
        }
        let now = s.clock.now();
        let polling = tokio::time::Instant::now() >= next_poll;
        if polling {
            next_poll = tokio::time::Instant::now() + poll;
        }
        for (council, feed) in &feeds {
            let key = (council.clone(), feed.id.clone());
            if running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
            {
                continue;
            }
            let mut trigger = None;
            let mut taken = Vec::new();
            if let (Some(schedule), Some((since, last))) =
                (&feed.schedule, schedule_memory.get(&key))
                && let Some(fire) = schedule.due(*last, *since, now)
            {
                tracing::info!(council = %council, feed = %feed.id, occurrence = %london(fire), "scheduled run due");
                trigger = Some(Trigger::Schedule(fire));
            }
            if trigger.is_none() && feed.watch && polling {
                let (ready, _) = match feed.drop.scan() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(council = %council, feed = %feed.id, error = %e, "cannot look at the drop folder");
                        continue;
                    }
                };
                let marks = seen.entry(key.clone()).or_default();
                let fresh = ready.iter().any(|p| {
                    let stamp = std::fs::metadata(p)
                        .map(|m| (m.len(), m.modified().ok()))
                        .ok();
                    stamp.is_none_or(|st| marks.get(p) != Some(&st))
                });
                if fresh {
                    trigger = Some(Trigger::Watch);
                    taken = ready;
                }
            }
            let Some(trigger) = trigger else { continue };
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone());
            jobs.spawn(feed_run(
                s.config.clone(),
                s.registry.clone(),
                s.store.clone(),
                permits.clone(),
                wake.clone(),
                key,
                trigger,
                taken,
            ));
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + Duration::from_secs(3600);
            match s.store.prune(&s.config.retention.policy(), now) {
                Ok(r) if r.payloads_dropped + r.runs_deleted > 0 => {
                    tracing::info!(
                        payloads_dropped = r.payloads_dropped,
                        runs_deleted = r.runs_deleted,
                        "retention: old payloads and run reports pruned"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention: pruning failed"),
            }
        }
        if tokio::time::Instant::now() >= next_alert_check {
            next_alert_check = tokio::time::Instant::now() + Duration::from_secs(30);
            if let Err(e) = check_late_feeds(&s.config, &s.store, now) {
                tracing::error!(error = %e, "cannot check for late feeds");
            } else {
                wake.notify_one();
            }
        }
    }

    // Stopping: readers abandon at their next chunk; wait for them, then for the publisher.
    while let Some(done) = jobs.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a feed run panicked while stopping");
        }
    }
    while background.join_next().await.is_some() {}
    match api_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP endpoints stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the HTTP endpoints panicked"),
        Ok(Ok(())) => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// One run of one feed: pull it when scheduled, then read its waiting files.
#[allow(clippy::too_many_arguments)]
async fn feed_run(
    config: Arc<Config>,
    registry: Arc<Registry>,
    store: Arc<Store>,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    key: FeedKey,
    trigger: Trigger,
    taken: Vec<PathBuf>,
) -> (FeedKey, Trigger, Vec<PathBuf>, bool) {
    let _permit = permits.acquire_owned().await.ok();
    let (council, feed) = (&key.0, &key.1);
    crate::metrics::run_started(council, feed, trigger.name());
    if matches!(trigger, Trigger::Schedule(_)) {
        for p in pipeline::pull(&config, Some(council), Some(feed)).await {
            if let Some(e) = p.error {
                tracing::error!(council = %council, feed = %feed, error = %e, "pull failed; reading what has landed");
            }
        }
    }
    let (c, f) = (council.clone(), feed.clone());
    let config_for_cleanup = config.clone();
    let why = trigger.pipeline();
    let reports = tokio::task::spawn_blocking(move || {
        pipeline::process_with(
            &config,
            &registry,
            &store,
            &pipeline::ProcessOptions {
                council: Some(&c),
                feed: Some(&f),
                force: false,
                trigger: why,
            },
        )
    })
    .await
    .unwrap_or_default();
    // SFTP files whose batches are now stored are moved or removed on the server.
    for p in pipeline::finish_pulls(&config_for_cleanup, Some(council), Some(feed)).await {
        if let Some(e) = p.error {
            tracing::warn!(council = %council, feed = %feed, error = %e, "remote clean-up failed; retried at the next pull");
        }
    }
    let mut clean = !pipeline::stop_requested();
    for r in &reports {
        if r.busy.is_some() {
            clean = false;
        }
        for file in &r.files {
            crate::metrics::file_taken(council, feed, &file.status, file.valid, file.rejected);
            if file.status == "abandoned" {
                clean = false;
            }
            tracing::info!(council = %council, feed = %feed, trigger = trigger.name(), file = %file.file,
                status = %file.status, read = file.read, valid = file.valid, rejected = file.rejected,
                new_messages = file.new_messages, "feed file done");
        }
    }
    wake.notify_one();
    (key, trigger, taken, clean)
}

/// Publishes the outbox for as long as the daemon runs, backing off while the broker is away
/// (each attempt logged), and waking when a feed run queued messages.
async fn publish_loop(
    store: Arc<Store>,
    broker: BrokerConfig,
    state: Arc<BrokerState>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    max_backoff: Duration,
) {
    let first = Duration::from_millis(500);
    let mut pause = first;
    let mut attempt = 0u32;
    let retry = Retry {
        attempts: 1,
        first_pause: first,
        lease_wait: Duration::from_secs(1),
        // The daemon keeps its own back-off between flushes.
        budget: Duration::ZERO,
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let pending = store.outbox_counts().map(|c| c.pending).unwrap_or(0);
        if pending == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        }
        match pipeline::flush(&store, &broker, &retry).await {
            Ok(r) if r.error.is_none() => {
                if r.published_by.is_none() {
                    state.up();
                }
                if attempt > 0 {
                    tracing::info!(after_attempts = attempt, "the broker is back; publishing");
                }
                attempt = 0;
                pause = first;
                if r.published > 0 {
                    tracing::info!(
                        published = r.published,
                        still_pending = r.still_pending,
                        "published"
                    );
                }
            }
            Ok(r) if r.published_by.is_some() => {
                // Another process (a `run`) publishes right now; let it finish.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(r) => {
                if pipeline::stop_requested() {
                    break;
                }
                state.down();
                attempt += 1;
                tracing::warn!(
                    attempt,
                    error = r.error.as_deref().unwrap_or(""),
                    pending = r.still_pending,
                    next_try_in_secs = pause.as_secs_f64(),
                    "broker unavailable; messages wait in the outbox"
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                pause = (pause * 2).min(max_backoff);
            }
            Err(e) => {
                tracing::error!(error = %e, "the store failed while publishing");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                pause = (pause * 2).min(max_backoff);
            }
        }
    }
}

/// Keeps every message the platform dead-lettered as a failure, then acknowledges it.
async fn dead_letter_loop(
    store: Arc<Store>,
    broker: BrokerConfig,
    mut stop: watch::Receiver<bool>,
    max_backoff: Duration,
) {
    let first = Duration::from_millis(500);
    let mut pause = first;
    let mut consumer: Option<DeadLetterConsumer> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let c = match consumer.as_mut() {
            Some(c) => c,
            None => match DeadLetterConsumer::connect(&broker).await {
                Ok(c) => {
                    pause = first;
                    consumer.insert(c)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "dead-letter queue not reachable yet");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    pause = (pause * 2).min(max_backoff);
                    continue;
                }
            },
        };
        match c.next(Duration::from_millis(500)).await {
            Ok(None) => {}
            Ok(Some(delivered)) => match keep_dead_letters(&store, &delivered.letters) {
                Ok(()) => {
                    if let Err(e) = delivered.ack(broker.timeout).await {
                        tracing::warn!(error = %e, "could not acknowledge a dead letter; it comes back and is recognised");
                        consumer = None;
                    }
                }
                Err(e) => {
                    // Not acknowledged: the broker keeps it and delivers it again.
                    tracing::error!(error = %e, "cannot keep a dead letter in the store");
                    consumer = None;
                    tokio::time::sleep(pause).await;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter consumer lost; reconnecting");
                consumer = None;
            }
        }
    }
    if let Some(c) = consumer {
        c.close().await;
    }
}

/// Keeps each letter of one delivery (a message, or each record of a batch message) as a
/// failure; the delivery is acknowledged only once all are kept. Each is idempotent, so a
/// delivery that comes back after a partial failure adds nothing twice.
pub fn keep_dead_letters(store: &Store, letters: &[DeadLetter]) -> Result<(), StoreError> {
    for letter in letters {
        let id = store.record_dead_letter(letter)?;
        crate::metrics::dead_letter();
        tracing::warn!(failure = id, message_id = %letter.message_id,
            routing_key = %letter.routing_key, reason = %letter.reason,
            "the platform dead-lettered a message; kept as a failure (see `failures show`)");
    }
    Ok(())
}

/// Raises one alert per feed and London day for feeds whose `expected_by` passed with nothing
/// arrived: a message on the bus (`ops.feed.missing.<council>`), through the outbox.
fn check_late_feeds(config: &Config, store: &Store, now: DateTime<Utc>) -> Result<(), StoreError> {
    for f in status::feed_statuses(config, store, now)? {
        let Some(late_since) = &f.late_since else {
            continue;
        };
        let day = now
            .with_timezone(&chrono_tz::Europe::London)
            .format("%Y-%m-%d")
            .to_string();
        let body = json!({
            "council": f.council,
            "feed": f.feed,
            "kind": "missing",
            "expected_by": f.expected_by,
            "deadline": late_since,
            "last_arrival": f.last_arrival,
            "message": format!("nothing arrived for {}/{} by {} (London time)", f.council, f.feed, f.expected_by.as_deref().unwrap_or("?")),
        });
        let message = envelope::alert_message("missing", &f.council, &f.feed, &day, &body, now);
        if store.raise_alert(&f.council, &f.feed, &day, &message)? {
            tracing::warn!(council = %f.council, feed = %f.feed, expected_by = f.expected_by.as_deref().unwrap_or(""),
                last_arrival = f.last_arrival.as_deref().unwrap_or("never"), "feed late: nothing arrived by its expected time; alert queued");
        }
    }
    Ok(())
}
