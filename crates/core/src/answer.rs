//! The codec order of our answers to publishers. str0m answers in its own preference order
//! (VP8 first), and a browser sends the first codec of the answer: a publisher that puts VP9
//! first in its offer (`setCodecPreferences`, to send scalable video) would still send VP8.
//! An SFU forwards what the publisher chose, so the video sections of the answer list the
//! same payload types in the offer's order. Audio keeps str0m's order, which puts RED before
//! Opus as libwebrtc requires to enable it.

/// Reorders the payload types of `answer`'s video `m=` lines as the corresponding (same
/// index) `m=` lines of `offer` list them; anything not in the offer keeps its place at the
/// end. Both are SDP texts; lines are joined with CRLF as SDP requires.
pub fn follow_offer_video_order(offer: &str, answer: &str) -> String {
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
