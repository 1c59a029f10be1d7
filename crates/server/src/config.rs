//! The command line, the environment (SFUMATO_*) and the TOML config file, merged in that
//! order of precedence over the defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

use crate::placement::Policy;

/// Sfumato: a WebRTC SFU whose rooms span every core.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// HTTP address for signaling, WHIP/WHEP, the API and the demo page [default: 127.0.0.1:8080]
    #[arg(long, env = "SFUMATO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Media worker threads, each with its own UDP socket [default: number of cores]
    #[arg(long, env = "SFUMATO_WORKERS")]
    pub workers: Option<usize>,
    /// UDP port of worker 0; worker i uses this + i [default: 40000]
    #[arg(long, env = "SFUMATO_RTC_PORT")]
    pub rtc_port: Option<u16>,
    /// Address put in ICE candidates [default: the listen address if it is a specific one,
    /// else this machine's first non-loopback IPv4 address]
    #[arg(long, env = "SFUMATO_ANNOUNCE_IP")]
    pub announce_ip: Option<IpAddr>,
    /// How participants are placed on workers [default: pack]
    #[arg(long, env = "SFUMATO_PLACEMENT", value_enum)]
    pub placement: Option<Policy>,
    /// Participants a worker takes before `pack` placement uses the next one [default: 50]
    #[arg(long, env = "SFUMATO_WORKER_CAPACITY")]
    pub worker_capacity: Option<usize>,
    /// Estimate each subscriber's downlink and fit simulcast layers to it; `false` saves CPU
    /// per packet and latency where nothing adapts (docs/benchmarks.md) [default: true]
    #[arg(long, env = "SFUMATO_BANDWIDTH_ESTIMATION", action = clap::ArgAction::Set)]
    pub bandwidth_estimation: Option<bool>,
    /// Join a cluster coordinated through this Redis (redis://host:port); without it the
    /// node stands alone
    #[arg(long, env = "SFUMATO_REDIS")]
    pub redis: Option<String>,
    /// In a cluster: where browsers reach this node's HTTP [default: http:// and the listen
    /// address, with the announce address if it listens everywhere]
    #[arg(long, env = "SFUMATO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// In a cluster: the UDP port of the relay to the other nodes [default: the port after
    /// the workers' ports]
    #[arg(long, env = "SFUMATO_RELAY_PORT")]
    pub relay_port: Option<u16>,
    /// In a cluster: a secret shared by every node, from which the relay's keys are derived
    /// [default: a random key the first node stores in Redis]
    #[arg(long, env = "SFUMATO_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,
    /// In a cluster: on SIGTERM (or `POST /api/nodes/{id}/drain`) the node moves its
    /// participants to other nodes and exits once empty, or after this many seconds
    /// [default: 60]
    #[arg(long, env = "SFUMATO_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// TOML file with any of the settings above (snake_case keys)
    #[arg(long, env = "SFUMATO_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    workers: Option<usize>,
    rtc_port: Option<u16>,
    announce_ip: Option<IpAddr>,
    placement: Option<Policy>,
    worker_capacity: Option<usize>,
    bandwidth_estimation: Option<bool>,
    redis: Option<String>,
    public_url: Option<String>,
    relay_port: Option<u16>,
    cluster_secret: Option<String>,
    drain_timeout: Option<u64>,
}

/// How this node joins a cluster (`--redis`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis: String,
    pub public_url: String,
    pub relay_port: u16,
    pub secret: Option<String>,
    pub drain_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub rtc_port: u16,
    pub announce_ip: IpAddr,
    pub placement: Policy,
    pub worker_capacity: usize,
    pub bandwidth_estimation: bool,
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    pub fn load(cli: Cli) -> anyhow::Result<Config> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<File>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => File::default(),
        };
        let listen = cli
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)));
        let workers = cli.workers.or(file.workers).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        anyhow::ensure!(
            (1..=256).contains(&workers),
            "--workers must be between 1 and 256"
        );
        let announce_ip = cli
            .announce_ip
            .or(file.announce_ip)
            .unwrap_or_else(|| default_announce(listen.ip()));
        let rtc_port = cli.rtc_port.or(file.rtc_port).unwrap_or(40000);
        let cluster = match cli.redis.or(file.redis) {
            None => None,
            Some(redis) => {
                let host = if listen.ip().is_unspecified() {
                    SocketAddr::new(announce_ip, listen.port())
                } else {
                    listen
                };
                let relay_port = match cli.relay_port.or(file.relay_port) {
                    Some(p) => p,
                    None => u16::try_from(usize::from(rtc_port) + workers)
                        .ok()
                        .filter(|_| rtc_port != 0)
                        .unwrap_or(0),
                };
                Some(ClusterConfig {
                    redis,
                    public_url: cli
                        .public_url
                        .or(file.public_url)
                        .unwrap_or_else(|| format!("http://{host}"))
                        .trim_end_matches('/')
                        .to_string(),
                    relay_port,
                    secret: cli.cluster_secret.or(file.cluster_secret),
                    drain_timeout: std::time::Duration::from_secs(
                        cli.drain_timeout.or(file.drain_timeout).unwrap_or(60),
                    ),
                })
            }
        };
        Ok(Config {
            listen,
            workers,
            rtc_port,
            announce_ip,
            placement: cli.placement.or(file.placement).unwrap_or(Policy::Pack),
            worker_capacity: cli.worker_capacity.or(file.worker_capacity).unwrap_or(50),
            bandwidth_estimation: cli
                .bandwidth_estimation
                .or(file.bandwidth_estimation)
                .unwrap_or(true),
            cluster,
        })
    }

    /// The UDP sockets bind where HTTP listens, or everywhere when that is unspecified.
    pub fn bind_ip(&self) -> IpAddr {
        self.listen.ip()
    }
}

fn default_announce(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("sfumato").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = Config::load(cli(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.announce_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.rtc_port, 40000);
        assert_eq!(c.placement, Policy::Pack);
        assert!(c.workers >= 1);
        assert!(c.bandwidth_estimation);
        assert!(c.cluster.is_none(), "alone without --redis");
    }

    #[test]
    fn a_cluster_node_defaults_its_url_and_relay_port() {
        let c = Config::load(cli(&[
            "--redis",
            "redis://127.0.0.1:6379",
            "--listen",
            "127.0.0.2:8080",
            "--workers",
            "2",
        ]))
        .unwrap();
        let k = c.cluster.unwrap();
        assert_eq!(k.public_url, "http://127.0.0.2:8080");
        assert_eq!(k.relay_port, 40002);
        let c = Config::load(cli(&[
            "--redis",
            "redis://r",
            "--public-url",
            "https://sfu.example/",
            "--relay-port",
            "7000",
        ]))
        .unwrap();
        let k = c.cluster.unwrap();
        assert_eq!(
            (k.public_url.as_str(), k.relay_port),
            ("https://sfu.example", 7000)
        );
    }

    #[test]
    fn file_then_command_line() {
        let dir = std::env::temp_dir().join(format!("sfumato-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sfumato.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.2:9000\"\nworkers = 3\nplacement = \"spread\"\nrtc_port = 41000\nbandwidth_estimation = false\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&["--config", p])).unwrap();
        assert_eq!(c.listen, "127.0.0.2:9000".parse().unwrap());
        assert_eq!(c.announce_ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (c.workers, c.rtc_port, c.placement, c.bandwidth_estimation),
            (3, 41000, Policy::Spread, false)
        );
        let c = Config::load(cli(&[
            "--config",
            p,
            "--workers",
            "1",
            "--placement",
            "pack",
            "--bandwidth-estimation",
            "true",
        ]))
        .unwrap();
        assert_eq!(
            (c.workers, c.placement, c.bandwidth_estimation),
            (1, Policy::Pack, true)
        );

        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nworkerz = 3\n").unwrap();
        let err = Config::load(cli(&["--config", p])).unwrap_err();
        assert!(format!("{err:#}").contains("workerz"), "{err:#}");
        std::fs::write(&path, "workers = 0\n").unwrap();
        assert!(Config::load(cli(&["--config", p])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
