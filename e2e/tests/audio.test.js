// Audio between browsers. RED (RFC 2198): the publisher's RED packets pass through to a
// viewer that negotiated RED; a viewer without RED gets the primary Opus frames alone. DTX:
// the server's answer asks publishers for discontinuous transmission, so a silent
// microphone sends a few packets instead of 50 per second, and viewers play it on.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Session, microphone, rtpStat, sleep, waitForMedia } from '../lib/harness.js';

let s;

before(async () => {
  s = await Session.start({ name: 'audio', rtcPort: 41900, workers: 2, placement: 'spread' });
});
after(() => s?.close());

/** The page's inbound audio: codec, packets, bytes, samples and how many were concealed. */
const inboundAudio = async (page) => {
  const st = await rtpStat(page, 'inbound-rtp', 'audio');
  return (
    st && {
      codec: st.codec,
      packets: st.packetsReceived,
      bytes: st.bytesReceived,
      samples: st.totalSamplesReceived,
      concealed: st.concealedSamples,
      energy: st.totalAudioEnergy,
    }
  );
};

const outboundAudioCodec = async (page) => (await rtpStat(page, 'outbound-rtp', 'audio'))?.codec;

test('RED reaches a viewer that negotiated it and plain Opus one that did not, both decode cleanly', () =>
  s.run(async () => {
    const pub = await s.open('/?room=red&name=pub', 'pub', { setup: (page) => page.addInitScript(microphone(0.5)) });
    const viewer = await s.open('/?room=red&name=viewer&publish=0', 'viewer');
    await waitForMedia(viewer, { audio: 1, timeout: 30000 });

    // A WHEP viewer whose offer leaves RED out.
    const plain = await s.open('/', 'plain');
    const status = await plain.evaluate(async () => {
      const pc = new RTCPeerConnection();
      (window.__sfumatoPCs ||= []).push(pc);
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      // Played out, so that the decoder's statistics count.
      pc.addEventListener('track', (e) => {
        if (e.track.kind !== 'audio') return;
        const el = document.createElement('audio');
        el.srcObject = new MediaStream([e.track]);
        el.autoplay = true;
        document.body.append(el);
      });
      const offer = await pc.createOffer();
      const red = /a=rtpmap:(\d+) red\/48000/.exec(offer.sdp)?.[1];
      let sdp = offer.sdp;
      if (red) {
        sdp = sdp
          .split('\r\n')
          .filter((l) => !l.startsWith(`a=rtpmap:${red} `) && !l.startsWith(`a=fmtp:${red} `))
          .map((l) => (l.startsWith('m=audio') ? l.split(' ').filter((x, i) => i < 3 || x !== red).join(' ') : l))
          .join('\r\n');
      }
      await pc.setLocalDescription({ type: 'offer', sdp });
      await new Promise((r) => setTimeout(r, 500));
      const r = await fetch('/whep/red', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
      const body = await r.text();
      if (r.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: body });
      return r.status;
    });
    assert.equal(status, 201);
    await waitForMedia(plain, { audio: 1, timeout: 30000 });

    const sent = await outboundAudioCodec(pub);
    const a0 = await inboundAudio(viewer);
    const b0 = await inboundAudio(plain);
    await sleep(4000);
    const a1 = await inboundAudio(viewer);
    const b1 = await inboundAudio(plain);
    console.log(`publisher sends ${sent}; viewer ${JSON.stringify(a1)}; plain ${JSON.stringify(b1)}`);
    const window = (x0, x1) => ({
      packets: x1.packets - x0.packets,
      perPacket: (x1.bytes - x0.bytes) / (x1.packets - x0.packets),
      samples: x1.samples - x0.samples,
      concealed: x1.concealed - x0.concealed,
      energy: x1.energy - x0.energy,
    });
    const red = window(a0, a1);
    const opus = window(b0, b1);
    console.log(`over 4 s: RED viewer ${JSON.stringify(red)}; plain viewer ${JSON.stringify(opus)}`);
    for (const [who, w] of [['RED viewer', red], ['plain viewer', opus]]) {
      assert.ok(w.packets >= 150, `${who}: ${w.packets} packets in 4 s`);
      assert.ok(w.samples > 0 && w.concealed / w.samples < 0.02, `${who}: ${w.concealed} of ${w.samples} samples concealed`);
      assert.ok(w.energy > 0, `${who}: silence`);
    }
    // RED packets carry the previous frame too: about twice the bytes of the primary alone
    // (measured 127 against 62).
    assert.ok(red.perPacket > 1.6 * opus.perPacket, `RED ${red.perPacket} bytes per packet, plain ${opus.perPacket}`);
  }));

test('a silent microphone sends in DTX: a few packets a second reach the viewer, who plays on', () =>
  s.run(async () => {
    const pub = await s.open('/?room=dtx&name=pub', 'quiet', { setup: (page) => page.addInitScript(microphone(0)) });
    const viewer = await s.open('/?room=dtx&name=viewer&publish=0', 'dtx-viewer');
    await waitForMedia(viewer, { video: 1, timeout: 30000 });
    const answer = await pub.evaluate(() => (window.__sfumatoPCs || []).map((pc) => pc.remoteDescription?.sdp ?? '').join(''));
    assert.match(answer, /a=fmtp:\d+ [^\r\n]*usedtx=1/, 'the answer asks for DTX');
    await sleep(2000);
    const a0 = await inboundAudio(viewer);
    await sleep(4000);
    const a1 = await inboundAudio(viewer);
    const packets = a1.packets - a0.packets;
    const samples = a1.samples - a0.samples;
    console.log(`DTX: the viewer received ${packets} audio packets in 4 s (a tone: ~200) and played ${samples} samples`);
    assert.ok(packets < 60, `${packets} audio packets in 4 s of silence`);
    assert.ok(samples > 150_000, `the viewer played ${samples} samples in 4 s`);
  }));
