//! Integration tests: the real `sfumato` binary, driven by `sfumato-testkit` clients over
//! loopback. Tests in this binary run one at a time (see `common::serial`): each starts its
//! own server (or cluster of servers and a Redis) on its own ports.

mod bad_input;
mod cleanup;
mod cluster;
mod common;
mod data;
mod forwarding;
mod limits;
mod observability;
mod selective;
mod tls;
mod tokens;
mod whip_whep;
