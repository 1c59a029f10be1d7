//! (1) A publisher's RTP payloads arrive byte-identical at a subscriber, on the same worker
//! and across workers.

use serde_json::Value;
use sfumato_testkit::{msg_type, Kind, Participant};

use crate::common::*;

/// Bob joins, Alice joins and publishes; Bob must see her join and her tracks, get a
/// subscribe offer and receive her media byte for byte.
async fn forward_and_compare(server: &sfumato_testkit::TestServer, room: &str) -> (Value, Value) {
    let bob = Participant::join(&server.ws_url(), room, "bob")
        .await
        .must("bob joins");
    let mut alice = Participant::join(&server.ws_url(), room, "alice")
        .await
        .must("alice joins");
    let alice_id = alice.id();
    assert!(
        !alice_id.is_empty(),
        "joined without participant.id: {:?}",
        alice.joined()
    );
    let others = &alice.joined().expect("joined")["participants"];
    assert!(
        others
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == "bob")),
        "alice's joined.participants should list bob: {others}"
    );

    bob.wait_event_since(0, SIGNAL, |e| {
        msg_type(e) == "participant_joined" && e["participant"]["id"] == alice_id.as_str()
    })
    .await
    .must("bob gets participant_joined for alice");

    let tracks = alice.publish().await.must("alice publishes");
    let kinds: Vec<&str> = tracks.iter().map(|t| t.kind.as_str()).collect();
    assert!(
        kinds.contains(&"audio") && kinds.contains(&"video"),
        "publish_answer.tracks should list an audio and a video track: {tracks:?}"
    );
    for kind in ["audio", "video"] {
        bob.wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "track_published"
                && e["track"]["participant"] == alice_id.as_str()
                && e["track"]["kind"] == kind
        })
        .await
        .must("bob gets track_published");
    }
    alice
        .publisher()
        .expect("publisher")
        .wait_connected(CONNECT)
        .await
        .must("alice's publish PC connects");
    for kind in [Kind::Audio, Kind::Video] {
        bob.wait_subscribed(&alice_id, kind, CONNECT)
            .await
            .must("bob's subscribe PC carries alice's track");
    }
    wait_received_from(&bob, &alice_id, Kind::Audio, 150).await;
    wait_received_from(&bob, &alice_id, Kind::Video, 150).await;

    let publisher = alice.publisher().expect("publisher");
    assert_identical(
        "audio alice -> bob",
        &publisher.sent_of(Kind::Audio),
        &bob.received_from(&alice_id, Kind::Audio),
    );
    assert_identical(
        "video alice -> bob",
        &publisher.sent_of(Kind::Video),
        &bob.received_from(&alice_id, Kind::Video),
    );
    // The subscriber's first video packet starts a key frame.
    let first = &bob.received_from(&alice_id, Kind::Video)[0];
    assert!(
        sfumato_testkit::media::vp8_payload_is_keyframe(&first.payload),
        "bob's first video packet is not the start of a key frame: {:02x?}",
        &first.payload[..first.payload.len().min(12)]
    );
    let sub = bob.subscriber().expect("subscribe PC");
    assert_eq!(sub.counts().received_unknown, 0, "packets on unmapped mids");

    let wa = worker_of(server, room, &alice_id).await;
    let wb = worker_of(server, room, &bob.id()).await;

    alice.leave().await.must("alice leaves");
    bob.wait_event_since(0, SIGNAL, |e| {
        msg_type(e) == "participant_left" && e["participant"] == alice_id.as_str()
    })
    .await
    .must("bob gets participant_left for alice");
    bob.leave().await.must("bob leaves");
    assert_idle(server).await;
    (wa, wb)
}

#[tokio::test]
async fn same_worker_payloads_arrive_byte_identical() {
    let _g = serial().await;
    let server = start(1).await;
    let (wa, wb) = forward_and_compare(&server, "fwd-same").await;
    assert_eq!(wa, wb, "with --workers 1 both must be on the one worker");
}

#[tokio::test]
async fn cross_worker_payloads_arrive_byte_identical() {
    let _g = serial().await;
    let server = start(2).await;
    let (wa, wb) = forward_and_compare(&server, "fwd-cross").await;
    assert_ne!(
        wa, wb,
        "with --workers 2 --placement spread, GET /api/rooms/{{room}} should put alice and bob \
         on different workers"
    );
}
