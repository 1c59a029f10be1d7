//! (5) A room across nodes: three real nodes and one `redis-server` on loopback. Media crosses
//! the relay byte for byte, a subscriber's layer request reaches the origin node, a killed
//! node's participants leave everywhere, a Redis restart leaves running calls running,
//! garbage in Redis or on a relay port is refused and counted, and a full or draining node
//! sends joins elsewhere.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sfumato_testkit::garbage::{datagrams, spray};
use sfumato_testkit::{
    http_post, msg_type, poll_until, whip_publish, Kind, Participant, Redis, ServerOptions,
    TestServer,
};

use crate::common::*;

/// Deadline for the cluster to notice a lost node: its lease (5 s TTL) expires and its relay
/// falls silent (3 s), read every second.
const NODE_LOSS: Duration = Duration::from_secs(15);
/// Longer than a lease lives (5 s) and than a room record is rewritten (2 s): what a Redis
/// outage could break, it would have broken by then.
const OUTAGE: Duration = Duration::from_secs(7);

/// Longer than media from a live publisher pauses on a busy machine (30 video frames/s).
const STALL: Duration = Duration::from_secs(2);

/// One Redis and its nodes, one media worker each.
struct Cluster {
    redis: Redis,
    nodes: Vec<TestServer>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let redis = Redis::start().await.must("starting redis-server");
        let mut c = Cluster {
            redis,
            nodes: Vec::new(),
        };
        for _ in 0..n {
            c.add_node().await;
        }
        c
    }

    /// Starts one more node and waits until every node lists them all.
    async fn add_node(&mut self) -> &TestServer {
        let node = TestServer::start(BIN, ServerOptions::cluster(1, &self.redis.url()))
            .await
            .must("starting a cluster node");
        self.nodes.push(node);
        let n = self.nodes.len();
        for node in &self.nodes {
            wait_nodes(node, n).await;
        }
        &self.nodes[n - 1]
    }
}

/// The `self` of `GET /api/nodes` (`n<id>`).
async fn node_id(node: &TestServer) -> String {
    let v = node.nodes().await.must("GET /api/nodes");
    v["self"]
        .as_str()
        .unwrap_or_else(|| panic!("GET /api/nodes: no self: {v}"))
        .to_string()
}

/// The ids of `GET /api/nodes`.
async fn live_nodes(node: &TestServer) -> Vec<String> {
    let v = node.nodes().await.must("GET /api/nodes");
    v["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /api/nodes: no nodes array: {v}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `node` lists `n` live nodes.
async fn wait_nodes(node: &TestServer, n: usize) {
    let deadline = Instant::now() + SIGNAL;
    loop {
        let live = live_nodes(node).await;
        if live.len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node on port {} lists {live:?} within {SIGNAL:?}, expected {n} nodes",
            node.http_port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/rooms/{room}` of `node`: (participant id, its node) for everyone listed.
async fn room_nodes(node: &TestServer, room: &str) -> Vec<(String, String)> {
    let Some(r) = node.room(room).await.must("GET /api/rooms/{room}") else {
        return Vec::new();
    };
    r["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /api/rooms/{room}: no participants array: {r}"))
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("node"))
        })
        .collect()
}

/// Waits until `node`'s `GET /api/rooms/{room}` lists exactly `expected` (id, node) pairs.
async fn wait_room(node: &TestServer, room: &str, expected: &[(String, String)], within: Duration) {
    let want: HashSet<&(String, String)> = expected.iter().collect();
    let deadline = Instant::now() + within;
    loop {
        let got = room_nodes(node, room).await;
        if got.len() == want.len() && got.iter().all(|p| want.contains(p)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node on port {}: GET /api/rooms/{room} lists {got:?} within {within:?}, expected \
             {expected:?}",
            node.http_port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay worker's entry of `GET /api/workers` (the one with `link` counters).
async fn relay_stats(node: &TestServer) -> Value {
    let w = node.workers_stats().await.must("GET /api/workers");
    w.iter()
        .find(|s| s.get("link").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("GET /api/workers: no relay worker (with `link`): {w:?}"))
}

/// Waits until `field` of `node`'s relay worker reads `value`.
async fn wait_relay(node: &TestServer, field: &str, value: u64) {
    let deadline = Instant::now() + SIGNAL;
    loop {
        let r = relay_stats(node).await;
        if r[field].as_u64() == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node on port {}: relay worker's {field} is not {value} within {SIGNAL:?}: {r}",
            node.http_port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for cleanup on every node at once (see [`assert_idle`]).
async fn all_idle(nodes: &[TestServer]) {
    futures_util::future::join_all(nodes.iter().map(assert_idle)).await;
}

/// Waits until `n` nodes listen to the cluster's notices (`sfumato:events`).
async fn wait_listeners(redis: &Redis, n: u64) {
    let deadline = Instant::now() + SIGNAL;
    loop {
        let (_, listening): (String, u64) = redis
            .cmd(&["PUBSUB", "NUMSUB", "sfumato:events"])
            .await
            .must("PUBSUB NUMSUB");
        if listening == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listening} nodes listen to sfumato:events within {SIGNAL:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `p` was told that `id` left.
async fn wait_left(p: &Participant, id: &str, within: Duration) {
    p.wait_event_since(0, within, |e| {
        msg_type(e) == "participant_left" && e["participant"] == id
    })
    .await
    .must("participant_left");
}

/// Whether `p` was ever told that `id` left.
fn told_left(p: &Participant, id: &str) -> bool {
    p.events_of("participant_left")
        .iter()
        .any(|e| e["participant"] == id)
}

/// Whether `count()` keeps growing throughout `span`; `Err(count)` if it stalled for
/// [`STALL`].
async fn flows_throughout(span: Duration, count: impl Fn() -> u64) -> Result<(), u64> {
    let end = Instant::now() + span;
    while Instant::now() < end {
        let before = count();
        if poll_until(STALL, || count() > before).await.is_err() {
            return Err(before);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test]
async fn cross_node_payloads_arrive_byte_identical() {
    let _g = serial().await;
    let c = Cluster::start(3).await;
    let (a, b, cn) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let room = "cl-fwd";
    let bob = Participant::join(&b.ws_url(), room, "bob")
        .await
        .must("bob joins node B");
    let carol = Participant::join(&cn.ws_url(), room, "carol")
        .await
        .must("carol joins node C");
    let mut alice = Participant::join(&a.ws_url(), room, "alice")
        .await
        .must("alice joins node A");
    let aid = alice.id();
    let others = &alice.joined().expect("joined")["participants"];
    for name in ["bob", "carol"] {
        assert!(
            others
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["name"] == name)),
            "alice's joined.participants should list {name}, who is on another node: {others}"
        );
    }
    alice.publish().await.must("alice publishes");
    alice
        .publisher()
        .expect("publisher")
        .wait_connected(CONNECT)
        .await
        .must("alice's publish PC connects");
    for sub in [&bob, &carol] {
        for kind in [Kind::Audio, Kind::Video] {
            sub.wait_subscribed(&aid, kind, CONNECT)
                .await
                .must("subscribed to alice's track on node A");
        }
    }
    for sub in [&bob, &carol] {
        wait_received_from(sub, &aid, Kind::Audio, 150).await;
        wait_received_from(sub, &aid, Kind::Video, 150).await;
    }
    let publisher = alice.publisher().expect("publisher");
    for (name, sub) in [("bob", &bob), ("carol", &carol)] {
        for kind in [Kind::Audio, Kind::Video] {
            assert_identical(
                &format!("{} alice (node A) -> {name}", kind.as_str()),
                &publisher.sent_of(kind),
                &sub.received_from(&aid, kind),
            );
        }
        let first = &sub.received_from(&aid, Kind::Video)[0];
        assert!(
            sfumato_testkit::media::vp8_payload_is_keyframe(&first.payload),
            "{name}'s first video packet is not the start of a key frame"
        );
        let counts = sub.subscriber().expect("subscribe PC").counts();
        assert_eq!(
            counts.received_unknown, 0,
            "{name}: packets on unmapped mids"
        );
    }

    // Every node lists the whole room, each participant with its node.
    let ids = [node_id(a).await, node_id(b).await, node_id(cn).await];
    let everyone = vec![
        (aid.clone(), ids[0].clone()),
        (bob.id(), ids[1].clone()),
        (carol.id(), ids[2].clone()),
    ];
    for node in &c.nodes {
        wait_room(node, room, &everyone, SIGNAL).await;
    }
    // One copy of each of alice's two tracks per node that receives it.
    wait_relay(a, "relayed_out", 4).await;
    wait_relay(b, "relayed_in", 2).await;
    wait_relay(cn, "relayed_in", 2).await;

    alice.leave().await.must("alice leaves");
    wait_left(&bob, &aid, SIGNAL).await;
    wait_left(&carol, &aid, SIGNAL).await;
    bob.leave().await.must("bob leaves");
    carol.leave().await.must("carol leaves");
    all_idle(&c.nodes).await;
    // Each node's record of the room says that nobody of it is there any more.
    let records: Vec<String> = c
        .redis
        .cmd(&["HVALS", &format!("sfumato:room:{room}")])
        .await
        .must("HVALS");
    for r in &records {
        let r: Value = serde_json::from_str(r).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(r["participants"], json!([]), "a record lists someone: {r}");
    }
}

/// Waits for a `layers` message to `publisher` (since `mark`) asking for `active` layers of
/// `track`.
async fn wait_demand(publisher: &Participant, mark: usize, track: &str, active: [bool; 3]) {
    publisher
        .wait_event_since(mark, SIGNAL, |e| {
            msg_type(e) == "layers" && e["track"] == track && e["active"] == json!(active)
        })
        .await
        .must("the publisher is asked for the layers the far subscriber needs");
}

#[tokio::test]
async fn a_layer_request_reaches_the_origin_node() {
    let _g = serial().await;
    let c = Cluster::start(2).await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let room = "cl-layers";
    let bob = Participant::join(&b.ws_url(), room, "bob")
        .await
        .must("bob joins node B");
    let mut alice = Participant::join(&a.ws_url(), room, "alice")
        .await
        .must("alice joins node A");
    let aid = alice.id();
    let tracks = alice.publish_simulcast().await.must("alice publishes");
    let video = track_id(&tracks, "video");
    let publisher = alice.publisher().expect("publisher");
    publisher
        .wait_connected(CONNECT)
        .await
        .must("alice's publish PC connects");
    wait_received_from(&bob, &aid, Kind::Video, 50).await;

    // Down: bob asks node B for the low layer; node A asks alice for the low layer alone
    // (after its hold of a second), and bob gets the low layer's payloads.
    let mark = alice.event_count();
    let q_requests = publisher.counts().sent_layers[0].keyframe_requests;
    bob.send_json(&json!({"type": "quality", "track": video, "quality": "low"}))
        .must("bob asks for the low layer");
    wait_demand(&alice, mark, &video, [true, false, false]).await;
    wait_layer(&bob, &alice, "q", "after quality low").await;
    assert!(
        publisher.counts().sent_layers[0].keyframe_requests > q_requests,
        "the switch to the low layer asked alice (on node A) for its key frame: {:?}",
        publisher.counts().sent_layers
    );

    // Up: every layer is asked of alice again at once, the top layer's key frame is asked
    // for, and bob gets the top layer.
    let mark = alice.event_count();
    let f_requests = publisher.counts().sent_layers[2].keyframe_requests;
    bob.send_json(&json!({"type": "quality", "track": video, "quality": "high"}))
        .must("bob asks for the high layer");
    wait_demand(&alice, mark, &video, [true, true, true]).await;
    wait_layer(&bob, &alice, "f", "after quality high").await;
    assert!(
        publisher.counts().sent_layers[2].keyframe_requests > f_requests,
        "the switch to the top layer asked alice (on node A) for its key frame: {:?}",
        publisher.counts().sent_layers
    );
    assert_eq!(
        bob.subscriber()
            .expect("subscribe PC")
            .counts()
            .received_unknown,
        0
    );
    alice.leave().await.must("alice leaves");
    bob.leave().await.must("bob leaves");
    all_idle(&c.nodes).await;
}

#[tokio::test]
async fn a_killed_node_leaves_every_room() {
    let _g = serial().await;
    let mut c = Cluster::start(3).await;
    let room = "cl-kill";
    let ids = [
        node_id(&c.nodes[0]).await,
        node_id(&c.nodes[1]).await,
        node_id(&c.nodes[2]).await,
    ];
    let bob = Participant::join(&c.nodes[1].ws_url(), room, "bob")
        .await
        .must("bob joins node B");
    let mut carol = Participant::join(&c.nodes[2].ws_url(), room, "carol")
        .await
        .must("carol joins node C");
    let mut alice = Participant::join(&c.nodes[0].ws_url(), room, "alice")
        .await
        .must("alice joins node A");
    let (aid, bid, cid) = (alice.id(), bob.id(), carol.id());
    alice.publish().await.must("alice publishes");
    carol.publish().await.must("carol publishes");
    for (sub, publ) in [(&bob, &aid), (&carol, &aid), (&bob, &cid)] {
        wait_received_from(sub, publ, Kind::Video, 25).await;
        wait_received_from(sub, publ, Kind::Audio, 25).await;
    }

    c.nodes[0].kill();
    let killed = Instant::now();
    wait_left(&bob, &aid, NODE_LOSS).await;
    wait_left(&carol, &aid, NODE_LOSS).await;
    let told = killed.elapsed();
    let rest = vec![(bid.clone(), ids[1].clone()), (cid.clone(), ids[2].clone())];
    for node in &c.nodes[1..] {
        wait_room(node, room, &rest, SIGNAL).await;
        let live = live_nodes(node).await;
        assert!(
            !live.contains(&ids[0]),
            "node A is still listed after its participants left: {live:?}"
        );
    }
    eprintln!("node A killed: its participant left everywhere after {told:?}");
    // Node B relays in carol's two tracks only; node C sends them to node B alone.
    wait_relay(&c.nodes[1], "relayed_in", 2).await;
    wait_relay(&c.nodes[2], "relayed_out", 2).await;
    wait_relay(&c.nodes[2], "relayed_in", 0).await;
    // The rest of the call carries on.
    assert_grows("carol -> bob after node A died", 25, || {
        bob.received_from(&cid, Kind::Video).len() as u64
    })
    .await;
    // Node A's record of the room goes once its lease has.
    let field = ids[0].trim_start_matches('n').to_string();
    let key = format!("sfumato:room:{room}");
    let deadline = Instant::now() + SIGNAL;
    loop {
        let there: u64 = c
            .redis
            .cmd(&["HEXISTS", &key, &field])
            .await
            .must("HEXISTS");
        if there == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node A's field of {key} is still in Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!told_left(&bob, &cid) && !told_left(&carol, &bid));
    carol.unpublish().await.must("carol unpublishes");
    bob.leave().await.must("bob leaves");
    carol.leave().await.must("carol leaves");
    all_idle(&c.nodes[1..]).await;
}

#[tokio::test]
async fn a_redis_restart_leaves_running_calls_running() {
    let _g = serial().await;
    let mut c = Cluster::start(2).await;
    let room = "cl-redis";
    let flow = Flow::across(&c.nodes[0], &c.nodes[1], room).await;
    let (bob, aid) = (&flow.bob, flow.alice_id.clone());
    let ids = [node_id(&c.nodes[0]).await, node_id(&c.nodes[1]).await];

    c.redis.kill();
    // Audio and video: the audio is never paused (a subscriber's video may be, while its
    // downlink estimate is below the track's bitrate).
    let media = || bob.received_count(Kind::Audio) + bob.received_count(Kind::Video);
    if let Err(n) = flows_throughout(OUTAGE, media).await {
        panic!(
            "alice -> bob while Redis is down: nothing for {STALL:?} after {n} packets \
             ({} of them video); node B's room: {:?}; relays: {} / {}",
            bob.received_count(Kind::Video),
            c.nodes[1].room(room).await,
            relay_stats(&c.nodes[0]).await,
            relay_stats(&c.nodes[1]).await,
        );
    }
    assert!(
        !told_left(bob, &aid) && !told_left(&flow.alice, &bob.id()),
        "a Redis outage made someone leave"
    );
    for node in &c.nodes {
        let live = live_nodes(node).await;
        assert_eq!(live.len(), 2, "nodes dropped during the outage: {live:?}");
    }

    // Redis returns, empty: the nodes write their leases and records again.
    c.redis.restart().await.must("restarting redis-server");
    let key = format!("sfumato:room:{room}");
    let deadline = Instant::now() + SIGNAL;
    loop {
        let members: Vec<String> = c
            .redis
            .cmd(&["SMEMBERS", "sfumato:nodes"])
            .await
            .must("SMEMBERS");
        let fields: Vec<String> = c.redis.cmd(&["HKEYS", &key]).await.must("HKEYS");
        let written = |set: &[String]| {
            ids.iter()
                .all(|id| set.iter().any(|m| m == id.trim_start_matches('n')))
        };
        if written(&members) && written(&fields) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart Redis holds nodes {members:?} and {key} fields {fields:?}, \
             expected both of {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A record lost from Redis (as a restart loses them all) is no news: node A rereads the
    // room without node B's record (once both nodes listen to the room notices again), and
    // bob stays, until node B writes it again.
    wait_listeners(&c.redis, 2).await;
    let field = ids[1].trim_start_matches('n');
    let _: u64 = c.redis.cmd(&["HDEL", &key, field]).await.must("HDEL");
    let heard: u64 = c
        .redis
        .cmd(&["PUBLISH", "sfumato:events", &format!("room {room}")])
        .await
        .must("PUBLISH");
    assert_eq!(heard, 2, "both nodes hear the notice");
    let deadline = Instant::now() + SIGNAL;
    loop {
        let there: u64 = c.redis.cmd(&["HEXISTS", &key, field]).await.must("HEXISTS");
        if there == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B did not write its record again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A node started after the restart joins the same cluster (an id of its own, the same
    // relay key), and its new participant receives alice from node A.
    let third = c.add_node().await;
    let third_id = node_id(third).await;
    assert!(
        !ids.contains(&third_id),
        "the node started after the restart took id {third_id}, already held by {ids:?}"
    );
    let carol = Participant::join(&third.ws_url(), room, "carol")
        .await
        .must("carol joins the new node");
    wait_received_from(&carol, &aid, Kind::Video, 25).await;
    wait_received_from(&carol, &aid, Kind::Audio, 25).await;
    flow.assert_flowing("alice -> bob after the restart").await;
    assert!(
        !told_left(bob, &aid) && !told_left(&flow.alice, &bob.id()),
        "Redis, restarted empty, made someone leave: alice heard {:?}, bob heard {:?}",
        flow.alice.events_of("participant_left"),
        bob.events_of("participant_left")
    );
    carol.leave().await.must("carol leaves");
    flow.leave().await;
    all_idle(&c.nodes).await;
}

#[tokio::test]
async fn garbage_in_redis_and_on_relay_ports_is_refused_and_counted() {
    let _g = serial().await;
    let c = Cluster::start(2).await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let room = "cl-bad";
    let flow = Flow::across(a, b, room).await;
    let (aid, bid) = (flow.alice_id.clone(), flow.bob.id());
    let ids = [node_id(a).await, node_id(b).await];
    let nb = ids[1].trim_start_matches('n');
    let rejected = |v: &Value| v["records_rejected"].as_u64().unwrap_or(0);
    let before = [
        rejected(&a.nodes().await.must("GET /api/nodes")),
        rejected(&b.nodes().await.must("GET /api/nodes")),
    ];

    // Room records that are no records, or that claim another node's participant, under a
    // field that is no node and under node B's own field (node B rewrites that one).
    let key = format!("sfumato:room:{room}");
    wait_listeners(&c.redis, 2).await;
    let impostor = json!({
        "node": nb.parse::<u32>().expect("numeric node id"),
        "gen": u64::MAX,
        "participants": [{"id": aid, "name": "mallory", "kind": "websocket", "worker": 0,
                          "tracks": []}],
        "wants": [],
    })
    .to_string();
    let bad: [(&str, &str); 4] = [
        ("junk", "{\"node\": 1}"),
        (nb, "not json at all"),
        (nb, "{\"node\": \"x\", \"participants\": 7}"),
        (nb, &impostor),
    ];
    for (field, value) in bad {
        let _: u64 = c
            .redis
            .cmd(&["HSET", &key, field, value])
            .await
            .must("HSET");
        let _: u64 = c
            .redis
            .cmd(&["PUBLISH", "sfumato:events", &format!("room {room}")])
            .await
            .must("PUBLISH");
    }
    // Node A reads every one of them (the published notice makes it reread the room) and
    // refuses them; node B refuses the one under a field that is no node.
    let deadline = Instant::now() + SIGNAL;
    loop {
        let now = [
            rejected(&a.nodes().await.must("GET /api/nodes")),
            rejected(&b.nodes().await.must("GET /api/nodes")),
        ];
        if now[0] >= before[0] + 2 && now[1] > before[1] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records_rejected went from {before:?} to {now:?} on nodes A and B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A field of a node that holds no lease is removed.
    let _: u64 = c
        .redis
        .cmd(&["HSET", &key, "999999", "{}"])
        .await
        .must("HSET");
    let deadline = Instant::now() + SIGNAL;
    loop {
        let there: u64 = c
            .redis
            .cmd(&["HEXISTS", &key, "999999"])
            .await
            .must("HEXISTS");
        if there == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a record of no live node stayed in {key}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node B's own record is its own again (it rewrites it every 2 s), and nothing of the
    // garbage was taken for the truth: nobody left, nobody named mallory joined.
    let deadline = Instant::now() + SIGNAL;
    loop {
        let mine: Option<String> = c.redis.cmd(&["HGET", &key, nb]).await.must("HGET");
        if mine.is_some_and(|r| r.contains(&bid)) {
            break;
        }
        assert!(Instant::now() < deadline, "node B never rewrote its record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flow.assert_flowing("alice -> bob after garbage in Redis")
        .await;
    let everyone = vec![(aid.clone(), ids[0].clone()), (bid.clone(), ids[1].clone())];
    for node in &c.nodes {
        wait_room(node, room, &everyone, SIGNAL).await;
    }
    assert!(
        !told_left(&flow.alice, &bid) && !told_left(&flow.bob, &aid),
        "garbage in Redis made someone leave: alice heard {:?}, bob heard {:?}",
        flow.alice.events_of("participant_left"),
        flow.bob.events_of("participant_left")
    );
    for p in [&flow.alice, &flow.bob] {
        assert!(
            !p.events_of("participant_joined")
                .iter()
                .any(|e| e["participant"]["name"] == "mallory"),
            "an impostor record was believed"
        );
    }

    // Datagrams from an address that is no member, at both relay ports: dropped, counted.
    let junk = datagrams(9, 100, &[], &[]);
    for node in [a, b] {
        let relay = node.relay_addr().expect("a cluster node has a relay port");
        let not_member = relay_stats(node).await["link"]["not_member"]
            .as_u64()
            .unwrap_or(0);
        let sent = spray(&[relay], &junk).expect("spraying the relay port") as u64;
        wait_link(node, "not_member", not_member + sent).await;
    }
    for node in [a, b] {
        let link = relay_stats(node).await["link"].clone();
        for field in ["forged", "replayed", "malformed"] {
            assert_eq!(
                link[field].as_u64(),
                Some(0),
                "node on port {}: genuine relay traffic counted as {field}: {link}",
                node.http_port
            );
        }
        assert!(
            node.healthy().await,
            "a node is unhealthy after the garbage"
        );
    }
    flow.assert_flowing("alice -> bob after garbage on the relay ports")
        .await;
    // And the nodes still take newcomers.
    let carol = Participant::join(&b.ws_url(), room, "carol")
        .await
        .must("carol joins node B");
    wait_received_from(&carol, &aid, Kind::Video, 25).await;
    carol.leave().await.must("carol leaves");
    flow.leave().await;
    all_idle(&c.nodes).await;
}

/// Waits until the relay link counter `field` of `node` reads `value`.
async fn wait_link(node: &TestServer, field: &str, value: u64) {
    let deadline = Instant::now() + SIGNAL;
    loop {
        let link = relay_stats(node).await["link"].clone();
        if link[field].as_u64() == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node on port {}: relay link's {field} is not {value} within {SIGNAL:?}: {link}",
            node.http_port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `join` on a fresh socket to `node` and returns the `error` it gets (panics on
/// `joined`).
async fn refused_join(node: &TestServer, room: &str, name: &str) -> Value {
    let p = Participant::connect(&node.ws_url())
        .await
        .must("connecting");
    p.send_json(&json!({"type": "join", "v": 1, "room": room, "name": name}))
        .must("sending join");
    let ev = p
        .wait_event_since(0, SIGNAL, |e| matches!(msg_type(e), "joined" | "error"))
        .await
        .must("an answer to join");
    assert_eq!(msg_type(&ev), "error", "{name} should be refused: {ev}");
    ev
}

/// Placement across nodes: a full node sends joins (WebSocket and WHIP) to the node that
/// takes them; a drained node asks its participant to move there, refuses newcomers the same
/// way, and exits once its participant left.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_or_draining_node_sends_joins_elsewhere() {
    let _g = serial().await;
    let redis = Redis::start().await.must("starting redis-server");
    // Node A takes one participant (one worker of capacity 1); node B fifty.
    let mut small = ServerOptions::cluster(1, &redis.url());
    small.extra_args = vec!["--worker-capacity".into(), "1".into()];
    let mut a = TestServer::start(BIN, small).await.must("starting node A");
    let b = TestServer::start(BIN, ServerOptions::cluster(1, &redis.url()))
        .await
        .must("starting node B");
    wait_nodes(&a, 2).await;
    wait_nodes(&b, 2).await;
    let (aid, bid) = (node_id(&a).await, node_id(&b).await);
    let room = "cl-place";

    let alice = Participant::join(&a.ws_url(), room, "alice")
        .await
        .must("alice joins node A");
    // A is full: bob is sent to B, the only node with room to spare.
    let err = refused_join(&a, room, "bob").await;
    assert_eq!(err["code"], "redirect", "{err}");
    assert_eq!(err["url"], b.url(""), "{err}");
    let bob = Participant::join(&b.ws_url(), room, "bob")
        .await
        .must("bob joins node B");
    // A WHIP client that posts to A follows the 307 to B.
    let cam = whip_publish(&a.url(&format!("/whip/{room}?name=cam")))
        .await
        .must("WHIP through the redirect");
    assert!(
        cam.location().starts_with(&b.url("/whip/")),
        "the session is on B: {}",
        cam.location()
    );
    let on_b = [(alice.id(), aid.clone()), (bob.id(), bid.clone())];
    let deadline = Instant::now() + SIGNAL;
    loop {
        let listed = room_nodes(&b, room).await;
        // alice on A; bob and the camera on B.
        let here = listed.iter().filter(|(_, n)| *n == bid).count();
        if listed.len() == 3 && here == 2 && on_b.iter().all(|p| listed.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B lists {listed:?}: expected alice on {aid}, bob and the camera on {bid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Drain A through B's API: alice is asked to move to B, newcomers are sent there.
    let res = http_post(&b.url(&format!("/api/nodes/{aid}/drain")), None, "")
        .await
        .must("POST drain");
    assert_eq!(res.status, 202, "{res:?}");
    let moved = alice
        .wait_event("move", SIGNAL)
        .await
        .must("alice told to move");
    assert_eq!(moved["url"], b.url(""), "{moved}");
    let err = refused_join(&a, room, "carol").await;
    assert_eq!(err["code"], "redirect", "{err}");
    assert_eq!(err["url"], b.url(""), "{err}");
    // Alice joins B as the SDK does, saying whom she replaces: bob hears it, so that an
    // application can show the two sessions as one.
    let mark = bob.event_count();
    let _alice_on_b = Participant::join_replacing(&b.ws_url(), room, "alice", &alice.id())
        .await
        .must("alice joins B");
    let joined = bob
        .wait_event_since(mark, SIGNAL, |e| {
            msg_type(e) == "participant_joined" && e["participant"]["name"] == "alice"
        })
        .await
        .must("bob hears of alice on B");
    assert_eq!(joined["participant"]["replaces"], alice.id(), "{joined}");
    // Once the old alice left, A exits on its own.
    alice.leave().await.must("alice leaves");
    poll_until(SIGNAL, || !a.is_running())
        .await
        .must("the drained node exits once empty");
    drop(bob);
    cam.close().await.must("closing the WHIP session");
}

/// Data messages cross nodes over the relay: alice is on node A over her WebSocket; bob
/// (data channels) and carol (WebSocket) are on node B. Messages larger than a datagram
/// arrive whole, in order, once, over each one's own transport; a targeted message reaches
/// its recipient only; nothing is left behind.
#[tokio::test]
async fn data_messages_cross_nodes_whole_and_in_order() {
    let _g = serial().await;
    let c = Cluster::start(2).await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let room = "cl-data";
    let alice = Participant::join(&a.ws_url(), room, "alice")
        .await
        .must("alice joins node A");
    let mut bob = Participant::join(&b.ws_url(), room, "bob")
        .await
        .must("bob joins node B");
    let carol = Participant::join(&b.ws_url(), room, "carol")
        .await
        .must("carol joins node B");
    bob.open_data().await.must("bob's data channels open");
    let (aid, bid, cid) = (alice.id(), bob.id(), carol.id());
    let ids = [node_id(a).await, node_id(b).await];
    let everyone = vec![
        (aid.clone(), ids[0].clone()),
        (bid.clone(), ids[1].clone()),
        (cid.clone(), ids[1].clone()),
    ];
    for node in &c.nodes {
        wait_room(node, room, &everyone, SIGNAL).await;
    }

    let body = |seq: u32| -> Vec<u8> {
        (0..16_000u32)
            .map(|i| (i.wrapping_mul(31) ^ seq) as u8)
            .collect()
    };
    // 320 kB at once: within the data channel's send buffer (512 KiB), which a burst
    // larger than it would overflow (the receiver would be told `data_overflow`).
    let n = 20;
    for seq in 0..n {
        alice
            .send_data(seq, true, "big", &[], &body(seq))
            .must("alice sends");
    }
    let want: Vec<(String, String, Vec<u8>)> = (0..n)
        .map(|s| (aid.clone(), "big".to_string(), body(s)))
        .collect();
    let from_alice = |events: Vec<Value>| -> Vec<(String, String, Vec<u8>)> {
        crate::data::messages(&events)
            .into_iter()
            .filter(|(f, ..)| *f == aid)
            .collect()
    };
    // Bob's node hears his channels open a little after he does: what it delivers before
    // then goes to his WebSocket, never nowhere.
    let bobs = || {
        let mut got = from_alice(bob.events());
        got.extend(from_alice(bob.data_over_channel()));
        got
    };
    let r = poll_until(SIGNAL, || {
        bobs().len() >= n as usize && from_alice(carol.events()).len() >= n as usize
    })
    .await;
    assert!(
        r.is_ok(),
        "bob has {} and carol {} of alice's {n} messages",
        bobs().len(),
        from_alice(carol.events()).len()
    );
    assert!(
        bobs() == want,
        "bob (node B): every message of alice whole, in order, once"
    );
    assert!(
        !from_alice(bob.data_over_channel()).is_empty(),
        "bob hears over his data channel"
    );
    assert!(
        from_alice(carol.events()) == want,
        "carol (WebSocket, node B): every message of alice whole, in order, once"
    );

    // Bob, over his channel, to alice alone; then to everyone: alice hears both in order,
    // carol only the second.
    bob.send_data_channel(1, true, "dm", &[aid.as_str()], b"for alice")
        .await
        .must("bob sends to alice");
    bob.send_data_channel(2, true, "all", &[], b"for all")
        .await
        .must("bob sends to all");
    let from_bob = |events: Vec<Value>| -> Vec<(String, Vec<u8>)> {
        crate::data::messages(&events)
            .into_iter()
            .filter(|(f, ..)| *f == bid)
            .map(|(_, t, p)| (t, p))
            .collect()
    };
    let r = poll_until(SIGNAL, || {
        from_bob(alice.events()).len() >= 2 && !from_bob(carol.events()).is_empty()
    })
    .await;
    assert!(r.is_ok(), "alice {:?}", from_bob(alice.events()));
    assert_eq!(
        from_bob(alice.events()),
        [
            ("dm".to_string(), b"for alice".to_vec()),
            ("all".to_string(), b"for all".to_vec())
        ]
    );
    assert_eq!(
        from_bob(carol.events()),
        [("all".to_string(), b"for all".to_vec())],
        "carol, on bob's node, never hears what was for alice"
    );
    let link = &relay_stats(a).await["link"];
    assert_eq!(link["data_refused"], 0, "{link}");

    for p in [alice, bob, carol] {
        p.leave().await.must("leaves");
    }
    all_idle(&c.nodes).await;
}
