//! Story: a publisher sends its audio as RED (RFC 2198: each packet also carries a copy of
//! the previous frame). A subscriber that negotiated RED receives the RED packets as they
//! are; one that did not receives the primary frame alone, as plain Opus. Both hear every
//! packet.

use crate::harness;

use harness::{Net, STEP};
use sfumato_core::Kind;
use str0m::format::Codec;
use str0m::media::MediaKind;

#[test]
fn red_goes_through_to_red_subscribers_and_as_plain_opus_to_the_others() {
    let mut net = Net::new(1);
    let alice = net.add_client_with_red("alice", 0);
    let bob = net.add_client_with_red("bob", 0);
    let carol = net.add_client("carol", 0);
    let tracks = net.publish(alice);
    for c in [bob, carol] {
        net.create_subscriber(c);
        net.subscribe(c, tracks.audio, Kind::Audio, 0);
    }
    net.connect_all();
    assert!(
        net.client(alice).red_pt().is_some(),
        "the publisher negotiated RED"
    );
    assert!(net.client(bob).red_pt().is_some(), "bob negotiated RED");
    assert!(net.client(carol).red_pt().is_none());

    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(net.send_audio(alice));
        net.step(STEP * 4);
    }
    let audio = |c: usize| -> Vec<(u8, Vec<u8>)> {
        net.client(c)
            .received
            .iter()
            .filter(|r| r.kind == Some(MediaKind::Audio))
            .map(|r| (r.pt, r.payload.clone()))
            .collect()
    };

    let red_pt = *net.client(bob).red_pt().expect("red");
    let bob_got = audio(bob);
    assert_eq!(bob_got.len(), sent.len(), "bob hears every packet");
    for ((pt, payload), sent) in bob_got.iter().zip(&sent) {
        assert_eq!(*pt, red_pt, "as RED");
        assert_eq!(payload, sent, "unchanged");
    }

    let opus_pt = net.client(carol).pt_of(Codec::Opus);
    let carol_got = audio(carol);
    assert_eq!(carol_got.len(), sent.len(), "carol hears every packet");
    for ((pt, payload), sent) in carol_got.iter().zip(&sent) {
        assert_eq!(*pt, opus_pt, "as plain Opus");
        // The primary block: what follows the 4-byte redundant header, the 1-byte primary
        // header and the 3-byte redundant block.
        assert_eq!(payload[..], sent[8..], "the primary frame alone");
    }
}
