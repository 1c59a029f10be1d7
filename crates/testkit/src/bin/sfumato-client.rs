//! `sfumato-client`: publish the looped VP8 + Opus fixture over WHIP (optionally as three
//! simulcast layers), or play over WHEP.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sfumato_testkit::{
    whep_play, whip_publish, whip_publish_simulcast, HttpSession, Kind, LayerCounts,
};

#[derive(Parser, Debug)]
#[command(
    name = "sfumato-client",
    about = "A str0m-based WHIP/WHEP test client for Sfumato"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish looped VP8 video + Opus audio with WHIP, then DELETE the session.
    Whip {
        /// WHIP endpoint, e.g. http://127.0.0.1:8080/whip/room1
        #[arg(long)]
        url: String,
        /// How long to publish.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Send the video as three simulcast layers (rids q, h, f: 320x180, 640x360 and
        /// 1280x720, each its own VP8 stream).
        #[arg(long)]
        simulcast: bool,
    },
    /// Play with WHEP and print the packets received, then DELETE the session.
    Whep {
        /// WHEP endpoint, e.g. http://127.0.0.1:8080/whep/room1
        #[arg(long)]
        url: String,
        /// How long to play.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Print every packet, not only a summary per second.
        #[arg(long)]
        verbose: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Whip {
            url,
            duration_secs,
            simulcast,
        } => {
            let s = if simulcast {
                whip_publish_simulcast(&url).await?
            } else {
                whip_publish(&url).await?
            };
            println!("whip: session {}", s.location());
            let secs = run(&s, duration_secs, false).await?;
            let c = s.peer().counts();
            println!(
                "whip: sent {} audio, {} video packets ({} frames); {} keyframe requests",
                c.sent_audio, c.sent_video, c.sent_video_frames, c.keyframe_requests
            );
            for l in &c.sent_layers {
                println!("whip: {}", layer_summary(l, secs));
            }
            let status = s.close().await?;
            println!("whip: DELETE -> {status}");
        }
        Cmd::Whep {
            url,
            duration_secs,
            verbose,
        } => {
            let s = whep_play(&url).await?;
            println!("whep: session {}", s.location());
            run(&s, duration_secs, verbose).await?;
            let c = s.peer().counts();
            println!(
                "whep: received {} audio, {} video packets",
                c.received_audio, c.received_video
            );
            let status = s.close().await?;
            println!("whep: DELETE -> {status}");
        }
    }
    Ok(())
}

/// One simulcast layer's totals, with its mean bitrate over `secs` of sending.
fn layer_summary(l: &LayerCounts, secs: f64) -> String {
    let kbps = if secs > 0.0 {
        l.bytes as f64 * 8.0 / secs / 1000.0
    } else {
        0.0
    };
    format!(
        "layer {} {}x{} ssrc={}: {} packets, {} frames ({} key), {kbps:.0} kbit/s; {} keyframe requests",
        l.rid, l.width, l.height, l.ssrc, l.packets, l.frames, l.keyframes, l.keyframe_requests
    )
}

/// Waits for the connection, then prints counters every second for `secs` seconds. Returns
/// the seconds spent connected.
async fn run(s: &HttpSession, secs: u64, verbose: bool) -> anyhow::Result<f64> {
    s.peer()
        .wait_connected(Duration::from_secs(10))
        .await
        .context("ICE/DTLS")?;
    println!("connected");
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut printed = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < end {
        tick.tick().await;
        if verbose {
            let r = s.peer().received();
            for p in &r[printed..] {
                println!(
                    "rx mid={} kind={:?} ssrc={} pt={} seq={} ts={} marker={} len={}",
                    p.mid.as_deref().unwrap_or("?"),
                    p.kind,
                    p.ssrc,
                    p.pt,
                    p.seq,
                    p.timestamp,
                    p.marker,
                    p.payload.len()
                );
            }
            printed = r.len();
        }
        let c = s.peer().counts();
        let layers: String = c
            .sent_layers
            .iter()
            .map(|l| format!(" {}={}", l.rid, l.packets))
            .collect();
        println!(
            "t={:>3}s sent audio={} video={}{layers} received audio={} video={}",
            start.elapsed().as_secs(),
            c.sent_audio,
            c.sent_video,
            s.peer().received_count(Kind::Audio),
            s.peer().received_count(Kind::Video)
        );
    }
    Ok(start.elapsed().as_secs_f64())
}
