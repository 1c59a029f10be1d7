//! Story: an operator reads a worker's counters (`Engine::stats`, exported at `/metrics`)
//! and the dashboard's per-track measures. Bytes in and out, a subscriber's NACK and its
//! retransmission, its PLI, a datagram from nowhere, and the layer switches a downlink
//! estimate decides are each counted where they happen; each track shows its bitrate.

use crate::harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{Net, Published};
use sfumato_core::{Kind, WorkerStats};
use str0m::media::MediaKind;

const FRAME: Duration = Duration::from_millis(33);

fn video_for(net: &mut Net, alice: usize, frames: usize) {
    for _ in 0..frames {
        net.send_video(alice, false);
        net.step(FRAME);
    }
}

#[test]
fn bytes_nacks_retransmissions_and_plis_are_counted() {
    let mut net = Net::new(1);
    let (alice, bob, tracks) = net.alice_to_bob(0, 0);
    net.send_video(alice, true);
    video_for(&mut net, alice, 10);
    let before = net.engines[0].stats();
    assert!(before.bytes_in > 0 && before.bytes_out > 0, "{before:?}");

    // One video packet to bob is lost: bob NACKs it, the worker resends it.
    let bob_c = net.client(bob);
    let ssrc = bob_c
        .received
        .iter()
        .find(|r| r.kind == Some(MediaKind::Video))
        .expect("bob receives video")
        .ssrc;
    let (server, bob_addr) = (harness::worker_addr(0), bob_c.addr);
    let mut armed = true;
    net.loss = Some(Box::new(move |d| {
        let hit =
            armed && d.source == server && d.destination == bob_addr && d.rtp_ssrc() == Some(ssrc);
        armed &= !hit;
        hit
    }));
    video_for(&mut net, alice, 30);
    // str0m reports NACKs and packets sent once a second.
    net.run_for(Duration::from_millis(1500));
    assert_eq!(net.lost.len(), 1);
    let s = net.engines[0].stats();
    assert!(s.nacks_in >= 1, "bob's NACK counted: {s:?}");
    assert!(s.rtx_out >= 1, "the retransmission counted: {s:?}");
    assert!(s.bytes_out > before.bytes_out && s.bytes_in > before.bytes_in);
    assert_eq!(s.plis_in, 0);

    // Bob's browser asks for a keyframe.
    let mid = net.slot_mid(bob, tracks.video).expect("bob's video m-line");
    assert!(net.client_mut(bob).request_keyframe(mid));
    net.run_for(Duration::from_millis(100));
    let s = net.engines[0].stats();
    assert_eq!((s.plis_in, s.firs_in), (1, 0), "{s:?}");
    assert!(s.keyframe_requests_in >= 1);
}

#[test]
fn each_track_shows_its_bitrate_layer_and_direction() {
    let mut net = Net::new(2);
    let (alice, bob, tracks) = net.alice_to_bob(0, 1);
    net.send_video(alice, true);
    video_for(&mut net, alice, 90);
    let (alice_peer, bob_peer) = (net.client(alice).peer, net.client(bob).peer);

    let origin = net.engines[0].stats();
    let published = origin
        .media
        .iter()
        .find(|t| t.peer == alice_peer && t.track == tracks.video)
        .expect("alice's video on her worker");
    assert!(published.published && published.kind == Kind::Video);
    assert_eq!(published.layers, 1);
    assert!(published.bitrate_bps > 0, "{published:?}");

    let remote = net.engines[1].stats();
    let received = remote
        .media
        .iter()
        .find(|t| t.peer == bob_peer && t.track == tracks.video)
        .expect("bob's subscription on his worker");
    assert!(!received.published);
    assert_eq!(received.layer, Some(0));
    assert!(received.bitrate_bps > 0, "{received:?}");
    assert!(
        !remote.media.iter().any(|t| t.peer == alice_peer),
        "a peer's tracks are reported by its own worker only"
    );
}

#[test]
fn a_datagram_from_nowhere_is_dropped_by_reason() {
    let mut net = Net::new(1);
    let stranger: SocketAddr = "127.0.0.1:9".parse().expect("address");
    net.inject(0, stranger, b"not a packet of anyone's");
    let s: WorkerStats = net.engines[0].stats();
    assert_eq!(s.datagrams_in, 1);
    assert_eq!(s.bytes_in, 24);
    assert_eq!((s.datagrams_unknown, s.datagrams_dropped), (1, 1));
    assert_eq!(s.datagrams_rejected, 0);
}

/// A second of frames on the three simulcast layers, with `bps` said by REMB.
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

#[test]
fn layer_switches_decided_by_the_estimate_are_counted_by_direction() {
    let mut net = Net::new(1);
    net.engines[0].set_bandwidth_estimation(true);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client_remb_only("bob", 0);
    let tracks = net.publish_simulcast(alice);
    net.create_subscriber(bob);
    net.subscribe(bob, tracks.video, Kind::Video, 0);
    net.connect_all();

    for _ in 0..3 {
        second(&mut net, alice, bob, tracks, 100_000);
    }
    second(&mut net, alice, bob, tracks, 25_000);
    let down = net.engines[0].stats();
    assert!(down.layer_downs >= 2, "top → middle → lowest: {down:?}");
    for _ in 0..3 {
        second(&mut net, alice, bob, tracks, 1_000_000);
    }
    let up = net.engines[0].stats();
    assert!(up.layer_ups > down.layer_ups, "back up: {up:?}");
    // Bob's own choice is not the estimate's.
    let before = (up.layer_ups, up.layer_downs);
    net.set_layer(bob, tracks.video, Some(0));
    net.run_for(Duration::from_millis(100));
    let s = net.engines[0].stats();
    assert_eq!((s.layer_ups, s.layer_downs), before);
}
