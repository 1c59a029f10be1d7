// The demo page without ?quality=: each remote video's element chooses its simulcast layer
// (SDK observeVideo): by rendered width, and nothing at all while hidden.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, inboundStats, sleep, waitFor, waitForMedia } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'adaptive', rtcPort: 41600, workers: 1 });
});
after(() => s?.close());

/** The decoding video stream of a page (the one with the most frames). */
async function video(page) {
  const v = (await inboundStats(page)).filter((x) => x.kind === 'video');
  v.sort((a, b) => b.framesDecoded - a.framesDecoded);
  return v[0] ?? { framesDecoded: 0, frameWidth: 0 };
}

test("without ?quality= each video's size and visibility choose its layer", () =>
  s.run(async () => {
    pages.pub = await s.open('/?room=ad&name=pub', 'pub');
    pages.auto = await s.open('/?room=ad&name=auto&publish=0', 'auto');
    await waitForMedia(pages.auto, { video: 1, timeout: 45000 });
    const width = async () => (await video(pages.auto)).frameWidth;
    const tileWidth = () => pages.auto.$eval('.tile[data-name="pub"] video', (v) => Math.round(v.getBoundingClientRect().width));
    // A third of a 960 px page: the low layer.
    const small = await tileWidth();
    assert.ok(small <= 360, `tile ${small} px wide`);
    await waitFor(async () => (await width()) === 320, { timeout: 10000, message: `320 wide in a ${small} px tile`, describe: () => '' });

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
      { timeout: 10000, message: `1280 wide in a ${big} px tile`, describe: () => String(last) },
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
    await sleep(500);
    const a = await inboundStats(pages.auto);
    await sleep(2000);
    const b = await inboundStats(pages.auto);
    const packets = (list) => list.filter((x) => x.kind === 'video').reduce((n, x) => n + x.packetsReceived, 0);
    assert.ok(packets(b) - packets(a) <= 2, `video packets while hidden: ${packets(b) - packets(a)}`);
  }));
