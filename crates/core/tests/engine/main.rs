//! The engine's scenario tests, one story per module, all on the virtual network of
//! `harness` (worker engines and str0m clients on a virtual clock). One test binary rather
//! than one per story: each would link the engine and str0m again.
//!
//! `cargo test -p sfumato-core --test engine` runs them all; `-- simulcast::` one story.

mod harness;

mod audio_levels;
mod counters;
mod data_messages;
mod downlink;
mod fuzz_seeds;
mod keyframes;
mod nack;
mod pipe_fanout;
mod publisher_leaves;
mod reconcile;
mod red;
mod relay;
mod routing;
mod simulcast;
mod svc;
mod timers;
mod untrusted_input;
mod wire_pipes;
