//! What our answers to publishers say beyond str0m's negotiation.
//!
//! - **Codec order.** str0m answers in its own preference order (VP8 first), and a browser
//!   sends the first codec of the answer: a publisher that puts VP9 first in its offer
//!   (`setCodecPreferences`, to send scalable video) would still send VP8. An SFU forwards
//!   what the publisher chose, so the video sections list the same payload types in the
//!   offer's order. Audio keeps str0m's order, which puts RED before Opus as libwebrtc
//!   requires to enable it.
//! - **Opus DTX.** A browser uses discontinuous transmission only when the answer's Opus
//!   `fmtp` asks for it (`usedtx=1`): a silent microphone then sends a packet every 400 ms
//!   instead of 50 per second, which in a large room is most of the audio. The SFU forwards
//!   DTX streams as they are (the gaps are not losses; the active speaker reads them as
//!   silence). str0m 0.25 cannot configure DTX and RED together, so it is said here.

/// Our answer to a publisher's offer, as str0m wrote it, with the offer's video codec order
/// and Opus DTX asked for.
pub fn for_publisher(offer: &str, answer: &str) -> String {
    ask_opus_dtx(&follow_offer_video_order(offer, answer))
}

/// Adds `usedtx=1` to the `fmtp` of every Opus payload type (adding the line if missing).
fn ask_opus_dtx(sdp: &str) -> String {
    let opus: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|m| m.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("opus/"))
        .map(|(pt, _)| pt)
        .collect();
    let has_fmtp = |pt: &str| {
        sdp.lines().any(|l| {
            l.strip_prefix("a=fmtp:")
                .is_some_and(|f| f.split(' ').next() == Some(pt))
        })
    };
    let mut out = String::with_capacity(sdp.len() + 32);
    for line in sdp.lines() {
        let line = line.trim_end();
        out.push_str(line);
        if let Some(f) = line.strip_prefix("a=fmtp:") {
            let (pt, params) = f.split_once(' ').unwrap_or((f, ""));
            if opus.contains(&pt) && !params.contains("usedtx=") {
                out.push_str(if params.is_empty() {
                    " usedtx=1"
                } else {
                    ";usedtx=1"
                });
            }
        }
        out.push_str("\r\n");
        if let Some(m) = line.strip_prefix("a=rtpmap:") {
            let pt = m.split(' ').next().unwrap_or("");
            if opus.contains(&pt) && !has_fmtp(pt) {
                out.push_str(&format!("a=fmtp:{pt} usedtx=1\r\n"));
            }
        }
    }
    out
}

/// Reorders the payload types of `answer`'s video `m=` lines as the corresponding (same
/// index) `m=` lines of `offer` list them; anything not in the offer keeps its place at the
/// end. Both are SDP texts; lines are joined with CRLF as SDP requires.
fn follow_offer_video_order(offer: &str, answer: &str) -> String {
    let offered: Vec<Vec<&str>> = offer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("m="))
        .map(|m| m.split(' ').skip(3).collect())
        .collect();
    let mut index = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.lines() {
        let line = line.trim_end();
        match line.strip_prefix("m=") {
            Some(m) => {
                let order = offered.get(index);
                index += 1;
                let fields: Vec<&str> = m.split(' ').collect();
                match (order, fields.first()) {
                    (Some(order), Some(&"video")) if fields.len() > 3 => {
                        let (head, pts) = fields.split_at(3);
                        let mut pts = pts.to_vec();
                        // Stable: payload types the offer does not list stay in their order.
                        pts.sort_by_key(|pt| {
                            order.iter().position(|o| o == pt).unwrap_or(usize::MAX)
                        });
                        out.push_str("m=");
                        out.push_str(&head.join(" "));
                        for pt in pts {
                            out.push(' ');
                            out.push_str(pt);
                        }
                    }
                    _ => out.push_str(line),
                }
            }
            None => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 45\r\na=mid:1\r\n";

    #[test]
    fn video_follows_the_offer_and_audio_keeps_its_order() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\n";
        let out = follow_offer_video_order(OFFER, answer);
        assert!(
            out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\n"),
            "{out}"
        );
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\n"),
            "{out}"
        );
        assert!(out.contains("a=mid:1\r\n"));
    }

    #[test]
    fn opus_asks_for_dtx() {
        let answer = "m=audio 9 X 63 111\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
            a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
        let out = for_publisher("m=audio 9 X 111 63\r\n", answer);
        assert!(
            out.contains("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"),
            "{out}"
        );
        assert!(
            out.contains("a=fmtp:63 111/111\r\n"),
            "RED untouched: {out}"
        );
        // No fmtp line: one is added after the rtpmap; an explicit choice is kept.
        let bare = ask_opus_dtx("a=rtpmap:96 OPUS/48000/2\r\n");
        assert_eq!(bare, "a=rtpmap:96 OPUS/48000/2\r\na=fmtp:96 usedtx=1\r\n");
        let kept = ask_opus_dtx("a=rtpmap:96 opus/48000/2\r\na=fmtp:96 usedtx=0\r\n");
        assert!(kept.contains("a=fmtp:96 usedtx=0\r\n") && !kept.contains("usedtx=1"));
    }

    #[test]
    fn odd_input_is_left_as_it_is() {
        // An m= line with no payload types, an answer with more sections than the offer.
        let answer = "m=video 0 UDP/TLS/RTP/SAVPF\r\nm=video 9 X 1 2\r\nm=video 9 X 2 1\r\n";
        let out = follow_offer_video_order("m=video 9 X 2 1\r\n", answer);
        assert_eq!(
            out,
            "m=video 0 UDP/TLS/RTP/SAVPF\r\nm=video 9 X 1 2\r\nm=video 9 X 2 1\r\n"
        );
        assert_eq!(
            follow_offer_video_order("", "m=video 9 X 2 1\r\n"),
            "m=video 9 X 2 1\r\n"
        );
    }
}
