//! Data message frames (core/data.rs) as a client sends them: whatever reads as a send frame
//! becomes a deliver frame, stamped with the sender, that reads back as the same message,
//! and crosses the relay's wire form whole. A deliver frame (what a client reads) is read
//! without a panic too.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sfumato_core::data::{self, DataPacket};
use sfumato_core::{wire, MemberId, PipeMsg};

fuzz_target!(|bytes: &[u8]| {
    let _ = data::parse_deliver(bytes);
    let Ok(msg) = data::parse_send(bytes) else {
        return;
    };
    let pkt = DataPacket::read("room".into(), MemberId(42), bytes).expect("a send frame is read");
    assert_eq!(&*pkt.to, msg.to.as_slice());
    assert_eq!(pkt.reliable, msg.flags & data::RELIABLE != 0);
    let d = data::parse_deliver(&pkt.frame).expect("its deliver frame reads back");
    assert_eq!(
        (d.flags, d.seq, d.from, d.topic, d.payload),
        (msg.flags, msg.seq, "p42", msg.topic, msg.payload)
    );
    let clock = sfumato_fuzz::clock();
    let piped = PipeMsg::Data(Arc::new(pkt));
    let mut out = Vec::new();
    wire::encode(&piped, &clock, &mut out).expect("a data message encodes");
    let back = wire::decode(&out, &clock).expect("and decodes");
    assert_eq!(
        format!("{back:?}"),
        format!("{piped:?}"),
        "it crosses whole"
    );
});
