// Video codecs other than the default VP8 simulcast. VP9 and AV1 as one scalable stream
// (SVC, L3T3_KEY: the demo page's ?codec=vp9|av1; AV1 with the dependency descriptor): each
// viewer gets the spatial layers up to its quality, and switches live. H264 in simulcast
// (?codec=h264): the same layer choices, with nothing of the payload to rewrite.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, mainVideo, rtpStat, sleep, switchQuality, waitFor, waitForMedia } from '../lib/harness.js';

let s;

before(async () => {
  s = await Session.start({ name: 'codecs', rtcPort: 41800, workers: 1 });
});
after(() => s?.close());

/** The codec of the page's decoded video. */
const videoCodec = async (page) => (await rtpStat(page, 'inbound-rtp', 'video'))?.codec;

/** The publisher's outbound video: codec, scalability mode and sent width. */
const outbound = async (page) => {
  const st = await rtpStat(page, 'outbound-rtp', 'video');
  return st && { codec: st.codec, mode: st.scalabilityMode, width: st.frameWidth };
};

/**
 * A publisher sending `codec` and two viewers asking for `low` and `high`: checks what is
 * sent and decoded, that the low viewer receives a fraction of the bytes with nothing lost,
 * and returns the pages.
 */
async function viewers(codec, { mode }) {
  const pub = await s.open(`/?room=${codec}&name=pub&codec=${codec}`, `${codec}-pub`);
  const low = await s.open(`/?room=${codec}&name=low&publish=0&quality=low`, `${codec}-low`);
  const high = await s.open(`/?room=${codec}&name=high&publish=0&quality=high`, `${codec}-high`);
  await waitForMedia(low, { video: 1, timeout: 45000 });
  await waitForMedia(high, { video: 1, timeout: 45000 });

  const mime = `video/${codec.toUpperCase()}`;
  const out = await outbound(pub);
  console.log(`${codec}: publisher sends ${JSON.stringify(out)}`);
  assert.equal(out?.codec, mime);
  if (mode) assert.equal(out?.mode, mode);
  assert.equal(await videoCodec(high), mime);

  let last;
  await waitFor(
    async () => {
      last = await mainVideo(high);
      return last.frameWidth >= 1280;
    },
    { timeout: 60000, interval: 500, message: 'the high viewer to decode 1280 wide', describe: () => JSON.stringify(last) },
  );
  for (let i = 0; i < 10; i++) {
    const v = await mainVideo(low);
    assert.ok(v.frameWidth > 0 && v.frameWidth <= 320, `low viewer decodes ${v.frameWidth} wide`);
    await sleep(200);
  }
  // Only the lowest layer reaches the low viewer: a fraction of the bytes.
  const bytes = async (page) => (await mainVideo(page)).bytesReceived;
  const [l0, h0] = [await bytes(low), await bytes(high)];
  await sleep(3000);
  const [l1, h1] = [await bytes(low), await bytes(high)];
  const lowBps = ((l1 - l0) * 8) / 3;
  const highBps = ((h1 - h0) * 8) / 3;
  console.log(`${codec}: received low ${Math.round(lowBps / 1000)} kbit/s, high ${Math.round(highBps / 1000)} kbit/s`);
  assert.ok(lowBps < highBps / 2, `the low viewer receives ${lowBps} bit/s against ${highBps}`);
  // Dropped layers leave no hole in the low viewer's sequence numbers: nothing lost.
  const lost = (await mainVideo(low)).packetsLost;
  assert.equal(lost, 0, `the low viewer counts ${lost} packets lost`);
  return { pub, low, high };
}

/** Switches `page` from low to high and back: 1280 wide within 3 s, 320 again, never a
 * 500 ms stretch without a new frame. */
async function switchUpAndDown(codec, page) {
  const up = await switchQuality(page, 'high', { reach: (w) => w >= 1280 });
  console.log(`${codec}: switch up, 1280 wide after ${up.reachedAt} ms`);
  assert.ok(up.reachedAt !== null && up.reachedAt <= 3000, `1280 wide after ${up.reachedAt} ms: ${JSON.stringify(up.samples)}`);
  assert.ok(up.frozenMs < 500, `${up.frozenMs} ms without a new frame: ${JSON.stringify(up.samples)}`);
  const down = await switchQuality(page, 'low', { reach: (w) => w > 0 && w <= 320, ms: 3000 });
  console.log(`${codec}: switch down, 320 wide after ${down.reachedAt} ms`);
  assert.ok(down.reachedAt !== null, `back to 320 wide: ${JSON.stringify(down.samples)}`);
  assert.ok(down.frozenMs < 500, `${down.frozenMs} ms without a new frame going down: ${JSON.stringify(down.samples)}`);
  assert.equal((await mainVideo(page)).packetsLost, 0, 'no packet lost across the switches');
}

for (const [codec, mode, what] of [
  ['vp9', 'L3T3_KEY', 'VP9 SVC'],
  ['av1', 'L3T3_KEY', 'AV1 SVC (dependency descriptor)'],
  ['h264', null, 'H264 simulcast'],
]) {
  test(`${what}: low viewer decodes 320 wide, high 1280, and a live switch never freezes`, () =>
    s.run(async () => {
      const { pub, low, high } = await viewers(codec, { mode });
      await switchUpAndDown(codec, low);
      for (const page of [pub, low, high]) await page.context().close();
    }));
}
