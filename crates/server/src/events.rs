//! The control plane's event task: applies what the workers report, in order. A panic while
//! applying one report loses that report, not the node; whether the task still runs, and
//! how many reports it lost, is what `/healthz` and `/metrics` read.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sfumato_worker::{DataOut, Delivery, Report};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::App;

/// The event task as others see it.
#[derive(Debug, Default)]
pub struct EventTask {
    ended: AtomicBool,
    failed: AtomicU64,
}

impl EventTask {
    /// Whether the task still applies reports.
    pub fn is_running(&self) -> bool {
        !self.ended.load(Ordering::Relaxed)
    }

    /// Reports lost to a panic while applying them.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Marks the task ended when dropped: when its loop returns, and while its future unwinds
/// from a panic outside [`contain`].
struct Running(Arc<EventTask>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
        if std::thread::panicking() {
            tracing::error!("the control plane's event task panicked: worker reports go unapplied");
        }
    }
}

/// Hands the workers' data messages for WebSocket members to their sockets' queues, in
/// batches (one lock of the state per batch). A task of its own, on a queue of its own, so
/// that data never delays or pushes out the workers' other reports.
pub fn spawn_data(app: App, mut data: mpsc::Receiver<DataOut>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(DATA_BATCH);
        while data.recv_many(&mut batch, DATA_BATCH).await > 0 {
            let state = app.state();
            for d in batch.drain(..) {
                state.deliver_data(d.member, d.frame, d.reliable);
            }
        }
    })
}

/// Data messages handed on per lock of the state.
const DATA_BATCH: usize = 256;

/// Applies every report to the control plane's state; replies are resolved on the way, after
/// the events that preceded them.
pub fn spawn(app: App, deliveries: mpsc::Receiver<Delivery>) -> JoinHandle<()> {
    let task = app.events.clone();
    run(task, deliveries, move |report| match report {
        Report::Event(worker, event) => app.state().on_event(worker, event),
        Report::Died { worker, .. } => app.state().worker_died(worker),
        // A silent relay is one sign of a lost node (the other: its lease expired).
        Report::NodeSilent(node) => {
            tracing::info!(%node, "relay silent");
            if let Some(c) = &app.cluster {
                c.relay_silent(node, true);
            }
        }
        Report::NodeHeard(node) => {
            tracing::info!(%node, "relay heard again");
            if let Some(c) = &app.cluster {
                c.relay_silent(node, false);
            }
        }
    })
}

/// The loop of [`spawn`], with the state left out (for tests).
fn run(
    task: Arc<EventTask>,
    mut deliveries: mpsc::Receiver<Delivery>,
    mut apply: impl FnMut(Report) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _running = Running(task.clone());
        while let Some(d) = deliveries.recv().await {
            if let Some(report) = d.resolve() {
                contain(&task, || apply(report));
            }
        }
        // Every worker's thread has ended: at shutdown, or all of them died.
        tracing::info!("no worker is left to report: the event task ends");
    })
}

/// Runs `f`; a panic in it is logged and counted, and the task carries on. The state's mutex
/// survives (`App::state` ignores poisoning): what the report had half done stays half done,
/// which is what it would be had the report been lost.
fn contain(task: &EventTask, f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        task.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!("applying a worker report panicked, the report is lost: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfumato_worker::sfumato_core::{Event, PeerId, WorkerId};

    fn report(peer: u64) -> Delivery {
        Delivery::Report(Report::Event(
            WorkerId(0),
            Event::PeerConnected { peer: PeerId(peer) },
        ))
    }

    #[tokio::test]
    async fn a_panic_applying_one_report_loses_that_report_only() {
        let task = Arc::new(EventTask::default());
        let (tx, rx) = mpsc::channel(8);
        let (applied_tx, mut applied) = mpsc::unbounded_channel();
        let handle = run(task.clone(), rx, move |r| {
            if let Report::Event(_, Event::PeerConnected { peer }) = r {
                assert_ne!(peer, PeerId(1), "a bug while applying report 1");
                let _ = applied_tx.send(peer);
            }
        });
        for peer in [1, 2] {
            tx.send(report(peer)).await.expect("the task runs");
        }
        assert_eq!(
            applied.recv().await,
            Some(PeerId(2)),
            "the next report applies"
        );
        assert_eq!(task.failed(), 1);
        assert!(task.is_running());

        // The task ends when its input does (every worker gone): health must see it.
        drop(tx);
        handle.await.expect("the loop returns");
        assert!(!task.is_running());
    }
}
