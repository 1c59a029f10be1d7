//! What idle peers cost a worker's turn: an engine holding N peers that have nothing to do
//! (subscribing peers created at join, before anything to receive) runs turns in which none
//! of them is due, as a busy worker does for every batch of its active peers' packets.
//!
//! cargo bench -p sfumato-core --bench engine_idle [-- <idle peers>...]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfumato_core::{Command, Engine, PeerId, WorkerId};

/// Turns measured per run.
const TURNS: u32 = 10_000;

fn main() {
    // Peer counts to run: numbers given as arguments (`-- 1000`), else 10, 100 and 1,000.
    let mut counts: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    if counts.is_empty() {
        counts = vec![10, 100, 1000];
    }
    for n in counts {
        let addr: SocketAddr = ([127, 0, 0, 1], 5000).into();
        let mut engine = Engine::new(WorkerId(0), addr);
        let mut now = Instant::now();
        for i in 0..n {
            engine.handle_command(
                now,
                Command::CreateSubscriber {
                    peer: PeerId(i + 1),
                },
            );
        }
        // Settle: every peer has run its first passes and waits for its next timer.
        let end = now + Duration::from_secs(5);
        while now < end {
            now = engine.poll_timeout(now).min(end);
            turn(&mut engine, now);
        }
        let start = Instant::now();
        let next = turns(&mut engine, now);
        let took = start.elapsed();
        println!(
            "{n} idle peers: {:.0} ns per turn with nothing due (next timer in {:?})",
            took.as_secs_f64() * 1e9 / f64::from(TURNS),
            next.saturating_duration_since(now)
        );
    }
}

/// [`TURNS`] turns at one instant: after the first, no peer is due. A function of its own
/// so that a profiler can collect only this part
/// (`valgrind --tool=callgrind --toggle-collect='engine_idle::turns'`).
#[inline(never)]
fn turns(engine: &mut Engine, now: Instant) -> Instant {
    let mut next = now;
    for _ in 0..TURNS {
        next = turn(engine, now);
    }
    next
}

/// One turn of the worker loop with no input: the timeout pass, the drain, the next wait.
fn turn(engine: &mut Engine, now: Instant) -> Instant {
    engine.handle_timeout(now);
    while engine.poll_output().is_some() {}
    engine.poll_timeout(now)
}
