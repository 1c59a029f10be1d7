// Video codecs other than the default VP8 simulcast. VP9 as one scalable stream (SVC,
// L3T3_KEY: the demo page's ?codec=vp9): each viewer gets the spatial layers up to its
// quality, and switches live. H264 in simulcast (?codec=h264): the same layer choices, with
// nothing of the payload to rewrite.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, mainVideo, sleep, switchQuality, waitFor, waitForMedia } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'codecs', rtcPort: 41800, workers: 1 });
});
after(() => s?.close());

/** The codec of the page's decoded video (from its inbound-rtp's codec stats). */
const videoCodec = (page) =>
  page.evaluate(async () => {
    for (const pc of window.__sfumatoPCs || []) {
      if (pc.connectionState !== 'connected') continue;
      const report = await pc.getStats();
      for (const st of report.values()) {
        if (st.type === 'inbound-rtp' && st.kind === 'video' && st.codecId) return report.get(st.codecId)?.mimeType;
      }
    }
    return null;
  });

/** The publisher's outbound video: codec, scalability mode and sent width. */
const outbound = (page) =>
  page.evaluate(async () => {
    for (const pc of window.__sfumatoPCs || []) {
      const report = await pc.getStats();
      for (const st of report.values()) {
        if (st.type === 'outbound-rtp' && st.kind === 'video') {
          return { codec: report.get(st.codecId)?.mimeType, mode: st.scalabilityMode, width: st.frameWidth };
        }
      }
    }
    return null;
  });

test('viewers of one VP9 SVC stream decode 320 wide at quality=low and 1280 at high', () =>
  s.run(async () => {
    pages.pub = await s.open('/?room=svc&name=pub&codec=vp9', 'pub');
    pages.low = await s.open('/?room=svc&name=low&publish=0&quality=low', 'low');
    pages.high = await s.open('/?room=svc&name=high&publish=0&quality=high', 'high');
    await waitForMedia(pages.low, { video: 1, timeout: 45000 });
    await waitForMedia(pages.high, { video: 1, timeout: 45000 });

    const out = await outbound(pages.pub);
    console.log(`publisher sends ${JSON.stringify(out)}`);
    assert.equal(out?.codec, 'video/VP9');
    assert.equal(out?.mode, 'L3T3_KEY');
    assert.equal(await videoCodec(pages.high), 'video/VP9');

    let last;
    await waitFor(
      async () => {
        last = await mainVideo(pages.high);
        return last.frameWidth >= 1280;
      },
      { timeout: 60000, interval: 500, message: 'the high viewer to decode 1280 wide', describe: () => JSON.stringify(last) },
    );
    for (let i = 0; i < 10; i++) {
      const v = await mainVideo(pages.low);
      assert.ok(v.frameWidth > 0 && v.frameWidth <= 320, `low viewer decodes ${v.frameWidth} wide`);
      await sleep(200);
    }
    // Only the lowest spatial layer reaches the low viewer: a fraction of the bytes.
    const bytes = async (page) => (await mainVideo(page)).bytesReceived;
    const [l0, h0] = [await bytes(pages.low), await bytes(pages.high)];
    await sleep(3000);
    const [l1, h1] = [await bytes(pages.low), await bytes(pages.high)];
    const low = ((l1 - l0) * 8) / 3, high = ((h1 - h0) * 8) / 3;
    console.log(`received: low ${Math.round(low / 1000)} kbit/s, high ${Math.round(high / 1000)} kbit/s`);
    assert.ok(low < high / 2, `the low viewer receives ${low} bit/s against ${high}`);
    // The dropped layers leave no hole in the low viewer's sequence numbers: nothing lost.
    const lost = (await mainVideo(pages.low)).packetsLost;
    assert.equal(lost, 0, `the low viewer counts ${lost} packets lost`);
  }));

test('a VP9 SVC viewer switched from low to high reaches 1280 within 3 s and never freezes 500 ms', () =>
  s.run(async () => {
    const { reachedAt, samples, frozenMs } = await switchQuality(pages.low, 'high', { reach: (w) => w >= 1280 });
    const shown = JSON.stringify(samples);
    console.log(`SVC switch: 1280 wide after ${reachedAt} ms`);
    assert.ok(reachedAt !== null && reachedAt <= 3000, `1280 wide after ${reachedAt} ms: ${shown}`);
    assert.ok(frozenMs < 500, `${frozenMs} ms without a new frame: ${shown}`);
    // And back down, at the next picture.
    const down = await switchQuality(pages.low, 'low', { reach: (w) => w > 0 && w <= 320, ms: 3000 });
    assert.ok(down.reachedAt !== null, `back to 320 wide: ${JSON.stringify(down.samples)}`);
    assert.ok(down.frozenMs < 500, `${down.frozenMs} ms without a new frame going down: ${JSON.stringify(down.samples)}`);
  }));

test('H264 simulcast: low and high viewers, and a live switch up with no freeze', () =>
  s.run(async () => {
    const pub = await s.open('/?room=h264&name=pub&codec=h264', 'h264-pub');
    const low = await s.open('/?room=h264&name=low&publish=0&quality=low', 'h264-low');
    const high = await s.open('/?room=h264&name=high&publish=0&quality=high', 'h264-high');
    await waitForMedia(low, { video: 1, timeout: 45000 });
    await waitForMedia(high, { video: 1, timeout: 45000 });
    assert.equal((await outbound(pub))?.codec, 'video/H264');
    assert.equal(await videoCodec(high), 'video/H264');
    let last;
    await waitFor(
      async () => {
        last = await mainVideo(high);
        return last.frameWidth >= 1280;
      },
      { timeout: 60000, interval: 500, message: 'the high viewer to decode 1280 wide', describe: () => JSON.stringify(last) },
    );
    const v = await mainVideo(low);
    assert.ok(v.frameWidth > 0 && v.frameWidth <= 320, `low viewer decodes ${v.frameWidth} wide`);

    const up = await switchQuality(low, 'high', { reach: (w) => w >= 1280 });
    console.log(`H264 switch: 1280 wide after ${up.reachedAt} ms`);
    assert.ok(up.reachedAt !== null && up.reachedAt <= 3000, `1280 wide after ${up.reachedAt} ms: ${JSON.stringify(up.samples)}`);
    assert.ok(up.frozenMs < 500, `${up.frozenMs} ms without a new frame: ${JSON.stringify(up.samples)}`);
    assert.equal((await mainVideo(low)).packetsLost, 0, 'no packet lost across the switch');
  }));
