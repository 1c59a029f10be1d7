//! One media worker's engine driven by an outsider: offers (a publisher's, a WHIP or WHEP
//! body), answers, datagrams from known and unknown addresses (the demux, STUN, DTLS, RTP
//! and RTCP classification, then str0m), pipe messages in their wire form, subscriptions,
//! layer choices and time. Offers are either made by a str0m client (so that negotiation
//! goes deep) or the fuzzer's own text.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sfumato_core::ids::{Kind, PeerId, TrackId, WorkerId};
use sfumato_core::{wire, Command, Engine, Event, Output};
use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};
use str0m::{Candidate, Rtc};

#[derive(Arbitrary, Debug)]
enum Sdp {
    /// An audio and video offer from a str0m client.
    Publisher,
    /// The same with three simulcast layers.
    Simulcast,
    /// A recvonly offer (WHEP).
    Viewer,
    /// The engine's latest offer to a subscriber, answered by the str0m client.
    Answer,
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Publish {
        peer: u8,
        sdp: Sdp,
    },
    Viewer {
        peer: u8,
        sdp: Sdp,
    },
    CreateSubscriber {
        peer: u8,
    },
    SubscriberAnswer {
        peer: u8,
        sdp: Sdp,
    },
    Subscribe {
        peer: u8,
        track: u8,
        video: bool,
        origin: u8,
    },
    Unsubscribe {
        peer: u8,
        track: u8,
    },
    SetLayer {
        peer: u8,
        track: u8,
        layer: Option<u8>,
    },
    AddSink {
        track: u8,
        worker: u8,
    },
    Close {
        peer: u8,
    },
    /// A datagram from one of a few addresses.
    Datagram {
        from: u8,
        data: Vec<u8>,
    },
    /// A pipe message from another worker, in its wire form.
    Pipe(Vec<u8>),
    /// Time passes (milliseconds).
    Advance(u16),
}

const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

fn client_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(n % 4)))
}

fn track(t: u8) -> TrackId {
    TrackId {
        peer: PeerId(u64::from(t % 4)),
        index: u16::from(t / 4 % 4),
    }
}

/// The offers a str0m client makes, once per run: (publisher, simulcast, viewer).
fn offers() -> &'static (String, String, String) {
    static OFFERS: OnceLock<(String, String, String)> = OnceLock::new();
    OFFERS.get_or_init(|| {
        let offer = |video: Direction, audio: Direction, simulcast: bool| {
            let mut rtc = Rtc::builder().build(sfumato_fuzz::clock().at);
            if let Ok(c) = Candidate::host(client_addr(0), "udp") {
                rtc.add_local_candidate(c);
            }
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, audio, None, None, None);
            let layers = simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in ["q", "h", "f"] {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            api.add_media(MediaKind::Video, video, None, None, layers);
            api.apply()
                .map(|(o, _)| o.to_sdp_string())
                .unwrap_or_default()
        };
        (
            offer(Direction::SendOnly, Direction::SendOnly, false),
            offer(Direction::SendOnly, Direction::SendOnly, true),
            offer(Direction::RecvOnly, Direction::RecvOnly, false),
        )
    })
}

/// An answer from a str0m client to the engine's `offer`.
fn answer_to(offer: &str) -> String {
    let Ok(offer) = str0m::change::SdpOffer::from_sdp_string(offer) else {
        return String::new();
    };
    // The engine's DTLS setup (one certificate for the process): a certificate made per
    // answer was most of an execution's time.
    let mut rtc = Rtc::builder()
        .set_crypto_provider(sfumato_core::dtls::provider())
        .build(sfumato_fuzz::clock().at);
    rtc.sdp_api()
        .accept_offer(offer)
        .map(|a| a.to_sdp_string())
        .unwrap_or_default()
}

fn sdp(s: Sdp, last_offer: &str) -> String {
    let (publisher, simulcast, viewer) = offers();
    match s {
        Sdp::Publisher => publisher.clone(),
        Sdp::Simulcast => simulcast.clone(),
        Sdp::Viewer => viewer.clone(),
        Sdp::Answer => answer_to(last_offer),
        Sdp::Text(t) => t,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    static CRYPTO: Once = Once::new();
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
    let clock = sfumato_fuzz::clock();
    let mut now = clock.at;
    let mut engine = Engine::new(WorkerId(0), ADDR);
    engine.set_bandwidth_estimation(true);
    let mut last_offer = String::new();
    for (req, op) in (0u64..).zip(ops) {
        let peer = |p: u8| PeerId(u64::from(p % 4));
        match op {
            Op::Publish { peer: p, sdp: s } => engine.handle_command(
                now,
                Command::Publish {
                    req,
                    peer: peer(p),
                    offer: sdp(s, &last_offer),
                },
            ),
            Op::Viewer { peer: p, sdp: s } => engine.handle_command(
                now,
                Command::CreateViewer {
                    req,
                    peer: peer(p),
                    offer: sdp(s, &last_offer),
                },
            ),
            Op::CreateSubscriber { peer: p } => {
                engine.handle_command(now, Command::CreateSubscriber { peer: peer(p) })
            }
            Op::SubscriberAnswer { peer: p, sdp: s } => engine.handle_command(
                now,
                Command::SubscriberAnswer {
                    req,
                    peer: peer(p),
                    answer: sdp(s, &last_offer),
                },
            ),
            Op::Subscribe {
                peer: p,
                track: t,
                video,
                origin,
            } => engine.handle_command(
                now,
                Command::Subscribe {
                    peer: peer(p),
                    track: track(t),
                    kind: if video { Kind::Video } else { Kind::Audio },
                    origin: WorkerId(u16::from(origin % 2)),
                },
            ),
            Op::Unsubscribe { peer: p, track: t } => engine.handle_command(
                now,
                Command::Unsubscribe {
                    peer: peer(p),
                    track: track(t),
                },
            ),
            Op::SetLayer {
                peer: p,
                track: t,
                layer,
            } => engine.handle_command(
                now,
                Command::SetLayer {
                    peer: peer(p),
                    track: track(t),
                    layer,
                },
            ),
            Op::AddSink { track: t, worker } => engine.handle_command(
                now,
                Command::AddSink {
                    track: track(t),
                    worker: WorkerId(u16::from(worker % 2)),
                },
            ),
            Op::Close { peer: p } => {
                engine.handle_command(now, Command::ClosePeer { peer: peer(p) })
            }
            Op::Datagram { from, data } => engine.handle_datagram(now, client_addr(from), &data),
            Op::Pipe(bytes) => {
                if let Ok(msg) = wire::decode(&bytes, &clock) {
                    engine.handle_pipe(now, msg);
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
            }
        }
        engine.handle_timeout(now);
        while let Some(out) = engine.poll_output() {
            if let Output::Event(Event::SubscriberOffer { sdp, .. }) = out {
                last_offer = sdp;
            }
        }
        let _ = engine.poll_timeout(now);
    }
});
