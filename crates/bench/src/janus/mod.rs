//! Janus VideoRoom as a benchmark target: [`JanusServer`] runs Debian's `janus` (installing it
//! with apt-get if needed) with a minimal generated configuration, pinned to a CPU, on an
//! address of its own whose traffic goes through loopback like Sfumato's; [`JanusClient`]
//! drives its HTTP API (sessions, the VideoRoom plugin, JSEP, long-polled events).
//!
//! Typical use (root and a private network namespace needed):
//!
//! ```no_run
//! # async fn demo(offer: String) -> anyhow::Result<()> {
//! use sfumato_bench::janus::{JanusClient, JanusOptions, JanusServer};
//! let server = JanusServer::start(JanusOptions { cpu: Some(0), ..Default::default() }).await?;
//! let janus = JanusClient::connect(server.base_url()).await?;
//! janus.create_room(1).await?;
//! // Peers of the generator bind `server.client_ip()` (not 127.0.0.1).
//! let published = janus.publish(1, "p1", &offer).await?;
//! let (sub_offer, sub) = janus.subscribe(1, published.feed_id).await?;
//! # let answer = sub_offer; sub.answer(&answer).await?;
//! # Ok(()) }
//! ```
//!
//! Why an address of its own and not 127.0.0.1: see [`server`].

mod client;
mod config;
pub mod server;

pub use client::{
    JanusClient, PluginEvent, PluginHandle, Published, PublisherHandle, RoomOptions,
    SubscriberHandle, VIDEOROOM,
};
pub use config::JanusConfig;
pub use server::{JanusOptions, JanusServer};
