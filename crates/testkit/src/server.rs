//! Spawning a real `sfumato` server process for integration tests.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use serde_json::Value;

use crate::http::{http_get, http_get_with};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--workers`.
    pub workers: usize,
    /// `--placement` (`spread`, …), if any.
    pub placement: Option<String>,
    /// In a cluster: `--redis URL`, with `--public-url` this server's URL and `--relay-port`
    /// the UDP port after the workers'.
    pub redis: Option<String>,
    /// More arguments.
    pub extra_args: Vec<String>,
    /// How long to wait for `/healthz`.
    pub startup_timeout: Duration,
    /// An access token with the `admin` grant, sent by the helpers that read the admin API
    /// (for a server started with API keys).
    pub admin_token: Option<String>,
    /// HTTPS and WSS with `--tls-self-signed`; the testkit's clients trust that certificate
    /// (its fingerprint, read from the start log line).
    pub tls: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            placement: Some("spread".into()),
            redis: None,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            admin_token: None,
            tls: false,
        }
    }
}

impl ServerOptions {
    /// `workers` workers with `--placement spread`.
    pub fn spread(workers: usize) -> Self {
        Self {
            workers,
            ..Default::default()
        }
    }

    /// `workers` workers with `--placement spread`, a node of the cluster coordinated
    /// through the Redis at `redis_url`.
    pub fn cluster(workers: usize, redis_url: &str) -> Self {
        Self {
            workers,
            redis: Some(redis_url.to_string()),
            ..Default::default()
        }
    }
}

/// The `sfumato` binary, for tests outside the server's crate (only that crate's tests get
/// `CARGO_BIN_EXE_sfumato`): `$SFUMATO_BIN` if set; otherwise built with
/// `cargo build --workspace --bin sfumato` (the features of a plain `cargo build`, so its
/// artifacts are shared) into the target directory and profile of the running test
/// executable (`<target>/<profile>/deps/<test>`), once per process, so it is never stale.
pub fn sfumato_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build_sfumato().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_build_sfumato() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SFUMATO_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .with_context(|| format!("{} has no parent", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => bail!("no profile in {}", profile_dir.display()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--workspace", "--bin", "sfumato"])
        .arg("--profile")
        .arg(profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    ensure!(
        status.success(),
        "cargo build --workspace --bin sfumato --profile {profile}: {status}"
    );
    let bin = profile_dir.join(format!("sfumato{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        bin.is_file(),
        "{} missing after the build (set SFUMATO_BIN)",
        bin.display()
    );
    Ok(bin)
}

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// Finds a free TCP port and `udp` consecutive free UDP ports on 127.0.0.1. Ports are handed
/// out in blocks of 16 from a per-process start so that tests running in parallel in one
/// process never get the same ports.
pub fn allocate_ports(udp: usize) -> anyhow::Result<(u16, u16)> {
    let start = 20_000 + (std::process::id() % 1000) * 16 * 2;
    for _ in 0..500 {
        let block = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
        let base = start + block * 16;
        if base + 16 >= 60_000 {
            break;
        }
        let http = base as u16;
        let rtc = http + 1;
        let tcp_ok = TcpListener::bind(("127.0.0.1", http)).is_ok();
        let udp_ok = (0..udp as u16).all(|i| UdpSocket::bind(("127.0.0.1", rtc + i)).is_ok());
        if tcp_ok && udp_ok {
            return Ok((http, rtc));
        }
    }
    bail!("no free ports found")
}

/// A running `sfumato` process, killed on drop. Its stdout and stderr are kept in memory and
/// printed (the last lines) if the test panics.
pub struct TestServer {
    child: Child,
    /// HTTP port (`--listen 127.0.0.1:PORT`).
    pub http_port: u16,
    /// First worker's UDP port (`--rtc-port`); worker `i` listens on `rtc_port + i`.
    pub rtc_port: u16,
    /// Number of workers.
    pub workers: usize,
    /// In a cluster: the relay's UDP port (`--relay-port`).
    pub relay_port: Option<u16>,
    /// Sent with the admin API requests of the helpers ([`ServerOptions::admin_token`]).
    pub admin_token: Option<String>,
    /// Serves HTTPS and WSS ([`ServerOptions::tls`]).
    pub tls: bool,
    logs: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("http_port", &self.http_port)
            .field("rtc_port", &self.rtc_port)
            .field("workers", &self.workers)
            .field("relay_port", &self.relay_port)
            .finish()
    }
}

impl TestServer {
    /// Starts `bin` (`env!("CARGO_BIN_EXE_sfumato")`) on fresh ports with
    /// `--listen 127.0.0.1:HTTP --rtc-port RTC --workers N [--placement P]` (and in a
    /// cluster `--redis URL --public-url http://127.0.0.1:HTTP --relay-port RTC+N`; https
    /// and `--tls-self-signed` with [`ServerOptions::tls`]) and waits for `GET /healthz` to
    /// answer 200.
    pub async fn start(bin: &str, opts: ServerOptions) -> anyhow::Result<Self> {
        let relay = usize::from(opts.redis.is_some());
        let (http_port, rtc_port) = allocate_ports(opts.workers.max(1) + relay)?;
        let relay_port = opts
            .redis
            .as_ref()
            .map(|_| rtc_port + opts.workers.max(1) as u16);
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--rtc-port")
            .arg(rtc_port.to_string())
            .arg("--workers")
            .arg(opts.workers.to_string());
        if let Some(p) = &opts.placement {
            cmd.arg("--placement").arg(p);
        }
        let scheme = if opts.tls { "https" } else { "http" };
        if opts.tls {
            cmd.arg("--tls-self-signed");
        }
        if let (Some(redis), Some(relay_port)) = (&opts.redis, relay_port) {
            cmd.arg("--redis")
                .arg(redis)
                .arg("--public-url")
                .arg(format!("{scheme}://127.0.0.1:{http_port}"))
                .arg("--relay-port")
                .arg(relay_port.to_string());
        }
        cmd.args(&opts.extra_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {bin} {:?}", cmd.get_args().collect::<Vec<_>>()))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let logs = logs.clone();
            std::thread::spawn(move || collect(out, logs));
        }
        if let Some(err) = child.stderr.take() {
            let logs = logs.clone();
            std::thread::spawn(move || collect(err, logs));
        }
        let mut server = Self {
            child,
            http_port,
            rtc_port,
            workers: opts.workers,
            relay_port,
            admin_token: opts.admin_token.clone(),
            tls: opts.tls,
            logs,
        };
        let mut trusted = !opts.tls;
        let url = server.url("/healthz");
        let deadline = std::time::Instant::now() + opts.startup_timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "sfumato exited during startup ({status}); output:\n{}",
                    server.logs().join("\n")
                );
            }
            if !trusted {
                if let Some(fingerprint) = server.logs().iter().find_map(|l| fingerprint_in(l)) {
                    crate::tls::trust(&fingerprint);
                    trusted = true;
                }
            }
            if trusted {
                if let Ok(r) = http_get(&url).await {
                    if r.status == 200 {
                        return Ok(server);
                    }
                }
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "sfumato did not answer GET /healthz within {:?}; output:\n{}",
                    opts.startup_timeout,
                    server.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT{path}` (`https` with TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.http_port)
    }

    /// `ws://127.0.0.1:PORT/ws` (`wss` with TLS).
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/ws", self.http_port)
    }

    /// The UDP address of every worker (`rtc_port + i`).
    pub fn worker_addrs(&self) -> Vec<SocketAddr> {
        (0..self.workers)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], self.rtc_port + i as u16)))
            .collect()
    }

    /// Everything the server printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// In a cluster: the relay's UDP address.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay_port
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    /// Kills the process with SIGKILL (no clean exit: in a cluster its lease stays until it
    /// expires) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(http_get(&self.url("/healthz")).await, Ok(r) if r.status == 200)
    }

    /// `GET /api/workers` as a list of per-worker objects (accepts a bare array or an object
    /// with a `workers` array).
    pub async fn workers_stats(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.admin_json("/api/workers").await?;
        match v {
            Value::Array(a) => Ok(a),
            Value::Object(ref o) => match o.get("workers") {
                Some(Value::Array(a)) => Ok(a.clone()),
                _ => bail!("GET /api/workers: unexpected shape {v}"),
            },
            _ => bail!("GET /api/workers: unexpected shape {v}"),
        }
    }

    /// `GET /api/nodes`.
    pub async fn nodes(&self) -> anyhow::Result<Value> {
        self.admin_json("/api/nodes").await
    }

    /// `GET path` of the admin API (with [`TestServer::admin_token`]), expecting `200` and
    /// JSON.
    pub async fn admin_json(&self, path: &str) -> anyhow::Result<Value> {
        let r = http_get_with(&self.url(path), self.admin_token.as_deref()).await?;
        if r.status != 200 {
            bail!("GET {path}: status {} body {:?}", r.status, r.body);
        }
        r.json()
    }

    /// `GET /api/rooms/{room}` (`None` on 404).
    pub async fn room(&self, room: &str) -> anyhow::Result<Option<Value>> {
        let r = http_get_with(
            &self.url(&format!("/api/rooms/{room}")),
            self.admin_token.as_deref(),
        )
        .await?;
        match r.status {
            200 => Ok(Some(r.json()?)),
            404 => Ok(None),
            s => bail!("GET /api/rooms/{room}: status {s} {:?}", r.body),
        }
    }

    /// `GET /metrics` (with [`TestServer::admin_token`]): the unlabelled series, by name.
    pub async fn node_gauges(&self) -> anyhow::Result<Vec<(String, f64)>> {
        let r = http_get_with(&self.url("/metrics"), self.admin_token.as_deref()).await?;
        if r.status != 200 {
            bail!("GET /metrics: status {} body {:?}", r.status, r.body);
        }
        Ok(unlabelled_series(&r.body))
    }

    /// Waits until every worker reports zero of each of [`IDLE_WORKER_GAUGES`] (and
    /// `addresses`, if reported), the relay worker of a cluster node included, and the
    /// control plane zero of each of [`IDLE_NODE_GAUGES`] in `/metrics`; on timeout the
    /// error carries the last reports.
    pub async fn wait_workers_idle(&self, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut last;
        loop {
            match (self.workers_stats().await, self.node_gauges().await) {
                (Ok(w), Ok(node)) => {
                    // `addresses` (5-tuples the demux knows) is checked too when reported.
                    let expected = self.workers + usize::from(self.relay_port.is_some());
                    let workers_idle = w.len() == expected
                        && w.iter().all(|s| {
                            IDLE_WORKER_GAUGES
                                .iter()
                                .all(|f| s.get(*f).and_then(Value::as_u64) == Some(0))
                                && s.get("addresses").is_none_or(|a| a.as_u64() == Some(0))
                        });
                    let held: Vec<&(String, f64)> = node
                        .iter()
                        .filter(|(n, _)| IDLE_NODE_GAUGES.contains(&n.as_str()))
                        .collect();
                    let node_idle =
                        held.len() == IDLE_NODE_GAUGES.len() && held.iter().all(|(_, v)| *v == 0.0);
                    if workers_idle && node_idle {
                        return Ok(w);
                    }
                    last = format!(
                        "GET /api/workers: {}; /metrics: {held:?}",
                        serde_json::to_string(&w).unwrap_or_default()
                    );
                }
                (Err(e), _) | (_, Err(e)) => last = format!("error: {e:#}"),
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "workers not idle within {timeout:?} (expected {} workers with {:?} all 0, \
                     and {:?} 0 in /metrics); last {last}",
                    self.workers + usize::from(self.relay_port.is_some()),
                    IDLE_WORKER_GAUGES,
                    IDLE_NODE_GAUGES,
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The gauges of `GET /api/workers` that are 0 on an idle worker.
pub const IDLE_WORKER_GAUGES: [&str; 10] = [
    "peers",
    "tracks",
    "subscriptions",
    "sinks",
    "pending_keyframe_requests",
    "ufrags",
    "routes",
    "timers",
    "data_members",
    "data_rooms",
];

/// The node gauges of `/metrics` that are 0 once every participant and WHIP/WHEP session
/// has gone.
pub const IDLE_NODE_GAUGES: [&str; 6] = [
    "sfumato_peers",
    "sfumato_tracks",
    "sfumato_whip_sessions",
    "sfumato_topology_peers",
    "sfumato_topology_tracks",
    "sfumato_topology_data_members",
];

/// `name value` lines of a Prometheus text exposition (no labels, no comments).
pub fn unlabelled_series(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The certificate fingerprint of the start log line (`… SHA-256 fingerprint AB:CD:…`).
fn fingerprint_in(line: &str) -> Option<String> {
    const MARK: &str = "SHA-256 fingerprint ";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let fp: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == ':')
        .collect();
    (fp.len() == 32 * 3 - 1).then_some(fp)
}

fn collect(r: impl std::io::Read, logs: Arc<Mutex<Vec<String>>>) {
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        let mut l = logs.lock().unwrap_or_else(PoisonError::into_inner);
        if l.len() < 200_000 {
            l.push(line);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = self.logs();
            let from = logs.len().saturating_sub(80);
            eprintln!(
                "---- sfumato output (last {} of {} lines) ----",
                logs.len() - from,
                logs.len()
            );
            for l in &logs[from..] {
                eprintln!("{l}");
            }
            eprintln!("---- end of sfumato output ----");
        }
    }
}
