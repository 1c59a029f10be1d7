//! The layer fields of a scalable VP9 packet (RFC 9628 payload descriptor), read once at
//! the origin for `svc`.

use crate::svc::SvcLayer;

/// Reads the descriptor of an untrusted payload; `None` when it has no layer indices
/// (a stream without scalability: nothing to select) or is malformed.
pub fn parse(p: &[u8]) -> Option<SvcLayer> {
    let &b0 = p.first()?;
    let picture_id = b0 & 0x80 != 0;
    let inter = b0 & 0x40 != 0;
    let layers = b0 & 0x20 != 0;
    let flexible = b0 & 0x10 != 0;
    let begin = b0 & 0x08 != 0;
    let end = b0 & 0x04 != 0;
    let ss = b0 & 0x02 != 0;
    if !layers {
        return None;
    }
    let mut i = 1;
    if picture_id {
        let &pid = p.get(i)?;
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    let &l = p.get(i)?;
    i += 1;
    let temporal = l >> 5;
    // U, the switching up point: no later frame of this layer needs an earlier one.
    let switch_up = if l & 0x10 != 0 { temporal } else { 0 };
    let spatial = (l >> 1) & 0x07;
    if !flexible {
        i += 1; // TL0PICIDX
    }
    if flexible && inter {
        // Up to three reference indices, each with a "one more follows" bit.
        for _ in 0..3 {
            let &r = p.get(i)?;
            i += 1;
            if r & 0x01 == 0 {
                break;
            }
        }
    }
    let spatial_layers = if ss {
        let &n = p.get(i)?;
        Some((n >> 5) + 1)
    } else {
        None
    };
    Some(SvcLayer {
        spatial,
        temporal,
        switch_up,
        begin,
        end,
        spatial_layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Non-flexible descriptor: I (15-bit picture id), L, B/E as given, SS with 3 layers if
    /// `ss`; P set unless `key`.
    fn desc(sid: u8, tid: u8, b: bool, e: bool, key: bool, ss: bool) -> Vec<u8> {
        let mut b0 = 0xa0;
        if !key {
            b0 |= 0x40;
        }
        if b {
            b0 |= 0x08;
        }
        if e {
            b0 |= 0x04;
        }
        if ss {
            b0 |= 0x02;
        }
        let mut p = vec![b0, 0x81, 0x23, (tid << 5) | (sid << 1), 7];
        if ss {
            p.push(2 << 5);
        }
        p.extend_from_slice(&[0xde, 0xad]);
        p
    }

    fn parsed(p: &[u8]) -> SvcLayer {
        parse(p).expect("a layered descriptor")
    }

    #[test]
    fn reads_layers_and_the_scalability_structure() {
        let l = parsed(&desc(2, 1, true, false, false, false));
        assert_eq!((l.spatial, l.temporal, l.begin, l.end), (2, 1, true, false));
        assert_eq!(l.spatial_layers, None);
        assert!(!l.picture_start());
        let k = parsed(&desc(0, 0, true, true, true, true));
        assert_eq!(k.spatial_layers, Some(3));
        assert!(k.picture_start());
    }

    #[test]
    fn the_switching_up_point_opens_its_temporal_layer() {
        let mut p = desc(0, 2, true, true, false, false);
        assert_eq!(parsed(&p).switch_up, 0);
        p[3] |= 0x10; // U
        assert_eq!(parsed(&p).switch_up, 2);
    }

    #[test]
    fn flexible_mode_reference_indices_are_skipped() {
        // I=1 P=1 L=1 F=1 B=1 V=1; 7-bit pid; layer byte; two P_DIFF (N set on the first); SS.
        let p = [0xfa, 0x05, (1 << 5) | (1 << 1), 0x03, 0x02, 1 << 5, 0x00];
        let l = parsed(&p);
        assert_eq!((l.spatial, l.temporal), (1, 1));
        assert_eq!(l.spatial_layers, Some(2));
    }

    #[test]
    fn truncated_or_unlayered_is_none() {
        let p = desc(1, 0, true, true, false, true);
        for len in 0..6 {
            assert_eq!(parse(&p[..len]), None, "length {len}");
        }
        // L=0: no layer indices.
        assert_eq!(parse(&[0x88, 0x81, 0x23]), None);
    }
}
