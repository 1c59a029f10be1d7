// The SDK's publishing and receiving controls against a real server, judged from the other
// browser's decoder: a camera turned off releases its device and comes back, replaceTrack
// switches what the others decode without renegotiation, a screen share is a track of its
// own marked `screen`, per-track statistics, unpublish and republish, selective subscription
// (autoSubscribe: false), and the demo page's device choosers and screen-share button.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, waitFor } from '../lib/harness.js';

let s;
const pages = {};

before(async () => {
  s = await Session.start({ name: 'sdk-complete', rtcPort: 41900, workers: 1 });
});
after(() => s?.close());

/**
 * In-page helpers: `window.sdk` (the SDK), `connect(opts)` (joins room `sdk`, keeping every
 * room event in `window.events`), `colorTrack(color, w, h)` (a canvas of one colour as a
 * video track), `show(sub)` (a <video> per received video track) and `centerColor(track)`
 * (the colour of the middle pixel of that track's <video>).
 */
const PAGE_HELPERS = `(() => {
  window.events = [];
  window.connect = async (opts) => {
    const sdk = await import('/sdk/sfumato.js');
    window.sdk = sdk;
    const room = await sdk.connect(sdk.defaultUrl(), { room: 'sdk', ...opts });
    window.room = room;
    for (const type of ['participantJoined', 'trackPublished', 'trackUnpublished', 'trackSubscribed', 'trackUnsubscribed', 'trackMuted', 'unpublished', 'localTrackChanged']) {
      room.on(type, (ev) => {
        window.events.push({ type, track: ev.track?.id ?? ev.track, kind: ev.kind ?? ev.track?.kind, source: ev.source ?? ev.track?.source, participant: ev.participant?.name, muted: ev.muted });
        if (type === 'trackSubscribed' && ev.kind === 'video') window.show(ev);
      });
    }
    return room.localParticipant.id;
  };
  window.colorTrack = (color, w, h) => {
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const ctx = c.getContext('2d');
    let n = 0;
    // Redrawn all the time: a canvas stream sends a frame when the canvas changes.
    setInterval(() => {
      ctx.fillStyle = color;
      ctx.fillRect(0, 0, w, h);
      ctx.fillStyle = n++ % 2 ? '#000' : '#111';
      ctx.fillRect(0, 0, 2, 2);
    }, 40);
    const track = c.captureStream(25).getVideoTracks()[0];
    track.contentHint = 'detail';
    return track;
  };
  window.show = ({ track, stream }) => {
    const v = document.createElement('video');
    v.muted = true;
    v.autoplay = true;
    v.dataset.track = track;
    v.srcObject = stream;
    document.body.append(v);
    v.play().catch(() => {});
  };
  window.centerColor = (track) => {
    const v = document.querySelector('video[data-track="' + track + '"]');
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(v, 0, 0);
    const [r, g, b] = ctx.getImageData(v.videoWidth >> 1, v.videoHeight >> 1, 1, 1).data;
    return { r, g, b, width: v.videoWidth, height: v.videoHeight };
  };
})();`;

/** A page of the server's origin running the SDK (the demo page's join form stays idle). */
async function sdkPage(label, opts = {}) {
  const page = await s.open('/', label, { setup: (p) => p.addInitScript(PAGE_HELPERS) });
  await page.evaluate((o) => window.connect(o), { name: label, ...opts });
  return page;
}

/** The room events a page saw (in order). */
const events = (page, pred = () => true) => page.evaluate(() => window.events).then((list) => list.filter(pred));

/** Waits for a room event matching `pred` on `page`; returns it. */
async function waitEvent(page, pred, message) {
  let seen;
  return waitFor(
    async () => {
      seen = await events(page);
      return seen.find(pred);
    },
    { timeout: 30000, message: `${page.label}: ${message}`, describe: () => JSON.stringify(seen?.slice(-8)) },
  );
}

/** inbound-rtp figures of the receiver that carries remote track `track` on `page`. */
function received(page, track) {
  return page.evaluate(async (track) => {
    const sub = window.room.subscriptions.find((x) => x.track === track);
    if (!sub) return null;
    const pc = window.__sfumatoPCs.find((p) => p.connectionState !== 'closed' && p.getTransceivers().some((t) => t.mid === sub.mid && t.receiver.track === sub.mediaStreamTrack));
    const tr = pc?.getTransceivers().find((t) => t.mid === sub.mid);
    if (!tr) return null;
    let out = null;
    (await tr.receiver.getStats()).forEach((st) => {
      if (st.type === 'inbound-rtp') out = { framesDecoded: st.framesDecoded ?? 0, packetsReceived: st.packetsReceived ?? 0, frameWidth: st.frameWidth ?? 0 };
    });
    return out;
  }, track);
}

/** Waits until `page` decodes `frames` more frames (or receives that many more packets, for
 * audio) of remote track `track` than when called. */
async function decodes(page, track, { frames = 10, audio = false } = {}) {
  const field = audio ? 'packetsReceived' : 'framesDecoded';
  const base = (await received(page, track))?.[field] ?? 0;
  let last;
  await waitFor(
    async () => {
      last = await received(page, track);
      return last && last[field] - base >= frames;
    },
    { timeout: 30000, message: `${page.label} to decode track ${track}`, describe: () => JSON.stringify(last) },
  );
  return last;
}

/** Waits until `page` shows remote video `track` with a centre pixel that `ok` accepts. */
async function showsColor(page, track, ok, message) {
  let last;
  await waitFor(
    async () => {
      last = await page.evaluate((t) => window.centerColor(t), track);
      return last && ok(last);
    },
    { timeout: 30000, message: `${page.label}: ${message}`, describe: () => JSON.stringify(last) },
  );
  return last;
}

/** The track id of `name`'s published track of `source`, as `page` knows it. */
const trackOf = (page, name, source) =>
  page.evaluate(([name, source]) => window.room.participants.find((p) => p.name === name)?.tracks.find((t) => t.source === source)?.id ?? null, [name, source]);

let camera; // pub's camera track id
let mic;

test('a published camera and microphone reach a viewer, each track with its source', () =>
  s.run(async () => {
    pages.pub = await sdkPage('pub');
    pages.viewer = await sdkPage('viewer');
    await pages.pub.evaluate(() => window.room.publish({ audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 } } }));
    await waitEvent(pages.viewer, (e) => e.type === 'trackSubscribed' && e.kind === 'video' && e.participant === 'pub', 'pub\'s video subscribed');
    camera = await trackOf(pages.viewer, 'pub', 'camera');
    mic = await trackOf(pages.viewer, 'pub', 'microphone');
    assert.ok(camera && mic, 'the viewer knows a camera and a microphone track of pub');
    await decodes(pages.viewer, camera);
    const local = await pages.pub.evaluate(() => window.room.localTracks.map((t) => `${t.source}:${t.kind}:${t.enabled}`).sort());
    assert.deepEqual(local, ['camera:video:true', 'microphone:audio:true']);
  }));

test('turning the camera off stops its track (the device is released) and on brings frames back', () =>
  s.run(async () => {
    const state = await pages.pub.evaluate(async () => {
      const before = window.room.localStream.getVideoTracks()[0];
      await window.room.setCameraEnabled(false);
      return { readyState: before.readyState, enabled: window.room.isEnabled('camera') };
    });
    assert.deepEqual(state, { readyState: 'ended', enabled: false });
    await waitEvent(pages.viewer, (e) => e.type === 'trackMuted' && e.track === camera && e.muted === true, 'the camera muted');

    const after = await pages.pub.evaluate(async () => {
      await window.room.setCameraEnabled(true);
      const t = window.room.localStream.getVideoTracks();
      return { tracks: t.length, readyState: t[0].readyState, enabled: window.room.isEnabled('camera') };
    });
    assert.deepEqual(after, { tracks: 1, readyState: 'live', enabled: true });
    await waitEvent(pages.viewer, (e) => e.type === 'trackMuted' && e.track === camera && e.muted === false, 'the camera unmuted');
    // Same subscription, new frames from the new capture.
    await decodes(pages.viewer, camera, { frames: 15 });
  }));

test('replaceTrack: the viewer decodes the new source on the same subscription, no renegotiation', () =>
  s.run(async () => {
    const offers = () => pages.pub.evaluate(() => window.__sfumatoPCs.filter((p) => p.connectionState !== 'closed').map((p) => p.localDescription?.sdp ?? ''));
    const before = await offers();
    await pages.pub.evaluate(() => window.room.replaceTrack('camera', window.colorTrack('#ff0000', 640, 360)));
    const red = await showsColor(pages.viewer, camera, (c) => c.r > 180 && c.g < 80 && c.b < 80, 'red after the first replaceTrack');
    await pages.pub.evaluate(() => window.room.replaceTrack('camera', window.colorTrack('#0000ff', 320, 240)));
    const blue = await showsColor(pages.viewer, camera, (c) => c.b > 180 && c.r < 80 && c.g < 80 && c.width !== red.width, 'blue and of another size after the second');
    console.log(`replaceTrack: ${red.width}x${red.height} red, then ${blue.width}x${blue.height} blue`);
    assert.deepEqual(await offers(), before, 'no new offer on the publish PC');
    const subs = await pages.viewer.evaluate(() => window.room.subscriptions.filter((x) => x.kind === 'video').map((x) => x.track));
    assert.deepEqual(subs, [camera], 'the viewer keeps one subscription to the camera');
    await decodes(pages.viewer, camera);
  }));

test('device choice: the cameras are listed and switchDevice captures the chosen one', () =>
  s.run(async () => {
    const r = await pages.pub.evaluate(async () => {
      const cams = await window.room.listDevices('video');
      const mics = await window.sdk.listDevices('audio');
      const old = window.room.localStream.getAudioTracks()[0];
      await window.room.switchDevice('audio', mics[0].deviceId);
      const now = window.room.localStream.getAudioTracks()[0];
      return { cams: cams.length, mics: mics.length, oldState: old.readyState, replaced: now !== old, live: now.readyState, active: window.room.activeDevice('audio') === mics[0].deviceId };
    });
    assert.ok(r.cams >= 1 && r.mics >= 1, JSON.stringify(r));
    assert.deepEqual({ oldState: r.oldState, replaced: r.replaced, live: r.live, active: r.active }, { oldState: 'ended', replaced: true, live: 'live', active: true });
    await decodes(pages.viewer, mic, { audio: true, frames: 25 });
  }));

test('statistics: bitrate, loss, RTT and layers of published and received tracks', () =>
  s.run(async () => {
    const pub = await pages.pub.evaluate(() => window.room.getStats());
    const video = pub.published.find((t) => t.source === 'camera');
    assert.ok(video, JSON.stringify(pub));
    assert.equal(video.track, camera);
    assert.ok(video.bitrate > 0 && video.packetsSent > 0, `published camera: ${JSON.stringify(video)}`);
    assert.ok(video.rtt === null || video.rtt >= 0, `rtt ${video.rtt}`);
    assert.deepEqual(video.layers.map((l) => l.rid), ['f', 'h', 'q'], 'three simulcast encodings');

    // The viewer asks for the low layer: the server says it forwards layer 0.
    await pages.viewer.evaluate((t) => window.room.setVideoQuality(t, 'low'), camera);
    let sub;
    await waitFor(
      async () => {
        const st = await pages.viewer.evaluate(() => window.room.getStats());
        sub = st.subscribed.find((t) => t.track === camera);
        return sub && sub.layer === 0 && sub.bitrate > 0;
      },
      { timeout: 20000, message: 'the viewer\'s stats to show layer 0 of the camera', describe: () => JSON.stringify(sub) },
    );
    assert.equal(sub.source, 'camera');
    assert.equal(sub.quality, 'low');
    assert.ok(sub.packetsReceived > 0 && sub.framesDecoded > 0 && sub.frameWidth > 0, JSON.stringify(sub));
    assert.ok(sub.fractionLost === null || (sub.fractionLost >= 0 && sub.fractionLost <= 1), JSON.stringify(sub));
    assert.ok(typeof sub.rtt === 'number' && sub.rtt >= 0, `rtt: ${JSON.stringify(sub)}`);
    const audio = (await pages.viewer.evaluate(() => window.room.getStats())).subscribed.find((t) => t.kind === 'audio');
    assert.ok(audio && audio.source === 'microphone' && audio.packetsReceived > 0 && audio.layer === null, JSON.stringify(audio));
  }));

test('a screen share is a track of its own, marked screen, decoded alongside the camera', () =>
  s.run(async () => {
    await pages.pub.evaluate(() => window.room.shareScreen());
    const ev = await waitEvent(pages.viewer, (e) => e.type === 'trackSubscribed' && e.source === 'screen', 'a screen track subscribed');
    assert.equal(ev.kind, 'video');
    assert.equal(ev.participant, 'pub');
    await Promise.all([decodes(pages.viewer, ev.track), decodes(pages.viewer, camera)]);
    const published = await pages.pub.evaluate(async () => (await window.room.getStats()).published.find((t) => t.source === 'screen'));
    assert.equal(published.layers.length, 1, 'a screen share is one encoding by default');

    await pages.pub.evaluate(() => window.room.stopScreenShare());
    await waitEvent(pages.viewer, (e) => e.type === 'trackUnpublished' && e.track === ev.track, 'the screen track unpublished');
    await waitEvent(pages.viewer, (e) => e.type === 'trackUnsubscribed' && e.track === ev.track, 'the screen track unsubscribed');
    assert.equal(await pages.pub.evaluate(() => window.room.screenStream), null);
  }));

test('unpublish makes a track disappear for the others, republishing brings it back', () =>
  s.run(async () => {
    await pages.pub.evaluate(async () => {
      window.keptMic = window.room.localStream.getAudioTracks()[0];
      await window.room.unpublishTrack('microphone', { stop: false });
    });
    await waitEvent(pages.viewer, (e) => e.type === 'trackUnpublished' && e.track === mic, 'the microphone unpublished');
    await waitEvent(pages.viewer, (e) => e.type === 'trackUnsubscribed' && e.track === mic, 'the microphone unsubscribed');
    assert.equal(await trackOf(pages.viewer, 'pub', 'microphone'), null);
    assert.equal(await pages.pub.evaluate(() => window.keptMic.readyState), 'live', 'stop: false keeps the track');

    await pages.pub.evaluate(() => window.room.publishTrack(window.keptMic, { source: 'microphone' }));
    const ev = await waitEvent(pages.viewer, (e) => e.type === 'trackPublished' && e.source === 'microphone' && e.track !== mic, 'the microphone published again');
    await waitEvent(pages.viewer, (e) => e.type === 'trackSubscribed' && e.track === ev.track, 'the new microphone track subscribed');
    await decodes(pages.viewer, ev.track, { audio: true, frames: 25 });
    mic = ev.track;
  }));

test('with autoSubscribe false nothing is received until asked for', () =>
  s.run(async () => {
    pages.picky = await sdkPage('picky', { autoSubscribe: false });
    const known = await waitFor(async () => (await trackOf(pages.picky, 'pub', 'camera')) && (await trackOf(pages.picky, 'pub', 'microphone')), {
      message: 'picky to know pub\'s tracks',
    });
    assert.ok(known);
    const audio = await trackOf(pages.picky, 'pub', 'microphone');
    await pages.picky.evaluate((t) => window.room.subscribe(t), audio);
    await waitEvent(pages.picky, (e) => e.type === 'trackSubscribed' && e.track === audio, 'the microphone subscribed');
    await decodes(pages.picky, audio, { audio: true, frames: 25 });
    // The offer that brought the microphone carried all picky's subscriptions: nothing else.
    assert.deepEqual(await pages.picky.evaluate(() => window.room.subscriptions.map((x) => x.track)), [audio]);

    await pages.picky.evaluate(() => window.room.subscribeParticipant(window.room.participants.find((p) => p.name === 'pub')));
    await waitEvent(pages.picky, (e) => e.type === 'trackSubscribed' && e.track === camera, 'the camera subscribed');
    await decodes(pages.picky, camera);

    await pages.picky.evaluate((t) => window.room.unsubscribe(t), camera);
    await waitEvent(pages.picky, (e) => e.type === 'trackUnsubscribed' && e.track === camera, 'the camera unsubscribed');
    assert.deepEqual(await pages.picky.evaluate(() => window.room.subscriptions.map((x) => x.track)), [audio]);
  }));

test('the demo page: device choosers, the camera button releases the camera, screen sharing in a tile of its own', () =>
  s.run(async () => {
    // The SDK pages have said what they had to; fewer encoders for the machine.
    for (const name of ['picky', 'viewer', 'pub']) await pages[name].context().close();
    pages.demo = await s.open('/?room=sdk&name=demo', 'demo');
    pages.watch = await s.open('/?room=sdk&name=watch&publish=0', 'watch');
    await pages.watch.waitForSelector('.tile[data-name="demo"].has-video', { timeout: 30000 });
    await waitFor(async () => (await pages.demo.$$eval('#camera-select option', (o) => o.length)) >= 1 && (await pages.demo.$$eval('#mic-select option', (o) => o.length)) >= 1, {
      message: 'the device choosers to list a camera and a microphone',
    });
    assert.equal(await pages.demo.isVisible('#share-screen'), true);

    // Choosing a camera in its chooser captures it anew (the fake camera is the only one:
    // chosen again) and the viewer keeps decoding.
    const cam = await pages.demo.evaluate(() => {
      window.firstCamera = window.sfumatoRoom.localStream.getVideoTracks()[0];
      const select = document.getElementById('camera-select');
      select.dispatchEvent(new Event('change'));
      return select.value;
    });
    await waitFor(() => pages.demo.evaluate(() => window.firstCamera.readyState === 'ended' && window.sfumatoRoom.localStream.getVideoTracks()[0]?.readyState === 'live'), {
      message: 'the chosen camera captured in place of the first',
    });
    assert.equal(await pages.demo.evaluate(() => window.sfumatoRoom.activeDevice('video')), cam);

    // Camera off: its track ends, the others see the avatar; on: a live track again.
    await pages.demo.click('#mute-video');
    await waitFor(() => pages.demo.evaluate(() => window.sfumatoRoom.localStream.getVideoTracks()[0]?.readyState === 'ended'), { message: 'the camera track to end' });
    await pages.watch.waitForSelector('.tile[data-name="demo"]:not(.has-video)', { timeout: 15000 });
    assert.equal(await pages.demo.textContent('#mute-video'), 'Start camera');
    await pages.demo.click('#mute-video');
    await waitFor(() => pages.demo.evaluate(() => window.sfumatoRoom.localStream.getVideoTracks()[0]?.readyState === 'live'), { message: 'a live camera track' });
    await pages.watch.waitForSelector('.tile[data-name="demo"].has-video', { timeout: 15000 });

    // Screen share: a tile of its own on both sides, showing frames on the other.
    await pages.demo.click('#share-screen');
    await pages.demo.waitForSelector('.tile.local.screen', { timeout: 15000 });
    await pages.watch.waitForSelector('.tile.screen[data-name="demo (screen)"]', { timeout: 30000 });
    await waitFor(
      () => pages.watch.$eval('.tile.screen[data-name="demo (screen)"] video', (v) => v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 5),
      { timeout: 30000, message: 'the shared screen to play in the viewer\'s tile' },
    );
    assert.equal(await pages.demo.textContent('#share-screen'), 'Stop sharing');
    await pages.demo.click('#share-screen');
    await pages.watch.waitForSelector('.tile.screen', { state: 'detached', timeout: 15000 });
    await pages.demo.waitForSelector('.tile.local.screen', { state: 'detached', timeout: 15000 });
    assert.equal(await pages.demo.textContent('#share-screen'), 'Share screen');
  }));
