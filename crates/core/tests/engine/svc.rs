//! Story: a publisher sends VP9 or AV1 with three spatial layers in one stream (SVC; AV1's
//! layers named by the dependency descriptor extension). Each
//! subscriber receives the spatial layers up to the one it gets: it moves down at the next
//! picture, up only at a keyframe (which the engine asks for), sees no gap in its sequence
//! numbers where layers were dropped, and the last packet it gets of each picture carries
//! the marker bit.

use crate::harness;

use std::time::Duration;

use harness::{assert_continuous, svc_fields, Net, Published, SvcCodec};
use sfumato_core::Kind;
use str0m::media::MediaKind;

const FRAME: Duration = Duration::from_millis(33);

const CODECS: [SvcCodec; 2] = [SvcCodec::Vp9, SvcCodec::Av1];

fn picture(net: &mut Net, codec: SvcCodec, publisher: usize, layers: u8, keyframe: bool) {
    net.send_svc_picture(publisher, codec, layers, keyframe);
    net.step(FRAME);
}

/// (spatial layer, picture id, marker) of every video packet `c` received, in order.
fn seen(net: &Net, c: usize) -> Vec<(u8, u16, bool)> {
    net.client(c)
        .received
        .iter()
        .filter(|r| r.kind == Some(MediaKind::Video))
        .map(|r| {
            let (spatial, pid) = svc_fields(&r.payload);
            (spatial, pid, r.marker)
        })
        .collect()
}

/// Every picture's packets are there up to `top`, and only the packet of `top` is marked.
fn assert_pictures(what: &str, packets: &[(u8, u16, bool)], top: u8) {
    assert!(!packets.is_empty(), "{what}: nothing received");
    for (i, &(spatial, pid, marker)) in packets.iter().enumerate() {
        assert!(spatial <= top, "{what}: layer {spatial} above {top}");
        assert_eq!(marker, spatial == top, "{what}: marker on {:?}", packets[i]);
        if spatial > 0 {
            assert_eq!(packets[i - 1], (spatial - 1, pid, false), "{what}: a hole");
        }
    }
}

fn setup() -> (Net, usize, usize, usize, Published) {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    let carol = net.add_client("carol", 0);
    let tracks = net.publish(alice);
    for c in [bob, carol] {
        net.create_subscriber(c);
        net.subscribe(c, tracks.video, Kind::Video, 0);
    }
    net.connect_all();
    (net, alice, bob, carol, tracks)
}

#[test]
fn each_subscriber_gets_the_spatial_layers_up_to_its_own() {
    for codec in CODECS {
        each_subscriber_gets_the_spatial_layers_up_to_its_own_in(codec);
    }
}

fn each_subscriber_gets_the_spatial_layers_up_to_its_own_in(codec: SvcCodec) {
    let (mut net, alice, bob, carol, tracks) = setup();
    net.set_layer(carol, tracks.video, Some(0));
    picture(&mut net, codec, alice, 3, true);
    for _ in 0..9 {
        picture(&mut net, codec, alice, 3, false);
    }
    let full = seen(&net, bob);
    assert_eq!(full.len(), 30, "bob gets every packet");
    assert_pictures("bob", &full, 2);
    let low = seen(&net, carol);
    assert_eq!(low.len(), 10, "carol gets one packet per picture");
    assert_pictures("carol", &low, 0);
    assert_continuous("carol", &net.client(carol).received_seqs(MediaKind::Video));
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}

#[test]
fn down_at_the_next_picture_up_at_a_keyframe_with_no_gap() {
    for codec in CODECS {
        down_at_the_next_picture_up_at_a_keyframe_with_no_gap_in(codec);
    }
}

fn down_at_the_next_picture_up_at_a_keyframe_with_no_gap_in(codec: SvcCodec) {
    let (mut net, alice, bob, carol, tracks) = setup();
    net.set_layer(carol, tracks.video, Some(0));
    picture(&mut net, codec, alice, 3, true);
    for _ in 0..4 {
        picture(&mut net, codec, alice, 3, false);
    }

    // Bob moves down to layer 1 at the next picture, without a keyframe.
    net.set_layer(bob, tracks.video, Some(1));
    let from = seen(&net, bob).len();
    for _ in 0..4 {
        picture(&mut net, codec, alice, 3, false);
    }
    assert_pictures("bob after moving down", &seen(&net, bob)[from..], 1);
    assert_eq!(seen(&net, bob).len() - from, 8);

    // Carol moves up to layer 2: the publisher is asked for a keyframe (within the 500 ms
    // merging interval); until it comes, carol keeps layer 0 (no freeze).
    let asked = net.client(alice).keyframe_requests.len();
    net.set_layer(carol, tracks.video, Some(2));
    let from = seen(&net, carol).len();
    for _ in 0..20 {
        picture(&mut net, codec, alice, 3, false);
    }
    assert!(
        net.client(alice).keyframe_requests.len() > asked,
        "the publisher is asked for a keyframe"
    );
    assert_pictures("carol waiting", &seen(&net, carol)[from..], 0);
    let from = seen(&net, carol).len();
    picture(&mut net, codec, alice, 3, true);
    picture(&mut net, codec, alice, 3, false);
    assert_pictures("carol after the keyframe", &seen(&net, carol)[from..], 2);
    assert_eq!(seen(&net, carol).len() - from, 6);

    // Through every move, each subscriber's numbering has no hole.
    for c in [bob, carol] {
        assert_continuous("subscriber", &net.client(c).received_seqs(MediaKind::Video));
    }
}

#[test]
fn fewer_layers_than_asked_for_do_not_bring_keyframe_requests() {
    for codec in CODECS {
        fewer_layers_than_asked_for_do_not_bring_keyframe_requests_in(codec);
    }
}

fn fewer_layers_than_asked_for_do_not_bring_keyframe_requests_in(codec: SvcCodec) {
    let (mut net, alice, bob, _carol, _tracks) = setup();
    // The publisher announces two spatial layers; bob asks for the top one by default.
    picture(&mut net, codec, alice, 2, true);
    // The subscriptions' first requests (merged, one deferred by the 500 ms interval).
    for _ in 0..30 {
        picture(&mut net, codec, alice, 2, false);
    }
    let asked = net.client(alice).keyframe_requests.len();
    for _ in 0..60 {
        picture(&mut net, codec, alice, 2, false);
    }
    assert_eq!(
        net.client(alice).keyframe_requests.len(),
        asked,
        "two seconds of pictures, no keyframe asked for"
    );
    assert_pictures("bob", &seen(&net, bob), 1);
    assert_eq!(seen(&net, bob).len(), 182);
}

#[test]
fn turned_off_gets_nothing_and_resumes_at_a_keyframe() {
    for codec in CODECS {
        turned_off_gets_nothing_and_resumes_at_a_keyframe_in(codec);
    }
}

fn turned_off_gets_nothing_and_resumes_at_a_keyframe_in(codec: SvcCodec) {
    let (mut net, alice, bob, _carol, tracks) = setup();
    picture(&mut net, codec, alice, 3, true);
    picture(&mut net, codec, alice, 3, false);
    net.set_layer(bob, tracks.video, None);
    let from = seen(&net, bob).len();
    for _ in 0..5 {
        picture(&mut net, codec, alice, 3, false);
    }
    assert_eq!(seen(&net, bob).len(), from, "nothing while off");
    net.set_layer(bob, tracks.video, Some(1));
    picture(&mut net, codec, alice, 3, false);
    assert_eq!(seen(&net, bob).len(), from, "a delta picture cannot resume");
    picture(&mut net, codec, alice, 3, true);
    assert_pictures("bob resumed", &seen(&net, bob)[from..], 1);
    assert_continuous("bob", &net.client(bob).received_seqs(MediaKind::Video));
}
