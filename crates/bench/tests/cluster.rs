//! `sfumato-bench cluster --quick` at a tiny size (a fan-out 1→4, 3 s windows, two join
//! samples, one receiver per node in recovery and in the drain): it starts Redis and two nodes
//! itself, in a private network namespace of its own, and must end with a RESULT line whose
//! figures are all measured and sane, and a drain whose figures exist and whose drained node
//! exited cleanly (no timing thresholds: those are the benchmark's).
//!
//! Needs the sfumato binary built next to this test's `sfumato-bench` (as `cargo test
//! --workspace` or `cargo build --workspace --bins` leave it; or `SFUMATO_BIN`), Debian's
//! `redis-server` (installed with apt-get if missing), root and `unshare`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use sfumato_bench::cluster::ClusterResult;

fn sfumato_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SFUMATO_BIN") {
        return PathBuf::from(p);
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_sfumato-bench"));
    bench.with_file_name("sfumato")
}

#[test]
fn cluster_quick_at_a_tiny_size_ends_with_a_sane_result_line() {
    let bin = sfumato_bin();
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p sfumato, with --release for a release test run) or set SFUMATO_BIN",
        bin.display()
    );
    let out = std::env::temp_dir().join(format!("sfumato-bench-cluster-{}", std::process::id()));
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_sfumato-bench"))
        .arg("--sfumato-bin")
        .arg(&bin)
        .arg("--out")
        .arg(&out)
        .args([
            "cluster",
            "--quick",
            "--receivers",
            "4",
            "--duration-secs",
            "3",
        ])
        .args(["--join-samples", "2", "--recovery-receivers", "1"])
        .args(["--drain-receivers", "1"])
        .output()
        .expect("running sfumato-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}\n--- stderr ---\n{stderr}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    assert!(run.status.success(), "sfumato-bench cluster failed");
    let last = stdout.lines().last().unwrap_or_default();
    let r = ClusterResult::parse(last).expect("the last line is the RESULT line");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("RESULT")).count(),
        1,
        "exactly one RESULT line"
    );
    let ratio = r.cluster_cpu_ratio.expect("cluster_cpu_ratio measured");
    assert!(ratio > 0.1 && ratio < 10.0, "cluster_cpu_ratio {ratio}");
    let relay = r
        .relay_bytes_per_remote_node
        .expect("relay_bytes_per_remote_node measured");
    // One layer is published: what crosses is about what was published, plus headers.
    assert!(
        relay > 0.5 && relay < 2.0,
        "relay_bytes_per_remote_node {relay}"
    );
    let join = r.remote_join_ms.expect("remote_join_ms measured");
    assert!(join > 0.0 && join < 5_000.0, "remote_join_ms {join}");
    let recovery = r.recovery_s.expect("recovery_s measured");
    assert!(recovery > 0.0 && recovery < 30.0, "recovery_s {recovery}");
    let json = std::fs::read_to_string(out.join("cluster.json")).expect("cluster.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("cluster.json is JSON");
    assert!(
        report["recovery"]["Ok"].is_object(),
        "{}",
        report["recovery"]
    );
    // Node 2's receivers on the lowest simulcast layer: only that layer crosses.
    let low = report["two_nodes_low"]["Ok"]["relay_bytes_per_remote_node"]
        .as_f64()
        .expect("the low-layer run's relay figure");
    assert!(
        low > 0.0 && low < 0.5 * relay,
        "low layer: {low}, all: {relay}"
    );
    // The drain: every figure measured, every node-2 participant moved, node 2 exited with 0.
    let drain = &report["drain"]["Ok"];
    assert!(drain.is_object(), "{}", report["drain"]);
    for k in [
        "drain_gap_ms",
        "drain_publisher_gap_ms",
        "baseline_gap_ms",
        "node_exit_ms",
    ] {
        let v = drain[k].as_f64();
        assert!(v.is_some_and(f64::is_finite), "drain {k}: {}", drain[k]);
    }
    assert_eq!(drain["node_exit_code"].as_i64(), Some(0), "{drain}");
    let moved = drain["moved"].as_array().expect("drain.moved");
    // pub2 and r2-0.
    assert_eq!(moved.len(), 2, "{drain}");
    for m in moved {
        assert!(m["error"].is_null(), "{m}");
        for k in ["move_received_ms", "joined_ms", "keyframes_ms", "left_ms"] {
            assert!(m[k].as_f64().is_some_and(f64::is_finite), "{k}: {m}");
        }
    }
    // Every view of a participant that moved, or of the publisher that moved, saw frames.
    let views = drain["views"].as_array().expect("drain.views");
    assert_eq!(views.len(), 5, "{drain}");
    assert!(
        views.iter().all(|v| v["drain"]["frames"].as_u64() > Some(0)
            && v["baseline"]["frames"].as_u64() > Some(0)),
        "{drain}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
