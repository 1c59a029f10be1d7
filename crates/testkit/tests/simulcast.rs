//! A simulcast publisher (three real VP8 layers, rids q, h, f): directly to a receiver, and
//! over WHIP through the real server to a WHEP viewer and a WebSocket subscriber that picks
//! each layer in turn.

use std::time::Duration;

use serde_json::json;
use sfumato_testkit::media::{parse_vp8_descriptor, vp8_payload_keyframe_size, SIMULCAST_RIDS};
use sfumato_testkit::{
    compare_payloads, poll_until, seq_discontinuities, sfumato_bin, whep_play,
    whip_publish_simulcast, Compare, Kind, OfferSpec, Participant, Peer, PeerOptions,
    ReceivedPacket, SentPacket, ServerOptions, TestServer,
};

/// Deadline for ICE + DTLS.
const CONNECT: Duration = Duration::from_secs(15);
/// Deadline for an expected amount of media.
const MEDIA: Duration = Duration::from_secs(20);

/// The layer sizes, in `SIMULCAST_RIDS` order.
const SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];

fn layer_sent(p: &Peer, rid: &str) -> Vec<SentPacket> {
    p.sent_of(Kind::Video)
        .into_iter()
        .filter(|s| s.rid.as_deref() == Some(rid))
        .collect()
}

/// Sizes of the key frames that start in `packets`, in order.
fn keyframe_sizes(packets: &[ReceivedPacket]) -> Vec<(u16, u16)> {
    packets
        .iter()
        .filter_map(|p| vp8_payload_keyframe_size(&p.payload))
        .collect()
}

#[tokio::test]
async fn simulcast_layers_reach_a_receiver_directly() -> anyhow::Result<()> {
    let publisher = Peer::new(PeerOptions {
        name: "pub".into(),
        ..Default::default()
    })?;
    let receiver = Peer::new(PeerOptions {
        name: "recv".into(),
        ..Default::default()
    })?;
    let offer = publisher
        .create_offer(OfferSpec::publish_simulcast())
        .await?;
    // Lowest layer first, as Chrome offers it.
    assert!(offer.contains("a=simulcast:send q;h;f"), "{offer}");
    let answer = receiver.accept_offer(&offer).await?;
    assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
    publisher.accept_answer(&answer).await?;
    publisher.wait_connected(CONNECT).await?;
    receiver.wait_connected(CONNECT).await?;

    let layers = publisher.counts().sent_layers;
    let rids: Vec<&str> = layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(rids, SIMULCAST_RIDS);
    let sizes: Vec<(u16, u16)> = layers.iter().map(|l| (l.width, l.height)).collect();
    assert_eq!(sizes, SIZES);
    assert!(
        layers[0].ssrc != layers[1].ssrc
            && layers[1].ssrc != layers[2].ssrc
            && layers[0].ssrc != layers[2].ssrc,
        "{layers:?}"
    );

    // Two key frames (a loop point) per layer.
    poll_until(MEDIA, || {
        let recv = receiver.received_of(Kind::Video);
        layers.iter().all(|l| {
            let of_layer: Vec<ReceivedPacket> =
                recv.iter().filter(|p| p.ssrc == l.ssrc).cloned().collect();
            keyframe_sizes(&of_layer).len() >= 2
        })
    })
    .await?;
    let recv = receiver.received_of(Kind::Video);
    for (l, size) in layers.iter().zip(SIZES) {
        let sent = layer_sent(&publisher, &l.rid);
        assert!(sent.iter().all(|p| p.ssrc == l.ssrc), "layer {}", l.rid);
        let got: Vec<ReceivedPacket> = recv.iter().filter(|p| p.ssrc == l.ssrc).cloned().collect();
        let c = compare_payloads(&sent, &got, Compare::Exact);
        assert!(c.is_perfect(), "layer {}: {c:?}", l.rid);
        assert!(seq_discontinuities(&got).is_empty(), "layer {}", l.rid);
        assert!(
            keyframe_sizes(&got).iter().all(|s| *s == size),
            "layer {}",
            l.rid
        );
        // Each layer numbers its own pictures: one PictureID per frame, no gaps.
        let ids: Vec<u16> = sent
            .iter()
            .filter_map(|p| parse_vp8_descriptor(&p.payload))
            .filter(|d| d.start_of_partition)
            .filter_map(|d| d.picture_id)
            .collect();
        assert!(
            ids.windows(2).all(|w| w[1] == (w[0] + 1) & 0x7fff),
            "layer {}",
            l.rid
        );
    }

    // A keyframe request naming rid h restarts that layer only.
    let mid = recv[0].mid.clone().expect("mid");
    let before = publisher.counts().sent_layers;
    receiver.request_layer_keyframe(&mid, "h").await?;
    poll_until(Duration::from_secs(5), || {
        publisher.counts().sent_layers[1].keyframe_requests > before[1].keyframe_requests
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = publisher.counts().sent_layers;
    for i in [0, 2] {
        assert_eq!(
            after[i].keyframe_requests, before[i].keyframe_requests,
            "layer {} restarted by a request for h",
            after[i].rid
        );
    }
    assert!(
        publisher.status().errors.is_empty(),
        "{:?}",
        publisher.status()
    );
    assert!(
        receiver.status().errors.is_empty(),
        "{:?}",
        receiver.status()
    );
    Ok(())
}

#[tokio::test]
async fn simulcast_whip_publish_through_the_server() -> anyhow::Result<()> {
    let bin = sfumato_bin()?;
    // Byte-for-byte forwarding of the layer asked for: without downlink estimation, whose
    // 1 Mbit/s starting estimate would first give the viewer a layer below the top one
    // (the layers' allocation is tested in sfumato-core's downlink tests and in Chromium).
    let mut opts = ServerOptions::spread(2);
    opts.extra_args = vec!["--bandwidth-estimation".into(), "false".into()];
    let server = TestServer::start(&bin.to_string_lossy(), opts).await?;
    let room = "sim";
    let cam = whip_publish_simulcast(&server.url(&format!("/whip/{room}?name=cam"))).await?;
    // The server takes the three layers, in the offer's order.
    assert!(
        cam.answer_sdp().contains("a=simulcast:recv q;h;f"),
        "{}",
        cam.answer_sdp()
    );
    cam.peer().wait_connected(CONNECT).await?;

    // A WHEP viewer plays the video: the top layer by default, forwarded byte for byte.
    let viewer = whep_play(&server.url(&format!("/whep/{room}"))).await?;
    viewer.peer().wait_connected(CONNECT).await?;
    poll_until(MEDIA, || {
        keyframe_sizes(&viewer.peer().received_of(Kind::Video)).len() >= 2
            && viewer.peer().received_count(Kind::Audio) >= 50
    })
    .await?;
    let got = viewer.peer().received_of(Kind::Video);
    assert_eq!(keyframe_sizes(&got)[..2], [SIZES[2]; 2]);
    let c = compare_payloads(
        &layer_sent(cam.peer(), "f"),
        &got,
        Compare::Vp8IgnorePictureId,
    );
    assert!(c.is_perfect(), "WHEP viewer vs layer f: {c:?}");
    assert!(seq_discontinuities(&got).is_empty());

    // A WebSocket subscriber asks for each layer in turn and gets that layer's frames.
    let bob = Participant::join(&server.ws_url(), room, "bob").await?;
    let cam_id = server
        .room(room)
        .await?
        .and_then(|r| {
            r["participants"]
                .as_array()?
                .iter()
                .find_map(|p| (p["name"] == "cam").then(|| p["id"].as_str().map(str::to_string))?)
        })
        .expect("the WHIP publisher in GET /api/rooms");
    let track = bob.wait_subscribed(&cam_id, Kind::Video, CONNECT).await?;
    for (quality, size) in ["low", "medium", "high"].into_iter().zip(SIZES) {
        let mark = bob.received_from(&cam_id, Kind::Video).len();
        bob.send_json(&json!({"type": "quality", "track": track.track, "quality": quality}))?;
        poll_until(MEDIA, || {
            let got = bob.received_from(&cam_id, Kind::Video);
            keyframe_sizes(&got[mark.min(got.len())..]).contains(&size)
        })
        .await
        .map_err(|e| e.context(format!("bob asked for {quality}, wants {size:?} frames")))?;
    }
    // The switches up asked the publisher for key frames of the new layer, by rid.
    let layers = cam.peer().counts().sent_layers;
    assert!(
        layers[0].keyframe_requests >= 1 && layers[1].keyframe_requests >= 1,
        "{layers:?}"
    );

    bob.leave().await?;
    assert_eq!(viewer.close().await?, 200);
    assert_eq!(cam.close().await?, 200);
    server.wait_workers_idle(Duration::from_secs(10)).await?;
    Ok(())
}
