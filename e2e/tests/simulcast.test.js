// A camera published in three simulcast layers (the SDK's default); viewers pick their layer
// with the demo page's ?quality= and switch live with room.setVideoQuality.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Session, inboundStats, mainVideo, sleep, switchQuality, waitFor, waitForMedia } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  // With the downlink estimator (off by default: docs/benchmarks.md, "What the estimator costs").
  s = await Session.start({ name: 'simulcast', rtcPort: 41400, workers: 1, args: ['--bandwidth-estimation', 'true'] });
});
after(() => s?.close());

/** What the server says of participant `name`'s downlink (estimate and layers). */
const downlink = async (name) => (await s.server.getJson('/api/rooms/sc')).body.participants.find((p) => p.name === name)?.downlink;


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
        last = await mainVideo(pages.high);
        return last.frameWidth >= 1280;
      },
      { timeout: 60000, interval: 500, message: 'the high viewer to decode 1280 wide', describe: () => JSON.stringify(last) },
    );

    // The low viewer decodes the 320×180 layer all along.
    for (let i = 0; i < 10; i++) {
      const v = await mainVideo(pages.low);
      assert.ok(v.frameWidth > 0 && v.frameWidth <= 320, `low viewer decodes ${v.frameWidth} wide`);
      await sleep(200);
    }
  }));

test('a viewer switched from low to high reaches 1280 within 3 s and never freezes 500 ms', () =>
  s.run(async () => {
    console.log(`before the switch, low's downlink: ${JSON.stringify(await downlink('low'))}`);
    const { reachedAt, samples, frozenMs } = await switchQuality(pages.low, 'high', { reach: (w) => w >= 1280 });
    const shown = JSON.stringify(samples);
    console.log(`after the switch, low's downlink: ${JSON.stringify(await downlink('low'))}`);
    console.log(`switch: 1280 wide after ${reachedAt} ms, ${samples.at(-1).frames - samples[0].frames} frames decoded in 5 s`);
    assert.ok(reachedAt !== null && reachedAt <= 3000, `1280 wide after ${reachedAt} ms: ${shown}`);
    // framesDecoded keeps growing: never 500 ms without a new frame.
    assert.ok(frozenMs < 500, `${frozenMs} ms without a new frame: ${shown}`);
  }));

/** The local UDP port of the page's selected ICE candidate pairs. */
function localPorts(page) {
  return page.evaluate(async () => {
    const ports = [];
    for (const pc of window.__sfumatoPCs || []) {
      if (pc.connectionState !== 'connected') continue;
      const report = await pc.getStats();
      report.forEach((st) => {
        if (st.type === 'candidate-pair' && st.nominated && st.state === 'succeeded') {
          const local = report.get(st.localCandidateId);
          if (local?.port) ports.push(local.port);
        }
      });
    }
    return [...new Set(ports)];
  });
}

/** Runs `tc` (inside the test's own network namespace: only its loopback is shaped). */
function tc(args) {
  execFileSync('tc', args, { stdio: 'pipe' });
}

test('a viewer whose downlink is capped gets a lower layer instead of losing packets', { skip: process.env.SFUMATO_E2E_NO_NETNS ? 'tc would shape the host loopback' : false }, () =>
  s.run(async () => {
    const ports = await localPorts(pages.high);
    assert.equal(ports.length, 1, `the viewer has one connected peer connection: ${ports}`);
    // 600 kbit/s towards the viewer's port: room for the middle layer and audio, not the top.
    // htb: the viewer's port in a 600 kbit/s class with a 30-packet queue (~0.4 s), the rest
    // unshaped. (This kernel has htb, tbf, pfifo and u32; not prio or netem.)
    tc(['qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '20']);
    try {
      tc(['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '600kbit', 'ceil', '600kbit']);
      tc(['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:20', 'htb', 'rate', '10gbit']);
      tc(['qdisc', 'add', 'dev', 'lo', 'parent', '1:10', 'handle', '10:', 'pfifo', 'limit', '30']);
      tc(['filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'dport', String(ports[0]), '0xffff', 'flowid', '1:10']);
      let last;
      await waitFor(
        async () => {
          last = await downlink('high');
          const layer = Object.values(last?.layers ?? {})[0];
          return last && last.estimate_bps < 700_000 && layer !== null && layer <= 1;
        },
        { timeout: 30000, interval: 500, message: 'the capped viewer to be allocated a lower layer', describe: () => JSON.stringify(last) },
      );
      // The switch waits for a keyframe of the lower layer, which the publisher is asked for;
      // once the viewer decodes it (at most 640 wide), it loses (almost) nothing.
      let shown;
      await waitFor(
        async () => {
          shown = { video: await mainVideo(pages.high), downlink: await downlink('high') };
          return shown.video.frameWidth > 0 && shown.video.frameWidth <= 640;
        },
        { timeout: 20000, interval: 500, message: 'the capped viewer to decode the lower layer', describe: () => JSON.stringify(shown) },
      );
      await sleep(1000);
      const a = (await inboundStats(pages.high)).filter((x) => x.kind === 'video');
      await sleep(5000);
      const b = (await inboundStats(pages.high)).filter((x) => x.kind === 'video');
      const sum = (list, f) => list.reduce((n, x) => n + (x[f] ?? 0), 0);
      const received = sum(b, 'packetsReceived') - sum(a, 'packetsReceived');
      const lost = sum(b, 'packetsLost') - sum(a, 'packetsLost');
      const frames = sum(b, 'framesDecoded') - sum(a, 'framesDecoded');
      const kbps = Math.round(((sum(b, 'bytesReceived') - sum(a, 'bytesReceived')) * 8) / 5 / 1000);
      const v = await mainVideo(pages.high);
      console.log(`capped viewer: ${JSON.stringify(await downlink('high'))}, ${v.frameWidth} wide, ${frames} frames, ${received} packets, ${lost} lost, ${kbps} kbit/s of video in 5 s`);
      console.log(`uncapped viewer: ${JSON.stringify(await downlink('low'))}`);
      assert.ok(v.frameWidth > 0 && v.frameWidth <= 640, `decodes ${v.frameWidth} wide`);
      assert.ok(frames >= 50, `keeps decoding: ${frames} frames in 5 s`);
      // Not zero every time: str0m probes towards the top layers' rate with padding on the
      // video stream, and a probe that overflows the capped queue loses padding packets,
      // which the browser counts (0 to 2.3% over 5 s in eight runs, docs/benchmarks.md).
      assert.ok(lost <= Math.max(2, received * 0.03), `${lost} of ${received} packets lost`);
      // The other viewer is not affected.
      assert.ok((await mainVideo(pages.low)).frameWidth >= 1280, 'the uncapped viewer keeps the top layer');
    } finally {
      tc(['qdisc', 'del', 'dev', 'lo', 'root']);
    }
  }));
