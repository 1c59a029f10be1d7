// The demo page without ?quality=: each remote video's element chooses its simulcast layer
// (SDK observeVideo): by rendered width, and nothing at all while hidden.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, inboundStats, mainVideo, sleep, waitFor, waitForMedia } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'adaptive', rtcPort: 41600, workers: 1 });
});
after(() => s?.close());


test("without ?quality= each video's size and visibility choose its layer", () =>
  s.run(async () => {
    pages.pub = await s.open('/?room=ad&name=pub', 'pub');
    pages.auto = await s.open('/?room=ad&name=auto&publish=0', 'auto');
    await waitForMedia(pages.auto, { video: 1, timeout: 45000 });
    const width = async () => (await mainVideo(pages.auto)).frameWidth;
    const tileWidth = () => pages.auto.$eval('.tile[data-name="pub"] video', (v) => Math.round(v.getBoundingClientRect().width));
    // A third of a 960 px page: the low layer.
    const small = await tileWidth();
    assert.ok(small <= 360, `tile ${small} px wide`);
    // (The low layer may start smaller while the publisher's encoder ramps up.)
    let w;
    await waitFor(
      async () => {
        w = await width();
        return w > 0 && w <= 320;
      },
      { timeout: 10000, message: `at most 320 wide in a ${small} px tile`, describe: () => String(w) },
    );

    // One tile per row: the top layer.
    await pages.auto.evaluate(() => {
      document.getElementById('grid').style.gridTemplateColumns = '1fr';
    });
    const big = await tileWidth();
    let last;
    await waitFor(
      async () => {
        last = await width();
        return last >= 1280;
      },
      { timeout: 20000, message: `1280 wide in a ${big} px tile`, describe: () => String(last) },
    );

    // Hidden: no packets at all.
    await pages.auto.evaluate(() => {
      document.querySelector('.tile[data-name="pub"]').style.display = 'none';
    });
    const layerOf = async () => {
      const p = (await s.server.getJson('/api/rooms/ad')).body.participants.find((x) => x.name === 'auto');
      return Object.values(p?.downlink?.layers ?? {})[0];
    };
    await waitFor(async () => (await layerOf()) === null, { timeout: 10000, message: 'the hidden video turned off on the server', describe: () => '' });
    // What was on its way when the server turned it off arrives first (on a loaded machine,
    // a good part of a second later): wait for a quiet second, then nothing more comes.
    const packets = (list) => list.filter((x) => x.kind === 'video').reduce((n, x) => n + x.packetsReceived, 0);
    let before = packets(await inboundStats(pages.auto));
    let quiet = null;
    await waitFor(
      async () => {
        await sleep(1000);
        const now = packets(await inboundStats(pages.auto));
        quiet = now - before;
        before = now;
        return quiet === 0;
      },
      { timeout: 15000, interval: 0, message: 'a second without video packets once hidden', describe: () => `${quiet} in the last second` },
    );
    const a = await inboundStats(pages.auto);
    await sleep(2000);
    const b = await inboundStats(pages.auto);
    assert.ok(packets(b) - packets(a) <= 2, `video packets while hidden: ${packets(b) - packets(a)}`);
  }));

/** `active` of each simulcast encoding of the page's published video, lowest first. */
const encodings = (page) =>
  page.evaluate(() => {
    const pc = (window.__sfumatoPCs || []).find((p) => p.getSenders().some((s) => s.track?.kind === 'video'));
    const sender = pc?.getSenders().find((s) => s.track?.kind === 'video');
    return (sender?.getParameters().encodings ?? []).map((e) => e.active);
  });

test('the publisher encodes only the layers someone receives', () =>
  s.run(async () => {
    // From the first test: the only viewer has the video hidden.
    const expect = async (want, why) => {
      let got;
      await waitFor(
        async () => {
          got = await encodings(pages.pub);
          return JSON.stringify(got) === JSON.stringify(want);
        },
        { timeout: 10000, message: `publisher encodings ${JSON.stringify(want)} (${why})`, describe: () => JSON.stringify(got) },
      );
    };
    await expect([false, false, false], 'the only viewer hides the video');
    await pages.auto.evaluate(() => {
      document.querySelector('.tile[data-name="pub"]').style.display = '';
      document.getElementById('grid').style.gridTemplateColumns = '';
    });
    await expect([true, false, false], 'a small tile takes the low layer');
    await waitForMedia(pages.auto, { video: 1, timeout: 10000, minFrames: 5 });
    await pages.auto.evaluate(() => {
      document.getElementById('grid').style.gridTemplateColumns = '1fr';
    });
    // Every layer up to the highest one needed stays on (what a switch or the allocator
    // steps down to without waiting for the encoder).
    await expect([true, true, true], 'a full-row tile takes the top layer');
    await waitFor(async () => (await mainVideo(pages.auto)).frameWidth >= 1280, { timeout: 20000, message: 'the viewer decodes 1280 wide', describe: () => '' });
  }));

test('a single-encoding (VP9 SVC) publisher stops encoding while nobody watches', () =>
  s.run(async () => {
    const pub = await s.open('/?room=one&name=pub&codec=vp9', 'svc-pub');
    const viewer = await s.open('/?room=one&name=viewer&publish=0&quality=low', 'svc-viewer');
    await waitForMedia(viewer, { video: 1, timeout: 30000 });
    const expect = async (want, why) => {
      let got;
      await waitFor(
        async () => {
          got = await encodings(pub);
          return JSON.stringify(got) === JSON.stringify(want);
        },
        { timeout: 10000, message: `publisher encodings ${JSON.stringify(want)} (${why})`, describe: () => JSON.stringify(got) },
      );
    };
    await expect([true], 'a viewer watches');
    const quality = (q) =>
      viewer.evaluate((q) => {
        const room = window.sfumatoRoom;
        for (const sub of room.subscriptions) if (sub.kind === 'video') room.setVideoQuality(sub, q);
      }, q);
    await quality('off');
    await expect([false], 'the only viewer turned the video off');
    await quality('low');
    await expect([true], 'the viewer wants it again');
    await waitForMedia(viewer, { video: 1, timeout: 15000, minFrames: 10 });
  }));
