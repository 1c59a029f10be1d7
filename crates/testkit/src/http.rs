//! WHIP / WHEP clients and small HTTP helpers for tests.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::header::{CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use serde_json::Value;

use crate::peer::{OfferSpec, Peer, PeerOptions};

/// Timeout of every HTTP request made by the testkit.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Location`, if any (as sent, possibly relative).
    pub location: Option<String>,
    /// `WWW-Authenticate`, if any (the challenge of a `401` or `403`).
    pub www_authenticate: Option<String>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The URL that answered (after redirects): a relative `Location` is relative to it.
    pub url: String,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON (status {}): {:?}", self.status, self.body))
    }
}

/// HTTPS trusts the certificates given to [`crate::tls::trust`].
fn client() -> reqwest::Client {
    let builder = reqwest::Client::builder().timeout(HTTP_TIMEOUT);
    let builder = match crate::tls::client_config() {
        Ok(tls) => builder.use_preconfigured_tls(tls),
        Err(_) => builder,
    };
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

async fn finish(resp: reqwest::Response) -> anyhow::Result<HttpResponse> {
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(CONTENT_TYPE);
    let location = header(LOCATION);
    let www_authenticate = header(WWW_AUTHENTICATE);
    let bytes = resp.bytes().await.context("reading the response body")?;
    Ok(HttpResponse {
        status,
        content_type,
        location,
        www_authenticate,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        url,
    })
}

/// `GET url`.
pub async fn http_get(url: &str) -> anyhow::Result<HttpResponse> {
    http_get_with(url, None).await
}

/// `GET url` with `Authorization: Bearer {token}` if a token is given.
pub async fn http_get_with(url: &str, token: Option<&str>) -> anyhow::Result<HttpResponse> {
    let resp = with_bearer(client().get(url), token)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    finish(resp).await
}

fn with_bearer(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.header(reqwest::header::AUTHORIZATION, format!("Bearer {t}")),
        None => req,
    }
}

/// `GET url`, expecting `200` and a JSON body.
pub async fn http_get_json(url: &str) -> anyhow::Result<Value> {
    let r = http_get(url).await?;
    if r.status != 200 {
        bail!("GET {url}: status {} body {:?}", r.status, r.body);
    }
    r.json()
}

/// `DELETE url`.
pub async fn http_delete(url: &str) -> anyhow::Result<HttpResponse> {
    let resp = client()
        .delete(url)
        .send()
        .await
        .with_context(|| format!("DELETE {url}"))?;
    finish(resp).await
}

/// `POST url` with the given content type and body (for WHIP/WHEP bad-input tests).
pub async fn http_post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<HttpResponse> {
    http_post_with(url, content_type, body, None).await
}

/// [`http_post`] with `Authorization: Bearer {token}` if a token is given.
pub async fn http_post_with(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    token: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let mut req = with_bearer(client().post(url).body(body), token);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    finish(resp).await
}

/// Resolves a `Location` header against the request URL.
pub fn resolve_location(request_url: &str, location: &str) -> anyhow::Result<String> {
    let base =
        reqwest::Url::parse(request_url).with_context(|| format!("bad URL {request_url}"))?;
    Ok(base
        .join(location)
        .with_context(|| format!("bad Location {location:?}"))?
        .to_string())
}

/// A WHIP or WHEP session: the peer connection plus the session resource.
#[derive(Debug)]
pub struct HttpSession {
    peer: Peer,
    location: String,
    answer: String,
}

impl HttpSession {
    /// The peer connection (its recordings and counters).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The absolute URL of the session resource (from `Location`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The server's SDP answer.
    pub fn answer_sdp(&self) -> &str {
        &self.answer
    }

    /// Sends `DELETE` to the session resource and closes the peer connection. Returns the
    /// status of the `DELETE` (`200` expected).
    pub async fn close(mut self) -> anyhow::Result<u16> {
        let r = http_delete(&self.location).await;
        self.peer.close();
        Ok(r?.status)
    }
}

async fn negotiate(
    url: &str,
    spec: OfferSpec,
    name: &str,
    token: Option<&str>,
) -> anyhow::Result<HttpSession> {
    let peer = Peer::new(PeerOptions {
        name: name.to_string(),
        ..Default::default()
    })?;
    let offer = peer.create_offer(spec).await?;
    let r = http_post_with(url, Some("application/sdp"), offer, token).await?;
    if r.status != 201 {
        bail!("POST {url}: expected 201, got {} {:?}", r.status, r.body);
    }
    let location = r
        .location
        .as_deref()
        .with_context(|| format!("POST {url}: 201 without Location"))?;
    // Relative to where the offer ended up (a cluster node may redirect it).
    let location = resolve_location(&r.url, location)?;
    peer.accept_answer(&r.body)
        .await
        .with_context(|| format!("POST {url}: bad answer {:?}", r.body))?;
    Ok(HttpSession {
        peer,
        location,
        answer: r.body,
    })
}

/// WHIP: publishes `sendonly` Opus audio + VP8 video to `url` (`…/whip/{room}`). Media flows
/// once ICE and DTLS are up (see [`Peer::wait_connected`]).
pub async fn whip_publish(url: &str) -> anyhow::Result<HttpSession> {
    negotiate(url, OfferSpec::publish(), "whip", None).await
}

/// [`whip_publish`] with an access token (`Authorization: Bearer`).
pub async fn whip_publish_with_token(url: &str, token: &str) -> anyhow::Result<HttpSession> {
    negotiate(url, OfferSpec::publish(), "whip", Some(token)).await
}

/// WHIP like [`whip_publish`], the video in three simulcast layers (rids `q`, `h`, `f`:
/// 320x180, 640x360 and 1280x720, each its own VP8 stream with its own SSRC).
pub async fn whip_publish_simulcast(url: &str) -> anyhow::Result<HttpSession> {
    negotiate(url, OfferSpec::publish_simulcast(), "whip", None).await
}

/// WHEP: plays `url` (`…/whep/{room}` or `…/whep/{room}/{participant}`) with a `recvonly`
/// audio + video offer.
pub async fn whep_play(url: &str) -> anyhow::Result<HttpSession> {
    negotiate(url, OfferSpec::play(), "whep", None).await
}

/// [`whep_play`] with an access token (`Authorization: Bearer`).
pub async fn whep_play_with_token(url: &str, token: &str) -> anyhow::Result<HttpSession> {
    negotiate(url, OfferSpec::play(), "whep", Some(token)).await
}
