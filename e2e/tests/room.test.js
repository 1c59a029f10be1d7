// Three browsers in one room, spread over two workers: everyone decodes everyone else.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, sleep, waitFor, waitForMedia, tileNames } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'room', rtcPort: 41000, workers: 2, placement: 'spread' });
});
after(() => s?.close());

test('three participants on two workers decode each other', () =>
  s.run(async () => {
    for (const name of ['a', 'b', 'c']) pages[name] = await s.open(`/?room=t&name=${name}`, name);

    await Promise.all(Object.values(pages).map((p) => waitForMedia(p, { video: 2, audio: 2, timeout: 45000 })));

    const { status, body } = await s.server.getJson('/api/rooms/t');
    assert.equal(status, 200, `GET /api/rooms/t: ${JSON.stringify(body)}`);
    assert.deepEqual(body.participants.map((p) => p.name).sort(), ['a', 'b', 'c']);
    const workers = new Set(body.participants.map((p) => p.worker));
    assert.equal(workers.size, 2, `participants should be spread over both workers: ${JSON.stringify(body)}`);
    for (const p of body.participants) {
      assert.deepEqual(p.tracks.map((t) => t.kind).sort(), ['audio', 'video'], `tracks of ${p.name}`);
    }

    for (const [name, page] of Object.entries(pages)) {
      assert.deepEqual(await tileNames(page), ['a', 'b', 'c'].filter((n) => n !== name), `tiles on ${name}'s page`);
    }
  }));

test('muting the microphone is seen by the server and the others', () =>
  s.run(async () => {
    await pages.a.click('#mute-audio');
    await waitFor(
      async () => {
        const { body } = await s.server.getJson('/api/rooms/t');
        const a = body.participants.find((p) => p.name === 'a');
        return a?.tracks.find((t) => t.kind === 'audio')?.muted === true;
      },
      { message: "a's audio track muted in GET /api/rooms/t" },
    );
    await pages.b.waitForSelector('.tile[data-name="a"].audio-muted', { timeout: 10000 });

    await pages.a.click('#mute-audio');
    await pages.b.waitForSelector('.tile[data-name="a"]:not(.audio-muted)', { timeout: 10000 });
    // Video keeps flowing all along.
    await waitForMedia(pages.b, { video: 2 });
  }));

test('someone alone in a room for over 30 s still receives who joins next', () =>
  s.run(async () => {
    // Alone, the first participant's receiving connection has nothing to negotiate; it
    // used to be closed as an ICE timeout after 30 s, and who joined later was never seen.
    pages.early = await s.open('/?room=alone&name=early', 'early');
    await sleep(35000);
    pages.late = await s.open('/?room=alone&name=late', 'late');
    await waitForMedia(pages.early, { video: 1, audio: 1, timeout: 30000 });
    await waitForMedia(pages.late, { video: 1, audio: 1, timeout: 30000 });
  }));
