//! (2) Leaving, unpublishing and dropped sockets clean up every worker.

use serde_json::Value;
use sfumato_testkit::{msg_type, poll_until, Kind, Participant};

use crate::common::*;

fn sum(workers: &[Value], field: &str) -> u64 {
    workers.iter().filter_map(|w| w[field].as_u64()).sum()
}

#[tokio::test]
async fn leave_and_unpublish_clean_up_every_worker() {
    let _g = serial().await;
    let server = start(2).await;
    let room = "cleanup";
    // Alice and Bob both publish and subscribe to each other, Carol only watches; spread
    // placement puts them on both workers.
    let mut alice = Participant::join(&server.ws_url(), room, "alice")
        .await
        .must("alice joins");
    let mut bob = Participant::join(&server.ws_url(), room, "bob")
        .await
        .must("bob joins");
    let carol = Participant::join(&server.ws_url(), room, "carol")
        .await
        .must("carol joins");
    let (aid, bid) = (alice.id(), bob.id());
    alice.publish().await.must("alice publishes");
    bob.publish().await.must("bob publishes");
    for (sub, publ) in [(&bob, &aid), (&alice, &bid), (&carol, &aid), (&carol, &bid)] {
        wait_received_from(sub, publ, Kind::Video, 30).await;
        wait_received_from(sub, publ, Kind::Audio, 30).await;
    }
    let w = server.workers_stats().await.must("GET /api/workers");
    assert_eq!(w.len(), 2, "GET /api/workers: expected 2 workers: {w:?}");
    assert_eq!(sum(&w, "tracks"), 4, "2 publishers x 2 tracks: {w:?}");
    assert!(
        sum(&w, "peers") >= 5,
        "2 publish PCs + 3 subscribe PCs: {w:?}"
    );
    assert!(
        sum(&w, "subscriptions") >= 6,
        "bob 2, alice 2, carol 4: {w:?}"
    );

    // Alice unpublishes with a re-offer that stops her m-lines.
    let left = alice.unpublish().await.must("alice unpublishes");
    assert!(
        left.is_empty(),
        "publish_answer after stopping every m-line should list no tracks: {left:?}"
    );
    for p in [&bob, &carol] {
        poll_until(SIGNAL, || {
            p.events_of("track_unpublished")
                .iter()
                .filter(|e| e["participant"] == aid.as_str())
                .count()
                >= 2
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "expected 2 track_unpublished for alice, got {:?}",
                p.events_of("track_unpublished")
            )
        });
    }
    // Her tracks and the subscriptions to them are gone; Bob's flow goes on.
    poll_until_tracks(&server, 2)
        .await
        .must("alice's tracks removed");
    assert_grows("carol still receives bob's video", 20, || {
        carol.received_from(&bid, Kind::Video).len() as u64
    })
    .await;

    // Everyone leaves: every worker returns to zero.
    alice.leave().await.must("alice leaves");
    bob.leave().await.must("bob leaves");
    carol
        .wait_event_since(0, SIGNAL, |e| {
            msg_type(e) == "participant_left" && e["participant"] == bid.as_str()
        })
        .await
        .must("carol gets participant_left for bob");
    carol.leave().await.must("carol leaves");
    assert_idle(&server).await;
    assert!(server.healthy().await);
}

/// Waits until the workers report `n` tracks in total, or fails with the last report.
async fn poll_until_tracks(server: &sfumato_testkit::TestServer, n: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + CLEANUP;
    loop {
        let w = server.workers_stats().await?;
        if sum(&w, "tracks") == n {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("after unpublish expected {n} tracks in GET /api/workers, got {w:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dropped_socket_ends_the_session() {
    let _g = serial().await;
    let server = start(2).await;
    let flow = Flow::start(&server, "dropped").await;
    let Flow {
        alice,
        bob,
        alice_id,
    } = flow;
    // Alice's WebSocket closes without `leave`: the server ends her session.
    alice.disconnect().await;
    bob.wait_event_since(0, SIGNAL, |e| {
        msg_type(e) == "participant_left" && e["participant"] == alice_id.as_str()
    })
    .await
    .must("bob gets participant_left after alice's socket dropped");
    bob.leave().await.must("bob leaves");
    assert_idle(&server).await;
}
