//! Story: while a room is live, the worker's socket receives junk: random bytes, truncated
//! and corrupted STUN, DTLS and SRTP, from strangers and from the participants' own
//! addresses; and a publisher sends well-formed SRTP whose payloads are junk for the parsers
//! behind it (VP9 descriptors, AV1 dependency descriptors, RED). Nothing panics, junk is
//! counted as dropped, and the media keeps flowing. Should handling one peer panic all the
//! same (a bug in str0m), that peer alone is dropped.

use crate::harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{assert_continuous, Net, Published};
use sfumato_core::peer::Fault;
use sfumato_core::{Command, Event, Kind};
use str0m::format::Codec;
use str0m::media::MediaKind;

/// A small deterministic generator (xorshift64*): the same junk on every run.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn stranger(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 60000 + (i % 5000) as u16))
}

/// A STUN binding request whose USERNAME names `ufrag`; no valid integrity.
fn binding_request(username: &str) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    // MESSAGE-INTEGRITY with a wrong HMAC.
    attr.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    attr.extend_from_slice(&[0xab; 20]);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend_from_slice(&[7; 12]);
    msg.extend_from_slice(&attr);
    msg
}

/// Alice publishes to bob on worker 0; returns (net, alice, bob).
fn live_room() -> (Net, usize, usize) {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    let tracks = net.publish(alice);
    net.create_subscriber(bob);
    net.record = true;
    net.subscribe_all(bob, tracks);
    net.connect_all();
    net.run_for(Duration::from_millis(100));
    (net, alice, bob)
}

/// Streams a second of media and checks that bob got all of it.
fn media_keeps_flowing(net: &mut Net, alice: usize, bob: usize) {
    let (sent_a, sent_v) = {
        let a = net.client(alice);
        (
            a.sent_payloads(MediaKind::Audio).len(),
            a.sent_payloads(MediaKind::Video).len(),
        )
    };
    let (got_a, got_v) = {
        let b = net.client(bob);
        (
            b.received_payloads(MediaKind::Audio).len(),
            b.received_payloads(MediaKind::Video).len(),
        )
    };
    net.send_video(alice, true);
    for _ in 0..25 {
        net.send_audio(alice);
        net.send_video(alice, false);
        net.step(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(200));
    let a = net.client(alice);
    let b = net.client(bob);
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let (from, to) = match kind {
            MediaKind::Audio => (sent_a, got_a),
            MediaKind::Video => (sent_v, got_v),
        };
        let sent = &a.sent_payloads(kind)[from..];
        let got = &b.received_payloads(kind)[to..];
        assert_eq!(
            got.len(),
            sent.len(),
            "{kind:?} keeps flowing: bob got {} of {} packets",
            got.len(),
            sent.len()
        );
        assert!(got == sent, "{kind:?} payloads arrive unchanged");
    }
    assert_continuous("bob audio", &b.received_seqs(MediaKind::Audio));
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}

#[test]
fn junk_from_strangers_is_counted_and_dropped() {
    let (mut net, alice, bob) = live_room();
    media_keeps_flowing(&mut net, alice, bob);
    let ufrag = net.client(bob).engine_ufrag().expect("ufrag in the offer");
    let captured: Vec<Vec<u8>> = net.delivered.iter().map(|d| d.contents.clone()).collect();
    let mut junk = Junk(0x5eed_cafe_f00d_0001);
    let mut sent = 0u64;
    let before = net.engines[0].stats();

    // Random bytes of every length, including the first bytes that select STUN (0..3),
    // DTLS (20..63) and RTP/RTCP (128..191).
    for i in 0..2000 {
        let len = junk.below(1500);
        let mut d = junk.bytes(len);
        if let Some(b) = d.first_mut() {
            *b = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0xc8, *b][i % 8];
        }
        net.inject(0, stranger(i), &d);
        sent += 1;
    }
    // Real datagrams of this room (STUN, DTLS, SRTP, SRTCP), truncated and bit-flipped.
    for (i, d) in captured.iter().enumerate().take(300) {
        for cut in [
            0,
            1,
            2,
            4,
            12,
            13,
            20,
            d.len() / 2,
            d.len().saturating_sub(1),
        ] {
            net.inject(0, stranger(i + 3000), &d[..cut.min(d.len())]);
            sent += 1;
        }
        if d.starts_with(&[0x00, 0x01]) {
            // A whole binding request naming a real peer: see the STUN tests below.
            continue;
        }
        let mut flipped = d.clone();
        let at = junk.below(flipped.len().max(1));
        if let Some(b) = flipped.get_mut(at) {
            *b ^= 1 << junk.below(8);
        }
        net.inject(0, stranger(i + 3500), &flipped);
        sent += 1;
    }
    // STUN naming a stranger's ufrag, truncated at every length.
    let stun = binding_request("nobody:x");
    for cut in 0..=stun.len() {
        net.inject(0, stranger(4000 + cut), &stun[..cut]);
        sent += 1;
    }
    // STUN naming bob's real ufrag, truncated (never whole: that is tested below).
    let stun = binding_request(&format!("{ufrag}:x"));
    for cut in 0..stun.len() - 28 {
        net.inject(0, stranger(4500 + cut), &stun[..cut]);
        sent += 1;
    }

    let after = net.engines[0].stats();
    assert_eq!(after.datagrams_in - before.datagrams_in, sent);
    assert_eq!(
        after.datagrams_dropped - before.datagrams_dropped,
        sent,
        "every datagram from a stranger is dropped and counted"
    );
    assert_eq!(
        after.addresses, before.addresses,
        "no stranger's address is learnt"
    );
    assert_eq!(after.peers, 2);
    media_keeps_flowing(&mut net, alice, bob);
}

#[test]
fn junk_from_participants_addresses_harms_nobody() {
    let (mut net, alice, bob) = live_room();
    media_keeps_flowing(&mut net, alice, bob);
    let captured: Vec<_> = net
        .delivered
        .iter()
        .filter(|d| d.destination == harness::worker_addr(0))
        .cloned()
        .collect();
    let mut junk = Junk(0x5eed_cafe_f00d_0002);
    let before = net.engines[0].stats();
    let mut sent = 0u64;
    for i in 0..1000 {
        let from = net.client([alice, bob][i % 2]).addr;
        let len = junk.below(1200);
        let mut d = junk.bytes(len);
        if let Some(b) = d.first_mut() {
            *b = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0xc8, 0xff][i % 8];
        }
        net.inject(0, from, &d);
        sent += 1;
    }
    for (i, d) in captured.iter().enumerate().take(300) {
        let cut = junk.below(d.contents.len().max(1));
        net.inject(0, d.source, &d.contents[..cut]);
        let mut flipped = d.contents.clone();
        let at = 12 + junk.below(flipped.len().saturating_sub(12).max(1));
        if let Some(b) = flipped.get_mut(at) {
            *b ^= 0x40;
        }
        net.inject(0, d.source, &flipped);
        sent += 2;
        if i % 50 == 0 {
            net.step(Duration::from_millis(5));
        }
    }
    let after = net.engines[0].stats();
    let dropped = after.datagrams_dropped - before.datagrams_dropped;
    eprintln!("known-address junk: {sent} sent, {dropped} counted as dropped");
    assert_eq!(after.peers, 2, "nobody was disconnected");
    assert!(net.client(alice).connected && net.client(bob).connected);
    assert!(!net
        .events
        .iter()
        .any(|(_, e)| matches!(e, sfumato_core::Event::PeerClosed { .. })));
    media_keeps_flowing(&mut net, alice, bob);
}

#[test]
fn stun_with_a_real_ufrag_but_bad_integrity_learns_no_address() {
    // A stranger sends binding requests naming bob's ufrag (it is in bob's SDP) with a wrong
    // MESSAGE-INTEGRITY, from many source ports. str0m rejects each one; the worker must not
    // remember the stranger's addresses.
    let (mut net, alice, bob) = live_room();
    let bob_ufrag = net.client(bob).engine_ufrag().expect("ufrag");
    let before = net.engines[0].stats();
    for i in 0..100 {
        net.inject(0, stranger(i), &binding_request(&format!("{bob_ufrag}:x")));
    }
    let after = net.engines[0].stats();
    assert_eq!(
        after.addresses - before.addresses,
        0,
        "unauthenticated STUN registered stranger addresses"
    );
    media_keeps_flowing(&mut net, alice, bob);
}

#[test]
fn stun_with_a_real_ufrag_but_bad_integrity_is_counted_as_dropped() {
    let (mut net, _alice, bob) = live_room();
    let bob_ufrag = net.client(bob).engine_ufrag().expect("ufrag");
    let before = net.engines[0].stats();
    for i in 0..100 {
        net.inject(0, stranger(i), &binding_request(&format!("{bob_ufrag}:x")));
    }
    let after = net.engines[0].stats();
    assert_eq!(
        after.datagrams_dropped - before.datagrams_dropped,
        100,
        "every unauthenticated STUN request is counted as dropped"
    );
}

#[test]
fn a_spoofed_stun_request_does_not_redirect_a_participant() {
    // Someone who knows bob's ufrag (bob himself, say) spoofs alice's address and sends a
    // binding request naming bob's peer, with a wrong MESSAGE-INTEGRITY. Alice's media must
    // still reach alice's peer.
    let (mut net, alice, bob) = live_room();
    media_keeps_flowing(&mut net, alice, bob);
    let bob_ufrag = net.client(bob).engine_ufrag().expect("ufrag");
    let alice_addr = net.client(alice).addr;
    net.inject(0, alice_addr, &binding_request(&format!("{bob_ufrag}:x")));
    media_keeps_flowing(&mut net, alice, bob);
}

#[test]
fn a_publishers_junk_payloads_harm_nobody() {
    let mut net = Net::new(1);
    let alice = net.add_client_with_red("alice", 0);
    let bob = net.add_client_with_red("bob", 0);
    let carol = net.add_client("carol", 0);
    let tracks = net.publish(alice);
    for c in [bob, carol] {
        net.create_subscriber(c);
        net.subscribe_all(c, tracks);
    }
    net.connect_all();
    net.run_for(Duration::from_millis(100));
    let a = net.client(alice);
    let (vp9, av1) = (a.payload_type(Codec::Vp9), a.payload_type(Codec::Av1));
    let red = a.red_pt().expect("RED negotiated");
    let mut junk = Junk(0x5eed_f00d);
    for i in 0..600 {
        let len = junk.below(40);
        let payload = junk.bytes(len);
        match i % 3 {
            0 => net.send_raw(alice, MediaKind::Video, vp9, payload, None),
            1 => {
                let dd_len = 3 + junk.below(30);
                let dd = junk.bytes(dd_len);
                net.send_raw(alice, MediaKind::Video, av1, payload, Some(dd));
            }
            _ => net.send_raw(alice, MediaKind::Audio, red, payload, None),
        }
        if i % 30 == 0 {
            net.step(Duration::from_millis(20));
        }
    }
    // A malformed RED payload cannot be routed: it is counted as dropped at the origin (and
    // the subscribers see one lost audio packet).
    assert!(
        net.engines[0].stats().packets_dropped > 0,
        "junk RED is counted"
    );
    // Then real media: everyone gets all of it.
    let count = |net: &Net, c: usize, kind| net.client(c).received_payloads(kind).len();
    let before: Vec<usize> = [
        (bob, MediaKind::Audio),
        (bob, MediaKind::Video),
        (carol, MediaKind::Audio),
    ]
    .iter()
    .map(|&(c, k)| count(&net, c, k))
    .collect();
    let sent_before = net.client(alice).sent_payloads(MediaKind::Video).len();
    net.send_video(alice, true);
    for _ in 0..25 {
        net.send_audio(alice);
        net.send_video(alice, false);
        net.step(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(200));
    assert_eq!(
        count(&net, bob, MediaKind::Audio) - before[0],
        25,
        "bob hears it all"
    );
    assert_eq!(
        count(&net, bob, MediaKind::Video) - before[1],
        26,
        "bob sees it all"
    );
    assert_eq!(
        count(&net, carol, MediaKind::Audio) - before[2],
        25,
        "carol hears it all"
    );
    let b = net.client(bob);
    assert_eq!(
        b.received_payloads(MediaKind::Video)[before[1]..],
        net.client(alice).sent_payloads(MediaKind::Video)[sent_before..],
        "the video arrives unchanged"
    );
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}

/// Alice and dave publish, bob and carol receive both; `victim` is made to panic at its next
/// call of kind `at` and `act` makes that call happen. The victim alone is dropped as
/// failed, and dave's media keeps reaching bob.
fn a_panic_drops_only_its_peer(
    at: Fault,
    victim: impl Fn(&Roles) -> usize,
    act: impl FnOnce(&mut Net, &Roles),
) {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 0);
    let carol = net.add_client("carol", 0);
    let dave = net.add_client("dave", 0);
    let from_alice = net.publish(alice);
    let from_dave = net.publish(dave);
    net.record = true;
    for c in [bob, carol] {
        net.create_subscriber(c);
        net.subscribe_all(c, from_alice);
        net.subscribe_all(c, from_dave);
    }
    net.connect_all();
    net.run_for(Duration::from_millis(100));
    let roles = Roles {
        alice,
        carol,
        dave,
        from_alice,
    };

    let v = victim(&roles);
    let peer = net.client(v).peer;
    net.engines[0].fail_peer_at(peer, at);
    act(&mut net, &roles);
    assert!(
        net.saw(0, |e| matches!(e, Event::PeerClosed { peer: p, reason } if *p == peer && *reason == "internal error")),
        "{at:?}: the victim's peer is closed as failed"
    );
    let stats = net.engines[0].stats();
    assert_eq!((stats.peers_failed, stats.peers), (1, 3), "{at:?}");
    media_keeps_flowing(&mut net, dave, bob);
}

struct Roles {
    alice: usize,
    carol: usize,
    dave: usize,
    from_alice: Published,
}

#[test]
fn a_peer_whose_datagram_handling_panics_is_dropped_and_the_room_goes_on() {
    a_panic_drops_only_its_peer(
        Fault::Receive,
        |r| r.carol,
        |net, r| {
            let addr = net.client(r.carol).addr;
            net.inject(0, addr, &[0x80, 0x60, 0, 1]);
            // Her next datagrams are strangers' now.
            net.inject(0, addr, &[0x80, 0x60, 0, 2]);
        },
    );
}

#[test]
fn a_subscriber_whose_write_panics_is_dropped_and_the_room_goes_on() {
    a_panic_drops_only_its_peer(
        Fault::Write,
        |r| r.carol,
        |net, r| {
            // Dave's: bob's audio then comes from dave alone (its sequence is checked whole).
            net.send_audio(r.dave);
            net.step(Duration::from_millis(20));
        },
    );
}

#[test]
fn a_publisher_whose_keyframe_request_panics_is_dropped_and_the_room_goes_on() {
    a_panic_drops_only_its_peer(
        Fault::KeyframeRequest,
        |r| r.alice,
        |net, r| {
            // Carol asks for a keyframe of the video she receives, as a browser would.
            let mid = net.slot_mid(r.carol, r.from_alice.video).expect("offered");
            net.send_video(r.alice, true);
            for _ in 0..10 {
                net.step(Duration::from_millis(100));
                net.send_video(r.alice, false);
                assert!(net.client_mut(r.carol).request_keyframe(mid));
            }
            net.run_for(Duration::from_millis(500));
        },
    );
}

#[test]
fn a_peer_whose_subscribe_or_unsubscribe_panics_is_dropped_and_the_room_goes_on() {
    a_panic_drops_only_its_peer(
        Fault::Unsubscribe,
        |r| r.carol,
        |net, r| {
            let (worker, peer) = (net.client(r.carol).worker, net.client(r.carol).peer);
            let track = r.from_alice.video;
            net.command(worker, Command::Unsubscribe { peer, track });
        },
    );
    a_panic_drops_only_its_peer(
        Fault::Subscribe,
        |r| r.carol,
        |net, r| {
            let (worker, peer) = (net.client(r.carol).worker, net.client(r.carol).peer);
            let track = r.from_alice.video;
            net.command(worker, Command::Unsubscribe { peer, track });
            net.subscribe(r.carol, track, Kind::Video, worker);
        },
    );
}

#[test]
fn a_peer_whose_closing_panics_is_dropped_all_the_same() {
    a_panic_drops_only_its_peer(
        Fault::Close,
        |r| r.carol,
        |net, r| {
            let (worker, peer) = (net.client(r.carol).worker, net.client(r.carol).peer);
            net.command(worker, Command::ClosePeer { peer });
        },
    );
}

/// An offer whose m-lines str0m cannot use (found by the `whip` fuzz target: `m=audix`,
/// `m=vide o9`) is refused, not answered with an SDP without media; the peer is not kept.
#[test]
fn an_offer_without_usable_media_is_refused() {
    offer_is_refused(include_bytes!(
        "../../../../fuzz/regressions/whip/no-usable-media"
    ));
}

/// A recvonly offer mapping payload type 97 to both RTX and VP9 made str0m panic (it may
/// not remap what a receiving remote dictates); refused before str0m sees it.
#[test]
fn an_offer_with_a_payload_type_mapped_twice_is_refused() {
    offer_is_refused(include_bytes!(
        "../../../../fuzz/regressions/whip/payload-type-twice"
    ));
}

/// The offer in a `whip` fuzz input is refused as bad SDP by a publishing and a viewing
/// peer, neither of which is kept or fails.
fn offer_is_refused(input: &[u8]) {
    use sfumato_core::ids::{PeerId, WorkerId};
    use sfumato_core::{Command, Engine, Event, Output};
    // The fuzz input: a flags byte, a content type's length and text, then the body.
    let n = usize::from(input[1]);
    let offer = String::from_utf8_lossy(&input[2 + n..]).into_owned();
    for publisher in [true, false] {
        let now = std::time::Instant::now();
        let mut engine = Engine::new(WorkerId(0), "127.0.0.1:4000".parse().expect("an address"));
        let (req, peer) = (1, PeerId(1));
        let offer = offer.clone();
        engine.handle_command(
            now,
            if publisher {
                Command::Publish { req, peer, offer }
            } else {
                Command::CreateViewer { req, peer, offer }
            },
        );
        let mut replies = Vec::new();
        while let Some(out) = engine.poll_output() {
            if let Output::Event(Event::Reply { result, .. }) = out {
                replies.push(result);
            }
        }
        assert_eq!(replies.len(), 1);
        assert!(
            matches!(replies[0], Err(sfumato_core::Error::BadSdp(_))),
            "{:?}",
            replies[0]
        );
        assert_eq!(engine.stats().peers, 0, "the refused peer is not kept");
        assert_eq!(engine.stats().peers_failed, 0, "refused, not failed");
    }
}
