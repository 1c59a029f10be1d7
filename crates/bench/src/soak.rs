//! `soak`: one Sfumato server under churn for minutes: participants join and leave every
//! second, publishers restart, subscribers switch simulcast layers, WHIP sessions come and go,
//! and a few clients send garbage (bad datagrams to the RTC ports, malformed signaling). Two
//! steady participants stay the whole run and measure their media loss. The server's resident
//! memory is sampled throughout; once everyone has left, every gauge of what the server holds
//! must come back to zero within a bounded settle wait.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::SinkExt;
use serde::Serialize;
use serde_json::Value;
use sfumato_testkit::garbage;
use sfumato_testkit::http::{whip_publish, HttpSession};
use sfumato_testkit::server::{unlabelled_series, IDLE_NODE_GAUGES, IDLE_WORKER_GAUGES};
use tokio_tungstenite::tungstenite::Message;

use crate::fleet::{Fleet, FleetConfig, OfferKind, PeerConfig, PeerHandle};
use crate::media::{base_source, MediaConfig, StreamKind};
use crate::procstat;
use crate::stats::LossSummary;
use crate::target::sfumato::{Answerer, Session, SfumatoOptions, SfumatoServer};

const ROOM: &str = "soak";

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub server: SfumatoOptions,
    /// Threads of the generator's fleet.
    pub threads: usize,
    /// How long the churn lasts.
    pub duration: Duration,
    /// Churning participants in the room at any time (half of them publish).
    pub churners: usize,
    /// How often the server's resident memory is sampled.
    pub sample_every: Duration,
    /// The longest wait, once everyone left, for every gauge to read zero.
    pub settle: Duration,
    /// The steady participants may lose at most this share of their media (percent).
    pub max_loss_pct: f64,
    /// If given: resident memory may grow at most this much after warm-up (percent).
    pub max_rss_growth_pct: Option<f64>,
}

/// One participant of the soak: its signaling socket and its peers.
struct Member {
    name: String,
    session: Session,
    /// The only strong reference: the answerer holds a weak one, so that leaving closes it.
    receiver: Arc<PeerHandle>,
    publisher: Option<PeerHandle>,
}

impl Member {
    /// Leaves with a `leave` message, or (`abrupt`) by dropping the socket alone.
    async fn leave(self, abrupt: bool) {
        if !abrupt {
            self.session.leave();
        }
        drop(self.session);
        if let Some(p) = self.publisher {
            p.close().await;
        }
        match Arc::try_unwrap(self.receiver) {
            Ok(p) => p.close().await,
            // An answer still being made: the last reference closes it when dropped.
            Err(shared) => drop(shared),
        }
    }
}

/// ICE ufrags of the server's peers, collected from its SDP: garbage aimed at real peers.
type Ufrags = Arc<Mutex<Vec<String>>>;

fn remember_ufrag(ufrags: &Ufrags, sdp: &str) {
    if let Some(u) = garbage::sdp_ufrag(sdp) {
        let mut all = ufrags.lock().unwrap_or_else(PoisonError::into_inner);
        if !all.contains(&u) {
            all.push(u);
        }
        // The newest few are enough (and keep this bounded over a long run).
        let len = all.len();
        if len > 32 {
            all.drain(..len - 32);
        }
    }
}

async fn join(
    server: &SfumatoServer,
    fleet: &Fleet,
    name: &str,
    publish: Option<&MediaConfig>,
    ufrags: &Ufrags,
) -> anyhow::Result<Member> {
    let receiver = Arc::new(fleet.add_peer(PeerConfig::receiver(format!("{name}-sub")))?);
    let weak: Weak<PeerHandle> = Arc::downgrade(&receiver);
    let seen = ufrags.clone();
    let answerer: Answerer = Arc::new(move |offer: String| {
        let peer = weak.upgrade();
        remember_ufrag(&seen, &offer);
        Box::pin(async move {
            match peer {
                Some(p) => p.accept_offer(&offer).await,
                None => anyhow::bail!("left"),
            }
        })
    });
    let mut session = Session::join(&server.ws_url(), ROOM, name, answerer).await?;
    let mut publisher = None;
    if let Some(media) = publish {
        let p = fleet.add_peer(PeerConfig::publisher(format!("{name}-pub"), media.clone()))?;
        let offer = p.create_offer(OfferKind::Publish).await?;
        let answer = session.publish(offer).await?;
        remember_ufrag(ufrags, &answer);
        p.accept_answer(&answer).await?;
        publisher = Some(p);
    }
    Ok(Member {
        name: name.to_string(),
        session,
        receiver,
        publisher,
    })
}

/// The server's resident memory at one moment of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Seconds since the churn started.
    pub t_s: f64,
    pub rss_mib: f64,
}

/// What the churn did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Activity {
    pub joins: u64,
    pub join_failures: u64,
    pub leaves: u64,
    /// Leaves without a `leave` message (the socket dropped).
    pub abrupt_leaves: u64,
    pub publisher_restarts: u64,
    pub layer_switches: u64,
    pub whip_sessions: u64,
    pub whip_failures: u64,
    pub garbage_datagrams: u64,
    pub bad_signaling_messages: u64,
}

/// One gauge of what the server holds, read after everyone left.
#[derive(Debug, Clone, Serialize)]
pub struct Gauge {
    pub name: String,
    pub value: u64,
}

/// What a steady participant received of the other's media over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyLoss {
    pub receiver: String,
    pub audio: LossSummary,
    pub video: LossSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub duration_s: f64,
    pub workers: usize,
    pub churners: usize,
    pub activity: Activity,
    /// Resident memory over the run.
    pub rss: Vec<RssSample>,
    /// The end of the warm-up: the baseline is the median of the samples just after it.
    pub warmup_s: f64,
    pub rss_baseline_mib: f64,
    /// The median of the samples of the churn's last stretch (as long as the baseline's).
    pub rss_end_mib: f64,
    pub rss_growth_pct: f64,
    /// Once everyone left and the gauges settled.
    pub rss_idle_mib: f64,
    /// From the last leave until every gauge read zero (or the settle wait ran out).
    pub settle_s: f64,
    /// Every gauge, summed over the workers, after the settle wait.
    pub gauges: Vec<Gauge>,
    pub steady: Vec<SteadyLoss>,
    /// Why the run failed; empty if it passed.
    pub failures: Vec<String>,
}

/// Beyond the testkit's idle gauges of `GET /api/workers` ([`IDLE_WORKER_GAUGES`]), which
/// must read zero summed over the workers: the addresses learnt from STUN.
const MORE_WORKER_GAUGES: [&str; 1] = ["addresses"];

/// Beyond the testkit's idle gauges of `/metrics` ([`IDLE_NODE_GAUGES`]), which must read
/// zero: the rooms and participants.
const MORE_NODE_GAUGES: [&str; 2] = ["sfumato_rooms", "sfumato_participants"];

async fn read_gauges(server: &SfumatoServer) -> anyhow::Result<Vec<Gauge>> {
    let workers = server.workers().await?;
    let workers = workers["workers"]
        .as_array()
        .context("GET /api/workers: no workers")?
        .clone();
    let mut out: Vec<Gauge> = IDLE_WORKER_GAUGES
        .iter()
        .chain(&MORE_WORKER_GAUGES)
        .map(|field| Gauge {
            name: format!("worker {}", field.replace('_', " ")),
            value: workers
                .iter()
                .filter_map(|w| w.get(*field).and_then(Value::as_u64))
                .sum(),
        })
        .collect();
    let metrics = reqwest::get(format!("{}/metrics", server.base_url()))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let series = unlabelled_series(&metrics);
    for metric in MORE_NODE_GAUGES.iter().chain(&IDLE_NODE_GAUGES) {
        let value = series
            .iter()
            .find(|(n, _)| n == metric)
            .map(|(_, v)| *v as u64)
            .with_context(|| format!("no {metric} in /metrics"))?;
        out.push(Gauge {
            name: metric.to_string(),
            value,
        });
    }
    Ok(out)
}

/// Polls the gauges until all read zero or `timeout` passes; returns the last reading and
/// how long it took.
async fn settle(
    server: &SfumatoServer,
    timeout: Duration,
) -> anyhow::Result<(Vec<Gauge>, Duration)> {
    let start = Instant::now();
    loop {
        let g = read_gauges(server).await?;
        if g.iter().all(|g| g.value == 0) || start.elapsed() >= timeout {
            return Ok((g, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Malformed signaling from a client of its own: bad JSON, unknown and incomplete messages,
/// then a join followed by a bad SDP and a layer request for no track. Returns how many
/// messages it sent.
async fn bad_signaling(ws_url: &str, i: u64) -> anyhow::Result<u64> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let messages = [
        "{not json".to_string(),
        "\u{0}\u{1}\u{2}".to_string(),
        r#"{"type":"no_such_message"}"#.to_string(),
        r#"{"type":"join"}"#.to_string(),
        r#"{"type":"publish_offer","sdp":"v=0"}"#.to_string(),
        format!(r#"{{"type":"join","v":1,"room":"{ROOM}","name":"garbage-{i}"}}"#),
        r#"{"type":"publish_offer","sdp":"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}"#.to_string(),
        r#"{"type":"quality","track":"no-such-track","quality":"high"}"#.to_string(),
        r#"{"type":"subscribe_answer","sdp":"garbage"}"#.to_string(),
        r#"[1,2,3]"#.to_string(),
    ];
    let mut sent = 0;
    for m in messages {
        ws.send(Message::Text(m.into())).await?;
        sent += 1;
    }
    ws.send(Message::Binary(vec![0xff; 64].into())).await?;
    sent += 1;
    // Half of them go away without a close handshake.
    if i.is_multiple_of(2) {
        let _ = ws.close(None).await;
    }
    Ok(sent)
}

/// The median of the samples within `[from, to)` seconds; NaN if none.
fn median_rss(rss: &[RssSample], from: f64, to: f64) -> f64 {
    let mut v: Vec<f64> = rss
        .iter()
        .filter(|s| s.t_s >= from && s.t_s < to)
        .map(|s| s.rss_mib)
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The warm-up (a sixth of the run, 10 s to 5 min) and the stretch each RSS figure is the
/// median of (a tenth of the run, 10 s to 1 min).
pub fn windows(duration: Duration) -> (Duration, Duration) {
    let warmup = (duration / 6).clamp(Duration::from_secs(10), Duration::from_secs(300));
    let stretch = (duration / 10).clamp(Duration::from_secs(10), Duration::from_secs(60));
    (warmup, stretch)
}

/// Runs a soak; the report says what failed, if anything.
pub async fn run(o: &SoakOptions) -> anyhow::Result<SoakReport> {
    let server = SfumatoServer::start(&o.server).await?;
    let fleet = Fleet::start(FleetConfig {
        threads: o.threads,
        ..FleetConfig::default()
    })?;
    let pid = server.pid();
    let rtc_ports: Vec<std::net::SocketAddr> = (0..o.server.workers as u16)
        .map(|w| std::net::SocketAddr::from(([127, 0, 0, 1], o.server.rtc_port + w)))
        .collect();
    let ufrags: Ufrags = Arc::default();
    let steady_media = MediaConfig {
        video_bitrate: 300_000,
        ..MediaConfig::default()
    };
    let churn_media = MediaConfig {
        video_bitrate: 300_000,
        simulcast: true,
        ..MediaConfig::default()
    };

    // The steady pair, connected and receiving each other before the churn starts.
    let mut steady = Vec::new();
    for name in ["steady-a", "steady-b"] {
        steady.push(join(&server, &fleet, name, Some(&steady_media), &ufrags).await?);
    }
    for m in &steady {
        if let Some(p) = &m.publisher {
            p.wait_connected(Duration::from_secs(15))
                .await
                .with_context(|| format!("{} did not connect", m.name))?;
        }
        m.receiver
            .wait_connected(Duration::from_secs(15))
            .await
            .with_context(|| format!("{}'s subscribe peer did not connect", m.name))?;
    }

    let mut act = Activity::default();
    let mut churn: std::collections::VecDeque<Member> = std::collections::VecDeque::new();
    let mut whip: std::collections::VecDeque<(HttpSession, u64)> = Default::default();
    let mut rss = Vec::new();
    let mut serial: u64 = 0;
    let start = Instant::now();
    let mut next_sample = start;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second: u64 = 0;
    let mut rng = garbage::Rng::new(0x50a6);
    let whip_url = format!("{}/whip/{ROOM}", server.base_url());
    while start.elapsed() < o.duration {
        tick.tick().await;
        second += 1;
        if Instant::now() >= next_sample {
            let s = procstat::sample(pid).context("sampling the server")?;
            rss.push(RssSample {
                t_s: start.elapsed().as_secs_f64(),
                rss_mib: mib(s.rss_bytes),
            });
            next_sample += o.sample_every;
        }
        // One leaves (the oldest, once the room is full), one joins: every second.
        if churn.len() >= o.churners {
            if let Some(m) = churn.pop_front() {
                let abrupt = second.is_multiple_of(3);
                m.leave(abrupt).await;
                act.leaves += 1;
                act.abrupt_leaves += u64::from(abrupt);
            }
        }
        serial += 1;
        let publishes = serial.is_multiple_of(2);
        let name = format!("churn-{serial}");
        match join(
            &server,
            &fleet,
            &name,
            publishes.then_some(&churn_media),
            &ufrags,
        )
        .await
        {
            Ok(m) => {
                act.joins += 1;
                churn.push_back(m);
            }
            Err(e) => {
                act.join_failures += 1;
                eprintln!("soak: {name} could not join: {e:#}");
            }
        }
        // Every 5 s a publisher restarts: leaves and joins again, publishing, at once.
        if second.is_multiple_of(5) {
            if let Some(at) = churn.iter().position(|m| m.publisher.is_some()) {
                if let Some(m) = churn.remove(at) {
                    let name = m.name.clone();
                    m.leave(false).await;
                    act.leaves += 1;
                    match join(&server, &fleet, &name, Some(&churn_media), &ufrags).await {
                        Ok(m) => {
                            act.joins += 1;
                            act.publisher_restarts += 1;
                            churn.push_back(m);
                        }
                        Err(e) => {
                            act.join_failures += 1;
                            eprintln!("soak: {name} could not rejoin: {e:#}");
                        }
                    }
                }
            }
        }
        // Subscribers switch the layer of a simulcast video they receive.
        for m in churn.iter().filter(|m| m.publisher.is_none()) {
            let videos: Vec<String> = m
                .session
                .subscriptions()
                .into_iter()
                .filter(|s| s.kind == "video")
                .map(|s| s.track)
                .collect();
            if videos.is_empty() {
                continue;
            }
            let track = &videos[rng.below(videos.len())];
            let quality = ["low", "medium", "high", "off"][rng.below(4)];
            m.session.set_quality(track, quality);
            act.layer_switches += 1;
        }
        // Garbage datagrams at every worker's port, some naming real peers' ufrags.
        let known = ufrags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let datagrams = garbage::datagrams(second, 20, &known, &[]);
        act.garbage_datagrams += garbage::spray(&rtc_ports, &datagrams).unwrap_or(0) as u64;
        // Malformed signaling every 3 s.
        if second.is_multiple_of(3) {
            match bad_signaling(&server.ws_url(), second).await {
                Ok(n) => act.bad_signaling_messages += n,
                Err(e) => eprintln!("soak: bad signaling client: {e:#}"),
            }
        }
        // A WHIP publisher every 10 s, for 5 s.
        while whip.front().is_some_and(|(_, until)| *until <= second) {
            if let Some((s, _)) = whip.pop_front() {
                if let Err(e) = s.close().await {
                    eprintln!("soak: closing a WHIP session: {e:#}");
                }
            }
        }
        if second.is_multiple_of(10) {
            match whip_publish(&whip_url).await {
                Ok(s) => {
                    act.whip_sessions += 1;
                    whip.push_back((s, second + 5));
                }
                Err(e) => {
                    act.whip_failures += 1;
                    eprintln!("soak: WHIP publish: {e:#}");
                }
            }
        }
    }
    let churn_s = start.elapsed().as_secs_f64();
    let last = procstat::sample(pid).context("sampling the server")?;
    rss.push(RssSample {
        t_s: churn_s,
        rss_mib: mib(last.rss_bytes),
    });

    // The steady pair's loss of each other's media, over the whole run.
    let sources: Vec<u32> = steady
        .iter()
        .map(|m| m.publisher.as_ref().map_or(0, PeerHandle::source_id))
        .collect();
    let mut losses = Vec::new();
    for (i, m) in steady.iter().enumerate() {
        let other = sources[1 - i];
        let report = m.receiver.stats().await?;
        let of = |kind: StreamKind| {
            let mut l = LossSummary::default();
            for s in report
                .received
                .iter()
                .filter(|s| s.kind == kind && base_source(s.source) == other)
            {
                l.add(&s.loss.summary());
            }
            l
        };
        losses.push(SteadyLoss {
            receiver: m.name.clone(),
            audio: of(StreamKind::Audio),
            video: of(StreamKind::Video),
        });
    }

    // Everyone leaves.
    for (s, _) in whip.drain(..) {
        let _ = s.close().await;
    }
    for m in churn.drain(..) {
        m.leave(false).await;
        act.leaves += 1;
    }
    for m in steady {
        m.leave(false).await;
    }
    let (gauges, settled) = settle(&server, o.settle).await?;
    let idle = procstat::sample(pid).context("sampling the server")?;
    drop(fleet);

    let duration = Duration::from_secs_f64(churn_s);
    let (warmup, stretch) = windows(duration);
    let (w, st) = (warmup.as_secs_f64(), stretch.as_secs_f64());
    let baseline = median_rss(&rss, w, w + st);
    let end = median_rss(&rss, churn_s - st, churn_s + 1.0);
    let growth = 100.0 * (end - baseline) / baseline;

    let mut failures = Vec::new();
    for g in gauges.iter().filter(|g| g.value != 0) {
        failures.push(format!(
            "{} = {} after everyone left ({:.1} s settle wait)",
            g.name,
            g.value,
            o.settle.as_secs_f64()
        ));
    }
    for l in &losses {
        for (kind, s) in [("audio", &l.audio), ("video", &l.video)] {
            if s.received == 0 {
                failures.push(format!("{} received no {kind} of the other", l.receiver));
            } else if 100.0 * s.loss > o.max_loss_pct {
                failures.push(format!(
                    "{} lost {:.3}% of the other's {kind} (at most {}%)",
                    l.receiver,
                    100.0 * s.loss,
                    o.max_loss_pct
                ));
            }
        }
    }
    if act.join_failures * 100 > act.joins.max(1) {
        failures.push(format!(
            "{} of {} joins failed",
            act.join_failures,
            act.joins + act.join_failures
        ));
    }
    if let Some(max) = o.max_rss_growth_pct {
        if growth.is_nan() || growth >= max {
            failures.push(format!(
                "resident memory grew {growth:.2}% after warm-up (at most {max}%)"
            ));
        }
    }
    Ok(SoakReport {
        duration_s: churn_s,
        workers: o.server.workers,
        churners: o.churners,
        activity: act,
        rss,
        warmup_s: w,
        rss_baseline_mib: baseline,
        rss_end_mib: end,
        rss_growth_pct: growth,
        rss_idle_mib: mib(idle.rss_bytes),
        settle_s: settled.as_secs_f64(),
        gauges,
        steady: losses,
        failures,
    })
}

impl SoakReport {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let a = &self.activity;
        let _ = writeln!(
            out,
            "Soak: {:.0} s of churn on {} worker(s), {} churning participants besides the \
             steady pair.\n",
            self.duration_s, self.workers, self.churners
        );
        let _ = writeln!(out, "| activity | count |\n|---|---:|");
        for (name, n) in [
            ("joins", a.joins),
            ("join failures", a.join_failures),
            ("leaves", a.leaves),
            ("of which abrupt (socket dropped)", a.abrupt_leaves),
            ("publisher restarts", a.publisher_restarts),
            ("layer switches", a.layer_switches),
            ("WHIP sessions", a.whip_sessions),
            ("WHIP failures", a.whip_failures),
            ("garbage datagrams", a.garbage_datagrams),
            ("malformed signaling messages", a.bad_signaling_messages),
        ] {
            let _ = writeln!(out, "| {name} | {n} |");
        }
        let _ = writeln!(
            out,
            "\nResident memory: {:.1} MiB after warm-up ({:.0} s), {:.1} MiB at the end \
             ({:+.2}%), {:.1} MiB once everyone left. Medians of the samples in the stretch \
             after the warm-up and in the last stretch.\n",
            self.rss_baseline_mib,
            self.warmup_s,
            self.rss_end_mib,
            self.rss_growth_pct,
            self.rss_idle_mib
        );
        let _ = writeln!(
            out,
            "After everyone left (settled in {:.2} s):\n\n| gauge | value |\n|---|---:|",
            self.settle_s
        );
        for g in &self.gauges {
            let _ = writeln!(out, "| {} | {} |", g.name, g.value);
        }
        let _ = writeln!(
            out,
            "\n| steady receiver | audio lost / expected | video lost / expected |\n|---|---:|---:|"
        );
        for l in &self.steady {
            let _ = writeln!(
                out,
                "| {} | {} / {} ({:.3}%) | {} / {} ({:.3}%) |",
                l.receiver,
                l.audio.lost,
                l.audio.expected,
                100.0 * l.audio.loss,
                l.video.lost,
                l.video.expected,
                100.0 * l.video.loss
            );
        }
        out
    }

    /// One line for logs and CI.
    pub fn result_line(&self) -> String {
        let leaked: u64 = self.gauges.iter().map(|g| g.value).sum();
        format!(
            "RESULT soak {:.0}s: rss {:.1} -> {:.1} MiB ({:+.2}%), leaked {}, joins {}, \
             restarts {}, layer switches {}, garbage {}, {}",
            self.duration_s,
            self.rss_baseline_mib,
            self.rss_end_mib,
            self.rss_growth_pct,
            leaked,
            self.activity.joins,
            self.activity.publisher_restarts,
            self.activity.layer_switches,
            self.activity.garbage_datagrams,
            if self.failures.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED: {}", self.failures.join("; "))
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_scale_with_the_run() {
        let (w, s) = windows(Duration::from_secs(120));
        assert_eq!((w, s), (Duration::from_secs(20), Duration::from_secs(12)));
        let (w, s) = windows(Duration::from_secs(1800));
        assert_eq!((w, s), (Duration::from_secs(300), Duration::from_secs(60)));
        let (w, s) = windows(Duration::from_secs(30));
        assert_eq!((w, s), (Duration::from_secs(10), Duration::from_secs(10)));
    }

    #[test]
    fn median_of_a_stretch() {
        let rss: Vec<RssSample> = [(0.0, 50.0), (10.0, 20.0), (11.0, 22.0), (12.0, 21.0)]
            .iter()
            .map(|&(t_s, rss_mib)| RssSample { t_s, rss_mib })
            .collect();
        assert_eq!(median_rss(&rss, 10.0, 20.0), 21.0);
        assert!(median_rss(&rss, 30.0, 40.0).is_nan());
    }
}
