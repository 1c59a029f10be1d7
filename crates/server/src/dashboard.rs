//! The live dashboard's data (`GET /api/dashboard`; the page is web/dashboard.html). One
//! task samples the node once a second into bounded rings (the last [`HISTORY`] samples)
//! and draws each ring as a small SVG line with `plotters`; a request only copies the
//! latest result, so watching the dashboard costs the workers nothing more.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plotters::prelude::*;
use serde_json::{json, Value};
use sfumato_worker::sfumato_core::{PeerId, TrackStats, WorkerId, WorkerStats};

use crate::rooms::participant_key;
use crate::App;

/// Samples kept per series: two minutes at one a second.
pub const HISTORY: usize = 120;
const PERIOD: Duration = Duration::from_secs(1);
/// The size of one graph, in pixels.
const GRAPH: (u32, u32) = (180, 40);

const BLUE: RGBColor = RGBColor(0x2f, 0x6f, 0xd8);
const GREEN: RGBColor = RGBColor(0x2e, 0x9e, 0x55);
const ORANGE: RGBColor = RGBColor(0xe0, 0x7b, 0x1a);

/// The latest dashboard, as `/api/dashboard` serves it.
#[derive(Default)]
pub struct Board {
    latest: Mutex<Value>,
}

impl Board {
    fn set(&self, v: Value) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    fn get(&self) -> Value {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `GET /api/dashboard`: for an admin token (anyone in development mode).
pub async fn data(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = app.auth.admin(&headers, None) {
        return denied.response();
    }
    Json(app.dashboard.get()).into_response()
}

/// Starts the sampling task.
pub fn spawn(app: App) {
    tokio::spawn(async move {
        let mut sampler = Sampler::default();
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stats = crate::http::worker_stats(&app).await;
            let v = sampler.sample(&app, Instant::now(), stats);
            app.dashboard.set(v);
        }
    });
}

/// The last [`HISTORY`] values of one series, oldest first.
#[derive(Default)]
struct Ring(VecDeque<f64>);

impl Ring {
    fn push(&mut self, v: f64) {
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(v);
    }
}

/// What the sampling task keeps between samples.
#[derive(Default)]
struct Sampler {
    rings: HashMap<String, Ring>,
    /// Each worker's counters at the previous sample, and when.
    previous: HashMap<u16, (Instant, WorkerStats)>,
    started: Option<Instant>,
}

/// Per second, from two readings of a counter `span` apart.
fn rate(now: u64, before: u64, span: Duration) -> f64 {
    if span.is_zero() {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / span.as_secs_f64()
}

impl Sampler {
    /// Pushes `value` on series `key` (kept) and draws the series.
    fn record(
        &mut self,
        keep: &mut Vec<String>,
        key: String,
        value: f64,
        color: RGBColor,
    ) -> String {
        let ring = self.rings.entry(key.clone()).or_default();
        ring.push(value);
        let svg = sparkline(&ring.0, color);
        keep.push(key);
        svg
    }

    fn sample(&mut self, app: &App, now: Instant, stats: Vec<WorkerStats>) -> Value {
        let started = *self.started.get_or_insert(now);
        let mut keep = Vec::new();
        let (mut pps_in, mut bps_in, mut bps_out) = (0.0, 0.0, 0.0);
        let mut workers = Vec::new();
        for i in 0..app.pool.len() {
            let w = WorkerId(i as u16);
            let Some(s) = stats.iter().find(|s| s.worker == w.0) else {
                let cause = app.pool.cause_of_death(w);
                workers.push(json!({"worker": w.0, "alive": false, "cause": cause}));
                continue;
            };
            let (load, pps, bps) = match self.previous.get(&w.0) {
                Some((at, p)) => {
                    let span = now.saturating_duration_since(*at);
                    let busy = rate(s.busy_ns, p.busy_ns, span) / 1e9;
                    (
                        busy.min(1.0),
                        rate(s.packets_in, p.packets_in, span),
                        (
                            rate(s.bytes_in, p.bytes_in, span) * 8.0,
                            rate(s.bytes_out, p.bytes_out, span) * 8.0,
                        ),
                    )
                }
                None => (0.0, 0.0, (0.0, 0.0)),
            };
            pps_in += pps;
            bps_in += bps.0;
            bps_out += bps.1;
            let load_graph = self.record(&mut keep, format!("w{i}:load"), load * 100.0, ORANGE);
            let pps_graph = self.record(&mut keep, format!("w{i}:pps"), pps, BLUE);
            workers.push(json!({
                "worker": w.0,
                "alive": true,
                "load": load,
                "peers": s.peers,
                "tracks": s.tracks,
                "subscriptions": s.subscriptions,
                "pipes": s.sinks,
                "packets_in_per_s": pps,
                "bitrate_in_bps": bps.0,
                "bitrate_out_bps": bps.1,
                "graphs": {"load": load_graph, "packets": pps_graph},
            }));
            self.previous.insert(w.0, (now, s.clone()));
        }
        let node_graphs = json!({
            "packets": self.record(&mut keep, "node:pps".into(), pps_in, BLUE),
            "bitrate_in": self.record(&mut keep, "node:bps_in".into(), bps_in, GREEN),
            "bitrate_out": self.record(&mut keep, "node:bps_out".into(), bps_out, ORANGE),
        });
        let media: Vec<&TrackStats> = stats.iter().flat_map(|s| &s.media).collect();
        let rooms = self.rooms(app, &media, &mut keep);
        // Series of what is gone (a track, a dead worker) go with it.
        self.rings.retain(|k, _| keep.contains(k));
        let (room_count, participants) = {
            let s = app.state();
            (s.rooms.len(), s.participants.len())
        };
        let nodes = match &app.cluster {
            Some(node) => node
                .nodes()
                .iter()
                .map(|n| {
                    json!({
                        "id": n.node().to_string(),
                        "url": n.url,
                        "state": n.state,
                        "participants": n.participants,
                        "rooms": n.rooms,
                        "load": n.load(),
                        "self": n.id == node.id.0,
                    })
                })
                .collect(),
            None => vec![json!({
                "id": null, "state": "serving", "participants": participants,
                "rooms": room_count, "self": true,
            })],
        };
        json!({
            "uptime_s": now.saturating_duration_since(started).as_secs(),
            "history_s": HISTORY,
            "node": {
                "rooms": room_count,
                "participants": participants,
                "packets_in_per_s": pps_in,
                "bitrate_in_bps": bps_in,
                "bitrate_out_bps": bps_out,
                "graphs": node_graphs,
            },
            "nodes": nodes,
            "workers": workers,
            "rooms": rooms,
        })
    }

    /// Every room with its participants, and each participant's tracks: those it publishes
    /// and those it receives, with their latest measures and bitrate graph.
    fn rooms(&mut self, app: &App, media: &[&TrackStats], keep: &mut Vec<String>) -> Vec<Value> {
        // Read under the lock, drawn after it.
        struct Row {
            room: String,
            participants: Vec<(Value, Vec<PeerId>)>,
        }
        let (rows, owners) = {
            let s = app.state();
            let mut names: Vec<&String> = s.rooms.keys().collect();
            names.sort();
            let rows: Vec<Row> = names
                .into_iter()
                .map(|name| Row {
                    room: name.clone(),
                    participants: s.rooms[name]
                        .participants
                        .iter()
                        .filter_map(|id| s.participants.get(id))
                        .map(|p| {
                            let v = json!({
                                "id": participant_key(p.id),
                                "name": p.name,
                                "worker": p.worker.0,
                                "kind": p.client.kind(),
                            });
                            (v, p.publisher.into_iter().chain(p.subscriber).collect())
                        })
                        .collect(),
                })
                .collect();
            let owners: HashMap<String, String> = s
                .tracks
                .iter()
                .filter_map(|(t, i)| {
                    let owner = s.participants.get(&i.owner)?;
                    Some((t.to_string(), owner.name.clone()))
                })
                .collect();
            (rows, owners)
        };
        rows.into_iter()
            .map(|row| {
                let participants: Vec<Value> = row
                    .participants
                    .into_iter()
                    .map(|(mut v, peers)| {
                        let mut tracks = Vec::new();
                        for t in media.iter().filter(|t| peers.contains(&t.peer)) {
                            let dir = if t.published { "publish" } else { "receive" };
                            let key = format!("t{}:{}:{dir}", t.peer, t.track);
                            let color = if t.published { GREEN } else { BLUE };
                            let graph = self.record(keep, key, t.bitrate_bps as f64, color);
                            let id = t.track.to_string();
                            tracks.push(json!({
                                "id": id,
                                "kind": t.kind.as_str(),
                                "direction": dir,
                                "from": (!t.published).then(|| owners.get(&id)).flatten(),
                                "layer": t.layer,
                                "layers": t.layers,
                                "bitrate_bps": t.bitrate_bps,
                                "loss": t.loss,
                                "rtt_ms": t.rtt_ms,
                                "graph": graph,
                            }));
                        }
                        // Published first, then by track: rows keep their place between
                        // refreshes (the workers report in no particular order).
                        tracks.sort_by(|a, b| {
                            let key = |t: &Value| {
                                (
                                    t["direction"] != "publish",
                                    t["id"].to_string(),
                                    t["kind"].to_string(),
                                )
                            };
                            key(a).cmp(&key(b))
                        });
                        v["tracks"] = json!(tracks);
                        v
                    })
                    .collect();
                json!({"room": row.room, "participants": participants})
            })
            .collect()
    }
}

/// `values` (oldest first) as a line over the last [`HISTORY`] samples, scaled to its own
/// maximum: an SVG document of [`GRAPH`] pixels.
fn sparkline(values: &VecDeque<f64>, color: RGBColor) -> String {
    let mut svg = String::new();
    if let Err(e) = draw(&mut svg, values, color) {
        tracing::debug!("drawing a graph: {e}");
    }
    svg
}

fn draw<'a>(
    svg: &'a mut String,
    values: &VecDeque<f64>,
    color: RGBColor,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(svg, GRAPH).into_drawing_area();
    let top = values.iter().copied().fold(0.0, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .margin(2)
        .build_cartesian_2d(0..HISTORY as i32 - 1, 0.0..top)?;
    let first = (HISTORY - values.len()) as i32;
    chart.draw_series(LineSeries::new(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (first + i as i32, *v)),
        color.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_last_samples() {
        let mut r = Ring::default();
        for i in 0..HISTORY + 5 {
            r.push(i as f64);
        }
        assert_eq!(r.0.len(), HISTORY);
        assert_eq!(r.0.front(), Some(&5.0));
    }

    #[test]
    fn a_sparkline_is_an_svg_that_follows_its_values() {
        let a = sparkline(&VecDeque::from(vec![1.0, 5.0, 2.0]), BLUE);
        let b = sparkline(&VecDeque::from(vec![1.0, 5.0, 2.0, 9.0]), BLUE);
        assert!(a.starts_with("<svg"), "{a}");
        assert!(a.contains("<polyline"), "{a}");
        assert_ne!(a, b);
        // An empty series is still a (blank) picture.
        assert!(sparkline(&VecDeque::new(), BLUE).starts_with("<svg"));
    }
}
