//! The `sfumato` binary: reads the configuration, starts the media workers, serves the
//! control plane (signaling, WHIP/WHEP, API, metrics, demo page), and shuts down cleanly on
//! SIGINT or SIGTERM.

mod auth;
mod cluster;
mod commands;
mod config;
mod dashboard;
mod events;
mod http;
mod ids;
mod limits;
mod members;
mod metrics;
mod outbound;
mod placement;
mod rooms;
mod signaling;
mod speaker;
#[cfg(test)]
mod supervision_tests;
mod tls;
mod topology;
mod whip;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::{delete, get, post};
use axum::Router;
use clap::Parser;
use sfumato_worker::{Delivery, Pool, PoolConfig, RelayConfig};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::EnvFilter;

use crate::auth::Auth;
use crate::cluster::topology::ClusterTopology;
use crate::config::{Cli, Command, Config, KeyCommand, TokenCommand};
use crate::events::EventTask;
use crate::limits::Limits;
use crate::placement::Placement;
use crate::rooms::State;
use crate::topology::{LocalTopology, Topology};

/// How often every worker is sent the plan of what it should hold.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub pool: Arc<Pool>,
    state: Arc<Mutex<State>>,
    /// The task that applies the workers' reports to `state`.
    pub events: Arc<EventTask>,
    /// Flips to true when the server shuts down; open sockets close.
    pub shutdown: watch::Receiver<bool>,
    /// In a cluster (`--redis`): this node's membership.
    pub cluster: Option<Arc<cluster::Node>>,
    /// The API keys that sign access tokens (none: development mode).
    pub auth: Arc<Auth>,
    /// What one client may ask of the node, and how often each limit was hit.
    pub limits: Arc<Limits>,
    /// The dashboard's latest data, refreshed every second (`dashboard`).
    pub dashboard: Arc<dashboard::Board>,
}

impl App {
    /// The control plane's state; never hold the guard across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn main() -> std::process::ExitCode {
    // The error alone, with its causes (no backtrace: a refusal to start is for users).
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let lines = match cli.command {
        None => return run_server(Config::load(cli.serve)?),
        Some(Command::Token(TokenCommand::Create(args))) => {
            commands::token_create(args, auth::now())?
        }
        Some(Command::Key(KeyCommand::Create)) => commands::key_create()?,
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn run_server(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let auth = Arc::new(Auth::new(&config.keys)?);
    // Before any worker starts or the cluster hears of this node: a bad certificate or key
    // stops the start with its reason alone.
    let certified = match &config.tls {
        Some(source) => Some(tls::Certified::load(
            source,
            config.listen,
            config.announce_ip,
        )?),
        None => None,
    };
    // In a cluster: a node id and the cluster key first (they name the ids and key the relay).
    let joined = match &config.cluster {
        Some(c) => Some(cluster::join(&c.redis, c.secret.as_deref()).await?),
        None => None,
    };
    let salt = {
        let mut s = [0u8; sfumato_worker::sfumato_core::link::KEY_LEN];
        getrandom::fill(&mut s)?;
        s
    };
    let relay = match (&config.cluster, &joined) {
        (Some(c), Some(j)) => Some(RelayConfig {
            port: c.relay_port,
            node: j.id,
            salt,
            key: j.key,
        }),
        _ => None,
    };
    let (pool, deliveries) = Pool::start(&PoolConfig {
        workers: config.workers,
        bind_ip: config.bind_ip(),
        announce_ip: config.announce_ip,
        base_port: config.rtc_port,
        bandwidth_estimation: config.bandwidth_estimation,
        data_rate: config.limits.data_rate,
        relay,
    })?;
    let pool = Arc::new(pool);
    let placement = Placement::new(config.placement, config.workers, config.worker_capacity);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let node = match (&config.cluster, joined, pool.relay()) {
        (Some(c), Some(j), Some(relay)) => {
            let me = cluster::members::NodeInfo {
                id: j.id.0,
                url: c.public_url.clone(),
                relay: pool
                    .addr(relay)
                    .ok_or_else(|| anyhow::anyhow!("the relay worker has no address"))?,
                salt: cluster::hex(&salt),
                version: env!("CARGO_PKG_VERSION").to_string(),
                state: cluster::members::NodeState::Serving,
                participants: 0,
                rooms: 0,
                capacity: config.workers * config.worker_capacity,
            };
            tracing::info!(node = %j.id, url = %me.url, relay = %me.relay, "joined the cluster");
            Some(cluster::Node::new(j, me, c.drain_timeout))
        }
        _ => None,
    };
    let (router, app) = control_plane(
        pool.clone(),
        deliveries,
        placement,
        shutdown_rx,
        node.clone(),
        auth.clone(),
        Arc::new(Limits::new(config.limits.clone())),
    );

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    // Where to point a browser: the announce address when listening everywhere.
    let open_at = if config.listen.ip().is_unspecified() {
        std::net::SocketAddr::new(config.announce_ip, config.listen.port())
    } else {
        config.listen
    };
    let scheme = if certified.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %config.listen,
        workers = config.workers,
        rtc_ports = %format!("{}-{}", config.rtc_port, config.rtc_port as usize + config.workers - 1),
        announce_ip = %config.announce_ip,
        placement = ?config.placement,
        tls = %tls_summary(config.tls.as_ref(), certified.as_ref()),
        "sfumato is up: open {scheme}://{open_at}/?room=demo&name=alice",
    );
    if !auth.is_open() {
        tracing::info!(
            keys = auth.key_count(),
            "access tokens required: every join, WHIP and WHEP session and admin request needs a token signed by an API key"
        );
    } else if config::is_loopback(config.listen.ip()) {
        tracing::warn!(
            "development mode: no API keys are configured, so anyone who reaches {} may join any room, publish and use the admin API; allowed on a loopback address only (`sfumato key create` and `sfumato token create` for tokens)",
            config.listen
        );
    } else {
        tracing::warn!(
            "--insecure-open: no API keys are configured and {} is not a loopback address: anyone who reaches it may join any room, publish and use the admin API",
            config.listen
        );
    }
    let drain_node = node.clone();
    let stop = async move {
        match &drain_node {
            // In a cluster, SIGTERM drains first (a second signal stops at once), and a drain
            // asked through the API ends the process too.
            Some(n) => {
                tokio::select! {
                    _ = wait_for_signal() => {
                        tracing::info!("signal: draining (a second signal stops at once)");
                        tokio::select! {
                            _ = n.drain(&app, n.drain_timeout) => {}
                            _ = wait_for_signal() => {}
                        }
                    }
                    _ = n.drained() => {}
                }
            }
            None => wait_for_signal().await,
        }
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    };
    match certified {
        Some(c) => tls::serve(listener, c.config, router, stop).await,
        None => {
            use axum::serve::ListenerExt;
            // Signaling and data messages are small writes that should leave at once:
            // without TCP_NODELAY, Nagle's algorithm holds one behind an unacknowledged
            // segment until the peer's delayed ACK (tens of ms; docs/benchmarks.md "Data
            // messages"). The TLS listener sets it too.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await?
        }
    }
    if let Some(node) = &node {
        node.leave().await;
    }
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

/// What the start log line says of TLS: off, or where the certificate comes from and its
/// SHA-256 fingerprint (for a self-signed one, what a browser shows to compare with).
fn tls_summary(source: Option<&tls::Source>, certified: Option<&tls::Certified>) -> String {
    match (source, certified) {
        (Some(tls::Source::SelfSigned), Some(c)) => format!(
            "self-signed for {}, SHA-256 fingerprint {}",
            c.names.join(" "),
            c.fingerprint
        ),
        (Some(tls::Source::Files { cert, .. }), Some(c)) => format!(
            "certificate {}, SHA-256 fingerprint {}",
            cert.display(),
            c.fingerprint
        ),
        _ => "off".to_string(),
    }
}

/// The control plane over running workers: its state, the task that applies the workers'
/// reports to it, and the HTTP routes.
fn control_plane(
    pool: Arc<Pool>,
    deliveries: mpsc::Receiver<Delivery>,
    placement: Placement,
    shutdown: watch::Receiver<bool>,
    node: Option<Arc<cluster::Node>>,
    auth: Arc<Auth>,
    limits: Arc<Limits>,
) -> (Router, App) {
    let local = LocalTopology::new(pool.clone());
    let topology: Box<dyn Topology> = match pool.relay() {
        Some(relay) => Box::new(ClusterTopology::new(local, relay)),
        None => Box::new(local),
    };
    let tag = node.as_ref().map_or_else(ids::Ids::random_tag, |n| n.id.0);
    let mut state = State::new(
        pool.clone(),
        topology,
        placement,
        ids::Ids::new(tag),
        limits.clone(),
    );
    let changed = node.as_ref().map(|n| {
        let (tx, rx) = mpsc::unbounded_channel();
        state.join_cluster(n.id, tx);
        rx
    });
    let app = App {
        pool,
        state: Arc::new(Mutex::new(state)),
        events: Arc::new(EventTask::default()),
        shutdown,
        cluster: node.clone(),
        auth,
        limits: limits.clone(),
        dashboard: Arc::default(),
    };
    events::spawn(app.clone(), deliveries);
    if let Some(data) = app.pool.take_data() {
        events::spawn_data(app.clone(), data);
    }
    dashboard::spawn(app.clone());
    if let (Some(node), Some(changed)) = (node, changed) {
        node.start(app.clone(), changed);
    }

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
        .route("/api/nodes", get(http::nodes))
        .route("/api/nodes/{id}/drain", post(http::drain))
        .route("/api/dashboard", get(dashboard::data))
        .route("/ws", get(signaling::upgrade))
        .route("/whip/{room}", post(whip::whip_post))
        .route("/whip/{room}/{session}", delete(whip::whip_delete))
        .route("/whep/{room}", post(whip::whep_post_first))
        .route("/whep/{room}/{participant}", post(whip::whep_post_chosen))
        .route("/whep/{room}/session/{session}", delete(whip::whep_delete))
        .fallback(get(http::asset))
        // Bodies are SDP (WHIP, WHEP): up to twice the limit, the SDP check refuses them
        // with its reason and counts them; beyond, the HTTP layer does.
        .layer(axum::extract::DefaultBodyLimit::max(
            limits.settings.sdp_bytes.saturating_mul(2),
        ))
        .with_state(app.clone());
    (router, app)
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
