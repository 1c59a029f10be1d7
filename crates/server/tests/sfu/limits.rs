//! Story: the node's limits. One client floods `quality` and `mute` messages while two
//! others join, publish and switch layers: the flood is cut to the flooder's rate (it hears
//! `rate_limited`, the others hear no more of its mutes than that rate lets through) and
//! every command of the others takes effect. A client that stops reading and answering
//! leaves the room within the idle timeout while the room carries on. Rooms, participants
//! and published tracks are capped, each refusal with its code and counted in `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfumato_testkit::{
    http_get, http_post, msg_type, Kind, Participant, ServerOptions, TestServer,
};

use crate::common::*;

async fn start_with(args: &[&str]) -> TestServer {
    let opts = ServerOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..ServerOptions::spread(2)
    };
    match TestServer::start(BIN, opts).await {
        Ok(s) => s,
        Err(e) => panic!("starting sfumato: {e:#}"),
    }
}

/// `sfumato_limit_hits_total{limit}` from `/metrics`.
async fn limit_hits(server: &TestServer, limit: &str) -> u64 {
    let m = http_get(&server.url("/metrics")).await.must("GET /metrics");
    let series = format!("sfumato_limit_hits_total{{limit=\"{limit}\"}} ");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

fn errors(p: &Participant) -> Vec<Value> {
    p.events_of("error")
}

const RATE: u64 = 20;
const BURST_SECONDS: u64 = 4;

#[tokio::test]
async fn a_flooding_client_never_drops_the_others_commands() {
    let _g = serial().await;
    let server = start_with(&["--max-signaling-rate", &RATE.to_string()]).await;
    let room = "flood";
    let mut mallory = Participant::join(&server.ws_url(), room, "mallory")
        .await
        .must("mallory joins");
    let mut alice = Participant::join(&server.ws_url(), room, "alice")
        .await
        .must("alice joins");
    let mallory_tracks = mallory.publish().await.must("mallory publishes");
    let alice_tracks = alice.publish_simulcast().await.must("alice publishes");
    let own_audio = track_id(&mallory_tracks, "audio");
    let video = track_id(&alice_tracks, "video");

    // Mallory floods from here on: mutes of its own audio (each would be broadcast to the
    // room) and qualities of alice's video (each would be a command to a worker), ~20 000
    // a second, a thousand times its rate.
    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let flood = {
        let (flooding, sent, video) = (flooding.clone(), sent.clone(), video.clone());
        tokio::spawn(async move {
            let mut muted = false;
            while flooding.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    muted = !muted;
                    let q = if muted { "low" } else { "high" };
                    let _ = mallory
                        .send_json(&json!({"type": "mute", "track": own_audio, "muted": muted}));
                    let _ = mallory
                        .send_json(&json!({"type": "quality", "track": video, "quality": q}));
                }
                sent.fetch_add(200, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            mallory
        })
    };

    // Meanwhile bob joins, receives alice, and switches her video down and up again.
    let bob = Participant::join(&server.ws_url(), room, "bob")
        .await
        .must("bob joins during the flood");
    alice
        .publisher()
        .expect("publisher")
        .wait_connected(CONNECT)
        .await
        .must("alice's publish PC connects");
    wait_received_from(&bob, &alice.id(), Kind::Video, 50).await;
    bob.send_json(&json!({"type": "quality", "track": video, "quality": "low"}))
        .must("bob asks for the low layer");
    wait_layer(&bob, &alice, "q", "bob's switch to low").await;
    bob.send_json(&json!({"type": "quality", "track": video, "quality": "high"}))
        .must("bob asks for the high layer");
    wait_layer(&bob, &alice, "f", "bob's switch to high").await;

    flooding.store(false, Ordering::Relaxed);
    let mallory = flood.await.expect("the flood task");
    let elapsed = started.elapsed().as_secs() + 1;
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 1000, "mallory flooded: {sent} messages");

    // Nothing the others sent was refused.
    assert_eq!(errors(&alice), Vec::<Value>::new(), "alice's errors");
    assert_eq!(errors(&bob), Vec::<Value>::new(), "bob's errors");
    // Mallory heard why (once a second at most), and the hits are counted.
    let told = mallory
        .events_of("error")
        .into_iter()
        .filter(|e| e["code"] == "rate_limited")
        .count() as u64;
    assert!(
        (1..=elapsed + 1).contains(&told),
        "mallory told {told} times in ~{elapsed} s"
    );
    let hits = limit_hits(&server, "signaling_rate").await;
    assert!(hits >= 1000 && hits >= told, "{hits} messages dropped");
    // The room heard no more of mallory's mutes than its rate lets through.
    let heard = bob
        .events_of("track_muted")
        .into_iter()
        .filter(|e| e["participant"] == mallory.id())
        .count() as u64;
    assert!(
        heard <= RATE * (BURST_SECONDS + elapsed),
        "bob heard {heard} of mallory's {sent} messages over ~{elapsed} s at {RATE}/s"
    );

    // Mallory's last messages may still be on their way (and over its rate): it just goes.
    drop(mallory);
    alice.leave().await.must("alice leaves");
    bob.leave().await.must("bob leaves");
    assert_idle(&server).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_leaves_within_the_idle_timeout() {
    let _g = serial().await;
    let server = start_with(&["--ws-ping-interval", "1s", "--ws-idle-timeout", "3s"]).await;
    let room = "ghosts";
    let alice = Participant::join(&server.ws_url(), room, "alice")
        .await
        .must("alice joins");

    // The ghost joins, then neither reads nor writes again (its socket stays open).
    let (mut ghost, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .must_ok("the ghost connects");
    ghost
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "join", "v": 1, "room": room, "name": "ghost"})
                .to_string()
                .into(),
        ))
        .await
        .must_ok("the ghost sends join");
    let joined = loop {
        let msg = tokio::time::timeout(SIGNAL, ghost.next())
            .await
            .must_ok("an answer to the ghost's join");
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = msg {
            let v: Value = serde_json::from_str(t.as_str()).must_ok("JSON");
            if msg_type(&v) == "joined" {
                break v;
            }
        }
    };
    let ghost_id = joined["participant"]["id"].clone();
    alice
        .wait_event("participant_joined", SIGNAL)
        .await
        .must("alice hears the ghost join");

    // It leaves the room after the idle timeout (3 s) and alice hears of it.
    alice
        .wait_event_since(0, Duration::from_secs(20), |e| {
            msg_type(e) == "participant_left" && e["participant"] == ghost_id
        })
        .await
        .must("alice hears the ghost leave");
    assert_eq!(limit_hits(&server, "idle_timeout").await, 1);

    // The room carries on, and alice, who answers pings, is still in it.
    let carol = Participant::join(&server.ws_url(), room, "carol")
        .await
        .must("carol joins");
    let others: Vec<Value> = carol.joined().expect("joined")["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(others.len(), 1, "carol finds alice alone: {others:?}");
    assert_eq!(others[0]["id"], json!(alice.id()));
    drop(ghost);
    alice.leave().await.must("alice leaves");
    carol.leave().await.must("carol leaves");
    assert_idle(&server).await;
}

#[tokio::test]
async fn rooms_participants_and_tracks_are_capped_with_a_reason() {
    let _g = serial().await;
    let server = start_with(&[
        "--max-rooms",
        "1",
        "--max-participants-per-room",
        "2",
        "--max-tracks-per-participant",
        "1",
    ])
    .await;
    let mut a = Participant::join(&server.ws_url(), "one", "a")
        .await
        .must("a joins");
    let b = Participant::join(&server.ws_url(), "one", "b")
        .await
        .must("b joins");
    let refusal = |e: anyhow::Error| format!("{e:#}");
    let full = Participant::join(&server.ws_url(), "one", "c")
        .await
        .err()
        .map(refusal)
        .expect("c is refused");
    assert!(full.contains("room_full"), "{full}");
    let other = Participant::join(&server.ws_url(), "two", "d")
        .await
        .err()
        .map(refusal)
        .expect("d is refused");
    assert!(other.contains("node_full"), "{other}");
    let whip = http_post(&server.url("/whip/two"), Some("application/sdp"), "v=0\r\n")
        .await
        .must("POST /whip/two");
    assert_eq!(whip.status, 503, "{}", whip.body);
    // Audio and video are two tracks.
    let tracks = a.publish().await.err().map(refusal).expect("refused");
    assert!(tracks.contains("too_many_tracks"), "{tracks}");

    assert_eq!(limit_hits(&server, "participants_per_room").await, 1);
    assert_eq!(limit_hits(&server, "rooms").await, 2);
    assert_eq!(limit_hits(&server, "tracks_per_participant").await, 1);
    a.leave().await.must("a leaves");
    b.leave().await.must("b leaves");
    // Once the room is empty, another may take its place.
    let d = Participant::join(&server.ws_url(), "two", "d")
        .await
        .must("d joins once room one is gone");
    d.leave().await.must("d leaves");
    assert_idle(&server).await;
}

/// `expect` with the error shown, for results that are not `anyhow`.
trait MustOk<T> {
    fn must_ok(self, what: &str) -> T;
}

impl<T, E: std::fmt::Debug> MustOk<T> for Result<T, E> {
    #[track_caller]
    fn must_ok(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}
