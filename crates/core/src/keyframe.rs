//! Keyframe detection per codec, from the RTP payload alone. A subscription that starts (or
//! restarts) a video stream waits for a packet this module says begins a keyframe.
//!
//! Every function takes untrusted bytes: short or malformed payloads are "not a keyframe".

use str0m::format::Codec;

/// Whether `payload` is the first packet of a keyframe for `codec`.
/// Audio codecs have no keyframes: every packet counts as one.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::Av1 => av1(payload),
        Codec::H265 | Codec::H266 => false,
        _ => true,
    }
}

/// RFC 7741: payload descriptor, then the VP8 payload header whose P bit is 0 on key frames.
fn vp8(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(h) if h & 0x01 == 0)
}

/// draft-ietf-payload-vp9: the descriptor's P bit is 0 on a frame that is not inter-predicted;
/// B marks the frame's first packet; with layer indices, only spatial layer 0 starts a keyframe.
fn vp9(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let picture_id = b0 & 0x80 != 0;
    let inter = b0 & 0x40 != 0;
    let layers = b0 & 0x20 != 0;
    let begin = b0 & 0x08 != 0;
    if inter || !begin {
        return false;
    }
    if !layers {
        return true;
    }
    let mut i = 1;
    if picture_id {
        let Some(&pid) = p.get(i) else { return false };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    matches!(p.get(i), Some(l) if (l >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice or a sequence parameter set, alone, in a STAP-A, or starting a FU-A.
fn h264(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                let nal = p[i + 2] & 0x1f;
                if nal == IDR || nal == SPS {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        FU_A => matches!(p.get(1), Some(h) if h & 0x80 != 0 && matches!(h & 0x1f, IDR | SPS)),
        _ => false,
    }
}

/// AV1 RTP spec: the aggregation header's N bit marks the first packet of a new coded
/// video sequence, which starts with a keyframe.
fn av1(p: &[u8]) -> bool {
    matches!(p.first(), Some(h) if h & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_picture_id() {
        // X=1 S=1 PID=0; I=1; 15-bit picture id; VP8 header P=0.
        let key = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        assert!(is_keyframe_start(Codec::Vp8, &key));
        let delta = [0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00];
        assert!(!is_keyframe_start(Codec::Vp8, &delta));
        // Not the start of the partition.
        let middle = [0x80, 0x80, 0x81, 0x23, 0x10];
        assert!(!is_keyframe_start(Codec::Vp8, &middle));
    }

    #[test]
    fn vp8_truncated_is_not_a_keyframe() {
        for len in 0..4 {
            assert!(!is_keyframe_start(
                Codec::Vp8,
                &[0x90, 0x80, 0x81, 0x23][..len]
            ));
        }
    }

    #[test]
    fn vp9_keyframe() {
        // I=1 P=0 L=0 B=1, 15-bit picture id.
        assert!(is_keyframe_start(Codec::Vp9, &[0x88, 0x80, 0x01]));
        // P=1: inter frame.
        assert!(!is_keyframe_start(Codec::Vp9, &[0xc8, 0x80, 0x01]));
        // L=1 with spatial id 1.
        assert!(!is_keyframe_start(Codec::Vp9, &[0xa8, 0x80, 0x01, 0x02]));
        assert!(is_keyframe_start(Codec::Vp9, &[0xa8, 0x80, 0x01, 0x00]));
    }

    #[test]
    fn h264_forms() {
        assert!(is_keyframe_start(Codec::H264, &[0x65, 0x00]));
        assert!(!is_keyframe_start(Codec::H264, &[0x41, 0x00]));
        // STAP-A with SPS inside.
        assert!(is_keyframe_start(
            Codec::H264,
            &[0x18, 0x00, 0x02, 0x67, 0x42]
        ));
        // FU-A start of IDR, and a continuation.
        assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05, 0x00]));
        // A STAP-A whose size runs past the end.
        assert!(!is_keyframe_start(Codec::H264, &[0x18, 0xff, 0xff, 0x41]));
    }

    #[test]
    fn audio_is_always_a_start() {
        assert!(is_keyframe_start(Codec::Opus, &[]));
    }
}
