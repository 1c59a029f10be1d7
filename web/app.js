// The room demo: /?room=R&name=N joins at once and publishes camera and microphone
// (&publish=0 joins as a viewer; &quality=low|medium|high fixes the simulcast layer received
// of every video, else each video's size and visibility choose it; &token=T is the access
// token of a server started with API keys, whose name is then the token's; &transport=ws keeps
// data messages on the signaling socket instead of the data channels); without room and name
// (or token) it shows a form. The chat panel (opened by its button, so that the videos keep
// the whole width meanwhile) sends and shows data messages of topic `chat`,
// and which transport they take. A publisher picks its camera and microphone (the two
// choosers), turns its camera off (the device is released) and on, and shares its screen,
// which everyone sees in a tile of its own.

import { Sfumato } from '/sdk/sfumato.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const roomName = params.get('room') ?? '';
const userName = params.get('name') ?? '';
// An access token, for a server started with API keys (its name is then the token's).
const token = params.get('token') || undefined;
const publishing = params.get('publish') !== '0';
const quality = ['low', 'medium', 'high'].includes(params.get('quality')) ? params.get('quality') : undefined;
const videoCodec = ['vp8', 'vp9', 'av1', 'h264'].includes(params.get('codec')) ? params.get('codec') : undefined;
const dataTransport = params.get('transport') === 'ws' ? 'ws' : undefined;

/** @type {import('/sdk/index.d.ts').Room | null} */
let room = null;
/** participant id (or 'local') → tile element */
const tiles = new Map();
/** remote video track id → stops its element choosing its quality (observeVideo) */
const observers = new Map();

// ------------------------------------------------------------------ status line

function setStatus(text, level = '') {
  const el = $('status');
  el.textContent = text;
  el.className = level;
}

// ------------------------------------------------------------------ tiles

function initials(name) {
  return (name.trim()[0] ?? '?').toUpperCase();
}

/** The tile key of a participant's screen share ('local' for ours). */
const screenKey = (id) => `${id}:screen`;
const isScreen = (source) => source === 'screen' || source === 'screen_audio';

function ensureTile(id, name, { local = false, screen = false } = {}) {
  let tile = tiles.get(id);
  if (tile) return tile;
  tile = document.createElement('div');
  tile.className = ['tile', local && 'local', screen && 'screen'].filter(Boolean).join(' ');
  tile.dataset.participantId = id;
  tile.dataset.name = name;

  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound goes through the <audio> element
  tile.append(video);

  if (!local) {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    tile.append(audio);
  }

  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  avatar.textContent = initials(name);
  tile.append(avatar);

  const label = document.createElement('div');
  label.className = 'label';
  const text = document.createElement('span');
  text.textContent = local ? `${name} (you)` : name;
  const micOff = document.createElement('span');
  micOff.className = 'mic-off';
  micOff.textContent = 'muted';
  label.append(text, micOff);
  tile.append(label);

  if (local) $('grid').prepend(tile);
  else $('grid').append(tile);
  tiles.set(id, tile);
  return tile;
}

function removeTile(id) {
  const tile = tiles.get(id);
  if (!tile) return;
  for (const el of tile.querySelectorAll('video, audio')) el.srcObject = null;
  tile.remove();
  tiles.delete(id);
}

function clearTiles() {
  for (const id of [...tiles.keys()]) removeTile(id);
}

function play(el) {
  el.play().catch((err) => {
    if (err?.name === 'NotAllowedError') $('unblock-audio').hidden = false;
  });
}

/** Per tile: the video element that waits for its first picture to take the place of the
 * one on show (`attach`). */
const pendingVideo = new WeakMap();

/**
 * Shows `stream` in the tile; resolves to the element that shows it, once it does. A video
 * on show that gets a new stream (a participant moved to another node of a cluster) keeps
 * playing until the new stream has a picture in a second element, which then takes its
 * place, or until its own stream ends (`detach`): the picture never blanks while a fresh
 * element loads.
 */
function attach(tile, kind, stream) {
  const el = tile.querySelector(kind === 'video' ? 'video' : 'audio');
  if (!el) return Promise.resolve(null);
  if (kind === 'video') tile.classList.add('has-video');
  const live = el.srcObject?.getVideoTracks().some((t) => t.readyState === 'live');
  if (kind !== 'video' || !live || el.srcObject === stream) {
    el.srcObject = stream;
    play(el);
    return Promise.resolve(el);
  }
  const next = el.cloneNode(false);
  next.srcObject = stream;
  play(next);
  return new Promise((resolve) => {
    const swap = () => {
      if (pendingVideo.get(tile)?.next !== next) return;
      pendingVideo.delete(tile);
      if (el.isConnected && !next.isConnected) el.replaceWith(next);
      resolve(next);
    };
    pendingVideo.set(tile, { next, swap });
    next.addEventListener('loadeddata', swap, { once: true });
  });
}

/** Clears the tile's element if it still shows `mediaStreamTrack` (or hands the tile to the
 * element waiting to replace it); says whether it did. */
function detach(tile, kind, mediaStreamTrack) {
  const el = tile.querySelector(kind === 'video' ? 'video' : 'audio');
  if (!el || !el.srcObject) return false;
  if (!el.srcObject.getTracks().includes(mediaStreamTrack)) return false;
  const pending = kind === 'video' && pendingVideo.get(tile);
  if (pending) {
    pending.swap();
    return true;
  }
  el.srcObject = null;
  if (kind === 'video') tile.classList.remove('has-video');
  return true;
}

function showMuted(tile, kind, muted) {
  if (kind === 'audio') tile.classList.toggle('audio-muted', muted);
  if (kind === 'video') tile.classList.toggle('has-video', !muted && !!tile.querySelector('video').srcObject);
}

// ------------------------------------------------------------------ chat

const CHAT_TOPIC = 'chat';

/** The name of participant `id` (the sender of a message), from the room's participant list. */
function nameOf(id) {
  return room?.participants.find((p) => p.id === id)?.name ?? id;
}

function addChatLine(who, text, { self = false, failed = false } = {}) {
  const log = $('chat-log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  const li = document.createElement('li');
  if (self) li.className = 'self';
  const name = document.createElement('span');
  name.className = 'who';
  name.textContent = who;
  const body = document.createElement('span');
  body.className = failed ? 'text failed' : 'text';
  body.textContent = text;
  li.append(name, body);
  log.append(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

/** Messages received while the chat panel was closed. */
let unread = 0;

/** Opens or closes the chat panel (closed, the videos have the whole width). */
function toggleChat(open = $('chat').hidden) {
  $('chat').hidden = !open;
  $('chat-toggle').setAttribute('aria-pressed', String(open));
  if (open) {
    unread = 0;
    $('chat-input').focus();
  }
  $('chat-toggle').textContent = unread ? `Chat (${unread})` : 'Chat';
}

/** A message arrived: counted on the button while the panel is closed. */
function noteUnread() {
  if (!$('chat').hidden) return;
  unread += 1;
  $('chat-toggle').textContent = `Chat (${unread})`;
}

/** Shows which transport data messages take (`sctp`, `ws`, or none while reconnecting). */
function showTransport(kind) {
  const el = $('chat-transport');
  el.textContent = kind ? `via ${kind === 'sctp' ? 'data channel' : 'WebSocket'}` : '';
  el.dataset.transport = kind ?? '';
}

async function sendChat(ev) {
  ev.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text || !room) return;
  input.value = '';
  // Nobody receives their own messages: show ours here.
  const me = room.localParticipant?.name ?? userName;
  try {
    await room.data.send(text, { topic: CHAT_TOPIC, reliable: true });
    addChatLine(me, text, { self: true });
  } catch (err) {
    addChatLine(me, `${text} (not sent: ${err?.message ?? err})`, { self: true, failed: true });
  }
}

// ------------------------------------------------------------------ room

/**
 * A participant moving to another node of a cluster joins there before it leaves here: its
 * tile passes to the new session, whose video replaces the old one once it plays.
 */
function takeOver(p) {
  const tile = p.replaces && tiles.get(p.replaces);
  if (!tile || tiles.has(p.id)) return;
  tiles.delete(p.replaces);
  tile.dataset.participantId = p.id;
  tiles.set(p.id, tile);
}

function wire(r) {
  r.on('participantJoined', ({ participant: p }) => {
    takeOver(p);
    ensureTile(p.id, p.name);
  });
  r.on('participantLeft', ({ participant: p }) => {
    removeTile(p.id);
    removeTile(screenKey(p.id));
  });
  r.on('trackSubscribed', ({ participant: p, track, kind, source, stream, muted }) => {
    const tile = isScreen(source) ? ensureTile(screenKey(p.id), `${p.name} (screen)`, { screen: true }) : ensureTile(p.id, p.name);
    const shown = attach(tile, kind, stream);
    if (muted) showMuted(tile, kind, true);
    shown.then((el) => {
      if (kind !== 'video' || quality || !el?.isConnected) return;
      observers.get(track)?.();
      observers.set(track, r.observeVideo(track, el));
    });
  });
  r.on('trackUnsubscribed', ({ participant: p, track, kind, source, mediaStreamTrack }) => {
    if (isScreen(source)) {
      observers.get(track)?.();
      observers.delete(track);
      if (kind === 'video') removeTile(screenKey(p.id));
      return;
    }
    // A participant that moved between nodes has its tile under its new id by now.
    const tile = tiles.get(p.id) ?? [...tiles.values()].find((t) => [...t.querySelectorAll('video, audio')].some((el) => el.srcObject?.getTracks().includes(mediaStreamTrack)));
    // Moving between nodes hands the element its new stream before the old one ends: only
    // the end of the stream on show stops its quality observer.
    if (tile && !detach(tile, kind, mediaStreamTrack)) return;
    observers.get(track)?.();
    observers.delete(track);
  });
  r.on('trackMuted', ({ participant: p, kind, muted, local }) => {
    const tile = tiles.get(local ? 'local' : p.id);
    if (tile && kind) showMuted(tile, kind, muted);
  });
  r.on('activeSpeaker', ({ participant: p, local }) => {
    for (const [id, tile] of tiles) tile.classList.toggle('speaking', id === (local ? 'local' : p.id));
  });
  r.data.on(CHAT_TOPIC, ({ from, payload }) => {
    if (typeof payload !== 'string') return;
    addChatLine(nameOf(from), payload);
    noteUnread();
  });
  r.on('dataTransport', ({ transport }) => showTransport(transport));
  r.on('reconnecting', ({ attempt }) => {
    showTransport(null);
    setStatus(`Connection lost, reconnecting (attempt ${attempt})…`, 'warn');
  });
  r.on('reconnected', () => setStatus('Connected'));
  // Our camera captured again (turned on, or another device chosen): the preview follows.
  r.on('localTrackChanged', ({ source }) => {
    const tile = tiles.get('local');
    if (source !== 'camera' || !tile) return;
    const el = tile.querySelector('video');
    el.srcObject = null;
    el.srcObject = r.localStream;
    play(el);
    showMuted(tile, 'video', r.isMuted('video'));
    fillDevices();
  });
  // The screen share ended (our button, or the browser's own "stop sharing").
  r.on('unpublished', ({ source }) => {
    if (source !== 'screen') return;
    removeTile(screenKey('local'));
    setShareButton();
  });
  r.on('error', ({ code, message }) => console.warn(`server error ${code}: ${message}`));
  r.on('disconnected', ({ reason }) => {
    if (reason === 'left') return;
    setStatus(`Disconnected: ${reason}`, 'error');
    showLeft('The connection was lost.', 'Reconnect');
  });
}

async function join() {
  $('join-form').hidden = true;
  $('left').hidden = true;
  $('room-label').textContent = roomName;
  setStatus('Connecting…');
  try {
    room = await Sfumato.connect(Sfumato.defaultUrl(), {
      room: roomName,
      name: userName || undefined,
      token,
      videoQuality: quality,
      transport: dataTransport,
    });
    window.sfumatoRoom = room; // for the console
    wire(room);
    for (const p of room.participants) ensureTile(p.id, p.name);
    $('controls').hidden = false;
    $('chat-log').replaceChildren();
    showTransport(room.data.transport);
    unread = 0;
    toggleChat(false);
    for (const id of ['mute-audio', 'mute-video', 'camera-select', 'mic-select', 'share-screen']) $(id).hidden = !publishing;
    if (publishing) {
      const tile = ensureTile('local', room.localParticipant?.name ?? userName, { local: true });
      setStatus('Starting camera…');
      try {
        const stream = await room.publish({ audio: true, video: true, videoCodec });
        attach(tile, 'video', stream);
        setMuteButtons();
        setShareButton();
        fillDevices();
      } catch (err) {
        // No camera or microphone (or the server refused): stay as a viewer.
        console.error(err);
        removeTile('local');
        for (const id of ['mute-audio', 'mute-video', 'camera-select', 'mic-select', 'share-screen']) $(id).hidden = true;
        setStatus(`Connected as a viewer: could not publish (${err?.message ?? err})`, 'warn');
        return;
      }
    }
    setStatus(publishing ? 'Connected' : 'Connected (viewer)');
  } catch (err) {
    console.error(err);
    setStatus(`Could not join: ${err?.message ?? err}`, 'error');
    if (room) room.leave();
    room = null;
    clearTiles();
    $('controls').hidden = true;
    $('chat').hidden = true;
    showLeft('Joining failed.', 'Try again');
  }
}

function leave() {
  if (room) room.leave();
  room = null;
  clearTiles();
  $('controls').hidden = true;
  $('chat').hidden = true;
  setStatus('Left');
  showLeft('You left the room.');
}

function showLeft(text, button = 'Rejoin') {
  $('left').querySelector('p').textContent = text;
  $('rejoin').textContent = button;
  $('left').hidden = false;
}

function setMuteButtons() {
  const micMuted = !!room?.isMuted('audio');
  $('mute-audio').textContent = micMuted ? 'Unmute mic' : 'Mute mic';
  $('mute-audio').setAttribute('aria-pressed', String(micMuted));
  const cameraOff = !room?.isEnabled('camera');
  $('mute-video').textContent = cameraOff ? 'Start camera' : 'Stop camera';
  $('mute-video').setAttribute('aria-pressed', String(cameraOff));
}

/** The microphone mutes (it stays captured, to come back at once). */
function toggleMic() {
  if (!room) return;
  const muted = !room.isMuted('audio');
  room.setMuted('audio', muted);
  const tile = tiles.get('local');
  if (tile) showMuted(tile, 'audio', muted);
  setMuteButtons();
}

/** The camera turns off (the device is released: its light goes off) or on again. */
async function toggleCamera() {
  if (!room) return;
  const on = !room.isEnabled('camera');
  const button = $('mute-video');
  button.disabled = true;
  try {
    await room.setCameraEnabled(on);
  } catch (err) {
    setStatus(`Camera: ${err?.message ?? err}`, 'warn');
  } finally {
    button.disabled = false;
  }
  const tile = tiles.get('local');
  if (tile) showMuted(tile, 'video', !room.isEnabled('camera'));
  setMuteButtons();
}

/** Lists the cameras and microphones in their choosers, the ones in use selected. */
async function fillDevices() {
  if (!room) return;
  for (const [kind, id] of [['video', 'camera-select'], ['audio', 'mic-select']]) {
    const select = $(id);
    let devices = [];
    try {
      devices = await room.listDevices(kind);
    } catch {
      /* no device list: the chooser stays empty */
    }
    const active = room.activeDevice(kind);
    select.replaceChildren(
      ...devices.map((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${kind === 'video' ? 'Camera' : 'Microphone'} ${i + 1}`;
        o.selected = d.deviceId === active;
        return o;
      }),
    );
  }
}

async function chooseDevice(kind, deviceId) {
  if (!room || !deviceId) return;
  try {
    await room.switchDevice(kind, deviceId);
  } catch (err) {
    setStatus(`Could not switch device: ${err?.message ?? err}`, 'warn');
    fillDevices();
  }
}

function setShareButton() {
  const sharing = !!room?.screenStream;
  $('share-screen').textContent = sharing ? 'Stop sharing' : 'Share screen';
  $('share-screen').setAttribute('aria-pressed', String(sharing));
}

/** Shares the screen in a tile of its own, or stops. */
async function toggleScreen() {
  if (!room) return;
  try {
    if (room.screenStream) {
      await room.stopScreenShare();
    } else {
      const stream = await room.shareScreen();
      const tile = ensureTile(screenKey('local'), `${room.localParticipant?.name ?? userName} (screen)`, { local: true, screen: true });
      attach(tile, 'video', stream);
    }
  } catch (err) {
    // Cancelled by the user, or refused.
    console.warn('screen share:', err);
  }
  setShareButton();
}

// ------------------------------------------------------------------ page

$('mute-audio').addEventListener('click', toggleMic);
$('mute-video').addEventListener('click', toggleCamera);
$('share-screen').addEventListener('click', toggleScreen);
$('camera-select').addEventListener('change', (ev) => chooseDevice('video', ev.target.value));
$('mic-select').addEventListener('change', (ev) => chooseDevice('audio', ev.target.value));
navigator.mediaDevices?.addEventListener?.('devicechange', () => fillDevices());
$('leave').addEventListener('click', leave);
$('chat-form').addEventListener('submit', sendChat);
$('chat-toggle').addEventListener('click', () => toggleChat());
$('rejoin').addEventListener('click', join);
$('unblock-audio').addEventListener('click', () => {
  $('unblock-audio').hidden = true;
  for (const el of document.querySelectorAll('audio')) play(el);
});
window.addEventListener('pagehide', () => room?.leave());

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const data = new FormData(ev.target);
  const q = new URLSearchParams({ room: String(data.get('room')).trim(), name: String(data.get('name')).trim() });
  if (!data.get('publish')) q.set('publish', '0');
  if (dataTransport) q.set('transport', dataTransport);
  if (token) q.set('token', token);
  location.search = q.toString();
});

if (roomName && (userName || token)) {
  join();
} else {
  const form = $('join-form');
  if (roomName) form.elements.room.value = roomName;
  form.hidden = false;
  setStatus('');
}
