//! Data messages (docs/protocol.md, "Data messages"): the envelope a client sends and the one
//! it receives, the same over every transport, and the [`DataPacket`] that one message is
//! inside the media plane once the origin worker has read it and stamped its sender.
//!
//! A client sends a *send* frame; the server never forwards it as it came. The origin worker
//! reads it ([`parse_send`], untrusted: anything malformed is a [`DataError`], never a
//! panic), writes the *deliver* frame once ([`deliver`]), with the sender's participant id
//! taken from the transport it came on, not from the client, and routes that one frame
//! ([`DataPacket`]) to the room's other members.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! send:     type 0x01 · flags u8 · seq u32 · topic (u8 len, UTF-8)
//!           · recipients (u8 count, 0 = everyone; each u8 len + participant id) · payload
//! deliver:  type 0x02 · flags u8 · seq u32 · sender (u8 len + participant id)
//!           · topic (u8 len, UTF-8) · payload
//! flags:    bit 0 reliable, bit 1 text (the payload is UTF-8), bit 2 ordered (a lossy
//!           message that never arrives after a later lossy ordered one of its sender;
//!           reliable ones always keep their order); other bits must be 0
//! ```

use std::sync::Arc;

use crate::ids::MemberId;

pub const SEND: u8 = 0x01;
pub const DELIVER: u8 = 0x02;

/// The message is reliable: it arrives once and in order, or its recipient is told.
pub const RELIABLE: u8 = 1;
/// The payload is UTF-8 text.
pub const TEXT: u8 = 1 << 1;
/// A lossy message that keeps its order (never after a later one); reliable ones always do.
pub const ORDERED: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = RELIABLE | TEXT | ORDERED;

/// The largest payload of one message (64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The most recipients one message can name.
pub const MAX_RECIPIENTS: usize = 64;
/// The longest topic, in bytes.
pub const MAX_TOPIC: usize = 255;
/// The largest send frame: the payload and the longest header.
pub const MAX_SEND_FRAME: usize =
    6 + 1 + MAX_TOPIC + 1 + MAX_RECIPIENTS * (1 + MAX_ID) + MAX_PAYLOAD;
/// The longest participant id on the wire.
const MAX_ID: usize = 32;

/// Why bytes are not a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("the frame ends early")]
    Truncated,
    #[error("frame type {0:#04x} is not a data message of this direction")]
    Type(u8),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("the topic is not UTF-8")]
    Topic,
    #[error("the payload is flagged as text but is not UTF-8")]
    Text,
    #[error("more than {MAX_RECIPIENTS} recipients")]
    Recipients,
    #[error("a recipient is not a participant id")]
    Recipient,
    #[error("a payload of {0} bytes (at most {MAX_PAYLOAD})")]
    TooLarge(usize),
}

impl DataError {
    /// The error code a client is told (docs/protocol.md).
    pub fn code(self) -> &'static str {
        match self {
            DataError::TooLarge(_) => "too_large",
            _ => "bad_data",
        }
    }
}

/// A send frame as read, borrowing the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Send<'a> {
    pub flags: u8,
    pub seq: u32,
    pub topic: &'a str,
    /// Empty: every other member of the room.
    pub to: Vec<MemberId>,
    pub payload: &'a [u8],
}

/// A deliver frame as read (clients and tests read these).
#[derive(Debug, PartialEq, Eq)]
pub struct Deliver<'a> {
    pub flags: u8,
    pub seq: u32,
    pub from: &'a str,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DataError> {
        if self.0.len() < n {
            return Err(DataError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DataError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DataError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u8 length and that many bytes.
    fn short(&mut self) -> Result<&'a [u8], DataError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn header(&mut self, kind: u8) -> Result<(u8, u32), DataError> {
        let t = self.u8()?;
        if t != kind {
            return Err(DataError::Type(t));
        }
        let flags = self.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DataError::Flags(flags));
        }
        Ok((flags, self.u32()?))
    }

    fn topic(&mut self) -> Result<&'a str, DataError> {
        std::str::from_utf8(self.short()?).map_err(|_| DataError::Topic)
    }

    fn payload(self, flags: u8) -> Result<&'a [u8], DataError> {
        if self.0.len() > MAX_PAYLOAD {
            return Err(DataError::TooLarge(self.0.len()));
        }
        if flags & TEXT != 0 && std::str::from_utf8(self.0).is_err() {
            return Err(DataError::Text);
        }
        Ok(self.0)
    }
}

/// Reads a send frame (untrusted).
/// The `seq` of a frame that starts like a send frame, however the rest reads: what an
/// error about it names.
pub fn send_seq(frame: &[u8]) -> Option<u32> {
    match frame {
        [SEND, _, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

pub fn parse_send(frame: &[u8]) -> Result<Send<'_>, DataError> {
    let mut r = Reader(frame);
    let (flags, seq) = r.header(SEND)?;
    let topic = r.topic()?;
    let count = usize::from(r.u8()?);
    if count > MAX_RECIPIENTS {
        return Err(DataError::Recipients);
    }
    let mut to = Vec::with_capacity(count);
    for _ in 0..count {
        let id = std::str::from_utf8(r.short()?).map_err(|_| DataError::Recipient)?;
        to.push(MemberId::parse(id).ok_or(DataError::Recipient)?);
    }
    let payload = r.payload(flags)?;
    Ok(Send {
        flags,
        seq,
        topic,
        to,
        payload,
    })
}

/// Reads a deliver frame.
pub fn parse_deliver(frame: &[u8]) -> Result<Deliver<'_>, DataError> {
    let mut r = Reader(frame);
    let (flags, seq) = r.header(DELIVER)?;
    let from = std::str::from_utf8(r.short()?).map_err(|_| DataError::Recipient)?;
    let topic = r.topic()?;
    let payload = r.payload(flags)?;
    Ok(Deliver {
        flags,
        seq,
        from,
        topic,
        payload,
    })
}

fn put_short(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(usize::from(u8::MAX));
    out.push(n as u8);
    out.extend_from_slice(&b[..n]);
}

/// Writes a send frame (the in-tree clients and tests). A topic or id longer than 255 bytes
/// is cut, which the reader then refuses if it splits a character.
pub fn encode_send(flags: u8, seq: u32, topic: &str, to: &[MemberId], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + topic.len() + to.len() * 12 + payload.len());
    out.extend_from_slice(&[SEND, flags]);
    out.extend_from_slice(&seq.to_be_bytes());
    put_short(&mut out, topic.as_bytes());
    out.push(to.len().min(usize::from(u8::MAX)) as u8);
    for id in to.iter().take(usize::from(u8::MAX)) {
        put_short(&mut out, id.to_string().as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// The deliver frame of `msg`, sent by `from`.
pub fn deliver(from: MemberId, msg: &Send<'_>) -> Vec<u8> {
    let from = from.to_string();
    let mut out = Vec::with_capacity(8 + from.len() + msg.topic.len() + msg.payload.len());
    out.extend_from_slice(&[DELIVER, msg.flags]);
    out.extend_from_slice(&msg.seq.to_be_bytes());
    put_short(&mut out, from.as_bytes());
    put_short(&mut out, msg.topic.as_bytes());
    out.extend_from_slice(msg.payload);
    out
}

/// One message inside the media plane: read and stamped once at its origin worker, then
/// shared by every worker and recipient it reaches.
#[derive(Debug, PartialEq, Eq)]
pub struct DataPacket {
    pub room: Arc<str>,
    pub from: MemberId,
    /// Empty: every member of the room but the sender.
    pub to: Box<[MemberId]>,
    pub reliable: bool,
    /// It keeps its order among its sender's messages (every reliable one does).
    pub ordered: bool,
    /// The deliver frame.
    pub frame: Arc<[u8]>,
}

impl DataPacket {
    /// Reads a send frame from `from`, a member of `room`.
    pub fn read(room: Arc<str>, from: MemberId, frame: &[u8]) -> Result<Self, DataError> {
        let msg = parse_send(frame)?;
        Ok(DataPacket {
            room,
            from,
            to: msg.to.clone().into_boxed_slice(),
            reliable: msg.flags & RELIABLE != 0,
            ordered: msg.flags & (RELIABLE | ORDERED) != 0,
            frame: deliver(from, &msg).into(),
        })
    }

    /// Whether `member` of the room receives it.
    pub fn is_for(&self, member: MemberId) -> bool {
        member != self.from && (self.to.is_empty() || self.to.contains(&member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_frame_becomes_a_deliver_frame_stamped_with_the_sender() {
        let frame = encode_send(
            RELIABLE | TEXT,
            7,
            "chat",
            &[MemberId(5)],
            "héllo".as_bytes(),
        );
        let pkt = DataPacket::read("r".into(), MemberId(3), &frame).unwrap();
        assert!(pkt.reliable);
        assert_eq!(&*pkt.to, &[MemberId(5)]);
        assert!(pkt.is_for(MemberId(5)));
        assert!(!pkt.is_for(MemberId(4)));
        assert!(!pkt.is_for(MemberId(3)));
        let d = parse_deliver(&pkt.frame).unwrap();
        assert_eq!(
            d,
            Deliver {
                flags: RELIABLE | TEXT,
                seq: 7,
                from: "p3",
                topic: "chat",
                payload: "héllo".as_bytes(),
            }
        );
    }

    #[test]
    fn reliable_messages_are_ordered_and_lossy_ones_when_asked() {
        let read = |flags| {
            DataPacket::read(
                "r".into(),
                MemberId(1),
                &encode_send(flags, 0, "", &[], b"x"),
            )
            .unwrap()
        };
        let (r, l, lo) = (read(RELIABLE), read(0), read(ORDERED));
        assert_eq!((r.reliable, r.ordered), (true, true));
        assert_eq!((l.reliable, l.ordered), (false, false));
        assert_eq!((lo.reliable, lo.ordered), (false, true));
        assert_eq!(
            parse_deliver(&lo.frame).unwrap().flags,
            ORDERED,
            "the flag reaches the recipient"
        );
    }

    #[test]
    fn no_recipient_means_everyone_but_the_sender() {
        let frame = encode_send(0, 1, "", &[], &[0, 159, 255]);
        let pkt = DataPacket::read("r".into(), MemberId(1), &frame).unwrap();
        assert!(!pkt.reliable);
        assert!(pkt.is_for(MemberId(2)));
        assert!(!pkt.is_for(MemberId(1)));
        assert_eq!(parse_deliver(&pkt.frame).unwrap().payload, &[0, 159, 255]);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let ok = encode_send(TEXT, 1, "t", &[MemberId(9)], b"x");
        for n in 0..ok.len() - 1 {
            // Every cut before the payload ends the header early.
            assert!(parse_send(&ok[..n]).is_err(), "cut at {n}");
        }
        let mut flags = ok.clone();
        flags[1] = 0x80;
        assert_eq!(parse_send(&flags), Err(DataError::Flags(0x80)));
        let mut kind = ok.clone();
        kind[0] = DELIVER;
        assert_eq!(parse_send(&kind), Err(DataError::Type(DELIVER)));
        let text = encode_send(TEXT, 1, "", &[], &[0xff, 0xfe]);
        assert_eq!(parse_send(&text), Err(DataError::Text));
        let topic = [SEND, 0, 0, 0, 0, 1, 1, 0xff, 0];
        assert_eq!(parse_send(&topic), Err(DataError::Topic));
        let who = [SEND, 0, 0, 0, 0, 1, 0, 1, 2, b'q', b'1'];
        assert_eq!(parse_send(&who), Err(DataError::Recipient));
        let many = [SEND, 0, 0, 0, 0, 1, 0, MAX_RECIPIENTS as u8 + 1];
        assert_eq!(parse_send(&many), Err(DataError::Recipients));
        let big = encode_send(0, 1, "", &[], &vec![0; MAX_PAYLOAD + 1]);
        assert_eq!(parse_send(&big), Err(DataError::TooLarge(MAX_PAYLOAD + 1)));
        assert_eq!(DataError::TooLarge(1).code(), "too_large");
        assert!(parse_send(&encode_send(0, 1, "", &[], &vec![0; MAX_PAYLOAD])).is_ok());
        assert!(encode_send(0, 0, "", &[], &vec![0; MAX_PAYLOAD]).len() <= MAX_SEND_FRAME);
    }
}
