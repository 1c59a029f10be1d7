// The browser SDK and the demo page against a mock server (lib/mock-sfu.js): join, publish,
// subscribe by mid, mute, reconnect after a signaling drop, leave. Needs no sfumato binary.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RECORD_PEER_CONNECTIONS, launchBrowser, tileNames, waitFor, waitForMedia } from '../lib/harness.js';
import { MockSfu } from '../lib/mock-sfu.js';

const ORIGIN = 'http://localhost:47999';
let browser;
let mock;
const pages = {};
const consoleLog = [];

before(async () => {
  browser = await launchBrowser();
  mock = await MockSfu.start(browser, ORIGIN);
});
after(async () => {
  await mock?.close();
  await browser?.close();
});

async function open(query, label) {
  const context = await browser.newContext({ viewport: { width: 960, height: 640 } });
  await context.addInitScript(RECORD_PEER_CONNECTIONS);
  await mock.attach(context);
  const page = await context.newPage();
  page.label = label;
  page.on('console', (m) => consoleLog.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLog.push(`[${label}] pageerror: ${e.message}`));
  await page.goto(`${ORIGIN}/${query}`);
  pages[label] = page;
  return page;
}

async function withLog(fn) {
  try {
    await fn();
  } catch (err) {
    err.message += `\n--- browser console ---\n${consoleLog.slice(-40).join('\n')}`;
    throw err;
  }
}

const sent = (name, type) => mock.received.filter((r) => r.from === name && r.msg.type === type).map((r) => r.msg);
/** The publish offers of `name` that carry media (each page also offers its data channels
 * alone right after joining: an `m=application` section only). */
const mediaOffers = (name) => sent(name, 'publish_offer').filter((m) => /^m=(audio|video) /m.test(m.sdp));

async function expectTiles(page, names) {
  await waitFor(async () => JSON.stringify(await tileNames(page)) === JSON.stringify(names), {
    timeout: 15000,
    message: `tiles ${JSON.stringify(names)} on ${page.label}'s page`,
    describe: () => '(see the page)',
  });
}

test('two publishers see and decode each other', () =>
  withLog(async () => {
    await open('?room=r&name=a', 'a');
    await open('?room=r&name=b', 'b');
    await Promise.all([pages.a, pages.b].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 30000 })));
    await expectTiles(pages.a, ['b']);
    await expectTiles(pages.b, ['a']);
    assert.equal(sent('a', 'join')[0].v, 1);
    assert.equal(mediaOffers('a').length, 1);
    assert.match(mediaOffers('a')[0].sdp, /a=candidate:/, 'the offer waited for ICE gathering');
    assert.match(mediaOffers('a')[0].sdp, /^m=application /m, 'the tracks share the PC of the data channels');
    assert.ok(await pages.a.$('.tile.local[data-name="a"].has-video'), 'local preview tile');
  }));

test('mute sets track.enabled, sends mute, and shows on the other side', () =>
  withLog(async () => {
    await pages.a.click('#mute-audio');
    const audioId = mock.byName('a').tracks.find((t) => t.kind === 'audio').id;
    await waitFor(() => sent('a', 'mute').some((m) => m.track === audioId && m.muted === true), { message: 'mute message' });
    assert.equal(await pages.a.evaluate(() => window.sfumatoRoom.localStream.getAudioTracks()[0].enabled), false);
    assert.equal(await pages.a.getAttribute('#mute-audio', 'aria-pressed'), 'true');
    await pages.b.waitForSelector('.tile[data-name="a"].audio-muted', { timeout: 5000 });
    await pages.a.click('#mute-audio');
    await pages.b.waitForSelector('.tile[data-name="a"]:not(.audio-muted)', { timeout: 5000 });
    assert.equal(await pages.a.evaluate(() => window.sfumatoRoom.localStream.getAudioTracks()[0].enabled), true);
  }));

test('a viewer (publish=0) receives without publishing', () =>
  withLog(async () => {
    await open('?room=r&name=v&publish=0', 'v');
    await waitForMedia(pages.v, { video: 2, audio: 2, timeout: 30000 });
    await expectTiles(pages.v, ['a', 'b']);
    assert.equal(mediaOffers('v').length, 0);
    assert.equal(await pages.v.isHidden('#mute-audio'), true);
    await expectTiles(pages.a, ['b', 'v']);
  }));

test('a signaling drop: reconnect with backoff, rejoin with the same name, republish', () =>
  withLog(async () => {
    const joinsBefore = sent('a', 'join').length;
    await mock.drop('a');
    await pages.a.waitForSelector('#status.warn', { timeout: 5000 }); // "reconnecting"
    await expectTiles(pages.b, ['v']);
    await waitFor(() => sent('a', 'join').length > joinsBefore && mock.byName('a')?.tracks.length === 2, {
      timeout: 20000,
      message: 'a to rejoin and republish',
    });
    await expectTiles(pages.b, ['a', 'v']);
    await expectTiles(pages.a, ['b', 'v']);
    await waitFor(async () => (await pages.a.textContent('#status')) === 'Connected', { message: 'status Connected' });
    // a decodes b again on its new subscribe PC; b and v decode a's republished video.
    await Promise.all([
      waitForMedia(pages.a, { video: 1, audio: 1, timeout: 30000 }),
      waitForMedia(pages.b, { video: 1, audio: 1, timeout: 30000 }),
      waitForMedia(pages.v, { video: 2, audio: 2, timeout: 30000 }),
    ]);
  }));

test('leave sends leave, the others drop the tile', () =>
  withLog(async () => {
    await pages.b.click('#leave');
    await waitFor(() => sent('b', 'leave').length === 1, { message: 'leave message' });
    await expectTiles(pages.a, ['v']);
    await expectTiles(pages.v, ['a']);
    assert.deepEqual(await tileNames(pages.b), []);
    assert.equal(await pages.b.isVisible('#rejoin'), true);
    const live = await pages.b.evaluate(() => window.__sfumatoPCs.filter((pc) => pc.connectionState !== 'closed').length);
    assert.equal(live, 0, "b's peer connections are closed");
    const camLive = await pages.b.evaluate(() => window.sfumatoRoom.localStream.getTracks().some((t) => t.readyState === 'live'));
    assert.equal(camLive, false, "b's camera and microphone are stopped");
  }));
