//! Data messages over the signaling WebSocket (docs/protocol.md "Data messages"): three
//! participants of a room spread over two workers, none publishing media, exchange broadcast
//! and targeted messages stamped with their sender, in order; a participant of another room
//! hears nothing even when named; bad frames get an error and the room carries on; nothing
//! is left behind.

use serde_json::Value;
use sfumato_testkit::{msg_type, Participant};

use crate::common::*;

/// The `data` messages `p` received since `mark` from `from`, as (topic, payload).
fn data_from(p: &Participant, mark: usize, from: &str) -> Vec<(String, Vec<u8>)> {
    let events: Vec<Value> = p.events().into_iter().skip(mark).collect();
    messages(&events)
        .into_iter()
        .filter(|(f, ..)| f == from)
        .map(|(_, topic, payload)| (topic, payload))
        .collect()
}

async fn wait_data(p: &Participant, mark: usize, from: &str, n: usize, what: &str) {
    let r = sfumato_testkit::poll_until(SIGNAL, || data_from(p, mark, from).len() >= n).await;
    assert!(
        r.is_ok(),
        "{what}: {} of {n} messages from {from}; events {:?}",
        data_from(p, mark, from).len(),
        p.events().into_iter().skip(mark).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn data_messages_reach_the_room_across_workers_stamped_and_in_order() {
    let _serial = serial().await;
    let server = start(2).await;
    let url = server.ws_url();
    let alice = Participant::join(&url, "d", "alice")
        .await
        .must("alice joins");
    let bob = Participant::join(&url, "d", "bob").await.must("bob joins");
    let carol = Participant::join(&url, "d", "carol")
        .await
        .must("carol joins");
    let dave = Participant::join(&url, "other", "dave")
        .await
        .must("dave joins");
    let (a, b, c, d) = (alice.id(), bob.id(), carol.id(), dave.id());
    // Spread placement: alice and carol on one worker, bob on the other.
    assert_ne!(
        worker_of(&server, "d", &a).await,
        worker_of(&server, "d", &b).await
    );

    // Broadcast, in order, to both workers.
    let n = 50;
    for seq in 0..n {
        alice
            .send_data(seq, true, "chat", &[], format!("m{seq}").as_bytes())
            .must("send");
    }
    for (who, p) in [("bob", &bob), ("carol", &carol)] {
        wait_data(p, 0, &a, n as usize, who).await;
        let got = data_from(p, 0, &a);
        let want: Vec<(String, Vec<u8>)> = (0..n)
            .map(|s| ("chat".into(), format!("m{s}").into_bytes()))
            .collect();
        assert_eq!(got, want, "{who}: every message from alice, in order");
    }

    // Targeted: bob names carol and dave (another room); only carol hears it. Then a
    // broadcast from bob, which alice receives after the targeted one would have reached
    // her had it been for her (one worker, one order).
    let mark = [alice.event_count(), carol.event_count(), dave.event_count()];
    bob.send_data(1, true, "dm", &[c.as_str(), d.as_str()], b"for carol")
        .must("send");
    bob.send_data(2, false, "all", &[], b"for all").must("send");
    wait_data(&carol, mark[1], &b, 2, "carol").await;
    assert_eq!(
        data_from(&carol, mark[1], &b),
        [
            ("dm".into(), b"for carol".to_vec()),
            ("all".into(), b"for all".to_vec())
        ]
    );
    wait_data(&alice, mark[0], &b, 1, "alice").await;
    assert_eq!(
        data_from(&alice, mark[0], &b),
        [("all".into(), b"for all".to_vec())]
    );
    // Dave's room: a message there proves that his socket delivers, and nothing of bob's
    // came before it.
    let dave2 = Participant::join(&url, "other", "dave2")
        .await
        .must("dave2 joins");
    dave2.send_data(1, true, "t", &[], b"x").must("send");
    wait_data(&dave, mark[2], &dave2.id(), 1, "dave").await;
    assert!(
        data_from(&dave, mark[2], &b).is_empty(),
        "dave hears nothing of room d"
    );

    // A stamped sender cannot be forged: the frame has no sender field at all, and a frame
    // of the wrong direction (a deliver frame claiming to be from bob) is refused.
    let mark = alice.event_count();
    let mut forged = vec![0x02, 0x01, 0, 0, 0, 1, b.len() as u8];
    forged.extend_from_slice(b.as_bytes());
    forged.extend_from_slice(&[0, b'x']);
    carol.send_binary(forged).must("send");
    let e = carol
        .wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "error" && e["code"] == "bad_data"
        })
        .await
        .must("carol's forged frame is refused");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("type")),
        "{e}"
    );
    carol.send_data(9, true, "t", &[], b"after").must("send");
    wait_data(&alice, mark, &c, 1, "alice after the forged frame").await;
    assert!(
        data_from(&alice, mark, &b).is_empty(),
        "nothing arrived as bob's"
    );

    // Too large: refused with `too_large`, the socket stays.
    let mark = alice.event_count();
    let big = vec![0u8; sfumato_worker::sfumato_core::data::MAX_PAYLOAD + 1];
    alice.send_data(10, true, "t", &[], &big).must("send");
    alice
        .wait_event_since(mark, SIGNAL, |e| {
            msg_type(e) == "error" && e["code"] == "too_large"
        })
        .await
        .must("an oversized message is refused");
    alice.send_data(11, true, "t", &[], b"small").must("send");
    wait_data(&bob, 0, &a, n as usize + 1, "bob after the oversized one").await;

    for p in [alice, bob, carol, dave, dave2] {
        p.leave().await.must("leave");
    }
    assert_idle(&server).await;
    // Counted once per message read, once per delivery; the refused frames never reached
    // a worker.
    let workers = server.workers_stats().await.must("GET /api/workers");
    let sum = |k: &str| -> u64 { workers.iter().filter_map(|w| w[k].as_u64()).sum() };
    assert_eq!(
        (sum("data_in"), sum("data_out"), sum("data_dropped")),
        (55, 108, 0),
        "{workers:?}"
    );
}

/// (from, topic, payload) of `data` events.
pub(crate) fn messages(events: &[Value]) -> Vec<(String, String, Vec<u8>)> {
    events
        .iter()
        .filter(|e| msg_type(e) == "data")
        .map(|e| {
            let payload = e["payload"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|b| b as u8)
                        .collect()
                })
                .unwrap_or_default();
            (
                e["from"].as_str().unwrap_or_default().to_string(),
                e["topic"].as_str().unwrap_or_default().to_string(),
                payload,
            )
        })
        .collect()
}

/// Alice has data channels (a publish PC with `m=application` alone), Bob only his socket,
/// on another worker: each hears the other, in order, over his own transport.
#[tokio::test]
async fn data_channels_and_a_websocket_exchange_messages_both_ways() {
    let _serial = serial().await;
    let server = start(2).await;
    let url = server.ws_url();
    let mut alice = Participant::join(&url, "d", "alice")
        .await
        .must("alice joins");
    let bob = Participant::join(&url, "d", "bob").await.must("bob joins");
    let (a, b) = (alice.id(), bob.id());
    assert_ne!(
        worker_of(&server, "d", &a).await,
        worker_of(&server, "d", &b).await
    );
    alice
        .open_data()
        .await
        .must("alice opens her data channels");

    // The server delivers to alice over her channels once it has seen them open: until
    // the first of bob's messages arrives there, his messages may still come by socket.
    let mut probe = 0;
    sfumato_testkit::poll_until(SIGNAL, || {
        probe += 1;
        let _ = bob.send_data(probe, true, "probe", &[], b"?");
        !alice.data_over_channel().is_empty()
    })
    .await
    .must("bob's messages reach alice's data channel");
    let mark = alice.event_count();

    let n = 30;
    for seq in 0..n {
        alice
            .send_data_channel(seq, true, "a2b", &[], format!("a{seq}").as_bytes())
            .await
            .must("alice writes");
        bob.send_data(seq, true, "b2a", &[&a], format!("b{seq}").as_bytes())
            .must("bob sends");
    }
    wait_data(&bob, 0, &a, n as usize, "bob").await;
    let want_a: Vec<(String, Vec<u8>)> = (0..n)
        .map(|s| ("a2b".into(), format!("a{s}").into_bytes()))
        .collect();
    assert_eq!(
        data_from(&bob, 0, &a),
        want_a,
        "bob: alice's messages, in order (loopback loses none)"
    );
    let r = sfumato_testkit::poll_until(SIGNAL, || {
        messages(&alice.data_over_channel())
            .iter()
            .filter(|(_, topic, _)| topic == "b2a")
            .count()
            >= n as usize
    })
    .await;
    assert!(
        r.is_ok(),
        "alice: {:?}",
        messages(&alice.data_over_channel())
    );
    let got: Vec<(String, String, Vec<u8>)> = messages(&alice.data_over_channel())
        .into_iter()
        .filter(|(_, topic, _)| topic == "b2a")
        .collect();
    let want_b: Vec<(String, String, Vec<u8>)> = (0..n)
        .map(|s| (b.clone(), "b2a".into(), format!("b{s}").into_bytes()))
        .collect();
    assert_eq!(got, want_b, "alice: bob's messages, in order, by channel");
    assert!(
        data_from(&alice, mark, &b).is_empty(),
        "nothing comes by socket once the channels carry it"
    );
    // The lossy channel: unordered, so only arrival is checked (loopback loses nothing).
    let mark = bob.event_count();
    for seq in 0..5 {
        alice
            .send_data_channel(100 + seq, false, "lossy", &[&b], &[seq as u8])
            .await
            .must("alice writes lossy");
    }
    wait_data(&bob, mark, &a, 5, "bob, lossy").await;
    let mut lossy: Vec<Vec<u8>> = data_from(&bob, mark, &a)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    lossy.sort();
    assert_eq!(lossy, (0..5u8).map(|s| vec![s]).collect::<Vec<_>>());
    assert!(
        bob.events_of("data")
            .iter()
            .skip(n as usize)
            .all(|e| e["reliable"] == false),
        "marked lossy as sent"
    );

    for p in [alice, bob] {
        p.leave().await.must("leave");
    }
    assert_idle(&server).await;
}

/// One participant floods data messages: it is held to its rate and told so; the room's
/// other messages keep flowing; the refusals are counted.
#[tokio::test]
async fn a_data_flood_is_paced_and_the_room_carries_on() {
    let _serial = serial().await;
    let server = start(2).await;
    let url = server.ws_url();
    let mallory = Participant::join(&url, "f", "mallory")
        .await
        .must("mallory joins");
    let alice = Participant::join(&url, "f", "alice")
        .await
        .must("alice joins");
    let bob = Participant::join(&url, "f", "bob").await.must("bob joins");
    let (m, a) = (mallory.id(), alice.id());
    // Far over a second's worth (500) at once.
    for seq in 0..2000 {
        mallory
            .send_data(seq, false, "flood", &[], b"x")
            .must("send");
    }
    mallory
        .wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "error" && e["code"] == "rate_limited"
        })
        .await
        .must("mallory hears rate_limited");
    alice
        .send_data(1, true, "t", &[], b"still here")
        .must("send");
    wait_data(&bob, 0, &a, 1, "bob, after the flood").await;
    let from_mallory = data_from(&bob, 0, &m).len();
    assert!(
        (1..2000).contains(&from_mallory),
        "bob got {from_mallory} of mallory's 2000: some, not all"
    );
    let workers = server.workers_stats().await.must("GET /api/workers");
    let limited: u64 = workers
        .iter()
        .filter_map(|w| w["data_rate_limited"].as_u64())
        .sum();
    assert!(limited > 0, "refusals counted: {workers:?}");
    for p in [mallory, alice, bob] {
        p.leave().await.must("leave");
    }
    assert_idle(&server).await;
}
