//! What one client may ask of the node: the limits (set by flags, config.rs), the checks that
//! refuse with an error naming the limit, the token bucket that paces one client's
//! signaling, and the count of refusals per limit (`sfumato_limit_hits_total{limit}`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use sfumato_signal::sdp_shape;

/// A limit that can be hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Rooms,
    ParticipantsPerRoom,
    TracksPerParticipant,
    SdpBytes,
    SdpMlines,
    SignalingRate,
    MessageBytes,
    /// A WebSocket that said nothing (not even a pong) for the idle timeout: closed.
    IdleTimeout,
    /// A WebSocket client that does not read what it is sent: closed when its queue is full.
    SlowReader,
    /// A lossy data message dropped for a client whose queue is full.
    DataQueue,
    /// A data message over its sender's rate (`--max-data-rate`).
    DataRate,
}

impl Limit {
    pub const ALL: [Limit; 11] = [
        Limit::Rooms,
        Limit::ParticipantsPerRoom,
        Limit::TracksPerParticipant,
        Limit::SdpBytes,
        Limit::SdpMlines,
        Limit::SignalingRate,
        Limit::MessageBytes,
        Limit::IdleTimeout,
        Limit::SlowReader,
        Limit::DataQueue,
        Limit::DataRate,
    ];

    /// The metric's label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Rooms => "rooms",
            Limit::ParticipantsPerRoom => "participants_per_room",
            Limit::TracksPerParticipant => "tracks_per_participant",
            Limit::SdpBytes => "sdp_bytes",
            Limit::SdpMlines => "sdp_mlines",
            Limit::SignalingRate => "signaling_rate",
            Limit::MessageBytes => "message_bytes",
            Limit::IdleTimeout => "idle_timeout",
            Limit::SlowReader => "slow_reader",
            Limit::DataQueue => "data_queue",
            Limit::DataRate => "data_rate",
        }
    }

    /// The signaling error code (docs/protocol.md).
    pub fn code(self) -> &'static str {
        match self {
            Limit::Rooms => "node_full",
            Limit::ParticipantsPerRoom => "room_full",
            Limit::TracksPerParticipant => "too_many_tracks",
            Limit::SdpBytes | Limit::SdpMlines => "sdp_too_large",
            Limit::SignalingRate => "rate_limited",
            Limit::MessageBytes => "too_large",
            Limit::IdleTimeout => "idle_timeout",
            Limit::SlowReader => "slow_reader",
            Limit::DataQueue => "data_dropped",
            Limit::DataRate => "rate_limited",
        }
    }

    /// The HTTP status for WHIP and WHEP.
    pub fn status(self) -> StatusCode {
        match self {
            Limit::Rooms | Limit::ParticipantsPerRoom => StatusCode::SERVICE_UNAVAILABLE,
            Limit::SignalingRate => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// The limits' values (flags `--max-*` and `--ws-*`, docs/operations.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub rooms: usize,
    pub participants_per_room: usize,
    /// Audio and video tracks one offer may send (a participant publishes through one peer).
    pub tracks_per_participant: usize,
    pub sdp_bytes: usize,
    pub sdp_mlines: usize,
    /// Signaling messages per second per client; bursts of up to [`BURST_SECONDS`] of them.
    pub signaling_rate: u32,
    /// Data messages per second per participant (enforced by its worker, whatever the
    /// transport); bursts of up to a second of them.
    pub data_rate: u32,
    pub message_bytes: usize,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    /// Messages queued to one WebSocket client before it counts as a slow reader.
    pub queued_messages: usize,
}

/// A client may send this many seconds' worth of its rate at once (a page that lays out 30
/// tiles asks for 30 qualities in one go).
pub const BURST_SECONDS: u32 = 4;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rooms: 1000,
            participants_per_room: 200,
            tracks_per_participant: 16,
            // A browser's answer runs ~1.1 KB per m-line: a subscriber in a full room of 200
            // receives ~400 tracks (~450 KB).
            sdp_bytes: 1024 * 1024,
            sdp_mlines: 1024,
            signaling_rate: 50,
            data_rate: sfumato_worker::sfumato_core::bus::DEFAULT_RATE,
            // An SDP in JSON, escaped.
            message_bytes: 2 * 1024 * 1024,
            ws_ping_interval: Duration::from_secs(5),
            ws_idle_timeout: Duration::from_secs(15),
            queued_messages: 1024,
        }
    }
}

/// A refusal: which limit, and a sentence for the client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exceeded {
    pub limit: Limit,
    pub message: String,
}

/// The limits and how often each was hit.
#[derive(Debug)]
pub struct Limits {
    pub settings: Settings,
    hits: [AtomicU64; Limit::ALL.len()],
}

impl Limits {
    pub fn new(settings: Settings) -> Self {
        Limits {
            settings,
            hits: Default::default(),
        }
    }

    /// Counts a hit of `limit`.
    pub fn count(&self, limit: Limit) {
        let i = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.hits[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a hit of `limit` and makes its refusal.
    fn exceeded(&self, limit: Limit, message: String) -> Exceeded {
        self.count(limit);
        Exceeded { limit, message }
    }

    /// Every limit with its hits, for `/metrics`.
    pub fn hits(&self) -> Vec<(&'static str, u64)> {
        Limit::ALL
            .iter()
            .zip(&self.hits)
            .map(|(l, n)| (l.name(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Someone joins `room`, which holds `participants` (`None`: a new room) on a node with
    /// `rooms` rooms. A client moving from another node (`replacing`) is already counted.
    pub fn check_join(
        &self,
        rooms: usize,
        participants: Option<usize>,
        replacing: bool,
    ) -> Result<(), Exceeded> {
        let s = &self.settings;
        match participants {
            None if rooms >= s.rooms => Err(self.exceeded(
                Limit::Rooms,
                format!("this node holds its limit of {} rooms", s.rooms),
            )),
            Some(n) if n >= s.participants_per_room && !replacing => Err(self.exceeded(
                Limit::ParticipantsPerRoom,
                format!(
                    "the room is full ({} participants)",
                    s.participants_per_room
                ),
            )),
            _ => Ok(()),
        }
    }

    /// An SDP from a client: its size and m-lines, and for an offer that publishes
    /// (`publishing`), the tracks it sends.
    pub fn check_sdp(&self, sdp: &str, publishing: bool) -> Result<(), Exceeded> {
        let s = &self.settings;
        if sdp.len() > s.sdp_bytes {
            return Err(self.exceeded(
                Limit::SdpBytes,
                format!("an SDP is limited to {} bytes", s.sdp_bytes),
            ));
        }
        let shape = sdp_shape(sdp);
        if shape.mlines > s.sdp_mlines {
            return Err(self.exceeded(
                Limit::SdpMlines,
                format!("an SDP is limited to {} m-lines", s.sdp_mlines),
            ));
        }
        if publishing && shape.sending > s.tracks_per_participant {
            return Err(self.exceeded(
                Limit::TracksPerParticipant,
                format!(
                    "a participant publishes at most {} tracks, this offer sends {}",
                    s.tracks_per_participant, shape.sending
                ),
            ));
        }
        Ok(())
    }

    /// A signaling message of `len` bytes.
    pub fn check_message(&self, len: usize) -> Result<(), Exceeded> {
        let max = self.settings.message_bytes;
        if len > max {
            return Err(self.exceeded(
                Limit::MessageBytes,
                format!("messages are limited to {max} bytes"),
            ));
        }
        Ok(())
    }

    /// A client's signaling went over its rate: counted, and the refusal to send it (if it
    /// gets one).
    pub fn rate_exceeded(&self) -> Exceeded {
        self.exceeded(
            Limit::SignalingRate,
            format!(
                "over {} messages per second: message dropped",
                self.settings.signaling_rate
            ),
        )
    }

    /// A full bucket for a new client.
    pub fn bucket(&self, now: Instant) -> Bucket {
        let rate = f64::from(self.settings.signaling_rate.max(1));
        Bucket {
            rate,
            burst: rate * f64::from(BURST_SECONDS),
            tokens: rate * f64::from(BURST_SECONDS),
            last: now,
        }
    }
}

/// One client's signaling allowance: `rate` messages a second, `burst` at once.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes one message's token, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut Settings)) -> Limits {
        let mut s = Settings::default();
        f(&mut s);
        Limits::new(s)
    }

    fn hits(l: &Limits, limit: Limit) -> u64 {
        l.hits()
            .into_iter()
            .find(|(n, _)| *n == limit.name())
            .map_or(0, |(_, n)| n)
    }

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn sdps_over_a_limit_are_refused_and_counted() {
        let l = limits(|s| {
            s.tracks_per_participant = 1;
            s.sdp_mlines = 5;
            s.sdp_bytes = OFFER.len();
        });
        let e = l.check_sdp(OFFER, true).expect_err("two tracks");
        assert_eq!(e.limit, Limit::TracksPerParticipant);
        assert!(l.check_sdp(OFFER, false).is_ok(), "an answer sends nothing");
        let more = format!("{OFFER}m=audio 9 X 111\r\n");
        let e = l.check_sdp(&more, false).expect_err("too long");
        assert_eq!(e.limit, Limit::SdpBytes);
        let l = limits(|s| s.sdp_mlines = 4);
        let e = l.check_sdp(OFFER, false).expect_err("five m-lines");
        assert_eq!(e.limit, Limit::SdpMlines);
        assert_eq!(hits(&l, Limit::SdpMlines), 1);
    }

    #[test]
    fn rooms_and_participants_are_capped_but_a_mover_gets_in() {
        let l = limits(|s| {
            s.rooms = 2;
            s.participants_per_room = 3;
        });
        assert!(l.check_join(1, None, false).is_ok());
        assert_eq!(
            l.check_join(2, None, false).map_err(|e| e.limit).err(),
            Some(Limit::Rooms)
        );
        assert!(l.check_join(2, Some(2), false).is_ok(), "an existing room");
        assert_eq!(
            l.check_join(2, Some(3), false).map_err(|e| e.limit).err(),
            Some(Limit::ParticipantsPerRoom)
        );
        assert!(l.check_join(2, Some(3), true).is_ok());
        assert_eq!(hits(&l, Limit::Rooms), 1);
        assert_eq!(hits(&l, Limit::ParticipantsPerRoom), 1);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = limits(|s| s.signaling_rate = 10);
        let t0 = Instant::now();
        let mut b = l.bucket(t0);
        let burst = (0..100).take_while(|_| b.take(t0)).count();
        assert_eq!(burst, 10 * BURST_SECONDS as usize);
        assert!(!b.take(t0));
        // 10 a second: one more every 100 ms, never more than the burst.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(150)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).take_while(|_| b.take(later)).count(), 40);
    }
}
