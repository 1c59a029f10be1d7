//! Fleet peers connected to each other directly (no SFU): media flows both ways with real
//! ICE, DTLS and SRTP, renegotiation adds m-lines, and the receivers measure no loss.

use std::time::{Duration, Instant};

use sfumato_bench::fleet::{Fleet, FleetConfig, OfferKind, PeerConfig, PeerHandle, PeerReport};
use sfumato_bench::media::{MediaConfig, StreamKind};

const CONNECT: Duration = Duration::from_secs(10);

/// `offerer` offers `kind`, `answerer` answers.
async fn negotiate(offerer: &PeerHandle, answerer: &PeerHandle, kind: OfferKind) {
    let offer = offerer.create_offer(kind).await.expect("offer");
    let answer = answerer.accept_offer(&offer).await.expect("answer");
    offerer.accept_answer(&answer).await.expect("accept answer");
}

/// Polls `peer`'s stats until `done` holds or `timeout` passes; returns the last report.
async fn stats_until(
    peer: &PeerHandle,
    timeout: Duration,
    done: impl Fn(&PeerReport) -> bool,
) -> PeerReport {
    let deadline = Instant::now() + timeout;
    loop {
        let r = peer.stats().await.expect("stats");
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stream(r: &PeerReport, source: u32, kind: StreamKind) -> &sfumato_bench::fleet::StreamReport {
    r.received
        .iter()
        .find(|s| s.source == source && s.kind == kind)
        .unwrap_or_else(|| {
            panic!(
                "{} received no {kind:?} from source {source}: {r:#?}",
                r.name
            )
        })
}

fn assert_clean(r: &PeerReport, source: u32, min_audio: u64, min_video: u64) {
    let audio = stream(r, source, StreamKind::Audio);
    let video = stream(r, source, StreamKind::Video);
    assert!(
        audio.packets >= min_audio,
        "audio {} < {min_audio}",
        audio.packets
    );
    assert!(
        video.packets >= min_video,
        "video {} < {min_video}",
        video.packets
    );
    for s in [audio, video] {
        assert_eq!(s.loss.lost(), 0, "{:?} lost packets: {:?}", s.kind, s.loss);
        assert_eq!(s.loss.duplicates(), 0);
        assert_eq!(s.latency.count(), s.packets, "every packet has a latency");
        let p99 = s.latency.p99().expect("latency");
        assert!(p99 < Duration::from_secs(1), "{:?} p99 {p99:?}", s.kind);
    }
    assert!(video.keyframes >= 1, "the first frame is a keyframe");
    assert_eq!(r.unstamped, 0);
    assert!(r.join_time.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_exchange_media_and_renegotiate() {
    let fleet = Fleet::start(FleetConfig::default()).expect("fleet");
    let a = fleet
        .add_peer(PeerConfig::publisher("a", MediaConfig::default()))
        .expect("a");
    let b = fleet
        .add_peer(PeerConfig::publisher("b", MediaConfig::default()))
        .expect("b");

    // a publishes to b.
    negotiate(&a, &b, OfferKind::Publish).await;
    a.wait_connected(CONNECT).await.expect("a connects");
    b.wait_connected(CONNECT).await.expect("b connects");
    let rb = stats_until(&b, Duration::from_secs(5), |r| {
        r.received.len() == 2 && r.received.iter().all(|s| s.packets >= 40)
    })
    .await;
    assert_clean(&rb, a.source_id(), 40, 40);

    // b renegotiates and publishes back on new m-lines.
    negotiate(&b, &a, OfferKind::Publish).await;
    let ra = stats_until(&a, Duration::from_secs(5), |r| {
        r.received.len() == 2 && r.received.iter().all(|s| s.packets >= 40)
    })
    .await;
    assert_clean(&ra, b.source_id(), 40, 40);

    // a's media kept flowing through b's renegotiation.
    let rb2 = b.stats().await.expect("stats");
    assert_clean(&rb2, a.source_id(), 2 * 40, 2 * 40);
    let sa = a.stats().await.expect("stats");
    assert!(sa.sent_audio.packets >= stream(&rb2, a.source_id(), StreamKind::Audio).packets);
    assert!(sa.sent_video.keyframes >= 1);
    assert_eq!(sa.send_errors, 0);
    // Nothing was lost, so nothing was NACKed.
    assert_eq!(rb2.nacks_sent, 0);
    assert!(sa.connect_time.is_some());

    let cpu = fleet.cpu_time();
    assert_eq!(cpu.per_thread.len(), 1);
    assert!(cpu.total() > Duration::ZERO);

    a.close().await;
    // b sees no more media from a once it is closed.
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_counts_what_was_sent_in_it() {
    let fleet = Fleet::start(FleetConfig::default()).expect("fleet");
    assert_eq!(fleet.window(), sfumato_bench::stats::Window::NONE);
    let a = fleet
        .add_peer(PeerConfig::publisher("a", MediaConfig::default()))
        .expect("a");
    let b = fleet.add_peer(PeerConfig::receiver("b")).expect("b");
    negotiate(&a, &b, OfferKind::Publish).await;
    a.wait_connected(CONNECT).await.expect("a connects");
    b.wait_connected(CONNECT).await.expect("b connects");
    // Media flows before the window: none of it counts in the window's figures.
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + Duration::from_secs(1);
    fleet.set_window(start, end);
    let before = b.stats().await.expect("stats");
    assert!(before.packets_received() > 0);
    assert_eq!(before.arrived_in_window(), 0);
    assert_eq!(before.window_latency().count(), 0);
    tokio::time::sleep_until((end + Duration::from_millis(300)).into()).await;

    let sa = a.stats().await.expect("stats");
    let rb = b.stats().await.expect("stats");
    for kind in [StreamKind::Audio, StreamKind::Video] {
        let sent = sa.sent_in_window(kind);
        let s = stream(&rb, a.source_id(), kind);
        assert!(sent > 0, "{kind:?}: nothing sent in the window");
        assert!(
            sent < s.packets,
            "{kind:?}: the window is part of the stream"
        );
        // Lossless loopback: what was sent in the window arrived, each with a latency.
        let loss = s.window.loss(Some(sent));
        assert_eq!((loss.expected, loss.lost), (sent, 0), "{kind:?}");
        assert_eq!(s.window.latency.count(), sent);
        assert!(s.window.arrived > 0 && s.window.arrived < s.packets);
    }
    let total =
        rb.window_loss(|source, kind| (source == a.source_id()).then(|| sa.sent_in_window(kind)));
    assert_eq!(
        total.expected,
        sa.sent_in_window(StreamKind::Audio) + sa.sent_in_window(StreamKind::Video)
    );
    assert_eq!(total.lost, 0);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_many_receivers_on_two_threads_with_ice_lite() {
    let fleet = Fleet::start(FleetConfig {
        threads: 2,
        ..FleetConfig::default()
    })
    .expect("fleet");
    // Each publisher is ICE-lite and offers; its receiver answers as the full, controlling
    // ICE agent (as a fleet peer does against an ICE-lite SFU).
    let mut pairs = Vec::new();
    for i in 0..3 {
        let publisher = fleet
            .add_peer(PeerConfig {
                ice_lite: true,
                ..PeerConfig::publisher(format!("pub{i}"), MediaConfig::default())
            })
            .expect("publisher");
        let receiver = fleet
            .add_peer(PeerConfig::receiver(format!("recv{i}")))
            .expect("receiver");
        pairs.push((publisher, receiver));
    }
    for (p, r) in &pairs {
        negotiate(p, r, OfferKind::Publish).await;
    }
    for (p, r) in &pairs {
        p.wait_connected(CONNECT).await.expect("publisher connects");
        r.wait_connected(CONNECT).await.expect("receiver connects");
    }
    for (p, r) in &pairs {
        let rep = stats_until(r, Duration::from_secs(5), |rep| {
            rep.received.len() == 2 && rep.received.iter().all(|s| s.packets >= 30)
        })
        .await;
        assert_clean(&rep, p.source_id(), 30, 30);
        // Each receiver sees only its own publisher.
        assert!(rep.received.iter().all(|s| s.source == p.source_id()));
    }
    assert_eq!(fleet.cpu_time().per_thread.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recvonly_offer_and_bad_sdp_are_handled() {
    let fleet = Fleet::start(FleetConfig::default()).expect("fleet");
    let r = fleet.add_peer(PeerConfig::receiver("r")).expect("r");
    // A receiver cannot publish.
    assert!(r.create_offer(OfferKind::Publish).await.is_err());
    let offer = r
        .create_offer(OfferKind::RecvOnly {
            audio: true,
            video: true,
        })
        .await
        .expect("recvonly offer");
    assert!(offer.contains("a=recvonly"));
    // Only one offer pending at a time; garbage answers and offers are errors, not panics.
    assert!(r
        .create_offer(OfferKind::RecvOnly {
            audio: true,
            video: false
        })
        .await
        .is_err());
    assert!(r.accept_answer("v=0 garbage").await.is_err());
    let other = fleet.add_peer(PeerConfig::receiver("o")).expect("o");
    assert!(other.accept_offer("not sdp").await.is_err());
    // The peer is still alive.
    assert!(r.stats().await.is_ok());
    r.close().await;
    drop(other);
}

/// Throughput of one fleet thread: N publisher→receiver pairs on loopback, all on one
/// thread, for a few seconds. Run with:
/// `FLEET_PAIRS=20 cargo test --release -p sfumato-bench --test fleet -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_of_one_fleet_thread() {
    let pairs_n: usize = std::env::var("FLEET_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let secs: u64 = std::env::var("FLEET_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let fleet = Fleet::start(FleetConfig::default()).expect("fleet");
    let mut pairs = Vec::new();
    for i in 0..pairs_n {
        let p = fleet
            .add_peer(PeerConfig::publisher(
                format!("p{i}"),
                MediaConfig::default(),
            ))
            .expect("publisher");
        let r = fleet
            .add_peer(PeerConfig::receiver(format!("r{i}")))
            .expect("receiver");
        negotiate(&p, &r, OfferKind::Publish).await;
        pairs.push((p, r));
    }
    for (p, r) in &pairs {
        p.wait_connected(CONNECT).await.expect("connect");
        r.wait_connected(CONNECT).await.expect("connect");
    }
    // Let the first keyframes pass, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = |reports: &[(PeerReport, PeerReport)]| {
        reports.iter().fold((0u64, 0u64), |(s, r), (ps, rs)| {
            (s + ps.packets_sent(), r + rs.packets_received())
        })
    };
    let mut before = Vec::new();
    for (p, r) in &pairs {
        before.push((
            p.stats().await.expect("stats"),
            r.stats().await.expect("stats"),
        ));
    }
    let cpu0 = fleet.cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t0.elapsed();
    let cpu1 = fleet.cpu_time();
    let mut after = Vec::new();
    for (p, r) in &pairs {
        after.push((
            p.stats().await.expect("stats"),
            r.stats().await.expect("stats"),
        ));
    }
    let (s0, r0) = count(&before);
    let (s1, r1) = count(&after);
    let sent = (s1 - s0) as f64 / wall.as_secs_f64();
    let recv = (r1 - r0) as f64 / wall.as_secs_f64();
    let busy = cpu1.busiest_since(&cpu0, wall);
    let cpu = (cpu1.total() - cpu0.total()).as_secs_f64();
    let mut latency = sfumato_bench::stats::LatencyHistogram::new();
    let mut loss = sfumato_bench::stats::LossSummary::default();
    let mut lag = sfumato_bench::stats::LatencyHistogram::new();
    for (p, r) in &after {
        latency.merge(&r.latency(None));
        loss.add(&r.loss(None));
        lag.merge(&p.send_lag);
    }
    println!(
        "pairs={pairs_n} sent={sent:.0} pkt/s received={recv:.0} pkt/s thread busy={:.1}% \
         cpu/packet (sent+received)={:.1} µs loss={:.4}% latency={:?} send lag={:?}",
        busy * 100.0,
        cpu * 1e6 / ((s1 - s0) + (r1 - r0)).max(1) as f64,
        loss.loss * 100.0,
        latency.summary(),
        lag.summary(),
    );
}

/// The handles work from spawned tokio tasks.
#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Fleet>();
    send_sync::<PeerHandle>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fleet = Fleet::start(FleetConfig::default()).expect("fleet");
    let peer = fleet.add_peer(PeerConfig::receiver("x")).expect("peer");
    let fut = peer.stats();
    send(&fut);
    let report = rt.block_on(fut).expect("stats");
    assert_eq!(report.name, "x");
    assert!(report.received.is_empty());
    assert!(!peer.state().connected);
}
