// One room across three nodes: three Sfumato processes on 127.0.0.1, 127.0.0.2 and
// 127.0.0.3 (all loopback) joined through one Redis; a browser on each node. Each decodes
// the other two (their media crosses between nodes over the relay), the API of any node
// lists everyone with their node, when one node is killed (kill -9) its participant comes
// back through another node and is seen and seeing again, and when a node is drained its
// participant moves to another node without a freeze and the node exits. Every node
// announces the same active speaker.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, freePort, launchBrowser, microphone, startRedis, startServer, sleep, tileNames, waitFor, waitForMedia, watchTile } from '../lib/harness.js';

const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
let redis;
let nodes = [];
let s;
const pages = {};

before(async () => {
  redis = await startRedis('cluster');
  const port = await freePort();
  for (const [i, host] of HOSTS.entries()) {
    nodes.push(
      await startServer({ name: `cluster-node${i + 1}`, host, port, rtcPort: 41700, workers: 1, args: ['--redis', redis.url] }),
    );
  }
  s = new Session('cluster');
  s.server = nodes[0];
  s.browser = await launchBrowser();
});

after(async () => {
  if (s) {
    s.server = null;
    await s.close();
  }
  for (const n of nodes) await n.stop();
  await redis?.stop();
});

/** The room as node `n`'s API shows it. */
const room = async (n) => (await nodes[n].getJson('/api/rooms/cl')).body;

test('three nodes see each other', () =>
  s.run(async () => {
    let seen;
    await waitFor(
      async () => {
        seen = (await nodes[0].getJson('/api/nodes')).body;
        return seen.nodes?.length === 3;
      },
      { timeout: 15000, message: 'three live nodes in GET /api/nodes', describe: () => JSON.stringify(seen) },
    );
    assert.deepEqual(
      seen.nodes.map((n) => n.url).sort(),
      nodes.map((n) => n.url).sort(),
    );
  }));

test('a participant on each of three nodes decodes the other two', () =>
  s.run(async () => {
    for (const [i, name] of ['a', 'b', 'c'].entries()) {
      // Each microphone a steady tone, for the speaker test below.
      pages[name] = await s.open(`${nodes[i].url}/?room=cl&name=${name}`, name, { setup: (page) => page.addInitScript(microphone(0.5)) });
    }
    for (const name of ['a', 'b', 'c']) {
      await waitForMedia(pages[name], { video: 2, audio: 2, timeout: 45000 });
    }
    // Any node lists the whole room, each participant with its node.
    for (const n of [0, 1, 2]) {
      let r;
      await waitFor(
        async () => {
          r = await room(n);
          return r?.participants?.length === 3;
        },
        { timeout: 10000, message: `node ${n + 1} to list 3 participants`, describe: () => JSON.stringify(r) },
      );
      const byName = Object.fromEntries(r.participants.map((p) => [p.name, p.node]));
      assert.equal(new Set(Object.values(byName)).size, 3, `three nodes: ${JSON.stringify(byName)}`);
    }
  }));

/** The names whose tiles are outlined as speaking on `page` ('local' for our own). */
const speaking = (page) =>
  page.$$eval('#grid .tile.speaking', (els) => els.map((e) => (e.classList.contains('local') ? 'local' : e.dataset.name)));

test('every node announces the same active speaker, wherever the speaker is', () =>
  s.run(async () => {
    // a speaks (b and c mute): the pages on nodes 2 and 3 outline a, a's page itself.
    await pages.b.click('#mute-audio');
    await pages.c.click('#mute-audio');
    await pages.b.waitForSelector('.tile.speaking[data-name="a"]', { timeout: 10000 });
    await pages.c.waitForSelector('.tile.speaking[data-name="a"]', { timeout: 10000 });
    await pages.a.waitForSelector('.tile.local.speaking', { timeout: 10000 });
    // c speaks, a mutes: the highlight moves to c on every node.
    await pages.c.click('#mute-audio');
    await pages.a.click('#mute-audio');
    await pages.a.waitForSelector('.tile.speaking[data-name="c"]', { timeout: 10000 });
    await pages.b.waitForSelector('.tile.speaking[data-name="c"]', { timeout: 10000 });
    await pages.c.waitForSelector('.tile.local.speaking', { timeout: 10000 });
    for (const name of ['a', 'b']) assert.deepEqual(await speaking(pages[name]), ['c'], `${name}'s page`);
    // Everyone's microphone on again for what follows.
    await pages.a.click('#mute-audio');
    await pages.b.click('#mute-audio');
  }));

test('when a node is killed, its participant comes back through another node', () =>
  s.run(async () => {
    const killed = (await nodes[2].getJson('/api/nodes')).body.self;
    const killedAt = Date.now();
    await nodes[2].kill();
    // c's page reconnects to a live node and publishes again; a and b decode it (and only
    // it: the dead node's participant is gone), and c decodes a and b.
    let r;
    await waitFor(
      async () => {
        r = await room(0);
        const cs = (r?.participants ?? []).filter((p) => p.name === 'c');
        // The new c only: the dead node's c is gone once its lease and relay are.
        return r?.participants?.length === 3 && cs.length === 1 && cs[0].node !== killed && cs[0].tracks.length === 2;
      },
      { timeout: 30000, message: 'c back in the room through a live node', describe: () => JSON.stringify(r) },
    );
    for (const name of ['a', 'b', 'c']) {
      await waitForMedia(pages[name], { video: 2, audio: 2, timeout: 30000, minFrames: 10 });
    }
    const back = Date.now() - killedAt;
    console.log(`c was back and everyone decoding ${back} ms after kill -9 of its node`);
    const c = r.participants.find((p) => p.name === 'c');
    assert.notEqual(c.node, killed, `c is on a live node: ${JSON.stringify(c)}`);
  }));

test('a drained node moves its participant to another node without a freeze, then exits', () =>
  s.run(async () => {
    // b is on node 2; draining it (asked through node 1's API) moves b to node 1.
    const drained = (await nodes[1].getJson('/api/nodes')).body.self;
    // For comparison: how smoothly b sees a, and a sees b, with nothing moving, on this
    // machine now.
    const [still, stillOfB] = await Promise.all([watchTile(pages.b, 'a', 3000), watchTile(pages.a, 'b', 3000)]);
    const seen = watchTile(pages.b, 'a', 12000);
    const seenOfB = watchTile(pages.a, 'b', 12000);
    await sleep(1000);
    const res = await nodes[0].fetch(`/api/nodes/${drained}/drain`, { method: 'POST' });
    assert.equal(res.status, 202, await res.text());
    // The node exits once b has left it. Meanwhile a shows b as one tile (the new session
    // says whom it replaces), never two.
    let tilesOfB = 0;
    await waitFor(
      async () => {
        tilesOfB = Math.max(tilesOfB, (await tileNames(pages.a)).filter((n) => n === 'b').length);
        return nodes[1].exited !== null;
      },
      { timeout: 20000, message: 'the drained node to exit' },
    );
    assert.equal(nodes[1].exited.code, 0, `clean exit: ${JSON.stringify(nodes[1].exited)}`);
    assert.equal(tilesOfB, 1, 'a showed b in one tile throughout');
    // b kept seeing a across the move, frame after frame, and a kept seeing b.
    const [watch, watchOfB] = await Promise.all([seen, seenOfB]);
    console.log(`b's view of a: ${JSON.stringify(still)} before, ${JSON.stringify(watch)} across the move`);
    console.log(`a's view of b: ${JSON.stringify(stillOfB)} before, ${JSON.stringify(watchOfB)} across the move`);
    assert.ok(watch.frames > 100, `b's view of a kept playing: ${JSON.stringify(watch)}`);
    assert.ok(watchOfB.frames > 100, `a's view of b kept playing: ${JSON.stringify(watchOfB)}`);
    // A freeze is a gap well beyond this machine's own jitter of the moment (a loaded
    // two-core machine shows 100-250 ms gaps with nothing moving).
    const bound = Math.max(500, 4 * still.longestGapMs);
    assert.ok(watch.longestGapMs < bound, `no freeze while b moved (${bound} ms at most): ${JSON.stringify(watch)}`);
    const boundOfB = Math.max(500, 4 * stillOfB.longestGapMs);
    assert.ok(watchOfB.longestGapMs < boundOfB, `no freeze of b on a's page (${boundOfB} ms at most): ${JSON.stringify(watchOfB)}`);
    // b is on node 1 now, and everyone decodes everyone.
    let r;
    await waitFor(
      async () => {
        r = await room(0);
        const bs = (r?.participants ?? []).filter((p) => p.name === 'b');
        return r?.participants?.length === 3 && bs.length === 1 && bs[0].node !== drained && bs[0].tracks.length === 2;
      },
      { timeout: 15000, message: 'b in the room through node 1 alone', describe: () => JSON.stringify(r) },
    );
    for (const name of ['a', 'b', 'c']) {
      await waitForMedia(pages[name], { video: 2, audio: 2, timeout: 20000, minFrames: 10 });
    }
  }));
