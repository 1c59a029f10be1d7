//! Story: a worker thread dies under a running node (the control plane in process, the
//! workers' fault injection, real WebSocket and WHIP clients). Everyone placed on it is told
//! to reconnect and their sessions end; a WHIP session on it ends; the others carry on and
//! see them leave; `/healthz` fails and says why; joins land on the live worker; with no
//! live worker left, joining fails with a clear error.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sfumato_testkit::{http_get, msg_type, poll_until, whip_publish, Participant};
use sfumato_worker::sfumato_core::WorkerId;
use sfumato_worker::{Pool, PoolConfig};
use tokio::sync::watch;

use crate::placement::{Placement, Policy};

const WAIT: Duration = Duration::from_secs(10);

/// A node on loopback: its workers and its base URL.
struct Node {
    pool: Arc<Pool>,
    base: String,
    _shutdown: watch::Sender<bool>,
}

impl Node {
    async fn start(workers: usize) -> Node {
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        let (pool, deliveries) = Pool::start(&PoolConfig {
            workers,
            bind_ip: loopback,
            announce_ip: loopback,
            base_port: 0,
            bandwidth_estimation: false,
            data_rate: sfumato_worker::sfumato_core::bus::DEFAULT_RATE,
            relay: None,
        })
        .expect("workers start");
        let pool = Arc::new(pool);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let placement = Placement::new(Policy::Spread, workers, 100);
        let (router, _) = crate::control_plane(
            pool.clone(),
            deliveries,
            placement,
            shutdown,
            None,
            Arc::new(crate::auth::Auth::open()),
            Arc::new(crate::limits::Limits::new(Default::default())),
        );
        let listener = tokio::net::TcpListener::bind((loopback, 0))
            .await
            .expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Node {
            pool,
            base,
            _shutdown: shutdown_tx,
        }
    }

    fn ws(&self) -> String {
        format!("{}/ws", self.base.replacen("http", "ws", 1))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = http_get(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        (r.status, r.body)
    }

    /// `GET /api/rooms/{room}`: participant id → worker.
    async fn placed(&self, room: &str) -> Vec<(String, u64)> {
        let (_, body) = self.get(&format!("/api/rooms/{room}")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mut out: Vec<(String, u64)> = v["participants"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let id = p["id"].as_str().unwrap_or_default().to_string();
                        (id, p["worker"].as_u64().unwrap_or(u64::MAX))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

async fn join(node: &Node, name: &str) -> Participant {
    Participant::join(&node.ws(), "r", name)
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e:#}"))
}

/// Waits for `who` to be told to reconnect and for the server to close its socket.
async fn sent_away(who: &Participant, name: &str) {
    let msg = who
        .wait_event("reconnect", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(
        msg["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{name}: a reason: {msg}"
    );
    let closed = poll_until(WAIT, || who.is_closed()).await;
    assert!(closed.is_ok(), "{name}: the server closes the socket");
}

/// Waits for `who` to hear that `gone` left.
async fn saw_leave(who: &Participant, gone: &str) {
    who.wait_event_since(0, WAIT, |e| {
        msg_type(e) == "participant_left" && e["participant"] == gone
    })
    .await
    .unwrap_or_else(|e| panic!("participant_left {gone}: {e:#}"));
}

/// A round trip on `who`'s socket: everything the server queued for it before is in.
async fn round_trip(who: &Participant) {
    let mark = who.event_count();
    who.send_json(&serde_json::json!({"type": "ping"}))
        .expect("socket open");
    who.wait_event_since(mark, WAIT, |e| msg_type(e) == "pong")
        .await
        .expect("pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_on_a_dead_worker_are_told_to_reconnect() {
    let node = Node::start(2).await;
    // Spread placement: bob on worker 0, alice on 1, the WHIP publisher on 0.
    let mut bob = join(&node, "bob").await;
    let alice = join(&node, "alice").await;
    bob.publish().await.expect("bob publishes");
    let whip = whip_publish(&format!("{}/whip/r?name=cam", node.base))
        .await
        .expect("WHIP publishes");
    let (bob_id, alice_id) = (bob.id(), alice.id());
    // The WHIP session's Location holds a token, not its participant id: alice hears of it.
    let cam_id = alice
        .wait_event_since(0, WAIT, |e| {
            msg_type(e) == "participant_joined" && e["participant"]["name"] == "cam"
        })
        .await
        .expect("alice hears of the WHIP publisher")["participant"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut placed = vec![
        (alice_id.clone(), 1),
        (bob_id.clone(), 0),
        (cam_id.clone(), 0),
    ];
    placed.sort();
    assert_eq!(node.placed("r").await, placed);
    assert_eq!(node.get("/healthz").await, (200, "ok".into()));

    node.pool.fail_worker(WorkerId(0));

    sent_away(&bob, "bob").await;
    saw_leave(&alice, &bob_id).await;
    saw_leave(&alice, &cam_id).await;
    round_trip(&alice).await;
    assert!(
        alice.events_of("reconnect").is_empty() && !alice.is_closed(),
        "alice, on the live worker, stays"
    );
    assert_eq!(node.placed("r").await, vec![(alice_id.clone(), 1)]);
    // The WHIP session is over: its resource is gone.
    assert_eq!(whip.close().await.expect("DELETE"), 404);

    let (status, why) = node.get("/healthz").await;
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains("worker 0 died") && why.contains("injected failure"),
        "{why}"
    );
    let (_, workers) = node.get("/api/workers").await;
    let workers: Value = serde_json::from_str(&workers).expect("JSON");
    assert_eq!(workers["workers"][0]["alive"], false, "{workers}");
    assert_eq!(workers["workers"][1]["alive"], true, "{workers}");
    let (_, metrics) = node.get("/metrics").await;
    for line in [
        "sfumato_worker_up{worker=\"0\"} 0",
        "sfumato_worker_up{worker=\"1\"} 1",
        "sfumato_workers_dead 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "/metrics has {line}");
    }

    // Bob comes back, as the SDK does at once: the live worker takes him.
    let bob = join(&node, "bob").await;
    let mut placed = vec![(alice_id.clone(), 1), (bob.id(), 1)];
    placed.sort();
    assert_eq!(node.placed("r").await, placed);

    // The last worker dies: nobody is left, and nobody can join.
    node.pool.fail_worker(WorkerId(1));
    sent_away(&alice, "alice").await;
    sent_away(&bob, "bob").await;
    let refused = Participant::join(&node.ws(), "r", "carol")
        .await
        .expect_err("no worker to join");
    assert!(
        format!("{refused:#}").contains("unavailable"),
        "{refused:#}"
    );
    let (status, why) = node.get("/healthz").await;
    assert_eq!(status, 503);
    assert!(why.contains("worker 1 died"), "{why}");
}
