// The dominant speaker: the server reads the audio-level header extension of every
// microphone, picks who speaks with hysteresis, announces it (active_speaker) and the demo
// page outlines that tile. Each page's microphone is a steady tone (Chromium's fake device
// only beeps briefly); muting it makes the browser send silence.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, microphone, waitForMedia } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'speaker', rtcPort: 41500, workers: 2, placement: 'spread' });
});
after(() => s?.close());

const open = (name) => s.open(`/?room=sp&name=${name}`, name, { setup: (page) => page.addInitScript(microphone(0.5)) });

/** The names whose tiles are outlined as speaking on `page` ('local' for our own). */
const speaking = (page) =>
  page.$$eval('#grid .tile.speaking', (els) => els.map((e) => (e.classList.contains('local') ? 'local' : e.dataset.name)));

test('the one who speaks is announced and outlined, and the highlight follows the voice', () =>
  s.run(async () => {
    pages.a = await open('a');
    pages.b = await open('b');
    await Promise.all([pages.a, pages.b].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 45000 })));

    // b mutes: a alone speaks.
    await pages.b.click('#mute-audio');
    await pages.b.waitForSelector('.tile.speaking[data-name="a"]', { timeout: 10000 });
    await pages.a.waitForSelector('.tile.local.speaking', { timeout: 10000 });
    assert.deepEqual(await speaking(pages.b), ['a']);

    // b speaks, a mutes: the highlight moves to b on both pages.
    await pages.b.click('#mute-audio');
    await pages.a.click('#mute-audio');
    await pages.a.waitForSelector('.tile.speaking[data-name="b"]', { timeout: 10000 });
    await pages.b.waitForSelector('.tile.local.speaking', { timeout: 10000 });
    assert.deepEqual(await speaking(pages.a), ['b']);
    assert.equal(await pages.a.evaluate(() => window.sfumatoRoom.activeSpeaker), await pages.b.evaluate(() => window.sfumatoRoom.localParticipant.id));
  }));
