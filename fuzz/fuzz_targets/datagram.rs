//! What every datagram from the network meets first: the demux, which reads a STUN binding
//! request's USERNAME to find the peer it names, or knows the peer by the source address.
//! (What follows, str0m's STUN, DTLS, SRTP and RTCP, is fuzzed through `engine`.)
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sfumato_core::demux::{stun_local_ufrag, Demux, Lookup};
use sfumato_core::ids::PeerId;

fuzz_target!(|data: &[u8]| {
    let mut demux = Demux::default();
    demux.add_peer(PeerId(1), "abcd");
    demux.add_peer(PeerId(2), "efgh");
    let known = SocketAddr::from(([127, 0, 0, 1], 5000));
    let stranger = SocketAddr::from(([127, 0, 0, 1], 5001));
    demux.learn(known, PeerId(1));
    if let Some(ufrag) = stun_local_ufrag(data) {
        assert!(ufrag.len() < data.len());
    }
    match demux.lookup(stranger, data) {
        None | Some(Lookup::Unverified(_)) => {}
        Some(Lookup::Known(p)) => panic!("a stranger's datagram is never known ({p})"),
    }
    let _ = demux.lookup(known, data);
});
