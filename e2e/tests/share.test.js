// The file-sharing page (/share, web/share.js): pages on the same link see each other; a 50
// MB generated file goes peer to peer, then through Sfumato over SCTP (end-to-end
// encrypted), then over the WebSocket, each verified by the receiver against the sender's
// SHA-256 and written into OPFS; a page whose link has another key cannot decrypt; a decline
// reaches the sender; a folder arrives with its relative paths. The test drives the page's
// own controls (drop zone, folder input, recipient boxes, Accept / Decline) and reads what
// the page shows (its rows' data attributes).

import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Session, waitFor } from '../lib/harness.js';

let s;
const MB = 1e6;
const KEY = 'k3y-for-the-test_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';

before(async () => {
  s = await Session.start({ name: 'share', rtcPort: 42500, workers: 2, placement: 'spread' });
});
after(() => s?.close());

/** Opens the share page for room `room` as `name`; waits until it joined. */
async function openShare(room, name, { path: forced, key = KEY, e2e } = {}) {
  const q = new URLSearchParams({ room, name });
  if (forced) q.set('path', forced);
  if (e2e === false) q.set('e2e', '0');
  const page = await s.open(`/share?${q}#key=${key}`, name);
  await waitFor(() => page.evaluate(() => Boolean(window.share?.room?.localParticipant)), { timeout: 15000, message: `${name} to join ${room}` });
  return page;
}

/** Waits until `page` lists exactly `names` as the people here. */
function seesPeople(page, names) {
  return waitFor(
    async () => {
      const shown = await page.$$eval('#people li', (lis) => lis.map((li) => li.dataset.name).sort());
      return JSON.stringify(shown) === JSON.stringify([...names].sort()) ? shown : null;
    },
    { timeout: 15000, message: `${page.label} to see ${names.join(', ')}` },
  );
}

/** Drops a generated file of `size` bytes on `page`'s drop zone; returns its SHA-256. */
function dropGenerated(page, name, size, seed) {
  return page.evaluate(
    async ({ name, size, seed }) => {
      const words = new Uint32Array(Math.ceil(size / 4));
      let x = seed >>> 0 || 1;
      for (let i = 0; i < words.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        words[i] = x >>> 0;
      }
      const bytes = new Uint8Array(words.buffer, 0, size);
      const sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], name, { type: 'application/octet-stream' }));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      return sha;
    },
    { name, size, seed },
  );
}

/** Ticks exactly the recipients named, then clicks Send. */
async function sendTo(page, names) {
  await waitFor(() => page.evaluate(() => !document.getElementById('send').disabled || document.querySelectorAll('#chosen li').length > 0), {
    message: `${page.label} to list the chosen files`,
  });
  for (const box of await page.$$('#people li input[type=checkbox]')) {
    const name = await box.evaluate((el) => el.closest('li').dataset.name);
    if (names.includes(name)) await box.check();
    else await box.uncheck();
  }
  await page.click('#send');
}

const row = (page, direction, name, state) =>
  page.$(`#transfers li[data-direction="${direction}"][data-name="${name}"]${state ? `[data-state="${state}"]` : ''}`);

/** Waits for the row of `name` in `direction` to reach one of `states`; returns its data. */
function rowIn(page, direction, name, states, timeout = 90000) {
  let last = null;
  return waitFor(
    async () => {
      const el = await row(page, direction, name);
      last = el ? await el.evaluate((li) => ({ ...li.dataset, text: li.innerText })) : null;
      return last && states.includes(last.state) ? last : null;
    },
    { timeout, interval: 250, message: `${page.label}'s ${direction} row ${name} to be ${states.join('|')}`, describe: () => JSON.stringify(last) },
  );
}

async function clickIn(page, direction, name, text) {
  await rowIn(page, direction, name, ['offered']);
  const el = await row(page, direction, name, 'offered');
  await (await el.$(`button:text-is("${text}")`)).click();
}

/** SHA-256 of the file at `opfsPath` in the page's origin private file system. */
function opfsHash(page, opfsPath) {
  return page.evaluate(async (p) => {
    let dir = await navigator.storage.getDirectory();
    const parts = p.split('/');
    for (const d of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(d);
    const file = await (await dir.getFileHandle(parts.at(-1))).getFile();
    const sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()))].map((b) => b.toString(16).padStart(2, '0')).join('');
    return { size: file.size, sha };
  }, opfsPath);
}

/** One 50 MB transfer from `a` to `b` over `expectPath`, verified on both sides. */
async function fiftyMegabytes(t, a, b, { name, seed, expectPath, encrypted }) {
  const size = 50 * MB;
  const sha = await dropGenerated(a, name, size, seed);
  await sendTo(a, ['bob']);
  await clickIn(b, 'in', name, 'Accept');
  const got = await rowIn(b, 'in', name, ['verified', 'failed']);
  const sent = await rowIn(a, 'out', name, ['verified', 'failed']);
  assert.equal(got.state, 'verified', `the receiver's row: ${got.text}`);
  assert.equal(sent.state, 'verified', `the sender's row: ${sent.text}`);
  assert.equal(got.sha256, sha, "the receiver's SHA-256 is the generated file's");
  assert.equal(sent.sha256, sha, "the sender's SHA-256 is the generated file's");
  assert.match(got.text, /verified: SHA-256 [0-9a-f]{64} matches/);
  assert.equal(got.path, expectPath);
  assert.equal(sent.path, expectPath);
  assert.equal(got.encrypted, String(encrypted));
  assert.equal(sent.encrypted, String(encrypted));
  // Written into OPFS, not held in memory.
  assert.equal(got.target, 'opfs');
  const onDisk = await opfsHash(b, got.opfs);
  assert.deepEqual(onDisk, { size, sha }, 'the file in OPFS has every byte');
  const secs = Number(sent.seconds);
  t.diagnostic(`${expectPath}${encrypted ? ' (end-to-end encrypted)' : ''}: 50 MB in ${secs.toFixed(1)} s, ${(size / MB / secs).toFixed(1)} MB/s (from the offer's acceptance to the sender's verdict)`);
}

test('two pages on one link see each other; 50 MB peer to peer, verified and in OPFS', (t) =>
  s.run(async () => {
    const a = await openShare('sh-p2p', 'ada');
    const b = await openShare('sh-p2p', 'bob');
    await seesPeople(a, ['bob']);
    await seesPeople(b, ['ada']);
    await waitFor(async () => (await a.$eval('#people li', (li) => li.dataset.link)) === 'open', { timeout: 15000, message: 'the direct link to come up' });
    await fiftyMegabytes(t, a, b, { name: 'direct.bin', seed: 1, expectPath: 'p2p', encrypted: false });
    await a.context().close();
    await b.context().close();
  }));

test('50 MB through Sfumato over SCTP (path=relay), end-to-end encrypted; a page with another key cannot decrypt', (t) =>
  s.run(async () => {
    const a = await openShare('sh-relay', 'ada', { path: 'relay' });
    const b = await openShare('sh-relay', 'bob', { path: 'relay' });
    await seesPeople(a, ['bob']);
    assert.equal(await a.evaluate(() => document.body.dataset.e2e), 'true');
    await waitFor(() => a.evaluate(() => window.share.room.data.transport === 'sctp'), { message: 'ada on data channels' });
    await fiftyMegabytes(t, a, b, { name: 'relayed.bin', seed: 2, expectPath: 'relay', encrypted: true });

    // Eve opened the link without its key (another one): she is offered the file and cannot
    // open it; the sender hears so.
    const eve = await openShare('sh-relay', 'eve', { path: 'relay', key: 'another-key' });
    await seesPeople(a, ['bob', 'eve']);
    await dropGenerated(a, 'secret.bin', 100000, 3);
    await sendTo(a, ['eve']);
    const atEve = await rowIn(eve, 'in', '(encrypted file)', ['failed']);
    assert.match(atEve.text, /does not decrypt/);
    const atAda = await rowIn(a, 'out', 'secret.bin', ['declined', 'failed']);
    assert.match(atAda.text, /cannot decrypt/);
    for (const p of [a, b, eve]) await p.context().close();
  }));

test('50 MB through Sfumato over the WebSocket (path=ws)', (t) =>
  s.run(async () => {
    const a = await openShare('sh-ws', 'ada', { path: 'ws', e2e: false });
    const b = await openShare('sh-ws', 'bob', { path: 'ws', e2e: false });
    await seesPeople(a, ['bob']);
    assert.equal(await a.evaluate(() => window.share.room.data.transport), 'ws');
    await fiftyMegabytes(t, a, b, { name: 'socket.bin', seed: 4, expectPath: 'ws', encrypted: false });
    await a.context().close();
    await b.context().close();
  }));

test('a decline reaches the sender; a folder arrives with its relative paths', () =>
  s.run(async () => {
    const a = await openShare('sh-misc', 'ada');
    const b = await openShare('sh-misc', 'bob');
    await seesPeople(a, ['bob']);
    await dropGenerated(a, 'unwanted.bin', 200000, 5);
    await sendTo(a, ['bob']);
    await clickIn(b, 'in', 'unwanted.bin', 'Decline');
    const declined = await rowIn(a, 'out', 'unwanted.bin', ['declined', 'failed']);
    assert.equal(declined.state, 'declined');
    assert.match(declined.text, /declined by bob/);

    const root = mkdtempSync(path.join(os.tmpdir(), 'share-'));
    const dir = path.join(root, 'album');
    mkdirSync(path.join(dir, 'sub', 'deeper'), { recursive: true });
    const files = { 'album/one.txt': 'one\n', 'album/sub/two.txt': 'two two\n', 'album/sub/deeper/three.bin': Buffer.alloc(150000, 3) };
    for (const [rel, body] of Object.entries(files)) writeFileSync(path.join(root, rel), body);
    await a.setInputFiles('#pick-folder', dir);
    await sendTo(a, ['bob']);
    const first = await waitFor(async () => (await b.$('#transfers li[data-direction="in"][data-state="offered"]')) ?? null, { message: 'the first file of the folder offered' });
    await (await first.$('button:text-matches("Accept all")')).click();
    for (const rel of Object.keys(files)) {
      const got = await rowIn(b, 'in', rel, ['verified', 'failed']);
      assert.equal(got.state, 'verified', `${rel}: ${got.text}`);
      const want = await b.evaluate(async (body) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', new Uint8Array(body)))].map((x) => x.toString(16).padStart(2, '0')).join(''), [...Buffer.from(files[rel])]);
      assert.equal(got.sha256, want, `${rel} arrived whole`);
    }
    await a.context().close();
    await b.context().close();
  }));
