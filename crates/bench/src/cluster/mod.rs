//! `sfumato-bench cluster`: Sfumato nodes in a cluster on loopback (one `redis-server` on a
//! free port, nodes on 127.0.0.1 with ports of their own), driven by the same fleet as the
//! other scenarios. Four measurements, in this order, on one two-node cluster, and a fifth on
//! a cluster of its own:
//!
//! 1. **One node against two.** A fan-out room 1→N entirely on node 1, then the same room
//!    (same N) with its receivers spread over both nodes and the publisher on node 1. Both
//!    over one steady-state window like [`crate::scenario`]'s: server CPU (every node
//!    process, summed, from /proc) per packet the receivers got, loss, latency, and the
//!    relay's traffic (`GET /api/workers`: the relay worker's link counters) and its
//!    thread's CPU.
//! 2. **Relay bytes per remote node**: bytes that crossed between the nodes in the window
//!    (every node's relay datagrams, sent) ÷ bytes the publisher sent to its node (its UDP
//!    payloads) ÷ the remote nodes with receivers (1 here).
//! 3. **Join time**: a receiver's signaling join → its first media packet, on node 2 which
//!    does not hold the room yet (its publisher is on node 1), then on node 1 which does; a
//!    fresh room per sample.
//! 4. **Recovery**: a room whose publisher and some receivers are on node 1, others on node
//!    2; node 1 gets `kill -9`. Its participants reconnect the way the browser SDK does
//!    (client/room.js: backoff of 500 ms · 2^(attempt−1) ± 20%, first to their own node, then
//!    to the other serving nodes the server listed, the next one at once after a node that
//!    cannot be reached, one backoff per round), join again, the publisher publishes
//!    again; each is back when it receives media again (the publisher: when its new stream
//!    reaches a receiver). Each step of the way is timed. Participants: [`roam`].
//! 5. **Drain** ([`drain`]): a publisher and receivers on each node; node 2 drains and its
//!    participants move make-before-break as the SDK does; the longest gap in the video each
//!    participant shows of each publisher, and each step of the moves.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::fleet::{Fleet, FleetConfig, OfferKind, PeerConfig, PeerHandle, PeerReport};
use crate::media::{base_source, MediaConfig, StreamKind};
use crate::procstat;
use crate::scenario::{self, Running, GRACE, WARMUP};
use crate::target::sfumato::{Answerer, ClusterNode, Session, SfumatoOptions, SfumatoServer};

mod drain;
mod roam;

pub use drain::{longest_gap, shown_frames, DrainReport};
pub use roam::{backoff_delay, reconnect_url, RoamEvent};
use roam::{Incarnation, Roamer, Roaming};

/// What `sfumato-bench cluster` runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The sfumato binary.
    pub bin: PathBuf,
    /// Where logs and `cluster.json` go.
    pub out: PathBuf,
    /// `taskset -c` list of every node (all on the same CPUs: their CPU is summed).
    pub node_cpus: Option<String>,
    /// Fleet threads.
    pub threads: usize,
    /// Receivers of the fan-out room (1 publisher + this many participants).
    pub receivers: usize,
    /// The steady-state window of measurements 1 and 2.
    pub window: Duration,
    /// Join samples (rooms) of measurement 3.
    pub join_samples: usize,
    /// Receivers on each node in the recovery room (plus the publisher on node 1).
    pub recovery_receivers: usize,
    /// How long to wait for everyone to be back after the kill (and, in the drain, for
    /// everyone to have moved and the drained node to have exited).
    pub recovery_timeout: Duration,
    /// Receivers on each node in the drain room (plus a publisher on each).
    pub drain_receivers: usize,
    pub video_bitrate: u32,
    /// The nodes' `--bandwidth-estimation`.
    pub bandwidth_estimation: bool,
    /// Publishers send their video in three simulcast layers, as the SDK does by default.
    pub simulcast: bool,
    /// Node i listens on HTTP `port_base + 10·i`, its worker on `+ 100`, its relay `+ 101`.
    pub port_base: u16,
}

impl ClusterOptions {
    /// `--quick`: a fan-out 1→20, 10 s windows, 5 join samples, 2 + 2 receivers in recovery.
    pub fn quick(bin: PathBuf, out: PathBuf) -> Self {
        Self {
            bin,
            out,
            node_cpus: None,
            threads: 1,
            receivers: 20,
            window: Duration::from_secs(10),
            join_samples: 5,
            recovery_receivers: 2,
            drain_receivers: 2,
            recovery_timeout: Duration::from_secs(30),
            video_bitrate: 1_000_000,
            bandwidth_estimation: false,
            simulcast: true,
            port_base: 28600,
        }
    }

    /// The full run: a fan-out 1→60, 20 s windows, 15 join samples, 5 + 5 in recovery.
    pub fn full(bin: PathBuf, out: PathBuf) -> Self {
        Self {
            receivers: 60,
            window: Duration::from_secs(20),
            join_samples: 15,
            recovery_receivers: 5,
            drain_receivers: 5,
            ..Self::quick(bin, out)
        }
    }
}

// ------------------------------------------------------------------------------ Redis

/// Installs Debian's `redis-server` with apt-get if it is not on the PATH.
pub fn install_redis_if_missing() -> anyhow::Result<()> {
    if has_redis() {
        return Ok(());
    }
    eprintln!("installing Debian's redis-server (apt-get)");
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed ({update})");
    }
    let install = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "redis-server",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install redis-server")?;
    if !install.success() || !has_redis() {
        bail!("apt-get install redis-server failed ({install})");
    }
    Ok(())
}

fn has_redis() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `redis-server` in memory on a free loopback port, killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts it (`--save '' --appendonly no`) and waits until it answers `PING`.
    pub fn start(log: &Path) -> anyhow::Result<Self> {
        let port = free_tcp_port()?;
        let log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let redis = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.pings() {
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    fn pings(&self) -> bool {
        use std::io::{Read, Write};
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

// ------------------------------------------------------------------------ the cluster

/// Redis and the nodes. A killed node stays in its slot as `None`.
pub struct Cluster {
    _redis: RedisServer,
    nodes: Vec<Option<SfumatoServer>>,
}

impl Cluster {
    /// Starts Redis and `n` nodes (one worker each), and waits until every node lists them
    /// all in `GET /api/nodes`. Logs go to `{label}-redis.log` and `{label}-node{i}.log`.
    pub async fn start(opts: &ClusterOptions, n: usize, label: &str) -> anyhow::Result<Cluster> {
        let redis = RedisServer::start(&opts.out.join(format!("{label}-redis.log")))?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let base = opts.port_base + 10 * i as u16;
            let node = SfumatoServer::start(&SfumatoOptions {
                bin: opts.bin.clone(),
                workers: 1,
                placement: "spread",
                cpus: opts.node_cpus.clone(),
                http_port: base,
                rtc_port: base + 100,
                log: opts.out.join(format!("{label}-node{}.log", i + 1)),
                bandwidth_estimation: opts.bandwidth_estimation,
                extra_args: Vec::new(),
                cluster: Some(ClusterNode {
                    redis: redis.url(),
                    relay_port: base + 101,
                }),
            })
            .await
            .with_context(|| format!("starting node {}", i + 1))?;
            nodes.push(Some(node));
        }
        let cluster = Cluster {
            _redis: redis,
            nodes,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in cluster.live() {
            loop {
                let listed = node
                    .nodes()
                    .await
                    .ok()
                    .and_then(|v| v["nodes"].as_array().map(Vec::len));
                if listed == Some(n) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {} lists {listed:?} nodes, not {n}", node.base_url());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(cluster)
    }

    fn live(&self) -> impl Iterator<Item = &SfumatoServer> {
        self.nodes.iter().flatten()
    }

    /// Node `i` (0-based), if it runs.
    pub fn node(&self, i: usize) -> anyhow::Result<&SfumatoServer> {
        self.nodes
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("node {} is not running", i + 1))
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.live().map(SfumatoServer::pid).collect()
    }

    /// `kill -9` of node `i`.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let mut node = self
            .nodes
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("node {} is not running", i + 1))?;
        node.kill().context("kill -9")
    }

    /// Node `i`'s exit status if it has exited by itself (a drained node does); it then
    /// stays in its slot.
    pub fn exited(&mut self, i: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let node = self
            .nodes
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| anyhow!("node {} is not running", i + 1))?;
        node.try_wait()
            .with_context(|| format!("waiting for node {}", i + 1))
    }

    /// CPU time of every running node, summed.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for pid in self.pids() {
            total += procstat::sample(pid)?.cpu;
        }
        Ok(total)
    }

    /// CPU time of the running nodes' threads by name (`sfumato-worker-` for the media
    /// workers, whose names the kernel cuts at 15 bytes, `tokio-runtime-w`
    /// for the control plane, …), summed over the nodes.
    fn thread_cpu(&self) -> BTreeMap<String, Duration> {
        let mut out = BTreeMap::new();
        for (name, cpu) in self
            .pids()
            .into_iter()
            .filter_map(|pid| procstat::thread_cpu(pid).ok())
            .flatten()
        {
            *out.entry(name).or_insert(Duration::ZERO) += cpu;
        }
        out
    }

    /// The relay links' counters of every running node, summed.
    async fn relay(&self) -> anyhow::Result<RelayCounters> {
        let mut total = RelayCounters::default();
        for node in self.live() {
            total.add(&RelayCounters::from_workers(&node.workers().await?));
        }
        Ok(total)
    }
}

/// A node's relay link counters (`GET /api/workers`, the relay worker's `link`), or several
/// nodes' added up. Everything a node sends or receives on its relay socket: media, resends,
/// NACKs, keyframe requests and layer demand, pings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelayCounters {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    /// Media sent again after a NACK.
    pub resent: u64,
    /// Media given up on.
    pub lost: u64,
}

impl RelayCounters {
    /// From a `GET /api/workers` answer (workers without a `link` count nothing).
    pub fn from_workers(v: &Value) -> Self {
        let mut c = RelayCounters::default();
        for link in v["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("link"))
        {
            let n = |k: &str| link[k].as_u64().unwrap_or(0);
            c.add(&RelayCounters {
                datagrams_sent: n("sent"),
                bytes_sent: n("bytes_sent"),
                datagrams_received: n("received"),
                bytes_received: n("bytes_received"),
                resent: n("resent"),
                lost: n("lost"),
            });
        }
        c
    }

    pub fn add(&mut self, o: &RelayCounters) {
        self.datagrams_sent += o.datagrams_sent;
        self.bytes_sent += o.bytes_sent;
        self.datagrams_received += o.datagrams_received;
        self.bytes_received += o.bytes_received;
        self.resent += o.resent;
        self.lost += o.lost;
    }

    /// `self − earlier`, counter by counter.
    pub fn since(&self, earlier: &RelayCounters) -> RelayCounters {
        RelayCounters {
            datagrams_sent: self.datagrams_sent.saturating_sub(earlier.datagrams_sent),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            datagrams_received: self
                .datagrams_received
                .saturating_sub(earlier.datagrams_received),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            resent: self.resent.saturating_sub(earlier.resent),
            lost: self.lost.saturating_sub(earlier.lost),
        }
    }
}

// ----------------------------------------------------------------------- participants

/// One participant as the bench drives it: a signaling session, a subscribe peer the server
/// offers to, and a publish peer if it publishes.
struct Member {
    session: Session,
    receiver: Arc<PeerHandle>,
    publisher: Option<PeerHandle>,
    /// Just before its receiver peer was made and its socket opened.
    started: Instant,
    /// `joined` came back.
    joined: Instant,
    /// `publish_answer` came back (publishers).
    published: Option<Instant>,
}

/// How a participant joins ([`join_member`]).
#[derive(Clone, Copy, Default)]
struct Joining<'a> {
    /// What it publishes, if it does.
    publish: Option<&'a MediaConfig>,
    /// Its session on another node that it moves from (`join`'s `replaces`).
    replaces: Option<&'a str>,
    /// Its subscribe peer keeps a log of the video frames it receives.
    frame_log: bool,
}

impl<'a> Joining<'a> {
    fn publishing(media: &'a MediaConfig) -> Self {
        Joining {
            publish: Some(media),
            ..Joining::default()
        }
    }
}

/// Joins `room` at `ws_url` as `name` (and publishes), as [`scenario`] does.
async fn join_member(
    fleet: &Fleet,
    ws_url: &str,
    room: &str,
    name: &str,
    how: Joining<'_>,
) -> anyhow::Result<Member> {
    let started = Instant::now();
    let receiver = Arc::new(fleet.add_peer(PeerConfig {
        frame_log: how.frame_log,
        ..PeerConfig::receiver(format!("{name}-sub"))
    })?);
    let answering = receiver.clone();
    let answerer: Answerer = Arc::new(move |offer: String| {
        let peer = answering.clone();
        Box::pin(async move { peer.accept_offer(&offer).await })
    });
    let mut session = Session::join_replacing(ws_url, room, name, how.replaces, answerer).await?;
    let joined = Instant::now();
    let mut publisher = None;
    let mut published = None;
    if let Some(media) = how.publish {
        let p = fleet.add_peer(PeerConfig::publisher(format!("{name}-pub"), media.clone()))?;
        let offer = p.create_offer(OfferKind::Publish).await?;
        let answer = session.publish(offer).await?;
        p.accept_answer(&answer).await?;
        published = Some(Instant::now());
        publisher = Some(p);
    }
    Ok(Member {
        session,
        receiver,
        publisher,
        started,
        joined,
        published,
    })
}

/// Polls `peer` until `done` holds (returning that report) or `timeout` passes.
async fn stats_until(
    peer: &PeerHandle,
    timeout: Duration,
    done: impl Fn(&PeerReport) -> bool,
) -> anyhow::Result<PeerReport> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = peer.stats().await?;
        if done(&r) {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!("{}: not within {timeout:?}", peer.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn media(opts: &ClusterOptions) -> MediaConfig {
    MediaConfig {
        video_bitrate: opts.video_bitrate,
        simulcast: opts.simulcast,
        ..MediaConfig::default()
    }
}

// -------------------------------------------------------------- 1 and 2: steady state

/// One fan-out room over one window, on one node or spread over two.
#[derive(Debug, Clone, Serialize)]
pub struct SpreadReport {
    /// Nodes holding the room's receivers (the publisher is on node 1).
    pub nodes: usize,
    /// The simulcast layer the receivers of the other nodes asked for (`quality`), if one.
    pub remote_quality: Option<String>,
    pub receivers: usize,
    /// Receivers on each node.
    pub receivers_per_node: Vec<usize>,
    pub window_s: f64,
    /// Media packets the receivers got in the window, per second.
    pub forwarded_pps: f64,
    /// Every node process, user + system, in % of one core.
    pub server_cpu_pct: f64,
    pub server_cpu_us_per_pkt: f64,
    pub loss_pct: f64,
    pub packets_lost: u64,
    pub packets_expected: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Relay link traffic over the window (every node, summed).
    pub relay: RelayCounters,
    /// Relay datagrams sent per second (every node).
    pub relay_pps: f64,
    /// Relay bytes sent per second (every node).
    pub relay_bytes_per_s: f64,
    /// The UDP payload bytes the publisher sent to node 1 over the same interval.
    pub published_bytes: u64,
    /// `relay.bytes_sent / published_bytes / remote nodes` (0 on one node).
    pub relay_bytes_per_remote_node: f64,
    /// Every node's threads by name, in % of one core (see `Cluster::thread_cpu`).
    pub cpu_by_thread_pct: BTreeMap<String, f64>,
    /// Datagrams the publisher sent per second over the window (media, RTCP, STUN).
    pub published_pps: f64,
    /// How late the publisher wrote media against its schedule over the window, p99: a
    /// generator that falls behind (a busy machine) shows here first.
    pub publisher_send_lag_p99_ms: f64,
    /// The fleet threads' CPU over the window, in % of the cores they may use.
    pub generator_cpu_pct: f64,
}

/// A publisher's media written later than this (p99) means the generator could not keep up:
/// its figures do not describe the server.
pub const SEND_LAG_LIMIT_MS: f64 = 20.0;

/// Runs the fan-out room `room` with receivers spread round-robin over `nodes` nodes; those
/// not on node 1 ask for `remote_quality` of the video if given.
async fn spread(
    cluster: &Cluster,
    fleet: &Fleet,
    opts: &ClusterOptions,
    room: &str,
    nodes: usize,
    remote_quality: Option<&str>,
) -> anyhow::Result<SpreadReport> {
    let media = media(opts);
    let start = Instant::now();
    let publisher = join_member(
        fleet,
        &cluster.node(0)?.ws_url(),
        room,
        "pub",
        Joining::publishing(&media),
    )
    .await?;
    let mut members = vec![publisher];
    let mut per_node = vec![0; nodes];
    for i in 0..opts.receivers {
        // 20 joins per second, as compare's fan-out.
        let at = start + Duration::from_millis(50 * (i as u64 + 1));
        tokio::time::sleep_until(at.into()).await;
        let n = i % nodes;
        per_node[n] += 1;
        let url = cluster.node(n)?.ws_url();
        let m = join_member(fleet, &url, room, &format!("r{i}"), Joining::default()).await?;
        if let (Some(q), true) = (remote_quality, n > 0) {
            // The publisher's track may be announced a little after the join.
            let Some(tracks) = m.session.wait_video_tracks(Duration::from_secs(5)).await else {
                bail!("r{i} was told of no video track to ask `{q}` of within 5 s");
            };
            for t in tracks {
                m.session.set_quality(&t, q);
            }
        }
        members.push(m);
    }
    let publisher = members[0]
        .publisher
        .as_ref()
        .context("the publisher has no peer")?;
    publisher
        .wait_connected(Duration::from_secs(15))
        .await
        .context("the publisher did not connect")?;

    // The window, as scenario::measure: CPU, relay and published bytes sampled at its edges.
    let w_start = Instant::now() + WARMUP;
    let w_end = w_start + opts.window;
    fleet.set_window(w_start, w_end);
    tokio::time::sleep_until(w_start.into()).await;
    let cpu0 = cluster.cpu()?;
    let threads0 = cluster.thread_cpu();
    let relay0 = cluster.relay().await?;
    let pub0 = publisher.stats().await?;
    let fleet0 = fleet.cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep_until(w_end.into()).await;
    let cpu1 = cluster.cpu()?;
    let threads1 = cluster.thread_cpu();
    let relay1 = cluster.relay().await?;
    let pub1 = publisher.stats().await?;
    let fleet1 = fleet.cpu_time();
    let secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(GRACE).await;

    let mut running = Running::default();
    for m in members {
        running.receivers.push(m.receiver);
        if let Some(p) = m.publisher {
            running.publishers.push(p);
        }
        running.sessions.push(m.session);
    }
    let t = scenario::totals(&running).await?;
    for s in &running.sessions {
        s.leave();
    }
    drop(running);
    let window = fleet.window().secs();
    if t.arrived == 0 {
        bail!("{room}: no media reached the receivers");
    }
    let pps = t.arrived as f64 / window;
    let cpu_rate = cpu1.saturating_sub(cpu0).as_secs_f64() / secs;
    let relay = relay1.since(&relay0);
    let by_thread: BTreeMap<String, f64> = threads1
        .iter()
        .map(|(name, cpu)| {
            let before = threads0.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                cpu.saturating_sub(before).as_secs_f64() / secs,
            )
        })
        .collect();
    let published = pub1.udp_bytes_sent.saturating_sub(pub0.udp_bytes_sent);
    let fleet_cpu = fleet1.total().saturating_sub(fleet0.total()).as_secs_f64();
    let fleet_threads = fleet1.per_thread.len().max(1) as f64;
    let remote_nodes = per_node.iter().skip(1).filter(|n| **n > 0).count();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    Ok(SpreadReport {
        nodes,
        remote_quality: remote_quality.map(str::to_string),
        receivers: opts.receivers,
        receivers_per_node: per_node,
        window_s: window,
        forwarded_pps: pps,
        server_cpu_pct: 100.0 * cpu_rate,
        server_cpu_us_per_pkt: 1e6 * cpu_rate / pps,
        loss_pct: if t.loss.expected > 0 {
            100.0 * t.loss.lost as f64 / t.loss.expected as f64
        } else {
            0.0
        },
        packets_lost: t.loss.lost,
        packets_expected: t.loss.expected,
        latency_p50_ms: ms(t.latency.p50()),
        latency_p99_ms: ms(t.latency.p99()),
        relay,
        relay_pps: relay.datagrams_sent as f64 / secs,
        relay_bytes_per_s: relay.bytes_sent as f64 / secs,
        published_bytes: published,
        relay_bytes_per_remote_node: if remote_nodes == 0 || published == 0 {
            0.0
        } else {
            relay.bytes_sent as f64 / published as f64 / remote_nodes as f64
        },
        cpu_by_thread_pct: by_thread
            .into_iter()
            .map(|(name, rate)| (name, 100.0 * rate))
            .collect(),
        published_pps: pub1
            .udp_datagrams_sent
            .saturating_sub(pub0.udp_datagrams_sent) as f64
            / secs,
        publisher_send_lag_p99_ms: ms(pub1.send_lag.since(&pub0.send_lag).p99()),
        generator_cpu_pct: 100.0 * fleet_cpu / secs / fleet_threads,
    })
}

// ------------------------------------------------------------------------- 3: joins

/// One receiver's join: signaling join → ICE/DTLS up, first media packet, first keyframe.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct JoinSample {
    /// On a node that did not hold the room yet.
    pub remote: bool,
    /// Join sent → `joined` back.
    pub signaling_ms: f64,
    /// Join sent → ICE and DTLS up on the subscribe peer.
    pub connect_ms: f64,
    /// Join sent → first media packet (audio or video).
    pub first_media_ms: f64,
    /// Join sent → first video keyframe (the first decodable video).
    pub first_keyframe_ms: f64,
}

/// The median of `v` (NaN if empty; the upper middle of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Joins one receiver at `ws_url` and waits for its first video keyframe.
async fn timed_join(
    fleet: &Fleet,
    ws_url: &str,
    room: &str,
    name: &str,
    remote: bool,
) -> anyhow::Result<(JoinSample, Member)> {
    let m = join_member(fleet, ws_url, room, name, Joining::default()).await?;
    let r = stats_until(&m.receiver, Duration::from_secs(10), |r| {
        r.received
            .iter()
            .any(|s| s.kind == StreamKind::Video && s.first_keyframe_at.is_some())
    })
    .await
    .with_context(|| format!("{name} got no video keyframe"))?;
    let since = |t: Option<Instant>| {
        t.map_or(f64::NAN, |t| {
            t.saturating_duration_since(m.started).as_secs_f64() * 1e3
        })
    };
    let keyframe = r
        .received
        .iter()
        .filter(|s| s.kind == StreamKind::Video)
        .find_map(|s| s.first_keyframe_at);
    let sample = JoinSample {
        remote,
        signaling_ms: since(Some(m.joined)),
        connect_ms: r.connect_time.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        first_media_ms: since(r.first_media_at),
        first_keyframe_ms: since(keyframe),
    };
    Ok((sample, m))
}

/// `samples` rooms, each: a publisher on node 1; a receiver joins node 2 (which does not
/// hold the room), then one joins node 1 (which does).
async fn joins(
    cluster: &Cluster,
    fleet: &Fleet,
    opts: &ClusterOptions,
) -> anyhow::Result<Vec<JoinSample>> {
    let media = media(opts);
    let (one, two) = (cluster.node(0)?.ws_url(), cluster.node(1)?.ws_url());
    let mut out = Vec::new();
    for k in 0..opts.join_samples {
        let room = format!("join-{k}");
        let publisher = join_member(fleet, &one, &room, "pub", Joining::publishing(&media)).await?;
        if let Some(p) = &publisher.publisher {
            p.wait_connected(Duration::from_secs(10)).await?;
        }
        // Its track is published and node 1's record of the room written.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (remote, a) = timed_join(fleet, &two, &room, "remote", true).await?;
        // Past the origin's keyframe request throttle (one per 500 ms per track), so the
        // second join waits for no earlier request.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (local, b) = timed_join(fleet, &one, &room, "local", false).await?;
        out.push(remote);
        out.push(local);
        for m in [a, b, publisher] {
            m.session.leave();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(out)
}

// ----------------------------------------------------------------------- 4: recovery

/// One participant of the recovery room.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveredParticipant {
    pub name: String,
    /// Whether it was on the killed node.
    pub on_killed_node: bool,
    /// Its signaling URL at the end.
    pub url: String,
    /// Kill → receiving media again (receivers: its new subscribe peer's first packet, or for
    /// one that stayed, the first packet of the publisher's new stream; the publisher: the
    /// first packet of its new stream at any receiver). `None`: not within the timeout.
    pub back_s: Option<f64>,
    /// Kill → its subscribe peer's ICE and DTLS up again (those that moved).
    pub connected_s: Option<f64>,
    pub events: Vec<RoamEvent>,
}

/// What recovery from `kill -9` of a node took.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The slowest of the killed node's participants (`None` if one was not back in time).
    pub recovery_s: Option<f64>,
    /// The median of the killed node's participants.
    pub recovery_p50_s: Option<f64>,
    pub participants: Vec<RecoveredParticipant>,
    /// Kill → the surviving node no longer lists the dead one (`GET /api/nodes`: its lease
    /// expired).
    pub lease_gone_s: Option<f64>,
    /// Kill → the surviving node's room no longer holds the dead node's participants.
    pub stale_participants_gone_s: Option<f64>,
}

/// The recovery room: the publisher and `recovery_receivers` receivers on node 1, as many
/// on node 2; node 1 is killed.
async fn recovery(
    cluster: &mut Cluster,
    fleet: &Fleet,
    opts: &ClusterOptions,
) -> anyhow::Result<RecoveryReport> {
    let room = "recover";
    let (one, two) = (cluster.node(0)?.ws_url(), cluster.node(1)?.ws_url());
    let roaming = Roaming::new(fleet, room, false);
    let mut roamers = vec![roaming.join(&one, "pub", Some(media(opts))).await?];
    let mut on_killed = vec![true];
    for i in 0..opts.recovery_receivers {
        for (url, killed) in [(&one, true), (&two, false)] {
            let name = format!("r{}-{i}", if killed { 1 } else { 2 });
            roamers.push(roaming.join(url, &name, None).await?);
            on_killed.push(killed);
        }
    }
    // Everyone receives the publisher before the kill.
    let source = roamers[0]
        .current()
        .publisher_source
        .context("the publisher has no peer")?;
    for r in &roamers[1..] {
        stats_until(&r.current().receiver, Duration::from_secs(10), |rep| {
            rep.received.iter().any(|s| base_source(s.source) == source)
        })
        .await
        .with_context(|| format!("{} received nothing before the kill", r.name))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let survivor = cluster.node(1)?.base_url();
    let dead_id = cluster.node(0)?.nodes().await?["self"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let kill = Instant::now();
    cluster.kill(0)?;
    let deadline = kill + opts.recovery_timeout;
    let mut back: Vec<Option<Instant>> = vec![None; roamers.len()];
    let mut connected: Vec<Option<Instant>> = vec![None; roamers.len()];
    let mut lease_gone = None;
    let mut stale_gone = None;
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        let now_views: Vec<Incarnation> = roamers.iter().map(Roamer::current).collect();
        let mut reports: Vec<Option<PeerReport>> = Vec::new();
        for v in &now_views {
            reports.push(v.receiver.stats().await.ok());
        }
        let new_source = now_views[0]
            .publisher_source
            .filter(|_| now_views[0].started > kill);
        for (i, v) in now_views.iter().enumerate() {
            let Some(rep) = &reports[i] else { continue };
            let moved = v.started > kill;
            if moved && connected[i].is_none() {
                connected[i] = rep.connect_time.map(|d| rep.created_at + d);
            }
            if i == 0 || back[i].is_some() {
                continue;
            }
            back[i] = match (moved, new_source) {
                // A new subscribe peer: its first packet (only the publisher's stream exists).
                (true, _) => rep.first_media_at,
                // Stayed: the first packet of the publisher's new stream.
                (false, Some(src)) => rep
                    .received
                    .iter()
                    .filter(|s| base_source(s.source) == src)
                    .map(|s| s.first_at)
                    .min(),
                (false, None) => None,
            };
        }
        if back[0].is_none() {
            if let Some(src) = new_source {
                back[0] = reports
                    .iter()
                    .flatten()
                    .flat_map(|r| r.received.iter())
                    .filter(|s| base_source(s.source) == src)
                    .map(|s| s.first_at)
                    .min();
            }
        }
        if lease_gone.is_none() || stale_gone.is_none() {
            if let Ok(v) = get_json(&http, &format!("{survivor}/api/nodes")).await {
                let listed = v["nodes"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|n| n["id"].as_str() == Some(&dead_id)));
                if !listed && lease_gone.is_none() {
                    lease_gone = Some(Instant::now());
                }
            }
            if let Ok(v) = get_json(&http, &format!("{survivor}/api/rooms/{room}")).await {
                let stale = v["participants"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["node"].as_str() == Some(&dead_id)));
                if !stale && stale_gone.is_none() {
                    stale_gone = Some(Instant::now());
                }
            }
        }
        let all_back = back.iter().all(Option::is_some);
        if all_back && lease_gone.is_some() && stale_gone.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(kill).as_secs_f64());
    let participants: Vec<RecoveredParticipant> = roamers
        .iter()
        .enumerate()
        .map(|(i, r)| RecoveredParticipant {
            name: r.name.clone(),
            on_killed_node: on_killed[i],
            url: r.current().url,
            back_s: secs(back[i]),
            connected_s: secs(connected[i]),
            events: r.events(kill),
        })
        .collect();
    let killed: Vec<Option<f64>> = participants
        .iter()
        .filter(|p| p.on_killed_node)
        .map(|p| p.back_s)
        .collect();
    let all: Option<Vec<f64>> = killed.iter().copied().collect();
    let report = RecoveryReport {
        recovery_s: all
            .as_ref()
            .and_then(|v| v.iter().copied().max_by(f64::total_cmp)),
        recovery_p50_s: all.as_ref().map(|v| median(v)),
        participants,
        lease_gone_s: secs(lease_gone),
        stale_participants_gone_s: secs(stale_gone),
    };
    // Dropping a roamer stops its task.
    drop(roamers);
    Ok(report)
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(url)
        .timeout(Duration::from_millis(500))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

// ------------------------------------------------------------------------ the result

/// The `RESULT` line's figures (`None`: not measured, printed `na`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClusterResult {
    pub cluster_cpu_ratio: Option<f64>,
    pub relay_bytes_per_remote_node: Option<f64>,
    pub remote_join_ms: Option<f64>,
    pub recovery_s: Option<f64>,
}

impl ClusterResult {
    /// `RESULT cluster_cpu_ratio=… relay_bytes_per_remote_node=… remote_join_ms=… recovery_s=…`
    pub fn line(&self) -> String {
        let f = |v: Option<f64>, digits: usize| match v {
            Some(v) if v.is_finite() => format!("{v:.digits$}"),
            _ => "na".to_string(),
        };
        format!(
            "RESULT cluster_cpu_ratio={} relay_bytes_per_remote_node={} remote_join_ms={} recovery_s={}",
            f(self.cluster_cpu_ratio, 3),
            f(self.relay_bytes_per_remote_node, 3),
            f(self.remote_join_ms, 1),
            f(self.recovery_s, 2),
        )
    }

    /// Reads a line [`ClusterResult::line`] wrote (`na` reads as `None`).
    pub fn parse(line: &str) -> anyhow::Result<ClusterResult> {
        let rest = line
            .trim()
            .strip_prefix("RESULT ")
            .ok_or_else(|| anyhow!("not a RESULT line: {line}"))?;
        let mut fields: HashMap<&str, Option<f64>> = HashMap::new();
        for kv in rest.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("not key=value: {kv}"))?;
            let v = match v {
                "na" => None,
                v => Some(v.parse::<f64>().with_context(|| format!("{k}={v}"))?),
            };
            fields.insert(k, v);
        }
        let mut get = |k: &str| fields.remove(k).ok_or_else(|| anyhow!("no {k} in {line}"));
        let r = ClusterResult {
            cluster_cpu_ratio: get("cluster_cpu_ratio")?,
            relay_bytes_per_remote_node: get("relay_bytes_per_remote_node")?,
            remote_join_ms: get("remote_join_ms")?,
            recovery_s: get("recovery_s")?,
        };
        if let Some(k) = fields.keys().next() {
            bail!("unknown field {k} in {line}");
        }
        Ok(r)
    }
}

/// Everything a cluster run measured, for `cluster.json`.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// The CPU windows run in the order one node, two nodes, two nodes again, one node
    /// again, so that a drift of the machine's speed over the run (tenths on this virtual
    /// machine) falls on both sides alike.
    pub one_node: Result<SpreadReport, String>,
    pub two_nodes: Result<SpreadReport, String>,
    pub two_nodes_again: Result<SpreadReport, String>,
    pub one_node_again: Result<SpreadReport, String>,
    /// Two nodes again, node 2's receivers asking for the lowest simulcast layer (with
    /// simulcast only).
    pub two_nodes_low: Option<Result<SpreadReport, String>>,
    pub joins: Result<Vec<JoinSample>, String>,
    pub recovery: Result<RecoveryReport, String>,
    pub drain: Result<DrainReport, String>,
    /// What spreading costs per relayed datagram, both ends: the two-node windows' CPU less
    /// what their packets cost on one node, divided by the datagrams relayed (µs).
    pub spread_us_per_relay_datagram: Option<f64>,
    pub result: ClusterResult,
}

impl ClusterReport {
    /// The CPU per forwarded packet of the one-node and of the two-node windows, each the
    /// mean of those that did not fail, with the two-node windows' packets and relay
    /// datagrams per second.
    fn cpu_per_packet(&self) -> Option<(f64, f64, f64, f64)> {
        let mean = |runs: [&Result<SpreadReport, String>; 2]| {
            let ok: Vec<&SpreadReport> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
            (!ok.is_empty()).then(|| {
                let n = ok.len() as f64;
                let f = |g: fn(&SpreadReport) -> f64| ok.iter().map(|r| g(r)).sum::<f64>() / n;
                (
                    f(|r| r.server_cpu_us_per_pkt),
                    f(|r| r.forwarded_pps),
                    f(|r| r.relay_pps),
                )
            })
        };
        let (one, _, _) = mean([&self.one_node, &self.one_node_again])?;
        let (two, pps, relay_pps) = mean([&self.two_nodes, &self.two_nodes_again])?;
        Some((one, two, pps, relay_pps))
    }

    fn result(&mut self) {
        let two = self.two_nodes.as_ref().ok();
        let finite = |x: f64| x.is_finite().then_some(x);
        let cpu = self.cpu_per_packet();
        let remote: Vec<f64> = self
            .joins
            .iter()
            .flatten()
            .filter(|s| s.remote)
            .map(|s| s.first_media_ms)
            .collect();
        self.spread_us_per_relay_datagram =
            cpu.and_then(|(one, two, pps, relay_pps)| finite((two - one) * pps / relay_pps));
        self.result = ClusterResult {
            cluster_cpu_ratio: cpu.and_then(|(one, two, _, _)| finite(two / one)),
            relay_bytes_per_remote_node: two.and_then(|b| finite(b.relay_bytes_per_remote_node)),
            remote_join_ms: finite(median(&remote)),
            recovery_s: self.recovery.as_ref().ok().and_then(|r| r.recovery_s),
        };
    }

    /// The report as markdown: the two windows side by side, the joins, the recovery.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### One node against two (same room, same participants)\n"
        );
        let mut runs = vec![
            ("one node", &self.one_node),
            ("two nodes", &self.two_nodes),
            ("two nodes again", &self.two_nodes_again),
            ("one node again", &self.one_node_again),
        ];
        if let Some(l) = &self.two_nodes_low {
            runs.push(("two nodes, node 2's receivers on the low layer", l));
        }
        let _ = write!(out, "|");
        for (what, _) in &runs {
            let _ = write!(out, " | {what}");
        }
        let _ = writeln!(out, " |\n|---|{}", "---|".repeat(runs.len()));
        type Fig = (&'static str, fn(&SpreadReport) -> String);
        let figs: &[Fig] = &[
            ("receivers per node", |r| {
                format!("{:?}", r.receivers_per_node)
            }),
            ("forwarded packets/s", |r| format!("{:.0}", r.forwarded_pps)),
            ("server CPU, all nodes (% of a core)", |r| {
                format!("{:.1}", r.server_cpu_pct)
            }),
            ("server CPU per forwarded packet (µs)", |r| {
                format!("{:.2}", r.server_cpu_us_per_pkt)
            }),
            ("loss (%)", |r| {
                format!(
                    "{:.3} ({} / {})",
                    r.loss_pct, r.packets_lost, r.packets_expected
                )
            }),
            ("one-way latency p50 / p99 (ms)", |r| {
                format!("{:.2} / {:.2}", r.latency_p50_ms, r.latency_p99_ms)
            }),
            ("relay datagrams sent /s (all nodes)", |r| {
                format!("{:.0}", r.relay_pps)
            }),
            ("relay bytes sent /s (all nodes)", |r| {
                format!("{:.0}", r.relay_bytes_per_s)
            }),
            ("relay resent / lost", |r| {
                format!("{} / {}", r.relay.resent, r.relay.lost)
            }),
            ("publisher's bytes to its node in the window", |r| {
                r.published_bytes.to_string()
            }),
            ("relay bytes ÷ published bytes ÷ remote nodes", |r| {
                format!("{:.3}", r.relay_bytes_per_remote_node)
            }),
            ("CPU by thread, all nodes (% of a core)", |r| {
                r.cpu_by_thread_pct
                    .iter()
                    .filter(|(_, pct)| **pct > 0.0)
                    .map(|(name, pct)| format!("{name} {pct:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            ("publisher's datagrams/s; its send lag p99 (ms)", |r| {
                format!("{:.0}; {:.2}", r.published_pps, r.publisher_send_lag_p99_ms)
            }),
            ("generator CPU (% of its cores)", |r| {
                format!("{:.1}", r.generator_cpu_pct)
            }),
        ];
        for (label, f) in figs {
            let cell = |r: &Result<SpreadReport, String>| match r {
                Ok(r) => f(r),
                Err(_) => "failed".into(),
            };
            let _ = write!(out, "| {label} |");
            for (_, r) in &runs {
                let _ = write!(out, " {} |", cell(r));
            }
            out.push('\n');
        }
        if let Some((one, two, _, _)) = self.cpu_per_packet() {
            let _ = writeln!(
                out,
                "\nServer CPU per forwarded packet, mean of the windows: {one:.2} µs on one node, {two:.2} µs on two (× {:.3}).",
                two / one
            );
        }
        if let Some(us) = self.spread_us_per_relay_datagram {
            let _ = writeln!(
                out,
                "\nWhat spreading costs per relayed datagram, both ends: {us:.1} µs of CPU."
            );
        }
        for (what, r) in runs {
            match r {
                Err(e) => {
                    let _ = writeln!(out, "\n{what} failed: {e}");
                }
                Ok(r) if r.publisher_send_lag_p99_ms > SEND_LAG_LIMIT_MS => {
                    let _ = writeln!(
                        out,
                        "\n**{what}: the generator fell behind** (publisher's send lag p99 {:.1} ms > {SEND_LAG_LIMIT_MS} ms): a busy machine; these figures do not describe the server.",
                        r.publisher_send_lag_p99_ms
                    );
                }
                Ok(_) => {}
            }
        }
        let _ = writeln!(out, "\n### Join: signaling join → media (ms, median)\n");
        match &self.joins {
            Ok(samples) => {
                let _ = writeln!(
                    out,
                    "| node | samples | joined | ICE + DTLS | first packet | first video keyframe |\n|---|---|---|---|---|---|"
                );
                for (label, remote) in [
                    ("without the room (remote)", true),
                    ("holding the room (local)", false),
                ] {
                    let s: Vec<&JoinSample> =
                        samples.iter().filter(|s| s.remote == remote).collect();
                    let m = |f: fn(&JoinSample) -> f64| {
                        median(&s.iter().map(|x| f(x)).collect::<Vec<_>>())
                    };
                    let _ = writeln!(
                        out,
                        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                        s.len(),
                        m(|x| x.signaling_ms),
                        m(|x| x.connect_ms),
                        m(|x| x.first_media_ms),
                        m(|x| x.first_keyframe_ms)
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "failed: {e}");
            }
        }
        let _ = writeln!(
            out,
            "\n### Recovery after kill -9 of node 1 (s since the kill)\n"
        );
        match &self.recovery {
            Ok(r) => {
                let s = |v: Option<f64>| {
                    v.map_or("not within the timeout".into(), |v| format!("{v:.2}"))
                };
                let _ = writeln!(
                    out,
                    "everyone of node 1 back: {} (median {}); node 2 stops listing node 1: {}; node 2's room drops node 1's participants: {}\n",
                    s(r.recovery_s),
                    s(r.recovery_p50_s),
                    s(r.lease_gone_s),
                    s(r.stale_participants_gone_s)
                );
                for p in &r.participants {
                    let connected = if p.on_killed_node {
                        format!(", its new subscribe peer connected {}", s(p.connected_s))
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "- {} ({}): receiving again {}{connected}",
                        p.name,
                        if p.on_killed_node {
                            "node 1, killed"
                        } else {
                            "node 2, stayed"
                        },
                        s(p.back_s),
                    );
                    roam::write_events(&mut out, &p.events);
                }
            }
            Err(e) => {
                let _ = writeln!(out, "failed: {e}");
            }
        }
        let _ = writeln!(
            out,
            "\n### Drain of node 2: its participants move to node 1 make-before-break\n"
        );
        match &self.drain {
            Ok(d) => d.markdown(&mut out),
            Err(e) => {
                let _ = writeln!(out, "failed: {e}");
            }
        }
        out
    }
}

/// Runs the four measurements on a two-node cluster. A measurement that fails is kept as
/// its error; the others still run.
pub async fn run(opts: &ClusterOptions) -> anyhow::Result<ClusterReport> {
    let mut cluster = Cluster::start(opts, 2, "cluster").await?;
    let fleet = Fleet::start(FleetConfig {
        threads: opts.threads,
        ..FleetConfig::default()
    })?;
    let err = |e: anyhow::Error| format!("{e:#}");
    eprintln!("cluster: fan-out 1→{} on node 1", opts.receivers);
    let one_node = spread(&cluster, &fleet, opts, "one-node", 1, None)
        .await
        .map_err(err);
    eprintln!("cluster: fan-out 1→{} over nodes 1 and 2", opts.receivers);
    let two_nodes = spread(&cluster, &fleet, opts, "two-nodes", 2, None)
        .await
        .map_err(err);
    eprintln!("cluster: the same again, in the reverse order");
    let two_nodes_again = spread(&cluster, &fleet, opts, "two-nodes-2", 2, None)
        .await
        .map_err(err);
    let one_node_again = spread(&cluster, &fleet, opts, "one-node-2", 1, None)
        .await
        .map_err(err);
    let mut two_nodes_low = None;
    if opts.simulcast {
        eprintln!(
            "cluster: fan-out 1→{} over nodes 1 and 2, node 2's receivers on the low layer",
            opts.receivers
        );
        two_nodes_low = Some(
            spread(&cluster, &fleet, opts, "two-nodes-low", 2, Some("low"))
                .await
                .map_err(err),
        );
    }
    eprintln!("cluster: {} join samples", opts.join_samples);
    let joins = joins(&cluster, &fleet, opts).await.map_err(err);
    eprintln!("cluster: recovery after kill -9 of node 1");
    let recovery = recovery(&mut cluster, &fleet, opts).await.map_err(err);
    drop(cluster);
    eprintln!("cluster: drain of node 2 (a fresh cluster)");
    let drain = drain::drain(&fleet, opts).await.map_err(err);
    let mut report = ClusterReport {
        one_node,
        two_nodes,
        two_nodes_again,
        one_node_again,
        two_nodes_low,
        joins,
        recovery,
        drain,
        spread_us_per_relay_datagram: None,
        result: ClusterResult::default(),
    };
    report.result();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_round_trips() {
        let r = ClusterResult {
            cluster_cpu_ratio: Some(1.0834),
            relay_bytes_per_remote_node: Some(0.9712),
            remote_join_ms: Some(84.26),
            recovery_s: None,
        };
        let line = r.line();
        assert_eq!(
            line,
            "RESULT cluster_cpu_ratio=1.083 relay_bytes_per_remote_node=0.971 remote_join_ms=84.3 recovery_s=na"
        );
        let back = ClusterResult::parse(&line).unwrap();
        assert_eq!(back.recovery_s, None);
        assert_eq!(back.cluster_cpu_ratio, Some(1.083));
        assert!(ClusterResult::parse("RESULT cluster_cpu_ratio=1").is_err());
        assert!(ClusterResult::parse(&format!("{line} extra=1")).is_err());
        assert!(ClusterResult::parse("hello").is_err());
    }

    #[test]
    fn backoff_like_the_sdk() {
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(2, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff_delay(2, 1.0), Duration::from_millis(1200));
        assert_eq!(backoff_delay(3, -1.0), Duration::from_millis(1600));
        assert_eq!(backoff_delay(30, 0.0), Duration::from_secs(10));
    }

    #[test]
    fn reconnect_goes_home_first_then_to_the_others() {
        let nodes = vec![
            "ws://127.0.0.1:1/ws".to_string(),
            "ws://127.0.0.1:2/ws".to_string(),
            "ws://127.0.0.1:3/ws".to_string(),
        ];
        let here = "ws://127.0.0.1:2/ws";
        let urls: Vec<String> = (1..=4).map(|a| reconnect_url(here, &nodes, a)).collect();
        assert_eq!(
            urls,
            [here, "ws://127.0.0.1:1/ws", "ws://127.0.0.1:3/ws", here]
        );
        assert_eq!(reconnect_url(here, &[], 3), here);
    }

    #[test]
    fn relay_counters_from_api_workers() {
        let v: Value = serde_json::json!({"workers": [
            {"worker": 0, "alive": true, "packets_forwarded": 5},
            {"worker": 1, "alive": true, "link": {"sent": 10, "bytes_sent": 1000,
                "received": 3, "bytes_received": 200, "resent": 1, "lost": 0}}
        ]});
        let c = RelayCounters::from_workers(&v);
        assert_eq!(c.datagrams_sent, 10);
        assert_eq!(c.bytes_sent, 1000);
        assert_eq!(c.bytes_received, 200);
        let later = RelayCounters {
            bytes_sent: 1500,
            ..c
        };
        assert_eq!(later.since(&c).bytes_sent, 500);
    }

    #[test]
    fn median_skips_nan() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }
}
