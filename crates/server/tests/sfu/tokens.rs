//! (6) Access tokens: a server with API keys admits only tokens they signed, for the room
//! they name and the grants they carry, on every entry point (WebSocket join, publish and
//! subscribe; WHIP; WHEP; the admin API); a refusal says why (401/403, or an `error` with a
//! code before the socket closes). Keys rotate (two valid at once, a removed one refused);
//! every node of a cluster accepts the same tokens; without keys the server stays open on
//! loopback only; `sfumato token create` makes tokens the server accepts.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sfumato_testkit::server::allocate_ports;
use sfumato_testkit::{
    http_delete, http_get, http_get_with, http_post_with, msg_type, poll_until,
    whep_play_with_token, whip_publish_with_token, Kind, Participant, Redis, ServerOptions,
    TestServer,
};

use crate::common::*;

const KEY: &str = "k1";
const SECRET: &str = "k1-secret-0123456789abcdef0123456789";
const KEY2: &str = "k2";
const SECRET2: &str = "k2-secret-abcdefghijklmnopqrstuvwxyz";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token of `claims` signed with `secret`, its header naming `kid`.
fn mint(kid: &str, secret: &str, claims: &Value) -> String {
    let header = Header {
        kid: Some(kid.to_string()),
        ..Header::new(Algorithm::HS256)
    };
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&header, claims, &key).expect("encoding a token")
}

/// Claims for `sub` in `room` with `grants`, valid for an hour from a minute ago.
fn claims(sub: &str, room: &str, grants: &[&str]) -> Value {
    let t = now();
    json!({"iss": KEY, "sub": sub, "room": room, "grants": grants, "exp": t + 3600, "nbf": t - 60})
}

/// A valid token of key `KEY`.
fn token(sub: &str, room: &str, grants: &[&str]) -> String {
    mint(KEY, SECRET, &claims(sub, room, grants))
}

fn admin_token() -> String {
    let t = now();
    mint(
        KEY,
        SECRET,
        &json!({"iss": KEY, "sub": "ops", "grants": ["admin"], "exp": t + 3600}),
    )
}

fn keyed(workers: usize, args: &[&str]) -> ServerOptions {
    ServerOptions {
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        admin_token: Some(admin_token()),
        ..ServerOptions::spread(workers)
    }
}

async fn start_keyed(workers: usize) -> TestServer {
    TestServer::start(
        BIN,
        keyed(workers, &["--api-key", KEY, "--api-secret", SECRET]),
    )
    .await
    .must("starting sfumato with an API key")
}

/// Joins with `token` (if any) and expects an `error` with `code` whose message contains
/// `reason`, after which the server closes the socket.
async fn join_refused(
    server: &TestServer,
    room: &str,
    token: Option<&str>,
    code: &str,
    reason: &str,
) {
    let mut p = Participant::connect(&server.ws_url())
        .await
        .must("WebSocket connects");
    let err = p
        .send_join_token(room, "mallory", token)
        .await
        .expect_err("the join is refused");
    let e = p
        .events_of("error")
        .pop()
        .unwrap_or_else(|| panic!("an error message, not {err:#}"));
    assert_eq!(e["code"], code, "{reason}: {e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(reason),
        "the reason should mention `{reason}`: {e}"
    );
    let closed = poll_until(SIGNAL, || p.is_closed()).await;
    assert!(
        closed.is_ok(),
        "the server closes the socket after refusing ({reason})"
    );
}

/// Expects `status` and a body containing `reason`.
fn refused(what: &str, r: &sfumato_testkit::HttpResponse, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", r.body);
    assert!(
        r.body.contains(reason),
        "{what}: the body should say `{reason}`: {:?}",
        r.body
    );
}

#[tokio::test]
async fn websocket_join_publish_and_subscribe_need_their_grants() {
    let _g = serial().await;
    let server = start_keyed(2).await;
    let room = "tok";
    let t = now();

    // Refused joins: no token, a bad one, or one that does not allow this join.
    join_refused(
        &server,
        room,
        None,
        "unauthorized",
        "requires an access token",
    )
    .await;
    join_refused(
        &server,
        room,
        Some("not.a.token"),
        "unauthorized",
        "malformed",
    )
    .await;
    let expired =
        json!({"iss": KEY, "sub": "m", "room": room, "grants": ["join"], "exp": t - 3600});
    join_refused(
        &server,
        room,
        Some(&mint(KEY, SECRET, &expired)),
        "unauthorized",
        "expired",
    )
    .await;
    let early = json!({"iss": KEY, "sub": "m", "room": room, "grants": ["join"], "exp": t + 7200, "nbf": t + 3600});
    join_refused(
        &server,
        room,
        Some(&mint(KEY, SECRET, &early)),
        "unauthorized",
        "not valid yet",
    )
    .await;
    let good = claims("m", room, &["join"]);
    join_refused(
        &server,
        room,
        Some(&mint(KEY, "another-secret-0123456789abcdef0123", &good)),
        "unauthorized",
        "signature",
    )
    .await;
    join_refused(
        &server,
        room,
        Some(&mint(
            "nope",
            SECRET,
            &json!({"sub": "m", "room": room, "grants": ["join"], "exp": t + 60}),
        )),
        "unauthorized",
        "unknown API key `nope`",
    )
    .await;
    join_refused(
        &server,
        room,
        Some(&token("m", "elsewhere", &["join", "publish", "subscribe"])),
        "forbidden",
        "room `elsewhere`",
    )
    .await;
    join_refused(
        &server,
        room,
        Some(&token("m", room, &["publish", "subscribe"])),
        "forbidden",
        "`join`",
    )
    .await;

    // A subscriber, and a participant who may only be there.
    let bob = Participant::join_with_token(
        &server.ws_url(),
        room,
        "bob",
        &token("bob", room, &["join", "subscribe"]),
    )
    .await
    .must("bob joins");
    let mut carol = Participant::join_with_token(
        &server.ws_url(),
        room,
        "carol",
        &token("carol", room, &["join"]),
    )
    .await
    .must("carol joins");

    // The identity and name come from the token: alice's is made by `sfumato token create`.
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--room",
            room,
            "--identity",
            "alice",
            "--name",
            "Alice A.",
            "--grant",
            "join,publish",
            "--ttl",
            "10m",
        ])
        .output()
        .expect("running sfumato token create");
    assert!(out.status.success(), "token create: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let alice_token = stdout.lines().last().unwrap_or_default().trim().to_string();
    let mut alice = Participant::join_with_token(&server.ws_url(), room, "ignored", &alice_token)
        .await
        .must("alice joins with the token of `sfumato token create`");
    assert_eq!(
        alice.joined().map(|j| j["participant"]["name"].clone()),
        Some(json!("Alice A.")),
        "the name comes from the token"
    );
    alice.publish().await.must("alice may publish");
    let aid = alice.id();
    wait_received_from(&bob, &aid, Kind::Video, 50).await;
    wait_received_from(&bob, &aid, Kind::Audio, 50).await;

    // Carol may not receive: she was offered nothing, and may not ask for a layer.
    assert_eq!(carol.subscribe_offers(), 0, "carol has no subscribe grant");
    let video = track_id(alice.published_tracks(), "video");
    let mark = carol.event_count();
    carol
        .send_json(&json!({"type": "quality", "track": video, "quality": "low"}))
        .must("sending quality");
    let e = carol.wait_error_since(mark, SIGNAL).await.must("an error");
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`subscribe`"),
        "{e}"
    );
    // Nor ask for a track.
    let mark = carol.event_count();
    carol
        .send_json(&json!({"type": "subscribe", "track": video}))
        .must("sending subscribe");
    let e = carol.wait_error_since(mark, SIGNAL).await.must("an error");
    assert_eq!(e["code"], "forbidden", "{e}");
    assert_eq!(
        carol.subscribe_offers(),
        0,
        "carol still has no subscribe offer"
    );
    // Nor send data messages (no `data` grant), though she receives them.
    let mark = carol.event_count();
    carol
        .send_data(1, true, "t", &[], b"hi")
        .must("sending data");
    let e = carol.wait_error_since(mark, SIGNAL).await.must("an error");
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains("`data`"),
        "{e}"
    );
    // Nor publish; the socket stays open.
    let err = carol.publish().await.expect_err("carol may not publish");
    assert!(format!("{err:#}").contains("forbidden"), "{err:#}");
    let mark = carol.event_count();
    carol.send_json(&json!({"type": "ping"})).must("ping");
    carol
        .wait_event_since(mark, SIGNAL, |e| msg_type(e) == "pong")
        .await
        .must("carol's socket is still open after a refused publish");

    // Publishing is limited to the token's sources; data channels need `data`.
    let mut dave = Participant::join_with_token(&server.ws_url(), room, "dave", &{
        let mut c = claims("dave", room, &["join", "publish"]);
        c["sources"] = json!(["audio"]);
        mint(KEY, SECRET, &c)
    })
    .await
    .must("dave joins");
    let err = dave.publish().await.expect_err("dave may not send video");
    assert!(
        format!("{err:#}").contains("may not publish video"),
        "{err:#}"
    );
    let mark = dave.event_count();
    dave.send_json(&json!({
        "type": "publish_offer",
        "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    }))
    .must("sending an offer with a data channel");
    let e = dave.wait_error_since(mark, SIGNAL).await.must("an error");
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains("`data`"),
        "{e}"
    );

    // Every refusal is counted by reason.
    let metrics = http_get_with(&server.url("/metrics"), Some(&admin_token()))
        .await
        .must("GET /metrics");
    for reason in [
        "missing",
        "malformed",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "unknown_key",
        "room",
        "grant",
        "source",
    ] {
        let line = format!("sfumato_auth_rejected_total{{reason=\"{reason}\"}} ");
        let n: u64 = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(n >= 1, "{reason} counted: {}", metrics.body);
    }

    for p in [alice, bob, carol, dave] {
        p.leave().await.must("leaving");
    }
    assert_idle(&server).await;
}

#[tokio::test]
async fn whip_and_whep_need_bearer_tokens_with_their_grants() {
    let _g = serial().await;
    let server = start_keyed(2).await;
    let room = "cast";
    let whip = server.url(&format!("/whip/{room}?name=ignored"));
    let whep = server.url(&format!("/whep/{room}"));
    let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n";

    // Refusals come before the offer is looked at.
    for (what, url, token, status, reason) in [
        (
            "WHIP without a token",
            &whip,
            None,
            401,
            "requires an access token",
        ),
        (
            "WHIP without publish",
            &whip,
            Some(token("cam", room, &["join", "subscribe"])),
            403,
            "`publish`",
        ),
        (
            "WHIP for another room",
            &whip,
            Some(token("cam", "other", &["join", "publish"])),
            403,
            "room `other`",
        ),
        (
            "WHIP with an expired token",
            &whip,
            Some(mint(
                KEY,
                SECRET,
                &json!({"iss": KEY, "sub": "cam", "room": room, "grants": ["join", "publish"], "exp": now() - 600}),
            )),
            401,
            "expired",
        ),
        (
            "WHEP without a token",
            &whep,
            None,
            401,
            "requires an access token",
        ),
        (
            "WHEP without subscribe",
            &whep,
            Some(token("v", room, &["join", "publish"])),
            403,
            "`subscribe`",
        ),
        (
            "WHEP without join",
            &whep,
            Some(token("v", room, &["subscribe"])),
            403,
            "`join`",
        ),
    ] {
        let r = http_post_with(url, Some("application/sdp"), offer, token.as_deref())
            .await
            .must(what);
        refused(what, &r, status, reason);
        let challenge = r.www_authenticate.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
    }
    let mut audio_only = claims("cam", room, &["join", "publish"]);
    audio_only["sources"] = json!(["audio"]);
    let r = whip_publish_with_token(&whip, &mint(KEY, SECRET, &audio_only)).await;
    let err = r.expect_err("an audio-only token may not publish video");
    assert!(format!("{err:#}").contains("403"), "{err:#}");

    // The granted ones work, named by their token.
    let mut cam_claims = claims("cam", room, &["join", "publish"]);
    cam_claims["name"] = json!("Camera 1");
    let cam = whip_publish_with_token(&whip, &mint(KEY, SECRET, &cam_claims))
        .await
        .must("WHIP with a publish token");
    cam.peer()
        .wait_connected(CONNECT)
        .await
        .must("WHIP PC connects");
    let viewer = whep_play_with_token(&whep, &token("v", room, &["join", "subscribe"]))
        .await
        .must("WHEP with a subscribe token");
    viewer
        .peer()
        .wait_connected(CONNECT)
        .await
        .must("WHEP PC connects");
    let p = viewer.peer();
    let got = poll_until(MEDIA, || p.received_count(Kind::Video) >= 50).await;
    assert!(got.is_ok(), "the WHEP viewer plays: {:?}", p.counts());
    let listed = server.room(room).await.must("GET /api/rooms/{room}");
    let names: Vec<Value> = listed
        .as_ref()
        .and_then(|r| r["participants"].as_array())
        .map(|ps| ps.iter().map(|p| p["name"].clone()).collect())
        .unwrap_or_default();
    assert!(names.contains(&json!("Camera 1")), "{listed:?}");

    // The session URLs: their unguessable id is what ends a session (no token needed); a
    // made-up one is 404.
    let fake = server.url(&format!("/whip/{room}/0123456789abcdef0123456789abcdef"));
    let r = http_delete(&fake).await.must("DELETE a made-up session");
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(viewer.close().await.must("WHEP DELETE"), 200);
    assert_eq!(cam.close().await.must("WHIP DELETE"), 200);
    assert_idle(&server).await;
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_grant() {
    let _g = serial().await;
    let server = start_keyed(1).await;
    let room = "adm";
    let bob = Participant::join_with_token(
        &server.ws_url(),
        room,
        "bob",
        &token("bob", room, &["join", "subscribe"]),
    )
    .await
    .must("bob joins");
    let participant = token("bob", room, &["join", "publish", "subscribe"]);
    let room_admin = token("mod", room, &["room_admin"]);
    let other_room_admin = token("mod", "other", &["room_admin"]);
    let admin = admin_token();

    for path in ["/api/rooms", "/api/workers", "/api/nodes", "/metrics"] {
        let url = server.url(path);
        let r = http_get_with(&url, None).await.must(path);
        refused(path, &r, 401, "requires an access token");
        let r = http_get_with(&url, Some(&participant)).await.must(path);
        refused(path, &r, 403, "`admin`");
        let r = http_get_with(&url, Some(&room_admin)).await.must(path);
        refused(path, &r, 403, "`admin`");
        let r = http_get_with(&url, Some(&admin)).await.must(path);
        assert_eq!(r.status, 200, "{path} with an admin token: {:?}", r.body);
    }
    let drain = server.url("/api/nodes/n1/drain");
    let r = http_post_with(&drain, None, "", Some(&participant))
        .await
        .must("POST drain");
    refused("POST drain without admin", &r, 403, "`admin`");
    let r = http_post_with(&drain, None, "", Some(&admin))
        .await
        .must("POST drain");
    assert_eq!(
        r.status, 404,
        "admitted, then: not in a cluster: {:?}",
        r.body
    );

    // One room's endpoint: its room_admin too.
    let url = server.url(&format!("/api/rooms/{room}"));
    for (who, t) in [("admin", &admin), ("room_admin", &room_admin)] {
        let r = http_get_with(&url, Some(t)).await.must(who);
        assert_eq!(r.status, 200, "{who}: {:?}", r.body);
    }
    let r = http_get_with(&url, Some(&other_room_admin))
        .await
        .must("other");
    refused("room_admin of another room", &r, 403, "room `other`");
    let r = http_get_with(&url, Some(&participant))
        .await
        .must("participant");
    refused("a participant's token", &r, 403, "`admin`");

    // A 401 carries a Bearer challenge; health and the demo page stay open.
    let r = http_get(&server.url("/api/rooms"))
        .await
        .must("GET /api/rooms");
    let challenge = r.www_authenticate.unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate {challenge:?}"
    );
    for path in ["/healthz", "/", "/sdk/sfumato.js"] {
        let r = http_get(&server.url(path)).await.must(path);
        assert_eq!(r.status, 200, "{path} is open");
    }
    bob.leave().await.must("bob leaves");
}

#[tokio::test]
async fn keys_rotate_two_valid_at_once_and_a_removed_one_refused() {
    let _g = serial().await;
    let dir = std::env::temp_dir().join(format!("sfumato-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("sfumato.toml");
    let both = format!("[keys]\n{KEY} = \"{SECRET}\"\n{KEY2} = \"{SECRET2}\"\n");
    std::fs::write(&file, both).expect("writing the config");
    let config = file.to_string_lossy().to_string();
    let room = "rot";
    let old = token("a", room, &["join"]);
    let mut new_claims = claims("b", room, &["join"]);
    new_claims["iss"] = json!(KEY2);
    let new = mint(KEY2, SECRET2, &new_claims);

    let server = TestServer::start(BIN, keyed(1, &["--config", &config]))
        .await
        .must("starting with two keys");
    for (label, t) in [("the old key", &old), ("the new key", &new)] {
        let p = Participant::join_with_token(&server.ws_url(), room, "x", t)
            .await
            .unwrap_or_else(|e| panic!("a token of {label} is accepted: {e:#}"));
        p.leave().await.must("leaving");
    }
    drop(server);

    // The old key is removed: its tokens are refused, the new key's still accepted.
    std::fs::write(&file, format!("[keys]\n{KEY2} = \"{SECRET2}\"\n")).expect("config");
    let mut opts = keyed(1, &["--config", &config]);
    opts.admin_token = None;
    let server = TestServer::start(BIN, opts)
        .await
        .must("starting with the new key only");
    join_refused(
        &server,
        room,
        Some(&old),
        "unauthorized",
        "unknown API key `k1`",
    )
    .await;
    let p = Participant::join_with_token(&server.ws_url(), room, "x", &new)
        .await
        .must("the new key's token is still accepted");
    p.leave().await.must("leaving");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn every_node_of_a_cluster_accepts_the_same_tokens() {
    let _g = serial().await;
    let redis = Redis::start().await.must("starting redis-server");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut opts = keyed(1, &["--api-key", KEY, "--api-secret", SECRET]);
        opts.redis = Some(redis.url());
        nodes.push(
            TestServer::start(BIN, opts)
                .await
                .must("starting a cluster node"),
        );
    }
    for node in &nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let n = node
                .nodes()
                .await
                .ok()
                .and_then(|v| v["nodes"].as_array().map(Vec::len))
                .unwrap_or(0);
            if n == 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "both nodes listed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let room = "both";
    let mut alice = Participant::join_with_token(
        &nodes[0].ws_url(),
        room,
        "alice",
        &token("alice", room, &["join", "publish"]),
    )
    .await
    .must("alice joins node 1");
    alice.publish().await.must("alice publishes");
    let bob = Participant::join_with_token(
        &nodes[1].ws_url(),
        room,
        "bob",
        &token("bob", room, &["join", "subscribe"]),
    )
    .await
    .must("bob joins node 2 with a token of the same key");
    wait_received_from(&bob, &alice.id(), Kind::Video, 30).await;
    join_refused(
        &nodes[1],
        room,
        None,
        "unauthorized",
        "requires an access token",
    )
    .await;
    bob.leave().await.must("bob leaves");
    alice.leave().await.must("alice leaves");
}

#[tokio::test]
async fn without_keys_the_server_is_open_on_loopback_only() {
    let _g = serial().await;
    // On loopback: open, and it says so.
    let server = start(1).await;
    let said = poll_until(SIGNAL, || {
        server.logs().iter().any(|l| l.contains("development mode"))
    })
    .await;
    assert!(
        said.is_ok(),
        "a log line about development mode: {:?}",
        server.logs()
    );
    let p = Participant::join(&server.ws_url(), "open", "anyone")
        .await
        .must("anyone joins without a token");
    p.leave().await.must("leaving");
    drop(server);

    // Elsewhere: it refuses to start, and says how to make keys.
    let (http, rtc) = allocate_ports(1).must("ports");
    let out = Command::new(BIN)
        .args([
            "--listen",
            &format!("0.0.0.0:{http}"),
            "--rtc-port",
            &rtc.to_string(),
            "--workers",
            "1",
        ])
        .env_remove("SFUMATO_API_KEY")
        .env_remove("SFUMATO_API_SECRET")
        .stdin(Stdio::null())
        .output()
        .expect("running sfumato");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not start: {stderr}");
    for hint in [
        "sfumato key create",
        "sfumato token create",
        "--api-key",
        "--insecure-open",
    ] {
        assert!(
            stderr.contains(hint),
            "the refusal mentions `{hint}`: {stderr}"
        );
    }

    // With --insecure-open it starts (and warns).
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            &format!("0.0.0.0:{http}"),
            "--announce-ip",
            "127.0.0.1",
            "--rtc-port",
            &rtc.to_string(),
            "--workers",
            "1",
            "--insecure-open",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sfumato --insecure-open");
    let health = format!("http://127.0.0.1:{http}/healthz");
    let up = poll_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
    })
    .await;
    let answered = match up {
        Ok(()) => http_get(&health).await.map(|r| r.status).unwrap_or(0),
        Err(_) => 0,
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answered, 200, "sfumato --insecure-open answers {health}");
}
