//! Which peer a datagram belongs to: by the remote address once known, else by the local ICE
//! username fragment of a STUN binding request (RFC 8445 §7.2.2: USERNAME is
//! "local-ufrag:remote-ufrag" from the receiver's point of view).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::ids::PeerId;

/// The peer a datagram is for, and whether its source address is already proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Known(PeerId),
    Unverified(PeerId),
}

#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
}

impl Demux {
    pub fn add_peer(&mut self, peer: PeerId, local_ufrag: &str) {
        self.by_ufrag.insert(local_ufrag.to_string(), peer);
    }

    pub fn remove_peer(&mut self, peer: PeerId) {
        self.by_addr.retain(|_, p| *p != peer);
        self.by_ufrag.retain(|_, p| *p != peer);
    }

    /// Finds the peer of a datagram from `source`. An address is only learnt (see
    /// [`Demux::learn`]) once that peer has answered a STUN check from it: a request that
    /// merely names a peer's ufrag proves nothing until its MESSAGE-INTEGRITY is checked.
    pub fn lookup(&self, source: SocketAddr, data: &[u8]) -> Option<Lookup> {
        let named = stun_local_ufrag(data)
            .and_then(|u| self.by_ufrag.get(u))
            .copied();
        match (self.by_addr.get(&source), named) {
            // A check naming another peer from a known address: a port reused by a new client.
            (Some(known), Some(named)) if *known != named => Some(Lookup::Unverified(named)),
            (Some(known), _) => Some(Lookup::Known(*known)),
            (None, Some(named)) => Some(Lookup::Unverified(named)),
            (None, None) => None,
        }
    }

    /// Binds `source` to `peer`, after the peer accepted a STUN check from it.
    pub fn learn(&mut self, source: SocketAddr, peer: PeerId) {
        self.by_addr.insert(source, peer);
    }

    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }

    pub fn ufrags(&self) -> usize {
        self.by_ufrag.len()
    }
}

/// The local ufrag of a STUN binding request, or `None` for anything else.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const BINDING_REQUEST: u16 = 0x0001;
    const USERNAME: u16 = 0x0006;
    if data.len() < 20 || data[4..8] != MAGIC {
        return None;
    }
    if u16::from_be_bytes([data[0], data[1]]) != BINDING_REQUEST {
        return None;
    }
    let body_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(20..20 + body_len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let len = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + len)?;
        if typ == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    #[test]
    fn learns_an_address_only_when_told() {
        let mut d = Demux::default();
        d.add_peer(PeerId(7), "abcd");
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(d.lookup(from, b"\x80\x60rtp"), None);
        let check = binding_request("abcd:xyz");
        assert_eq!(d.lookup(from, &check), Some(Lookup::Unverified(PeerId(7))));
        // Naming a ufrag is not enough: nothing is learnt until the peer accepts the check.
        assert_eq!(d.lookup(from, b"\x80\x60rtp"), None);
        d.learn(from, PeerId(7));
        assert_eq!(
            d.lookup(from, b"\x80\x60rtp"),
            Some(Lookup::Known(PeerId(7)))
        );
        assert_eq!(d.lookup(from, &check), Some(Lookup::Known(PeerId(7))));
        // A check naming another peer from a known address is routed there, unverified.
        d.add_peer(PeerId(8), "efgh");
        let other = binding_request("efgh:zz");
        assert_eq!(d.lookup(from, &other), Some(Lookup::Unverified(PeerId(8))));
        d.remove_peer(PeerId(7));
        assert_eq!(d.lookup(from, b"\x80\x60rtp"), None);
        assert_eq!(d.addresses(), 0);
    }

    #[test]
    fn garbage_and_truncation_never_match() {
        let msg = binding_request("abcd:xyz");
        for len in 0..msg.len() {
            let _ = stun_local_ufrag(&msg[..len]);
        }
        let mut bad = msg.clone();
        bad[23] = 0xff; // attribute length past the end
        assert_eq!(stun_local_ufrag(&bad), None);
        assert_eq!(stun_local_ufrag(&msg), Some("abcd"));
    }
}
