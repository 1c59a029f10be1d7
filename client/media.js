// Local media: what each published source is (camera, microphone, screen), how it is encoded
// (simulcast layers, SVC mode, preferred codec), capturing a device again, and the list of
// cameras and microphones. No room state: room.js keeps the publications.

/** What a published track carries (docs/protocol.md, `publish_offer`'s `sources`). */
export const SOURCES = new Set(['camera', 'microphone', 'screen', 'screen_audio']);

/** The source of a track that says nothing else: its kind's device. */
export function defaultSource(kind) {
  return kind === 'video' ? 'camera' : 'microphone';
}

/** The kind of track a source carries. */
export function kindOfSource(source) {
  return source === 'camera' || source === 'screen' ? 'video' : 'audio';
}

/**
 * Simulcast layers of a published camera, lowest first (the server ranks them in this order):
 * 320×180, 640×360 and 1280×720 from a 720p capture.
 */
export const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** A screen share in simulcast (not the default): the same layers at rates that keep text
 * readable. */
const SCREEN_SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 300_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 1_000_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000 },
];

/** One encoding of a screen share (the default): full resolution. */
const SCREEN_MAX_BITRATE = 2_500_000;

/** Video codecs a publication can prefer; VP9 and AV1 are sent scalable (SVC) instead of in
 * simulcast. */
export const VIDEO_CODECS = new Set(['vp8', 'vp9', 'av1', 'h264']);
const SVC_CODECS = new Set(['vp9', 'av1']);
/** What a scalable (SVC) camera is encoded with by default: three spatial layers (320, 640,
 * 1280 wide from a 720p camera) of three temporal layers, dependent only at keyframes. A
 * screen share: one spatial layer of three temporal layers. */
const SVC_MODE = 'L3T3_KEY';
const SCREEN_SVC_MODE = 'L1T3';

/**
 * How a video publication is sent, from its options: `{simulcast, videoCodec,
 * scalabilityMode, maxBitrate}`, checked. A camera defaults to three simulcast layers, a
 * screen share to one encoding; VP9 and AV1 make either one scalable stream.
 */
export function videoSettings(source, opts = {}) {
  if (opts.videoCodec != null && !VIDEO_CODECS.has(opts.videoCodec)) {
    throw new TypeError(`videoCodec is one of ${[...VIDEO_CODECS].join(', ')}`);
  }
  const screen = source === 'screen';
  const svc = SVC_CODECS.has(opts.videoCodec);
  return {
    videoCodec: opts.videoCodec ?? null,
    scalabilityMode: svc ? (opts.scalabilityMode ?? (screen ? SCREEN_SVC_MODE : SVC_MODE)) : null,
    simulcast: !svc && (opts.simulcast ?? !screen),
    maxBitrate: opts.maxBitrate ?? null,
  };
}

/** The `sendEncodings` of a publication's transceiver (undefined: the browser's one). */
export function sendEncodings(pub) {
  if (pub.kind !== 'video') return undefined;
  const screen = pub.source === 'screen';
  if (pub.scalabilityMode) return [{ scalabilityMode: pub.scalabilityMode, maxBitrate: pub.maxBitrate ?? (screen ? SCREEN_MAX_BITRATE : 1_700_000) }];
  if (pub.simulcast) return (screen ? SCREEN_SIMULCAST_ENCODINGS : SIMULCAST_ENCODINGS).map((e) => ({ ...e }));
  const max = pub.maxBitrate ?? (screen ? SCREEN_MAX_BITRATE : null);
  return max ? [{ maxBitrate: max }] : undefined;
}

/**
 * Puts `codec` (e.g. 'vp9') first in what `transceiver` offers, profile 0 before the others
 * (the profile every browser decodes); the rest keep the browser's order as fallbacks.
 */
export function preferCodec(transceiver, codec) {
  const caps = globalThis.RTCRtpSender?.getCapabilities?.('video');
  if (!caps || typeof transceiver.setCodecPreferences !== 'function') return;
  const mime = `video/${codec}`.toLowerCase();
  const rank = (c) => {
    if (c.mimeType.toLowerCase() !== mime) return 2;
    return /profile-id=[1-9]/.test(c.sdpFmtpLine ?? '') ? 1 : 0;
  };
  const sorted = [...caps.codecs].sort((a, b) => rank(a) - rank(b));
  transceiver.setCodecPreferences(sorted);
}

/** The constraints a camera is captured with when the application says only `true`. */
export const CAMERA_CONSTRAINTS = Object.freeze({ width: { ideal: 1280 }, height: { ideal: 720 } });

/**
 * Captures one camera or microphone track: `constraints` (true, or MediaTrackConstraints) with
 * `deviceId` (exact) if given.
 * @param {'audio'|'video'} kind
 */
export async function captureDevice(kind, constraints, deviceId) {
  let c = constraints === true || constraints == null ? (kind === 'video' ? { ...CAMERA_CONSTRAINTS } : {}) : { ...constraints };
  if (deviceId) c = { ...c, deviceId: { exact: deviceId } };
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: c });
  const track = stream.getTracks().find((t) => t.kind === kind);
  if (!track) throw new Error(`getUserMedia gave no ${kind} track`);
  return track;
}

const DEVICE_KINDS = { video: 'videoinput', audio: 'audioinput', output: 'audiooutput' };

/**
 * The cameras (`video`), microphones (`audio`) or speakers (`output`) the browser lists, or
 * all of them. Labels are empty until the page was allowed a capture.
 * @param {'video'|'audio'|'output'} [kind]
 */
export async function listDevices(kind) {
  if (kind != null && !DEVICE_KINDS[kind]) throw new TypeError('listDevices: kind is video, audio or output');
  const all = await navigator.mediaDevices.enumerateDevices();
  return all
    .filter((d) => (kind ? d.kind === DEVICE_KINDS[kind] : Object.values(DEVICE_KINDS).includes(d.kind)))
    .map((d) => ({ deviceId: d.deviceId, groupId: d.groupId, kind: d.kind, label: d.label }));
}
