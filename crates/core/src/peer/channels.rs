//! A peer's data channels: three SCTP channels negotiated out of band with fixed stream
//! ids, so that neither side runs DCEP and no id can be raced for. The client creates the
//! same three (`negotiated: true`). Stream 0 is reliable and ordered; stream 1 is lossy:
//! unordered and never retransmitted; stream 2 is lossy and ordered (never retransmitted,
//! never delivered after a later message). What arrives on any is a send frame for the
//! engine ([`crate::data`]); a delivery leaves on the one that matches its reliability and
//! order. Any other channel (one a client opened in band) is ignored and its messages
//! counted as dropped.

use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::{Rtc, RtcConfig};

use crate::data;

/// The stream id of the reliable, ordered channel.
pub const RELIABLE_STREAM: u16 = 0;
/// The stream id of the lossy channel (unordered, no retransmission).
pub const LOSSY_STREAM: u16 = 1;
/// The stream id of the lossy channel that keeps order (no retransmission).
pub const LOSSY_ORDERED_STREAM: u16 = 2;

/// The largest SCTP message we accept (`a=max-message-size`): a send frame with the
/// longest header and the largest payload fits. str0m's default would do too; it is set
/// here so that the limit is ours, not a dependency's default.
const MAX_MESSAGE: u32 = (data::MAX_SEND_FRAME as u32).next_power_of_two();

/// What a peer's association may hold unsent (str0m's default is 128 KiB, under two
/// messages of the largest size). A reliable message that finds it full means that the
/// receiver does not keep up; a lossy one is dropped.
pub const SEND_BUFFER: usize = 512 * 1024;

/// The three channels as both ends declare them (the in-tree clients too): reliable and
/// ordered on [`RELIABLE_STREAM`], unordered without retransmission on [`LOSSY_STREAM`],
/// ordered without retransmission on [`LOSSY_ORDERED_STREAM`].
pub fn configs() -> [ChannelConfig; 3] {
    [
        ChannelConfig {
            label: "sfumato-reliable".into(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: Some(RELIABLE_STREAM),
            protocol: String::new(),
        },
        ChannelConfig {
            label: "sfumato-lossy".into(),
            ordered: false,
            reliability: Reliability::MaxRetransmits { retransmits: 0 },
            negotiated: Some(LOSSY_STREAM),
            protocol: String::new(),
        },
        ChannelConfig {
            label: "sfumato-lossy-ordered".into(),
            ordered: true,
            reliability: Reliability::MaxRetransmits { retransmits: 0 },
            negotiated: Some(LOSSY_ORDERED_STREAM),
            protocol: String::new(),
        },
    ]
}

/// The SCTP settings of every peer.
pub fn configure(config: RtcConfig) -> RtcConfig {
    config
        .set_sctp_max_message_size(MAX_MESSAGE)
        .set_sctp_max_buffered_amount(SEND_BUFFER)
}

/// What became of a written message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Yes,
    /// The send buffer is full.
    Full,
    /// The channel is not open (not yet, or any more).
    Closed,
}

#[derive(Debug)]
pub struct Channels {
    reliable: ChannelId,
    lossy: ChannelId,
    lossy_ordered: ChannelId,
    /// Each has been announced open (str0m's `ChannelOpen`).
    reliable_open: bool,
    lossy_open: bool,
    lossy_ordered_open: bool,
}

impl Channels {
    /// Declares both channels; str0m opens them once an association runs (an offer with
    /// `m=application`), and never otherwise.
    pub fn create(rtc: &mut Rtc) -> Self {
        let mut api = rtc.direct_api();
        let [reliable, lossy, lossy_ordered] = configs().map(|c| api.create_data_channel(c));
        Channels {
            reliable,
            lossy,
            lossy_ordered,
            reliable_open: false,
            lossy_open: false,
            lossy_ordered_open: false,
        }
    }

    /// Whether `id` is one of ours.
    pub fn owns(&self, id: ChannelId) -> bool {
        id == self.reliable || id == self.lossy || id == self.lossy_ordered
    }

    /// A channel opened. Returns true when this made the peer able to carry data (its
    /// reliable channel is open).
    pub fn opened(&mut self, id: ChannelId) -> bool {
        if id == self.lossy {
            self.lossy_open = true;
        }
        if id == self.lossy_ordered {
            self.lossy_ordered_open = true;
        }
        if id == self.reliable && !self.reliable_open {
            self.reliable_open = true;
            return true;
        }
        false
    }

    /// A channel closed. Returns true when this made the peer unable to carry data.
    pub fn closed(&mut self, id: ChannelId) -> bool {
        if id == self.lossy {
            self.lossy_open = false;
        }
        if id == self.lossy_ordered {
            self.lossy_ordered_open = false;
        }
        if id == self.reliable && self.reliable_open {
            self.reliable_open = false;
            return true;
        }
        false
    }

    pub fn is_open(&self) -> bool {
        self.reliable_open
    }

    /// Writes a deliver frame on the channel of its reliability and order (a lossy one on
    /// the reliable channel while its own is not open).
    pub fn write(&self, rtc: &mut Rtc, reliable: bool, ordered: bool, frame: &[u8]) -> Sent {
        let id = match (reliable, ordered) {
            (false, false) if self.lossy_open => self.lossy,
            (false, true) if self.lossy_ordered_open => self.lossy_ordered,
            _ => self.reliable,
        };
        let Some(mut channel) = rtc.channel(id) else {
            return Sent::Closed;
        };
        match channel.write(true, frame) {
            Ok(true) => Sent::Yes,
            Ok(false) => Sent::Full,
            Err(e) => {
                tracing::debug!("data channel write failed: {e}");
                Sent::Closed
            }
        }
    }
}
