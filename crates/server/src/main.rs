//! The `sfumato` binary: reads the configuration, starts the media workers, serves the
//! control plane (signaling, WHIP/WHEP, API, metrics, demo page), and shuts down cleanly on
//! SIGINT or SIGTERM.

mod config;
mod http;
mod ids;
mod placement;
mod rooms;
mod signaling;
mod speaker;
mod topology;
mod whip;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::{delete, get, post};
use axum::Router;
use clap::Parser;
use sfumato_worker::{Pool, PoolConfig, Report};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Config};
use crate::placement::Placement;
use crate::rooms::State;
use crate::topology::LocalTopology;

/// How often every worker is sent the plan of what it should hold.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub pool: Arc<Pool>,
    state: Arc<Mutex<State>>,
    /// Flips to true when the server shuts down; open sockets close.
    pub shutdown: watch::Receiver<bool>,
}

impl App {
    /// The control plane's state; never hold the guard across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(Cli::parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (pool, mut deliveries) = Pool::start(&PoolConfig {
        workers: config.workers,
        bind_ip: config.bind_ip(),
        announce_ip: config.announce_ip,
        base_port: config.rtc_port,
        bandwidth_estimation: config.bandwidth_estimation,
    })?;
    let pool = Arc::new(pool);
    let placement = Placement::new(config.placement, config.workers, config.worker_capacity);
    let topology = Box::new(LocalTopology::new(pool.clone()));
    let ids = ids::Ids::new(ids::Ids::random_tag());
    let state = Arc::new(Mutex::new(State::new(topology, placement, ids)));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let app = App {
        pool: pool.clone(),
        state: state.clone(),
        shutdown: shutdown_rx,
    };

    // Worker events are applied in order; a reply is resolved after the events before it.
    let events_app = app.clone();
    tokio::spawn(async move {
        while let Some(d) = deliveries.recv().await {
            if let Some(Report::Event(worker, event)) = d.resolve() {
                events_app.state().on_event(worker, event);
            }
        }
    });

    // Repairs what a lost command to a worker left different (Command::Reconcile).
    let reconcile_app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reconcile_app.state().reconcile();
        }
    });

    let router = Router::new()
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .route("/api/rooms", get(http::rooms))
        .route("/api/rooms/{room}", get(http::room))
        .route("/api/workers", get(http::workers))
        .route("/ws", get(signaling::upgrade))
        .route("/whip/{room}", post(whip::whip_post))
        .route("/whip/{room}/{session}", delete(whip::whip_delete))
        .route("/whep/{room}", post(whip::whep_post_first))
        .route("/whep/{room}/{participant}", post(whip::whep_post_chosen))
        .route("/whep/{room}/session/{session}", delete(whip::whep_delete))
        .fallback(get(http::asset))
        .layer(axum::extract::DefaultBodyLimit::max(whip::MAX_BODY))
        .with_state(app);

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        listen = %config.listen,
        workers = config.workers,
        rtc_ports = %format!("{}-{}", config.rtc_port, config.rtc_port as usize + config.workers - 1),
        announce_ip = %config.announce_ip,
        placement = ?config.placement,
        "sfumato is up: open http://{}/?room=demo&name=alice",
        config.listen
    );
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    server.await?;
    // Sessions have ended (their sockets closed above); stop the media plane.
    let deadline = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || pool.shutdown()),
    );
    if deadline.await.is_err() {
        tracing::warn!("workers did not stop within 5 s");
    }
    tracing::info!("bye");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
