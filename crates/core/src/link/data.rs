//! Data messages over one relay link, in both directions, sans IO. A message is cut into
//! fragments that fit a datagram. Reliable ones are numbered, kept until the far side
//! acknowledges them, sent again when it reports a gap or when no acknowledgement came in
//! time, and handed over once and in order, whole. Lossy ones are sent once and put back
//! together only if every fragment arrives within [`LOSSY_WAIT`]. What is kept is bounded
//! on both sides: a sender with [`WINDOW`] bytes unacknowledged refuses more, a receiver
//! keeps at most [`MAX_AHEAD`] fragments out of order.
//!
//! Bodies (after the link's kind byte, big-endian):
//!
//! ```text
//! data:  seq u64 · base u64 (the sender's oldest unacknowledged) · flags u8 · bytes
//! ack:   next u64 (everything below is here) · missing seq u64 *
//! lossy: id u32 · index u8 · count u8 · bytes
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The most message bytes one fragment carries (a fragment's datagram stays near 1200).
pub const FRAGMENT: usize = 1150;
/// The most bytes a sender keeps unacknowledged.
pub const WINDOW: usize = 4 << 20;
/// The most fragments a receiver keeps ahead of a gap.
pub const MAX_AHEAD: u64 = 8192;
/// The longest message put back together (a data message's frame is under 70 KiB).
pub const MAX_MESSAGE: usize = 128 << 10;
/// How long a lossy message waits for its fragments.
pub const LOSSY_WAIT: Duration = Duration::from_secs(1);
/// The most lossy messages put back together at once.
const LOSSY_PARTIALS: usize = 16;
/// An acknowledgement waits this long for more fragments to cover.
pub const ACK_DELAY: Duration = Duration::from_millis(5);
/// The first retransmission timeout, doubled at each expiry up to [`RTO_MAX`].
pub const RTO_MIN: Duration = Duration::from_millis(100);
const RTO_MAX: Duration = Duration::from_secs(2);
/// A fragment reported missing is sent again at once, then not sooner than this after
/// its last resend.
const RESEND_GUARD: Duration = Duration::from_millis(20);
/// Fragments sent again at one timeout.
const RESEND_BATCH: usize = 16;
/// The most gaps one acknowledgement lists.
const ACK_MISSING: usize = 64;

const FIRST: u8 = 1;
const LAST: u8 = 2;

/// Why a body from the far side was not read.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

struct Sent {
    seq: u64,
    flags: u8,
    bytes: Vec<u8>,
    /// When it was last sent again.
    resent: Option<Instant>,
}

/// What this node sends to one other node.
pub struct Outbound {
    next: u64,
    unacked: VecDeque<Sent>,
    bytes: usize,
    rto: Duration,
    /// When the oldest unacknowledged fragment is sent again.
    rto_at: Option<Instant>,
    lossy_id: u32,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            next: 0,
            unacked: VecDeque::new(),
            bytes: 0,
            rto: RTO_MIN,
            rto_at: None,
            lossy_id: 0,
        }
    }
}

impl Outbound {
    fn base(&self) -> u64 {
        self.unacked.front().map_or(self.next, |s| s.seq)
    }

    fn body(&self, s: &Sent) -> Vec<u8> {
        let mut b = Vec::with_capacity(17 + s.bytes.len());
        b.extend_from_slice(&s.seq.to_be_bytes());
        b.extend_from_slice(&self.base().to_be_bytes());
        b.push(s.flags);
        b.extend_from_slice(&s.bytes);
        b
    }

    /// Queues reliable `msg`, its fragments' bodies appended to `out`. Returns false (and
    /// sends nothing) if the window has no room for it, or it is empty or too long.
    pub fn reliable(&mut self, now: Instant, msg: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        if msg.is_empty() || msg.len() > MAX_MESSAGE || self.bytes + msg.len() > WINDOW {
            return false;
        }
        let n = msg.len().div_ceil(FRAGMENT);
        for (i, chunk) in msg.chunks(FRAGMENT).enumerate() {
            let mut flags = 0;
            if i == 0 {
                flags |= FIRST;
            }
            if i + 1 == n {
                flags |= LAST;
            }
            let s = Sent {
                seq: self.next,
                flags,
                bytes: chunk.to_vec(),
                resent: None,
            };
            self.next += 1;
            self.bytes += chunk.len();
            self.unacked.push_back(s);
            out.push(self.body(self.unacked.back().unwrap_or_else(|| unreachable!())));
        }
        self.rto_at.get_or_insert(now + self.rto);
        true
    }

    /// Cuts lossy `msg` into fragments' bodies, appended to `out`. Returns false if it is
    /// empty or too long.
    pub fn lossy(&mut self, msg: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        if msg.is_empty() || msg.len() > MAX_MESSAGE {
            return false;
        }
        let id = self.lossy_id;
        self.lossy_id = self.lossy_id.wrapping_add(1);
        let count = msg.len().div_ceil(FRAGMENT) as u8; // ≤ 114 by MAX_MESSAGE
        for (i, chunk) in msg.chunks(FRAGMENT).enumerate() {
            let mut b = Vec::with_capacity(6 + chunk.len());
            b.extend_from_slice(&id.to_be_bytes());
            b.push(i as u8);
            b.push(count);
            b.extend_from_slice(chunk);
            out.push(b);
        }
        true
    }

    /// An acknowledgement: what it covers is forgotten, what it reports missing is sent
    /// again (bodies appended to `out`).
    pub fn on_ack(
        &mut self,
        now: Instant,
        body: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Malformed> {
        if body.len() < 8 || !body.len().is_multiple_of(8) {
            return Err(Malformed);
        }
        let mut words = body
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()));
        let next = words.next().ok_or(Malformed)?;
        if next > self.next {
            return Err(Malformed); // acknowledges what was never sent
        }
        let mut progress = false;
        while self.unacked.front().is_some_and(|s| s.seq < next) {
            if let Some(s) = self.unacked.pop_front() {
                self.bytes -= s.bytes.len();
                progress = true;
            }
        }
        if progress {
            self.rto = RTO_MIN;
            self.rto_at = (!self.unacked.is_empty()).then(|| now + self.rto);
        }
        let base = self.base();
        for seq in words {
            let Some(i) = seq.checked_sub(base).map(|i| i as usize) else {
                continue;
            };
            let due = |s: &Sent| s.resent.is_none_or(|t| now >= t + RESEND_GUARD);
            if i < self.unacked.len() && due(&self.unacked[i]) {
                self.unacked[i].resent = Some(now);
                out.push(self.body(&self.unacked[i]));
            }
        }
        Ok(())
    }

    /// Sends again the oldest fragments if no acknowledgement came in time.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if self.rto_at.is_none_or(|t| now < t) {
            return;
        }
        for i in 0..self.unacked.len().min(RESEND_BATCH) {
            self.unacked[i].resent = Some(now);
            out.push(self.body(&self.unacked[i]));
        }
        self.rto = (self.rto * 2).min(RTO_MAX);
        self.rto_at = (!self.unacked.is_empty()).then(|| now + self.rto);
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.rto_at
    }

    /// Bytes sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.bytes
    }
}

struct Partial {
    since: Instant,
    parts: Vec<Option<Vec<u8>>>,
    got: usize,
}

/// What this node receives from one other node.
#[derive(Default)]
pub struct Inbound {
    next: u64,
    ahead: BTreeMap<u64, (u8, Vec<u8>)>,
    /// The reliable message being put back together.
    partial: Vec<u8>,
    /// Fragments are dropped until the next first one (a message began before the sender's
    /// base, or grew too long).
    skipping: bool,
    ack_at: Option<Instant>,
    lossy: HashMap<u32, Partial>,
}

impl Inbound {
    /// A reliable fragment; the messages it completes are appended to `done`, in order.
    pub fn on_data(
        &mut self,
        now: Instant,
        body: &[u8],
        done: &mut Vec<Vec<u8>>,
    ) -> Result<(), Malformed> {
        if body.len() < 17 {
            return Err(Malformed);
        }
        let seq = u64::from_be_bytes(body[..8].try_into().map_err(|_| Malformed)?);
        let base = u64::from_be_bytes(body[8..16].try_into().map_err(|_| Malformed)?);
        let flags = body[16];
        let bytes = &body[17..];
        if base > seq || seq == u64::MAX || bytes.len() > FRAGMENT {
            return Err(Malformed);
        }
        self.ack_at.get_or_insert(now + ACK_DELAY);
        if base > self.next {
            // What lies below was acknowledged to an earlier incarnation of this side.
            self.ahead = self.ahead.split_off(&base);
            self.next = base;
            self.partial.clear();
            self.skipping = true;
        }
        if seq < self.next || seq - self.next >= MAX_AHEAD {
            return Ok(()); // a duplicate, or too far ahead: it comes again
        }
        self.ahead.insert(seq, (flags, bytes.to_vec()));
        while let Some((flags, bytes)) = self.ahead.remove(&self.next) {
            self.next += 1;
            if flags & FIRST != 0 {
                self.partial.clear();
                self.skipping = false;
            }
            if self.skipping {
                continue;
            }
            if self.partial.len() + bytes.len() > MAX_MESSAGE {
                self.partial.clear();
                self.skipping = true;
                continue;
            }
            self.partial.extend_from_slice(&bytes);
            if flags & LAST != 0 {
                done.push(std::mem::take(&mut self.partial));
                self.skipping = true; // until the next first fragment
            }
        }
        Ok(())
    }

    /// The acknowledgement's body, if one is due at `now`.
    pub fn ack(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.ack_at.is_none_or(|t| now < t) {
            return None;
        }
        self.ack_at = None;
        let mut b = Vec::with_capacity(8 * (1 + ACK_MISSING));
        b.extend_from_slice(&self.next.to_be_bytes());
        if let Some(&top) = self.ahead.keys().next_back() {
            let missing = (self.next..top).filter(|s| !self.ahead.contains_key(s));
            for s in missing.take(ACK_MISSING) {
                b.extend_from_slice(&s.to_be_bytes());
            }
        }
        Some(b)
    }

    /// A lossy fragment; the message it completes, if any, is appended to `done`.
    pub fn on_lossy(
        &mut self,
        now: Instant,
        body: &[u8],
        done: &mut Vec<Vec<u8>>,
    ) -> Result<(), Malformed> {
        if body.len() < 7 {
            return Err(Malformed);
        }
        let id = u32::from_be_bytes(body[..4].try_into().map_err(|_| Malformed)?);
        let (index, count) = (usize::from(body[4]), usize::from(body[5]));
        let bytes = &body[6..];
        if index >= count || count > MAX_MESSAGE.div_ceil(FRAGMENT) || bytes.len() > FRAGMENT {
            return Err(Malformed);
        }
        if count == 1 {
            done.push(bytes.to_vec());
            return Ok(());
        }
        self.lossy.retain(|_, p| now < p.since + LOSSY_WAIT);
        if !self.lossy.contains_key(&id) && self.lossy.len() >= LOSSY_PARTIALS {
            // The oldest gives way.
            if let Some(old) = self
                .lossy
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| *k)
            {
                self.lossy.remove(&old);
            }
        }
        let p = self.lossy.entry(id).or_insert_with(|| Partial {
            since: now,
            parts: vec![None; count],
            got: 0,
        });
        if p.parts.len() != count {
            self.lossy.remove(&id);
            return Err(Malformed);
        }
        if p.parts[index].is_none() {
            p.parts[index] = Some(bytes.to_vec());
            p.got += 1;
        }
        if p.got == count {
            if let Some(p) = self.lossy.remove(&id) {
                done.push(p.parts.into_iter().flatten().flatten().collect());
            }
        }
        Ok(())
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.ack_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize, fill: u8) -> Vec<u8> {
        (0..n).map(|i| fill.wrapping_add(i as u8)).collect()
    }

    /// Passes every body of `bodies` whose index `keep` allows to `rx`, returns what it
    /// completed.
    fn pass(
        rx: &mut Inbound,
        now: Instant,
        bodies: &[Vec<u8>],
        keep: impl Fn(usize) -> bool,
    ) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            if keep(i) {
                rx.on_data(now, b, &mut done).expect("well formed");
            }
        }
        done
    }

    #[test]
    fn reliable_messages_arrive_whole_once_and_in_order_despite_loss() {
        let t0 = Instant::now();
        let (mut tx, mut rx) = (Outbound::default(), Inbound::default());
        let (a, b, c) = (msg(5000, 1), msg(10, 2), msg(FRAGMENT, 3));
        let mut bodies = Vec::new();
        for m in [&a, &b, &c] {
            assert!(tx.reliable(t0, m, &mut bodies));
        }
        assert_eq!(bodies.len(), 5 + 1 + 1);
        // The second fragment is lost: nothing after it is handed over yet.
        assert!(pass(&mut rx, t0, &bodies, |i| i != 1).is_empty());
        let at = t0 + ACK_DELAY;
        let ack = rx.ack(at).expect("an acknowledgement is due");
        assert!(rx.ack(at).is_none(), "one at a time");
        let mut again = Vec::new();
        tx.on_ack(at, &ack, &mut again).unwrap();
        assert_eq!(again.len(), 1, "only the gap is sent again");
        tx.on_ack(at, &ack, &mut Vec::new()).unwrap();
        let mut twice = Vec::new();
        tx.on_ack(at + Duration::from_millis(1), &ack, &mut twice)
            .unwrap();
        assert!(twice.is_empty(), "not again at once");
        let later = at + RESEND_GUARD;
        let total = a.len() + b.len() + c.len();
        assert_eq!(
            tx.unacked(),
            total - FRAGMENT,
            "only the first fragment is covered"
        );
        let done = pass(&mut rx, at, &again, |_| true);
        assert_eq!(done, [a.clone(), b.clone(), c.clone()]);
        // A duplicate of anything is dropped.
        assert!(pass(&mut rx, later, &bodies, |_| true).is_empty());
        let ack = rx.ack(later + ACK_DELAY).unwrap();
        tx.on_ack(later + ACK_DELAY, &ack, &mut again).unwrap();
        assert_eq!(tx.unacked(), 0);
        assert_eq!(tx.next_timeout(), None, "nothing left to time out");
    }

    #[test]
    fn a_lost_tail_is_sent_again_when_no_acknowledgement_comes() {
        let t0 = Instant::now();
        let (mut tx, mut rx) = (Outbound::default(), Inbound::default());
        let mut bodies = Vec::new();
        tx.reliable(t0, &msg(3000, 7), &mut bodies);
        // Every fragment is lost; the receiver has nothing to report.
        let due = tx.next_timeout().expect("a timeout is set");
        assert_eq!(due, t0 + RTO_MIN);
        let mut again = Vec::new();
        tx.on_timeout(due - Duration::from_millis(1), &mut again);
        assert!(again.is_empty(), "not before its time");
        tx.on_timeout(due, &mut again);
        assert_eq!(again.len(), 3);
        assert_eq!(tx.next_timeout(), Some(due + 2 * RTO_MIN), "backs off");
        assert_eq!(pass(&mut rx, due, &again, |_| true), [msg(3000, 7)]);
    }

    #[test]
    fn the_window_bounds_what_a_sender_keeps() {
        let t0 = Instant::now();
        let mut tx = Outbound::default();
        let mut out = Vec::new();
        let big = msg(64 << 10, 0);
        let fits = (0..1000)
            .take_while(|_| tx.reliable(t0, &big, &mut out))
            .count();
        assert_eq!(fits, WINDOW / big.len());
        assert!(tx.unacked() <= WINDOW);
        assert!(!tx.reliable(t0, &[], &mut out));
        assert!(!tx.reliable(t0, &msg(MAX_MESSAGE + 1, 0), &mut Vec::new()));
    }

    #[test]
    fn a_receiver_that_restarted_follows_the_senders_base() {
        let t0 = Instant::now();
        let mut tx = Outbound::default();
        let mut old = Inbound::default();
        let mut bodies = Vec::new();
        tx.reliable(t0, &msg(100, 1), &mut bodies);
        pass(&mut old, t0, &bodies, |_| true);
        let ack = old.ack(t0 + ACK_DELAY).unwrap();
        tx.on_ack(t0 + ACK_DELAY, &ack, &mut Vec::new()).unwrap();
        // A fresh receiver expects 0; the sender is past it.
        let mut fresh = Inbound::default();
        let mut bodies = Vec::new();
        tx.reliable(t0, &msg(2500, 2), &mut bodies);
        assert_eq!(pass(&mut fresh, t0, &bodies, |_| true), [msg(2500, 2)]);
        let ack = fresh.ack(t0 + ACK_DELAY).unwrap();
        tx.on_ack(t0 + ACK_DELAY, &ack, &mut Vec::new()).unwrap();
        // Starting in the middle of a message: dropped up to the next first fragment.
        let mut bodies = Vec::new();
        tx.reliable(t0, &msg(2500, 3), &mut bodies);
        tx.reliable(t0, &msg(10, 4), &mut bodies);
        pass(&mut fresh, t0, &bodies, |i| i == 0);
        let t1 = t0 + 2 * ACK_DELAY;
        let ack = fresh.ack(t1).unwrap();
        tx.on_ack(t1, &ack, &mut Vec::new()).unwrap();
        let mut again = Vec::new();
        tx.on_timeout(t1 + RTO_MIN, &mut again);
        assert_eq!(
            again.len(),
            3,
            "the rest of the first message, and the second"
        );
        let mut late = Inbound::default();
        assert_eq!(pass(&mut late, t1, &again, |_| true), [msg(10, 4)]);
    }

    #[test]
    fn lossy_messages_are_whole_or_not_at_all() {
        let t0 = Instant::now();
        let (mut tx, mut rx) = (Outbound::default(), Inbound::default());
        let mut bodies = Vec::new();
        tx.lossy(&msg(3000, 1), &mut bodies);
        tx.lossy(&msg(3000, 2), &mut bodies);
        tx.lossy(&msg(20, 3), &mut bodies);
        let mut done = Vec::new();
        for (i, b) in bodies.iter().enumerate().rev() {
            if i != 4 {
                rx.on_lossy(t0, b, &mut done).unwrap();
            }
        }
        assert_eq!(
            done,
            [msg(20, 3), msg(3000, 1)],
            "the one missing a fragment is not"
        );
        assert!(rx.on_lossy(t0, &[0, 0, 0, 9, 5, 2, 1], &mut done).is_err());
        assert!(rx.on_lossy(t0, &[0; 3], &mut done).is_err());
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let t0 = Instant::now();
        let (mut tx, mut rx) = (Outbound::default(), Inbound::default());
        let mut done = Vec::new();
        for junk in [&[][..], &[0; 16][..], &[0xff; 40][..]] {
            let _ = rx.on_data(t0, junk, &mut done);
            let _ = rx.on_lossy(t0, junk, &mut done);
            let _ = tx.on_ack(t0, junk, &mut done);
        }
        let mut huge = vec![0u8; 17 + FRAGMENT + 1];
        huge[16] = FIRST;
        assert_eq!(rx.on_data(t0, &huge, &mut done), Err(Malformed));
        let mut ack = Vec::new();
        ack.extend_from_slice(&5u64.to_be_bytes());
        assert_eq!(tx.on_ack(t0, &ack, &mut done), Err(Malformed), "never sent");
        assert!(done.is_empty());
    }
}
