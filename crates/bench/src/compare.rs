//! The bookkeeping of a compare run: every run is keyed by its load (room shape and size) and
//! its server; Sfumato and Janus are paired by that key alone, a failed or missing run shows
//! as a failed row with its error and is never compared, and the `RESULT` line names the load
//! it speaks of, or says why that load has no valid pair.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::report::{RunReport, FIGURES};
use crate::scenario::{Scenario, Shape};

/// What pairs runs of different servers: the room's shape and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Load {
    pub shape: Shape,
    pub participants: usize,
    pub publishers: usize,
}

impl Load {
    /// The load a scenario puts on a server.
    pub fn of(s: &Scenario) -> Load {
        Load {
            shape: s.shape,
            participants: s.participants,
            publishers: s.publishers(),
        }
    }
}

/// `fanout-1to30` (one publisher, 30 receivers), `meeting-8x8`, `audio-60p-10pub`.
impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            Shape::Fanout => write!(f, "fanout-1to{}", self.participants.saturating_sub(1)),
            Shape::Meeting => write!(f, "meeting-{0}x{0}", self.participants),
            Shape::Audio => write!(f, "audio-{}p-{}pub", self.participants, self.publishers),
        }
    }
}

impl Serialize for Load {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A server under test, as configured for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    Sfumato { workers: usize },
    Janus,
}

/// The Sfumato configuration Janus is compared with: one worker, on one core like Janus.
pub const BASELINE: Server = Server::Sfumato { workers: 1 };

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Sfumato { workers: 1 } => write!(f, "sfumato 1 worker"),
            Server::Sfumato { workers } => write!(f, "sfumato {workers} workers"),
            Server::Janus => write!(f, "janus"),
        }
    }
}

impl Serialize for Server {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One run of a compare: what ran, and its report or why it failed.
#[derive(Debug, Clone)]
pub struct Run {
    pub load: Load,
    pub server: Server,
    /// The report, or the error (every line of it).
    pub outcome: Result<RunReport, String>,
}

impl Run {
    /// A run's entry from what [`crate::scenario::run`] returned.
    pub fn new(load: Load, server: Server, outcome: anyhow::Result<RunReport>) -> Run {
        Run {
            load,
            server,
            outcome: outcome.map_err(|e| format!("{e:#}")),
        }
    }

    /// The report, if the run succeeded.
    pub fn report(&self) -> Option<&RunReport> {
        self.outcome.as_ref().ok()
    }
}

impl Serialize for Run {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            load: Load,
            server: Server,
            #[serde(skip_serializing_if = "Option::is_none")]
            report: Option<&'a RunReport>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        Entry {
            load: self.load,
            server: self.server,
            report: self.outcome.as_ref().ok(),
            error: self.outcome.as_ref().err().map(String::as_str),
        }
        .serialize(s)
    }
}

/// The report of `server` at `load`, or why there is none: no such run, more than one, or
/// a failed one (with its error on one line, cut short).
pub fn find(runs: &[Run], load: Load, server: Server) -> Result<&RunReport, String> {
    let matching: Vec<&Run> = runs
        .iter()
        .filter(|r| r.load == load && r.server == server)
        .collect();
    let run = match matching.as_slice() {
        [run] => run,
        [] => return Err(format!("no {server} run at {load}")),
        more => {
            return Err(format!(
                "{} {server} runs at {load}, cannot tell which to compare",
                more.len()
            ))
        }
    };
    run.outcome
        .as_ref()
        .map_err(|e| format!("{server} failed at {load}: {}", one_line(e, 160)))
}

/// Sfumato ([`BASELINE`]) and Janus at one load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair<'a> {
    pub load: Load,
    pub sfumato: &'a RunReport,
    pub janus: &'a RunReport,
    /// Sfumato's server CPU per forwarded packet ÷ Janus'.
    pub cpu_per_pkt_ratio: f64,
}

/// The pair at `load`, or why it has none; never a run of another load.
pub fn pair(runs: &[Run], load: Load) -> Result<Pair<'_>, String> {
    let (sfumato, janus) = match (find(runs, load, BASELINE), find(runs, load, Server::Janus)) {
        (Ok(s), Ok(j)) => (s, j),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(a), Err(b)) => return Err(format!("{a}; {b}")),
    };
    for (server, r) in [(BASELINE, sfumato), (Server::Janus, janus)] {
        let v = r.server_cpu_us_per_pkt;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!(
                "{server} measured no CPU per packet at {load} ({v})"
            ));
        }
    }
    Ok(Pair {
        load,
        sfumato,
        janus,
        cpu_per_pkt_ratio: sfumato.server_cpu_us_per_pkt / janus.server_cpu_us_per_pkt,
    })
}

/// The distinct loads of `runs`, in the order they first ran.
pub fn loads(runs: &[Run]) -> Vec<Load> {
    let mut out: Vec<Load> = Vec::new();
    for r in runs {
        if !out.contains(&r.load) {
            out.push(r.load);
        }
    }
    out
}

/// The last line of a compare run, about `load` only:
/// `RESULT cpu_per_pkt_ratio=0.291 loss_sfumato=0.000 loss_janus=0.000 p99_ms_sfumato=14.59
/// load=fanout-1to100`. Without a valid pair at `load` the ratio is `na` and a `reason="…"`
/// ends the line; a figure of a run that did not succeed is `na` too.
pub fn result_line(runs: &[Run], load: Load) -> String {
    let na = || "na".to_string();
    let sfumato = find(runs, load, BASELINE).ok();
    let janus = find(runs, load, Server::Janus).ok();
    let (ratio, reason) = match pair(runs, load) {
        Ok(p) => (format!("{:.3}", p.cpu_per_pkt_ratio), None),
        Err(why) => (na(), Some(why)),
    };
    let mut line = format!(
        "RESULT cpu_per_pkt_ratio={ratio} loss_sfumato={} loss_janus={} p99_ms_sfumato={} \
         load={load}",
        sfumato.map_or_else(na, |r| format!("{:.3}", r.loss_pct)),
        janus.map_or_else(na, |r| format!("{:.3}", r.loss_pct)),
        sfumato.map_or_else(na, |r| format!("{:.2}", r.latency_p99_ms)),
    );
    if let Some(why) = reason {
        line.push_str(&format!(
            " reason=\"{}\"",
            one_line(&why, 240).replace('"', "'")
        ));
    }
    line
}

/// One row per run, in the order given: its figures, or `failed` and its error.
pub fn markdown(runs: &[Run]) -> String {
    let mut out = String::from("| load | server |");
    let mut rule = String::from("|---|---|");
    for (label, _) in FIGURES {
        out.push_str(&format!(" {label} |"));
        rule.push_str("---|");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for run in runs {
        out.push_str(&format!("| {} | {} |", run.load, run.server));
        match &run.outcome {
            Ok(r) => {
                for (_, value) in FIGURES {
                    out.push_str(&format!(" {} |", value(r)));
                }
            }
            Err(e) => {
                out.push_str(&format!(" **failed**: {} |", one_line(e, 300)));
                for _ in 1..FIGURES.len() {
                    out.push_str(" – |");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// One row per load: Sfumato's and Janus' CPU per packet and their ratio, or why the load
/// has none.
pub fn pairs_markdown(runs: &[Run]) -> String {
    let mut out = format!(
        "| load | {BASELINE}: µs per packet | janus: µs per packet | ratio |\n|---|---|---|---|\n"
    );
    for load in loads(runs) {
        match pair(runs, load) {
            Ok(p) => out.push_str(&format!(
                "| {load} | {:.2} | {:.2} | {:.3} |\n",
                p.sfumato.server_cpu_us_per_pkt, p.janus.server_cpu_us_per_pkt, p.cpu_per_pkt_ratio
            )),
            Err(why) => {
                let cpu = |server| {
                    find(runs, load, server)
                        .map_or(String::new(), |r| format!("{:.2}", r.server_cpu_us_per_pkt))
                };
                out.push_str(&format!(
                    "| {load} | {} | {} | not compared: {} |\n",
                    cpu(BASELINE),
                    cpu(Server::Janus),
                    one_line(&why, 300)
                ))
            }
        }
    }
    out
}

/// Everything a compare run found, for `compare.json`: the runs, the pairs and the `RESULT`
/// line about `headline`.
pub fn json(runs: &[Run], headline: Load) -> serde_json::Value {
    let pairs: Vec<serde_json::Value> = loads(runs)
        .into_iter()
        .map(|load| match pair(runs, load) {
            Ok(p) => serde_json::json!({"load": load, "cpu_per_pkt_ratio": p.cpu_per_pkt_ratio}),
            Err(why) => serde_json::json!({"load": load, "not_compared": why}),
        })
        .collect();
    serde_json::json!({
        "headline": headline,
        "result": result_line(runs, headline),
        "runs": runs,
        "pairs": pairs,
    })
}

/// `text` on one line (line breaks become ` / `, `|` becomes `/` so a table cell holds it),
/// cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .replace('|', "/");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}
