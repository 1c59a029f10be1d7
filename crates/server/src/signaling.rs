//! The WebSocket signaling endpoint (docs/protocol.md): one socket per participant, JSON
//! messages validated before anything acts on them. A bad message gets an `error` reply and
//! the session carries on. Once joined, a session lasts as long as its participant: when the
//! control plane lets the participant go (its worker died), the socket closes.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxumState;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfumato_worker::sfumato_core::{Command, ReplyBody};
use tokio::sync::mpsc;

use crate::auth::{Denied, Grant, Rights};
use crate::rooms::{parse_participant_key, participant_key, Client, ParticipantId};
use crate::App;

pub const PROTOCOL_VERSION: u64 = 1;
/// Largest message we read; larger ones get `too_large`. A browser's answer runs about
/// 1.1 KB per m-line: 64 KiB stopped at ~30 tracks (a 30-person room's audio and video),
/// 1 MiB takes ~900.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Frames larger than this close the socket (the WebSocket layer refuses them).
const MAX_FRAME: usize = 4 * 1024 * 1024;
const MAX_NAME: usize = 64;

pub async fn upgrade(ws: WebSocketUpgrade, AxumState(app): AxumState<App>) -> Response {
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| session(app, socket))
}

/// A client error: a code from the protocol and a human-readable reason.
struct Reject(&'static str, String);

impl From<Denied> for Reject {
    fn from(d: Denied) -> Self {
        Reject(d.code(), d.to_string())
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
    Own(mpsc::UnboundedSender<String>),
    Participant(mpsc::WeakUnboundedSender<String>),
}

impl Outbox {
    /// A sender for one message's handling, if the participant is still there.
    fn sender(&self) -> Option<mpsc::UnboundedSender<String>> {
        match self {
            Outbox::Own(tx) => Some(tx.clone()),
            Outbox::Participant(weak) => weak.upgrade(),
        }
    }
}

async fn session(app: App, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut outbox = Outbox::Own(tx);
    let mut shutdown = app.shutdown.clone();
    let mut me: Option<ParticipantId> = None;
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = shutdown.changed() => break,
            // The participant is gone (or the client stopped reading): nothing more to say.
            _ = &mut writer => break,
        };
        let Some(Ok(msg)) = msg else { break };
        let Some(tx) = outbox.sender() else { break };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let _ = tx.send(error_json(
                    "bad_message",
                    "binary frames are not part of the protocol",
                ));
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if text.len() > MAX_MESSAGE {
            let _ = tx.send(error_json(
                "too_large",
                &format!("messages are limited to {MAX_MESSAGE} bytes"),
            ));
            continue;
        }
        match handle(&app, &tx, &mut me, text.as_str()).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Leave) => break,
            Err(Reject(code, message)) => {
                let _ = tx.send(error_json(code, &message));
            }
        }
        if me.is_some() {
            outbox = Outbox::Participant(tx.downgrade());
        }
    }
    if let Some(id) = me {
        app.state().leave(id);
    }
    drop(outbox);
    if !writer.is_finished() {
        let _ = writer.await;
    }
}

enum Flow {
    Continue,
    Leave,
}

fn field<'a>(msg: &'a Value, name: &str) -> Result<&'a str, Reject> {
    msg.get(name).and_then(Value::as_str).ok_or_else(|| {
        Reject(
            "bad_message",
            format!("missing or non-string field `{name}`"),
        )
    })
}

async fn handle(
    app: &App,
    tx: &mpsc::UnboundedSender<String>,
    me: &mut Option<ParticipantId>,
    text: &str,
) -> Result<Flow, Reject> {
    let msg: Value =
        serde_json::from_str(text).map_err(|e| Reject("bad_message", format!("not JSON: {e}")))?;
    if !msg.is_object() {
        return Err(Reject("bad_message", "a message is a JSON object".into()));
    }
    let kind = field(&msg, "type")?;
    match (kind, *me) {
        ("ping", _) => {
            let _ = tx.send(json!({"type": "pong"}).to_string());
            Ok(Flow::Continue)
        }
        ("join", Some(_)) => Err(Reject(
            "already_joined",
            "this socket already joined a room".into(),
        )),
        ("join", None) => {
            let v = msg.get("v").and_then(Value::as_u64).unwrap_or(0);
            if v != PROTOCOL_VERSION {
                return Err(Reject(
                    "unsupported_version",
                    format!("protocol version {PROTOCOL_VERSION} is supported, not {v}"),
                ));
            }
            let room = field(&msg, "room")?;
            valid_name("room", room)?;
            let token = match msg.get("token") {
                None | Some(Value::Null) => None,
                Some(t) => Some(
                    t.as_str()
                        .ok_or_else(|| Reject("bad_message", "`token` is a string".into()))?,
                ),
            };
            // With API keys, the token decides: who this is, and whether it may join. A
            // refusal ends the session (after the error has been sent).
            let claims = match app.auth.room_access(token, room, &[Grant::Join]) {
                Ok(c) => c,
                Err(d) => {
                    tracing::info!(room, reason = d.reason(), "join refused: {d}");
                    let _ = tx.send(error_json(d.code(), &d.to_string()));
                    return Ok(Flow::Leave);
                }
            };
            let name = match &claims {
                Some(c) => c.display_name(),
                None => field(&msg, "name")?,
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
                        let _ = tx.send(
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
            let replaces = msg
                .get("replaces")
                .and_then(Value::as_str)
                .and_then(parse_participant_key);
            let rights = Rights::of(claims.as_ref());
            let mut state = app.state();
            let id = state
                .join_replacing(room, name, Client::Socket(tx.clone()), replaces, rights)
                .map_err(|e| Reject("unavailable", e.to_string()))?;
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
                "v": PROTOCOL_VERSION,
                "room": room,
                "participant": {"id": participant_key(id), "name": p.name},
                "participants": others,
                "active_speaker": state.rooms[room].speaker.current().map(participant_key),
                "nodes": state.nodes,
            });
            let _ = tx.send(joined.to_string());
            Ok(Flow::Continue)
        }
        (_, None) if is_client_type(kind) => {
            Err(Reject("not_joined", format!("`{kind}` before `join`")))
        }
        ("publish_offer", Some(id)) => {
            let offer = field(&msg, "sdp")?.to_string();
            let (worker, peer) = {
                let mut state = app.state();
                let rights = state
                    .participants
                    .get(&id)
                    .map(|p| p.rights.clone())
                    .ok_or_else(|| Reject("internal", "participant is gone".into()))?;
                app.auth.count(rights.check_offer(&offer))?;
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
                    let _ = tx.send(
                        json!({"type": "publish_answer", "sdp": sdp, "tracks": tracks}).to_string(),
                    );
                    Ok(Flow::Continue)
                }
                Ok(_) => Err(Reject("internal", "unexpected reply".into())),
                Err(e) => Err(call_error(e)),
            }
        }
        ("subscribe_answer", Some(id)) => {
            let answer = field(&msg, "sdp")?.to_string();
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
        ("mute", Some(id)) => {
            let track = field(&msg, "track")?;
            let muted = msg.get("muted").and_then(Value::as_bool).ok_or_else(|| {
                Reject("bad_message", "missing or non-boolean field `muted`".into())
            })?;
            if app.state().set_muted(id, track, muted) {
                Ok(Flow::Continue)
            } else {
                Err(Reject(
                    "unknown_track",
                    format!("`{track}` is not one of your tracks"),
                ))
            }
        }
        ("quality", Some(id)) => {
            let track = field(&msg, "track")?;
            let layer = match field(&msg, "quality")? {
                "low" => Some(0),
                "medium" => Some(1),
                "high" => Some(2),
                "off" => None,
                other => {
                    return Err(Reject(
                        "bad_message",
                        format!("`quality` is low, medium, high or off, not `{other}`"),
                    ))
                }
            };
            let mut state = app.state();
            if !state
                .participants
                .get(&id)
                .is_some_and(|p| p.rights.subscribe)
            {
                return Err(app.auth.deny(Denied::Grant(Grant::Subscribe)).into());
            }
            state
                .set_layer(id, track, layer)
                .map_err(|e| Reject("unknown_track", format!("`{track}`: {e}")))?;
            Ok(Flow::Continue)
        }
        ("leave", Some(_)) => Ok(Flow::Leave),
        _ => Err(Reject(
            "unknown_type",
            format!("unknown message type `{kind}`"),
        )),
    }
}

fn is_client_type(kind: &str) -> bool {
    matches!(
        kind,
        "publish_offer" | "subscribe_answer" | "mute" | "quality" | "leave"
    )
}

fn valid_name(what: &str, s: &str) -> Result<(), Reject> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(Reject(
            "bad_message",
            format!("`{what}` must be 1 to {MAX_NAME} bytes without control characters"),
        ));
    }
    Ok(())
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
