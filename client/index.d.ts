// Type declarations for the Sfumato browser SDK (client/sfumato.js).

export declare const PROTOCOL_VERSION: 1;

export type TrackKind = 'audio' | 'video';

/** What a published track carries, as its publisher said (a track that said nothing: its
 * kind's `camera` or `microphone`). */
export type TrackSource = 'camera' | 'microphone' | 'screen' | 'screen_audio';

/** A published track as the server describes it. */
export interface TrackInfo {
  id: string;
  kind: TrackKind;
  source: TrackSource;
  muted: boolean;
}

/** Another participant of the room. `tracks` is kept up to date by the SDK. */
export interface Participant {
  id: string;
  name: string;
  tracks: TrackInfo[];
  /**
   * Set when this participant is another participant moving to another node of a cluster
   * (a drain): the id of its session there, which leaves once this one carries media. An
   * application can show both as one (the demo page keeps the tile and swaps its video).
   */
  replaces?: string;
}

export interface LocalParticipant {
  id: string;
  name: string;
}

export interface ConnectOptions {
  room: string;
  /** The display name; required without `token` (a server with API keys takes the name
   * from the token instead). */
  name?: string;
  /** An access token (`sfumato token create`), for a server started with API keys: sent in
   * `join` on every (re)connection. A refused token (`unauthorized`, `forbidden`) is not
   * retried. */
  token?: string;
  /** Reconnect after a signaling drop, and at once when the server asks to (its media
   * worker for this session stopped: the `reconnect` message) (default true). */
  reconnect?: boolean;
  /** Give up after this many reconnect attempts (default 20). */
  maxReconnectAttempts?: number;
  /** First reconnect delay; doubles per attempt, ±20% jitter (default 500 ms). */
  reconnectBaseDelayMs?: number;
  /** Cap of the reconnect delay (default 10000 ms). */
  reconnectMaxDelayMs?: number;
  /** How long to wait for ICE gathering before sending an SDP anyway (default 2000 ms). */
  gatherTimeoutMs?: number;
  /** Timeout of join and publish requests (default 15000 ms). */
  requestTimeoutMs?: number;
  /** Keepalive ping interval; three silent intervals count as a drop (default 10000 ms). */
  pingIntervalMs?: number;
  /** RTCPeerConnection configuration for both peer connections. */
  rtcConfig?: RTCConfiguration;
  /** Simulcast layer received of every remote video track unless `setVideoQuality` says otherwise (default `high`). */
  videoQuality?: VideoQuality;
  /**
   * What data messages travel over. `sctp` (default): after each join the SDK opens the two
   * data channels of docs/protocol.md on its publish PC (the one `publish` adds its tracks
   * to), and once they are open new messages take them; the signaling socket until then,
   * and again if they close or fail. Not with a token that lacks the `data` grant. `ws`: the
   * signaling socket only (no publish PC until `publish`).
   */
  transport?: DataTransportKind;
  /**
   * Receive every track of the room (default true). False: nothing is received until asked
   * for, with `subscribe(track)` or `subscribeParticipant(participant)`.
   */
  autoSubscribe?: boolean;
}

/** `low` ≈ 320×180, `medium` ≈ 640×360, `high` the publisher's best, `off` nothing at all. */
export type VideoQuality = 'low' | 'medium' | 'high' | 'off';

export interface PublishOptions {
  /** Capture the microphone (default true). Ignored when `stream` is given. */
  audio?: boolean | MediaTrackConstraints;
  /** Capture the camera (default true). Ignored when `stream` is given. */
  video?: boolean | MediaTrackConstraints;
  /** Publish this stream instead of capturing one. */
  stream?: MediaStream;
  /** Send the camera in three layers: 320×180, 640×360, 1280×720 (default true). */
  simulcast?: boolean;
  /** Codec to prefer for the camera (default: the browser's choice, VP8 in Chromium).
   * `vp9` and `av1` are sent as one scalable stream (SVC) instead of in simulcast. */
  videoCodec?: 'vp8' | 'vp9' | 'av1' | 'h264';
  /** The SVC mode with `videoCodec: 'vp9'` or `'av1'` (default `L3T3_KEY`: three spatial
   * layers of three temporal layers). */
  scalabilityMode?: string;
}

/** How one published video is encoded (publishTrack, shareScreen). */
export interface VideoEncodingOptions {
  /** Three simulcast layers (default: true for a camera, false for a screen share, which
   * is sent as one encoding at full resolution). */
  simulcast?: boolean;
  /** Codec to prefer; `vp9` and `av1` are sent as one scalable stream (SVC). */
  videoCodec?: 'vp8' | 'vp9' | 'av1' | 'h264';
  /** The SVC mode with `vp9` or `av1` (default `L3T3_KEY` for a camera, `L1T3` for a screen). */
  scalabilityMode?: string;
  /** Cap of a single encoding (default 2.5 Mbps for a screen share). */
  maxBitrate?: number;
}

export interface PublishTrackOptions extends VideoEncodingOptions {
  /** What the track is to the others (default: its kind's `camera` or `microphone`). One
   * publication per source. */
  source?: TrackSource;
  /** The MediaStream it is announced in (default: the camera and microphone's stream for
   * those sources, a stream of its own for the others). */
  stream?: MediaStream;
}

export interface ScreenShareOptions extends VideoEncodingOptions {
  /** Share the tab's or system's sound too, as a `screen_audio` track (default false). */
  audio?: boolean;
  /** getDisplayMedia's video constraints (default true). */
  video?: boolean | MediaTrackConstraints;
  /** Share this stream instead of asking getDisplayMedia. */
  stream?: MediaStream;
  /** The video track's contentHint (default `detail`: sharp text rather than smooth motion). */
  contentHint?: string;
}

/** One of our publications. */
export interface LocalTrackInfo {
  source: TrackSource;
  kind: TrackKind;
  /** The server's id, once the publish answer came. */
  track: string | null;
  /** The track sent (a stopped one while the camera or microphone is off). */
  mediaStreamTrack: MediaStreamTrack | null;
  muted: boolean;
  /** False while the device is released (setCameraEnabled(false)). */
  enabled: boolean;
}

/** A camera, microphone or speaker of this browser (enumerateDevices). */
export interface DeviceInfo {
  deviceId: string;
  groupId: string;
  kind: MediaDeviceKind;
  /** Empty until the page was allowed a capture. */
  label: string;
}

/** One encoding (simulcast layer, or the single one) of a published video. */
export interface EncodingStats {
  /** The simulcast rid (`q`, `h`, `f`), null for a single encoding. */
  rid: string | null;
  /** Whether it is sent (the server's `layers` turn off what nobody receives). */
  active: boolean;
  /** Bits per second over the interval (null: not measured yet). */
  bitrate: number | null;
  frameWidth: number | null;
  frameHeight: number | null;
  framesPerSecond: number | null;
  scalabilityMode: string | null;
  qualityLimitationReason: string | null;
}

export interface PublishedTrackStats {
  track: string | null;
  kind: TrackKind;
  source: TrackSource;
  muted: boolean;
  enabled: boolean;
  /** Bits per second of all encodings over the interval. */
  bitrate: number | null;
  packetsSent: number;
  /** As the server's receiver reports tell it. */
  packetsLost: number;
  fractionLost: number | null;
  /** Round-trip time in ms (the receiver reports, else the ICE checks). */
  rtt: number | null;
  layers: EncodingStats[];
}

export interface SubscribedTrackStats {
  track: string;
  participant: string;
  kind: TrackKind;
  source: TrackSource;
  muted: boolean;
  bitrate: number | null;
  packetsReceived: number;
  packetsLost: number;
  /** Packets lost over the interval, as a fraction of those expected. */
  fractionLost: number | null;
  /** Jitter in ms. */
  jitter: number | null;
  rtt: number | null;
  framesDecoded: number;
  frameWidth: number | null;
  frameHeight: number | null;
  framesPerSecond: number | null;
  /** Video: the simulcast or spatial layer the server forwards (0 lowest; null: none or not
   * told yet). */
  layer: number | null;
  /** Video: the highest temporal layer forwarded when at a lower frame rate, else null. */
  temporalLayer: number | null;
  /** Video: the quality asked for (setVideoQuality, observeVideo). */
  quality: VideoQuality | null;
}

export interface RoomStats {
  /** Date.now() of the sample. */
  timestamp: number;
  published: PublishedTrackStats[];
  subscribed: SubscribedTrackStats[];
}

export interface ParticipantEvent {
  participant: Participant;
}

export interface TrackSubscribedEvent {
  participant: Participant;
  /** The server's track id. */
  track: string;
  kind: TrackKind;
  /** What the track carries (a screen share is `screen`). */
  source: TrackSource;
  /** The mid of the subscribe PC's transceiver that carries it. */
  mid: string;
  muted: boolean;
  mediaStreamTrack: MediaStreamTrack;
  /** A stream holding just `mediaStreamTrack`, ready for `srcObject`. */
  stream: MediaStream;
}

export type TrackUnsubscribedEvent = TrackSubscribedEvent;

export interface TrackPublicationEvent {
  participant: Participant;
  track: TrackInfo;
}

export interface TrackMutedEvent {
  participant: Participant | LocalParticipant;
  track: string;
  kind: TrackKind | undefined;
  muted: boolean;
  /** True when the track is one of ours (the server's echo of our `mute`). */
  local: boolean;
}

export interface PublishedEvent {
  tracks: { id: string | null; kind: TrackKind; source: TrackSource; muted: boolean; mediaStreamTrack: MediaStreamTrack | null }[];
}

export interface ErrorEvent {
  code: string;
  message: string;
}

/** A received data message (docs/protocol.md, "Data messages"). */
export interface DataMessage {
  /** The sender's participant id (stamped by the server). */
  from: string;
  topic: string;
  /** A string for a text message, a Uint8Array (its own copy) for a binary one. */
  payload: string | Uint8Array;
  /** The sender's numbering: 0, 1, 2, … per sender session (starts again after it reconnects). */
  seq: number;
  reliable: boolean;
}

export interface DataSendOptions {
  /** Reliable (default): it arrives, in order, or the recipient that cannot take it is
   * disconnected. Lossy: dropped for a recipient whose queue is full. */
  reliable?: boolean;
  /** For a lossy message (default: `reliable`): it may be dropped but never arrives after a
   * later ordered one of this sender. A reliable message is always ordered. */
  ordered?: boolean;
  /** Participant ids (or participants) to send to, at most 64; empty (default): everyone else. */
  to?: Array<string | { id: string }>;
  /** At most 255 bytes of UTF-8 (default ''). */
  topic?: string;
}

/** What a receiver is offered (client/README.md, "Files and byte streams"). */
export interface ByteStreamInfo {
  /** The stream's random id (32 hex digits). */
  id: string;
  /** The sender's participant id (its new one, after it rejoined). */
  from: string;
  name: string;
  /** Bytes, up to 2^50. */
  size: number;
  mime: string;
  topic: string;
  attributes: Record<string, string>;
}

/** A sender's progress. `sent`: bytes sent (goes back after a loss or a resume);
 * `confirmed`: bytes the receiver has; `waiting`: what the sender waits for, if anything
 * (`accept`: the offer's answer; `credit`: the receiver to read; `peer`: the peer or our
 * link to come back; `verdict`: the receiver's hash check). */
export interface SendProgress {
  id: string;
  size: number;
  sent: number;
  confirmed: number;
  /** Bytes sent so far, those sent again included. */
  bytesSent: number;
  waiting: 'accept' | 'credit' | 'peer' | 'verdict' | null;
}

/** A receiver's progress: bytes received, and taken by the application (read or written). */
export interface ReceiveProgress {
  id: string;
  size: number;
  received: number;
  consumed: number;
  waiting: 'peer' | null;
}

export interface SendFileOptions {
  /** The one participant to send to (an id or a participant); over a channel, left out. */
  to?: string | { id: string };
  /** Default ''. */
  topic?: string;
  /** Default: the File's name, else 'file'. */
  name?: string;
  /** Default: the Blob's type. */
  mime?: string;
  attributes?: Record<string, string>;
  onProgress?: (progress: SendProgress) => void;
  /** Aborting cancels the stream (the receiver is told); `sendFile` rejects with the reason. */
  signal?: AbortSignal;
}

export interface SendFileResult {
  id: string;
  size: number;
  /** The whole stream's SHA-256 (hex), confirmed by the receiver. */
  sha256: string;
  bytesSent: number;
}

/** Why a stream failed; `by`: which side decided (`remote`: the peer). */
export declare class StreamError extends Error {
  readonly code: 'rejected' | 'cancelled' | 'integrity' | 'peer_gone' | 'closed' | 'unreadable' | 'protocol';
  readonly by: 'local' | 'remote';
}

/** Where accepted bytes can be written: a WritableStream (a FileSystemWritableFileStream)
 * or any object with `write`. `close` is called once the stream is verified, `abort` when
 * it fails. */
export type ByteSink = WritableStream<Uint8Array> | { write(chunk: Uint8Array): unknown; close?(): unknown; abort?(reason: unknown): unknown };

/** A stream offered to us. Accept it (then read it: it is an async iterable of chunks, or
 * `readable`; or give a sink), or reject it. */
export interface IncomingByteStream extends AsyncIterable<Uint8Array> {
  readonly id: string;
  readonly info: ByteStreamInfo;
  readonly state: 'offered' | 'accepted' | 'done' | 'failed';
  readonly progress: ReceiveProgress;
  /** The bytes, after `accept()` without a sink. Closes once the whole stream's SHA-256
   * matched; errors when the stream fails. */
  readonly readable?: ReadableStream<Uint8Array>;
  /** Resolves once every byte was taken and verified (and the sink closed); rejects with a
   * StreamError. */
  readonly done: Promise<{ id: string; size: number; sha256: string }>;
  /** Aborted when the stream ends without success. */
  readonly signal: AbortSignal;
  accept(opts?: { sink?: ByteSink; onProgress?: (progress: ReceiveProgress) => void }): IncomingByteStream;
  /** The sender's `sendFile` rejects with code `rejected` and `reason`. */
  reject(reason?: string): void;
  /** The sender's `sendFile` rejects with code `cancelled` and `reason`. */
  cancel(reason?: string): void;
  /** Every byte at once, after the check (for what fits in memory). */
  readAll(): Promise<Uint8Array>;
}

/** What `streamBytes` returns. */
export interface ByteStreamWriter {
  id: string;
  /** Takes Uint8Array (or any view, or ArrayBuffer) chunks; a write waits while the
   * receiver's credit is used up. Exactly `size` bytes, then close. */
  writable: WritableStream<ArrayBuffer | ArrayBufferView>;
  done: Promise<SendFileResult>;
}

/** The class of the streams handlers are offered (for `instanceof`). The SDK makes them
 * (an application never does: the offer it takes is internal). */
export declare const IncomingStream: { readonly prototype: IncomingByteStream; new (streams: Streams, from: string, offer: never): IncomingByteStream };

export type ByteStreamHandler = (stream: IncomingByteStream) => void | Promise<void>;

export interface TransferInfo {
  id: string;
  direction: 'in' | 'out';
  peer: string;
  size: number;
  [field: string]: unknown;
}

/** What the stream engine sends over (client/streams.js). */
export interface StreamPipe {
  /** Reliable and ordered; resolves once handed on (waiting while full); rejects while the
   * link is down. */
  send(to: string, bytes: Uint8Array): Promise<void>;
  /** Our identity on the pipe (what the peer sees as `from`). */
  self(): string;
  /** Bytes in flight per stream we receive (default 1 MiB), and over all of them (4 MiB). */
  window?: number;
  budget?: number;
  /** A peer's name, to find it again after it rejoins under a new identity. */
  nameOf?(peer: string): string | undefined;
  /** The peer `sendFile` goes to without `to`. */
  defaultPeer?: string;
}

/** The byte-stream engine, over any pipe (room.data uses one; `streamsOverChannel` makes one
 * over an RTCDataChannel). */
export declare class Streams {
  constructor(pipe: StreamPipe, opts?: { window?: number; budget?: number; probeMs?: number; resumeTimeoutMs?: number });
  sendFile(file: Blob, opts?: SendFileOptions): Promise<SendFileResult>;
  streamBytes(opts: SendFileOptions & { size: number }): ByteStreamWriter;
  registerByteStreamHandler(topic: string, handler: ByteStreamHandler): void;
  unregisterByteStreamHandler(topic: string): void;
  readonly transfers: TransferInfo[];
  /** A message from the pipe. */
  receive(from: string, bytes: Uint8Array): void;
  /** Our link is up again (a new identity after a rejoin: every stream resumes). */
  linkUp(): void;
  peerLeft(peer: string): void;
  peerJoined(peer: string, name: string): void;
  /** A new pipe to the same peer: every stream resumes over it. */
  attach(pipe: StreamPipe): void;
  /** Fails every stream (code `closed`). */
  close(reason?: string): void;
}

/** Byte streams over a reliable, ordered RTCDataChannel between two browsers. */
export declare function streamsOverChannel(channel: RTCDataChannel, opts?: { window?: number; budget?: number; probeMs?: number; resumeTimeoutMs?: number }): Streams;
/** Carries `streams` on over a new channel to the same peer; unfinished streams resume. */
export declare function attachChannel(streams: Streams, channel: RTCDataChannel): void;

/** Incremental SHA-256. */
export declare class Sha256 {
  readonly length: number;
  update(data: ArrayBuffer | ArrayBufferView): this;
  /** The 32-byte digest; no update after it. */
  digest(): Uint8Array;
}

/** What data messages travel over: the publish PC's SCTP data channels, or the signaling
 * WebSocket. */
export type DataTransportKind = 'sctp' | 'ws';

/** `room.data`: data messages to the room or to chosen participants, by topic. */
export interface RoomData {
  /** The transport new messages take (`sctp` once the data channels are open, else `ws`),
   * null while there is none (before join, reconnecting, left). Messages are received from
   * both. */
  readonly transport: DataTransportKind | null;
  /**
   * Sends a string (a text message, UTF-8) or bytes (a binary one). Resolves once the frame
   * is handed to the transport (when over 1 MiB is buffered there, once it drained below
   * 256 KiB; sends keep their order). Over SCTP a reliable message takes the reliable
   * channel, a lossy one the lossy (unordered) channel. Rejects for a payload over 65536 bytes, more than 64
   * recipients, a topic over 255 bytes or starting with `sfumato/` (the SDK's), or when not connected. What the server refuses
   * (`bad_data`, `too_large`, `forbidden` without the token's `data` grant) arrives later
   * as the room's `error` event.
   */
  send(payload: string | ArrayBuffer | ArrayBufferView, opts?: DataSendOptions): Promise<void>;
  /** Calls `handler` for each message of `topic`; `'*'` for every topic. Returns a function
   * that removes it. */
  on(topic: string, handler: (msg: DataMessage) => void): () => void;
  off(topic: string, handler: (msg: DataMessage) => void): void;
  /** Sends a file (any Blob) to one participant as a byte stream; resolves once the
   * receiver confirmed its SHA-256. Rejects with a StreamError, or `signal.reason`. */
  sendFile(file: Blob, opts: SendFileOptions & { to: string | { id: string } }): Promise<SendFileResult>;
  /** Opens a byte stream of `size` bytes to one participant: write them into `writable`,
   * then close it; `done` settles as `sendFile`'s promise. Throws for bad options. */
  streamBytes(opts: SendFileOptions & { to: string | { id: string }; size: number }): ByteStreamWriter;
  /** Calls `handler` for each stream offered on `topic` (`'*'`: any topic without its own
   * handler); throws if the topic has one already. Offers nobody handles are rejected. */
  registerByteStreamHandler(topic: string, handler: ByteStreamHandler): void;
  unregisterByteStreamHandler(topic: string): void;
  /** The streams under way, both directions. */
  readonly transfers: TransferInfo[];
}

export interface RoomEvents {
  participantJoined: ParticipantEvent;
  participantLeft: ParticipantEvent;
  trackPublished: TrackPublicationEvent;
  trackUnpublished: TrackPublicationEvent;
  trackSubscribed: TrackSubscribedEvent;
  trackUnsubscribed: TrackUnsubscribedEvent;
  trackMuted: TrackMutedEvent;
  /** The room's dominant speaker changed (from audio levels, with hysteresis). */
  activeSpeaker: { participant: Participant | LocalParticipant; local: boolean };
  published: PublishedEvent;
  /** One of our tracks was unpublished (unpublishTrack, stopScreenShare, or the browser's
   * "stop sharing"). */
  unpublished: { track: string | null; source: TrackSource; kind: TrackKind; mediaStreamTrack: MediaStreamTrack | null };
  /** One of our publications sends another track (replaceTrack, switchDevice, a camera
   * turned on again). */
  localTrackChanged: { source: TrackSource; kind: TrackKind; mediaStreamTrack: MediaStreamTrack; previous: MediaStreamTrack | null };
  reconnecting: { attempt: number; delayMs: number };
  reconnected: { attempts: number };
  /** Moved to another node of a cluster (its node drains), make-before-break: the new
   * subscriptions were reported before the old ones went. */
  moved: { url: string };
  disconnected: { reason: string };
  /** Every data message received, whatever its topic (as `room.data.on('*', …)`). */
  data: DataMessage;
  /** Data messages can be sent: after `connect` (right after it resolves), after each
   * reconnect, after a move to another node; and each time the transport changes within a
   * session (`sctp` when the data channels open, `ws` when they close or fail). */
  /** `transport` null with `reason: 'data_overflow'`: the server took this session out of
   * the room's data messages (its data channel did not keep up); they come back with the
   * next session (a rejoin). */
  dataTransport: { transport: DataTransportKind | null; reason?: 'data_overflow' };
  /** A server `error` message that answered no request (e.g. `bad_data`, `too_large`,
   * `forbidden` for a data message, `rate_limited`). */
  error: ErrorEvent;
}

export type RoomState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

export declare class Room {
  static connect(url: string, opts: ConnectOptions): Promise<Room>;
  readonly roomName: string;
  readonly name: string;
  readonly state: RoomState;
  /** Id of the room's dominant speaker (possibly us), null before anyone spoke. */
  readonly activeSpeaker: string | null;
  /** In a cluster, the live nodes as the server last listed them; a reconnect that cannot
   * reach this node tries the other serving ones. Empty on a single node. */
  nodes: Array<{ id: string; url: string; state: 'serving' | 'draining' | string }>;
  /** The signaling URL in use (another node's after a reconnect through it). */
  readonly url: string;
  /** Our own identity; changes after a reconnect (the server gives a new id). */
  readonly localParticipant: LocalParticipant | null;
  /** The other participants. */
  readonly participants: Participant[];
  readonly localStream: MediaStream | null;
  readonly subscriptions: TrackSubscribedEvent[];
  /** Data messages: `room.data.send(payload, opts)`, `room.data.on(topic, handler)`. */
  readonly data: RoomData;

  /**
   * Registers a listener; returns a function that removes it. `participantJoined` is also
   * emitted, right after `connect` resolves, for those already in the room.
   */
  on<E extends keyof RoomEvents>(event: E, cb: (ev: RoomEvents[E]) => void): () => void;
  once<E extends keyof RoomEvents>(event: E, cb: (ev: RoomEvents[E]) => void): () => void;
  off<E extends keyof RoomEvents>(event: E, cb: (ev: RoomEvents[E]) => void): void;

  /** Our publications. */
  readonly localTracks: LocalTrackInfo[];
  /** The screen share's stream, while sharing. */
  readonly screenStream: MediaStream | null;

  /** Captures (or takes) camera and microphone and publishes them; resolves once the server
   * answered. A kind already published is refused. */
  publish(opts?: PublishOptions): Promise<MediaStream>;
  /** Publishes one more track (a source not published yet). */
  publishTrack(track: MediaStreamTrack, opts?: PublishTrackOptions): Promise<{ source: TrackSource; kind: TrackKind; mediaStreamTrack: MediaStreamTrack; track: string | null }>;
  /** Unpublishes a track (by source, MediaStreamTrack or server id); the others see
   * `trackUnpublished`. `stop` (default true) stops the local track. */
  unpublishTrack(target: TrackSource | string | MediaStreamTrack, opts?: { stop?: boolean }): Promise<void>;
  /** Sends another track in place of a published one, without renegotiation. */
  replaceTrack(target: TrackSource | string | MediaStreamTrack, track: MediaStreamTrack, opts?: { stopOld?: boolean }): Promise<void>;
  /** Shares the screen as its own track (`screen`), alongside the camera. */
  shareScreen(opts?: ScreenShareOptions): Promise<MediaStream>;
  stopScreenShare(): Promise<void>;
  /** Off: releases the camera (its track stops) and mutes it for the others; on: captures
   * the same device again and unmutes. */
  setCameraEnabled(enabled: boolean): Promise<void>;
  setMicrophoneEnabled(enabled: boolean): Promise<void>;
  /** Whether the source is published, captured and not muted. */
  isEnabled(source: TrackSource): boolean;
  /** Switches the published camera (`video`) or microphone (`audio`) to another device. */
  switchDevice(kind: TrackKind, deviceId: string): Promise<void>;
  /** The deviceId of the published camera or microphone, or null. */
  activeDevice(kind: TrackKind): string | null;
  /** The cameras, microphones or speakers of this browser (all without `kind`). */
  listDevices(kind?: 'video' | 'audio' | 'output'): Promise<DeviceInfo[]>;
  /** Mutes or unmutes the camera (`video`) or microphone (`audio`): track.enabled and a
   * `mute` message; the device stays captured. */
  setMuted(kind: TrackKind, muted: boolean): void;
  isMuted(kind: TrackKind): boolean;
  /** Receive a remote track (with `autoSubscribe: false`, or after `unsubscribe`). */
  subscribe(track: string | { id: string } | { track: string }): void;
  /** Stop receiving a remote track. */
  unsubscribe(track: string | { id: string } | { track: string }): void;
  /** Receive every track of a participant, now and later. */
  subscribeParticipant(participant: string | { id: string }): void;
  unsubscribeParticipant(participant: string | { id: string }): void;
  /** Per-track statistics over the interval since the previous call. */
  getStats(): Promise<RoomStats>;
  /**
   * Which layer of another participant's video track we receive. The switch happens at the
   * publisher's next keyframe of that layer, without freezing the picture meanwhile.
   */
  setVideoQuality(track: string | { track: string }, quality: VideoQuality): void;
  /**
   * Lets the element showing `track` choose its quality: by rendered width (≤ 360 device
   * pixels low, ≤ 720 medium, above high) and `off` while not visible. Returns a stop function.
   */
  observeVideo(track: string | { track: string }, element: Element): () => void;
  /** The quality asked for a remote video track. */
  videoQuality(track: string): VideoQuality;
  /** Leaves: `leave` message, socket and peer connections closed. */
  leave(opts?: { stopTracks?: boolean }): void;
}

export declare class SignalingError extends Error {
  readonly code: string;
}

/** The raw signaling socket (docs/protocol.md). Most applications only need `Room`. */
export declare class Signaling {
  static open(url: string, opts?: { openTimeoutMs?: number; pingIntervalMs?: number }): Promise<Signaling>;
  readonly open: boolean;
  /** Bytes queued on the socket, not sent yet. */
  readonly bufferedAmount: number;
  send(msg: { type: string; [field: string]: unknown }): boolean;
  /** Sends a binary frame (a data message). */
  sendBinary(frame: ArrayBuffer | ArrayBufferView): boolean;
  next(type: string, opts?: { failOn?: string[] | '*'; timeoutMs?: number }): Promise<any>;
  close(reason?: string): void;
  drop(reason?: string): void;
  on(event: 'message', cb: (msg: { type: string; [field: string]: unknown }) => void): () => void;
  /** A binary frame (a data message's deliver frame), as it came. */
  on(event: 'binary', cb: (frame: ArrayBuffer) => void): () => void;
  on(event: 'close', cb: (ev: { code: number; reason: string; clean: boolean }) => void): () => void;
}

export declare function connect(url: string, opts: ConnectOptions): Promise<Room>;
/** ws(s)://<host of the current page>/ws */
export declare function defaultUrl(loc?: Location): string;
/** The cameras (`video`), microphones (`audio`) or speakers (`output`) of this browser, or
 * all of them; labels are empty until the page was allowed a capture. */
export declare function listDevices(kind?: 'video' | 'audio' | 'output'): Promise<DeviceInfo[]>;
export declare function waitForIceGathering(pc: RTCPeerConnection, timeoutMs?: number): Promise<void>;

export declare const Sfumato: {
  readonly streamsOverChannel: typeof streamsOverChannel;
  readonly attachChannel: typeof attachChannel;
  readonly connect: typeof connect;
  readonly defaultUrl: typeof defaultUrl;
  readonly listDevices: typeof listDevices;
  readonly Room: typeof Room;
  readonly Signaling: typeof Signaling;
  readonly SignalingError: typeof SignalingError;
  readonly PROTOCOL_VERSION: typeof PROTOCOL_VERSION;
};
export default Sfumato;
