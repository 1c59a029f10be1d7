// A plain RTCDataChannel between two browsers as a pipe for byte streams (streams.js), so
// that files can go peer to peer with the same protocol as through the room. This module owns
// the channel's side of that: binary messages in and out, waiting while the channel's buffer
// is full, and telling the streams when the channel goes or a new one replaces it.
//
// The channel must be reliable and ordered (the default of createDataChannel). Both ends are
// called 'peer': a channel has one peer, whose identity does not change.

import { Streams } from './streams.js';

const PEER = 'peer';
/** Bytes in flight per stream: a direct channel has no server in the middle to protect. */
const WINDOW = 4 * 1024 * 1024;
/** `send` waits while the channel holds more than this... */
const HIGH_WATER = 1024 * 1024;
/** ...until it drained below this. */
const LOW_WATER = 256 * 1024;

function channelPipe(channel, streams) {
  channel.binaryType = 'arraybuffer';
  channel.bufferedAmountLowThreshold = LOW_WATER;
  const closed = () => channel.readyState === 'closing' || channel.readyState === 'closed';
  const onMessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) streams.receive(PEER, new Uint8Array(ev.data));
  };
  channel.addEventListener('message', onMessage);
  channel.addEventListener('close', () => {
    channel.removeEventListener('message', onMessage);
    if (streams._pipe === pipe) streams.peerLeft(PEER);
  });
  const drained = () =>
    new Promise((resolve) => {
      const done = () => {
        channel.removeEventListener('bufferedamountlow', done);
        channel.removeEventListener('close', done);
        resolve();
      };
      channel.addEventListener('bufferedamountlow', done);
      channel.addEventListener('close', done);
    });
  const pipe = {
    window: WINDOW,
    budget: 4 * WINDOW,
    defaultPeer: PEER,
    self: () => PEER,
    async send(_to, bytes) {
      while (channel.readyState === 'open' && channel.bufferedAmount > HIGH_WATER) await drained();
      if (channel.readyState !== 'open' || closed()) throw new Error('streams: the data channel is not open');
      channel.send(bytes);
    },
  };
  return pipe;
}

/**
 * Byte streams over `channel` (an RTCDataChannel, open or opening): the same `sendFile` and
 * `registerByteStreamHandler` as `room.data`, with `to` left out.
 * @param {RTCDataChannel} channel
 * @param {{window?: number, probeMs?: number, resumeTimeoutMs?: number}} [opts]
 * @returns {Streams}
 */
export function streamsOverChannel(channel, opts = {}) {
  const streams = new Streams({ window: WINDOW, self: () => PEER, send: () => Promise.reject(new Error('not bound')) }, opts);
  streams.attach(channelPipe(channel, streams));
  return streams;
}

/**
 * Carries on `streams` (from `streamsOverChannel`) over a new channel to the same peer, after
 * the old one closed: every unfinished stream resumes from what its receiver has.
 */
export function attachChannel(streams, channel) {
  streams.attach(channelPipe(channel, streams));
}
