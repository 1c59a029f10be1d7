//! Story: data messages in a room spread over two workers. Alice and Bob are on worker 0,
//! Carol on worker 1, Dave (another room) on worker 1. What each sends reaches the members of
//! its room it is for, stamped with its sender, in order, each message crossing the pipe
//! once; bad frames and members without the grant are refused and counted; a plan repairs a
//! lost join.

use crate::harness;

use std::sync::Arc;

use harness::{Net, PipeRecord};
use sfumato_core::data::{self, encode_send, parse_deliver, ORDERED, RELIABLE, TEXT};
use sfumato_core::{Command, DataMember, DataRoute, Event, MemberId, NodeId, Plan, WorkerId};

const ALICE: MemberId = MemberId(1);
const BOB: MemberId = MemberId(2);
const CAROL: MemberId = MemberId(3);
const DAVE: MemberId = MemberId(4);

/// (recipient, sender, seq, payload) of every data event so far.
fn received(net: &Net) -> Vec<(MemberId, String, u32, Vec<u8>)> {
    net.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Data { member, frame, .. } => {
                let d = parse_deliver(frame).expect("a deliver frame");
                Some((*member, d.from.to_string(), d.seq, d.payload.to_vec()))
            }
            _ => None,
        })
        .collect()
}

fn join(net: &mut Net, worker: usize, member: MemberId, room: &str, send: bool) {
    net.command(
        worker,
        Command::DataJoin(DataMember {
            member,
            room: room.into(),
            send,
            peer: None,
        }),
    );
}

fn send(net: &mut Net, worker: usize, member: MemberId, seq: u32, to: &[MemberId], body: &[u8]) {
    net.command(
        worker,
        Command::DataIn {
            member,
            frame: encode_send(RELIABLE, seq, "t", to, body),
        },
    );
}

fn room_over_two_workers() -> Net {
    let mut net = Net::new(2);
    net.wire_pipes = true; // what crosses must survive the relay's wire form too
    join(&mut net, 0, ALICE, "a", true);
    join(&mut net, 0, BOB, "a", true);
    join(&mut net, 1, CAROL, "a", true);
    join(&mut net, 1, DAVE, "b", true);
    for (w, other) in [(0, 1), (1, 0)] {
        net.command(
            w,
            Command::DataRoute(DataRoute {
                room: "a".into(),
                workers: vec![WorkerId(other), WorkerId(w as u16)],
                nodes: vec![],
            }),
        );
    }
    net
}

#[test]
fn broadcast_and_targeted_messages_reach_their_members_across_workers_in_order() {
    let mut net = room_over_two_workers();
    for seq in 0..20 {
        send(&mut net, 0, ALICE, seq, &[], &[seq as u8]);
    }
    send(&mut net, 1, CAROL, 100, &[BOB, DAVE], b"to bob");

    let got = received(&net);
    let from_alice = |to: MemberId| -> Vec<u32> {
        got.iter()
            .filter(|(m, from, ..)| *m == to && from == "p1")
            .map(|(_, _, seq, _)| *seq)
            .collect()
    };
    let all: Vec<u32> = (0..20).collect();
    assert_eq!(
        from_alice(BOB),
        all,
        "bob, same worker: every message, in order"
    );
    assert_eq!(
        from_alice(CAROL),
        all,
        "carol, across the pipe: every message, in order"
    );
    assert!(
        from_alice(ALICE).is_empty(),
        "a sender does not hear itself"
    );
    assert!(
        got.iter().all(|(m, ..)| *m != DAVE),
        "nothing reaches another room, even when named"
    );
    assert_eq!(
        got.iter()
            .filter(|(_, from, ..)| from == "p3")
            .map(|(m, _, _, body)| (*m, body.as_slice()))
            .collect::<Vec<_>>(),
        [(BOB, &b"to bob"[..])],
        "a targeted message reaches only its recipient"
    );
    let piped = |from| {
        net.pipe_log
            .iter()
            .filter(|(.., r)| *r == PipeRecord::Data { from })
            .count()
    };
    assert_eq!(piped(ALICE), 20, "one pipe copy per message");
    assert_eq!(piped(CAROL), 1);
    let s0 = net.engines[0].stats();
    assert_eq!((s0.data_in, s0.data_out, s0.data_dropped), (20, 21, 0));
    assert_eq!((s0.data_members, s0.data_rooms), (2, 1));
}

#[test]
fn bad_frames_and_members_without_the_grant_are_refused_and_counted() {
    let mut net = room_over_two_workers();
    join(&mut net, 0, BOB, "a", false); // bob's grant is taken away
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![data::SEND],
        vec![data::DELIVER, 0, 0, 0, 0, 0, 1, b'p', 0],
        encode_send(TEXT, 1, "t", &[], &[0xc3]),
        encode_send(0x40, 1, "t", &[], b"x"),
        encode_send(0, 1, "t", &[], &vec![0; data::MAX_PAYLOAD + 1]),
    ];
    for frame in bad {
        net.command(
            0,
            Command::DataIn {
                member: ALICE,
                frame,
            },
        );
    }
    send(&mut net, 0, BOB, 1, &[], b"forbidden");
    send(&mut net, 0, MemberId(77), 1, &[], b"stranger");
    // Then a good one: the room carries on.
    send(&mut net, 0, ALICE, 9, &[], b"fine");
    let got = received(&net);
    assert_eq!(
        got.iter()
            .map(|(m, from, seq, _)| (*m, from.as_str(), *seq))
            .collect::<Vec<_>>(),
        [(BOB, "p1", 9), (CAROL, "p1", 9)]
    );
    let s0 = net.engines[0].stats();
    assert_eq!((s0.data_in, s0.data_dropped), (1, 8));
}

#[test]
fn a_plan_brings_back_a_lost_join_and_route_and_drops_a_stale_member() {
    let mut net = Net::new(2);
    join(&mut net, 1, MemberId(50), "a", true); // unknown to the control plane
                                                // The joins and routes were lost; the plans say what should be.
    for (w, members, other) in [(0, vec![ALICE], 1u16), (1, vec![CAROL], 0)] {
        net.command(
            w,
            Command::Reconcile(Plan {
                members: members
                    .into_iter()
                    .map(|member| DataMember {
                        member,
                        room: Arc::from("a"),
                        send: true,
                        peer: None,
                    })
                    .collect(),
                data_routes: vec![DataRoute {
                    room: "a".into(),
                    workers: vec![WorkerId(other)],
                    nodes: vec![],
                }],
                ..Plan::default()
            }),
        );
    }
    assert_eq!(net.engines[0].stats().repairs, 2);
    assert_eq!(net.engines[1].stats().repairs, 3);
    send(&mut net, 0, ALICE, 1, &[], b"hello");
    assert_eq!(
        received(&net)
            .iter()
            .map(|(m, from, ..)| (*m, from.as_str()))
            .collect::<Vec<_>>(),
        [(CAROL, "p1")]
    );
}

/// Alice (worker 0) and Carol (worker 1) have data channels on their publishing peers; Bob
/// (worker 1) has only his WebSocket. Each hears the others over its own transport.
#[test]
fn data_channels_and_websockets_exchange_messages_both_ways() {
    let mut net = Net::new(2);
    let alice = net.add_client("alice", 0);
    let carol = net.add_client("carol", 1);
    let members = [(alice, ALICE, 0), (carol, CAROL, 1)];
    for &(c, member, worker) in &members {
        let peer = net.client(c).peer;
        net.command(
            worker,
            Command::DataJoin(DataMember {
                member,
                room: "a".into(),
                send: true,
                peer: Some(peer),
            }),
        );
    }
    join(&mut net, 1, BOB, "a", true);
    for (w, other) in [(0, 1), (1, 0)] {
        net.command(
            w,
            Command::DataRoute(DataRoute {
                room: "a".into(),
                workers: vec![WorkerId(other)],
                nodes: vec![],
            }),
        );
    }
    net.open_data(alice);
    net.open_data(carol);
    net.connect(&[alice, carol]);
    net.run_until(
        std::time::Duration::from_secs(10),
        "the data channels open",
        |net| {
            [alice, carol]
                .iter()
                .all(|&c| net.client(c).channels_open.len() == 3)
        },
    );
    // The engine hears its channels open a little after the client: a message written
    // before then reaches its members over their WebSocket instead, never nowhere.
    net.run_for(std::time::Duration::from_millis(100));

    for seq in 0..10 {
        let frame = encode_send(RELIABLE, seq, "t", &[], &[seq as u8]);
        assert!(
            net.client_mut(alice).write_data(true, &frame),
            "alice writes {seq}"
        );
    }
    send(&mut net, 1, BOB, 100, &[ALICE], b"to alice");
    let lossy = encode_send(0, 7, "fast", &[BOB], b"lossy");
    assert!(net.client_mut(carol).write_data(false, &lossy));
    // A lossy message that keeps its order takes alice's third channel.
    net.command(
        1,
        Command::DataIn {
            member: BOB,
            frame: encode_send(ORDERED, 101, "t", &[ALICE], b"in order"),
        },
    );
    net.run_for(std::time::Duration::from_millis(500));

    let over_channel = |net: &Net, c: usize| -> Vec<(String, u32, Vec<u8>)> {
        net.client(c)
            .data
            .iter()
            .map(|f| {
                let d = parse_deliver(f).expect("a deliver frame");
                (d.from.to_string(), d.seq, d.payload.to_vec())
            })
            .collect()
    };
    let from_alice: Vec<(String, u32, Vec<u8>)> = (0..10)
        .map(|s| ("p1".to_string(), s, vec![s as u8]))
        .collect();
    assert_eq!(
        over_channel(&net, carol),
        from_alice,
        "carol: alice's, in order, by channel"
    );
    assert_eq!(
        over_channel(&net, alice),
        [
            ("p2".to_string(), 100, b"to alice".to_vec()),
            ("p2".to_string(), 101, b"in order".to_vec())
        ],
        "alice: bob's messages to her, by channel"
    );
    let ids = net.client(alice).channels.expect("alice's channels");
    assert_eq!(
        net.client(alice).data_channels,
        [ids[0], ids[2]],
        "the reliable one on the reliable channel, the lossy ordered one on the third"
    );
    let bob_got: Vec<(String, u32)> = received(&net)
        .into_iter()
        .filter(|(m, ..)| *m == BOB)
        .map(|(_, from, seq, _)| (from, seq))
        .collect();
    let mut want: Vec<(String, u32)> = (0..10).map(|s| ("p1".to_string(), s)).collect();
    want.push(("p3".to_string(), 7));
    assert_eq!(
        bob_got, want,
        "bob: alice's and carol's lossy one, by WebSocket"
    );
    assert!(
        received(&net).iter().all(|(m, ..)| *m == BOB),
        "members with open channels get nothing by WebSocket"
    );
}

/// A member over its rate: the rest of its burst is refused and counted, it hears so once
/// (not once per message), and a second later it sends again; the others' messages flow.
#[test]
fn a_member_over_its_rate_is_refused_and_told_once_a_second() {
    let mut net = room_over_two_workers();
    net.engines[0].set_data_rate(20);
    for seq in 0..50 {
        send(&mut net, 0, ALICE, seq, &[], b"flood");
    }
    send(&mut net, 0, BOB, 1, &[], b"calm");
    let refusals = |net: &Net| -> Vec<(MemberId, &'static str)> {
        net.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::DataRefused { member, code, .. } => Some((*member, *code)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(refusals(&net), [(ALICE, "rate_limited")]);
    let delivered = |net: &Net, from: &str| {
        received(net)
            .iter()
            .filter(|(m, f, ..)| *m == CAROL && f == from)
            .count()
    };
    assert_eq!(delivered(&net, "p1"), 20, "a second's worth passes");
    assert_eq!(delivered(&net, "p2"), 1, "bob is not held back by alice");
    let s = net.engines[0].stats();
    assert_eq!((s.data_rate_limited, s.data_dropped), (30, 30));

    net.run_for(std::time::Duration::from_secs(1));
    for seq in 50..60 {
        send(&mut net, 0, ALICE, seq, &[], b"later");
    }
    assert_eq!(delivered(&net, "p1"), 30, "a second later, it sends again");
    for seq in 60..100 {
        send(&mut net, 0, ALICE, seq, &[], b"flood again");
    }
    assert_eq!(
        refusals(&net).len(),
        2,
        "told again, a second after the first"
    );
}

/// Alice's data channel stops taking anything (every datagram to her is lost): once her
/// association's send buffer is full, the next reliable message for her is dropped and the
/// control plane hears it once, not once per message.
#[test]
fn a_data_channel_that_does_not_keep_up_is_reported_once() {
    let mut net = Net::new(1);
    let alice = net.add_client("alice", 0);
    let peer = net.client(alice).peer;
    net.command(
        0,
        Command::DataJoin(DataMember {
            member: ALICE,
            room: "a".into(),
            send: true,
            peer: Some(peer),
        }),
    );
    join(&mut net, 0, BOB, "a", true);
    net.open_data(alice);
    net.connect(&[alice]);
    net.run_until(
        std::time::Duration::from_secs(10),
        "alice's data channels open",
        |net| net.client(alice).channels_open.len() == 3,
    );
    net.run_for(std::time::Duration::from_millis(100));
    let addr = net.client(alice).addr;
    net.loss = Some(Box::new(move |d| d.destination == addr));
    let overflows = |net: &Net| {
        net.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::DataOverflow { member } if *member == ALICE))
            .count()
    };
    let mut seq = 0;
    while overflows(&net) == 0 {
        assert!(seq < 100, "no overflow after {seq} messages of 60 KB");
        send(&mut net, 0, BOB, seq, &[], &[0; 60_000]);
        seq += 1;
    }
    // More than 512 KiB went in before it filled.
    assert!(seq > 8, "full after {seq} messages");
    for more in 0..20 {
        send(&mut net, 0, BOB, seq + more, &[], &[0; 60_000]);
    }
    assert_eq!(overflows(&net), 1, "told once");
    assert!(net.engines[0].stats().data_dropped >= 20);
}

/// Two nodes of two workers each (and a relay worker each). Alice (node 1, worker 0), Bob
/// (node 1, worker 1), Carol (node 2, worker 0) and Erin (node 2, worker 1) are in room a;
/// Dave (node 2, worker 1) is in room b. A message crosses to the other node once, whatever
/// the number of its members there, and reaches them in order; targeted messages reach
/// their recipients only; a node's message for a room with no members here is dropped and
/// counted.
#[test]
fn messages_cross_nodes_once_and_reach_the_members_there_in_order() {
    const ERIN: MemberId = MemberId(5);
    let mut net = Net::cluster(2, 2);
    let (relay0, relay1) = (net.relay(0), net.relay(1));
    for (node, worker, member, room) in [
        (0, 0, ALICE, "a"),
        (0, 1, BOB, "a"),
        (1, 0, CAROL, "a"),
        (1, 1, ERIN, "a"),
        (1, 1, DAVE, "b"),
    ] {
        let e = net.engine(node, worker);
        join(&mut net, e, member, room, true);
    }
    // What the control planes tell each worker: the room's workers and, on the relay
    // worker, the other node.
    for node in 0..2 {
        let other = NodeId(2 - node as u32);
        for w in 0..3 {
            let e = net.engine(node, w);
            let nodes = if e == net.relay(node) {
                vec![other]
            } else {
                vec![]
            };
            net.command(
                e,
                Command::DataRoute(DataRoute {
                    room: "a".into(),
                    workers: (0..3).map(WorkerId).collect(),
                    nodes,
                }),
            );
        }
    }
    let (alice, carol, erin) = (net.engine(0, 0), net.engine(1, 0), net.engine(1, 1));
    for seq in 0..20 {
        send(&mut net, alice, ALICE, seq, &[], &[seq as u8]);
    }
    send(&mut net, carol, CAROL, 100, &[ALICE, DAVE], b"to alice");
    send(&mut net, erin, ERIN, 200, &[], b"from erin");

    let got = received(&net);
    let heard = |to: MemberId, from: &str| -> Vec<u32> {
        got.iter()
            .filter(|(m, f, ..)| *m == to && f == from)
            .map(|(_, _, seq, _)| *seq)
            .collect()
    };
    let all: Vec<u32> = (0..20).collect();
    for m in [BOB, CAROL, ERIN] {
        assert_eq!(heard(m, "p1"), all, "{m}: every message of alice, in order");
    }
    assert_eq!(heard(ALICE, "p3"), [100], "carol's targeted message");
    assert_eq!(heard(BOB, "p3"), Vec::<u32>::new());
    for m in [ALICE, BOB, CAROL] {
        assert_eq!(heard(m, "p5"), [200], "{m} hears erin");
    }
    assert!(got.iter().all(|(m, ..)| *m != DAVE), "never another room");
    let crossed = |net: &Net, from| {
        net.relay_log
            .iter()
            .filter(|(.., r)| *r == PipeRecord::Data { from })
            .count()
    };
    assert_eq!(
        crossed(&net, ALICE),
        20,
        "one copy per message to the other node"
    );
    assert_eq!((crossed(&net, CAROL), crossed(&net, ERIN)), (1, 1));
    assert_eq!(net.engines[relay1].stats().relay_dropped, 0);

    // Node 2's relay hears of a room it has no members of: dropped and counted.
    net.command(
        relay0,
        Command::DataRoute(DataRoute {
            room: "c".into(),
            workers: vec![],
            nodes: vec![NodeId(2)],
        }),
    );
    join(&mut net, alice, MemberId(9), "c", true);
    net.command(
        alice,
        Command::DataRoute(DataRoute {
            room: "c".into(),
            workers: vec![WorkerId(2)],
            nodes: vec![],
        }),
    );
    send(&mut net, alice, MemberId(9), 1, &[], b"nobody there");
    assert_eq!(crossed(&net, MemberId(9)), 1);
    assert_eq!(net.engines[relay1].stats().relay_dropped, 1);
}
