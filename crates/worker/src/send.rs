//! Batched UDP sends: the datagrams of one loop turn leave in `sendmmsg(2)` calls of up to
//! [`BATCH`] each, instead of one `sendto(2)` per datagram (Linux; the send cost of an SFU is
//! dominated by syscalls, not crypto).

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use str0m::net::Transmit;

/// Datagrams per `sendmmsg` call.
const BATCH: usize = 64;

pub(crate) struct BatchSender {
    queue: Vec<Transmit>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Datagrams the kernel refused (counted, never retried).
    pub dropped: u64,
    pub syscalls: u64,
}

impl BatchSender {
    pub fn new() -> Self {
        BatchSender {
            queue: Vec::with_capacity(BATCH * 4),
            headers: MultiHeaders::preallocate(BATCH, None),
            dropped: 0,
            syscalls: 0,
        }
    }

    pub fn push(&mut self, t: Transmit) {
        self.queue.push(t);
    }

    /// Sends everything queued. A datagram the kernel refuses (a full buffer, an unreachable
    /// address) is dropped and counted; the rest still go.
    pub fn flush(&mut self, socket: &impl AsRawFd) {
        let fd = socket.as_raw_fd();
        let mut start = 0;
        while start < self.queue.len() {
            let end = (start + BATCH).min(self.queue.len());
            let chunk = &self.queue[start..end];
            let slices: Vec<[IoSlice<'_>; 1]> =
                chunk.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|t| Some(SockaddrStorage::from(t.destination)))
                .collect();
            self.syscalls += 1;
            let result = sendmmsg(
                fd,
                &mut self.headers,
                &slices,
                &addrs,
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(sent) => {
                    let n = sent.count();
                    // The first datagram not sent failed: drop it and go on after it.
                    if n < chunk.len() {
                        self.dropped += 1;
                        start += n + 1;
                    } else {
                        start = end;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::trace!("sendmmsg to {}: {e}", chunk[0].destination);
                    self.dropped += 1;
                    start += 1;
                }
            }
        }
        self.queue.clear();
    }
}
