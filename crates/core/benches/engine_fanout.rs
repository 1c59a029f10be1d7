//! The engine's own cost per forwarded packet, without sockets or the kernel: one publisher
//! and N subscribers on the virtual network of the scenario tests; only the time spent inside
//! `Engine` calls is counted (the str0m clients' work is not).
//!
//! cargo bench -p sfumato-core --bench engine_fanout [-- <subscribers>...]

#[path = "../tests/engine/harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::Net;

fn main() {
    // Fan-outs to run: numbers given as arguments (`-- 100`), else 10 and 100. Cargo passes
    // `--bench` too, which is not a number and ignored.
    let mut fanouts: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    if fanouts.is_empty() {
        fanouts = vec![10, 100];
    }
    for subscribers in fanouts {
        let mut net = Net::new(1);
        let publisher = net.add_client("pub", 0);
        let subs: Vec<usize> = (0..subscribers)
            .map(|i| net.add_client(&format!("s{i}"), 0))
            .collect();
        let tracks = net.publish(publisher);
        for &s in &subs {
            net.create_subscriber(s);
            net.subscribe_all(s, tracks);
        }
        net.connect_all();
        net.run_for(Duration::from_millis(200));

        let before = net.engines[0].stats().packets_forwarded;
        net.engine_busy = Duration::ZERO;
        steady_state(&mut net, publisher);
        let forwarded = net.engines[0].stats().packets_forwarded - before;
        let busy = net.engine_busy;
        println!(
            "1→{subscribers}: {forwarded} packets forwarded, engine busy {:.1} ms, {:.2} µs per forwarded packet",
            busy.as_secs_f64() * 1e3,
            busy.as_secs_f64() * 1e6 / forwarded.max(1) as f64
        );
    }
}

/// 10 s of media: audio every 20 ms, a video packet every 10 ms, a keyframe every 2 s.
/// A function of its own so that a profiler can collect only this part
/// (`valgrind --tool=callgrind --toggle-collect='engine_fanout::steady_state'`).
#[inline(never)]
fn steady_state(net: &mut Net, publisher: usize) {
    for i in 0..500u32 {
        net.send_audio(publisher);
        net.send_video(publisher, i % 100 == 0);
        net.step(Duration::from_millis(10));
        net.send_video(publisher, false);
        net.step(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(200));
}
