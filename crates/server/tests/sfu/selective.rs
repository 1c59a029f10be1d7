//! Selective subscription: a participant that joins with `auto_subscribe: false` receives
//! nothing until it `subscribe`s to a track, and stops receiving it on `unsubscribe`; track
//! objects name their `source`; a subscriber hears which layer of each video it gets
//! (`received_layers`).

use serde_json::json;
use sfumato_testkit::{msg_type, poll_until, Kind, Participant};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_subscriber_receives_only_what_it_asks_for() {
    let _serial = serial().await;
    let server = start(1).await;
    let ws = server.ws_url();

    let picky = Participant::connect(&ws).await.must("picky connects");
    picky
        .send_json(&json!({"type": "join", "v": 1, "room": "sel", "name": "picky", "auto_subscribe": false}))
        .must("join");
    picky.wait_event("joined", SIGNAL).await.must("picky joins");

    let mut alice = Participant::join(&ws, "sel", "alice")
        .await
        .must("alice joins");
    let alice_id = alice.id();
    let tracks = alice.publish().await.must("alice publishes");
    let video = track_id(&tracks, "video");
    let announced = picky
        .wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "track_published" && e["track"]["id"] == video.as_str()
        })
        .await
        .must("picky hears of alice's video");
    assert_eq!(announced["track"]["source"], "camera", "{announced}");

    // A participant that subscribes to everything receives alice's video: by then the
    // server has made every automatic subscription it would make.
    let auto = Participant::join(&ws, "sel", "auto")
        .await
        .must("auto joins");
    auto.wait_subscribed(&alice_id, Kind::Video, CONNECT)
        .await
        .must("auto receives alice's video");
    assert!(
        picky.subscribed_tracks().is_empty(),
        "picky asked for nothing: {:?}",
        picky.subscribed_tracks()
    );
    assert_eq!(picky.subscribe_offers(), 0, "no subscribe_offer for picky");

    // Unknown tracks and its own are refused.
    for track in ["nope".to_string(), video.clone() + "x"] {
        let mark = picky.event_count();
        picky
            .send_json(&json!({"type": "subscribe", "track": track}))
            .must("subscribe");
        let err = picky.wait_error_since(mark, SIGNAL).await.must("an error");
        assert_eq!(err["code"], "unknown_track", "{err}");
    }

    picky
        .send_json(&json!({"type": "subscribe", "track": video}))
        .must("subscribe");
    picky
        .wait_subscribed(&alice_id, Kind::Video, CONNECT)
        .await
        .must("picky receives alice's video once it asks");
    poll_until(MEDIA, || picky.received_count(Kind::Video) > 20)
        .await
        .must("video packets reach picky");
    // The server tells picky which layer of the video it forwards.
    let layers = picky
        .wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "received_layers" && e["tracks"][video.as_str()].is_object()
        })
        .await
        .must("received_layers names the video");
    let layer = &layers["tracks"][video.as_str()]["layer"];
    assert!(layer.is_null() || layer.is_u64(), "{layers}");
    assert!(
        picky.subscribed_tracks().iter().all(|t| t.kind == "video"),
        "only the video it asked for: {:?}",
        picky.subscribed_tracks()
    );

    let offers = picky.subscribe_offers();
    picky
        .send_json(&json!({"type": "unsubscribe", "track": video}))
        .must("unsubscribe");
    poll_until(SIGNAL, || {
        picky.subscribe_offers() > offers && picky.subscribed_tracks().is_empty()
    })
    .await
    .must("the next offer has no track for picky");
    // The others are not affected.
    assert!(auto.subscribed_tracks().iter().any(|t| t.track == video));
}
