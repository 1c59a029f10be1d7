//! The signaling protocol's messages from clients (docs/protocol.md): a text frame becomes a
//! [`ClientMessage`], or a [`Bad`] carrying the protocol's error code, before the server acts
//! on it. Pure (no I/O, no state), so that it is fuzzed as it is (fuzz/). [`sdp`] reads the
//! outline of an SDP (in signaling or a WHIP/WHEP body) that the server's limits and grants
//! bound.
//!
//! Reading is in two steps, as the protocol's errors need: the [`Envelope`] (a JSON object
//! with a string `type`) first, from which the server decides with its own state whether to
//! read on (`already_joined`, `not_joined`); then [`Envelope::parse`], the fields.

use serde_json::Value;

pub mod sdp;
pub use sdp::{sdp_shape, SdpShape};

pub const PROTOCOL_VERSION: u64 = 1;
/// Longest room or participant name, in bytes.
pub const MAX_NAME: usize = 64;
/// Most entries of a `publish_offer`'s `sources`.
pub const MAX_SOURCES: usize = 64;
/// Longest mid named in `sources`, in bytes.
pub const MAX_MID: usize = 32;
/// Longest track id named in `subscribe` or `unsubscribe`, in bytes.
pub const MAX_TRACK_ID: usize = 64;

/// A message the protocol refuses: its error `code` and a reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub code: &'static str,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Bad {
    Bad {
        code: "bad_message",
        message: message.into(),
    }
}

/// A `quality` asked of another participant's video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Low,
    Medium,
    High,
    Off,
}

impl Quality {
    /// The simulcast or spatial layer (`None`: none at all).
    pub fn layer(self) -> Option<u8> {
        match self {
            Quality::Low => Some(0),
            Quality::Medium => Some(1),
            Quality::High => Some(2),
            Quality::Off => None,
        }
    }
}

/// What a published track carries, as its publisher says (`publish_offer`'s `sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Camera => "camera",
            Source::Microphone => "microphone",
            Source::Screen => "screen",
            Source::ScreenAudio => "screen_audio",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "camera" => Source::Camera,
            "microphone" => Source::Microphone,
            "screen" => Source::Screen,
            "screen_audio" => Source::ScreenAudio,
            _ => return None,
        })
    }

    /// What a track said nothing about carries: the camera or the microphone.
    pub fn default_for(video: bool) -> Source {
        if video {
            Source::Camera
        } else {
            Source::Microphone
        }
    }
}

/// `join`'s fields. `name` is read (and checked) by the server only without a token: a
/// token names the participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub room: String,
    pub name: Option<String>,
    pub token: Option<String>,
    /// A client moving between nodes names its session on the other node.
    pub replaces: Option<String>,
    /// Whether the server subscribes it to every track of the room (default), or only to
    /// those it asks for (`subscribe`).
    pub auto_subscribe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Ping,
    Join(Join),
    /// `sources`: what the track of each listed mid carries (the others: their kind's
    /// default, [`Source::default_for`]).
    PublishOffer {
        sdp: String,
        sources: Vec<(String, Source)>,
    },
    SubscribeAnswer {
        sdp: String,
    },
    Mute {
        track: String,
        muted: bool,
    },
    Quality {
        track: String,
        quality: Quality,
    },
    /// Receive this track (for a participant that joined with `auto_subscribe: false`, or
    /// one that unsubscribed from it).
    Subscribe {
        track: String,
    },
    Unsubscribe {
        track: String,
    },
    Leave,
}

/// A message whose `type` is known to be a string.
#[derive(Debug)]
pub struct Envelope {
    value: Value,
}

/// Reads a text frame as far as its `type`.
pub fn envelope(text: &str) -> Result<Envelope, Bad> {
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad("a message is a JSON object"));
    }
    let env = Envelope { value };
    env.str_field("type")?;
    Ok(env)
}

impl Envelope {
    pub fn kind(&self) -> &str {
        self.value.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// A message only a joined client sends (`not_joined` before `join`).
    pub fn needs_join(&self) -> bool {
        matches!(
            self.kind(),
            "publish_offer"
                | "subscribe_answer"
                | "mute"
                | "quality"
                | "subscribe"
                | "unsubscribe"
                | "leave"
        )
    }

    fn str_field(&self, name: &str) -> Result<&str, Bad> {
        self.value
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("missing or non-string field `{name}`")))
    }

    /// A track id field: 1 to [`MAX_TRACK_ID`] bytes.
    fn track_field(&self) -> Result<String, Bad> {
        let track = self.str_field("track")?;
        if track.is_empty() || track.len() > MAX_TRACK_ID {
            return Err(bad(format!("`track` must be 1 to {MAX_TRACK_ID} bytes")));
        }
        Ok(track.to_string())
    }

    /// `publish_offer`'s optional `sources`: an object of mid → source.
    fn sources(&self) -> Result<Vec<(String, Source)>, Bad> {
        let map = match self.value.get("sources") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(bad("`sources` is an object of mid → source")),
        };
        if map.len() > MAX_SOURCES {
            return Err(bad(format!("`sources` names at most {MAX_SOURCES} mids")));
        }
        map.iter()
            .map(|(mid, v)| {
                if mid.is_empty() || mid.len() > MAX_MID || mid.chars().any(char::is_control) {
                    return Err(bad(format!(
                        "a mid in `sources` is 1 to {MAX_MID} bytes without control characters"
                    )));
                }
                let source = v
                    .as_str()
                    .and_then(Source::parse)
                    .ok_or_else(|| bad("a source is camera, microphone, screen or screen_audio"))?;
                Ok((mid.clone(), source))
            })
            .collect()
    }

    fn optional_str(&self, name: &str) -> Option<String> {
        self.value
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The whole message, its fields checked.
    pub fn parse(&self) -> Result<ClientMessage, Bad> {
        Ok(match self.kind() {
            "ping" => ClientMessage::Ping,
            "leave" => ClientMessage::Leave,
            "join" => {
                let v = self.value.get("v").and_then(Value::as_u64).unwrap_or(0);
                if v != PROTOCOL_VERSION {
                    return Err(Bad {
                        code: "unsupported_version",
                        message: format!(
                            "protocol version {PROTOCOL_VERSION} is supported, not {v}"
                        ),
                    });
                }
                let room = self.str_field("room")?;
                valid_name("room", room)?;
                let token = match self.value.get("token") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(t)) => Some(t.clone()),
                    Some(_) => return Err(bad("`token` is a string")),
                };
                let auto_subscribe = match self.value.get("auto_subscribe") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(bad("`auto_subscribe` is a boolean")),
                };
                ClientMessage::Join(Join {
                    room: room.to_string(),
                    name: self.optional_str("name"),
                    token,
                    replaces: self.optional_str("replaces"),
                    auto_subscribe,
                })
            }
            "publish_offer" => ClientMessage::PublishOffer {
                sdp: self.str_field("sdp")?.to_string(),
                sources: self.sources()?,
            },
            "subscribe" => ClientMessage::Subscribe {
                track: self.track_field()?,
            },
            "unsubscribe" => ClientMessage::Unsubscribe {
                track: self.track_field()?,
            },
            "subscribe_answer" => ClientMessage::SubscribeAnswer {
                sdp: self.str_field("sdp")?.to_string(),
            },
            "mute" => {
                let track = self.str_field("track")?.to_string();
                let muted = self
                    .value
                    .get("muted")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| bad("missing or non-boolean field `muted`"))?;
                ClientMessage::Mute { track, muted }
            }
            "quality" => {
                let track = self.str_field("track")?.to_string();
                let quality = match self.str_field("quality")? {
                    "low" => Quality::Low,
                    "medium" => Quality::Medium,
                    "high" => Quality::High,
                    "off" => Quality::Off,
                    other => {
                        return Err(bad(format!(
                            "`quality` is low, medium, high or off, not `{other}`"
                        )))
                    }
                };
                ClientMessage::Quality { track, quality }
            }
            other => {
                return Err(Bad {
                    code: "unknown_type",
                    message: format!("unknown message type `{other}`"),
                })
            }
        })
    }
}

/// A room or participant name: 1 to [`MAX_NAME`] bytes, no control characters.
pub fn valid_name(what: &str, s: &str) -> Result<(), Bad> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(bad(format!(
            "`{what}` must be 1 to {MAX_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientMessage, Bad> {
        envelope(text)?.parse()
    }

    fn code(text: &str) -> &'static str {
        parse(text).expect_err("refused").code
    }

    #[test]
    fn each_client_message_parses() {
        assert_eq!(
            parse(r#"{"type":"join","v":1,"room":"r","name":"n","token":null}"#),
            Ok(ClientMessage::Join(Join {
                room: "r".into(),
                name: Some("n".into()),
                token: None,
                replaces: None,
                auto_subscribe: true,
            }))
        );
        assert_eq!(
            parse(r#"{"type":"join","v":1,"room":"r","name":"n","auto_subscribe":false}"#),
            Ok(ClientMessage::Join(Join {
                room: "r".into(),
                name: Some("n".into()),
                token: None,
                replaces: None,
                auto_subscribe: false,
            }))
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","track":"t1"}"#),
            Ok(ClientMessage::Subscribe { track: "t1".into() })
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","track":"t1"}"#),
            Ok(ClientMessage::Unsubscribe { track: "t1".into() })
        );
        assert_eq!(
            parse(
                r#"{"type":"publish_offer","sdp":"v=0","sources":{"0":"camera","2":"screen","3":"screen_audio","1":"microphone"}}"#
            ),
            Ok(ClientMessage::PublishOffer {
                sdp: "v=0".into(),
                sources: vec![
                    ("0".into(), Source::Camera),
                    ("1".into(), Source::Microphone),
                    ("2".into(), Source::Screen),
                    ("3".into(), Source::ScreenAudio),
                ],
            })
        );
        assert_eq!(
            parse(r#"{"type":"quality","track":"t","quality":"off"}"#),
            Ok(ClientMessage::Quality {
                track: "t".into(),
                quality: Quality::Off
            })
        );
        assert_eq!(
            parse(r#"{"type":"mute","track":"t","muted":true}"#),
            Ok(ClientMessage::Mute {
                track: "t".into(),
                muted: true
            })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"type":"publish_offer","sdp":"v=0"}"#),
            Ok(ClientMessage::PublishOffer {
                sdp: "v=0".into(),
                sources: vec![],
            })
        );
    }

    #[test]
    fn bad_messages_get_the_protocols_codes() {
        assert_eq!(code("not json"), "bad_message");
        assert_eq!(code("[1]"), "bad_message");
        assert_eq!(code(r#"{"type":42}"#), "bad_message");
        assert_eq!(code(r#"{"type":"fly"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"join","room":"r"}"#), "unsupported_version");
        assert_eq!(code(r#"{"type":"join","v":1,"room":""}"#), "bad_message");
        assert_eq!(
            code(r#"{"type":"join","v":1,"room":"r","token":5}"#),
            "bad_message"
        );
        assert_eq!(code(r#"{"type":"mute","track":"t"}"#), "bad_message");
        assert_eq!(
            code(r#"{"type":"quality","track":"t","quality":"ultra"}"#),
            "bad_message"
        );
        assert_eq!(code(r#"{"type":"subscribe_answer"}"#), "bad_message");
    }

    #[test]
    fn new_fields_are_validated() {
        let join = |extra: &str| code(&format!(r#"{{"type":"join","v":1,"room":"r"{extra}}}"#));
        assert_eq!(join(r#","auto_subscribe":"no""#), "bad_message");
        assert_eq!(join(r#","auto_subscribe":0"#), "bad_message");
        let offer = |sources: &str| {
            code(&format!(
                r#"{{"type":"publish_offer","sdp":"v=0","sources":{sources}}}"#
            ))
        };
        assert_eq!(offer(r#"["camera"]"#), "bad_message");
        assert_eq!(offer(r#""camera""#), "bad_message");
        assert_eq!(offer(r#"{"0":"webcam"}"#), "bad_message");
        assert_eq!(offer(r#"{"0":7}"#), "bad_message");
        assert_eq!(offer(r#"{"":"camera"}"#), "bad_message");
        assert_eq!(
            offer(&format!(r#"{{"{}":"camera"}}"#, "m".repeat(MAX_MID + 1))),
            "bad_message"
        );
        let many: Vec<String> = (0..=MAX_SOURCES)
            .map(|i| format!(r#""{i}":"camera""#))
            .collect();
        assert_eq!(offer(&format!("{{{}}}", many.join(","))), "bad_message");
        assert!(parse(r#"{"type":"publish_offer","sdp":"v=0","sources":null}"#).is_ok());
        for kind in ["subscribe", "unsubscribe"] {
            assert_eq!(code(&format!(r#"{{"type":"{kind}"}}"#)), "bad_message");
            assert_eq!(
                code(&format!(r#"{{"type":"{kind}","track":5}}"#)),
                "bad_message"
            );
            assert_eq!(
                code(&format!(r#"{{"type":"{kind}","track":""}}"#)),
                "bad_message"
            );
            let long = "t".repeat(MAX_TRACK_ID + 1);
            assert_eq!(
                code(&format!(r#"{{"type":"{kind}","track":"{long}"}}"#)),
                "bad_message"
            );
            assert!(envelope(&format!(r#"{{"type":"{kind}","track":"t"}}"#))
                .unwrap()
                .needs_join());
        }
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(valid_name("name", "alice").is_ok());
        assert!(valid_name("name", &"x".repeat(MAX_NAME)).is_ok());
        assert!(valid_name("name", &"x".repeat(MAX_NAME + 1)).is_err());
        assert!(valid_name("name", "a\u{7}b").is_err());
        assert!(valid_name("name", "").is_err());
    }
}
