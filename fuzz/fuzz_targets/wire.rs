//! The relay's wire form of a pipe message: whatever decodes encodes again, and that
//! encoding is stable (decode then encode gives the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfumato_core::wire;

fuzz_target!(|data: &[u8]| {
    let clock = sfumato_fuzz::clock();
    let Ok(msg) = wire::decode(data, &clock) else {
        return;
    };
    let mut once = Vec::new();
    if wire::encode(&msg, &clock, &mut once).is_err() {
        return;
    }
    let again = wire::decode(&once, &clock).expect("what encode wrote decodes");
    let mut twice = Vec::new();
    wire::encode(&again, &clock, &mut twice).expect("and encodes again");
    assert_eq!(once, twice, "the wire form is stable");
});
