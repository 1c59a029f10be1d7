//! What a packet costs to cross the relay between two nodes: the sending node encodes it
//! (`wire`), seals it (AES-256-GCM) and keeps it for a NACK; the receiving node opens it,
//! checks its counter, accounts for its sequence and decodes it. 1,100-byte video packets,
//! as a camera's; compare with what a str0m peer connection spends per forwarded packet
//! (`engine_fanout`, docs/benchmarks.md).
//!
//! cargo bench -p sfumato-core --bench relay_link
//! valgrind --tool=callgrind --toggle-collect='relay_link::cross' target/release/deps/relay_link-<hash>

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfumato_core::link::{LinkOutput, Links, KEY_LEN};
use sfumato_core::wire::ClusterClock;
use sfumato_core::{Kind, MediaPacket, NodeId, PeerId, PipeMsg, TrackId};
use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, Pt};

const PACKETS: u64 = 100_000;

fn main() {
    let now = Instant::now();
    let clock = ClusterClock {
        at: now,
        unix_micros: 1_800_000_000_000_000,
    };
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        (([127, 0, 0, 1], 7001).into(), ([127, 0, 0, 2], 7001).into());
    let key = [7u8; KEY_LEN];
    let mut a = Links::new(NodeId(1), &[1; KEY_LEN], &key);
    let mut b = Links::new(NodeId(2), &[2; KEY_LEN], &key);
    a.set_member(now, NodeId(2), b_addr, &[2; KEY_LEN]);
    b.set_member(now, NodeId(1), a_addr, &[1; KEY_LEN]);
    let start = Instant::now();
    let delivered = cross(&mut a, &mut b, &clock, now, a_addr);
    let took = start.elapsed();
    assert_eq!(delivered, PACKETS, "every packet crossed");
    println!(
        "{:.0} ns per relayed packet (sender and receiver together), {} packets",
        took.as_secs_f64() * 1e9 / PACKETS as f64,
        PACKETS
    );
}

/// Sends [`PACKETS`] packets from `a` to `b`; returns how many `b` delivered. A function of
/// its own for callgrind's `--toggle-collect`.
#[inline(never)]
fn cross(
    a: &mut Links,
    b: &mut Links,
    clock: &ClusterClock,
    start: Instant,
    from: SocketAddr,
) -> u64 {
    let spec = CodecSpec {
        codec: Codec::Vp8,
        clock_rate: Frequency::NINETY_KHZ,
        channels: None,
        format: FormatParams::default(),
    };
    let payload: Arc<[u8]> = Arc::from(vec![0x90u8; 1100]);
    let mut delivered = 0;
    for seq in 0..PACKETS {
        // A millisecond apart, as ~1,000 packets/s: the NACK history keeps one second.
        let now = start + Duration::from_millis(seq);
        let pkt = MediaPacket {
            track: TrackId {
                peer: PeerId(1 << 40),
                index: 1,
            },
            kind: Kind::Video,
            ssrc: 1,
            seq,
            timestamp: (seq * 3000) as u32,
            marker: seq % 5 == 4,
            params: PayloadParams::new(Pt::from(96), None, spec),
            keyframe: false,
            layer: 0,
            layers: 1,
            vp8: None,
            svc: None,
            temporal: None,
            dd: None,
            red_primary: None,
            audio_level: None,
            voice_activity: None,
            received: now,
            payload: payload.clone(),
        };
        a.send(now, NodeId(2), &PipeMsg::Media(Arc::new(pkt)), clock);
        while let Some(out) = a.poll_output() {
            if let LinkOutput::Transmit { data, .. } = out {
                b.handle_datagram(now, from, &data, clock);
            }
        }
        while let Some(out) = b.poll_output() {
            if let LinkOutput::Message { .. } = out {
                delivered += 1;
            }
        }
    }
    delivered
}
