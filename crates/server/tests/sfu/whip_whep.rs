//! (4) WHIP publish → WebSocket subscriber; WebSocket publisher → WHEP player; DELETE ends
//! the session.

use sfumato_testkit::{
    http_delete, msg_type, poll_until, whep_play, whip_publish, Kind, Participant,
};

use crate::common::*;

#[tokio::test]
async fn whip_publisher_reaches_websocket_subscriber() {
    let _g = serial().await;
    let server = start(2).await;
    let room = "whip";
    let bob = Participant::join(&server.ws_url(), room, "bob")
        .await
        .must("bob joins");
    let session = whip_publish(&server.url(&format!("/whip/{room}?name=cam")))
        .await
        .must("WHIP POST");
    let loc = session.location().to_string();
    assert!(
        loc.contains(&format!("/whip/{room}/")),
        "Location should be /whip/{{room}}/{{session}}: {loc}"
    );
    session
        .peer()
        .wait_connected(CONNECT)
        .await
        .must("WHIP PC connects");

    let joined = bob
        .wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "participant_joined" && e["participant"]["name"] == "cam"
        })
        .await
        .must("bob gets participant_joined for the WHIP publisher (?name=cam)");
    let cam = joined["participant"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wait_received_from(&bob, &cam, Kind::Audio, 100).await;
    wait_received_from(&bob, &cam, Kind::Video, 100).await;
    for kind in [Kind::Audio, Kind::Video] {
        assert_identical(
            &format!("{} WHIP -> WebSocket", kind.as_str()),
            &session.peer().sent_of(kind),
            &bob.received_from(&cam, kind),
        );
    }

    let status = session.close().await.must("WHIP DELETE");
    assert_eq!(status, 200, "DELETE {loc}");
    bob.wait_event_since(0, SIGNAL, |e| {
        msg_type(e) == "participant_left" && e["participant"] == cam.as_str()
    })
    .await
    .must("bob gets participant_left after the WHIP DELETE");
    let again = http_delete(&loc).await.must("second DELETE");
    assert_eq!(again.status, 404, "second DELETE {loc}: {:?}", again.body);
    bob.leave().await.must("bob leaves");
    assert_idle(&server).await;
}

#[tokio::test]
async fn websocket_publisher_reaches_whep_players() {
    let _g = serial().await;
    let server = start(2).await;
    let room = "whep";
    let mut alice = Participant::join(&server.ws_url(), room, "alice")
        .await
        .must("alice joins");
    let aid = alice.id();
    alice.publish().await.must("alice publishes");
    let publisher = alice.publisher().expect("publisher");
    publisher
        .wait_connected(CONNECT)
        .await
        .must("alice's publish PC connects");

    // The room's first publisher, and the chosen one.
    let first = whep_play(&server.url(&format!("/whep/{room}")))
        .await
        .must("WHEP POST /whep/{room}");
    let chosen = whep_play(&server.url(&format!("/whep/{room}/{aid}")))
        .await
        .must("WHEP POST /whep/{room}/{participant}");
    for (label, s) in [("first", &first), ("chosen", &chosen)] {
        assert!(
            s.location().contains(&format!("/whep/{room}/session/")),
            "{label}: Location should be /whep/{{room}}/session/{{session}}: {}",
            s.location()
        );
        s.peer()
            .wait_connected(CONNECT)
            .await
            .must("WHEP PC connects");
        let p = s.peer();
        let r = poll_until(MEDIA, || {
            p.received_count(Kind::Audio) >= 100 && p.received_count(Kind::Video) >= 100
        })
        .await;
        assert!(
            r.is_ok(),
            "WHEP {label}: expected >= 100 audio and video packets within {MEDIA:?}: {:?} {:?}",
            p.counts(),
            p.status()
        );
        assert_eq!(
            p.counts().received_unknown,
            0,
            "WHEP {label}: unmapped packets"
        );
        for kind in [Kind::Audio, Kind::Video] {
            assert_identical(
                &format!("{} WebSocket -> WHEP {label}", kind.as_str()),
                &publisher.sent_of(kind),
                &p.received_of(kind),
            );
        }
    }

    let loc = first.location().to_string();
    assert_eq!(first.close().await.must("WHEP DELETE"), 200, "DELETE {loc}");
    let again = http_delete(&loc).await.must("second DELETE");
    assert_eq!(again.status, 404, "second DELETE {loc}: {:?}", again.body);
    // The other player is unaffected.
    let p = chosen.peer();
    assert_grows("chosen WHEP player after the other's DELETE", 25, || {
        p.received_count(Kind::Video)
    })
    .await;
    let loc2 = chosen.location().to_string();
    assert_eq!(
        chosen.close().await.must("WHEP DELETE"),
        200,
        "DELETE {loc2}"
    );
    alice.leave().await.must("alice leaves");
    assert_idle(&server).await;
}
