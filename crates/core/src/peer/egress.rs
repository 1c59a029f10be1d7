//! Egress: one packet offered to one slot, through the slot's forwarding decision
//! (`forward`) into str0m's send stream: payload type mapped to the subscriber's, sequence
//! numbers, timestamps and VP8 fields rewritten, extension values passed on.

use std::time::{Duration, Instant};

use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};

use super::Peer;
use crate::forward::Action;
use crate::ids::{Kind, TrackId};
use crate::packet::MediaPacket;
use crate::rewrite::{Rewriter, Source};
use crate::vp8::Vp8Rewriter;

/// How far back a subscriber's NACK can be answered. str0m keeps 3 s by default, which is most
/// of a subscription's memory; a NACK older than a second is past any useful round trip
/// (Janus answers 500 ms by default).
const RTX_HISTORY: Duration = Duration::from_secs(1);
/// Upper bound on that history in packets (str0m's default).
const RTX_PACKETS: usize = 1024;
/// Queued resends are dropped when they pass this share of what is sent (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

/// The result of offering one packet to a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    Forwarded,
    /// Written; the slot waits to move up to a higher layer of a scalable stream, and it is
    /// time to ask the origin for a keyframe again.
    ForwardedWantsKeyframe,
    /// Not written: the slot is not ready, or the packet cannot be sent to this peer.
    Dropped,
    /// Not written; the slot waits for a keyframe and it is time to ask the origin again.
    NeedKeyframe,
}

impl Write {
    fn not_forwarded(ask_keyframe: bool) -> Self {
        if ask_keyframe {
            Write::NeedKeyframe
        } else {
            Write::Dropped
        }
    }
}

/// What one slot keeps to send: its numbering and how each source's payload maps to it.
#[derive(Debug, Default)]
pub(super) struct Sender {
    pub(super) rewriter: Rewriter,
    vp8: Vp8Rewriter,
    /// How each source's payload is sent on this slot, cached per (track, payload type,
    /// RED or not).
    pt_map: Vec<PtMapping>,
    /// The SSRC of the slot's send stream, once found (the per-packet lookup by it is
    /// O(1), by mid it is O(m-lines)).
    stream: Option<Ssrc>,
    /// Packets written into the send stream (`meter` tells retransmissions from them).
    pub(super) written: u64,
}

/// How one source payload type is sent to one subscriber.
#[derive(Debug, Clone, Copy)]
struct PtMapping {
    track: TrackId,
    /// The publisher's (primary) payload type, and whether its packets come as RED.
    from: Pt,
    red_in: bool,
    /// Our payload type for it (`None`: the subscriber cannot receive that codec) and
    /// whether that is RED (else a RED source is sent as its primary block).
    to: Option<Pt>,
    red_out: bool,
}

impl Peer {
    /// Offers one packet to one slot of this peer.
    pub fn write(&mut self, now: Instant, slot: usize, pkt: &MediaPacket) -> Write {
        #[cfg(feature = "fault-injection")]
        self.inject(super::Fault::Write);
        if !self.connected || self.closed {
            return Write::Dropped;
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return Write::Dropped;
        };
        let Some(mid) = s.mid else {
            return Write::Dropped;
        };
        if !s.negotiated_active || s.track != Some(pkt.track) {
            return Write::Dropped;
        }
        let source = Source {
            track: pkt.track,
            ssrc: pkt.ssrc,
        };
        // Learnt from what a slot that is on receives.
        if pkt.svc.is_some() && s.forward.target.is_some() {
            s.svc = true;
        }
        let before = s.forward.current;
        let decision = s.forward.decide(&pkt.view(), now);
        if s.forward.current != before {
            tracing::debug!(peer = %self.id, track = %pkt.track, from = ?before, to = ?s.forward.current, target = ?s.forward.target, "layer forwarded");
        }
        let send = &mut s.send;
        let marker = match decision.action {
            Action::Forward { marker } => marker,
            Action::Skip => {
                // Part of the stream this slot sends: no gap in its numbering.
                send.rewriter.skip(source, pkt.seq);
                if let Some(d) = &pkt.vp8 {
                    send.vp8.skip(source, d, &pkt.payload);
                }
                return Write::not_forwarded(decision.ask_keyframe);
            }
            Action::Drop => return Write::not_forwarded(decision.ask_keyframe),
        };
        // The payload type this peer negotiated for the publisher's codec, cached per source.
        let (from, red_in) = (pkt.params.pt(), pkt.red_primary.is_some());
        let found = send
            .pt_map
            .iter()
            .find(|m| m.track == pkt.track && m.from == from && m.red_in == red_in)
            .copied();
        let mapping = match found {
            Some(m) => m,
            None => {
                let ours = self.rtc.codec_config().match_params(pkt.params);
                let red = ours.and_then(|p| p.red()).filter(|_| red_in);
                let m = PtMapping {
                    track: pkt.track,
                    from,
                    red_in,
                    to: red.or(ours.map(|p| p.pt())),
                    red_out: red.is_some(),
                };
                send.pt_map.push(m);
                m
            }
        };
        let Some(pt) = mapping.to else {
            return Write::Dropped;
        };
        let clock_rate = pkt.params.spec().clock_rate.get();
        let Some(out) = send
            .rewriter
            .rewrite(source, pkt.seq, pkt.timestamp, clock_rate, now)
        else {
            return Write::Dropped;
        };
        let vp8_patch = pkt
            .vp8
            .as_ref()
            .and_then(|d| send.vp8.rewrite(source, d, &pkt.payload).patch(d));
        let mut api = self.rtc.direct_api();
        // By the SSRC found the first time: str0m finds a send stream by SSRC in a map, by
        // mid only by a scan of every send stream of the peer (one per m-line). The mid is
        // checked because str0m may replace a stream (a recycled m-line).
        let known = match send.stream {
            Some(ssrc) => api.stream_tx(&ssrc),
            None => None,
        };
        let tx = match known.filter(|tx| tx.mid() == mid) {
            Some(tx) => tx,
            None => {
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    return Write::Dropped;
                };
                // A stream's retransmission history is sized once, before its first packet.
                tx.set_rtx_cache(RTX_PACKETS, RTX_HISTORY, Some(RTX_RATIO_CAP));
                send.stream = Some(tx.ssrc());
                tx
            }
        };
        let mut ext = ExtensionValues {
            audio_level: pkt.audio_level,
            voice_activity: pkt.voice_activity,
            ..Default::default()
        };
        if let Some(dd) = &pkt.dd {
            // str0m keeps user extension values in a map: one small allocation (its
            // table) per packet with a dependency descriptor (AV1, Chromium's VP8); the
            // descriptor itself is shared.
            ext.user_values.set_arc(dd.clone());
        }
        // A RED source to a subscriber without RED: its primary block alone.
        let payload = match (&pkt.red_primary, mapping.red_out) {
            (Some(primary), false) => primary.clone(),
            _ => pkt.payload.clone(),
        };
        let mut write = RtpWrite::new(pt, out.seq.into(), out.timestamp, pkt.received, payload)
            .marker(marker)
            .ext_vals(ext)
            .nackable(pkt.kind == Kind::Video);
        if let Some(patch) = vp8_patch {
            write = write.vp8_patch(patch);
        }
        tx.write_rtp(write);
        send.written += 1;
        if decision.ask_keyframe {
            Write::ForwardedWantsKeyframe
        } else {
            Write::Forwarded
        }
    }
}
