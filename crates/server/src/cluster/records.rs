//! What a node writes in a room's record in Redis (one field per node, one writer per field):
//! its participants of the room with their tracks, and the tracks of other nodes that its
//! subscribers receive. Read back from Redis, a record is untrusted: ids must parse and carry
//! the writing node's tag, sizes are bounded; anything else rejects the whole record.

use serde::{Deserialize, Serialize};
use sfumato_signal::Source;
use sfumato_worker::sfumato_core::{Kind, NodeId, PeerId, TrackId};

use crate::ids::TAG_BITS;
use crate::rooms::{parse_participant_key, ParticipantId};

/// The most participants (and tracks per participant) a record may list.
const MAX_PARTICIPANTS: usize = 10_000;
const MAX_TRACKS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub node: u32,
    /// Raised at each write: a reader keeps the highest it saw per node start.
    pub gen: u64,
    pub participants: Vec<RecordParticipant>,
    /// Tracks of other nodes that this node's subscribers receive.
    pub wants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordParticipant {
    pub id: String,
    pub name: String,
    /// `websocket`, `whip` or `whep`.
    pub kind: String,
    pub worker: u16,
    pub tracks: Vec<RecordTrack>,
    /// The participant this one takes over from (a client moving between nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordTrack {
    pub id: String,
    pub kind: String,
    pub muted: bool,
    /// `camera`, `microphone`, `screen` or `screen_audio` (absent: its kind's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A record that passed the checks, with its ids parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub node: NodeId,
    pub gen: u64,
    pub participants: Vec<RemoteParticipant>,
    pub wants: Vec<TrackId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteParticipant {
    pub id: ParticipantId,
    pub name: String,
    pub kind: String,
    pub worker: u16,
    pub tracks: Vec<RemoteTrack>,
    pub replaces: Option<ParticipantId>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteTrack {
    pub id: TrackId,
    pub kind: Kind,
    pub muted: bool,
    pub source: Source,
}

/// Why a record was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a room record: {0}")]
    Json(String),
    #[error("written under node {field} but says node {inside}")]
    Node { field: u32, inside: u32 },
    #[error("id `{0}` is malformed or not of the writing node")]
    Id(String),
    #[error("kind `{0}` is neither audio nor video")]
    Kind(String),
    #[error("source `{0}` is unknown")]
    Source(String),
    #[error("too many entries")]
    TooMany,
}

/// Whether an id was handed out by `node` (its tag in the high bits, `ids::Ids`).
fn of_node(id: u64, node: NodeId) -> bool {
    id >> 40 == u64::from(node.0) & ((1 << TAG_BITS) - 1)
}

pub fn parse_track(s: &str) -> Option<TrackId> {
    let (peer, index) = s.split_once('-')?;
    Some(TrackId {
        peer: PeerId(peer.parse().ok()?),
        index: index.parse().ok()?,
    })
}

/// Reads the record in field `field` (a node id) of a room's hash.
pub fn parse(field: u32, json: &str) -> Result<Remote, RecordError> {
    let r: RoomRecord = serde_json::from_str(json).map_err(|e| RecordError::Json(e.to_string()))?;
    if r.node != field {
        return Err(RecordError::Node {
            field,
            inside: r.node,
        });
    }
    let node = NodeId(r.node);
    if r.participants.len() > MAX_PARTICIPANTS || r.wants.len() > MAX_PARTICIPANTS * MAX_TRACKS {
        return Err(RecordError::TooMany);
    }
    let mut participants = Vec::with_capacity(r.participants.len());
    for p in r.participants {
        let id = parse_participant_key(&p.id)
            .filter(|id| of_node(*id, node))
            .ok_or_else(|| RecordError::Id(p.id.clone()))?;
        if p.tracks.len() > MAX_TRACKS {
            return Err(RecordError::TooMany);
        }
        let mut tracks = Vec::with_capacity(p.tracks.len());
        for t in p.tracks {
            let tid = parse_track(&t.id)
                .filter(|t| of_node(t.peer.0, node))
                .ok_or_else(|| RecordError::Id(t.id.clone()))?;
            let kind = match t.kind.as_str() {
                "audio" => Kind::Audio,
                "video" => Kind::Video,
                other => return Err(RecordError::Kind(other.to_string())),
            };
            let source = match &t.source {
                None => Source::default_for(kind == Kind::Video),
                Some(s) => Source::parse(s).ok_or_else(|| RecordError::Source(s.clone()))?,
            };
            tracks.push(RemoteTrack {
                id: tid,
                kind,
                muted: t.muted,
                source,
            });
        }
        let replaces = match &p.replaces {
            None => None,
            Some(r) => Some(parse_participant_key(r).ok_or_else(|| RecordError::Id(r.clone()))?),
        };
        let name: String = p.name.chars().take(64).collect();
        participants.push(RemoteParticipant {
            id,
            name,
            kind: p.kind.chars().take(16).collect(),
            worker: p.worker,
            tracks,
            replaces,
        });
    }
    let wants = r
        .wants
        .iter()
        .map(|w| parse_track(w).ok_or_else(|| RecordError::Id(w.clone())))
        .collect::<Result<_, _>>()?;
    Ok(Remote {
        node,
        gen: r.gen,
        participants,
        wants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: u32) -> RoomRecord {
        let id = (u64::from(node) << 40) | 7;
        RoomRecord {
            node,
            gen: 3,
            participants: vec![RecordParticipant {
                id: format!("p{id}"),
                name: "alice".into(),
                kind: "websocket".into(),
                worker: 1,
                tracks: vec![RecordTrack {
                    id: format!("{}-0", id + 1),
                    kind: "video".into(),
                    muted: true,
                    source: Some("screen".into()),
                }],
                replaces: None,
            }],
            wants: vec![format!("{}-1", 5u64 << 40)],
        }
    }

    #[test]
    fn a_record_reads_back() {
        let json = serde_json::to_string(&record(4)).unwrap();
        let r = parse(4, &json).unwrap();
        assert_eq!(r.node, NodeId(4));
        let t = r.participants[0].tracks[0];
        assert_eq!(
            (t.kind, t.muted, t.source),
            (Kind::Video, true, Source::Screen)
        );
        // A record without sources (an older node) reads with the default.
        let mut old = record(4);
        old.participants[0].tracks[0].source = None;
        let r = parse(4, &serde_json::to_string(&old).unwrap()).unwrap();
        assert_eq!(r.participants[0].tracks[0].source, Source::Camera);
        assert_eq!(
            r.wants,
            [parse_track(&format!("{}-1", 5u64 << 40)).unwrap()]
        );
    }

    #[test]
    fn garbage_and_impostors_are_rejected() {
        assert!(matches!(parse(4, "not json"), Err(RecordError::Json(_))));
        assert!(matches!(parse(4, "{}"), Err(RecordError::Json(_))));
        let json = serde_json::to_string(&record(4)).unwrap();
        assert_eq!(
            parse(5, &json),
            Err(RecordError::Node {
                field: 5,
                inside: 4
            })
        );
        // A node that claims another node's participant.
        let mut r = record(4);
        r.participants[0].id = format!("p{}", (6u64 << 40) | 1);
        let json = serde_json::to_string(&r).unwrap();
        assert!(matches!(parse(4, &json), Err(RecordError::Id(_))));
        let mut r = record(4);
        r.participants[0].tracks[0].kind = "smell".into();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(parse(4, &json), Err(RecordError::Kind("smell".into())));
        let mut r = record(4);
        r.participants[0].tracks[0].source = Some("smell".into());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(parse(4, &json), Err(RecordError::Source("smell".into())));
        let mut r = record(4);
        r.wants.push("x-y".into());
        let json = serde_json::to_string(&r).unwrap();
        assert!(matches!(parse(4, &json), Err(RecordError::Id(_))));
    }
}
