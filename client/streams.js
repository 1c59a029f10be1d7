// Byte streams and files (docs/protocol.md, "Byte streams"): this module owns the protocol's
// two state machines, the sender (offer, send within the receiver's credit, range and
// whole-stream hashes, rewind, resume, verdict) and the receiver (offer to the application,
// accept into a ReadableStream or a sink, credit, checks), over any *pipe*:
//
//   { send(to: string, bytes: Uint8Array): Promise<void>  reliable and ordered; resolves once
//                                     handed on (waiting while the link is full); rejects
//                                     while the link is down
//     self(): string                  our identity on the pipe (changes when we rejoin)
//     window?: number                 bytes in flight per stream we receive (default 1 MiB)
//     budget?: number                 bytes in flight over all the streams we receive
//                                     (default 4 MiB) }
//
// The receiver decides how much may be in flight: it grants each stream it accepted credit
// up to what its application took plus `window` (what it holds for a reader that does not
// read), and keeps what may be on its way to it over all its streams within `budget` (at
// least a chunk a stream), so a sender never has more than that unconfirmed.
//
// The owner of the pipe feeds it received messages (`receive(from, bytes)`) and tells it when
// its link came back (`linkUp()`) and when peers leave and come back (`peerLeft`,
// `peerJoined`): room-pipe.js does that for `room.data`, channel-pipe.js for a plain
// RTCDataChannel. Streams are keyed by a random id, never by who the peer is: a peer that
// rejoins under a new identity proves it holds the stream's secret and takes it over.

import { Sha256, toHex } from './sha256.js';
import { blobSource, readableSource } from './stream-sources.js';
import { CHUNK_HEADER, KIND, MAX_SIZE, decode, encodeChunk, encodeControl, idHex, randomId, PROTOCOL_VERSION } from './stream-wire.js';

/** Bytes of a chunk: a chunk message (25 bytes of header) stays within a 64 KiB data message. */
export const CHUNK_SIZE = 64512;
/** A range (hashed on its own) is 16 chunks: 1,032,192 bytes. */
export const RANGE_CHUNKS = 16;
/** Bytes a sender may have beyond what the receiver's application took, by default. */
export const DEFAULT_WINDOW = 1024 * 1024;
/** Limits a receiver puts on what it is offered. */
const MAX_CHUNK = 256 * 1024;
const MAX_RANGE = 16 * 1024 * 1024;
const MAX_INCOMING = 64;
const MAX_INCOMING_PER_PEER = 16;
/** Finished streams remembered, to answer a peer that missed the end. */
const MAX_FINISHED = 256;

const DEFAULTS = {
  window: DEFAULT_WINDOW,
  budget: 4 * DEFAULT_WINDOW,
  /** A side that waits on its peer and heard nothing for this long asks again. */
  probeMs: 2000,
  /** A stream whose peer is gone (left, or our link is down) fails after this long. */
  resumeTimeoutMs: 60000,
};

/** Why a stream failed: `code` is `rejected`, `cancelled`, `integrity`, `peer_gone`,
 * `closed`, `unreadable` (the file) or `protocol`; `by` is `local` or `remote` (who decided). */
export class StreamError extends Error {
  constructor(code, message, by = 'local') {
    super(message);
    this.name = 'StreamError';
    this.code = code;
    this.by = by;
  }
}

/** The proof a side gives that it holds a stream's secret, bound to its identity. */
function proof(secret, role, self) {
  return toHex(new Sha256().update(new TextEncoder().encode(`sfumato-stream:${secret}:${role}:${self}`)).digest());
}

/** SHA-256 of one buffer: WebCrypto where the page has it (secure contexts), else ours. */
async function digest(bytes) {
  if (globalThis.crypto?.subtle) return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
  return toHex(new Sha256().update(bytes).digest());
}

function concat(chunks, total) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

// ------------------------------------------------------------------ engine

export class Streams {
  /**
   * @param {object} pipe see the top of this file
   * @param {{window?: number, budget?: number, probeMs?: number, resumeTimeoutMs?: number}} [opts]
   */
  constructor(pipe, opts = {}) {
    const fromPipe = {};
    if (pipe?.window) fromPipe.window = pipe.window;
    if (pipe?.budget) fromPipe.budget = pipe.budget;
    this._opts = { ...DEFAULTS, ...fromPipe, ...opts };
    this._pipe = pipe;
    this._self = null;
    /** id → OutgoingStream | IncomingStream */
    this._streams = new Map();
    /** id → {peer, kind, body}: the last word of a finished stream, said again if asked. */
    this._finished = new Map();
    /** topic → handler */
    this._handlers = new Map();
    this._timer = null;
  }

  /** The streams under way, both directions: `{id, direction, peer, size, ...progress}`. */
  get transfers() {
    return [...this._streams.values()].map((s) => ({ id: s.id, direction: s.direction, peer: s.peer, ...s.progress }));
  }

  /**
   * Sends a Blob (a File) to one peer. Resolves with `{id, size, sha256, bytesSent}` once the
   * receiver confirmed the whole stream's SHA-256; rejects with a StreamError (`rejected`,
   * `cancelled`, `integrity`, `peer_gone`, `closed`) or with `signal.reason` when aborted.
   * @param {Blob} blob
   * @param {{to: string | {id: string}, topic?: string, name?: string, mime?: string,
   *   attributes?: Record<string, string>, onProgress?: Function, signal?: AbortSignal}} opts
   */
  sendFile(blob, opts = {}) {
    try {
      if (!(blob instanceof Blob)) throw new TypeError('sendFile: the file is a Blob or a File');
      return this._start('sendFile', blobSource(blob), { name: blob.name ?? 'file', mime: blob.type ?? '' }, opts).promise;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Opens a byte stream of `size` bytes to one peer and returns `{id, writable, done}`: write
   * the bytes (Uint8Array or any view) into `writable` (a WritableStream; a write waits while
   * the receiver's credit is used up), close it, and `done` resolves as `sendFile` does.
   * Unconfirmed bytes are kept in memory until the receiver has them. Throws for bad options.
   * @param {{size: number, to?: string | {id: string}, topic?: string, name?: string, mime?: string,
   *   attributes?: Record<string, string>, onProgress?: Function, signal?: AbortSignal}} opts
   */
  streamBytes(opts = {}) {
    const { size } = opts;
    if (!Number.isSafeInteger(size) || size < 0) throw new TypeError('streamBytes: `size` is the number of bytes the stream will hold');
    const pipe = new TransformStream();
    const source = readableSource(pipe.readable, size);
    const s = this._start('streamBytes', source, { name: 'stream', mime: 'application/octet-stream' }, opts);
    s.promise.catch((err) => source.cancel(err));
    return { id: s.id, writable: pipe.writable, done: s.promise };
  }

  /** Checks a send's options and starts its stream; throws for bad ones. */
  _start(what, source, defaults, opts) {
    const target = opts.to ?? this._pipe.defaultPeer;
    const to = target && typeof target === 'object' ? target.id : target;
    if (typeof to !== 'string' || !to) throw new TypeError(`${what}: \`to\` names one participant (an id or a participant)`);
    if (source.size > MAX_SIZE) throw new RangeError(`${what}: ${source.size} bytes, more than 2^50`);
    const info = {
      size: source.size,
      name: String(opts.name ?? defaults.name).slice(0, 1024),
      mime: String(opts.mime ?? defaults.mime).slice(0, 255),
      topic: String(opts.topic ?? '').slice(0, 255),
      attributes: { ...(opts.attributes ?? {}) },
    };
    for (const [k, v] of Object.entries(info.attributes)) {
      if (typeof v !== 'string') throw new TypeError(`${what}: attribute ${k} is not a string`);
    }
    if (opts.signal?.aborted) throw opts.signal.reason;
    this._self ??= this._pipe.self();
    const s = new OutgoingStream(this, source, to, info, opts);
    this._streams.set(s.id, s);
    this._tick();
    s.run().catch((err) => s.fail(err));
    return s;
  }

  /**
   * Calls `handler(stream)` for each stream offered on `topic` (`'*'`: any topic without a
   * handler of its own). The handler accepts (`stream.accept()`) or rejects
   * (`stream.reject()`); an offer with no handler is rejected.
   */
  registerByteStreamHandler(topic, handler) {
    if (typeof handler !== 'function') throw new TypeError('registerByteStreamHandler: the handler is a function');
    if (this._handlers.has(String(topic))) throw new Error(`registerByteStreamHandler: topic '${topic}' has a handler already`);
    this._handlers.set(String(topic), handler);
  }

  unregisterByteStreamHandler(topic) {
    this._handlers.delete(String(topic));
  }

  /** Replaces the pipe (a new channel to the same peer) and resumes every stream over it. */
  attach(pipe) {
    this._pipe = pipe;
    this._self = pipe.self();
    for (const s of this._streams.values()) s.resume();
  }

  // -------------------------------------------------------------- for the pipe's owner

  /** A message from `from` (its identity on the pipe). Never throws. */
  receive(from, bytes) {
    let m;
    try {
      m = decode(bytes);
    } catch (err) {
      console.warn(`sfumato: ignoring a malformed stream message from ${from}: ${err?.message ?? err}`);
      return;
    }
    const s = this._streams.get(m.id);
    try {
      if (s) s.handle(from, m);
      else if (m.kind === KIND.OFFER) this._offered(from, m);
      else this._stray(from, m);
    } catch (err) {
      console.warn(`sfumato: stream ${m.id}: a ${m.name} from ${from} failed:`, err);
    }
  }

  /** Our link is up: after a rejoin (a new identity), every stream says so to its peer. */
  linkUp() {
    const self = this._pipe.self();
    const changed = this._self !== null && self !== this._self;
    this._self = self;
    if (changed) for (const s of this._streams.values()) s.resume();
  }

  /** The peer `id` left: its streams wait for it to come back. */
  peerLeft(id) {
    for (const s of this._streams.values()) if (s.peer === id) s.peerAway();
  }

  /** A peer joined (maybe one of ours, rejoining under a new id): a stream whose peer went
   * away and had the same name says where it is. */
  peerJoined(id, name) {
    for (const s of this._streams.values()) if (s.awayAt !== null && s.peerName === name && name) s.sendResume(id);
  }

  /** Fails every stream (the room was left). */
  close(reason = 'closed') {
    for (const s of [...this._streams.values()]) s.fail(new StreamError('closed', reason));
  }

  // -------------------------------------------------------------- internals

  _send(to, bytes) {
    return this._pipe.send(to, bytes);
  }

  /** Bytes the other streams we receive let their senders send and we have not received. */
  _inFlightExcept(s) {
    let bytes = 0;
    for (const x of this._streams.values()) {
      if (x !== s && x.direction === 'in' && x.state === 'accepted') bytes += Math.max(0, x.granted - x.received);
    }
    return bytes;
  }

  _selfId() {
    return this._pipe.self();
  }

  _finish(s, kind, body) {
    this._streams.delete(s.id);
    if (kind) {
      this._finished.set(s.id, { peer: s.peer, kind, body });
      if (this._finished.size > MAX_FINISHED) this._finished.delete(this._finished.keys().next().value);
    }
    if (this._streams.size === 0 && this._timer) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  /** One timer for every stream: probes, resumes, give-ups. */
  _tick() {
    if (this._timer) return;
    this._timer = setInterval(() => {
      const now = Date.now();
      for (const s of [...this._streams.values()]) s.tick(now);
    }, Math.max(100, Math.floor(this._opts.probeMs / 2)));
  }

  _offered(from, m) {
    const handler = this._handlers.get(m.topic) ?? this._handlers.get('*');
    const say = (reason) => this._send(from, encodeControl(KIND.REJECT, m.id, { reason })).catch(() => {});
    if (!handler) return say(`no handler for topic '${m.topic}'`);
    if (m.chunk > MAX_CHUNK || m.range > MAX_RANGE) return say(`chunks up to ${MAX_CHUNK} bytes and ranges up to ${MAX_RANGE} are accepted`);
    const incoming = [...this._streams.values()].filter((s) => s.direction === 'in');
    if (incoming.length >= MAX_INCOMING || incoming.filter((s) => s.peer === from).length >= MAX_INCOMING_PER_PEER) {
      return say('too many streams at once');
    }
    this._self ??= this._pipe.self();
    const s = new IncomingStream(this, from, m);
    this._streams.set(s.id, s);
    this._tick();
    try {
      const r = handler(s);
      if (r && typeof r.catch === 'function') r.catch((err) => console.error('sfumato: a byte stream handler threw', err));
    } catch (err) {
      console.error('sfumato: a byte stream handler threw', err);
      if (s.state === 'offered') s.reject('the handler failed');
    }
  }

  /** A message for a stream we no longer (or never) had: answer one that missed the end. */
  _stray(from, m) {
    const f = this._finished.get(m.id);
    if (!f || f.peer !== from) return;
    if ([KIND.OFFER, KIND.PROBE, KIND.END, KIND.RESUME].includes(m.kind)) this._send(from, encodeControl(f.kind, m.id, f.body)).catch(() => {});
  }
}

// ------------------------------------------------------------------ one stream, either side

class StreamBase {
  constructor(streams, id, peer, secret) {
    this.streams = streams;
    this.id = id;
    this.peer = peer;
    this.secret = secret;
    /** The peer's name (when the pipe knows names): to find it again after it rejoins. */
    this.peerName = streams._pipe.nameOf?.(peer) ?? null;
    this.state = 'offered';
    /** When the peer went away (left, or our link failed), null while it is there. */
    this.awayAt = null;
    this.lastHeard = Date.now();
    this.lastAsked = 0;
  }

  get finished() {
    return this.state === 'done' || this.state === 'failed';
  }

  /** Tells the application's `onProgress` (set by the subclass, if any) where it stands. */
  report() {
    if (!this._onProgress) return;
    try {
      this._onProgress(this.progress);
    } catch (err) {
      console.error('sfumato: an onProgress callback threw', err);
    }
  }

  send(bytes) {
    return this.streams._send(this.peer, bytes);
  }

  control(kind, body) {
    return this.send(encodeControl(kind, this.id, body));
  }

  /** Sends a control message and ignores a link that is down (resume repairs what it lost). */
  say(kind, body) {
    this.control(kind, body).catch(() => this.linkDown());
  }

  peerAway() {
    if (this.awayAt === null) this.awayAt = Date.now();
  }

  linkDown() {
    this.peerAway();
  }

  /** Our link came back, maybe under a new identity: tell the peer. */
  resume() {
    if (this.finished) return;
    this.peerAway();
    this.sendResume(this.peer);
  }

  sendResume(to) {
    this.lastAsked = Date.now();
    const body = { role: this.role, proof: proof(this.secret, this.role, this.streams._selfId()), ...this.resumeFields() };
    this.streams._send(to, encodeControl(KIND.RESUME, this.id, body)).catch(() => {});
  }

  /** Whether `m` (a RESUME) proves that `from` holds this stream's secret as the other role. */
  provenBy(from, m) {
    const other = this.role === 'sender' ? 'receiver' : 'sender';
    return m.role === other && m.proof === proof(this.secret, other, from);
  }

  /** Common handling: messages only from the peer (or a proven RESUME from its new self). */
  accepts(from, m) {
    if (m.kind === KIND.RESUME) {
      if (!this.provenBy(from, m)) {
        console.warn(`sfumato: stream ${this.id}: a resume from ${from} without the stream's proof`);
        return false;
      }
      this.peer = from;
      this.peerName = this.streams._pipe.nameOf?.(from) ?? this.peerName;
      if (this.info?.from !== undefined) this.info.from = from;
    } else if (from !== this.peer) {
      return false;
    }
    this.awayAt = null;
    this.lastHeard = Date.now();
    return true;
  }

  tick(now) {
    if (this.finished) return;
    if (this.awayAt !== null) {
      if (now - this.awayAt > this.streams._opts.resumeTimeoutMs) {
        this.fail(new StreamError('peer_gone', `the peer did not come back within ${this.streams._opts.resumeTimeoutMs} ms`));
        return;
      }
      if (now - this.lastAsked >= this.streams._opts.probeMs) this.sendResume(this.peer);
      return;
    }
    // A peer that is there but silent (it answers probes while it is alive) is gone too;
    // an offer has no such clock: the application may take its time to accept.
    if (this.state !== 'offered' && now - this.lastHeard > this.streams._opts.resumeTimeoutMs) {
      this.fail(new StreamError('peer_gone', `the peer did not answer for ${this.streams._opts.resumeTimeoutMs} ms`));
      return;
    }
    if (now - this.lastHeard >= this.streams._opts.probeMs && now - this.lastAsked >= this.streams._opts.probeMs) {
      if (this.probe()) this.lastAsked = now;
    }
  }
}

// ------------------------------------------------------------------ sender

class OutgoingStream extends StreamBase {
  constructor(streams, source, to, info, { onProgress, signal }) {
    const secretBytes = crypto.getRandomValues(new Uint8Array(16));
    super(streams, idHex(randomId()), to, toHex(secretBytes));
    this.direction = 'out';
    this.role = 'sender';
    this.source = source;
    this.info = info;
    this.size = source.size;
    this.chunk = CHUNK_SIZE;
    this.range = CHUNK_SIZE * RANGE_CHUNKS;
    /** Next offset to send; what the receiver has (contiguous); how far it lets us go. */
    this.next = 0;
    this.received = 0;
    this.credit = 0;
    this.bytesSent = 0;
    this.endSent = false;
    /** The range in memory: {index, start, bytes, sha256}; the range whose hash was sent. */
    this.loaded = null;
    this.rangeSent = -1;
    this.hasher = new Sha256();
    this.hashedUpTo = 0;
    this.sha256 = null;
    /** What the sender loop waits for: 'accept', 'credit', 'peer', 'verdict', or null. */
    this.waiting = 'accept';
    this._wake = null;
    this._onProgress = typeof onProgress === 'function' ? onProgress : null;
    this.promise = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.promise.catch(() => {});
    if (signal) {
      const abort = () => {
        if (this.finished) return;
        this.say(KIND.CANCEL, { reason: String(signal.reason?.message ?? signal.reason ?? 'aborted').slice(0, 512) });
        this.fail(signal.reason ?? new DOMException('aborted', 'AbortError'), null);
      };
      signal.addEventListener('abort', abort, { once: true });
      this.promise.finally(() => signal.removeEventListener('abort', abort)).catch(() => {});
    }
  }

  get progress() {
    return { id: this.id, size: this.size, sent: this.next, confirmed: this.received, bytesSent: this.bytesSent, waiting: this.finished ? null : this.awayAt !== null ? 'peer' : this.waiting };
  }

  resumeFields() {
    return {};
  }

  wake() {
    const w = this._wake;
    this._wake = null;
    w?.();
  }

  async run() {
    const offer = { v: PROTOCOL_VERSION, ...this.info, chunk: this.chunk, range: this.range, secret: this.secret };
    this.offer = offer;
    this.lastAsked = Date.now();
    this.control(KIND.OFFER, offer).catch(() => this.linkDown());
    this.report();
    while (!this.finished) {
      const step = this.nextStep();
      if (step !== 'send') {
        if (this.waiting !== step) {
          this.waiting = step;
          this.report();
        }
        await new Promise((resolve) => (this._wake = resolve));
        continue;
      }
      this.waiting = null;
      try {
        await this.sendSome();
      } catch (err) {
        if (this.finished) return;
        if (err instanceof StreamError) return this.fail(err);
        // The link is down: resume once it is back.
        this.linkDown();
      }
    }
  }

  /** What the loop does next: 'send', or what it waits for. */
  nextStep() {
    if (this.awayAt !== null) return 'peer';
    if (this.state === 'offered') return 'accept';
    // A chunk goes only if all of it is within the credit.
    if (this.next < this.size) return this.next + Math.min(this.chunk, this.size - this.next) <= this.credit ? 'send' : 'credit';
    return this.endSent ? 'verdict' : 'send';
  }

  /** Sends the range hash if due, then one chunk, or the end. */
  async sendSome() {
    if (this.next >= this.size) {
      await this.loadHash();
      this.endSent = true;
      this.state = 'ending';
      await this.control(KIND.END, { size: this.size, sha256: this.sha256 });
      return;
    }
    const at = this.next;
    const index = Math.floor(at / this.range);
    if (this.loaded?.index !== index) await this.loadRange(index);
    if (this.rangeSent !== index) {
      await this.control(KIND.RANGE, { index, sha256: this.loaded.sha256 });
      this.rangeSent = index;
    }
    if (this.next !== at) return; // rewound meanwhile
    const len = Math.min(this.chunk, this.size - at);
    const bytes = this.loaded.bytes.subarray(at - this.loaded.start, at - this.loaded.start + len);
    await this.send(encodeChunk(this.id, at, bytes));
    this.bytesSent += len;
    if (this.next === at) this.next = at + len;
    this.report();
  }

  async loadRange(index) {
    const start = index * this.range;
    const end = Math.min(this.size, start + this.range);
    let bytes;
    try {
      bytes = await this.source.read(start, end);
    } catch (err) {
      throw new StreamError('unreadable', `the bytes at ${start} could not be read: ${err?.message ?? err}`);
    }
    if (start === this.hashedUpTo) {
      this.hasher.update(bytes);
      this.hashedUpTo = end;
    }
    this.loaded = { index, start, bytes, sha256: await digest(bytes) };
  }

  /** The whole stream's hash, once every byte went through the hasher. */
  async loadHash() {
    if (this.sha256) return;
    while (this.hashedUpTo < this.size) await this.loadRange(Math.floor(this.hashedUpTo / this.range));
    this.sha256 = toHex(this.hasher.digest());
  }

  /** The source may forget what the receiver has, short of the range it is in (a rewind
   * reads that range again). */
  release() {
    this.source.release(Math.floor(this.received / this.range) * this.range);
  }

  /** Goes back to `offset` (bytes from there did not arrive). */
  rewind(offset) {
    if (offset < this.next) {
      this.next = offset;
      this.rangeSent = -1;
    }
    if (this.next < this.size || this.state === 'ending') this.endSent = false;
  }

  probe() {
    if (this.waiting === 'accept') {
      this.say(KIND.OFFER, this.offer);
      return true;
    }
    if (this.waiting === 'credit' || this.waiting === 'verdict') {
      this.say(KIND.PROBE, { sent: this.next });
      return true;
    }
    return false;
  }

  handle(from, m) {
    if (this.finished || !this.accepts(from, m)) return;
    switch (m.kind) {
      case KIND.ACCEPT:
      case KIND.ACK:
        if (m.received > this.size || m.credit < m.received) return;
        if (m.kind === KIND.ACCEPT && this.state === 'offered') {
          this.state = 'sending';
          this.next = m.received;
        }
        this.received = Math.max(this.received, Math.min(m.received, this.next));
        this.credit = Math.max(this.credit, m.credit);
        this.release();
        // `upto`: bytes up to there were sent, and those from `received` on did not arrive.
        if (m.upto !== undefined && m.received < m.upto) this.rewind(m.received);
        else if (m.upto !== undefined && this.state === 'ending') this.endSent = false;
        break;
      case KIND.RESUME:
        // The receiver is back (maybe as someone new): go on from what it has.
        if (m.received > this.size) return;
        if (m.accepted && this.state === 'offered') this.state = 'sending';
        this.received = m.received;
        this.credit = m.credit;
        this.release();
        this.next = m.received;
        this.rangeSent = -1;
        this.endSent = false;
        break;
      case KIND.REJECT:
        return this.fail(new StreamError('rejected', `the receiver rejected the stream${m.reason ? `: ${m.reason}` : ''}`, 'remote'), null);
      case KIND.CANCEL:
        return this.fail(new StreamError('cancelled', `the receiver cancelled the stream${m.reason ? `: ${m.reason}` : ''}`, 'remote'), null);
      case KIND.DONE:
        if (!m.ok || m.sha256 !== this.sha256) {
          return this.fail(new StreamError('integrity', `the receiver found the stream corrupt${m.reason ? `: ${m.reason}` : ''}`, 'remote'), null);
        }
        this.received = this.size;
        this.state = 'done';
        this.streams._finish(this, null);
        this.report();
        this._resolve({ id: this.id, size: this.size, sha256: this.sha256, bytesSent: this.bytesSent });
        break;
      default:
        return; // OFFER, CHUNK, RANGE, END, PROBE are the sender's own words
    }
    this.report();
    this.wake();
  }

  /** Ends the stream with `err` (told to the peer with `tell`: a CANCEL, unless null). */
  fail(err, tell = { reason: err.message }) {
    if (this.finished) return;
    this.state = 'failed';
    if (tell) this.say(KIND.CANCEL, tell);
    this.streams._finish(this, null);
    this.wake();
    this._reject(err);
  }
}

// ------------------------------------------------------------------ receiver

/**
 * A stream offered to us. The handler reads `info`, then `accept()`s it (its bytes come as
 * `readable`, a ReadableStream, or by async iteration, or are written into a sink) or
 * `reject()`s it. `done` settles with the outcome.
 */
export class IncomingStream extends StreamBase {
  constructor(streams, from, offer) {
    super(streams, offer.id, from, offer.secret);
    this.direction = 'in';
    this.role = 'receiver';
    this.offer = offer;
    /** {id, from, name, size, mime, topic, attributes} */
    this.info = { id: offer.id, from, name: offer.name, size: offer.size, mime: offer.mime, topic: offer.topic, attributes: offer.attributes };
    this.size = offer.size;
    this.received = 0;
    this.consumed = 0;
    this.granted = 0;
    /** Chunks received and not taken by the application yet (≤ window bytes). */
    this.queue = [];
    this.rangeHashes = new Map();
    this.rangeChunks = [];
    this.rangeBytes = 0;
    this.verifying = Promise.resolve();
    this.rangeFailure = null;
    this.hasher = new Sha256();
    this.end = null;
    this.nackedAt = -1;
    this.sha256 = null;
    this._onProgress = null;
    this._controller = null;
    this._writer = null;
    this._pumping = false;
    this._pullWaiter = null;
    const ctrl = new AbortController();
    /** Aborted when the stream ends without success (the sender cancelled, it failed). */
    this.signal = ctrl.signal;
    this._abort = ctrl;
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.done.catch(() => {});
  }

  get progress() {
    return { id: this.id, size: this.size, received: this.received, consumed: this.consumed, waiting: this.finished ? null : this.awayAt !== null ? 'peer' : null };
  }

  resumeFields() {
    this.granted = Math.max(this.granted, this.credit());
    return { received: this.received, credit: this.granted, accepted: this.state !== 'offered' };
  }

  /** How far the sender may go: a window beyond what the application took, and within
   * what the budget leaves free of the other streams' bytes on their way (at least a chunk);
   * never less than already granted. */
  credit() {
    if (this.state === 'offered') return 0;
    const { window, budget } = this.streams._opts;
    const free = Math.max(this.offer.chunk, budget - this.streams._inFlightExcept(this));
    return Math.max(this.granted, Math.min(this.size, this.consumed + Math.max(window, this.offer.chunk), this.received + free));
  }

  /**
   * Accepts the stream. Without a sink, its bytes are `readable` (a ReadableStream of
   * Uint8Array) and this object is an async iterable of them; with `sink` (a WritableStream,
   * such as a FileSystemWritableFileStream, or any object with `write(chunk)` and
   * optionally `close()` and `abort(reason)`), they are written there and the sink is closed
   * once the stream is verified. Returns this.
   * @param {{sink?: WritableStream | {write: Function, close?: Function, abort?: Function}, onProgress?: Function}} [opts]
   */
  accept({ sink, onProgress } = {}) {
    if (this.state !== 'offered') throw new Error(`accept: the stream is ${this.state}`);
    this.state = 'accepted';
    this._onProgress = typeof onProgress === 'function' ? onProgress : null;
    if (sink) {
      this._writer = typeof sink.getWriter === 'function' ? sink.getWriter() : sink;
      if (typeof this._writer.write !== 'function') throw new TypeError('accept: the sink has no write()');
    } else {
      this.readable = new ReadableStream(
        {
          start: (controller) => {
            this._controller = controller;
          },
          pull: () => this._pull(),
          cancel: (reason) => this.cancel(reason?.message ?? reason),
        },
        { highWaterMark: 0 },
      );
    }
    this.granted = this.credit();
    this.say(KIND.ACCEPT, { received: this.received, credit: this.granted });
    if (this.size === 0) this._maybeFinish();
    return this;
  }

  /** Rejects the offer; the sender's `sendFile` rejects with `rejected` and `reason`. */
  reject(reason = '') {
    if (this.state !== 'offered') throw new Error(`reject: the stream is ${this.state}`);
    this.state = 'failed';
    const body = { reason: String(reason).slice(0, 512) };
    this.say(KIND.REJECT, body);
    this.streams._finish(this, KIND.REJECT, body);
    this._abort.abort(new StreamError('rejected', 'rejected'));
    this._reject(new StreamError('rejected', `rejected${reason ? `: ${reason}` : ''}`));
  }

  /** Cancels the stream (accepted or not); the sender is told, with `reason`. */
  cancel(reason = '') {
    if (this.finished) return;
    const text = String(reason ?? '').slice(0, 512);
    this.fail(new StreamError('cancelled', `cancelled${text ? `: ${text}` : ''}`), { reason: text });
  }

  async *[Symbol.asyncIterator]() {
    if (!this.readable) throw new Error('the stream is not accepted (or goes to a sink)');
    const reader = this.readable.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  }

  /** Every byte in one Uint8Array, once verified (for streams that fit in memory). */
  async readAll() {
    const parts = [];
    let total = 0;
    for await (const c of this) {
      parts.push(c);
      total += c.byteLength;
    }
    return concat(parts, total);
  }

  probe() {
    return false; // the sender probes; a receiver only answers
  }

  handle(from, m) {
    if (this.finished) {
      return;
    }
    if (!this.accepts(from, m)) return;
    switch (m.kind) {
      case KIND.OFFER:
        // The sender missed our answer.
        if (this.state !== 'offered') this.say(KIND.ACCEPT, { received: this.received, credit: this.granted });
        return;
      case KIND.RESUME:
        // The sender is back (maybe as someone new): tell it where we are.
        this.sendResume(this.peer);
        return;
      case KIND.RANGE:
        // Only the hash of the range being received is kept (the sender sends it first).
        if (m.index !== Math.floor(this.received / this.offer.range) || m.index * this.offer.range >= this.size) return;
        if (!this.rangeHashes.has(m.index)) this.rangeHashes.set(m.index, m.sha256);
        return;
      case KIND.CHUNK:
        return this._chunk(m);
      case KIND.END:
        if (m.size !== this.size) return this.fail(new StreamError('protocol', `the sender ended at ${m.size} bytes, not ${this.size}`));
        this.end = m;
        this._maybeFinish();
        return;
      case KIND.PROBE:
        this.say(KIND.ACK, { received: this.received, credit: this.granted, upto: Math.min(m.sent, this.size) });
        return;
      case KIND.CANCEL:
        return this.fail(new StreamError('cancelled', `the sender cancelled the stream${m.reason ? `: ${m.reason}` : ''}`, 'remote'), null);
      default:
        return;
    }
  }

  _chunk(m) {
    if (this.state !== 'accepted') return;
    const len = m.bytes.byteLength;
    const expected = Math.min(this.offer.chunk, this.size - m.offset);
    if (m.offset % this.offer.chunk !== 0 || m.offset >= this.size || len !== expected) {
      console.warn(`sfumato: stream ${this.id}: ignoring a chunk of ${len} bytes at ${m.offset}`);
      return;
    }
    if (m.offset < this.received) return; // sent again after a rewind: we have it
    const index = Math.floor(m.offset / this.offer.range);
    const rangeStart = index * this.offer.range;
    if (m.offset > this.received || (m.offset === rangeStart && !this.rangeHashes.has(index))) {
      // Something in between did not arrive (or the range's hash): once per gap, ask again.
      if (this.nackedAt !== this.received) {
        this.nackedAt = this.received;
        this.say(KIND.ACK, { received: this.received, credit: this.granted, upto: m.offset + len });
      }
      return;
    }
    if (m.offset + len > this.granted) {
      console.warn(`sfumato: stream ${this.id}: a chunk beyond the credit given (${m.offset + len} > ${this.granted}), ignored`);
      return;
    }
    const bytes = m.bytes.slice();
    this.received += len;
    this.hasher.update(bytes);
    this.rangeChunks.push(bytes);
    this.rangeBytes += len;
    if (this.received === this.size || this.received - rangeStart === this.offer.range) this._verifyRange(index);
    this.queue.push(bytes);
    this.report();
    this._deliver();
  }

  /** Checks the range just completed against its hash (in order, off the receive path). */
  _verifyRange(index) {
    const data = concat(this.rangeChunks, this.rangeBytes);
    const expected = this.rangeHashes.get(index);
    this.rangeHashes.delete(index);
    this.rangeChunks = [];
    this.rangeBytes = 0;
    this.verifying = this.verifying.then(async () => {
      const got = await digest(data);
      if (got !== expected && !this.rangeFailure) {
        this.rangeFailure = `range ${index} (bytes ${index * this.offer.range}–${index * this.offer.range + data.byteLength}) has SHA-256 ${got}, the sender said ${expected}`;
        this._maybeFinish();
      }
    });
  }

  /** Hands queued chunks to the application: the ReadableStream's pending read, or the sink. */
  _deliver() {
    if (this._controller) {
      if (this._pullWaiter) {
        const w = this._pullWaiter;
        this._pullWaiter = null;
        w();
      }
      return;
    }
    if (this._writer) this._pump();
  }

  _pull() {
    if (this.finished) return;
    if (this.queue.length) {
      this._take(this.queue.shift(), (c) => this._controller.enqueue(c));
      return;
    }
    if (this.consumed === this.size) return this._maybeFinish();
    return new Promise((resolve) => (this._pullWaiter = resolve)).then(() => this._pull());
  }

  async _pump() {
    if (this._pumping) return;
    this._pumping = true;
    try {
      while (this.queue.length && !this.finished) {
        const c = this.queue.shift();
        try {
          await this._writer.write(c);
        } catch (err) {
          this.cancel(`the receiver could not write: ${err?.message ?? err}`);
          return;
        }
        this._take(c, null);
      }
    } finally {
      this._pumping = false;
    }
    this._maybeFinish();
  }

  /** The application took `c`: more credit for the sender when a quarter window is free. */
  _take(c, give) {
    give?.(c);
    this.consumed += c.byteLength;
    const credit = this.credit();
    if (credit - this.granted >= (credit - this.consumed) / 4 || credit === this.size) {
      if (credit > this.granted) {
        this.granted = credit;
        this.say(KIND.ACK, { received: this.received, credit });
      }
    }
    this.report();
    if (this.consumed === this.size) this._maybeFinish();
  }

  /** Once every byte is in and taken, and the ranges are checked: the verdict. */
  _maybeFinish() {
    if (this.finished || this.state !== 'accepted') return;
    if (this.rangeFailure) return this._verdict(false, this.rangeFailure);
    if (!this.end || this.received !== this.size || this.consumed !== this.size || this._pumping) return;
    if (this._finishing) return;
    this._finishing = true;
    this.verifying.then(async () => {
      if (this.finished) return;
      if (this.rangeFailure) return this._verdict(false, this.rangeFailure);
      this.sha256 = toHex(this.hasher.digest());
      if (this.sha256 !== this.end.sha256) return this._verdict(false, `the stream has SHA-256 ${this.sha256}, the sender said ${this.end.sha256}`);
      if (this._writer?.close) {
        try {
          await this._writer.close();
        } catch (err) {
          return this._verdict(false, `the sink could not be closed: ${err?.message ?? err}`);
        }
      }
      this._verdict(true);
    });
  }

  _verdict(ok, reason = '') {
    if (this.finished) return;
    const body = ok ? { ok, sha256: this.sha256 } : { ok, reason: reason.slice(0, 512) };
    this.say(KIND.DONE, body);
    if (!ok) return this.fail(new StreamError('integrity', reason), null, { kind: KIND.DONE, body });
    this.state = 'done';
    this.streams._finish(this, KIND.DONE, body);
    try {
      this._controller?.close();
    } catch {
      /* already closed */
    }
    this.report();
    this._resolve({ id: this.id, size: this.size, sha256: this.sha256 });
  }

  /** Ends the stream with `err`; `tell`: the CANCEL body for the sender, unless null. */
  fail(err, tell = { reason: err.message }, last = null) {
    if (this.finished) return;
    this.state = 'failed';
    if (tell) this.say(KIND.CANCEL, tell);
    this.streams._finish(this, last?.kind ?? (tell ? KIND.CANCEL : null), last?.body ?? tell);
    this.queue = [];
    try {
      this._controller?.error(err);
    } catch {
      /* already closed */
    }
    if (this._writer?.abort) Promise.resolve().then(() => this._writer.abort(err)).catch(() => {});
    if (this._pullWaiter) this._pullWaiter();
    this._abort.abort(err);
    this._reject(err);
  }
}

export { CHUNK_HEADER };
