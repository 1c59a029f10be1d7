//! A participant speaking the WebSocket signaling protocol (docs/protocol.md): a publish PC
//! it offers, and a subscribe PC created on the first `subscribe_offer` and answered
//! automatically.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfumato_core::data;
use sfumato_core::MemberId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::peer::{Kind, OfferSpec, Peer, PeerOptions, ReceivedPacket};
use crate::wait::{poll_for, poll_until};

/// Default deadline of the signaling round trips.
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A track published by this participant (from `publish_answer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// Track id.
    pub id: String,
    /// The mid of its transceiver on the publish PC.
    pub mid: String,
    /// Kind.
    pub kind: String,
}

/// A remote track carried by the subscribe PC (from the last `subscribe_offer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTrack {
    /// The mid on the subscribe PC.
    pub mid: String,
    /// Track id.
    pub track: String,
    /// Publishing participant id.
    pub participant: String,
    /// Kind.
    pub kind: String,
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    subscriber: Option<Arc<Peer>>,
    sub_tracks: Vec<SubscribedTrack>,
    sub_offers: u64,
    sub_errors: Vec<String>,
    close_reason: Option<String>,
    last_sub_offer: Option<String>,
    last_pub_answer: Option<String>,
}

struct Inner {
    state: Mutex<State>,
    closed: AtomicBool,
    name: String,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A WebSocket participant.
pub struct Participant {
    inner: Arc<Inner>,
    out: mpsc::UnboundedSender<Message>,
    joined: Option<Value>,
    publisher: Option<Peer>,
    published: Vec<PublishedTrack>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("name", &self.inner.name)
            .field("joined", &self.joined)
            .finish()
    }
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A data message's send frame; `to` holds participant ids as the server gives them.
fn send_frame(
    seq: u32,
    reliable: bool,
    topic: &str,
    to: &[&str],
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let to = to
        .iter()
        .map(|id| MemberId::parse(id).ok_or_else(|| anyhow!("{id} is not a participant id")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let flags = if reliable { data::RELIABLE } else { 0 };
    Ok(data::encode_send(flags, seq, topic, &to, payload))
}

/// A deliver frame as a `data` event (`<binary>` with the error if it is not one).
fn data_event(frame: &[u8]) -> Value {
    match data::parse_deliver(frame) {
        Ok(d) => json!({
            "type": "data",
            "from": d.from,
            "topic": d.topic,
            "seq": d.seq,
            "reliable": d.flags & data::RELIABLE != 0,
            "payload": d.payload,
        }),
        Err(e) => json!({"type": "<binary>", "len": frame.len(), "error": e.to_string()}),
    }
}

/// The `type` of a server message (`""` if none).
pub fn msg_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or_default()
}

impl Participant {
    /// Opens the WebSocket without joining (for bad-input tests).
    pub async fn connect(ws_url: &str) -> anyhow::Result<Self> {
        Self::connect_named(ws_url, "anon").await
    }

    /// A `ws://` or `wss://` URL (the latter trusting [`crate::tls::trust`]ed certificates).
    async fn connect_named(ws_url: &str, name: &str) -> anyhow::Result<Self> {
        if ws_url.starts_with("wss://") {
            let ws = crate::tls::connect_wss(ws_url).await?;
            return Ok(Self::over(ws, name));
        }
        let (ws, _resp) = tokio_tungstenite::connect_async(ws_url)
            .await
            .with_context(|| format!("WebSocket connect to {ws_url}"))?;
        Ok(Self::over(ws, name))
    }

    /// Reads and writes `ws` on tasks of their own.
    fn over<S>(ws: WebSocketStream<S>, name: &str) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            name: name.to_string(),
        });
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let is_close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || is_close {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let r_inner = inner.clone();
        let r_out = out_tx.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str())
                            .unwrap_or(Value::String(t.to_string()));
                        if msg_type(&v) == "subscribe_offer" {
                            handle_subscribe_offer(&r_inner, &r_out, &v).await;
                        }
                        r_inner.lock().events.push(v);
                    }
                    Ok(Message::Binary(b)) => r_inner.lock().events.push(data_event(&b)),
                    Ok(Message::Close(frame)) => {
                        r_inner.lock().close_reason = Some(format!("{frame:?}"));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        r_inner.lock().close_reason = Some(format!("error: {e}"));
                        break;
                    }
                }
            }
            r_inner.closed.store(true, Ordering::SeqCst);
        });
        Self {
            inner,
            out: out_tx,
            joined: None,
            publisher: None,
            published: Vec::new(),
            reader,
            writer,
        }
    }

    /// Connects and joins `room` as `name`; fails if the server answers `error`.
    pub async fn join(ws_url: &str, room: &str, name: &str) -> anyhow::Result<Self> {
        let mut p = Self::connect_named(ws_url, name).await?;
        p.send_join(room, name).await?;
        Ok(p)
    }

    /// Connects and joins `room` with an access token (`join`'s `token` field); `name` is
    /// sent too (a server with API keys takes the name from the token).
    pub async fn join_with_token(
        ws_url: &str,
        room: &str,
        name: &str,
        token: &str,
    ) -> anyhow::Result<Self> {
        let mut p = Self::connect_named(ws_url, name).await?;
        p.send_join_with(room, name, None, Some(token)).await?;
        Ok(p)
    }

    /// Sends `join` with `token` (if any) on an open socket and waits for `joined` (or fails
    /// on `error`, whose message the error carries).
    pub async fn send_join_token(
        &mut self,
        room: &str,
        name: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        self.send_join_with(room, name, None, token).await
    }

    /// Connects and joins `room` as `name`, taking over from participant `replaces` (a
    /// move between nodes, as the SDK makes it when told `move`).
    pub async fn join_replacing(
        ws_url: &str,
        room: &str,
        name: &str,
        replaces: &str,
    ) -> anyhow::Result<Self> {
        let mut p = Self::connect_named(ws_url, name).await?;
        p.send_join_with(room, name, Some(replaces), None).await?;
        Ok(p)
    }

    /// Sends `join` on an open socket and waits for `joined` (or fails on `error`).
    pub async fn send_join(&mut self, room: &str, name: &str) -> anyhow::Result<Value> {
        self.send_join_with(room, name, None, None).await
    }

    async fn send_join_with(
        &mut self,
        room: &str,
        name: &str,
        replaces: Option<&str>,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mark = self.event_count();
        let mut join = json!({"type": "join", "v": 1, "room": room, "name": name});
        if let Some(old) = replaces {
            join["replaces"] = json!(old);
        }
        if let Some(token) = token {
            join["token"] = json!(token);
        }
        self.send_json(&join)?;
        let ev = self
            .wait_event_since(mark, SIGNAL_TIMEOUT, |e| {
                matches!(msg_type(e), "joined" | "error")
            })
            .await
            .context("waiting for joined")?;
        if msg_type(&ev) == "error" {
            bail!("join refused: {ev}");
        }
        self.joined = Some(ev.clone());
        Ok(ev)
    }

    /// The `joined` message, if joined.
    pub fn joined(&self) -> Option<&Value> {
        self.joined.as_ref()
    }

    /// This participant's id (from `joined`), or `""`.
    pub fn id(&self) -> String {
        self.joined
            .as_ref()
            .and_then(|j| j.get("participant"))
            .map(|p| str_field(p, "id"))
            .unwrap_or_default()
    }

    /// Sends one text frame as is.
    pub fn send_raw(&self, text: impl Into<String>) -> anyhow::Result<()> {
        self.out
            .send(Message::text(text.into()))
            .map_err(|_| anyhow!("WebSocket writer has stopped"))
    }

    /// Sends one binary frame.
    pub fn send_binary(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.out
            .send(Message::binary(bytes))
            .map_err(|_| anyhow!("WebSocket writer has stopped"))
    }

    /// Sends a data message (docs/protocol.md "Data messages") to `to` (participant ids;
    /// empty: everyone). It arrives at the others as a `data` event (see the reader).
    pub fn send_data(
        &self,
        seq: u32,
        reliable: bool,
        topic: &str,
        to: &[&str],
        payload: &[u8],
    ) -> anyhow::Result<()> {
        self.send_binary(send_frame(seq, reliable, topic, to, payload)?)
    }

    /// Sends a JSON message.
    pub fn send_json(&self, v: &Value) -> anyhow::Result<()> {
        self.send_raw(v.to_string())
    }

    /// Every message received so far (non-JSON text is kept as a JSON string).
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().events.clone()
    }

    /// Number of messages received so far (a mark for [`Participant::wait_event_since`]).
    pub fn event_count(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Messages received of `type`.
    pub fn events_of(&self, ty: &str) -> Vec<Value> {
        self.inner
            .lock()
            .events
            .iter()
            .filter(|e| msg_type(e) == ty)
            .cloned()
            .collect()
    }

    /// Waits for the first message (received at index `mark` or later) matching `pred`.
    pub async fn wait_event_since(
        &self,
        mark: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        poll_for(timeout, || {
            self.inner
                .lock()
                .events
                .iter()
                .skip(mark)
                .find(|e| pred(e))
                .cloned()
        })
        .await
        .with_context(|| {
            format!(
                "{}: no matching message; received since mark {mark}: {:?}",
                self.inner.name,
                self.inner
                    .lock()
                    .events
                    .iter()
                    .skip(mark)
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Waits for a message of `type` (received at any time).
    pub async fn wait_event(&self, ty: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_event_since(0, timeout, |e| msg_type(e) == ty)
            .await
    }

    /// Waits for an `error` message received at index `mark` or later.
    pub async fn wait_error_since(&self, mark: usize, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_event_since(mark, timeout, |e| msg_type(e) == "error")
            .await
    }

    /// Whether the server closed the socket (or it failed).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// How the socket closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.lock().close_reason.clone()
    }

    /// Creates the publish PC (`sendonly` Opus + VP8), sends `publish_offer`, applies the
    /// `publish_answer` and returns the published tracks. Media flows once connected.
    pub async fn publish(&mut self) -> anyhow::Result<Vec<PublishedTrack>> {
        self.publish_spec(OfferSpec::publish()).await
    }

    /// Like [`Participant::publish`], the video in three simulcast layers (rids `q`, `h`,
    /// `f`; see [`OfferSpec::publish_simulcast`]).
    pub async fn publish_simulcast(&mut self) -> anyhow::Result<Vec<PublishedTrack>> {
        self.publish_spec(OfferSpec::publish_simulcast()).await
    }

    /// Opens the data channels alone on a publish PC (docs/protocol.md "Data messages"):
    /// offers them and waits until both are open at this end.
    pub async fn open_data(&mut self) -> anyhow::Result<()> {
        self.publish_spec(OfferSpec::data()).await?;
        let peer = self.publisher.as_ref().context("the publish PC")?;
        poll_until(SIGNAL_TIMEOUT, || peer.channels_open() == 3)
            .await
            .context("waiting for the three data channels to open")
    }

    /// Writes a data message on the publish PC's data channel of its reliability.
    pub async fn send_data_channel(
        &self,
        seq: u32,
        reliable: bool,
        topic: &str,
        to: &[&str],
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let frame = send_frame(seq, reliable, topic, to, payload)?;
        let peer = self
            .publisher
            .as_ref()
            .context("no data channels (open_data)")?;
        peer.write_data(reliable, frame).await
    }

    /// The data messages received on the data channels, as `data` events like those of the
    /// socket.
    pub fn data_over_channel(&self) -> Vec<Value> {
        self.publisher
            .as_ref()
            .map(|p| p.data_received().iter().map(|f| data_event(f)).collect())
            .unwrap_or_default()
    }

    async fn publish_spec(&mut self, spec: OfferSpec) -> anyhow::Result<Vec<PublishedTrack>> {
        if self.publisher.is_some() {
            bail!("already publishing");
        }
        let peer = Peer::new(PeerOptions {
            name: format!("{}-pub", self.inner.name),
            ..Default::default()
        })?;
        let offer = peer.create_offer(spec).await?;
        let answer = self.publish_round_trip(offer).await?;
        peer.accept_answer(&str_field(&answer, "sdp"))
            .await
            .context("applying publish_answer")?;
        self.published = parse_published(&answer);
        self.inner.lock().last_pub_answer = Some(str_field(&answer, "sdp"));
        self.publisher = Some(peer);
        Ok(self.published.clone())
    }

    async fn publish_round_trip(&self, offer: String) -> anyhow::Result<Value> {
        let mark = self.event_count();
        self.send_json(&json!({"type": "publish_offer", "sdp": offer}))?;
        let ev = self
            .wait_event_since(mark, SIGNAL_TIMEOUT, |e| {
                matches!(msg_type(e), "publish_answer" | "error")
            })
            .await
            .context("waiting for publish_answer")?;
        if msg_type(&ev) == "error" {
            bail!("publish_offer refused: {ev}");
        }
        Ok(ev)
    }

    /// Stops every published track with a re-offer (m-lines stopped) and applies the
    /// answer. Returns the `publish_answer`'s track list.
    pub async fn unpublish(&mut self) -> anyhow::Result<Vec<PublishedTrack>> {
        let peer = self.publisher.as_ref().context("not publishing")?;
        let Some(offer) = peer.stop_sending().await? else {
            return Ok(Vec::new());
        };
        let answer = self.publish_round_trip(offer).await?;
        let peer = self.publisher.as_ref().context("not publishing")?;
        peer.accept_answer(&str_field(&answer, "sdp"))
            .await
            .context("applying publish_answer to the unpublish offer")?;
        self.published = parse_published(&answer);
        self.inner.lock().last_pub_answer = Some(str_field(&answer, "sdp"));
        Ok(self.published.clone())
    }

    /// The tracks listed by the last `publish_answer`.
    pub fn published_tracks(&self) -> &[PublishedTrack] {
        &self.published
    }

    /// The SDP of the last `publish_answer`.
    pub fn last_publish_answer_sdp(&self) -> Option<String> {
        self.inner.lock().last_pub_answer.clone()
    }

    /// The SDP of the last `subscribe_offer`.
    pub fn last_subscribe_offer_sdp(&self) -> Option<String> {
        self.inner.lock().last_sub_offer.clone()
    }

    /// The publish PC, if publishing.
    pub fn publisher(&self) -> Option<&Peer> {
        self.publisher.as_ref()
    }

    /// The subscribe PC, once the first `subscribe_offer` arrived.
    pub fn subscriber(&self) -> Option<Arc<Peer>> {
        self.inner.lock().subscriber.clone()
    }

    /// The tracks of the last `subscribe_offer`.
    pub fn subscribed_tracks(&self) -> Vec<SubscribedTrack> {
        self.inner.lock().sub_tracks.clone()
    }

    /// Number of `subscribe_offer`s answered (or failed).
    pub fn subscribe_offers(&self) -> u64 {
        self.inner.lock().sub_offers
    }

    /// Failures handling `subscribe_offer` (bad SDP, …).
    pub fn subscribe_errors(&self) -> Vec<String> {
        self.inner.lock().sub_errors.clone()
    }

    /// Packets received on the subscribe PC from `participant`'s track of `kind` (by the
    /// current mid mapping).
    pub fn received_from(&self, participant: &str, kind: Kind) -> Vec<ReceivedPacket> {
        let (sub, tracks) = {
            let s = self.inner.lock();
            (s.subscriber.clone(), s.sub_tracks.clone())
        };
        let Some(sub) = sub else {
            return Vec::new();
        };
        let mids: Vec<String> = tracks
            .iter()
            .filter(|t| t.participant == participant && t.kind == kind.as_str())
            .map(|t| t.mid.clone())
            .collect();
        sub.received()
            .into_iter()
            .filter(|p| p.mid.as_ref().is_some_and(|m| mids.contains(m)))
            .collect()
    }

    /// Packets received on the subscribe PC of `kind` (any publisher).
    pub fn received_count(&self, kind: Kind) -> u64 {
        self.subscriber()
            .map(|s| s.received_count(kind))
            .unwrap_or(0)
    }

    /// Waits until the subscribe PC has a track of `kind` from `participant` and is
    /// connected.
    pub async fn wait_subscribed(
        &self,
        participant: &str,
        kind: Kind,
        timeout: Duration,
    ) -> anyhow::Result<SubscribedTrack> {
        let t = poll_for(timeout, || {
            let s = self.inner.lock();
            if !s.subscriber.as_ref().is_some_and(|p| p.is_connected()) {
                return None;
            }
            s.sub_tracks
                .iter()
                .find(|t| t.participant == participant && t.kind == kind.as_str())
                .cloned()
        })
        .await
        .with_context(|| {
            let s = self.inner.lock();
            format!(
                "{}: not subscribed to {participant}'s {} within {timeout:?}; tracks {:?}, \
                 connected {:?}, errors {:?}",
                self.inner.name,
                kind.as_str(),
                s.sub_tracks,
                s.subscriber.as_ref().map(|p| p.status()),
                s.sub_errors
            )
        })?;
        Ok(t)
    }

    /// Sends `leave` and waits for the server to close the socket; then closes both PCs.
    pub async fn leave(mut self) -> anyhow::Result<()> {
        self.send_json(&json!({"type": "leave"}))?;
        let closed = poll_until(SIGNAL_TIMEOUT, || self.is_closed()).await;
        self.shutdown_peers();
        closed.context("the server did not close the socket after leave")
    }

    /// Closes the WebSocket without `leave` (as a dropped connection would) and both PCs.
    pub async fn disconnect(mut self) {
        let _ = self.out.send(Message::Close(None));
        let _ = poll_until(Duration::from_secs(2), || self.writer.is_finished()).await;
        self.reader.abort();
        self.shutdown_peers();
    }

    fn shutdown_peers(&mut self) {
        if let Some(mut p) = self.publisher.take() {
            p.close();
        }
        let sub = self.inner.lock().subscriber.take();
        drop(sub);
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shutdown_peers();
    }
}

fn parse_published(answer: &Value) -> Vec<PublishedTrack> {
    answer
        .get("tracks")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| PublishedTrack {
                    id: str_field(t, "id"),
                    mid: str_field(t, "mid"),
                    kind: str_field(t, "kind"),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle_subscribe_offer(
    inner: &Arc<Inner>,
    out: &mpsc::UnboundedSender<Message>,
    v: &Value,
) {
    let sdp = str_field(v, "sdp");
    let tracks: Vec<SubscribedTrack> = v
        .get("tracks")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| SubscribedTrack {
                    mid: str_field(t, "mid"),
                    track: str_field(t, "track"),
                    participant: str_field(t, "participant"),
                    kind: str_field(t, "kind"),
                })
                .collect()
        })
        .unwrap_or_default();
    inner.lock().last_sub_offer = Some(sdp.clone());
    let existing = inner.lock().subscriber.clone();
    let peer = match existing {
        Some(p) => p,
        None => match Peer::new(PeerOptions {
            name: format!("{}-sub", inner.name),
            ..Default::default()
        }) {
            Ok(p) => {
                let p = Arc::new(p);
                inner.lock().subscriber = Some(p.clone());
                p
            }
            Err(e) => {
                let mut s = inner.lock();
                s.sub_offers += 1;
                s.sub_errors
                    .push(format!("creating the subscribe PC: {e:#}"));
                return;
            }
        },
    };
    match peer.accept_offer(&sdp).await {
        Ok(answer) => {
            let _ = out.send(Message::text(
                json!({"type": "subscribe_answer", "sdp": answer}).to_string(),
            ));
            let mut s = inner.lock();
            s.sub_offers += 1;
            s.sub_tracks = tracks;
        }
        Err(e) => {
            let mut s = inner.lock();
            s.sub_offers += 1;
            s.sub_errors.push(format!("{e:#}"));
        }
    }
}
