//! Story: a publisher on worker 0 and three subscribers on worker 1. Each packet crosses the
//! pipe exactly once, however many subscribers wait on the other side, and all three get it.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, Net, PipeRecord};
use sfumato_core::Kind;
use str0m::media::MediaKind;

#[test]
fn one_pipe_copy_per_packet_fans_out_to_three_subscribers() {
    let mut net = Net::new(2);
    let alice = net.add_client("alice", 0);
    let subs: Vec<usize> = ["bob", "carol", "dave"]
        .iter()
        .map(|n| net.add_client(n, 1))
        .collect();

    let tracks = net.publish(alice);
    for &s in &subs {
        net.create_subscriber(s);
        net.subscribe_all(s, tracks);
    }
    net.connect_all();
    net.run_for(Duration::from_millis(100));

    // Keyframe requests from worker 1 reach the origin through the pipe.
    assert!(
        net.pipe_log
            .iter()
            .any(|(f, t, r)| (*f, *t) == (1, 0) && *r == PipeRecord::KeyframeRequest(tracks.video)),
        "worker 1 asks worker 0 for a keyframe of the video track"
    );
    assert!(
        !net.client(alice).keyframe_requests.is_empty(),
        "the publisher hears the remote subscribers' keyframe request"
    );

    let before = net.pipe_log.len();
    net.send_video(alice, true);
    for _ in 0..40 {
        net.send_audio(alice);
        net.send_video(alice, false);
        net.step(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(200));

    let alice_c = net.client(alice);
    let sent_audio = alice_c.sent_payloads(MediaKind::Audio);
    let sent_video = alice_c.sent_payloads(MediaKind::Video);

    // Exactly one pipe copy per packet, in order, and nothing sent back the other way.
    let sent_seqs = |k| -> Vec<u64> {
        alice_c
            .sent
            .iter()
            .filter(|s| s.kind == k)
            .map(|s| s.seq)
            .collect()
    };
    assert_eq!(
        net.pipe_media(0, 1, tracks.audio),
        sent_seqs(MediaKind::Audio)
    );
    assert_eq!(
        net.pipe_media(0, 1, tracks.video),
        sent_seqs(MediaKind::Video)
    );
    let media_msgs = net.pipe_log[before..]
        .iter()
        .filter(|(_, _, r)| matches!(r, PipeRecord::Media { .. }))
        .count();
    assert_eq!(media_msgs, sent_audio.len() + sent_video.len());

    for &s in &subs {
        let c = net.client(s);
        assert!(c.errors.is_empty(), "{}: {:?}", c.name, c.errors);
        assert_eq!(
            c.received_payloads(MediaKind::Audio),
            sent_audio,
            "{}",
            c.name
        );
        assert_eq!(
            c.received_payloads(MediaKind::Video),
            sent_video,
            "{}",
            c.name
        );
        assert_continuous(&c.name, &c.received_seqs(MediaKind::Audio));
        assert_continuous(&c.name, &c.received_seqs(MediaKind::Video));
    }

    let origin = net.engines[0].stats();
    let remote = net.engines[1].stats();
    assert_eq!(origin.sinks, 2, "one sink per track, not per subscriber");
    assert_eq!(origin.tracks, 2);
    assert_eq!(remote.tracks, 0, "worker 1 publishes nothing");
    assert_eq!(remote.subscriptions, 6);
    assert_eq!(
        remote.pipe_in,
        net.pipe_log.iter().filter(|(_, t, _)| *t == 1).count() as u64
    );
}

#[test]
fn adding_the_same_sink_twice_still_sends_one_copy() {
    let mut net = Net::new(2);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 1);
    let tracks = net.publish(alice);
    net.create_subscriber(bob);
    net.subscribe_all(bob, tracks);
    // The control plane repeats itself (a second subscriber on worker 1 would do the same).
    net.subscribe(bob, tracks.video, Kind::Video, 0);
    net.connect_all();
    net.run_for(Duration::from_millis(100));
    net.send_video(alice, true);
    net.step(Duration::from_millis(20));
    assert_eq!(net.pipe_media(0, 1, tracks.video).len(), 1);
    assert_eq!(net.client(bob).received_payloads(MediaKind::Video).len(), 1);
}
