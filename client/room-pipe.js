// `room.data` as a pipe for byte streams (streams.js): stream messages travel as reliable
// binary data messages to one participant on a reserved topic, paced under the server's data
// rate limit. This module owns that topic, the pacing, and what the stream engine needs to
// know of the room (our id, the others' names).

import { sleep } from './peer.js';

/** The topic stream messages take; `room.data.send` refuses topics under `sfumato/`. */
export const STREAM_TOPIC = 'sfumato/stream';
/** Topics the SDK keeps for itself. */
export const RESERVED_PREFIX = 'sfumato/';
/**
 * Stream messages a second, at most: the server drops what a participant sends beyond
 * `--max-data-rate` (500 a second by default, a second's worth at once), which a stream would
 * have to repair. This leaves 100 a second to the application's own messages.
 */
export const STREAM_RATE = 400;
const STREAM_BURST = 40;
/**
 * Bytes in flight per stream we receive, and over all of them: the server drops a
 * participant from the room's data messages when its data channel's send buffer (512 KiB)
 * is full, so what may be on its way to us stays well under that.
 */
export const ROOM_STREAM_WINDOW = 256 * 1024;
export const ROOM_STREAM_BUDGET = 384 * 1024;

/**
 * @param {{_sendReserved: (bytes: Uint8Array, to: string) => Promise<void>}} data room.data
 * @param {{self: () => string, nameOf: (id: string) => string | undefined}} room
 * @param {{rate?: number}} [opts]
 */
export function roomPipe(data, room, { rate = STREAM_RATE } = {}) {
  let tokens = STREAM_BURST;
  let last = Date.now();
  let chain = Promise.resolve();
  /** Waits for a token of the bucket (rate a second, STREAM_BURST at once). */
  const token = async () => {
    for (;;) {
      const now = Date.now();
      tokens = Math.min(STREAM_BURST, tokens + ((now - last) * rate) / 1000);
      last = now;
      if (tokens >= 1) {
        tokens -= 1;
        return;
      }
      await sleep(Math.ceil(((1 - tokens) * 1000) / rate));
    }
  };
  return {
    window: ROOM_STREAM_WINDOW,
    budget: ROOM_STREAM_BUDGET,
    self: () => room.self(),
    nameOf: (id) => room.nameOf(id),
    /** In order, each after its token; `room.data`'s own backpressure applies after. */
    send(to, bytes) {
      const turn = chain.then(token).then(() => data._sendReserved(bytes, to));
      chain = turn.catch(() => {});
      return turn;
    },
  };
}
