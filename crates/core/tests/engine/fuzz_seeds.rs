//! Writes the binary part of fuzz/'s seed corpus from the harness's media: payloads of every
//! codec the engine parses, dependency descriptors, and pipe messages in their wire form.
//! Run by hand when the formats change (the files are committed):
//!
//!     cargo test --release -p sfumato-core --test engine fuzz_seeds -- --ignored
//!
//! The other targets' seeds (text, and the structured inputs of `link` and `engine`) are
//! committed as written or as the fuzzer minimised them (docs/operations.md, "Fuzzing").

use crate::harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::{
    av1_payload, dependency_descriptor, payload, simulcast_payload, svc_payload, Net, SvcCodec,
};
use sfumato_core::{Kind, PeerId};
use str0m::media::MediaKind;

fn corpus(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(name), bytes).expect("seed written");
}

/// Pieces as `sfumato_fuzz::pieces` cuts them: a length byte before each.
fn pieces(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.push(p.len().min(255) as u8);
        out.extend_from_slice(&p[..p.len().min(255)]);
    }
    out
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    let peer = PeerId(7);
    write(
        "payload",
        "vp8-key",
        &payload(MediaKind::Video, true, peer, 1),
    );
    write(
        "payload",
        "vp8-delta",
        &payload(MediaKind::Video, false, peer, 2),
    );
    write(
        "payload",
        "opus",
        &payload(MediaKind::Audio, false, peer, 3),
    );
    for layer in 0..3 {
        let p = simulcast_payload(layer, layer == 0, 300, 4, 5);
        write("payload", &format!("vp8-simulcast-{layer}"), &p);
    }
    for spatial in 0..3 {
        let ss = (spatial == 0).then_some(3);
        let p = svc_payload(spatial, spatial == 0, 1000, 9, ss, 6);
        write("payload", &format!("vp9-svc-{spatial}"), &p);
        write(
            "payload",
            &format!("av1-{spatial}"),
            &av1_payload(spatial, spatial == 0, 7, 8),
        );
    }
    // H264: an IDR as a single NAL unit, a STAP-A with SPS and PPS, an FU-A start of an IDR.
    write("payload", "h264-idr", &[0x65, 0x88, 0x80, 0x10]);
    write(
        "payload",
        "h264-stap-a",
        &[0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 2, 0x68, 0xce],
    );
    write("payload", "h264-fu-a", &[0x7c, 0x85, 0x88, 0x80]);
    // RED: one redundant block (pt 111, 5 bytes) then the primary.
    write(
        "payload",
        "red",
        &[0xef, 0x03, 0xc0, 0x05, 0x6f, 1, 2, 3, 4, 5, 9, 9, 9],
    );

    write(
        "dd",
        "structure-then-frames",
        &pieces(&[
            dependency_descriptor(0, 1, Some(3)),
            dependency_descriptor(1, 1, None),
            dependency_descriptor(2, 1, None),
            dependency_descriptor(0, 2, None),
        ]),
    );
    write(
        "dd",
        "two-structures",
        &pieces(&[
            dependency_descriptor(0, 1, Some(2)),
            dependency_descriptor(1, 1, None),
            dependency_descriptor(0, 5, Some(3)),
            dependency_descriptor(2, 5, None),
        ]),
    );

    // Pipe messages of a simulcast publisher, a scalable one and RED audio, across workers.
    let mut net = Net::new(2);
    net.wire_pipes = true;
    net.wire_log = Some(Vec::new());
    let alice = net.add_client_with_red("alice", 0);
    let carol = net.add_client("carol", 0);
    let bob = net.add_client("bob", 1);
    let simulcast = net.publish_simulcast(alice);
    let svc = net.publish(carol);
    net.create_subscriber(bob);
    net.subscribe(bob, simulcast.video, Kind::Video, 0);
    net.subscribe(bob, simulcast.audio, Kind::Audio, 0);
    net.subscribe(bob, svc.video, Kind::Video, 0);
    net.connect_all();
    for f in 0..20 {
        for l in 0..3 {
            net.send_layer(alice, l, f == 0);
        }
        net.send_audio(alice);
        net.send_svc_picture(carol, SvcCodec::Vp9, 3, f == 0);
        if f == 10 {
            net.set_layer(bob, simulcast.video, Some(0));
        }
        net.step(Duration::from_millis(33));
    }
    let log = net.wire_log.take().unwrap_or_default();
    assert!(log.len() > 20, "{} pipe messages", log.len());
    // Every kind of message, and a sample of the media.
    let mut kinds = std::collections::HashSet::new();
    for (i, bytes) in log.iter().enumerate() {
        let kind = bytes.first().copied().unwrap_or(0);
        if kinds.insert(kind) || i % 25 == 0 {
            write("wire", &format!("msg-{i:03}"), bytes);
        }
    }
}
