//! The loop of one worker thread: wait on the socket, the pipe and the command queue; feed
//! the engine in batches; send what it produced; wake the workers it piped to.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};
use sfumato_core::{Engine, Event, Output, PipeMsg, ReplyBody, RequestId, WorkerId};
use tokio::sync::mpsc;

use crate::send::BatchSender;
use crate::{Ctl, Delivery, ReplySender, Report};

const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
/// Inputs of one kind taken per turn, so that no source starves the others.
const BATCH: usize = 256;
const MAX_DATAGRAM: usize = 2048;

pub(crate) struct Runtime {
    pub id: WorkerId,
    pub addr: std::net::SocketAddr,
    pub poll: Poll,
    pub socket: mio::net::UdpSocket,
    pub commands: Receiver<Ctl>,
    pub pipe_in: Receiver<PipeMsg>,
    pub pipe_out: Vec<Sender<PipeMsg>>,
    pub wakers: Vec<Arc<Waker>>,
    pub events: mpsc::Sender<Delivery>,
    pub pending: HashMap<RequestId, ReplySender>,
    pub pipe_dropped: u64,
    pub bandwidth_estimation: bool,
}

impl Runtime {
    /// Runs until told to stop (`Ok`) or until the loop cannot go on (`Err`: why). A panic
    /// outside any peer unwinds out of here (see `life::supervise`).
    pub fn run(mut self) -> Result<(), String> {
        let mut engine = Engine::new(self.id, self.addr);
        engine.set_bandwidth_estimation(self.bandwidth_estimation);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut self.socket, SOCKET, Interest::READABLE)
        {
            return Err(format!("cannot register its socket: {e}"));
        }
        tracing::info!(worker = %self.id, addr = %self.addr, "worker started");
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut woken = vec![false; self.pipe_out.len()];
        // Built here: its preallocated headers hold raw pointers and may not cross threads.
        let mut sender = BatchSender::new();
        // Set when a turn stopped before a source was empty: the next wait must not block,
        // since mio's readiness is edge-triggered.
        let mut more = true;
        loop {
            let now = Instant::now();
            let timeout = if more {
                std::time::Duration::ZERO
            } else {
                engine.poll_timeout(now).saturating_duration_since(now)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(format!("poll failed: {e}"));
                }
            }
            let now = Instant::now();
            more = false;

            let mut drained = false;
            for _ in 0..BATCH {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, source)) => engine.handle_datagram(now, source, &buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) => {
                        // ICMP errors (port unreachable) surface here on Linux: not fatal.
                        tracing::debug!(worker = %self.id, "recv: {e}");
                    }
                }
            }
            more |= !drained;

            for _ in 0..BATCH {
                match self.pipe_in.try_recv() {
                    Ok(msg) => engine.handle_pipe(now, msg),
                    Err(_) => break,
                }
            }
            more |= !self.pipe_in.is_empty();

            for _ in 0..BATCH {
                match self.commands.try_recv() {
                    Ok(Ctl::Command(cmd)) => engine.handle_command(now, cmd),
                    Ok(Ctl::Call(req, cmd, reply)) => {
                        self.pending.insert(req, reply);
                        engine.handle_command(now, cmd);
                    }
                    Ok(Ctl::Stop) => {
                        tracing::info!(worker = %self.id, "worker stopped");
                        return Ok(());
                    }
                    #[cfg(feature = "fault-injection")]
                    Ok(Ctl::Fail) => panic!("injected failure"),
                    Err(_) => break,
                }
            }
            more |= !self.commands.is_empty();

            engine.handle_timeout(now);
            self.drain(&mut engine, &mut sender, &mut woken);
        }
    }

    fn drain(&mut self, engine: &mut Engine, sender: &mut BatchSender, woken: &mut [bool]) {
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Transmit(t) => sender.push(t),
                Output::Pipe { to, msg } => {
                    let Some(pipe) = self.pipe_out.get(to.0 as usize) else {
                        continue;
                    };
                    match pipe.try_send(msg) {
                        Ok(()) => woken[to.0 as usize] = true,
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            self.pipe_dropped += 1;
                        }
                    }
                }
                Output::Event(Event::Reply { req, result }) => {
                    let result = result.map(|body| match body {
                        ReplyBody::Stats(mut s) => {
                            s.pipe_dropped = self.pipe_dropped;
                            s.datagrams_dropped += sender.dropped;
                            ReplyBody::Stats(s)
                        }
                        other => other,
                    });
                    if let Some(reply) = self.pending.remove(&req) {
                        if self
                            .events
                            .try_send(Delivery::Reply(reply, result))
                            .is_err()
                        {
                            tracing::error!(worker = %self.id, "control plane queue full: reply lost");
                        }
                    }
                }
                Output::Event(e) => {
                    let report = Delivery::Report(Report::Event(self.id, e));
                    if self.events.try_send(report).is_err() {
                        tracing::error!(worker = %self.id, "control plane event queue full: event lost");
                    }
                }
            }
        }
        sender.flush(&self.socket);
        for (i, w) in woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                let _ = self.wakers[i].wake();
            }
        }
    }
}
