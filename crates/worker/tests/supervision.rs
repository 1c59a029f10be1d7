//! Story: a worker thread panics outside any peer (a bug in the loop itself). The pool
//! notices, reports why to the control plane behind everything the worker sent, refuses
//! commands to it, answers what was queued for it, and the other workers carry on.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sfumato_worker::sfumato_core::{Command, NodeId, ReplyBody, WorkerId};
use sfumato_worker::{CallError, Pool, PoolConfig, RelayConfig, Report};
use tokio::sync::mpsc;

/// Starts the workers and plays the control plane's part: replies are resolved as they
/// arrive, reports are handed to the test.
fn start(workers: usize) -> (Pool, mpsc::UnboundedReceiver<Report>) {
    start_with(workers, None)
}

/// As [`start`], with a relay worker (a node of a cluster).
fn start_with(
    workers: usize,
    relay: Option<RelayConfig>,
) -> (Pool, mpsc::UnboundedReceiver<Report>) {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (pool, mut deliveries) = Pool::start(&PoolConfig {
        workers,
        bind_ip: loopback,
        announce_ip: loopback,
        base_port: 0,
        bandwidth_estimation: false,
        data_rate: sfumato_worker::sfumato_core::bus::DEFAULT_RATE,
        relay,
    })
    .expect("workers start");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(d) = deliveries.recv().await {
            if let Some(r) = d.resolve() {
                let _ = tx.send(r);
            }
        }
    });
    (pool, rx)
}

/// The next report; `None` once every worker has ended.
async fn next_report(rx: &mut mpsc::UnboundedReceiver<Report>) -> Option<Report> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a report within 10 s")
}

async fn stats(pool: &Pool, w: WorkerId) -> Result<ReplyBody, CallError> {
    pool.call(w, |req| Command::Stats { req }).await
}

#[tokio::test]
async fn a_worker_that_panics_is_reported_dead_and_refused_commands() {
    let (pool, mut rx) = start(2);
    let dead = WorkerId(1);
    assert!(pool.is_alive(dead));
    pool.fail_worker(dead);

    let (worker, cause) = loop {
        match next_report(&mut rx).await {
            Some(Report::Died { worker, cause }) => break (worker, cause),
            Some(_) => continue,
            None => panic!("the event channel closed without a death report"),
        }
    };
    assert_eq!(worker, dead);
    assert!(cause.contains("injected failure"), "cause: {cause}");
    assert!(!pool.is_alive(dead));
    assert_eq!(pool.cause_of_death(dead), Some(cause.as_str()));

    match stats(&pool, dead).await {
        Err(CallError::Dead(w, c)) => assert_eq!((w, c), (dead, cause)),
        other => panic!("a call to the dead worker: {other:?}"),
    }
    assert!(pool.is_alive(WorkerId(0)));
    assert!(
        matches!(stats(&pool, WorkerId(0)).await, Ok(ReplyBody::Stats(s)) if s.worker == 0),
        "the other worker still answers"
    );
    pool.shutdown();
}

#[tokio::test]
async fn a_call_queued_behind_the_panic_is_answered_at_once() {
    let (pool, _rx) = start(1);
    let w = WorkerId(0);
    pool.fail_worker(w);
    // Queued behind the failure (or refused, if the worker is already dead): either way an
    // answer, not the 10 s timeout.
    match stats(&pool, w).await {
        Err(CallError::Gone(_) | CallError::Dead(..)) => {}
        other => panic!("a call behind the failure: {other:?}"),
    }
    assert!(!pool.is_alive(w));
    pool.shutdown();
}

#[tokio::test]
async fn workers_stopped_by_shutdown_are_not_reported_as_dead() {
    let (pool, mut rx) = start(2);
    pool.fail_worker(WorkerId(0));
    pool.shutdown();
    assert_eq!(pool.cause_of_death(WorkerId(1)), Some("stopped"));
    // Every thread has ended, so the channel runs dry: read all it holds.
    let mut died = Vec::new();
    while let Some(r) = next_report(&mut rx).await {
        if let Report::Died { worker, .. } = r {
            died.push(worker);
        }
    }
    assert_eq!(died, vec![WorkerId(0)]);
}

/// The relay worker shares worker 0's thread: both answer, and a failure of that thread is
/// reported for both, while worker 1 carries on.
#[tokio::test]
async fn the_relay_worker_lives_and_dies_with_worker_0() {
    let (pool, mut rx) = start_with(
        2,
        Some(RelayConfig {
            port: 0,
            node: NodeId(7),
            salt: [1; 32],
            key: [2; 32],
        }),
    );
    let relay = pool.relay().expect("a relay worker");
    assert_eq!(relay, WorkerId(2));
    assert_eq!(pool.media_workers(), 2);
    for w in [WorkerId(0), WorkerId(1), relay] {
        match stats(&pool, w).await {
            Ok(ReplyBody::Stats(s)) => {
                assert_eq!(s.worker, w.0);
                assert_eq!(s.link.is_some(), w == relay, "only the relay has links");
            }
            other => panic!("stats of worker {w}: {other:?}"),
        }
    }

    pool.fail_worker(WorkerId(0));
    let mut died = Vec::new();
    while died.len() < 2 {
        match next_report(&mut rx).await {
            Some(Report::Died { worker, cause }) => {
                assert!(cause.contains("injected failure"), "cause: {cause}");
                died.push(worker);
            }
            Some(_) => continue,
            None => panic!("the event channel closed with deaths {died:?}"),
        }
    }
    died.sort();
    assert_eq!(died, vec![WorkerId(0), relay]);
    assert!(!pool.is_alive(relay));
    assert!(matches!(
        stats(&pool, relay).await,
        Err(CallError::Dead(..))
    ));
    assert!(pool.is_alive(WorkerId(1)));
    assert!(matches!(
        stats(&pool, WorkerId(1)).await,
        Ok(ReplyBody::Stats(_))
    ));
    pool.shutdown();
}
