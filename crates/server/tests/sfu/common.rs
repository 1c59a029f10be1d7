//! Shared helpers: starting the server, standard deadlines, flow checks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use sfumato_testkit::media::vp8_payload_without_picture_id;
use sfumato_testkit::{
    compare_payloads, poll_until, seq_discontinuities, Compare, Kind, Participant, PublishedTrack,
    ReceivedPacket, SentPacket, ServerOptions, TestServer,
};

/// Path of the server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sfumato");

/// Deadline for ICE + DTLS and the first packets.
pub const CONNECT: Duration = Duration::from_secs(15);
/// Deadline for an expected amount of media.
pub const MEDIA: Duration = Duration::from_secs(20);
/// Deadline for a signaling answer.
pub const SIGNAL: Duration = Duration::from_secs(10);
/// Deadline for cleanup to show in `/api/workers`.
pub const CLEANUP: Duration = Duration::from_secs(10);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serialises the tests of this binary (each runs a server with several threads plus its
/// clients; on small machines running them together only adds noise).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Starts the server with `--workers N --placement spread`.
pub async fn start(workers: usize) -> TestServer {
    match TestServer::start(BIN, ServerOptions::spread(workers)).await {
        Ok(s) => s,
        Err(e) => panic!("starting sfumato: {e:#}"),
    }
}

/// The id of the published track of `kind` (`"audio"` or `"video"`).
pub fn track_id(tracks: &[PublishedTrack], kind: &str) -> String {
    tracks
        .iter()
        .find(|t| t.kind == kind)
        .map(|t| t.id.clone())
        .unwrap_or_else(|| panic!("no {kind} track among {tracks:?}"))
}

/// Unwraps with the full error chain.
pub trait Must<T> {
    fn must(self, what: &str) -> T;
}

impl<T> Must<T> for anyhow::Result<T> {
    #[track_caller]
    fn must(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{what}: {e:#}"),
        }
    }
}

/// The `worker` of participant `id` in `GET /api/rooms/{room}`.
pub async fn worker_of(server: &TestServer, room: &str, id: &str) -> Value {
    let r = server
        .room(room)
        .await
        .must("GET /api/rooms/{room}")
        .unwrap_or_else(|| panic!("GET /api/rooms/{room}: 404, expected the room"));
    let parts = r["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /api/rooms/{room}: no participants array: {r}"));
    parts
        .iter()
        .find(|p| p["id"] == id)
        .map(|p| p["worker"].clone())
        .unwrap_or_else(|| panic!("GET /api/rooms/{room}: participant {id} missing: {r}"))
}

/// Waits until `sub` received at least `n` packets of `kind` from `publisher`.
pub async fn wait_received_from(sub: &Participant, publisher: &str, kind: Kind, n: usize) {
    let r = poll_until(MEDIA, || sub.received_from(publisher, kind).len() >= n).await;
    if r.is_err() {
        panic!(
            "subscriber got {} {} packets from {publisher} within {MEDIA:?}, expected >= {n}; \
             subscribed tracks {:?}; subscribe PC {:?}; counts {:?}; subscribe errors {:?}",
            sub.received_from(publisher, kind).len(),
            kind.as_str(),
            sub.subscribed_tracks(),
            sub.subscriber().map(|p| p.status()),
            sub.subscriber().map(|p| p.counts()),
            sub.subscribe_errors(),
        );
    }
}

/// Asserts every received payload is byte-identical to a sent one, in order, and that the
/// received sequence numbers have no gaps.
pub fn assert_identical(
    what: &str,
    sent: &[SentPacket],
    received: &[sfumato_testkit::ReceivedPacket],
) {
    let c = compare_payloads(sent, received, Compare::Exact);
    assert!(
        c.is_perfect(),
        "{what}: {} received, {} byte-identical to sent payloads, in order: {}; {}",
        c.received,
        c.matched,
        c.in_order,
        c.first_mismatch.as_deref().unwrap_or("")
    );
    let gaps = seq_discontinuities(received);
    assert!(
        gaps.is_empty(),
        "{what}: sequence discontinuities (ssrc, prev, next): {:?}",
        &gaps[..gaps.len().min(10)]
    );
}

/// Waits until `count()` grows by at least `by`, proving a flow still delivers.
pub async fn assert_grows(what: &str, by: u64, count: impl Fn() -> u64) {
    let start = count();
    let r = poll_until(MEDIA, || count() >= start + by).await;
    assert!(
        r.is_ok(),
        "{what}: received count went from {start} to {} within {MEDIA:?}, expected +{by}",
        count()
    );
}

/// Waits for cleanup: every worker reports zero peers, tracks, subscriptions, sinks, routes,
/// ufrags, timers and pending keyframe requests, and the control plane zero peers, tracks
/// and WHIP/WHEP sessions (`TestServer::wait_workers_idle`).
pub async fn assert_idle(server: &TestServer) {
    server.wait_workers_idle(CLEANUP).await.must("cleanup");
    // The periodic plans (every 2 s) never had to repair anything: the commands of a
    // normal session were all applied, and no plan fought them. Once every worker has
    // applied one plan since it went idle, so that the check is not merely early.
    let plans = |w: &[serde_json::Value]| -> Vec<u64> {
        w.iter().map(|s| s["plans"].as_u64().unwrap_or(0)).collect()
    };
    let idle = plans(&server.workers_stats().await.must("GET /api/workers"));
    let deadline = std::time::Instant::now() + CLEANUP;
    let workers = loop {
        let w = server.workers_stats().await.must("GET /api/workers");
        if plans(&w).iter().zip(&idle).all(|(now, then)| now > then) {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no plan applied by every worker within {CLEANUP:?}: {w:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let repairs: u64 = workers.iter().filter_map(|w| w["repairs"].as_u64()).sum();
    assert_eq!(repairs, 0, "repairs by reconciliation: {workers:?}");
}

/// A publisher (`alice`) and a subscriber (`bob`) in `room`, with media flowing.
pub struct Flow {
    pub alice: Participant,
    pub bob: Participant,
    pub alice_id: String,
}

impl Flow {
    pub async fn start(server: &TestServer, room: &str) -> Flow {
        Flow::across(server, server, room).await
    }

    /// `bob` on `sub_node` and `alice` on `pub_node` (the same server, or two nodes of a
    /// cluster) in `room`; alice publishes and bob receives her audio and video.
    pub async fn across(pub_node: &TestServer, sub_node: &TestServer, room: &str) -> Flow {
        let bob = Participant::join(&sub_node.ws_url(), room, "bob")
            .await
            .must("bob joins");
        let mut alice = Participant::join(&pub_node.ws_url(), room, "alice")
            .await
            .must("alice joins");
        let alice_id = alice.id();
        alice.publish().await.must("alice publishes");
        alice
            .publisher()
            .expect("publisher")
            .wait_connected(CONNECT)
            .await
            .must("alice's publish PC connects");
        bob.wait_subscribed(&alice_id, Kind::Video, CONNECT)
            .await
            .must("bob subscribes to alice's video");
        wait_received_from(&bob, &alice_id, Kind::Audio, 25).await;
        wait_received_from(&bob, &alice_id, Kind::Video, 25).await;
        Flow {
            alice,
            bob,
            alice_id,
        }
    }

    /// Asserts bob still receives alice's audio and video.
    pub async fn assert_flowing(&self, what: &str) {
        let (bob, id) = (&self.bob, self.alice_id.clone());
        assert_grows(&format!("{what}: audio"), 25, || {
            bob.received_from(&id, Kind::Audio).len() as u64
        })
        .await;
        assert_grows(&format!("{what}: video"), 25, || {
            bob.received_from(&id, Kind::Video).len() as u64
        })
        .await;
    }

    pub async fn leave(self) {
        self.alice.leave().await.must("alice leaves");
        self.bob.leave().await.must("bob leaves");
    }
}

/// The rid of the simulcast layer each received VP8 payload was sent on (`None`: none), by
/// its bytes (the picture id aside: the SFU rewrites it across a switch).
pub fn rids_of(sent: &[SentPacket], received: &[ReceivedPacket]) -> Vec<Option<String>> {
    let rid: HashMap<Vec<u8>, &str> = sent
        .iter()
        .filter_map(|s| {
            Some((
                vp8_payload_without_picture_id(&s.payload),
                s.rid.as_deref()?,
            ))
        })
        .collect();
    received
        .iter()
        .map(|r| {
            rid.get(&vp8_payload_without_picture_id(&r.payload))
                .map(|s| s.to_string())
        })
        .collect()
}

/// Waits until the last 30 video packets `sub` received from `publisher` (30 more than when
/// called) were all sent on simulcast layer `rid`.
pub async fn wait_layer(sub: &Participant, publisher: &Participant, rid: &str, what: &str) {
    const N: usize = 30;
    let pid = publisher.id();
    let peer = publisher.publisher().expect("publisher");
    let start = sub.received_from(&pid, Kind::Video).len();
    let deadline = Instant::now() + MEDIA;
    loop {
        let got = sub.received_from(&pid, Kind::Video);
        let last = rids_of(
            &peer.sent_of(Kind::Video),
            &got[got.len().saturating_sub(N)..],
        );
        if got.len() >= start + N && last.iter().all(|r| r.as_deref() == Some(rid)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the last {N} video packets received are not all of layer {rid}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
