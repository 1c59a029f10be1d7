//! A cluster of Sfumato nodes coordinated through Redis (`--redis URL`): what is kept there,
//! how a node joins (its id and the cluster key), and the tasks that keep its lease and read
//! the others'. Redis is on the control path only: media between nodes crosses the relay,
//! and a Redis outage leaves live calls running (nothing is dropped for a lease that could
//! not be read).

mod drain;
pub mod members;
pub mod records;
mod sync;
pub mod topology;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sfumato_worker::sfumato_core::link::KEY_LEN;
use sfumato_worker::sfumato_core::NodeId;
use sfumato_worker::Member;
use tokio::sync::{mpsc, watch};

use crate::App;
use members::{Members, NodeInfo};

/// The keys and channels Sfumato uses in Redis.
pub mod keys {
    /// INCR: each node start takes the next id (never reused).
    pub const NODE_SEQ: &str = "sfumato:node-seq";
    /// The cluster key (hex), set by the first node unless `--cluster-secret` is given.
    pub const CLUSTER_KEY: &str = "sfumato:cluster-key";
    /// The set of node ids that may hold a lease.
    pub const NODES: &str = "sfumato:nodes";
    /// Where nodes announce changes (`room <name>`, `node <id>`).
    pub const EVENTS: &str = "sfumato:events";

    /// A node's lease.
    pub fn lease(id: u32) -> String {
        format!("sfumato:node:{id}")
    }

    /// A room's record: a hash with one field per node that holds some of it.
    pub fn room(name: &str) -> String {
        format!("sfumato:room:{name}")
    }
}

/// How long a Redis call may take before it counts as failed: a node must notice an
/// outage, not hang on it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// A node that joined: its connection, its id, and the cluster key.
pub struct Joined {
    pub client: redis::Client,
    pub con: ConnectionManager,
    pub id: NodeId,
    pub key: [u8; KEY_LEN],
    /// The cluster key as stored in Redis (`None`: derived from `--cluster-secret`, which
    /// never goes there).
    pub stored_key: Option<String>,
}

/// Connects to Redis (waiting for it if it is not up yet), takes a node id and the cluster
/// key: `secret` if given (hashed), else the one the first node stored.
pub async fn join(url: &str, secret: Option<&str>) -> anyhow::Result<Joined> {
    let client = redis::Client::open(url).with_context(|| format!("the Redis URL {url}"))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_max_delay(Duration::from_secs(1));
    let mut con = loop {
        match client
            .get_connection_manager_with_config(config.clone())
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("waiting for Redis at {url}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let id: u64 = redis::cmd("INCR")
        .arg(keys::NODE_SEQ)
        .query_async(&mut con)
        .await
        .context("taking a node id")?;
    let id = NodeId(u32::try_from(id).context("node ids ran out")?);
    let (key, stored_key) = match secret {
        Some(s) => (sha256(s.as_bytes()), None),
        None => {
            let mut fresh = [0u8; KEY_LEN];
            getrandom::fill(&mut fresh).context("random cluster key")?;
            let _: Option<String> = redis::cmd("SET")
                .arg(keys::CLUSTER_KEY)
                .arg(hex(&fresh))
                .arg("NX")
                .query_async(&mut con)
                .await
                .context("storing the cluster key")?;
            let stored: String = redis::cmd("GET")
                .arg(keys::CLUSTER_KEY)
                .query_async(&mut con)
                .await
                .context("reading the cluster key")?;
            let key = unhex(&stored).context("the cluster key in Redis is not 32 bytes of hex")?;
            (key, Some(stored))
        }
    };
    Ok(Joined {
        client,
        con,
        id,
        key,
        stored_key,
    })
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(d.as_ref());
    k
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The cluster as this node runs in it: its lease, the members as last read, and the tasks
/// that keep both and the rooms' records ([`Node::start`]).
pub struct Node {
    pub id: NodeId,
    con: ConnectionManager,
    client: redis::Client,
    /// The cluster key as stored in Redis, if it is kept there ([`Joined::stored_key`]).
    stored_key: Option<String>,
    /// This node's lease, as written at the last refresh.
    pub me: Mutex<NodeInfo>,
    pub members: Mutex<Members>,
    /// Nodes whose relay fell silent (`Report::NodeSilent`) and has not been heard since.
    silent: Mutex<HashSet<NodeId>>,
    /// The generation of this node's room records.
    gen: AtomicU64,
    /// Records read back that were refused (garbage, impostors).
    pub rejected: AtomicU64,
    /// Set once a drain started; `drained` turns true when it ended.
    draining: AtomicBool,
    drained: watch::Sender<bool>,
    /// How long a drain waits for its participants to move (`--drain-timeout`).
    pub drain_timeout: Duration,
}

/// How often this node rewrites and rereads the records of the rooms it follows, beyond the
/// changes it hears of (a lost notice, a lost write).
const ROOM_REFRESH: Duration = Duration::from_secs(2);
/// How long a room's record lives in Redis after its last write (every node in it rewrites
/// it every [`ROOM_REFRESH`]).
const ROOM_TTL: Duration = Duration::from_secs(30);
/// Sets the counter `KEYS[1]` to `ARGV[1]` if it is lower (or missing), atomically.
const RAISE_NODE_SEQ: &str = "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) \
     then redis.call('SET', KEYS[1], ARGV[1]) end";
/// How long a join waits for Redis to answer about a room this node does not follow yet.
const JOIN_WAIT: Duration = Duration::from_secs(10);

impl Node {
    pub fn new(joined: Joined, me: NodeInfo, drain_timeout: Duration) -> Arc<Node> {
        Arc::new(Node {
            id: joined.id,
            con: joined.con,
            client: joined.client,
            stored_key: joined.stored_key,
            me: Mutex::new(me),
            members: Mutex::new(Members::default()),
            silent: Mutex::new(HashSet::new()),
            gen: AtomicU64::new(1),
            rejected: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            drained: watch::Sender::new(false),
            drain_timeout,
        })
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live nodes, this one included, by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let me = Self::lock(&self.me).clone();
        let mut all: Vec<NodeInfo> = Self::lock(&self.members)
            .nodes
            .iter()
            .filter(|n| n.id != me.id)
            .cloned()
            .collect();
        all.push(me);
        all.sort_by_key(|n| n.id);
        all
    }

    /// The relay worker reported `node` silent (or heard again).
    pub fn relay_silent(&self, node: NodeId, silent: bool) {
        let mut s = Self::lock(&self.silent);
        if silent {
            s.insert(node);
        } else {
            s.remove(&node);
        }
    }

    /// Starts the tasks: the lease, the events, the rooms. `changed` carries the rooms whose
    /// part on this node changed.
    pub fn start(self: &Arc<Self>, app: App, changed: mpsc::UnboundedReceiver<String>) {
        tokio::spawn(self.clone().lease_loop(app.clone()));
        tokio::spawn(self.clone().events_loop(app.clone()));
        tokio::spawn(self.clone().rooms_loop(app, changed));
    }

    /// Every second: refresh this node's lease, read everyone's, tell the relay, and let go
    /// of nodes that are gone (no lease and a silent relay: a Redis outage alone, which
    /// makes leases unreadable, drops nobody).
    async fn lease_loop(self: Arc<Self>, app: App) {
        let mut con = self.con.clone();
        let mut tick = tokio::time::interval(members::LEASE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut known: HashSet<u32> = HashSet::new();
        let mut urls: Vec<(u32, String)> = Vec::new();
        loop {
            tick.tick().await;
            let me = {
                let state = app.state();
                let mut me = Self::lock(&self.me);
                me.participants = state.local_participants();
                me.rooms = state.followed_rooms().len();
                me.clone()
            };
            if let Err(e) = self.restore(&mut con).await {
                tracing::warn!("cannot restore the cluster's keys: {e}");
                continue;
            }
            if let Err(e) = members::refresh(&mut con, &me).await {
                tracing::warn!("cannot refresh this node's lease: {e}");
                continue;
            }
            let nodes = match members::read(&mut con).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("cannot read the cluster's leases: {e}");
                    continue;
                }
            };
            let others: Vec<Member> = nodes
                .iter()
                .filter(|n| n.id != me.id)
                .filter_map(|n| {
                    Some(Member {
                        node: n.node(),
                        relay: n.relay,
                        salt: n.salt_bytes()?,
                    })
                })
                .collect();
            app.pool.set_members(others);
            let live: HashSet<u32> = nodes.iter().map(|n| n.id).collect();
            {
                let mut m = Self::lock(&self.members);
                m.nodes = nodes.clone();
                m.read_at = Some(Instant::now());
            }
            // A node whose lease is gone, once its relay is silent too, has left.
            let silent = Self::lock(&self.silent).clone();
            let gone: Vec<u32> = known
                .iter()
                .copied()
                .filter(|id| !live.contains(id) && silent.contains(&NodeId(*id)))
                .collect();
            for id in &gone {
                known.remove(id);
                app.state().node_gone(NodeId(*id));
            }
            known.extend(live.iter().copied().filter(|id| *id != me.id));
            let now_urls: Vec<(u32, String)> =
                nodes.iter().map(|n| (n.id, n.url.clone())).collect();
            if now_urls != urls {
                urls = now_urls;
                app.state().announce_nodes(&self.nodes());
            }
        }
    }

    /// Writes again what a Redis that restarted empty lost and a node joining later needs:
    /// the node sequence, raised to at least this node's id (else the next node to start
    /// takes an id in use), and the cluster key (else it draws another one, and its relay
    /// cannot talk to this node's). Runs before each lease refresh, so that a node whose
    /// lease is visible has done it.
    async fn restore(&self, con: &mut ConnectionManager) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(RAISE_NODE_SEQ)
            .arg(1)
            .arg(keys::NODE_SEQ)
            .arg(self.id.0)
            .ignore();
        if let Some(key) = &self.stored_key {
            pipe.cmd("SET")
                .arg(keys::CLUSTER_KEY)
                .arg(key)
                .arg("NX")
                .ignore();
        }
        pipe.query_async::<()>(con).await
    }

    /// Hears the other nodes' notices of room changes and rereads those rooms.
    async fn events_loop(self: Arc<Self>, app: App) {
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if let Err(e) = pubsub.subscribe(keys::EVENTS).await {
                        tracing::warn!("cannot subscribe to the cluster's events: {e}");
                    } else {
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            let Ok(text) = msg.get_payload::<String>() else {
                                continue;
                            };
                            if text.strip_prefix("drain ").and_then(|id| id.parse().ok())
                                == Some(self.id.0)
                            {
                                let (node, app) = (self.clone(), app.clone());
                                tokio::spawn(async move {
                                    node.drain(&app, node.drain_timeout).await;
                                });
                            }
                            if let Some(room) = text.strip_prefix("room ") {
                                let followed =
                                    app.state().followed_rooms().iter().any(|r| r == room);
                                if followed {
                                    let _ = self.sync_room(&app, room, false).await;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("no pub/sub connection to Redis: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Writes this node's record of each room that changed here, and every few seconds
    /// rewrites and rereads all the rooms it follows.
    async fn rooms_loop(self: Arc<Self>, app: App, mut changed: mpsc::UnboundedReceiver<String>) {
        let mut tick = tokio::time::interval(ROOM_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Rooms whose write failed (Redis away): written again until it works.
        let mut pending: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                room = changed.recv() => {
                    let Some(room) = room else { return };
                    pending.insert(room);
                    while let Ok(more) = changed.try_recv() {
                        pending.insert(more);
                    }
                }
                _ = tick.tick() => {
                    app.state().drop_unfollowed();
                    let followed = app.state().followed_rooms();
                    pending.extend(followed);
                    let followed = app.state().followed_rooms();
                    for room in followed {
                        let _ = self.sync_room(&app, &room, false).await;
                    }
                }
            }
            let rooms: Vec<String> = pending.iter().cloned().collect();
            for room in rooms {
                if self.write_room(&app, &room).await.is_ok() {
                    pending.remove(&room);
                }
            }
        }
    }

    /// Writes this node's record of `room` (empty, with nobody of this node left in it),
    /// and tells the others.
    async fn write_room(&self, app: &App, room: &str) -> redis::RedisResult<()> {
        let gen = self.gen.fetch_add(1, Ordering::Relaxed);
        let Some(record) = app.state().room_record(room, gen) else {
            return Ok(());
        };
        let mut con = self.con.clone();
        let key = keys::room(room);
        let json = serde_json::to_string(&record).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(&key).arg(self.id.0).arg(json).ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ROOM_TTL.as_millis() as u64)
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(format!("room {room}"))
            .ignore();
        pipe.query_async::<()>(&mut con).await
    }

    /// Reads every node's record of `room` and applies the live others' to the state
    /// (`joining`: even if this node does not follow the room yet). Records of nodes without
    /// a lease are removed (when the leases were read lately); unreadable ones are refused
    /// and counted, and change nothing of what is known of their node.
    pub async fn sync_room(&self, app: &App, room: &str, joining: bool) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        let key = keys::room(room);
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut con)
            .await?;
        let (live, fresh): (HashSet<u32>, bool) = {
            let m = Self::lock(&self.members);
            let fresh = m
                .read_at
                .is_some_and(|t| t.elapsed() < 2 * members::LEASE_REFRESH);
            (m.nodes.iter().map(|n| n.id).collect(), fresh)
        };
        let mut remotes = Vec::new();
        let mut stale = Vec::new();
        for (field, json) in fields {
            let Ok(node) = field.parse::<u32>() else {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if node == self.id.0 {
                continue;
            }
            if !live.contains(&node) {
                stale.push(node);
                continue;
            }
            match records::parse(node, &json) {
                Ok(r) => remotes.push(r),
                Err(e) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(room, node, "a room record refused: {e}");
                }
            }
        }
        if fresh && !stale.is_empty() {
            redis::cmd("HDEL")
                .arg(&key)
                .arg(&stale)
                .query_async::<()>(&mut con)
                .await?;
        }
        app.state().apply_remote(room, &remotes, joining);
        Ok(())
    }

    /// Before a join into `room` that this node does not follow yet: learn who else is in it,
    /// waiting for Redis up to [`JOIN_WAIT`] (new joins wait while Redis is away; running
    /// calls do not).
    pub async fn prepare_room(&self, app: &App, room: &str) -> Result<(), String> {
        if app.state().followed_rooms().iter().any(|r| r == room) {
            return Ok(());
        }
        let deadline = Instant::now() + JOIN_WAIT;
        loop {
            match self.sync_room(app, room, true).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("the cluster's coordination is unreachable: {e}"))
                }
                Err(e) => {
                    tracing::warn!(room, "waiting for Redis before a join: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Asks node `id` to drain (through Redis: whichever node gets the request).
    pub async fn request_drain(&self, id: u32) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(format!("drain {id}"))
            .query_async::<()>(&mut con)
            .await
    }

    /// A clean exit: the lease goes at once.
    pub async fn leave(&self) {
        let mut con = self.con.clone();
        if let Err(e) = members::leave(&mut con, self.id.0).await {
            tracing::warn!("cannot remove this node's lease: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let k = [0xabu8; KEY_LEN];
        assert_eq!(unhex::<KEY_LEN>(&hex(&k)), Some(k));
        assert_eq!(unhex::<2>("zz00"), None);
        assert_eq!(unhex::<2>("abc"), None);
        assert_eq!(unhex::<2>("ééab"), None);
    }
}
