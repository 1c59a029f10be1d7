//! The Prometheus exposition at `/metrics`: OpenMetrics text through `prometheus-client`,
//! from one registry built per scrape over a snapshot of the node's counters (the workers
//! keep theirs in their engines; the control plane asks for them at each scrape). Labels
//! are bounded: a worker index, a reason, a limit, a direction; never a participant.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sfumato_worker::sfumato_core::WorkerStats;

/// The content type of the exposition (OpenMetrics 1.0, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape shows.
pub struct Snapshot {
    /// By worker index: alive or not.
    pub workers_up: Vec<bool>,
    pub event_task_up: bool,
    pub reports_failed: u64,
    pub rooms: usize,
    pub participants: usize,
    /// What the control plane holds (0 on an idle node: the leak gauges).
    pub held: crate::rooms::Held,
    pub auth_rejected: Vec<(&'static str, u64)>,
    pub limit_hits: Vec<(&'static str, u64)>,
    /// The live workers' counters.
    pub stats: Vec<WorkerStats>,
    /// In a cluster: the live nodes (this one included).
    pub cluster_nodes: Option<usize>,
}

type Labels = Vec<(&'static str, String)>;

/// How a series reads a worker's counters.
type Read = fn(&WorkerStats) -> u64;

/// A per-worker series: name (counters without `_total`, which the encoder adds), help, and
/// how to read it.
type Series = (&'static str, &'static str, Read);

const WORKER_GAUGES: &[Series] = &[
    ("sfumato_worker_peers", "Peer connections", |s| {
        s.peers as u64
    }),
    ("sfumato_worker_tracks", "Tracks published here", |s| {
        s.tracks as u64
    }),
    (
        "sfumato_worker_subscriptions",
        "Subscriptions served here",
        |s| s.subscriptions as u64,
    ),
    (
        "sfumato_worker_sinks",
        "Pipes out: (track, other worker) pairs fed from here",
        |s| s.sinks as u64,
    ),
    ("sfumato_worker_routes", "Tracks this worker routes", |s| {
        s.routes as u64
    }),
    (
        "sfumato_worker_data_members",
        "Participants taking part in data messages here",
        |s| s.data_members as u64,
    ),
    (
        "sfumato_worker_pending_keyframe_requests",
        "Keyframe requests waiting to be merged and sent",
        |s| s.pending_keyframe_requests as u64,
    ),
    (
        "sfumato_worker_addresses",
        "Remote addresses bound to a peer by the demux",
        |s| s.addresses as u64,
    ),
    (
        "sfumato_worker_ufrags",
        "Local ICE ufrags the demux knows",
        |s| s.ufrags as u64,
    ),
    (
        "sfumato_worker_timers",
        "Entries in the worker's timer heap",
        |s| s.timers as u64,
    ),
];

const WORKER_COUNTERS: &[Series] = &[
    ("sfumato_worker_datagrams_in", "Datagrams received", |s| {
        s.datagrams_in
    }),
    ("sfumato_worker_datagrams_out", "Datagrams sent", |s| {
        s.datagrams_out
    }),
    (
        "sfumato_worker_datagrams_dropped",
        "Datagrams dropped (by reason: sfumato_worker_drops)",
        |s| s.datagrams_dropped,
    ),
    (
        "sfumato_worker_bytes_in",
        "Bytes of the datagrams received",
        |s| s.bytes_in,
    ),
    (
        "sfumato_worker_bytes_out",
        "Bytes of the datagrams sent",
        |s| s.bytes_out,
    ),
    ("sfumato_worker_packets_in", "RTP packets routed", |s| {
        s.packets_in
    }),
    (
        "sfumato_worker_packets_forwarded",
        "RTP packets written to subscribers",
        |s| s.packets_forwarded,
    ),
    (
        "sfumato_worker_packets_dropped",
        "RTP packets dropped before routing",
        |s| s.packets_dropped,
    ),
    (
        "sfumato_worker_data_in",
        "Data messages read from members here",
        |s| s.data_in,
    ),
    (
        "sfumato_worker_data_out",
        "Data messages delivered to members here",
        |s| s.data_out,
    ),
    (
        "sfumato_worker_data_dropped",
        "Data messages refused: malformed, not granted, or from no member",
        |s| s.data_dropped,
    ),
    (
        "sfumato_worker_data_lost",
        "Data messages for WebSocket members lost on a full queue to the control plane",
        |s| s.data_lost,
    ),
    (
        "sfumato_worker_pipe_in",
        "Messages from other workers' pipes",
        |s| s.pipe_in,
    ),
    (
        "sfumato_worker_pipe_out",
        "Messages into other workers' pipes",
        |s| s.pipe_out,
    ),
    (
        "sfumato_worker_pipe_dropped",
        "Messages dropped at a full pipe",
        |s| s.pipe_dropped,
    ),
    (
        "sfumato_worker_keyframe_requests_in",
        "Keyframe requests on behalf of subscribers",
        |s| s.keyframe_requests_in,
    ),
    (
        "sfumato_worker_keyframe_requests_sent",
        "Keyframe requests (PLI) sent to publishers or origins",
        |s| s.keyframe_requests_sent,
    ),
    (
        "sfumato_worker_plis_in",
        "RTCP PLIs received from subscribers",
        |s| s.plis_in,
    ),
    (
        "sfumato_worker_firs_in",
        "RTCP FIRs received from subscribers",
        |s| s.firs_in,
    ),
    (
        "sfumato_worker_nacks_in",
        "NACKs received from subscribers",
        |s| s.nacks_in,
    ),
    (
        "sfumato_worker_nacks_out",
        "NACKs sent to publishers",
        |s| s.nacks_out,
    ),
    (
        "sfumato_worker_rtx_out",
        "Packets retransmitted to subscribers",
        |s| s.rtx_out,
    ),
    (
        "sfumato_worker_peers_failed",
        "Peers dropped because handling them panicked",
        |s| s.peers_failed,
    ),
    ("sfumato_worker_plans", "Reconcile plans applied", |s| {
        s.plans
    }),
    (
        "sfumato_worker_repairs",
        "Differences that reconciling repaired",
        |s| s.repairs,
    ),
];

/// `sfumato_worker_drops_total{reason}`: every drop counter of a worker under one name.
const DROP_REASONS: &[(&str, Read)] = &[
    ("unknown_source", |s| s.datagrams_unknown),
    ("rejected", |s| s.datagrams_rejected),
    ("send_failed", |s| s.send_failed),
    ("no_route", |s| s.packets_no_route),
    ("unknown_stream", |s| s.packets_unknown_stream),
    ("pipe_full", |s| s.pipe_dropped),
    ("relay_unknown_track", |s| s.relay_dropped),
];

fn worker(s: &WorkerStats) -> Labels {
    vec![("worker", s.worker.to_string())]
}

fn counter(
    reg: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, family);
}

fn gauge(
    reg: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in values {
        family
            .get_or_create(&labels)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    reg.register(name, help, family);
}

fn one(v: impl TryInto<u64>) -> [(Labels, u64); 1] {
    [(Vec::new(), v.try_into().unwrap_or(u64::MAX))]
}

/// The exposition of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut reg = Registry::default();
    let r = &mut reg;
    gauge(
        r,
        "sfumato_worker_up",
        "Whether the worker thread runs",
        s.workers_up
            .iter()
            .enumerate()
            .map(|(i, up)| (vec![("worker", i.to_string())], u64::from(*up))),
    );
    let alive = s.workers_up.iter().filter(|u| **u).count();
    gauge(r, "sfumato_workers_alive", "Live workers", one(alive));
    gauge(
        r,
        "sfumato_workers_dead",
        "Dead workers (restart the node)",
        one(s.workers_up.len() - alive),
    );
    gauge(
        r,
        "sfumato_event_task_up",
        "Whether the control plane applies the workers' reports",
        one(u64::from(s.event_task_up)),
    );
    counter(
        r,
        "sfumato_worker_reports_failed",
        "Worker reports lost to a panic while applied",
        one(s.reports_failed),
    );
    gauge(r, "sfumato_rooms", "Rooms on this node", one(s.rooms));
    gauge(
        r,
        "sfumato_participants",
        "Participants on this node",
        one(s.participants),
    );
    for (name, help, v) in [
        (
            "sfumato_peers",
            "Peer connections the control plane knows",
            s.held.peers,
        ),
        (
            "sfumato_tracks",
            "Tracks the control plane knows",
            s.held.tracks,
        ),
        (
            "sfumato_whip_sessions",
            "WHIP and WHEP sessions",
            s.held.sessions,
        ),
        (
            "sfumato_topology_peers",
            "Peers in the media topology",
            s.held.topology_peers,
        ),
        (
            "sfumato_topology_tracks",
            "Track entries in the media topology",
            s.held.topology_tracks,
        ),
        (
            "sfumato_topology_data_members",
            "Participants taking part in data messages",
            s.held.topology_members,
        ),
    ] {
        gauge(r, name, help, one(v));
    }
    counter(
        r,
        "sfumato_auth_rejected",
        "Refused tokens (joins, WHIP/WHEP, admin API) by reason",
        s.auth_rejected
            .iter()
            .map(|(reason, n)| (vec![("reason", (*reason).to_string())], *n)),
    );
    counter(
        r,
        "sfumato_limit_hits",
        "Requests refused by a limit, by limit",
        s.limit_hits
            .iter()
            .map(|(limit, n)| (vec![("limit", (*limit).to_string())], *n)),
    );
    if let Some(n) = s.cluster_nodes {
        gauge(
            r,
            "sfumato_cluster_nodes",
            "Live nodes of the cluster",
            one(n),
        );
    }
    for (name, help, get) in WORKER_GAUGES {
        gauge(r, name, help, s.stats.iter().map(|w| (worker(w), get(w))));
    }
    for (name, help, get) in WORKER_COUNTERS {
        counter(r, name, help, s.stats.iter().map(|w| (worker(w), get(w))));
    }
    counter(
        r,
        "sfumato_worker_drops",
        "Datagrams, packets and pipe messages dropped, by reason",
        s.stats.iter().flat_map(|w| {
            DROP_REASONS.iter().map(move |(reason, get)| {
                let mut l = worker(w);
                l.push(("reason", (*reason).to_string()));
                (l, get(w))
            })
        }),
    );
    counter(
        r,
        "sfumato_worker_layer_changes",
        "Layer switches decided by the downlink estimate, by direction",
        s.stats.iter().flat_map(|w| {
            [("up", w.layer_ups), ("down", w.layer_downs)].map(|(dir, n)| {
                let mut l = worker(w);
                l.push(("direction", dir.to_string()));
                (l, n)
            })
        }),
    );
    let busy = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    for w in &s.stats {
        busy.get_or_create(&worker(w))
            .inc_by(w.busy_ns as f64 / 1e9);
    }
    r.register(
        "sfumato_worker_busy_seconds",
        "Time the worker's event loop spent working (not waiting)",
        busy,
    );
    if s.cluster_nodes.is_some() {
        gauge(
            r,
            "sfumato_worker_relayed_in",
            "Tracks received from other nodes",
            s.stats.iter().map(|w| (worker(w), w.relayed_in as u64)),
        );
        gauge(
            r,
            "sfumato_worker_relayed_out",
            "(track, node) pairs relayed to other nodes",
            s.stats.iter().map(|w| (worker(w), w.relayed_out as u64)),
        );
        let link = |get: fn(&sfumato_worker::sfumato_core::link::LinkStats) -> u64| {
            s.stats
                .iter()
                .filter_map(move |w| Some((worker(w), get(w.link.as_deref()?))))
        };
        counter(
            r,
            "sfumato_relay_bytes_sent",
            "Bytes sent to other nodes",
            link(|l| l.bytes_sent),
        );
        counter(
            r,
            "sfumato_relay_bytes_received",
            "Bytes received from other nodes",
            link(|l| l.bytes_received),
        );
        counter(
            r,
            "sfumato_relay_lost",
            "Relayed media given up on after every NACK",
            link(|l| l.lost),
        );
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::error!("encoding metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_names_scrapers_know_and_labels_workers() {
        let w = WorkerStats {
            worker: 1,
            datagrams_in: 7,
            bytes_out: 99,
            layer_downs: 2,
            busy_ns: 1_500_000_000,
            ..Default::default()
        };
        let text = render(&Snapshot {
            workers_up: vec![true, true],
            event_task_up: true,
            reports_failed: 0,
            rooms: 3,
            participants: 5,
            held: crate::rooms::Held {
                peers: 0,
                tracks: 2,
                sessions: 0,
                topology_peers: 0,
                topology_tracks: 0,
                topology_members: 0,
            },
            auth_rejected: vec![("expired", 4)],
            limit_hits: vec![("rooms", 1)],
            stats: vec![w],
            cluster_nodes: None,
        });
        for line in [
            "sfumato_rooms 3",
            "sfumato_participants 5",
            "sfumato_tracks 2",
            "sfumato_worker_up{worker=\"1\"} 1",
            "sfumato_auth_rejected_total{reason=\"expired\"} 4",
            "sfumato_limit_hits_total{limit=\"rooms\"} 1",
            "sfumato_worker_datagrams_in_total{worker=\"1\"} 7",
            "sfumato_worker_bytes_out_total{worker=\"1\"} 99",
            "sfumato_worker_layer_changes_total{worker=\"1\",direction=\"down\"} 2",
            "sfumato_worker_busy_seconds_total{worker=\"1\"} 1.5",
            "sfumato_worker_drops_total{worker=\"1\",reason=\"pipe_full\"} 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("relayed"),
            "no relay series outside a cluster"
        );
    }
}
