//! `sfumato-testkit`: an in-process WebRTC client for Sfumato's integration tests and tools.
//!
//! Built on str0m in RTP mode. Every peer connection ([`Peer`]) owns one UDP socket on
//! 127.0.0.1 and a driving thread that follows str0m's rule (drain `poll_output` after every
//! mutation). Peers record every RTP payload they send and receive.
//!
//! - [`whip_publish`] / [`whip_publish_simulcast`] / [`whep_play`]: WHIP and WHEP sessions
//!   ([`HttpSession`]).
//! - [`Participant`]: the WebSocket signaling protocol of `docs/protocol.md`, with a publish
//!   PC and an automatically answered subscribe PC.
//! - [`media`]: IVF and Ogg/Opus parsing, RFC 7741 VP8 packetization, paced looping sources
//!   over the committed fixtures (VP8 320x240 test pattern at 30 fps, three simulcast layers
//!   of it at 320x180, 640x360 and 1280x720, Opus at 50 packets/s).
//! - [`check`]: payload identity and sequence continuity checks over recordings.
//! - [`TestServer`]: spawns the real `sfumato` binary on fresh loopback ports ([`sfumato_bin`]
//!   finds or builds it for tests outside the server's crate), alone or as a node of a
//!   cluster ([`ServerOptions::cluster`]) coordinated through a throwaway [`Redis`].
//! - [`tls`]: HTTPS and WSS to a server whose certificate's fingerprint the test trusts
//!   ([`ServerOptions::tls`] starts one with `--tls-self-signed`).
//! - [`garbage`]: malformed STUN/DTLS/RTP/RTCP datagrams for robustness tests.

pub mod check;
pub mod garbage;
pub mod http;
pub mod media;
pub mod peer;
pub mod redis_server;
pub mod rtc_util;
pub mod server;
pub mod tls;
pub mod wait;
pub mod ws;

pub use check::{compare_payloads, seq_discontinuities, Compare, Comparison};
pub use http::{
    http_delete, http_get, http_get_json, http_get_with, http_post, http_post_with, whep_play,
    whep_play_with_token, whip_publish, whip_publish_simulcast, whip_publish_with_token,
    HttpResponse, HttpSession,
};
pub use peer::{
    AudioPayload, Kind, LayerCounts, OfferSpec, Peer, PeerCounts, PeerOptions, PeerStatus,
    ReceivedPacket, SentPacket,
};
pub use redis_server::Redis;
pub use rtc_util::{negotiated_pt, random_u64};
pub use server::{sfumato_bin, ServerOptions, TestServer};
pub use wait::{poll_for, poll_until};
pub use ws::{msg_type, Participant, PublishedTrack, SubscribedTrack};

/// Installs str0m's crypto provider (aws-lc-rs) as the process default, and rustls's
/// aws-lc-rs provider as its process default (reqwest is built with rustls but no provider
/// of its own: a `reqwest::Client` built without `use_preconfigured_tls` needs it), once.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        str0m::crypto::from_feature_flags().install_process_default();
        // Err: another provider is already installed, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
