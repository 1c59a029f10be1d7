//! Running Debian's Janus in a network namespace of its own, on a veth pair the benchmark
//! creates.
//!
//! Why a namespace: Janus 1.1 skips loopback interfaces when it enumerates local addresses for
//! ICE, whatever `ice_enforce_list` says. Measured here: with Janus confined to loopback, a
//! publisher's `configure` fails with `490 Error setting ICE locally` and the log says
//! `janus_ice_setup_local: Error gathering candidates`. So Janus gets an address of its own:
//!
//! ```text
//!  root namespace (generator)            namespace sfbench-janus-<pid>-<n> (Janus)
//!  sfbj<pid>x<n>  10.99.0.2/24  <── veth ──>  jveth0  10.99.0.1/24
//! ```
//!
//! Janus sees only `lo` and `jveth0`, gathers exactly one host candidate (10.99.0.1) and binds
//! its HTTP API there. The generator stays in the namespace it runs in (no `setns` of a
//! multi-threaded process) and binds its sockets to [`JanusServer::client_ip`]. A veth hop
//! costs about what loopback does (both are a softirq on the same host); the Sfumato side of
//! a benchmark stays on 127.0.0.1.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::config::JanusConfig;

/// Where Debian's package puts things.
const DEFAULT_BINARY: &str = "/usr/bin/janus";
const PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus/plugins";
const TRANSPORT_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus/transports";
/// Prefix of the namespaces this module creates (stale ones are removed on start).
const NETNS_PREFIX: &str = "sfbench-janus-";
/// The veth end inside Janus' namespace.
const INNER_IF: &str = "jveth0";

/// Options of [`JanusServer::start`].
#[derive(Debug, Clone)]
pub struct JanusOptions {
    /// Pin Janus to this CPU (`taskset -c`); `None`: no pinning.
    pub cpu: Option<usize>,
    /// Janus' address on the veth pair (inside its namespace).
    pub janus_ip: Ipv4Addr,
    /// The generator's address on the other end (in the caller's namespace).
    pub client_ip: Ipv4Addr,
    /// HTTP API port (on `janus_ip`).
    pub http_port: u16,
    /// RTP/ICE port range.
    pub rtp_ports: (u16, u16),
    /// Janus log level (0–7; 2 = errors only, 4 = Janus' default).
    pub debug_level: u8,
    /// ICE-lite mode.
    pub ice_lite: bool,
    /// Janus' `event_loops` (`None`: its default, one thread per handle).
    pub event_loops: Option<u32>,
    /// The Janus binary; installed with apt-get when it is the default and missing.
    pub binary: PathBuf,
    /// Run `apt-get update && apt-get install -y janus` when the binary is missing.
    pub install: bool,
    /// How long to wait for the HTTP API to answer.
    pub start_timeout: Duration,
}

impl Default for JanusOptions {
    fn default() -> Self {
        Self {
            cpu: None,
            janus_ip: Ipv4Addr::new(10, 99, 0, 1),
            client_ip: Ipv4Addr::new(10, 99, 0, 2),
            http_port: 8088,
            rtp_ports: (40000, 49999),
            debug_level: 2,
            ice_lite: true,
            event_loops: None,
            binary: PathBuf::from(DEFAULT_BINARY),
            install: true,
            start_timeout: Duration::from_secs(20),
        }
    }
}

/// A running Janus (VideoRoom + HTTP transport) in its own network namespace. Dropping it
/// kills Janus, removes the namespace and the veth pair, and deletes the temp dir.
#[derive(Debug)]
pub struct JanusServer {
    child: Option<Child>,
    pid: u32,
    netns: String,
    outer_if: String,
    dir: PathBuf,
    base_url: String,
    janus_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl JanusServer {
    /// Installs Janus if needed, writes the configs, sets up the namespace and veth pair,
    /// starts Janus (pinned if asked) and waits until its HTTP API answers. Needs root.
    pub async fn start(opts: JanusOptions) -> anyhow::Result<JanusServer> {
        ensure_installed(&opts).await?;
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let netns = format!("{NETNS_PREFIX}{pid}-{n}");
        // Interface names are at most 15 bytes: "sfbj" + pid (≤ 7 digits) + "x" + n.
        let outer_if = format!("sfbj{pid}x{}", n % 100);
        let dir = std::env::temp_dir().join(format!("sfumato-bench-janus-{pid}-{n}"));

        remove_stale_namespaces().await;
        // Build the value first so that Drop cleans whatever part of the setup succeeded.
        let mut server = JanusServer {
            child: None,
            pid: 0,
            netns,
            outer_if,
            dir,
            base_url: format!("http://{}:{}/janus", opts.janus_ip, opts.http_port),
            janus_ip: opts.janus_ip,
            client_ip: opts.client_ip,
        };
        server.write_configs(&opts)?;
        server.setup_network().await?;
        server.spawn(&opts)?;
        server.wait_ready(opts.start_timeout).await?;
        Ok(server)
    }

    /// Janus' process id (for `/proc/<pid>/stat` CPU and `/proc/<pid>/status` memory).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The HTTP API base URL, e.g. `http://10.99.0.1:8088/janus`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Janus' address (its only ICE candidate).
    pub fn janus_ip(&self) -> Ipv4Addr {
        self.janus_ip
    }

    /// The address the generator's sockets must bind to (the root-side veth end): packets
    /// from 127.0.0.1 cannot reach Janus.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.client_ip
    }

    /// The network namespace Janus runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Janus' log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("janus.log")
    }

    /// The last `lines` lines of Janus' log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// Whether the Janus process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn write_configs(&self, opts: &JanusOptions) -> anyhow::Result<()> {
        let cfg = JanusConfig {
            ip: opts.janus_ip,
            http_port: opts.http_port,
            rtp_ports: opts.rtp_ports,
            debug_level: opts.debug_level,
            ice_lite: opts.ice_lite,
            event_loops: opts.event_loops,
            session_timeout: 60,
        };
        let d = &self.dir;
        for sub in ["plugins", "transports", "empty"] {
            fs::create_dir_all(d.join(sub))
                .with_context(|| format!("creating {}", d.join(sub).display()))?;
        }
        symlink(
            &Path::new(PLUGIN_DIR).join("libjanus_videoroom.so"),
            &d.join("plugins/libjanus_videoroom.so"),
        )?;
        symlink(
            &Path::new(TRANSPORT_DIR).join("libjanus_http.so"),
            &d.join("transports/libjanus_http.so"),
        )?;
        let files = [
            ("janus.jcfg", cfg.core(d)),
            ("janus.transport.http.jcfg", cfg.http()),
            ("janus.plugin.videoroom.jcfg", cfg.videoroom()),
        ];
        for (name, text) in files {
            fs::write(d.join(name), text)
                .with_context(|| format!("writing {}", d.join(name).display()))?;
        }
        Ok(())
    }

    async fn setup_network(&self) -> anyhow::Result<()> {
        let ns = self.netns.as_str();
        let outer = self.outer_if.as_str();
        let janus_cidr = format!("{}/24", self.janus_ip);
        let client_cidr = format!("{}/24", self.client_ip);
        if address_in_use(self.client_ip).await {
            bail!(
                "{} is already assigned to an interface here; another Janus benchmark running? \
                 (choose other addresses in JanusOptions)",
                self.client_ip
            );
        }
        run("ip", &["netns", "add", ns]).await?;
        run(
            "ip",
            &[
                "link", "add", outer, "type", "veth", "peer", "name", INNER_IF, "netns", ns,
            ],
        )
        .await?;
        run("ip", &["addr", "add", &client_cidr, "dev", outer]).await?;
        run("ip", &["link", "set", outer, "up"]).await?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
        run(
            "ip",
            &["-n", ns, "addr", "add", &janus_cidr, "dev", INNER_IF],
        )
        .await?;
        run("ip", &["-n", ns, "link", "set", INNER_IF, "up"]).await?;
        // The carrier comes up through the kernel's link watcher, up to a second later, and
        // Janus skips interfaces that are not running (its HTTP transport then fails to bind).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let inner = link_running(Some(ns), INNER_IF).await;
            let outer = link_running(None, outer).await;
            if inner && outer {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the veth pair {outer}/{INNER_IF} did not come up within 5 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(&mut self, opts: &JanusOptions) -> anyhow::Result<()> {
        let log = fs::File::create(self.log_path()).context("creating janus.log")?;
        let log2 = log.try_clone().context("cloning the log handle")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]);
        // `ip netns exec` and `taskset` both exec, so the child's pid is Janus' pid.
        if let Some(cpu) = opts.cpu {
            cmd.arg("taskset").arg("-c").arg(cpu.to_string());
        }
        cmd.arg(&opts.binary)
            .arg("-F")
            .arg(&self.dir)
            .arg("-C")
            .arg(self.dir.join("janus.jcfg"))
            .arg("-o")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.binary.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building the HTTP client")?;
        let url = format!("{}/info", self.base_url);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "janus exited during start-up ({status}); its log ends with:\n{}",
                        self.log_tail(30)
                    );
                }
            }
            let last = match http.get(&url).send().await {
                Ok(resp) => match resp.json::<serde_json::Value>().await {
                    Ok(v) if v.get("janus").and_then(|j| j.as_str()) == Some("server_info") => {
                        return Ok(())
                    }
                    Ok(v) => format!("unexpected reply {v}"),
                    Err(e) => format!("unreadable reply: {e}"),
                },
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "janus' HTTP API at {url} did not answer within {timeout:?} ({last}); its \
                     log ends with:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting one veth end deletes both; the namespace goes with its last process.
        let _ = quiet("ip", &["link", "del", &self.outer_if]);
        let _ = quiet("ip", &["netns", "del", &self.netns]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

async fn ensure_installed(opts: &JanusOptions) -> anyhow::Result<()> {
    if opts.binary.exists() {
        return Ok(());
    }
    if !opts.install || opts.binary != Path::new(DEFAULT_BINARY) {
        bail!("{} is missing", opts.binary.display());
    }
    tracing::info!("installing Debian's janus package (apt-get)");
    run("apt-get", &["update"]).await?;
    let out = tokio::process::Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "janus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .await
        .context("running apt-get install janus")?;
    if !out.status.success() {
        bail!(
            "apt-get install janus failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !opts.binary.exists() {
        bail!(
            "apt-get installed janus but {} is missing",
            opts.binary.display()
        );
    }
    Ok(())
}

/// Removes namespaces (and their veth pairs) left behind by benchmark processes that died
/// without cleaning up.
async fn remove_stale_namespaces() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("removing stale namespace {name}");
            // Kill whatever still runs in it (a Janus orphaned by a killed benchmark).
            if let Ok(out) = tokio::process::Command::new("ip")
                .args(["netns", "pids", &name])
                .output()
                .await
            {
                for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if p.parse::<u32>().is_ok() {
                        let _ = run("kill", &["-9", p]).await;
                    }
                }
            }
            let _ = run("ip", &["netns", "del", &name]).await;
        }
    }
}

/// Whether `dev` (in namespace `ns`, else the current one) is up with a carrier.
async fn link_running(ns: Option<&str>, dev: &str) -> bool {
    let mut cmd = tokio::process::Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    match cmd.args(["-o", "link", "show", "dev", dev]).output().await {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            out.status.success() && text.contains("LOWER_UP") && !text.contains("NO-CARRIER")
        }
        Err(_) => false,
    }
}

async fn address_in_use(ip: Ipv4Addr) -> bool {
    match tokio::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .await
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(&ip.to_string())),
        Err(_) => false,
    }
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program} (is it installed? are we root?)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn quiet(program: &str, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    if !target.exists() {
        bail!(
            "{} is missing (is Debian's janus installed?)",
            target.display()
        );
    }
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
