// Leaving and rejoining (the leave button), and the SDK's automatic reconnect after a
// signaling drop: the others see the participant go and come back, and decode it again.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, expectNoLeaks, waitFor, waitForMedia, tileNames } from '../lib/harness.js';

let s;
const pages = {};
/** The routed signaling sockets of page c (for the drop test), newest last. */
const cSockets = [];

before(async () => {
  s = await Session.start({ name: 'rejoin', rtcPort: 41100, workers: 2, placement: 'spread' });
});
after(() => s?.close());

async function expectTiles(page, names, message) {
  await waitFor(async () => JSON.stringify(await tileNames(page)) === JSON.stringify(names), {
    timeout: 15000,
    message: `${message}: tiles ${JSON.stringify(names)} on ${page.label}'s page`,
  });
}

async function roomNames() {
  const { status, body } = await s.server.getJson('/api/rooms/t');
  return status === 200 ? body.participants.map((p) => p.name).sort() : [];
}

test('everyone decodes everyone', () =>
  s.run(async () => {
    pages.a = await s.open('/?room=t&name=a', 'a');
    pages.b = await s.open('/?room=t&name=b', 'b');
    // c's signaling goes through a Playwright WebSocket route (a relay) so that a test can cut it.
    pages.c = await s.open('/?room=t&name=c', 'c', {
      setup: (page) =>
        page.routeWebSocket(/\/ws$/, (ws) => {
          const server = ws.connectToServer();
          cSockets.push({ page: ws, server });
        }),
    });
    await Promise.all(Object.values(pages).map((p) => waitForMedia(p, { video: 2, audio: 2, timeout: 45000 })));
  }));

test('leave and rejoin with the buttons', () =>
  s.run(async () => {
    await pages.c.click('#leave');
    await expectTiles(pages.a, ['b'], 'after c left');
    await expectTiles(pages.b, ['a'], 'after c left');
    await waitFor(async () => JSON.stringify(await roomNames()) === '["a","b"]', { message: 'c gone from GET /api/rooms/t' });
    assert.deepEqual(await tileNames(pages.c), [], "c's own page shows no tiles after leaving");

    await pages.c.click('#rejoin');
    await expectTiles(pages.a, ['b', 'c'], 'after c rejoined');
    await expectTiles(pages.b, ['a', 'c'], 'after c rejoined');
    await Promise.all(Object.values(pages).map((p) => waitForMedia(p, { video: 2, audio: 2, timeout: 45000 })));
    assert.deepEqual(await roomNames(), ['a', 'b', 'c']);
  }));

test('a signaling drop: the SDK reconnects, rejoins and republishes', () =>
  s.run(async () => {
    const oldIds = await participantIds();
    const live = cSockets.at(-1);
    assert.ok(live, "c's signaling socket was routed");
    const before = cSockets.length;
    // Cut both directions, like a network failure would.
    await Promise.all([live.server.close({ code: 1001, reason: 'test drop' }), live.page.close({ code: 4000, reason: 'test drop' })]);

    await waitFor(() => cSockets.length > before, { timeout: 20000, message: 'c to open a new signaling socket' });
    await waitFor(async () => {
      const ids = await participantIds();
      return ids.c && ids.c !== oldIds.c;
    }, { timeout: 20000, message: 'c to rejoin under a new participant id' });
    await expectTiles(pages.a, ['b', 'c'], 'after c reconnected');
    await expectTiles(pages.b, ['a', 'c'], 'after c reconnected');
    await Promise.all(Object.values(pages).map((p) => waitForMedia(p, { video: 2, audio: 2, timeout: 45000 })));
    assert.deepEqual(await roomNames(), ['a', 'b', 'c']);
  }));

test('when everyone has left, nothing is left on the workers', () =>
  s.run(async () => {
    for (const page of Object.values(pages)) await page.click('#leave');
    await waitFor(async () => (await s.server.getJson('/api/rooms/t')).status === 404, { message: 'GET /api/rooms/t to be 404' });
    await expectNoLeaks(s.server);
  }));

async function participantIds() {
  const { status, body } = await s.server.getJson('/api/rooms/t');
  if (status !== 200) return {};
  return Object.fromEntries(body.participants.map((p) => [p.name, p.id]));
}
