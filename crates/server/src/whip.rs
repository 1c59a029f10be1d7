//! WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep), non-trickle: one POST with an SDP offer
//! creates a session whose answer comes back in the 201; DELETE on its Location ends it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sfumato_signal::sdp::{offer_body, BodyError};
use sfumato_worker::sfumato_core::{Command, ReplyBody};

use crate::auth::{bearer, Claims, Denied, Grant, Rights};
use crate::rooms::{parse_participant_key, Client, JoinError, ParticipantId};
use crate::App;

#[derive(Deserialize)]
pub struct NameQuery {
    name: Option<String>,
}

fn plain(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason.into(),
    )
        .into_response()
}

/// Checks the content type and the limits of an SDP body (`publishing`: a WHIP offer);
/// returns the offer text.
fn sdp_body(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    publishing: bool,
) -> Result<String, (StatusCode, String)> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let offer = offer_body(ctype, body).map_err(|e| {
        let status = match e {
            BodyError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::NotUtf8 => StatusCode::BAD_REQUEST,
        };
        (status, e.to_string())
    })?;
    app.limits
        .check_sdp(offer, publishing)
        .map_err(|e| (e.limit.status(), e.message))?;
    Ok(offer.to_string())
}

fn created(location: String, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response()
}

/// With API keys: the `Authorization: Bearer` token grants `needs` in `room`, and the offer
/// stays within it. `Err`: why not (the `401` or `403` to answer).
fn authorize(
    app: &App,
    headers: &HeaderMap,
    room: &str,
    needs: &[Grant],
    offer: &str,
) -> Result<(Option<Claims>, Rights), Denied> {
    let claims = app
        .auth
        .room_access(bearer(headers), room, needs)
        .inspect_err(|d| {
            tracing::info!(room, reason = d.reason(), "WHIP/WHEP session refused: {d}");
        })?;
    let rights = Rights::of(claims.as_ref());
    app.auth.count(rights.check_offer(offer))?;
    Ok((claims, rights))
}

fn join_error(e: JoinError) -> Response {
    match e {
        JoinError::Limit(e) => plain(e.limit.status(), e.message),
        other => plain(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

fn engine_error(e: sfumato_worker::CallError) -> Response {
    match e {
        sfumato_worker::CallError::Engine(e) => plain(StatusCode::BAD_REQUEST, e.to_string()),
        other => plain(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

pub async fn whip_post(
    AxumState(app): AxumState<App>,
    Path(room): Path<String>,
    Query(q): Query<NameQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match sdp_body(&app, &headers, &body, true) {
        Ok(o) => o,
        Err((status, reason)) => return plain(status, reason),
    };
    let (claims, rights) = match authorize(
        &app,
        &headers,
        &room,
        &[Grant::Join, Grant::Publish],
        &offer,
    ) {
        Ok(c) => c,
        Err(denied) => return denied.response(),
    };
    // With a token, its name; else the `?name=` query.
    let name = match &claims {
        Some(c) => c.display_name().to_string(),
        None => q.name.unwrap_or_else(|| "whip".to_string()),
    };
    if let Err(e) = prepare(&app, &room, &uri).await {
        return e;
    }
    let (id, worker, peer) = {
        let mut state = app.state();
        let id = match state.join(&room, &name, Client::Whip, rights) {
            Ok(id) => id,
            Err(e) => return join_error(e),
        };
        let Some((worker, peer)) = state.publisher_peer(id) else {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "participant vanished");
        };
        (id, worker, peer)
    };
    match app
        .pool
        .call(worker, |req| Command::Publish { req, peer, offer })
        .await
    {
        Ok(ReplyBody::Sdp(answer)) => created(format!("/whip/{room}/{}", token(&app, id)), answer),
        Ok(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply"),
        Err(e) => {
            app.state().leave(id);
            engine_error(e)
        }
    }
}

pub async fn whip_delete(
    AxumState(app): AxumState<App>,
    Path((room, session)): Path<(String, String)>,
) -> Response {
    end_session(&app, &room, &session, |c| matches!(c, Client::Whip))
}

pub async fn whep_delete(
    AxumState(app): AxumState<App>,
    Path((room, session)): Path<(String, String)>,
) -> Response {
    end_session(&app, &room, &session, |c| matches!(c, Client::Whep { .. }))
}

/// In a cluster, before a session joins `room`: who else is in it (a 503 if Redis cannot
/// say), and whether this node takes it: a full or draining node answers `307` to the same
/// path on another node (WHIP and WHEP clients follow redirects).
async fn prepare(app: &App, room: &str, uri: &Uri) -> Result<(), Response> {
    let Some(node) = &app.cluster else {
        return Ok(());
    };
    node.prepare_room(app, room)
        .await
        .map_err(|e| plain(StatusCode::SERVICE_UNAVAILABLE, e))?;
    match node.admit(app, room) {
        Ok(()) => Ok(()),
        Err(Some(url)) => Err((
            StatusCode::TEMPORARY_REDIRECT,
            [(
                header::LOCATION,
                format!("{url}{}", uri.path_and_query().map_or("", |p| p.as_str())),
            )],
            "this node is full or draining: use the other node",
        )
            .into_response()),
        Err(None) => Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is draining and no other node takes sessions",
        )),
    }
}

/// The token of session `id`'s URL.
fn token(app: &App, id: ParticipantId) -> String {
    app.state()
        .participants
        .get(&id)
        .and_then(|p| p.session.clone())
        .unwrap_or_default()
}

fn end_session(app: &App, room: &str, session: &str, kind: impl Fn(&Client) -> bool) -> Response {
    let mut state = app.state();
    let found = state.session(session).filter(|id| {
        state
            .participants
            .get(id)
            .is_some_and(|p| p.room == room && kind(&p.client))
    });
    match found {
        Some(id) => {
            state.leave(id);
            plain(StatusCode::OK, "session ended")
        }
        None => plain(StatusCode::NOT_FOUND, "no such session"),
    }
}

pub async fn whep_post_first(
    AxumState(app): AxumState<App>,
    Path(room): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    whep(app, room, None, uri, headers, body).await
}

pub async fn whep_post_chosen(
    AxumState(app): AxumState<App>,
    Path((room, participant)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    whep(app, room, Some(participant), uri, headers, body).await
}

async fn whep(
    app: App,
    room: String,
    chosen: Option<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match sdp_body(&app, &headers, &body, false) {
        Ok(o) => o,
        Err((status, reason)) => return plain(status, reason),
    };
    let (claims, rights) = match authorize(
        &app,
        &headers,
        &room,
        &[Grant::Join, Grant::Subscribe],
        &offer,
    ) {
        Ok(c) => c,
        Err(denied) => return denied.response(),
    };
    let name = claims
        .as_ref()
        .map_or("whep", |c| c.display_name())
        .to_string();
    if let Err(e) = prepare(&app, &room, &uri).await {
        return e;
    }
    let (id, worker, peer) = {
        let mut state = app.state();
        if !state.rooms.contains_key(&room) {
            return plain(StatusCode::NOT_FOUND, format!("no room `{room}`"));
        }
        let target: Option<ParticipantId> = match &chosen {
            None => state.first_publisher(&room),
            Some(key) => parse_participant_key(key)
                .filter(|id| state.participants.get(id).is_some_and(|p| p.room == room))
                .or_else(|| {
                    // Also accept a participant's name.
                    state.rooms[&room]
                        .participants
                        .iter()
                        .copied()
                        .find(|id| state.participants.get(id).is_some_and(|p| &p.name == key))
                }),
        };
        let Some(target) = target else {
            return plain(StatusCode::NOT_FOUND, "no such publisher in this room");
        };
        let id = match state.join(&room, &name, Client::Whep { target }, rights) {
            Ok(id) => id,
            Err(e) => return join_error(e),
        };
        let Some((worker, peer)) = state.viewer_peer(id) else {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "participant vanished");
        };
        (id, worker, peer)
    };
    match app
        .pool
        .call(worker, |req| Command::CreateViewer { req, peer, offer })
        .await
    {
        Ok(ReplyBody::Sdp(answer)) => {
            app.state().subscribe_viewer(id);
            created(format!("/whep/{room}/session/{}", token(&app, id)), answer)
        }
        Ok(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply"),
        Err(e) => {
            app.state().leave(id);
            engine_error(e)
        }
    }
}
