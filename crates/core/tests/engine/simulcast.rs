//! Story: a publisher sends three simulcast layers; each subscriber receives one of them as a
//! single continuous stream. A subscriber switches layer only at a keyframe of the new layer
//! (which the engine asks the publisher for), keeps receiving the old layer until then, and
//! sees sequence numbers, PictureIDs and TL0PICIDX continue across the switch. A track
//! turned off gets no packets at all.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, simulcast_fields, Net, PipeRecord, Published};
use sfumato_core::{Command, Kind};
use str0m::media::MediaKind;

const FRAME: Duration = Duration::from_millis(33);

/// One frame on every layer, lowest first; `key[l]` makes layer l's a keyframe.
fn frame(net: &mut Net, publisher: usize, key: [bool; 3]) {
    for (layer, keyframe) in key.into_iter().enumerate() {
        net.send_layer(publisher, layer, keyframe);
    }
    net.step(FRAME);
}

/// (layer, PictureID, TL0PICIDX) of every video packet `c` received, in order.
fn seen(net: &Net, c: usize) -> Vec<(usize, u16, u8)> {
    net.client(c)
        .received_payloads(MediaKind::Video)
        .into_iter()
        .map(simulcast_fields)
        .collect()
}

/// PictureIDs (15-bit) and TL0PICIDX go up by one per packet: one frame per packet here.
fn assert_descriptors_continuous(seen: &[(usize, u16, u8)]) {
    for w in seen.windows(2) {
        let ((_, pid0, tl0), (_, pid1, tl1)) = (w[0], w[1]);
        assert_eq!(pid1, (pid0 + 1) & 0x7fff, "PictureID jumps in {seen:?}");
        assert_eq!(tl1, tl0.wrapping_add(1), "TL0PICIDX jumps in {seen:?}");
    }
}

fn setup() -> (Net, usize, usize, Published) {
    setup_on(0)
}

/// Alice publishes on worker 0, Bob subscribes on worker `bob_worker` (another worker is
/// piped only the layers Bob's subscription needs: what the forwarder does must still
/// happen there).
fn setup_on(bob_worker: usize) -> (Net, usize, usize, Published) {
    let mut net = Net::new(bob_worker + 1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", bob_worker);
    let tracks = net.publish_simulcast(alice);
    net.create_subscriber(bob);
    net.subscribe(bob, tracks.video, Kind::Video, 0);
    net.connect_all();
    (net, alice, bob, tracks)
}

#[test]
fn a_subscriber_gets_the_top_layer_then_switches_down_at_a_keyframe() {
    top_layer_then_down(setup());
}

#[test]
fn on_another_worker_a_subscriber_gets_the_top_layer_then_switches_down_at_a_keyframe() {
    top_layer_then_down(setup_on(1));
}

fn top_layer_then_down((mut net, alice, bob, tracks): (Net, usize, usize, Published)) {
    frame(&mut net, alice, [true; 3]);
    for _ in 0..10 {
        frame(&mut net, alice, [false; 3]);
    }
    let before = seen(&net, bob);
    assert_eq!(before.len(), 11, "one packet per frame reaches bob");
    assert!(before.iter().all(|(l, _, _)| *l == 2), "the top layer only");

    // Bob asks for the lowest layer: the publisher is asked for its keyframe, and bob keeps
    // seeing the top layer meanwhile (no freeze).
    let asked = net.client(alice).layer_keyframe_requests.len();
    net.set_layer(bob, tracks.video, Some(0));
    for _ in 0..5 {
        frame(&mut net, alice, [false; 3]);
    }
    assert!(
        net.client(alice).layer_keyframe_requests[asked..]
            .iter()
            .any(|(_, l)| *l == 0),
        "a keyframe of layer 0 was asked for: {:?}",
        net.client(alice).layer_keyframe_requests
    );
    assert_eq!(seen(&net, bob).len(), 16);
    assert!(seen(&net, bob).iter().all(|(l, _, _)| *l == 2));

    // Layer 0's keyframe: from it on bob gets layer 0 only, as one continuous stream.
    frame(&mut net, alice, [true, false, false]);
    for _ in 0..5 {
        frame(&mut net, alice, [false; 3]);
    }
    let all = seen(&net, bob);
    let layers: Vec<usize> = all.iter().map(|(l, _, _)| *l).collect();
    assert_eq!(layers, [vec![2; 16], vec![0; 6]].concat());
    assert_descriptors_continuous(&all);
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

#[test]
fn switching_up_crosses_the_picture_id_wrap_and_back_down_stays_continuous() {
    let (mut net, alice, bob, tracks) = setup();
    net.set_layer(bob, tracks.video, Some(1));
    frame(&mut net, alice, [true; 3]);
    for _ in 0..3 {
        frame(&mut net, alice, [false; 3]);
    }
    // Up to layer 2, whose PictureIDs are about to wrap (0x7ff0 + n).
    net.set_layer(bob, tracks.video, Some(2));
    frame(&mut net, alice, [false, false, true]);
    for _ in 0..20 {
        frame(&mut net, alice, [false; 3]);
    }
    net.set_layer(bob, tracks.video, Some(1));
    frame(&mut net, alice, [false, true, false]);
    frame(&mut net, alice, [false; 3]);

    let all = seen(&net, bob);
    let layers: Vec<usize> = all.iter().map(|(l, _, _)| *l).collect();
    // Each frame sends layer 1 before layer 2: the switch frame still carries a layer-1 packet.
    assert_eq!(layers, [vec![1; 5], vec![2; 21], vec![1; 2]].concat());
    assert_descriptors_continuous(&all);
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

#[test]
fn a_track_turned_off_gets_nothing_and_resumes_at_a_keyframe() {
    let (mut net, alice, bob, tracks) = setup();
    frame(&mut net, alice, [true; 3]);
    net.set_layer(bob, tracks.video, None);
    for _ in 0..10 {
        frame(&mut net, alice, [true; 3]);
    }
    assert_eq!(seen(&net, bob).len(), 1, "nothing while off");

    net.set_layer(bob, tracks.video, Some(1));
    frame(&mut net, alice, [false; 3]);
    assert_eq!(seen(&net, bob).len(), 1, "resuming waits for a keyframe");
    frame(&mut net, alice, [false, true, false]);
    frame(&mut net, alice, [false; 3]);
    let all = seen(&net, bob);
    assert_eq!(
        all.iter().map(|(l, _, _)| *l).collect::<Vec<_>>(),
        [2, 1, 1]
    );
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

#[test]
fn a_subscriber_whose_layer_never_comes_falls_back_to_a_lower_one() {
    falls_back(setup());
}

#[test]
fn on_another_worker_a_subscriber_whose_layer_never_comes_falls_back_to_a_lower_one() {
    falls_back(setup_on(1));
}

fn falls_back((mut net, alice, bob, _): (Net, usize, usize, Published)) {
    // The publisher sends layers 0 and 1 only (as a browser does when its uplink is short).
    let mut elapsed = Duration::ZERO;
    let mut i = 0;
    while elapsed < Duration::from_secs(2) {
        let key = i % 15 == 0;
        net.send_layer(alice, 0, key);
        net.send_layer(alice, 1, key);
        net.step(FRAME);
        elapsed += FRAME;
        i += 1;
    }
    let all = seen(&net, bob);
    assert!(
        all.len() > 10,
        "bob sees a lower layer rather than nothing: {all:?}"
    );
    // It takes the first keyframe below its target, then steps up to the best layer sent.
    let first_top = all.iter().position(|(l, _, _)| *l == 1).expect("layer 1");
    assert!(first_top <= 1, "{all:?}");
    assert!(all[first_top..].iter().all(|(l, _, _)| *l == 1), "{all:?}");
    assert_descriptors_continuous(&all);
}

#[test]
fn a_publisher_restart_keeps_the_descriptor_continuous() {
    let (mut net, alice, bob, first) = setup();
    frame(&mut net, alice, [true; 3]);
    for _ in 0..5 {
        frame(&mut net, alice, [false; 3]);
    }
    // Alice's peer goes away and she publishes again: bob's slot is reused for her new
    // track, whose PictureIDs start over where her first ones started.
    let mid = net.slot_mid(bob, first.video).expect("a video slot");
    let peer = net.client(alice).peer;
    net.command(0, Command::ClosePeer { peer });
    net.run_for(Duration::from_millis(100));
    let alice2 = net.add_client("alice again", 0);
    let second = net.publish_simulcast(alice2);
    net.subscribe(bob, second.video, Kind::Video, 0);
    net.connect(&[alice2]);
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.slot_mid(bob, second.video),
        Some(mid),
        "the slot is reused"
    );
    frame(&mut net, alice2, [true; 3]);
    for _ in 0..5 {
        frame(&mut net, alice2, [false; 3]);
    }
    let all = seen(&net, bob);
    assert_eq!(all.len(), 12, "{all:?}");
    assert_descriptors_continuous(&all);
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

/// Alice publishes simulcast on worker 0, Bob on worker 1 subscribes asking for `layer`
/// (downlink estimation `estimating`); eleven frames have passed. Returns (net, alice, bob,
/// tracks).
fn across_workers(estimating: bool, layer: u8) -> (Net, usize, usize, Published) {
    let mut net = Net::new(2);
    for engine in &mut net.engines {
        engine.set_bandwidth_estimation(estimating);
    }
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 1);
    let tracks = net.publish_simulcast(alice);
    net.create_subscriber(bob);
    net.subscribe(bob, tracks.video, Kind::Video, 0);
    net.connect_all();
    net.set_layer(bob, tracks.video, Some(layer));
    frame(&mut net, alice, [true; 3]);
    for _ in 0..10 {
        frame(&mut net, alice, [false; 3]);
    }
    (net, alice, bob, tracks)
}

/// The subscriber sits on another worker than the publisher: the origin pipes it only the
/// layers its subscription may forward, and a switch still never leaves it without frames.
#[test]
fn a_sink_worker_is_piped_only_the_layers_it_forwards() {
    let (mut net, alice, bob, tracks) = across_workers(false, 0);
    let piped = |net: &Net| net.pipe_layers(0, 1, tracks.video);
    let from = piped(&net).len();
    for _ in 0..10 {
        frame(&mut net, alice, [false; 3]);
    }
    assert_eq!(
        piped(&net)[from..],
        [0; 10],
        "only the low layer crosses the pipe"
    );
    assert!(seen(&net, bob).iter().all(|(l, _, _)| *l == 0));

    // Up: the top layer is piped again, and bob switches at its keyframe.
    net.set_layer(bob, tracks.video, Some(2));
    frame(&mut net, alice, [false, false, true]);
    frame(&mut net, alice, [false; 3]);
    assert_eq!(
        seen(&net, bob).last().map(|s| s.0),
        Some(2),
        "bob is on the top layer"
    );

    // Down: the top layer keeps coming until the low keyframe, then stops being piped.
    net.set_layer(bob, tracks.video, Some(0));
    let before = seen(&net, bob).len();
    frame(&mut net, alice, [false; 3]);
    assert_eq!(
        seen(&net, bob).len(),
        before + 1,
        "still the top layer, no gap"
    );
    frame(&mut net, alice, [true, false, false]);
    for _ in 0..10 {
        frame(&mut net, alice, [false; 3]);
    }
    let from = piped(&net).len();
    for _ in 0..5 {
        frame(&mut net, alice, [false; 3]);
    }
    assert_eq!(
        piped(&net)[from..],
        [0; 5],
        "the top layer stopped crossing"
    );
    let got = seen(&net, bob);
    assert_eq!(got[before..].iter().filter(|(l, _, _)| *l == 0).count(), 16);
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

/// With downlink estimation on, a sink worker is piped only the layer its subscription
/// forwards: its allocator weighs the rates the origin measured, not packets it would
/// otherwise be piped to measure them.
#[test]
fn an_estimating_sink_is_piped_only_its_layer_and_hears_every_layers_rate() {
    let (mut net, alice, bob, tracks) = across_workers(true, 1);
    let piped = |net: &Net| net.pipe_layers(0, 1, tracks.video);
    // A subscription starts on the lowest layer until the origin has measured the layers;
    // then bob is given the one he asked for and moves to it at its keyframe.
    for _ in 0..20 {
        frame(&mut net, alice, [false; 3]);
    }
    frame(&mut net, alice, [true; 3]);
    let (from, seen_from) = (piped(&net).len(), seen(&net, bob).len());
    for _ in 0..20 {
        frame(&mut net, alice, [false; 3]);
    }
    let mut layers = piped(&net)[from..].to_vec();
    layers.sort_unstable();
    layers.dedup();
    assert_eq!(
        layers,
        [1],
        "the middle layer crosses, neither the low nor the top"
    );
    let rates = net
        .pipe_log
        .iter()
        .filter(|(f, t, r)| (*f, *t) == (0, 1) && *r == PipeRecord::Rates(tracks.video))
        .count();
    assert!(rates >= 1, "the origin passed the layers' rates on");
    let got = seen(&net, bob);
    assert_eq!(got.len(), seen_from + 20);
    assert!(got[seen_from..].iter().all(|(l, _, _)| *l == 1));
}

/// The masks the origin (worker 0) asked `track`'s publisher to send, in order.
fn demands(net: &Net, track: sfumato_core::TrackId) -> Vec<u8> {
    net.events
        .iter()
        .filter_map(|(w, e)| match e {
            sfumato_core::Event::LayerDemand { track: t, mask } if *w == 0 && *t == track => {
                Some(*mask)
            }
            _ => None,
        })
        .collect()
}

/// What the publisher is asked to send follows the same demand as the pipes, from a
/// subscriber on another worker: every layer up to the one it may forward, more at once, fewer
/// once a second has passed without need.
#[test]
fn the_publisher_is_asked_for_the_layers_up_to_the_highest_one_needed() {
    let (mut net, alice, bob, tracks) = across_workers(false, 0);
    for _ in 0..30 {
        frame(&mut net, alice, [false; 3]);
    }
    assert_eq!(
        demands(&net, tracks.video),
        [0b001],
        "the low layer alone, after the hold"
    );

    net.set_layer(bob, tracks.video, Some(2));
    net.step(FRAME);
    assert_eq!(
        demands(&net, tracks.video),
        [0b001, 0b111],
        "every layer up to the top, at once"
    );
    frame(&mut net, alice, [false, false, true]);
    frame(&mut net, alice, [false; 3]);

    // Down to the middle layer and back within the hold: the publisher is told nothing.
    net.set_layer(bob, tracks.video, Some(1));
    frame(&mut net, alice, [false, true, false]);
    net.set_layer(bob, tracks.video, Some(2));
    frame(&mut net, alice, [false, false, true]);
    for _ in 0..40 {
        frame(&mut net, alice, [false; 3]);
    }
    assert_eq!(demands(&net, tracks.video), [0b001, 0b111]);

    // Off: nothing after the hold.
    net.set_layer(bob, tracks.video, None);
    for _ in 0..40 {
        frame(&mut net, alice, [false; 3]);
    }
    assert_eq!(demands(&net, tracks.video), [0b001, 0b111, 0b000]);
}
