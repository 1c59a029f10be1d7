//! Plain HTTP: health, the admin API, Prometheus metrics, and the embedded demo page and SDK.

use axum::extract::{Path, State as AxumState};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sfumato_worker::sfumato_core::{Command, ReplyBody, WorkerId, WorkerStats};

use crate::App;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn rooms(AxumState(app): AxumState<App>) -> Json<Value> {
    let state = app.state();
    let mut rooms: Vec<Value> = state
        .rooms
        .iter()
        .map(|(name, r)| json!({"room": name, "participants": r.participants.len()}))
        .collect();
    rooms.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
    Json(json!({ "rooms": rooms }))
}

pub async fn room(AxumState(app): AxumState<App>, Path(room): Path<String>) -> Response {
    match app.state().room_json(&room) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no room `{room}`")).into_response(),
    }
}

/// Asks every worker for its counters.
async fn worker_stats(app: &App) -> Vec<WorkerStats> {
    let mut all = Vec::with_capacity(app.pool.len());
    for i in 0..app.pool.len() {
        let w = WorkerId(i as u16);
        match app.pool.call(w, |req| Command::Stats { req }).await {
            Ok(ReplyBody::Stats(s)) => all.push(s),
            _ => tracing::warn!(worker = %w, "no stats from worker"),
        }
    }
    all
}

pub async fn workers(AxumState(app): AxumState<App>) -> Json<Value> {
    Json(json!({ "workers": worker_stats(&app).await }))
}

pub async fn metrics(AxumState(app): AxumState<App>) -> Response {
    let stats = worker_stats(&app).await;
    let (rooms, participants) = {
        let s = app.state();
        (s.rooms.len(), s.participants.len())
    };
    let mut out = String::new();
    out.push_str("# TYPE sfumato_rooms gauge\n");
    out.push_str(&format!("sfumato_rooms {rooms}\n"));
    out.push_str("# TYPE sfumato_participants gauge\n");
    out.push_str(&format!("sfumato_participants {participants}\n"));
    type Series = (&'static str, &'static str, fn(&WorkerStats) -> u64);
    let series: [Series; 18] = [
        ("sfumato_worker_peers", "gauge", |s| s.peers as u64),
        ("sfumato_worker_tracks", "gauge", |s| s.tracks as u64),
        ("sfumato_worker_subscriptions", "gauge", |s| {
            s.subscriptions as u64
        }),
        ("sfumato_worker_sinks", "gauge", |s| s.sinks as u64),
        ("sfumato_worker_datagrams_in_total", "counter", |s| {
            s.datagrams_in
        }),
        ("sfumato_worker_datagrams_out_total", "counter", |s| {
            s.datagrams_out
        }),
        ("sfumato_worker_datagrams_dropped_total", "counter", |s| {
            s.datagrams_dropped
        }),
        ("sfumato_worker_packets_in_total", "counter", |s| {
            s.packets_in
        }),
        ("sfumato_worker_packets_forwarded_total", "counter", |s| {
            s.packets_forwarded
        }),
        ("sfumato_worker_packets_dropped_total", "counter", |s| {
            s.packets_dropped
        }),
        ("sfumato_worker_pipe_in_total", "counter", |s| s.pipe_in),
        ("sfumato_worker_pipe_out_total", "counter", |s| s.pipe_out),
        ("sfumato_worker_pipe_dropped_total", "counter", |s| {
            s.pipe_dropped
        }),
        (
            "sfumato_worker_keyframe_requests_in_total",
            "counter",
            |s| s.keyframe_requests_in,
        ),
        (
            "sfumato_worker_keyframe_requests_sent_total",
            "counter",
            |s| s.keyframe_requests_sent,
        ),
        ("sfumato_worker_peers_failed_total", "counter", |s| {
            s.peers_failed
        }),
        ("sfumato_worker_plans_total", "counter", |s| s.plans),
        ("sfumato_worker_repairs_total", "counter", |s| s.repairs),
    ];
    for (name, kind, get) in series {
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        for s in &stats {
            out.push_str(&format!("{name}{{worker=\"{}\"}} {}\n", s.worker, get(s)));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The demo page and the SDK, embedded at build time.
pub async fn asset(uri: Uri) -> Response {
    let path = match uri.path() {
        "/" => "/index.html",
        p => p,
    };
    let Some((_, body)) = assets::ASSETS.iter().find(|(p, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let ctype = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("ts") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response()
}
