// A camera published in three simulcast layers (the SDK's default); viewers pick their layer
// with the demo page's ?quality= and switch live with room.setVideoQuality.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, inboundStats, sleep, waitFor, waitForMedia } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'simulcast', rtcPort: 41400, workers: 1 });
});
after(() => s?.close());

/** The decoding video stream of a page (the one with the most frames). */
async function video(page) {
  const v = (await inboundStats(page)).filter((x) => x.kind === 'video');
  v.sort((a, b) => b.framesDecoded - a.framesDecoded);
  return v[0] ?? { framesDecoded: 0, frameWidth: 0 };
}

test('a viewer with quality=low decodes 320 wide while one with quality=high decodes 1280', () =>
  s.run(async () => {
    pages.pub = await s.open('/?room=sc&name=pub', 'pub');
    pages.low = await s.open('/?room=sc&name=low&publish=0&quality=low', 'low');
    pages.high = await s.open('/?room=sc&name=high&publish=0&quality=high', 'high');
    await waitForMedia(pages.low, { video: 1, timeout: 45000 });
    await waitForMedia(pages.high, { video: 1, timeout: 45000 });

    // The top layer flows once the publisher's bandwidth estimate allows ~2 Mbps in all.
    let last;
    await waitFor(
      async () => {
        last = await video(pages.high);
        return last.frameWidth >= 1280;
      },
      { timeout: 60000, interval: 500, message: 'the high viewer to decode 1280 wide', describe: () => JSON.stringify(last) },
    );

    // The low viewer decodes the 320×180 layer all along.
    for (let i = 0; i < 10; i++) {
      const v = await video(pages.low);
      assert.ok(v.frameWidth > 0 && v.frameWidth <= 320, `low viewer decodes ${v.frameWidth} wide`);
      await sleep(200);
    }
  }));

test('a viewer switched from low to high reaches 1280 within 3 s and never freezes 500 ms', () =>
  s.run(async () => {
    const start = Date.now();
    await pages.low.evaluate(() => {
      const room = window.sfumatoRoom;
      for (const sub of room.subscriptions) if (sub.kind === 'video') room.setVideoQuality(sub, 'high');
    });
    const samples = [];
    let reachedAt = null;
    while (Date.now() - start < 5000) {
      const v = await video(pages.low);
      samples.push({ t: Date.now() - start, frames: v.framesDecoded, width: v.frameWidth });
      if (reachedAt === null && v.frameWidth >= 1280) reachedAt = Date.now() - start;
      await sleep(100);
    }
    const shown = JSON.stringify(samples);
    console.log(`switch: 1280 wide after ${reachedAt} ms, ${samples.at(-1).frames - samples[0].frames} frames decoded in 5 s`);
    assert.ok(reachedAt !== null && reachedAt <= 3000, `1280 wide after ${reachedAt} ms: ${shown}`);
    // framesDecoded keeps growing: no 500 ms window without a new frame.
    for (let i = 0, j = 0; i < samples.length; i++) {
      while (samples[i].t - samples[j].t > 500) j++;
      if (samples[i].t - samples[j].t >= 450) {
        assert.ok(samples[i].frames > samples[j].frames, `no frame between ${samples[j].t} and ${samples[i].t} ms: ${shown}`);
      }
    }
  }));
