//! Negotiation: the client's offers (publisher, viewer) and answers (subscriber), the
//! m-lines they add (published tracks, slots), tracks bound to slots and the renegotiation
//! a subscribing peer makes when they change (one offer in flight at a time).

use std::collections::HashMap;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};

use super::{Peer, PeerOut, Published, Role, Slot};
use crate::ids::{Kind, TrackId, WorkerId};
use crate::Error;

impl Peer {
    /// Applies a client's offer (publisher or viewer) and returns our answer. The tracks (or
    /// slots) of the offer are known from here on; str0m only announces them once DTLS is up.
    pub fn accept_offer(&mut self, sdp: &str, out: &mut Vec<PeerOut>) -> Result<String, Error> {
        if self.role == Role::Subscriber {
            return Err(Error::WrongRole(
                "a subscribing peer takes answers, not offers",
            ));
        }
        check_payload_types(sdp)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| Error::BadSdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| Error::Negotiation(e.to_string()))?;
        let mut answer = answer.to_sdp_string();
        // str0m accepts an offer none of whose m-lines it can use (`m=audix`) and answers
        // with no media at all: nothing to publish or play (found by fuzz target `whip`).
        if !answer.lines().any(|l| l.starts_with("m=")) {
            return Err(Error::BadSdp(
                "the offer has no usable media section".into(),
            ));
        }
        if self.role == Role::Publisher {
            answer = crate::answer::for_publisher(sdp, &answer);
        }
        for line in answer.lines() {
            let Some(mid) = line.strip_prefix("a=mid:") else {
                continue;
            };
            let mid = Mid::from(mid.trim());
            if let Some((kind, dir)) = self.rtc.media(mid).map(|m| (m.kind(), m.direction())) {
                self.on_media_added(mid, kind, dir, out);
            }
        }
        Ok(answer)
    }

    /// Applies the client's answer to our last offer.
    pub fn accept_answer(
        &mut self,
        now: Instant,
        sdp: &str,
        out: &mut Vec<PeerOut>,
    ) -> Result<(), Error> {
        let Some((pending, offered)) = self.pending_offer.take() else {
            return Err(Error::Negotiation("no offer is pending".into()));
        };
        let answer = match check_payload_types(sdp).and_then(|()| {
            SdpAnswer::from_sdp_string(sdp).map_err(|e| Error::BadSdp(e.to_string()))
        }) {
            Ok(a) => a,
            Err(e) => {
                self.pending_offer = Some((pending, offered));
                return Err(e);
            }
        };
        // str0m consumes the pending offer even on failure: a failed answer leaves the
        // session where it was, and the next renegotiation offers everything again.
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| Error::Negotiation(e.to_string()))?;
        for (slot, active) in self.slots.iter_mut().zip(offered) {
            let was = slot.negotiated_active;
            slot.negotiated_active = active && slot.mid.is_some();
            if slot.negotiated_active && !was {
                slot.restart();
            }
        }
        self.ask_keyframes(now, out);
        self.renegotiate(out);
        Ok(())
    }

    /// Binds `track` to a slot. Returns false if the peer has no room for it.
    pub fn subscribe(
        &mut self,
        track: TrackId,
        kind: Kind,
        origin: WorkerId,
        out: &mut Vec<PeerOut>,
    ) -> bool {
        #[cfg(feature = "fault-injection")]
        self.inject(super::Fault::Subscribe);
        if self.slots.iter().any(|s| s.track == Some(track)) {
            return true;
        }
        let free = match self.role {
            Role::Publisher => return false,
            Role::Viewer => self
                .slots
                .iter()
                .position(|s| s.kind == kind && s.track.is_none() && s.negotiated_active),
            Role::Subscriber => self.slots.iter().position(|s| {
                s.kind == kind && s.track.is_none() && !s.want_active && !s.negotiated_active
            }),
        };
        let index = match (free, self.role) {
            (Some(i), _) => i,
            (None, Role::Subscriber) => {
                self.slots.push(Slot::new(None, kind, false));
                self.slots.len() - 1
            }
            (None, _) => return false,
        };
        let slot = &mut self.slots[index];
        slot.bind(track, origin);
        let layer = slot.forward.target.unwrap_or(0);
        if self.role == Role::Subscriber {
            self.renegotiate(out);
        } else if self.connected && kind == Kind::Video {
            out.push(PeerOut::KeyframeWanted { track, layer });
        }
        true
    }

    pub fn unsubscribe(&mut self, track: TrackId, out: &mut Vec<PeerOut>) {
        #[cfg(feature = "fault-injection")]
        self.inject(super::Fault::Unsubscribe);
        for slot in self.slots.iter_mut().filter(|s| s.track == Some(track)) {
            slot.track = None;
            if self.role == Role::Subscriber {
                slot.want_active = false;
            }
        }
        if self.role == Role::Subscriber {
            self.renegotiate(out);
        }
    }

    /// Offers the pending slot changes, unless an offer already awaits its answer.
    fn renegotiate(&mut self, out: &mut Vec<PeerOut>) {
        if self.role != Role::Subscriber || self.pending_offer.is_some() || self.closed {
            return;
        }
        let mut api = self.rtc.sdp_api();
        for slot in &mut self.slots {
            match slot.mid {
                None if slot.want_active => {
                    let (stream, track) = match slot.track {
                        Some(t) => (format!("p{}", t.peer), t.to_string()),
                        None => ("-".to_string(), "-".to_string()),
                    };
                    let kind = match slot.kind {
                        Kind::Audio => MediaKind::Audio,
                        Kind::Video => MediaKind::Video,
                    };
                    slot.mid = Some(api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(stream),
                        Some(track),
                        None,
                    ));
                }
                None => {}
                Some(mid) => {
                    let dir = if slot.want_active {
                        Direction::SendOnly
                    } else {
                        Direction::Inactive
                    };
                    api.set_direction(mid, dir);
                }
            }
        }
        if let Some((offer, pending)) = api.apply() {
            let offered: Vec<bool> = self
                .slots
                .iter()
                .map(|s| s.want_active && s.mid.is_some())
                .collect();
            let slots = self
                .slots
                .iter()
                .filter(|s| s.want_active)
                .filter_map(|s| Some((s.mid?.to_string(), s.track?)))
                .collect();
            self.pending_offer = Some((pending, offered));
            self.offered = true;
            out.push(PeerOut::Offer {
                sdp: offer.to_sdp_string(),
                slots,
            });
        }
    }

    /// An m-line negotiated: a track the client publishes, or a slot a viewer offered.
    pub(super) fn on_media_added(
        &mut self,
        mid: Mid,
        kind: MediaKind,
        dir: Direction,
        out: &mut Vec<PeerOut>,
    ) {
        if self.published.iter().any(|p| p.mid == mid)
            || self.slots.iter().any(|s| s.mid == Some(mid))
        {
            return;
        }
        let kind = match kind {
            MediaKind::Audio => Kind::Audio,
            MediaKind::Video => Kind::Video,
        };
        match self.role {
            Role::Publisher if dir.is_receiving() => {
                let track = TrackId {
                    peer: self.id,
                    index: self.next_track_index,
                };
                self.next_track_index = self.next_track_index.wrapping_add(1);
                self.published.push(Published::new(track, kind, mid));
                let i = self.published.len() - 1;
                self.learn_rids(i);
                let layers = self.published[i].layers();
                out.push(PeerOut::TrackAdded {
                    track,
                    kind,
                    mid,
                    layers,
                });
            }
            Role::Viewer if dir.is_sending() => self.slots.push(Slot::new(Some(mid), kind, true)),
            _ => {}
        }
    }
}

/// Refuses an SDP in which one payload type number means two things: two `a=rtpmap` lines
/// in one m-section, or different formats (an RTX format with a different `apt`) in two
/// m-sections, which share their numbers in one BUNDLE (RFC 8843, section 9.1). str0m keeps
/// payload types per session and asserts that it never locks one twice: where the remote
/// dictates them (it receives), such an SDP made it panic (found by fuzz target `whip`).
pub(crate) fn check_payload_types(sdp: &str) -> Result<(), Error> {
    fn close(
        section: &mut Vec<(u8, String)>,
        apts: &mut HashMap<u8, String>,
        seen: &mut HashMap<u8, String>,
    ) -> Result<(), Error> {
        for (pt, encoding) in section.drain(..) {
            let apt = apts.get(&pt).map(String::as_str).unwrap_or("");
            let meaning = format!("{encoding};apt={apt}");
            match seen.get(&pt) {
                Some(before) if *before != meaning => {
                    return Err(Error::BadSdp(format!(
                        "payload type {pt} means both {before} and {meaning}"
                    )))
                }
                Some(_) => {}
                None => {
                    seen.insert(pt, meaning);
                }
            }
        }
        apts.clear();
        Ok(())
    }
    let mut seen: HashMap<u8, String> = HashMap::new();
    let mut section: Vec<(u8, String)> = Vec::new();
    let mut apts: HashMap<u8, String> = HashMap::new();
    for line in sdp.lines() {
        let line = line.trim();
        if line.starts_with("m=") {
            close(&mut section, &mut apts, &mut seen)?;
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let (pt, encoding) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let Ok(pt) = pt.trim().parse::<u8>() else {
                continue;
            };
            if section.iter().any(|(p, _)| *p == pt) {
                return Err(Error::BadSdp(format!(
                    "payload type {pt} is mapped twice in one m-section"
                )));
            }
            section.push((pt, encoding.trim().to_ascii_lowercase()));
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            let (pt, params) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let Ok(pt) = pt.trim().parse::<u8>() else {
                continue;
            };
            if let Some(apt) = params
                .split(';')
                .find_map(|p| p.trim().strip_prefix("apt="))
            {
                apts.insert(pt, apt.trim().to_string());
            }
        }
    }
    close(&mut section, &mut apts, &mut seen)
}

#[cfg(test)]
mod tests {
    use super::check_payload_types;

    #[test]
    fn a_payload_type_means_one_format_in_the_whole_sdp() {
        let ok = "m=audio 9 X 111\na=rtpmap:111 opus/48000/2\n\
                  m=video 9 X 96 97\na=rtpmap:96 VP8/90000\na=rtpmap:97 rtx/90000\na=fmtp:97 apt=96\n\
                  m=video 9 X 96 97\na=rtpmap:96 vp8/90000\na=rtpmap:97 rtx/90000\na=fmtp:97 apt=96\n";
        assert!(check_payload_types(ok).is_ok());
        let twice = "m=video 9 X 97\na=rtpmap:97 rtx/90000\na=rtpmap:97 VP9/90000\n";
        assert!(check_payload_types(twice).is_err());
        let across =
            "m=audio 9 X 96\na=rtpmap:96 opus/48000/2\nm=video 9 X 96\na=rtpmap:96 VP8/90000\n";
        assert!(check_payload_types(across).is_err());
        let rtx = "m=video 9 X 97\na=rtpmap:97 rtx/90000\na=fmtp:97 apt=96\n\
                   m=video 9 X 97\na=rtpmap:97 rtx/90000\na=fmtp:97 apt=98\n";
        assert!(check_payload_types(rtx).is_err());
    }
}
