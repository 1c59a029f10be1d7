//! Malformed datagrams for robustness tests: random bytes, and truncated or corrupted
//! STUN, DTLS, RTP and RTCP, all deterministic from a seed.

use std::net::{SocketAddr, UdpSocket};

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

fn stun_binding(rng: &mut Rng, username: &[u8]) -> Vec<u8> {
    let mut attrs = Vec::new();
    // USERNAME
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    // PRIORITY
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04]);
    attrs.extend_from_slice(&rng.bytes(4));
    // MESSAGE-INTEGRITY with a random (wrong) HMAC.
    attrs.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    attrs.extend_from_slice(&rng.bytes(20));
    // FINGERPRINT with a random (wrong) CRC.
    attrs.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    attrs.extend_from_slice(&rng.bytes(4));
    let mut m = Vec::new();
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&rng.bytes(12));
    m.extend_from_slice(&attrs);
    m
}

fn dtls_client_hello(rng: &mut Rng) -> Vec<u8> {
    let body_len = 60 + rng.below(100);
    let mut hs = vec![0x01]; // ClientHello
    hs.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&[0x00, 0x00]); // message_seq
    hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
    hs.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&[0xfe, 0xfd]);
    hs.extend_from_slice(&rng.bytes(body_len - 2));
    let mut r = vec![22, 0xfe, 0xfd]; // handshake, DTLS 1.2
    r.extend_from_slice(&[0, 0]); // epoch
    r.extend_from_slice(&rng.bytes(6)); // sequence
    r.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    r.extend_from_slice(&hs);
    r
}

fn dtls_record(rng: &mut Rng) -> Vec<u8> {
    let ct = [20u8, 21, 22, 23][rng.below(4)];
    let len = rng.below(300);
    let mut r = vec![ct, 0xfe, 0xfd];
    r.extend_from_slice(&rng.bytes(2)); // epoch
    r.extend_from_slice(&rng.bytes(6));
    // Sometimes lie about the length.
    let claimed = if rng.below(3) == 0 {
        rng.next_u64() as u16
    } else {
        len as u16
    };
    r.extend_from_slice(&claimed.to_be_bytes());
    r.extend_from_slice(&rng.bytes(len));
    r
}

fn rtp(rng: &mut Rng, ssrc: Option<u32>) -> Vec<u8> {
    let cc = if rng.below(4) == 0 { rng.below(16) } else { 0 };
    let x = rng.below(2) == 0;
    let mut p = vec![0x80 | (u8::from(x) << 4) | cc as u8];
    p.push(rng.next_u64() as u8);
    p.extend_from_slice(&rng.bytes(2));
    p.extend_from_slice(&rng.bytes(4));
    let ssrc = ssrc.unwrap_or(rng.next_u64() as u32);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&rng.bytes(cc * 4));
    if x {
        p.extend_from_slice(&[0xbe, 0xde]);
        let words = rng.below(4) as u16;
        // Sometimes claim more extension words than present.
        let claimed = if rng.below(3) == 0 { words + 50 } else { words };
        p.extend_from_slice(&claimed.to_be_bytes());
        p.extend_from_slice(&rng.bytes(words as usize * 4));
    }
    let n = rng.below(1200);
    p.extend_from_slice(&rng.bytes(n));
    p
}

fn rtcp(rng: &mut Rng) -> Vec<u8> {
    let pt = 200 + rng.below(7) as u8;
    let mut p = vec![0x80 | rng.below(32) as u8, pt];
    let len = rng.below(40);
    let claimed = if rng.below(3) == 0 {
        rng.next_u64() as u16
    } else {
        len as u16
    };
    p.extend_from_slice(&claimed.to_be_bytes());
    p.extend_from_slice(&rng.bytes(len * 4 + 4));
    p
}

/// A mixed set of `n` malformed datagrams: random bytes of every size class, truncated
/// prefixes, STUN binding requests with wrong integrity (including the given ICE `ufrags`,
/// e.g. the server's, to reach a real peer), DTLS records and ClientHellos, RTP and RTCP
/// with random or lying headers, plus the given `ssrcs` as RTP SSRCs.
pub fn datagrams(seed: u64, n: usize, ufrags: &[String], ssrcs: &[u32]) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    // Fixed edge cases first.
    out.push(Vec::new());
    for len in [1usize, 2, 3, 4, 11, 12, 13, 19, 20, 21] {
        out.push(rng.bytes(len));
    }
    out.push(vec![0u8; 1500]);
    out.push(vec![0xffu8; 1500]);
    while out.len() < n {
        let mut d = match rng.below(9) {
            0 => {
                let n = rng.below(1500);
                rng.bytes(n)
            }
            1 | 2 => {
                let user = if !ufrags.is_empty() && rng.below(2) == 0 {
                    let u = &ufrags[rng.below(ufrags.len())];
                    format!("{u}:abcd").into_bytes()
                } else {
                    let n = 1 + rng.below(40);
                    rng.bytes(n)
                };
                stun_binding(&mut rng, &user)
            }
            3 => dtls_client_hello(&mut rng),
            4 => dtls_record(&mut rng),
            5 | 6 => {
                let ssrc =
                    (!ssrcs.is_empty() && rng.below(2) == 0).then(|| ssrcs[rng.below(ssrcs.len())]);
                rtp(&mut rng, ssrc)
            }
            7 => rtcp(&mut rng),
            _ => {
                // A random first byte in each RFC 7983 range, then garbage.
                let first = [0u8, 3, 20, 63, 64, 79, 127, 128, 191, 192, 255][rng.below(11)];
                let mut v = vec![first];
                let n = rng.below(200);
                v.extend(rng.bytes(n));
                v
            }
        };
        // Truncate a third of them at a random point.
        if !d.is_empty() && rng.below(3) == 0 {
            let cut = rng.below(d.len());
            d.truncate(cut);
        }
        // Flip a byte in some.
        if !d.is_empty() && rng.below(5) == 0 {
            let i = rng.below(d.len());
            d[i] ^= 1 << rng.below(8);
        }
        out.push(d);
    }
    out
}

/// Sends every datagram to every address from a fresh socket on 127.0.0.1. Returns how many
/// were sent.
pub fn spray(addrs: &[SocketAddr], datagrams: &[Vec<u8>]) -> std::io::Result<usize> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let mut sent = 0;
    for a in addrs {
        for d in datagrams {
            if s.send_to(d, a).is_ok() {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// The ICE ufrag (`a=ice-ufrag:`) of an SDP, if any.
pub fn sdp_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_deterministic_and_varied() {
        let a = datagrams(7, 300, &["abcd".into()], &[42]);
        let b = datagrams(7, 300, &["abcd".into()], &[42]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 300);
        assert!(a.iter().any(|d| d.first() == Some(&0)));
        assert!(a.iter().any(|d| d.first() == Some(&22)));
        assert!(a.iter().any(|d| d.first().is_some_and(|b| *b >= 128)));
        assert!(a.iter().all(|d| d.len() <= 1500));
    }

    #[test]
    fn ufrag_from_sdp() {
        let sdp = "v=0\r\na=ice-ufrag:Xy12\r\na=ice-pwd:zz\r\n";
        assert_eq!(sdp_ufrag(sdp).as_deref(), Some("Xy12"));
        assert_eq!(sdp_ufrag("v=0\r\n"), None);
    }
}
