//! Running Debian's Janus next to the generator, on the same loopback path as Sfumato.
//!
//! Janus 1.1 skips loopback interfaces when it enumerates local addresses for ICE, whatever
//! `ice_enforce_list` says. Measured here: with Janus confined to loopback, a publisher's
//! `configure` fails with `490 Error setting ICE locally` and the log says
//! `janus_ice_setup_local: Error gathering candidates`. So Janus gets an address of its own
//! (10.99.0.1/32) on a link that is not loopback: a `dummy` link where the kernel has that
//! driver, else a veth pair whose two ends both stay in this namespace. Janus gathers exactly
//! that host candidate and binds its HTTP API there; the generator binds its sockets to the
//! same address ([`JanusServer::client_ip`]). Packets between two local addresses never
//! touch the link that holds them: the kernel routes them through `lo` (`ip route get
//! 10.99.0.1` says `local ... dev lo`), so Janus' traffic takes the same path as Sfumato's on
//! 127.0.0.1.
//!
//! Adding a link and an address changes the network namespace the benchmark runs in, so
//! [`JanusServer::start`] refuses to unless that namespace is a private one (only `lo`, as
//! after `unshare --net`): benchmarks run there anyway (docs/benchmarks.md).

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
/// Prefix of the links this module creates.
const LINK_PREFIX: &str = "sfbj";

/// Options of [`JanusServer::start`].
#[derive(Debug, Clone)]
pub struct JanusOptions {
    /// Pin Janus to this CPU (`taskset -c`); `None`: no pinning.
    pub cpu: Option<usize>,
    /// Janus' address (its only ICE candidate and its HTTP API), also the one the
    /// generator's sockets bind to.
    pub ip: Ipv4Addr,
    /// HTTP API port (on `ip`).
    pub http_port: u16,
    /// RTP/ICE port range: below the kernel's ephemeral ports (32768–60999), which the
    /// generator's sockets on the same address take.
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
            ip: Ipv4Addr::new(10, 99, 0, 1),
            http_port: 8088,
            rtp_ports: (20000, 27999),
            debug_level: 2,
            ice_lite: true,
            event_loops: None,
            binary: PathBuf::from(DEFAULT_BINARY),
            install: true,
            start_timeout: Duration::from_secs(20),
        }
    }
}

/// A running Janus (VideoRoom + HTTP transport) with an address of its own. Dropping it kills
/// Janus, removes the link that holds its address, and deletes the temp dir.
#[derive(Debug)]
pub struct JanusServer {
    child: Option<Child>,
    pid: u32,
    link: String,
    link_kind: &'static str,
    dir: PathBuf,
    base_url: String,
    ip: Ipv4Addr,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl JanusServer {
    /// Installs Janus if needed, writes the configs, gives it its address, starts it (pinned
    /// if asked) and waits until its HTTP API answers. Needs root and a private network
    /// namespace (see the module's documentation).
    pub async fn start(opts: JanusOptions) -> anyhow::Result<JanusServer> {
        install_if_missing(&opts).await?;
        ensure_private_namespace()?;
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes: "sfbj" + pid (≤ 7 digits) + "x" + n.
        let link = format!("{LINK_PREFIX}{pid}x{}", n % 100);
        let dir = std::env::temp_dir().join(format!("sfumato-bench-janus-{pid}-{n}"));

        // Build the value first so that Drop cleans whatever part of the setup succeeded.
        let mut server = JanusServer {
            child: None,
            pid: 0,
            link,
            link_kind: "",
            dir,
            base_url: format!("http://{}:{}/janus", opts.ip, opts.http_port),
            ip: opts.ip,
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
        self.ip
    }

    /// The address the generator's sockets bind to: Janus' own, so that both ends of every
    /// connection are local addresses and their packets go through `lo`.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The link that holds Janus' address, and its kind (`dummy` or `veth`).
    pub fn link(&self) -> (&str, &str) {
        (&self.link, self.link_kind)
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
            ip: opts.ip,
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

    /// Puts Janus' address on a link of its own: `dummy` if the kernel has it, else a veth
    /// pair with both ends here (no packet crosses either: local traffic goes through `lo`).
    async fn setup_network(&mut self) -> anyhow::Result<()> {
        if address_in_use(self.ip).await {
            bail!(
                "{} is already assigned to an interface here; another Janus benchmark running? \
                 (choose another address in JanusOptions)",
                self.ip
            );
        }
        let link = self.link.clone();
        let peer = format!("{link}p");
        self.link_kind = match run("ip", &["link", "add", &link, "type", "dummy"]).await {
            Ok(()) => "dummy",
            Err(dummy) => {
                tracing::debug!("no dummy link ({dummy:#}); a veth pair instead");
                run(
                    "ip",
                    &["link", "add", &link, "type", "veth", "peer", "name", &peer],
                )
                .await
                .with_context(|| format!("no dummy link either: {dummy:#}"))?;
                run("ip", &["link", "set", &peer, "up"]).await?;
                "veth"
            }
        };
        run(
            "ip",
            &["addr", "add", &format!("{}/32", self.ip), "dev", &link],
        )
        .await?;
        run("ip", &["link", "set", &link, "up"]).await?;
        // The carrier comes up through the kernel's link watcher, up to a second later, and
        // Janus skips interfaces that are not running (its HTTP transport then fails to bind).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !link_running(&link).await {
            if Instant::now() >= deadline {
                bail!(
                    "the {} link {link} did not come up within 5 s",
                    self.link_kind
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn spawn(&mut self, opts: &JanusOptions) -> anyhow::Result<()> {
        let log = fs::File::create(self.log_path()).context("creating janus.log")?;
        let log2 = log.try_clone().context("cloning the log handle")?;
        // `taskset` execs, so the child's pid is Janus' pid.
        let mut cmd = match opts.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&opts.binary);
                c
            }
            None => Command::new(&opts.binary),
        };
        cmd.arg("-F")
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
        // Deleting one veth end deletes both.
        let _ = quiet("ip", &["link", "del", &self.link]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Installs Debian's `janus` with apt-get when `opts.binary` is its default and missing.
pub async fn install_if_missing(opts: &JanusOptions) -> anyhow::Result<()> {
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

/// Whether the current network namespace is a private one: no link but `lo` (and links of
/// this module), as after `unshare --net`.
pub fn in_private_namespace() -> anyhow::Result<bool> {
    Ok(links_here()?.is_empty())
}

fn ensure_private_namespace() -> anyhow::Result<()> {
    let others = links_here()?;
    if !others.is_empty() {
        bail!(
            "Janus gets an address of its own next to loopback, so it runs only in a private \
             network namespace, and this one has {}: run the benchmark under \
             `unshare --net sh -c 'ip link set lo up && ...'` (docs/benchmarks.md)",
            others.join(", ")
        );
    }
    Ok(())
}

/// The links of the current namespace other than `lo` and this module's own.
fn links_here() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .stdin(Stdio::null())
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip -o link show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(foreign_links(&String::from_utf8_lossy(&out.stdout)))
}

/// The links of an `ip -o link show` listing other than `lo` and this module's own.
fn foreign_links(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|name| {
            name.trim()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|name| !name.is_empty() && name != "lo" && !name.starts_with(LINK_PREFIX))
        .collect()
}

/// Whether `dev` is up with a carrier.
async fn link_running(dev: &str) -> bool {
    match tokio::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", dev])
        .output()
        .await
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_namespace_has_only_loopback_and_our_links() {
        let private = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n\
                       5: sfbj1234x0: <BROADCAST,NOARP,UP,LOWER_UP> mtu 1500 state UNKNOWN\n\
                       6: sfbj1234x1p@sfbj1234x1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n";
        assert!(foreign_links(private).is_empty());
        let host = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\n\
                    2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n\
                    3: veth9@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n";
        assert_eq!(foreign_links(host), ["eth0", "veth9"]);
    }
}
