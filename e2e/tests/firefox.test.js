// Firefox and Chromium in one room, through the demo page: each decodes the other's camera,
// Firefox's simulcast reaches Chromium in more than one layer, and data messages go both
// ways. Firefox is Debian's firefox-esr over WebDriver BiDi (lib/firefox.js).
//
// Firefox pairs a local candidate with a remote one only when both or neither are loopback,
// and gathers no loopback candidate of its own: it reaches no server that announces
// 127.0.0.1. So this server announces 192.0.2.1, the address run.sh gives the namespace
// (a documentation range, on a veth pair whose two ends stay in the namespace), and listens
// on every address of the namespace (lo and that one, nothing else exists there), so that
// the pages still load from http://127.0.0.1 (a secure context, where getUserMedia exists).
// An open server on a non-loopback address needs --insecure-open.

import assert from 'node:assert/strict';
import os from 'node:os';
import { after, before, test } from 'node:test';
import { Session, expectNoLeaks, mainVideo, tileNames, waitFor, waitForMedia } from '../lib/harness.js';
import { openFirefox } from '../lib/firefox.js';

const VETH_ADDRESS = '192.0.2.1';
const inNamespace =
  !process.env.SFUMATO_E2E_NO_NETNS && Object.values(os.networkInterfaces()).some((list) => list.some((a) => a.address === VETH_ADDRESS));
const skip = inNamespace ? false : `needs run.sh's network namespace (${VETH_ADDRESS} on a veth)`;

let s;
const pages = {};

before(async () => {
  if (skip) return;
  s = await Session.start({
    name: 'firefox',
    rtcPort: 43600,
    workers: 2,
    placement: 'spread',
    listenHost: '0.0.0.0',
    args: ['--announce-ip', VETH_ADDRESS, '--insecure-open'],
  });
});
after(() => s?.close());

/** The id of `name`'s video track, from the server's view of room fx. */
async function videoTrackOf(name) {
  const { body } = await s.server.getJson('/api/rooms/fx');
  return body.participants.find((p) => p.name === name)?.tracks.find((t) => t.kind === 'video')?.id;
}

/** What the tile of `name` on `page` plays: its video's and audio's state, and whether the
 * page asks for a click to unblock sound. */
function tileMedia(page, name) {
  return page.evaluate((name) => {
    const tile = [...document.querySelectorAll('#grid .tile')].find((t) => t.dataset.name === name);
    const video = tile?.querySelector('video');
    const audio = tile?.querySelector('audio');
    return {
      video: video && { paused: video.paused, width: video.videoWidth, time: video.currentTime },
      audio: audio && { paused: audio.paused, time: audio.currentTime },
      unblockShown: !document.getElementById('unblock-audio').hidden,
    };
  }, name);
}

/** Waits until the tile of `name` on `page` shows a moving picture and plays its sound. */
async function expectTilePlays(page, name) {
  const first = await tileMedia(page, name);
  let m;
  await waitFor(
    async () => {
      m = await tileMedia(page, name);
      const moved = (kind) => m[kind] && !m[kind].paused && m[kind].time > (first[kind]?.time ?? -1);
      return moved('video') && m.video.width > 0 && moved('audio');
    },
    { timeout: 15000, message: `${page.label}'s tile of ${name} to play video and audio`, describe: () => JSON.stringify(m) },
  );
  assert.equal(m.unblockShown, false, `${page.label} does not ask for a click to play sound`);
}

/** Firefox's outbound video encodings: {rid: {frames, width}}. */
function encodings(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const pc of window.__sfumatoPCs) {
      if (pc.connectionState !== 'connected') continue;
      (await pc.getStats()).forEach((st) => {
        if (st.type === 'outbound-rtp' && st.kind === 'video') out[st.rid ?? ''] = { frames: st.framesEncoded ?? 0, width: st.frameWidth ?? 0 };
      });
    }
    return out;
  });
}

test('a Firefox participant and a Chromium participant decode each other', { skip }, () =>
  s.run(async () => {
    pages.ff = await openFirefox(s, '/?room=fx&name=ff', 'ff');
    // Chromium receives the lowest layer until the next test asks for the top one.
    pages.cr = await s.open('/?room=fx&name=cr&quality=low', 'cr');
    await Promise.all([pages.ff, pages.cr].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 45000 })));

    const { status, body } = await s.server.getJson('/api/rooms/fx');
    assert.equal(status, 200, `GET /api/rooms/fx: ${JSON.stringify(body)}`);
    assert.deepEqual(body.participants.map((p) => p.name).sort(), ['cr', 'ff']);
    assert.equal(new Set(body.participants.map((p) => p.worker)).size, 2, `one participant per worker: ${JSON.stringify(body)}`);
    for (const p of body.participants) assert.deepEqual(p.tracks.map((t) => t.kind).sort(), ['audio', 'video'], `tracks of ${p.name}`);
    assert.deepEqual(await tileNames(pages.ff), ['cr'], "the tile on Firefox's page");
    assert.deepEqual(await tileNames(pages.cr), ['ff'], "the tile on Chromium's page");
    await expectTilePlays(pages.ff, 'cr');
    await expectTilePlays(pages.cr, 'ff');
  }));

test("Firefox's camera goes out in simulcast: Chromium decodes its low layer, then a higher one", { skip }, () =>
  s.run(async () => {
    // The SDK publishes three encodings (q, h, f: a quarter, half and all of 1280×720) and
    // encodes only the layers the server asks for (`layers`): while Chromium, the only
    // viewer, wants the low one, Firefox encodes q alone.
    let enc;
    let last = null;
    await waitFor(
      async () => {
        const prev = last;
        last = enc = await encodings(pages.ff);
        const grew = (rid) => (enc[rid]?.frames ?? 0) > (prev?.[rid]?.frames ?? 0);
        return prev && grew('q') && !grew('h') && !grew('f');
      },
      { timeout: 20000, interval: 1000, message: 'Firefox to encode the q layer alone', describe: () => JSON.stringify(enc) },
    );
    assert.deepEqual(Object.keys(enc).sort(), ['f', 'h', 'q'], `Firefox's encodings: ${JSON.stringify(enc)}`);
    let v;
    await waitFor(
      async () => {
        v = await mainVideo(pages.cr);
        return v.frameWidth > 0 && v.frameWidth <= 320;
      },
      { timeout: 20000, message: "Chromium to decode Firefox's low layer", describe: () => JSON.stringify(v) },
    );
    const { body } = await s.server.getJson('/api/dashboard');
    const published = body?.rooms?.find((r) => r.room === 'fx')?.participants.find((p) => p.name === 'ff')?.tracks.find((t) => t.kind === 'video' && t.direction === 'publish');
    assert.ok(published?.layers >= 2, `the server counts Firefox's video as simulcast: ${JSON.stringify(published && { ...published, graph: undefined })}`);

    // Chromium asks for the top layer: Firefox encodes h (and f once its bandwidth estimate
    // allows), and Chromium decodes a layer at least 640 wide.
    const track = await videoTrackOf('ff');
    assert.ok(track, "ff's video track on the server");
    await pages.cr.evaluate((id) => window.sfumatoRoom.setVideoQuality(id, 'high'), track);
    const before = v.framesDecoded;
    await waitFor(
      async () => {
        v = await mainVideo(pages.cr);
        return v.frameWidth >= 640 && v.framesDecoded > before;
      },
      { timeout: 20000, message: "Chromium to decode a higher layer of Firefox's camera", describe: () => JSON.stringify(v) },
    );
    enc = await encodings(pages.ff);
    assert.ok(enc.h.frames > 0 && enc.h.width > enc.q.width, `Firefox encodes h, wider than q: ${JSON.stringify(enc)}`);
  }));

const BIG = 65536;
/** FNV-1a of the bytes (i * 31 + 7) & 255, i < BIG: the big payload both pages send. */
const bigFnv = () => {
  let h = 2166136261;
  for (let i = 0; i < BIG; i++) h = Math.imul(h ^ ((i * 31 + 7) & 255), 16777619) >>> 0;
  return h;
};

test('data messages both ways between Firefox and Chromium, over their data channels', { skip }, () =>
  s.run(async () => {
    // Every message each page receives, payloads as plain values: text as is, binary as
    // {bytes}, or {len, fnv} when long.
    const ids = {};
    for (const [name, page] of Object.entries(pages)) {
      ids[name] = await page.evaluate(() => {
        const fnv = (b) => b.reduce((h, x) => Math.imul(h ^ x, 16777619) >>> 0, 2166136261);
        const plain = (p) => (typeof p === 'string' ? p : p.length > 64 ? { len: p.length, fnv: fnv(p) } : { bytes: [...p] });
        window.got = [];
        window.sfumatoRoom.data.on('*', (m) => window.got.push({ from: m.from, topic: m.topic, seq: m.seq, payload: plain(m.payload) }));
        return window.sfumatoRoom.localParticipant.id;
      });
      await waitFor(() => page.evaluate(() => window.sfumatoRoom.data.transport === 'sctp'), {
        timeout: 15000,
        message: `${name}'s data messages to take the data channels`,
      });
    }
    const send = (page, [topic, text, big]) =>
      page.evaluate(
        async ([topic, text, big]) => {
          const d = window.sfumatoRoom.data;
          await d.send(text, { topic });
          await d.send(new Uint8Array([0, 1, 254, 255]), { topic });
          await d.send(Uint8Array.from({ length: big }, (_, i) => (i * 31 + 7) & 255), { topic });
          await d.send('lossy', { topic: `${topic}-lossy`, reliable: false });
        },
        [topic, text, big],
      );
    await send(pages.ff, ['ff', 'hello from Firefox', BIG]);
    await send(pages.cr, ['cr', 'hello from Chromium ✓', BIG]);
    const received = (page) => page.evaluate(() => window.got);
    for (const [to, from, text] of [
      ['cr', 'ff', 'hello from Firefox'],
      ['ff', 'cr', 'hello from Chromium ✓'],
    ]) {
      let got;
      await waitFor(
        async () => {
          got = (await received(pages[to])).filter((m) => m.from === ids[from]);
          return got.length >= 4;
        },
        { timeout: 15000, message: `${to} to receive ${from}'s four messages`, describe: () => JSON.stringify(got) },
      );
      assert.deepEqual(
        got.filter((m) => m.topic === from),
        [
          { from: ids[from], topic: from, seq: 0, payload: text },
          { from: ids[from], topic: from, seq: 1, payload: { bytes: [0, 1, 254, 255] } },
          { from: ids[from], topic: from, seq: 2, payload: { len: BIG, fnv: bigFnv() } },
        ],
        `${to} received ${from}'s text, binary and 64 KiB messages, in order`,
      );
      assert.deepEqual(
        got.filter((m) => m.topic !== from).map((m) => [m.seq, m.topic, m.payload]),
        [[3, `${from}-lossy`, 'lossy']],
        `${to} received ${from}'s lossy message`,
      );
      assert.equal(got.length, 4, `${to} received each message once`);
    }
  }));

test("Firefox leaves with the demo page's button: Chromium sees it go, and the server keeps nothing", { skip }, () =>
  s.run(async () => {
    await pages.ff.click('#leave');
    await waitFor(async () => (await tileNames(pages.cr)).length === 0, { message: "ff's tile to leave Chromium's page" });
    const { body } = await s.server.getJson('/api/rooms/fx');
    assert.deepEqual(body.participants.map((p) => p.name), ['cr'], 'who is left in the room');
    await pages.cr.click('#leave');
    await expectNoLeaks(s.server);
  }));
