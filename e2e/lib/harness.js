// Test harness: spawn a sfumato server, drive Chromium through playwright-core, read the
// browser's own WebRTC statistics. Used by the tests in ../tests/ (run with node --test).

import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RESULTS_DIR = path.join(REPO_ROOT, 'e2e', 'test-results');

/** Resolves a binary path from an env var, relative paths against the repo root. */
export function binPath(envVar, fallback) {
  return path.resolve(REPO_ROOT, process.env[envVar] || fallback);
}

export const SERVER_BIN = binPath('SFUMATO_BIN', 'target/release/sfumato');
export const CLIENT_BIN = binPath('SFUMATO_CLIENT_BIN', 'target/release/sfumato-client');
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// ------------------------------------------------------------------ polling

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `fn` until it returns a truthy value (returned) or the deadline passes (throws with
 * `message` and the last value `fn` returned, through `describe` if given).
 */
export async function waitFor(fn, { timeout = 20000, interval = 250, message = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) {
      const seen = describe ? describe(last) : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${message}; last seen: ${seen}`);
    }
    await sleep(interval);
  }
}

// ------------------------------------------------------------------ server

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The SHA-256 certificate fingerprint of sfumato's start log line, if printed yet. */
function fingerprintIn(lines) {
  for (const line of lines) {
    const m = /SHA-256 fingerprint ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})/.exec(line);
    if (m) return m[1];
  }
  return null;
}

/**
 * fetch() over HTTPS to a server whose certificate is the one with this SHA-256
 * fingerprint (a self-signed one Node would refuse): the certificate is pinned, not ignored.
 */
function pinnedFetch(fingerprint) {
  return (url, init = {}) =>
    new Promise((resolve, reject) => {
      const req = https.request(
        url,
        {
          method: init.method || 'GET',
          headers: init.headers || {},
          rejectUnauthorized: false,
          checkServerIdentity: (_host, cert) =>
            cert.fingerprint256 === fingerprint ? undefined : new Error(`certificate ${cert.fingerprint256} is not ${fingerprint}`),
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const body = Buffer.concat(chunks);
            const headers = new Headers();
            for (const [k, v] of Object.entries(res.headers)) for (const one of [].concat(v)) headers.append(k, one);
            resolve(new Response(body.length ? body : null, { status: res.statusCode, headers }));
          });
        },
      );
      req.on('error', reject);
      req.end(init.body);
    });
}

/**
 * Starts `sfumato` on `host` (127.0.0.1 by default; any 127/8 address is loopback) and waits
 * for GET /healthz.
 * @param {{name: string, rtcPort: number, workers?: number, placement?: string, args?: string[], host?: string, listenHost?: string, port?: number, tls?: boolean}} opts
 *   rtcPort: the media UDP port base; give every test file its own range.
 *   listenHost: what `--listen` binds (and the media sockets with it), when not `host`;
 *   `host` stays the address of the server's URLs.
 *   tls: HTTPS and WSS with `--tls-self-signed`; the server's `fetch` and `getJson` pin its
 *   certificate (from the start log line).
 */
export async function startServer({ name, rtcPort, workers = 2, placement = 'spread', args = [], host = '127.0.0.1', listenHost = host, port: fixedPort, tls = false }) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`server binary ${SERVER_BIN} not found: build it first (cargo build --release --workspace --bins) or set SFUMATO_BIN`);
  }
  mkdirSync(RESULTS_DIR, { recursive: true });
  const port = fixedPort ?? (await freePort());
  const extra = (process.env.SFUMATO_ARGS || '').split(/\s+/).filter(Boolean);
  const argv = [
    '--listen', `${listenHost}:${port}`,
    '--rtc-port', String(rtcPort),
    '--workers', String(workers),
    '--placement', placement,
    ...(tls ? ['--tls-self-signed'] : []),
    ...args,
    ...extra,
  ];
  const logPath = path.join(RESULTS_DIR, `${name}.server.log`);
  const log = createWriteStream(logPath);
  log.write(`$ ${SERVER_BIN} ${argv.join(' ')}\n`);
  const tail = [];
  // The first output, whole (a line may span chunks): where the start line is.
  let head = '';
  const child = spawn(SERVER_BIN, argv, {
    cwd: REPO_ROOT,
    env: { RUST_LOG: 'info', RUST_BACKTRACE: '1', ...process.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const onData = (chunk) => {
    log.write(chunk);
    if (head.length < 65536) head += chunk.toString();
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      tail.push(line);
      if (tail.length > 80) tail.shift();
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      log.write(`\n[harness] server exited: code ${code} signal ${signal}\n`);
      resolve(exited);
    });
  });

  const url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  // Plain fetch, or (with TLS) one pinned to the certificate once the start line shows it.
  let get = tls ? null : fetch;
  const request = (p, init) => {
    if (!get) throw new Error('the server has not printed its certificate fingerprint yet');
    return get(url + p, init);
  };
  const server = {
    name,
    url,
    wsUrl: `${tls ? 'wss' : 'ws'}://${host}:${port}/ws`,
    tls,
    port,
    rtcPort,
    logPath,
    child,
    get exited() {
      return exited;
    },
    logTail: () => tail.join('\n'),
    /** fetch() against the server, path relative to its root. */
    fetch: request,
    /** An access token sent with getJson (a server started with API keys). */
    token: null,
    /** GET a JSON document; returns {status, body}. */
    async getJson(p) {
      const headers = server.token ? { authorization: `Bearer ${server.token}` } : {};
      const res = await request(p, { headers });
      const text = await res.text();
      let body = null;
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
      return { status: res.status, body };
    },
    /** kill -9: the node is lost, nothing of it says goodbye. */
    async kill() {
      if (exited) return exited;
      child.kill('SIGKILL');
      const r = await exitPromise;
      await new Promise((resolve) => log.end(resolve));
      return r;
    },
    async stop() {
      if (exited) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      const r = await exitPromise;
      clearTimeout(timer);
      await new Promise((resolve) => log.end(resolve));
      return r;
    },
  };

  try {
    await waitFor(
      async () => {
        if (exited) throw new Error(`server exited during startup (${JSON.stringify(exited)}):\n${server.logTail()}`);
        if (!get) {
          const fingerprint = fingerprintIn(head.split('\n'));
          if (!fingerprint) return false;
          get = pinnedFetch(fingerprint);
        }
        try {
          const res = await request('/healthz');
          return res.ok;
        } catch {
          return false;
        }
      },
      { timeout: 15000, interval: 100, message: `${url}/healthz` },
    );
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/**
 * Starts Debian's `redis-server` on a free loopback port, in memory only (no persistence),
 * for a cluster's nodes; `stop()` ends it.
 */
export async function startRedis(name) {
  const port = await freePort();
  mkdirSync(RESULTS_DIR, { recursive: true });
  const log = createWriteStream(path.join(RESULTS_DIR, `${name}.redis.log`));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (c) => log.write(c));
  child.stderr.on('data', (c) => log.write(c));
  let exited = null;
  const exitPromise = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  child.on('error', (e) => {
    exited = { error: String(e) };
  });
  await waitFor(
    () =>
      new Promise((resolve) => {
        if (exited) throw new Error(`redis-server exited: ${JSON.stringify(exited)}`);
        const sock = net.connect(port, '127.0.0.1', () => {
          sock.end('PING\r\n');
        });
        sock.on('data', (d) => resolve(d.toString().includes('PONG')));
        sock.on('error', () => resolve(false));
      }),
    { timeout: 10000, interval: 100, message: 'redis-server to answer PING' },
  );
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      await exitPromise;
      log.end();
    },
  };
}

// ------------------------------------------------------------------ browser

/** Records every RTCPeerConnection the page creates in window.__sfumatoPCs. */
export const RECORD_PEER_CONNECTIONS = `(() => {
  if (window.__sfumatoPCs) return;
  const pcs = [];
  Object.defineProperty(window, '__sfumatoPCs', { value: pcs });
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  class RecordedPeerConnection extends Native {
    constructor(...args) {
      super(...args);
      pcs.push(this);
    }
  }
  window.RTCPeerConnection = RecordedPeerConnection;
  if (window.webkitRTCPeerConnection) window.webkitRTCPeerConnection = RecordedPeerConnection;
})();`;

/**
 * @param {{ignoreCertificateErrors?: boolean}} opts ignoreCertificateErrors: accept a
 *   self-signed certificate (only the TLS test asks for it).
 */
export function launchBrowser({ ignoreCertificateErrors = false } = {}) {
  const args = ignoreCertificateErrors ? [...CHROMIUM_ARGS, '--ignore-certificate-errors'] : CHROMIUM_ARGS;
  return chromium.launch({ executablePath: CHROMIUM_BIN, args, headless: true });
}

/**
 * A test session: one server, one browser, a browser context per participant.
 */
export class Session {
  /**
   * @param {{name: string, rtcPort: number, workers?: number, placement?: string, args?: string[], tls?: boolean}} opts
   *   tls: the server serves HTTPS/WSS with a self-signed certificate, which the browser accepts.
   */
  static async start(opts) {
    const s = new Session(opts.name);
    s.server = await startServer(opts);
    try {
      s.browser = await launchBrowser({ ignoreCertificateErrors: Boolean(opts.tls) });
    } catch (err) {
      await s.server.stop();
      throw err;
    }
    return s;
  }

  constructor(name) {
    this.name = name;
    this.server = null;
    this.browser = null;
    this.pages = [];
    this.consoleLog = [];
    /** What `close` runs before stopping the server (e.g. closing another browser). */
    this._closers = [];
  }

  /** Runs `fn` when the session closes, before its browser and server stop. */
  onClose(fn) {
    this._closers.push(fn);
  }

  /**
   * Opens `pathAndQuery` of the server in a fresh browser context; `label` tags its console
   * lines; `setup(page)` runs before the navigation (e.g. to route the signaling socket).
   */
  async open(pathAndQuery, label = pathAndQuery, { setup } = {}) {
    const context = await this.browser.newContext({ viewport: { width: 960, height: 640 } });
    await context.addInitScript(RECORD_PEER_CONNECTIONS);
    const page = await context.newPage();
    page.on('console', (m) => this._log(`[${label}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => this._log(`[${label}] pageerror: ${e.message}`));
    page.on('crash', () => this._log(`[${label}] page crashed`));
    if (setup) await setup(page);
    await page.goto(/^https?:/.test(pathAndQuery) ? pathAndQuery : this.server.url + pathAndQuery);
    page.label = label;
    this.pages.push(page);
    return page;
  }

  _log(line) {
    this.consoleLog.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
    if (this.consoleLog.length > 400) this.consoleLog.shift();
  }

  /** Runs `fn`; on failure appends the browser console and the server log tail to the error. */
  async run(fn) {
    try {
      return await fn();
    } catch (err) {
      const diag =
        `\n--- browser console (last 60 lines) ---\n${this.consoleLog.slice(-60).join('\n')}` +
        `\n--- server log tail (${this.server?.logPath}) ---\n${this.server?.logTail() ?? ''}`;
      if (err instanceof Error) {
        err.message += diag;
        throw err;
      }
      throw new Error(String(err) + diag);
    }
  }

  async close() {
    mkdirSync(RESULTS_DIR, { recursive: true });
    const out = createWriteStream(path.join(RESULTS_DIR, `${this.name}.browser.log`));
    out.end(this.consoleLog.join('\n') + '\n');
    for (const fn of this._closers) await Promise.resolve().then(fn).catch(() => {});
    if (this.browser) await this.browser.close().catch(() => {});
    if (this.server) await this.server.stop();
  }
}

// ------------------------------------------------------------------ WebRTC stats

/**
 * The page's inbound-rtp statistics, over every live RTCPeerConnection it created.
 * @returns {Promise<{key: string, kind: string, ssrc: number, mid?: string, framesDecoded: number,
 *   frameWidth: number, frameHeight: number, packetsReceived: number, packetsLost: number, bytesReceived: number}[]>}
 */
export function inboundStats(page) {
  return page.evaluate(async () => {
    const out = [];
    const pcs = window.__sfumatoPCs || [];
    for (let i = 0; i < pcs.length; i++) {
      const pc = pcs[i];
      if (pc.signalingState === 'closed' || pc.connectionState === 'closed') continue;
      let report;
      try {
        report = await pc.getStats();
      } catch {
        continue;
      }
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        out.push({
          key: `${i}:${s.ssrc}`,
          kind: s.kind || s.mediaType,
          ssrc: s.ssrc,
          mid: s.mid,
          framesDecoded: s.framesDecoded || 0,
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          packetsReceived: s.packetsReceived || 0,
          packetsLost: s.packetsLost || 0,
          bytesReceived: s.bytesReceived || 0,
        });
      });
    }
    return out;
  });
}

/**
 * Waits until, compared with the moment of the call, at least `video` inbound video streams
 * decoded `minFrames` more frames (with a frame width) and at least `audio` inbound audio
 * streams received `minPackets` more packets. Returns the last statistics.
 */
export async function waitForMedia(page, { video = 0, audio = 0, timeout = 30000, minFrames = 15, minPackets = 25 } = {}) {
  const base = new Map((await inboundStats(page)).map((s) => [s.key, s]));
  let summary = null;
  return waitFor(
    async () => {
      const now = await inboundStats(page);
      const grown = (s, field) => s[field] - (base.get(s.key)?.[field] ?? 0);
      const videos = now.filter((s) => s.kind === 'video' && grown(s, 'framesDecoded') >= minFrames && s.frameWidth > 0);
      const audios = now.filter((s) => s.kind === 'audio' && grown(s, 'packetsReceived') >= minPackets);
      summary = { decodingVideo: videos.length, receivingAudio: audios.length, stats: now };
      return videos.length >= video && audios.length >= audio ? summary : null;
    },
    {
      timeout,
      interval: 500,
      message: `${page.label ?? 'page'} to decode ${video} video and receive ${audio} audio stream(s)`,
      describe: () => JSON.stringify(summary),
    },
  );
}

/**
 * The first `type` ('inbound-rtp', 'outbound-rtp') statistics of `kind` on the page's live
 * peer connections, as a plain object with its codec's `mimeType` as `codec`; null if none.
 */
export function rtpStat(page, type, kind) {
  return page.evaluate(
    async ([type, kind]) => {
      for (const pc of window.__sfumatoPCs || []) {
        if (pc.connectionState === 'closed') continue;
        const report = await pc.getStats();
        for (const st of report.values()) {
          if (st.type === type && st.kind === kind) return { ...st, codec: report.get(st.codecId)?.mimeType };
        }
      }
      return null;
    },
    [type, kind],
  );
}

/** getUserMedia's audio becomes a continuous 440 Hz tone at `gain` (0: digital silence),
 * where Chromium's fake microphone only beeps now and then; video stays the fake camera.
 * An init script: `page.addInitScript(microphone(0.5))`. */
export const microphone = (gain) => `(() => {
  const md = navigator.mediaDevices;
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = async (c = {}) => {
    const stream = await original({ ...c, audio: false });
    if (c.audio) {
      const ctx = new AudioContext();
      const osc = ctx.createOscillator();
      const g = ctx.createGain();
      g.gain.value = ${gain};
      const dest = ctx.createMediaStreamDestination();
      osc.connect(g).connect(dest);
      osc.start();
      stream.addTrack(dest.stream.getAudioTracks()[0]);
    }
    return stream;
  };
})();`;

/** A page's main inbound video stream (the one that decoded the most frames). */
export async function mainVideo(page) {
  const v = (await inboundStats(page)).filter((x) => x.kind === 'video');
  v.sort((a, b) => b.framesDecoded - a.framesDecoded);
  return v[0] ?? { framesDecoded: 0, frameWidth: 0, packetsReceived: 0 };
}

/**
 * Switches every video the page receives to `quality` (room.setVideoQuality) and samples its
 * main video every 100 ms for `ms`: returns when it first decoded `reach(frameWidth)`, the
 * samples, and the longest stretch without a newly decoded frame.
 */
export async function switchQuality(page, quality, { reach, ms = 5000 }) {
  const start = Date.now();
  await page.evaluate((q) => {
    const room = window.sfumatoRoom;
    for (const sub of room.subscriptions) if (sub.kind === 'video') room.setVideoQuality(sub, q);
  }, quality);
  const offset = Date.now() - start;
  const { samples, frozenMs } = await watchVideo(page, ms - offset);
  const first = samples.find((x) => reach(x.width));
  return { reachedAt: first ? first.t + offset : null, samples, frozenMs };
}

/**
 * Samples the page's main video every 100 ms for `ms`: the frames decoded over the window,
 * the last width, and the longest time without a new frame.
 */
export async function watchVideo(page, ms) {
  const start = Date.now();
  const samples = [];
  while (Date.now() - start < ms) {
    const v = await mainVideo(page);
    samples.push({ t: Date.now() - start, frames: v.framesDecoded, width: v.frameWidth });
    await sleep(100);
  }
  let frozenMs = 0;
  let lastNew = samples[0];
  for (const x of samples) {
    if (x.frames > lastNew.frames) lastNew = x;
    frozenMs = Math.max(frozenMs, x.t - lastNew.t);
  }
  return { samples, frames: samples.at(-1).frames - samples[0].frames, width: samples.at(-1).width, frozenMs };
}

/**
 * Watches the video of the tile named `name` for `ms`, frame by frame as shown (through
 * requestVideoFrameCallback on whichever element the tile shows): the frames presented, the
 * longest time between two of them from the start of the window and when it ended, and when
 * the tile changed element, and the page's long tasks as [start, duration] (ms into the
 * window).
 */
export function watchTile(page, name, ms) {
  return page.evaluate(
    ({ name, ms }) =>
      new Promise((resolve) => {
        // The element on show (the page may hand the tile a new one, e.g. after a move).
        const current = () => [...document.querySelectorAll('#grid .tile')].find((t) => t.dataset.name === name)?.querySelector('video');
        if (!current()) return resolve({ frames: 0, longestGapMs: ms, missing: true });
        const start = performance.now();
        let last = start;
        let frames = 0;
        let longest = 0;
        let longestEnd = 0;
        let swappedAt = null;
        let done = false;
        const watched = new Set();
        // The page's own long tasks (main thread busy ≥ 50 ms), which stall frames too.
        const longTasks = [];
        const lt = new PerformanceObserver((list) => {
          for (const e of list.getEntries()) longTasks.push([Math.round(e.startTime - start), Math.round(e.duration)]);
        });
        try {
          lt.observe({ type: 'longtask' });
        } catch {}
        const watch = (video) => {
          if (watched.has(video)) return;
          watched.add(video);
          const onFrame = (now) => {
            if (done) return;
            if (video === current()) {
              frames++;
              if (now - last > longest) [longest, longestEnd] = [now - last, now];
              last = now;
            }
            video.requestVideoFrameCallback(onFrame);
          };
          video.requestVideoFrameCallback(onFrame);
        };
        const poll = setInterval(() => {
          const v = current();
          if (v && !watched.has(v) && swappedAt === null) swappedAt = performance.now();
          if (v) watch(v);
        }, 20);
        watch(current());
        setTimeout(() => {
          done = true;
          clearInterval(poll);
          const end = performance.now();
          if (end - last > longest) [longest, longestEnd] = [end - last, end];
          const at = (t) => (t === null ? null : Math.round(t - start));
          lt.disconnect();
          resolve({ frames, longestGapMs: Math.round(longest), gapEndedAt: at(longestEnd), elements: watched.size, swappedAt: at(swappedAt), longTasks: longTasks.filter(([t]) => t >= 0) });
        }, ms);
      }),
    { name, ms },
  );
}

/** Participant names shown as tiles on the demo page. */
export function tileNames(page) {
  return page.$$eval('#grid .tile:not(.local)', (els) => els.map((e) => e.dataset.name).sort());
}

// ------------------------------------------------------------------ server state

const LEAK_FIELDS = ['peers', 'tracks', 'subscriptions', 'sinks', 'pending_keyframe_requests'];

/** Waits until every worker of GET /api/workers is back to zero peers, tracks, subscriptions, …. */
export async function expectNoLeaks(server, { timeout = 10000 } = {}) {
  let workers = null;
  await waitFor(
    async () => {
      const { status, body } = await server.getJson('/api/workers');
      if (status !== 200 || !Array.isArray(body?.workers)) return false;
      workers = body.workers;
      return workers.every((w) => LEAK_FIELDS.every((f) => (w[f] ?? 0) === 0));
    },
    {
      timeout,
      message: `no peers, tracks, subscriptions, sinks or pending keyframe requests left on any worker`,
      describe: () => JSON.stringify(workers?.map((w) => Object.fromEntries(['worker', ...LEAK_FIELDS].map((f) => [f, w[f]])))),
    },
  );
}
