//! A compare run's pairing and its `RESULT` line, without running anything: runs are paired
//! by load and server only, a failed or missing run is shown with its error and never
//! compared, and the `RESULT` line speaks of the load it names or says why it cannot.

use sfumato_bench::compare::{self, Load, Run, Server, BASELINE};
use sfumato_bench::report::RunReport;
use sfumato_bench::scenario::Shape;

fn fanout(n: usize) -> Load {
    Load {
        shape: Shape::Fanout,
        participants: n + 1,
        publishers: 1,
    }
}

fn report(server: Server, cpu_us: f64, loss_pct: f64, p99_ms: f64) -> RunReport {
    let (target, workers) = match server {
        Server::Sfumato { workers } => ("sfumato", Some(workers)),
        Server::Janus => ("janus", None),
    };
    RunReport {
        target: target.into(),
        scenario: "fanout".into(),
        workers,
        participants: 31,
        publishers: 1,
        warmup_s: 3.0,
        duration_s: 10.0,
        forwarded_pps: 5190.0,
        server_cpu_pct: cpu_us * 5190.0 / 1e4,
        server_cpu_us_per_pkt: cpu_us,
        server_kib_per_subscription: 300.0,
        packets_expected: 51_900,
        packets_lost: (loss_pct * 519.0) as u64,
        loss_pct,
        latency_p50_ms: 1.0,
        latency_p99_ms: p99_ms,
        join_p50_ms: 60.0,
        join_max_ms: 70.0,
        connect_p50_ms: 45.0,
        nacks: 0,
        plis: 4,
        generator_cpu_pct: 7.0,
    }
}

fn ok(load: Load, server: Server, cpu_us: f64, loss_pct: f64, p99_ms: f64) -> Run {
    Run {
        load,
        server,
        outcome: Ok(report(server, cpu_us, loss_pct, p99_ms)),
    }
}

fn failed(load: Load, server: Server, error: &str) -> Run {
    Run::new(load, server, Err(anyhow::anyhow!(error.to_string())))
}

const TWO: Server = Server::Sfumato { workers: 2 };

/// The quick compare's order of runs, with Janus failing at the first load.
fn janus_fails_first() -> Vec<Run> {
    vec![
        ok(fanout(10), BASELINE, 22.0, 0.0, 4.0),
        ok(fanout(10), TWO, 27.0, 0.0, 2.5),
        failed(
            fanout(10),
            Server::Janus,
            "janus' HTTP API did not answer\njanus log tail:\n[ERR] |boom|",
        ),
        ok(fanout(30), BASELINE, 15.0, 0.0, 5.0),
        ok(fanout(30), TWO, 18.0, 0.0, 5.5),
        ok(fanout(30), Server::Janus, 50.0, 0.25, 13.4),
    ]
}

#[test]
fn loads_are_named_by_shape_and_size() {
    assert_eq!(fanout(30).to_string(), "fanout-1to30");
    let meeting = Load {
        shape: Shape::Meeting,
        participants: 8,
        publishers: 8,
    };
    assert_eq!(meeting.to_string(), "meeting-8x8");
    let audio = Load {
        shape: Shape::Audio,
        participants: 60,
        publishers: 10,
    };
    assert_eq!(audio.to_string(), "audio-60p-10pub");
    assert_eq!(BASELINE.to_string(), "sfumato 1 worker");
    assert_eq!(TWO.to_string(), "sfumato 2 workers");
}

#[test]
fn a_failed_janus_run_does_not_shift_later_pairs() {
    let runs = janus_fails_first();
    // The failed load is not compared, and says why.
    let why = compare::pair(&runs, fanout(10)).expect_err("janus failed at 1→10");
    assert!(why.starts_with("janus failed at fanout-1to10: janus' HTTP API did not answer"));
    // The next load pairs its own runs (by position it would have paired Sfumato's 1→10
    // with Janus' 1→30).
    let p = compare::pair(&runs, fanout(30)).expect("both ran at 1→30");
    assert_eq!(p.load, fanout(30));
    assert_eq!(p.sfumato.server_cpu_us_per_pkt, 15.0);
    assert_eq!(p.janus.server_cpu_us_per_pkt, 50.0);
    assert!((p.cpu_per_pkt_ratio - 0.3).abs() < 1e-12);
    // The order of the runs does not matter.
    let mut reversed = runs.clone();
    reversed.reverse();
    assert_eq!(compare::pair(&reversed, fanout(30)), Ok(p));
}

#[test]
fn result_line_names_its_load() {
    let runs = janus_fails_first();
    assert_eq!(
        compare::result_line(&runs, fanout(30)),
        "RESULT cpu_per_pkt_ratio=0.300 loss_sfumato=0.000 loss_janus=0.250 \
         p99_ms_sfumato=5.00 load=fanout-1to30"
    );
}

#[test]
fn result_line_never_falls_back_to_another_load() {
    // Janus ran at 1→10 but failed at 1→30, the load the line is about.
    let mut runs = vec![
        ok(fanout(10), BASELINE, 22.0, 0.0, 4.0),
        ok(fanout(10), Server::Janus, 46.0, 0.0, 6.4),
        ok(fanout(30), BASELINE, 15.0, 0.0, 5.0),
        failed(fanout(30), Server::Janus, "a publisher did not connect"),
    ];
    let line = compare::result_line(&runs, fanout(30));
    assert_eq!(
        line,
        "RESULT cpu_per_pkt_ratio=na loss_sfumato=0.000 loss_janus=na p99_ms_sfumato=5.00 \
         load=fanout-1to30 reason=\"janus failed at fanout-1to30: a publisher did not connect\""
    );
    assert!(!line.contains("0.326"), "Janus' 1→10 run must not stand in");
    // Missing altogether: the same, with its own reason.
    runs.pop();
    assert_eq!(
        compare::result_line(&runs, fanout(30)),
        "RESULT cpu_per_pkt_ratio=na loss_sfumato=0.000 loss_janus=na p99_ms_sfumato=5.00 \
         load=fanout-1to30 reason=\"no janus run at fanout-1to30\""
    );
    // Sfumato failed: none of its figures either.
    let runs = vec![
        failed(fanout(30), BASELINE, "sfumato did not answer /healthz"),
        ok(fanout(30), Server::Janus, 50.0, 0.0, 13.0),
    ];
    assert_eq!(
        compare::result_line(&runs, fanout(30)),
        "RESULT cpu_per_pkt_ratio=na loss_sfumato=na loss_janus=0.000 p99_ms_sfumato=na \
         load=fanout-1to30 reason=\"sfumato 1 worker failed at fanout-1to30: sfumato did not \
         answer /healthz\""
    );
}

#[test]
fn a_pair_needs_cpu_figures_and_exactly_one_run_each() {
    let runs = vec![
        ok(fanout(30), BASELINE, 15.0, 0.0, 5.0),
        ok(fanout(30), Server::Janus, 0.0, 0.0, 13.0),
    ];
    let why = compare::pair(&runs, fanout(30)).expect_err("no Janus CPU");
    assert!(why.contains("janus measured no CPU per packet"), "{why}");
    let runs = vec![
        ok(fanout(30), BASELINE, 15.0, 0.0, 5.0),
        ok(fanout(30), BASELINE, 16.0, 0.0, 5.0),
        ok(fanout(30), Server::Janus, 50.0, 0.0, 13.0),
    ];
    let why = compare::pair(&runs, fanout(30)).expect_err("two baselines");
    assert!(why.contains("2 sfumato 1 worker runs"), "{why}");
    // The two-worker run is never the baseline.
    let runs = vec![
        ok(fanout(30), TWO, 15.0, 0.0, 5.0),
        ok(fanout(30), Server::Janus, 50.0, 0.0, 13.0),
    ];
    let why = compare::pair(&runs, fanout(30)).expect_err("no one-worker run");
    assert_eq!(why, "no sfumato 1 worker run at fanout-1to30");
}

#[test]
fn tables_show_a_failed_run_as_a_failed_row() {
    let runs = janus_fails_first();
    let table = compare::markdown(&runs);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + runs.len(), "{table}");
    let cells = |l: &str| l.matches('|').count();
    assert!(lines.iter().all(|l| cells(l) == cells(lines[0])), "{table}");
    assert!(lines[2].starts_with("| fanout-1to10 | sfumato 1 worker | "));
    // The error on one line, with no cell separator in it.
    assert!(
        lines[4].starts_with(
            "| fanout-1to10 | janus | **failed**: janus' HTTP API did not answer / janus log \
             tail: / [ERR] /boom/ | – |"
        ),
        "{}",
        lines[4]
    );
    assert!(lines[7].starts_with("| fanout-1to30 | janus | "));

    let pairs = compare::pairs_markdown(&runs);
    let lines: Vec<&str> = pairs.lines().collect();
    assert_eq!(lines.len(), 4, "{pairs}");
    assert!(
        lines[2].starts_with("| fanout-1to10 | 22.00 |  | not compared: janus failed at"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "| fanout-1to30 | 15.00 | 50.00 | 0.300 |");
}

#[test]
fn json_keeps_every_run_and_the_headline() {
    let runs = janus_fails_first();
    let v = compare::json(&runs, fanout(30));
    assert_eq!(v["headline"], "fanout-1to30");
    assert_eq!(v["result"], compare::result_line(&runs, fanout(30)));
    let entries = v["runs"].as_array().expect("runs");
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[2]["server"], "janus");
    assert_eq!(entries[2]["load"], "fanout-1to10");
    assert!(entries[2]["report"].is_null());
    assert!(entries[2]["error"]
        .as_str()
        .is_some_and(|e| e.contains("[ERR] |boom|")));
    assert_eq!(entries[5]["report"]["server_cpu_us_per_pkt"], 50.0);
    assert!(v["pairs"][0]["not_compared"].is_string());
    assert_eq!(v["pairs"][1]["cpu_per_pkt_ratio"], 0.3);
}

#[test]
fn one_line_cuts_long_errors() {
    assert_eq!(compare::one_line("a\n\n  b |c|\n", 100), "a / b /c/");
    let long = "x".repeat(50);
    let cut = compare::one_line(&long, 10);
    assert_eq!(cut.chars().count(), 10);
    assert!(cut.ends_with('…'));
}
