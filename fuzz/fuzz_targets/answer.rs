//! The rewriting of our answer to a publisher after its offer (video codec order, Opus
//! DTX): offer and answer are both cut from the input at its first NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfumato_core::answer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (offer, answer) = text.split_once('\0').unwrap_or((text, text));
    let _ = answer::for_publisher(offer, answer);
});
