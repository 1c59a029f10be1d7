//! The loop of one fleet thread: a `mio` poll over its peers' sockets and a command queue.
//! Each turn reads every ready socket (draining str0m after every datagram), then writes the
//! media that is due and runs one timeout pass per peer that wrote media or whose str0m timer
//! expired, so a whole batch of packets leaves together.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::peer::FleetPeer;
use super::{Cmd, PeerCmd};

/// The waker's token; peer tokens are peer ids, which start at 0 and never reach this.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Datagrams read from one socket per turn before moving on to the others.
const READ_BATCH: usize = 64;
/// The longest a thread sleeps with nothing to do.
const IDLE: Duration = Duration::from_millis(100);

pub(crate) struct FleetThread {
    pub poll: Poll,
    pub commands: mpsc::Receiver<Cmd>,
    pub peers: HashMap<usize, FleetPeer>,
}

impl FleetThread {
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        // Peers whose socket was left with datagrams last turn (the readiness edge is spent).
        let mut unread: Vec<usize> = Vec::new();
        loop {
            let now = Instant::now();
            let timeout = if unread.is_empty() {
                self.next_deadline(now).saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!("fleet thread: poll failed: {e}");
                    return;
                }
            }

            let mut to_read = std::mem::take(&mut unread);
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woken = true;
                } else {
                    to_read.push(ev.token().0);
                }
            }
            for id in to_read {
                if let Some(peer) = self.peers.get_mut(&id) {
                    if peer.read_socket(&mut buf, READ_BATCH) {
                        unread.push(id);
                    }
                }
            }
            unread.sort_unstable();
            unread.dedup();

            if woken && !self.handle_commands() {
                self.shutdown();
                return;
            }

            let turn = Instant::now();
            for peer in self.peers.values_mut() {
                let media_due = peer.media_due().is_some_and(|due| due <= turn);
                if !media_due && peer.next_timeout > turn {
                    continue;
                }
                // A fresh clock per peer: the stamps' send times must not include the time
                // spent on the peers handled before it in this turn.
                let now = Instant::now();
                let wrote = media_due && peer.write_due_media(now);
                if wrote || peer.next_timeout <= now {
                    peer.timeout(now);
                }
            }
        }
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut deadline = now + IDLE;
        for peer in self.peers.values() {
            deadline = deadline.min(peer.next_timeout);
            if let Some(due) = peer.media_due() {
                deadline = deadline.min(due);
            }
        }
        deadline
    }

    /// Handles every queued command; `false` once the fleet is shutting down.
    fn handle_commands(&mut self) -> bool {
        loop {
            let cmd = match self.commands.try_recv() {
                Ok(cmd) => cmd,
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            };
            match cmd {
                Cmd::Shutdown => return false,
                Cmd::Add(id, peer) => {
                    let mut peer = *peer;
                    let now = Instant::now();
                    if let Err(e) = self.poll.registry().register(
                        &mut peer.socket,
                        Token(id),
                        Interest::READABLE,
                    ) {
                        tracing::error!(peer = %peer.name, "cannot register socket: {e}");
                        peer.close(now);
                        continue;
                    }
                    peer.drain(now);
                    self.peers.insert(id, peer);
                }
                Cmd::Peer(id, cmd) => self.peer_command(id, cmd),
            }
        }
    }

    fn peer_command(&mut self, id: usize, cmd: PeerCmd) {
        let now = Instant::now();
        let Some(peer) = self.peers.get_mut(&id) else {
            // Closed already: dropping the reply tells the caller.
            return;
        };
        match cmd {
            PeerCmd::CreateOffer(kind, reply) => {
                let r = peer.create_offer(kind);
                peer.drain(now);
                let _ = reply.send(r);
            }
            PeerCmd::AcceptAnswer(sdp, reply) => {
                let r = peer.accept_answer(&sdp, now);
                peer.drain(now);
                let _ = reply.send(r);
            }
            PeerCmd::AcceptOffer(sdp, reply) => {
                let r = peer.accept_offer(&sdp);
                peer.drain(now);
                let _ = reply.send(r);
            }
            PeerCmd::Stats(reply) => {
                let _ = reply.send(peer.report());
            }
            PeerCmd::Frames(reply) => {
                let _ = reply.send(peer.frame_log());
            }
            PeerCmd::Close(reply) => {
                if let Some(mut peer) = self.peers.remove(&id) {
                    peer.close(now);
                    let _ = self.poll.registry().deregister(&mut peer.socket);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        for (_, mut peer) in self.peers.drain() {
            peer.close(now);
        }
    }
}
