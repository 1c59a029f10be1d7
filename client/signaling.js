// The signaling socket: one WebSocket, JSON messages, keepalive, and "wait for the next
// message of type X". Knows the wire format of docs/protocol.md, nothing about rooms.
// Binary frames (data messages) are passed on as they came, as 'binary' events: reading
// them is data.js's business.

import { Emitter } from './emitter.js';

export const PROTOCOL_VERSION = 1;

/** The signaling socket could not be opened: the node is down or unreachable. */
export class UnreachableError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UnreachableError';
  }
}

/** A server `error` message turned into an exception. */
export class SignalingError extends Error {
  /** `url`: where to go instead, with code `redirect` (a cluster node that is full or draining). */
  constructor(code, message, url) {
    super(`${code}: ${message}`);
    this.name = 'SignalingError';
    this.code = code;
    if (typeof url === 'string') this.url = url;
  }
}

/**
 * Events: 'message' (msg: a JSON message), 'binary' (ArrayBuffer: a binary frame),
 * 'close' ({code, reason, clean}).
 */
export class Signaling extends Emitter {
  /**
   * Opens the socket; resolves once it is open.
   * @param {string} url ws(s)://host/ws
   * @param {{openTimeoutMs?: number, pingIntervalMs?: number}} [opts]
   */
  static open(url, opts = {}) {
    const openTimeoutMs = opts.openTimeoutMs ?? 10000;
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
      } catch (err) {
        reject(err);
        return;
      }
      const timer = setTimeout(() => {
        cleanup();
        ws.close();
        reject(new UnreachableError(`signaling: could not connect to ${url} within ${openTimeoutMs} ms`));
      }, openTimeoutMs);
      const onOpen = () => {
        cleanup();
        resolve(new Signaling(ws, opts));
      };
      const onFail = () => {
        cleanup();
        reject(new UnreachableError(`signaling: could not connect to ${url}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        ws.removeEventListener('open', onOpen);
        ws.removeEventListener('error', onFail);
        ws.removeEventListener('close', onFail);
      };
      ws.addEventListener('open', onOpen);
      ws.addEventListener('error', onFail);
      ws.addEventListener('close', onFail);
    });
  }

  /** @param {WebSocket} ws an open socket */
  constructor(ws, opts = {}) {
    super();
    this._ws = ws;
    // Binary frames as ArrayBuffers, handed on synchronously (a Blob would need an await and
    // could let a later frame overtake it).
    ws.binaryType = 'arraybuffer';
    this._closed = false;
    /** @type {Set<{type: string, failOn: Set<string>, resolve: Function, reject: Function, timer: any}>} */
    this._waiters = new Set();
    this._lastRx = Date.now();
    const pingIntervalMs = opts.pingIntervalMs ?? 10000;

    ws.addEventListener('message', (ev) => this._onMessage(ev));
    ws.addEventListener('close', (ev) => this._onClose(ev.code, ev.reason, ev.wasClean));
    ws.addEventListener('error', () => {
      /* a 'close' always follows */
    });

    // Keepalive: ping regularly; a socket that has been silent for three intervals is dead.
    this._pinger = setInterval(() => {
      if (Date.now() - this._lastRx > 3 * pingIntervalMs) {
        this._forceClose('keepalive timeout');
        return;
      }
      this.send({ type: 'ping' });
    }, pingIntervalMs);
  }

  get open() {
    return !this._closed && this._ws.readyState === WebSocket.OPEN;
  }

  /** Bytes queued on the socket and not yet sent. */
  get bufferedAmount() {
    return this._ws.bufferedAmount;
  }

  /** Sends one message; returns false if the socket is not open. */
  send(msg) {
    if (!this.open) return false;
    this._ws.send(JSON.stringify(msg));
    return true;
  }

  /** Sends one binary frame (a Uint8Array or ArrayBuffer); returns false if the socket is not open. */
  sendBinary(bytes) {
    if (!this.open) return false;
    this._ws.send(bytes);
    return true;
  }

  /**
   * Resolves with the next message of `type`. Rejects with a SignalingError on an `error`
   * message whose code is in `failOn` (or any code when failOn is '*'), on close, or on timeout.
   * @param {string} type
   * @param {{failOn?: string[] | '*', timeoutMs?: number}} [opts]
   */
  next(type, opts = {}) {
    const timeoutMs = opts.timeoutMs ?? 15000;
    return new Promise((resolve, reject) => {
      if (this._closed) {
        reject(new Error('signaling: socket closed'));
        return;
      }
      const waiter = {
        type,
        failOn: opts.failOn === '*' ? '*' : new Set(opts.failOn ?? []),
        resolve,
        reject,
        timer: setTimeout(() => {
          this._waiters.delete(waiter);
          reject(new Error(`signaling: no '${type}' within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this._waiters.add(waiter);
    });
  }

  /** Closes the socket (no reconnect is implied; that is the room's business). */
  close(reason = 'closed by client') {
    this._forceClose(reason, 1000);
  }

  /** Drops the socket as if the network had: 'close' fires with clean = false. */
  drop(reason = 'dropped') {
    this._forceClose(reason, 4000);
  }

  _forceClose(reason, code = 4000) {
    if (this._closed) return;
    try {
      this._ws.close(code === 1000 ? 1000 : 4000, reason);
    } catch {
      /* already closing */
    }
    this._onClose(code, reason, code === 1000);
  }

  _onMessage(ev) {
    this._lastRx = Date.now();
    if (ev.data instanceof ArrayBuffer) {
      this.emit('binary', ev.data);
      return;
    }
    if (typeof ev.data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      console.warn('sfumato: ignoring a non-JSON signaling message');
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;

    for (const w of [...this._waiters]) {
      if (msg.type === w.type) {
        this._settle(w);
        w.resolve(msg);
        return;
      }
      if (msg.type === 'error' && (w.failOn === '*' || w.failOn.has(msg.code))) {
        this._settle(w);
        w.reject(new SignalingError(msg.code, msg.message ?? '', msg.url));
        return;
      }
    }
    this.emit('message', msg);
  }

  _settle(w) {
    clearTimeout(w.timer);
    this._waiters.delete(w);
  }

  _onClose(code, reason, clean) {
    if (this._closed) return;
    this._closed = true;
    clearInterval(this._pinger);
    for (const w of [...this._waiters]) {
      this._settle(w);
      w.reject(new Error(`signaling: socket closed (${code}${reason ? ` ${reason}` : ''})`));
    }
    this.emit('close', { code, reason, clean });
  }
}
