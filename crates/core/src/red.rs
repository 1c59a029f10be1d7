//! RED (RFC 2198) audio: each packet carries the current Opus frame (the primary block) and
//! copies of earlier ones, so a receiver repairs a loss without a retransmission. The SFU
//! passes RED through to subscribers that negotiated it; for the others it sends the
//! primary block alone, as plain Opus (taken out once at the origin,
//! [`MediaPacket::red_primary`]).
//!
//! [`MediaPacket::red_primary`]: crate::packet::MediaPacket::red_primary

/// The primary block of an untrusted RED payload; `None` if malformed.
///
/// Every block but the last has a 4-byte header (F=1, payload type, timestamp offset,
/// 10-bit length); the last (the primary) has a 1-byte header (F=0) and runs to the end.
pub fn primary(payload: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    let mut redundant = 0usize;
    loop {
        let &h = payload.get(i)?;
        if h & 0x80 == 0 {
            i += 1;
            break;
        }
        let len = payload.get(i + 2..i + 4)?;
        redundant += usize::from(len[0] & 0x03) << 8 | usize::from(len[1]);
        i += 4;
    }
    payload.get(i + redundant..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_block_follows_the_redundant_ones() {
        // Two redundant blocks of 3 and 2 bytes, then the primary of 4 bytes.
        let p = [
            0xef, 0x03, 0xc0, 0x03, // F=1 pt 111, offset 960, length 3
            0xef, 0x01, 0xe0, 0x02, // F=1 pt 111, offset 480, length 2
            0x6f, // F=0 pt 111
            1, 1, 1, 2, 2, 9, 8, 7, 6,
        ];
        assert_eq!(primary(&p), Some(&[9, 8, 7, 6][..]));
        // No redundancy: one byte of header.
        assert_eq!(primary(&[0x6f, 5, 5]), Some(&[5, 5][..]));
    }

    #[test]
    fn malformed_is_none() {
        assert_eq!(primary(&[]), None);
        assert_eq!(primary(&[0xef, 0x03, 0xc0]), None, "a cut header");
        assert_eq!(primary(&[0xef, 0x03, 0xc0, 0xff]), None, "no final header");
        // A length past the end.
        assert_eq!(primary(&[0xef, 0x03, 0xc3, 0xff, 0x6f, 1]), None);
        // Only F=1 headers.
        assert_eq!(primary(&[0xef, 0, 0, 0, 0xef, 0, 0, 0]), None);
    }
}
