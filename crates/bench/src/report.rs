//! What one run measured, and how runs are shown: a markdown table with the runs side by side,
//! JSON, and a PNG chart of CPU per packet and latency against load. Pairing the servers'
//! runs and the `RESULT` line are [`crate::compare`]'s.

use std::fmt::Write;
use std::path::Path;

use anyhow::{anyhow, Context};
use serde::Serialize;

/// The figures of one scenario run against one target. Everything but join time, NACKs and
/// PLIs covers one steady-state window, `duration_s` long, opening `warmup_s` after the last
/// join.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub target: String,
    pub scenario: String,
    pub workers: Option<usize>,
    pub participants: usize,
    pub publishers: usize,
    /// From the last join to the window's start.
    pub warmup_s: f64,
    /// The window's length.
    pub duration_s: f64,
    /// Media packets the generator's subscribers received per second within the window
    /// (same measure for every target: what the SFU delivered).
    pub forwarded_pps: f64,
    /// Server CPU (user + system) over the window, in % of one core.
    pub server_cpu_pct: f64,
    pub server_cpu_us_per_pkt: f64,
    /// Resident memory growth of the server from idle to loaded, per subscription.
    pub server_kib_per_subscription: f64,
    /// Packets the publishers sent within the window, summed over the streams received.
    pub packets_expected: u64,
    /// Of those, packets that did not arrive (by a second after the window).
    pub packets_lost: u64,
    /// `packets_lost / packets_expected`, in %.
    pub loss_pct: f64,
    /// One-way latency of the packets sent within the window.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub join_p50_ms: f64,
    pub join_max_ms: f64,
    /// The part of the join spent connecting (ICE and DTLS), median.
    pub connect_p50_ms: f64,
    pub nacks: u64,
    pub plis: u64,
    /// The generator's own CPU over the window, in % of the cores it may use.
    pub generator_cpu_pct: f64,
}

/// A figure of a table: label and how to print one report's value.
pub(crate) type Row = (&'static str, fn(&RunReport) -> String);

/// What ran: the first rows of the side-by-side table.
const SETUP: &[Row] = &[
    ("participants / publishers", |r| {
        format!("{} / {}", r.participants, r.publishers)
    }),
    ("workers", |r| {
        r.workers.map_or("-".into(), |w| w.to_string())
    }),
];

/// What was measured.
pub(crate) const FIGURES: &[Row] = &[
    ("forwarded packets/s", |r| format!("{:.0}", r.forwarded_pps)),
    ("server CPU (% of a core)", |r| {
        format!("{:.1}", r.server_cpu_pct)
    }),
    ("server CPU per forwarded packet (µs)", |r| {
        format!("{:.2}", r.server_cpu_us_per_pkt)
    }),
    ("server memory per subscription (KiB)", |r| {
        format!("{:.1}", r.server_kib_per_subscription)
    }),
    ("loss (%)", |r| format!("{:.3}", r.loss_pct)),
    ("packets lost / sent in the window", |r| {
        format!("{} / {}", r.packets_lost, r.packets_expected)
    }),
    ("one-way latency p50 (ms)", |r| {
        format!("{:.2}", r.latency_p50_ms)
    }),
    ("one-way latency p99 (ms)", |r| {
        format!("{:.2}", r.latency_p99_ms)
    }),
    ("join time p50 / max (ms)", |r| {
        format!("{:.0} / {:.0}", r.join_p50_ms, r.join_max_ms)
    }),
    ("of which ICE + DTLS, p50 (ms)", |r| {
        format!("{:.0}", r.connect_p50_ms)
    }),
    ("NACKs / PLIs (whole run)", |r| {
        format!("{} / {}", r.nacks, r.plis)
    }),
    ("generator CPU (% of its cores)", |r| {
        format!("{:.1}", r.generator_cpu_pct)
    }),
];

/// A markdown table with one column per report.
pub fn markdown(reports: &[RunReport]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| |");
    for r in reports {
        let _ = write!(out, " {} ({}) |", r.target, r.scenario);
    }
    let _ = write!(out, "\n|---|");
    for _ in reports {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for (label, value) in SETUP.iter().chain(FIGURES) {
        let _ = write!(out, "| {label} |");
        for r in reports {
            let _ = write!(out, " {} |", value(r));
        }
        out.push('\n');
    }
    out
}

/// What every table of runs says about how its figures were taken.
pub fn window_note(r: &RunReport) -> String {
    format!(
        "Every figure but join time, NACKs and PLIs covers the same steady-state window: \
         {:.0} s from {:.0} s after the last join (server CPU, packets forwarded; loss and \
         latency of the packets sent in the window, which may arrive up to {:.0} s after it).",
        r.duration_s,
        r.warmup_s,
        crate::scenario::GRACE.as_secs_f64()
    )
}

/// One series of a chart: a label and (load, value) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font for chart text once; charts need one.
fn ensure_font() -> anyhow::Result<()> {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
            })
        })
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "no font for charts (install fonts-dejavu-core): looked in {FONT_PATHS:?}"
        ))
    }
}

/// Draws two charts side by side into one PNG: `left` and `right` series against load.
pub fn chart(path: &Path, left: (&str, &[Series]), right: (&str, &[Series])) -> anyhow::Result<()> {
    use plotters::prelude::*;
    ensure_font()?;
    let root = BitMapBackend::new(path, (1280, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let halves = root.split_evenly((1, 2));
    for (area, (title, series)) in halves.iter().zip([left, right]) {
        let max_x = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0, f64::max)
            * 1.1;
        let max_y = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.001, f64::max)
            * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("forwarded packets/s")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e}"))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, cpu: f64, loss: f64) -> RunReport {
        RunReport {
            target: target.into(),
            scenario: "fanout".into(),
            workers: Some(1),
            participants: 11,
            publishers: 1,
            warmup_s: 3.0,
            duration_s: 10.0,
            forwarded_pps: 1000.0,
            server_cpu_pct: 10.0,
            server_cpu_us_per_pkt: cpu,
            server_kib_per_subscription: 12.0,
            packets_expected: 10_000,
            packets_lost: (loss * 100.0) as u64,
            loss_pct: loss,
            latency_p50_ms: 0.4,
            latency_p99_ms: 1.25,
            join_p50_ms: 80.0,
            join_max_ms: 120.0,
            connect_p50_ms: 30.0,
            nacks: 0,
            plis: 2,
            generator_cpu_pct: 30.0,
        }
    }

    #[test]
    fn table_has_a_column_per_report() {
        let t = markdown(&[report("sfumato", 10.0, 0.0), report("janus", 40.0, 0.5)]);
        assert!(t.starts_with("| | sfumato (fanout) | janus (fanout) |"));
        assert!(t.contains("| server CPU per forwarded packet (µs) | 10.00 | 40.00 |"));
        assert_eq!(t.lines().count(), 2 + SETUP.len() + FIGURES.len());
    }

    #[test]
    fn chart_renders_a_png() {
        if ensure_font().is_err() {
            return; // no font on this machine; the command reports it
        }
        let path = std::env::temp_dir().join(format!("sfumato-chart-{}.png", std::process::id()));
        let s = [Series {
            label: "sfumato".into(),
            points: vec![(100.0, 10.0), (1000.0, 8.0)],
        }];
        chart(&path, ("CPU per packet (µs)", &s), ("p99 latency (ms)", &s)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::remove_file(&path).unwrap();
    }
}
