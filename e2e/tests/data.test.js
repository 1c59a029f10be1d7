// Data messages (room.data, docs/protocol.md "Data messages") between three browsers that
// join through the SDK without publishing, on two workers: broadcast text and binary reach
// the others in order and stamped with their sender, a message for one participant reaches
// it alone, `send` refuses what the server would, a reconnect starts a new numbering; and
// the demo page's chat panel between two tabs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, waitFor } from '../lib/harness.js';

let s;
/** SDK pages by name; their participant ids. */
const pages = {};
const ids = {};
/** The routed signaling sockets of page c (for the drop test), newest last. */
const cSockets = [];

before(async () => {
  s = await Session.start({ name: 'data', rtcPort: 42300, workers: 2, placement: 'spread' });
});
after(() => s?.close());

/**
 * Loads the SDK into `page` and joins room `room` as `name` (no publishing). Every message
 * received is recorded in window.got (through room.data.on('*')) and window.gotRoom (the
 * room's `data` event), payloads as plain values: text as is, binary as {bytes: [...]} (or
 * {len, fnv} when long).
 */
function joinWithSdk(page, name, room) {
  return page.evaluate(
    async ({ name, room }) => {
      const { Sfumato } = await import('/sdk/sfumato.js');
      const r = await Sfumato.connect(Sfumato.defaultUrl(), { room, name });
      const fnv = (b) => b.reduce((h, x) => Math.imul(h ^ x, 16777619) >>> 0, 2166136261);
      const plain = (m) => ({
        from: m.from,
        topic: m.topic,
        seq: m.seq,
        reliable: m.reliable,
        payload:
          typeof m.payload === 'string'
            ? m.payload
            : m.payload instanceof Uint8Array
              ? m.payload.length > 64
                ? { len: m.payload.length, fnv: fnv(m.payload) }
                : { bytes: [...m.payload] }
              : { unexpected: String(m.payload) },
      });
      Object.assign(window, { sdkRoom: r, got: [], gotRoom: [], transports: [], errors: [], fnv });
      r.data.on('*', (m) => window.got.push(plain(m)));
      r.on('data', (m) => window.gotRoom.push(plain(m)));
      r.on('dataTransport', (e) => window.transports.push(e.transport));
      r.on('error', (e) => window.errors.push(e));
      return r.localParticipant.id;
    },
    { name, room },
  );
}

/** Messages `page` received from `from`. */
async function received(page, from) {
  return (await page.evaluate(() => window.got)).filter((m) => m.from === from);
}

/** Sends each [payload, opts] from `page` in turn; binary payloads as {bytes} or {len}. */
function send(page, messages) {
  return page.evaluate(async (messages) => {
    for (const [p, opts] of messages) {
      const payload = typeof p === 'string' ? p : p.bytes ? new Uint8Array(p.bytes) : Uint8Array.from({ length: p.len }, (_, i) => (i * 31 + 7) & 255);
      await window.sdkRoom.data.send(payload, opts);
    }
  }, messages);
}

function waitForCount(page, from, n, what) {
  return waitFor(async () => (await received(page, from)).length >= n, {
    timeout: 15000,
    message: `${page.label} to receive ${n} message(s) from ${from} (${what})`,
    describe: () => '(see window.got)',
  });
}

const BIG = 65536;
const bigFnv = () => {
  let h = 2166136261;
  for (let i = 0; i < BIG; i++) h = Math.imul(h ^ ((i * 31 + 7) & 255), 16777619) >>> 0;
  return h;
};

test('three participants join through the SDK, without publishing', () =>
  s.run(async () => {
    pages.a = await s.open('/', 'a');
    pages.b = await s.open('/', 'b');
    // c's signaling goes through a Playwright WebSocket route (a relay) so that a test can cut it.
    pages.c = await s.open('/', 'c', {
      setup: (page) =>
        page.routeWebSocket(/\/ws$/, (ws) => {
          const server = ws.connectToServer();
          cSockets.push({ page: ws, server });
        }),
    });
    for (const name of ['a', 'b', 'c']) ids[name] = await joinWithSdk(pages[name], name, 'd');
    assert.equal(new Set(Object.values(ids)).size, 3, `three participant ids: ${JSON.stringify(ids)}`);
    for (const [name, page] of Object.entries(pages)) {
      await waitFor(() => page.evaluate(() => window.sdkRoom.participants.length === 2), {
        message: `${name} to see the two others`,
      });
      assert.equal(await page.evaluate(() => window.sdkRoom.data.transport), 'ws');
      await waitFor(async () => (await page.evaluate(() => window.transports)).length === 1, { message: `${name}'s dataTransport event` });
      assert.deepEqual(await page.evaluate(() => window.transports), ['ws']);
    }
    const { body } = await s.server.getJson('/api/rooms/d');
    assert.equal(new Set(body.participants.map((p) => p.worker)).size, 2, 'the participants are on both workers');
  }));

test('broadcast text and binary reach the others in order, stamped with the sender', () =>
  s.run(async () => {
    const numbered = Array.from({ length: 20 }, (_, i) => [`n${i}`, { topic: 'seq' }]);
    const sent = [
      ['hello', { topic: 'greet' }],
      [{ bytes: [0, 1, 2, 127, 128, 255] }, { topic: 'bin' }],
      ['héllo ✓ 🎉', { topic: 'greet', reliable: false }],
      [{ len: BIG }, { topic: 'big' }],
      ['', {}],
      [{ bytes: [] }, { topic: 'ünï' }],
      ...numbered,
    ];
    await send(pages.a, sent);
    const expected = [
      { topic: 'greet', payload: 'hello', reliable: true },
      { topic: 'bin', payload: { bytes: [0, 1, 2, 127, 128, 255] }, reliable: true },
      { topic: 'greet', payload: 'héllo ✓ 🎉', reliable: false },
      { topic: 'big', payload: { len: BIG, fnv: bigFnv() }, reliable: true },
      { topic: '', payload: '', reliable: true },
      { topic: 'ünï', payload: { bytes: [] }, reliable: true },
      ...numbered.map(([p]) => ({ topic: 'seq', payload: p, reliable: true })),
    ].map((m, seq) => ({ from: ids.a, seq, ...m }));
    for (const name of ['b', 'c']) {
      await waitForCount(pages[name], ids.a, expected.length, 'the broadcast');
      const got = await received(pages[name], ids.a);
      assert.deepEqual(got, expected, `what ${name} received from a`);
      const viaRoom = (await pages[name].evaluate(() => window.gotRoom)).filter((m) => m.from === ids.a);
      assert.deepEqual(viaRoom, got, `${name}'s room 'data' event saw the same messages`);
    }
    assert.deepEqual(await pages.a.evaluate(() => window.got), [], 'a does not receive its own messages');
  }));

test('a message for one participant reaches it alone', () =>
  s.run(async () => {
    // c's topic handlers: one kept, one removed with off() before anything is sent.
    await pages.c.evaluate(() => {
      window.dm = [];
      window.removed = [];
      const removed = (m) => window.removed.push(m.payload);
      window.sdkRoom.data.on('dm', (m) => window.dm.push(m.payload));
      window.sdkRoom.data.on('dm', removed);
      window.sdkRoom.data.off('dm', removed);
    });
    await send(pages.b, [
      ['for c only', { topic: 'dm', to: [ids.c] }],
      [{ bytes: [9, 9] }, { topic: 'dm', to: [ids.c] }],
      ['for everyone', { topic: 'dm' }],
    ]);
    // The positive signal: a received b's later broadcast, so it would have had the first ones.
    await waitForCount(pages.a, ids.b, 1, "b's broadcast");
    await waitForCount(pages.c, ids.b, 3, "b's messages");
    assert.deepEqual(
      (await received(pages.a, ids.b)).map((m) => [m.seq, m.payload]),
      [[2, 'for everyone']],
      'a got only the broadcast',
    );
    assert.deepEqual(
      (await received(pages.c, ids.b)).map((m) => [m.seq, m.topic, m.payload]),
      [
        [0, 'dm', 'for c only'],
        [1, 'dm', { bytes: [9, 9] }],
        [2, 'dm', 'for everyone'],
      ],
      'c got all three, in order',
    );
    const dm = await pages.c.evaluate(() => window.dm.map((p) => (typeof p === 'string' ? p : [...p])));
    assert.deepEqual(dm, ['for c only', [9, 9], 'for everyone'], "c's 'dm' handler");
    assert.deepEqual(await pages.c.evaluate(() => window.removed), [], 'a handler removed with off() is not called');
    assert.deepEqual(await received(pages.b, ids.b), [], 'b does not receive its own messages');
  }));

test('send rejects what the server would refuse, and sends nothing for it', () =>
  s.run(async () => {
    const outcomes = await pages.a.evaluate(async (ids) => {
      const d = window.sdkRoom.data;
      const attempt = (payload, opts) => d.send(payload, opts).then(() => 'sent', (err) => `${err.name}: ${err.message}`);
      return {
        binary: await attempt(new Uint8Array(65537)),
        buffer: await attempt(new ArrayBuffer(65537)),
        // 32769 characters, 65538 bytes of UTF-8.
        text: await attempt('é'.repeat(32769)),
        recipients: await attempt('x', { to: Array.from({ length: 65 }, () => ids.b) }),
        topic: await attempt('x', { topic: 't'.repeat(256) }),
        notPayload: await attempt(42),
      };
    }, ids);
    assert.match(outcomes.binary, /65537 bytes, more than 65536/);
    assert.match(outcomes.buffer, /65537 bytes, more than 65536/);
    assert.match(outcomes.text, /65538 bytes, more than 65536/);
    assert.match(outcomes.recipients, /65 recipients, more than 64/);
    assert.match(outcomes.topic, /256 bytes, more than 255/);
    assert.match(outcomes.notPayload, /TypeError/);
    // Nothing went out: the next message gets the next number (26 sent before).
    await send(pages.a, [['still fine', { topic: 'after-refusals' }]]);
    await waitFor(async () => (await received(pages.b, ids.a)).some((m) => m.topic === 'after-refusals'), {
      message: "b to receive a's message after the refusals",
    });
    const last = (await received(pages.b, ids.a)).at(-1);
    assert.deepEqual([last.seq, last.payload], [26, 'still fine']);
    assert.deepEqual(await pages.a.evaluate(() => window.errors), [], 'the server refused nothing of a');
  }));

test('after a signaling drop: dataTransport again, a new id, numbering from 0', () =>
  s.run(async () => {
    const live = cSockets.at(-1);
    assert.ok(live, "c's signaling socket was routed");
    const before = cSockets.length;
    await Promise.all([live.server.close({ code: 1001, reason: 'test drop' }), live.page.close({ code: 4000, reason: 'test drop' })]);
    await waitFor(() => cSockets.length > before, { timeout: 20000, message: 'c to open a new signaling socket' });
    await waitFor(async () => (await pages.c.evaluate(() => window.transports)).length === 2, {
      timeout: 20000,
      message: "c's second dataTransport event",
    });
    const newId = await pages.c.evaluate(() => window.sdkRoom.localParticipant.id);
    assert.notEqual(newId, ids.c, 'c rejoined under a new participant id');
    ids.c = newId;
    await waitFor(() => pages.a.evaluate((id) => window.sdkRoom.participants.some((p) => p.id === id), newId), {
      message: 'a to see c again',
    });
    await send(pages.c, [['back', { topic: 'rejoin' }], [{ bytes: [1] }, { topic: 'rejoin', to: [ids.a] }]]);
    await waitForCount(pages.a, newId, 2, "c's messages after its reconnect");
    assert.deepEqual(
      (await received(pages.a, newId)).map((m) => [m.seq, m.payload]),
      [
        [0, 'back'],
        [1, { bytes: [1] }],
      ],
    );
    // And c, over the relayed socket, receives again.
    await send(pages.a, [['welcome back', { topic: 'rejoin', to: [newId] }]]);
    await waitFor(async () => (await received(pages.c, ids.a)).some((m) => m.payload === 'welcome back'), {
      message: "c to receive a's message after its reconnect",
    });
  }));

test("the demo page's chat: type in one tab, see it in the other with the sender's name", () =>
  s.run(async () => {
    const alice = await s.open('/?room=chat&name=alice&publish=0', 'alice');
    const bob = await s.open('/?room=chat&name=bob&publish=0', 'bob');
    await alice.waitForSelector('#chat:not([hidden])', { timeout: 15000 });
    await bob.waitForSelector('#chat:not([hidden])', { timeout: 15000 });
    // Each knows the other (their names come from the participant list).
    await alice.waitForSelector('.tile[data-name="bob"]', { timeout: 15000 });
    await bob.waitForSelector('.tile[data-name="alice"]', { timeout: 15000 });

    const lines = (page) =>
      page.$$eval('#chat-log li', (lis) => lis.map((li) => [li.querySelector('.who').textContent, li.querySelector('.text').textContent, li.className]));

    await alice.fill('#chat-input', 'hi bob 👋 <b>not bold</b>');
    await alice.press('#chat-input', 'Enter');
    await waitFor(async () => (await lines(bob)).length === 1, { message: "alice's line on bob's page", describe: () => '' });
    assert.deepEqual(await lines(bob), [['alice', 'hi bob 👋 <b>not bold</b>', '']]);
    assert.equal(await bob.$('#chat-log b'), null, 'chat text is not HTML');
    assert.deepEqual(await lines(alice), [['alice', 'hi bob 👋 <b>not bold</b>', 'self']], 'alice sees her own line');
    assert.equal(await alice.inputValue('#chat-input'), '', 'the input is cleared');

    await bob.fill('#chat-input', 'hello alice');
    await bob.click('#chat-form button[type="submit"]');
    await waitFor(async () => (await lines(alice)).length === 2, { message: "bob's line on alice's page", describe: () => '' });
    assert.deepEqual((await lines(alice))[1], ['bob', 'hello alice', '']);
  }));
