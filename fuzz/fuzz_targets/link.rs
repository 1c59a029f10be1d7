//! The relay link between two nodes: datagrams from anyone, and bodies sealed by a member
//! (which holds the cluster key), with time passing, NACKs and resends flowing both ways.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sfumato_core::ids::NodeId;
use sfumato_core::link::{LinkOutput, Links, KEY_LEN};
use sfumato_core::wire;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A datagram to node 2, from node 1's address or from a stranger.
    Raw { from_member: bool, data: Vec<u8> },
    /// A body (kind byte first) that node 1 seals to node 2.
    Sealed(Vec<u8>),
    /// A pipe message in its wire form, sent by node 1 to node 2 if it decodes.
    Send(Vec<u8>),
    /// Time passes (milliseconds).
    Advance(u8),
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + n))
}

fn exchange(from: &mut Links, to: &mut Links, from_addr: SocketAddr, now: Instant) {
    let clock = sfumato_fuzz::clock();
    while let Some(out) = from.poll_output() {
        if let LinkOutput::Transmit { data, .. } = out {
            to.handle_datagram(now, from_addr, &data, &clock);
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let clock = sfumato_fuzz::clock();
    let mut now = clock.at;
    let key = [7; KEY_LEN];
    let (s1, s2) = ([1; KEY_LEN], [2; KEY_LEN]);
    let mut a = Links::new(NodeId(1), &s1, &key);
    let mut b = Links::new(NodeId(2), &s2, &key);
    a.set_member(now, NodeId(2), addr(2), &s2);
    b.set_member(now, NodeId(1), addr(1), &s1);
    for op in ops {
        match op {
            Op::Raw { from_member, data } => {
                let from = if from_member { addr(1) } else { addr(3) };
                b.handle_datagram(now, from, &data, &clock);
            }
            Op::Sealed(body) => a.seal_body(NodeId(2), &body),
            Op::Send(bytes) => {
                if let Ok(msg) = wire::decode(&bytes, &clock) {
                    a.send(now, NodeId(2), &msg, &clock);
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
        }
        // Whatever each side sends reaches the other.
        exchange(&mut a, &mut b, addr(1), now);
        exchange(&mut b, &mut a, addr(2), now);
    }
    let _ = (a.stats(), b.stats());
});
