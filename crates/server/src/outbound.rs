//! The queue of messages to one WebSocket client: signaling (text) and data messages
//! (binary). It is bounded: a client that does not read what it is sent fills it, and is
//! then a slow reader, to be disconnected (its session waits on [`Overflow`]), never a
//! growing buffer. A lossy data message that finds the queue full is dropped instead.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// One message to a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    /// A data message (a deliver frame, `sfumato_core::data`).
    Binary(Arc<[u8]>),
}

/// Whoever sends to a client holds one (the control plane's participant, the session).
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Frame>,
    overflow: Arc<Notify>,
}

/// What the session waits on: its client's queue overflowed.
#[derive(Debug)]
pub struct Overflow(Arc<Notify>);

impl Overflow {
    pub async fn wait(&self) {
        self.0.notified().await
    }
}

/// Holds no queue open (for a session whose participant owns the queue).
#[derive(Debug)]
pub struct WeakOutbound {
    tx: mpsc::WeakSender<Frame>,
    overflow: Arc<Notify>,
}

impl WeakOutbound {
    pub fn upgrade(&self) -> Option<Outbound> {
        Some(Outbound {
            tx: self.tx.upgrade()?,
            overflow: self.overflow.clone(),
        })
    }
}

/// A queue of `capacity` messages: its sending end, its overflow signal and its receiving end.
pub fn channel(capacity: usize) -> (Outbound, Overflow, mpsc::Receiver<Frame>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Notify::new());
    (
        Outbound {
            tx,
            overflow: overflow.clone(),
        },
        Overflow(overflow),
        rx,
    )
}

impl Outbound {
    /// Queues `text`; a full queue drops it and signals the overflow (the client is about to
    /// be disconnected). A closed queue (the client left) drops it.
    pub fn send(&self, text: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Frame::Text(text)) {
            self.overflow.notify_one();
        }
    }

    /// Queues a data message. A full queue drops it; a reliable one then signals the
    /// overflow like any other message, a lossy one does not. Returns false if a lossy
    /// message was dropped for a full queue.
    pub fn send_data(&self, frame: Arc<[u8]>, reliable: bool) -> bool {
        match self.tx.try_send(Frame::Binary(frame)) {
            Err(mpsc::error::TrySendError::Full(_)) if reliable => {
                self.overflow.notify_one();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => false,
            _ => true,
        }
    }

    pub fn downgrade(&self) -> WeakOutbound {
        WeakOutbound {
            tx: self.tx.downgrade(),
            overflow: self.overflow.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_queue_signals_overflow_and_holds_no_more() {
        let (out, overflow, mut rx) = channel(2);
        out.send("a".into());
        out.send("b".into());
        // Not yet: a positive signal that overflow would fire if it were due is the next
        // send's, so check that the waiter has no permit before the third message.
        let early = tokio::time::timeout(Duration::ZERO, overflow.wait()).await;
        assert!(early.is_err(), "no overflow at capacity");
        out.send("c".into());
        tokio::time::timeout(Duration::from_secs(5), overflow.wait())
            .await
            .expect("the third message overflows");
        assert_eq!(rx.recv().await, Some(Frame::Text("a".into())));
        assert_eq!(rx.recv().await, Some(Frame::Text("b".into())));
        assert!(rx.try_recv().is_err(), "the third was dropped");
    }

    #[tokio::test]
    async fn a_lossy_data_message_is_dropped_on_a_full_queue_a_reliable_one_overflows() {
        let (out, overflow, mut rx) = channel(1);
        assert!(out.send_data(Arc::from(&b"a"[..]), false));
        assert!(
            !out.send_data(Arc::from(&b"b"[..]), false),
            "lossy: dropped"
        );
        let early = tokio::time::timeout(Duration::ZERO, overflow.wait()).await;
        assert!(early.is_err(), "a lossy drop is no overflow");
        assert!(out.send_data(Arc::from(&b"c"[..]), true));
        tokio::time::timeout(Duration::from_secs(5), overflow.wait())
            .await
            .expect("a reliable message on a full queue overflows");
        assert_eq!(rx.recv().await, Some(Frame::Binary(Arc::from(&b"a"[..]))));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_weak_handle_does_not_keep_the_queue_open() {
        let (out, _overflow, mut rx) = channel(4);
        let weak = out.downgrade();
        weak.upgrade().expect("open").send("x".into());
        drop(out);
        assert!(weak.upgrade().is_none());
        assert_eq!(rx.recv().await, Some(Frame::Text("x".into())));
        assert_eq!(rx.recv().await, None, "closed once the last sender went");
    }
}
