//! Story: an operator watches a node. `/metrics` (OpenMetrics, scraped by Prometheus) has
//! every family an operator needs, labelled only by bounded sets (worker, reason, limit,
//! direction: never a participant), and its counters move while media flows. The dashboard's
//! data (`/api/dashboard`) shows the room, its participants and their tracks with bitrates
//! and graphs.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sfumato_testkit::{http_get, http_get_json};

use crate::common::*;

/// Every sample of `/metrics`: `name{labels}` → value.
async fn scrape(server: &sfumato_testkit::TestServer) -> (String, HashMap<String, f64>) {
    let m = http_get(&server.url("/metrics")).await.must("GET /metrics");
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(
        m.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        m.content_type
    );
    let samples = m
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect();
    (m.body, samples)
}

/// The sum of `name` over its series.
fn total(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.as_str() == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// The label names of a series (`name{a="x",b="y"}` → a, b).
fn label_names(series: &str) -> Vec<&str> {
    let Some((_, labels)) = series.split_once('{') else {
        return Vec::new();
    };
    labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect()
}

const FAMILIES: &[&str] = &[
    "sfumato_rooms",
    "sfumato_participants",
    "sfumato_worker_up",
    "sfumato_auth_rejected_total",
    "sfumato_limit_hits_total",
    "sfumato_worker_peers",
    "sfumato_worker_sinks",
    "sfumato_worker_packets_in_total",
    "sfumato_worker_packets_forwarded_total",
    "sfumato_worker_bytes_in_total",
    "sfumato_worker_bytes_out_total",
    "sfumato_worker_drops_total",
    "sfumato_worker_nacks_in_total",
    "sfumato_worker_nacks_out_total",
    "sfumato_worker_plis_in_total",
    "sfumato_worker_firs_in_total",
    "sfumato_worker_rtx_out_total",
    "sfumato_worker_layer_changes_total",
    "sfumato_worker_pipe_out_total",
    "sfumato_worker_busy_seconds_total",
];

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_dashboard_follow_a_call() {
    let _serial = serial().await;
    let server = start(2).await;
    let (_, idle) = scrape(&server).await;
    for family in FAMILIES {
        assert!(
            idle.keys()
                .any(|s| s == family || s.starts_with(&format!("{family}{{"))),
            "{family} in /metrics: {idle:?}"
        );
    }

    // Alice and bob on two workers (placement spreads them): media crosses a pipe.
    let flow = Flow::start(&server, "obs").await;
    flow.assert_flowing("call").await;
    let (body, busy) = scrape(&server).await;
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    for name in [
        "sfumato_worker_bytes_in_total",
        "sfumato_worker_bytes_out_total",
        "sfumato_worker_packets_forwarded_total",
        "sfumato_worker_pipe_out_total",
        "sfumato_worker_busy_seconds_total",
    ] {
        assert!(
            total(&busy, name) > total(&idle, name),
            "{name} moved: {} → {}",
            total(&idle, name),
            total(&busy, name)
        );
    }
    assert_eq!(total(&busy, "sfumato_rooms"), 1.0);
    assert_eq!(total(&busy, "sfumato_participants"), 2.0);
    assert_eq!(total(&busy, "sfumato_worker_peers"), 3.0, "{body}");
    // Bounded labels only: no participant, room or track ever names a series.
    for series in busy.keys() {
        for label in label_names(series) {
            assert!(
                ["worker", "reason", "limit", "direction"].contains(&label),
                "unbounded label {label} in {series}"
            );
        }
        assert!(!series.contains("obs") && !series.contains(&flow.alice_id));
    }

    // The dashboard: the room, both participants, alice's tracks and bob's copies of them,
    // each with a bitrate and a graph.
    let url = server.url("/api/dashboard");
    let deadline = std::time::Instant::now() + MEDIA;
    let last = loop {
        let d = http_get_json(&url).await.must("GET /api/dashboard");
        if dashboard_shows_the_call(&d) {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard never showed the call: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let workers = last["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w["graphs"]["load"]
        .as_str()
        .is_some_and(|s| s.starts_with("<svg"))));

    // The page itself is served.
    let page = http_get(&server.url("/dashboard"))
        .await
        .must("GET /dashboard");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("dashboard.js"));

    flow.leave().await;
    assert_idle(&server).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let d = http_get_json(&url).await.must("GET /api/dashboard");
    assert_eq!(d["rooms"].as_array().map(Vec::len), Some(0), "{d:#}");
}

/// Room `obs` with alice publishing audio and video and bob receiving both, the videos
/// with a bitrate above zero and a graph.
fn dashboard_shows_the_call(d: &Value) -> bool {
    let Some(room) = d["rooms"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["room"] == "obs"))
    else {
        return false;
    };
    let people = room["participants"].as_array().cloned().unwrap_or_default();
    let tracks = |name: &str, dir: &str| -> Vec<Value> {
        people
            .iter()
            .filter(|p| p["name"] == name)
            .flat_map(|p| p["tracks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["direction"] == dir)
            .collect()
    };
    let flowing = |ts: &[Value]| {
        ts.len() == 2
            && ts.iter().any(|t| {
                t["kind"] == "video"
                    && t["bitrate_bps"].as_u64().is_some_and(|b| b > 0)
                    && t["graph"].as_str().is_some_and(|g| g.contains("<polyline"))
            })
    };
    people.len() == 2 && flowing(&tracks("alice", "publish")) && flowing(&tracks("bob", "receive"))
}
