// Direct links of the share page: one RTCPeerConnection per pair of browsers in the room,
// signaled through Sfumato with data messages on the topic `share/signal` (to the one peer),
// carrying a negotiated data channel over which the SDK's byte streams run
// (streamsOverChannel). Of a pair, the participant with the smaller id offers (one offerer:
// no glare); the answerer answers whatever offer its peer sends last. A link that fails is
// offered again (a few times, while the peer is in the room), and its streams resume over the
// new channel (attachChannel). Signaling messages are untrusted: anything malformed, or from
// someone who may not send it, is dropped.

import { streamsOverChannel, attachChannel, waitForIceGathering } from '/sdk/sfumato.js';

export const SIGNAL_TOPIC = 'share/signal';
const MAX_SDP = 32 * 1024;
const RETRIES = 3;

export class DirectLinks {
  /**
   * @param {object} room the SDK's Room
   * @param {{onStreams: (peer: string, streams: object) => void, onChange: () => void, rtcConfig?: RTCConfiguration}} opts
   *   onStreams: the byte streams of a peer's first channel (register handlers there);
   *   onChange: a link's state changed
   */
  constructor(room, { onStreams, onChange, rtcConfig = {} }) {
    this.room = room;
    this.onStreams = onStreams;
    this.onChange = onChange;
    this.rtcConfig = rtcConfig;
    /** peer id → {pc, channel, streams, nonce, state, tries, waiters} */
    this.links = new Map();
    this.off = [];
  }

  start() {
    this.off.push(this.room.data.on(SIGNAL_TOPIC, (m) => this._signal(m).catch((err) => console.warn('share: a signaling message failed:', err))));
    this.off.push(this.room.on('participantJoined', ({ participant }) => this._peer(participant.id)));
    this.off.push(this.room.on('participantLeft', ({ participant }) => this._drop(participant.id)));
    for (const p of this.room.participants) this._peer(p.id);
  }

  /** 'connecting' | 'open' | 'failed' | null (none) for `peer`. */
  state(peer) {
    return this.links.get(peer)?.state ?? null;
  }

  /** The byte streams over the open channel to `peer`, else null. */
  streams(peer) {
    const l = this.links.get(peer);
    return l?.state === 'open' ? l.streams : null;
  }

  /** Waits up to `ms` for the channel to `peer` to open: its streams, or null. */
  waitOpen(peer, ms) {
    const now = this.streams(peer);
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => {
      const l = this._link(peer);
      const timer = setTimeout(() => {
        l.waiters.delete(done);
        resolve(null);
      }, ms);
      const done = (s) => {
        clearTimeout(timer);
        resolve(s);
      };
      l.waiters.add(done);
    });
  }

  close() {
    for (const f of this.off) f();
    for (const id of [...this.links.keys()]) this._drop(id);
  }

  // ------------------------------------------------------------------ internals

  _self() {
    return this.room.localParticipant?.id ?? '';
  }

  _offerer(peer) {
    return this._self() < peer;
  }

  _link(peer) {
    let l = this.links.get(peer);
    if (!l) {
      l = { pc: null, channel: null, streams: null, nonce: null, state: 'connecting', tries: 0, waiters: new Set() };
      this.links.set(peer, l);
    }
    return l;
  }

  _peer(peer) {
    this._link(peer);
    this.onChange();
    if (this._offerer(peer)) this._offer(peer).catch((err) => this._failed(peer, err));
  }

  _drop(peer) {
    const l = this.links.get(peer);
    if (!l) return;
    this.links.delete(peer);
    l.pc?.close();
    for (const w of l.waiters) w(null);
    this.onChange();
  }

  _set(l, state) {
    if (l.state === state) return;
    l.state = state;
    this.onChange();
  }

  _send(peer, msg) {
    return this.room.data.send(JSON.stringify(msg), { topic: SIGNAL_TOPIC, to: [peer] });
  }

  /** A fresh peer connection for `peer` with the negotiated channel, replacing any other. */
  _newPc(peer, nonce) {
    const l = this._link(peer);
    l.pc?.close();
    const pc = new RTCPeerConnection(this.rtcConfig);
    const channel = pc.createDataChannel('share', { negotiated: true, id: 0 });
    l.pc = pc;
    l.nonce = nonce;
    l.channel = channel;
    this._set(l, 'connecting');
    channel.addEventListener('open', () => {
      if (l.pc !== pc) return;
      if (l.streams) attachChannel(l.streams, channel);
      else {
        l.streams = streamsOverChannel(channel);
        this.onStreams(peer, l.streams);
      }
      l.tries = 0;
      this._set(l, 'open');
      for (const w of l.waiters) w(l.streams);
      l.waiters.clear();
    });
    const lost = () => {
      if (l.pc !== pc || this.links.get(peer) !== l) return;
      this._failed(peer, new Error(`the direct link is ${pc.connectionState}`));
    };
    channel.addEventListener('close', lost);
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') lost();
    });
    return pc;
  }

  async _offer(peer) {
    const nonce = Math.random().toString(36).slice(2, 12);
    const pc = this._newPc(peer, nonce);
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 2000);
    if (this.links.get(peer)?.pc !== pc) return;
    await this._send(peer, { t: 'offer', n: nonce, sdp: pc.localDescription.sdp });
  }

  _failed(peer, err) {
    const l = this.links.get(peer);
    if (!l) return;
    console.warn(`share: direct link to ${peer}:`, err?.message ?? err);
    l.pc?.close();
    l.pc = null;
    this._set(l, 'failed');
    for (const w of l.waiters) w(null);
    l.waiters.clear();
    if (this._offerer(peer) && l.tries < RETRIES && this.room.participants.some((p) => p.id === peer)) {
      l.tries++;
      setTimeout(() => {
        if (this.links.get(peer) === l && l.state === 'failed') this._offer(peer).catch((e) => this._failed(peer, e));
      }, 1000 * l.tries);
    }
  }

  /** A message on the signaling topic: untrusted. */
  async _signal({ from, payload }) {
    if (typeof payload !== 'string' || payload.length > MAX_SDP + 256) return;
    if (!this.room.participants.some((p) => p.id === from)) return;
    let m;
    try {
      m = JSON.parse(payload);
    } catch {
      return;
    }
    if (!m || typeof m !== 'object' || typeof m.n !== 'string' || m.n.length > 32 || typeof m.sdp !== 'string' || m.sdp.length > MAX_SDP) return;
    if (m.t === 'offer' && !this._offerer(from)) {
      // Our peer offers (again): a new connection replaces the old one.
      const pc = this._newPc(from, m.n);
      try {
        await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        await waitForIceGathering(pc, 2000);
      } catch (err) {
        if (this.links.get(from)?.pc === pc) this._failed(from, err);
        return;
      }
      if (this.links.get(from)?.pc !== pc) return;
      await this._send(from, { t: 'answer', n: m.n, sdp: pc.localDescription.sdp });
    } else if (m.t === 'answer' && this._offerer(from)) {
      const l = this.links.get(from);
      if (!l?.pc || l.nonce !== m.n || l.pc.signalingState !== 'have-local-offer') return;
      try {
        await l.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
      } catch (err) {
        this._failed(from, err);
      }
    }
  }
}
