// A stand-in for the server, to test the browser SDK and the demo page without it: signaling
// (docs/protocol.md) is answered here in Node through Playwright WebSocket routing, and the
// media side is a hidden page whose RTCPeerConnections receive every publisher's tracks and
// send them on to the subscribers. Loopback only, no HTTP server.

import { serveRepoFiles } from './static.js';

/** Installed in the media page: publish and subscribe PCs per client. */
const MEDIA_PAGE = () => {
  const gather = (pc) =>
    new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const timer = setTimeout(resolve, 2000);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  window.sfu = {
    pub: new Map(),
    sub: new Map(),
    tracks: new Map(),
    async publish(cid, sdp) {
      let pc = this.pub.get(cid);
      if (!pc) this.pub.set(cid, (pc = new RTCPeerConnection()));
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gather(pc);
      const tracks = pc
        .getTransceivers()
        .filter((t) => t.mid != null && t.receiver.track)
        .map((t) => {
          const id = `${cid}-t${t.mid}`;
          this.tracks.set(id, t.receiver.track);
          return { id, mid: t.mid, kind: t.receiver.track.kind };
        });
      return { sdp: pc.localDescription.sdp, tracks };
    },
    /** Chrome sends no packets for a relayed remote audio track: send a tone instead. */
    toneFor(id) {
      this.tones ??= new Map();
      if (!this.tones.has(id)) {
        this.audioCtx ??= new AudioContext();
        const osc = this.audioCtx.createOscillator();
        const dst = this.audioCtx.createMediaStreamDestination();
        osc.connect(dst);
        osc.start();
        this.tones.set(id, dst.stream.getAudioTracks()[0]);
      }
      return this.tones.get(id);
    },
    async subscribeOffer(cid, wanted) {
      let s = this.sub.get(cid);
      if (!s) this.sub.set(cid, (s = { pc: new RTCPeerConnection(), byTrack: new Map() }));
      for (const [tid, tr] of s.byTrack) {
        if (!wanted.some((w) => w.track === tid)) {
          await tr.sender.replaceTrack(null);
          tr.direction = 'inactive';
          s.byTrack.delete(tid);
        }
      }
      for (const w of wanted) {
        let mst = this.tracks.get(w.track);
        if (mst?.kind === 'audio') mst = this.toneFor(w.track);
        if (mst && !s.byTrack.has(w.track)) s.byTrack.set(w.track, s.pc.addTransceiver(mst, { direction: 'sendonly' }));
      }
      await s.pc.setLocalDescription(await s.pc.createOffer());
      await gather(s.pc);
      const tracks = wanted.filter((w) => s.byTrack.has(w.track)).map((w) => ({ ...w, mid: s.byTrack.get(w.track).mid }));
      return { sdp: s.pc.localDescription.sdp, tracks };
    },
    async subscribeAnswer(cid, sdp) {
      await this.sub.get(cid)?.pc.setRemoteDescription({ type: 'answer', sdp });
    },
    drop(cid) {
      this.pub.get(cid)?.close();
      this.sub.get(cid)?.pc.close();
      this.pub.delete(cid);
      this.sub.delete(cid);
      for (const id of [...this.tracks.keys()]) if (id.startsWith(`${cid}-`)) this.tracks.delete(id);
    },
  };
};

export class MockSfu {
  /** @param {import('playwright-core').Browser} browser @param {string} origin e.g. http://localhost:47999 */
  static async start(browser, origin) {
    const m = new MockSfu(origin);
    m.mediaContext = await browser.newContext();
    // A page at the (secure) origin that has used getUserMedia: Chrome then puts real host
    // addresses rather than mDNS names in its candidates, which a network namespace needs.
    await m.mediaContext.route(`${origin}/**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>mock sfu</title>' }));
    m.media = await m.mediaContext.newPage();
    await m.media.goto(`${origin}/mock-sfu`);
    await m.media.evaluate(MEDIA_PAGE);
    await m.media.evaluate(async () => {
      window.sfu.permission = await navigator.mediaDevices.getUserMedia({ audio: true });
    });
    return m;
  }

  constructor(origin) {
    this.origin = origin;
    this.wsUrl = origin.replace(/^http/, 'ws') + '/ws';
    this.nextId = 0;
    /** every client connection ever, in order */
    this.clients = [];
    /** [{from: name|null, msg}] every message received from a page */
    this.received = [];
  }

  /** Serves the repository's web/ and client/ to `context` and routes its signaling here. */
  async attach(context) {
    await serveRepoFiles(context, this.origin);
    await context.routeWebSocket(this.wsUrl, (ws) => this._onSocket(ws));
  }

  active(room) {
    return this.clients.filter((c) => c.id && !c.gone && (!room || c.room === room));
  }

  byName(name) {
    return this.active().find((c) => c.name === name);
  }

  /** Cuts a client's socket as a network failure would. */
  async drop(name) {
    const c = this.byName(name);
    if (!c) throw new Error(`no active client ${name}`);
    await c.ws.close({ code: 4000, reason: 'mock drop' });
    await this._gone(c);
  }

  async close() {
    for (const c of this.clients) c.gone = true;
    await this.mediaContext.close();
  }

  // ---------------------------------------------------------------- signaling

  _onSocket(ws) {
    const c = { ws, id: null, name: null, room: null, tracks: [], gone: false, subBusy: false, subDirty: false, chain: Promise.resolve() };
    this.clients.push(c);
    ws.onMessage((data) => {
      c.chain = c.chain.then(() => this._onMessage(c, data)).catch((err) => console.error('mock-sfu:', err));
    });
    ws.onClose(() => {
      c.chain = c.chain.then(() => this._gone(c));
    });
  }

  _send(c, msg) {
    if (!c.gone) c.ws.send(JSON.stringify(msg));
  }

  _info(c) {
    return { id: c.id, name: c.name, tracks: c.tracks.map((t) => ({ ...t })) };
  }

  async _onMessage(c, data) {
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch {
      return this._send(c, { type: 'error', code: 'bad_message', message: 'not JSON' });
    }
    this.received.push({ from: msg.type === 'join' && !c.id ? msg.name : c.name, msg });
    const others = () => this.active(c.room).filter((o) => o !== c);
    switch (msg.type) {
      case 'ping':
        return this._send(c, { type: 'pong' });
      case 'join': {
        c.id = `p${++this.nextId}`;
        c.name = msg.name;
        c.room = msg.room;
        this._send(c, { type: 'joined', v: 1, room: c.room, participant: { id: c.id, name: c.name }, participants: others().map((o) => this._info(o)) });
        for (const o of others()) this._send(o, { type: 'participant_joined', participant: this._info(c) });
        return this._renegotiate(c);
      }
      case 'publish_offer': {
        const r = await this.media.evaluate(([cid, sdp]) => window.sfu.publish(cid, sdp), [c.id, msg.sdp]);
        const known = new Set(c.tracks.map((t) => t.id));
        c.tracks = r.tracks.map((t) => ({ id: t.id, kind: t.kind, muted: c.tracks.find((x) => x.id === t.id)?.muted ?? false }));
        this._send(c, { type: 'publish_answer', sdp: r.sdp, tracks: r.tracks });
        for (const t of c.tracks.filter((t) => !known.has(t.id))) {
          for (const o of others()) this._send(o, { type: 'track_published', track: { ...t, participant: c.id } });
        }
        for (const o of others()) this._renegotiate(o);
        return;
      }
      case 'subscribe_answer':
        await this.media.evaluate(([cid, sdp]) => window.sfu.subscribeAnswer(cid, sdp), [c.id, msg.sdp]);
        c.subBusy = false;
        if (c.subDirty) this._renegotiate(c);
        return;
      case 'mute': {
        const t = c.tracks.find((x) => x.id === msg.track);
        if (!t) return this._send(c, { type: 'error', code: 'unknown_track', message: 'not your track' });
        t.muted = !!msg.muted;
        for (const o of this.active(c.room)) this._send(o, { type: 'track_muted', track: t.id, participant: c.id, muted: t.muted });
        return;
      }
      case 'leave':
        await this._gone(c);
        return c.ws.close({ code: 1000, reason: 'left' });
      default:
        return this._send(c, { type: 'error', code: 'unknown_type', message: String(msg.type) });
    }
  }

  async _gone(c) {
    if (c.gone) return;
    c.gone = true;
    if (!c.id) return;
    await this.media.evaluate((cid) => window.sfu.drop(cid), c.id);
    for (const o of this.active(c.room)) {
      this._send(o, { type: 'participant_left', participant: c.id });
      this._renegotiate(o);
    }
  }

  /** Sends `c` a subscribe_offer with every other participant's tracks (one offer in flight). */
  _renegotiate(c) {
    return this._offer(c).catch((err) => console.error('mock-sfu: renegotiation failed:', err.message));
  }

  async _offer(c) {
    if (c.gone) return;
    if (c.subBusy) {
      c.subDirty = true;
      return;
    }
    const wanted = this.active(c.room)
      .filter((o) => o !== c)
      .flatMap((o) => o.tracks.map((t) => ({ track: t.id, participant: o.id, kind: t.kind })));
    c.subBusy = true;
    c.subDirty = false;
    const r = await this.media.evaluate(([cid, w]) => window.sfu.subscribeOffer(cid, w), [c.id, wanted]);
    if (c.gone) return;
    if (!r.tracks.length && !c.everOffered) {
      c.subBusy = false;
      if (c.subDirty) return this._offer(c);
      return;
    }
    c.everOffered = true;
    this._send(c, { type: 'subscribe_offer', sdp: r.sdp, tracks: r.tracks });
  }
}
