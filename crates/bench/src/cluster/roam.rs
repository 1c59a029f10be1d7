//! A participant that roams between nodes the way the browser SDK does (client/room.js): it
//! reconnects when its signaling socket closes (backoff, its own node first, then the other
//! serving nodes), and moves make-before-break when its node drains (`move`). Measurements 4
//! (recovery) and 5 (drain) drive it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::{join_member, Joining, Member};
use crate::fleet::{Fleet, FrameLog, PeerHandle};
use crate::media::{base_source, MediaConfig, StreamKind};
use crate::target::sfumato::MoveAsked;

/// How long a move waits for its new subscriptions to play before it switches anyway (the
/// SDK's `requestTimeoutMs`).
pub const MOVE_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a move keeps the old session once the new one plays (client/room.js
/// `MOVE_OVERLAP_MS`).
pub const MOVE_OVERLAP: Duration = Duration::from_millis(3000);

/// How often a move looks whether its new subscriptions play (the SDK's `_move` loop).
const MOVE_POLL: Duration = Duration::from_millis(50);

/// Something that happened to a roaming participant, at a time.
#[derive(Debug, Clone, Serialize)]
pub struct RoamEvent {
    /// Seconds since the measurement's moment (the kill, the drain request; negative before).
    pub at_s: f64,
    pub what: String,
}

/// Writes `events` from the measurement's moment on, one line each, under a participant's
/// line of a report.
pub fn write_events(out: &mut String, events: &[RoamEvent]) {
    use std::fmt::Write;
    for e in events.iter().filter(|e| e.at_s >= 0.0) {
        let _ = writeln!(out, "  - {:.3}: {}", e.at_s, e.what);
    }
}

/// Participant id → the source id of what it publishes, over every roamer of a room: how a
/// moving roamer tells which of its new subscriptions play.
type Publishers = Arc<Mutex<HashMap<String, u32>>>;

/// What is visible of a roaming participant's current connection.
#[derive(Clone)]
pub(super) struct Incarnation {
    pub receiver: Arc<PeerHandle>,
    pub publisher_source: Option<u32>,
    pub url: String,
    pub started: Instant,
    /// Since when its subscriptions are on show: its join, or a move's switch.
    pub shown_from: Instant,
}

/// A session the roamer left, and the video its subscribe peer received (its frame log).
pub(super) struct Retired {
    pub publisher_source: Option<u32>,
    pub shown_from: Instant,
    pub frames: FrameLog,
}

/// One move (after a `move` from a draining node), timed.
#[derive(Debug, Clone)]
pub(super) struct MoveTimes {
    /// The `move` arrived.
    pub asked: Instant,
    /// `joined` came back from the new node.
    pub joined: Option<Instant>,
    /// `publish_answer` came back from the new node (publishers).
    pub published: Option<Instant>,
    /// Every video subscription of the new session had its first keyframe (the latest of
    /// them); `None`: not within [`MOVE_READY_TIMEOUT`], or the join failed.
    pub keyframes: Option<Instant>,
    /// The roamer shows the new session's streams from here.
    pub switched: Option<Instant>,
    /// `leave` sent on the old session.
    pub left: Instant,
    pub error: Option<String>,
}

#[derive(Default)]
struct Record {
    events: Vec<(Instant, String)>,
    retired: Vec<Retired>,
    moves: Vec<MoveTimes>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the roamers of one room share.
#[derive(Clone)]
pub(super) struct Roaming {
    fleet: Fleet,
    room: String,
    publishers: Publishers,
    /// Subscribe peers keep a frame log ([`crate::fleet::PeerConfig::frame_log`]).
    frame_log: bool,
}

/// A participant that reconnects and moves like the browser SDK.
pub(super) struct Roamer {
    pub name: String,
    current: watch::Receiver<Incarnation>,
    record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Roamer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The SDK's reconnect delay before attempt `attempt` (1-based): 500 ms · 2^(attempt−1),
/// at most 10 s, ± 20% (client/peer.js `backoffDelay`).
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let raw = (500.0 * 2f64.powi(attempt.saturating_sub(1).min(20) as i32)).min(10_000.0);
    let j = raw * 0.2 * jitter.clamp(-1.0, 1.0);
    Duration::from_secs_f64((raw + j).max(0.0) / 1e3)
}

/// The signaling URL of reconnect attempt `attempt` (1-based): `here` first, then each other
/// serving node in turn (client/room.js `_reconnectUrl`).
pub fn reconnect_url(here: &str, nodes: &[String], attempt: u32) -> String {
    let mut all = vec![here.to_string()];
    all.extend(nodes.iter().filter(|u| *u != here).cloned());
    all[(attempt as usize - 1) % all.len()].clone()
}

/// Whether a join failed for want of a connection (the SDK's `UnreachableError`).
fn unreachable(e: &anyhow::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    e.chain().any(|c| {
        c.downcast_ref::<WsError>()
            .is_some_and(|w| matches!(w, WsError::Io(_)))
            || c.downcast_ref::<std::io::Error>().is_some()
    })
}

fn jitter() -> f64 {
    (sfumato_testkit::random_u64() % 2001) as f64 / 1000.0 - 1.0
}

pub(super) fn signed_secs(t: Instant, since: Instant) -> f64 {
    if t >= since {
        t.duration_since(since).as_secs_f64()
    } else {
        -since.duration_since(t).as_secs_f64()
    }
}

fn view(m: &Member, url: &str, shown_from: Instant) -> Incarnation {
    Incarnation {
        receiver: m.receiver.clone(),
        publisher_source: m.publisher.as_ref().map(PeerHandle::source_id),
        url: url.to_string(),
        started: m.started,
        shown_from,
    }
}

impl Roaming {
    /// The roamers of `room`; their subscribe peers keep frame logs if `frame_log`.
    pub fn new(fleet: &Fleet, room: &str, frame_log: bool) -> Self {
        Roaming {
            fleet: fleet.clone(),
            room: room.to_string(),
            publishers: Arc::default(),
            frame_log,
        }
    }

    /// Joins at `ws_url` (and publishes `publish`); from then on a task reconnects it whenever
    /// its socket closes, and moves it when its node drains.
    pub async fn join(
        &self,
        ws_url: &str,
        name: &str,
        publish: Option<MediaConfig>,
    ) -> anyhow::Result<Roamer> {
        let roam = Roam {
            ctx: self.clone(),
            name: name.to_string(),
            publish,
            record: Arc::default(),
        };
        let first = roam.join(ws_url, None).await?;
        let (tx, current) = watch::channel(view(&first, ws_url, first.started));
        let record = roam.record.clone();
        let task = tokio::spawn(roam.run(first, ws_url.to_string(), tx));
        Ok(Roamer {
            name: name.to_string(),
            current,
            record,
            task,
        })
    }
}

impl Roamer {
    pub fn current(&self) -> Incarnation {
        self.current.borrow().clone()
    }

    /// What happened to it, in seconds since `since`.
    pub fn events(&self, since: Instant) -> Vec<RoamEvent> {
        lock(&self.record)
            .events
            .iter()
            .map(|(t, what)| RoamEvent {
                at_s: signed_secs(*t, since),
                what: what.clone(),
            })
            .collect()
    }

    /// Its moves so far.
    pub fn moves(&self) -> Vec<MoveTimes> {
        lock(&self.record).moves.clone()
    }

    /// The sessions it left, oldest first (taken: a second call gives the later ones).
    pub fn take_retired(&self) -> Vec<Retired> {
        std::mem::take(&mut lock(&self.record).retired)
    }
}

/// The task side of a roamer.
struct Roam {
    ctx: Roaming,
    name: String,
    publish: Option<MediaConfig>,
    record: Arc<Mutex<Record>>,
}

impl Roam {
    fn note(&self, what: String) {
        lock(&self.record).events.push((Instant::now(), what));
    }

    /// Joins at `url` (replacing its session `replaces` on another node) and publishes.
    async fn join(&self, url: &str, replaces: Option<&str>) -> anyhow::Result<Member> {
        let how = Joining {
            publish: self.publish.as_ref(),
            replaces,
            frame_log: self.ctx.frame_log,
        };
        let m = join_member(&self.ctx.fleet, url, &self.ctx.room, &self.name, how).await?;
        if let Some(p) = &m.publisher {
            lock(&self.ctx.publishers).insert(m.session.participant_id.clone(), p.source_id());
        }
        Ok(m)
    }

    /// Lets `m` go (its socket and peers close), keeping its frame log.
    async fn retire(&self, m: Member, shown_from: Instant) {
        if self.ctx.frame_log {
            let frames = m.receiver.frames().await.unwrap_or_default();
            lock(&self.record).retired.push(Retired {
                publisher_source: m.publisher.as_ref().map(PeerHandle::source_id),
                shown_from,
                frames,
            });
        }
        drop(m);
    }

    async fn run(self, first: Member, mut here: String, tx: watch::Sender<Incarnation>) {
        let mut member = first;
        let mut shown_from = member.started;
        loop {
            let asked = tokio::select! {
                _ = member.session.wait_closed() => None,
                m = member.session.wait_move() => Some(m),
            };
            let nodes = member.session.nodes();
            match asked {
                Some(asked) => {
                    self.note(format!("asked to move to {}", asked.ws_url));
                    here = asked.ws_url.clone();
                    match self.move_to(member, shown_from, &asked, &tx).await {
                        Ok((m, switched)) => {
                            member = m;
                            shown_from = switched;
                            continue;
                        }
                        Err(e) => self.note(format!("moving failed: {e:#}; reconnecting")),
                    }
                }
                None => {
                    self.note(format!("signaling socket closed ({here})"));
                    // The SDK tears down both peer connections at once.
                    self.retire(member, shown_from).await;
                }
            }
            let Some(m) = self.reconnect(&mut here, &nodes).await else {
                return;
            };
            shown_from = m.started;
            tx.send_replace(view(&m, &here, shown_from));
            member = m;
        }
    }

    /// Joins again after a lost socket, as the SDK does: backoff, its own node first, then
    /// the other serving nodes in turn. `None`: it gave up.
    async fn reconnect(&self, here: &mut String, nodes: &[String]) -> Option<Member> {
        let mut attempt = 1;
        let mut now = false;
        loop {
            let delay = if now {
                Duration::ZERO
            } else {
                backoff_delay(attempt, jitter())
            };
            tokio::time::sleep(delay).await;
            let url = reconnect_url(here, nodes, attempt);
            self.note(format!(
                "attempt {attempt} after {} ms: {url}",
                delay.as_millis()
            ));
            match self.join(&url, None).await {
                Ok(m) => {
                    self.note(format!(
                        "joined {url} (signaling {} ms)",
                        m.joined.duration_since(m.started).as_millis()
                    ));
                    if let Some(p) = m.published {
                        self.note(format!(
                            "published ({} ms after joined)",
                            p.duration_since(m.joined).as_millis()
                        ));
                    }
                    *here = url;
                    return Some(m);
                }
                Err(e) => {
                    self.note(format!("attempt {attempt} failed: {e:#}"));
                    // Like the SDK: a node that cannot be reached is down, the next one is
                    // tried at once; one backoff per round of every node.
                    let round = 1 + nodes.iter().filter(|u| **u != *here).count();
                    now = unreachable(&e) && !(attempt as usize).is_multiple_of(round);
                }
            }
            attempt += 1;
            if attempt > 20 {
                self.note("gave up after 20 attempts".into());
                return None;
            }
        }
    }

    /// Moves make-before-break as the SDK's `_move`: joins the other node replacing the old
    /// session, publishes there, waits until the new subscriptions play (as many as before,
    /// each video one with a keyframe), switches to them, keeps the old session
    /// [`MOVE_OVERLAP`] more, then leaves it. Returns the new member and the switch time; the
    /// old one has left either way.
    async fn move_to(
        &self,
        old: Member,
        old_shown_from: Instant,
        asked: &MoveAsked,
        tx: &watch::Sender<Incarnation>,
    ) -> anyhow::Result<(Member, Instant)> {
        let before = old.session.subscriptions().len();
        let mut times = MoveTimes {
            asked: asked.at,
            joined: None,
            published: None,
            keyframes: None,
            switched: None,
            left: asked.at,
            error: None,
        };
        let new = match self
            .join(&asked.ws_url, Some(&old.session.participant_id))
            .await
        {
            Ok(m) => m,
            Err(e) => {
                old.session.leave();
                times.left = Instant::now();
                times.error = Some(format!("{e:#}"));
                self.retire(old, old_shown_from).await;
                lock(&self.record).moves.push(times);
                return Err(e);
            }
        };
        times.joined = Some(new.joined);
        times.published = new.published;
        self.note(format!(
            "joined {} replacing {} (signaling {} ms)",
            asked.ws_url,
            old.session.participant_id,
            new.joined.duration_since(new.started).as_millis()
        ));
        let deadline = Instant::now() + MOVE_READY_TIMEOUT;
        loop {
            if let Some(at) = self.playing(&new, before).await {
                times.keyframes = Some(at);
                break;
            }
            if Instant::now() > deadline {
                self.note(format!(
                    "its new subscriptions did not all play within {MOVE_READY_TIMEOUT:?}: switching anyway"
                ));
                break;
            }
            tokio::time::sleep(MOVE_POLL).await;
        }
        let switched = Instant::now();
        times.switched = Some(switched);
        tx.send_replace(view(&new, &asked.ws_url, switched));
        self.note("switched to the new session".into());
        // The old streams play on while the application switches its elements.
        tokio::time::sleep(MOVE_OVERLAP).await;
        old.session.leave();
        times.left = Instant::now();
        self.note("left the old session".into());
        self.retire(old, old_shown_from).await;
        lock(&self.record).moves.push(times);
        Ok((new, switched))
    }

    /// When the new session's subscriptions all play (the SDK's `_subsPlaying`): at least
    /// `before` of them, and every video one has had a keyframe from its publisher's stream
    /// on the new subscribe peer; then the latest of those keyframes' arrivals.
    async fn playing(&self, new: &Member, before: usize) -> Option<Instant> {
        let subs = new.session.subscriptions();
        if subs.len() < before {
            return None;
        }
        let video: Vec<&str> = subs
            .iter()
            .filter(|s| s.kind == "video")
            .map(|s| s.participant.as_str())
            .collect();
        if video.is_empty() {
            return Some(Instant::now());
        }
        let report = new.receiver.stats().await.ok()?;
        let publishers = lock(&self.ctx.publishers);
        let mut latest: Option<Instant> = None;
        for participant in video {
            let source = *publishers.get(participant)?;
            let first = report
                .received
                .iter()
                .filter(|r| r.kind == StreamKind::Video && base_source(r.source) == source)
                .filter_map(|r| r.first_keyframe_at)
                .min()?;
            latest = latest.max(Some(first));
        }
        latest
    }
}
