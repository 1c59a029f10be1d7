//! VP8 payload descriptor rewriting for one outgoing stream (RFC 7741). When a subscriber's
//! stream moves from one source to another (a simulcast layer switch, a publisher restart),
//! the PictureID, TL0PICIDX and KEYIDX of the new source continue where the old one ended,
//! as the sequence numbers do (`rewrite`): a decoder that sees a jump in PictureID assumes
//! lost frames and asks for a keyframe, which is the freeze a switch must not cause.
//!
//! A subscription that drops whole pictures (the temporal layers above the ones it gets)
//! says so with [`Vp8Rewriter::skip`]: the pictures after them move down to close the gap in
//! PictureID, as `rewrite` closes the one in sequence numbers (libwebrtc's receiver waits
//! for every PictureID it has not seen before it decodes a later frame). TL0PICIDX needs no
//! such care: base-layer pictures are never dropped.
//!
//! The descriptor is parsed once at the origin ([`MediaPacket::vp8`]); per subscriber this
//! only computes the new values and up to four replacement bytes ([`Fields::patch`]), which
//! str0m applies while it serializes the packet (no copy of the payload here).
//!
//! [`MediaPacket::vp8`]: crate::packet::MediaPacket::vp8

use std::collections::VecDeque;

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

use crate::rewrite::Source;

#[derive(Debug, Default)]
pub struct Vp8Rewriter {
    source: Option<Source>,
    /// Added to the source's values (PictureID in its own width, TL0PICIDX mod 256, KEYIDX
    /// mod 32).
    pid_offset: u16,
    tl0_offset: u8,
    key_offset: u8,
    /// The newest values sent, to continue from at the next switch.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    last_key: Option<u8>,
    /// The latest dropped PictureIDs of the current source, oldest first (each moved every
    /// later picture down by one).
    skipped: VecDeque<u16>,
}

/// How many dropped pictures are remembered for reordered packets (a second of a dropped
/// temporal layer at 30 frames/s).
const SKIP_MEMORY: usize = 32;

/// Whether the PictureID of this payload is the 15-bit form (M bit), else 7-bit.
fn wide_picture_id(payload: &[u8]) -> bool {
    payload.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// `a` is newer than `b` in a sequence space of `modulus` values.
fn newer(a: u16, b: u16, modulus: u16) -> bool {
    let d = a.wrapping_sub(b) % modulus;
    d != 0 && d < modulus / 2
}

/// The values one packet leaves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
}

impl Fields {
    /// The byte replacements that turn `desc`'s values into these; `None` when they are
    /// already the same (the stream never changed source) or there are no fields.
    pub fn patch(&self, desc: &Vp8Descriptor) -> Option<Vp8Patch> {
        let same = self.picture_id == desc.picture_id()
            && self.tl0_pic_idx == desc.tl0_pic_idx()
            && self.key_idx == desc.key_idx();
        if same {
            return None;
        }
        let mut patch = desc.patch();
        if let Some(v) = self.picture_id {
            patch = patch.picture_id(v);
        }
        if let Some(v) = self.tl0_pic_idx {
            patch = patch.tl0_pic_idx(v);
        }
        if let Some(v) = self.key_idx {
            patch = patch.key_idx(v);
        }
        patch.build().ok()
    }
}

impl Vp8Rewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The values one packet of `source` leaves with.
    pub fn rewrite(&mut self, source: Source, desc: &Vp8Descriptor, payload: &[u8]) -> Fields {
        let pid_mod: u16 = if wide_picture_id(payload) {
            1 << 15
        } else {
            1 << 7
        };
        if self.source != Some(source) {
            if self.source.is_some() {
                if let (Some(last), Some(pid)) = (self.last_pid, desc.picture_id()) {
                    self.pid_offset = last.wrapping_add(1).wrapping_sub(pid) % pid_mod;
                }
                if let (Some(last), Some(tl0)) = (self.last_tl0, desc.tl0_pic_idx()) {
                    self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
                }
                if let (Some(last), Some(key)) = (self.last_key, desc.key_idx()) {
                    self.key_offset = last.wrapping_add(1).wrapping_sub(key) & 0x1f;
                }
            }
            self.source = Some(source);
            self.skipped.clear();
        }
        let picture_id = desc.picture_id().map(|pid| {
            let mut offset = self.pid_offset;
            if self.skipped.back().is_some_and(|&s| newer(s, pid, pid_mod)) {
                // Reordered from before a drop: the drops after it did not move it.
                let later = self.skipped.iter().filter(|&&s| newer(s, pid, pid_mod));
                offset = offset.wrapping_add(later.count() as u16);
            }
            let out = pid.wrapping_add(offset) % pid_mod;
            if self
                .last_pid
                .is_none_or(|l| newer(out, l % pid_mod, pid_mod))
            {
                self.last_pid = Some(out);
            }
            out
        });
        let tl0_pic_idx = desc.tl0_pic_idx().map(|tl0| {
            let out = tl0.wrapping_add(self.tl0_offset);
            if self
                .last_tl0
                .is_none_or(|l| newer(out.into(), l.into(), 256))
            {
                self.last_tl0 = Some(out);
            }
            out
        });
        let key_idx = desc.key_idx().map(|key| {
            let out = key.wrapping_add(self.key_offset) & 0x1f;
            if self
                .last_key
                .is_none_or(|l| newer(out.into(), l.into(), 32))
            {
                self.last_key = Some(out);
            }
            out
        });
        Fields {
            picture_id,
            tl0_pic_idx,
            key_idx,
        }
    }

    /// A packet of `source`'s picture `desc` is dropped (with the rest of its picture):
    /// the later pictures of the source close the gap. Nothing to close before the first
    /// packet of a source is sent (the numbering continues from what was sent).
    pub fn skip(&mut self, source: Source, desc: &Vp8Descriptor, payload: &[u8]) {
        let Some(pid) = desc.picture_id() else {
            return;
        };
        if self.source != Some(source) || self.skipped.contains(&pid) {
            return;
        }
        let pid_mod: u16 = if wide_picture_id(payload) {
            1 << 15
        } else {
            1 << 7
        };
        if self.skipped.len() == SKIP_MEMORY {
            self.skipped.pop_front();
        }
        self.skipped.push_back(pid);
        self.pid_offset = self.pid_offset.wrapping_sub(1) % pid_mod;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PeerId, TrackId};

    /// A VP8 payload with a 15-bit PictureID, TL0PICIDX and KEYIDX (X, I, L, T and K set).
    fn payload(pid: u16, tl0: u8, key: u8) -> Vec<u8> {
        vec![
            0x90,
            0xf0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            0x20 | (key & 0x1f),
            0x00,
            0x9d,
        ]
    }

    fn source(ssrc: u32) -> Source {
        Source {
            track: TrackId {
                peer: PeerId(1),
                index: 1,
            },
            ssrc,
        }
    }

    fn out(rw: &mut Vp8Rewriter, src: Source, pid: u16, tl0: u8, key: u8) -> (u16, u8, u8) {
        let p = payload(pid, tl0, key);
        let d = Vp8Descriptor::parse(&p).unwrap();
        let f = rw.rewrite(src, &d, &p);
        assert_eq!(
            f.patch(&d).is_none(),
            (f.picture_id, f.tl0_pic_idx, f.key_idx) == (Some(pid), Some(tl0), Some(key))
        );
        (
            f.picture_id.unwrap(),
            f.tl0_pic_idx.unwrap(),
            f.key_idx.unwrap(),
        )
    }

    #[test]
    fn one_source_passes_unchanged() {
        let mut rw = Vp8Rewriter::new();
        for i in 0..10u16 {
            assert_eq!(
                out(&mut rw, source(1), 1000 + i, 7 + i as u8, 3),
                (1000 + i, 7 + i as u8, 3)
            );
        }
    }

    #[test]
    fn a_switch_continues_every_field() {
        let mut rw = Vp8Rewriter::new();
        for i in 0..5u16 {
            out(&mut rw, source(1), 100 + i, 10 + i as u8, 4);
        }
        // The new source starts far away; the subscriber sees 105, 15, 5 next.
        assert_eq!(out(&mut rw, source(2), 30000, 200, 17), (105, 15, 5));
        assert_eq!(out(&mut rw, source(2), 30001, 201, 17), (106, 16, 5));
        // And back to the first source, later in its own numbering.
        assert_eq!(out(&mut rw, source(1), 150, 60, 9), (107, 17, 6));
    }

    #[test]
    fn picture_ids_wrap_in_their_width() {
        let mut rw = Vp8Rewriter::new();
        out(&mut rw, source(1), 0x7ffe, 255, 31);
        assert_eq!(out(&mut rw, source(2), 5, 9, 1), (0x7fff, 0, 0));
        assert_eq!(out(&mut rw, source(2), 6, 10, 1), (0, 1, 0));
    }

    #[test]
    fn dropped_pictures_leave_no_gap() {
        let mut rw = Vp8Rewriter::new();
        let skip = |rw: &mut Vp8Rewriter, pid: u16| {
            let p = payload(pid, 0, 0);
            rw.skip(source(1), &Vp8Descriptor::parse(&p).unwrap(), &p);
        };
        assert_eq!(out(&mut rw, source(1), 10, 1, 0).0, 10);
        skip(&mut rw, 11);
        skip(&mut rw, 11); // the same picture's next packet
        assert_eq!(out(&mut rw, source(1), 12, 1, 0).0, 11);
        skip(&mut rw, 13);
        assert_eq!(out(&mut rw, source(1), 14, 2, 0).0, 12);
        // Reordered packets from before the drops keep their numbers.
        assert_eq!(out(&mut rw, source(1), 12, 1, 0).0, 11);
        assert_eq!(out(&mut rw, source(1), 10, 1, 0).0, 10);
        // Across the PictureID wrap, and on to a switch that continues from there.
        let mut rw = Vp8Rewriter::new();
        out(&mut rw, source(1), 0x7ffe, 1, 0);
        skip(&mut rw, 0x7fff);
        assert_eq!(out(&mut rw, source(1), 0, 1, 0).0, 0x7fff);
        assert_eq!(out(&mut rw, source(2), 900, 7, 0).0, 0);
        // A drop before anything of a source was sent changes nothing.
        skip(&mut rw, 0x0010);
        assert_eq!(out(&mut rw, source(2), 901, 7, 0).0, 1);
    }

    #[test]
    fn a_late_packet_does_not_move_the_continuation_point_back() {
        let mut rw = Vp8Rewriter::new();
        out(&mut rw, source(1), 10, 1, 0);
        out(&mut rw, source(1), 12, 2, 0);
        out(&mut rw, source(1), 11, 1, 0); // reordered
        assert_eq!(out(&mut rw, source(2), 500, 50, 3).0, 13);
    }
}
