//! Story: the worker where a microphone is published reports, every 200 ms, how loud it was
//! (from the audio-level header extension), so that the control plane can tell who speaks.
//! A microphone that stops sending (DTX, mute at the source) reads as silence.

use crate::harness;

use std::time::Duration;

use harness::Net;
use sfumato_core::engine::LEVEL_INTERVAL;
use sfumato_core::{Event, TrackId};

/// The loudness reports for `track`, in order.
fn reports(net: &Net, track: TrackId) -> Vec<u8> {
    net.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::AudioLevels { levels } => levels.iter().find(|(t, _)| *t == track).map(|l| l.1),
            _ => None,
        })
        .collect()
}

#[test]
fn loudness_is_reported_per_track_and_silence_reads_zero() {
    // Two workers: bob's subscription crosses the pipe, which must not count twice.
    let mut net = Net::new(2);
    let (alice, _, tracks) = net.alice_to_bob(0, 1);

    // One second at −20 dBov (loudness 107), a packet every 20 ms.
    net.client_mut(alice).audio_level = Some(-20);
    let start = net.events.len();
    for _ in 0..50 {
        net.send_audio(alice);
        net.step(Duration::from_millis(20));
    }
    let loud: Vec<u8> = reports(&net, tracks.audio);
    assert!(net.events.len() > start);
    let n = loud.len();
    assert!(
        (4..=6).contains(&n),
        "one report per {LEVEL_INTERVAL:?}: {loud:?}"
    );
    // The first window may have started before the packets did.
    assert!(
        loud[1..].iter().all(|l| *l == 107),
        "loudness of −20 dBov is 107: {loud:?}"
    );

    // Then nothing: silence.
    net.run_for(Duration::from_millis(600));
    let after = reports(&net, tracks.audio);
    assert!(after.len() > n);
    assert_eq!(*after.last().unwrap(), 0, "{after:?}");
    // Only the origin reports the track; bob's worker does not.
    assert!(net
        .events
        .iter()
        .filter(|(w, _)| *w == 1)
        .all(|(_, e)| !matches!(e, Event::AudioLevels { levels } if levels.iter().any(|(t, _)| *t == tracks.audio))));
}
