//! Measurement 5, **drain**: a room on a fresh two-node cluster (a publisher and receivers on
//! each node), then node 2 drained (`POST /api/nodes/{id}/drain`): its participants move to
//! node 1 make-before-break as the SDK does ([`super::roam`]). What each participant shows of
//! each publisher is rebuilt from the arrival of every video frame's first packet, and its
//! longest gap taken over the drain and over an equal window before it.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::Serialize;

use super::roam::{signed_secs, Retired, RoamEvent, Roamer, Roaming};
use super::{media, stats_until, Cluster, ClusterOptions};
use crate::fleet::{Fleet, FrameArrival};
use crate::media::{base_source, nanos_since, StreamKind};

/// A view's drain window ends this long after the last of its two participants left its old
/// session.
pub const AFTER_LEAVE: Duration = Duration::from_secs(2);

/// Steady flow before the drain: the baseline window (as long as the drain's, a few
/// seconds) must fall within it.
const LEAD: Duration = Duration::from_secs(6);

/// The longest gap in what one participant shows of one publisher, over one window.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// The window's length (s).
    pub window_s: f64,
    /// The longest interval between consecutive frames on show, or between the window's
    /// edges and the frames nearest them (ms).
    pub ms: f64,
    /// Where it began (s since the drain request; negative before it).
    pub at_s: f64,
    /// How far apart the publisher sent the two frames around it (ms; `None` at the window's
    /// edge): about the gap, the publisher (the generator) paused; far less, the frames were
    /// held up on their way.
    pub sent_apart_ms: Option<f64>,
    /// The one-way latency of the frame that ended it (ms).
    pub end_latency_ms: Option<f64>,
    /// Frames on show in the window.
    pub frames: usize,
}

impl Gap {
    /// The longest gap of `shown` (in arrival order) within `[from, to]`; times relative to
    /// `t0`, latencies on the fleet's clock `epoch`.
    fn of(shown: &[FrameArrival], from: Instant, to: Instant, t0: Instant, epoch: Instant) -> Gap {
        let at: Vec<Instant> = shown.iter().map(|f| f.at).collect();
        let (gap, began) = longest_gap(&at, from, to);
        let before = shown.iter().find(|f| f.at == began);
        let after = shown.iter().find(|f| f.at == began + gap);
        let ms = |ns: u64| ns as f64 / 1e6;
        Gap {
            window_s: to.saturating_duration_since(from).as_secs_f64(),
            ms: gap.as_secs_f64() * 1e3,
            at_s: signed_secs(began, t0),
            sent_apart_ms: before
                .zip(after)
                .map(|(a, b)| ms(b.sent_ns.saturating_sub(a.sent_ns))),
            end_latency_ms: after.map(|b| ms(nanos_since(epoch, b.at).saturating_sub(b.sent_ns))),
            frames: at.iter().filter(|&&t| t >= from && t <= to).count(),
        }
    }
}

/// What one participant shows of one publisher over the drain, and before it.
#[derive(Debug, Clone, Serialize)]
pub struct DrainView {
    pub viewer: String,
    pub publisher: String,
    /// The viewer was on node 2 and moved.
    pub viewer_moved: bool,
    /// The publisher was on node 2 and moved.
    pub publisher_moved: bool,
    /// From the drain request until [`AFTER_LEAVE`] after the last of the two left its old
    /// session.
    pub drain: Gap,
    /// A window as long that ends at the drain request (shorter only if the room had not
    /// flowed that long).
    pub baseline: Gap,
}

/// One participant of node 2: its move, in ms since the drain request.
#[derive(Debug, Clone, Serialize)]
pub struct MovedParticipant {
    pub name: String,
    pub publishes: bool,
    /// The `move` arrived.
    pub move_received_ms: Option<f64>,
    /// `joined` from node 1.
    pub joined_ms: Option<f64>,
    /// `publish_answer` from node 1 (publishers).
    pub published_ms: Option<f64>,
    /// The last first keyframe of its new subscriptions (they all play).
    pub keyframes_ms: Option<f64>,
    /// It switched to the new streams (polled every 50 ms, as the SDK).
    pub switched_ms: Option<f64>,
    /// `leave` on the old session.
    pub left_ms: Option<f64>,
    /// Why the move failed, if it did.
    pub error: Option<String>,
    /// Seconds since the drain request.
    pub events: Vec<RoamEvent>,
}

/// What draining a node did to its room.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    /// Receivers on each node, besides its publisher.
    pub receivers_per_node: usize,
    /// The longest gap any participant that moved showed of any publisher (ms).
    pub drain_gap_ms: Option<f64>,
    /// The longest gap a participant that stayed on node 1 showed of the publisher that
    /// moved (ms).
    pub drain_publisher_gap_ms: Option<f64>,
    /// The longest gap of the same views before the drain (ms).
    pub baseline_gap_ms: Option<f64>,
    /// How long `POST /api/nodes/{id}/drain` took to answer (ms).
    pub drain_request_ms: f64,
    /// Drain request → node 2's process exited (ms); `None`: not within the timeout.
    pub node_exit_ms: Option<f64>,
    /// Its exit code (`None`: it did not exit, or a signal ended it).
    pub node_exit_code: Option<i32>,
    /// Its exit status as the OS reported it.
    pub node_exit_status: Option<String>,
    pub moved: Vec<MovedParticipant>,
    pub views: Vec<DrainView>,
    /// Frames the participants' frame logs could not keep (the figures miss them).
    pub frames_dropped: u64,
}

impl DrainReport {
    /// Its tables, appended to `out`.
    pub fn markdown(&self, out: &mut String) {
        use std::fmt::Write;
        let f = |v: Option<f64>, digits: usize| match v {
            Some(v) if v.is_finite() => format!("{v:.digits$}"),
            _ => "na".to_string(),
        };
        let _ = writeln!(
            out,
            "{} receivers and a publisher on each node; node 2 drained by `POST /api/nodes/{{id}}/drain` (answered in {:.1} ms); node 2 exited {} ms after it: {}.\n",
            self.receivers_per_node,
            self.drain_request_ms,
            f(self.node_exit_ms, 0),
            self.node_exit_status
                .as_deref()
                .unwrap_or("not within the timeout"),
        );
        let _ = writeln!(
            out,
            "Longest gap between video frames on show (first packets' arrival), from the drain request until 2 s after the old session left: **drain_gap_ms {}** (any participant that moved, of any publisher), **drain_publisher_gap_ms {}** (node 1's participants, of the publisher that moved); in as long a window before the drain: {} ms (30 fps: a frame every 33 ms).{}\n",
            f(self.drain_gap_ms, 1),
            f(self.drain_publisher_gap_ms, 1),
            f(self.baseline_gap_ms, 1),
            if self.frames_dropped > 0 {
                format!(" {} frames were not logged (frame log full).", self.frames_dropped)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "| moved (ms since the drain request) | `move` received | joined node 1 | published | new subscriptions' keyframes | switched | old session left |\n|---|---|---|---|---|---|---|"
        );
        for m in &self.moved {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                m.name,
                f(m.move_received_ms, 1),
                f(m.joined_ms, 1),
                if m.publishes {
                    f(m.published_ms, 1)
                } else {
                    "–".into()
                },
                f(m.keyframes_ms, 1),
                f(m.switched_ms, 1),
                f(m.left_ms, 1),
            );
        }
        for m in self.moved.iter().filter(|m| m.error.is_some()) {
            let _ = writeln!(
                out,
                "\n{}'s move failed: {}",
                m.name,
                m.error.as_deref().unwrap_or_default()
            );
        }
        let step = |a: fn(&MovedParticipant) -> Option<f64>,
                    b: fn(&MovedParticipant) -> Option<f64>| {
            let d: Vec<f64> = self
                .moved
                .iter()
                .filter_map(|m| Some(b(m)? - a(m)?))
                .collect();
            f(Some(super::median(&d)), 1)
        };
        let _ = writeln!(
            out,
            "\nMedians (ms): drain request → `move` {}; `move` → joined {}; joined → keyframes {}; `move` → old session left {}.\n",
            step(|_| Some(0.0), |m| m.move_received_ms),
            step(|m| m.move_received_ms, |m| m.joined_ms),
            step(|m| m.joined_ms, |m| m.keyframes_ms),
            step(|m| m.move_received_ms, |m| m.left_ms),
        );
        let _ = writeln!(
            out,
            "| viewer | of | window (s) | longest gap (ms) | began (s) | sent apart (ms) | latency after it (ms) | frames | before the drain: longest gap (ms) | began (s) | sent apart (ms) |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for v in &self.views {
            let who = |name: &str, moved: bool| {
                format!("{name} ({})", if moved { "moved" } else { "stayed" })
            };
            let (d, b) = (&v.drain, &v.baseline);
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.1} | {:.3} | {} | {} | {} | {:.1} | {:.3} | {} |",
                who(&v.viewer, v.viewer_moved),
                who(&v.publisher, v.publisher_moved),
                d.window_s,
                d.ms,
                d.at_s,
                f(d.sent_apart_ms, 1),
                f(d.end_latency_ms, 1),
                d.frames,
                b.ms,
                b.at_s,
                f(b.sent_apart_ms, 1),
            );
        }
        for m in &self.moved {
            let _ = writeln!(out, "\n- {}", m.name);
            super::roam::write_events(out, &m.events);
        }
    }
}

/// The arrivals of the frames a participant shows of one publisher, in order.
///
/// `sessions`: the participant's sessions, oldest first, each with when it went on show
/// (until the next one did) and its frame log. `sources`: the publisher's streams (its
/// publish peers' source ids), oldest first. Within a session a stream is on show from its
/// first keyframe there until a newer stream of the publisher has had a keyframe there (an
/// application switches its tile once the new track plays); simulcast layers count as their
/// publisher's stream.
pub fn shown_frames(sessions: &[(Instant, &[FrameArrival])], sources: &[u32]) -> Vec<FrameArrival> {
    let mut out = Vec::new();
    for (k, (from, frames)) in sessions.iter().enumerate() {
        let until = sessions.get(k + 1).map(|s| s.0);
        let stream = |f: &FrameArrival| sources.iter().position(|&s| s == base_source(f.source));
        let first_key: Vec<Option<Instant>> = (0..sources.len())
            .map(|i| {
                frames
                    .iter()
                    .filter(|f| f.keyframe && stream(f) == Some(i))
                    .map(|f| f.at)
                    .min()
            })
            .collect();
        for f in frames.iter() {
            let Some(i) = stream(f) else { continue };
            let playing = first_key[i].is_some_and(|k| k <= f.at);
            let replaced = first_key[i + 1..].iter().flatten().any(|k| *k <= f.at);
            let on_show = f.at >= *from && until.is_none_or(|u| f.at < u);
            if playing && !replaced && on_show {
                out.push(*f);
            }
        }
    }
    out.sort_by_key(|f| f.at);
    out
}

/// The longest interval without a frame within `[from, to]` (frames sorted): between
/// consecutive frames, and from `from` to the first one and from the last one to `to`; and
/// where it began. No frame in the window: the whole window.
pub fn longest_gap(frames: &[Instant], from: Instant, to: Instant) -> (Duration, Instant) {
    let mut best = (Duration::ZERO, from);
    let mut last = from;
    for &t in frames.iter().filter(|&&t| t >= from && t <= to) {
        let gap = t.duration_since(last);
        if gap > best.0 {
            best = (gap, last);
        }
        last = t;
    }
    let tail = to.saturating_duration_since(last);
    if tail > best.0 {
        best = (tail, last);
    }
    best
}

/// One participant of the drain room.
struct Who {
    roamer: Roamer,
    /// 0 or 1: node 1 or node 2 (drained).
    node: usize,
    publishes: bool,
}

impl Who {
    fn moves(&self) -> bool {
        self.node == 1
    }
}

/// Everything one participant's subscribe peers received, oldest session first.
struct Seen {
    sessions: Vec<(Instant, Vec<FrameArrival>)>,
    /// Its publish peers' source ids, oldest first (publishers).
    sources: Vec<u32>,
    dropped: u64,
}

async fn seen(r: &Roamer) -> Seen {
    let retired: Vec<Retired> = r.take_retired();
    let now = r.current();
    let log = now.receiver.frames().await.unwrap_or_default();
    let mut out = Seen {
        sessions: Vec::new(),
        sources: Vec::new(),
        dropped: log.dropped,
    };
    for old in retired {
        out.dropped += old.frames.dropped;
        out.sessions.push((old.shown_from, old.frames.frames));
        out.sources.extend(old.publisher_source);
    }
    out.sessions.push((now.shown_from, log.frames));
    out.sources.extend(now.publisher_source);
    out
}

/// The drain room on a fresh cluster (so that measurement 4's kill leaves nothing behind):
/// `pub1` and `r1-i` on node 1, `pub2` and `r2-i` on node 2; everyone receives everyone
/// else's media; then node 2 drains.
pub(super) async fn drain(fleet: &Fleet, opts: &ClusterOptions) -> anyhow::Result<DrainReport> {
    // Ports of its own: nothing of the first cluster's lingers on them.
    let mut cluster = Cluster::start(
        &ClusterOptions {
            port_base: opts.port_base + 20,
            ..opts.clone()
        },
        2,
        "cluster-drain",
    )
    .await?;
    let room = "drain";
    let urls = [cluster.node(0)?.ws_url(), cluster.node(1)?.ws_url()];
    let roaming = Roaming::new(fleet, room, true);
    let mut who = Vec::new();
    for (node, url) in urls.iter().enumerate() {
        let name = format!("pub{}", node + 1);
        who.push(Who {
            roamer: roaming.join(url, &name, Some(media(opts))).await?,
            node,
            publishes: true,
        });
    }
    for i in 0..opts.drain_receivers {
        for (node, url) in urls.iter().enumerate() {
            let name = format!("r{}-{i}", node + 1);
            who.push(Who {
                roamer: roaming.join(url, &name, None).await?,
                node,
                publishes: false,
            });
        }
    }
    // Everyone shows every other publisher before the drain.
    let publishers: Vec<(usize, u32)> = who
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.roamer.current().publisher_source.map(|s| (i, s)))
        .collect();
    for (i, w) in who.iter().enumerate() {
        for &(p, source) in publishers.iter().filter(|(p, _)| *p != i) {
            stats_until(&w.roamer.current().receiver, Duration::from_secs(10), |r| {
                r.received.iter().any(|s| {
                    s.kind == StreamKind::Video
                        && base_source(s.source) == source
                        && s.first_keyframe_at.is_some()
                })
            })
            .await
            .with_context(|| {
                format!("{} shows nothing of {}", w.roamer.name, who[p].roamer.name)
            })?;
        }
    }
    let flowing = Instant::now();
    tokio::time::sleep(LEAD).await;

    let node2 = cluster.node(1)?;
    let id = node2.nodes().await?["self"]
        .as_str()
        .ok_or_else(|| anyhow!("node 2 does not say its id (GET /api/nodes `self`)"))?
        .to_string();
    let url = format!("{}/api/nodes/{id}/drain", node2.base_url());
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    http.post(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("POST {url}"))?;
    let drain_request_ms = t0.elapsed().as_secs_f64() * 1e3;

    // Until node 2's participants have all moved and it has exited.
    let deadline = t0 + opts.recovery_timeout;
    let mut exit: Option<(Instant, ExitStatus)> = None;
    loop {
        if exit.is_none() {
            exit = cluster.exited(1)?.map(|s| (Instant::now(), s));
        }
        let moved = who
            .iter()
            .filter(|w| w.moves())
            .all(|w| !w.roamer.moves().is_empty());
        if (moved && exit.is_some()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<Option<Instant>> = who
        .iter()
        .map(|w| w.roamer.moves().first().map(|m| m.left))
        .collect();
    let last_left = left.iter().flatten().max().copied().unwrap_or(t0);
    tokio::time::sleep_until((last_left + AFTER_LEAVE + Duration::from_millis(100)).into()).await;
    let collected = Instant::now();

    let mut seen_by = Vec::new();
    for w in &who {
        seen_by.push(seen(&w.roamer).await);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let epoch = fleet.config().epoch;
    let mut views = Vec::new();
    for (v, viewer) in who.iter().enumerate() {
        for &(p, _) in publishers.iter().filter(|(p, _)| *p != v) {
            let publisher = &who[p];
            if !viewer.moves() && !publisher.moves() {
                continue;
            }
            let sessions: Vec<(Instant, &[FrameArrival])> = seen_by[v]
                .sessions
                .iter()
                .map(|(from, frames)| (*from, frames.as_slice()))
                .collect();
            let shown_all = shown_frames(&sessions, &seen_by[p].sources);
            let end = [v, p]
                .iter()
                .filter(|&&i| who[i].moves())
                .map(|&i| left[i].map_or(collected, |l| l + AFTER_LEAVE))
                .max()
                .unwrap_or(collected)
                .min(collected);
            let len = end.duration_since(t0);
            let base_from = t0.checked_sub(len).unwrap_or(t0).max(flowing);
            views.push(DrainView {
                viewer: viewer.roamer.name.clone(),
                publisher: publisher.roamer.name.clone(),
                viewer_moved: viewer.moves(),
                publisher_moved: publisher.moves(),
                drain: Gap::of(&shown_all, t0, end, t0, epoch),
                baseline: Gap::of(&shown_all, base_from, t0, t0, epoch),
            });
        }
    }
    let since = |t: Option<Instant>| t.map(|t| signed_secs(t, t0) * 1e3);
    let moved: Vec<MovedParticipant> = who
        .iter()
        .filter(|w| w.moves())
        .map(|w| {
            let m = w.roamer.moves().into_iter().next();
            MovedParticipant {
                name: w.roamer.name.clone(),
                publishes: w.publishes,
                move_received_ms: since(m.as_ref().map(|m| m.asked)),
                joined_ms: since(m.as_ref().and_then(|m| m.joined)),
                published_ms: since(m.as_ref().and_then(|m| m.published)),
                keyframes_ms: since(m.as_ref().and_then(|m| m.keyframes)),
                switched_ms: since(m.as_ref().and_then(|m| m.switched)),
                left_ms: since(m.as_ref().map(|m| m.left)),
                error: m.and_then(|m| m.error),
                events: w.roamer.events(t0),
            }
        })
        .collect();
    let max = |it: &mut dyn Iterator<Item = f64>| it.max_by(f64::total_cmp);
    let report = DrainReport {
        receivers_per_node: opts.drain_receivers,
        drain_gap_ms: max(&mut views.iter().filter(|v| v.viewer_moved).map(|v| v.drain.ms)),
        drain_publisher_gap_ms: max(&mut views
            .iter()
            .filter(|v| !v.viewer_moved && v.publisher_moved)
            .map(|v| v.drain.ms)),
        baseline_gap_ms: max(&mut views.iter().map(|v| v.baseline.ms)),
        drain_request_ms,
        node_exit_ms: exit.map(|(t, _)| ms(t.duration_since(t0))),
        node_exit_code: exit.and_then(|(_, s)| s.code()),
        node_exit_status: exit.map(|(_, s)| s.to_string()),
        moved,
        views,
        frames_dropped: seen_by.iter().map(|s| s.dropped).sum(),
    };
    drop(who);
    drop(cluster);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::layer_source;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Frames of `source` every 33 ms over `[from, to)` ms, a keyframe first if `key`.
    fn frames(t0: Instant, source: u32, from: u64, to: u64, key: bool) -> Vec<FrameArrival> {
        (from..to)
            .step_by(33)
            .enumerate()
            .map(|(i, ms)| FrameArrival {
                source,
                keyframe: key && i == 0,
                sent_ns: ms * 1_000_000,
                at: at(t0, ms),
            })
            .collect()
    }

    fn arrivals(frames: Vec<FrameArrival>) -> Vec<Instant> {
        frames.iter().map(|f| f.at).collect()
    }

    #[test]
    fn longest_gap_counts_the_window_edges() {
        let t0 = Instant::now();
        let f: Vec<Instant> = [100, 133, 166, 400, 433]
            .iter()
            .map(|&m| at(t0, m))
            .collect();
        assert_eq!(
            longest_gap(&f, at(t0, 100), at(t0, 500)),
            (Duration::from_millis(234), at(t0, 166))
        );
        // The window's start to the first frame, the last frame to its end.
        assert_eq!(
            longest_gap(&f, at(t0, 0), at(t0, 200)).0,
            Duration::from_millis(100)
        );
        assert_eq!(
            longest_gap(&f, at(t0, 400), at(t0, 1000)),
            (Duration::from_millis(567), at(t0, 433))
        );
        // Nothing in the window: all of it.
        assert_eq!(
            longest_gap(&[], at(t0, 10), at(t0, 60)),
            (Duration::from_millis(50), at(t0, 10))
        );
    }

    #[test]
    fn a_moving_viewer_shows_the_old_session_until_its_switch() {
        let t0 = Instant::now();
        // Old session: the publisher's top layer until 2 s (it left at 2 s).
        let old = frames(t0, 7, 0, 2000, true);
        // New session from 900 ms, on show from its switch at 1000 ms.
        let new = frames(t0, 7, 900, 4000, true);
        let shown = arrivals(shown_frames(&[(t0, &old), (at(t0, 1000), &new)], &[7]));
        let (gap, _) = longest_gap(&shown, t0, at(t0, 3900));
        // 990 ms (old) → 1032 ms (new): 999 ms came before the switch.
        assert_eq!(gap, Duration::from_millis(42));
        // Nothing of the old session after the switch, nothing of the new before it.
        assert!(shown.windows(2).all(|w| w[0] < w[1]));
        // A switch before the new session has anything: a gap until its first frame.
        let late = frames(t0, 7, 1500, 4000, true);
        let shown = arrivals(shown_frames(&[(t0, &old), (at(t0, 1000), &late)], &[7]));
        let (gap, from) = longest_gap(&shown, t0, at(t0, 3900));
        assert_eq!(from, at(t0, 990));
        assert_eq!(gap, Duration::from_millis(510));
    }

    #[test]
    fn a_moving_publisher_shows_from_its_new_streams_first_keyframe() {
        let t0 = Instant::now();
        let old_pub = 5;
        let new_pub = 9;
        let mut log = frames(t0, old_pub, 0, 1600, true);
        // The new stream's first frames are not keyframes: not decodable, not shown.
        let mut fresh = frames(t0, layer_source(new_pub, 2), 1200, 3000, false);
        fresh[4].keyframe = true; // 1332 ms
        log.extend(fresh);
        log.sort_by_key(|f| f.at);
        let shown = arrivals(shown_frames(&[(t0, &log)], &[old_pub, new_pub]));
        // The old stream until 1332 ms, the new one from there.
        assert!(shown.contains(&at(t0, 1320)));
        assert!(!shown.contains(&at(t0, 1353)));
        assert!(!shown.contains(&at(t0, 1299)));
        assert!(shown.contains(&at(t0, 1332)));
        assert!(shown.contains(&at(t0, 1365)));
        let (gap, _) = longest_gap(&shown, t0, at(t0, 2900));
        assert!(gap <= Duration::from_millis(33), "{gap:?}");
        // Old stream gone before the new one plays: the gap shows.
        let mut log = frames(t0, old_pub, 0, 1000, true);
        log.extend(frames(t0, new_pub, 1300, 3000, true));
        let shown = arrivals(shown_frames(&[(t0, &log)], &[old_pub, new_pub]));
        let (gap, from) = longest_gap(&shown, t0, at(t0, 2900));
        assert_eq!((gap, from), (Duration::from_millis(310), at(t0, 990)));
        // Another publisher's frames are not this one's.
        assert!(shown_frames(&[(t0, &log)], &[3]).is_empty());
    }
}
