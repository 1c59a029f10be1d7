//! Two testkit peers connected directly (no server): the publisher's RTP payloads arrive
//! byte-identical and in sequence at the receiver.

use std::time::Duration;

use sfumato_testkit::{
    compare_payloads, poll_until, seq_discontinuities, Compare, Kind, OfferSpec, Peer, PeerOptions,
};

#[tokio::test]
async fn publisher_to_receiver_direct() -> anyhow::Result<()> {
    let publisher = Peer::new(PeerOptions {
        name: "pub".into(),
        ..Default::default()
    })?;
    let receiver = Peer::new(PeerOptions {
        name: "recv".into(),
        ..Default::default()
    })?;
    let offer = publisher.create_offer(OfferSpec::publish()).await?;
    assert!(offer.contains("a=sendonly"), "{offer}");
    assert!(offer.contains("VP8/90000"), "{offer}");
    assert!(offer.contains("opus/48000"), "{offer}");
    let answer = receiver.accept_offer(&offer).await?;
    assert!(answer.contains("a=recvonly"), "{answer}");
    publisher.accept_answer(&answer).await?;
    publisher.wait_connected(Duration::from_secs(10)).await?;
    receiver.wait_connected(Duration::from_secs(10)).await?;

    poll_until(Duration::from_secs(10), || {
        receiver.received_count(Kind::Audio) >= 100 && receiver.received_count(Kind::Video) >= 100
    })
    .await?;

    for kind in [Kind::Audio, Kind::Video] {
        let sent = publisher.sent_of(kind);
        let recv = receiver.received_of(kind);
        let c = compare_payloads(&sent, &recv, Compare::Exact);
        assert!(c.is_perfect(), "{kind:?}: {c:?}");
        assert!(seq_discontinuities(&recv).is_empty(), "{kind:?}");
        // Same seq numbers and SSRC without an SFU in between.
        assert_eq!(recv[0].ssrc, sent[0].ssrc);
        let first = sent.iter().position(|s| s.seq == recv[0].seq).expect("seq");
        for (s, r) in sent[first..].iter().zip(&recv) {
            assert_eq!(
                (s.seq, s.timestamp, s.marker),
                (r.seq, r.timestamp, r.marker)
            );
        }
    }
    let c = receiver.counts();
    assert_eq!(c.received_unknown, 0);

    // A PLI from the receiver reaches the publisher, which answers with a key frame.
    let video_mid = receiver.received_of(Kind::Video)[0]
        .mid
        .clone()
        .expect("mid");
    let before = receiver.received_count(Kind::Video) as usize;
    receiver.request_keyframe(&video_mid).await?;
    poll_until(Duration::from_secs(5), || {
        publisher.counts().keyframe_requests >= 1
    })
    .await?;
    poll_until(Duration::from_secs(5), || {
        receiver.received_of(Kind::Video)[before..]
            .iter()
            .any(|p| sfumato_testkit::media::vp8_payload_is_keyframe(&p.payload))
    })
    .await?;

    // Garbage from the publisher's own 5-tuple is dropped by the receiver; media goes on.
    let ufrag = sfumato_testkit::garbage::sdp_ufrag(&answer)
        .into_iter()
        .collect::<Vec<_>>();
    let junk = sfumato_testkit::garbage::datagrams(1, 300, &ufrag, &[]);
    assert_eq!(publisher.inject(junk).await?, 300);
    let n = receiver.received_count(Kind::Audio);
    poll_until(Duration::from_secs(5), || {
        receiver.received_count(Kind::Audio) >= n + 25
    })
    .await?;

    // Stopping the sending m-lines: a re-offer, and media stops.
    let reoffer = publisher.stop_sending().await?.expect("a re-offer");
    let reanswer = receiver.accept_offer(&reoffer).await?;
    publisher.accept_answer(&reanswer).await?;
    assert!(reoffer.contains("m=audio 0 "), "{reoffer}");
    assert!(reoffer.contains("m=video 0 "), "{reoffer}");
    assert!(
        publisher.status().errors.is_empty(),
        "{:?}",
        publisher.status()
    );
    assert!(
        receiver.status().errors.is_empty(),
        "{:?}",
        receiver.status()
    );
    Ok(())
}
