// A typed application of the browser SDK that makes every call client/index.d.ts declares:
// `tsc -p e2e/types` (scripts/test-all.sh) checks the declarations against real use. It is
// type-checked only, never run.

import Sfumato, {
  IncomingStream,
  PROTOCOL_VERSION,
  Room,
  Sha256,
  StreamError,
  Streams,
  attachChannel,
  streamsOverChannel,
  Signaling,
  SignalingError,
  connect,
  defaultUrl,
  listDevices,
  waitForIceGathering,
  type ByteSink,
  type ByteStreamInfo,
  type ByteStreamWriter,
  type ConnectOptions,
  type IncomingByteStream,
  type ReceiveProgress,
  type SendFileResult,
  type SendProgress,
  type StreamPipe,
  type TransferInfo,
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
  await room.data.send('cursor', { reliable: false, ordered: true, topic: 'cursor' });
  const stopChat = room.data.on('chat', ({ payload }) => console.log(typeof payload === 'string' ? payload : payload.byteLength));
  room.data.off('chat', () => {});
  stopChat();
  console.log(room.data.transport);

  // Files and byte streams.
  room.data.registerByteStreamHandler('files', async (incoming: IncomingByteStream) => {
    const info: ByteStreamInfo = incoming.info;
    if (info.size > 1e9) return incoming.reject('too large');
    console.log(incoming.id, incoming.state, incoming.signal.aborted, info.id, info.from, info.name, info.mime, info.topic, info.attributes['album']);
    if (info.mime === 'text/plain') {
      incoming.accept({ onProgress: (p: ReceiveProgress) => console.log(p.id, p.received, p.consumed, p.size, p.waiting) });
      for await (const chunk of incoming) console.log(chunk.byteLength);
      return;
    }
    if (info.mime === 'image/png') {
      const all: Uint8Array = await incoming.accept().readAll();
      console.log(all.byteLength, incoming.readable?.locked);
      return;
    }
    const dir = await navigator.storage.getDirectory();
    const handle = await dir.getFileHandle(info.id, { create: true });
    const sink: ByteSink = await handle.createWritable();
    incoming.accept({ sink });
    const { sha256 } = await incoming.done;
    if (incoming.progress.consumed !== info.size) incoming.cancel('short');
    console.log(sha256, incoming instanceof IncomingStream);
  });
  room.data.unregisterByteStreamHandler('files');
  const ac = new AbortController();
  try {
    const sent: SendFileResult = await room.data.sendFile(new File(['x'], 'x.txt'), {
      to: people[0],
      topic: 'files',
      name: 'x.txt',
      mime: 'text/plain',
      attributes: { album: 'a' },
      onProgress: (p: SendProgress) => console.log(p.id, p.size, p.sent, p.confirmed, p.bytesSent, p.waiting),
      signal: ac.signal,
    });
    console.log(sent.id, sent.size, sent.sha256, sent.bytesSent);
  } catch (err) {
    if (err instanceof StreamError) console.log(err.code, err.by, err.message);
  }
  const writer: ByteStreamWriter = room.data.streamBytes({ to: 'p1', size: 3, topic: 'files', name: 'three.bin' });
  const w = writer.writable.getWriter();
  await w.write(new Uint8Array([1, 2, 3]));
  await w.close();
  const written: SendFileResult = await writer.done;
  console.log(writer.id, written.sha256);
  const under: TransferInfo[] = room.data.transfers;
  console.log(under.map((x) => [x.id, x.direction, x.peer, x.size]));

  // Byte streams between two browsers, over a data channel of their own.
  const direct = new RTCPeerConnection();
  const channel = direct.createDataChannel('files', { negotiated: true, id: 0 });
  const overChannel: Streams = streamsOverChannel(channel, { window: 4 << 20, budget: 16 << 20, probeMs: 2000, resumeTimeoutMs: 60000 });
  overChannel.registerByteStreamHandler('*', (st) => void st.accept({ sink: new WritableStream<Uint8Array>() }));
  await overChannel.sendFile(new Blob(['y']), { name: 'y.bin' });
  overChannel.streamBytes({ size: 0 });
  attachChannel(overChannel, direct.createDataChannel('files-2', { negotiated: true, id: 1 }));
  Sfumato.attachChannel(Sfumato.streamsOverChannel(channel), channel);
  const pipe: StreamPipe = {
    send: async (_to: string, bytes: Uint8Array) => channel.send(new Uint8Array(bytes)),
    self: () => 'me',
    window: 1 << 20,
    budget: 4 << 20,
    nameOf: (peer: string) => (peer === 'peer' ? 'bob' : undefined),
    defaultPeer: 'peer',
  };
  const engine = new Streams(pipe, { probeMs: 1000, resumeTimeoutMs: 30000 });
  engine.receive('peer', new Uint8Array(17));
  engine.linkUp();
  engine.peerLeft('peer');
  engine.peerJoined('p2', 'bob');
  engine.attach(pipe);
  engine.unregisterByteStreamHandler('*');
  console.log(engine.transfers.length, overChannel.transfers.length);
  engine.close('bye');
  const hash = new Sha256().update(new Uint8Array([1])).update(new ArrayBuffer(2));
  console.log(hash.length, hash.digest().byteLength);

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
