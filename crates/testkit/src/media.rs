//! Media sources: IVF (VP8) and Ogg (Opus) parsing, RFC 7741 VP8 packetization and the
//! looping, paced sources the test client sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

/// The committed VP8 fixture (see `fixtures/README.md` for how it was made).
pub const VP8_FIXTURE: &[u8] = include_bytes!("../fixtures/testsrc-320x240.ivf");
/// The committed Opus fixture (Ogg/Opus, 20 ms frames, 48 kHz mono).
pub const OPUS_FIXTURE: &[u8] = include_bytes!("../fixtures/sine-440hz.opus");

/// The rids of a simulcast publisher, lowest layer first (Chrome's `q;h;f`).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// The committed VP8 fixtures of the simulcast layers, in [`SIMULCAST_RIDS`] order:
/// 320x180, 640x360 and 1280x720, each encoded on its own (`fixtures/README.md`).
pub const VP8_SIMULCAST_FIXTURES: [&[u8]; 3] = [
    include_bytes!("../fixtures/testsrc-320x180.ivf"),
    include_bytes!("../fixtures/testsrc-640x360.ivf"),
    include_bytes!("../fixtures/testsrc-1280x720.ivf"),
];

/// The 3-byte Opus "silence" frame (TOC 0xF8: CELT FB 20 ms, one frame).
pub const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// Largest RTP payload the packetizer produces (descriptor included), leaving room for the
/// RTP header, extensions and SRTP tag within a 1200-byte datagram.
pub const MAX_VP8_PAYLOAD: usize = 1100;

/// Video RTP clock rate.
pub const VIDEO_CLOCK: u32 = 90_000;
/// Audio (Opus) RTP clock rate.
pub const AUDIO_CLOCK: u32 = 48_000;
/// Video frames per second of the looped source.
pub const VIDEO_FPS: u32 = 30;
/// Audio packets per second (20 ms Opus frames).
pub const AUDIO_PPS: u32 = 50;

/// The IVF file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfHeader {
    /// Codec FourCC, `VP80` for VP8.
    pub fourcc: [u8; 4],
    /// Frame width in pixels.
    pub width: u16,
    /// Frame height in pixels.
    pub height: u16,
    /// Time base denominator (frame rate numerator).
    pub timebase_den: u32,
    /// Time base numerator.
    pub timebase_num: u32,
    /// Frame count as written in the header (may be 0 or wrong in streamed files).
    pub frame_count: u32,
}

/// One frame of an IVF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfFrame {
    /// Presentation timestamp in time-base units.
    pub pts: u64,
    /// The encoded frame.
    pub data: Arc<[u8]>,
}

impl IvfFrame {
    /// Whether this VP8 frame is a key frame (bit 0 of the frame tag is 0).
    pub fn is_vp8_keyframe(&self) -> bool {
        vp8_is_keyframe(&self.data)
    }
}

/// Whether a raw VP8 frame (not an RTP payload) is a key frame.
pub fn vp8_is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x01 == 0)
}

/// The width and height a VP8 key frame declares (RFC 6386 9.1), `None` for an inter frame
/// or a truncated or malformed key frame.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if !vp8_is_keyframe(frame) || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

/// Parses an IVF file into its header and frames. Rejects truncated input.
pub fn parse_ivf(bytes: &[u8]) -> anyhow::Result<(IvfHeader, Vec<IvfFrame>)> {
    ensure!(
        bytes.len() >= 32,
        "IVF: file shorter than its 32-byte header"
    );
    ensure!(&bytes[0..4] == b"DKIF", "IVF: bad signature");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let header_len = u16_at(6) as usize;
    ensure!(
        header_len >= 32 && header_len <= bytes.len(),
        "IVF: bad header length {header_len}"
    );
    let header = IvfHeader {
        fourcc: [bytes[8], bytes[9], bytes[10], bytes[11]],
        width: u16_at(12),
        height: u16_at(14),
        timebase_den: u32_at(16),
        timebase_num: u32_at(20),
        frame_count: u32_at(24),
    };
    let mut frames = Vec::new();
    let mut pos = header_len;
    while pos < bytes.len() {
        ensure!(
            bytes.len() - pos >= 12,
            "IVF: truncated frame header at offset {pos}"
        );
        let size = u32_at(pos) as usize;
        let pts = u64::from_le_bytes(bytes[pos + 4..pos + 12].try_into().context("pts")?);
        pos += 12;
        ensure!(
            bytes.len() - pos >= size,
            "IVF: frame at offset {} claims {size} bytes, {} left",
            pos - 12,
            bytes.len() - pos
        );
        frames.push(IvfFrame {
            pts,
            data: bytes[pos..pos + size].into(),
        });
        pos += size;
    }
    Ok((header, frames))
}

/// Parses an Ogg/Opus file and returns the Opus packets (the `OpusHead` and `OpusTags`
/// header packets are skipped). Only a single logical stream is supported.
pub fn parse_ogg_opus(bytes: &[u8]) -> anyhow::Result<Vec<Arc<[u8]>>> {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        ensure!(
            bytes.len() - pos >= 27,
            "Ogg: truncated page header at {pos}"
        );
        ensure!(
            &bytes[pos..pos + 4] == b"OggS",
            "Ogg: bad capture pattern at {pos}"
        );
        let segments = bytes[pos + 26] as usize;
        ensure!(
            bytes.len() - pos >= 27 + segments,
            "Ogg: truncated segment table at {pos}"
        );
        let table = &bytes[pos + 27..pos + 27 + segments];
        let mut data = pos + 27 + segments;
        for &lacing in table {
            let lacing = lacing as usize;
            ensure!(
                bytes.len() - data >= lacing,
                "Ogg: truncated segment at {data}"
            );
            current.extend_from_slice(&bytes[data..data + lacing]);
            data += lacing;
            if lacing < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        pos = data;
    }
    let mut out = Vec::new();
    for p in packets {
        if p.starts_with(b"OpusHead") || p.starts_with(b"OpusTags") {
            continue;
        }
        if p.is_empty() {
            continue;
        }
        out.push(Arc::from(p));
    }
    if out.is_empty() {
        bail!("Ogg: no Opus packets");
    }
    Ok(out)
}

/// The fields of an RFC 7741 VP8 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S bit: first packet of a partition.
    pub start_of_partition: bool,
    /// Partition index.
    pub partition_id: u8,
    /// N bit: non-reference frame.
    pub non_reference: bool,
    /// The picture id if present (7 or 15 bits).
    pub picture_id: Option<u16>,
    /// Whether the picture id uses the 15-bit form (M bit).
    pub picture_id_15bit: bool,
    /// TL0PICIDX if present.
    pub tl0picidx: Option<u8>,
    /// Temporal layer index if present.
    pub tid: Option<u8>,
    /// Key index if present.
    pub keyidx: Option<u8>,
    /// Length of the descriptor in bytes; the VP8 data starts there.
    pub len: usize,
}

/// Parses the RFC 7741 payload descriptor at the start of a VP8 RTP payload.
pub fn parse_vp8_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let mut d = Vp8Descriptor {
        start_of_partition: b0 & 0x10 != 0,
        partition_id: b0 & 0x07,
        non_reference: b0 & 0x20 != 0,
        picture_id: None,
        picture_id_15bit: false,
        tl0picidx: None,
        tid: None,
        keyidx: None,
        len: 1,
    };
    if b0 & 0x80 == 0 {
        return Some(d);
    }
    let x = *payload.get(1)?;
    let mut i = 2;
    if x & 0x80 != 0 {
        let p0 = *payload.get(i)?;
        if p0 & 0x80 != 0 {
            let p1 = *payload.get(i + 1)?;
            d.picture_id = Some((u16::from(p0 & 0x7f) << 8) | u16::from(p1));
            d.picture_id_15bit = true;
            i += 2;
        } else {
            d.picture_id = Some(u16::from(p0 & 0x7f));
            i += 1;
        }
    }
    if x & 0x40 != 0 {
        d.tl0picidx = Some(*payload.get(i)?);
        i += 1;
    }
    if x & 0x30 != 0 {
        let tk = *payload.get(i)?;
        if x & 0x20 != 0 {
            d.tid = Some(tk >> 6);
        }
        if x & 0x10 != 0 {
            d.keyidx = Some(tk & 0x1f);
        }
        i += 1;
    }
    if i > payload.len() {
        return None;
    }
    d.len = i;
    Some(d)
}

/// Whether a VP8 RTP payload starts a key frame (first packet of partition 0 and the VP8
/// frame tag says key frame).
pub fn vp8_payload_is_keyframe(payload: &[u8]) -> bool {
    match parse_vp8_descriptor(payload) {
        Some(d) if d.start_of_partition && d.partition_id == 0 => {
            vp8_is_keyframe(&payload[d.len..])
        }
        _ => false,
    }
}

/// The width and height of the key frame a VP8 RTP payload starts, if it starts one.
pub fn vp8_payload_keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let d = parse_vp8_descriptor(payload)?;
    if !d.start_of_partition || d.partition_id != 0 {
        return None;
    }
    vp8_keyframe_size(payload.get(d.len..)?)
}

/// A copy of a VP8 RTP payload with the picture id zeroed, for comparisons that must not
/// depend on an SFU rewriting picture ids.
pub fn vp8_payload_without_picture_id(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    if let Some(d) = parse_vp8_descriptor(payload) {
        if d.picture_id.is_some() {
            if d.picture_id_15bit {
                out[2] &= 0x80;
                out[3] = 0;
            } else {
                out[2] = 0;
            }
        }
    }
    out
}

/// One RTP payload produced by a packetizer, with its marker bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadChunk {
    /// The RTP payload (descriptor + data for VP8).
    pub payload: Arc<[u8]>,
    /// RTP marker bit (last packet of a video frame).
    pub marker: bool,
}

/// RFC 7741 VP8 packetizer: every packet carries a 4-byte payload descriptor with a 15-bit
/// picture id (X=1, I=1, M=1); S=1 on the first packet of a frame; marker on the last.
#[derive(Debug, Clone)]
pub struct Vp8Packetizer {
    picture_id: u16,
    max_payload: usize,
}

impl Vp8Packetizer {
    /// A packetizer starting at `picture_id` (taken modulo 2^15).
    pub fn new(picture_id: u16, max_payload: usize) -> Self {
        assert!(max_payload > 4, "max_payload must leave room for data");
        Self {
            picture_id: picture_id & 0x7fff,
            max_payload,
        }
    }

    /// The picture id the next frame will carry.
    pub fn next_picture_id(&self) -> u16 {
        self.picture_id
    }

    /// Packetizes one VP8 frame and advances the picture id.
    pub fn packetize(&mut self, frame: &[u8]) -> Vec<PayloadChunk> {
        let pid = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let room = self.max_payload - 4;
        let mut out = Vec::with_capacity(frame.len() / room + 1);
        let mut chunks = frame.chunks(room).peekable();
        let mut first = true;
        if frame.is_empty() {
            let desc = [0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8];
            return vec![PayloadChunk {
                payload: Arc::from(&desc[..]),
                marker: true,
            }];
        }
        while let Some(chunk) = chunks.next() {
            let mut p = Vec::with_capacity(chunk.len() + 4);
            p.push(if first { 0x90 } else { 0x80 });
            p.push(0x80);
            p.push(0x80 | (pid >> 8) as u8);
            p.push(pid as u8);
            p.extend_from_slice(chunk);
            first = false;
            out.push(PayloadChunk {
                payload: p.into(),
                marker: chunks.peek().is_none(),
            });
        }
        out
    }
}

/// Looping, paced VP8 source: 30 frames/s, RTP timestamps increasing by 3000 per frame.
#[derive(Debug, Clone)]
pub struct VideoSource {
    frames: Arc<Vec<IvfFrame>>,
    index: usize,
    packetizer: Vp8Packetizer,
    frames_sent: u64,
    ts_base: u32,
    start: Option<Instant>,
    keyframe_pending: bool,
}

impl VideoSource {
    /// A source over the committed fixture.
    pub fn from_fixture(picture_id: u16, ts_base: u32) -> anyhow::Result<Self> {
        Self::from_ivf(VP8_FIXTURE, picture_id, ts_base)
    }

    /// A source over an IVF file of VP8 frames.
    pub fn from_ivf(ivf: &[u8], picture_id: u16, ts_base: u32) -> anyhow::Result<Self> {
        let (header, frames) = parse_ivf(ivf)?;
        ensure!(
            &header.fourcc == b"VP80",
            "IVF: not VP8 ({:?})",
            header.fourcc
        );
        Self::new(frames, picture_id, ts_base)
    }

    /// A source over the given frames (the first must be a key frame).
    pub fn new(frames: Vec<IvfFrame>, picture_id: u16, ts_base: u32) -> anyhow::Result<Self> {
        ensure!(!frames.is_empty(), "no video frames");
        ensure!(
            frames[0].is_vp8_keyframe(),
            "first frame is not a key frame"
        );
        Ok(Self {
            frames: Arc::new(frames),
            index: 0,
            packetizer: Vp8Packetizer::new(picture_id, MAX_VP8_PAYLOAD),
            frames_sent: 0,
            ts_base,
            start: None,
            keyframe_pending: false,
        })
    }

    /// The width and height of the video (from its first key frame).
    pub fn size(&self) -> (u16, u16) {
        self.frames
            .first()
            .and_then(|f| vp8_keyframe_size(&f.data))
            .unwrap_or((0, 0))
    }

    /// The next frame is a key frame (jumps to the next key frame of the loop).
    pub fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    /// When the next frame is due (now if not started).
    pub fn next_due(&self, now: Instant) -> Instant {
        match self.start {
            None => now,
            Some(s) => s + frame_offset(self.frames_sent, VIDEO_FPS),
        }
    }

    /// Produces the next frame if due: its RTP timestamp, whether it is a key frame, and its
    /// payloads. If the caller fell more than 200 ms behind, the schedule restarts at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<(u32, bool, Vec<PayloadChunk>)> {
        let start = *self.start.get_or_insert(now);
        let due = start + frame_offset(self.frames_sent, VIDEO_FPS);
        if due > now {
            return None;
        }
        if now - due > Duration::from_millis(200) {
            // Re-anchor so that frame n is due at now.
            self.start = Some(now - frame_offset(self.frames_sent, VIDEO_FPS));
        }
        if self.keyframe_pending {
            self.keyframe_pending = false;
            if !self.frames[self.index].is_vp8_keyframe() {
                let n = self.frames.len();
                self.index = (1..n)
                    .map(|k| (self.index + k) % n)
                    .find(|&i| self.frames[i].is_vp8_keyframe())
                    .unwrap_or(0);
            }
        }
        let frame = self.frames[self.index].clone();
        self.index = (self.index + 1) % self.frames.len();
        let ts = self
            .ts_base
            .wrapping_add((self.frames_sent as u32).wrapping_mul(VIDEO_CLOCK / VIDEO_FPS));
        self.frames_sent += 1;
        Some((
            ts,
            frame.is_vp8_keyframe(),
            self.packetizer.packetize(&frame.data),
        ))
    }
}

/// Looping, paced Opus source: 50 packets/s, RTP timestamps increasing by 960.
#[derive(Debug, Clone)]
pub struct AudioSource {
    packets: Arc<Vec<Arc<[u8]>>>,
    index: usize,
    sent: u64,
    ts_base: u32,
    start: Option<Instant>,
}

impl AudioSource {
    /// A source over the committed Opus fixture.
    pub fn from_fixture(ts_base: u32) -> anyhow::Result<Self> {
        Ok(Self::new(parse_ogg_opus(OPUS_FIXTURE)?, ts_base))
    }

    /// A source sending the 3-byte silence frame forever.
    pub fn silence(ts_base: u32) -> Self {
        Self::new(vec![Arc::from(&OPUS_SILENCE[..])], ts_base)
    }

    /// A source looping over `packets`.
    pub fn new(packets: Vec<Arc<[u8]>>, ts_base: u32) -> Self {
        Self {
            packets: Arc::new(packets),
            index: 0,
            sent: 0,
            ts_base,
            start: None,
        }
    }

    /// When the next packet is due (now if not started).
    pub fn next_due(&self, now: Instant) -> Instant {
        match self.start {
            None => now,
            Some(s) => s + frame_offset(self.sent, AUDIO_PPS),
        }
    }

    /// Produces the next packet if due: RTP timestamp and payload.
    pub fn poll(&mut self, now: Instant) -> Option<(u32, Arc<[u8]>)> {
        let start = *self.start.get_or_insert(now);
        let due = start + frame_offset(self.sent, AUDIO_PPS);
        if due > now {
            return None;
        }
        if now - due > Duration::from_millis(200) {
            self.start = Some(now - frame_offset(self.sent, AUDIO_PPS));
        }
        let p = self.packets[self.index].clone();
        self.index = (self.index + 1) % self.packets.len();
        let ts = self
            .ts_base
            .wrapping_add((self.sent as u32).wrapping_mul(AUDIO_CLOCK / AUDIO_PPS));
        self.sent += 1;
        Some((ts, p))
    }
}

fn frame_offset(n: u64, rate: u32) -> Duration {
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / u64::from(rate))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ivf_bytes(frames: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"DKIF");
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&32u16.to_le_bytes());
        b.extend_from_slice(b"VP80");
        b.extend_from_slice(&320u16.to_le_bytes());
        b.extend_from_slice(&240u16.to_le_bytes());
        b.extend_from_slice(&30u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(i as u64).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    #[test]
    fn ivf_parses_synthetic_file() {
        let bytes = ivf_bytes(&[&[0x10, 1, 2, 3], &[0x11, 9], &[]]);
        let (h, frames) = parse_ivf(&bytes).unwrap();
        assert_eq!(&h.fourcc, b"VP80");
        assert_eq!((h.width, h.height), (320, 240));
        assert_eq!((h.timebase_den, h.timebase_num, h.frame_count), (30, 1, 3));
        assert_eq!(frames.len(), 3);
        assert_eq!(&*frames[0].data, &[0x10, 1, 2, 3]);
        assert_eq!(frames[1].pts, 1);
        assert!(frames[0].is_vp8_keyframe());
        assert!(!frames[1].is_vp8_keyframe());
        assert!(frames[2].data.is_empty());
    }

    #[test]
    fn ivf_rejects_bad_input() {
        assert!(parse_ivf(b"").is_err());
        assert!(parse_ivf(&[0u8; 40]).is_err());
        let bytes = ivf_bytes(&[&[0x10, 1, 2, 3]]);
        // Every truncation that cuts into a frame is an error, never a panic.
        for n in 0..bytes.len() {
            let r = parse_ivf(&bytes[..n]);
            if n == 32 {
                assert!(r.unwrap().1.is_empty());
            } else {
                assert!(r.is_err(), "truncation at {n} accepted");
            }
        }
        // A frame size larger than the file.
        let mut bad = ivf_bytes(&[&[0x10, 1]]);
        bad[32] = 0xff;
        assert!(parse_ivf(&bad).is_err());
    }

    #[test]
    fn fixture_is_vp8_320x240_with_keyframes_every_30() {
        let (h, frames) = parse_ivf(VP8_FIXTURE).unwrap();
        assert_eq!(&h.fourcc, b"VP80");
        assert_eq!((h.width, h.height), (320, 240));
        assert_eq!(frames.len(), 60);
        let keys: Vec<usize> = (0..frames.len())
            .filter(|&i| frames[i].is_vp8_keyframe())
            .collect();
        assert_eq!(keys, vec![0, 30]);
        // A VP8 key frame carries the start code 9d 01 2a and its dimensions.
        let k = &frames[0].data;
        assert_eq!(&k[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([k[6], k[7]]) & 0x3fff, 320);
        assert_eq!(u16::from_le_bytes([k[8], k[9]]) & 0x3fff, 240);
    }

    #[test]
    fn simulcast_fixtures_are_vp8_of_their_layer_sizes() {
        let sizes = [(320, 180), (640, 360), (1280, 720)];
        let mut last_len = 0;
        for (bytes, size) in VP8_SIMULCAST_FIXTURES.iter().zip(sizes) {
            let (h, frames) = parse_ivf(bytes).unwrap();
            assert_eq!(&h.fourcc, b"VP80");
            assert_eq!((h.width, h.height), size);
            assert_eq!((h.timebase_den, h.timebase_num), (30, 1));
            assert_eq!(frames.len(), 60, "2 s at 30 fps");
            let keys: Vec<usize> = (0..frames.len())
                .filter(|&i| frames[i].is_vp8_keyframe())
                .collect();
            assert_eq!(keys, vec![0, 30], "{size:?}");
            for k in keys {
                assert_eq!(vp8_keyframe_size(&frames[k].data), Some(size));
            }
            // Each layer is encoded on its own: higher layers are bigger, all stay small.
            assert!(bytes.len() > last_len && bytes.len() < 300_000, "{size:?}");
            last_len = bytes.len();
            let v = VideoSource::from_ivf(bytes, 0, 0).unwrap();
            assert_eq!(v.size(), size);
        }
        assert_eq!(VideoSource::from_fixture(0, 0).unwrap().size(), (320, 240));
    }

    #[test]
    fn vp8_keyframe_size_rejects_inter_and_truncated_frames() {
        let (_, frames) = parse_ivf(VP8_FIXTURE).unwrap();
        let key = &frames[0].data;
        assert_eq!(vp8_keyframe_size(key), Some((320, 240)));
        assert_eq!(vp8_keyframe_size(&frames[1].data), None);
        for n in 0..10 {
            assert_eq!(vp8_keyframe_size(&key[..n]), None, "truncated at {n}");
        }
        let mut bad = key.to_vec();
        bad[4] = 0;
        assert_eq!(vp8_keyframe_size(&bad), None, "no start code");
        // On the wire: the first packet of a key frame tells its size, the others do not.
        let chunks = Vp8Packetizer::new(0, MAX_VP8_PAYLOAD).packetize(key);
        assert!(chunks.len() > 1);
        assert_eq!(
            vp8_payload_keyframe_size(&chunks[0].payload),
            Some((320, 240))
        );
        assert_eq!(vp8_payload_keyframe_size(&chunks[1].payload), None);
        assert_eq!(vp8_payload_keyframe_size(&[]), None);
    }

    #[test]
    fn opus_fixture_parses() {
        let packets = parse_ogg_opus(OPUS_FIXTURE).unwrap();
        // 2 s of 20 ms frames (the encoder may add one for pre-skip).
        assert!((100..=102).contains(&packets.len()), "{}", packets.len());
        // Every packet is a 20 ms, one-frame CELT or hybrid/SILK packet: config in TOC.
        for p in &packets {
            assert!(!p.is_empty());
            assert_eq!(p[0] & 0x03, 0, "code 0 (one frame)");
        }
        assert!(parse_ogg_opus(b"OggS").is_err());
        assert!(parse_ogg_opus(&OPUS_FIXTURE[..OPUS_FIXTURE.len() - 3]).is_err());
    }

    #[test]
    fn vp8_packetizer_small_frame() {
        let mut p = Vp8Packetizer::new(0x1234, 100);
        let out = p.packetize(&[0x10, 0xaa, 0xbb]);
        assert_eq!(out.len(), 1);
        assert!(out[0].marker);
        assert_eq!(
            &*out[0].payload,
            &[0x90, 0x80, 0x92, 0x34, 0x10, 0xaa, 0xbb]
        );
        let d = parse_vp8_descriptor(&out[0].payload).unwrap();
        assert!(d.start_of_partition);
        assert_eq!(d.partition_id, 0);
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.picture_id_15bit);
        assert_eq!(d.len, 4);
        assert!(vp8_payload_is_keyframe(&out[0].payload));
        assert_eq!(p.next_picture_id(), 0x1235);
    }

    #[test]
    fn vp8_packetizer_splits_and_reassembles() {
        let frame: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8 | 1).collect();
        let mut p = Vp8Packetizer::new(7, 1000);
        let out = p.packetize(&frame);
        assert_eq!(out.len(), 3); // 996 + 996 + 508
        let mut re = Vec::new();
        for (i, c) in out.iter().enumerate() {
            assert!(c.payload.len() <= 1000);
            let d = parse_vp8_descriptor(&c.payload).unwrap();
            assert_eq!(d.start_of_partition, i == 0);
            assert_eq!(d.picture_id, Some(7));
            assert_eq!(c.marker, i == out.len() - 1);
            re.extend_from_slice(&c.payload[d.len..]);
        }
        assert_eq!(re, frame);
        assert!(!vp8_payload_is_keyframe(&out[0].payload)); // bit 0 set: inter frame
    }

    #[test]
    fn vp8_picture_id_wraps_at_15_bits() {
        let mut p = Vp8Packetizer::new(0x7fff, 100);
        let a = p.packetize(&[0x10]);
        let b = p.packetize(&[0x11]);
        assert_eq!(
            parse_vp8_descriptor(&a[0].payload).unwrap().picture_id,
            Some(0x7fff)
        );
        assert_eq!(
            parse_vp8_descriptor(&b[0].payload).unwrap().picture_id,
            Some(0)
        );
        assert_eq!(
            vp8_payload_without_picture_id(&a[0].payload),
            vp8_payload_without_picture_id(&[0x90, 0x80, 0x85, 0x55, 0x10])
        );
    }

    #[test]
    fn vp8_descriptor_parser_handles_all_fields_and_garbage() {
        // X, I (7-bit), L, T, K all present.
        let d = parse_vp8_descriptor(&[0xb2, 0xf0, 0x05, 0x09, 0b1000_0011, 0xff]).unwrap();
        assert!(d.non_reference);
        assert_eq!(d.partition_id, 2);
        assert_eq!(d.picture_id, Some(5));
        assert!(!d.picture_id_15bit);
        assert_eq!(d.tl0picidx, Some(9));
        assert_eq!(d.tid, Some(2));
        assert_eq!(d.keyidx, Some(3));
        assert_eq!(d.len, 5);
        // Truncated descriptors give None, never panic.
        assert!(parse_vp8_descriptor(&[]).is_none());
        assert!(parse_vp8_descriptor(&[0x80]).is_none());
        assert!(parse_vp8_descriptor(&[0x80, 0x80, 0x80]).is_none());
        for b0 in 0..=255u8 {
            for b1 in [0u8, 0x80, 0xf0, 0xff] {
                let _ = parse_vp8_descriptor(&[b0, b1, 0xff]);
            }
        }
    }

    #[test]
    fn video_source_paces_and_loops() {
        let mut v = VideoSource::from_fixture(100, 1000).unwrap();
        let t0 = Instant::now();
        let (ts, key, chunks) = v.poll(t0).unwrap();
        assert_eq!(ts, 1000);
        assert!(key);
        assert!(chunks.last().unwrap().marker);
        assert!(v.poll(t0).is_none(), "second frame is not due yet");
        let (ts2, key2, c2) = v.poll(t0 + Duration::from_millis(34)).unwrap();
        assert_eq!(ts2, 4000);
        assert!(!key2);
        assert_eq!(
            parse_vp8_descriptor(&c2[0].payload).unwrap().picture_id,
            Some(101)
        );
        // A keyframe request jumps to the next key frame.
        v.request_keyframe();
        let (_, key3, _) = v.poll(t0 + Duration::from_millis(67)).unwrap();
        assert!(key3);
        // Loops over 60 frames: frame 62 (index 2 of the loop after the jump) is fine.
        let mut t = t0 + Duration::from_millis(67);
        for _ in 0..100 {
            t += Duration::from_millis(34);
            assert!(v.poll(t).is_some());
        }
    }

    #[test]
    fn audio_source_paces() {
        let mut a = AudioSource::from_fixture(5).unwrap();
        let t0 = Instant::now();
        assert_eq!(a.poll(t0).unwrap().0, 5);
        assert!(a.poll(t0 + Duration::from_millis(19)).is_none());
        assert_eq!(a.poll(t0 + Duration::from_millis(20)).unwrap().0, 965);
        let mut s = AudioSource::silence(0);
        assert_eq!(&*s.poll(t0).unwrap().1, &OPUS_SILENCE);
    }
}
