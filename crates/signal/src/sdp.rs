//! The shape of an untrusted SDP, read before anything parses it whole: how many m-lines it
//! has and how many of them send audio or video, which the server's limits bound
//! (`--max-sdp-mlines`, `--max-tracks-per-participant`).

/// The m-lines of an SDP, and those of audio or video that send (not `inactive` or
/// `recvonly`, and not port 0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SdpShape {
    pub mlines: usize,
    pub sending: usize,
}

/// Reads `sdp`'s shape line by line; any text has one.
pub fn sdp_shape(sdp: &str) -> SdpShape {
    let mut shape = SdpShape::default();
    // The m-line being read: whether it is audio or video that still may send.
    let mut current: Option<bool> = None;
    let close = |shape: &mut SdpShape, current: Option<bool>| {
        if current == Some(true) {
            shape.sending += 1;
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            close(&mut shape, current);
            shape.mlines += 1;
            let mut words = m.split(' ');
            let media = words.next().unwrap_or("");
            let port = words.next().unwrap_or("");
            current = Some((media == "audio" || media == "video") && port != "0");
        } else if matches!(line, "a=inactive" | "a=recvonly") {
            current = current.map(|_| false);
        }
    }
    close(&mut shape, current);
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_sends_its_live_audio_and_video_m_lines() {
        let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(
            sdp_shape(offer),
            SdpShape {
                mlines: 5,
                sending: 2
            }
        );
        let recvonly = "m=video 9 X 96\na=recvonly\nm=audio 9 X 111\n";
        assert_eq!(
            sdp_shape(recvonly),
            SdpShape {
                mlines: 2,
                sending: 1
            }
        );
    }

    #[test]
    fn any_text_has_a_shape() {
        assert_eq!(sdp_shape(""), SdpShape::default());
        assert_eq!(sdp_shape("m=\nm= \na=recvonly").mlines, 2);
    }
}
