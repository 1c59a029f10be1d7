//! Scenarios and how one is run against one target: participants join at a given rate, media
//! flows, and every figure but join time is taken over one steady-state window that opens
//! [`WARMUP`] after the last join: server and generator CPU, packets forwarded, and loss and
//! latency of the packets sent within it. The result is one [`RunReport`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::fleet::{Fleet, FleetConfig, OfferKind, PeerConfig, PeerHandle, PeerReport};
use crate::janus::{JanusClient, JanusServer, PublisherHandle, SubscriberHandle};
use crate::media::{MediaConfig, StreamKind};
use crate::procstat;
use crate::report::RunReport;
use crate::stats::{LatencyHistogram, LossSummary};
use crate::target::sfumato::{Answerer, Session, SfumatoOptions, SfumatoServer};

/// The shape of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Everyone publishes audio and video and receives everyone else.
    Meeting,
    /// One publisher (audio and video), everyone else only receives.
    Fanout,
    /// `publishers` publish audio only; everyone receives every publisher.
    Audio,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub shape: Shape,
    pub participants: usize,
    /// Meeting: all; fanout: 1; audio: this many.
    pub publishers: usize,
    pub duration: Duration,
    /// Participants joining per second.
    pub join_rate: f64,
    pub video_bitrate: u32,
}

impl Scenario {
    pub fn publishers(&self) -> usize {
        match self.shape {
            Shape::Meeting => self.participants,
            Shape::Fanout => 1,
            Shape::Audio => self.publishers.clamp(1, self.participants),
        }
    }

    fn media(&self) -> MediaConfig {
        MediaConfig {
            video: self.shape != Shape::Audio,
            video_bitrate: self.video_bitrate,
            ..MediaConfig::default()
        }
    }

    /// Streams delivered: each receiver gets each other publisher's audio (and video).
    pub fn subscriptions(&self) -> usize {
        let kinds = if self.shape == Shape::Audio { 1 } else { 2 };
        let p = self.publishers();
        match self.shape {
            Shape::Meeting => p * (p - 1) * kinds,
            _ => p * (self.participants - 1).max(1) * kinds,
        }
    }
}

/// Which server a run targets and how.
pub enum Target {
    Sfumato(SfumatoOptions),
    Janus(crate::janus::JanusOptions),
}

/// Peers of one run, kept alive until it ends.
#[derive(Default)]
pub(crate) struct Running {
    pub(crate) publishers: Vec<PeerHandle>,
    pub(crate) receivers: Vec<Arc<PeerHandle>>,
    pub(crate) sessions: Vec<Session>,
    janus: Option<JanusClient>,
    /// Janus handles live as long as the run (the session owns them on Janus' side).
    janus_publishers: Vec<PublisherHandle>,
    janus_subscribers: Vec<SubscriberHandle>,
}

/// From the last join to the window's start.
pub const WARMUP: Duration = Duration::from_secs(3);
/// How long after the window's end a packet sent within it may still arrive (and count as
/// received, with its latency) before the figures are read.
pub const GRACE: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `scenario` against `target` with a fleet of `threads` threads pinned by the caller.
pub async fn run(
    target: &Target,
    scenario: &Scenario,
    threads: usize,
) -> anyhow::Result<RunReport> {
    match target {
        Target::Sfumato(opts) => {
            let server = SfumatoServer::start(opts).await?;
            let fleet = Fleet::start(FleetConfig {
                threads,
                ..FleetConfig::default()
            })?;
            let idle = procstat::sample(server.pid())?;
            let running = join_sfumato(&server, &fleet, scenario).await?;
            let report = measure(
                "sfumato",
                Some(opts.workers),
                server.pid(),
                idle,
                &fleet,
                running,
                scenario,
            )
            .await;
            drop(server);
            report
        }
        Target::Janus(opts) => {
            let server = JanusServer::start(opts.clone()).await?;
            let fleet = Fleet::start(FleetConfig {
                threads,
                bind_ip: server.client_ip().into(),
                ..FleetConfig::default()
            })?;
            let idle = procstat::sample(server.pid())?;
            let running = join_janus(&server, &fleet, scenario)
                .await
                .with_context(|| format!("janus log tail:\n{}", server.log_tail(20)))?;
            let report =
                measure("janus", None, server.pid(), idle, &fleet, running, scenario).await;
            drop(server);
            report
        }
    }
}

async fn pace(start: Instant, i: usize, rate: f64) {
    if rate > 0.0 {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
    }
}

async fn join_sfumato(
    server: &SfumatoServer,
    fleet: &Fleet,
    s: &Scenario,
) -> anyhow::Result<Running> {
    let mut running = Running::default();
    let start = Instant::now();
    let publishers = s.publishers();
    for i in 0..s.participants {
        pace(start, i, s.join_rate).await;
        let name = format!("p{i}");
        // Every participant receives through one subscribe peer the server offers to.
        let receiver = Arc::new(fleet.add_peer(PeerConfig::receiver(format!("{name}-sub")))?);
        let answering = receiver.clone();
        let answerer: Answerer = Arc::new(move |offer: String| {
            let peer = answering.clone();
            Box::pin(async move { peer.accept_offer(&offer).await })
        });
        let mut session = Session::join(&server.ws_url(), "bench", &name, answerer).await?;
        if i < publishers {
            let publisher =
                fleet.add_peer(PeerConfig::publisher(format!("{name}-pub"), s.media()))?;
            let offer = publisher.create_offer(OfferKind::Publish).await?;
            let answer = session.publish(offer).await?;
            publisher.accept_answer(&answer).await?;
            running.publishers.push(publisher);
        }
        running.receivers.push(receiver);
        running.sessions.push(session);
    }
    for p in &running.publishers {
        p.wait_connected(CONNECT_TIMEOUT)
            .await
            .context("a publisher did not connect")?;
    }
    Ok(running)
}

async fn join_janus(server: &JanusServer, fleet: &Fleet, s: &Scenario) -> anyhow::Result<Running> {
    let client = JanusClient::connect(server.base_url()).await?;
    const ROOM: u64 = 1234;
    client.create_room(ROOM).await?;
    let mut running = Running::default();
    let start = Instant::now();
    let mut feeds: Vec<(usize, u64)> = Vec::new();
    let publishers = s.publishers();
    // Janus offers one subscriber PC per feed; a participant joining late also subscribes to
    // every feed already there, and earlier participants to its feed.
    for i in 0..s.participants {
        pace(start, i, s.join_rate).await;
        if i < publishers {
            let publisher =
                fleet.add_peer(PeerConfig::publisher(format!("p{i}-pub"), s.media()))?;
            let offer = publisher.create_offer(OfferKind::Publish).await?;
            let published = client.publish(ROOM, &format!("p{i}"), &offer).await?;
            publisher.accept_answer(&published.answer_sdp).await?;
            // Janus refuses subscribers to a feed whose PeerConnection is not up yet.
            publisher
                .wait_connected(CONNECT_TIMEOUT)
                .await
                .context("a publisher did not connect")?;
            let feed = published.feed_id;
            running.publishers.push(publisher);
            running.janus_publishers.push(published.handle);
            // Earlier participants subscribe to this new feed.
            for j in 0..i {
                subscribe_janus(&client, fleet, &mut running, ROOM, j, feed).await?;
            }
            feeds.push((i, feed));
        }
        for &(owner, feed) in &feeds {
            if owner != i {
                subscribe_janus(&client, fleet, &mut running, ROOM, i, feed).await?;
            }
        }
    }
    for p in &running.publishers {
        p.wait_connected(CONNECT_TIMEOUT)
            .await
            .context("a publisher did not connect")?;
    }
    running.janus = Some(client);
    Ok(running)
}

async fn subscribe_janus(
    client: &JanusClient,
    fleet: &Fleet,
    running: &mut Running,
    room: u64,
    who: usize,
    feed: u64,
) -> anyhow::Result<()> {
    let receiver = fleet.add_peer(PeerConfig::receiver(format!("p{who}-sub-{feed}")))?;
    // A feed becomes subscribable shortly after its publisher connects ("No such feed" before).
    let deadline = Instant::now() + Duration::from_secs(3);
    let (offer, handle) = loop {
        match client.subscribe(room, feed).await {
            Ok(ok) => break ok,
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("No such feed") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let answer = receiver.accept_offer(&offer).await?;
    handle.answer(&answer).await?;
    running.receivers.push(Arc::new(receiver));
    running.janus_subscribers.push(handle);
    Ok(())
}

/// What the receivers got and the publishers were asked, read after the window closed.
pub(crate) struct Totals {
    /// Packets that arrived within the window.
    pub(crate) arrived: u64,
    /// Latency of the packets sent within the window.
    pub(crate) latency: LatencyHistogram,
    /// Loss of the packets sent within the window.
    pub(crate) loss: LossSummary,
    pub(crate) joins: Vec<Duration>,
    pub(crate) connects: Vec<Duration>,
    pub(crate) nacks: u64,
    pub(crate) plis: u64,
}

pub(crate) async fn totals(running: &Running) -> anyhow::Result<Totals> {
    let mut t = Totals {
        arrived: 0,
        latency: LatencyHistogram::new(),
        loss: LossSummary::default(),
        joins: Vec::new(),
        connects: Vec::new(),
        nacks: 0,
        plis: 0,
    };
    // What each publisher sent within the window, by source and kind: a receiver's expected
    // packets, so that a loss at either edge of the window counts too.
    let mut sent: HashMap<(u32, StreamKind), u64> = HashMap::new();
    for p in &running.publishers {
        let rep = p.stats().await?;
        t.plis += rep.plis_received + rep.firs_received;
        for &(source, kind, n) in &rep.sent_in_window_by_source {
            sent.insert((source, kind), n);
        }
    }
    for r in &running.receivers {
        let rep: PeerReport = r.stats().await?;
        t.arrived += rep.arrived_in_window();
        t.latency.merge(&rep.window_latency());
        t.loss
            .add(&rep.window_loss(|source, kind| sent.get(&(source, kind)).copied()));
        t.joins.extend(rep.join_time);
        t.connects.extend(rep.connect_time);
        t.nacks += rep.nacks_sent;
    }
    Ok(t)
}

async fn measure(
    target: &str,
    workers: Option<usize>,
    pid: u32,
    idle: procstat::ProcSample,
    fleet: &Fleet,
    running: Running,
    s: &Scenario,
) -> anyhow::Result<RunReport> {
    // One window for everything: CPU is sampled at its edges; the peers count the packets
    // that arrive in it and, for loss and latency, the packets sent in it.
    let start = Instant::now() + WARMUP;
    let end = start + s.duration;
    fleet.set_window(start, end);
    tokio::time::sleep_until(start.into()).await;
    let server0 = procstat::sample(pid)?;
    let fleet0 = fleet.cpu_time();
    let cpu0 = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let server1 = procstat::sample(pid)?;
    let fleet1 = fleet.cpu_time();
    let cpu_secs = cpu0.elapsed().as_secs_f64();
    tokio::time::sleep(GRACE).await;
    let t = totals(&running).await?;
    let window = fleet.window().secs();

    if t.arrived == 0 {
        bail!("{target}: no media reached the receivers");
    }
    let server_cpu = server1.cpu.saturating_sub(server0.cpu).as_secs_f64();
    let fleet_cpu = fleet1.total().saturating_sub(fleet0.total()).as_secs_f64();
    let threads = fleet1.per_thread.len().max(1) as f64;
    // Rates over each one's own interval: the CPU samples are taken a little after the
    // window's edges (by the timer's lateness), the packets counted exactly within them.
    let pps = t.arrived as f64 / window;
    let server_cpu_rate = server_cpu / cpu_secs;
    let mut joins = t.joins.clone();
    joins.sort();
    let mut connects = t.connects.clone();
    connects.sort();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let loss = &t.loss;
    for s in &running.sessions {
        s.leave();
    }
    drop(running.sessions);
    for p in running.publishers {
        p.close().await;
    }
    // A receiver still shared with its signaling task closes with the fleet.
    for r in running.receivers {
        if let Ok(p) = Arc::try_unwrap(r) {
            p.close().await;
        }
    }
    if let Some(j) = running.janus {
        let _ = j.destroy().await;
    }
    Ok(RunReport {
        target: target.to_string(),
        scenario: format!("{:?}", s.shape).to_lowercase(),
        workers,
        participants: s.participants,
        publishers: s.publishers(),
        warmup_s: WARMUP.as_secs_f64(),
        duration_s: window,
        forwarded_pps: pps,
        server_cpu_pct: 100.0 * server_cpu_rate,
        server_cpu_us_per_pkt: 1e6 * server_cpu_rate / pps,
        server_kib_per_subscription: server1.rss_bytes.saturating_sub(idle.rss_bytes) as f64
            / 1024.0
            / s.subscriptions().max(1) as f64,
        packets_expected: loss.expected,
        packets_lost: loss.lost,
        loss_pct: if loss.expected > 0 {
            100.0 * loss.lost as f64 / loss.expected as f64
        } else {
            0.0
        },
        latency_p50_ms: ms(t.latency.p50()),
        latency_p99_ms: ms(t.latency.p99()),
        join_p50_ms: ms(joins.get(joins.len() / 2).copied()),
        join_max_ms: ms(joins.last().copied()),
        connect_p50_ms: ms(connects.get(connects.len() / 2).copied()),
        nacks: t.nacks,
        plis: t.plis,
        generator_cpu_pct: 100.0 * fleet_cpu / cpu_secs / threads,
    })
}

/// Where a run writes its files.
pub fn out_dir() -> PathBuf {
    PathBuf::from("target/bench")
}
