//! Sfumato as a benchmark target: the release binary started on loopback (optionally pinned
//! to CPUs with taskset), its forwarding counters read from `GET /api/workers`, and a
//! signaling-only WebSocket session per participant (docs/protocol.md) whose SDP work is done
//! by a caller-supplied peer.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct SfumatoOptions {
    pub bin: PathBuf,
    pub workers: usize,
    pub placement: &'static str,
    /// `taskset -c` CPU list for the server, e.g. "0".
    pub cpus: Option<String>,
    pub http_port: u16,
    pub rtc_port: u16,
    pub log: PathBuf,
    /// The server's `--bandwidth-estimation`.
    pub bandwidth_estimation: bool,
    /// A node of a cluster (`--redis`, `--public-url`, `--relay-port`), or a lone server.
    pub cluster: Option<ClusterNode>,
    /// More flags for the server.
    pub extra_args: Vec<String>,
}

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// `redis://127.0.0.1:PORT`.
    pub redis: String,
    /// UDP port of its relay to the other nodes.
    pub relay_port: u16,
}

pub struct SfumatoServer {
    child: Child,
    http: SocketAddr,
}

impl SfumatoServer {
    pub async fn start(opts: &SfumatoOptions) -> anyhow::Result<Self> {
        let http = SocketAddr::from(([127, 0, 0, 1], opts.http_port));
        let log = std::fs::File::create(&opts.log)
            .with_context(|| format!("creating {}", opts.log.display()))?;
        let mut cmd = match &opts.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&opts.bin);
                c
            }
            None => Command::new(&opts.bin),
        };
        cmd.arg("--listen")
            .arg(http.to_string())
            .arg("--rtc-port")
            .arg(opts.rtc_port.to_string())
            .arg("--workers")
            .arg(opts.workers.to_string())
            .arg("--placement")
            .arg(opts.placement)
            .arg("--bandwidth-estimation")
            .arg(opts.bandwidth_estimation.to_string());
        if let Some(c) = &opts.cluster {
            cmd.arg("--redis")
                .arg(&c.redis)
                .arg("--public-url")
                .arg(format!("http://{http}"))
                .arg("--relay-port")
                .arg(c.relay_port.to_string())
                // A cluster node that is full sends joins elsewhere: the one-node window of
                // `cluster` (1→60 in full) must stay on its node.
                .arg("--worker-capacity")
                .arg("1000");
        }
        cmd.args(&opts.extra_args);
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let server = SfumatoServer { child, http };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if reqwest::get(format!("http://{http}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "sfumato did not answer /healthz within 10 s (see {})",
                    opts.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id (taskset execs it, so this is sfumato itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// `http://HOST:PORT`, as its `--public-url` in a cluster.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `kill -9`: the process ends at once, its sockets with it; nothing is said to Redis
    /// or to the other nodes.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// Its exit status, if it has exited (a drained node exits by itself).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// `GET /api/nodes`.
    pub async fn nodes(&self) -> anyhow::Result<Value> {
        let v = reqwest::get(format!("http://{}/api/nodes", self.http))
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?;
        Ok(v)
    }

    /// `GET /api/workers`.
    pub async fn workers(&self) -> anyhow::Result<Value> {
        let v = reqwest::get(format!("http://{}/api/workers", self.http))
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?;
        Ok(v)
    }

    /// Packets forwarded so far, summed over the workers.
    pub async fn forwarded(&self) -> anyhow::Result<u64> {
        let v = self.workers().await?;
        let workers = v["workers"]
            .as_array()
            .ok_or_else(|| anyhow!("no workers in {v}"))?;
        Ok(workers
            .iter()
            .filter_map(|w| w["packets_forwarded"].as_u64())
            .sum())
    }
}

impl Drop for SfumatoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers a server's SDP offer (the subscribe PC): offer in, answer out.
pub type Answerer = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>> + Send + Sync,
>;

/// One participant's signaling socket. Dropping it closes the socket.
pub struct Session {
    out: mpsc::UnboundedSender<String>,
    publish_answers: mpsc::UnboundedReceiver<Value>,
    pub participant_id: String,
    /// The cluster's serving nodes as the server last listed them (`joined`, then `nodes`
    /// messages): their signaling URLs, `ws://HOST:PORT/ws`. Empty for a lone server.
    nodes: watch::Receiver<Vec<String>>,
    /// Turns true when the socket closes (the server went away or closed it).
    closed: watch::Receiver<bool>,
    /// The server's last `move` (its node drains).
    moves: watch::Receiver<Option<MoveAsked>>,
    /// What the subscribe PC carries, from the last `subscribe_offer`'s `tracks`.
    subscriptions: watch::Receiver<Vec<Subscription>>,
    /// The other participants' video tracks as the server announced them (`joined`,
    /// `track_published`).
    video_tracks: watch::Receiver<Vec<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // What was queued (a `leave`) still goes out: the writer task drains it.
        self.reader.abort();
    }
}

/// A `move` from the server (docs/protocol.md): its node drains, join at `ws_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveAsked {
    /// The other node's signaling URL (`ws://HOST:PORT/ws`).
    pub ws_url: String,
    /// When the message arrived.
    pub at: Instant,
}

/// One active m-line of the subscribe PC (a `subscribe_offer`'s `tracks` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub track: String,
    /// The publishing participant's id.
    pub participant: String,
    /// `audio` or `video`.
    pub kind: String,
}

/// The signaling URL (`ws://HOST:PORT/ws`) of a node's public HTTP URL; `None` unless it is
/// `http://` or `https://` (the SDK's `signalingUrl`, with our path).
pub fn ws_url_of(http_url: &str) -> Option<String> {
    let (scheme, rest) = http_url
        .strip_prefix("http://")
        .map(|r| ("ws", r))
        .or_else(|| http_url.strip_prefix("https://").map(|r| ("wss", r)))?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}/ws"))
}

/// The serving nodes' signaling URLs from a `nodes` field (docs/protocol.md).
pub fn node_ws_urls(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|n| n["state"].as_str().unwrap_or("serving") == "serving")
                .filter_map(|n| n["url"].as_str())
                .filter_map(ws_url_of)
                .collect()
        })
        .unwrap_or_default()
}

impl Session {
    /// Connects, joins `room` as `name`, and answers every `subscribe_offer` with `answerer`.
    pub async fn join(
        ws_url: &str,
        room: &str,
        name: &str,
        answerer: Answerer,
    ) -> anyhow::Result<Session> {
        Self::join_replacing(ws_url, room, name, None, answerer).await
    }

    /// [`Session::join`] of a client moving from its session `replaces` on another node
    /// (`join`'s `replaces`, after a `move`).
    pub async fn join_replacing(
        ws_url: &str,
        room: &str,
        name: &str,
        replaces: Option<&str>,
        answerer: Answerer,
    ) -> anyhow::Result<Session> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .with_context(|| format!("connecting {ws_url}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let (joined_tx, joined_rx) = oneshot::channel::<Value>();
        let (answers_tx, publish_answers) = mpsc::unbounded_channel::<Value>();
        let (nodes_tx, nodes) = watch::channel(Vec::new());
        let (closed_tx, closed) = watch::channel(false);
        let (moves_tx, moves) = watch::channel(None);
        let (subs_tx, subscriptions) = watch::channel(Vec::new());
        let (video_tx, video_tracks) = watch::channel(Vec::<String>::new());
        let add_video = move |t: &Value| {
            if t["kind"].as_str() == Some("video") {
                if let Some(id) = t["id"].as_str() {
                    video_tx.send_if_modified(|v| {
                        let new = !v.iter().any(|x| x == id);
                        if new {
                            v.push(id.to_string());
                        }
                        new
                    });
                }
            }
        };
        let reply = out.clone();
        let reader = tokio::spawn(async move {
            let mut joined_tx = Some(joined_tx);
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match v["type"].as_str() {
                    Some("joined") => {
                        nodes_tx.send_replace(node_ws_urls(&v["nodes"]));
                        for p in v["participants"].as_array().into_iter().flatten() {
                            for t in p["tracks"].as_array().into_iter().flatten() {
                                add_video(t);
                            }
                        }
                        if let Some(tx) = joined_tx.take() {
                            let _ = tx.send(v);
                        }
                    }
                    Some("nodes") => {
                        nodes_tx.send_replace(node_ws_urls(&v["nodes"]));
                    }
                    Some("track_published") => add_video(&v["track"]),
                    Some("publish_answer") => {
                        let _ = answers_tx.send(v);
                    }
                    Some("move") => {
                        // Like the SDK: only an http(s) URL is followed.
                        if let Some(ws_url) = v["url"].as_str().and_then(ws_url_of) {
                            moves_tx.send_replace(Some(MoveAsked {
                                ws_url,
                                at: Instant::now(),
                            }));
                        }
                    }
                    Some("subscribe_offer") => {
                        let subs: Vec<Subscription> = v["tracks"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| {
                                let s = |k: &str| t[k].as_str().map(str::to_string);
                                Some(Subscription {
                                    track: s("track")?,
                                    participant: s("participant")?,
                                    kind: s("kind")?,
                                })
                            })
                            .collect();
                        subs_tx.send_replace(subs);
                        let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                        match answerer(sdp).await {
                            Ok(answer) => {
                                let _ = reply.send(
                                    json!({"type": "subscribe_answer", "sdp": answer}).to_string(),
                                );
                            }
                            Err(e) => tracing::warn!("cannot answer a subscribe offer: {e:#}"),
                        }
                    }
                    Some("error") => {
                        tracing::warn!("sfumato error: {v}");
                        let _ = answers_tx.send(v);
                    }
                    _ => {}
                }
            }
            closed_tx.send_replace(true);
        });
        let mut join = json!({"type": "join", "v": 1, "room": room, "name": name});
        if let Some(old) = replaces {
            join["replaces"] = json!(old);
        }
        out.send(join.to_string())?;
        let joined = tokio::time::timeout(Duration::from_secs(10), joined_rx)
            .await
            .map_err(|_| anyhow!("no `joined` within 10 s"))??;
        let participant_id = joined["participant"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Session {
            out,
            publish_answers,
            participant_id,
            nodes,
            closed,
            moves,
            subscriptions,
            video_tracks,
            reader,
        })
    }

    /// The other participants' video tracks announced so far.
    pub fn video_tracks(&self) -> Vec<String> {
        self.video_tracks.borrow().clone()
    }

    /// Waits until at least one video track of another participant is announced; `None`
    /// after `timeout` or once the socket closed.
    pub async fn wait_video_tracks(&self, timeout: Duration) -> Option<Vec<String>> {
        let mut rx = self.video_tracks.clone();
        let got = tokio::time::timeout(timeout, rx.wait_for(|v| !v.is_empty())).await;
        match got {
            Ok(Ok(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// Asks for a simulcast layer of another participant's video track: `quality`
    /// (docs/protocol.md): `"low"`, `"medium"`, `"high"` or `"off"`.
    pub fn set_quality(&self, track: &str, quality: &str) {
        let _ = self
            .out
            .send(json!({"type": "quality", "track": track, "quality": quality}).to_string());
    }

    /// The serving nodes' signaling URLs, as the server last listed them.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.borrow().clone()
    }

    /// Whether the socket has closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Waits until the socket closes.
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Waits for the server's `move` (forever, if none comes).
    pub async fn wait_move(&self) -> MoveAsked {
        let mut rx = self.moves.clone();
        loop {
            if let Some(m) = rx.borrow_and_update().clone() {
                return m;
            }
            if rx.changed().await.is_err() {
                // The reader has stopped: no move will come.
                return std::future::pending().await;
            }
        }
    }

    /// What the subscribe PC carries now (the last `subscribe_offer`'s active m-lines).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.subscriptions.borrow().clone()
    }

    /// Sends the publish PC's offer and returns the server's answer.
    pub async fn publish(&mut self, offer: String) -> anyhow::Result<String> {
        self.out
            .send(json!({"type": "publish_offer", "sdp": offer}).to_string())?;
        let v = tokio::time::timeout(Duration::from_secs(10), self.publish_answers.recv())
            .await
            .map_err(|_| anyhow!("no `publish_answer` within 10 s"))?
            .ok_or_else(|| anyhow!("signaling closed"))?;
        match v["type"].as_str() {
            Some("publish_answer") => Ok(v["sdp"].as_str().unwrap_or_default().to_string()),
            _ => bail!("publish refused: {v}"),
        }
    }

    pub fn leave(&self) {
        let _ = self.out.send(json!({"type": "leave"}).to_string());
    }
}

/// The default path of the release binary, relative to the workspace root.
pub fn default_bin(root: &Path) -> PathBuf {
    root.join("target/release/sfumato")
}
