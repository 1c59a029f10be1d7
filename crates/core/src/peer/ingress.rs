//! Ingress: the tracks a peer publishes and what arrives on them. A received RTP packet
//! becomes one shared [`MediaPacket`] (its stream's simulcast layer from the SSRC, its
//! layer fields read once here); keyframe requests go back to the publisher.

use std::sync::Arc;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequestKind, Mid, Rid, Rids};
use str0m::rtp::{RtpPacket, Vp8Descriptor};

use super::{Peer, PeerOut};
use crate::dd::{DdBytes, Templates};
use crate::ids::{Kind, TrackId};
use crate::keyframe::is_keyframe_start;
use crate::packet::{MediaPacket, MAX_LAYERS};
use crate::red;
use crate::svc::SvcLayer;
use crate::temporal::TemporalLayer;
use crate::vp9;

/// A track this peer publishes.
#[derive(Debug)]
pub struct Published {
    pub track: TrackId,
    pub kind: Kind,
    pub mid: Mid,
    params: Vec<PayloadParams>,
    /// Simulcast layers by rid, lowest first (the order of the offer's `a=simulcast`, as
    /// browsers list `sendEncodings`); empty without simulcast.
    rids: Vec<Rid>,
    /// Spatial layers of a scalable (SVC) stream, from its latest scalability structure.
    spatial_layers: u8,
    /// Frame templates per simulcast layer (one stream each), from the latest dependency
    /// descriptor structure: AV1's layers, and the temporal layers of the other codecs
    /// when browsers describe them there (Chrome's VP8 carries no TID in its payload
    /// descriptor once the dependency descriptor is negotiated).
    templates: [Templates; MAX_LAYERS],
}

impl Published {
    pub(super) fn new(track: TrackId, kind: Kind, mid: Mid) -> Self {
        Published {
            track,
            kind,
            mid,
            params: Vec::new(),
            rids: Vec::new(),
            spatial_layers: 1,
            templates: Default::default(),
        }
    }

    /// Simulcast layers negotiated (1 without simulcast).
    pub(super) fn layers(&self) -> u8 {
        self.rids.len().max(1) as u8
    }

    /// Completes a scalable packet's layer fields with the stream's spatial layer count,
    /// learnt from the structures the publisher announces (or the highest layer seen).
    fn svc_layer(&mut self, mut l: SvcLayer) -> SvcLayer {
        let seen = l.spatial_layers.unwrap_or(l.spatial + 1);
        if l.spatial_layers.is_some() || seen > self.spatial_layers {
            self.spatial_layers = seen;
        }
        l.spatial_layers = Some(self.spatial_layers);
        l
    }

    /// The rid of `layer` (the highest one if there are fewer), `None` without simulcast.
    fn rid(&self, layer: u8) -> Option<Rid> {
        let last = self.rids.len().checked_sub(1)?;
        Some(self.rids[usize::from(layer).min(last)])
    }
}

impl Peer {
    /// A received packet of a published track; one that cannot be routed (an unknown
    /// stream or payload type, a malformed RED payload) is reported dropped.
    pub(super) fn on_rtp(&mut self, pkt: RtpPacket, out: &mut Vec<PeerOut>) {
        match self.media_packet(pkt) {
            Some(m) => out.push(PeerOut::Media(Arc::new(m))),
            None => out.push(PeerOut::Dropped),
        }
    }

    fn media_packet(&mut self, pkt: RtpPacket) -> Option<MediaPacket> {
        let ssrc = *pkt.header.ssrc;
        let (index, layer) = match self.ssrc_map.iter().find(|(s, _, _)| *s == ssrc) {
            Some(&(_, i, layer)) => (i, layer),
            None => {
                let (mid, rid) = self
                    .rtc
                    .direct_api()
                    .stream_rx(&pkt.header.ssrc)
                    .map(|s| (s.mid(), s.rid()))?;
                let i = self.published.iter().position(|p| p.mid == mid)?;
                self.learn_rids(i);
                let layer = match rid {
                    Some(rid) => match self.published[i].rids.iter().position(|r| *r == rid) {
                        Some(l) => l as u8,
                        None => return None, // a rid beyond the layers we forward
                    },
                    None => 0,
                };
                self.ssrc_map.push((ssrc, i, layer));
                (i, layer)
            }
        };
        let pt = pkt.header.payload_type;
        let published = &mut self.published[index];
        // The payload type's parameters; a RED payload type stands for its primary codec's.
        let of_pt = |p: &PayloadParams| p.pt() == pt || p.red() == Some(pt);
        let params = match published.params.iter().find(|p| of_pt(p)) {
            Some(p) => *p,
            None => {
                let p = self.rtc.codec_config().find(|p| of_pt(p)).copied()?;
                published.params.push(p);
                p
            }
        };
        let red_primary = if params.red() == Some(pt) {
            // Taken out once here for the subscribers without RED; a malformed one is dropped.
            Some(Arc::from(red::primary(&pkt.payload)?))
        } else {
            None
        };
        let codec = params.spec().codec;
        let keyframe = is_keyframe_start(codec, &pkt.payload);
        let vp8 = match codec {
            Codec::Vp8 => Vp8Descriptor::parse(&pkt.payload).ok(),
            _ => None,
        };
        let dd = pkt.header.ext_vals.user_values.get_arc::<DdBytes>();
        let svc = match (codec, &dd) {
            (Codec::Vp9, _) => vp9::parse(&pkt.payload),
            (Codec::Av1, Some(dd)) => published.templates[0].read(&dd.0),
            _ => None,
        }
        .map(|l| published.svc_layer(l));
        let temporal = match (&svc, &dd, codec) {
            (Some(l), _, _) => Some(l.temporal(keyframe)),
            (None, Some(dd), _) => published
                .templates
                .get_mut(usize::from(layer))
                .and_then(|t| t.read(&dd.0))
                .map(|l| l.temporal(keyframe)),
            (None, None, Codec::Vp8) => TemporalLayer::vp8(&pkt.payload, keyframe),
            _ => None,
        };
        let layers = published.layers();
        Some(MediaPacket {
            track: published.track,
            kind: published.kind,
            ssrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            params,
            keyframe,
            layer,
            layers,
            vp8,
            svc,
            temporal,
            dd,
            red_primary,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            received: pkt.timestamp,
            payload: pkt.payload,
        })
    }

    /// The client stopped sending on m-line `mid`: its track is gone.
    pub(super) fn on_track_stopped(&mut self, mid: Mid, out: &mut Vec<PeerOut>) {
        if let Some(i) = self.published.iter().position(|p| p.mid == mid) {
            let p = self.published.remove(i);
            self.ssrc_map.clear();
            out.push(PeerOut::TrackRemoved(p.track));
        }
    }

    /// Asks the publisher of `track` (on this peer) for a keyframe of simulcast `layer`.
    pub fn request_keyframe(&mut self, track: TrackId, layer: u8) -> bool {
        #[cfg(feature = "fault-injection")]
        self.inject(super::Fault::KeyframeRequest);
        let Some(i) = self.published.iter().position(|p| p.track == track) else {
            return false;
        };
        self.learn_rids(i);
        let p = &self.published[i];
        let (mid, rid) = (p.mid, p.rid(layer));
        let mut api = self.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(mid, rid) else {
            return false;
        };
        rx.request_keyframe(KeyframeRequestKind::Pli);
        true
    }

    /// Reads the simulcast layers negotiated for published track `i`, once.
    pub(super) fn learn_rids(&mut self, i: usize) {
        let p = &mut self.published[i];
        if !p.rids.is_empty() {
            return;
        }
        if let Some(Rids::Specific(rids)) = self.rtc.media(p.mid).map(|m| m.rids_rx()) {
            p.rids = rids.iter().take(MAX_LAYERS).copied().collect();
        }
    }
}
