//! Story: on one worker, a publisher sends audio and video and two subscribers receive every
//! packet, byte for byte, with sequence numbers that never skip.

mod harness;

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
