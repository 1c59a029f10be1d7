//! Story: the control plane's commands are fire-and-forget, and one can be lost (a full
//! worker queue). A periodic plan of what each worker should hold repairs whatever a lost
//! command left different, counts the repair, and changes nothing when nothing was lost.

use crate::harness;

use std::time::Duration;

use harness::{Net, Published};
use sfumato_core::api::DEFAULT_LAYER;
use sfumato_core::{Command, Kind, PeerId, Plan, Subscription, TrackId, WorkerId};
use str0m::media::MediaKind;

/// What the control plane wants after alice (worker 0) published and bob (worker `bob_on`)
/// subscribed to her video and audio.
fn plans(alice: PeerId, bob: PeerId, bob_on: usize, tracks: Published) -> Vec<Plan> {
    let sub = |track: TrackId, kind| Subscription {
        peer: bob,
        track,
        kind,
        origin: WorkerId(0),
        layer: Some(DEFAULT_LAYER),
        priority: 0,
    };
    let mut plans = vec![Plan::default(), Plan::default()];
    plans[0].peers.push(alice);
    let b = &mut plans[bob_on];
    b.peers.push(bob);
    b.subscribers.push(bob);
    b.subscriptions = vec![
        sub(tracks.audio, Kind::Audio),
        sub(tracks.video, Kind::Video),
    ];
    if bob_on != 0 {
        plans[0].sinks = vec![
            (tracks.audio, WorkerId(bob_on as u16)),
            (tracks.video, WorkerId(bob_on as u16)),
        ];
    }
    plans
}

fn reconcile(net: &mut Net, plans: &[Plan]) {
    for (w, plan) in plans.iter().enumerate() {
        net.command(w, Command::Reconcile(plan.clone()));
    }
}

fn repairs(net: &Net) -> u64 {
    net.engines.iter().map(|e| e.stats().repairs).sum()
}

fn video_received(net: &Net, c: usize) -> usize {
    net.client(c).received_payloads(MediaKind::Video).len()
}

fn send_frames(net: &mut Net, c: usize, n: usize) {
    net.send_video(c, true);
    net.step(Duration::from_millis(33));
    for _ in 1..n {
        net.send_video(c, false);
        net.step(Duration::from_millis(33));
    }
}

#[test]
fn a_plan_that_matches_changes_nothing() {
    let mut net = Net::new(2);
    let (alice, bob, tracks) = net.alice_to_bob(0, 1);
    send_frames(&mut net, alice, 10);
    let before = video_received(&net, bob);
    assert!(before > 0, "bob receives alice's video");

    let plans = plans(net.client(alice).peer, net.client(bob).peer, 1, tracks);
    reconcile(&mut net, &plans);
    send_frames(&mut net, alice, 10);
    assert_eq!(repairs(&net), 0);
    assert!(video_received(&net, bob) >= before + 9, "media still flows");
}

/// The Subscribe to bob's worker and the AddSink to the origin were both lost: bob gets
/// nothing until the plan arrives, then alice's media.
#[test]
fn lost_subscribe_and_sink_commands_are_repaired() {
    let mut net = Net::new(2);
    let alice = net.add_client("alice", 0);
    let bob = net.add_client("bob", 1);
    let tracks = net.publish(alice);
    net.create_subscriber(bob);
    net.connect(&[alice]);
    send_frames(&mut net, alice, 5);
    assert_eq!(video_received(&net, bob), 0);

    let plans = plans(net.client(alice).peer, net.client(bob).peer, 1, tracks);
    reconcile(&mut net, &plans);
    assert_eq!(repairs(&net), 4, "two subscriptions and two sinks");
    net.connect(&[bob]);
    send_frames(&mut net, alice, 10);
    assert!(video_received(&net, bob) > 0, "bob receives alice's video");
    assert_eq!(net.engines[0].stats().sinks, 2);

    // Reconciling again finds nothing to repair.
    reconcile(&mut net, &plans);
    assert_eq!(repairs(&net), 4);
}

/// The control plane let bob go (he left) but its Unsubscribe, RemoveSink and ClosePeer
/// commands were lost: the plan without him removes his peer, subscriptions and sinks.
#[test]
fn lost_unsubscribe_and_close_commands_are_repaired() {
    let mut net = Net::new(2);
    let (alice, bob, tracks) = net.alice_to_bob(0, 1);
    send_frames(&mut net, alice, 5);

    let mut plans = plans(net.client(alice).peer, net.client(bob).peer, 1, tracks);
    plans[1] = Plan::default();
    plans[0].sinks.clear();
    reconcile(&mut net, &plans);
    net.run_for(Duration::from_millis(100));
    let (origin, sink) = (net.engines[0].stats(), net.engines[1].stats());
    assert_eq!((origin.sinks, sink.peers, sink.subscriptions), (0, 0, 0));
    assert_eq!(
        repairs(&net),
        3,
        "one peer (its subscriptions go with it), two sinks"
    );
}

/// A plan built before the control plane heard that bob's peer closed does not bring it
/// back, and a lost Unsubscribe of one track leaves the other subscription alone.
#[test]
fn a_plan_crossing_a_closed_peer_does_not_revive_it() {
    let mut net = Net::new(1);
    let (alice, bob, tracks) = net.alice_to_bob(0, 0);
    let bob_peer = net.client(bob).peer;

    // Only the audio is planned now: the video's Unsubscribe was lost.
    let mut plans = plans(net.client(alice).peer, bob_peer, 0, tracks);
    plans.truncate(1);
    plans[0].subscriptions.retain(|s| s.track == tracks.audio);
    reconcile(&mut net, &plans);
    assert_eq!(repairs(&net), 1);
    assert_eq!(net.engines[0].stats().subscriptions, 1);

    net.command(0, Command::ClosePeer { peer: bob_peer });
    reconcile(&mut net, &plans);
    assert_eq!(net.engines[0].stats().peers, 1, "only alice");
    assert_eq!(repairs(&net), 1);
}

/// Alice leaves; a plan built before the control plane heard of it still lists bob's
/// subscriptions to her tracks on the other worker. The origin told that worker the tracks
/// ended (through the pipe), so nothing comes back and nothing counts as a repair.
#[test]
fn a_plan_crossing_an_ended_track_does_not_bring_it_back() {
    let mut net = Net::new(2);
    let (alice, bob, tracks) = net.alice_to_bob(0, 1);
    send_frames(&mut net, alice, 5);
    let plans = plans(net.client(alice).peer, net.client(bob).peer, 1, tracks);

    net.command(
        0,
        Command::ClosePeer {
            peer: net.client(alice).peer,
        },
    );
    assert_eq!(
        net.engines[1].stats().subscriptions,
        0,
        "bob let go of alice's tracks without the control plane"
    );
    reconcile(&mut net, &plans);
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.engines[1].stats().subscriptions, 0);
    assert_eq!(repairs(&net), 0);
}

/// Bob asked for alice's lowest layer, then alice left and carol published: bob's freed
/// m-line carries carol's video, which starts at the default layer (the control plane sends
/// a layer only when it differs from a new subscription's), so the plan of a control plane
/// that never heard of alice's layer finds nothing to repair.
#[test]
fn a_reused_slot_starts_as_a_new_subscription() {
    let mut net = Net::new(1);
    let (alice, bob, a) = net.alice_to_bob(0, 0);
    net.set_layer(bob, a.video, Some(0));
    send_frames(&mut net, alice, 5);

    net.command(
        0,
        Command::ClosePeer {
            peer: net.client(alice).peer,
        },
    );
    net.run_for(Duration::from_millis(200));
    let carol = net.add_client("carol", 0);
    let c = net.publish(carol);
    net.subscribe_all(bob, c);
    net.connect(&[carol]);
    send_frames(&mut net, carol, 5);
    assert!(video_received(&net, bob) > 0, "bob receives video");

    let bob_peer = net.client(bob).peer;
    let carol_peer = net.client(carol).peer;
    let sub = |track: TrackId, kind| Subscription {
        peer: bob_peer,
        track,
        kind,
        origin: WorkerId(0),
        layer: Some(DEFAULT_LAYER),
        priority: 0,
    };
    let plan = Plan {
        peers: vec![bob_peer, carol_peer],
        subscribers: vec![bob_peer],
        subscriptions: vec![sub(c.audio, Kind::Audio), sub(c.video, Kind::Video)],
        ..Plan::default()
    };
    reconcile(&mut net, &[plan]);
    assert_eq!(
        repairs(&net),
        0,
        "carol's video at bob starts at the default layer"
    );
}
