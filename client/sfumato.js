// Sfumato browser SDK: plain ES modules, no build step, no dependencies.
//
//   import { Sfumato } from '/sdk/sfumato.js';
//   const room = await Sfumato.connect('wss://host/ws', { room: 'demo', name: 'ada' });
//   room.on('trackSubscribed', ({ participant, kind, stream }) => { ... });
//   await room.publish({ audio: true, video: true });
//   room.data.on('chat', ({ from, payload }) => { ... });
//   await room.data.send('hello', { topic: 'chat' });
//   room.data.registerByteStreamHandler('files', (stream) => stream.accept({ sink }));
//   await room.data.sendFile(file, { to: participant, topic: 'files' });

import { Room } from './room.js';
import { Signaling, SignalingError, PROTOCOL_VERSION } from './signaling.js';
import { waitForIceGathering } from './peer.js';
import { listDevices } from './media.js';
import { Streams, StreamError, IncomingStream } from './streams.js';
import { streamsOverChannel, attachChannel } from './channel-pipe.js';
import { Sha256 } from './sha256.js';

/**
 * Connects to a Sfumato server and joins a room.
 * @param {string} url the signaling endpoint, ws(s)://host/ws
 * @param {{room: string, name?: string, token?: string}} opts `token`: the access token of a
 *   server started with API keys (the name is then the token's)
 * @returns {Promise<Room>}
 */
export function connect(url, opts) {
  return Room.connect(url, opts);
}

/** The signaling URL of the server that served the current page. */
export function defaultUrl(loc = globalThis.location) {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

export const Sfumato = Object.freeze({ connect, defaultUrl, listDevices, Room, Signaling, SignalingError, PROTOCOL_VERSION, streamsOverChannel, attachChannel });

export { Room, Signaling, SignalingError, PROTOCOL_VERSION, waitForIceGathering, listDevices };
// Byte streams: the engine behind `room.data.sendFile`, and over a direct RTCDataChannel.
export { Streams, StreamError, IncomingStream, streamsOverChannel, attachChannel, Sha256 };
export default Sfumato;
