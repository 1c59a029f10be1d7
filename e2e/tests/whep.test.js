// WHEP: a plain RTCPeerConnection in a page plays a browser publisher through POST /whep/{room}.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, waitFor, waitForMedia } from '../lib/harness.js';

let s;

before(async () => {
  s = await Session.start({ name: 'whep', rtcPort: 41300, workers: 2, placement: 'spread' });
});
after(() => s?.close());

test('a WHEP viewer decodes a browser publisher', () =>
  s.run(async () => {
    await s.open('/?room=w&name=pub', 'pub');
    await waitFor(
      async () => {
        const { status, body } = await s.server.getJson('/api/rooms/w');
        return status === 200 && body.participants[0]?.tracks?.length >= 2;
      },
      { timeout: 20000, message: 'the publisher to have two tracks in GET /api/rooms/w' },
    );

    const viewer = await s.open('/', 'whep');
    const res = await viewer.evaluate(async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        const timer = setTimeout(resolve, 2000);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const offer = pc.localDescription.sdp;
      const r = await fetch('/whep/w', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer });
      const body = await r.text();
      const out = { status: r.status, location: r.headers.get('Location'), contentType: r.headers.get('Content-Type'), body, offer };
      if (r.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: body });
      return out;
    });
    assert.equal(res.status, 201, `POST /whep/w: ${res.status} ${res.body}`);
    assert.match(res.contentType ?? '', /^application\/sdp/, 'answer content type');
    assert.match(res.location ?? '', /^\/whep\/w\/session\/[^/]+$/, `Location: ${res.location}`);

    await waitForMedia(viewer, { video: 1, audio: 1, timeout: 30000 });

    // Error statuses.
    const post = (path, body, type = 'application/sdp') =>
      s.server.fetch(path, { method: 'POST', headers: { 'Content-Type': type }, body });
    assert.equal((await post('/whep/w', res.offer, 'text/plain')).status, 415, 'wrong content type');
    assert.equal((await post('/whep/nosuchroom', res.offer)).status, 404, 'unknown room');
    assert.equal((await post('/whep/w/nosuchparticipant', res.offer)).status, 404, 'unknown publisher');
    assert.equal((await post('/whep/w', 'v=0 garbage')).status, 400, 'garbage SDP');
    assert.equal((await post('/whep/w', 'v=0\r\n' + 'a=x\r\n'.repeat(220000))).status, 413, 'body over --max-sdp-bytes (1 MiB)');

    // Ending the session.
    assert.equal((await s.server.fetch(res.location, { method: 'DELETE' })).status, 200, 'DELETE the session');
    assert.equal((await s.server.fetch(res.location, { method: 'DELETE' })).status, 404, 'DELETE it again');
  }));
