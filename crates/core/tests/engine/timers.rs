//! Story: a worker sleeps until `Engine::poll_timeout`, as the real runtime does, while it
//! holds a thousand idle peers; a publisher among them that never connects is still closed
//! when its connect deadline passes, and the worker wakes only when something is due.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfumato_core::engine::LEVEL_INTERVAL;
use sfumato_core::{Command, Engine, Event, Output, PeerId, ReplyBody, WorkerId};
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

/// `Peer`'s connect deadline (private there): a peer not connected this long after its
/// offer is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_worker_driven_by_poll_timeout_closes_a_peer_that_never_connects() {
    let t0 = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], 5000).into();
    let mut engine = Engine::new(WorkerId(0), addr);
    for i in 0..1000 {
        engine.handle_command(
            t0,
            Command::CreateSubscriber {
                peer: PeerId(i + 1),
            },
        );
    }
    let mut client = Rtc::builder().build(t0);
    let mut sdp = client.sdp_api();
    sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _pending) = sdp.apply().expect("an offer");
    let publisher = PeerId(5000);
    engine.handle_command(
        t0,
        Command::Publish {
            req: 1,
            peer: publisher,
            offer: offer.to_sdp_string(),
        },
    );

    let mut now = t0;
    let mut turns = 0;
    let mut answered = false;
    let closed_at = loop {
        let mut closed = None;
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Event(Event::Reply { req: 1, result }) => {
                    answered = matches!(result, Ok(ReplyBody::Sdp(_)));
                }
                Output::Event(Event::PeerClosed { peer, reason }) if peer == publisher => {
                    closed = Some((now, reason));
                }
                _ => {}
            }
        }
        if let Some(c) = closed {
            break c;
        }
        let next = engine.poll_timeout(now);
        assert!(
            next < t0 + 2 * CONNECT_TIMEOUT,
            "the worker would sleep past the connect deadline"
        );
        now = next.max(now);
        engine.handle_timeout(now);
        turns += 1;
    };
    assert!(answered, "the publisher got its answer");
    let (at, reason) = closed_at;
    assert_eq!(reason, "ice timeout");
    let after = at - t0;
    assert!(
        after >= CONNECT_TIMEOUT && after < CONNECT_TIMEOUT + Duration::from_secs(1),
        "closed {after:?} after the offer"
    );
    // About one wake-up per audio-level report and a few for the publisher's own timers; a
    // deadline left behind by a peer would make the loop spin at it instead.
    let reports = (after.as_millis() / LEVEL_INTERVAL.as_millis()) as usize;
    assert!(turns <= 2 * reports, "{turns} wake-ups in {after:?}");
}
