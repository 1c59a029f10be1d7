//! Story: a subscriber that joins a running video waits for a keyframe, and the publisher is
//! asked for one; however many subscribers ask, the publisher hears at most one request per
//! throttle interval.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, Net};
use sfumato_core::throttle::KEYFRAME_INTERVAL;
use sfumato_core::Kind;
use str0m::media::MediaKind;

#[test]
fn a_late_subscriber_waits_for_a_keyframe_and_the_publisher_is_asked() {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    let tracks = net.publish(alice);
    net.connect(&[alice]);

    // Alice has been streaming for a while: her keyframe is long gone.
    net.send_video(alice, true);
    for _ in 0..10 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }

    net.create_subscriber(bob);
    net.subscribe_all(bob, tracks);
    net.connect_all();
    let asked_before = net.client(alice).keyframe_requests.len();

    // Deltas only: bob hears audio but sees no video.
    for _ in 0..30 {
        net.send_audio(alice);
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }
    assert!(!net
        .client(bob)
        .received_payloads(MediaKind::Audio)
        .is_empty());
    assert!(
        net.client(bob)
            .received_payloads(MediaKind::Video)
            .is_empty(),
        "no video before a keyframe"
    );
    assert!(
        net.client(alice).keyframe_requests.len() > asked_before,
        "the engine asked the publisher for a keyframe (PLI)"
    );
    assert!(net
        .client(alice)
        .keyframe_requests
        .iter()
        .all(|(_, mid)| Some(*mid) == net.client(alice).video_mid));

    // Alice answers with a keyframe: from it on, bob gets every frame.
    let first = net.client(alice).sent.len();
    let key = net.send_video(alice, true);
    for _ in 0..20 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(33));
    }
    net.run_for(Duration::from_millis(100));
    let expected: Vec<&[u8]> = net.client(alice).sent[first..]
        .iter()
        .filter(|s| s.kind == MediaKind::Video)
        .map(|s| s.payload.as_slice())
        .collect();
    let got = net.client(bob).received_payloads(MediaKind::Video);
    assert_eq!(got.first().copied(), Some(key.as_slice()));
    assert_eq!(got, expected);
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

#[test]
fn a_hundred_subscribers_asking_reach_the_publisher_once_per_interval() {
    let mut net = Net::new(2);
    let alice = net.add_client("alice", 0);
    let tracks = net.publish(alice);
    // Subscribers on both workers: requests merge at the origin, pipe or not.
    let subs: Vec<usize> = (0..100)
        .map(|i| net.add_client(&format!("sub{i}"), i % 2))
        .collect();
    for &s in &subs {
        net.create_subscriber(s);
        net.subscribe(s, tracks.video, Kind::Video, 0);
    }
    net.connect_all();
    let mids: Vec<_> = subs
        .iter()
        .map(|&s| net.slot_mid(s, tracks.video).expect("offered"))
        .collect();

    // Alice never sends a keyframe; every subscriber keeps asking, through its slot and
    // through its own client (a PLI every 100 ms).
    let t0 = net.now;
    let in_before: u64 = net
        .engines
        .iter()
        .map(|e| e.stats().keyframe_requests_in)
        .sum();
    let window = Duration::from_secs(3);
    let mut tick = 0;
    while net.now < t0 + window {
        net.send_video(alice, false);
        if tick % 3 == 0 {
            for (&s, &mid) in subs.iter().zip(&mids) {
                assert!(net.client_mut(s).request_keyframe(mid));
            }
        }
        tick += 1;
        net.step(Duration::from_millis(33));
    }

    let heard: Vec<_> = net
        .client(alice)
        .keyframe_requests
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= t0)
        .collect();
    let most = (window.as_millis() / KEYFRAME_INTERVAL.as_millis()) as usize + 1;
    assert!(
        heard.len() <= most,
        "publisher heard {} keyframe requests in {window:?}, at most {most} allowed",
        heard.len()
    );
    assert!(
        heard.len() >= most - 2,
        "requests keep flowing while subscribers wait: only {} heard",
        heard.len()
    );
    for w in heard.windows(2) {
        assert!(
            w[1] - w[0] >= KEYFRAME_INTERVAL,
            "two requests {:?} apart",
            w[1] - w[0]
        );
    }
    let in_after: u64 = net
        .engines
        .iter()
        .map(|e| e.stats().keyframe_requests_in)
        .sum();
    assert!(
        in_after - in_before >= 100,
        "every subscriber's requests reached the engine ({} counted)",
        in_after - in_before
    );
    assert!(subs
        .iter()
        .all(|&s| net.client(s).received_payloads(MediaKind::Video).is_empty()));
}
