//! Story: a room spans two nodes. Alice publishes on node 0; bob and carol, on node 1,
//! subscribe. One copy of each track crosses between the nodes' relay workers (in wire form)
//! and node 1's relay worker fans it out like an origin: payloads arrive byte for byte, only
//! the simulcast layers node 1's subscribers need cross, their keyframe requests reach alice
//! merged, and when alice's track ends, node 1 hears it over the relay.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, Net, PipeRecord, Published};
use sfumato_core::{Command, Kind, TrackId};
use str0m::media::MediaKind;

const FRAME: Duration = Duration::from_millis(33);

/// Alice publishes on node 0 (engine 0); `subscribers` clients on node 1's worker 0, each
/// subscribed to her audio and video through the relay. Returns (net, alice, subscribers,
/// tracks).
fn two_nodes(subscribers: usize, simulcast: bool) -> (Net, usize, Vec<usize>, Published) {
    let mut net = Net::cluster(2, 1);
    let alice = net.add_client("alice", net.engine(0, 0));
    let subs: Vec<usize> = (0..subscribers)
        .map(|i| {
            let e = net.engine(1, 0);
            net.add_client(&format!("sub{i}"), e)
        })
        .collect();
    let tracks = if simulcast {
        net.publish_simulcast(alice)
    } else {
        net.publish(alice)
    };
    for kind in [Kind::Audio, Kind::Video] {
        let track = if kind == Kind::Audio {
            tracks.audio
        } else {
            tracks.video
        };
        net.relay_track(track, kind, net.engine(0, 0), 1);
    }
    for &s in &subs {
        net.create_subscriber(s);
        net.subscribe_relayed(s, tracks.audio, Kind::Audio);
        net.subscribe_relayed(s, tracks.video, Kind::Video);
    }
    net.connect_all();
    (net, alice, subs, tracks)
}

fn relayed_media(net: &Net, track: TrackId) -> Vec<(u64, u8)> {
    net.relay_log
        .iter()
        .filter_map(|(from, to, r)| match r {
            PipeRecord::Media {
                track: t,
                seq,
                layer,
            } if *t == track && (*from, *to) == (0, 1) => Some((*seq, *layer)),
            _ => None,
        })
        .collect()
}

#[test]
fn payloads_cross_nodes_byte_for_byte_one_copy_per_node() {
    let (mut net, alice, subs, tracks) = two_nodes(2, false);
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(net.send_audio(alice));
        net.send_video(alice, i % 15 == 0);
        net.step(FRAME);
    }
    for &s in &subs {
        let got = net.client(s).received_payloads(MediaKind::Audio);
        assert!(
            got.len() >= 38,
            "{} audio packets reached sub {s}",
            got.len()
        );
        let tail = &sent[sent.len() - got.len()..];
        assert_eq!(got, tail.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
        assert_continuous("video", &net.client(s).received_seqs(MediaKind::Video));
        assert!(!net.client(s).received_payloads(MediaKind::Video).is_empty());
    }
    // One copy per packet crossed, for two subscribers.
    let audio = relayed_media(&net, tracks.audio);
    let mut seqs: Vec<u64> = audio.iter().map(|(s, _)| *s).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), audio.len(), "each audio packet crossed once");
    assert!(audio.len() >= 38);
}

#[test]
fn only_the_layers_the_far_node_needs_cross_and_the_publisher_hears_it() {
    let (mut net, alice, subs, tracks) = two_nodes(1, true);
    net.set_layer(subs[0], tracks.video, Some(0));
    let frame = |net: &mut Net, key: [bool; 3]| {
        for (l, k) in key.into_iter().enumerate() {
            net.send_layer(alice, l, k);
        }
        net.step(FRAME);
    };
    frame(&mut net, [true; 3]);
    for _ in 0..40 {
        frame(&mut net, [false; 3]);
    }
    let from = relayed_media(&net, tracks.video).len();
    for _ in 0..10 {
        frame(&mut net, [false; 3]);
    }
    let layers: Vec<u8> = relayed_media(&net, tracks.video)[from..]
        .iter()
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(layers, [0; 10], "only the low layer crosses");
    // The origin asks alice for the low layer alone (after the hold).
    let demand = |net: &Net| {
        net.events.iter().rev().find_map(|(w, e)| match e {
            sfumato_core::Event::LayerDemand { track, mask }
                if *w == 0 && *track == tracks.video =>
            {
                Some(*mask)
            }
            _ => None,
        })
    };
    assert_eq!(demand(&net), Some(0b001));

    // Up: alice is asked for every layer at once; until the switch the layers from the low
    // one to the top one cross (the middle one is a step on the way), then the top alone.
    net.set_layer(subs[0], tracks.video, Some(2));
    net.step(FRAME);
    assert_eq!(demand(&net), Some(0b111));
    let from = relayed_media(&net, tracks.video).len();
    frame(&mut net, [false; 3]);
    let mut layers: Vec<u8> = relayed_media(&net, tracks.video)[from..]
        .iter()
        .map(|(_, l)| *l)
        .collect();
    layers.sort_unstable();
    assert_eq!(
        layers,
        [0, 1, 2],
        "the layers switched to cross before a keyframe"
    );
    frame(&mut net, [false, false, true]);
    let from = relayed_media(&net, tracks.video).len();
    frame(&mut net, [false; 3]);
    let layers: Vec<u8> = relayed_media(&net, tracks.video)[from..]
        .iter()
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(layers, [2], "from the switch on, the top layer alone");
    assert_continuous("sub", &net.client(subs[0]).received_seqs(MediaKind::Video));
}

#[test]
fn keyframe_requests_from_the_far_node_reach_the_publisher_merged() {
    let (mut net, alice, subs, tracks) = two_nodes(3, false);
    net.send_video(alice, true);
    net.step(FRAME);
    for _ in 0..5 {
        net.send_video(alice, false);
        net.step(FRAME);
    }
    let before = net.client(alice).keyframe_requests.len();
    // Every subscriber asks for a keyframe within 100 ms.
    for &s in &subs {
        let mid = net.slot_mid(s, tracks.video).expect("offered");
        assert!(net.client_mut(s).request_keyframe(mid));
        net.step(Duration::from_millis(30));
    }
    net.run_for(Duration::from_millis(300));
    let got = net.client(alice).keyframe_requests.len() - before;
    assert_eq!(got, 1, "three requests from node 1 reach alice as one");
}

#[test]
fn a_track_that_ends_at_its_origin_ends_on_the_far_node() {
    let (mut net, alice, subs, tracks) = two_nodes(1, false);
    net.send_video(alice, true);
    net.step(FRAME);
    let alice_peer = net.client(alice).peer;
    net.command(0, Command::ClosePeer { peer: alice_peer });
    net.run_for(Duration::from_millis(100));
    let far = net.engines[net.engine(1, 0)].stats();
    let far_relay = net.engines[net.relay(1)].stats();
    assert_eq!(
        far.subscriptions, 0,
        "the subscriber let go without a control plane"
    );
    assert_eq!(far_relay.relayed_in, 0);
    assert!(net
        .relay_log
        .iter()
        .any(|(_, _, r)| *r == PipeRecord::TrackEnded(tracks.video)));
    let _ = subs;
}

/// With downlink estimation on, a subscriber on the far node gets the layer that fits its
/// estimate, weighed with the rates the origin node measured (they cross the relay), and
/// only that layer crosses.
#[test]
fn a_far_estimating_subscriber_gets_the_layer_that_fits_and_only_that_layer_crosses() {
    let mut net = Net::cluster(2, 1);
    for engine in &mut net.engines {
        engine.set_bandwidth_estimation(true);
    }
    let alice = net.add_client("alice", net.engine(0, 0));
    let e = net.engine(1, 0);
    let bob = net.add_client_remb_only("bob", e);
    let tracks = net.publish_simulcast(alice);
    for (track, kind) in [(tracks.audio, Kind::Audio), (tracks.video, Kind::Video)] {
        net.relay_track(track, kind, net.engine(0, 0), 1);
    }
    net.create_subscriber(bob);
    net.subscribe_relayed(bob, tracks.audio, Kind::Audio);
    net.subscribe_relayed(bob, tracks.video, Kind::Video);
    net.connect_all();
    let peer = net.client(bob).peer;
    // Layers of ~15, ~45 and ~160 kbit/s; 100 kbit/s said by REMB: the middle one fits.
    let frames = |net: &mut Net, n: usize| {
        for i in 0..n {
            for layer in 0..3 {
                net.send_layer(alice, layer, i % 30 == 0);
            }
            if i % 3 == 0 {
                net.send_remb(bob, tracks.video, 100_000);
            }
            net.step(FRAME);
        }
    };
    frames(&mut net, 150);
    let allocated = net.events.iter().rev().find_map(|(_, e)| match e {
        sfumato_core::Event::Allocated {
            peer: p, layers, ..
        } if *p == peer => Some(layers.iter().find(|(t, _, _)| *t == tracks.video)?.1),
        _ => None,
    });
    assert_eq!(allocated, Some(Some(1)));
    let from = relayed_media(&net, tracks.video).len();
    frames(&mut net, 10);
    let layers: Vec<u8> = relayed_media(&net, tracks.video)[from..]
        .iter()
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(layers, [1; 10], "the middle layer alone crosses");
    let rates = net
        .relay_log
        .iter()
        .filter(|(_, _, r)| *r == PipeRecord::Rates(tracks.video))
        .count();
    assert!(rates >= 5, "the origin's rates crossed every half second");
}
