//! Who is in the cluster: each node holds a lease in Redis (a key with a TTL of a few seconds,
//! refreshed every second) describing it, and reads everyone's. A node is a member while its
//! lease is there; what a node does when a lease disappears is the caller's business (a
//! Redis outage makes every lease unreadable, which must not end live calls).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sfumato_worker::sfumato_core::link::KEY_LEN;
use sfumato_worker::sfumato_core::NodeId;

use super::keys;

/// How long a lease lives without a refresh.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a node refreshes its lease and reads everyone's.
pub const LEASE_REFRESH: Duration = Duration::from_secs(1);

/// Whether a node takes new participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Serving,
    Draining,
}

/// What a node's lease says of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u32,
    /// Where browsers reach its HTTP (signaling, WHIP/WHEP, the demo page).
    pub url: String,
    /// Its relay socket.
    pub relay: SocketAddr,
    /// Its start's salt (hex), from which the others derive its relay key.
    pub salt: String,
    pub version: String,
    pub state: NodeState,
    pub participants: usize,
    pub rooms: usize,
    /// Participants it takes before it counts as full.
    pub capacity: usize,
}

impl NodeInfo {
    pub fn node(&self) -> NodeId {
        NodeId(self.id)
    }

    /// The salt as bytes (`None` if the lease holds no valid one).
    pub fn salt_bytes(&self) -> Option<[u8; KEY_LEN]> {
        super::unhex(&self.salt)
    }

    /// Load as a share of capacity, for placement.
    pub fn load(&self) -> f64 {
        self.participants as f64 / self.capacity.max(1) as f64
    }
}

/// The members as last read, and when Redis last answered.
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub nodes: Vec<NodeInfo>,
    /// When a full read last succeeded (`None`: never): while Redis is away this grows
    /// old, and a missing lease means nothing.
    pub read_at: Option<Instant>,
}

impl Members {
    pub fn get(&self, node: NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == node.0)
    }
}

/// Writes `me`'s lease.
pub async fn refresh(con: &mut ConnectionManager, me: &NodeInfo) -> redis::RedisResult<()> {
    let json = serde_json::to_string(me).unwrap_or_default();
    redis::pipe()
        .cmd("SET")
        .arg(keys::lease(me.id))
        .arg(json)
        .arg("PX")
        .arg(LEASE_TTL.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(keys::NODES)
        .arg(me.id)
        .ignore()
        .query_async::<()>(con)
        .await
}

/// Reads every live lease; forgets the ids whose lease expired. Garbage in a lease (not
/// JSON, a lease under another id) is skipped and logged, never trusted.
pub async fn read(con: &mut ConnectionManager) -> redis::RedisResult<Vec<NodeInfo>> {
    let ids: Vec<u32> = redis::cmd("SMEMBERS")
        .arg(keys::NODES)
        .query_async(con)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let leases: Vec<Option<String>> = redis::cmd("MGET")
        .arg(ids.iter().map(|id| keys::lease(*id)).collect::<Vec<_>>())
        .query_async(con)
        .await?;
    let mut nodes = Vec::new();
    let mut gone = Vec::new();
    for (id, lease) in ids.into_iter().zip(leases) {
        match lease.map(|l| serde_json::from_str::<NodeInfo>(&l)) {
            None => gone.push(id),
            Some(Ok(n)) if n.id == id => nodes.push(n),
            Some(Ok(n)) => tracing::warn!(id, claims = n.id, "a lease that names another node"),
            Some(Err(e)) => tracing::warn!(id, "an unreadable lease: {e}"),
        }
    }
    if !gone.is_empty() {
        redis::cmd("SREM")
            .arg(keys::NODES)
            .arg(&gone)
            .query_async::<()>(con)
            .await?;
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// Removes `id`'s lease at once (a clean exit: the others need not wait for it to expire).
pub async fn leave(con: &mut ConnectionManager, id: u32) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("DEL")
        .arg(keys::lease(id))
        .ignore()
        .cmd("SREM")
        .arg(keys::NODES)
        .arg(id)
        .ignore()
        .query_async::<()>(con)
        .await
}
