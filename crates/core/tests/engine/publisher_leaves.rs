//! Story: a publisher leaves. Its tracks are unpublished, its subscribers let go of them, and
//! once the control plane has tidied up nothing is left behind on any worker. A new
//! publisher's track then plays into the subscriber's freed slot.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, Net};
use sfumato_core::{Command, Event, WorkerId};
use str0m::media::MediaKind;

fn stream(net: &mut Net, publisher: usize, frames: usize) {
    net.send_video(publisher, true);
    for _ in 0..frames {
        net.send_audio(publisher);
        net.send_video(publisher, false);
        net.step(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(100));
}

#[test]
fn a_new_publisher_plays_into_the_slot_the_old_one_left() {
    let mut net = Net::new(1);
    let (alice, bob, first) = net.alice_to_bob(0, 0);
    net.run_for(Duration::from_millis(100));
    stream(&mut net, alice, 10);
    let video_mid = net.slot_mid(bob, first.video).expect("a video slot");
    assert_eq!(
        net.client(bob).received_payloads(MediaKind::Video).len(),
        11
    );

    // Alice leaves.
    let alice_peer = net.client(alice).peer;
    net.command(0, Command::ClosePeer { peer: alice_peer });
    net.run_for(Duration::from_millis(100));
    for track in [first.audio, first.video] {
        assert!(
            net.saw(
                0,
                |e| matches!(e, Event::TrackUnpublished { track: t, .. } if *t == track)
            ),
            "{track} is unpublished"
        );
    }
    assert!(net.saw(
        0,
        |e| matches!(e, Event::PeerClosed { peer, .. } if *peer == alice_peer)
    ));
    let stats = net.engines[0].stats();
    assert_eq!((stats.tracks, stats.subscriptions), (0, 0));

    // Alice comes back as a new peer; bob subscribes to her new tracks.
    let alice2 = net.add_client("alice again", 0);
    let second = net.publish(alice2);
    net.subscribe_all(bob, second);
    net.connect(&[alice2]);
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.slot_mid(bob, second.video),
        Some(video_mid),
        "the freed video slot is reused"
    );
    stream(&mut net, alice2, 10);

    let bob_c = net.client(bob);
    assert!(bob_c.errors.is_empty(), "{:?}", bob_c.errors);
    let video = bob_c.received_payloads(MediaKind::Video);
    let expected: Vec<&[u8]> = net
        .client(alice)
        .sent_payloads(MediaKind::Video)
        .into_iter()
        .chain(net.client(alice2).sent_payloads(MediaKind::Video))
        .collect();
    assert_eq!(
        video, expected,
        "bob sees alice's video, then her new video"
    );
    let seqs: Vec<u64> = bob_c
        .received
        .iter()
        .filter(|r| r.mid == Some(video_mid))
        .map(|r| r.seq)
        .collect();
    assert_continuous("bob's video slot across publishers", &seqs);
}

#[test]
fn nothing_leaks_after_unsubscribe_and_the_publisher_leaving() {
    let mut net = Net::new(2);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 1);
    let carol = net.add_client("carol", 0);
    let tracks = net.publish(alice);
    for s in [bob, carol] {
        net.create_subscriber(s);
        net.subscribe_all(s, tracks);
    }
    net.connect_all();
    net.run_for(Duration::from_millis(100));
    // Deltas only: keyframe requests are pending at the origin when alice leaves.
    for _ in 0..10 {
        net.send_video(alice, false);
        net.step(Duration::from_millis(20));
    }
    assert_eq!(net.engines[0].stats().sinks, 2);
    assert_eq!(
        net.engines[0].stats().pending_keyframe_requests,
        1,
        "a merged keyframe request waits for its interval"
    );

    // Bob drops the audio; the control plane removes worker 1's sink of it.
    let bob_peer = net.client(bob).peer;
    net.command(
        1,
        Command::Unsubscribe {
            peer: bob_peer,
            track: tracks.audio,
        },
    );
    net.command(
        0,
        Command::RemoveSink {
            track: tracks.audio,
            worker: WorkerId(1),
        },
    );
    assert_eq!(net.engines[0].stats().sinks, 1);
    assert_eq!(net.engines[1].stats().subscriptions, 1);

    // Alice leaves; the control plane, told by TrackUnpublished, unsubscribes bob on worker 1.
    let alice_peer = net.client(alice).peer;
    let seen = net.events.len();
    net.command(0, Command::ClosePeer { peer: alice_peer });
    let unpublished: Vec<_> = net.events[seen..]
        .iter()
        .filter_map(|(w, e)| match e {
            Event::TrackUnpublished { peer, track } if *w == 0 => {
                assert_eq!(*peer, alice_peer);
                Some(*track)
            }
            _ => None,
        })
        .collect();
    assert_eq!(unpublished.len(), 2, "both tracks are unpublished");
    assert!(net.events[seen..].iter().any(
        |(w, e)| *w == 0 && matches!(e, Event::PeerClosed { peer, .. } if *peer == alice_peer)
    ));
    for track in unpublished {
        net.command(
            1,
            Command::Unsubscribe {
                peer: bob_peer,
                track,
            },
        );
    }
    net.run_for(Duration::from_secs(1));

    for (w, e) in net.engines.iter().enumerate() {
        let s = e.stats();
        assert_eq!(
            (
                s.tracks,
                s.subscriptions,
                s.sinks,
                s.pending_keyframe_requests
            ),
            (0, 0, 0, 0),
            "worker {w} holds nothing of alice's: {s:?}"
        );
    }
    assert_eq!(net.engines[0].stats().peers, 1, "carol stays");
    assert_eq!(net.engines[1].stats().peers, 1, "bob stays");

    // The subscribers leave too: the workers are empty.
    let carol_peer = net.client(carol).peer;
    net.command(0, Command::ClosePeer { peer: carol_peer });
    net.command(1, Command::ClosePeer { peer: bob_peer });
    net.run_for(Duration::from_millis(100));
    for (w, e) in net.engines.iter().enumerate() {
        let s = e.stats();
        assert_eq!(
            (s.peers, s.addresses, s.ufrags, s.routes, s.timers),
            (0, 0, 0, 0, 0),
            "worker {w}: {s:?}"
        );
    }
}
