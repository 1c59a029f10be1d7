// Data messages (room.data, docs/protocol.md "Data messages") between three browsers that
// join through the SDK without publishing, on two workers: a and b on the SCTP data channels
// of their publish PC (the default), c on the signaling socket (`transport: 'ws'`). Broadcast
// text and binary reach the others in order and stamped with their sender, whichever
// transport each end uses; a lossy message over SCTP arrives; a message for one participant
// reaches it alone; `send` refuses what the server would; a reconnect starts a new numbering;
// a participant that publishes camera and microphone on the PC that carries its data
// channels is seen and heard; and the demo page's chat between a tab on SCTP (publishing)
// and one on `transport=ws`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, waitFor, waitForMedia } from '../lib/harness.js';

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
 * Loads the SDK into `page` and joins room `room` as `name` (no publishing), its data
 * messages over `transport` ('ws', or undefined: the default, SCTP). Every message
 * received is recorded in window.got (through room.data.on('*')) and window.gotRoom (the
 * room's `data` event), payloads as plain values: text as is, binary as {bytes: [...]} (or
 * {len, fnv} when long); every `dataTransport` event in window.transports; the messages
 * that arrived on its data channels, by label, in window.channelFrames.
 */
function joinWithSdk(page, name, room, transport) {
  return page.evaluate(
    async ({ name, room, transport }) => {
      // Counts what arrives on each data channel the page makes (the SDK's own handlers run
      // as well).
      window.channelFrames = {};
      const create = RTCPeerConnection.prototype.createDataChannel;
      RTCPeerConnection.prototype.createDataChannel = function (label, init) {
        const ch = create.call(this, label, init);
        window.channelFrames[label] = 0;
        ch.addEventListener('message', () => window.channelFrames[label]++);
        return ch;
      };
      const { Sfumato } = await import('/sdk/sfumato.js');
      const r = await Sfumato.connect(Sfumato.defaultUrl(), { room, name, transport });
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
    { name, room, transport },
  );
}

/** Waits until `page`'s data messages take `kind`, as its last `dataTransport` event says. */
async function expectTransport(page, kind) {
  await waitFor(async () => (await page.evaluate(() => window.transports.at(-1))) === kind, {
    timeout: 15000,
    message: `${page.label}'s dataTransport event saying '${kind}'`,
    describe: () => '(see window.transports)',
  });
  assert.equal(await page.evaluate(() => window.sdkRoom.data.transport), kind, `${page.label}: room.data.transport`);
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

test('three participants join through the SDK, without publishing: two on SCTP, one on the socket', () =>
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
    for (const name of ['a', 'b']) ids[name] = await joinWithSdk(pages[name], name, 'd');
    ids.c = await joinWithSdk(pages.c, 'c', 'd', 'ws');
    assert.equal(new Set(Object.values(ids)).size, 3, `three participant ids: ${JSON.stringify(ids)}`);
    for (const [name, page] of Object.entries(pages)) {
      await waitFor(() => page.evaluate(() => window.sdkRoom.participants.length === 2), {
        message: `${name} to see the two others`,
      });
    }
    // a and b: the socket until their data channels open, then SCTP.
    for (const name of ['a', 'b']) {
      await expectTransport(pages[name], 'sctp');
      const events = await pages[name].evaluate(() => window.transports);
      assert.ok(['ws,sctp', 'sctp'].includes(events.join()), `${name}'s dataTransport events: ${events}`);
      // One PC, the publish PC with only the data channels (nobody publishes media yet).
      const pc = await pages[name].evaluate(() =>
        window.__sfumatoPCs
          .filter((pc) => pc.connectionState !== 'closed')
          .map((pc) => ({ sctp: pc.sctp?.state, mids: pc.getTransceivers().length, app: /m=application/.test(pc.localDescription?.sdp) })),
      );
      assert.deepEqual(pc, [{ sctp: 'connected', mids: 0, app: true }], `${name}'s peer connections`);
    }
    // c: the socket only, and no peer connection at all.
    await expectTransport(pages.c, 'ws');
    assert.deepEqual(await pages.c.evaluate(() => window.transports), ['ws']);
    assert.equal(await pages.c.evaluate(() => window.__sfumatoPCs.length), 0, 'c made no peer connection');
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
      ['in its order', { topic: 'ordered', reliable: false, ordered: true }],
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
      { topic: 'ordered', payload: 'in its order', reliable: false },
      { topic: 'big', payload: { len: BIG, fnv: bigFnv() }, reliable: true },
      { topic: '', payload: '', reliable: true },
      { topic: 'ünï', payload: { bytes: [] }, reliable: true },
      ...numbered.map(([p]) => ({ topic: 'seq', payload: p, reliable: true })),
    ].map((m, seq) => ({ from: ids.a, seq, ...m }));
    // b receives over SCTP, c over the socket; a sent over SCTP. The lossy messages ride their
    // own channels (unordered; ordered, for the one sent `ordered`): they arrive (loopback
    // loses nothing) but not necessarily in their place among the reliable ones.
    const reliableOnly = (list) => list.filter((m) => m.reliable);
    for (const name of ['b', 'c']) {
      await waitForCount(pages[name], ids.a, expected.length, 'the broadcast');
      const got = await received(pages[name], ids.a);
      assert.deepEqual(reliableOnly(got), reliableOnly(expected), `the reliable messages ${name} received from a, in order`);
      const bySeq = (list) => list.filter((m) => !m.reliable).sort((x, y) => x.seq - y.seq);
      assert.deepEqual(bySeq(got), bySeq(expected), `the lossy messages ${name} received from a`);
      assert.equal(got.length, expected.length, `${name} received each message once`);
      // a's messages reach b on its data channels (lossy one on the lossy channel), c on its socket.
      const frames = await pages[name].evaluate(() => window.channelFrames);
      if (name === 'b') {
        assert.ok(frames['sfumato-reliable'] >= expected.length - 2, `b's reliable channel: ${JSON.stringify(frames)}`);
        assert.ok(frames['sfumato-lossy'] >= 1, `b's lossy channel: ${JSON.stringify(frames)}`);
        assert.ok(frames['sfumato-lossy-ordered'] >= 1, `b's lossy ordered channel: ${JSON.stringify(frames)}`);
      } else {
        assert.deepEqual(frames, {}, 'c has no data channels');
      }
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
    // Nothing went out: the next message gets the next number (27 sent before).
    await send(pages.a, [['still fine', { topic: 'after-refusals' }]]);
    await waitFor(async () => (await received(pages.b, ids.a)).some((m) => m.topic === 'after-refusals'), {
      message: "b to receive a's message after the refusals",
    });
    const last = (await received(pages.b, ids.a)).at(-1);
    assert.deepEqual([last.seq, last.payload], [27, 'still fine']);
    assert.deepEqual(await pages.a.evaluate(() => window.errors), [], 'the server refused nothing of a');
  }));

test('between the socket (c) and SCTP (a): broadcast and targeted messages in both directions, in order', () =>
  s.run(async () => {
    const before = { a: (await received(pages.a, ids.c)).length, c: (await received(pages.c, ids.a)).length };
    const aChannelFrames = () => pages.a.evaluate(() => window.channelFrames['sfumato-reliable']);
    const aFramesBefore = await aChannelFrames();
    // c (socket) to everyone, then to a alone; a (SCTP) to c alone, then to everyone.
    const fromC = [
      ['c to all 1', { topic: 'mix' }],
      [{ bytes: [4, 5, 6] }, { topic: 'mix' }],
      ['c to a', { topic: 'mix', to: [ids.a] }],
      ['c to all 2', { topic: 'mix' }],
    ];
    const fromA = [
      ['a to c', { topic: 'mix', to: [ids.c] }],
      [{ bytes: [7, 8] }, { topic: 'mix', to: [ids.c] }],
      ['a to all', { topic: 'mix' }],
    ];
    await Promise.all([send(pages.c, fromC), send(pages.a, fromA)]);
    assert.equal(await pages.a.evaluate(() => window.sdkRoom.data.transport), 'sctp', 'a still sends over SCTP');
    assert.equal(await pages.c.evaluate(() => window.sdkRoom.data.transport), 'ws', 'c still sends over the socket');

    await waitForCount(pages.a, ids.c, before.a + 4, "c's messages");
    await waitForCount(pages.c, ids.a, before.c + 3, "a's messages");
    await waitForCount(pages.b, ids.c, 3, "c's broadcasts");
    const payloads = (list) => list.map((m) => [m.topic, m.payload, m.reliable]);
    assert.deepEqual(
      payloads((await received(pages.a, ids.c)).slice(before.a)),
      [
        ['mix', 'c to all 1', true],
        ['mix', { bytes: [4, 5, 6] }, true],
        ['mix', 'c to a', true],
        ['mix', 'c to all 2', true],
      ],
      'a (SCTP) received all of c (socket), in order',
    );
    assert.ok((await aChannelFrames()) >= aFramesBefore + 4, "c's messages reached a on its reliable data channel");
    const seqs = (await received(pages.a, ids.c)).slice(before.a).map((m) => m.seq);
    assert.deepEqual(seqs, [0, 1, 2, 3].map((i) => seqs[0] + i), "c's numbering, one by one");
    assert.deepEqual(
      payloads((await received(pages.c, ids.a)).slice(before.c)),
      [
        ['mix', 'a to c', true],
        ['mix', { bytes: [7, 8] }, true],
        ['mix', 'a to all', true],
      ],
      'c (socket) received all of a (SCTP), in order',
    );
    await waitForCount(pages.b, ids.a, 1, "a's broadcast");
    await waitFor(async () => (await received(pages.b, ids.a)).some((m) => m.payload === 'a to all'), {
      message: "b to receive a's 'a to all'",
    });
    assert.deepEqual(
      payloads(await received(pages.b, ids.c)),
      [
        ['mix', 'c to all 1', true],
        ['mix', { bytes: [4, 5, 6] }, true],
        ['mix', 'c to all 2', true],
      ],
      'b (SCTP) got only the broadcasts of c',
    );
    assert.ok(!(await received(pages.b, ids.a)).some((m) => m.topic === 'mix' && m.payload !== 'a to all'), "b got none of a's messages for c");

    // A lossy message each way.
    await send(pages.a, [['lossy a', { topic: 'lossy', reliable: false, to: [ids.c] }]]);
    await send(pages.c, [['lossy c', { topic: 'lossy', reliable: false, to: [ids.b] }]]);
    await waitFor(async () => (await received(pages.c, ids.a)).some((m) => m.payload === 'lossy a' && !m.reliable), {
      message: "c to receive a's lossy message",
    });
    await waitFor(async () => (await received(pages.b, ids.c)).some((m) => m.payload === 'lossy c' && !m.reliable), {
      message: "b to receive c's lossy message over SCTP",
    });
    for (const name of ['a', 'b', 'c']) assert.deepEqual(await pages[name].evaluate(() => window.errors), [], `no server error for ${name}`);
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

test('publishing camera and microphone on the PC of the data channels: seen, heard, and data still flows', () =>
  s.run(async () => {
    pages.m = await s.open('/', 'm');
    ids.m = await joinWithSdk(pages.m, 'm', 'd');
    await expectTransport(pages.m, 'sctp');
    // The channels are open: publishing now adds the tracks to the same PC and offers again.
    await pages.m.evaluate(() => window.sdkRoom.publish({ audio: true, video: true }));
    await Promise.all([waitForMedia(pages.b, { video: 1, audio: 1, timeout: 30000 }), waitForMedia(pages.c, { video: 1, audio: 1, timeout: 30000 })]);
    const pcs = await pages.m.evaluate(() =>
      window.__sfumatoPCs
        .filter((pc) => pc.connectionState !== 'closed')
        .map((pc) => ({ sctp: pc.sctp?.state, sending: pc.getSenders().filter((x) => x.track).map((x) => x.track.kind).sort() })),
    );
    assert.deepEqual(pcs, [{ sctp: 'connected', sending: ['audio', 'video'] }], "m's one PC carries the channels and both tracks");
    assert.equal(await pages.m.evaluate(() => window.sdkRoom.data.transport), 'sctp');
    await send(pages.m, [['after publishing', { topic: 'pub', to: [ids.b, ids.c] }]]);
    await send(pages.b, [['to the publisher', { topic: 'pub', to: [ids.m] }]]);
    for (const name of ['b', 'c']) {
      await waitFor(async () => (await received(pages[name], ids.m)).some((m) => m.payload === 'after publishing'), {
        message: `${name} to receive m's message sent after publishing`,
      });
    }
    await waitFor(async () => (await received(pages.m, ids.b)).some((m) => m.payload === 'to the publisher'), {
      message: "m to receive b's message over its channels",
    });
  }));

test("the demo page's chat between a tab on SCTP and one on transport=ws, with the transport shown", () =>
  s.run(async () => {
    // alice publishes camera and microphone (the demo publishes right after joining: the
    // tracks join the data channels' PC); bob is a viewer on the socket.
    const alice = await s.open('/?room=chat&name=alice', 'alice');
    const bob = await s.open('/?room=chat&name=bob&publish=0&transport=ws', 'bob');
    // The panel is closed until its button opens it (the videos keep the whole width).
    for (const page of [alice, bob]) {
      await page.waitForSelector('#chat-toggle', { state: 'visible', timeout: 15000 });
      assert.equal(await page.$('#chat:not([hidden])'), null, 'the chat starts closed');
      await page.click('#chat-toggle');
      await page.waitForSelector('#chat:not([hidden])', { timeout: 15000 });
    }
    // Each knows the other (their names come from the participant list).
    await alice.waitForSelector('.tile[data-name="bob"]', { timeout: 15000 });
    await bob.waitForSelector('.tile[data-name="alice"]', { timeout: 15000 });
    await alice.waitForSelector('#chat-transport[data-transport="sctp"]', { timeout: 15000 });
    await bob.waitForSelector('#chat-transport[data-transport="ws"]', { timeout: 15000 });
    assert.equal(await alice.textContent('#chat-transport'), 'via data channel');
    assert.equal(await bob.textContent('#chat-transport'), 'via WebSocket');
    await waitForMedia(bob, { video: 1, audio: 1, timeout: 30000 });
    assert.equal(await alice.evaluate(() => window.sfumatoRoom.data.transport), 'sctp', 'alice still on SCTP after publishing');

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

    // Closed, the panel counts on its button what arrives meanwhile.
    await bob.click('#chat-toggle');
    await bob.waitForSelector('#chat', { state: 'hidden', timeout: 5000 });
    await alice.fill('#chat-input', 'are you there?');
    await alice.press('#chat-input', 'Enter');
    await waitFor(async () => (await bob.textContent('#chat-toggle')) === 'Chat (1)', {
      message: "the unread count on bob's chat button",
      describe: () => '',
    });
  }));

test('switching from the socket to the data channels mid-stream loses no reliable message and duplicates none', (t) =>
  s.run(async () => {
    pages.e = await s.open('/', 'e');
    // e's data channels come up half a second late (each answer is held that long), so that
    // its first messages surely take the socket and the switch falls within the stream.
    await pages.e.evaluate(() => {
      const apply = RTCPeerConnection.prototype.setRemoteDescription;
      RTCPeerConnection.prototype.setRemoteDescription = async function (...args) {
        await new Promise((r) => setTimeout(r, 500));
        return apply.apply(this, args);
      };
    });
    ids.e = await joinWithSdk(pages.e, 'e', 'd');
    // e sends from the moment it joined, while its data channels come up.
    const transports = await pages.e.evaluate(async () => {
      const used = [];
      for (let i = 0; i < 400; i++) {
        used.push(window.sdkRoom.data.transport);
        await window.sdkRoom.data.send(`m${i}`, { topic: 'switch' });
        await new Promise((r) => setTimeout(r, 3));
      }
      return used;
    });
    assert.equal(transports[0], 'ws', 'the first messages went over the socket');
    assert.equal(transports.at(-1), 'sctp', 'the last ones over the data channels');
    const got = async () => (await received(pages.b, ids.e)).filter((m) => m.topic === 'switch').map((m) => m.payload);
    await waitFor(async () => (await got()).length >= 400, { message: "b to receive e's 400 messages" });
    const payloads = await got();
    assert.equal(payloads.length, 400, 'none twice');
    assert.deepEqual(
      [...payloads].sort(),
      Array.from({ length: 400 }, (_, i) => `m${i}`).sort(),
      'every one',
    );
    const late = payloads.filter((p, i) => i > 0 && Number(p.slice(1)) < Number(payloads[i - 1].slice(1))).length;
    t.diagnostic(`switched after ${transports.indexOf('sctp')} messages; ${late} arrived after a later one`);
  }));

test('a session the server takes out of data messages (data_overflow) says so and refuses sends until it rejoins', () =>
  s.run(async () => {
    const reported = (await pages.c.evaluate(() => window.transports)).length;
    // What the server says when the session's data channel does not keep up (engine test
    // `a_data_channel_that_does_not_keep_up_is_reported_once`), said to c's SDK directly:
    // a browser's SCTP stack reads too fast to be made that slow here.
    const after = await pages.c.evaluate(async () => {
      const room = window.sdkRoom;
      room._onMessage({ type: 'error', code: 'data_overflow', message: 'test' }, room._session);
      const sent = await room.data.send('lost?').then(() => 'sent', (err) => err.message);
      return { transport: room.data.transport, sent };
    });
    assert.equal(after.transport, null);
    assert.match(after.sent, /data_overflow/);
    await waitFor(async () => (await pages.c.evaluate(() => window.transports)).length === reported + 1, {
      message: "c's dataTransport event for the overflow",
    });
    assert.equal((await pages.c.evaluate(() => window.transports)).at(-1), null);

    // A new session takes part again.
    const live = cSockets.at(-1);
    const before = cSockets.length;
    await Promise.all([live.server.close({ code: 1001, reason: 'test drop' }), live.page.close({ code: 4000, reason: 'test drop' })]);
    await waitFor(() => cSockets.length > before, { timeout: 20000, message: 'c to open a new signaling socket' });
    await waitFor(async () => (await pages.c.evaluate(() => window.transports)).at(-1) === 'ws', {
      timeout: 20000,
      message: "c's dataTransport after its rejoin",
    });
    const newId = await pages.c.evaluate(() => window.sdkRoom.localParticipant.id);
    await waitFor(() => pages.a.evaluate((id) => window.sdkRoom.participants.some((p) => p.id === id), newId), {
      message: 'a to see c again',
    });
    await send(pages.c, [['back again', { topic: 'after-overflow', to: [ids.a] }]]);
    await waitFor(async () => (await received(pages.a, newId)).some((m) => m.payload === 'back again'), {
      message: "c's message after its rejoin",
    });
  }));
