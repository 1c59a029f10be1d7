//! The command line, the environment (SFUMATO_*) and the TOML config file, merged in that
//! order of precedence over the defaults.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::auth::{Grant, Source};
use crate::limits;
use crate::placement::Policy;
use crate::tls;

/// Sfumato: a WebRTC SFU whose rooms span every core. Without a subcommand it runs the
/// server.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Access tokens for participants and administrators
    #[command(subcommand)]
    Token(TokenCommand),
    /// API keys (a key name and the secret that signs tokens)
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Prints a token signed with an API key (on the last line)
    Create(TokenArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Prints a new random API key and secret
    Create,
}

/// `sfumato token create`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The room the token is for (needed by every grant but `admin`)
    #[arg(long)]
    pub room: Option<String>,
    /// Who the participant is (the token's `sub`)
    #[arg(long)]
    pub identity: String,
    /// The participant's display name [default: the identity]
    #[arg(long)]
    pub name: Option<String>,
    /// What the token allows, comma-separated
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    pub grant: Vec<Grant>,
    /// With `publish`: the kinds of track it may send, comma-separated [default: any]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub sources: Vec<Source>,
    /// How long the token is valid: a number with s, m, h or d
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    pub ttl: u64,
    /// The API key that signs the token
    #[arg(long, env = "SFUMATO_API_KEY")]
    pub api_key: Option<String>,
    /// Its secret [default: the key's in the `[keys]` table of --config]
    #[arg(long, env = "SFUMATO_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// The server's TOML file, to take the secret from its `[keys]` table (with no
    /// --api-key, its only key)
    #[arg(long, env = "SFUMATO_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `6h`, `30m`, `90s`, `2d` (or a bare number of seconds) in seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 6h, 30m, 90s or 2d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit is s, m, h or d")),
    };
    n.checked_mul(unit)
        .filter(|d| *d > 0)
        .ok_or_else(|| format!("`{s}` is not a positive duration"))
}

/// Running the server: every setting, also as an `SFUMATO_*` variable or in the TOML file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
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
    /// In a cluster: where browsers reach this node's HTTP [default: http:// (https:// with
    /// TLS) and the listen address, with the announce address if it listens everywhere]
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
    /// An API key: participants and administrators then need tokens it signed (`sfumato
    /// token create`). More keys, valid at once: the `[keys]` table of the TOML file
    #[arg(long, env = "SFUMATO_API_KEY", requires = "api_secret")]
    pub api_key: Option<String>,
    /// The secret of --api-key (at least 32 bytes; `sfumato key create` makes a key and one)
    #[arg(
        long,
        env = "SFUMATO_API_SECRET",
        requires = "api_key",
        hide_env_values = true
    )]
    pub api_secret: Option<String>,
    /// Without API keys, run open (anyone may join, publish and use the admin API) even on
    /// a non-loopback address; without this flag such a server refuses to start
    #[arg(long, env = "SFUMATO_INSECURE_OPEN")]
    pub insecure_open: bool,
    /// Rooms this node holds at once [default: 1000]
    #[arg(long, env = "SFUMATO_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Participants in one room (WebSocket, WHIP and WHEP alike) [default: 200]
    #[arg(long, env = "SFUMATO_MAX_PARTICIPANTS_PER_ROOM")]
    pub max_participants_per_room: Option<usize>,
    /// Audio and video tracks one participant publishes [default: 16]
    #[arg(long, env = "SFUMATO_MAX_TRACKS_PER_PARTICIPANT")]
    pub max_tracks_per_participant: Option<usize>,
    /// Bytes of one SDP offer or answer (also the WHIP/WHEP body) [default: 1048576]
    #[arg(long, env = "SFUMATO_MAX_SDP_BYTES")]
    pub max_sdp_bytes: Option<usize>,
    /// m-lines of one SDP offer or answer [default: 1024]
    #[arg(long, env = "SFUMATO_MAX_SDP_MLINES")]
    pub max_sdp_mlines: Option<usize>,
    /// Signaling messages per second from one client, in bursts of up to 4 seconds' worth;
    /// more are dropped with a `rate_limited` error [default: 50]
    #[arg(long, env = "SFUMATO_MAX_SIGNALING_RATE")]
    pub max_signaling_rate: Option<u32>,
    /// Data messages per second from one participant, over its socket and its data
    /// channels together, in bursts of up to a second's worth; more are dropped with a
    /// `rate_limited` error [default: 500]
    #[arg(long, env = "SFUMATO_MAX_DATA_RATE")]
    pub max_data_rate: Option<u32>,
    /// Bytes of one signaling message [default: 2097152]
    #[arg(long, env = "SFUMATO_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Messages queued to one WebSocket client; a client that lets more pile up (it does not
    /// read) is disconnected [default: 1024]
    #[arg(long, env = "SFUMATO_MAX_QUEUED_MESSAGES")]
    pub max_queued_messages: Option<usize>,
    /// How often the server pings each WebSocket client, as 5s, 1m… [default: 5s]
    #[arg(long, env = "SFUMATO_WS_PING_INTERVAL", value_parser = parse_duration)]
    pub ws_ping_interval: Option<u64>,
    /// A WebSocket client heard from (a message or a pong) less often than this is
    /// disconnected and leaves its room [default: 15s]
    #[arg(long, env = "SFUMATO_WS_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub ws_idle_timeout: Option<u64>,
    /// Serve HTTPS and WSS with this PEM certificate chain (with --tls-key)
    #[arg(long, env = "SFUMATO_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "SFUMATO_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS and WSS with a certificate made at start for localhost, this host's
    /// addresses and the listen address; its SHA-256 fingerprint is in the start log line
    #[arg(long, env = "SFUMATO_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// TOML file with any of the settings above (snake_case keys) and a `[keys]` table of
    /// API keys (`name = "secret"`)
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
    insecure_open: Option<bool>,
    max_rooms: Option<usize>,
    max_participants_per_room: Option<usize>,
    max_tracks_per_participant: Option<usize>,
    max_sdp_bytes: Option<usize>,
    max_sdp_mlines: Option<usize>,
    max_signaling_rate: Option<u32>,
    max_data_rate: Option<u32>,
    max_message_bytes: Option<usize>,
    max_queued_messages: Option<usize>,
    /// Seconds.
    ws_ping_interval: Option<u64>,
    /// Seconds.
    ws_idle_timeout: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_self_signed: Option<bool>,
    /// API key → secret.
    keys: Option<BTreeMap<String, String>>,
}

impl File {
    fn read(path: Option<&Path>) -> anyhow::Result<File> {
        let Some(path) = path else {
            return Ok(File::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str::<File>(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The secret of API key `key` in the `[keys]` table of `config` (with no key named, the
/// table's only key): for `sfumato token create`.
pub fn key_from_file(config: &Path, key: Option<&str>) -> anyhow::Result<(String, String)> {
    let keys = File::read(Some(config))?.keys.unwrap_or_default();
    match key {
        Some(k) => keys
            .get(k)
            .map(|s| (k.to_string(), s.clone()))
            .with_context(|| format!("no key `{k}` in the [keys] table of {}", config.display())),
        None => {
            anyhow::ensure!(
                keys.len() == 1,
                "{} has {} keys in its [keys] table: name one with --api-key",
                config.display(),
                keys.len()
            );
            Ok(keys.into_iter().next().unwrap_or_default())
        }
    }
}

/// The limits: each from the command line, the environment or the file, else its default.
fn limit_settings(cli: &ServeArgs, file: &File) -> anyhow::Result<limits::Settings> {
    let d = limits::Settings::default();
    let secs = |s: Option<u64>, d: std::time::Duration| s.map_or(d, std::time::Duration::from_secs);
    let s = limits::Settings {
        rooms: cli.max_rooms.or(file.max_rooms).unwrap_or(d.rooms),
        participants_per_room: cli
            .max_participants_per_room
            .or(file.max_participants_per_room)
            .unwrap_or(d.participants_per_room),
        tracks_per_participant: cli
            .max_tracks_per_participant
            .or(file.max_tracks_per_participant)
            .unwrap_or(d.tracks_per_participant),
        sdp_bytes: cli
            .max_sdp_bytes
            .or(file.max_sdp_bytes)
            .unwrap_or(d.sdp_bytes),
        sdp_mlines: cli
            .max_sdp_mlines
            .or(file.max_sdp_mlines)
            .unwrap_or(d.sdp_mlines),
        signaling_rate: cli
            .max_signaling_rate
            .or(file.max_signaling_rate)
            .unwrap_or(d.signaling_rate),
        data_rate: cli
            .max_data_rate
            .or(file.max_data_rate)
            .unwrap_or(d.data_rate),
        message_bytes: cli
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(d.message_bytes),
        queued_messages: cli
            .max_queued_messages
            .or(file.max_queued_messages)
            .unwrap_or(d.queued_messages),
        ws_ping_interval: secs(
            cli.ws_ping_interval.or(file.ws_ping_interval),
            d.ws_ping_interval,
        ),
        ws_idle_timeout: secs(
            cli.ws_idle_timeout.or(file.ws_idle_timeout),
            d.ws_idle_timeout,
        ),
    };
    anyhow::ensure!(
        s.rooms > 0
            && s.participants_per_room > 0
            && s.tracks_per_participant > 0
            && s.sdp_mlines > 0
            && s.signaling_rate > 0
            && s.data_rate > 0
            && s.queued_messages > 0,
        "the --max-* limits are at least 1"
    );
    anyhow::ensure!(
        s.sdp_bytes >= 1024 && s.message_bytes >= 1024,
        "--max-sdp-bytes and --max-message-bytes are at least 1024"
    );
    anyhow::ensure!(
        s.ws_ping_interval < s.ws_idle_timeout,
        "--ws-ping-interval ({:?}) must be shorter than --ws-idle-timeout ({:?})",
        s.ws_ping_interval,
        s.ws_idle_timeout
    );
    Ok(s)
}

/// Where the listener's certificate comes from, if it serves HTTPS: the two ways exclude
/// each other wherever they are set (flags, environment or file).
fn tls_source(cli: &ServeArgs, file: &File) -> anyhow::Result<Option<tls::Source>> {
    let cert = cli.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = cli.tls_key.clone().or_else(|| file.tls_key.clone());
    let self_signed = cli.tls_self_signed || file.tls_self_signed.unwrap_or(false);
    match (cert, key, self_signed) {
        (None, None, false) => Ok(None),
        (None, None, true) => Ok(Some(tls::Source::SelfSigned)),
        (Some(_), _, true) | (_, Some(_), true) => anyhow::bail!(
            "--tls-self-signed and --tls-cert/--tls-key are two ways to get a certificate: \
             give one of them"
        ),
        (Some(cert), Some(key), false) => Ok(Some(tls::Source::Files { cert, key })),
        (Some(_), None, false) => anyhow::bail!("--tls-cert needs --tls-key (its private key)"),
        (None, Some(_), false) => {
            anyhow::bail!("--tls-key needs --tls-cert (the certificate it belongs to)")
        }
    }
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
    /// API key → secret: every key of the file's `[keys]` table and --api-key. Empty: the
    /// open development mode.
    pub keys: BTreeMap<String, String>,
    pub limits: limits::Settings,
    /// HTTPS and WSS (`--tls-*`); plain HTTP without.
    pub tls: Option<tls::Source>,
}

impl Config {
    pub fn load(cli: ServeArgs) -> anyhow::Result<Config> {
        let file = File::read(cli.config.as_deref())?;
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
        // Keys add up (several are valid at once, for rotation); the command line's secret
        // wins over the file's for the same key.
        let limits = limit_settings(&cli, &file)?;
        let tls = tls_source(&cli, &file)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut keys = file.keys.unwrap_or_default();
        if let (Some(key), Some(secret)) = (&cli.api_key, &cli.api_secret) {
            keys.insert(key.clone(), secret.clone());
        }
        for (key, secret) in &keys {
            crate::auth::check_key(key, secret)?;
        }
        let insecure_open = cli.insecure_open || file.insecure_open.unwrap_or(false);
        if keys.is_empty() && !insecure_open && !is_loopback(listen.ip()) {
            anyhow::bail!(refusal(listen));
        }
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
                        .unwrap_or_else(|| format!("{scheme}://{host}"))
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
            keys,
            limits,
            tls,
        })
    }

    /// The UDP sockets bind where HTTP listens, or everywhere when that is unspecified.
    pub fn bind_ip(&self) -> IpAddr {
        self.listen.ip()
    }
}

/// 127.0.0.0/8, ::1, or an IPv4-mapped loopback address.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Why an open server does not start on `listen`, and what to do instead.
fn refusal(listen: SocketAddr) -> String {
    format!(
        "refusing to start: no API keys are configured and --listen {listen} is not a \
         loopback address, so anyone who reaches it could join any room, publish and use the \
         admin API.\n\
         Create an API key, start with it, and give each participant a token:\n\
         \x20   sfumato key create    (prints SFUMATO_API_KEY=... and SFUMATO_API_SECRET=...)\n\
         \x20   sfumato --listen {listen} --api-key KEY --api-secret SECRET\n\
         \x20       (or the variables SFUMATO_API_KEY and SFUMATO_API_SECRET, or a [keys] table \
         in --config FILE)\n\
         \x20   sfumato token create --api-key KEY --api-secret SECRET --room demo --identity \
         alice --grant join,publish,subscribe --ttl 6h\n\
         To run open anyway, add --insecure-open."
    )
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
    use std::time::Duration;

    fn cli(args: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("sfumato").chain(args.iter().copied())).serve
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

    #[test]
    fn limits_come_from_flags_then_the_file_then_defaults() {
        let c = Config::load(cli(&[])).unwrap();
        assert_eq!(c.limits, limits::Settings::default());
        let dir = std::env::temp_dir().join(format!("sfumato-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sfumato.toml");
        std::fs::write(&path, "max_rooms = 7\nws_idle_timeout = 30\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&[
            "--config",
            p,
            "--max-participants-per-room",
            "3",
            "--max-signaling-rate",
            "5",
            "--ws-ping-interval",
            "2s",
            "--ws-idle-timeout",
            "1m",
        ]))
        .unwrap();
        let l = &c.limits;
        assert_eq!(
            (l.rooms, l.participants_per_room, l.signaling_rate),
            (7, 3, 5)
        );
        assert_eq!(
            (l.ws_ping_interval, l.ws_idle_timeout),
            (Duration::from_secs(2), Duration::from_secs(60))
        );
        assert_eq!(l.sdp_mlines, limits::Settings::default().sdp_mlines);
        let err = Config::load(cli(&["--ws-ping-interval", "20s"])).unwrap_err();
        assert!(format!("{err}").contains("shorter"), "{err}");
        assert!(Config::load(cli(&["--max-rooms", "0"])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn open_only_on_loopback_unless_asked() {
        for ok in [
            "127.0.0.1:1",
            "127.3.2.1:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            let c = Config::load(cli(&["--listen", ok])).unwrap();
            assert!(c.keys.is_empty(), "{ok}");
        }
        for exposed in ["0.0.0.0:8080", "192.0.2.1:8080", "[::]:8080"] {
            let err = Config::load(cli(&["--listen", exposed])).unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("sfumato token create")
                    && text.contains("--api-key")
                    && text.contains("sfumato key create")
                    && text.contains("--insecure-open"),
                "{text}"
            );
            assert!(Config::load(cli(&["--listen", exposed, "--insecure-open"])).is_ok());
            let c = Config::load(cli(&[
                "--listen",
                exposed,
                "--api-key",
                "k",
                "--api-secret",
                SECRET,
            ]))
            .unwrap();
            assert_eq!(c.keys.get("k").map(String::as_str), Some(SECRET));
        }
    }

    #[test]
    fn keys_from_the_file_and_the_command_line_add_up() {
        let dir = std::env::temp_dir().join(format!("sfumato-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sfumato.toml");
        std::fs::write(
            &path,
            format!("listen = \"0.0.0.0:9000\"\n[keys]\nold = \"{SECRET}\"\nnew = \"{SECRET}\"\n"),
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&["--config", p])).unwrap();
        assert_eq!(c.keys.keys().collect::<Vec<_>>(), ["new", "old"]);
        let c = Config::load(cli(&[
            "--config",
            p,
            "--api-key",
            "cli",
            "--api-secret",
            SECRET,
        ]))
        .unwrap();
        assert_eq!(c.keys.len(), 3);
        assert_eq!(
            key_from_file(&path, Some("old")).unwrap(),
            ("old".to_string(), SECRET.to_string())
        );
        assert!(key_from_file(&path, None).is_err(), "two keys: name one");
        assert!(key_from_file(&path, Some("gone")).is_err());
        // A short secret is refused at start.
        std::fs::write(&path, "[keys]\nk = \"short\"\n").unwrap();
        let err = Config::load(cli(&["--config", p])).unwrap_err();
        assert!(format!("{err:#}").contains("at least 32"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
        // A key needs its secret, and the other way round.
        let parsed = Cli::try_parse_from(["sfumato", "--api-key", "k"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn subcommands_and_the_default_server() {
        let c = Cli::parse_from(["sfumato", "--listen", "127.0.0.1:9"]);
        assert!(c.command.is_none());
        let c = Cli::parse_from([
            "sfumato",
            "token",
            "create",
            "--room",
            "R",
            "--identity",
            "alice",
            "--grant",
            "join,publish,subscribe",
            "--ttl",
            "6h",
        ]);
        let Some(Command::Token(TokenCommand::Create(t))) = c.command else {
            panic!("token create");
        };
        assert_eq!(t.grant, [Grant::Join, Grant::Publish, Grant::Subscribe]);
        assert_eq!((t.ttl, t.room.as_deref()), (6 * 3600, Some("R")));
        assert!(Cli::try_parse_from(["sfumato", "token", "create", "--identity", "a"]).is_err());
        let c = Cli::parse_from([
            "sfumato",
            "token",
            "create",
            "--identity",
            "m",
            "--room",
            "R",
            "--grant",
            "room_admin,admin,data",
            "--sources",
            "audio,video",
        ]);
        let Some(Command::Token(TokenCommand::Create(t))) = c.command else {
            panic!("token create");
        };
        assert_eq!(t.grant, [Grant::RoomAdmin, Grant::Admin, Grant::Data]);
        assert_eq!(t.sources, [Source::Audio, Source::Video]);
    }

    #[test]
    fn tls_from_files_or_self_signed_never_both() {
        assert_eq!(Config::load(cli(&[])).unwrap().tls, None);
        let c = Config::load(cli(&["--tls-self-signed"])).unwrap();
        assert_eq!(c.tls, Some(tls::Source::SelfSigned));
        let c = Config::load(cli(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])).unwrap();
        assert_eq!(
            c.tls,
            Some(tls::Source::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        for bad in [
            &[
                "--tls-self-signed",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ][..],
            &["--tls-self-signed", "--tls-key", "k.pem"],
        ] {
            let err = Config::load(cli(bad)).unwrap_err();
            assert!(format!("{err}").contains("give one of them"), "{err}");
        }
        let err = Config::load(cli(&["--tls-cert", "c.pem"])).unwrap_err();
        assert!(format!("{err}").contains("needs --tls-key"), "{err}");
        let err = Config::load(cli(&["--tls-key", "k.pem"])).unwrap_err();
        assert!(format!("{err}").contains("needs --tls-cert"), "{err}");

        let dir = std::env::temp_dir().join(format!("sfumato-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sfumato.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&["--config", p])).unwrap();
        assert!(matches!(c.tls, Some(tls::Source::Files { .. })));
        // The file's certificate and the command line's self-signed one clash too.
        assert!(Config::load(cli(&["--config", p, "--tls-self-signed"])).is_err());
        std::fs::write(&path, "tls_self_signed = true\n").unwrap();
        let c = Config::load(cli(&["--config", p, "--redis", "redis://r"])).unwrap();
        assert_eq!(c.tls, Some(tls::Source::SelfSigned));
        // A cluster node's default URL says https.
        assert_eq!(c.cluster.unwrap().public_url, "https://127.0.0.1:8080");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("6h"), Ok(21_600));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("90"), Ok(90));
        for bad in ["", "h", "0s", "6y", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
