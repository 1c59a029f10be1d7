//! Whether each worker thread still runs: the thread runs under a supervisor that, however the
//! loop ends (a panic outside any peer, a failed poll, a stop), marks the worker dead for the
//! `Pool`, answers what was still queued for it, and tells the control plane why.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Receiver;
use tokio::sync::mpsc;

use crate::thread::Runtime;
use crate::{Ctl, Delivery, Report};

/// Why a worker that is not running stopped; unset while it runs. Set once, by its thread.
#[derive(Debug, Default)]
pub(crate) struct Life(OnceLock<String>);

impl Life {
    pub fn is_alive(&self) -> bool {
        self.0.get().is_none()
    }

    pub fn cause(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn end(&self, cause: String) {
        let _ = self.0.set(cause);
    }
}

/// What a worker thread runs: the loop, then the bookkeeping of its end, for every worker it
/// hosts (`lives` and `commands` in the order of `runtime.ids()`).
pub(crate) fn supervise(
    runtime: Runtime,
    lives: Vec<Arc<Life>>,
    commands: Vec<Receiver<Ctl>>,
    events: mpsc::Sender<Delivery>,
) {
    let workers = runtime.ids();
    // The loop's state (the engines, the replies they owed) is dropped while unwinding: every
    // caller waiting on a reply gets `CallError::Gone` at once.
    let died = match panic::catch_unwind(AssertUnwindSafe(|| runtime.run())) {
        Ok(Ok(())) => None,
        Ok(Err(cause)) => Some(cause),
        Err(payload) => Some(format!("panicked: {}", panic_message(&*payload))),
    };
    // First the flags, so that the Pool refuses new commands; then what was queued before
    // them is dropped, which answers every caller among them (the Pool empties a queue too if
    // a command lands after this).
    for life in &lives {
        life.end(died.clone().unwrap_or_else(|| "stopped".into()));
    }
    for queue in commands {
        while queue.try_recv().is_ok() {}
    }
    if let Some(cause) = died {
        for worker in workers {
            tracing::error!(%worker, "worker died: {cause}");
            // Behind every event this worker sent: the control plane sees them first. A
            // plain thread may block here; it only waits while the control plane's queue is
            // full.
            let report = Report::Died {
                worker,
                cause: cause.clone(),
            };
            let _ = events.blocking_send(Delivery::Report(report));
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
