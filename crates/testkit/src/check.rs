//! Checks over recordings: payload identity between what was sent and what arrived, and
//! sequence-number continuity.

use std::collections::HashMap;

use crate::media::vp8_payload_without_picture_id;
use crate::peer::{ReceivedPacket, SentPacket};

/// How payloads are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Byte for byte.
    Exact,
    /// Byte for byte except the VP8 picture id (an SFU may rewrite it).
    Vp8IgnorePictureId,
}

/// Result of [`compare_payloads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Packets received.
    pub received: usize,
    /// Received packets whose payload equals one that was sent.
    pub matched: usize,
    /// Whether the matched packets map to increasing positions in the sent stream.
    pub in_order: bool,
    /// Description of the first received payload not found among the sent ones.
    pub first_mismatch: Option<String>,
}

impl Comparison {
    /// Every received payload was sent, in order, and at least one arrived.
    pub fn is_perfect(&self) -> bool {
        self.received > 0 && self.matched == self.received && self.in_order
    }
}

fn key(payload: &[u8], how: Compare) -> Vec<u8> {
    match how {
        Compare::Exact => payload.to_vec(),
        Compare::Vp8IgnorePictureId => vp8_payload_without_picture_id(payload),
    }
}

/// Matches every received payload against the sent ones (one stream: one kind of one
/// publisher). Order is checked by mapping each received packet to the earliest sent
/// position after the previous match with the same payload.
pub fn compare_payloads(
    sent: &[SentPacket],
    received: &[ReceivedPacket],
    how: Compare,
) -> Comparison {
    let mut index: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, p) in sent.iter().enumerate() {
        index.entry(key(&p.payload, how)).or_default().push(i);
    }
    let mut matched = 0;
    let mut in_order = true;
    let mut prev: Option<usize> = None;
    let mut first_mismatch = None;
    for (n, r) in received.iter().enumerate() {
        let k = key(&r.payload, how);
        match index.get(&k) {
            Some(positions) => {
                matched += 1;
                let next = match prev {
                    None => positions.first().copied(),
                    Some(p) => positions.iter().copied().find(|&i| i > p),
                };
                match next {
                    Some(i) => prev = Some(i),
                    None => in_order = false,
                }
            }
            None => {
                if first_mismatch.is_none() {
                    first_mismatch = Some(format!(
                        "received packet #{n} (seq {}, ssrc {}, pt {}, {} bytes, first bytes {:02x?}) \
                         matches no sent payload",
                        r.seq,
                        r.ssrc,
                        r.pt,
                        r.payload.len(),
                        &r.payload[..r.payload.len().min(16)]
                    ));
                }
            }
        }
    }
    Comparison {
        received: received.len(),
        matched,
        in_order,
        first_mismatch,
    }
}

/// Gaps and disorder in 16-bit sequence numbers of one stream: each `(a, b)` is a pair of
/// consecutive packets where `b != a + 1`. Packets are grouped by SSRC.
pub fn seq_discontinuities(received: &[ReceivedPacket]) -> Vec<(u32, u16, u16)> {
    let mut last: HashMap<u32, u16> = HashMap::new();
    let mut out = Vec::new();
    for p in received {
        if let Some(prev) = last.insert(p.ssrc, p.seq) {
            if p.seq != prev.wrapping_add(1) {
                out.push((p.ssrc, prev, p.seq));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::peer::Kind;
    use std::sync::Arc;
    use std::time::Instant;

    fn sent(payloads: &[&[u8]]) -> Vec<SentPacket> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| SentPacket {
                kind: Kind::Video,
                mid: "1".into(),
                rid: None,
                ssrc: 1,
                pt: 96,
                seq: i as u16,
                ext_seq: i as u64,
                timestamp: 0,
                marker: false,
                payload: Arc::from(*p),
                sent_at: Instant::now(),
            })
            .collect()
    }

    fn recv(payloads: &[&[u8]], seqs: &[u16]) -> Vec<ReceivedPacket> {
        payloads
            .iter()
            .zip(seqs)
            .map(|(p, s)| ReceivedPacket {
                kind: Some(Kind::Video),
                mid: Some("0".into()),
                ssrc: 9,
                pt: 96,
                seq: *s,
                ext_seq: u64::from(*s),
                timestamp: 0,
                marker: false,
                payload: Arc::from(*p),
                arrival: Instant::now(),
            })
            .collect()
    }

    #[test]
    fn exact_and_ordered() {
        let s = sent(&[b"a", b"b", b"c", b"a", b"b"]);
        let r = recv(&[b"b", b"c", b"a", b"b"], &[10, 11, 12, 13]);
        let c = compare_payloads(&s, &r, Compare::Exact);
        assert!(c.is_perfect(), "{c:?}");
        assert!(seq_discontinuities(&r).is_empty());
        let r2 = recv(&[b"c", b"b", b"x"], &[65535, 0, 2]);
        let c2 = compare_payloads(&s, &r2, Compare::Exact);
        assert_eq!(c2.matched, 2);
        assert!(c2.first_mismatch.is_some());
        assert_eq!(seq_discontinuities(&r2), vec![(9, 0, 2)]);
    }

    #[test]
    fn picture_id_can_be_ignored() {
        let s = sent(&[&[0x90, 0x80, 0x81, 0x02, 0x10, 7]]);
        let r = recv(&[&[0x90, 0x80, 0xff, 0xff, 0x10, 7]], &[1]);
        assert_eq!(compare_payloads(&s, &r, Compare::Exact).matched, 0);
        assert!(compare_payloads(&s, &r, Compare::Vp8IgnorePictureId).is_perfect());
    }
}
