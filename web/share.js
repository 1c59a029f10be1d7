// The file-sharing page, /share?room=R#key=K: everyone who opens the same link sees the
// others; one drops files or a folder, ticks recipients, and each recipient accepts or
// declines each file. A transfer goes over a direct RTCPeerConnection between the two
// browsers (share-p2p.js) when it is up within a few seconds, else through Sfumato's data
// channels, else over the signaling WebSocket; `&path=p2p|relay|ws` forces one (ws: the page
// joins with `transport: 'ws'`). Relayed transfers are end-to-end encrypted with the link's
// key (share-crypto.js; `&e2e=0` turns that off). Received files go to disk (share-disk.js).
// Both sides show the path, progress, speed, time left, and the SHA-256 verdict.

import { Sfumato } from '/sdk/sfumato.js';
import { DirectLinks } from './share-p2p.js';
import { importLinkKey, isSealed, newKey, opener, sealer } from './share-crypto.js';
import { canPickFile, defaultTarget, pickedTarget, safeName } from './share-disk.js';

const $ = (id) => document.getElementById(id);
const TOPIC = 'share';
const NAME_TOPIC = 'share/name';
/** How long an automatic choice waits for the direct link before going through Sfumato. */
const P2P_WAIT_MS = 5000;
/** Transfers under way (offered or moving) to one recipient at once; the rest queue. */
const PER_PEER = 3;

// ------------------------------------------------------------------ the link

const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const validRoom = (r) => r && new TextEncoder().encode(r).byteLength <= 64 && !/[\u0000-\u001f\u007f-\u009f]/.test(r);
let roomName = params.get('room');
if (!validRoom(roomName)) {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  roomName = `share-${[...bytes].map((b) => 'abcdefghijkmnpqrstuvwxyz23456789'[b & 31]).join('')}`;
  params.set('room', roomName);
}
let keyText = fragment.get('key');
if (!keyText) {
  keyText = newKey();
  fragment.set('key', keyText);
}
history.replaceState(null, '', `${location.pathname}?${params}#${fragment}`);
const forcedPath = ['p2p', 'relay', 'ws'].includes(params.get('path')) ? params.get('path') : null;
const e2e = params.get('e2e') !== '0';
// An access token, for a server started with API keys (the join name is then the token's).
const token = params.get('token') || undefined;

// ------------------------------------------------------------------ state

const ADJECTIVES = ['Amber', 'Brisk', 'Calm', 'Dusky', 'Eager', 'Fuzzy', 'Gentle', 'Hazy', 'Ivory', 'Jolly', 'Keen', 'Lucid', 'Misty', 'Nimble', 'Olive', 'Quiet'];
const ANIMALS = ['Otter', 'Heron', 'Lynx', 'Moth', 'Finch', 'Hare', 'Newt', 'Owl', 'Panda', 'Quail', 'Raven', 'Seal', 'Toad', 'Vole', 'Wren', 'Yak'];
const pick = (list) => list[crypto.getRandomValues(new Uint8Array(1))[0] % list.length];
const storedName = (() => {
  try {
    return localStorage.getItem('sfumato-share-name');
  } catch {
    return null;
  }
})();
/** A display name: no control characters, at most 64 bytes of UTF-8 (the server's limit). */
function cleanName(text) {
  let n = String(text ?? '').replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim();
  while (new TextEncoder().encode(n).byteLength > 64) n = [...n].slice(0, -1).join('');
  return n;
}
let myName = cleanName(params.get('name')) || cleanName(storedName) || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`;

let room = null;
let links = null;
let linkKey = null;
/** participant id → the name it chose (share/name), else its join name */
const displayNames = new Map();
/** Files chosen and not sent yet: [{file, path}] */
let chosen = [];
/** Every transfer shown, both directions. */
const transfers = [];
let serial = 0;
/** Batches whose files are accepted as they come (Accept all). */
const acceptedBatches = new Set();

const nameOf = (id) => displayNames.get(id) ?? room?.participants.find((p) => p.id === id)?.name ?? id;

function setStatus(text, level = '') {
  $('status').textContent = text;
  $('status').className = level;
}

// ------------------------------------------------------------------ formatting

function bytes(n) {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let u = -1;
  do {
    n /= 1000;
    u++;
  } while (n >= 1000 && u < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[u]}`;
}

function duration(s) {
  if (!Number.isFinite(s)) return '–';
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const PATH_LABEL = { p2p: 'peer to peer', relay: 'through Sfumato (data channel)', ws: 'through Sfumato (WebSocket)' };

/** A relative path from a peer (untrusted), for display: no empty, `.` or `..` segments. */
function cleanPath(p, fallback) {
  const segs = String(p ?? '')
    .slice(0, 1024)
    .split(/[\\/]/)
    .filter((s) => s && s !== '.' && s !== '..');
  return segs.length ? segs.join('/') : fallback;
}

// ------------------------------------------------------------------ people

/** participant id → its row in the list (kept across renders: its box keeps its state) */
const peopleRows = new Map();

function renderPeople() {
  const ul = $('people');
  const others = room ? room.participants : [];
  for (const [id, li] of peopleRows) {
    if (!others.some((p) => p.id === id)) {
      li.remove();
      peopleRows.delete(id);
    }
  }
  for (const p of others) {
    let li = peopleRows.get(p.id);
    if (!li) {
      li = document.createElement('li');
      li.dataset.peerId = p.id;
      const label = document.createElement('label');
      label.className = 'check';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.value = p.id;
      box.addEventListener('change', updateSendButton);
      // The first person to come is who files go to, until told otherwise.
      box.checked = others.length === 1 && peopleRows.size === 0;
      const name = document.createElement('span');
      name.className = 'name';
      const link = document.createElement('span');
      label.append(box, name, link);
      li.append(label);
      ul.append(li);
      peopleRows.set(p.id, li);
    }
    li.dataset.name = nameOf(p.id);
    li.querySelector('.name').textContent = nameOf(p.id);
    const state = links?.state(p.id) ?? null;
    const link = li.querySelector('label > span:last-child');
    link.className = `link ${state ?? ''}`;
    link.textContent = state === 'open' ? 'direct link' : state === 'connecting' ? 'connecting directly…' : 'through Sfumato';
    li.dataset.link = state ?? 'none';
  }
  $('nobody').hidden = others.length > 0;
  updateSendButton();
}

function recipients() {
  return [...$('people').querySelectorAll('input:checked')].map((i) => i.value);
}

function updateSendButton() {
  $('send').disabled = !(chosen.length && recipients().length && room);
  $('send').textContent = chosen.length ? `Send ${chosen.length} file${chosen.length > 1 ? 's' : ''} to the people ticked` : 'Send to the people ticked';
}

// ------------------------------------------------------------------ choosing files

function renderChosen() {
  const ul = $('chosen');
  ul.replaceChildren(
    ...chosen.map(({ file, path }, i) => {
      const li = document.createElement('li');
      li.textContent = `${path} (${bytes(file.size)}) `;
      const rm = document.createElement('button');
      rm.type = 'button';
      rm.className = 'small';
      rm.textContent = 'remove';
      rm.addEventListener('click', () => {
        chosen.splice(i, 1);
        renderChosen();
      });
      li.append(rm);
      return li;
    }),
  );
  updateSendButton();
}

function addFiles(list) {
  for (const { file, path } of list) chosen.push({ file, path: path || file.name });
  renderChosen();
}

/** The files under a dropped directory entry, with their paths relative to its parent. */
async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, path: entry.fullPath.replace(/^\//, '') });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const e of batch) await walk(e, out);
    }
  }
}

async function dropped(dt) {
  const out = [];
  const entries = [...(dt.items ?? [])].map((it) => (it.kind === 'file' ? { entry: it.webkitGetAsEntry?.(), file: it.getAsFile() } : null)).filter(Boolean);
  if (entries.length) {
    for (const { entry, file } of entries) {
      if (entry) await walk(entry, out);
      else if (file) out.push({ file, path: file.name });
    }
  } else {
    for (const file of dt.files ?? []) out.push({ file, path: file.name });
  }
  addFiles(out);
}

// ------------------------------------------------------------------ transfers: display

function rowFor(t) {
  if (t.row) return t.row;
  const li = document.createElement('li');
  li.className = `transfer ${t.direction}`;
  const head = document.createElement('div');
  head.className = 'head';
  const what = document.createElement('span');
  what.className = 'what';
  const who = document.createElement('span');
  who.className = 'who';
  head.append(what, who);
  const bar = document.createElement('progress');
  bar.max = 1;
  bar.value = 0;
  const figures = document.createElement('div');
  figures.className = 'figures';
  const verdict = document.createElement('div');
  verdict.className = 'verdict';
  const actions = document.createElement('div');
  actions.className = 'actions';
  li.append(head, bar, figures, verdict, actions);
  t.row = li;
  t.el = { what, who, bar, figures, verdict, actions };
  $('transfers').prepend(li);
  return li;
}

function render(t) {
  const li = rowFor(t);
  li.dataset.direction = t.direction;
  li.dataset.state = t.state;
  li.dataset.path = t.path ?? '';
  li.dataset.name = t.name;
  li.dataset.encrypted = String(Boolean(t.encrypted));
  if (t.sha256) li.dataset.sha256 = t.sha256;
  if (t.target) li.dataset.target = t.target;
  if (t.opfsPath) li.dataset.opfs = t.opfsPath;
  li.dataset.verified = String(t.state === 'verified');
  if (t.state === 'verified') li.dataset.seconds = t.seconds.toFixed(3);
  t.el.what.textContent = `${t.name} · ${bytes(t.size)}`;
  t.el.who.textContent = `${t.direction === 'out' ? 'to' : 'from'} ${nameOf(t.peer)}${t.path ? ` · ${PATH_LABEL[t.path]}` : ''}${t.encrypted ? ' · end-to-end encrypted' : ''}`;
  t.el.bar.value = t.size ? t.done / t.size : t.state === 'verified' ? 1 : 0;
  const moving = t.state === 'sending' || t.state === 'receiving';
  const left = t.speed > 0 ? (t.size - t.done) / t.speed : Infinity;
  t.el.figures.textContent = moving
    ? `${bytes(t.done)} of ${bytes(t.size)} · ${(t.speed / 1e6).toFixed(1)} MB/s · ${duration(left)} left${t.waiting ? ` · waiting for ${t.waiting}` : ''}`
    : t.state === 'verified'
      ? `${bytes(t.size)} in ${duration(t.seconds)} · ${(t.size / 1e6 / Math.max(t.seconds, 0.001)).toFixed(1)} MB/s`
      : '';
  const texts = {
    queued: 'queued',
    choosing: 'finding a path…',
    offered: t.direction === 'out' ? 'waiting for the recipient to accept' : 'offered to you',
    declined: `declined${t.reason ? `: ${t.reason}` : ''}`,
    failed: `failed: ${t.reason}`,
    verified: `verified: SHA-256 ${t.sha256}${t.direction === 'in' ? ' matches the sender’s' : ' confirmed by the recipient'}`,
  };
  t.el.verdict.textContent = texts[t.state] ?? (t.memoryWarning ? 'kept in memory (this browser offers no file storage)' : '');
  t.el.verdict.className = `verdict ${t.state}`;
}

/** Speed over the last few seconds, from progress samples. */
function progressed(t, done) {
  const now = performance.now();
  t.done = done;
  t.samples.push([now, done]);
  while (t.samples.length > 2 && now - t.samples[0][0] > 3000) t.samples.shift();
  const [t0, d0] = t.samples[0];
  if (now - t0 > 200) t.speed = ((done - d0) * 1000) / (now - t0);
  if (!t.renderQueued) {
    t.renderQueued = true;
    setTimeout(() => {
      t.renderQueued = false;
      render(t);
    }, 200);
  }
}

function newTransfer(fields) {
  const t = { id: `t${++serial}`, state: 'queued', done: 0, speed: 0, samples: [], seconds: 0, path: null, encrypted: false, ...fields };
  transfers.push(t);
  render(t);
  return t;
}

function finish(t, state, reason = '') {
  t.state = state;
  t.reason = reason;
  t.seconds = (performance.now() - (t.started ?? performance.now())) / 1000;
  t.el.actions.replaceChildren();
  render(t);
}

// ------------------------------------------------------------------ sending

/** Where a transfer to `peer` goes: {path, target} with target a Streams or room.data. */
async function choosePath(peer) {
  if (forcedPath === 'relay' || forcedPath === 'ws') return { path: room.data.transport === 'ws' ? 'ws' : 'relay', target: room.data };
  const direct = links.streams(peer) ?? (await links.waitOpen(peer, forcedPath === 'p2p' ? 20000 : P2P_WAIT_MS));
  if (direct) return { path: 'p2p', target: direct };
  if (forcedPath === 'p2p') throw new Error('the direct link did not come up (path=p2p)');
  return { path: room.data.transport === 'ws' ? 'ws' : 'relay', target: room.data };
}

function queueSend(list, to) {
  const batch = Math.random().toString(36).slice(2, 10);
  for (const peer of to) {
    for (const { file, path } of list) newTransfer({ direction: 'out', peer, file, name: path, size: file.size, batch, count: list.length });
  }
  pump();
}

/** Starts queued outgoing transfers, up to PER_PEER at once to each recipient. */
function pump() {
  const busy = new Map();
  for (const t of transfers) if (t.direction === 'out' && ['choosing', 'offered', 'sending'].includes(t.state)) busy.set(t.peer, (busy.get(t.peer) ?? 0) + 1);
  for (const t of transfers) {
    if (t.direction !== 'out' || t.state !== 'queued') continue;
    if ((busy.get(t.peer) ?? 0) >= PER_PEER) continue;
    busy.set(t.peer, (busy.get(t.peer) ?? 0) + 1);
    send(t).finally(pump);
  }
}

async function send(t) {
  t.state = 'choosing';
  render(t);
  const ac = new AbortController();
  t.abort = ac;
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.className = 'small danger';
  cancel.textContent = 'Cancel';
  cancel.addEventListener('click', () => ac.abort(new Error('cancelled by the sender')));
  t.el.actions.replaceChildren(cancel);
  try {
    const { path, target } = await choosePath(t.peer);
    if (ac.signal.aborted) throw ac.signal.reason;
    t.path = path;
    t.state = 'offered';
    t.started = performance.now();
    render(t);
    const attributes = { path: t.name, batch: t.batch, count: String(t.count), route: path };
    const common = { topic: TOPIC, signal: ac.signal, ...(path === 'p2p' ? {} : { to: t.peer }) };
    let wireSize = t.size;
    const onProgress = (p) => {
      if (p.waiting !== 'accept' && t.state === 'offered') {
        t.state = 'sending';
        t.started = performance.now();
      }
      t.waiting = p.waiting === 'credit' ? 'the recipient' : p.waiting === 'peer' ? 'the link' : null;
      // Confirmed bytes, on the plaintext's scale.
      progressed(t, Math.round((p.confirmed / Math.max(wireSize, 1)) * t.size));
    };
    if (path !== 'p2p' && e2e && linkKey) {
      t.encrypted = true;
      const s = await sealer(linkKey, t.file, t.name);
      wireSize = s.size;
      const w = target.streamBytes({ ...common, size: s.size, name: 'encrypted', mime: 'application/octet-stream', attributes: { ...attributes, ...s.attributes, path: '' }, onProgress });
      const pumped = s.pump(w.writable, ac.signal);
      pumped.catch(() => {});
      await w.done;
      t.sha256 = await pumped;
    } else {
      const r = await target.sendFile(t.file, { ...common, name: t.name.split('/').pop(), mime: t.file.type, attributes, onProgress });
      t.sha256 = r.sha256;
    }
    t.done = t.size;
    finish(t, 'verified');
  } catch (err) {
    if (err?.code === 'rejected') finish(t, 'declined', String(err.message).replace(/^the receiver rejected the stream:?\s*/, ''));
    else finish(t, 'failed', err?.message ?? String(err));
  }
}

// ------------------------------------------------------------------ receiving

/** A stream offered on TOPIC by `from` over `via` ('p2p' or room.data's transport). */
async function offered(stream, via) {
  const info = stream.info;
  const a = info.attributes ?? {};
  const peer = via.path === 'p2p' ? via.peer : info.from;
  let name = cleanPath(a.path, safeName(info.name));
  let size = info.size;
  let open = null;
  if (isSealed(a)) {
    if (!linkKey) return stream.reject('this page has no key (the link lost its #key=)');
    try {
      open = await opener(linkKey, a, info.size);
    } catch (err) {
      const t = newTransfer({ direction: 'in', peer, name: '(encrypted file)', size: info.size, encrypted: true });
      finish(t, 'failed', err.message);
      return stream.reject(`cannot decrypt: ${err.message}`);
    }
    name = cleanPath(open.name, 'file');
    size = open.size;
  }
  const path = ['p2p', 'relay', 'ws'].includes(a.route) ? a.route : via.path;
  const t = newTransfer({ direction: 'in', peer, name, size, path, encrypted: Boolean(open), stream, batch: String(a.batch ?? '') });
  t.state = 'offered';
  stream.done.catch((err) => {
    if (t.state === 'offered' || t.state === 'receiving') finish(t, 'failed', err?.message ?? String(err));
  });
  const accept = async (picker) => {
    if (t.state !== 'offered') return;
    let target;
    try {
      target = picker ? await pickedTarget(name) : await defaultTarget(name);
    } catch (err) {
      return; // the user closed the picker: the offer stays
    }
    if (t.state !== 'offered' || stream.state !== 'offered') return void target.remove();
    t.target = target.kind;
    t.opfsPath = target.path;
    t.memoryWarning = target.kind === 'memory';
    t.state = 'receiving';
    t.started = performance.now();
    t.el.actions.replaceChildren(button('Cancel', () => stream.cancel('cancelled by the recipient'), 'danger'));
    render(t);
    const sink = open ? open.sink(target.sink) : target.sink;
    stream.accept({ sink, onProgress: (p) => progressed(t, Math.round((p.consumed / Math.max(info.size, 1)) * size)) });
    try {
      const r = await stream.done;
      t.sha256 = open ? open.sha256 : r.sha256;
      t.done = size;
      finish(t, 'verified');
      const file = await target.file();
      const link = document.createElement('a');
      link.href = URL.createObjectURL(file);
      link.download = safeName(name);
      link.textContent = target.kind === 'picked' ? 'Open' : 'Save';
      link.className = 'save';
      t.el.actions.replaceChildren(link);
      if (target.kind !== 'picked') t.el.actions.append(button('Remove', () => {
        URL.revokeObjectURL(link.href);
        target.remove();
        t.el.actions.replaceChildren();
      }));
    } catch (err) {
      target.remove();
      if (t.state !== 'failed') finish(t, 'failed', err?.message ?? String(err));
    }
  };
  t.accept = () => accept(false);
  const actions = [button('Accept', () => accept(false))];
  if (canPickFile()) actions.push(button('Save as…', () => accept(true)));
  actions.push(button('Decline', () => {
    if (t.state !== 'offered') return;
    stream.reject(`declined by ${myName}`);
    finish(t, 'declined');
  }, 'danger'));
  if (Number(a.count) > 1 && t.batch) {
    actions.push(button(`Accept all ${Number(a.count)}`, () => {
      acceptedBatches.add(`${peer}:${t.batch}`);
      for (const x of transfers) if (x.direction === 'in' && x.state === 'offered' && x.batch === t.batch && x.peer === peer) x.accept();
    }));
  }
  t.el.actions.replaceChildren(...actions);
  render(t);
  if (acceptedBatches.has(`${peer}:${t.batch}`)) accept(false);
}

function button(text, onClick, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = `small ${cls}`;
  b.textContent = text;
  b.addEventListener('click', onClick);
  return b;
}

// ------------------------------------------------------------------ start

async function main() {
  $('room-label').textContent = roomName;
  $('link').href = location.href;
  $('copy-link').addEventListener('click', () => navigator.clipboard?.writeText(location.href));
  $('my-name').value = myName;
  linkKey = await importLinkKey(keyText).catch(() => null);
  $('crypto-line').textContent = !e2e
    ? 'End-to-end encryption is off (e2e=0): relayed files cross Sfumato in the clear (direct ones are encrypted by WebRTC).'
    : linkKey
      ? 'Files relayed through Sfumato are end-to-end encrypted with the key in this link’s #fragment, which never reaches the server; direct transfers are encrypted by WebRTC.'
      : 'This browser has no WebCrypto here (open the page over HTTPS): relayed files are not end-to-end encrypted.';
  document.body.dataset.e2e = String(e2e && Boolean(linkKey));

  $('pick-files').addEventListener('change', (e) => {
    addFiles([...e.target.files].map((file) => ({ file, path: file.name })));
    e.target.value = '';
  });
  $('pick-folder').addEventListener('change', (e) => {
    addFiles([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
    e.target.value = '';
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    dropped(e.dataTransfer).catch((err) => setStatus(`could not read what was dropped: ${err.message}`, 'error'));
  });
  $('send').addEventListener('click', () => {
    const to = recipients();
    if (!chosen.length || !to.length) return;
    queueSend(chosen, to);
    chosen = [];
    renderChosen();
  });

  try {
    room = await Sfumato.connect(Sfumato.defaultUrl(), { room: roomName, name: myName, token, transport: forcedPath === 'ws' ? 'ws' : undefined });
  } catch (err) {
    setStatus(`could not join: ${err.message}`, 'error');
    return;
  }
  const tell = (to) => room.data.send(myName, { topic: NAME_TOPIC, ...(to ? { to: [to] } : {}) }).catch(() => {});
  room.data.on(NAME_TOPIC, ({ from, payload }) => {
    if (typeof payload !== 'string') return;
    const n = cleanName(payload.slice(0, 256));
    if (n) displayNames.set(from, n);
    renderPeople();
    for (const t of transfers) if (t.peer === from) render(t);
  });
  $('my-name').addEventListener('change', () => {
    const n = cleanName($('my-name').value);
    if (!n) return void ($('my-name').value = myName);
    myName = n;
    try {
      localStorage.setItem('sfumato-share-name', n);
    } catch {
      /* private mode */
    }
    tell(null);
  });
  room.on('participantJoined', ({ participant }) => {
    if (myName !== room.name) tell(participant.id);
    renderPeople();
  });
  room.on('participantLeft', ({ participant }) => {
    displayNames.delete(participant.id);
    renderPeople();
  });
  const showTransport = () => setStatus(`connected · data ${room.data.transport === 'ws' ? 'over the WebSocket' : 'over data channels'}${forcedPath ? ` · path=${forcedPath}` : ''}`);
  room.on('dataTransport', showTransport);
  room.on('reconnecting', ({ attempt }) => setStatus(`reconnecting (${attempt})…`, 'warn'));
  room.on('reconnected', showTransport);
  room.on('disconnected', ({ reason }) => setStatus(`disconnected: ${reason}`, 'error'));

  room.data.registerByteStreamHandler(TOPIC, (stream) => offered(stream, { path: room.data.transport === 'ws' ? 'ws' : 'relay' }));
  room.data.registerByteStreamHandler('*', (stream) => stream.reject('this page takes files on the share topic only'));
  links = new DirectLinks(room, {
    onStreams: (peer, streams) => {
      streams.registerByteStreamHandler(TOPIC, (stream) => offered(stream, { path: 'p2p', peer }));
      streams.registerByteStreamHandler('*', (stream) => stream.reject('this page takes files on the share topic only'));
    },
    onChange: renderPeople,
  });
  if (forcedPath !== 'relay' && forcedPath !== 'ws') links.start();
  showTransport();
  renderPeople();
  window.share = { room, links, transfers, addFiles, queueSend };
}

main();
