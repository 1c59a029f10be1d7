//! Story: on one worker, a publisher sends audio and video and two subscribers receive every
//! packet, byte for byte, with sequence numbers that never skip.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, Net};
use str0m::media::MediaKind;

#[test]
fn publisher_to_two_subscribers_on_one_worker() {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    let carol = net.add_client("carol", 0);

    let tracks = net.publish(alice);
    for sub in [bob, carol] {
        net.create_subscriber(sub);
        net.subscribe_all(sub, tracks);
    }
    net.connect_all();
    // Let the answers settle and the subscribers' slots become active.
    net.run_for(Duration::from_millis(100));

    // A keyframe first, then a second of 50 audio packets and 30 video frames.
    net.send_video(alice, true);
    for i in 0..50 {
        net.send_audio(alice);
        if i % 5 != 4 {
            net.send_video(alice, false);
        }
        net.step(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(200));

    let sent_audio = net.client(alice).sent_payloads(MediaKind::Audio);
    let sent_video = net.client(alice).sent_payloads(MediaKind::Video);
    assert_eq!(sent_audio.len(), 50);
    assert_eq!(sent_video.len(), 41);
    for sub in [bob, carol] {
        let c = net.client(sub);
        assert!(c.errors.is_empty(), "{}: {:?}", c.name, c.errors);
        assert_eq!(
            c.received_payloads(MediaKind::Audio),
            sent_audio,
            "{} receives every audio payload unchanged",
            c.name
        );
        assert_eq!(
            c.received_payloads(MediaKind::Video),
            sent_video,
            "{} receives every video payload unchanged",
            c.name
        );
        assert_continuous(&c.name, &c.received_seqs(MediaKind::Audio));
        assert_continuous(&c.name, &c.received_seqs(MediaKind::Video));
    }

    let stats = net.engines[0].stats();
    assert_eq!(stats.peers, 3);
    assert_eq!(stats.tracks, 2);
    assert_eq!(stats.subscriptions, 4);
    assert_eq!(stats.packets_forwarded, 2 * (50 + 41));
}

/// Someone alone in a room has a subscribing peer with nothing to offer yet: it must wait
/// for its first offer as long as it takes, not time out as a connection that failed, so
/// that a publisher who comes a minute later still reaches them.
#[test]
fn a_subscriber_with_nothing_to_receive_yet_waits_for_its_first_offer() {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    net.create_subscriber(bob);
    net.run_for(Duration::from_secs(60));
    let peer = net.client(bob).peer;
    assert!(
        !net.saw(
            0,
            |e| matches!(e, sfumato_core::Event::PeerClosed { peer: p, .. } if *p == peer)
        ),
        "bob's subscribing peer is still there"
    );

    let tracks = net.publish(alice);
    net.subscribe_all(bob, tracks);
    net.connect_all();
    net.run_for(Duration::from_millis(100));
    net.send_video(alice, true);
    net.send_audio(alice);
    net.run_for(Duration::from_millis(100));
    let b = net.client(bob);
    assert_eq!(b.received_payloads(MediaKind::Video).len(), 1);
    assert_eq!(b.received_payloads(MediaKind::Audio).len(), 1);
}

/// Once it has offered, a subscribing peer that never connects is closed as timed out.
#[test]
fn a_subscriber_that_never_connects_after_an_offer_times_out() {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    net.client_mut(bob).auto_answer = false;
    let tracks = net.publish(alice);
    net.connect(&[alice]);
    net.create_subscriber(bob);
    net.run_for(Duration::from_secs(40));
    net.subscribe_all(bob, tracks);
    let peer = net.client(bob).peer;
    let closed = |net: &Net| {
        net.saw(0, |e| {
            matches!(e, sfumato_core::Event::PeerClosed { peer: p, reason } if *p == peer && *reason == "ice timeout")
        })
    };
    net.run_for(Duration::from_secs(25));
    assert!(!closed(&net), "not before 30 s after the offer");
    net.run_for(Duration::from_secs(10));
    assert!(closed(&net), "closed 30 s after the offer");
    assert_eq!(net.engines[0].stats().peers, 1, "alice's peer stays");
}
