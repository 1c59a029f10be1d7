//! `sfumato-bench`: runs scenarios against Sfumato and Janus VideoRoom and reports them side by
//! side. `compare --quick` takes under 3 minutes; `run` runs one scenario; `smoke` is the CI
//! check that media flows and the report is complete; `cluster --quick` (~1 minute) spreads a
//! room over two nodes of a cluster; `soak --minutes N` churns a room for N minutes and fails
//! on a leak or on loss (docs/benchmarks.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sfumato_bench::cluster::{self, ClusterOptions};
use sfumato_bench::compare::{self, Load, Run, Server};
use sfumato_bench::data::{self, DataOptions};
use sfumato_bench::janus::{self, JanusOptions};
use sfumato_bench::report::{self, RunReport, Series};
use sfumato_bench::scenario::{self, Scenario, Shape, Target};
use sfumato_bench::soak::{self, SoakOptions};
use sfumato_bench::target::sfumato::SfumatoOptions;

#[derive(Parser, Debug)]
#[command(
    name = "sfumato-bench",
    about = "Load generator: Sfumato side by side with Janus VideoRoom"
)]
struct Cli {
    /// The sfumato binary to test.
    #[arg(long, default_value = "target/release/sfumato", global = true)]
    sfumato_bin: PathBuf,
    /// Where reports (JSON, PNG, logs) go.
    #[arg(long, default_value = "target/bench", global = true)]
    out: PathBuf,
    /// CPU the server under test is pinned to; the generator takes the others.
    #[arg(long, default_value_t = 0, global = true)]
    server_cpu: usize,
    /// The server's downlink estimation (its `--bandwidth-estimation`). Off here by default:
    /// Janus VideoRoom estimates nothing, so that compares like with like; docs/benchmarks.md
    /// measures what turning it on costs.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, global = true)]
    bandwidth_estimation: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Data messages over the signaling WebSocket: one sender, N receivers, broadcast then
    /// targeted; deliveries per second and latency. `--nodes 2`: across two nodes of a
    /// cluster (the sender on one, the receivers on the other; Redis started by the tool).
    Data {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=2))]
        nodes: u16,
        #[arg(long, default_value_t = 10)]
        receivers: usize,
        /// Messages sent per phase.
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        /// Messages per second sent (the server's --max-data-rate is raised above it).
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 256)]
        payload: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// One scenario against one target.
    Run {
        #[arg(long, value_parser = ["sfumato", "janus"], default_value = "sfumato")]
        target: String,
        #[arg(long, value_enum, default_value = "fanout")]
        shape: Shape,
        #[arg(long, default_value_t = 10)]
        participants: usize,
        /// Publishers of the audio shape.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Participants joining per second.
        #[arg(long, default_value_t = 10.0)]
        join_rate: f64,
        /// Sfumato's worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 1_000_000)]
        video_bitrate: u32,
    },
    /// Sfumato and Janus through the same scenarios; a table, JSON, a chart and a RESULT line.
    Compare {
        /// At most 3 minutes.
        #[arg(long)]
        quick: bool,
    },
    /// A 5-second, 3-participant meeting against Sfumato: media must flow, the report be whole.
    Smoke,
    /// A room across the nodes of a cluster (Redis and two nodes on loopback): server CPU per
    /// forwarded packet on one node against two, the relay's bytes per remote node, join time
    /// on a node without the room, recovery after `kill -9` of a node, the media gap of a
    /// drain; a RESULT line.
    Cluster {
        /// A few minutes at most: fan-out 1→20, 10 s windows.
        #[arg(long)]
        quick: bool,
        /// Receivers of the fan-out room [default: 20 quick, 60 full].
        #[arg(long)]
        receivers: Option<usize>,
        /// The window of the CPU and relay measurements [default: 10 quick, 20 full].
        #[arg(long)]
        duration_secs: Option<u64>,
        /// Join samples, each a fresh room [default: 5 quick, 15 full].
        #[arg(long)]
        join_samples: Option<usize>,
        /// Receivers on each node in the recovery room [default: 2 quick, 5 full].
        #[arg(long)]
        recovery_receivers: Option<usize>,
        /// Receivers on each node in the drain room, besides a publisher on each [default: 2
        /// quick, 5 full].
        #[arg(long)]
        drain_receivers: Option<usize>,
        /// Publishers send video in three simulcast layers (¼, ½ and all of 1 Mbps), as the
        /// SDK does by default.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        simulcast: bool,
    },
    /// Churn against one server: every second a participant joins and one leaves, every 5 s
    /// a publisher restarts, subscribers switch simulcast layers, WHIP sessions come and go,
    /// garbage datagrams and malformed signaling arrive; a steady pair stays throughout.
    /// Reports resident memory over time, every gauge of what the server holds once everyone
    /// left (all must be 0) and the steady pair's loss; exits non-zero on a leak or on loss.
    Soak {
        /// How long the churn lasts, in minutes.
        #[arg(long, conflicts_with = "seconds")]
        minutes: Option<u64>,
        /// How long the churn lasts, in seconds [default: 120].
        #[arg(long)]
        seconds: Option<u64>,
        /// Churning participants in the room at any time (every other one publishes).
        #[arg(long, default_value_t = 6)]
        churners: usize,
        /// Sfumato's worker threads (2: tracks are piped between workers).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Seconds between two samples of the server's resident memory.
        #[arg(long, default_value_t = 5)]
        sample_secs: u64,
        /// The longest wait, once everyone left, for every gauge to read 0.
        #[arg(long, default_value_t = 20)]
        settle_secs: u64,
        /// The most either steady participant may lose of the other's audio or video (%).
        #[arg(long, default_value_t = 1.0)]
        max_loss_pct: f64,
        /// Also fail if resident memory grows this much (%) or more after warm-up.
        #[arg(long)]
        max_rss_growth_pct: Option<f64>,
    },
    /// Vertical scaling: fan-out 1→N with N growing by `step` until loss passes 1%, with
    /// `--workers 1` (on the server CPU) and `--workers 2 --placement spread` (on every CPU,
    /// or `--spread-cpus`).
    Scale {
        #[arg(long, default_value_t = 50)]
        step: usize,
        #[arg(long, default_value_t = 400)]
        max_participants: usize,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// CPUs of the two-worker server (`taskset -c` list); all CPUs if not given. Giving
        /// the one-worker server's CPU alone measures what spanning workers costs with the
        /// same CPU budget and no generator on the server's cores.
        #[arg(long)]
        spread_cpus: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // Before any HTTP client is built (reqwest's rustls has no provider of its own).
    sfumato_testkit::init_crypto();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Before this process pins itself: the copy in the namespace must see every CPU.
    rerun_in_private_namespace(&cli)?;
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The generator keeps off the server's core (threads inherit the main thread's mask).
    if cores > 1 {
        let others: Vec<String> = (0..cores)
            .filter(|c| *c != cli.server_cpu)
            .map(|c| c.to_string())
            .collect();
        pin_self(&others.join(","));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async_main(cli, cores))
}

/// Set in the copy of this process that [`rerun_in_private_namespace`] starts.
const RERUN: &str = "SFUMATO_BENCH_IN_PRIVATE_NETNS";

/// Janus gets an address of its own next to loopback, which the tool gives only in a private
/// network namespace (docs/benchmarks.md). A command that runs Janus outside one installs it
/// if missing (the new namespace has no registry access), then runs again in a new network
/// namespace (`unshare --net`, `lo` up), Sfumato's runs too, and exits with that status.
fn rerun_in_private_namespace(cli: &Cli) -> anyhow::Result<()> {
    let runs_janus = match &cli.cmd {
        Cmd::Compare { .. } => true,
        Cmd::Run { target, .. } => target == "janus",
        _ => false,
    };
    // A cluster's nodes and Redis take fixed loopback ports: a namespace of its own keeps
    // them from anyone else's.
    let runs_cluster = matches!(cli.cmd, Cmd::Cluster { .. });
    if !(runs_janus || runs_cluster)
        || std::env::var_os(RERUN).is_some()
        || janus::server::in_private_namespace()?
    {
        return Ok(());
    }
    if runs_janus {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(janus::server::install_if_missing(&JanusOptions::default()))?;
    }
    if runs_cluster {
        cluster::install_redis_if_missing()?;
    }
    eprintln!("running again in a private network namespace (unshare --net, lo up)");
    let exe = std::env::current_exe().context("finding this executable")?;
    let status = std::process::Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(RERUN, "1")
        .status()
        .context("running unshare --net (util-linux; needs root)")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Pins this process (all its threads so far: only the main one) to `cpus`.
fn pin_self(cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: could not pin the generator to CPUs {cpus}");
    }
}

fn sfumato(cli: &Cli, workers: usize, port_base: u16) -> Target {
    sfumato_on(cli, workers, port_base, cli.server_cpu.to_string())
}

fn sfumato_on(cli: &Cli, workers: usize, port_base: u16, cpus: String) -> Target {
    Target::Sfumato(sfumato_options(cli, workers, port_base, cpus))
}

fn sfumato_options(cli: &Cli, workers: usize, port_base: u16, cpus: String) -> SfumatoOptions {
    SfumatoOptions {
        bin: cli.sfumato_bin.clone(),
        workers,
        placement: "spread",
        cpus: Some(cpus),
        http_port: port_base,
        rtc_port: port_base + 100,
        log: cli.out.join(format!("sfumato-{workers}w.log")),
        bandwidth_estimation: cli.bandwidth_estimation,
        cluster: None,
        extra_args: Vec::new(),
    }
}

fn janus(cli: &Cli) -> Target {
    Target::Janus(JanusOptions {
        cpu: Some(cli.server_cpu),
        ..JanusOptions::default()
    })
}

async fn async_main(cli: Cli, cores: usize) -> anyhow::Result<()> {
    let threads = cores.saturating_sub(1).max(1);
    match &cli.cmd {
        Cmd::Run {
            target,
            shape,
            participants,
            publishers,
            duration_secs,
            join_rate,
            workers,
            video_bitrate,
        } => {
            let s = Scenario {
                shape: *shape,
                participants: *participants,
                publishers: *publishers,
                duration: Duration::from_secs(*duration_secs),
                join_rate: *join_rate,
                video_bitrate: *video_bitrate,
            };
            let t = match target.as_str() {
                "janus" => janus(&cli),
                _ => sfumato(&cli, *workers, 28080),
            };
            let r = scenario::run(&t, &s, threads).await?;
            println!("{}\n", report::window_note(&r));
            println!("{}", report::markdown(std::slice::from_ref(&r)));
            write_json(&cli, "run", std::slice::from_ref(&r))?;
        }
        Cmd::Smoke => {
            let s = Scenario {
                shape: Shape::Meeting,
                participants: 3,
                publishers: 3,
                duration: Duration::from_secs(5),
                join_rate: 10.0,
                video_bitrate: 300_000,
            };
            let r = scenario::run(&sfumato(&cli, 2, 28280), &s, threads).await?;
            println!("{}", report::markdown(std::slice::from_ref(&r)));
            check_complete(&r)?;
            println!("smoke: media flowed and the report is complete");
        }
        Cmd::Compare { quick } => compare(&cli, *quick, threads).await?,
        Cmd::Data {
            nodes,
            receivers,
            messages,
            rate,
            payload,
            workers,
        } => {
            let o = DataOptions {
                server: SfumatoOptions {
                    log: cli.out.join("sfumato-data.log"),
                    cpus: None,
                    extra_args: vec![
                        "--max-data-rate".into(),
                        (rate.saturating_mul(2)).to_string(),
                    ],
                    ..sfumato_options(&cli, *workers, 28700, String::new())
                },
                receivers: (*receivers).max(1),
                messages: *messages,
                rate: *rate,
                payload: *payload,
                nodes: usize::from(*nodes),
            };
            if o.nodes > 1 {
                cluster::install_redis_if_missing()?;
            }
            let report = data::run(&o).await?;
            println!("{}", report.markdown());
            std::fs::write(
                cli.out.join("data.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            for p in &report.phases {
                if p.delivered < p.expected {
                    bail!(
                        "data: {} of {} {} deliveries arrived",
                        p.delivered,
                        p.expected,
                        p.phase
                    );
                }
            }
        }
        Cmd::Soak {
            minutes,
            seconds,
            churners,
            workers,
            sample_secs,
            settle_secs,
            max_loss_pct,
            max_rss_growth_pct,
        } => {
            let duration = match (minutes, seconds) {
                (Some(m), _) => Duration::from_secs(m * 60),
                (None, Some(s)) => Duration::from_secs(*s),
                (None, None) => Duration::from_secs(120),
            };
            let o = SoakOptions {
                server: SfumatoOptions {
                    log: cli.out.join("sfumato-soak.log"),
                    // Any CPU: the workers are not measured for cost here.
                    cpus: None,
                    ..sfumato_options(&cli, *workers, 28600, String::new())
                },
                threads,
                duration,
                churners: (*churners).max(1),
                sample_every: Duration::from_secs((*sample_secs).max(1)),
                settle: Duration::from_secs(*settle_secs),
                max_loss_pct: *max_loss_pct,
                max_rss_growth_pct: *max_rss_growth_pct,
            };
            let report = soak::run(&o).await?;
            println!("{}", report.markdown());
            let json = cli.out.join("soak.json");
            std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
            std::fs::write(cli.out.join("soak.md"), report.markdown())?;
            println!("wrote {}", json.display());
            println!("{}", report.result_line());
            if !report.failures.is_empty() {
                bail!("soak failed: {}", report.failures.join("; "));
            }
        }
        Cmd::Cluster {
            quick,
            receivers,
            duration_secs,
            join_samples,
            recovery_receivers,
            drain_receivers,
            simulcast,
        } => {
            let mut o = if *quick {
                ClusterOptions::quick(cli.sfumato_bin.clone(), cli.out.clone())
            } else {
                ClusterOptions::full(cli.sfumato_bin.clone(), cli.out.clone())
            };
            o.node_cpus = Some(cli.server_cpu.to_string());
            o.threads = threads;
            o.bandwidth_estimation = cli.bandwidth_estimation;
            o.simulcast = *simulcast;
            o.receivers = receivers.unwrap_or(o.receivers).max(2);
            o.window = duration_secs.map_or(o.window, Duration::from_secs);
            o.join_samples = join_samples.unwrap_or(o.join_samples).max(1);
            o.recovery_receivers = recovery_receivers.unwrap_or(o.recovery_receivers).max(1);
            o.drain_receivers = drain_receivers.unwrap_or(o.drain_receivers);
            run_cluster(&cli, &o).await?
        }
        Cmd::Scale {
            step,
            max_participants,
            duration_secs,
            spread_cpus,
        } => {
            // `cores` was read before this process pinned itself (which narrows what it sees).
            let spread = spread_cpus.clone().unwrap_or_else(|| {
                (0..cores)
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            });
            scale(
                &cli,
                *step,
                *max_participants,
                *duration_secs,
                threads,
                spread,
            )
            .await?
        }
    }
    Ok(())
}

async fn run_cluster(cli: &Cli, o: &ClusterOptions) -> anyhow::Result<()> {
    let report = cluster::run(o).await?;
    println!(
        "Two nodes (one worker each, on CPUs {}), Redis, and the generator on loopback. Sfumato \
         with `--bandwidth-estimation {}`; the publisher's video at {} kbps{}. The CPU and relay \
         figures cover one window of {:.0} s from {:.0} s after the last join (CPU: every node \
         process, summed).\n",
        o.node_cpus.as_deref().unwrap_or("any"),
        o.bandwidth_estimation,
        o.video_bitrate / 1000,
        if o.simulcast {
            " in three simulcast layers (¼, ½, all of it)"
        } else {
            ", one layer"
        },
        o.window.as_secs_f64(),
        scenario::WARMUP.as_secs_f64(),
    );
    println!("{}", report.markdown());
    let json = cli.out.join("cluster.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", json.display());
    let failed: Vec<&str> = [
        ("one node", report.one_node.is_err()),
        ("two nodes", report.two_nodes.is_err()),
        ("two nodes again", report.two_nodes_again.is_err()),
        ("one node again", report.one_node_again.is_err()),
        (
            "two nodes, low layer",
            report.two_nodes_low.as_ref().is_some_and(Result::is_err),
        ),
        ("joins", report.joins.is_err()),
        ("recovery", report.recovery.is_err()),
        ("drain", report.drain.is_err()),
    ]
    .iter()
    .filter(|(_, e)| *e)
    .map(|(n, _)| *n)
    .collect();
    println!("{}", report.result.line());
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Fails unless media flowed and every figure of the report is a number.
fn check_complete(r: &RunReport) -> anyhow::Result<()> {
    let figures = [
        ("forwarded_pps", r.forwarded_pps),
        ("server_cpu_pct", r.server_cpu_pct),
        ("server_cpu_us_per_pkt", r.server_cpu_us_per_pkt),
        ("server_kib_per_subscription", r.server_kib_per_subscription),
        ("loss_pct", r.loss_pct),
        ("latency_p50_ms", r.latency_p50_ms),
        ("latency_p99_ms", r.latency_p99_ms),
        ("join_p50_ms", r.join_p50_ms),
        ("join_max_ms", r.join_max_ms),
        ("connect_p50_ms", r.connect_p50_ms),
        ("generator_cpu_pct", r.generator_cpu_pct),
    ];
    for (name, v) in figures {
        if !v.is_finite() {
            bail!("report field {name} is {v}");
        }
    }
    if r.forwarded_pps <= 0.0 {
        bail!("no media was forwarded");
    }
    Ok(())
}

fn write_json(cli: &Cli, name: &str, reports: &[RunReport]) -> anyhow::Result<PathBuf> {
    let path = cli.out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(reports)?)?;
    Ok(path)
}

async fn compare(cli: &Cli, quick: bool, threads: usize) -> anyhow::Result<()> {
    let (sizes, secs): (&[usize], u64) = if quick {
        (&[10, 30], 10)
    } else {
        (&[10, 30, 60, 100], 20)
    };
    let fanout = |n: usize| Scenario {
        shape: Shape::Fanout,
        participants: n + 1,
        publishers: 1,
        duration: Duration::from_secs(secs),
        join_rate: 20.0,
        video_bitrate: 1_000_000,
    };
    let mut scenarios: Vec<Scenario> = sizes.iter().map(|&n| fanout(n)).collect();
    // The headline (the RESULT line) is the largest fan-out, whatever happens to its runs.
    let headline = Load::of(scenarios.last().context("no load to run")?);
    if !quick {
        // The other two room shapes, once each.
        scenarios.push(Scenario {
            shape: Shape::Meeting,
            participants: 8,
            publishers: 8,
            duration: Duration::from_secs(secs),
            join_rate: 10.0,
            video_bitrate: 1_000_000,
        });
        scenarios.push(Scenario {
            shape: Shape::Audio,
            participants: 60,
            publishers: 10,
            duration: Duration::from_secs(secs),
            join_rate: 20.0,
            video_bitrate: 0,
        });
    }
    // Every run is recorded with its load and server, failed or not; nothing is paired by
    // position.
    let mut runs: Vec<Run> = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let load = Load::of(s);
        let port = 28400 + 10 * i as u16;
        for (server, target) in [
            (Server::Sfumato { workers: 1 }, sfumato(cli, 1, port)),
            (Server::Sfumato { workers: 2 }, sfumato(cli, 2, port + 5)),
            (Server::Janus, janus(cli)),
        ] {
            eprintln!("{load}: {server}");
            let outcome = scenario::run(&target, s, threads).await;
            if let Err(e) = &outcome {
                eprintln!("{load}: {server} failed: {e:#}");
            }
            runs.push(Run::new(load, server, outcome));
        }
    }
    println!(
        "Sfumato with `--bandwidth-estimation {}`.\n",
        cli.bandwidth_estimation
    );
    if let Some(r) = runs.iter().find_map(Run::report) {
        println!("{}\n", report::window_note(r));
    }
    println!("{}", compare::markdown(&runs));
    println!(
        "Server CPU per forwarded packet, {} ÷ janus, paired by load:\n",
        compare::BASELINE
    );
    println!("{}", compare::pairs_markdown(&runs));
    let json = cli.out.join("compare.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&compare::json(&runs, headline))?,
    )?;
    let series = |server: Server, f: fn(&RunReport) -> f64| {
        let mut points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.server == server && r.load.shape == Shape::Fanout)
            .filter_map(Run::report)
            .map(|r| (r.forwarded_pps, f(r)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            label: server.to_string(),
            points,
        }
    };
    let servers = [
        Server::Sfumato { workers: 1 },
        Server::Sfumato { workers: 2 },
        Server::Janus,
    ];
    let cpu = servers.map(|s| series(s, |r| r.server_cpu_us_per_pkt));
    let lat = servers.map(|s| series(s, |r| r.latency_p99_ms));
    let png = cli.out.join("compare.png");
    if let Err(e) = report::chart(
        &png,
        ("fan-out: server CPU per forwarded packet (µs)", &cpu),
        ("fan-out: p99 one-way latency (ms)", &lat),
    ) {
        eprintln!("no chart: {e:#}");
    }
    println!("wrote {} and {}", json.display(), png.display());
    println!("{}", compare::result_line(&runs, headline));
    if let Err(why) = compare::pair(&runs, headline) {
        bail!("no valid Sfumato/Janus pair at {headline}: {why}");
    }
    Ok(())
}

/// Fan-out throughput at ≤ 1% loss, one worker against two.
async fn scale(
    cli: &Cli,
    step: usize,
    max: usize,
    secs: u64,
    threads: usize,
    spread_cpus: String,
) -> anyhow::Result<()> {
    let mut table = Vec::new();
    let mut best = Vec::new();
    for (workers, cpus) in [(1, cli.server_cpu.to_string()), (2, spread_cpus)] {
        let mut top: Option<RunReport> = None;
        for (i, n) in (step..=max.max(step)).step_by(step.max(1)).enumerate() {
            let s = Scenario {
                shape: Shape::Fanout,
                participants: n + 1,
                publishers: 1,
                duration: Duration::from_secs(secs),
                join_rate: 40.0,
                video_bitrate: 1_000_000,
            };
            eprintln!("fanout 1→{n}: sfumato, {workers} worker(s) on CPUs {cpus}");
            let port = 29000 + 20 * i as u16 + workers as u16;
            let r = match scenario::run(&sfumato_on(cli, workers, port, cpus.clone()), &s, threads)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("run failed: {e:#}");
                    break;
                }
            };
            let ok = r.loss_pct <= 1.0;
            table.push(r.clone());
            if !ok {
                break;
            }
            top = Some(r);
        }
        if let Some(t) = top {
            best.push((workers, t));
        }
    }
    println!("{}", report::markdown(&table));
    write_json(cli, "scale", &table)?;
    for (workers, r) in &best {
        println!(
            "workers={workers}: {:.0} forwarded packets/s at {:.3}% loss ({} participants), {:.2} µs per packet, p99 {:.2} ms, generator {:.0}% busy",
            r.forwarded_pps, r.loss_pct, r.participants, r.server_cpu_us_per_pkt, r.latency_p99_ms, r.generator_cpu_pct
        );
    }
    if let [(_, one), (_, two)] = best.as_slice() {
        println!(
            "throughput at ≤1% loss, 2 workers / 1 worker: {:.2}",
            two.forwarded_pps / one.forwarded_pps
        );
    }
    Ok(())
}
