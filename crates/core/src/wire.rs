//! The wire form of a [`PipeMsg`], so that the message that crosses between two workers of a
//! node can cross a socket between nodes (the cluster relay): a small metadata block (the
//! track, its layer and temporal layer, the keyframe flag, the codec, and the time the
//! origin received the packet on a clock the cluster shares) followed by the RTP packet.
//! Decoding reads untrusted bytes: anything malformed is a [`WireError`], never a panic.
//!
//! Layout (big-endian), after a version byte and a type byte:
//!
//! ```text
//! media:     track (u64 peer, u16 index) · flags u16 · layer u8 · layers u8
//!            · received (u64 µs since the UNIX epoch) · sequence rollovers u32
//!            · codec (u8 id, u32 clock rate, u8 channels, u16 fmtp presence, fmtp values)
//!            · [svc 6 bytes] · [temporal 3 bytes] · [audio level i8] · [u8 len + dependency
//!            descriptor] · RTP header (12 bytes) · payload
//! keyframe:  track · layer u8
//! layers:    track · worker u16 · flow mask u8 · keep mask u8
//! ended:     track
//! rates:     track · bits per second u32 per (layer, temporal layer), layer-major
//! data:      room (u8 len, UTF-8) · sender u64 · flags u8 (bit 0 reliable, bit 1 ordered)
//!            · recipients (u8 count, u64 each) · the deliver frame (crate::data)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, Pt};
use str0m::rtp::Vp8Descriptor;

use crate::alloc::Rates;
use crate::data::DataPacket;
use crate::dd::DdBytes;
use crate::ids::{Kind, MemberId, PeerId, TrackId, WorkerId};
use crate::packet::{MediaPacket, Need, PipeMsg, MAX_LAYERS};
use crate::red;
use crate::svc::SvcLayer;
use crate::temporal::TemporalLayer;

/// The version written first; others are refused.
pub const VERSION: u8 = 2;

const MEDIA: u8 = 1;
const KEYFRAME: u8 = 2;
const LAYERS: u8 = 3;
const ENDED: u8 = 4;
const RATES: u8 = 5;
const DATA: u8 = 6;

// Media flags.
const VIDEO: u16 = 1;
const KEY: u16 = 1 << 1;
const MARKER: u16 = 1 << 2;
const RED: u16 = 1 << 3;
const SVC: u16 = 1 << 4;
const TEMPORAL: u16 = 1 << 5;
const DD: u16 = 1 << 6;
const AUDIO_LEVEL: u16 = 1 << 7;
const VOICE: u16 = 1 << 8;
const VOICE_ACTIVE: u16 = 1 << 9;

/// Why bytes are not a pipe message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message ends early")]
    Truncated,
    #[error("version {0} is not spoken here (only {VERSION})")]
    Version(u8),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("unknown codec {0}")]
    Codec(u8),
    #[error("a clock rate of 0")]
    ClockRate,
    #[error("not an RTP version 2 header")]
    Rtp,
    #[error("a malformed RED payload")]
    Red,
    #[error("a dependency descriptor of {0} bytes (at most 255)")]
    TooLong(usize),
    #[error("a layer out of range")]
    Range,
    #[error("a room name that is not UTF-8 or longer than 255 bytes")]
    Room,
}

/// The most spatial and temporal layers a scalable stream's descriptors can name (3 bits).
const MAX_SVC_LAYERS: u8 = 8;

/// A clock the nodes of a cluster share (microseconds since the UNIX epoch, as NTP keeps
/// it), read once together with the local monotonic clock so that `Instant`s convert both
/// ways. A runtime reads it ([`ClusterClock::read`]); tests make one.
#[derive(Debug, Clone, Copy)]
pub struct ClusterClock {
    pub at: Instant,
    pub unix_micros: u64,
}

impl ClusterClock {
    pub fn read() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        ClusterClock {
            at: Instant::now(),
            unix_micros: unix.as_micros() as u64,
        }
    }

    pub fn to_unix(&self, t: Instant) -> u64 {
        if t >= self.at {
            self.unix_micros + (t - self.at).as_micros() as u64
        } else {
            self.unix_micros
                .saturating_sub((self.at - t).as_micros() as u64)
        }
    }

    pub fn to_instant(&self, unix_micros: u64) -> Instant {
        if unix_micros >= self.unix_micros {
            self.at + Duration::from_micros(unix_micros - self.unix_micros)
        } else {
            let back = Duration::from_micros(self.unix_micros - unix_micros);
            self.at.checked_sub(back).unwrap_or(self.at)
        }
    }
}

/// Appends the wire form of `msg` to `out`.
pub fn encode(msg: &PipeMsg, clock: &ClusterClock, out: &mut Vec<u8>) -> Result<(), WireError> {
    out.push(VERSION);
    match msg {
        PipeMsg::Media(p) => {
            out.push(MEDIA);
            media(p, clock, out)?;
        }
        PipeMsg::KeyframeRequest(track, layer) => {
            out.push(KEYFRAME);
            put_track(out, *track);
            out.push(*layer);
        }
        PipeMsg::Layers {
            track,
            worker,
            need,
        } => {
            out.push(LAYERS);
            put_track(out, *track);
            out.extend_from_slice(&worker.0.to_be_bytes());
            out.push(need.flow);
            out.push(need.keep);
        }
        PipeMsg::TrackEnded(track) => {
            out.push(ENDED);
            put_track(out, *track);
        }
        PipeMsg::Rates(track, rates) => {
            out.push(RATES);
            put_track(out, *track);
            for bps in rates.iter().flatten() {
                out.extend_from_slice(&u32::try_from(*bps).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
        PipeMsg::Data(p) => {
            out.push(DATA);
            let room = u8::try_from(p.room.len()).map_err(|_| WireError::Room)?;
            let count = u8::try_from(p.to.len()).map_err(|_| WireError::Range)?;
            out.push(room);
            out.extend_from_slice(p.room.as_bytes());
            out.extend_from_slice(&p.from.0.to_be_bytes());
            out.push(u8::from(p.reliable) | u8::from(p.ordered) << 1);
            out.push(count);
            for m in p.to.iter() {
                out.extend_from_slice(&m.0.to_be_bytes());
            }
            out.extend_from_slice(&p.frame);
        }
    }
    Ok(())
}

/// Reads one message written by [`encode`].
pub fn decode(bytes: &[u8], clock: &ClusterClock) -> Result<PipeMsg, WireError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    match r.u8()? {
        MEDIA => Ok(PipeMsg::Media(Arc::new(read_media(&mut r, clock)?))),
        KEYFRAME => Ok(PipeMsg::KeyframeRequest(r.track()?, r.u8()?)),
        LAYERS => Ok(PipeMsg::Layers {
            track: r.track()?,
            worker: WorkerId(r.u16()?),
            need: Need {
                flow: r.u8()?,
                keep: r.u8()?,
            },
        }),
        ENDED => Ok(PipeMsg::TrackEnded(r.track()?)),
        RATES => {
            let track = r.track()?;
            let mut rates: Rates = Default::default();
            for bps in rates.iter_mut().flatten() {
                *bps = u64::from(r.u32()?);
            }
            Ok(PipeMsg::Rates(track, Box::new(rates)))
        }
        DATA => {
            let n = r.u8()?;
            let room = std::str::from_utf8(r.take(usize::from(n))?).map_err(|_| WireError::Room)?;
            let from = MemberId(r.u64()?);
            let flags = r.u8()?;
            let reliable = flags & 1 != 0;
            let count = r.u8()?;
            let to = (0..count)
                .map(|_| r.u64().map(MemberId))
                .collect::<Result<Box<[_]>, _>>()?;
            Ok(PipeMsg::Data(Arc::new(DataPacket {
                room: room.into(),
                from,
                to,
                reliable,
                ordered: reliable || flags & 2 != 0,
                frame: r.rest().into(),
            })))
        }
        t => Err(WireError::Type(t)),
    }
}

fn put_track(out: &mut Vec<u8>, t: TrackId) {
    out.extend_from_slice(&t.peer.0.to_be_bytes());
    out.extend_from_slice(&t.index.to_be_bytes());
}

fn media(p: &MediaPacket, clock: &ClusterClock, out: &mut Vec<u8>) -> Result<(), WireError> {
    let mut flags = 0;
    for (on, bit) in [
        (p.kind == Kind::Video, VIDEO),
        (p.keyframe, KEY),
        (p.marker, MARKER),
        (p.red_primary.is_some(), RED),
        (p.svc.is_some(), SVC),
        (p.temporal.is_some(), TEMPORAL),
        (p.dd.is_some(), DD),
        (p.audio_level.is_some(), AUDIO_LEVEL),
        (p.voice_activity.is_some(), VOICE),
        (p.voice_activity == Some(true), VOICE_ACTIVE),
    ] {
        if on {
            flags |= bit;
        }
    }
    put_track(out, p.track);
    out.extend_from_slice(&flags.to_be_bytes());
    out.push(p.layer);
    out.push(p.layers);
    out.extend_from_slice(&clock.to_unix(p.received).to_be_bytes());
    out.extend_from_slice(&((p.seq >> 16) as u32).to_be_bytes());
    put_codec(out, &p.params.spec());
    if let Some(l) = &p.svc {
        let edges = u8::from(l.begin) | u8::from(l.end) << 1;
        out.extend_from_slice(&[
            l.spatial,
            l.temporal,
            l.switch_up,
            edges,
            u8::from(l.spatial_layers.is_some()),
            l.spatial_layers.unwrap_or(0),
        ]);
    }
    if let Some(t) = &p.temporal {
        out.extend_from_slice(&[t.tid, u8::from(t.frame_start), t.switch_up]);
    }
    if let Some(level) = p.audio_level {
        out.push(level as u8);
    }
    if let Some(dd) = &p.dd {
        let n = u8::try_from(dd.0.len()).map_err(|_| WireError::TooLong(dd.0.len()))?;
        out.push(n);
        out.extend_from_slice(&dd.0);
    }
    // The RTP fixed header (no CSRCs, no extensions: what they carried is above).
    out.push(0x80);
    out.push(u8::from(p.marker) << 7 | (*p.params.pt() & 0x7f));
    out.extend_from_slice(&(p.seq as u16).to_be_bytes());
    out.extend_from_slice(&p.timestamp.to_be_bytes());
    out.extend_from_slice(&p.ssrc.to_be_bytes());
    out.extend_from_slice(&p.payload);
    Ok(())
}

fn read_media(r: &mut Reader<'_>, clock: &ClusterClock) -> Result<MediaPacket, WireError> {
    let track = r.track()?;
    let flags = r.u16()?;
    let layer = r.u8()?;
    let layers = r.u8()?;
    if layers == 0 || usize::from(layers) > MAX_LAYERS || layer >= layers {
        return Err(WireError::Range);
    }
    let received = clock.to_instant(r.u64()?);
    let rollovers = r.u32()?;
    let spec = read_codec(r)?;
    let svc = if flags & SVC != 0 {
        let [spatial, temporal, switch_up, edges, has_count, count] = r.array()?;
        if spatial >= MAX_SVC_LAYERS || temporal >= MAX_SVC_LAYERS || count > MAX_SVC_LAYERS {
            return Err(WireError::Range);
        }
        Some(SvcLayer {
            spatial,
            temporal,
            switch_up,
            begin: edges & 1 != 0,
            end: edges & 2 != 0,
            spatial_layers: (has_count != 0).then_some(count),
        })
    } else {
        None
    };
    let temporal = if flags & TEMPORAL != 0 {
        let [tid, frame_start, switch_up] = r.array()?;
        if tid >= MAX_SVC_LAYERS {
            return Err(WireError::Range);
        }
        Some(TemporalLayer {
            tid,
            frame_start: frame_start != 0,
            switch_up,
        })
    } else {
        None
    };
    let audio_level = if flags & AUDIO_LEVEL != 0 {
        Some(r.u8()? as i8)
    } else {
        None
    };
    let dd = if flags & DD != 0 {
        let n = usize::from(r.u8()?);
        Some(Arc::new(DdBytes(r.take(n)?.into())))
    } else {
        None
    };
    let [b0, b1, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3] = r.array()?;
    if b0 >> 6 != 2 {
        return Err(WireError::Rtp);
    }
    let payload: Arc<[u8]> = Arc::from(r.rest());
    let red_primary = if flags & RED != 0 {
        Some(Arc::from(red::primary(&payload).ok_or(WireError::Red)?))
    } else {
        None
    };
    let vp8 = match spec.codec {
        Codec::Vp8 => Vp8Descriptor::parse(&payload).ok(),
        _ => None,
    };
    let voice_activity = (flags & VOICE != 0).then_some(flags & VOICE_ACTIVE != 0);
    Ok(MediaPacket {
        track,
        kind: if flags & VIDEO != 0 {
            Kind::Video
        } else {
            Kind::Audio
        },
        ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
        seq: u64::from(rollovers) << 16 | u64::from(u16::from_be_bytes([s0, s1])),
        timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
        marker: flags & MARKER != 0,
        params: PayloadParams::new(Pt::from(b1 & 0x7f), None, spec),
        keyframe: flags & KEY != 0,
        layer,
        layers,
        vp8,
        svc,
        temporal,
        dd,
        red_primary,
        audio_level,
        voice_activity,
        received,
        payload,
    })
}

/// The codecs a relay carries, by wire id.
const CODECS: [(u8, Codec); 10] = [
    (1, Codec::Opus),
    (2, Codec::PCMU),
    (3, Codec::PCMA),
    (4, Codec::G722),
    (5, Codec::H264),
    (6, Codec::H265),
    (7, Codec::Vp8),
    (8, Codec::Vp9),
    (9, Codec::Av1),
    (10, Codec::CN),
];

/// The format parameters that tell apart what a subscriber can decode, in wire order, each
/// with its width in bytes.
fn fmtp_fields(f: &FormatParams) -> [(Option<u32>, usize); 12] {
    [
        (f.min_p_time.map(u32::from), 1),
        (f.stereo.map(u32::from), 1),
        (f.use_inband_fec.map(u32::from), 1),
        (f.use_dtx.map(u32::from), 1),
        (f.level_asymmetry_allowed.map(u32::from), 1),
        (f.packetization_mode.map(u32::from), 1),
        (f.profile_level_id, 4),
        (f.profile_id, 4),
        (f.profile.map(u32::from), 1),
        (f.level_idx.map(u32::from), 1),
        (f.tier.map(u32::from), 1),
        (f.sprop_stereo.map(u32::from), 1),
    ]
}

fn put_codec(out: &mut Vec<u8>, spec: &CodecSpec) {
    let id = CODECS
        .iter()
        .find(|(_, c)| *c == spec.codec)
        .map_or(0, |(id, _)| *id);
    out.push(id);
    out.extend_from_slice(&spec.clock_rate.get().to_be_bytes());
    out.push(spec.channels.unwrap_or(0));
    let fields = fmtp_fields(&spec.format);
    let present = fields
        .iter()
        .enumerate()
        .filter(|(_, (v, _))| v.is_some())
        .fold(0u16, |m, (bit, _)| m | 1 << bit);
    out.extend_from_slice(&present.to_be_bytes());
    for (v, width) in fields {
        if let Some(v) = v {
            out.extend_from_slice(&v.to_be_bytes()[4 - width..]);
        }
    }
}

fn read_codec(r: &mut Reader<'_>) -> Result<CodecSpec, WireError> {
    let id = r.u8()?;
    let codec = CODECS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, c)| *c)
        .ok_or(WireError::Codec(id))?;
    let rate = std::num::NonZeroU32::new(r.u32()?).ok_or(WireError::ClockRate)?;
    let channels = Some(r.u8()?).filter(|c| *c != 0);
    let present = r.u16()?;
    let mut v = [None; 12];
    for (bit, (_, width)) in fmtp_fields(&FormatParams::default()).iter().enumerate() {
        if present & (1 << bit) != 0 {
            v[bit] = Some(match width {
                1 => u32::from(r.u8()?),
                _ => r.u32()?,
            });
        }
    }
    // A byte-wide field holds at most 255: the casts below lose nothing.
    let byte = |i: usize| v[i].map(|x| x as u8);
    let flag = |i: usize| v[i].map(|x| x != 0);
    let format = FormatParams {
        min_p_time: byte(0),
        stereo: flag(1),
        use_inband_fec: flag(2),
        use_dtx: flag(3),
        level_asymmetry_allowed: flag(4),
        packetization_mode: byte(5),
        profile_level_id: v[6],
        profile_id: v[7],
        profile: byte(8),
        level_idx: byte(9),
        tier: byte(10),
        sprop_stereo: flag(11),
        ..Default::default()
    };
    Ok(CodecSpec {
        codec,
        clock_rate: Frequency::from_nonzero(rate),
        channels,
        format,
    })
}

/// A cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn track(&mut self) -> Result<TrackId, WireError> {
        Ok(TrackId {
            peer: PeerId(self.u64()?),
            index: self.u16()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> ClusterClock {
        ClusterClock {
            at: Instant::now(),
            unix_micros: 1_800_000_000_000_000,
        }
    }

    fn vp8_spec() -> CodecSpec {
        CodecSpec {
            codec: Codec::Vp8,
            clock_rate: Frequency::NINETY_KHZ,
            channels: None,
            format: FormatParams::default(),
        }
    }

    fn packet(clock: &ClusterClock) -> MediaPacket {
        // A VP8 payload descriptor with a PictureID, then a few bytes of frame.
        let payload: Arc<[u8]> = Arc::from(&[0x90, 0x80, 0x81, 0x23, 0x9d, 0x01, 0x2a][..]);
        MediaPacket {
            track: TrackId {
                peer: PeerId(0x00ab_cdef_0000_0042),
                index: 1,
            },
            kind: Kind::Video,
            ssrc: 0x1234_5678,
            seq: (7 << 16) | 65_000,
            timestamp: 90_000,
            marker: true,
            params: PayloadParams::new(Pt::from(96), None, vp8_spec()),
            keyframe: true,
            layer: 2,
            layers: 3,
            vp8: Vp8Descriptor::parse(&payload).ok(),
            svc: None,
            temporal: Some(TemporalLayer {
                tid: 0,
                frame_start: true,
                switch_up: 3,
            }),
            dd: Some(Arc::new(DdBytes(vec![0x80, 0x01, 0x02].into()))),
            red_primary: None,
            audio_level: None,
            voice_activity: None,
            received: clock.at - Duration::from_millis(3),
            payload,
        }
    }

    fn round_trip(msg: &PipeMsg) -> PipeMsg {
        let c = clock();
        let mut out = Vec::new();
        encode(msg, &c, &mut out).expect("encodes");
        decode(&out, &c).expect("decodes")
    }

    #[test]
    fn media_crosses_whole() {
        let c = clock();
        let p = packet(&c);
        let PipeMsg::Media(q) = round_trip(&PipeMsg::Media(Arc::new(packet(&c)))) else {
            panic!("not media");
        };
        assert_eq!(q.track, p.track);
        assert_eq!(
            (q.kind, q.ssrc, q.seq, q.timestamp),
            (p.kind, p.ssrc, p.seq, p.timestamp)
        );
        assert_eq!(
            (q.marker, q.keyframe, q.layer, q.layers),
            (true, true, 2, 3)
        );
        assert_eq!(q.params.spec(), p.params.spec());
        assert_eq!(q.params.pt(), p.params.pt());
        assert_eq!(format!("{:?}", q.vp8), format!("{:?}", p.vp8));
        assert!(q.vp8.is_some(), "the VP8 descriptor is read again");
        assert_eq!(q.temporal, p.temporal);
        assert_eq!(
            q.dd.as_ref().map(|d| d.0.clone()),
            p.dd.as_ref().map(|d| d.0.clone())
        );
        assert_eq!(&*q.payload, &*p.payload);
        let skew = q.received.max(p.received) - q.received.min(p.received);
        assert!(
            skew < Duration::from_micros(2),
            "received time kept: {skew:?}"
        );
    }

    #[test]
    fn audio_with_red_and_levels_crosses_whole() {
        let c = clock();
        let opus = CodecSpec {
            codec: Codec::Opus,
            clock_rate: Frequency::FORTY_EIGHT_KHZ,
            channels: Some(2),
            format: FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                use_dtx: Some(true),
                ..Default::default()
            },
        };
        // RED: one redundant block header (F=1, pt 111, offset, length 2), then the
        // primary header (F=0, pt 111), the redundant block, the primary block.
        let payload: Arc<[u8]> =
            Arc::from(&[0xef, 0x00, 0x50, 0x02, 0x6f, 0xaa, 0xbb, 0x01, 0x02, 0x03][..]);
        let p = MediaPacket {
            kind: Kind::Audio,
            params: PayloadParams::new(Pt::from(111), None, opus),
            vp8: None,
            temporal: None,
            dd: None,
            keyframe: true,
            layer: 0,
            layers: 1,
            red_primary: red::primary(&payload).map(Arc::from),
            audio_level: Some(-30),
            voice_activity: Some(true),
            payload,
            ..packet(&c)
        };
        assert!(p.red_primary.is_some(), "a valid RED payload");
        let PipeMsg::Media(q) = round_trip(&PipeMsg::Media(Arc::new(p))) else {
            panic!("not media");
        };
        assert_eq!(q.kind, Kind::Audio);
        assert_eq!(q.params.spec(), opus);
        assert_eq!(q.red_primary.as_deref(), Some(&[0x01, 0x02, 0x03][..]));
        assert_eq!((q.audio_level, q.voice_activity), (Some(-30), Some(true)));
    }

    #[test]
    fn control_messages_cross_whole() {
        let track = TrackId {
            peer: PeerId(u64::MAX),
            index: 9,
        };
        for msg in [
            PipeMsg::KeyframeRequest(track, 2),
            PipeMsg::Layers {
                track,
                worker: WorkerId(3),
                need: Need {
                    flow: 0b100,
                    keep: 0b111,
                },
            },
            PipeMsg::TrackEnded(track),
            PipeMsg::Rates(
                track,
                Box::new([[1, 2, 3], [40_000, 0, 7], [0; 3], [u64::from(u32::MAX); 3]]),
            ),
            PipeMsg::Data(Arc::new(DataPacket {
                room: "réunion".into(),
                from: MemberId(u64::MAX),
                to: vec![MemberId(1), MemberId(2)].into(),
                reliable: true,
                ordered: true,
                frame: vec![2, 0, 1, 2, 3].into(),
            })),
            PipeMsg::Data(Arc::new(DataPacket {
                room: "r".into(),
                from: MemberId(3),
                to: Box::new([]),
                reliable: false,
                ordered: true,
                frame: vec![2, 4, 1, 2, 3].into(),
            })),
        ] {
            assert_eq!(format!("{:?}", round_trip(&msg)), format!("{msg:?}"));
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let c = clock();
        let mut good = Vec::new();
        encode(&PipeMsg::Media(Arc::new(packet(&c))), &c, &mut good).expect("encodes");
        // Every truncation of a valid message, and every single-byte corruption of it.
        for n in 0..good.len() - 7 {
            assert!(decode(&good[..n], &c).is_err(), "{n} bytes decoded");
        }
        for i in 0..good.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = decode(&bad, &c);
            }
        }
        assert_eq!(decode(&[1, 1], &c).err(), Some(WireError::Version(1)));
        assert_eq!(decode(&[VERSION, 99], &c).err(), Some(WireError::Type(99)));
        // A pseudo-random stream of inputs.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (x % 96) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes, &c);
            let mut with_header = vec![VERSION, (x % 6) as u8];
            with_header.extend_from_slice(&bytes);
            let _ = decode(&with_header, &c);
        }
    }
}
