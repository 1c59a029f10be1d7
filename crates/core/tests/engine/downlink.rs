//! Story: with downlink estimation on, a subscriber whose browser gives no transport-wide
//! feedback, only REMB, still gets the simulcast layer that fits: the REMB estimate drives
//! the allocation, down at once and up again after the hold time; below the lowest layer
//! the video pauses (no packets at all) and resumes, from a keyframe, when the link allows.
//! With temporal layers, a link too short for the lowest layer whole first gets it at a
//! lower frame rate, with PictureIDs and sequence numbers still continuous. A layer the
//! publisher does not send is not waited for.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, simulcast_fields, simulcast_tid, Net, Published};
use sfumato_core::{Event, Kind, PeerId};
use str0m::media::MediaKind;

const FRAME: Duration = Duration::from_millis(33);

/// A second of frames on the three layers (40, 160, 640 bytes of padding: ~15, ~45 and
/// ~160 kbit/s), with `bps` said by REMB every 100 ms.
fn second(net: &mut Net, alice: usize, bob: usize, tracks: Published, bps: u64) {
    for i in 0..30 {
        for layer in 0..3 {
            net.send_layer(alice, layer, i == 0);
        }
        if i % 3 == 0 {
            net.send_remb(bob, tracks.video, bps);
        }
        net.step(FRAME);
    }
}

/// Alice publishes simulcast (with `temporal_layers`, each layer in L1T3) on worker 0, Bob
/// subscribes with REMB as his only feedback on worker `bob_worker`; downlink estimation on.
struct Room {
    net: Net,
    alice: usize,
    bob: usize,
    tracks: Published,
    peer: PeerId,
}

fn room(temporal_layers: bool) -> Room {
    room_on(temporal_layers, 0)
}

fn room_on(temporal_layers: bool, bob_worker: usize) -> Room {
    let mut net = Net::new(bob_worker + 1);
    for engine in &mut net.engines {
        engine.set_bandwidth_estimation(true);
    }
    let alice = net.add_client("alice", 0);
    net.client_mut(alice).temporal_layers = temporal_layers;
    let bob = net.add_client_remb_only("bob", bob_worker);
    let tracks = net.publish_simulcast(alice);
    net.create_subscriber(bob);
    net.subscribe(bob, tracks.video, Kind::Video, 0);
    net.connect_all();
    let peer = net.client(bob).peer;
    Room {
        net,
        alice,
        bob,
        tracks,
        peer,
    }
}

/// The last allocation reported for `peer`: (estimate, layer of `track`).
fn allocated(net: &Net, peer: PeerId, tracks: Published) -> Option<(Option<u64>, Option<u8>)> {
    net.events.iter().rev().find_map(|(_, e)| match e {
        Event::Allocated {
            peer: p,
            estimate_bps,
            layers,
        } if *p == peer => {
            let layer = layers.iter().find(|(t, _, _)| *t == tracks.video)?.1;
            Some((*estimate_bps, layer))
        }
        _ => None,
    })
}

#[test]
fn a_remb_estimate_picks_the_layer_that_fits() {
    picks_the_layer_that_fits(room(false));
}

/// The same from another worker than the publisher's, which is piped only the layer Bob
/// forwards: his allocator weighs the rates the origin measures.
#[test]
fn a_remb_estimate_picks_the_layer_that_fits_on_another_worker() {
    picks_the_layer_that_fits(room_on(false, 1));
}

fn picks_the_layer_that_fits(room: Room) {
    let Room {
        mut net,
        alice,
        bob,
        tracks,
        peer,
    } = room;

    // 100 kbit/s: room for the middle layer, not the top one.
    for _ in 0..3 {
        second(&mut net, alice, bob, tracks, 100_000);
    }
    assert_eq!(
        allocated(&net, peer, tracks),
        Some((Some(100_000), Some(1)))
    );

    // 25 kbit/s: the lowest layer, at once.
    second(&mut net, alice, bob, tracks, 25_000);
    assert_eq!(allocated(&net, peer, tracks), Some((Some(25_000), Some(0))));

    // 1 Mbit/s: back to the top once the hold after a downgrade has passed.
    second(&mut net, alice, bob, tracks, 1_000_000);
    second(&mut net, alice, bob, tracks, 1_000_000);
    second(&mut net, alice, bob, tracks, 1_000_000);
    assert_eq!(
        allocated(&net, peer, tracks),
        Some((Some(1_000_000), Some(2)))
    );
}

#[test]
fn below_the_lowest_layer_the_video_pauses_and_resumes_from_a_keyframe() {
    let Room {
        mut net,
        alice,
        bob,
        tracks,
        peer,
    } = room(false);
    let video = |net: &Net| net.client(bob).received_payloads(MediaKind::Video).len();

    for _ in 0..3 {
        second(&mut net, alice, bob, tracks, 100_000);
    }
    assert_eq!(
        allocated(&net, peer, tracks),
        Some((Some(100_000), Some(1)))
    );

    // 8 kbit/s: not even the lowest layer (~15 kbit/s) fits.
    second(&mut net, alice, bob, tracks, 8_000);
    assert_eq!(allocated(&net, peer, tracks), Some((Some(8_000), None)));
    let paused = video(&net);
    second(&mut net, alice, bob, tracks, 8_000);
    assert_eq!(video(&net), paused, "a paused video gets no packets");

    // 100 kbit/s again: after the hold, the middle layer, starting at a keyframe.
    for _ in 0..3 {
        second(&mut net, alice, bob, tracks, 100_000);
    }
    assert_eq!(
        allocated(&net, peer, tracks),
        Some((Some(100_000), Some(1)))
    );
    let payloads = net.client(bob).received_payloads(MediaKind::Video);
    let resumed = &payloads[paused..];
    assert!(!resumed.is_empty(), "the video resumed");
    let (layer, _, _) = simulcast_fields(resumed[0]);
    assert_eq!(resumed[0][6] & 0x01, 0, "resumed at a keyframe");
    assert_eq!(layer, 1, "resumed on the layer that fits");
}

#[test]
fn a_link_short_of_the_lowest_layer_gets_fewer_frames_of_it_continuously() {
    let Room {
        mut net,
        alice,
        bob,
        tracks,
        peer,
    } = room(true);

    // The lowest layer takes ~15 kbit/s, ~7.5 with its two lower temporal layers (a
    // quarter of the frames each), ~3.7 with the base alone.
    for _ in 0..4 {
        second(&mut net, alice, bob, tracks, 10_000);
    }
    assert_eq!(allocated(&net, peer, tracks), Some((Some(10_000), Some(0))));
    let from = net.client(bob).received_payloads(MediaKind::Video).len();
    second(&mut net, alice, bob, tracks, 10_000);
    let payloads = net.client(bob).received_payloads(MediaKind::Video);
    let got: Vec<(usize, u16, u8)> = payloads[from..]
        .iter()
        .map(|p| simulcast_fields(p))
        .collect();
    let tids: Vec<u8> = payloads[from..].iter().map(|p| simulcast_tid(p)).collect();
    assert_eq!(got.len(), 15, "half of 30 frames: {tids:?}");
    assert!(tids.iter().all(|&t| t <= 1), "{tids:?}");
    assert!(got.iter().all(|&(l, _, _)| l == 0));
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].1,
            (pair[0].1 + 1) & 0x7fff,
            "PictureIDs without a gap: {got:?}"
        );
    }
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));

    // A wide link again: every frame of the top layer, after the hold.
    for _ in 0..4 {
        second(&mut net, alice, bob, tracks, 1_000_000);
    }
    let from = net.client(bob).received_payloads(MediaKind::Video).len();
    second(&mut net, alice, bob, tracks, 1_000_000);
    let payloads = net.client(bob).received_payloads(MediaKind::Video);
    let got: Vec<(usize, u16, u8)> = payloads[from..]
        .iter()
        .map(|p| simulcast_fields(p))
        .collect();
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|&(l, _, _)| l == 2));
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

/// A publisher that has just started sends its lower layers only (its own estimate holds the
/// top one back). A subscriber that asked for the top layer is not left waiting on it for
/// the grace a request holds (3 s): once the origin has measured which layers come, it gets
/// the best of them, from a keyframe asked for.
#[test]
fn a_layer_the_publisher_does_not_send_is_not_waited_for() {
    let Room {
        mut net,
        alice,
        bob,
        tracks,
        peer,
    } = room(false);
    // Bob's link is estimated before the track's media comes (as when a publisher joins a
    // room whose subscribers are there): his request is held whatever the estimate.
    for _ in 0..3 {
        net.send_remb(bob, tracks.video, 1_000_000);
        net.step(Duration::from_millis(100));
    }
    net.set_layer(bob, tracks.video, Some(2));
    let start = net.now;
    let mut answered = 0;
    let mut first_video = None;
    for i in 0..90 {
        // Layers 0 and 1, each with a keyframe on the first frame and whenever asked since.
        let asked = &net.client(alice).layer_keyframe_requests[answered..];
        let wanted: Vec<usize> = asked.iter().map(|(_, l)| *l).collect();
        answered += wanted.len();
        for layer in 0..2 {
            net.send_layer(alice, layer, i == 0 || wanted.contains(&layer));
        }
        if i % 3 == 0 {
            net.send_remb(bob, tracks.video, 1_000_000);
        }
        net.step(FRAME);
        if first_video.is_none()
            && !net
                .client(bob)
                .received_payloads(MediaKind::Video)
                .is_empty()
        {
            first_video = Some(net.now - start);
        }
    }
    let first = first_video.expect("bob received video");
    assert!(
        first < Duration::from_millis(1500),
        "bob's first video came {first:?} after he asked"
    );
    assert_eq!(
        allocated(&net, peer, tracks),
        Some((Some(1_000_000), Some(1)))
    );
    let payloads = net.client(bob).received_payloads(MediaKind::Video);
    let layers: Vec<usize> = payloads.iter().map(|p| simulcast_fields(p).0).collect();
    assert_eq!(layers.last(), Some(&1), "the best layer sent: {layers:?}");
}
