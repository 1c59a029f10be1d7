//! A small async client of the Janus HTTP API (one Janus session per [`JanusClient`]), with
//! the VideoRoom requests the benchmark needs.
//!
//! Janus' HTTP API: `POST /janus` `{"janus":"create"}` makes a session; `POST /janus/<session>`
//! `{"janus":"attach","plugin":…}` a handle; `POST /janus/<session>/<handle>`
//! `{"janus":"message","body":…,"jsep":…}` talks to the plugin. Synchronous plugin requests
//! (`create`, `destroy`, …) answer in the POST reply (`success` + `plugindata`); asynchronous
//! ones (`join`, `configure`, `start`, …) answer `ack` and deliver their result later as an
//! event carrying the same `transaction`, fetched by long-polling `GET /janus/<session>`. A
//! background task per session does that long poll and sends keepalives; events that answer
//! no pending request (`webrtcup`, `media`, `hangup`, publisher lists, …) are kept for
//! [`JanusClient::take_events`].
//!
//! Everything Janus replies is treated as untrusted: odd replies become errors, never panics.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// The VideoRoom plugin's package name.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

/// How many unsolicited events are kept (oldest dropped first).
const EVENT_BUFFER: usize = 10_000;
/// Interval of explicit keepalives (Janus' default session timeout is 60 s).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Consecutive long-poll failures before the session is declared dead.
const POLL_FAILURES: u32 = 5;

/// Settings of a room created by [`JanusClient::create_room_with`].
#[derive(Debug, Clone)]
pub struct RoomOptions {
    /// Numeric room id.
    pub room: u64,
    /// Maximum concurrent publishers.
    pub publishers: u32,
    /// Bitrate cap sent to publishers in REMB (0: none).
    pub bitrate: u32,
    /// Periodic keyframe requests to publishers, in seconds (0: none; Janus still asks for
    /// one when a subscriber starts).
    pub fir_freq: u32,
    /// Audio codec(s), e.g. `"opus"`.
    pub audiocodec: String,
    /// Video codec(s), e.g. `"vp8"`.
    pub videocodec: String,
}

impl RoomOptions {
    /// VP8 + Opus, 1000 publishers, no bitrate cap, no periodic keyframes.
    pub fn new(room: u64) -> Self {
        Self {
            room,
            publishers: 1000,
            bitrate: 0,
            fir_freq: 0,
            audiocodec: "opus".into(),
            videocodec: "vp8".into(),
        }
    }
}

/// The result of [`JanusClient::publish`].
#[derive(Debug)]
pub struct Published {
    /// Janus' SDP answer to the publisher's offer.
    pub answer_sdp: String,
    /// The publisher's id in the room (what subscribers subscribe to).
    pub feed_id: u64,
    /// The publisher's plugin handle (to unpublish, leave, detach).
    pub handle: PublisherHandle,
}

/// One result of an asynchronous plugin request: the plugin's `data` and Janus' `jsep`.
#[derive(Debug, Clone)]
pub struct PluginEvent {
    /// `plugindata.data`.
    pub data: Value,
    /// `jsep`, if any.
    pub jsep: Option<Value>,
}

impl PluginEvent {
    /// The SDP in `jsep`, if it is of `kind` (`"offer"` or `"answer"`).
    pub fn sdp(&self, kind: &str) -> anyhow::Result<String> {
        let jsep = self
            .jsep
            .as_ref()
            .with_context(|| format!("Janus sent no jsep (expected an {kind}): {}", self.data))?;
        let ty = jsep.get("type").and_then(Value::as_str).unwrap_or("");
        if ty != kind {
            bail!("Janus sent a jsep of type {ty:?}, expected {kind:?}");
        }
        jsep.get("sdp")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("Janus' jsep has no sdp")
    }
}

#[derive(Default)]
struct Shared {
    pending: HashMap<String, oneshot::Sender<Value>>,
    events: VecDeque<Value>,
    dead: Option<String>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    session: u64,
    next_tx: AtomicU64,
    shared: Arc<Mutex<Shared>>,
    event_timeout: Duration,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One Janus session and its event pump. Cheap to clone; the pump stops when the last clone
/// (and every handle) is dropped. Handles of many participants can share one session.
#[derive(Clone)]
pub struct JanusClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JanusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JanusClient")
            .field("base", &self.inner.base)
            .field("session", &self.inner.session)
            .finish()
    }
}

impl JanusClient {
    /// Creates a session on the Janus at `base_url` (e.g. `http://10.99.0.1:8088/janus`) and
    /// starts its long-poll and keepalive tasks. Needs a tokio runtime.
    pub async fn connect(base_url: &str) -> anyhow::Result<JanusClient> {
        Self::connect_with(base_url, Duration::from_secs(20)).await
    }

    /// [`JanusClient::connect`] with the time to wait for each asynchronous answer.
    pub async fn connect_with(
        base_url: &str,
        event_timeout: Duration,
    ) -> anyhow::Result<JanusClient> {
        let base = base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let reply = post(
            &http,
            &base,
            json!({"janus": "create", "transaction": "c0"}),
        )
        .await
        .context("creating a Janus session")?;
        let session = success_id(&reply).context("creating a Janus session")?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let poll_http = reqwest::Client::builder()
            .no_proxy()
            // Janus holds a long poll for up to 30 s.
            .timeout(Duration::from_secs(45))
            .build()
            .context("building the HTTP client")?;
        let pump = tokio::spawn(pump(poll_http, format!("{base}/{session}"), shared.clone()));
        let keepalive = tokio::spawn(keepalive(http.clone(), format!("{base}/{session}")));
        Ok(JanusClient {
            inner: Arc::new(Inner {
                http,
                base,
                session,
                next_tx: AtomicU64::new(1),
                shared,
                event_timeout,
                tasks: vec![pump.abort_handle(), keepalive.abort_handle()],
            }),
        })
    }

    /// The Janus session id.
    pub fn session_id(&self) -> u64 {
        self.inner.session
    }

    /// Events that answered no request (`webrtcup`, `media`, `hangup`, `slowlink`, plugin
    /// notifications), oldest first; the buffer is emptied.
    pub fn take_events(&self) -> Vec<Value> {
        lock(&self.inner.shared).events.drain(..).collect()
    }

    /// Attaches a handle to `plugin`.
    pub async fn attach(&self, plugin: &str) -> anyhow::Result<PluginHandle> {
        let url = format!("{}/{}", self.inner.base, self.inner.session);
        let tx = self.tx();
        let reply = post(
            &self.inner.http,
            &url,
            json!({"janus": "attach", "plugin": plugin, "transaction": tx}),
        )
        .await
        .with_context(|| format!("attaching to {plugin}"))?;
        let id = success_id(&reply).with_context(|| format!("attaching to {plugin}"))?;
        Ok(PluginHandle {
            client: self.clone(),
            id,
        })
    }

    /// Creates a VP8 + Opus room with a high publisher limit and no bitrate cap.
    pub async fn create_room(&self, room: u64) -> anyhow::Result<()> {
        self.create_room_with(&RoomOptions::new(room)).await
    }

    /// Creates a room (not permanent).
    pub async fn create_room_with(&self, opts: &RoomOptions) -> anyhow::Result<()> {
        let h = self.attach(VIDEOROOM).await?;
        let r = h
            .request(json!({
                "request": "create",
                "room": opts.room,
                "permanent": false,
                "description": format!("sfumato-bench {}", opts.room),
                "publishers": opts.publishers,
                "bitrate": opts.bitrate,
                "fir_freq": opts.fir_freq,
                "audiocodec": opts.audiocodec,
                "videocodec": opts.videocodec,
                "notify_joining": false,
                "audiolevel_event": false,
            }))
            .await;
        let _ = h.detach().await;
        let data = r.with_context(|| format!("creating room {}", opts.room))?;
        expect_field(&data, "videoroom", "created")
            .with_context(|| format!("creating room {}", opts.room))
    }

    /// Destroys a room (kicking everyone in it).
    pub async fn destroy_room(&self, room: u64) -> anyhow::Result<()> {
        let h = self.attach(VIDEOROOM).await?;
        let r = h
            .request(json!({"request": "destroy", "room": room, "permanent": false}))
            .await;
        let _ = h.detach().await;
        let data = r.with_context(|| format!("destroying room {room}"))?;
        expect_field(&data, "videoroom", "destroyed")
            .with_context(|| format!("destroying room {room}"))
    }

    /// Joins `room` as a publisher and publishes with `offer_sdp` (sendonly Opus + VP8): a
    /// new handle, `join` (ptype publisher), then `configure` with the offer.
    pub async fn publish(
        &self,
        room: u64,
        display: &str,
        offer_sdp: &str,
    ) -> anyhow::Result<Published> {
        let handle = self.attach(VIDEOROOM).await?;
        match publish_on(&handle, room, display, offer_sdp).await {
            Ok((answer_sdp, feed_id)) => Ok(Published {
                answer_sdp,
                feed_id,
                handle: PublisherHandle { handle, feed_id },
            }),
            Err(e) => {
                let _ = handle.detach().await;
                Err(e)
            }
        }
    }

    /// Subscribes to `feed_id` in `room` (a new handle, `join` ptype subscriber with
    /// `streams: [{feed}]`). Returns Janus' SDP offer; answer it with
    /// [`SubscriberHandle::answer`].
    pub async fn subscribe(
        &self,
        room: u64,
        feed_id: u64,
    ) -> anyhow::Result<(String, SubscriberHandle)> {
        let handle = self.attach(VIDEOROOM).await?;
        let r = async {
            let ev = handle
                .message(
                    json!({
                        "request": "join",
                        "ptype": "subscriber",
                        "room": room,
                        "streams": [{"feed": feed_id}],
                    }),
                    None,
                )
                .await?;
            expect_field(&ev.data, "videoroom", "attached")?;
            ev.sdp("offer")
        }
        .await
        .with_context(|| format!("subscribing to feed {feed_id} in room {room}"));
        match r {
            Ok(offer) => Ok((offer, SubscriberHandle { handle, feed_id })),
            Err(e) => {
                let _ = handle.detach().await;
                Err(e)
            }
        }
    }

    /// Destroys the session (and every handle in it) and stops the event pump.
    pub async fn destroy(self) -> anyhow::Result<()> {
        let url = format!("{}/{}", self.inner.base, self.inner.session);
        let tx = self.tx();
        let reply = post(
            &self.inner.http,
            &url,
            json!({"janus": "destroy", "transaction": tx}),
        )
        .await
        .context("destroying the Janus session")?;
        expect_success(&reply).context("destroying the Janus session")
    }

    /// Sends one keepalive now (the client also sends them on its own).
    pub async fn keepalive(&self) -> anyhow::Result<()> {
        let url = format!("{}/{}", self.inner.base, self.inner.session);
        let tx = self.tx();
        let reply = post(
            &self.inner.http,
            &url,
            json!({"janus": "keepalive", "transaction": tx}),
        )
        .await?;
        match reply.get("janus").and_then(Value::as_str) {
            Some("ack") => Ok(()),
            _ => Err(janus_error(&reply)).context("keepalive"),
        }
    }

    fn tx(&self) -> String {
        format!("t{}", self.inner.next_tx.fetch_add(1, Ordering::Relaxed))
    }
}

async fn publish_on(
    handle: &PluginHandle,
    room: u64,
    display: &str,
    offer_sdp: &str,
) -> anyhow::Result<(String, u64)> {
    let joined = handle
        .message(
            json!({"request": "join", "ptype": "publisher", "room": room, "display": display}),
            None,
        )
        .await
        .with_context(|| format!("joining room {room} as publisher {display:?}"))?;
    expect_field(&joined.data, "videoroom", "joined")
        .with_context(|| format!("joining room {room} as publisher {display:?}"))?;
    let feed_id = joined
        .data
        .get("id")
        .and_then(Value::as_u64)
        .with_context(|| format!("Janus' joined event has no numeric id: {}", joined.data))?;
    let configured = handle
        .message(
            json!({"request": "configure"}),
            Some(json!({"type": "offer", "sdp": offer_sdp})),
        )
        .await
        .with_context(|| format!("publishing {display:?} in room {room}"))?;
    let answer = configured
        .sdp("answer")
        .with_context(|| format!("publishing {display:?} in room {room}"))?;
    Ok((answer, feed_id))
}

/// A handle attached to a plugin.
#[derive(Debug, Clone)]
pub struct PluginHandle {
    client: JanusClient,
    id: u64,
}

impl PluginHandle {
    /// The handle id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn url(&self) -> String {
        format!(
            "{}/{}/{}",
            self.client.inner.base, self.client.inner.session, self.id
        )
    }

    /// A synchronous plugin request (answered in the POST reply); returns `plugindata.data`.
    pub async fn request(&self, body: Value) -> anyhow::Result<Value> {
        let what = request_name(&body);
        let tx = self.client.tx();
        let reply = post(
            &self.client.inner.http,
            &self.url(),
            json!({"janus": "message", "transaction": tx, "body": body}),
        )
        .await
        .with_context(|| format!("request {what}"))?;
        match reply.get("janus").and_then(Value::as_str) {
            Some("success") => plugin_data(&reply).with_context(|| format!("request {what}")),
            _ => Err(janus_error(&reply)).with_context(|| format!("request {what}")),
        }
    }

    /// An asynchronous plugin request (`ack`, then an event with the same transaction); also
    /// accepts a synchronous answer. Plugin errors (`error_code`) become errors.
    pub async fn message(&self, body: Value, jsep: Option<Value>) -> anyhow::Result<PluginEvent> {
        let what = request_name(&body);
        let inner = &self.client.inner;
        let tx = self.client.tx();
        let (sender, receiver) = oneshot::channel();
        {
            let mut s = lock(&inner.shared);
            if let Some(why) = &s.dead {
                bail!("request {what}: the Janus session is gone ({why})");
            }
            // Registered before sending: the event may arrive before the POST reply.
            s.pending.insert(tx.clone(), sender);
        }
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let reply = match post(&inner.http, &self.url(), msg).await {
            Ok(r) => r,
            Err(e) => {
                lock(&inner.shared).pending.remove(&tx);
                return Err(e).with_context(|| format!("request {what}"));
            }
        };
        let event = match reply.get("janus").and_then(Value::as_str) {
            Some("ack") => {
                let waited = tokio::time::timeout(inner.event_timeout, receiver).await;
                lock(&inner.shared).pending.remove(&tx);
                match waited {
                    Ok(Ok(ev)) => ev,
                    Ok(Err(_)) => {
                        let why = lock(&inner.shared)
                            .dead
                            .clone()
                            .unwrap_or_else(|| "event pump stopped".into());
                        bail!("request {what}: no answer, the Janus session is gone ({why})");
                    }
                    Err(_) => bail!(
                        "request {what}: Janus acknowledged it but sent no answer within {:?}",
                        inner.event_timeout
                    ),
                }
            }
            _ => {
                lock(&inner.shared).pending.remove(&tx);
                reply
            }
        };
        parse_plugin_event(&event).with_context(|| format!("request {what}"))
    }

    /// Hangs up the PeerConnection of this handle (the handle stays attached).
    pub async fn hangup(&self) -> anyhow::Result<()> {
        self.simple("hangup").await
    }

    /// Detaches the handle (closing its PeerConnection).
    pub async fn detach(&self) -> anyhow::Result<()> {
        self.simple("detach").await
    }

    async fn simple(&self, verb: &str) -> anyhow::Result<()> {
        let tx = self.client.tx();
        let reply = post(
            &self.client.inner.http,
            &self.url(),
            json!({"janus": verb, "transaction": tx}),
        )
        .await
        .with_context(|| format!("{verb} of handle {}", self.id))?;
        expect_success(&reply).with_context(|| format!("{verb} of handle {}", self.id))
    }
}

/// A publisher's handle.
#[derive(Debug, Clone)]
pub struct PublisherHandle {
    handle: PluginHandle,
    feed_id: u64,
}

impl PublisherHandle {
    /// The publisher's id in the room.
    pub fn feed_id(&self) -> u64 {
        self.feed_id
    }

    /// The underlying plugin handle.
    pub fn handle(&self) -> &PluginHandle {
        &self.handle
    }

    /// Stops publishing (stays in the room).
    pub async fn unpublish(&self) -> anyhow::Result<()> {
        self.handle
            .message(json!({"request": "unpublish"}), None)
            .await
            .map(|_| ())
    }

    /// Leaves the room.
    pub async fn leave(&self) -> anyhow::Result<()> {
        self.handle
            .message(json!({"request": "leave"}), None)
            .await
            .map(|_| ())
    }

    /// Detaches the handle (leaving the room).
    pub async fn detach(&self) -> anyhow::Result<()> {
        self.handle.detach().await
    }
}

/// A subscriber's handle.
#[derive(Debug, Clone)]
pub struct SubscriberHandle {
    handle: PluginHandle,
    feed_id: u64,
}

impl SubscriberHandle {
    /// The feed subscribed to.
    pub fn feed_id(&self) -> u64 {
        self.feed_id
    }

    /// The underlying plugin handle.
    pub fn handle(&self) -> &PluginHandle {
        &self.handle
    }

    /// Sends the answer to Janus' offer (`start`); media flows once ICE and DTLS are up.
    pub async fn answer(&self, answer_sdp: &str) -> anyhow::Result<()> {
        let ev = self
            .handle
            .message(
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer_sdp})),
            )
            .await
            .with_context(|| format!("starting the subscription to feed {}", self.feed_id))?;
        match ev.data.get("started").and_then(Value::as_str) {
            Some("ok") => Ok(()),
            _ => bail!(
                "starting the subscription to feed {}: unexpected answer {}",
                self.feed_id,
                ev.data
            ),
        }
    }

    /// Leaves (stops the subscription).
    pub async fn leave(&self) -> anyhow::Result<()> {
        self.handle
            .message(json!({"request": "leave"}), None)
            .await
            .map(|_| ())
    }

    /// Detaches the handle.
    pub async fn detach(&self) -> anyhow::Result<()> {
        self.handle.detach().await
    }
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let resp = http
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("reading the reply of POST {url}"))?;
    if !status.is_success() {
        bail!("POST {url}: HTTP {status}: {}", snippet(&text));
    }
    serde_json::from_str(&text)
        .with_context(|| format!("POST {url}: the reply is not JSON: {}", snippet(&text)))
}

/// The long-poll loop: fetches events and hands each to the request waiting for its
/// transaction, or to the unsolicited-event buffer.
async fn pump(http: reqwest::Client, url: String, shared: Arc<Mutex<Shared>>) {
    let mut failures = 0u32;
    let mut rid = 0u64;
    loop {
        rid += 1;
        let result = async {
            let resp = http
                .get(format!("{url}?maxev=32&rid={rid}"))
                .send()
                .await
                .context("long poll")?;
            let status = resp.status();
            let text = resp.text().await.context("reading the long poll")?;
            if !status.is_success() {
                bail!("long poll: HTTP {status}: {}", snippet(&text));
            }
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("long poll: not JSON: {}", snippet(&text)))
        }
        .await;
        match result {
            Ok(v) => {
                failures = 0;
                if v.get("janus").and_then(Value::as_str) == Some("error") {
                    // e.g. 458 "No such session": nothing will come any more.
                    fail_all(&shared, format!("{:#}", janus_error(&v)));
                    return;
                }
                dispatch(&shared, v);
            }
            Err(e) => {
                failures += 1;
                tracing::debug!("janus long poll: {e:#}");
                if failures >= POLL_FAILURES {
                    fail_all(&shared, format!("{e:#}"));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
    }
}

fn dispatch(shared: &Mutex<Shared>, v: Value) {
    let events = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    let mut s = lock(shared);
    for ev in events {
        match ev.get("janus").and_then(Value::as_str) {
            Some("keepalive") | None => continue,
            _ => {}
        }
        let tx = ev
            .get("transaction")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(sender) = tx.and_then(|t| s.pending.remove(&t)) {
            let _ = sender.send(ev);
            continue;
        }
        if s.events.len() >= EVENT_BUFFER {
            s.events.pop_front();
        }
        s.events.push_back(ev);
    }
}

fn fail_all(shared: &Mutex<Shared>, why: String) {
    let mut s = lock(shared);
    tracing::debug!("janus session gone: {why}");
    s.dead = Some(why);
    // Dropping the senders wakes every waiter with an error.
    s.pending.clear();
}

async fn keepalive(http: reqwest::Client, url: String) {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        n += 1;
        let body = json!({"janus": "keepalive", "transaction": format!("k{n}")});
        if let Err(e) = post(&http, &url, body).await {
            tracing::debug!("janus keepalive: {e:#}");
        }
    }
}

/// `data.id` of a `success` reply (session or handle id).
fn success_id(reply: &Value) -> anyhow::Result<u64> {
    expect_success(reply)?;
    reply
        .get("data")
        .and_then(|d| d.get("id"))
        .and_then(Value::as_u64)
        .with_context(|| format!("Janus' success reply has no numeric data.id: {reply}"))
}

fn expect_success(reply: &Value) -> anyhow::Result<()> {
    match reply.get("janus").and_then(Value::as_str) {
        Some("success") => Ok(()),
        _ => Err(janus_error(reply)),
    }
}

/// An error describing a Janus reply that is not what was expected.
fn janus_error(reply: &Value) -> anyhow::Error {
    if let Some(err) = reply.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let reason = err
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("(no reason)");
        return anyhow!("Janus error {code}: {reason}");
    }
    anyhow!("unexpected Janus reply: {}", snippet(&reply.to_string()))
}

/// `plugindata.data` of a reply or event, with plugin errors turned into errors.
fn plugin_data(reply: &Value) -> anyhow::Result<Value> {
    if reply.get("janus").and_then(Value::as_str) == Some("error") {
        return Err(janus_error(reply));
    }
    let data = reply
        .get("plugindata")
        .and_then(|p| p.get("data"))
        .with_context(|| {
            format!(
                "Janus' reply has no plugindata: {}",
                snippet(&reply.to_string())
            )
        })?;
    if let Some(code) = data.get("error_code") {
        let reason = data
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no reason)");
        bail!("VideoRoom error {code}: {reason}");
    }
    Ok(data.clone())
}

fn parse_plugin_event(ev: &Value) -> anyhow::Result<PluginEvent> {
    let data = plugin_data(ev)?;
    let jsep = ev.get("jsep").cloned();
    Ok(PluginEvent { data, jsep })
}

fn expect_field(data: &Value, key: &str, want: &str) -> anyhow::Result<()> {
    match data.get(key).and_then(Value::as_str) {
        Some(v) if v == want => Ok(()),
        _ => bail!("expected {key}={want:?} from Janus, got {data}"),
    }
}

fn request_name(body: &Value) -> String {
    body.get("request")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_string()
}

fn snippet(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn janus_errors_carry_code_and_reason() {
        let e = janus_error(
            &json!({"janus":"error","error":{"code":490,"reason":"Error setting ICE locally"}}),
        );
        assert_eq!(e.to_string(), "Janus error 490: Error setting ICE locally");
        let e = janus_error(&json!({"janus":"error","error":"weird"}));
        assert_eq!(e.to_string(), "Janus error 0: (no reason)");
        let e = janus_error(&json!([1, 2]));
        assert!(e.to_string().starts_with("unexpected Janus reply"));
    }

    #[test]
    fn plugin_errors_become_errors() {
        let ev = json!({"janus":"event","plugindata":{"plugin":VIDEOROOM,
            "data":{"videoroom":"event","error_code":426,"error":"No such room (7)"}}});
        let e = parse_plugin_event(&ev).expect_err("an error");
        assert_eq!(e.to_string(), "VideoRoom error 426: No such room (7)");
        assert!(parse_plugin_event(&json!({"janus":"event"})).is_err());
        assert!(parse_plugin_event(&json!("x")).is_err());
    }

    #[test]
    fn jsep_is_checked() {
        let ev = PluginEvent {
            data: json!({}),
            jsep: Some(json!({"type":"offer","sdp":"v=0"})),
        };
        assert_eq!(ev.sdp("offer").expect("sdp"), "v=0");
        assert!(ev.sdp("answer").is_err());
        let ev = PluginEvent {
            data: json!({}),
            jsep: Some(json!({"type":"offer","sdp":5})),
        };
        assert!(ev.sdp("offer").is_err());
        let ev = PluginEvent {
            data: json!({}),
            jsep: None,
        };
        assert!(ev.sdp("offer").is_err());
    }

    #[test]
    fn ids_are_read_safely() {
        assert_eq!(
            success_id(&json!({"janus":"success","data":{"id":42}})).expect("id"),
            42
        );
        assert!(success_id(&json!({"janus":"success","data":{"id":"42"}})).is_err());
        assert!(success_id(&json!({"janus":"success"})).is_err());
        assert!(success_id(&json!(null)).is_err());
    }

    #[test]
    fn dispatch_routes_by_transaction() {
        let shared = Mutex::new(Shared::default());
        let (tx, mut rx) = oneshot::channel();
        lock(&shared).pending.insert("t1".into(), tx);
        dispatch(
            &shared,
            json!([
                {"janus":"keepalive"},
                {"janus":"webrtcup","sender":1},
                {"janus":"event","transaction":"t1","plugindata":{"data":{"videoroom":"joined"}}},
                {"janus":"event","transaction":"t9"},
                "garbage",
                7
            ]),
        );
        let got = rx.try_recv().expect("routed");
        assert_eq!(got["transaction"], "t1");
        let s = lock(&shared);
        assert!(s.pending.is_empty());
        assert_eq!(s.events.len(), 2);
        drop(s);
        dispatch(&shared, json!({"janus":"hangup","sender":2}));
        assert_eq!(lock(&shared).events.len(), 3);
    }

    #[test]
    fn snippets_cut_on_char_boundaries() {
        let long = "é".repeat(400);
        let s = snippet(&long);
        assert!(s.ends_with('…'));
        assert!(s.len() <= 304);
    }
}
