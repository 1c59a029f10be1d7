//! (3) Bad input gets an error or is dropped, and a running flow carries on.

use serde_json::json;
use sfumato_testkit::garbage::{datagrams, sdp_ufrag, spray};
use std::time::Duration;

use sfumato_testkit::{
    compare_payloads, http_delete, http_post, msg_type, Compare, Kind, OfferSpec, Participant,
    Peer, PeerOptions,
};

use crate::common::*;

/// Sends `text` and expects an `error` whose code is one of `codes`; then checks the socket
/// is still open with a ping.
async fn expect_error(p: &Participant, label: &str, text: String, codes: &[&str]) {
    let mark = p.event_count();
    let shown: String = text.chars().take(80).collect();
    p.send_raw(text).expect("send");
    let e = p
        .wait_error_since(mark, SIGNAL)
        .await
        .unwrap_or_else(|e| panic!("{label}: sent {shown:?}, expected an error message: {e:#}"));
    let code = e["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "{label}: sent {shown:?}, got {e}, expected code in {codes:?}"
    );
    assert!(
        e["message"].is_string(),
        "{label}: error without a message: {e}"
    );
    expect_pong(p, label).await;
}

async fn expect_pong(p: &Participant, label: &str) {
    let mark = p.event_count();
    p.send_raw(json!({"type": "ping"}).to_string())
        .expect("send");
    p.wait_event_since(mark, SIGNAL, |e| msg_type(e) == "pong")
        .await
        .unwrap_or_else(|e| panic!("after {label}: ping got no pong (socket closed?): {e:#}"));
}

#[tokio::test]
async fn websocket_bad_messages_get_errors() {
    let _g = serial().await;
    let server = start(2).await;
    let room = "bad-ws";
    let flow = Flow::start(&server, room).await;

    let mallory = Participant::join(&server.ws_url(), room, "mallory")
        .await
        .must("mallory joins");
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("truncated JSON", r#"{"type":"#.into(), &["bad_message"]),
        ("not JSON", "hello there".into(), &["bad_message"]),
        ("JSON array", "[1,2,3]".into(), &["bad_message"]),
        ("JSON string", r#""ping""#.into(), &["bad_message"]),
        ("no type", "{}".into(), &["bad_message"]),
        (
            "type not a string",
            r#"{"type":42}"#.into(),
            &["bad_message", "unknown_type"],
        ),
        (
            "unknown type",
            r#"{"type":"fly"}"#.into(),
            &["unknown_type"],
        ),
        (
            "server-only type",
            r#"{"type":"joined"}"#.into(),
            &["unknown_type"],
        ),
        (
            "mute without fields",
            r#"{"type":"mute"}"#.into(),
            &["bad_message"],
        ),
        (
            "mute with ill-typed field",
            r#"{"type":"mute","track":1,"muted":"yes"}"#.into(),
            &["bad_message"],
        ),
        (
            "mute of a foreign track",
            json!({"type":"mute","track":"no-such-track","muted":true}).to_string(),
            &["unknown_track"],
        ),
        (
            "quality of an unknown track",
            json!({"type":"quality","track":"no-such-track","quality":"low"}).to_string(),
            &["unknown_track"],
        ),
        (
            "quality with an unknown level",
            json!({"type":"quality","track":"x","quality":"ultra"}).to_string(),
            &["bad_message"],
        ),
        (
            "quality without fields",
            r#"{"type":"quality"}"#.into(),
            &["bad_message"],
        ),
        (
            "publish_offer without sdp",
            r#"{"type":"publish_offer"}"#.into(),
            &["bad_message"],
        ),
        (
            "publish_offer with garbage SDP",
            json!({"type":"publish_offer","sdp":"v=0\r\nthis is not sdp\r\n"}).to_string(),
            &["bad_sdp"],
        ),
        (
            "second join",
            json!({"type":"join","v":1,"room":room,"name":"again"}).to_string(),
            &["already_joined"],
        ),
        (
            "over 2 MiB",
            json!({"type":"ping","pad":"x".repeat(2100 * 1024)}).to_string(),
            &["too_large"],
        ),
        (
            "deeply nested JSON",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            &["bad_message"],
        ),
    ];
    for (label, text, codes) in cases {
        expect_error(&mallory, label, text, codes).await;
    }
    // A binary frame that is not a data message.
    let mark = mallory.event_count();
    mallory.send_binary(vec![1, 2, 3]).expect("send");
    let e = mallory
        .wait_error_since(mark, SIGNAL)
        .await
        .must("binary frame: expected an error");
    assert_eq!(e["code"], "bad_data", "binary frame: got {e}");
    expect_pong(&mallory, "binary frame").await;
    // A subscribe_answer with garbage (mallory's client already answered the real offer).
    let mark = mallory.event_count();
    mallory
        .send_raw(json!({"type":"subscribe_answer","sdp":"garbage"}).to_string())
        .expect("send");
    let e = mallory
        .wait_error_since(mark, SIGNAL)
        .await
        .must("subscribe_answer with garbage SDP: expected an error");
    assert!(
        matches!(e["code"].as_str(), Some("bad_sdp" | "bad_message")),
        "subscribe_answer with garbage SDP: got {e}, expected bad_sdp"
    );
    expect_pong(&mallory, "garbage subscribe_answer").await;

    // Before join.
    let stranger = Participant::connect(&server.ws_url()).await.must("connect");
    expect_pong(&stranger, "ping before join").await;
    expect_error(
        &stranger,
        "publish_offer before join",
        json!({"type":"publish_offer","sdp":"v=0"}).to_string(),
        &["not_joined"],
    )
    .await;
    let mark = stranger.event_count();
    stranger
        .send_raw(json!({"type":"join","v":2,"room":room,"name":"future"}).to_string())
        .expect("send");
    let e = stranger
        .wait_error_since(mark, SIGNAL)
        .await
        .must("join with v 2: expected an error");
    assert_eq!(e["code"], "unsupported_version", "join with v 2: got {e}");

    flow.assert_flowing("after bad WebSocket messages").await;
    assert!(
        server.healthy().await,
        "GET /healthz failed after bad WebSocket messages"
    );
    drop(stranger);
    mallory.leave().await.must("mallory leaves");
    flow.leave().await;
    assert_idle(&server).await;
}

#[tokio::test]
async fn udp_garbage_is_dropped() {
    let _g = serial().await;
    let server = start(2).await;
    let flow = Flow::start(&server, "bad-udp").await;

    let mut ufrags = Vec::new();
    ufrags.extend(
        flow.alice
            .last_publish_answer_sdp()
            .as_deref()
            .and_then(sdp_ufrag),
    );
    ufrags.extend(
        flow.bob
            .last_subscribe_offer_sdp()
            .as_deref()
            .and_then(sdp_ufrag),
    );
    let publisher = flow.alice.publisher().expect("publisher");
    let ssrcs: Vec<u32> = {
        let mut s: Vec<u32> = publisher.sent().iter().map(|p| p.ssrc).collect();
        s.dedup();
        s
    };
    let junk = datagrams(0x5f0_a70, 600, &ufrags, &ssrcs);

    let before = server.workers_stats().await.must("GET /api/workers");
    // Sent in small bursts: a flood would overflow the kernel's socket buffers and drop
    // real media too, which is not what this test is about.
    let subscriber = flow.bob.subscriber().expect("subscribe PC");
    for chunk in junk.chunks(20) {
        // From fresh sockets (unknown 5-tuples) to every worker.
        let sent = spray(&server.worker_addrs(), chunk).expect("spray");
        assert_eq!(sent, chunk.len() * server.workers);
        // From the publisher's and the subscriber's own 5-tuples (known peers).
        publisher
            .inject(chunk.to_vec())
            .await
            .must("inject from publisher");
        subscriber
            .inject(chunk.to_vec())
            .await
            .must("inject from subscriber");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    flow.assert_flowing("after UDP garbage").await;
    assert!(
        server.healthy().await,
        "GET /healthz failed after UDP garbage"
    );
    // Nothing of the garbage reached the subscriber: everything it got is alice's media.
    for kind in [Kind::Audio, Kind::Video] {
        let c = compare_payloads(
            &publisher.sent_of(kind),
            &flow.bob.received_from(&flow.alice_id, kind),
            Compare::Exact,
        );
        assert!(
            c.received > 0 && c.matched == c.received,
            "{} after UDP garbage: {} received, only {} are alice's payloads; {}",
            kind.as_str(),
            c.received,
            c.matched,
            c.first_mismatch.as_deref().unwrap_or("")
        );
    }
    for (label, p) in [("publisher", publisher), ("subscriber", &*subscriber)] {
        let st = p.status();
        assert!(
            !st.disconnected,
            "the {label}'s PC disconnected after UDP garbage: {st:?}"
        );
    }
    // Datagrams from unknown 5-tuples never authenticated (wrong MESSAGE-INTEGRITY): no
    // worker may have learnt their addresses.
    let after = server
        .workers_stats()
        .await
        .must("GET /api/workers after UDP garbage");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            a["addresses"], b["addresses"],
            "worker {}: `addresses` changed after STUN binding requests with a known ufrag but \
             a wrong MESSAGE-INTEGRITY from unknown 5-tuples (demux must only learn an address \
             after str0m accepted the STUN check); before {b}, after {a}",
            a["worker"]
        );
    }
    flow.leave().await;
    assert_idle(&server).await;
}

#[tokio::test]
async fn whip_whep_bad_requests_are_refused() {
    let _g = serial().await;
    let server = start(2).await;
    let room = "bad-http";
    let flow = Flow::start(&server, room).await;

    let peer = Peer::new(PeerOptions::default()).expect("peer");
    let good_offer = peer.create_offer(OfferSpec::publish()).await.must("offer");
    let play_peer = Peer::new(PeerOptions::default()).expect("peer");
    let good_play_offer = play_peer
        .create_offer(OfferSpec::play())
        .await
        .must("offer");
    let whip = server.url(&format!("/whip/{room}"));
    let whep = server.url(&format!("/whep/{room}"));
    let garbage = "v=0\r\nm=banana\r\nthis is not an SDP\r\n".to_string();

    let cases: Vec<(&str, String, Option<&str>, String, u16)> = vec![
        (
            "WHIP text/plain",
            whip.clone(),
            Some("text/plain"),
            good_offer.clone(),
            415,
        ),
        (
            "WHIP no content type",
            whip.clone(),
            None,
            good_offer.clone(),
            415,
        ),
        (
            "WHIP application/json",
            whip.clone(),
            Some("application/json"),
            good_offer.clone(),
            415,
        ),
        (
            "WHIP garbage SDP",
            whip.clone(),
            Some("application/sdp"),
            garbage.clone(),
            400,
        ),
        (
            "WHIP empty body",
            whip.clone(),
            Some("application/sdp"),
            String::new(),
            400,
        ),
        (
            "WHIP binary junk",
            whip.clone(),
            Some("application/sdp"),
            String::from_utf8_lossy(&[0xff, 0x00, 0xfe, 0x7f]).into_owned(),
            400,
        ),
        (
            "WHIP body over --max-sdp-bytes (1 MiB)",
            whip.clone(),
            Some("application/sdp"),
            "v=0\r\n".repeat(220_000),
            413,
        ),
        (
            "WHEP text/plain",
            whep.clone(),
            Some("text/plain"),
            good_play_offer.clone(),
            415,
        ),
        (
            "WHEP garbage SDP",
            whep.clone(),
            Some("application/sdp"),
            garbage.clone(),
            400,
        ),
        (
            "WHEP unknown room",
            server.url("/whep/no-such-room"),
            Some("application/sdp"),
            good_play_offer.clone(),
            404,
        ),
        (
            "WHEP unknown publisher",
            server.url(&format!("/whep/{room}/no-such-participant")),
            Some("application/sdp"),
            good_play_offer.clone(),
            404,
        ),
    ];
    for (label, url, ct, body, expected) in cases {
        let shown: String = body.chars().take(60).collect();
        let r = http_post(&url, ct, body).await.must(label);
        assert_eq!(
            r.status, expected,
            "{label}: POST {url} (Content-Type {ct:?}, body {shown:?}) got {} {:?}, expected {expected}",
            r.status, r.body
        );
        assert!(
            !r.body.trim().is_empty(),
            "{label}: error without a reason in the body"
        );
    }
    for url in [
        server.url(&format!("/whip/{room}/no-such-session")),
        server.url(&format!("/whep/{room}/session/no-such-session")),
    ] {
        let r = http_delete(&url).await.must("DELETE");
        assert_eq!(r.status, 404, "DELETE {url}: got {} {:?}", r.status, r.body);
    }

    flow.assert_flowing("after bad WHIP/WHEP requests").await;
    assert!(
        server.healthy().await,
        "GET /healthz failed after bad WHIP/WHEP requests"
    );
    drop((peer, play_peer));
    flow.leave().await;
    assert_idle(&server).await;
}
