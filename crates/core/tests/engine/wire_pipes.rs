//! Story: the pipe between two workers and the relay between two nodes carry the same
//! messages. With every pipe message encoded to its wire form and decoded on the far side
//! (`sfumato_core::wire`), a subscriber on another worker receives exactly what it receives
//! with in-memory pipes: plain VP8 and Opus, three simulcast layers with switches, a VP9
//! scalable stream, and Opus with RED to a subscriber without it.

use crate::harness;

use std::time::Duration;

use harness::{Net, SvcCodec};
use sfumato_core::Kind;
use str0m::media::MediaKind;

const FRAME: Duration = Duration::from_millis(33);

/// What bob (worker 1) received of alice's (worker 0) media, by kind: the payloads in order
/// and the marker bits.
type Seen = Vec<(Option<MediaKind>, Vec<u8>, bool)>;

fn run(wire: bool, red: bool, script: fn(&mut Net, usize, usize)) -> Seen {
    let mut net = Net::new(2);
    net.wire_pipes = wire;
    let alice = if red {
        net.add_client_with_red("alice", 0)
    } else {
        net.add_client("alice", 0)
    };
    let bob = net.add_client("bob", 1);
    script(&mut net, alice, bob);
    net.client(bob)
        .received
        .iter()
        .map(|r| (r.kind, r.payload.clone(), r.marker))
        .collect()
}

fn same_with_wire(what: &str, red: bool, script: fn(&mut Net, usize, usize)) {
    let memory = run(false, red, script);
    let wire = run(true, red, script);
    assert!(
        memory.len() > 10,
        "{what}: bob received {} packets",
        memory.len()
    );
    assert_eq!(wire.len(), memory.len(), "{what}: packet count");
    for (i, (a, b)) in memory.iter().zip(&wire).enumerate() {
        assert_eq!(a, b, "{what}: packet {i} differs");
    }
}

#[test]
fn plain_media_crosses_the_wire_unchanged() {
    same_with_wire("vp8 + opus", false, |net, alice, bob| {
        let tracks = net.publish(alice);
        net.create_subscriber(bob);
        net.subscribe_all(bob, tracks);
        net.connect_all();
        for i in 0..30 {
            net.send_audio(alice);
            net.send_video(alice, i % 10 == 0);
            net.step(FRAME);
        }
    });
}

#[test]
fn simulcast_switches_cross_the_wire_unchanged() {
    same_with_wire("simulcast", false, |net, alice, bob| {
        let tracks = net.publish_simulcast(alice);
        net.create_subscriber(bob);
        net.subscribe(bob, tracks.video, Kind::Video, 0);
        net.connect_all();
        for (i, layer) in [Some(2), Some(0), Some(1), None, Some(2)]
            .into_iter()
            .enumerate()
        {
            net.set_layer(bob, tracks.video, layer);
            for f in 0..12 {
                for l in 0..3 {
                    net.send_layer(alice, l, f == 2 || (i == 0 && f == 0));
                }
                net.step(FRAME);
            }
        }
    });
}

#[test]
fn a_scalable_stream_crosses_the_wire_unchanged() {
    same_with_wire("vp9 svc", false, |net, alice, bob| {
        let tracks = net.publish(alice);
        net.create_subscriber(bob);
        net.subscribe(bob, tracks.video, Kind::Video, 0);
        net.connect_all();
        for (i, layer) in [Some(2), Some(0), Some(1)].into_iter().enumerate() {
            net.set_layer(bob, tracks.video, layer);
            for f in 0..10 {
                net.send_svc_picture(alice, SvcCodec::Vp9, 3, f == 1 || (i == 0 && f == 0));
                net.step(FRAME);
            }
        }
    });
}

#[test]
fn red_audio_crosses_the_wire_unchanged() {
    same_with_wire("opus with red", true, |net, alice, bob| {
        let tracks = net.publish(alice);
        net.create_subscriber(bob);
        net.subscribe(bob, tracks.audio, Kind::Audio, 0);
        net.connect_all();
        for _ in 0..30 {
            net.send_audio(alice);
            net.step(Duration::from_millis(20));
        }
    });
}
