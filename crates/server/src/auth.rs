//! Access tokens: HS256 JWTs signed with one of the node's API keys, the grants they carry,
//! and the checks every entry point makes (signaling, WHIP, WHEP, the admin API). Without
//! keys the node is open (development mode; config.rs allows that on loopback only).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sfumato_signal::sdp::sections;

/// Clock difference tolerated between whoever made a token and this node, in seconds.
pub const LEEWAY: u64 = 30;
/// Shortest API secret accepted: HS256 with a short secret can be brute-forced offline from
/// any one token.
pub const MIN_SECRET: usize = 32;
/// Longest token read (a real one is a few hundred bytes).
const MAX_TOKEN: usize = 8 * 1024;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Enter the token's room (a WebSocket participant, a WHIP or a WHEP session).
    Join,
    /// Send media into it (`publish_offer`, WHIP).
    Publish,
    /// Receive the others' media (WebSocket subscriptions, `quality`, WHEP).
    Subscribe,
    /// Negotiate data channels (an `m=application` section in an offer).
    Data,
    /// `GET /api/rooms/{room}` for the token's room.
    #[value(name = "room_admin")]
    RoomAdmin,
    /// The whole admin API and `/metrics`.
    Admin,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Join => "join",
            Grant::Publish => "publish",
            Grant::Subscribe => "subscribe",
            Grant::Data => "data",
            Grant::RoomAdmin => "room_admin",
            Grant::Admin => "admin",
        }
    }
}

/// The kinds of track a publisher may send (the server knows a track's kind, not whether a
/// video is a camera or a screen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Audio,
    Video,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Audio => "audio",
            Source::Video => "video",
        }
    }
}

/// A token's claims (docs/protocol.md, "Access tokens").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed the token (the header's `kid` may name it instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The participant's identity.
    pub sub: String,
    /// Display name (default: the identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The one room the token is for; needed by every grant but `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// With `publish`: the kinds of track it may send (absent: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Source>>,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (Unix seconds), informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    pub fn has(&self, grant: Grant) -> bool {
        self.grants.contains(&grant)
    }

    /// The name a participant of this token shows: the `name` claim, else the identity.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }

    /// The token is valid at `now` (Unix seconds), give or take [`LEEWAY`].
    pub fn check_time(&self, now: u64) -> Result<(), Denied> {
        if now > self.exp.saturating_add(LEEWAY) {
            return Err(Denied::Expired(now - self.exp));
        }
        if let Some(nbf) = self.nbf {
            if nbf > now.saturating_add(LEEWAY) {
                return Err(Denied::NotYetValid(nbf - now));
            }
        }
        Ok(())
    }

    /// The token grants every one of `needs` in `room`.
    pub fn check_room(&self, room: &str, needs: &[Grant]) -> Result<(), Denied> {
        match &self.room {
            None => return Err(Denied::NoRoom),
            Some(r) if r != room => {
                return Err(Denied::Room {
                    token: r.clone(),
                    asked: room.to_string(),
                })
            }
            Some(_) => {}
        }
        match needs.iter().find(|g| !self.has(**g)) {
            Some(g) => Err(Denied::Grant(*g)),
            None => Ok(()),
        }
    }

    /// The admin API: `admin`, or for the endpoints of one room (`room`), `room_admin` for it.
    pub fn check_admin(&self, room: Option<&str>) -> Result<(), Denied> {
        if self.has(Grant::Admin) {
            return Ok(());
        }
        match room {
            Some(room) if self.has(Grant::RoomAdmin) => match &self.room {
                Some(r) if r == room => Ok(()),
                Some(r) => Err(Denied::Room {
                    token: r.clone(),
                    asked: room.to_string(),
                }),
                None => Err(Denied::NoRoom),
            },
            _ => Err(Denied::Grant(Grant::Admin)),
        }
    }
}

/// Why a request was refused. The first group is `401` (`unauthorized` over WebSocket):
/// no valid token; the second `403` (`forbidden`): a valid token that does not allow this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this server requires an access token (`sfumato token create`)")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("the token names no API key (`kid` or `iss`)")]
    NoKey,
    #[error("unknown API key `{0}`")]
    UnknownKey(String),
    #[error("the token's signature does not match its API key")]
    BadSignature,
    #[error("the token expired {0} s ago")]
    Expired(u64),
    #[error("the token is not valid yet (for another {0} s)")]
    NotYetValid(u64),
    #[error("the token does not grant `{}`", .0.as_str())]
    Grant(Grant),
    #[error("the token is for room `{token}`, not `{asked}`")]
    Room { token: String, asked: String },
    #[error("the token names no room")]
    NoRoom,
    #[error("the token may not publish {}", .0.as_str())]
    Source(Source),
}

/// Every [`Denied::reason`], in the order of the rejection counters.
pub const REASONS: [&str; 11] = [
    "missing",
    "malformed",
    "no_key",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "grant",
    "room",
    "no_room",
    "source",
];

impl Denied {
    /// Whether the token itself is missing or invalid (`401`), rather than not enough (`403`).
    pub fn unauthenticated(&self) -> bool {
        matches!(
            self,
            Denied::Missing
                | Denied::Malformed(_)
                | Denied::NoKey
                | Denied::UnknownKey(_)
                | Denied::BadSignature
                | Denied::Expired(_)
                | Denied::NotYetValid(_)
        )
    }

    pub fn status(&self) -> StatusCode {
        if self.unauthenticated() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        }
    }

    /// The signaling error code.
    pub fn code(&self) -> &'static str {
        if self.unauthenticated() {
            "unauthorized"
        } else {
            "forbidden"
        }
    }

    /// A short label (metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => REASONS[0],
            Denied::Malformed(_) => REASONS[1],
            Denied::NoKey => REASONS[2],
            Denied::UnknownKey(_) => REASONS[3],
            Denied::BadSignature => REASONS[4],
            Denied::Expired(_) => REASONS[5],
            Denied::NotYetValid(_) => REASONS[6],
            Denied::Grant(_) => REASONS[7],
            Denied::Room { .. } => REASONS[8],
            Denied::NoRoom => REASONS[9],
            Denied::Source(_) => REASONS[10],
        }
    }

    /// The HTTP answer: the status, the reason as a line of text, and a `WWW-Authenticate`
    /// challenge as RFC 6750 describes it.
    pub fn response(&self) -> Response {
        let reason = self.to_string();
        let challenge = match self {
            Denied::Missing => "Bearer realm=\"sfumato\"".to_string(),
            d => format!(
                "Bearer realm=\"sfumato\", error=\"{}\", error_description=\"{}\"",
                if d.unauthenticated() {
                    "invalid_token"
                } else {
                    "insufficient_scope"
                },
                reason.replace(['"', '\\'], "'")
            ),
        };
        let mut r = (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reason,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

/// What a participant may do once in its room: all of it in development mode, else what its
/// token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub publish: bool,
    pub subscribe: bool,
    pub data: bool,
    /// The kinds it may publish (`None`: any).
    pub sources: Option<Vec<Source>>,
}

impl Rights {
    pub fn all() -> Self {
        Rights {
            publish: true,
            subscribe: true,
            data: true,
            sources: None,
        }
    }

    /// A participant of another node: this node lets it do nothing itself.
    pub fn none() -> Self {
        Rights {
            publish: false,
            subscribe: false,
            data: false,
            sources: Some(Vec::new()),
        }
    }

    /// Development mode (`None`) or a token's grants.
    pub fn of(claims: Option<&Claims>) -> Self {
        match claims {
            None => Rights::all(),
            Some(c) => Rights {
                publish: c.has(Grant::Publish),
                subscribe: c.has(Grant::Subscribe),
                data: c.has(Grant::Data),
                sources: c.sources.clone(),
            },
        }
    }

    /// The m-lines of an SDP offer are within these rights: a media section that sends needs
    /// `publish` and its kind among the sources, an `m=application` one (data channels)
    /// needs `data`. Sections with port 0 (stopped) or that send nothing are not counted.
    pub fn check_offer(&self, sdp: &str) -> Result<(), Denied> {
        for m in sections(sdp) {
            if m.live && m.kind == "application" && !self.data {
                return Err(Denied::Grant(Grant::Data));
            }
            if m.publishes() {
                if !self.publish {
                    return Err(Denied::Grant(Grant::Publish));
                }
                let source = if m.kind == "audio" {
                    Source::Audio
                } else {
                    Source::Video
                };
                if self.sources.as_ref().is_some_and(|s| !s.contains(&source)) {
                    return Err(Denied::Source(source));
                }
            }
        }
        Ok(())
    }
}

/// The node's API keys and what was refused.
#[derive(Default)]
pub struct Auth {
    keys: HashMap<String, DecodingKey>,
    rejected: [AtomicU64; REASONS.len()],
}

/// The `Authorization: Bearer` token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// Development mode: no keys, everything allowed.
    pub fn open() -> Self {
        Auth::default()
    }

    /// Tokens signed with any of `keys` (API key → secret).
    pub fn new(keys: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let mut out = Auth::default();
        for (key, secret) in keys {
            check_key(key, secret)?;
            out.keys
                .insert(key.clone(), DecodingKey::from_secret(secret.as_bytes())?);
        }
        Ok(out)
    }

    /// No keys: development mode.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The signature, the key and the validity period of a token at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, Denied> {
        if token.len() > MAX_TOKEN {
            return Err(Denied::Malformed(format!("over {MAX_TOKEN} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(Denied::Malformed(format!(
                "algorithm {:?}, expected HS256",
                header.alg
            )));
        }
        // The key is named by `kid`, else by `iss` (read before the signature is checked
        // only to pick the key; nothing else of it is used until then).
        let key_name = match header.kid {
            Some(kid) => kid,
            None => {
                let unverified: Issuer =
                    jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(malformed)?;
                unverified.iss.ok_or(Denied::NoKey)?
            }
        };
        let key = self
            .keys
            .get(&key_name)
            .ok_or_else(|| Denied::UnknownKey(key_name.clone()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        // Times are checked below with a clock passed in (`Claims::check_time`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Denied::BadSignature,
                _ => malformed(e),
            })?
            .claims;
        if claims.iss.as_ref().is_some_and(|iss| *iss != key_name) {
            return Err(Denied::Malformed(format!(
                "`kid` names key `{key_name}`, `iss` another"
            )));
        }
        claims.check_time(now)?;
        Ok(claims)
    }

    /// A room's entry point (`join`, WHIP, WHEP): `None` in development mode, else the
    /// token's claims if it grants all of `needs` in `room`.
    pub fn room_access(
        &self,
        token: Option<&str>,
        room: &str,
        needs: &[Grant],
    ) -> Result<Option<Claims>, Denied> {
        if self.is_open() {
            return Ok(None);
        }
        let result = token.ok_or(Denied::Missing).and_then(|t| {
            let claims = self.verify(t, now())?;
            claims.check_room(room, needs)?;
            Ok(claims)
        });
        self.count(result.map(Some))
    }

    /// An admin endpoint (of one room's, if `room`): why it is refused, if it is
    /// ([`Denied::response`] is the answer).
    pub fn admin(&self, headers: &HeaderMap, room: Option<&str>) -> Result<(), Denied> {
        if self.is_open() {
            return Ok(());
        }
        let result = bearer(headers).ok_or(Denied::Missing).and_then(|t| {
            let claims = self.verify(t, now())?;
            claims.check_admin(room)
        });
        self.count(result)
    }

    /// Counts a refusal by its reason (`sfumato_auth_rejected_total`).
    pub fn count<T>(&self, result: Result<T, Denied>) -> Result<T, Denied> {
        result.map_err(|d| self.deny(d))
    }

    /// Counts `d` and hands it back.
    pub fn deny(&self, d: Denied) -> Denied {
        let i = REASONS.iter().position(|r| *r == d.reason()).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
        d
    }

    /// Refusals so far, per reason (in [`REASONS`] order).
    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[derive(Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: Option<String>,
}

fn malformed(e: jsonwebtoken::errors::Error) -> Denied {
    Denied::Malformed(e.to_string())
}

/// An API key name and its secret are usable.
pub fn check_key(key: &str, secret: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !key.is_empty() && key.len() <= 128 && !key.chars().any(|c| c.is_control()),
        "an API key is 1 to 128 characters without control characters"
    );
    anyhow::ensure!(
        secret.len() >= MIN_SECRET,
        "the secret of API key `{key}` is {} bytes; at least {MIN_SECRET} are needed \
         (`sfumato key create` makes one)",
        secret.len()
    );
    Ok(())
}

/// Signs `claims` with API key `key` (named in both `kid` and `iss`).
pub fn sign(key: &str, secret: &str, claims: &Claims) -> anyhow::Result<String> {
    check_key(key, secret)?;
    let mut claims = claims.clone();
    claims.iss = Some(key.to_string());
    let header = Header {
        kid: Some(key.to_string()),
        ..Header::new(Algorithm::HS256)
    };
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k1";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims(grants: &[Grant]) -> Claims {
        Claims {
            iss: None,
            sub: "alice".into(),
            name: None,
            room: Some("r".into()),
            grants: grants.to_vec(),
            sources: None,
            exp: NOW + 3600,
            nbf: Some(NOW - 10),
            iat: Some(NOW - 10),
        }
    }

    fn auth(keys: &[(&str, &str)]) -> Auth {
        let map: BTreeMap<String, String> = keys
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_string()))
            .collect();
        Auth::new(&map).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_and_names_it() {
        let t = sign(KEY, SECRET, &claims(&[Grant::Join])).unwrap();
        let c = auth(&[(KEY, SECRET)]).verify(&t, NOW).unwrap();
        assert_eq!(c.iss.as_deref(), Some(KEY));
        assert_eq!(c.sub, "alice");
        assert_eq!(c.display_name(), "alice");
        assert_eq!(c.grants, vec![Grant::Join]);
    }

    #[test]
    fn times_are_checked_with_leeway() {
        let c = claims(&[]);
        assert_eq!(c.check_time(NOW), Ok(()));
        assert_eq!(c.check_time(c.exp + LEEWAY), Ok(()));
        assert_eq!(
            c.check_time(c.exp + LEEWAY + 1),
            Err(Denied::Expired(LEEWAY + 1))
        );
        let later = Claims {
            nbf: Some(NOW + 100),
            ..claims(&[])
        };
        assert_eq!(later.check_time(NOW), Err(Denied::NotYetValid(100)));
        assert_eq!(later.check_time(NOW + 100 - LEEWAY), Ok(()));
        let no_nbf = Claims {
            nbf: None,
            ..claims(&[])
        };
        assert_eq!(no_nbf.check_time(0), Ok(()));
    }

    #[test]
    fn the_wrong_key_secret_or_shape_is_refused() {
        let t = sign(KEY, SECRET, &claims(&[Grant::Join])).unwrap();
        let other_secret = auth(&[(KEY, "ffffffffffffffffffffffffffffffff")]);
        assert_eq!(other_secret.verify(&t, NOW), Err(Denied::BadSignature));
        let other_key = auth(&[("k2", SECRET)]);
        assert_eq!(
            other_key.verify(&t, NOW),
            Err(Denied::UnknownKey(KEY.into()))
        );
        let a = auth(&[(KEY, SECRET)]);
        for junk in [
            "",
            "x",
            "a.b",
            "a.b.c",
            "\u{0}.\u{0}.\u{0}",
            &"A".repeat(10_000),
        ] {
            let d = a.verify(junk, NOW).unwrap_err();
            assert!(matches!(d, Denied::Malformed(_)), "{junk:?}: {d:?}");
            assert_eq!(d.status(), StatusCode::UNAUTHORIZED);
        }
        // A tampered payload: the signature no longer matches.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let forged = sign(KEY, SECRET, &claims(&[Grant::Admin])).unwrap();
        parts[1] = forged.split('.').nth(1).unwrap().to_string();
        assert_eq!(a.verify(&parts.join("."), NOW), Err(Denied::BadSignature));
    }

    #[test]
    fn the_key_comes_from_kid_or_iss() {
        let c = Claims {
            iss: Some(KEY.into()),
            ..claims(&[Grant::Join])
        };
        // `iss` alone names the key (LiveKit's convention).
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        let a = auth(&[(KEY, SECRET)]);
        assert!(a.verify(&t, NOW).is_ok());
        // Neither: refused.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(&[Grant::Join]),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(a.verify(&t, NOW), Err(Denied::NoKey));
        // Another algorithm than HS256: refused before any key is used.
        let t = jsonwebtoken::encode(
            &Header {
                kid: Some(KEY.into()),
                ..Header::new(Algorithm::HS512)
            },
            &claims(&[Grant::Join]),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(matches!(a.verify(&t, NOW), Err(Denied::Malformed(_))));
    }

    #[test]
    fn rotation_two_keys_at_once() {
        let a = auth(&[(KEY, SECRET), ("k2", "abcdefghijklmnopqrstuvwxyz012345")]);
        for (k, s) in [(KEY, SECRET), ("k2", "abcdefghijklmnopqrstuvwxyz012345")] {
            let t = sign(k, s, &claims(&[Grant::Join])).unwrap();
            assert!(a.verify(&t, NOW).is_ok(), "{k}");
        }
    }

    #[test]
    fn room_grants() {
        let c = claims(&[Grant::Join, Grant::Publish]);
        assert_eq!(c.check_room("r", &[Grant::Join, Grant::Publish]), Ok(()));
        assert_eq!(
            c.check_room("r", &[Grant::Join, Grant::Subscribe]),
            Err(Denied::Grant(Grant::Subscribe))
        );
        let d = c.check_room("other", &[Grant::Join]).unwrap_err();
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        assert!(d.to_string().contains("`other`"), "{d}");
        let roomless = Claims {
            room: None,
            ..claims(&[Grant::Join])
        };
        assert_eq!(
            roomless.check_room("r", &[Grant::Join]),
            Err(Denied::NoRoom)
        );
    }

    #[test]
    fn admin_and_room_admin() {
        assert_eq!(claims(&[Grant::Admin]).check_admin(None), Ok(()));
        assert_eq!(claims(&[Grant::Admin]).check_admin(Some("x")), Ok(()));
        let ra = claims(&[Grant::RoomAdmin]);
        assert_eq!(ra.check_admin(Some("r")), Ok(()));
        assert!(matches!(
            ra.check_admin(Some("x")),
            Err(Denied::Room { .. })
        ));
        assert_eq!(ra.check_admin(None), Err(Denied::Grant(Grant::Admin)));
        assert_eq!(
            claims(&[Grant::Join]).check_admin(Some("r")),
            Err(Denied::Grant(Grant::Admin))
        );
    }

    #[test]
    fn offers_within_rights() {
        let av = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert_eq!(Rights::all().check_offer(av), Ok(()));
        let audio_only = Rights {
            sources: Some(vec![Source::Audio]),
            ..Rights::all()
        };
        assert_eq!(
            audio_only.check_offer(av),
            Err(Denied::Source(Source::Video))
        );
        // A stopped video m-line (port 0) sends nothing.
        let stopped = av.replace("m=video 9", "m=video 0");
        assert_eq!(audio_only.check_offer(&stopped), Ok(()));
        let viewer = Rights {
            publish: false,
            ..Rights::all()
        };
        assert_eq!(viewer.check_offer(av), Err(Denied::Grant(Grant::Publish)));
        // A WHEP offer receives only.
        let play = av.replace("a=sendonly", "a=recvonly");
        assert_eq!(viewer.check_offer(&play), Ok(()));
        let data = format!("{play}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        let no_data = Rights {
            data: false,
            ..viewer
        };
        assert_eq!(no_data.check_offer(&data), Err(Denied::Grant(Grant::Data)));
        // Garbage is no section at all.
        assert_eq!(no_data.check_offer("m=\nm=audio\n\u{0}"), Ok(()));
    }

    #[test]
    fn http_refusals_say_why() {
        let r = Denied::Expired(5).response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let www = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            www.contains("invalid_token") && www.contains("expired"),
            "{www}"
        );
        let r = Denied::Grant(Grant::Publish).response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(Denied::Missing.code(), "unauthorized");
        assert_eq!(Denied::NoRoom.code(), "forbidden");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(sign(KEY, "short", &claims(&[])).is_err());
        let map = BTreeMap::from([(KEY.to_string(), "short".to_string())]);
        assert!(Auth::new(&map).is_err());
    }

    #[test]
    fn development_mode_allows_everything_and_counts_nothing() {
        let a = Auth::open();
        assert!(a.is_open());
        assert_eq!(a.room_access(None, "r", &[Grant::Join]), Ok(None));
        assert!(a.admin(&HeaderMap::new(), None).is_ok());
        assert!(a.rejected().iter().all(|(_, n)| *n == 0));
        let keyed = auth(&[(KEY, SECRET)]);
        assert_eq!(
            keyed.room_access(None, "r", &[Grant::Join]),
            Err(Denied::Missing)
        );
        assert_eq!(keyed.rejected()[0], ("missing", 1));
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
