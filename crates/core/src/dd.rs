//! AV1's dependency descriptor (the RTP header extension of the AV1 RTP specification,
//! appendix A): what a scalable AV1 stream says of each packet's layers, read once at the
//! origin for `svc` (and for `temporal`: Chromium describes its VP8 temporal layers here
//! too), and the extension itself, registered with str0m so that it is
//! negotiated, read from publishers and written to subscribers unchanged
//! ([`DdExtension`]).
//!
//! Each packet names a frame template; the templates' spatial and temporal ids come in a
//! template structure that the publisher attaches to keyframes. The origin keeps the latest
//! structure per stream ([`Templates`]) and turns each packet into an [`SvcLayer`].

use str0m::rtp::{ExtensionSerializer, ExtensionValues};

use crate::svc::SvcLayer;
use crate::temporal::ALL_TEMPORAL;

/// The extension's URI.
pub const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Most templates a structure may hold (template ids are 6 bits).
const MAX_TEMPLATES: usize = 64;

/// A packet's dependency descriptor as received, forwarded byte for byte. str0m keeps it
/// behind an `Arc` (its user extension map), which the packet shares with every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdBytes(pub Box<[u8]>);

/// The str0m serializer of the extension: raw bytes in, the same bytes out.
#[derive(Debug)]
pub struct DdExtension;

impl ExtensionSerializer for DdExtension {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DdBytes>() {
            Some(DdBytes(b)) if b.len() <= buf.len() => {
                buf[..b.len()].copy_from_slice(b);
                b.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        if buf.len() < 3 {
            return false;
        }
        ev.user_values.set(DdBytes(Box::from(buf)));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        // The one-byte form carries at most 16 bytes; a template structure takes more.
        ev.user_values
            .get::<DdBytes>()
            .is_some_and(|DdBytes(b)| b.len() > 16)
    }
}

/// MSB-first bit reader over untrusted bytes; every read past the end is `None`.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = byte >> (7 - self.pos % 8) & 1 == 1;
        self.pos += 1;
        Some(b)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = v << 1 | u32::from(self.bit()?);
        }
        Some(v)
    }
}

/// The spatial and temporal id of each frame template of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    /// The template id of `layers[0]`.
    offset: u8,
    /// (spatial, temporal) per template, in template order.
    layers: Vec<(u8, u8)>,
    /// Spatial layers of the stream (the highest template spatial id + 1).
    spatial_layers: u8,
}

impl Templates {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one packet's descriptor: the structure it carries, if any, replaces the one
    /// kept; the packet's layer is then looked up. `None`: malformed, or a template that no
    /// structure seen so far defines.
    pub fn read(&mut self, dd: &[u8]) -> Option<SvcLayer> {
        let mut r = Bits { data: dd, pos: 0 };
        let begin = r.bit()?;
        let end = r.bit()?;
        let template_id = r.bits(6)? as u8;
        let _frame_number = r.bits(16)?;
        let mut announced = None;
        if dd.len() > 3 {
            let structure_present = r.bit()?;
            // active_decode_targets_present, custom_dtis, custom_fdiffs, custom_chains.
            r.bits(4)?;
            if structure_present {
                self.read_structure(&mut r)?;
                announced = Some(self.spatial_layers);
            }
        }
        let index = usize::from(template_id.wrapping_sub(self.offset) % MAX_TEMPLATES as u8);
        let &(spatial, temporal) = self.layers.get(index)?;
        Some(SvcLayer {
            spatial,
            temporal,
            // The base layer's frames are where every temporal layer may start again: in
            // the `LxTy` modes browsers send, a frame above the base refers to nothing
            // before the latest base frame.
            switch_up: if temporal == 0 { ALL_TEMPORAL } else { 0 },
            begin,
            end,
            spatial_layers: announced,
        })
    }

    /// `template_dependency_structure()` as far as the template layers; what follows
    /// (decode target indications, frame diffs, chains, resolutions) is not needed to
    /// select layers.
    fn read_structure(&mut self, r: &mut Bits) -> Option<()> {
        let offset = r.bits(6)? as u8;
        let _decode_targets = r.bits(5)? + 1;
        let mut layers = Vec::with_capacity(self.layers.capacity().max(9));
        let (mut spatial, mut temporal) = (0u8, 0u8);
        loop {
            if layers.len() == MAX_TEMPLATES {
                return None;
            }
            layers.push((spatial, temporal));
            match r.bits(2)? {
                0 => {}
                1 => temporal = temporal.checked_add(1)?,
                2 => {
                    temporal = 0;
                    spatial = spatial.checked_add(1)?;
                }
                _ => break,
            }
        }
        self.offset = offset;
        self.spatial_layers = spatial + 1;
        self.layers = layers;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MSB-first bit writer for building descriptors.
    #[derive(Default)]
    struct Writer {
        bits: Vec<bool>,
    }

    impl Writer {
        fn put(&mut self, v: u32, n: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push(v >> i & 1 == 1);
            }
            self
        }

        fn bytes(&self) -> Vec<u8> {
            self.bits
                .chunks(8)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0u8, |b, (i, &x)| b | u8::from(x) << (7 - i))
                })
                .collect()
        }
    }

    /// A keyframe descriptor with an L3T3 structure (offset `offset`): templates
    /// S0T0 S0T1 S0T2, S1T0 S1T1 S1T2, S2T0 S2T1 S2T2; then some trailing fields.
    fn with_structure(offset: u32, template: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, 1).put(0, 1).put(template, 6).put(1000, 16);
        w.put(1, 1).put(0, 4); // structure present; no other flags
        w.put(offset, 6).put(8, 5); // 9 decode targets
        for s in 0..3 {
            w.put(1, 2).put(1, 2); // T0 -> T1 -> T2
            w.put(if s < 2 { 2 } else { 3 }, 2); // next spatial layer, or the end
        }
        w.put(0xabcd, 16); // what follows is not read
        w.bytes()
    }

    fn plain(template: u32, begin: bool, end: bool) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(u32::from(begin), 1)
            .put(u32::from(end), 1)
            .put(template, 6)
            .put(7, 16);
        w.bytes()
    }

    #[test]
    fn a_structure_names_each_templates_layers() {
        let mut t = Templates::new();
        let key = t.read(&with_structure(60, 60)).expect("a keyframe packet");
        assert_eq!(
            (key.spatial, key.temporal, key.begin, key.end),
            (0, 0, true, false)
        );
        assert_eq!(key.spatial_layers, Some(3));
        // Template ids wrap: offset 60, so template 0 is index 4 (S1T1), 4 is index 8 (S2T2).
        assert_eq!(
            key.switch_up, ALL_TEMPORAL,
            "a base frame opens every layer"
        );
        let l = t.read(&plain(0, true, true)).expect("known template");
        assert_eq!((l.spatial, l.temporal, l.spatial_layers), (1, 1, None));
        assert_eq!(l.switch_up, 0);
        let l = t.read(&plain(4, false, true)).expect("known template");
        assert_eq!((l.spatial, l.temporal, l.begin, l.end), (2, 2, false, true));
        assert_eq!(
            t.read(&plain(5, true, true)),
            None,
            "index 9: no such template"
        );
    }

    #[test]
    fn without_a_structure_nothing_is_known() {
        assert_eq!(Templates::new().read(&plain(0, true, true)), None);
    }

    #[test]
    fn malformed_input_is_none_and_keeps_the_structure() {
        let mut t = Templates::new();
        t.read(&with_structure(0, 0)).expect("a structure");
        let full = with_structure(0, 0);
        for len in [0, 1, 2, 4, 5] {
            assert_eq!(t.read(&full[..len]), None, "length {len}");
        }
        // Endless templates (next_layer_idc never 3) are refused.
        let mut w = Writer::default();
        w.put(1, 1)
            .put(1, 1)
            .put(0, 6)
            .put(0, 16)
            .put(1, 1)
            .put(0, 4)
            .put(0, 6)
            .put(0, 5);
        for _ in 0..70 {
            w.put(0, 2);
        }
        assert_eq!(t.read(&w.bytes()), None);
        assert_eq!(
            t.read(&plain(8, true, true)).map(|l| l.spatial),
            Some(2),
            "kept"
        );
    }

    #[test]
    fn the_extension_passes_bytes_through() {
        let mut ev = ExtensionValues::default();
        assert!(!DdExtension.parse_value(&[1, 2], &mut ev), "too short");
        let long: Vec<u8> = (0..20).collect();
        assert!(DdExtension.parse_value(&long, &mut ev));
        assert!(DdExtension.requires_two_byte_form(&ev));
        let mut buf = [0u8; 32];
        assert_eq!(DdExtension.write_to(&mut buf, &ev), 20);
        assert_eq!(&buf[..20], &long[..]);
        assert_eq!(DdExtension.write_to(&mut buf[..10], &ev), 0, "no room");
    }
}
