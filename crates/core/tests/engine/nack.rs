//! Story: a video packet is lost on its way to a subscriber; the subscriber's browser NACKs
//! it, the engine retransmits it (RTX) from its own cache, and the subscriber ends up with
//! every frame. Same story when the subscriber sits on another worker than the publisher.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, Net};
use str0m::media::MediaKind;

fn lost_video_packet_is_retransmitted(sub_worker: usize) {
    let mut net = Net::new(2);
    let (alice, bob, tracks) = net.alice_to_bob(0, sub_worker);
    net.run_for(Duration::from_millis(100));

    net.send_video(alice, true);
    for _ in 0..10 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }
    let bob_c = net.client(bob);
    let ssrc = bob_c
        .received
        .iter()
        .find(|r| r.kind == Some(MediaKind::Video))
        .expect("bob receives video")
        .ssrc;

    // The network loses the next video packet to bob, once.
    let (server, bob_addr) = (harness::worker_addr(sub_worker), bob_c.addr);
    let mut armed = true;
    net.loss = Some(Box::new(move |d| {
        let hit =
            armed && d.source == server && d.destination == bob_addr && d.rtp_ssrc() == Some(ssrc);
        if hit {
            armed = false;
        }
        hit
    }));
    for _ in 0..30 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.lost.len(), 1, "exactly one packet was lost");

    let alice_c = net.client(alice);
    let bob_c = net.client(bob);
    assert!(bob_c.errors.is_empty(), "{:?}", bob_c.errors);
    let mut got: Vec<_> = bob_c
        .received
        .iter()
        .filter(|r| r.kind == Some(MediaKind::Video))
        .collect();
    let arrival_order: Vec<u64> = got.iter().map(|r| r.seq).collect();
    got.sort_by_key(|r| r.seq);
    got.dedup_by_key(|r| r.seq);
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        alice_c.sent_payloads(MediaKind::Video),
        "bob ends up with every video payload (arrival order {arrival_order:?})"
    );
    assert_continuous("bob", &got.iter().map(|r| r.seq).collect::<Vec<_>>());
    assert_eq!(
        net.pipe_media(0, 1, tracks.video).len(),
        if sub_worker == 1 {
            alice_c.sent.len()
        } else {
            0
        },
        "a retransmission never crosses the pipe again"
    );
    assert!(
        arrival_order.windows(2).any(|w| w[1] < w[0]),
        "the lost packet arrived late, as a retransmission"
    );
}

#[test]
fn lost_packet_is_retransmitted_on_the_same_worker() {
    lost_video_packet_is_retransmitted(0);
}

#[test]
fn lost_packet_is_retransmitted_by_the_subscribers_worker() {
    lost_video_packet_is_retransmitted(1);
}

/// A subscriber that loses a keyframe on the way has it again within a second: its NACK is
/// answered from the subscriber side's cache, without asking the publisher.
#[test]
fn a_lost_keyframe_is_back_within_a_second() {
    let mut net = Net::new(1);
    let (alice, bob, _) = net.alice_to_bob(0, 0);
    net.send_video(alice, true);
    for _ in 0..10 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }
    let bob_addr = net.client(bob).addr;
    let server = harness::worker_addr(0);
    let asked_before = net.client(alice).keyframe_requests.len();

    // The next keyframe to bob is lost, once (no audio is sent: bob's next RTP is it).
    let mut armed = true;
    net.loss = Some(Box::new(move |d| {
        let hit =
            armed && d.source == server && d.destination == bob_addr && d.rtp_ssrc().is_some();
        if hit {
            armed = false;
        }
        hit
    }));
    let lost_at = net.now;
    let key = net.send_video(alice, true);
    for _ in 0..30 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }
    assert_eq!(net.lost.len(), 1, "the keyframe was lost");
    let back = net
        .client(bob)
        .received
        .iter()
        .find(|r| r.payload == key)
        .map(|r| r.at)
        .expect("bob gets the keyframe again");
    let took = back - lost_at;
    assert!(
        took < Duration::from_secs(1),
        "the keyframe came back after {took:?}"
    );
    assert_eq!(
        net.client(alice).keyframe_requests.len(),
        asked_before,
        "the publisher was not asked for another keyframe"
    );
}
