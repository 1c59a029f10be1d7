//! The engine's cost per forwarded packet in a meeting, where every subscriber receives many
//! m-lines: N participants each publish audio and video and receive everyone else's, so
//! each subscribing peer has 2(N-1) slots. Run at a small and a large N, it shows whether a
//! packet's cost grows with the number of m-lines its subscriber has. Virtual network of
//! the scenario tests; only the time inside `Engine` calls is counted.
//!
//! cargo bench -p sfumato-core --bench engine_meeting [-- [batched] <participants>...]
//!
//! By default every packet is its own engine turn (one timeout pass per subscriber per
//! packet, as in `engine_fanout`); `batched`: every publisher's packets of a 10 ms tick
//! reach the engine in one turn, as on a loaded worker.

#[path = "../tests/engine/harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::Net;
use str0m::media::MediaKind;

fn main() {
    // Cargo passes `--bench` too, which is neither a number nor `batched`: ignored.
    let args: Vec<String> = std::env::args().collect();
    let batched = args.iter().any(|a| a == "batched");
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![5, 40];
    }
    for n in sizes {
        let mut net = Net::new(1);
        let publishers: Vec<usize> = (0..n)
            .map(|i| net.add_client(&format!("p{i}"), 0))
            .collect();
        let subscribers: Vec<usize> = (0..n)
            .map(|i| net.add_client(&format!("s{i}"), 0))
            .collect();
        let tracks: Vec<_> = publishers.iter().map(|&p| net.publish(p)).collect();
        for (i, &s) in subscribers.iter().enumerate() {
            net.create_subscriber(s);
            // Two offers per subscriber rather than one per track: the first is held back
            // while the rest are subscribed, then everything comes in the next one.
            net.client_mut(s).auto_answer = false;
            for (j, &t) in tracks.iter().enumerate() {
                if i != j {
                    net.subscribe_all(s, t);
                }
            }
            net.client_mut(s).auto_answer = true;
            net.answer_latest_offer(s);
        }
        net.connect_all();
        net.run_for(Duration::from_millis(200));

        let before = net.engines[0].stats().packets_forwarded;
        net.engine_busy = Duration::ZERO;
        steady_state(&mut net, &publishers, batched);
        let forwarded = net.engines[0].stats().packets_forwarded - before;
        let busy = net.engine_busy;
        println!(
            "meeting of {n} ({} slots per subscriber{}): {forwarded} packets forwarded, engine busy {:.1} ms, {:.2} µs per forwarded packet",
            2 * (n - 1),
            if batched { ", batched" } else { "" },
            busy.as_secs_f64() * 1e3,
            busy.as_secs_f64() * 1e6 / forwarded.max(1) as f64
        );
    }
}

/// 0.5 s of media from every publisher: audio every 20 ms, a video packet every 10 ms, a
/// keyframe at the start. A function of its own so that a profiler can collect only this
/// part (`valgrind --tool=callgrind --toggle-collect='engine_meeting::steady_state'`).
#[inline(never)]
fn steady_state(net: &mut Net, publishers: &[usize], batched: bool) {
    let send = |net: &mut Net, p: usize, kind: MediaKind, keyframe: bool| {
        net.queue_media(p, kind, keyframe);
        if !batched {
            net.pump();
        }
    };
    for i in 0..25u32 {
        // Two ticks of 10 ms: audio and video, then video alone.
        for tick in 0..2 {
            for &p in publishers {
                if tick == 0 {
                    send(net, p, MediaKind::Audio, false);
                }
                send(net, p, MediaKind::Video, i == 0 && tick == 0);
            }
            net.pump();
            net.step(Duration::from_millis(10));
        }
    }
    net.run_for(Duration::from_millis(200));
}
