//! The WebSocket signaling endpoint (docs/protocol.md): one socket per participant, JSON
//! messages validated before anything acts on them. A bad message gets an `error` reply and
//! the session carries on. Once joined, a session lasts as long as its participant: when the
//! control plane lets the participant go (its worker died), the socket closes. Each session
//! enforces the per-client limits (crate::limits): its messages pass a token bucket before
//! they are read (a joined participant's data messages excepted: its worker paces them), it pings its client and closes when it hears nothing for the idle timeout,
//! and its outgoing queue is bounded (a client that does not read is disconnected).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxumState;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfumato_worker::sfumato_core::data;
use sfumato_worker::sfumato_core::{Command, MemberId, ReplyBody};
use std::time::{Duration, Instant};

use sfumato_signal::{self as signal, envelope, Bad, ClientMessage};

use crate::auth::{Denied, Grant, Rights};
use crate::limits::{Exceeded, Limit};
use crate::outbound::{self, Frame, Outbound, WeakOutbound};
use crate::rooms::{parse_participant_key, participant_key, Client, JoinError, ParticipantId};
use crate::App;

/// How long a closing session waits for its client to take what is queued for it.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn upgrade(ws: WebSocketUpgrade, AxumState(app): AxumState<App>) -> Response {
    // Frames over twice the message limit close the socket (the WebSocket layer refuses
    // them); a message between the two gets `too_large` and the session carries on.
    let frame = app.limits.settings.message_bytes.saturating_mul(2);
    ws.max_message_size(frame)
        .max_frame_size(frame)
        .on_upgrade(move |socket| session(app, socket))
}

/// A client error: a code from the protocol and a human-readable reason.
struct Reject(&'static str, String);

impl From<Denied> for Reject {
    fn from(d: Denied) -> Self {
        Reject(d.code(), d.to_string())
    }
}

impl From<Exceeded> for Reject {
    fn from(e: Exceeded) -> Self {
        Reject(e.limit.code(), e.message)
    }
}

fn error_json(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

/// The queue of messages to the client. Until `join`, the session holds the only sender;
/// from then on the participant (in the control plane's state) does, and the session only a
/// weak one: when the participant is removed, the writer has nothing left to wait for, so it
/// sends what was queued (a last `reconnect`), closes the socket and the session ends.
enum Outbox {
    Own(Outbound),
    Participant(WeakOutbound),
}

impl Outbox {
    /// A sender for one message's handling, if the participant is still there.
    fn sender(&self) -> Option<Outbound> {
        match self {
            Outbox::Own(tx) => Some(tx.clone()),
            Outbox::Participant(weak) => weak.upgrade(),
        }
    }
}

/// Why a session ended, where the client is to blame.
#[derive(PartialEq)]
enum End {
    Normal,
    /// Nothing heard for the idle timeout, not even a pong.
    Idle,
    /// Its queue overflowed: it does not read.
    SlowReader,
}

async fn session(app: App, socket: WebSocket) {
    let settings = app.limits.settings.clone();
    let (mut sink, mut stream) = socket.split();
    let (tx, overflow, mut rx) = outbound::channel(settings.queued_messages);
    let ping_every = settings.ws_ping_interval;
    let mut writer = tokio::spawn(async move {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let msg = tokio::select! {
                frame = rx.recv() => match frame {
                    Some(Frame::Text(t)) => Message::Text(t.into()),
                    Some(Frame::Binary(b)) => Message::Binary(b.to_vec().into()),
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut outbox = Outbox::Own(tx);
    let mut shutdown = app.shutdown.clone();
    let mut bucket = app.limits.bucket(Instant::now());
    // When the client was last told that it is over its rate (once a second at most).
    let mut told_rate: Option<Instant> = None;
    let mut me: Option<ParticipantId> = None;
    let mut end = End::Normal;
    loop {
        let msg = tokio::select! {
            msg = tokio::time::timeout(settings.ws_idle_timeout, stream.next()) => match msg {
                Ok(msg) => msg,
                Err(_) => {
                    end = End::Idle;
                    break;
                }
            },
            _ = shutdown.changed() => break,
            // The participant is gone (or the client stopped reading): nothing more to say.
            _ = &mut writer => break,
            _ = overflow.wait() => {
                end = End::SlowReader;
                break;
            }
        };
        let Some(Ok(msg)) = msg else { break };
        let Some(tx) = outbox.sender() else { break };
        let text = match msg {
            Message::Close(_) => break,
            // A sign of life, which the timeout above has taken.
            Message::Pong(_) => continue,
            // A participant's data messages are paced by its worker (`--max-data-rate`),
            // whichever way they come, not by the signaling rate.
            Message::Binary(frame) if me.is_some() => {
                data_in(&app, &tx, me, frame.into());
                continue;
            }
            _ if !bucket.take(Instant::now()) => {
                let e = app.limits.rate_exceeded();
                let now = Instant::now();
                if told_rate.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    told_rate = Some(now);
                    tx.send(error_json(e.limit.code(), &e.message));
                }
                continue;
            }
            Message::Ping(_) => continue, // answered by the WebSocket layer
            Message::Text(t) => t,
            Message::Binary(frame) => {
                data_in(&app, &tx, me, frame.into());
                continue;
            }
        };
        if let Err(e) = app.limits.check_message(text.len()) {
            tx.send(error_json(e.limit.code(), &e.message));
            continue;
        }
        match handle(&app, &tx, &mut me, text.as_str()).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Leave) => break,
            Err(Reject(code, message)) => tx.send(error_json(code, &message)),
        }
        if me.is_some() {
            outbox = Outbox::Participant(tx.downgrade());
        }
    }
    match end {
        End::Normal => {}
        End::Idle => {
            app.limits.count(Limit::IdleTimeout);
            tracing::info!(participant = ?me, "signaling socket idle: closed");
        }
        End::SlowReader => {
            app.limits.count(Limit::SlowReader);
            tracing::info!(participant = ?me, "signaling client does not read: closed");
        }
    }
    if let Some(id) = me {
        app.state().leave(id);
    }
    drop(outbox);
    // The writer sends what was queued and closes the socket, unless the client does not
    // read (then it would wait on a full socket for ever).
    if !writer.is_finished()
        && (end == End::SlowReader
            || tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
                .await
                .is_err())
    {
        writer.abort();
    }
}

/// A data message (a binary frame, docs/protocol.md "Data messages") from participant `me`:
/// read here only to tell its client what is wrong with it (the error names the frame's
/// `seq` when it has one); its worker reads it again, stamps its sender and routes it.
fn data_in(app: &App, tx: &Outbound, me: Option<ParticipantId>, frame: Vec<u8>) {
    let seq = data::send_seq(&frame);
    if let Err(Reject(code, message)) = route_data(app, me, frame) {
        let mut e = json!({"type": "error", "code": code, "message": message});
        if let Some(seq) = seq {
            e["seq"] = json!(seq);
        }
        tx.send(e.to_string());
    }
}

fn route_data(app: &App, me: Option<ParticipantId>, frame: Vec<u8>) -> Result<(), Reject> {
    let id = me.ok_or_else(|| Reject("not_joined", "a data message before `join`".into()))?;
    if let Err(e) = data::parse_send(&frame) {
        return Err(Reject(e.code(), format!("data message refused: {e}")));
    }
    let worker = {
        let state = app.state();
        let p = state
            .participants
            .get(&id)
            .ok_or_else(|| Reject("internal", "participant is gone".into()))?;
        if !p.rights.data {
            return Err(app.auth.deny(Denied::Grant(Grant::Data)).into());
        }
        p.worker
    };
    app.pool.send(
        worker,
        Command::DataIn {
            member: MemberId(id),
            frame,
        },
    );
    Ok(())
}

enum Flow {
    Continue,
    Leave,
}

impl From<Bad> for Reject {
    fn from(b: Bad) -> Self {
        Reject(b.code, b.message)
    }
}

async fn handle(
    app: &App,
    tx: &Outbound,
    me: &mut Option<ParticipantId>,
    text: &str,
) -> Result<Flow, Reject> {
    let env = envelope(text)?;
    let msg = match (env.kind(), *me) {
        ("join", Some(_)) => {
            return Err(Reject(
                "already_joined",
                "this socket already joined a room".into(),
            ))
        }
        (kind, None) if env.needs_join() => {
            return Err(Reject("not_joined", format!("`{kind}` before `join`")))
        }
        _ => env.parse()?,
    };
    match (msg, *me) {
        (ClientMessage::Ping, _) => {
            tx.send(json!({"type": "pong"}).to_string());
            Ok(Flow::Continue)
        }
        (ClientMessage::Join(join), None) => {
            let room = join.room.as_str();
            let token = join.token.as_deref();
            // With API keys, the token decides: who this is, and whether it may join. A
            // refusal ends the session (after the error has been sent).
            let claims = match app.auth.room_access(token, room, &[Grant::Join]) {
                Ok(c) => c,
                Err(d) => {
                    tracing::info!(room, reason = d.reason(), "join refused: {d}");
                    tx.send(error_json(d.code(), &d.to_string()));
                    return Ok(Flow::Leave);
                }
            };
            let name = match &claims {
                Some(c) => c.display_name(),
                None => join.name.as_deref().ok_or_else(|| {
                    Reject("bad_message", "missing or non-string field `name`".into())
                })?,
            };
            valid_name("name", name)?;
            if let Some(node) = &app.cluster {
                // Who else is in the room, on other nodes: known before the answer.
                node.prepare_room(app, room)
                    .await
                    .map_err(|e| Reject("unavailable", e))?;
                // A full or draining node sends the client elsewhere.
                match node.admit(app, room) {
                    Ok(()) => {}
                    Err(Some(url)) => {
                        tx.send(
                            json!({"type": "error", "code": "redirect", "message": "join another node", "url": url})
                                .to_string(),
                        );
                        return Ok(Flow::Continue);
                    }
                    Err(None) => {
                        return Err(Reject(
                            "unavailable",
                            "this node is draining and no other node takes participants".into(),
                        ))
                    }
                }
            }
            // A client moving between nodes names its session on the other node.
            let replaces = join.replaces.as_deref().and_then(parse_participant_key);
            let rights = Rights::of(claims.as_ref());
            let mut state = app.state();
            let id = state
                .join_replacing(
                    room,
                    name,
                    Client::Socket(tx.clone()),
                    replaces,
                    rights,
                    join.auto_subscribe,
                )
                .map_err(|e| match e {
                    JoinError::Limit(e) => Reject::from(e),
                    other => Reject("unavailable", other.to_string()),
                })?;
            if let Some(c) = &claims {
                tracing::info!(participant = id, identity = %c.sub, "joined with a token");
            }
            *me = Some(id);
            let p = &state.participants[&id];
            let others: Vec<Value> = state.rooms[room]
                .participants
                .iter()
                .filter(|o| **o != id && Some(**o) != replaces)
                .filter_map(|o| state.participants.get(o))
                .map(|o| state.participant_json(o))
                .collect();
            let joined = json!({
                "type": "joined",
                "v": signal::PROTOCOL_VERSION,
                "room": room,
                "participant": {"id": participant_key(id), "name": p.name},
                "participants": others,
                "active_speaker": state.rooms[room].speaker.current().map(participant_key),
                "nodes": state.nodes,
            });
            tx.send(joined.to_string());
            Ok(Flow::Continue)
        }
        (
            ClientMessage::PublishOffer {
                sdp: offer,
                sources,
            },
            Some(id),
        ) => {
            app.limits.check_sdp(&offer, true)?;
            let (worker, peer) = {
                let mut state = app.state();
                let rights = state
                    .participants
                    .get(&id)
                    .map(|p| p.rights.clone())
                    .ok_or_else(|| Reject("internal", "participant is gone".into()))?;
                app.auth.count(rights.check_offer(&offer))?;
                state.offer_sources(id, sources);
                state
                    .publisher_peer(id)
                    .ok_or_else(|| Reject("internal", "participant is gone".into()))?
            };
            let reply = app
                .pool
                .call(worker, |req| Command::Publish { req, peer, offer })
                .await;
            match reply {
                Ok(ReplyBody::Sdp(sdp)) => {
                    let state = app.state();
                    let tracks: Vec<Value> = state
                        .participants
                        .get(&id)
                        .map(|p| p.tracks.iter().map(|t| state.track_json(*t)).collect())
                        .unwrap_or_default();
                    tx.send(
                        json!({"type": "publish_answer", "sdp": sdp, "tracks": tracks}).to_string(),
                    );
                    Ok(Flow::Continue)
                }
                Ok(_) => Err(Reject("internal", "unexpected reply".into())),
                Err(e) => Err(call_error(e)),
            }
        }
        (ClientMessage::SubscribeAnswer { sdp: answer }, Some(id)) => {
            app.limits.check_sdp(&answer, false)?;
            let (worker, peer) = {
                let state = app.state();
                let p = state
                    .participants
                    .get(&id)
                    .ok_or_else(|| Reject("internal", "participant is gone".into()))?;
                (
                    p.worker,
                    p.subscriber
                        .ok_or_else(|| Reject("internal", "no subscriber".into()))?,
                )
            };
            app.pool
                .call(worker, |req| Command::SubscriberAnswer {
                    req,
                    peer,
                    answer,
                })
                .await
                .map_err(call_error)?;
            Ok(Flow::Continue)
        }
        (ClientMessage::Mute { track, muted }, Some(id)) => {
            if app.state().set_muted(id, &track, muted) {
                Ok(Flow::Continue)
            } else {
                Err(Reject(
                    "unknown_track",
                    format!("`{track}` is not one of your tracks"),
                ))
            }
        }
        (ClientMessage::Quality { track, quality }, Some(id)) => {
            subscriber_call(app, id, &track, |s| {
                s.set_layer(id, &track, quality.layer())
            })
        }
        (ClientMessage::Subscribe { track }, Some(id)) => {
            subscriber_call(app, id, &track, |s| s.subscribe_by_name(id, &track))
        }
        (ClientMessage::Unsubscribe { track }, Some(id)) => {
            app.state()
                .unsubscribe_by_name(id, &track)
                .map_err(|e| Reject("unknown_track", format!("`{track}`: {e}")))?;
            Ok(Flow::Continue)
        }
        (ClientMessage::Leave, Some(_)) => Ok(Flow::Leave),
        // Kept out above: a second `join`, and the rest before `join`.
        (ClientMessage::Join(_), Some(_))
        | (
            ClientMessage::PublishOffer { .. }
            | ClientMessage::SubscribeAnswer { .. }
            | ClientMessage::Mute { .. }
            | ClientMessage::Quality { .. }
            | ClientMessage::Subscribe { .. }
            | ClientMessage::Unsubscribe { .. }
            | ClientMessage::Leave,
            None,
        ) => Err(Reject("internal", "unexpected message".into())),
    }
}

/// What participant `id` asks about another's `track` as a subscriber (`quality`,
/// `subscribe`): only with the `subscribe` grant, and `unknown_track` if `call` fails.
fn subscriber_call<E: std::fmt::Display>(
    app: &App,
    id: ParticipantId,
    track: &str,
    call: impl FnOnce(&mut crate::rooms::State) -> Result<(), E>,
) -> Result<Flow, Reject> {
    let mut state = app.state();
    if !state
        .participants
        .get(&id)
        .is_some_and(|p| p.rights.subscribe)
    {
        return Err(app.auth.deny(Denied::Grant(Grant::Subscribe)).into());
    }
    call(&mut state).map_err(|e| Reject("unknown_track", format!("`{track}`: {e}")))?;
    Ok(Flow::Continue)
}

fn valid_name(what: &str, s: &str) -> Result<(), Reject> {
    Ok(signal::valid_name(what, s)?)
}

fn call_error(e: sfumato_worker::CallError) -> Reject {
    use sfumato_worker::sfumato_core::Error as E;
    match e {
        sfumato_worker::CallError::Engine(e @ (E::BadSdp(_) | E::Negotiation(_))) => {
            Reject("bad_sdp", e.to_string())
        }
        other => Reject("internal", other.to_string()),
    }
}
