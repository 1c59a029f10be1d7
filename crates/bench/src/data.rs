//! `data`: data messages through Sfumato over the signaling WebSocket. One sender and N
//! receivers join a room (no media); the sender sends messages at a paced rate, first to
//! everyone (broadcast), then each to one receiver in turn (targeted). With `nodes: 2`, the
//! sender is on one node of a cluster (Redis started by the tool) and the receivers on the
//! other, so that every message crosses the relay between them. Each payload
//! starts with its send time, so every receiver measures the latency from the sender's
//! `send` to its own read; the report gives deliveries per second and latency p50/p99/max
//! per phase, and what did not arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use sfumato_core::data::{self, encode_send, parse_deliver};
use sfumato_core::MemberId;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::cluster::RedisServer;
use crate::stats::{LatencyHistogram, LatencySummary};
use crate::target::sfumato::{ClusterNode, SfumatoOptions, SfumatoServer};

const ROOM: &str = "bench-data";

#[derive(Debug, Clone)]
pub struct DataOptions {
    pub server: SfumatoOptions,
    pub receivers: usize,
    /// Messages the sender sends per phase.
    pub messages: usize,
    /// Messages per second the sender sends.
    pub rate: u32,
    /// Payload bytes (at least 8: the send time).
    pub payload: usize,
    /// 1: one node; 2: the sender on one node of a cluster, the receivers on another.
    pub nodes: usize,
}

#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub phase: &'static str,
    pub sent: usize,
    pub expected: u64,
    pub delivered: u64,
    /// Deliveries per second, from the first send to the last delivery.
    pub deliveries_per_sec: f64,
    pub latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct DataReport {
    pub receivers: usize,
    pub rate: u32,
    pub payload: usize,
    pub workers: usize,
    pub nodes: usize,
    pub phases: Vec<PhaseReport>,
}

impl DataReport {
    pub fn markdown(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |us| format!("{:.2}", us / 1000.0));
        let mut out = format!(
            "data messages: 1 sender, {} receivers, {} msg/s sent, {} B payloads, {} workers, {} node(s)\n\n\
             | phase | sent | delivered / expected | deliveries/s | p50 ms | p99 ms | max ms |\n\
             |---|---|---|---|---|---|---|\n",
            self.receivers, self.rate, self.payload, self.workers, self.nodes
        );
        for p in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {} / {} | {:.0} | {} | {} | {} |\n",
                p.phase,
                p.sent,
                p.delivered,
                p.expected,
                p.deliveries_per_sec,
                ms(p.latency.p50_us),
                ms(p.latency.p99_us),
                ms(p.latency.max_us)
            ));
        }
        out
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Joins the bench room; returns the socket and the participant id.
async fn join(url: &str, name: &str) -> anyhow::Result<(Socket, String)> {
    // Without Nagle's algorithm, as a browser's WebSocket: each message leaves at once.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let join = json!({"type": "join", "v": 1, "room": ROOM, "name": name});
    ws.send(Message::text(join.to_string())).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await? else {
            bail!("{name}: the socket closed before `joined`");
        };
        if let Message::Text(t) = msg? {
            let v: Value = serde_json::from_str(t.as_str())?;
            match v["type"].as_str() {
                Some("joined") => {
                    let id = v["participant"]["id"]
                        .as_str()
                        .context("joined without id")?;
                    return Ok((ws, id.to_string()));
                }
                Some("error") => bail!("{name}: join refused: {v}"),
                _ => {}
            }
        }
    }
    bail!("{name}: no `joined` within 10 s")
}

/// What the receivers measured in one phase.
#[derive(Default)]
struct Tally {
    hist: LatencyHistogram,
    last: Option<Instant>,
}

/// How many participants `server` lists in the bench room (`GET /api/rooms/{room}`).
async fn room_size(server: &SfumatoServer) -> usize {
    let Ok(r) = reqwest::get(format!("{}/api/rooms/{ROOM}", server.base_url())).await else {
        return 0;
    };
    let v: Value = r.json().await.unwrap_or_default();
    v["participants"].as_array().map_or(0, Vec::len)
}

/// The servers: one, or two nodes of a cluster with their Redis.
async fn start(opts: &DataOptions) -> anyhow::Result<(Vec<SfumatoServer>, Option<RedisServer>)> {
    if opts.nodes < 2 {
        return Ok((vec![SfumatoServer::start(&opts.server).await?], None));
    }
    let redis = RedisServer::start(&opts.server.log.with_extension("redis.log"))?;
    let mut nodes = Vec::new();
    for i in 0..2u16 {
        let o = SfumatoOptions {
            http_port: opts.server.http_port + 10 * i,
            rtc_port: opts.server.rtc_port + 10 * i,
            log: opts.server.log.with_extension(format!("node{}.log", i + 1)),
            cluster: Some(ClusterNode {
                redis: redis.url(),
                relay_port: opts.server.rtc_port + 10 * i + 9,
            }),
            ..opts.server.clone()
        };
        nodes.push(SfumatoServer::start(&o).await?);
    }
    Ok((nodes, Some(redis)))
}

pub async fn run(opts: &DataOptions) -> anyhow::Result<DataReport> {
    let payload = opts.payload.clamp(8, data::MAX_PAYLOAD);
    let (servers, _redis) = start(opts).await?;
    let (first, last) = (&servers[0], &servers[servers.len() - 1]);
    let (mut sender, _) = join(&first.ws_url(), "sender").await?;
    let url = last.ws_url();
    let base = Instant::now();
    let tallies: Arc<Mutex<[Tally; 2]>> = Arc::default();
    let delivered = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut ids = Vec::new();
    let mut readers = Vec::new();
    for i in 0..opts.receivers {
        let (mut ws, id) = join(&url, &format!("r{i}")).await?;
        ids.push(MemberId::parse(&id).context("a participant id")?);
        let (tallies, delivered) = (tallies.clone(), delivered.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Binary(frame) = msg else {
                    continue;
                };
                let now = Instant::now();
                let Ok(d) = parse_deliver(&frame) else {
                    continue;
                };
                let Some(sent) = d.payload.get(..8) else {
                    continue;
                };
                let sent_ns = u64::from_be_bytes(sent.try_into().unwrap_or_default());
                let p = usize::from(d.topic == "targeted");
                delivered[p].fetch_add(1, Ordering::Relaxed);
                let mut t = tallies.lock().unwrap_or_else(PoisonError::into_inner);
                let sent = base + Duration::from_nanos(sent_ns);
                t[p].hist.record(now.saturating_duration_since(sent));
                t[p].last = Some(now);
            }
        }));
    }
    // Everyone is in the room, as every node sees it, before the first message.
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in &servers {
        while room_size(s).await < opts.receivers + 1 {
            if Instant::now() > deadline {
                bail!("{} does not list everyone in the room", s.base_url());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut phases = Vec::new();
    for (p, name) in [(0usize, "broadcast"), (1, "targeted")] {
        let start = Instant::now();
        let every = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
        let mut body = vec![0u8; payload];
        for n in 0..opts.messages {
            let due = start + every.mul_f64(n as f64);
            tokio::time::sleep_until(due.into()).await;
            let to: &[MemberId] = if p == 0 {
                &[]
            } else {
                &ids[n % ids.len()..][..1]
            };
            let at = Instant::now().duration_since(base).as_nanos() as u64;
            body[..8].copy_from_slice(&at.to_be_bytes());
            let frame = encode_send(data::RELIABLE, n as u32, name, to, &body);
            sender.send(Message::binary(frame)).await?;
        }
        let expected = if p == 0 {
            (opts.messages * opts.receivers) as u64
        } else {
            opts.messages as u64
        };
        // Wait for the deliveries, up to 10 s after the last send.
        let deadline = Instant::now() + Duration::from_secs(10);
        while delivered[p].load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = delivered[p].load(Ordering::Relaxed);
        let t = tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let span = t[p]
            .last
            .map_or(Duration::ZERO, |l| l.saturating_duration_since(start));
        phases.push(PhaseReport {
            phase: name,
            sent: opts.messages,
            expected,
            delivered: got,
            deliveries_per_sec: got as f64 / span.as_secs_f64().max(1e-9),
            latency: t[p].hist.summary(),
        });
    }
    for r in readers {
        r.abort();
    }
    drop(servers);
    Ok(DataReport {
        receivers: opts.receivers,
        rate: opts.rate,
        payload,
        workers: opts.server.workers,
        nodes: opts.nodes.clamp(1, 2),
        phases,
    })
}
