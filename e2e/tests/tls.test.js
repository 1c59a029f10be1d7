// HTTPS and WSS: a server with --tls-self-signed, the demo page opened over https (Chromium
// told to accept the self-signed certificate, in this test only); the SDK signals over wss
// and two participants decode each other.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, tileNames, waitForMedia } from '../lib/harness.js';

let s;

before(async () => {
  s = await Session.start({ name: 'tls', rtcPort: 42100, workers: 2, placement: 'spread', tls: true });
});
after(() => s?.close());

test('two participants over https and wss decode each other', () =>
  s.run(async () => {
    assert.match(s.server.url, /^https:/);
    const sockets = [];
    const watch = (page) => page.on('websocket', (ws) => sockets.push(ws.url()));
    const ann = await s.open('/?room=secure&name=ann', 'ann', { setup: watch });
    const ben = await s.open('/?room=secure&name=ben', 'ben', { setup: watch });
    await Promise.all([ann, ben].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 45000 })));

    for (const page of [ann, ben]) {
      assert.equal(await page.evaluate(() => window.isSecureContext), true, 'the page is a secure context');
      assert.equal(await page.evaluate(() => location.protocol), 'https:');
    }
    assert.ok(sockets.length >= 2, `signaling sockets: ${sockets}`);
    for (const u of sockets) assert.match(u, /^wss:\/\/127\.0\.0\.1:\d+\/ws/, 'the SDK signals over wss');
    assert.deepEqual(await tileNames(ann), ['ben']);
    assert.deepEqual(await tileNames(ben), ['ann']);

    const { status, body } = await s.server.getJson('/api/rooms/secure');
    assert.equal(status, 200, `GET /api/rooms/secure over https: ${JSON.stringify(body)}`);
    assert.deepEqual(body.participants.map((p) => p.name).sort(), ['ann', 'ben']);
  }));
