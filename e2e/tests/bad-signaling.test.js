// Untrusted signaling input from a page (raw WebSocket): each bad message gets the error code
// docs/protocol.md promises, the socket stays open, and the others' media keeps flowing.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, expectNoLeaks, waitFor, waitForMedia } from '../lib/harness.js';

let s;
let raw;

before(async () => {
  s = await Session.start({ name: 'bad-signaling', rtcPort: 41200, workers: 2, placement: 'spread' });
});
after(() => s?.close());

/** Opens raw sockets in `page`; returns a function that sends one frame and awaits the reply. */
async function rawSocket(page, id) {
  await page.evaluate(
    ({ id, url }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
        const sock = { ws, inbox: [], closed: null };
        (window.__raw ??= {})[id] = sock;
        ws.onmessage = (ev) => {
          let msg;
          try {
            msg = JSON.parse(ev.data);
          } catch {
            msg = { unparsable: String(ev.data).slice(0, 200) };
          }
          sock.inbox.push(msg);
        };
        ws.onclose = (ev) => (sock.closed = { code: ev.code, reason: ev.reason });
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error('raw socket failed to open'));
      }),
    { id, url: s.server.wsUrl },
  );

  /**
   * Sends `frame` (a string, or {binary: n} for n zero bytes) and returns the next reply that
   * is an answer (error, pong, joined), skipping room traffic such as subscribe_offer.
   */
  return (frame) =>
    page.evaluate(
      ({ id, frame }) =>
        new Promise((resolve) => {
          const sock = window.__raw[id];
          const isReply = (m) => ['error', 'pong', 'joined'].includes(m.type) || m.unparsable !== undefined;
          let seen = sock.inbox.length;
          if (typeof frame === 'string') sock.ws.send(frame);
          else sock.ws.send(new Uint8Array(frame.binary));
          const deadline = Date.now() + 5000;
          const poll = () => {
            while (seen < sock.inbox.length) {
              const m = sock.inbox[seen++];
              if (isReply(m)) return resolve(m);
            }
            if (sock.closed) return resolve({ closed: sock.closed });
            if (Date.now() > deadline) return resolve({ timeout: true });
            setTimeout(poll, 20);
          };
          poll();
        }),
      { id, frame },
    );
}

function expectError(reply, code, what) {
  assert.equal(reply.type, 'error', `${what}: expected error ${code}, got ${JSON.stringify(reply)}`);
  assert.equal(reply.code, code, `${what}: expected error ${code}, got ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.message, 'string', `${what}: error without a message`);
}

test('two publishers decode each other', () =>
  s.run(async () => {
    const a = await s.open('/?room=t&name=a', 'a');
    const b = await s.open('/?room=t&name=b', 'b');
    await Promise.all([a, b].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 45000 })));
  }));

test('bad input gets errors, the socket and the room carry on', () =>
  s.run(async () => {
    const page = await s.open('/', 'raw'); // the demo's form page: it makes no connection itself
    raw = await rawSocket(page, 'one');
    const join = JSON.stringify({ type: 'join', v: 1, room: 't', name: 'raw' });

    // Before join.
    assert.equal((await raw('{"type":"ping"}')).type, 'pong', 'ping before join');
    expectError(await raw('this is not json'), 'bad_message', 'malformed JSON');
    expectError(await raw('{"type": "ping"'), 'bad_message', 'truncated JSON');
    expectError(await raw('{"type":"mute","track":"x","muted":true}'), 'not_joined', 'mute before join');
    expectError(await raw(JSON.stringify({ type: 'join', v: 1, room: 't' })), 'bad_message', 'join without name');

    // Join, then misbehave.
    const joined = await raw(join);
    assert.equal(joined.type, 'joined', `join: ${JSON.stringify(joined)}`);
    expectError(await raw('{"type":"bogus"}'), 'unknown_type', 'unknown type');
    expectError(await raw('[1,2,3]'), 'bad_message', 'JSON array');
    expectError(await raw('"just a string"'), 'bad_message', 'JSON string');
    expectError(await raw('{"no_type":true}'), 'bad_message', 'object without type');
    expectError(await raw(join), 'already_joined', 'second join');
    expectError(await raw('{"type":"mute","track":"nope","muted":true}'), 'unknown_track', 'mute of a foreign track');
    expectError(await raw('{"type":"mute","track":"nope","muted":"yes"}'), 'bad_message', 'ill-typed muted');
    expectError(await raw('{"type":"publish_offer"}'), 'bad_message', 'publish_offer without sdp');
    expectError(await raw('{"type":"publish_offer","sdp":"v=0 garbage"}'), 'bad_sdp', 'garbage SDP');
    expectError(await raw(JSON.stringify({ type: 'ping', pad: 'x'.repeat(2100 * 1024) })), 'too_large', '2.1 MiB message (over --max-message-bytes)');
    expectError(await raw({ binary: 16 }), 'bad_data', 'binary frame that is not a data message');
    assert.equal((await raw('{"type":"ping"}')).type, 'pong', 'the socket still answers after all that');

    // A join with an unsupported version fails (fatal for that socket).
    const raw2 = await rawSocket(page, 'two');
    expectError(await raw2(JSON.stringify({ type: 'join', v: 2, room: 't', name: 'future' })), 'unsupported_version', 'join v2');

    // The two real participants keep decoding each other.
    const [a, b] = s.pages;
    await Promise.all([a, b].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 20000 })));
    const { body } = await s.server.getJson('/api/rooms/t');
    assert.deepEqual(body.participants.map((p) => p.name).sort(), ['a', 'b', 'raw']);
  }));

test('the raw participant leaves no trace once everyone is gone', () =>
  s.run(async () => {
    const [a, b, rawPage] = s.pages;
    // The raw participant never answered its subscribe_offer; it just closes its sockets.
    await rawPage.evaluate(() => Object.values(window.__raw).forEach((r) => r.ws.close()));
    await a.click('#leave');
    await b.click('#leave');
    await waitFor(async () => (await s.server.getJson('/api/rooms/t')).status === 404, { message: 'GET /api/rooms/t to be 404' });
    await expectNoLeaks(s.server);
  }));
