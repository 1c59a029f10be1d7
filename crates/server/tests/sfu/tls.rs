//! HTTPS and WSS: a server started with `--tls-self-signed` carries a call between two
//! participants signaling over WSS, serves its API over HTTPS, and shrugs off clients that
//! do not speak TLS.

use sfumato_testkit::{http_get, Kind, Participant, ServerOptions, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

async fn start_tls() -> TestServer {
    let opts = ServerOptions {
        tls: true,
        ..ServerOptions::spread(2)
    };
    match TestServer::start(BIN, opts).await {
        Ok(s) => s,
        Err(e) => panic!("starting sfumato --tls-self-signed: {e:#}"),
    }
}

/// Clients that fail their handshake: plain HTTP, a plain WebSocket, bytes that are not
/// TLS, and one that connects and says nothing for a moment.
async fn misbehave(server: &TestServer) {
    let plain = format!("http://127.0.0.1:{}/healthz", server.http_port);
    assert!(
        http_get(&plain).await.is_err(),
        "plain HTTP on the HTTPS port must fail"
    );
    let plain_ws = format!("ws://127.0.0.1:{}/ws", server.http_port);
    assert!(
        Participant::connect(&plain_ws).await.is_err(),
        "a plain WebSocket on the HTTPS port must fail"
    );
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", server.http_port))
        .await
        .expect("TCP connect");
    let _ = garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await;
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(SIGNAL, garbage.read(&mut buf)).await;
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", server.http_port))
        .await
        .expect("TCP connect");
}

#[tokio::test]
async fn a_call_over_wss_with_a_self_signed_certificate() {
    let _g = serial().await;
    let server = start_tls().await;
    assert!(server.ws_url().starts_with("wss://"), "{}", server.ws_url());
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("sfumato is up: open https://")),
        "the start line should point at https"
    );
    misbehave(&server).await;
    assert!(server.healthy().await, "the listener survives bad clients");

    // The demo page and the admin API over HTTPS.
    let page = http_get(&server.url("/")).await.must("GET / over https");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html") || page.body.contains("<!doctype"));

    let room = "tls";
    let mut alice = Participant::join(&server.ws_url(), room, "alice")
        .await
        .must("alice joins over wss");
    let mut bob = Participant::join(&server.ws_url(), room, "bob")
        .await
        .must("bob joins over wss");
    alice.publish().await.must("alice publishes");
    bob.publish().await.must("bob publishes");
    let (a, b) = (alice.id(), bob.id());
    for kind in [Kind::Audio, Kind::Video] {
        alice
            .wait_subscribed(&b, kind, CONNECT)
            .await
            .must("alice is sent bob's track");
        bob.wait_subscribed(&a, kind, CONNECT)
            .await
            .must("bob is sent alice's track");
    }
    for kind in [Kind::Audio, Kind::Video] {
        wait_received_from(&alice, &b, kind, 100).await;
        wait_received_from(&bob, &a, kind, 100).await;
    }
    let r = server
        .room(room)
        .await
        .must("GET /api/rooms/tls over https");
    assert_eq!(
        r.and_then(|r| r["participants"].as_array().map(Vec::len)),
        Some(2)
    );

    // A bad client in the middle of the call troubles no one.
    misbehave(&server).await;
    let before = alice.received_from(&b, Kind::Video).len();
    wait_received_from(&alice, &b, Kind::Video, before + 30).await;

    alice.leave().await.must("alice leaves");
    bob.leave().await.must("bob leaves");
    assert_idle(&server).await;
}
