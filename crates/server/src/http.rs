//! Plain HTTP: health, the admin API, Prometheus metrics (`metrics`), and the embedded demo
//! page, dashboard and SDK.

use axum::extract::{Path, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sfumato_worker::sfumato_core::{Command, ReplyBody, WorkerId, WorkerStats};

use crate::{metrics, App};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// What makes the node unfit to serve, if anything: a dead worker (its participants were
/// sent away, but the node runs short of a core until restarted), or the event task gone
/// (nothing the workers report is applied any more).
fn problems(app: &App) -> Vec<String> {
    let mut out: Vec<String> = (0..app.pool.len())
        .filter_map(|i| {
            let w = WorkerId(i as u16);
            Some(format!("worker {w} died: {}", app.pool.cause_of_death(w)?))
        })
        .collect();
    if !app.events.is_running() {
        out.push("the control plane's event task has ended".into());
    }
    out
}

/// `200 ok`, or `503` with the reasons, one per line.
pub async fn healthz(AxumState(app): AxumState<App>) -> Response {
    let problems = problems(&app);
    if problems.is_empty() {
        return "ok".into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n")).into_response()
}

pub async fn rooms(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = app.auth.admin(&headers, None) {
        return denied.response();
    }
    let state = app.state();
    let mut rooms: Vec<Value> = state
        .rooms
        .iter()
        .map(|(name, r)| json!({"room": name, "participants": r.participants.len()}))
        .collect();
    rooms.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
    Json(json!({ "rooms": rooms })).into_response()
}

/// One room: for `admin`, or `room_admin` of that room.
pub async fn room(
    AxumState(app): AxumState<App>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = app.auth.admin(&headers, Some(&room)) {
        return denied.response();
    }
    match app.state().room_json(&room) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no room `{room}`")).into_response(),
    }
}

/// Asks every live worker for its counters.
pub(crate) async fn worker_stats(app: &App) -> Vec<WorkerStats> {
    let mut all = Vec::with_capacity(app.pool.len());
    for i in 0..app.pool.len() {
        let w = WorkerId(i as u16);
        if !app.pool.is_alive(w) {
            continue;
        }
        match app.pool.call(w, |req| Command::Stats { req }).await {
            Ok(ReplyBody::Stats(s)) => all.push(*s),
            _ => tracing::warn!(worker = %w, "no stats from worker"),
        }
    }
    all
}

/// The cluster's live nodes with their load (this node alone, without a cluster).
pub async fn nodes(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = app.auth.admin(&headers, None) {
        return denied.response();
    }
    let Some(node) = &app.cluster else {
        let participants = app.state().local_participants();
        return Json(
            json!({"nodes": [{"id": null, "state": "serving", "participants": participants}]}),
        )
        .into_response();
    };
    let rejected = node.rejected.load(std::sync::atomic::Ordering::Relaxed);
    Json(
        json!({"self": node.id.to_string(), "nodes": node.nodes().iter().map(|n| json!({
        "id": n.node().to_string(),
        "url": n.url,
        "relay": n.relay.to_string(),
        "version": n.version,
        "state": n.state,
        "participants": n.participants,
        "rooms": n.rooms,
        "capacity": n.capacity,
        "load": n.load(),
    })).collect::<Vec<_>>(), "records_rejected": rejected}),
    )
    .into_response()
}

/// Drains node `id` (this one, or another through the cluster): it moves its participants
/// to other nodes and exits (docs/protocol.md). `202` once asked, `404` without a cluster.
pub async fn drain(
    AxumState(app): AxumState<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = app.auth.admin(&headers, None) {
        return denied.response();
    }
    let Some(node) = app.cluster.clone() else {
        return (StatusCode::NOT_FOUND, "this node is not in a cluster").into_response();
    };
    let Some(n) = id.strip_prefix('n').and_then(|n| n.parse::<u32>().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a node id (n<number>)"),
        )
            .into_response();
    };
    if n == node.id.0 {
        let timeout = node.drain_timeout;
        tokio::spawn(async move { node.drain(&app, timeout).await });
    } else if !node.nodes().iter().any(|x| x.id == n) {
        return (StatusCode::NOT_FOUND, format!("no live node `{id}`")).into_response();
    } else if let Err(e) = node.request_drain(n).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e}")).into_response();
    }
    (StatusCode::ACCEPTED, format!("node {id} drains")).into_response()
}

/// Every worker: its counters and `"alive": true`, or `"alive": false` and why it died.
pub async fn workers(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = app.auth.admin(&headers, None) {
        return denied.response();
    }
    let mut stats = worker_stats(&app).await;
    let workers: Vec<Value> = (0..app.pool.len())
        .map(|i| {
            let w = WorkerId(i as u16);
            if let Some(cause) = app.pool.cause_of_death(w) {
                return json!({"worker": w.0, "alive": false, "cause": cause});
            }
            let mut v = match stats.iter().position(|s| s.worker == w.0) {
                Some(at) => json!(stats.swap_remove(at)),
                None => json!({"worker": w.0}),
            };
            v["alive"] = json!(true);
            v
        })
        .collect();
    Json(json!({ "workers": workers })).into_response()
}

pub async fn metrics(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = app.auth.admin(&headers, None) {
        return denied.response();
    }
    let stats = worker_stats(&app).await;
    let (rooms, participants, held) = {
        let s = app.state();
        (s.rooms.len(), s.participants.len(), s.held())
    };
    let snapshot = metrics::Snapshot {
        workers_up: (0..app.pool.len())
            .map(|i| app.pool.is_alive(WorkerId(i as u16)))
            .collect(),
        event_task_up: app.events.is_running(),
        reports_failed: app.events.failed(),
        rooms,
        participants,
        held,
        auth_rejected: app.auth.rejected(),
        limit_hits: app.limits.hits(),
        stats,
        cluster_nodes: app.cluster.as_ref().map(|n| n.nodes().len()),
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&snapshot),
    )
        .into_response()
}

/// The demo page and the SDK, embedded at build time.
pub async fn asset(uri: Uri) -> Response {
    let path = match uri.path() {
        "/" => "/index.html",
        "/dashboard" => "/dashboard.html",
        "/share" => "/share.html",
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
