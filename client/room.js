// A room session: join, publish (camera, microphone, screen: each a publication that can be
// replaced, released, unpublished), subscribe (all, or chosen tracks), mute, stats, leave,
// reconnect.
//
// Two peer connections per participant (docs/protocol.md): the publish PC, offered by us, and
// the subscribe PC, offered by the server and created at its first offer. Remote tracks are
// mapped to participants by the `tracks` list of each subscribe_offer, by mid. Data messages
// are `room.data` (data.js); the room gives it each session's transports and received frames.
//
// The publish PC carries the data channels (channels.js) as well as the published tracks:
// unless `transport: 'ws'` was asked for, it is created right after each join with the two
// channels and offered with only them (`m=application`); `publish` adds its transceivers to
// that same PC and offers again. Every offer of the PC (re)states the channels and the tracks.

import { Emitter } from './emitter.js';
import {
  CAMERA_CONSTRAINTS,
  SIMULCAST_ENCODINGS,
  SOURCES,
  captureDevice,
  defaultSource,
  kindOfSource,
  listDevices,
  preferCodec,
  sendEncodings,
  videoSettings,
} from './media.js';
import { StatsSampler } from './stats.js';
import { RoomData, wsTransport } from './data.js';
import { DataChannels } from './channels.js';
import { Signaling, SignalingError, UnreachableError, PROTOCOL_VERSION } from './signaling.js';
import {
  DEFAULT_RTC_CONFIG,
  answerSdp,
  backoffDelay,
  closePc,
  createOfferSdp,
  SerialQueue,
  sleep,
} from './peer.js';

const DEFAULTS = {
  reconnect: true,
  maxReconnectAttempts: 20,
  reconnectBaseDelayMs: 500,
  reconnectMaxDelayMs: 10000,
  gatherTimeoutMs: 2000,
  requestTimeoutMs: 15000,
  pingIntervalMs: 10000,
  rtcConfig: DEFAULT_RTC_CONFIG,
};

/** What `connect`'s `transport` option accepts: data messages over the publish PC's data
 * channels once they are open (default), or over the signaling socket only. */
const DATA_TRANSPORTS = new Set(['sctp', 'ws']);

/**
 * Whether an access token lets us open data channels (its `grants` hold `data`), so that a
 * token without that grant does not get the publish offer refused (`forbidden`). A token
 * whose claims cannot be read is left to the server to judge.
 */
function tokenAllowsData(token) {
  if (!token) return true;
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    return !Array.isArray(claims?.grants) || claims.grants.includes('data');
  } catch {
    return true;
  }
}

/** What `setVideoQuality` accepts. */
const QUALITIES = new Set(['low', 'medium', 'high', 'off']);

/** How long a move between nodes keeps the old session once the new one plays. The others
 * switch to the mover's new tracks only when their first keyframe reaches them, which the
 * mover does not wait for (nothing tells it): in the drain browser test on a loaded
 * two-core machine, another page's first frame of the mover's new video came 0.6-2.2 s
 * after that page was given the track, and the old session left before it with 2000 ms. */
const MOVE_OVERLAP_MS = 3000;

/** Error codes after which trying again cannot help. */
/** Join refusals that trying again cannot change (a token refused stays refused: the
 * application needs a new one). */
const FATAL_JOIN_CODES = new Set(['unsupported_version', 'bad_message', 'unauthorized', 'forbidden']);

/** The signaling URL on the node at `httpUrl`, with the scheme and path of `current`. */
function signalingUrl(httpUrl, current) {
  const here = new URL(current);
  const u = new URL(httpUrl);
  u.protocol = here.protocol;
  u.pathname = here.pathname;
  u.search = here.search;
  return u.toString();
}

function participantFrom(p) {
  const tracks = Array.isArray(p?.tracks) ? p.tracks : [];
  const out = {
    id: String(p.id),
    name: String(p.name ?? ''),
    tracks: tracks.map(trackFrom),
  };
  if (p.replaces != null) out.replaces = String(p.replaces);
  return out;
}

/** A remote track as the server describes it; `source` defaults to its kind's device. */
function trackFrom(t) {
  const source = SOURCES.has(t?.source) ? t.source : defaultSource(t?.kind);
  return { id: String(t.id), kind: t.kind, source, muted: !!t.muted };
}

/** A track id, from an id or from an object that names one (a subscription: `track`). */
function trackIdOf(t) {
  return t && typeof t === 'object' ? String(t.track ?? t.id) : String(t);
}

/** `participant_left.participant` is an id; accept an object too. */
function idOf(v) {
  return v && typeof v === 'object' ? String(v.id) : String(v);
}

export class Room extends Emitter {
  /**
   * Connects and joins. Rejects if the first join fails (no retry for that one).
   * @param {string} url ws(s)://host/ws
   * @param {{room: string, name?: string, token?: string}} opts (and the tuning knobs of DEFAULTS):
   *   `token` is the access token of a server with API keys (its name is then the token's,
   *   and `name` may be left out); without keys the server needs `name` and reads no token.
   */
  static async connect(url, opts) {
    if (!opts || typeof opts.room !== 'string' || !opts.room) throw new TypeError('connect: `room` is required');
    if (opts.token != null && (typeof opts.token !== 'string' || !opts.token)) throw new TypeError('connect: `token` is a non-empty string');
    if (!opts.token && (typeof opts.name !== 'string' || !opts.name)) throw new TypeError('connect: `name` is required (or a `token`)');
    const room = new Room(url, opts);
    const others = await room._openAndJoin();
    room.state = 'connected';
    for (const p of others) room._participants.set(p.id, p);
    room._openChannels(room._session);
    // Listeners are attached after `connect` resolves; report the people already here then,
    // and that data messages can be sent.
    setTimeout(() => {
      for (const p of others) if (room._participants.get(p.id) === p) room.emit('participantJoined', { participant: p });
      room._dataReady();
    }, 0);
    return room;
  }

  constructor(url, opts) {
    super();
    this.url = url;
    this.roomName = opts.room;
    this.name = opts.name ?? '';
    this._token = opts.token ?? null;
    this._opts = { ...DEFAULTS, ...opts };
    /** @type {'connecting'|'connected'|'reconnecting'|'disconnected'} */
    this.state = 'connecting';
    /** @type {{id: string, name: string} | null} */
    this.localParticipant = null;
    this._participants = new Map();
    this._sig = null;
    this._session = 0;
    /** Moving between nodes (`_move`): new subscriptions held back until they play. */
    this._moving = false;
    this._held = null;
    this._left = false;
    this._reconnecting = false;
    /** The server asked us to reconnect: the first attempt goes without delay. */
    this._reconnectNow = false;
    /** In a cluster: the live nodes as the server last listed them ({id, url, state}). A
     * reconnect that cannot reach this node tries the others. */
    this.nodes = [];
    this._pubPc = null;
    this._subPc = null;
    this._pubQueue = new SerialQueue();
    this._subQueue = new SerialQueue();
    /** The data channels of the current publish PC (channels.js), if it has them. */
    this._channels = null;
    /** The server refused our data channels (or they could not be negotiated): this room
     * keeps its data messages on the socket. */
    this._channelsRefused = false;
    /**
     * Our publications: {source, kind, mediaStreamTrack, stream (its msid), transceiver,
     * serverId, muted, released (the device was let go: setCameraEnabled(false)),
     * constraints and deviceId (to capture it again), and for video simulcast, videoCodec,
     * scalabilityMode, maxBitrate}. `stream` is the camera and microphone's MediaStream.
     */
    this._local = { stream: null, tracks: [] };
    /** The stream of the current screen share, if any. */
    this._screenStream = null;
    /** Whether the server subscribes us to every track (connect's `autoSubscribe`). */
    this._autoSubscribe = opts.autoSubscribe ?? true;
    /** track id → subscribe (true) or not, as asked with subscribe/unsubscribe */
    this._trackPrefs = new Map();
    /** participant id → subscribe to its tracks or not (subscribeParticipant) */
    this._participantPrefs = new Map();
    /** received video track id → {layer, temporal} as the server allocates it */
    this._receivedLayers = new Map();
    this._stats = new StatsSampler();
    this._mutePrefs = { audio: false, video: false };
    /** mid -> subscription */
    this._subs = new Map();
    this._goneTracks = new Set();
    this._lastOfferTracks = [];
    /** Id of the room's dominant speaker (ours included), null before anyone spoke. */
    this.activeSpeaker = null;
    /** our track id -> which simulcast layers the server says someone receives */
    this._layerWishes = new Map();
    /** remote video track id -> quality asked for with setVideoQuality */
    this._qualities = new Map();
    /** Data messages: `room.data.send(...)`, `room.data.on(topic, handler)`. */
    this.data = new RoomData((event, msg) => this.emit(event, msg), {
      self: () => this.localParticipant?.id ?? '',
      nameOf: (id) => this._participants.get(id)?.name,
    });
    // Byte streams follow their peers: one that leaves may rejoin under a new id, and our
    // own rejoin (a new id) is said to every peer once data can flow again.
    const streams = this.data._streams;
    this.on('participantLeft', ({ participant }) => streams.peerLeft(participant.id));
    this.on('participantJoined', ({ participant }) => streams.peerJoined(participant.id, participant.name));
    this.on('dataTransport', () => streams.linkUp());
    this.on('disconnected', ({ reason }) => streams.close(reason));
    if (opts.videoQuality != null && !QUALITIES.has(opts.videoQuality)) {
      throw new TypeError(`connect: videoQuality is one of ${[...QUALITIES].join(', ')}`);
    }
    if (opts.autoSubscribe != null && typeof opts.autoSubscribe !== 'boolean') {
      throw new TypeError('connect: autoSubscribe is a boolean');
    }
    if (opts.transport != null && !DATA_TRANSPORTS.has(opts.transport)) {
      throw new TypeError(`connect: transport is one of ${[...DATA_TRANSPORTS].join(', ')}`);
    }
  }

  /** The other participants, as currently known. */
  get participants() {
    return [...this._participants.values()];
  }

  /** The local MediaStream being published, if any. */
  get localStream() {
    return this._local.stream;
  }

  /** Current remote track subscriptions. */
  get subscriptions() {
    return [...this._subs.values()].map((s) => this._subEvent(s));
  }

  isMuted(kind) {
    return !!this._mutePrefs[kind];
  }

  /**
   * Chooses which simulcast layer of another participant's video track we receive: `low`
   * (320 wide), `medium` (640), `high` (the publisher's best) or `off` (no packets at all).
   * The switch happens at the publisher's next keyframe of that layer; the picture does not
   * freeze meanwhile. Remembered across reconnects.
   * @param {string|{track: string}} track a track id, or a subscription
   * @param {'low'|'medium'|'high'|'off'} quality
   */
  setVideoQuality(track, quality) {
    const id = trackIdOf(track);
    if (!QUALITIES.has(quality)) throw new TypeError(`setVideoQuality: quality is one of ${[...QUALITIES].join(', ')}`);
    this._qualities.set(id, quality);
    if (this._sig) this._sig.send({ type: 'quality', track: id, quality });
  }

  /**
   * Lets `element` (where `track` is shown) choose its quality from then on: the layer that
   * matches its rendered width in device pixels (up to 360: low, up to 720: medium, above:
   * high), and `off` while it is not visible (scrolled away, `display: none`, hidden tab),
   * so that what nobody sees costs no bandwidth. Returns a function that stops it.
   * @param {string|{track: string}} track
   * @param {Element} element
   * @returns {() => void}
   */
  observeVideo(track, element) {
    const id = trackIdOf(track);
    let width = element.getBoundingClientRect().width;
    let intersecting = true;
    const apply = () => {
      const px = width * (globalThis.devicePixelRatio || 1);
      const visible = intersecting && width > 0 && globalThis.document?.visibilityState !== 'hidden';
      const q = !visible ? 'off' : px <= 360 ? 'low' : px <= 720 ? 'medium' : 'high';
      if (this._qualities.get(id) !== q) this.setVideoQuality(id, q);
    };
    const resize = new ResizeObserver((entries) => {
      width = entries[entries.length - 1].contentRect.width;
      apply();
    });
    const intersect = new IntersectionObserver((entries) => {
      intersecting = entries[entries.length - 1].isIntersecting;
      apply();
    });
    resize.observe(element);
    intersect.observe(element);
    globalThis.document?.addEventListener('visibilitychange', apply);
    apply();
    return () => {
      resize.disconnect();
      intersect.disconnect();
      globalThis.document?.removeEventListener('visibilitychange', apply);
    };
  }

  /** The quality asked for a remote video track (`connect`'s `videoQuality` by default). */
  videoQuality(track) {
    return this._qualities.get(String(track)) ?? this._opts.videoQuality ?? 'high';
  }

  /** Tells the server our wish for a remote track we just learnt about, if we have one. */
  _announceQuality(info) {
    if (info.kind !== 'video' || !this._sig) return;
    const q = this._qualities.get(info.id) ?? this._opts.videoQuality;
    if (q) this._sig.send({ type: 'quality', track: info.id, quality: q });
  }

  // ---------------------------------------------------------------- choosing what to receive

  /**
   * Receive a remote track (by id, or a track object): for a room joined with
   * `autoSubscribe: false`, or a track unsubscribed before. It arrives as `trackSubscribed`.
   * Remembered for this room (across reconnects).
   */
  subscribe(track) {
    const id = trackIdOf(track);
    this._trackPrefs.set(id, true);
    this._sig?.send({ type: 'subscribe', track: id });
  }

  /** Stop receiving a remote track (`trackUnsubscribed` follows). Remembered. */
  unsubscribe(track) {
    const id = trackIdOf(track);
    this._trackPrefs.set(id, false);
    this._sig?.send({ type: 'unsubscribe', track: id });
  }

  /** Receive every track of a participant (by id or object), now and those it publishes
   * later; a track's own `subscribe`/`unsubscribe` wins. */
  subscribeParticipant(participant) {
    this._setParticipantPref(idOf(participant), true);
  }

  /** Stop receiving a participant's tracks, now and later. */
  unsubscribeParticipant(participant) {
    this._setParticipantPref(idOf(participant), false);
  }

  _setParticipantPref(id, want) {
    this._participantPrefs.set(id, want);
    const p = this._participants.get(id);
    for (const t of p?.tracks ?? []) {
      if (this._trackPrefs.has(t.id) || !this._sig) continue;
      this._sig.send({ type: want ? 'subscribe' : 'unsubscribe', track: t.id });
    }
  }

  /** Whether we want remote track `t` of participant `pid`: as asked, else the room's default. */
  _wants(pid, t) {
    return this._trackPrefs.get(t.id) ?? this._participantPrefs.get(pid) ?? this._autoSubscribe;
  }

  /** A remote track we just learnt of: ask for it (or not) where the server's default
   * (`autoSubscribe`) differs from what we want. */
  _applySubscription(pid, t) {
    const want = this._wants(pid, t);
    if (want !== this._autoSubscribe && this._sig) this._sig.send({ type: want ? 'subscribe' : 'unsubscribe', track: t.id });
  }

  // ---------------------------------------------------------------- statistics

  /**
   * Statistics of each published and each received track, from the browser's WebRTC stats:
   * bitrates and loss over the time since the previous call (the first call, or one more
   * than 30 s after the last, measures over half a second of its own), RTT, the encodings
   * sent, and for received video its resolution, frame rate and the layer the server
   * forwards.
   */
  async getStats() {
    if (this._stats.stale()) {
      await this._sampleStats();
      await sleep(500);
    }
    return this._sampleStats();
  }

  async _sampleStats() {
    const sampler = this._stats;
    const published = [];
    for (const lt of this._local.tracks) {
      const sender = lt.transceiver?.sender;
      if (!sender) continue;
      let report;
      try {
        report = await sender.getStats();
      } catch {
        continue;
      }
      published.push({
        track: lt.serverId,
        kind: lt.kind,
        source: lt.source,
        muted: lt.muted,
        enabled: !lt.released,
        ...sampler.published(`pub:${lt.source}:${lt.serverId}`, report),
      });
    }
    const subscribed = [];
    const transceivers = this._subPc?.getTransceivers() ?? [];
    for (const sub of this._subs.values()) {
      const tr = transceivers.find((t) => t.mid === sub.mid);
      if (!tr) continue;
      let report;
      try {
        report = await tr.receiver.getStats();
      } catch {
        continue;
      }
      const allocated = this._receivedLayers.get(sub.trackId);
      subscribed.push({
        track: sub.trackId,
        participant: sub.participantId,
        kind: sub.kind,
        source: sub.source,
        muted: sub.muted,
        ...sampler.subscribed(`sub:${sub.mid}:${sub.trackId}`, report),
        layer: sub.kind === 'video' ? (allocated?.layer ?? null) : null,
        temporalLayer: sub.kind === 'video' ? (allocated?.temporal ?? null) : null,
        quality: sub.kind === 'video' ? this.videoQuality(sub.trackId) : null,
      });
    }
    sampler.commit();
    return { timestamp: Date.now(), published, subscribed };
  }

  // ---------------------------------------------------------------- publish / mute / leave

  /**
   * Captures camera and/or microphone (or uses `stream`) and publishes it. The camera is
   * captured at 1280×720 and sent in three simulcast layers unless `simulcast` is false.
   * With `videoCodec: 'vp9'` or `'av1'` it is sent as one scalable stream instead (SVC,
   * `scalabilityMode` `L3T3_KEY` by default): the server forwards each viewer the spatial
   * layers it needs. A kind already published (not unpublished since) is refused.
   * @param {{audio?: boolean|MediaTrackConstraints, video?: boolean|MediaTrackConstraints, stream?: MediaStream, simulcast?: boolean, videoCodec?: 'vp8'|'vp9'|'av1'|'h264', scalabilityMode?: string}} [opts]
   * @returns {Promise<MediaStream>} the local stream
   */
  async publish(opts = {}) {
    if (this._left) throw new Error('publish: the room was left');
    const audio = opts.audio ?? true;
    const video = opts.video === true || opts.video == null ? { ...CAMERA_CONSTRAINTS } : opts.video;
    const settings = videoSettings('camera', opts);
    const kinds = opts.stream ? opts.stream.getTracks().map((t) => t.kind) : [audio && 'audio', video && 'video'].filter(Boolean);
    if (!kinds.length || kinds.some((k) => this._publication(defaultSource(k)))) throw new Error('publish: already publishing');
    const captured = opts.stream ?? (await navigator.mediaDevices.getUserMedia({ audio, video }));
    const stream = this._local.stream ?? captured;
    if (stream !== captured) for (const t of captured.getTracks()) stream.addTrack(t);
    this._local.stream = stream;
    const added = captured.getTracks().map((t) => ({
      ...(t.kind === 'video' ? settings : {}),
      source: defaultSource(t.kind),
      kind: t.kind,
      mediaStreamTrack: t,
      stream,
      constraints: opts.stream ? true : t.kind === 'video' ? video : audio,
      deviceId: t.getSettings?.().deviceId ?? null,
    }));
    await this._addPublications(added, { stopOnFailure: !opts.stream });
    return stream;
  }

  /**
   * Publishes one track (a camera or microphone the application captured, a canvas, a
   * screen), alongside what is published already. `source` says what it is to the others
   * (default: its kind's device); one publication per source.
   * @param {MediaStreamTrack} track
   * @param {{source?: 'camera'|'microphone'|'screen'|'screen_audio', simulcast?: boolean, videoCodec?: string, scalabilityMode?: string, maxBitrate?: number, stream?: MediaStream}} [opts]
   * @returns {Promise<{source: string, kind: string, mediaStreamTrack: MediaStreamTrack, track: string|null}>}
   */
  async publishTrack(track, opts = {}) {
    if (this._left) throw new Error('publishTrack: the room was left');
    if (!track || (track.kind !== 'audio' && track.kind !== 'video')) throw new TypeError('publishTrack: an audio or video MediaStreamTrack');
    const source = opts.source ?? defaultSource(track.kind);
    if (!SOURCES.has(source)) throw new TypeError(`publishTrack: source is one of ${[...SOURCES].join(', ')}`);
    if (kindOfSource(source) !== track.kind) throw new TypeError(`publishTrack: a ${source} track is ${kindOfSource(source)}`);
    if (this._publication(source)) throw new Error(`publishTrack: ${source} is published already`);
    const settings = track.kind === 'video' ? videoSettings(source, opts) : {};
    let stream = opts.stream;
    if (!stream && (source === 'camera' || source === 'microphone')) {
      stream = this._local.stream ?? new MediaStream();
      stream.addTrack(track);
      this._local.stream = stream;
    }
    const lt = {
      ...settings,
      source,
      kind: track.kind,
      mediaStreamTrack: track,
      stream: stream ?? new MediaStream([track]),
      constraints: true,
      deviceId: track.getSettings?.().deviceId ?? null,
    };
    await this._addPublications([lt], { stopOnFailure: false });
    return { source, kind: lt.kind, mediaStreamTrack: track, track: lt.serverId ?? null };
  }

  /**
   * Stops publishing a track (by source, MediaStreamTrack or server track id): the others see
   * it unpublished (`trackUnpublished`). `stop` (default true) also stops the local track
   * (the camera light goes off); with `stop: false` it can be published again with
   * `publishTrack`.
   */
  async unpublishTrack(target, { stop = true } = {}) {
    const lt = this._publication(target);
    if (!lt) throw new Error('unpublishTrack: not published');
    this._local.tracks = this._local.tracks.filter((x) => x !== lt);
    this._retire(lt);
    const t = lt.mediaStreamTrack;
    if (t && lt.stream === this._local.stream) {
      this._local.stream.removeTrack(t);
      if (!this._local.stream.getTracks().length) this._local.stream = null;
    }
    if (stop) t?.stop();
    this.emit('unpublished', { track: lt.serverId, source: lt.source, kind: lt.kind, mediaStreamTrack: t });
    await this._renegotiate();
  }

  /**
   * Shares the screen (getDisplayMedia): published as its own track (source `screen`, and
   * `screen_audio` with `audio: true`), alongside the camera, sent as one encoding at full
   * resolution unless `simulcast` or a scalable codec (`videoCodec: 'vp9'`, `L1T3` by
   * default) is asked for. Ends by itself when the browser's "stop sharing" is used.
   * @param {{audio?: boolean, video?: boolean|MediaTrackConstraints, stream?: MediaStream, simulcast?: boolean, videoCodec?: string, scalabilityMode?: string, maxBitrate?: number, contentHint?: string}} [opts]
   * @returns {Promise<MediaStream>}
   */
  async shareScreen(opts = {}) {
    if (this._left) throw new Error('shareScreen: the room was left');
    if (this._publication('screen')) throw new Error('shareScreen: already sharing');
    const settings = videoSettings('screen', opts);
    const stream = opts.stream ?? (await navigator.mediaDevices.getDisplayMedia({ video: opts.video ?? true, audio: opts.audio ?? false }));
    const video = stream.getVideoTracks()[0];
    if (!video) throw new Error('shareScreen: no video track to share');
    if ('contentHint' in video) video.contentHint = opts.contentHint ?? 'detail';
    const added = stream.getTracks().map((t) => ({
      ...(t.kind === 'video' ? settings : {}),
      source: t.kind === 'video' ? 'screen' : 'screen_audio',
      kind: t.kind,
      mediaStreamTrack: t,
      stream,
      constraints: true,
      deviceId: null,
    }));
    this._screenStream = stream;
    // The browser's own "stop sharing" ends the track.
    video.addEventListener('ended', () => {
      if (this._screenStream === stream) this.stopScreenShare().catch(() => {});
    });
    try {
      await this._addPublications(added, { stopOnFailure: !opts.stream });
    } catch (err) {
      if (this._screenStream === stream) this._screenStream = null;
      throw err;
    }
    return stream;
  }

  /** Stops the screen share (its tracks end and are unpublished). */
  async stopScreenShare() {
    const stream = this._screenStream;
    this._screenStream = null;
    for (const source of ['screen', 'screen_audio']) {
      if (this._publication(source)) await this.unpublishTrack(source);
    }
    for (const t of stream?.getTracks() ?? []) t.stop();
  }

  /** The stream of the screen share, while sharing. */
  get screenStream() {
    return this._screenStream;
  }

  /**
   * Turns the camera off or on. Off releases the device (the track is stopped: the camera
   * light goes off) and mutes the track for the others; on captures the same device again
   * (or the one `switchDevice` chose meanwhile) and unmutes it. No renegotiation.
   */
  setCameraEnabled(enabled) {
    return this._setSourceEnabled('camera', enabled);
  }

  /** As `setCameraEnabled`, for the microphone. */
  setMicrophoneEnabled(enabled) {
    return this._setSourceEnabled('microphone', enabled);
  }

  /** Whether the camera (or microphone) is published and captured (not released). */
  isEnabled(source) {
    const lt = this._publication(source);
    return !!lt && !lt.released && !lt.muted;
  }

  async _setSourceEnabled(source, enabled) {
    const lt = this._publication(source);
    if (!lt) throw new Error(`${source} is not published`);
    if (!enabled) {
      this.setMuted(lt.kind, true);
      lt.released = true;
      const t = lt.mediaStreamTrack;
      if (t && t.readyState === 'live') {
        lt.deviceId = t.getSettings?.().deviceId ?? lt.deviceId;
        await lt.transceiver?.sender.replaceTrack(null).catch(() => {});
        t.stop();
      }
      return;
    }
    if (lt.released || lt.mediaStreamTrack?.readyState !== 'live') {
      const track = await captureDevice(lt.kind, lt.constraints, lt.deviceId);
      if (!this._local.tracks.includes(lt)) {
        track.stop(); // unpublished meanwhile
        return;
      }
      await this._swap(lt, track);
      lt.released = false;
    }
    this.setMuted(lt.kind, false);
  }

  /**
   * Sends `track` instead of the published one of `target` (a source, the MediaStreamTrack or
   * the server track id), without renegotiation (`RTCRtpSender.replaceTrack`): the others
   * keep their subscription and decode the new picture or sound. The old track is stopped
   * unless `stopOld` is false.
   */
  async replaceTrack(target, track, { stopOld = true } = {}) {
    const lt = this._publication(target);
    if (!lt) throw new Error('replaceTrack: not published');
    if (!track || track.kind !== lt.kind) throw new TypeError(`replaceTrack: a ${lt.kind} track`);
    await this._swap(lt, track, stopOld);
    lt.released = false;
    lt.deviceId = track.getSettings?.().deviceId ?? null;
  }

  /**
   * Switches the published camera (`video`) or microphone (`audio`) to another device, by
   * its `deviceId` (from `listDevices`), without renegotiation. While the camera is off the
   * choice waits for `setCameraEnabled(true)`.
   */
  async switchDevice(kind, deviceId) {
    const lt = this._publication(defaultSource(kind));
    if (!lt) throw new Error(`switchDevice: no ${defaultSource(kind)} published`);
    lt.deviceId = deviceId;
    if (lt.released) return;
    const track = await captureDevice(kind, lt.constraints, deviceId);
    if (!this._local.tracks.includes(lt)) {
      track.stop();
      return;
    }
    await this._swap(lt, track);
  }

  /** The deviceId of the camera (`video`) or microphone (`audio`) published, or null. */
  activeDevice(kind) {
    const lt = this._publication(defaultSource(kind));
    if (!lt) return null;
    const live = lt.mediaStreamTrack?.readyState === 'live' ? lt.mediaStreamTrack.getSettings?.().deviceId : null;
    return live ?? lt.deviceId ?? null;
  }

  /** The cameras (`video`), microphones (`audio`) or speakers (`output`) of this browser. */
  listDevices(kind) {
    return listDevices(kind);
  }

  /** Our publications: source, kind, the track sent, the server's id for it, mute and release. */
  get localTracks() {
    return this._local.tracks.map((lt) => ({
      source: lt.source,
      kind: lt.kind,
      track: lt.serverId,
      mediaStreamTrack: lt.mediaStreamTrack,
      muted: lt.muted,
      enabled: !lt.released,
    }));
  }

  /** The publication of `target`: a source name, a MediaStreamTrack or a server track id. */
  _publication(target) {
    if (target == null) return undefined;
    if (typeof target === 'string') return this._local.tracks.find((lt) => lt.source === target || lt.serverId === target);
    return this._local.tracks.find((lt) => lt.mediaStreamTrack === target);
  }

  /** Puts `track` in place of `lt`'s in its sender and stream; emits `localTrackChanged`. */
  async _swap(lt, track, stopOld = true) {
    const old = lt.mediaStreamTrack;
    track.enabled = !lt.muted;
    if (lt.transceiver) await lt.transceiver.sender.replaceTrack(track);
    if (lt.stream) {
      if (old) lt.stream.removeTrack(old);
      lt.stream.addTrack(track);
    }
    lt.mediaStreamTrack = track;
    if (stopOld && old && old !== track) old.stop();
    this.emit('localTrackChanged', { source: lt.source, kind: lt.kind, mediaStreamTrack: track, previous: old ?? null });
  }

  /** Adds publications and offers them; undoes them if the server refuses. */
  async _addPublications(added, { stopOnFailure }) {
    for (const lt of added) {
      lt.muted = lt.source === 'camera' || lt.source === 'microphone' ? !!this._mutePrefs[lt.kind] : false;
      lt.mediaStreamTrack.enabled = !lt.muted;
      lt.transceiver = null;
      lt.serverId = null;
      lt.released = false;
      this._local.tracks.push(lt);
    }
    const session = this._session;
    try {
      await this._pubQueue.run(() => this._negotiatePublish(session));
    } catch (err) {
      // A signaling drop in the middle: the reconnect will republish.
      if (this._reconnecting || session !== this._session) return;
      // Refused (bad_sdp, internal, forbidden, timeout): undo, so that it can be tried again.
      await this._undoPublications(added, session, stopOnFailure);
      throw err;
    }
  }

  async _undoPublications(added, session, stopTracks) {
    this._local.tracks = this._local.tracks.filter((lt) => !added.includes(lt));
    for (const lt of added) {
      this._retire(lt);
      if (lt.stream === this._local.stream && lt.mediaStreamTrack) this._local.stream.removeTrack(lt.mediaStreamTrack);
      if (stopTracks) lt.mediaStreamTrack?.stop();
    }
    if (this._local.stream && !this._local.stream.getTracks().length) this._local.stream = null;
    const pc = this._pubPc;
    if (pc && !pc.remoteDescription) {
      // Never answered: the publish PC goes with its data channels (data messages take the
      // socket until a new PC's channels open), and what is left is offered afresh.
      this._closePubPc();
      for (const lt of this._local.tracks) lt.transceiver = null;
      if (this._local.tracks.length) this._renegotiate().catch(() => {});
      else this._openChannels(session);
    } else if (pc?.signalingState === 'have-local-offer') {
      await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
    }
  }

  /** A publication's transceiver stops sending (the next offer says `inactive`). */
  _retire(lt) {
    const tr = lt.transceiver;
    lt.transceiver = null;
    if (!tr) return;
    tr.sender.replaceTrack(null).catch(() => {});
    try {
      tr.direction = 'inactive';
    } catch {
      /* the PC is closed */
    }
  }

  /** Offers the publish PC again (after a publication went), unless between sessions. */
  async _renegotiate() {
    const session = this._session;
    if (!this._sig || this._reconnecting) return;
    try {
      await this._pubQueue.run(() => this._negotiatePublish(session));
    } catch (err) {
      if (this._reconnecting || session !== this._session) return;
      throw err;
    }
  }

  /**
   * Mutes or unmutes the camera (`video`) or microphone (`audio`): `track.enabled` and a
   * `mute` message. The device stays captured (see `setCameraEnabled` to release it).
   * @param {'audio'|'video'} kind
   * @param {boolean} muted
   */
  setMuted(kind, muted) {
    this._mutePrefs[kind] = !!muted;
    for (const lt of this._local.tracks) {
      if (lt.source !== defaultSource(kind)) continue; // a screen share is not the camera
      lt.muted = !!muted;
      lt.mediaStreamTrack.enabled = !muted;
      if (lt.serverId && this._sig) this._sig.send({ type: 'mute', track: lt.serverId, muted: !!muted });
    }
  }

  /**
   * Leaves the room: `leave`, close the socket and both peer connections.
   * @param {{stopTracks?: boolean}} [opts] stopTracks (default true) stops camera and microphone
   */
  leave(opts = {}) {
    if (this._left) return;
    this._left = true;
    this._session++;
    if (this._sig) {
      this._sig.send({ type: 'leave' });
      this._sig.close('left');
    }
    this._teardownMedia();
    if (opts.stopTracks ?? true) {
      for (const lt of this._local.tracks) lt.mediaStreamTrack?.stop();
    }
    this._participants.clear();
    this.state = 'disconnected';
    this.emit('disconnected', { reason: 'left' });
  }

  // ---------------------------------------------------------------- joining

  /** Opens a socket and joins; returns the other participants. Sets the current session. */
  async _openAndJoin(replaces) {
    const o = this._opts;
    let sig;
    let joined;
    // A cluster node that is full or draining sends us to another one (at most a few hops).
    for (let hop = 0; ; hop++) {
      sig = await Signaling.open(this.url, { openTimeoutMs: o.requestTimeoutMs, pingIntervalMs: o.pingIntervalMs });
      try {
        const reply = sig.next('joined', { failOn: '*', timeoutMs: o.requestTimeoutMs });
        const join = { type: 'join', v: PROTOCOL_VERSION, room: this.roomName };
        if (this.name) join.name = this.name;
        if (this._token) join.token = this._token;
        if (replaces) join.replaces = replaces;
        if (!this._autoSubscribe) join.auto_subscribe = false;
        sig.send(join);
        joined = await reply;
        break;
      } catch (err) {
        sig.close('join failed');
        if (err instanceof SignalingError && err.code === 'redirect' && err.url && hop < 3) {
          this.url = signalingUrl(err.url, this.url);
          continue;
        }
        throw err;
      }
    }
    this._joinedUrl = this.url;
    if (this._left) {
      sig.close('left');
      throw new Error('the room was left');
    }
    const session = ++this._session;
    this._sig = sig;
    sig.on('message', (msg) => this._onMessage(msg, session));
    sig.on('binary', (frame) => {
      if (session === this._session) this.data._receive(frame);
    });
    sig.on('close', (ev) => this._onSocketClose(ev, session));
    this.data._attach(wsTransport(sig));
    this.localParticipant = { id: String(joined.participant?.id), name: String(joined.participant?.name ?? this.name) };
    this.activeSpeaker = joined.active_speaker != null ? String(joined.active_speaker) : null;
    this._setNodes(joined.nodes);
    const others = (Array.isArray(joined.participants) ? joined.participants : [])
      .map(participantFrom)
      .filter((p) => p.id !== this.localParticipant.id);
    // Before the server offers their tracks: the first packets are already the right layer.
    for (const p of others) for (const t of p.tracks) this._announceQuality(t);
    this._receivedLayers.clear();
    for (const p of others) for (const t of p.tracks) this._applySubscription(p.id, t);
    return others;
  }

  // ---------------------------------------------------------------- signaling messages

  _onMessage(msg, session) {
    if (session !== this._session) return;
    switch (msg.type) {
      case 'subscribe_offer':
        this._subQueue.run(() => this._onSubscribeOffer(msg, session)).catch((err) => {
          console.error('sfumato: subscribe negotiation failed', err);
          this.emit('error', { code: 'subscribe_failed', message: String(err?.message ?? err) });
        });
        break;
      case 'participant_joined': {
        const p = participantFrom(msg.participant);
        if (p.id === this.localParticipant?.id) break;
        this._participants.set(p.id, p);
        for (const t of p.tracks) this._announceQuality(t);
        for (const t of p.tracks) this._applySubscription(p.id, t);
        this.emit('participantJoined', { participant: p });
        this._retryReconcile();
        break;
      }
      case 'participant_left': {
        const id = idOf(msg.participant);
        const p = this._participants.get(id);
        if (!p) break;
        for (const [mid, s] of this._subs) {
          if (s.participantId === id) {
            this._subs.delete(mid);
            this.emit('trackUnsubscribed', this._subEvent(s, p));
          }
        }
        this._participants.delete(id);
        this.emit('participantLeft', { participant: p });
        break;
      }
      case 'track_published': {
        const t = msg.track ?? {};
        const p = this._participants.get(String(t.participant));
        if (!p) break;
        const info = trackFrom(t);
        p.tracks = p.tracks.filter((x) => x.id !== info.id).concat(info);
        this._goneTracks.delete(info.id);
        this._announceQuality(info);
        this._applySubscription(p.id, info);
        this.emit('trackPublished', { participant: p, track: info });
        this._retryReconcile();
        break;
      }
      case 'track_unpublished': {
        const trackId = idOf(msg.track);
        this._goneTracks.add(trackId);
        const p = this._participants.get(String(msg.participant));
        for (const [mid, s] of this._subs) {
          if (s.trackId === trackId) {
            this._subs.delete(mid);
            this.emit('trackUnsubscribed', this._subEvent(s));
          }
        }
        if (!p) break;
        const info = p.tracks.find((x) => x.id === trackId);
        p.tracks = p.tracks.filter((x) => x.id !== trackId);
        this.emit('trackUnpublished', { participant: p, track: info ?? { id: trackId } });
        break;
      }
      case 'track_muted': {
        const trackId = idOf(msg.track);
        const muted = !!msg.muted;
        const pid = String(msg.participant);
        const p = pid === this.localParticipant?.id ? this.localParticipant : this._participants.get(pid);
        if (!p) break;
        const info = p.tracks?.find((x) => x.id === trackId);
        if (info) info.muted = muted;
        let kind = info?.kind;
        for (const s of this._subs.values()) {
          if (s.trackId === trackId) {
            s.muted = muted;
            kind = kind ?? s.kind;
          }
        }
        if (!kind) kind = this._local.tracks.find((lt) => lt.serverId === trackId)?.kind;
        this.emit('trackMuted', { participant: p, track: trackId, kind, muted, local: p === this.localParticipant });
        break;
      }
      case 'received_layers':
        // Which layer of each video we receive the server allocates us (getStats).
        this._receivedLayers.clear();
        for (const [id, l] of Object.entries(msg.tracks ?? {})) {
          this._receivedLayers.set(id, {
            layer: Number.isInteger(l?.layer) ? l.layer : null,
            temporal: Number.isInteger(l?.temporal) ? l.temporal : null,
          });
        }
        break;
      case 'layers':
        // Which of our simulcast layers someone receives: encode only those.
        this._layerWishes.set(String(msg.track), Array.isArray(msg.active) ? msg.active.map(Boolean) : []);
        this._applyLayers();
        break;
      case 'active_speaker': {
        const id = idOf(msg.participant);
        this.activeSpeaker = id;
        const p = id === this.localParticipant?.id ? this.localParticipant : this._participants.get(id);
        this.emit('activeSpeaker', { participant: p ?? { id, name: '', tracks: [] }, local: id === this.localParticipant?.id });
        break;
      }
      case 'nodes':
        this._setNodes(msg.nodes);
        break;
      case 'move':
        // Our node is draining: move to the one named, make-before-break.
        if (typeof msg.url === 'string' && /^https?:\/\//.test(msg.url)) {
          this._move(signalingUrl(msg.url, this.url)).catch((err) => console.warn('sfumato: move failed', err));
        }
        break;
      case 'reconnect':
        // The server lost this session's media (the worker under it stopped) and closes the
        // socket next: rejoin at once, not after a dropped socket's backoff. The same path
        // as a drop from here on (teardown, rejoin, republish).
        console.warn(`sfumato: the server asks to reconnect: ${msg.reason ?? ''}`);
        this._reconnectNow = true;
        this._sig?.drop('reconnect asked by the server');
        break;
      case 'error':
        console.warn(`sfumato: server error ${msg.code}: ${msg.message}`);
        if (msg.code === 'data_overflow') this.data._overflow();
        this.emit('error', { code: msg.code, message: msg.message });
        break;
      default:
        // pong, and message types of later protocol versions.
        break;
    }
  }

  // ---------------------------------------------------------------- publish PC

  _newPc(session) {
    const pc = new RTCPeerConnection(this._opts.rtcConfig);
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState !== 'failed' || session !== this._session || this._reconnecting || !this._sig) return;
      if (pc === this._pubPc && !pc.getSenders().some((s) => s.track)) {
        // Only the data channels ride it: data messages go back to the socket for this room,
        // and the session carries on (nothing else needs this connection).
        console.warn('sfumato: the data channels\' connection failed; data messages use the signaling socket');
        this._channelsRefused = true;
        this._closePubPc();
        return;
      }
      console.warn('sfumato: a peer connection failed; reconnecting');
      this._sig.drop('peer connection failed');
    });
    return pc;
  }

  /** Whether this session's publish PC should carry the data channels. */
  _wantChannels() {
    return (
      this._opts.transport !== 'ws' &&
      !this._channelsRefused &&
      tokenAllowsData(this._token) &&
      typeof globalThis.RTCPeerConnection?.prototype?.createDataChannel === 'function'
    );
  }

  /** The session's publish PC, created with the data channels when they are wanted (they
   * must be there before its first offer, so that it has an `m=application` section). */
  _ensurePubPc(session) {
    if (this._pubPc) return this._pubPc;
    const pc = this._newPc(session);
    this._pubPc = pc;
    if (this._wantChannels()) {
      const channels = new DataChannels(pc, {
        onOpen: () => {
          if (session === this._session && this._channels === channels) this.data._useChannels(channels.transport);
        },
        onClose: () => {
          if (this._channels === channels) this.data._dropChannels(channels.transport);
        },
        onFrame: (frame) => {
          if (session === this._session) this.data._receive(frame);
        },
      });
      this._channels = channels;
    }
    return pc;
  }

  /** Closes the publish PC and its data channels (data messages fall back to the socket). */
  _closePubPc() {
    const channels = this._channels;
    this._channels = null;
    if (channels) {
      channels.close();
      this.data._dropChannels(channels.transport);
    }
    closePc(this._pubPc);
    this._pubPc = null;
  }

  /**
   * After a join without tracks to publish: a publish PC with only the data channels, in the
   * background (data messages use the socket meanwhile, and for good if it fails). Nothing
   * to do when the PC exists already (`publish` made it) or channels are not wanted.
   */
  _openChannels(session) {
    if (!this._wantChannels()) return;
    this._pubQueue.run(async () => {
      if (session !== this._session || this._pubPc) return;
      try {
        await this._negotiatePublish(session);
      } catch (err) {
        if (session !== this._session) return;
        // Not tried again in this room: a `publish` queued behind makes a PC without them.
        console.warn('sfumato: no data channels; data messages use the signaling socket:', err?.message ?? err);
        this._channelsRefused = true;
        this._closePubPc();
      }
    });
  }

  async _negotiatePublish(session) {
    if (session !== this._session || !this._sig) throw new Error('signaling session changed');
    const sig = this._sig;
    const pc = this._ensurePubPc(session);
    const channels = this._channels;
    // Nothing to offer: no channels, no publication, and none unpublished since the last offer.
    if (!channels && !this._local.tracks.length && !pc.getTransceivers().some((t) => t.mid != null)) return;
    for (const lt of this._local.tracks) {
      if (!lt.transceiver) {
        const init = { direction: 'sendonly', streams: lt.stream ? [lt.stream] : [] };
        const encodings = sendEncodings(lt);
        if (encodings) init.sendEncodings = encodings;
        // A released camera or microphone: the m-line is there, its track comes when enabled.
        const live = !lt.released && lt.mediaStreamTrack?.readyState === 'live';
        lt.transceiver = pc.addTransceiver(live ? lt.mediaStreamTrack : lt.kind, init);
        if (lt.kind === 'video' && lt.videoCodec) preferCodec(lt.transceiver, lt.videoCodec);
      }
    }
    const sdp = await createOfferSdp(pc, this._opts.gatherTimeoutMs);
    if (session !== this._session) throw new Error('signaling session changed');
    // What each track carries, by the mid its transceiver got in this offer.
    const sources = {};
    for (const lt of this._local.tracks) if (lt.transceiver?.mid != null) sources[lt.transceiver.mid] = lt.source;
    // An offer with data channels is refused `forbidden` by a server whose token lacks the
    // `data` grant.
    const failOn = channels ? ['bad_sdp', 'internal', 'forbidden'] : ['bad_sdp', 'internal'];
    const reply = sig.next('publish_answer', { failOn, timeoutMs: this._opts.requestTimeoutMs });
    sig.send({ type: 'publish_offer', sdp, sources });
    let answer;
    try {
      answer = await reply;
    } catch (err) {
      if (!channels || err?.code !== 'forbidden' || session !== this._session) throw err;
      // Our data channels are not allowed: a new publish PC without them, for the tracks.
      console.warn('sfumato: data channels refused; data messages use the signaling socket');
      this._channelsRefused = true;
      this._closePubPc();
      for (const lt of this._local.tracks) lt.transceiver = null;
      return this._negotiatePublish(session);
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const byMid = new Map((Array.isArray(answer.tracks) ? answer.tracks : []).map((t) => [String(t.mid), t]));
    for (const lt of this._local.tracks) {
      const t = lt.transceiver?.mid != null ? byMid.get(lt.transceiver.mid) : undefined;
      lt.serverId = t ? String(t.id) : null;
      if (lt.serverId && lt.muted) sig.send({ type: 'mute', track: lt.serverId, muted: true });
    }
    this._applyLayers();
    if (!this._local.tracks.length) return; // the data channels alone
    this.emit('published', {
      tracks: this._local.tracks.map((lt) => ({ id: lt.serverId, kind: lt.kind, source: lt.source, muted: lt.muted, mediaStreamTrack: lt.mediaStreamTrack })),
    });
  }

  /** Turns our encodings on or off as the server's `layers` messages say: each simulcast
   * layer, or a single (plain or scalable) encoding as a whole. */
  _applyLayers() {
    // One setParameters at a time: each must start from the parameters the last one left.
    this._layersChain = (this._layersChain ?? Promise.resolve())
      .then(() => this._applyLayersNow())
      .catch((err) => console.warn('sfumato: setParameters failed', err));
  }

  async _applyLayersNow() {
    for (const lt of this._local.tracks) {
      const wish = lt.serverId ? this._layerWishes.get(lt.serverId) : undefined;
      const sender = lt.transceiver?.sender;
      if (!wish || !sender || lt.kind !== 'video') continue;
      const params = sender.getParameters();
      if (!params.encodings?.length) continue;
      let changed = false;
      for (const enc of params.encodings) {
        // A single encoding (no simulcast, or one scalable stream) is on while any layer is
        // wanted; simulcast encodings each follow their own layer.
        const i = SIMULCAST_ENCODINGS.findIndex((e) => e.rid === enc.rid);
        const active = params.encodings.length === 1 ? wish.some(Boolean) : i >= 0 && !!wish[i];
        if (params.encodings.length > 1 && i < 0) continue;
        if (enc.active !== active) {
          enc.active = active;
          changed = true;
        }
      }
      if (changed) await sender.setParameters(params);
    }
  }

  // ---------------------------------------------------------------- subscribe PC

  async _onSubscribeOffer(msg, session) {
    if (session !== this._session) return;
    if (typeof msg.sdp !== 'string') throw new Error('subscribe_offer without sdp');
    if (!this._subPc) this._subPc = this._newPc(session);
    const pc = this._subPc;
    const sdp = await answerSdp(pc, msg.sdp, this._opts.gatherTimeoutMs);
    if (session !== this._session) return;
    this._sig.send({ type: 'subscribe_answer', sdp });
    this._lastOfferTracks = Array.isArray(msg.tracks) ? msg.tracks : [];
    this._reconcile(pc, this._lastOfferTracks);
  }

  /** An offer may name a participant before its participant_joined arrives: map it now. */
  _retryReconcile() {
    if (this._subPc && this._lastOfferTracks.length) this._reconcile(this._subPc, this._lastOfferTracks);
  }

  /** Brings the mid → remote track map in line with the latest offer; emits the changes. */
  _reconcile(pc, list) {
    const want = new Map();
    for (const t of list) if (t && t.mid != null) want.set(String(t.mid), t);
    for (const [mid, s] of this._subs) {
      const w = want.get(mid);
      if (!w || String(w.track) !== s.trackId || String(w.participant) !== s.participantId) {
        this._subs.delete(mid);
        this.emit('trackUnsubscribed', this._subEvent(s));
      }
    }
    const transceivers = pc.getTransceivers();
    for (const [mid, w] of want) {
      if (this._subs.has(mid)) continue;
      const trackId = String(w.track);
      if (this._goneTracks.has(trackId)) continue;
      const p = this._participants.get(String(w.participant));
      if (!p) continue;
      const tr = transceivers.find((x) => x.mid === mid);
      if (!tr) continue;
      const mst = tr.receiver.track;
      const info = p.tracks.find((x) => x.id === trackId);
      const kind = w.kind ?? mst.kind;
      const s = {
        mid,
        trackId,
        participantId: p.id,
        kind,
        source: info?.source ?? defaultSource(kind),
        mediaStreamTrack: mst,
        stream: new MediaStream([mst]),
        muted: !!info?.muted,
      };
      this._subs.set(mid, s);
      // While moving between nodes, the new subscriptions reach the application once they
      // play (see `_move`); until then the old ones are on show.
      if (this._held) this._held.push(s);
      else this.emit('trackSubscribed', this._subEvent(s, p));
    }
  }

  _subEvent(s, p) {
    const participant = p ?? this._participants.get(s.participantId) ?? { id: s.participantId, name: '', tracks: [] };
    return {
      participant,
      track: s.trackId,
      kind: s.kind,
      source: s.source,
      mid: s.mid,
      muted: s.muted,
      mediaStreamTrack: s.mediaStreamTrack,
      stream: s.stream,
    };
  }

  // ---------------------------------------------------------------- drops and reconnects

  /** Keeps the server's list of live nodes (a cluster); ignores anything malformed. */
  _setNodes(nodes) {
    if (!Array.isArray(nodes)) return;
    this.nodes = nodes
      .filter((n) => n && typeof n.url === 'string' && /^https?:\/\//.test(n.url))
      .map((n) => ({ id: String(n.id), url: n.url, state: String(n.state ?? 'serving') }));
  }

  /**
   * The signaling URL of reconnect attempt `attempt` (1-based): this node first, then, in a
   * cluster, each other serving node in turn (its HTTP URL with this URL's scheme and path),
   * so that a participant of a node that is gone comes back through another.
   */
  _reconnectUrl(attempt) {
    const all = this._reconnectUrls();
    return all[(attempt - 1) % all.length];
  }

  /** Where reconnect attempts go, in turn: this node, then the cluster's other serving nodes. */
  _reconnectUrls() {
    const here = new URL(this._joinedUrl ?? this.url);
    const others = this.nodes
      .filter((n) => n.state === 'serving')
      .map((n) => signalingUrl(n.url, here.toString()))
      .filter((u) => new URL(u).host !== here.host);
    return [here.toString(), ...others];
  }

  /**
   * Moves this session to another node (`url`: its signaling URL), make-before-break: the
   * old session's socket and peer connections stay until the new session carries media (our
   * tracks are published there, its subscriber connection is up with as many tracks as before
   * and each video one has decoded a frame), then it leaves. The application is told of the
   * new subscriptions only then, and the old ones go a second later (`trackSubscribed`, then
   * `trackUnsubscribed`), so an element can be handed a stream that already plays while the
   * old one still does; then `moved`.
   */
  async _move(url) {
    if (this._moving || this._reconnecting || this._left || !this._sig) return;
    this._moving = true;
    const old = {
      sig: this._sig,
      channels: this._channels,
      pubPc: this._pubPc,
      subPc: this._subPc,
      subs: [...this._subs.values()],
      self: this.localParticipant?.id,
    };
    // The old session is left to run on its own: nothing of it reaches the room any more.
    this._sig = null;
    this._session++;
    this._pubPc = null;
    this._channels = null;
    this._subPc = null;
    this._subs = new Map();
    this._held = [];
    this._lastOfferTracks = [];
    this._subQueue = new SerialQueue();
    this._pubQueue = new SerialQueue();
    for (const lt of this._local.tracks) {
      lt.transceiver = null;
      lt.serverId = null;
    }
    this.url = url;
    try {
      const others = await this._openAndJoin(old.self);
      this._applyParticipants(others);
      if (this._local.tracks.length) {
        const session = this._session;
        await this._pubQueue.run(() => this._negotiatePublish(session));
      } else {
        this._openChannels(this._session);
      }
      // Ready: as many subscriptions as before, each video one with a decoded frame.
      const until = Date.now() + this._opts.requestTimeoutMs;
      while (!this._left && Date.now() < until && !(await this._subsPlaying(old.subs.length))) await sleep(50);
    } catch (err) {
      console.warn('sfumato: moving to another node failed; reconnecting', err?.message ?? err);
    } finally {
      const held = this._held;
      this._held = null;
      for (const s of held) {
        if (this._subs.get(s.mid) !== s) continue; // gone meanwhile
        this.emit('trackSubscribed', this._subEvent(s));
      }
      // The old streams play on a little while the application switches its elements to
      // the new ones (a fresh element takes a few hundred ms to show its first frame).
      if (this._sig && !this._left) await sleep(MOVE_OVERLAP_MS);
      old.sig.send({ type: 'leave' });
      old.sig.close('moved to another node');
      old.channels?.close();
      closePc(old.pubPc);
      closePc(old.subPc);
      for (const s of old.subs) this.emit('trackUnsubscribed', this._subEvent(s));
      this._moving = false;
    }
    if (!this._sig && !this._left) {
      // The new session did not come up: the usual reconnect takes over.
      this._reconnectLoop();
      return;
    }
    this._dataReady();
    this.emit('moved', { url });
  }

  /** Data messages can be sent on this session: `dataTransport`. */
  _dataReady() {
    this.data._announce();
  }

  /** Whether at least `count` subscriptions are up and every video one decoded a frame. */
  async _subsPlaying(count) {
    if (this._subs.size < count) return false;
    if (this._subs.size === 0) return true;
    const pc = this._subPc;
    if (!pc || pc.connectionState !== 'connected') return false;
    for (const s of this._subs.values()) {
      if (s.kind !== 'video') continue;
      const tr = pc.getTransceivers().find((t) => t.mid === s.mid);
      if (!tr) return false;
      let decoded = 0;
      (await tr.receiver.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp') decoded += r.framesDecoded ?? 0;
      });
      if (decoded === 0) return false;
    }
    return true;
  }

  /** Closes both PCs and reports every subscription as gone. Local tracks keep running. */
  _teardownMedia() {
    for (const s of this._subs.values()) this.emit('trackUnsubscribed', this._subEvent(s));
    this._subs.clear();
    this._lastOfferTracks = [];
    this._closePubPc();
    closePc(this._subPc);
    this._subPc = null;
    this._subQueue = new SerialQueue();
    this._pubQueue = new SerialQueue();
    for (const lt of this._local.tracks) {
      lt.transceiver = null;
      lt.serverId = null;
    }
  }

  _onSocketClose(ev, session) {
    if (session !== this._session || this._left) return;
    this._sig = null;
    this._session++;
    this._teardownMedia();
    if (this._reconnecting) return; // the reconnect loop handles it
    if (!this._opts.reconnect) {
      this.state = 'disconnected';
      this.emit('disconnected', { reason: ev.reason || `socket closed (${ev.code})` });
      return;
    }
    this._reconnectLoop();
  }

  async _reconnectLoop() {
    this._reconnecting = true;
    this.state = 'reconnecting';
    const o = this._opts;
    let lastError = null;
    let now = this._reconnectNow;
    this._reconnectNow = false;
    for (let attempt = 1; attempt <= o.maxReconnectAttempts; attempt++) {
      const delayMs = now ? 0 : backoffDelay(attempt, o.reconnectBaseDelayMs, o.reconnectMaxDelayMs);
      now = false;
      this.emit('reconnecting', { attempt, delayMs });
      await sleep(delayMs);
      if (this._left) return;
      this.url = this._reconnectUrl(attempt);
      try {
        const others = await this._openAndJoin();
        this._applyParticipants(others);
        if (this._local.tracks.length) {
          const session = this._session;
          await this._pubQueue.run(() => this._negotiatePublish(session));
        } else {
          this._openChannels(this._session);
        }
        this._reconnecting = false;
        this.state = 'connected';
        this._dataReady();
        this.emit('reconnected', { attempts: attempt });
        return;
      } catch (err) {
        lastError = err;
        console.warn(`sfumato: reconnect attempt ${attempt} failed:`, err?.message ?? err);
        if (this._left) return;
        if (this._sig) {
          const sig = this._sig;
          this._sig = null;
          this._session++;
          sig.close('reconnect attempt failed');
          this._teardownMedia();
        }
        if (err instanceof SignalingError && FATAL_JOIN_CODES.has(err.code)) break;
        // A node that cannot be reached is down: the next node of the cluster is tried at
        // once; the backoff comes once per round of every node.
        now = err instanceof UnreachableError && attempt % this._reconnectUrls().length !== 0;
      }
    }
    this._reconnecting = false;
    this.state = 'disconnected';
    this._participants.clear();
    this.emit('disconnected', { reason: `reconnect failed: ${lastError?.message ?? 'gave up'}` });
  }

  /** After a rejoin: report who left and who joined while we were away. */
  _applyParticipants(others) {
    const fresh = new Map(others.map((p) => [p.id, p]));
    for (const [id, p] of this._participants) {
      if (!fresh.has(id)) {
        this._participants.delete(id);
        this.emit('participantLeft', { participant: p });
      }
    }
    for (const [id, p] of fresh) {
      const old = this._participants.get(id);
      if (old) {
        old.name = p.name;
        old.tracks = p.tracks;
      } else {
        this._participants.set(id, p);
        this.emit('participantJoined', { participant: p });
      }
    }
  }
}
