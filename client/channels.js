// The SCTP data channels of the publish peer connection (docs/protocol.md, "Data
// messages"): this module owns creating the three channels that both sides negotiate out of
// band (stream 0 reliable and ordered, stream 1 lossy, stream 2 lossy and ordered), reading
// deliver frames from them, and offering them to `room.data` as a transport with the same
// seam as the WebSocket's (a `lane` is 'reliable', 'lossy' or 'ordered': the channel):
//
//   { kind: 'sctp', open, buffered(lane), fits(frame), send(frame, lane),
//     drained(lowWater, lane) }
//
// It does not negotiate: the room puts the channels on its publish PC before that PC's offer
// (data.js picks the transport, room.js owns the PC and its offers).

import { LOW_WATER } from './data.js';

/** Stream ids and options of the two channels; the server creates the same ones. */
const RELIABLE = { label: 'sfumato-reliable', init: { negotiated: true, id: 0, ordered: true } };
const LOSSY = { label: 'sfumato-lossy', init: { negotiated: true, id: 1, ordered: false, maxRetransmits: 0 } };
const LOSSY_ORDERED = { label: 'sfumato-lossy-ordered', init: { negotiated: true, id: 2, ordered: true, maxRetransmits: 0 } };

/** The largest message the server accepts (its `a=max-message-size`). */
export const SERVER_MAX_MESSAGE_SIZE = 128 * 1024;

/**
 * The three data channels of one publish PC.
 *
 * `onOpen()` once every channel is open (with the SCTP association); `onClose()` once
 * either closes or errors after that (or before it opened);
 * `onFrame(ArrayBuffer)` for each message received on either.
 */
export class DataChannels {
  /**
   * @param {RTCPeerConnection} pc a publish PC that has not offered them yet
   * @param {{onOpen: () => void, onClose: () => void, onFrame: (frame: ArrayBuffer) => void}} handlers
   */
  constructor(pc, { onOpen, onClose, onFrame }) {
    this._pc = pc;
    this._closed = false;
    this.reliable = pc.createDataChannel(RELIABLE.label, RELIABLE.init);
    this.lossy = pc.createDataChannel(LOSSY.label, LOSSY.init);
    this.lossyOrdered = pc.createDataChannel(LOSSY_ORDERED.label, LOSSY_ORDERED.init);
    for (const ch of this._all()) {
      ch.binaryType = 'arraybuffer';
      // `drained` waits for `bufferedamountlow`, which fires when the channel drains below this.
      ch.bufferedAmountLowThreshold = LOW_WATER;
      ch.addEventListener('message', (ev) => {
        if (!this._closed && ev.data instanceof ArrayBuffer) onFrame(ev.data);
      });
      const gone = () => {
        if (this._closed) return;
        this._closed = true;
        onClose();
      };
      ch.addEventListener('close', gone);
      ch.addEventListener('error', gone);
    }
    // All open with the SCTP association, but their `open` events come one after the other.
    const opened = () => {
      if (this.open) onOpen();
    };
    for (const ch of this._all()) ch.addEventListener('open', opened);
    this.transport = this._makeTransport();
  }

  _all() {
    return [this.reliable, this.lossy, this.lossyOrdered];
  }

  /** Whether every channel can carry messages. */
  get open() {
    return !this._closed && this._all().every((ch) => ch.readyState === 'open');
  }

  /** Closes the channels without reporting it (the room is done with them). */
  close() {
    this._closed = true;
    for (const ch of this._all()) {
      try {
        ch.close();
      } catch {
        /* already closed */
      }
    }
  }

  /** The largest message both ends accept: the browser's view of the SCTP association. */
  get maxMessageSize() {
    const negotiated = this._pc.sctp?.maxMessageSize;
    return negotiated > 0 ? Math.min(negotiated, SERVER_MAX_MESSAGE_SIZE) : SERVER_MAX_MESSAGE_SIZE;
  }

  _channel(lane) {
    if (lane === 'lossy') return this.lossy;
    return lane === 'ordered' ? this.lossyOrdered : this.reliable;
  }

  _makeTransport() {
    const self = this;
    return {
      kind: 'sctp',
      get open() {
        return self.open;
      },
      /** Bytes queued on the channel of that lane. */
      buffered(lane = 'reliable') {
        return self._channel(lane).bufferedAmount;
      },
      /** Whether a frame of this size may be sent at all (else it would fail the channel). */
      fits(frame) {
        return frame.byteLength <= self.maxMessageSize;
      },
      send(frame, lane = 'reliable') {
        const ch = self._channel(lane);
        if (!self.open) throw new Error('data: the data channels are closed');
        // An ArrayBuffer of exactly the frame's bytes (binary message).
        const bytes = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength ? frame.buffer : frame.slice().buffer;
        ch.send(bytes);
      },
      /** Resolves once the channel holds at most `lowWater` bytes, or it closed. */
      drained(lowWater, lane = 'reliable') {
        const ch = self._channel(lane);
        if (ch.bufferedAmount <= lowWater || !self.open) return Promise.resolve();
        return new Promise((resolve) => {
          const done = () => {
            if (ch.bufferedAmount > lowWater && self.open) return;
            ch.removeEventListener('bufferedamountlow', done);
            ch.removeEventListener('close', done);
            resolve();
          };
          ch.addEventListener('bufferedamountlow', done);
          ch.addEventListener('close', done);
        });
      },
    };
  }
}
