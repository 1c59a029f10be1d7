// Data messages (docs/protocol.md, "Data messages"): text or binary payloads sent to the
// whole room or to chosen participants, under a topic. This module owns `room.data`: the
// frame format (send frames out, deliver frames in), the limits checked before sending,
// each session's `seq` numbering, backpressure, choosing the transport each message leaves
// on, and handing received messages to the handlers of their topic.
//
// The bytes travel over a *transport*, an object with this seam:
//
//   { kind: 'ws' | 'sctp', open: boolean, buffered(lane): number,
//     fits(frame): boolean, send(frame: Uint8Array, lane): void,
//     drained?(lowWater, lane): Promise<void> }
//
// where `lane` is 'reliable', 'lossy' or 'ordered' (lossy and ordered), the channel a
// message of that kind takes over SCTP; the socket carries every lane alike.
//
// Byte streams and files (`sendFile`, `streamBytes`, `registerByteStreamHandler`) are streams.js's, over
// these messages (room-pipe.js): their reserved topic never reaches the application's
// handlers.
//
// Each session has the signaling WebSocket (`wsTransport`, attached at join) and, once its
// publish PC's data channels are open, the SCTP one (channels.js), which new messages then
// take (reliable ones on the reliable channel, lossy ones on the lossy channel). Frames
// received on either are handled alike.

import { Emitter } from './emitter.js';
import { sleep } from './peer.js';
import { RESERVED_PREFIX, STREAM_TOPIC, roomPipe } from './room-pipe.js';
import { Streams } from './streams.js';

const SEND = 0x01;
const DELIVER = 0x02;
const FLAG_RELIABLE = 1;
const FLAG_TEXT = 1 << 1;
/** A lossy message that keeps its order (reliable ones always do). */
const FLAG_ORDERED = 1 << 2;

/** The lane (the SCTP channel) of a message with these flags. */
function laneOf(flags) {
  if (flags & FLAG_RELIABLE) return 'reliable';
  return flags & FLAG_ORDERED ? 'ordered' : 'lossy';
}

/** The largest payload of one message, in bytes (after UTF-8 encoding for text). */
export const MAX_PAYLOAD = 65536;
/** The most recipients one message can name. */
export const MAX_RECIPIENTS = 64;
/** The longest topic, in UTF-8 bytes. */
export const MAX_TOPIC = 255;
const OVERFLOWED = 'data.send: data_overflow: the server took this session out of the room\'s data messages (its data channel did not keep up); they come back with the next session';

/** Above this many bytes queued on the transport, `send` waits... */
export const HIGH_WATER = 1024 * 1024;
/** ...until it drains below this many. */
export const LOW_WATER = 256 * 1024;
/** How often a `send` waiting on the WebSocket looks at it again (it has no drain event). */
const DRAIN_POLL_MS = 20;

/** The topic whose handlers receive the messages of every topic. */
export const ANY_TOPIC = '*';

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8');

// ------------------------------------------------------------------ frames

/** The payload's bytes and whether it is text; throws on anything else. */
function payloadBytes(payload) {
  if (typeof payload === 'string') return { bytes: utf8.encode(payload), text: true };
  if (payload instanceof ArrayBuffer) return { bytes: new Uint8Array(payload), text: false };
  if (ArrayBuffer.isView(payload)) {
    return { bytes: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength), text: false };
  }
  throw new TypeError('data.send: the payload is a string, an ArrayBuffer or a typed array');
}

/** A participant id from an id or a participant object. */
function recipientId(r) {
  return r && typeof r === 'object' ? String(r.id) : String(r);
}

/**
 * Checks `send`'s arguments against the protocol's limits; returns the frame's parts (all
 * but `seq`, given when it leaves). Throws a clear Error for anything the server would refuse.
 */
function prepare(payload, { reliable = true, ordered = reliable, to = [], topic = '' } = {}, internal = false) {
  const { bytes, text } = payloadBytes(payload);
  if (bytes.byteLength > MAX_PAYLOAD) {
    throw new RangeError(`data.send: the payload is ${bytes.byteLength} bytes, more than ${MAX_PAYLOAD}`);
  }
  if (typeof topic !== 'string') throw new TypeError('data.send: `topic` is a string');
  if (!internal && topic.startsWith(RESERVED_PREFIX)) throw new RangeError(`data.send: topics starting with '${RESERVED_PREFIX}' are the SDK's`);
  const topicBytes = utf8.encode(topic);
  if (topicBytes.byteLength > MAX_TOPIC) {
    throw new RangeError(`data.send: the topic is ${topicBytes.byteLength} bytes, more than ${MAX_TOPIC}`);
  }
  if (!Array.isArray(to)) throw new TypeError('data.send: `to` is a list of participant ids');
  if (to.length > MAX_RECIPIENTS) {
    throw new RangeError(`data.send: ${to.length} recipients, more than ${MAX_RECIPIENTS}`);
  }
  const recipients = to.map((r) => {
    const id = utf8.encode(recipientId(r));
    if (id.byteLength === 0 || id.byteLength > 255) throw new TypeError(`data.send: '${recipientId(r)}' is not a participant id`);
    return id;
  });
  // A reliable message is always ordered; `ordered` chooses for a lossy one.
  const flags = (reliable ? FLAG_RELIABLE : ordered ? FLAG_ORDERED : 0) | (text ? FLAG_TEXT : 0);
  return { flags, topicBytes, recipients, bytes };
}

/** The send frame of a prepared message. */
export function encodeSend({ flags, topicBytes, recipients, bytes }, seq) {
  let len = 1 + 1 + 4 + 1 + topicBytes.byteLength + 1 + bytes.byteLength;
  for (const r of recipients) len += 1 + r.byteLength;
  const out = new Uint8Array(len);
  const view = new DataView(out.buffer);
  let at = 0;
  out[at++] = SEND;
  out[at++] = flags;
  view.setUint32(at, seq >>> 0); // big-endian
  at += 4;
  out[at++] = topicBytes.byteLength;
  out.set(topicBytes, at);
  at += topicBytes.byteLength;
  out[at++] = recipients.length;
  for (const r of recipients) {
    out[at++] = r.byteLength;
    out.set(r, at);
    at += r.byteLength;
  }
  out.set(bytes, at);
  return out;
}

/**
 * Reads a deliver frame: `{from, topic, payload, seq, reliable}`, the payload a string for a
 * text message and a Uint8Array (its own copy) for a binary one. Throws on a malformed frame.
 * @param {ArrayBuffer | Uint8Array} frame
 */
export function decodeDeliver(frame) {
  const b = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
  let at = 0;
  const take = (n) => {
    if (at + n > b.byteLength) throw new Error('data: a deliver frame ends early');
    const out = b.subarray(at, at + n);
    at += n;
    return out;
  };
  const short = () => take(take(1)[0]);
  const head = take(6);
  if (head[0] !== DELIVER) throw new Error(`data: frame type ${head[0]} is not a deliver frame`);
  const flags = head[1];
  const seq = new DataView(head.buffer, head.byteOffset, 6).getUint32(2);
  const from = utf8Decoder.decode(short());
  const topic = utf8Decoder.decode(short());
  const rest = b.subarray(at);
  const payload = flags & FLAG_TEXT ? utf8Decoder.decode(rest) : rest.slice();
  return { from, topic, payload, seq, reliable: (flags & FLAG_RELIABLE) !== 0 };
}

// ------------------------------------------------------------------ transports

/**
 * The signaling WebSocket as a data transport (`sig`: an open `Signaling`). Its received
 * binary frames reach the room through the socket's 'binary' event.
 */
export function wsTransport(sig) {
  return {
    kind: 'ws',
    get open() {
      return sig.open;
    },
    buffered() {
      return sig.bufferedAmount;
    },
    fits() {
      return true;
    },
    send(frame) {
      if (!sig.sendBinary(frame)) throw new Error('data: the signaling socket is closed');
    },
  };
}

// ------------------------------------------------------------------ room.data

/**
 * `room.data`. `emitRoom(event, payload)` reports each received message to the room as well
 * (its `data` event), and the transport in use (its `dataTransport` event).
 */
export class RoomData {
  /**
   * @param {(event: string, payload: object) => void} [emitRoom]
   * @param {{self: () => string, nameOf: (id: string) => string | undefined}} [room] our
   *   participant id and the others' names, for byte streams
   */
  constructor(emitRoom = () => {}, room = { self: () => '', nameOf: () => undefined }) {
    this._emitRoom = emitRoom;
    /** Byte streams and files over these messages. */
    this._streams = new Streams(roomPipe(this, room));
    this._topics = new Emitter();
    /** The session's WebSocket transport, and its SCTP one while the channels are open. */
    this._ws = null;
    this._sctp = null;
    /** Counts sessions: a send waiting for a drain is not carried over to the next one. */
    this._generation = 0;
    this._seq = 0;
    /** The transport last reported (`dataTransport`) in this session, null before `_announce`. */
    this._reported = null;
    /** Sends waiting behind a full transport, in call order. */
    this._waiting = 0;
    this._tail = Promise.resolve();
  }

  /** The transport new data messages go over: `'sctp'` once the data channels are open,
   * else `'ws'`; null while there is none (not joined, reconnecting, left). */
  get transport() {
    return this._current()?.kind ?? null;
  }

  /**
   * Sends `payload` (a string: a text message; an ArrayBuffer or typed array: binary) to
   * everyone else in the room, or to the participants of `to` (ids, or participant objects).
   * Resolves once the frame is handed to the transport; while more than 1 MiB waits in the
   * transport's buffer, that is when it has drained below 256 KiB (sends keep their order).
   * Rejects for a payload over 64 KiB, more than 64 recipients, a topic over 255 bytes or
   * starting with `sfumato/` (the SDK's: byte streams), or when not connected (also when the connection drops while the message waits).
   * @param {string | ArrayBuffer | ArrayBufferView} payload
   * `ordered` (default: `reliable`) applies to a lossy message: it may be dropped but never
   * arrives after a later ordered one of this sender; a reliable message is always ordered.
   * @param {{reliable?: boolean, ordered?: boolean, to?: Array<string | {id: string}>, topic?: string}} [opts]
   */
  async send(payload, opts = {}) {
    return this._sendMessage(prepare(payload, opts ?? {}));
  }

  /**
   * Sends `file` (a File or any Blob) to one participant as a byte stream (streams.js):
   * resolves with `{id, size, sha256, bytesSent}` once the receiver confirmed its SHA-256.
   * @param {Blob} file
   * @param {{to: string | {id: string}, topic?: string, name?: string, mime?: string,
   *   attributes?: Record<string, string>, onProgress?: Function, signal?: AbortSignal}} opts
   */
  sendFile(file, opts) {
    return this._streams.sendFile(file, opts ?? {});
  }

  /**
   * Opens a byte stream of `opts.size` bytes to one participant: returns `{id, writable,
   * done}`; the bytes written into `writable` are sent, and `done` settles as `sendFile`'s
   * promise does.
   */
  streamBytes(opts) {
    return this._streams.streamBytes(opts ?? {});
  }

  /** Calls `handler(stream)` for each byte stream offered on `topic` (`'*'`: any topic
   * without a handler of its own); the handler accepts or rejects it. */
  registerByteStreamHandler(topic, handler) {
    this._streams.registerByteStreamHandler(topic, handler);
  }

  unregisterByteStreamHandler(topic) {
    this._streams.unregisterByteStreamHandler(topic);
  }

  /** The byte streams under way, both directions. */
  get transfers() {
    return this._streams.transfers;
  }

  /** A stream message (room-pipe.js): binary, reliable, to one participant. */
  _sendReserved(bytes, to) {
    return this._sendMessage(prepare(bytes, { topic: STREAM_TOPIC, to: [to] }, true));
  }

  async _sendMessage(msg) {
    const lane = laneOf(msg.flags);
    const t = this._current();
    if (!t) throw new Error(this._overflowed ? OVERFLOWED : 'data.send: not connected');
    if (this._waiting === 0 && t.buffered(lane) <= HIGH_WATER) {
      this._write(msg, lane);
      return;
    }
    const generation = this._generation;
    this._waiting++;
    const turn = this._tail.then(async () => {
      await this._drained(lane, generation);
      this._write(msg, lane);
    });
    this._tail = turn.catch(() => {});
    try {
      await turn;
    } finally {
      this._waiting--;
    }
  }

  /**
   * Calls `handler({from, topic, payload, seq, reliable})` for each message of `topic`;
   * `'*'` for every topic. Returns a function that removes it.
   * @param {string} topic
   * @param {(msg: {from: string, topic: string, payload: string | Uint8Array, seq: number, reliable: boolean}) => void} handler
   */
  on(topic, handler) {
    return this._topics.on(String(topic), handler);
  }

  off(topic, handler) {
    this._topics.off(String(topic), handler);
  }

  // -------------------------------------------------------------- for the room

  /** A new session's WebSocket transport (after join, rejoin or a move): numbering starts
   * again, and the data channels of the session before are no longer used. */
  _attach(wsTransport) {
    this._ws = wsTransport;
    this._sctp = null;
    this._generation++;
    this._seq = 0;
    this._reported = null;
    this._overflowed = false;
  }

  /** The server took this session out of the room's data messages (`data_overflow`: its
   * data channel did not keep up with reliable messages): nothing more arrives and sends
   * reject until the next session (a rejoin); reported as `dataTransport` null. */
  _overflow() {
    if (this._overflowed) return;
    this._overflowed = true;
    this._reported = null;
    this._emitRoom('dataTransport', { transport: null, reason: 'data_overflow' });
  }

  /** This session's data channels opened: new messages take them. */
  _useChannels(sctpTransport) {
    this._sctp = sctpTransport;
    this._reportChange();
  }

  /** This session's data channels closed or failed (or never opened): back to the socket. */
  _dropChannels(sctpTransport) {
    if (sctpTransport && this._sctp !== sctpTransport) return;
    this._sctp = null;
    this._reportChange();
  }

  /** The session is usable: reports its transport (`dataTransport`), whatever was before. */
  _announce() {
    const kind = this.transport;
    if (!kind) return;
    this._reported = kind;
    this._emitRoom('dataTransport', { transport: kind });
  }

  /** A frame received on one of the current session's transports. */
  _receive(frame) {
    let msg;
    try {
      msg = decodeDeliver(frame);
    } catch (err) {
      console.warn('sfumato: ignoring a malformed data frame:', err.message);
      return;
    }
    if (msg.topic.startsWith(RESERVED_PREFIX)) {
      if (msg.topic === STREAM_TOPIC && msg.payload instanceof Uint8Array) this._streams.receive(msg.from, msg.payload);
      return;
    }
    if (msg.topic !== ANY_TOPIC) this._topics.emit(msg.topic, msg);
    this._topics.emit(ANY_TOPIC, msg);
    this._emitRoom('data', msg);
  }

  /** Reports the transport once it differs from the one last reported in this session. */
  _reportChange() {
    const kind = this.transport;
    if (!kind || this._reported === null || kind === this._reported) return;
    this._reported = kind;
    this._emitRoom('dataTransport', { transport: kind });
  }

  /** The transport new messages take: the data channels when open, else the socket. */
  _current() {
    if (this._overflowed) return null;
    if (this._sctp?.open) return this._sctp;
    if (this._ws?.open) return this._ws;
    return null;
  }

  _write(msg, lane) {
    const frame = encodeSend(msg, this._seq);
    let t = this._current();
    // A frame larger than the SCTP association takes would fail the channel: the socket
    // carries that one.
    if (t && !t.fits(frame)) t = this._ws?.open ? this._ws : null;
    if (!t) throw new Error('data.send: not connected');
    t.send(frame, lane);
    this._seq = (this._seq + 1) >>> 0;
  }

  /**
   * Waits, if the transport holds more than HIGH_WATER bytes, until it holds LOW_WATER; a
   * transport that changes meanwhile (the data channels opened or closed) is looked at anew.
   * Throws once the session that the message was sent in is over.
   */
  async _drained(lane, generation) {
    for (;;) {
      const t = this._current();
      if (!t || generation !== this._generation) {
        throw new Error('data.send: the connection closed before the message was sent');
      }
      if (t.buffered(lane) <= HIGH_WATER) return;
      const same = () => t.open && this._current() === t && generation === this._generation;
      if (t.drained) {
        await t.drained(LOW_WATER, lane);
      } else {
        while (same() && t.buffered(lane) > LOW_WATER) await sleep(DRAIN_POLL_MS);
      }
      if (same() && t.buffered(lane) <= LOW_WATER) return;
    }
  }
}
