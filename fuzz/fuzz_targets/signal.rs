//! Signaling: a text frame from a client read as the server reads it (envelope, then the
//! message), and the outline of an SDP that the limits bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(envelope) = sfumato_signal::envelope(text) {
        let _ = envelope.kind();
        let _ = envelope.needs_join();
        let _ = envelope.parse();
    }
    let shape = sfumato_signal::sdp_shape(text);
    assert!(shape.sending <= shape.mlines);
});
