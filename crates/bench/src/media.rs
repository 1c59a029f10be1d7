//! Media shaped like the real thing, stamped for measurement: audio at 50 packets/s of ~120 B
//! and VP8-framed video at a set bitrate and frame rate, each packet carrying a [`Stamp`]
//! (source, per-stream sequence, send time) that any receiver in the process can read back.
//!
//! Payload layouts (the stamp sits where an SFU never looks):
//! - audio: one Opus TOC byte (`0xF8`: CELT fullband 20 ms, mono, one frame), stamp, filler;
//! - video: RFC 7741 payload descriptor (X=1, I=1 with a 15-bit picture id; S=1, PID=0 on a
//!   frame's first packet), on a frame's first packet the VP8 frame header (3-byte frame tag
//!   whose P bit is 0 on keyframes; keyframes add the start code `9d 01 2a` and 640×480),
//!   then the stamp, then filler.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use sfumato_testkit::random_u64;

/// The instant all send times are measured from, shared by everything in the process so
/// that senders and receivers agree on the clock.
pub fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from `epoch` to `at` (0 if `at` is earlier).
pub fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// 50 packets/s of ~120 bytes, as Opus.
    Audio,
    /// VP8-framed video.
    Video,
}

impl StreamKind {
    fn to_byte(self) -> u8 {
        match self {
            StreamKind::Audio => 1,
            StreamKind::Video => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(StreamKind::Audio),
            2 => Some(StreamKind::Video),
            _ => None,
        }
    }

    /// `"audio"` or `"video"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Audio => "audio",
            StreamKind::Video => "video",
        }
    }
}

const FLAG_KEYFRAME: u8 = 0x01;
const FLAG_FRAME_START: u8 = 0x02;

/// What every generated packet carries after its codec headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publishing stream's source id (unique in the process).
    pub source: u32,
    /// Audio or video.
    pub kind: StreamKind,
    /// The packet belongs to a keyframe.
    pub keyframe: bool,
    /// The packet is the first of its frame.
    pub frame_start: bool,
    /// Per-stream sequence number, from 0, one per packet.
    pub seq: u64,
    /// Send time in nanoseconds since the process epoch ([`process_epoch`]).
    pub sent_ns: u64,
}

impl Stamp {
    /// Identifies a stamp: "SfmB".
    pub const MAGIC: [u8; 4] = *b"SfmB";
    /// Encoded length: magic 4, source 4, kind 1, flags 1, seq 8, send time 8.
    pub const LEN: usize = 26;

    /// Encodes into the first [`Stamp::LEN`] bytes of `out`; `false` if it is too short.
    pub fn write(&self, out: &mut [u8]) -> bool {
        let Some(out) = out.get_mut(..Self::LEN) else {
            return false;
        };
        let mut flags = 0;
        if self.keyframe {
            flags |= FLAG_KEYFRAME;
        }
        if self.frame_start {
            flags |= FLAG_FRAME_START;
        }
        out[0..4].copy_from_slice(&Self::MAGIC);
        out[4..8].copy_from_slice(&self.source.to_be_bytes());
        out[8] = self.kind.to_byte();
        out[9] = flags;
        out[10..18].copy_from_slice(&self.seq.to_be_bytes());
        out[18..26].copy_from_slice(&self.sent_ns.to_be_bytes());
        true
    }

    /// Decodes a stamp at the start of `b`: `None` unless the magic, kind and flags are valid.
    pub fn decode(b: &[u8]) -> Option<Stamp> {
        let b = b.get(..Self::LEN)?;
        if b[0..4] != Self::MAGIC {
            return None;
        }
        let kind = StreamKind::from_byte(b[8])?;
        let flags = b[9];
        if flags & !(FLAG_KEYFRAME | FLAG_FRAME_START) != 0 {
            return None;
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Some(Stamp {
            source: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind,
            keyframe: flags & FLAG_KEYFRAME != 0,
            frame_start: flags & FLAG_FRAME_START != 0,
            seq: u64_at(10),
            sent_ns: u64_at(18),
        })
    }

    /// Finds and decodes the stamp in a generated RTP payload (audio or VP8 video).
    /// Anything else — truncated, foreign or garbage payloads — gives `None`.
    pub fn parse(payload: &[u8]) -> Option<Stamp> {
        if payload.first() == Some(&OPUS_TOC) {
            if let Some(s) = payload.get(1..).and_then(Stamp::decode) {
                return Some(s);
            }
        }
        let offset = vp8_stamp_offset(payload)?;
        Stamp::decode(payload.get(offset..)?)
    }

    /// One-way latency of a packet with this stamp that arrived at `arrival`, on the clock
    /// started at `epoch`. `None` if the send time is after the arrival (not our stamp).
    pub fn latency_ns(&self, epoch: Instant, arrival: Instant) -> Option<u64> {
        nanos_since(epoch, arrival).checked_sub(self.sent_ns)
    }
}

/// The Opus TOC byte of every audio packet: config 31 (CELT FB 20 ms), mono, one frame.
const OPUS_TOC: u8 = 0xF8;
/// Payload descriptor length: X byte, I flags byte, 15-bit picture id.
const VP8_DESCRIPTOR_LEN: usize = 4;
/// VP8 frame header on a frame's first packet: the 3-byte frame tag, plus start code and
/// dimensions on keyframes.
const VP8_DELTA_HEADER_LEN: usize = 3;
const VP8_KEY_HEADER_LEN: usize = 10;
const FILLER: u8 = 0x5a;

/// Where the stamp starts in a VP8 payload: after the descriptor, and on a partition start
/// after the VP8 frame header (whose length the P bit tells).
fn vp8_stamp_offset(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let pid = *p.get(i)?;
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    if start {
        let tag = *p.get(i)?;
        i += if tag & 0x01 == 0 {
            VP8_KEY_HEADER_LEN
        } else {
            VP8_DELTA_HEADER_LEN
        };
    }
    Some(i)
}

/// What a publisher sends.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Send audio.
    pub audio: bool,
    /// Send video.
    pub video: bool,
    /// Audio RTP payload size in bytes (default 120).
    pub audio_packet_size: usize,
    /// Audio packet interval (default 20 ms: 50 packets/s).
    pub audio_ptime: Duration,
    /// Average video bitrate of the RTP payloads, bits/s (default 1 Mbps).
    pub video_bitrate: u32,
    /// Video frames per second (default 30).
    pub video_fps: u32,
    /// Largest video RTP payload in bytes (default 1100); frames split into equal packets.
    pub video_packet_size: usize,
    /// A keyframe at least this often (default 5 s); `None`: only the first and on request.
    pub keyframe_interval: Option<Duration>,
    /// Keyframe size as a multiple of a delta frame's (default 5).
    pub keyframe_ratio: u32,
    /// Keyframes on request (PLI/FIR) at most this often (default 500 ms); a request inside
    /// the gap is served when it ends.
    pub min_keyframe_gap: Duration,
    /// Send the video in three simulcast layers, as a browser does ([`SIMULCAST_RIDS`]: a
    /// quarter, half and all of `video_bitrate`), each a stream with a source id of its own
    /// ([`layer_source`]). Default off.
    pub simulcast: bool,
}

/// The rids of a simulcast publisher, lowest layer first (Chrome's `q;h;f`).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// The share of `video_bitrate` each simulcast layer sends, in [`SIMULCAST_RIDS`] order.
pub const SIMULCAST_SHARES: [f64; 3] = [0.25, 0.5, 1.0];

/// The stamp source id of simulcast layer `layer` (0 = lowest) of a publisher whose source id
/// is `source`: the top layer keeps `source`, the others set one of the two high bits
/// (publishers' ids count up from 1, so they never collide).
pub fn layer_source(source: u32, layer: usize) -> u32 {
    match layer {
        0 => source | 1 << 30,
        1 => source | 2 << 30,
        _ => source,
    }
}

/// The publisher's source id of a stream: [`layer_source`] undone.
pub fn base_source(source: u32) -> u32 {
    source & !(3 << 30)
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            audio: true,
            video: true,
            audio_packet_size: 120,
            audio_ptime: Duration::from_millis(20),
            video_bitrate: 1_000_000,
            video_fps: 30,
            video_packet_size: 1100,
            keyframe_interval: Some(Duration::from_secs(5)),
            keyframe_ratio: 5,
            min_keyframe_gap: Duration::from_millis(500),
            simulcast: false,
        }
    }
}

impl MediaConfig {
    /// Audio only.
    pub fn audio_only() -> Self {
        Self {
            video: false,
            ..Self::default()
        }
    }

    /// Delta and key frame sizes in bytes, so that the average matches the bitrate with one
    /// keyframe per interval.
    pub fn frame_sizes(&self) -> (usize, usize) {
        let fps = f64::from(self.video_fps.max(1));
        let ratio = f64::from(self.keyframe_ratio.max(1));
        let bytes_per_s = f64::from(self.video_bitrate) / 8.0;
        let delta = match self.keyframe_interval {
            Some(t) if !t.is_zero() => {
                let secs = t.as_secs_f64();
                let frames = (secs * fps).max(1.0);
                bytes_per_s * secs / (frames + ratio - 1.0)
            }
            _ => bytes_per_s / fps,
        };
        let delta = (delta as usize).max(1);
        (
            delta,
            delta.saturating_mul(self.keyframe_ratio.max(1) as usize),
        )
    }
}

/// If a source falls further behind its schedule than this (a stalled thread), it skips
/// the missed frames instead of bursting them.
const MAX_CATCH_UP: Duration = Duration::from_millis(500);

/// One packet a source produced. The payload borrows the source's scratch buffer: copy it
/// (e.g. into the `Arc<[u8]>` str0m takes) before polling again.
#[derive(Debug)]
pub struct MediaPacket<'a> {
    /// RTP timestamp (48 kHz audio, 90 kHz video), from a random base.
    pub rtp_time: u32,
    /// RTP marker: the last packet of a video frame.
    pub marker: bool,
    /// The stamp written into the payload.
    pub stamp: Stamp,
    /// When the packet was due by the schedule (`now - due` is the sender's lag).
    pub due: Instant,
    /// The RTP payload.
    pub payload: &'a [u8],
}

/// Counters of a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    /// Packets produced.
    pub packets: u64,
    /// Payload bytes produced.
    pub bytes: u64,
    /// Frames produced (audio: packets).
    pub frames: u64,
    /// Keyframes produced.
    pub keyframes: u64,
    /// Keyframe requests received.
    pub keyframe_requests: u64,
    /// Frames skipped because the sender fell more than 500 ms behind.
    pub skipped_frames: u64,
}

/// Audio: one packet per `audio_ptime`, a fixed size.
#[derive(Debug)]
pub struct AudioSource {
    source: u32,
    epoch: Instant,
    start: Instant,
    ptime: Duration,
    index: u64,
    rtp_base: u32,
    buf: Vec<u8>,
    counts: SourceCounts,
}

impl AudioSource {
    /// A source whose first packet is due at `start`.
    pub fn new(source: u32, config: &MediaConfig, epoch: Instant, start: Instant) -> Self {
        let size = config.audio_packet_size.max(1 + Stamp::LEN);
        let mut buf = vec![FILLER; size];
        buf[0] = OPUS_TOC;
        Self {
            source,
            epoch,
            start,
            ptime: config.audio_ptime.max(Duration::from_millis(1)),
            index: 0,
            rtp_base: random_u64() as u32,
            buf,
            counts: SourceCounts::default(),
        }
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        self.due_at(self.index)
    }

    fn due_at(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos(index.saturating_mul(self.ptime.as_nanos() as u64))
    }

    /// Emits every packet due by `now`; returns how many.
    pub fn poll(&mut self, now: Instant, mut emit: impl FnMut(MediaPacket<'_>)) -> usize {
        let mut n = 0;
        loop {
            let due = self.due_at(self.index);
            if due > now {
                return n;
            }
            if now.saturating_duration_since(due) > MAX_CATCH_UP {
                let behind =
                    now.saturating_duration_since(due).as_nanos() / self.ptime.as_nanos().max(1);
                let skip = (behind as u64).max(1);
                self.index += skip;
                self.counts.skipped_frames += skip;
                continue;
            }
            let stamp = Stamp {
                source: self.source,
                kind: StreamKind::Audio,
                keyframe: false,
                frame_start: true,
                seq: self.counts.packets,
                sent_ns: nanos_since(self.epoch, now),
            };
            stamp.write(&mut self.buf[1..]);
            let samples = self.ptime.as_micros() as u64 * 48 / 1000;
            let rtp_time = self
                .rtp_base
                .wrapping_add((self.index.wrapping_mul(samples)) as u32);
            self.index += 1;
            self.counts.packets += 1;
            self.counts.frames += 1;
            self.counts.bytes += self.buf.len() as u64;
            emit(MediaPacket {
                rtp_time,
                marker: false,
                stamp,
                due,
                payload: &self.buf,
            });
            n += 1;
        }
    }

    /// The counters.
    pub fn counts(&self) -> SourceCounts {
        self.counts
    }
}

/// VP8-framed video at a bitrate and frame rate, with periodic and requested keyframes.
#[derive(Debug)]
pub struct VideoSource {
    source: u32,
    epoch: Instant,
    start: Instant,
    fps: u32,
    packet_size: usize,
    delta_size: usize,
    key_size: usize,
    keyframe_interval: Option<Duration>,
    min_keyframe_gap: Duration,
    index: u64,
    picture_id: u16,
    rtp_base: u32,
    last_keyframe: Option<Instant>,
    keyframe_requested: bool,
    buf: Vec<u8>,
    counts: SourceCounts,
}

impl VideoSource {
    /// A source whose first frame (a keyframe) is due at `start`.
    pub fn new(source: u32, config: &MediaConfig, epoch: Instant, start: Instant) -> Self {
        let (delta_size, key_size) = config.frame_sizes();
        let min_packet = VP8_DESCRIPTOR_LEN + VP8_KEY_HEADER_LEN + Stamp::LEN;
        let packet_size = config.video_packet_size.max(min_packet);
        let r = random_u64() as u32;
        Self {
            source,
            epoch,
            start,
            fps: config.video_fps.max(1),
            packet_size,
            delta_size,
            key_size,
            keyframe_interval: config.keyframe_interval.filter(|t| !t.is_zero()),
            min_keyframe_gap: config.min_keyframe_gap,
            index: 0,
            picture_id: (r >> 17) as u16 & 0x7fff,
            rtp_base: r,
            last_keyframe: None,
            keyframe_requested: false,
            buf: vec![FILLER; packet_size],
            counts: SourceCounts::default(),
        }
    }

    fn due_at(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos(index.saturating_mul(1_000_000_000) / u64::from(self.fps))
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Instant {
        self.due_at(self.index)
    }

    /// A PLI/FIR: the next frame allowed by the keyframe gap becomes a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
        self.counts.keyframe_requests += 1;
    }

    fn next_is_keyframe(&self, at: Instant) -> bool {
        let Some(last) = self.last_keyframe else {
            return true;
        };
        let since = at.saturating_duration_since(last);
        if self.keyframe_requested && since >= self.min_keyframe_gap {
            return true;
        }
        matches!(self.keyframe_interval, Some(t) if since >= t)
    }

    /// Emits every packet of every frame due by `now`; returns how many packets.
    pub fn poll(&mut self, now: Instant, mut emit: impl FnMut(MediaPacket<'_>)) -> usize {
        let mut n = 0;
        loop {
            let due = self.due_at(self.index);
            if due > now {
                return n;
            }
            let behind = now.saturating_duration_since(due);
            if behind > MAX_CATCH_UP {
                let skip = (behind.as_nanos() * u128::from(self.fps) / 1_000_000_000) as u64;
                let skip = skip.max(1);
                self.index += skip;
                self.counts.skipped_frames += skip;
                continue;
            }
            n += self.emit_frame(now, due, &mut emit);
        }
    }

    fn emit_frame(
        &mut self,
        now: Instant,
        due: Instant,
        emit: &mut impl FnMut(MediaPacket<'_>),
    ) -> usize {
        let keyframe = self.next_is_keyframe(due);
        if keyframe {
            self.last_keyframe = Some(due);
            self.keyframe_requested = false;
            self.counts.keyframes += 1;
        }
        let size = if keyframe {
            self.key_size
        } else {
            self.delta_size
        };
        let packets = size.div_ceil(self.packet_size).max(1);
        let rtp_time = self
            .rtp_base
            .wrapping_add((self.index.wrapping_mul(90_000) / u64::from(self.fps)) as u32);
        let pid = self.picture_id;
        let sent_ns = nanos_since(self.epoch, now);
        for i in 0..packets {
            let first = i == 0;
            // Equal packets: the remainder goes one byte each to the first ones.
            let len = (size / packets + usize::from(i < size % packets)).clamp(
                VP8_DESCRIPTOR_LEN + VP8_KEY_HEADER_LEN + Stamp::LEN,
                self.packet_size,
            );
            let buf = &mut self.buf[..len];
            buf.fill(FILLER);
            buf[0] = if first { 0x90 } else { 0x80 }; // X=1, S on the first, PID=0
            buf[1] = 0x80; // I=1
            buf[2] = 0x80 | (pid >> 8) as u8; // M=1: 15-bit picture id
            buf[3] = pid as u8;
            let mut at = VP8_DESCRIPTOR_LEN;
            if first {
                at += write_vp8_header(&mut buf[at..], keyframe, size);
            }
            let stamp = Stamp {
                source: self.source,
                kind: StreamKind::Video,
                keyframe,
                frame_start: first,
                seq: self.counts.packets,
                sent_ns,
            };
            stamp.write(&mut buf[at..]);
            self.counts.packets += 1;
            self.counts.bytes += len as u64;
            emit(MediaPacket {
                rtp_time,
                marker: i + 1 == packets,
                stamp,
                due,
                payload: &self.buf[..len],
            });
        }
        self.counts.frames += 1;
        self.index += 1;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        packets
    }

    /// The counters.
    pub fn counts(&self) -> SourceCounts {
        self.counts
    }
}

/// Writes a VP8 frame header (RFC 6386 §9.1) into `out`; returns its length. `out` holds at
/// least [`VP8_KEY_HEADER_LEN`] bytes (the packet size minimum guarantees it).
fn write_vp8_header(out: &mut [u8], keyframe: bool, frame_size: usize) -> usize {
    // Frame tag: P (0 = key), version 0, show_frame 1, first partition size (19 bits).
    let first_partition = (frame_size / 10).min((1 << 19) - 1) as u32;
    let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
    out[0] = tag as u8;
    out[1] = (tag >> 8) as u8;
    out[2] = (tag >> 16) as u8;
    if !keyframe {
        return VP8_DELTA_HEADER_LEN;
    }
    out[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    out[6..8].copy_from_slice(&640u16.to_le_bytes());
    out[8..10].copy_from_slice(&480u16.to_le_bytes());
    VP8_KEY_HEADER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SFU's own check.
    fn sfu_says_keyframe(p: &[u8]) -> bool {
        sfumato_core::keyframe::is_keyframe_start(str0m::format::Codec::Vp8, p)
    }

    struct Collected {
        payload: Vec<u8>,
        rtp_time: u32,
        marker: bool,
        stamp: Stamp,
    }

    fn collect_video(src: &mut VideoSource, now: Instant) -> Vec<Collected> {
        let mut out = Vec::new();
        src.poll(now, |p| {
            out.push(Collected {
                payload: p.payload.to_vec(),
                rtp_time: p.rtp_time,
                marker: p.marker,
                stamp: p.stamp,
            })
        });
        out
    }

    #[test]
    fn stamp_round_trips() {
        let s = Stamp {
            source: 0xdead_beef,
            kind: StreamKind::Video,
            keyframe: true,
            frame_start: false,
            seq: u64::MAX - 3,
            sent_ns: 123_456_789_012,
        };
        let mut b = [0u8; Stamp::LEN];
        assert!(s.write(&mut b));
        assert_eq!(Stamp::decode(&b), Some(s));
        assert!(!s.write(&mut [0u8; Stamp::LEN - 1]));
    }

    #[test]
    fn stamp_parser_rejects_garbage() {
        assert_eq!(Stamp::parse(&[]), None);
        assert_eq!(Stamp::parse(&[OPUS_TOC]), None);
        assert_eq!(Stamp::parse(&[0x90]), None);
        assert_eq!(Stamp::parse(&[0x90, 0x80, 0xff]), None);
        // Real-looking but foreign payloads.
        assert_eq!(
            Stamp::parse(&[0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00]),
            None
        );
        assert_eq!(Stamp::parse(&[0xfc, 0xff, 0xfe]), None);
        // A valid stamp with a bad kind or unknown flags.
        let s = Stamp {
            source: 1,
            kind: StreamKind::Audio,
            keyframe: false,
            frame_start: true,
            seq: 1,
            sent_ns: 1,
        };
        let mut b = vec![OPUS_TOC; 1 + Stamp::LEN];
        s.write(&mut b[1..]);
        assert_eq!(Stamp::parse(&b), Some(s));
        b[1 + 8] = 9;
        assert_eq!(Stamp::parse(&b), None);
        b[1 + 8] = 1;
        b[1 + 9] = 0x80;
        assert_eq!(Stamp::parse(&b), None);
        // Every truncation of a real video packet, and pseudo-random bytes, never panic.
        let mut src = VideoSource::new(3, &MediaConfig::default(), Instant::now(), Instant::now());
        let pkts = collect_video(&mut src, Instant::now());
        let p = &pkts[0].payload;
        for len in 0..p.len() {
            let got = Stamp::parse(&p[..len]);
            assert!(got.is_none() || len >= VP8_DESCRIPTOR_LEN + VP8_KEY_HEADER_LEN + Stamp::LEN);
        }
        let mut x = 0x1234_5678_u32;
        for _ in 0..10_000 {
            let mut junk = [0u8; 48];
            for b in junk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let _ = Stamp::parse(&junk[..(x as usize % 48)]);
        }
    }

    #[test]
    fn latency_is_arrival_minus_send_time() {
        let epoch = Instant::now();
        let s = Stamp {
            source: 1,
            kind: StreamKind::Audio,
            keyframe: false,
            frame_start: true,
            seq: 0,
            sent_ns: 1_000_000,
        };
        assert_eq!(
            s.latency_ns(epoch, epoch + Duration::from_micros(1250)),
            Some(250_000)
        );
        assert_eq!(s.latency_ns(epoch, epoch), None);
    }

    #[test]
    fn audio_is_50_packets_per_second_of_120_bytes() {
        let t0 = Instant::now();
        let mut src = AudioSource::new(7, &MediaConfig::default(), t0, t0);
        let mut got = Vec::new();
        // Poll every 5 ms for one second.
        for step in 0..=200u32 {
            let now = t0 + Duration::from_millis(5) * step;
            src.poll(now, |p| {
                assert_eq!(p.payload.len(), 120);
                assert!(!p.marker);
                let s = Stamp::parse(p.payload).expect("stamped");
                assert_eq!(s, p.stamp);
                assert!(p.due <= now);
                got.push((s, p.rtp_time));
            });
        }
        assert_eq!(got.len(), 51); // t = 0, 20, ..., 1000 ms
        for (i, (s, ts)) in got.iter().enumerate() {
            assert_eq!(s.seq, i as u64);
            assert_eq!(s.source, 7);
            assert_eq!(s.kind, StreamKind::Audio);
            assert_eq!(ts.wrapping_sub(got[0].1), 960 * i as u32);
        }
        assert_eq!(src.counts().packets, 51);
        assert_eq!(src.counts().bytes, 51 * 120);
    }

    #[test]
    fn video_matches_bitrate_and_frame_rate() {
        let t0 = Instant::now();
        let cfg = MediaConfig {
            keyframe_interval: Some(Duration::from_secs(2)),
            ..MediaConfig::default()
        };
        let mut src = VideoSource::new(9, &cfg, t0, t0);
        let mut bytes = 0usize;
        let mut frames = 0;
        let mut keyframes = 0;
        let mut max_len = 0;
        let mut sizes = Vec::new();
        // Ten seconds minus one frame: 300 frames, keyframes at 0, 2, 4, 6, 8 s.
        for step in 0..300u32 {
            let now = t0 + Duration::from_nanos(1_000_000_000 / 30 * u64::from(step) + 1000);
            let pkts = collect_video(&mut src, now);
            assert!(!pkts.is_empty(), "frame {step} missing");
            frames += 1;
            let key = pkts[0].stamp.keyframe;
            keyframes += usize::from(key);
            let size: usize = pkts.iter().map(|p| p.payload.len()).sum();
            sizes.push((key, size));
            bytes += size;
            for (i, p) in pkts.iter().enumerate() {
                max_len = max_len.max(p.payload.len());
                assert_eq!(p.marker, i + 1 == pkts.len());
                assert_eq!(p.rtp_time, pkts[0].rtp_time);
                assert_eq!(p.stamp.frame_start, i == 0);
                assert_eq!(p.stamp.keyframe, key);
                assert_eq!(Stamp::parse(&p.payload), Some(p.stamp));
            }
        }
        assert_eq!(frames, 300);
        assert_eq!(keyframes, 5);
        let kbps = bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((950.0..1050.0).contains(&kbps), "{kbps} kbps");
        assert!(max_len <= 1100);
        let key = sizes.iter().find(|s| s.0).expect("a keyframe").1 as f64;
        let delta = sizes.iter().find(|s| !s.0).expect("a delta").1 as f64;
        assert!(
            (4.5..5.5).contains(&(key / delta)),
            "key {key} delta {delta}"
        );
        assert_eq!(src.counts().frames, 300);
        assert_eq!(src.counts().keyframes, 5);
    }

    #[test]
    fn vp8_descriptors_are_valid_and_keyframes_flagged_as_the_sfu_sees_them() {
        let t0 = Instant::now();
        let mut src = VideoSource::new(1, &MediaConfig::default(), t0, t0);
        let mut last_pid = None;
        for f in 0..40u32 {
            let now = t0 + Duration::from_millis(34) * f;
            for p in collect_video(&mut src, now).iter() {
                let first = p.stamp.frame_start;
                let b = &p.payload;
                assert_eq!(b[0] & 0x80, 0x80, "X");
                assert_eq!(b[0] & 0x07, 0, "PID");
                assert_eq!(b[0] & 0x10 != 0, first, "S only on the first packet");
                assert_eq!(b[1], 0x80, "I only");
                assert_eq!(b[2] & 0x80, 0x80, "15-bit picture id");
                let pid = u16::from(b[2] & 0x7f) << 8 | u16::from(b[3]);
                if first {
                    if let Some(prev) = last_pid {
                        assert_eq!(pid, (prev + 1) & 0x7fff);
                    }
                    last_pid = Some(pid);
                    assert_eq!(sfu_says_keyframe(b), p.stamp.keyframe);
                    if p.stamp.keyframe {
                        assert_eq!(&b[7..10], &[0x9d, 0x01, 0x2a], "start code");
                    } else {
                        assert_eq!(b[4] & 0x01, 1, "P=1 on delta frames");
                    }
                } else {
                    assert_eq!(Some(pid), last_pid);
                    assert!(!sfu_says_keyframe(b));
                }
            }
        }
    }

    #[test]
    fn picture_id_wraps_at_15_bits() {
        let t0 = Instant::now();
        let mut src = VideoSource::new(1, &MediaConfig::default(), t0, t0);
        src.picture_id = 0x7fff;
        let a = collect_video(&mut src, t0);
        let b = collect_video(&mut src, t0 + Duration::from_millis(34));
        assert_eq!(&a[0].payload[2..4], &[0xff, 0xff]);
        assert_eq!(&b[0].payload[2..4], &[0x80, 0x00]);
    }

    #[test]
    fn keyframe_requests_are_served_within_the_gap() {
        let t0 = Instant::now();
        let cfg = MediaConfig {
            keyframe_interval: None,
            min_keyframe_gap: Duration::from_millis(500),
            ..MediaConfig::default()
        };
        let mut src = VideoSource::new(1, &cfg, t0, t0);
        let frame = |i: u32| t0 + Duration::from_nanos(1_000_000_000 / 30 * u64::from(i) + 1000);
        let key_at = |src: &mut VideoSource, i: u32| collect_video(src, frame(i))[0].stamp.keyframe;
        assert!(key_at(&mut src, 0), "the first frame is a keyframe");
        for i in 1..30 {
            assert!(!key_at(&mut src, i), "no periodic keyframes");
        }
        // Frame 30 is at 1 s: a request is served at once.
        src.request_keyframe();
        assert!(key_at(&mut src, 30));
        assert!(!key_at(&mut src, 31));
        // Inside the 500 ms gap: held back until it ends (frame 45 = 1.5 s).
        src.request_keyframe();
        src.request_keyframe();
        for i in 32..45 {
            assert!(!key_at(&mut src, i), "frame {i} inside the gap");
        }
        assert!(key_at(&mut src, 45));
        assert!(!key_at(&mut src, 46));
        assert_eq!(src.counts().keyframes, 3);
        assert_eq!(src.counts().keyframe_requests, 3);
    }

    #[test]
    fn a_stalled_sender_skips_instead_of_bursting() {
        let t0 = Instant::now();
        let mut src = VideoSource::new(1, &MediaConfig::default(), t0, t0);
        collect_video(&mut src, t0);
        // Two seconds later: at most ~500 ms of frames are sent.
        let pkts = collect_video(&mut src, t0 + Duration::from_secs(2));
        let frames = pkts.iter().filter(|p| p.stamp.frame_start).count();
        assert!(frames <= 16, "{frames} frames in one burst");
        assert!(src.counts().skipped_frames >= 44);
        // Sequence numbers stay contiguous: skipped frames were never sent.
        let seqs: Vec<u64> = pkts.iter().map(|p| p.stamp.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));

        let mut audio = AudioSource::new(2, &MediaConfig::default(), t0, t0);
        let n = audio.poll(t0 + Duration::from_secs(2), |_| {});
        assert!(n <= 26, "{n} audio packets in one burst");
        assert!(audio.counts().skipped_frames >= 75);
    }

    #[test]
    fn frame_sizes_without_periodic_keyframes() {
        let cfg = MediaConfig {
            keyframe_interval: None,
            video_bitrate: 2_400_000,
            ..MediaConfig::default()
        };
        assert_eq!(cfg.frame_sizes(), (10_000, 50_000));
    }
}
