// A typed application of the browser SDK that makes every call client/index.d.ts declares:
// `tsc -p e2e/types` (scripts/test-all.sh) checks the declarations against real use. It is
// type-checked only, never run.

import Sfumato, {
  PROTOCOL_VERSION,
  Room,
  Signaling,
  SignalingError,
  connect,
  defaultUrl,
  listDevices,
  waitForIceGathering,
  type ConnectOptions,
  type DataMessage,
  type DeviceInfo,
  type LocalTrackInfo,
  type Participant,
  type PublishedTrackStats,
  type RoomStats,
  type SubscribedTrackStats,
  type TrackInfo,
  type TrackSource,
  type TrackSubscribedEvent,
  type VideoQuality,
} from '../../client/index.js';

const version: 1 = PROTOCOL_VERSION;

export async function example(token: string, video: HTMLVideoElement): Promise<void> {
  const cameras: DeviceInfo[] = await listDevices('video');
  const all: DeviceInfo[] = await Sfumato.listDevices();
  const opts: ConnectOptions = {
    room: 'demo',
    name: 'ada',
    token,
    autoSubscribe: false,
    transport: 'sctp',
    videoQuality: 'medium',
    reconnect: true,
    maxReconnectAttempts: 5,
    reconnectBaseDelayMs: 500,
    reconnectMaxDelayMs: 5000,
    gatherTimeoutMs: 1000,
    requestTimeoutMs: 10000,
    pingIntervalMs: 5000,
    rtcConfig: { bundlePolicy: 'max-bundle' },
  };
  const room: Room = await Sfumato.connect(Sfumato.defaultUrl(), opts);
  const other: Room = await connect(defaultUrl(location), { room: 'demo', name: 'bob' });
  const third: Room = await Room.connect('wss://example.org/ws', { room: 'demo', token });

  // Events.
  room.on('participantJoined', ({ participant }) => room.subscribeParticipant(participant));
  room.on('participantLeft', ({ participant }: { participant: Participant }) => room.unsubscribeParticipant(participant.id));
  room.on('trackPublished', ({ participant, track }) => {
    const source: TrackSource = track.source;
    if (source === 'screen') room.subscribe(track);
    console.log(participant.name, track.kind, track.muted);
  });
  room.on('trackUnpublished', ({ track }: { track: TrackInfo }) => console.log(track.id));
  room.on('trackSubscribed', (ev: TrackSubscribedEvent) => {
    video.srcObject = ev.stream;
    const stop: () => void = room.observeVideo(ev, video);
    if (ev.source === 'screen') stop();
    console.log(ev.mid, ev.muted, ev.mediaStreamTrack.id, ev.participant.replaces);
  });
  room.on('trackUnsubscribed', ({ track }) => room.unsubscribe({ track }));
  room.on('trackMuted', ({ participant, track, kind, muted, local }) => console.log(participant.id, track, kind, muted, local));
  room.on('activeSpeaker', ({ participant, local }) => console.log(participant.name, local));
  room.on('published', ({ tracks }) => tracks.forEach((t) => console.log(t.id, t.kind, t.source, t.muted, t.mediaStreamTrack)));
  room.on('unpublished', ({ track, source, kind, mediaStreamTrack }) => console.log(track, source, kind, mediaStreamTrack));
  room.on('localTrackChanged', ({ source, kind, mediaStreamTrack, previous }) => console.log(source, kind, mediaStreamTrack.id, previous));
  room.on('reconnecting', ({ attempt, delayMs }) => console.log(attempt, delayMs));
  room.on('reconnected', ({ attempts }) => console.log(attempts));
  room.on('moved', ({ url }) => console.log(url));
  room.on('disconnected', ({ reason }) => console.log(reason));
  room.on('data', (msg: DataMessage) => console.log(msg.from, msg.topic, msg.payload, msg.seq, msg.reliable));
  room.on('dataTransport', ({ transport }) => console.log(transport));
  room.on('error', ({ code, message }) => console.log(code, message));
  const off = room.once('participantJoined', () => {});
  off();
  const listener = () => {};
  room.on('reconnected', listener);
  room.off('reconnected', listener);

  // State.
  console.log(room.url, room.roomName, room.name, room.state, room.activeSpeaker, room.nodes, room.localParticipant?.id);
  const people: Participant[] = room.participants;
  const subs: TrackSubscribedEvent[] = room.subscriptions;
  console.log(people.length, subs.length, room.localStream, room.screenStream);

  // Publishing.
  const stream: MediaStream = await room.publish({ audio: true, video: { width: 1280 }, simulcast: true, videoCodec: 'vp9', scalabilityMode: 'L3T3_KEY' });
  await other.publish({ stream });
  const locals: LocalTrackInfo[] = room.localTracks;
  console.log(locals.map((t) => `${t.source} ${t.kind} ${t.track} ${t.muted} ${t.enabled} ${t.mediaStreamTrack?.id}`));
  room.setMuted('audio', true);
  console.log(room.isMuted('audio'), room.isEnabled('camera'));
  await room.setCameraEnabled(false);
  await room.setMicrophoneEnabled(true);
  await room.switchDevice('video', cameras[0].deviceId);
  const active: string | null = room.activeDevice('audio');
  const devices: DeviceInfo[] = await room.listDevices('output');
  console.log(active, devices.length, all.length);
  const canvas = document.createElement('canvas').captureStream(15).getVideoTracks()[0];
  await room.replaceTrack('camera', canvas, { stopOld: false });
  const screen: MediaStream = await room.shareScreen({ audio: true, simulcast: false, maxBitrate: 2_000_000, contentHint: 'text' });
  await room.stopScreenShare();
  await room.unpublishTrack('microphone', { stop: false });
  const again = await room.publishTrack(stream.getAudioTracks()[0], { source: 'microphone' });
  console.log(screen.id, again.source, again.kind, again.track, again.mediaStreamTrack.id);
  await room.publishTrack(canvas, { source: 'screen', stream: new MediaStream([canvas]), videoCodec: 'vp8', simulcast: true });

  // Receiving.
  const q: VideoQuality = room.videoQuality('t1');
  room.setVideoQuality('t1', q === 'high' ? 'low' : 'off');
  room.setVideoQuality({ track: 't1' }, 'medium');

  // Statistics.
  const stats: RoomStats = await room.getStats();
  const pub: PublishedTrackStats | undefined = stats.published[0];
  const sub: SubscribedTrackStats | undefined = stats.subscribed[0];
  console.log(stats.timestamp, pub?.bitrate, pub?.rtt, pub?.packetsLost, pub?.fractionLost, pub?.layers.map((l) => [l.rid, l.active, l.bitrate, l.frameWidth, l.framesPerSecond, l.scalabilityMode, l.qualityLimitationReason]));
  console.log(sub?.bitrate, sub?.fractionLost, sub?.jitter, sub?.rtt, sub?.layer, sub?.temporalLayer, sub?.quality, sub?.frameWidth, sub?.framesDecoded, sub?.source);

  // Data messages.
  await room.data.send('hello', { topic: 'chat', reliable: true, to: ['p1', { id: 'p2' }] });
  await room.data.send(new Uint8Array([1, 2]));
  const stopChat = room.data.on('chat', ({ payload }) => console.log(typeof payload === 'string' ? payload : payload.byteLength));
  room.data.off('chat', () => {});
  stopChat();
  console.log(room.data.transport);

  // The raw socket.
  const sig: Signaling = await Signaling.open('ws://127.0.0.1/ws', { openTimeoutMs: 1000, pingIntervalMs: 5000 });
  sig.send({ type: 'ping' });
  sig.sendBinary(new Uint8Array([1]));
  const pong = await sig.next('pong', { failOn: '*', timeoutMs: 1000 });
  sig.on('message', (m) => console.log(m.type, pong));
  sig.on('binary', (frame) => console.log(frame.byteLength));
  sig.on('close', ({ code, reason, clean }) => console.log(code, reason, clean, sig.open, sig.bufferedAmount));
  sig.drop('test');
  sig.close();
  try {
    await third.publish();
  } catch (err) {
    if (err instanceof SignalingError || err instanceof Sfumato.SignalingError) console.log(err.code);
  }
  await waitForIceGathering(new RTCPeerConnection(), 1000);
  console.log(version, Sfumato.PROTOCOL_VERSION, Sfumato.Room === Room, Sfumato.Signaling === Signaling);

  room.leave({ stopTracks: true });
  other.leave();
  third.leave();
}
