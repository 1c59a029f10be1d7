//! A WHIP or WHEP POST as the server reads it: the `Content-Type` and the body
//! (`sfumato_signal::sdp::offer_body`), the outline the limits and grants bound (`sections`,
//! `sdp_shape`), then the offer into a worker's engine as a publisher's (WHIP) or a viewer's
//! (WHEP), up to the engine's answer. Input: one flags byte, then the content type and the
//! body (`sfumato_fuzz::pieces` of it: a length byte, then that many bytes; the body is the
//! rest).
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sfumato_core::ids::{PeerId, WorkerId};
use sfumato_core::{Command, Engine, Event, Output, ReplyBody};
use sfumato_signal::sdp::{offer_body, sdp_shape, sections};

const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let (ctype, body) = rest.split_at(usize::from(n).min(rest.len()));
    // Most inputs name the right type, so that the body goes on to the engine.
    let ctype = match flags & 0b110 {
        0 => std::str::from_utf8(ctype).ok(),
        2 => None,
        _ => Some("application/sdp"),
    };
    let Ok(offer) = offer_body(ctype, body) else {
        return;
    };
    // What the limits and the grant check read (`sdp_shape` counts `sections`).
    let _ = sdp_shape(offer);

    let now = sfumato_fuzz::clock().at;
    let mut engine = Engine::new(WorkerId(0), ADDR);
    let peer = PeerId(1);
    let offer = offer.to_string();
    let command = if flags & 1 == 0 {
        Command::Publish {
            req: 1,
            peer,
            offer,
        }
    } else {
        Command::CreateViewer {
            req: 1,
            peer,
            offer,
        }
    };
    engine.handle_command(now, command);
    let mut replied = false;
    while let Some(out) = engine.poll_output() {
        if let Output::Event(Event::Reply { req: 1, result }) = out {
            replied = true;
            if let Ok(ReplyBody::Sdp(answer)) = result {
                // The answer is ours, so it is an SDP that its own reading accepts.
                assert!(sections(&answer).count() > 0, "an answer without m-lines");
            }
        }
    }
    assert!(replied, "the engine did not answer the offer");
});
