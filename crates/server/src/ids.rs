//! Identifiers the control plane hands out: participant and peer ids that are unique across a
//! cluster (a node tag in the high bits, a counter below), and unguessable session tokens for
//! the URLs that end a session (WHIP and WHEP `Location`).

/// Bits of an id left to the per-node counter: 2^40 ids per node start.
const COUNTER_BITS: u32 = 40;
/// Node tags are 24 bits: 16 million node starts before one could repeat.
pub const TAG_BITS: u32 = 24;

/// Hands out ids `tag << 40 | n`, never 0.
#[derive(Debug)]
pub struct Ids {
    tag: u64,
    next: u64,
}

impl Ids {
    /// Ids for the node tagged `tag` (its low [`TAG_BITS`] bits): unique across nodes with
    /// different tags. A cluster hands tags out; a lone node draws one at random.
    pub fn new(tag: u32) -> Self {
        Ids {
            tag: u64::from(tag) & ((1 << TAG_BITS) - 1),
            next: 1,
        }
    }

    /// A random node tag (for a node without a cluster to ask).
    pub fn random_tag() -> u32 {
        let mut b = [0u8; 4];
        fill(&mut b);
        u32::from_le_bytes(b)
    }

    pub fn next(&mut self) -> u64 {
        let n = self.next;
        self.next = (n + 1) & ((1 << COUNTER_BITS) - 1);
        (self.tag << COUNTER_BITS) | n
    }
}

/// A session token: 128 random bits in hex, not derivable from anything else a client sees.
pub fn token() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fill(buf: &mut [u8]) {
    // The OS's generator fails only where nothing random can be had at all; ids and tokens
    // must then not be handed out.
    getrandom::fill(buf).expect("the operating system's random number generator");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_node_tag_and_differ_between_nodes() {
        let (mut a, mut b) = (Ids::new(1), Ids::new(2));
        let (x, y) = (a.next(), b.next());
        assert_ne!(x, y);
        assert_eq!(x >> COUNTER_BITS, 1);
        assert_eq!(a.next(), x + 1);
        assert_eq!(
            Ids::new(u32::MAX).next() >> COUNTER_BITS,
            (1 << TAG_BITS) - 1
        );
    }

    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
