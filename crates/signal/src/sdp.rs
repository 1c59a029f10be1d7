//! An untrusted SDP read before anything parses it whole: a WHIP/WHEP body's content type and
//! encoding ([`offer_body`]), its m-sections ([`sections`]: kind, port, direction), and
//! their count ([`sdp_shape`]) that the server's limits bound (`--max-sdp-mlines`,
//! `--max-tracks-per-participant`). The server's grant check (which media a token may
//! publish) reads the same sections, so that the limit and the grant agree on what an offer
//! sends.

/// One m-section of an SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    /// The media word of the m-line: `audio`, `video`, `application`, or anything.
    pub kind: &'a str,
    /// A non-zero port: the section is not rejected or stopped.
    pub live: bool,
    /// It may send media to us: not `a=recvonly` or `a=inactive` (SDP's default direction
    /// is `sendrecv`).
    pub sends: bool,
}

impl Section<'_> {
    /// A live audio or video section that sends: a track its offerer publishes.
    pub fn publishes(&self) -> bool {
        self.live && self.sends && matches!(self.kind, "audio" | "video")
    }
}

/// The m-sections of `sdp`, in order; any text has some (perhaps none).
pub fn sections(sdp: &str) -> impl Iterator<Item = Section<'_>> {
    let mut lines = sdp.lines().map(str::trim).peekable();
    std::iter::from_fn(move || {
        // Skip to the next m-line.
        let m = loop {
            if let Some(m) = lines.next()?.strip_prefix("m=") {
                break m;
            }
        };
        let mut words = m.split_whitespace();
        let kind = words.next().unwrap_or("");
        let live = words.next().is_some_and(|port| port != "0");
        let mut sends = true;
        while let Some(line) = lines.next_if(|l| !l.starts_with("m=")) {
            if matches!(line, "a=recvonly" | "a=inactive") {
                sends = false;
            }
        }
        Some(Section { kind, live, sends })
    })
}

/// The m-lines of an SDP, and those of audio or video that send ([`Section::publishes`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SdpShape {
    pub mlines: usize,
    pub sending: usize,
}

/// Counts `sdp`'s m-sections.
pub fn sdp_shape(sdp: &str) -> SdpShape {
    sections(sdp).fold(SdpShape::default(), |shape, s| SdpShape {
        mlines: shape.mlines + 1,
        sending: shape.sending + usize::from(s.publishes()),
    })
}

/// Why a WHIP/WHEP body is not an SDP offer to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The `Content-Type` is not `application/sdp` (the header's value, or empty).
    ContentType(String),
    /// The body is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::ContentType(t) => {
                write!(f, "Content-Type must be application/sdp, not `{t}`")
            }
            BodyError::NotUtf8 => f.write_str("the SDP offer is not UTF-8"),
        }
    }
}

/// A WHIP or WHEP POST's offer: `content_type` (the header, if it is text) names
/// `application/sdp` (parameters and case aside) and `body` is UTF-8.
pub fn offer_body<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<&'a str, BodyError> {
    let ctype = content_type.unwrap_or("");
    let essence = ctype.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/sdp") {
        return Err(BodyError::ContentType(ctype.to_string()));
    }
    std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn an_offer_sends_its_live_audio_and_video_m_lines() {
        assert_eq!(
            sdp_shape(OFFER),
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
    fn sections_read_kind_port_and_direction() {
        let s: Vec<_> = sections(OFFER).collect();
        let kinds: Vec<_> = s.iter().map(|s| (s.kind, s.live, s.sends)).collect();
        assert_eq!(
            kinds,
            [
                ("audio", true, true),
                ("video", true, true),
                ("video", true, false),
                ("video", false, true),
                ("application", true, true),
            ]
        );
        // A direction line belongs to its own section only, and spacing does not hide a port.
        let s: Vec<_> =
            sections("a=recvonly\nm=video  0 X\nm=audio\t9 X\n a=inactive \n").collect();
        assert_eq!(s.len(), 2);
        assert!(!s[0].live && s[0].sends);
        assert!(s[1].live && !s[1].sends);
    }

    #[test]
    fn any_text_has_a_shape() {
        assert_eq!(sdp_shape(""), SdpShape::default());
        assert_eq!(sdp_shape("m=\nm= \na=recvonly").mlines, 2);
        assert_eq!(sdp_shape("m=video").sending, 0);
    }

    #[test]
    fn a_body_is_application_sdp_in_utf8() {
        assert_eq!(offer_body(Some("application/sdp"), b"v=0"), Ok("v=0"));
        assert_eq!(
            offer_body(Some(" Application/SDP ; charset=utf-8"), b"v=0"),
            Ok("v=0")
        );
        assert_eq!(
            offer_body(Some("text/plain"), b"v=0"),
            Err(BodyError::ContentType("text/plain".into()))
        );
        assert_eq!(
            offer_body(None, b"v=0"),
            Err(BodyError::ContentType(String::new()))
        );
        assert_eq!(
            offer_body(Some("application/sdp"), &[0xff, 0xfe]),
            Err(BodyError::NotUtf8)
        );
    }
}
