//! The optional per-directory log of raw SCIM requests and responses, for debugging an
//! IdP's behaviour.
//!
//! An axum middleware ([`record`]) wraps the SCIM router. For a directory whose log is
//! off (the default; a cached per-directory switch says so) it only passes the request
//! on. For one whose log is on it keeps the request's bytes and the answer's, and after
//! the answer is built hands them to a bounded channel without waiting: a writer task
//! strips secrets, caps the bodies and inserts in batches. If the channel is full the
//! entry is dropped and counted (`directory_scim_log_dropped`), so logging never holds
//! up or fails an IdP's request. The worker prunes rows past each directory's retention.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::app::{DirectorySync, page_size};
use crate::domain::scim_log::{BODY_CAP, capture_body, directory_of_path, loggable_headers, redact_path};
use crate::error::SyncError;
use crate::store::{DieselStore, Page, ScimRequestRow};

/// Entries waiting for the writer; past this, new ones are dropped and counted.
const QUEUE_CAPACITY: usize = 1024;

/// Most entries per INSERT transaction.
const BATCH: usize = 100;

/// Largest answer kept whole for the log; a larger one streams through unlogged
/// (flagged truncated). SCIM answers are pages of at most a few MiB.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// One request and its answer, raw, as the middleware saw them.
#[derive(Debug)]
pub struct ScimExchange {
    /// UUIDv7 taken on arrival, so ids sort by arrival.
    pub id: String,
    /// The directory.
    pub directory_id: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every request header (filtered by the writer).
    pub headers: HeaderMap,
    /// The request body; `None` when too large to keep.
    pub request_body: Option<Bytes>,
    /// HTTP status of the answer.
    pub status: u16,
    /// The answer's body; `None` when too large to keep.
    pub response_body: Option<Bytes>,
    /// Time to answer.
    pub duration: Duration,
}

/// The stored row of an exchange: headers filtered, secrets stripped, bodies capped.
pub fn to_row(e: ScimExchange) -> ScimRequestRow {
    let headers = loggable_headers(e.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let headers: serde_json::Map<String, serde_json::Value> =
        headers.into_iter().map(|(n, v)| (n, serde_json::Value::String(v))).collect();
    let capture = |b: Option<Bytes>| match b {
        Some(b) => capture_body(&b, BODY_CAP),
        None => (String::new(), true),
    };
    let (request_body, request_truncated) = capture(e.request_body);
    let (response_body, response_truncated) = capture(e.response_body);
    ScimRequestRow {
        id: e.id,
        directory_id: e.directory_id,
        received_at: DateTime::from_timestamp_micros(e.received_at.timestamp_micros())
            .unwrap_or(e.received_at)
            .naive_utc(),
        method: e.method,
        path: redact_path(&e.path),
        request_headers: serde_json::Value::Object(headers).to_string(),
        request_body,
        request_truncated,
        status: i32::from(e.status),
        response_body,
        response_truncated,
        duration_us: i64::try_from(e.duration.as_micros()).unwrap_or(i64::MAX),
    }
}

/// The log's sending side, held by the HTTP front. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ScimLog {
    store: DieselStore,
    tx: mpsc::Sender<ScimExchange>,
    dropped: Counter,
    max_body_bytes: usize,
}

impl ScimLog {
    /// The log over `store`, and its writer task, which ends once every [`ScimLog`]
    /// clone is dropped and what they sent is written. `max_body_bytes` is the SCIM
    /// router's own limit: a larger request streams through unlogged.
    pub fn start(store: DieselStore, max_body_bytes: usize, dropped: Counter) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = tokio::spawn(write_loop(store.clone(), rx, dropped.clone()));
        (Self { store, tx, dropped, max_body_bytes }, writer)
    }

    /// Hands an exchange to the writer without waiting; drops and counts it when full.
    fn offer(&self, e: ScimExchange) {
        if let Err(e) = self.tx.try_send(e) {
            self.dropped.inc();
            if let mpsc::error::TrySendError::Full(e) = e {
                tracing::debug!(directory = %e.directory_id, "scim request log full: entry dropped");
            }
        }
    }
}

async fn write_loop(store: DieselStore, mut rx: mpsc::Receiver<ScimExchange>, dropped: Counter) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        // Redaction parses bodies of up to the SCIM limit: off the async threads.
        let rows = match tokio::task::spawn_blocking(move || batch.into_iter().map(to_row).collect::<Vec<_>>()).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, entries = n, "scim request log: entries dropped");
                dropped.inc_by(n);
                continue;
            }
        };
        if let Err(e) = store.insert_scim_requests(rows).await {
            tracing::warn!(error = %e, entries = n, "scim request log write failed: entries dropped");
            dropped.inc_by(n);
        }
    }
}

/// Reads a whole body if it is at most `limit` bytes. Otherwise (or on a read error)
/// gives back a body yielding exactly what the original would have, and `None`.
async fn take_body(body: Body, limit: usize) -> (Body, Option<Bytes>) {
    let mut stream = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                kept.extend_from_slice(&c);
                if kept.len() > limit {
                    let head = futures::stream::once(async move { Ok::<_, axum::Error>(Bytes::from(kept)) });
                    return (Body::from_stream(head.chain(stream)), None);
                }
            }
            Err(e) => {
                let head = futures::stream::iter([Ok(Bytes::from(kept)), Err(e)]);
                return (Body::from_stream(head.chain(stream)), None);
            }
        }
    }
    let bytes = Bytes::from(kept);
    (Body::from(bytes.clone()), Some(bytes))
}

/// The middleware: logs SCIM exchanges of directories whose log is on, after the
/// answer is built, never changing it.
pub async fn record(State(log): State<ScimLog>, req: Request, next: Next) -> Response {
    let Some(directory_id) = directory_of_path(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    let days = match log.store.scim_log_days(&directory_id).await {
        Ok(d) => d,
        Err(e) => {
            // The SCIM router will meet the same database; the log just stays quiet.
            tracing::debug!(directory = %directory_id, error = %e, "scim log switch unreadable: not logging");
            0
        }
    };
    if days == 0 {
        return next.run(req).await;
    }
    let started = Instant::now();
    let received_at = Utc::now();
    let id = uuid::Uuid::now_v7().to_string();
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let headers = parts.headers.clone();
    let (body, request_body) = take_body(body, log.max_body_bytes).await;
    let response = next.run(Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    let (body, response_body) = take_body(body, MAX_RESPONSE_BYTES).await;
    log.offer(ScimExchange {
        id,
        directory_id,
        received_at,
        method,
        path,
        headers,
        request_body,
        status: parts.status.as_u16(),
        response_body,
        duration: started.elapsed(),
    });
    Response::from_parts(parts, body)
}

impl DirectorySync {
    /// A directory's logged SCIM exchanges, newest first.
    pub async fn scim_requests(&self, dir: &str, size: i32, token: &str) -> Result<Page<ScimRequestRow>, SyncError> {
        let size = page_size(size)?;
        let store = &self.engine.store;
        crate::store::SyncStore::get_directory(store, dir).await?;
        store.list_scim_requests(dir, (!token.is_empty()).then(|| token.to_string()), size).await
    }
}
