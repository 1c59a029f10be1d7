//! Janus VideoRoom end to end: start Debian's Janus on its own address, publish Opus + VP8
//! with a testkit peer, subscribe with another, check that media arrives over loopback.
//!
//! Needs root, apt (or an installed `janus`), `ip` and a private network namespace; hence
//! `#[ignore]`. Build first, then run with `unshare --net sh -c 'ip link set lo up && cargo
//! test -p sfumato-bench --test janus -- --ignored --nocapture'`.

use std::net::IpAddr;
use std::time::Duration;

use sfumato_bench::janus::{JanusClient, JanusOptions, JanusServer};
use sfumato_testkit::{poll_until, Kind, OfferSpec, Peer, PeerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, apt-get or an installed janus, ip and a private network namespace"]
async fn janus_videoroom_forwards_audio_and_video() -> anyhow::Result<()> {
    let mut server = JanusServer::start(JanusOptions {
        cpu: Some(0),
        debug_level: 4,
        ..Default::default()
    })
    .await?;
    println!(
        "janus pid {} at {} (link {:?}), log {}",
        server.pid(),
        server.base_url(),
        server.link(),
        server.log_path().display()
    );
    // Its address is local: the kernel routes it through loopback, like Sfumato's 127.0.0.1.
    let route = std::process::Command::new("ip")
        .args(["route", "get", &server.janus_ip().to_string()])
        .output()?;
    let route = String::from_utf8_lossy(&route.stdout);
    println!("route: {}", route.trim());
    assert!(route.starts_with("local ") && route.contains(" dev lo "));
    // The pid is Janus' own (`ip netns exec` and `taskset` exec), pinned to CPU 0.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid()))?;
    assert_eq!(comm.trim(), "janus");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))?;
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim);
    assert_eq!(cpus, Some("0"));
    let result = run(&server).await;
    if result.is_err() {
        println!("janus log:\n{}", server.log_tail(60));
    }
    assert!(server.is_running(), "janus died");
    result
}

async fn run(server: &JanusServer) -> anyhow::Result<()> {
    let bind_ip = Some(IpAddr::V4(server.client_ip()));
    let janus = JanusClient::connect(server.base_url()).await?;
    let room = 4242;
    janus.create_room(room).await?;
    // A second create of the same room is a clear error, not a panic.
    let dup = janus.create_room(room).await;
    let dup = dup.err().map(|e| format!("{e:#}"));
    println!("duplicate room: {dup:?}");
    assert!(dup.is_some_and(|e| e.contains("VideoRoom error")));

    let publisher = Peer::new(PeerOptions {
        name: "janus-pub".into(),
        bind_ip,
        ..Default::default()
    })?;
    let offer = publisher.create_offer(OfferSpec::publish()).await?;
    let published = janus.publish(room, "pub", &offer).await?;
    println!("published feed {}", published.feed_id);
    // Janus gathered exactly its own address.
    let candidates: Vec<&str> = published
        .answer_sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    println!("janus candidates: {candidates:?}");
    assert!(!candidates.is_empty());
    let janus_ip = server.janus_ip().to_string();
    assert!(candidates.iter().all(|c| c.contains(&janus_ip)));
    publisher.accept_answer(&published.answer_sdp).await?;
    publisher.wait_connected(Duration::from_secs(10)).await?;

    let subscriber = Peer::new(PeerOptions {
        name: "janus-sub".into(),
        bind_ip,
        ..Default::default()
    })?;
    let (sub_offer, sub) = janus.subscribe(room, published.feed_id).await?;
    let answer = subscriber.accept_offer(&sub_offer).await?;
    sub.answer(&answer).await?;
    subscriber.wait_connected(Duration::from_secs(10)).await?;

    let got_media = poll_until(Duration::from_secs(10), || {
        subscriber.received_count(Kind::Audio) >= 50 && subscriber.received_count(Kind::Video) >= 50
    })
    .await;
    println!(
        "publisher {:?}\nsubscriber {:?}",
        publisher.counts(),
        subscriber.counts()
    );
    println!("events: {}", janus.take_events().len());
    got_media?;

    // A subscription to a feed that does not exist is a clear error.
    let bad = janus.subscribe(room, 1).await;
    let bad = bad.err().map(|e| format!("{e:#}"));
    println!("bad subscribe: {bad:?}");
    assert!(bad.is_some_and(|e| e.contains("VideoRoom error")));

    sub.leave().await?;
    sub.detach().await?;
    published.handle.leave().await?;
    published.handle.detach().await?;
    janus.destroy_room(room).await?;
    janus.destroy().await?;
    Ok(())
}
