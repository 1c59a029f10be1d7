// Thirty videos: 30 WHIP publishers (`sfumato-client whip --simulcast`, each sending three
// simulcast layers of real VP8 frames, 320x180, 640x360 and 1280x720, plus Opus) and one
// Chromium viewer that asks for the low layer of each and decodes all of them on this
// machine. Prints the viewer's received bitrate, the frame widths it decodes and the
// server's CPU (docs/benchmarks.md, "Thirty videos").

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { CLIENT_BIN, Session, inboundStats, sleep, waitForMedia } from '../lib/harness.js';

const PUBLISHERS = 30;
const skip = existsSync(CLIENT_BIN) ? false : `${CLIENT_BIN} does not exist (build it, or set SFUMATO_CLIENT_BIN)`;

let s;
const clients = [];

before(async () => {
  if (!skip) s = await Session.start({ name: 'thirty', rtcPort: 41700, workers: 2, placement: 'spread' });
});
after(async () => {
  for (const c of clients) if (c.exitCode === null) c.kill('SIGTERM');
  await s?.close();
});

/** RTP packets the server received from publishers so far, and the pipe messages workers
 * received from each other (GET /api/workers; a worker's `packets_in` also counts what other
 * workers piped to it). */
async function packetCounts(server) {
  const { body } = await server.getJson('/api/workers');
  return {
    received: body.workers.reduce((n, w) => n + w.packets_in - w.pipe_in, 0),
    piped: body.workers.reduce((n, w) => n + w.pipe_in, 0),
  };
}

/** CPU seconds (user + system) of process `pid` so far. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

test('one browser decodes thirty videos of one room', { skip }, () =>
  s.run(async () => {
    // `quality=low` keeps every video flowing whether its tile is on screen or not.
    const viewer = await s.open('/?room=thirty&name=viewer&publish=0&quality=low', 'viewer');
    await viewer.waitForSelector('#controls:not([hidden])', { timeout: 15000 });
    const output = [];
    for (let i = 0; i < PUBLISHERS; i++) {
      const args = ['whip', '--simulcast', '--url', `${s.server.url}/whip/thirty`, '--duration-secs', '120'];
      const c = spawn(CLIENT_BIN, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      c.stderr.on('data', (d) => output.push(`[${i}] ${d}`));
      clients.push(c);
      await sleep(100);
    }
    try {
      await waitForMedia(viewer, { video: PUBLISHERS, audio: PUBLISHERS, timeout: 90000, minFrames: 10 });
    } catch (err) {
      err.message += `\n--- sfumato-client output ---\n${output.join('').slice(-2000)}`;
      throw err;
    }

    // Every one of the 30 keeps decoding over a 10 s window.
    const pid = s.server.child.pid;
    const before = new Map((await inboundStats(viewer)).map((x) => [x.key, x]));
    const in0 = await packetCounts(s.server);
    const cpu0 = cpuSeconds(pid);
    const t0 = Date.now();
    await sleep(10000);
    const after = await inboundStats(viewer);
    const secs = (Date.now() - t0) / 1000;
    const cpu = (cpuSeconds(pid) - cpu0) / secs;
    const in1 = await packetCounts(s.server);
    const inPps = (in1.received - in0.received) / secs;
    const pipedPps = (in1.piped - in0.piped) / secs;
    const grown = (x, f) => x[f] - (before.get(x.key)?.[f] ?? 0);
    const videos = after.filter((x) => x.kind === 'video' && grown(x, 'framesDecoded') > 0);
    const fps = videos.map((x) => grown(x, 'framesDecoded') / secs);
    const kbps = after.reduce((n, x) => n + grown(x, 'bytesReceived'), 0) * 8 / secs / 1000;
    const lost = after.reduce((n, x) => n + grown(x, 'packetsLost'), 0);
    const received = after.reduce((n, x) => n + grown(x, 'packetsReceived'), 0);
    // How many videos decode at each frame size.
    const sizes = new Map();
    for (const x of videos) {
      const size = `${x.frameWidth}x${x.frameHeight}`;
      sizes.set(size, (sizes.get(size) ?? 0) + 1);
    }
    const sizeList = [...sizes].map(([size, n]) => `${n} at ${size}`).join(', ');
    console.log(
      `thirty: ${videos.length} videos decoding (${sizeList}), ${Math.min(...fps).toFixed(1)}-${Math.max(...fps).toFixed(1)} frames/s each, ` +
        `viewer receives ${Math.round(kbps)} kbit/s (${received} packets, ${lost} lost), ` +
        `server receives ${Math.round(inPps)} packets/s and pipes ${Math.round(pipedPps)}/s between its workers, ` +
        `server CPU ${(cpu * 100).toFixed(1)}% of a core`,
    );
    assert.equal(videos.length, PUBLISHERS, 'every video decodes');
    assert.deepEqual([...sizes.keys()], ['320x180'], 'the viewer gets the low layer (q) of each');
  }));
