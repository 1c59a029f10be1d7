//! The AV1 dependency descriptor: a stream of descriptors read by one `Templates`, as a
//! subscription reads a track's packets (a structure in one, templates in the next).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfumato_core::dd::Templates;

fuzz_target!(|data: &[u8]| {
    let mut templates = Templates::new();
    for dd in sfumato_fuzz::pieces(data) {
        if let Some(l) = templates.read(dd) {
            let _ = l.picture_start();
        }
    }
});
